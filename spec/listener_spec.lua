-- lmp.connection.Listener and lmp.connection.Client (SPEC section 4, details
-- in section 12): sockets between unrelated processes over TCP, Unix paths
-- and abstract addresses; CPython's challenge/response authentication, in
-- its legacy HMAC-MD5 form (checked against a real Python 3.11) and in the
-- 3.12 {sha256} form (spoken by hand from Python); and distrust of the
-- peer: bounded frames, stalled peers dropped, silent or garbage handshakes
-- refused, data decoded in safe mode; the Listener keeps serving after
-- each of these.
local H = require "spec.support.helpers"
local lmp = require "lmp"

local raises = H.raises
local Listener, Client = lmp.connection.Listener, lmp.connection.Client
local PYTHON = "/usr/bin/python3"
local have_python = io.open(PYTHON) ~= nil

-- 4-byte big-endian length, as CPython writes it.
local function be32(n)
  return string.char(math.floor(n / 2^24) % 256, math.floor(n / 2^16) % 256,
                     math.floor(n / 2^8) % 256, n % 256)
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function own_pid()
  return tonumber(H.slurp("/proc/self/stat"):match("^(%d+)"))
end

local abstract_n = 0
local function abstract_name()
  abstract_n = abstract_n + 1
  return ("\0lmp-listener-spec-%d-%d"):format(own_pid(), abstract_n)
end

-- Is there a file (of any type: sockets too) at path?
local function exists(path)
  local r = os.execute("test -e " .. H.quote(path))
  return r == 0 or r == true
end

-- Starts `src` under Python in the background (killed after 20 s); returns
-- a handle.  Its stdout is read by py_line / py_finish, its stderr goes to
-- a file.
local function py_start(src, args)
  local dir = H.tmpdir()
  local path = H.write(dir .. "/peer.py", src)
  local words = {}
  for i, a in ipairs(args or {}) do words[i] = H.quote(a) end
  local cmd = ("timeout -k 2 20 %s -u %s %s 2>%s; echo EXIT:$?"):format(
    PYTHON, H.quote(path), table.concat(words, " "), H.quote(dir .. "/stderr"))
  return {proc = io.popen(cmd), dir = dir}
end

-- The next line Python printed (e.g. the port it listens on).
local function py_line(p)
  return p.proc:read("*l")
end

-- Waits for Python to end; returns its exit status, stdout, stderr.
local function py_finish(p)
  local out = p.proc:read("*a")
  p.proc:close()
  local status = tonumber(out:match("EXIT:(%d+)%s*$"))
  out = out:gsub("EXIT:%d+%s*$", "")
  return status, out, H.slurp(p.dir .. "/stderr") or ""
end

-- Runs fn(); then, even if fn failed, closes `closers` and waits for Python.
-- Returns Python's status, stdout, stderr; re-raises fn's error after.
local function with_python(p, fn, closers)
  local ok, err = pcall(fn)
  for _, c in ipairs(closers or {}) do pcall(c.close, c) end
  local status, out, stderr = py_finish(p)
  if not ok then error(tostring(err) .. "\npython stdout: " .. out .. "\npython stderr: " .. stderr, 0) end
  return status, out, stderr
end

-- A child lmp process that connects with `key` and echoes: for each of
-- `n` connections it sends {i =, from = "child"} and a byte string and
-- checks the answers.  Self-contained: it travels to the child by value.
local function echo_client(address, key, n)
  local lmp_ = require "lmp"
  for i = 1, n do
    local c = lmp_.connection.Client(address, {authkey = key, timeout = 5})
    c:send({i = i, from = "child", list = {1, 2, 3}})
    assert(c:poll(10), "no answer")
    local r = c:recv()
    assert(r.echo.i == i and r.echo.from == "child" and r.echo.list[3] == 3, "bad echo")
    c:send_bytes("bytes\0" .. i)
    assert(c:poll(10), "no answer")
    assert(c:recv_bytes() == i .. "\0setyb", "bad bytes echo")
    c:close()
  end
end

-- The server side of echo_client, on an accepted connection.
local function echo_serve(s, i)
  assert.is_true(s:poll(10))
  local v = s:recv()
  assert.same({i = i, from = "child", list = {1, 2, 3}}, v)
  s:send({echo = v})
  assert.is_true(s:poll(10))
  local b = s:recv_bytes()
  assert.equal("bytes\0" .. i, b)
  s:send_bytes(b:reverse())
end

-- A child that connects with a wrong key and must get an AuthenticationError.
local function wrong_key_client(address, key)
  local lmp_ = require "lmp"
  local ok, e = pcall(lmp_.connection.Client, address, {authkey = key, timeout = 5})
  assert(not ok, "connected with a wrong key")
  assert(lmp_.is_error(e) and e.kind == "AuthenticationError", "wrong error: " .. tostring(e))
end

-- A pair of connected Connections over a Listener without authkey, in this
-- process (the kernel completes the connection before accept).
local function pair(lopts, copts)
  lopts = lopts or {}
  lopts.address = lopts.address or "127.0.0.1:0"
  local l = Listener(lopts)
  local c = Client(l.address, copts or {timeout = 5})
  local s = l:accept(10)
  assert.is_not_nil(s)
  return l, s, c
end

-- Runs the started Python peer p against l: accepts it, expects `want`
-- from it and answers `reply`; returns its status, stdout, stderr.
local function python_exchange(l, p, want, reply)
  local s
  local status, out, err = with_python(p, function()
    s = l:accept(10)
    assert.is_not_nil(s)
    assert.is_true(s:poll(10))
    assert.equal(want, s:recv_bytes())
    s:send_bytes(reply)
  end)
  if s then s:close() end
  return status, out, err
end

describe("lmp.connection.Listener and Client", function()
  H.check_leaks()

  describe("between lmp processes", function()
    it("an empty authkey means no authentication, as in Python", function()
      local l, s, c = pair({authkey = ""}, {timeout = 5})
      c:send("no handshake")
      assert.is_true(s:poll(10))
      assert.equal("no handshake", s:recv())
      c:close(); s:close(); l:close()
    end)

    it("TCP without authkey: l.address, last_accepted, values and bytes both ways", function()
      local l = Listener{address = "127.0.0.1:0"}
      assert.is_string(l.address)
      local port = tonumber(l.address:match("^127%.0%.0%.1:(%d+)$"))
      assert.is_number(port, l.address)
      assert.is_true(port > 0)
      assert.is_number(l:fileno())
      assert.is_true(H.fd_open(l:fileno()))
      assert.is_nil(l.last_accepted)
      local c = Client(l.address, {timeout = 5})
      local s = l:accept(10)
      assert.is_not_nil(s)
      local peer_port = tonumber((l.last_accepted or ""):match("^127%.0%.0%.1:(%d+)$"))
      assert.is_number(peer_port, tostring(l.last_accepted))
      assert.are_not.equal(port, peer_port)
      local t = {1, 2.5, "x", {nested = {true, false}}, k = "v", bin = "\0\255"}
      c:send(t)
      assert.is_true(s:poll(10))
      assert.same(t, s:recv())
      s:send({reply = "ok"})
      assert.is_true(c:poll(10))
      assert.same({reply = "ok"}, c:recv())
      c:send_bytes("raw\0bytes", 3, 4)
      assert.is_true(s:poll(10))
      assert.equal("\0byt", s:recv_bytes())
      s:send_bytes(("z"):rep(300000))
      assert.is_true(c:poll(10))
      assert.equal(("z"):rep(300000), c:recv_bytes())
      -- end of file when the peer closes
      c:close()
      assert.is_true(s:poll(10))
      local v, why = s:recv()
      assert.is_nil(v)
      assert.equal("eof", why)
      s:close()
      l:close()
    end)

    it("the positional form Listener(address [, opts]) works", function()
      local l = Listener("127.0.0.1:0", {backlog = 4})
      assert.truthy(l.address:match("^127%.0%.0%.1:%d+$"))
      local l2 = Listener("127.0.0.1:0")
      assert.truthy(l2.address:match("^127%.0%.0%.1:%d+$"))
      assert.are_not.equal(l.address, l2.address)
      local c = Client(l.address, {timeout = 5})
      local s = l:accept(10)
      c:send("hi")
      assert.is_true(s:poll(10))
      assert.equal("hi", s:recv())
      c:close(); s:close(); l:close(); l2:close()
    end)

    it("TCP over IPv6 [::1]:0 gives [::1]:PORT", function()
      local ok, l = pcall(Listener, "[::1]:0")
      if not ok then
        pending("no IPv6 loopback here: " .. tostring(l))
        return
      end
      assert.truthy(l.address:match("^%[::1%]:%d+$"), l.address)
      local c = Client(l.address, {timeout = 5})
      local s = l:accept(10)
      assert.truthy(l.last_accepted:match("^%[::1%]:%d+$"), l.last_accepted)
      c:send_bytes("v6")
      assert.is_true(s:poll(10))
      assert.equal("v6", s:recv_bytes())
      c:close(); s:close(); l:close()
    end)

    it("TCP with authkey: several clients one after another", function()
      local l = Listener{address = "127.0.0.1:0", authkey = "secret key"}
      local p = H.spawn(echo_client, l.address, "secret key", 3)
      local ok, err = pcall(function()
        for i = 1, 3 do
          local s = l:accept(10)
          assert.is_not_nil(s, "accept timed out")
          assert.truthy(l.last_accepted:match("^127%.0%.0%.1:%d+$"))
          echo_serve(s, i)
          assert.is_true(s:poll(10))
          assert.is_nil(s:recv())  -- eof after the child closed
          s:close()
        end
      end)
      l:close()
      H.finish(p)
      assert(ok, err)
    end)

    it("Unix socket path, with and without authkey; close() removes the file", function()
      local dir = H.tmpdir()
      for _, key in ipairs({false, "unix key"}) do
        local path = dir .. "/lmp.sock"
        local l = Listener{address = path, authkey = key or nil}
        assert.equal(path, l.address)
        assert.is_true(exists(path))
        local p = H.spawn(echo_client, path, key or nil, 2)
        local ok, err = pcall(function()
          for i = 1, 2 do
            local s = l:accept(10)
            assert.is_not_nil(s)
            assert.is_string(l.last_accepted)
            echo_serve(s, i)
            s:close()
          end
        end)
        H.finish(p)
        assert(ok, err)
        l:close()
        assert.is_false(exists(path), "socket file still there after close")
        l:close()  -- a second close does nothing
      end
    end)

    it("abstract Unix socket, with and without authkey", function()
      for _, key in ipairs({false, "abstract key"}) do
        local name = abstract_name()
        local l = Listener{address = name, authkey = key or nil}
        assert.equal(name, l.address)
        local p = H.spawn(echo_client, name, key or nil, 2)
        local ok, err = pcall(function()
          for i = 1, 2 do
            local s = l:accept(10)
            assert.is_not_nil(s)
            echo_serve(s, i)
            s:close()
          end
        end)
        H.finish(p)
        assert(ok, err)
        l:close()
        -- nobody listens on the name any more
        raises("OSError", Client, name, {timeout = 2})
      end
    end)

    it("a wrong key raises AuthenticationError on both sides; the Listener goes on", function()
      local l = Listener{address = "127.0.0.1:0", authkey = "right"}
      local bad = H.spawn(wrong_key_client, l.address, "wrong")
      local ok, err = pcall(function()
        local e = raises("AuthenticationError", l.accept, l, 10)
        assert.truthy(e.message:find("digest", 1, true), e.message)
      end)
      H.finish(bad)
      assert(ok, err)
      local good = H.spawn(echo_client, l.address, "right", 1)
      ok, err = pcall(function()
        local s = l:accept(10)
        assert.is_not_nil(s)
        echo_serve(s, 1)
        s:close()
      end)
      l:close()
      H.finish(good)
      assert(ok, err)
    end)

    it("a client with a key against a listener without one (and the reverse) fails", function()
      -- The listener sends no challenge: the client times out in its handshake.
      local l = Listener{address = "127.0.0.1:0"}
      local t0 = H.now()
      raises("AuthenticationError", Client, l.address, {authkey = "k", timeout = 0.5})
      H.took_about(t0, 0.5, "Client's handshake")
      l:close()
      -- The client answers no challenge: accept times out in its handshake.
      l = Listener{address = "127.0.0.1:0", authkey = "k", timeout = 0.5}
      local c = Client(l.address, {timeout = 5})
      t0 = H.now()
      raises("AuthenticationError", l.accept, l, 10)
      H.took_about(t0, 0.5, "accept's handshake")
      c:close(); l:close()
    end)

    it("accepted connections work in lmp.connection.wait", function()
      local l = Listener{address = "127.0.0.1:0"}
      local c1 = Client(l.address, {timeout = 5})
      local s1 = l:accept(10)
      local c2 = Client(l.address, {timeout = 5})
      local s2 = l:accept(10)
      local c3 = Client(l.address, {timeout = 5})
      local s3 = l:accept(10)
      assert.same({}, lmp.connection.wait({s1, s2, s3}, 0.1))
      c2:send("two")
      local ready = lmp.connection.wait({s1, s2, s3}, 5)
      assert.equal(1, #ready)
      assert.is_true(rawequal(s2, ready[1]))
      assert.equal("two", s2:recv())
      c1:send_bytes("one")
      c3:close()
      ready = lmp.connection.wait({s1, s2, s3}, 5)
      -- wait may return once one is ready: wait again until both are seen
      local seen = {}
      for _, r in ipairs(ready) do seen[r] = true end
      if not (seen[s1] and seen[s3]) then
        for _, r in ipairs(lmp.connection.wait({s1, s3}, 5)) do seen[r] = true end
      end
      assert.is_true(seen[s1] and seen[s3])
      assert.is_nil(seen[s2])
      assert.equal("one", s1:recv_bytes())
      assert.is_nil(s3:recv())
      -- the listener's own descriptor is readable when a client is waiting
      assert.same({}, lmp.connection.wait({l:fileno()}, 0.1))
      local c4 = Client(l.address, {timeout = 5})
      assert.same({l:fileno()}, lmp.connection.wait({l:fileno()}, 5))
      local s4 = l:accept(10)
      assert.is_not_nil(s4)
      for _, x in ipairs({c1, c2, c3, c4, s1, s2, s3, s4, l}) do x:close() end
    end)

    it("accept(timeout) returns nil, \"timeout\" after about the timeout", function()
      local l = Listener{address = "127.0.0.1:0", authkey = "k"}
      local t0 = H.now()
      local v, why = l:accept(0.3)
      H.took_about(t0, 0.3, "accept(0.3)")
      assert.is_nil(v)
      assert.equal("timeout", why)
      t0 = H.now()
      v, why = l:accept(0)
      H.took_little(t0, "accept(0)")
      assert.is_nil(v)
      assert.equal("timeout", why)
      l:close()
    end)

    it("Client to a closed port raises OSError; to a full backlog TimeoutError", function()
      local l = Listener{address = "127.0.0.1:0"}
      local address = l.address
      l:close()
      local e = raises("OSError", Client, address, {timeout = 5})
      assert.truthy(e.message:find("refused", 1, true), e.message)
      -- A Unix path nobody listens on
      raises("OSError", Client, H.tmpdir() .. "/nobody.sock", {timeout = 5})
      -- backlog 1: the kernel queues two connections, then drops the SYNs
      l = Listener{address = "127.0.0.1:0", backlog = 1}
      local queued = {}
      for _ = 1, 2 do queued[#queued + 1] = Client(l.address, {timeout = 2}) end
      local t0 = H.now()
      raises("TimeoutError", Client, l.address, {timeout = 0.5})
      H.took_about(t0, 0.5, "Client to a full backlog")
      for _, c in ipairs(queued) do c:close() end
      l:close()
    end)

    it("a closed Listener raises ValueError on accept", function()
      local l = Listener{address = "127.0.0.1:0"}
      assert.truthy(tostring(l):find(l.address, 1, true))
      l:close()
      raises("ValueError", l.accept, l, 1)
      raises("ValueError", l.accept, l)
      assert.truthy(tostring(l):find("closed", 1, true))
    end)

    it("a collected Listener closes its socket and removes its socket file", function()
      local path = H.tmpdir() .. "/gc.sock"
      do
        local l = Listener(path)
        assert.equal(path, l.address)
      end
      collectgarbage(); collectgarbage()
      assert.is_false(exists(path), "socket file left after the Listener was collected")
    end)

    it("a relative Unix socket path is removed by close() too", function()
      local dir = H.tmpdir()
      local r = H.lmp_run({"-e", [[
        local lmp = require "lmp"
        local l = lmp.connection.Listener("rel.sock")
        assert(l.address == "rel.sock", l.address)
        local c = lmp.connection.Client("rel.sock", {timeout = 5})
        local s = assert(l:accept(5))
        c:send("x"); assert(s:poll(5)); assert(s:recv() == "x")
        c:close(); s:close()
        l:close()
        local f = io.open("rel.sock")
        if f then f:close(); print("left") else print("removed") end
      ]]}, {cwd = dir, timeout = 15})
      assert.equal(0, r.status, r.stderr)
      assert.equal("removed\n", r.stdout)
    end)
  end)

  describe("with CPython 3.11's multiprocessing.connection", function()
    before_each(function()
      if not have_python then pending("no " .. PYTHON) end
    end)

    it("a Python Client with authkey talks to an lmp Listener (bytes and JSON)", function()
      if not have_python then return end
      local l = Listener{address = "127.0.0.1:0", authkey = "py secret"}
      local host, port = l.address:match("^(.*):(%d+)$")
      local p = py_start([[
import sys, json, socket
from multiprocessing.connection import Client
c = Client((sys.argv[1], int(sys.argv[2])), authkey=sys.argv[3].encode())
s = socket.fromfd(c.fileno(), socket.AF_INET, socket.SOCK_STREAM)
print("local", "%s:%d" % s.getsockname())
s.close()
x = c.recv_bytes()
c.send_bytes(x[::-1])
v = json.loads(c.recv_bytes())
c.send_bytes(json.dumps({"got": v, "n": None, "list": [1, 2.5, "s"]}).encode())
c.send_bytes(b"\x00\xff" * 1000)
print("python done")
c.close()
]], {host, port, "py secret"})
      local s
      local status, out, err = with_python(p, function()
        s = l:accept(10)
        assert.is_not_nil(s)
        s:send_bytes("hello\0world")
        assert.is_true(s:poll(10))
        assert.equal("dlrow\0olleh", s:recv_bytes())
        s:send({k = {1, 2, 3}, s = "text", f = 1.5, t = true})
        assert.is_true(s:poll(10))
        local v = s:recv()
        assert.same({k = {1, 2, 3}, s = "text", f = 1.5, t = true}, v.got)
        assert.equal(lmp.null, v.n)
        assert.same({1, 2.5, "s"}, v.list)
        assert.is_true(s:poll(10))
        assert.equal(("\0\255"):rep(1000), s:recv_bytes())
        assert.is_true(s:poll(10))
        assert.is_nil(s:recv())
      end, {})
      if s then s:close() end
      local last = l.last_accepted
      l:close()
      assert.equal(0, status, err)
      assert.equal("local " .. last .. "\npython done\n", out)
    end)

    it("an lmp Client with authkey talks to a Python Listener (bytes and JSON)", function()
      if not have_python then return end
      local p = py_start([[
import sys, json
from multiprocessing.connection import Listener
l = Listener(("127.0.0.1", 0), authkey=sys.argv[1].encode())
print("%s:%d" % l.address, flush=True)
c = l.accept()
c.send_bytes(json.dumps({"from": "python", "x": [1, {"y": None}]}).encode())
v = json.loads(c.recv_bytes())
c.send_bytes(json.dumps(v).encode())
b = c.recv_bytes()
c.send_bytes(b[::-1])
c.close()
l.close()
print("python done")
]], {"lmp secret"})
      local c
      local status, out, err = with_python(p, function()
        local address = py_line(p)
        assert.truthy(address and address:match("^127%.0%.0%.1:%d+$"), tostring(address))
        c = Client(address, {authkey = "lmp secret", timeout = 5})
        assert.is_true(c:poll(10))
        local v = c:recv()
        assert.equal("python", v.from)
        assert.equal(1, v.x[1])
        assert.equal(lmp.null, v.x[2].y)
        c:send({a = "b", list = {1, 2, 3}, nested = {deep = {true}}})
        assert.is_true(c:poll(10))
        assert.same({a = "b", list = {1, 2, 3}, nested = {deep = {true}}}, c:recv())
        c:send_bytes("\1\2\3\0")
        assert.is_true(c:poll(10))
        assert.equal("\0\3\2\1", c:recv_bytes())
        assert.is_true(c:poll(10))
        assert.is_nil(c:recv())
      end)
      if c then c:close() end
      assert.equal(0, status, err)
      assert.equal("python done\n", out)
    end)

    it("a wrong key: AuthenticationError in lmp's accept, and in Python's Client", function()
      if not have_python then return end
      local l = Listener{address = "127.0.0.1:0", authkey = "right"}
      local host, port = l.address:match("^(.*):(%d+)$")
      local client = [[
import sys
from multiprocessing.connection import Client
c = Client((sys.argv[1], int(sys.argv[2])), authkey=sys.argv[3].encode())
c.send_bytes(b"in")
print(c.recv_bytes().decode())
]]
      local p = py_start(client, {host, port, "wrong"})
      local status, _, err = with_python(p, function()
        raises("AuthenticationError", l.accept, l, 10)
      end)
      assert.are_not.equal(0, status)
      assert.truthy(err:find("AuthenticationError", 1, true), err)
      -- and the Listener still serves a Python client with the right key
      p = py_start(client, {host, port, "right"})
      status, out, err = python_exchange(l, p, "in", "out")
      l:close()
      assert.equal(0, status, err)
      assert.equal("out\n", out)
    end)

    it("a wrong key: AuthenticationError in lmp's Client, and in Python's accept", function()
      if not have_python then return end
      local p = py_start([[
import sys
from multiprocessing.connection import Listener
l = Listener(("127.0.0.1", 0), authkey=b"right")
print("%s:%d" % l.address, flush=True)
try:
    l.accept()
except Exception as e:
    print(type(e).__name__)
    raise
]])
      local status, out, err = with_python(p, function()
        local address = py_line(p)
        assert.is_string(address)
        raises("AuthenticationError", Client, address, {authkey = "wrong", timeout = 5})
      end)
      assert.are_not.equal(0, status)
      assert.equal("AuthenticationError\n", out)
      assert.truthy(err:find("AuthenticationError", 1, true), err)
    end)
  end)

  describe("the 3.12 {sha256} handshake (spoken by hand from Python)", function()
    before_each(function()
      if not have_python then pending("no " .. PYTHON) end
    end)

    -- A server that speaks 3.12's protocol over 3.11's framing; exits 3 if
    -- the client's answer is wrong, 4 if its own answer is rejected.
    local SERVER = [[
import sys, os, hmac
from multiprocessing.connection import Listener
key = sys.argv[1].encode()
l = Listener(("127.0.0.1", 0))
print("%s:%d" % l.address, flush=True)
c = l.accept()
msg = b"{sha256}" + os.urandom(40)
c.send_bytes(b"#CHALLENGE#" + msg)
resp = c.recv_bytes(256)
if resp != b"{sha256}" + hmac.new(key, msg, "sha256").digest():
    c.send_bytes(b"#FAILURE#")
    print("server: wrong answer")
    sys.exit(3)
c.send_bytes(b"#WELCOME#")
m = c.recv_bytes(256)
assert m.startswith(b"#CHALLENGE#"), m
m = m[len(b"#CHALLENGE#"):]
assert m.startswith(b"{sha256}") and len(m) == 48, m
c.send_bytes(b"{sha256}" + hmac.new(key, m, "sha256").digest())
if c.recv_bytes(256) != b"#WELCOME#":
    print("server: rejected")
    sys.exit(4)
x = c.recv_bytes()
c.send_bytes(x[::-1])
c.close()
print("server done")
]]

    -- The client side; exits 3 if lmp's answer is wrong, 4 if its own
    -- answer is rejected.
    local CLIENT = [[
import sys, os, hmac
from multiprocessing.connection import Client
c = Client((sys.argv[1], int(sys.argv[2])))
key = sys.argv[3].encode()
m = c.recv_bytes(256)
assert m.startswith(b"#CHALLENGE#"), m
m = m[len(b"#CHALLENGE#"):]
assert m.startswith(b"{sha256}") and len(m) == 48, m
c.send_bytes(b"{sha256}" + hmac.new(key, m, "sha256").digest())
if c.recv_bytes(256) != b"#WELCOME#":
    print("client: rejected")
    sys.exit(4)
msg = b"{sha256}" + os.urandom(40)
c.send_bytes(b"#CHALLENGE#" + msg)
resp = c.recv_bytes(256)
if resp != b"{sha256}" + hmac.new(key, msg, "sha256").digest():
    c.send_bytes(b"#FAILURE#")
    print("client: wrong answer")
    sys.exit(3)
c.send_bytes(b"#WELCOME#")
c.send_bytes(b"from 3.12")
print(c.recv_bytes().decode())
c.close()
]]

    it("an lmp Client authenticates with a 3.12-style server", function()
      if not have_python then return end
      local p = py_start(SERVER, {"k312"})
      local c
      local status, out, err = with_python(p, function()
        c = Client(py_line(p), {authkey = "k312", timeout = 5})
        c:send_bytes("abc")
        assert.is_true(c:poll(10))
        assert.equal("cba", c:recv_bytes())
      end)
      if c then c:close() end
      assert.equal(0, status, out .. err)
      assert.equal("server done\n", out)
    end)

    it("an lmp Client with a wrong key against a 3.12-style server", function()
      if not have_python then return end
      local p = py_start(SERVER, {"k312"})
      local status, out = with_python(p, function()
        raises("AuthenticationError", Client, py_line(p), {authkey = "other", timeout = 5})
      end)
      assert.equal(3, status)
      assert.equal("server: wrong answer\n", out)
    end)

    it("a 3.12-style client authenticates with an lmp Listener", function()
      if not have_python then return end
      local l = Listener{address = "127.0.0.1:0", authkey = "k312"}
      local host, port = l.address:match("^(.*):(%d+)$")
      local p = py_start(CLIENT, {host, port, "k312"})
      local status, out, err = python_exchange(l, p, "from 3.12", "to 3.12")
      l:close()
      assert.equal(0, status, out .. err)
      assert.equal("to 3.12\n", out)
    end)

    it("a 3.12-style client with a wrong key is refused; the Listener goes on", function()
      if not have_python then return end
      local l = Listener{address = "127.0.0.1:0", authkey = "k312"}
      local host, port = l.address:match("^(.*):(%d+)$")
      local p = py_start(CLIENT, {host, port, "not the key"})
      local status, out = with_python(p, function()
        raises("AuthenticationError", l.accept, l, 10)
      end)
      assert.equal(4, status)
      assert.equal("client: rejected\n", out)
      p = py_start(CLIENT, {host, port, "k312"})
      status, out, err = python_exchange(l, p, "from 3.12", "again")
      l:close()
      assert.equal(0, status, err)
      assert.equal("again\n", out)
    end)

    it("HMAC-SHA256 and HMAC-MD5 answers match Python's hmac (known answers)", function()
      if not have_python then return end
      -- Keys around the 64-byte block size and beyond it, binary bytes;
      -- challenges of lengths around the padding boundaries.
      -- (An empty key means no authentication, as in Python.)
      local keys = {"k", "\0", ("K"):rep(63), ("\1"):rep(64), ("\170"):rep(65),
                    ("0123456789"):rep(13), "\0\255 binary \0"}
      local cases = {}
      for i, key in ipairs(keys) do
        -- {sha256} challenges: 8 + n bytes; legacy MD5 challenges: 20 bytes
        local n = ({40, 47, 48, 56, 120, 200, 33})[i]
        cases[#cases + 1] = {key = key, kind = "sha256", n = n}
        cases[#cases + 1] = {key = key, kind = "md5", n = 20}
      end
      local args = {}
      for _, cs in ipairs(cases) do
        args[#args + 1] = cs.kind .. ":" .. cs.n .. ":" .. hex(cs.key)
      end
      local p = py_start([[
import sys, hmac, hashlib
from multiprocessing.connection import Listener
l = Listener(("127.0.0.1", 0))
print("%s:%d" % l.address, flush=True)
for i, case in enumerate(sys.argv[1:]):
    kind, n, key = case.split(":")
    n, key = int(n), bytes.fromhex(key)
    c = l.accept()
    rand = bytes((i * 31 + j * 7) % 256 for j in range(n))
    msg = b"{sha256}" + rand if kind == "sha256" else rand
    c.send_bytes(b"#CHALLENGE#" + msg)
    resp = c.recv_bytes(256)
    want = hmac.new(key, msg, kind).digest()
    if kind == "sha256":
        want = b"{sha256}" + want
    assert hmac.new(key, msg, kind).digest() == hmac.HMAC(key, msg, getattr(hashlib, kind)).digest()
    print(kind, len(key), resp.hex(), want.hex(), flush=True)
    c.send_bytes(b"#WELCOME#" if resp == want else b"#FAILURE#")
    m = c.recv_bytes(256)[len(b"#CHALLENGE#"):]
    c.send_bytes(b"{sha256}" + hmac.new(key, m, "sha256").digest())
    c.recv_bytes(256)
    c.close()
print("done")
]], args)
      local results = {}
      local status, out, err = with_python(p, function()
        local address = py_line(p)
        for _, cs in ipairs(cases) do
          local ok, c = pcall(Client, address, {authkey = cs.key, timeout = 5})
          results[#results + 1] = ok
          if ok then c:close() end
          local line = py_line(p)
          local kind, klen, got, want = (line or ""):match("^(%S+) (%d+) (%x*) (%x*)$")
          assert.equal(cs.kind, kind, tostring(line))
          assert.equal(#cs.key, tonumber(klen))
          assert.equal(want, got, ("%s HMAC with a %d-byte key over %d bytes"):format(cs.kind, #cs.key, cs.n))
          assert.is_true(ok, tostring(c))
        end
      end)
      assert.equal(0, status, err)
      assert.equal("done\n", out)
      assert.equal(#cases, #results)
    end)

    it("HMAC-SHA256 and HMAC-MD5 match Python's hmac directly (RFC 4231 / 2202 vectors too)", function()
      if not have_python then return end
      -- The C half is an upvalue of Client (not part of the API); skip if
      -- that changes.
      local core
      for i = 1, 20 do
        local name, v = debug.getupvalue(Client, i)
        if not name then break end
        if name == "core" then core = v end
      end
      if not (core and core.hmac) then
        pending("core.hmac not reachable")
        return
      end
      -- RFC 4231 test case 1 and 6 (key of 131 bytes), RFC 2202 MD5 case 1/6
      assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                   hex(core.hmac("sha256", ("\11"):rep(20), "Hi There")))
      assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                   hex(core.hmac("sha256", ("\170"):rep(131),
                                 "Test Using Larger Than Block-Size Key - Hash Key First")))
      assert.equal("9294727a3638bb1c13f48ef8158bfc9d",
                   hex(core.hmac("md5", ("\11"):rep(16), "Hi There")))
      assert.equal("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
                   hex(core.hmac("md5", ("\170"):rep(80),
                                 "Test Using Larger Than Block-Size Key - Hash Key First")))
      local cases = {}
      for _, klen in ipairs({0, 1, 55, 63, 64, 65, 100, 128, 300}) do
        for _, mlen in ipairs({0, 20, 55, 56, 63, 64, 65, 119, 120, 1000}) do
          local key, msg = {}, {}
          for j = 1, klen do key[j] = string.char((j * 13 + klen) % 256) end
          for j = 1, mlen do msg[j] = string.char((j * 17 + mlen) % 256) end
          cases[#cases + 1] = {table.concat(key), table.concat(msg)}
        end
      end
      local input = {}
      for _, cs in ipairs(cases) do input[#input + 1] = hex(cs[1]) .. " " .. hex(cs[2]) end
      local r = H.run({PYTHON, "-c", [[
import sys, hmac
for line in sys.stdin:
    k, m = (bytes.fromhex(x) for x in line.split(" "))
    print(hmac.new(k, m, "md5").hexdigest(), hmac.new(k, m, "sha256").hexdigest())
]]}, {stdin = table.concat(input, "\n") .. "\n", timeout = 15})
      assert.equal(0, r.status, r.stderr)
      local i = 0
      for line in r.stdout:gmatch("[^\n]+") do
        i = i + 1
        local md5, sha = line:match("^(%x+) (%x+)$")
        local key, msg = cases[i][1], cases[i][2]
        assert.equal(md5, hex(core.hmac("md5", key, msg)), ("md5 key %d msg %d"):format(#key, #msg))
        assert.equal(sha, hex(core.hmac("sha256", key, msg)), ("sha256 key %d msg %d"):format(#key, #msg))
      end
      assert.equal(#cases, i)
    end)

    it("digests (RFC 1321, FIPS 180-2 known answers), compare_digest, bad names", function()
      local core  -- as above: an upvalue of Client, not part of the API
      for i = 1, 20 do
        local name, v = debug.getupvalue(Client, i)
        if not name then break end
        if name == "core" then core = v end
      end
      if not (core and core.digest and core.compare_digest) then
        pending("core.digest not reachable")
        return
      end
      assert.equal("d41d8cd98f00b204e9800998ecf8427e", hex(core.digest("md5", "")))
      assert.equal("900150983cd24fb0d6963f7d28e17f72", hex(core.digest("md5", "abc")))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                   hex(core.digest("sha256", "")))
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                   hex(core.digest("sha256", "abc")))
      assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                   hex(core.digest("sha256",
                       "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))
      assert.is_true(core.compare_digest("", ""))
      assert.is_true(core.compare_digest(("\0x"):rep(16), ("\0x"):rep(16)))
      assert.is_false(core.compare_digest("abc", "abd"))
      assert.is_false(core.compare_digest("abc", "ab"))
      assert.is_false(core.compare_digest("a\0b", "a\0c"))
      for _, f in ipairs({function() return core.digest("sha1", "x") end,
                          function() return core.hmac("SHA256", "k", "x") end,
                          function() return core.compare_digest("x", nil) end}) do
        local ok, err = pcall(f)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("bad argument", 1, true), tostring(err))
      end
    end)

    it("a digest that libcrypto refuses (FIPS-only configuration): ValueError", function()
      local dir = H.tmpdir()
      H.write(dir .. "/openssl.cnf", table.concat({
        "openssl_conf = openssl_init",
        "[openssl_init]", "alg_section = evp_properties",
        "[evp_properties]", "default_properties = fips=yes", ""}, "\n"))
      local r = H.lmp_run({"-e", [[
local Client = require("lmp").connection.Client
local core
for i = 1, 20 do
  local name, v = debug.getupvalue(Client, i)
  if not name then break end
  if name == "core" then core = v end
end
for _ = 1, 2 do
  local ok, e = pcall(core.hmac, "md5", "key", "message")
  print(ok, e.kind, e.message)
end
local ok, e = pcall(core.digest, "sha256", "message")
print(ok, e.kind, e.message)
]]}, {env = {OPENSSL_CONF = dir .. "/openssl.cnf"}})
      assert.equal(0, r.status, r.stderr)
      local lines = {}
      for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(3, #lines, r.stdout)
      assert.matches("^false\tValueError\tHMAC md5: .*unsupported", lines[1])
      assert.equal(lines[1], lines[2])
      assert.matches("^false\tValueError\tdigest sha256: .*unsupported", lines[3])
    end)
  end)

  describe("distrust of the peer", function()
    -- A well-behaved client still gets through to `l`.
    local function still_serves(l, key)
      if key then
        local p = H.spawn(echo_client, l.address, key, 1)
        local ok, err = pcall(function()
          local s = l:accept(10)
          assert.is_not_nil(s)
          echo_serve(s, 1)
          s:close()
        end)
        H.finish(p)
        assert(ok, err)
      else
        local c = Client(l.address, {timeout = 5})
        local s = l:accept(10)
        assert.is_not_nil(s)
        c:send({fine = true})
        assert.is_true(s:poll(10))
        assert.same({fine = true}, s:recv())
        s:send_bytes("yes")
        assert.is_true(c:poll(10))
        assert.equal("yes", c:recv_bytes())
        c:close(); s:close()
      end
    end

    it("a frame longer than max_message: OSError naming the limit, connection closed", function()
      local l, s, c = pair({max_message = 100})
      -- exactly the limit passes
      c:send_bytes(("a"):rep(100))
      assert.is_true(s:poll(10))
      assert.equal(("a"):rep(100), s:recv_bytes())
      -- one more does not (only its header is sent)
      H.raw_write(c:fileno(), be32(101))
      assert.is_true(s:poll(10))
      local e = raises("OSError", s.recv_bytes, s)
      assert.truthy(e.message:find("limit", 1, true), e.message)
      assert.is_true(s.closed)
      raises("ValueError", s.recv, s)
      c:close(); s:close()
      still_serves(l)
      l:close()
    end)

    it("max_message = math.huge is no limit", function()
      local l, s, c = pair({max_message = math.huge})
      c:send_bytes(("h"):rep(100000))
      assert.is_true(s:poll(10))
      assert.equal(100000, #s:recv_bytes())
      c:close(); s:close()
      l:close()
    end)

    it("max_message applies to recv() too, and to the 8-byte length form", function()
      local l, s, c = pair({max_message = 1000})
      c:send(("x"):rep(2000))
      assert.is_true(s:poll(10))
      local e = raises("OSError", s.recv, s)
      assert.truthy(e.message:find("limit", 1, true), e.message)
      assert.is_true(s.closed)
      c:close(); s:close()
      -- default limit (64 MiB) against a 2^40-byte header: refused at once
      l:close()
      l, s, c = pair()
      H.raw_write(c:fileno(), "\255\255\255\255" .. "\0\0\1\0\0\0\0\0")
      assert.is_true(s:poll(10))
      local t0 = H.now()
      e = raises("OSError", s.recv_bytes, s)
      H.took_little(t0, "recv of a huge header")
      assert.truthy(e.message:find("limit", 1, true), e.message)
      assert.is_true(s.closed)
      c:close(); s:close()
      still_serves(l)
      l:close()
    end)

    it("garbage bytes (a negative length, an HTTP request): OSError, the Listener goes on", function()
      local l, s, c = pair()
      H.raw_write(c:fileno(), "\128\0\0\1garbage")
      assert.is_true(s:poll(10))
      raises("OSError", s.recv, s)
      assert.is_true(s.closed)
      c:close(); s:close()
      local s2, c2
      c2 = Client(l.address, {timeout = 5})
      s2 = l:accept(10)
      H.raw_write(c2:fileno(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.is_true(s2:poll(10))
      local t0 = H.now()
      raises("OSError", s2.recv_bytes, s2)
      H.took_little(t0, "recv of an HTTP request")
      assert.is_true(s2.closed)
      c2:close(); s2:close()
      still_serves(l)
      l:close()
    end)

    it("a peer that sends 2 bytes of a header and stalls is dropped after `stall`", function()
      local l, s, c = pair({stall = 0.5})
      H.raw_write(c:fileno(), "\0\0")
      assert.is_true(s:poll(10))
      local t0 = H.now()
      local e = raises("OSError", s.recv, s)
      H.took_about(t0, 0.5, "recv from a stalled peer")
      assert.truthy(e.message:find("part of a message", 1, true), e.message)
      assert.is_true(s.closed)
      c:close(); s:close()
      still_serves(l)
      l:close()
    end)

    it("a peer that stalls in the middle of a payload is dropped after `stall`", function()
      local l, s, c = pair({stall = 0.5})
      H.raw_write(c:fileno(), be32(10) .. "abc")
      assert.is_true(s:poll(10))
      local t0 = H.now()
      raises("OSError", s.recv_bytes, s)
      H.took_about(t0, 0.5, "recv_bytes from a stalled peer")
      assert.is_true(s.closed)
      c:close(); s:close()
      l:close()
    end)

    it("stall bounds the whole rest of a begun message (a peer that dribbles bytes)", function()
      -- The option is "seconds the rest of a begun message may take": a
      -- peer sending one byte every 0.25 s must not hold recv for ever.
      if not have_python then
        pending("no " .. PYTHON)
        return
      end
      local l = Listener{address = "127.0.0.1:0", stall = 1}
      local host, port = l.address:match("^(.*):(%d+)$")
      local p = py_start([[
import sys, socket, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"\0\0\0\x10")
try:
    for i in range(16):
        time.sleep(0.25)
        s.sendall(b"x")
except OSError:
    pass
s.close()
print("done")
]], {host, port})
      local s
      local status, out, err = with_python(p, function()
        s = l:accept(10)
        assert.is_not_nil(s)
        assert.is_true(s:poll(10))
        local t0 = H.now()
        local ok, v = pcall(s.recv_bytes, s)
        assert.is_false(ok, "a message dribbled over 4 s arrived: " .. tostring(v))
        assert.equal("OSError", lmp.is_error(v) and v.kind, tostring(v))
        H.took_about(t0, 1, "recv from a dribbling peer")
      end)
      if s then s:close() end
      l:close()
      assert.equal(0, status, err)
      assert.equal("done\n", out)
    end)

    it("stall applies to Client connections too", function()
      local l, s, c = pair({}, {timeout = 5, stall = 0.5})
      H.raw_write(s:fileno(), be32(10) .. "a")
      assert.is_true(c:poll(10))
      local t0 = H.now()
      raises("OSError", c.recv, c)
      H.took_about(t0, 0.5, "Client's recv from a stalled peer")
      c:close(); s:close(); l:close()
    end)

    it("a silent handshake peer: accept raises AuthenticationError within timeout", function()
      local l = Listener{address = "127.0.0.1:0", authkey = "k", timeout = 0.5}
      local c = Client(l.address, {timeout = 5})  -- no key: answers nothing
      local t0 = H.now()
      local e = raises("AuthenticationError", l.accept, l, 10)
      H.took_about(t0, 0.5, "accept with a silent peer")
      assert.is_string(e.message)
      c:close()
      still_serves(l, "k")
      l:close()
    end)

    it("a handshake peer that sends part of a frame: AuthenticationError within timeout", function()
      -- The handshake timeout bounds the whole handshake, not only the
      -- wait for the first byte of each message.
      local l = Listener{address = "127.0.0.1:0", authkey = "k", timeout = 0.5, stall = 3}
      local c = Client(l.address, {timeout = 5})
      H.raw_write(c:fileno(), "\0\0")
      local t0 = H.now()
      raises("AuthenticationError", l.accept, l, 10)
      H.took_about(t0, 0.5, "accept with a peer that stalls in its answer")
      c:close()
      still_serves(l, "k")
      l:close()
    end)

    it("a handshake server that sends part of a frame: Client raises within timeout", function()
      if not have_python then
        pending("no " .. PYTHON)
        return
      end
      local p = py_start([[
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print("%s:%d" % s.getsockname(), flush=True)
c, _ = s.accept()
c.sendall(b"\0\0")
c.settimeout(10)
try:
    c.recv(100)
except Exception:
    pass
print("done")
]])
      local status, out, err = with_python(p, function()
        local address = py_line(p)
        local t0 = H.now()
        raises("AuthenticationError", Client, address, {authkey = "k", timeout = 0.5, stall = 3})
        H.took_about(t0, 0.5, "Client with a server that stalls in its challenge")
      end)
      assert.equal(0, status, err)
      assert.equal("done\n", out)
    end)

    it("a silent handshake server: Client raises AuthenticationError within timeout", function()
      local l = Listener{address = "127.0.0.1:0"}
      local t0 = H.now()
      raises("AuthenticationError", Client, l.address, {authkey = "k", timeout = 0.5})
      H.took_about(t0, 0.5, "Client with a silent server")
      l:close()
    end)

    it("garbage challenge responses: AuthenticationError, FAILURE sent for a wrong digest", function()
      local l = Listener{address = "127.0.0.1:0", authkey = "k", timeout = 2}
      local responses = {
        "garbage",                    -- no digest prefix, wrong length
        ("x"):rep(16),                -- a legacy MD5 answer, wrong
        "{sha256}" .. ("y"):rep(32),  -- right form, wrong digest
        "{sha384}" .. ("y"):rep(48),  -- a digest lmp does not speak
        "",                           -- empty
      }
      for _, resp in ipairs(responses) do
        local c = Client(l.address, {timeout = 5})
        c:send_bytes(resp)  -- sent before the challenge arrives: read after it
        local t0 = H.now()
        local e = raises("AuthenticationError", l.accept, l, 10)
        H.took_little(t0, "accept with a garbage answer")
        assert.is_string(e.message)
        assert.is_true(c:poll(10))
        local challenge = c:recv_bytes()
        assert.equal("#CHALLENGE#{sha256}", challenge:sub(1, 19))
        assert.equal(19 + 40, #challenge)
        if resp:match("^x+$") or resp:match("^{sha256}") then
          assert.is_true(c:poll(10))
          assert.equal("#FAILURE#", c:recv_bytes())
        end
        c:close()
      end
      -- a header announcing more than a handshake message may hold
      local c = Client(l.address, {timeout = 5})
      H.raw_write(c:fileno(), be32(100000))
      local t0 = H.now()
      raises("AuthenticationError", l.accept, l, 10)
      H.took_little(t0, "accept with an oversized answer")
      c:close()
      -- a peer that closes at once
      c = Client(l.address, {timeout = 5})
      c:close()
      raises("AuthenticationError", l.accept, l, 10)
      still_serves(l, "k")
      l:close()
    end)

    it("a garbage challenge from the server: Client raises AuthenticationError", function()
      if not have_python then
        pending("no " .. PYTHON)
        return
      end
      local p = py_start([[
import sys
from multiprocessing.connection import Listener
l = Listener(("127.0.0.1", 0))
print("%s:%d" % l.address, flush=True)
for m in [b"HELLO", b"#CHALLENGE#short", b"#CHALLENGE#{sha1}" + b"a" * 40]:
    c = l.accept()
    c.send_bytes(m)
    try:
        c.recv_bytes()
    except EOFError:
        pass
    c.close()
print("done")
]])
      local status, out, err = with_python(p, function()
        local address = py_line(p)
        for _ = 1, 3 do
          local t0 = H.now()
          raises("AuthenticationError", Client, address, {authkey = "k", timeout = 5})
          H.took_little(t0, "Client with a garbage challenge")
        end
      end)
      assert.equal(0, status, err)
      assert.equal("done\n", out)
    end)

    it("raw Python sockets sending garbage to an lmp Listener", function()
      if not have_python then
        pending("no " .. PYTHON)
        return
      end
      local l = Listener{address = "127.0.0.1:0", authkey = "k", timeout = 2}
      local host, port = l.address:match("^(.*):(%d+)$")
      local p = py_start([[
import sys, socket
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"GET / HTTP/1.1\r\nHost: lmp\r\n\r\n")
s.settimeout(10)
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
print("closed after", str(len(data) > 0).lower())
]], {host, port})
      local status, out, err = with_python(p, function()
        raises("AuthenticationError", l.accept, l, 10)
      end)
      assert.equal(0, status, err)
      assert.equal("closed after true\n", out)
      still_serves(l, "k")
      l:close()
    end)

    describe("safe mode", function()
      local Point = {__name = "listener_spec.Point"}
      Point.__index = Point
      function Point:norm2() return self.x * self.x + self.y * self.y end
      lmp.codec.register("listener_spec.Point", Point)

      local function refused(value, what)
        local l, s, c = pair()
        c:send(value)
        assert.is_true(s:poll(10))
        local e = raises("CodecError", s.recv, s)
        assert.truthy(e.message:find("refused in safe mode", 1, true), what .. ": " .. e.message)
        -- the stream is still in step: the next message arrives
        c:send({after = what})
        assert.is_true(s:poll(10))
        assert.same({after = what}, s:recv())
        c:close(); s:close(); l:close()
      end

      it("a function sent by the peer raises CodecError in recv", function()
        refused(function() return 1 end, "function")
        refused({handler = function() end}, "nested function")
      end)

      it("module and C function references raise CodecError in recv", function()
        refused({string.format}, "C function")
        refused({require "lmp"}, "lmp module")
        refused({m = string}, "string module")
        refused(print, "print")
      end)

      it("lmp objects sent by the peer raise CodecError in recv", function()
        -- lmp objects cannot be encoded outside a Process's args, so the
        -- messages are written by hand (docs/codec.md, tag 0x0F).
        local function str(x) return "\7" .. string.char(#x) .. x end
        for _, name in ipairs({"lmp.Lock", "lmp.Connection", "lmp.Queue", "lmp.SharedMemory"}) do
          local l, s, c = pair()
          -- {obj = <lmp object name with payload {1, true, true}>}
          c:send_bytes("\255\1" .. "\8\0\1" .. str("obj") ..
                       "\15" .. str(name) .. "\8\3\0\4\1\2\2")
          assert.is_true(s:poll(10))
          local e = raises("CodecError", s.recv, s)
          assert.truthy(e.message:find("lmp object refused in safe mode", 1, true), e.message)
          c:send("next")
          assert.is_true(s:poll(10))
          assert.equal("next", s:recv())
          c:close(); s:close(); l:close()
        end
        -- and a Lock passed by a real sender is refused by its own encoder
        local lock = lmp.Lock()
        local l, s, c = pair()
        raises("CodecError", c.send, c, {lock = lock})
        lock:close()
        c:close(); s:close(); l:close()
      end)

      it("with safe = false, an lmp object from the peer still cannot name a descriptor here", function()
        local function str(x) return "\7" .. string.char(#x) .. x end
        for _, name in ipairs({"lmp.Lock", "lmp.Connection", "lmp.Queue", "lmp.SharedMemory"}) do
          local l, s, c = pair({safe = false})
          c:send_bytes("\255\1" .. "\8\0\1" .. str("obj") ..
                       "\15" .. str(name) .. "\8\3\0\4\1\2\2")
          assert.is_true(s:poll(10))
          local e = raises("CodecError", s.recv, s)
          assert.truthy(e.message:find("can only arrive in a child's arguments", 1, true), e.message)
          c:close(); s:close(); l:close()
        end
      end)

      it("safe mode also holds on the Client side", function()
        local l, s, c = pair()
        s:send({f = function() return 2 end})
        assert.is_true(c:poll(10))
        raises("CodecError", c.recv, c)
        c:close(); s:close(); l:close()
        l, s, c = pair({}, {timeout = 5, safe = false})
        s:send({f = function() return 2 end})
        assert.is_true(c:poll(10))
        assert.equal(2, c:recv().f())
        c:close(); s:close(); l:close()
      end)

      it("plain data and registered metatables pass in safe mode", function()
        local l, s, c = pair()
        local v = {1, "two", {3}, k = {deep = {true, false, 1.5}}, bin = "\0\1\255",
                   p = setmetatable({x = 3, y = 4}, Point)}
        c:send(v)
        assert.is_true(s:poll(10))
        local got = s:recv()
        assert.same({1, "two", {3}}, {got[1], got[2], got[3]})
        assert.same({deep = {true, false, 1.5}}, got.k)
        assert.equal("\0\1\255", got.bin)
        assert.equal(Point, getmetatable(got.p))
        assert.equal(25, got.p:norm2())
        c:close(); s:close(); l:close()
      end)

      it("with safe = false on the Listener, functions and references arrive", function()
        local l, s, c = pair({safe = false})
        c:send({f = function(a) return a * 2 end, fmt = string.format, m = require "lmp"})
        assert.is_true(s:poll(10))
        local got = s:recv()
        assert.equal(42, got.f(21))
        assert.equal(string.format, got.fmt)
        assert.equal(lmp, got.m)
        c:close(); s:close(); l:close()
      end)

      it("safe = false with an authkey, across processes", function()
        local l = Listener{address = "127.0.0.1:0", authkey = "k", safe = false}
        local p = H.spawn(function(address)
          local lmp_ = require "lmp"
          local c = lmp_.connection.Client(address, {authkey = "k", timeout = 5})
          c:send({f = function(x) return x + 1 end, m = string})
          c:close()
        end, l.address)
        local ok, err = pcall(function()
          local s = l:accept(10)
          assert.is_not_nil(s)
          assert.is_true(s:poll(10))
          local got = s:recv()
          assert.equal(8, got.f(7))
          assert.equal(string, got.m)
          s:close()
        end)
        l:close()
        H.finish(p)
        assert(ok, err)
      end)
    end)
  end)

  describe("bad arguments", function()
    it("an address that is not a string: TypeError", function()
      raises("TypeError", Listener, {address = 42})
      raises("TypeError", Listener, {address = {}})
      raises("TypeError", Client, 42)
      raises("TypeError", Client, nil)
      raises("TypeError", Client, {address = "127.0.0.1:1"})
    end)

    it("a malformed host:port: ValueError", function()
      for _, a in ipairs({"127.0.0.1:", "127.0.0.1:port", "999.0.0.1:80",
                          "not a host:80", "127.0.0.1:80x", ""}) do
        raises("ValueError", Listener, {address = a})
        raises("ValueError", Client, a, {timeout = 1})
      end
    end)

    it("an authkey that is not a string: TypeError", function()
      raises("TypeError", Listener, {address = "127.0.0.1:0", authkey = 42})
      raises("TypeError", Listener, "127.0.0.1:0", {authkey = true})
      raises("TypeError", Client, "127.0.0.1:1", {authkey = {}})
    end)

    it("options that are not a table, bad numbers: TypeError", function()
      raises("TypeError", Listener, 42)
      raises("TypeError", Client, "127.0.0.1:1", "k")
      raises("TypeError", Listener, {address = "127.0.0.1:0", timeout = "x"})
      raises("TypeError", Listener, {address = "127.0.0.1:0", max_message = -1})
      raises("TypeError", Client, "127.0.0.1:1", {stall = -1})
      -- NaN is not a number >= 0 (it was let through, and converted to a
      -- size_t or a deadline later)
      raises("TypeError", Listener, {address = "127.0.0.1:0", max_message = 0 / 0})
      raises("TypeError", Listener, {address = "127.0.0.1:0", timeout = 0 / 0})
      raises("TypeError", Client, "127.0.0.1:1", {stall = 0 / 0})
      local l = Listener{address = "127.0.0.1:0"}
      raises("TypeError", l.accept, l, "soon")
      l:close()
    end)

    it("listening on a Unix path that exists: OSError", function()
      local path = H.tmpdir() .. "/taken.sock"
      local l = Listener(path)
      raises("OSError", Listener, path)
      l:close()
      H.write(path, "a file")
      raises("OSError", Listener, path)
    end)
  end)
end)
