-- lmp.Pipe, Connection and lmp.connection.wait (SPEC section 4, details in
-- section 12): messages and raw bytes, poll, end of file, closing, the wire
-- format (CPython's multiprocessing.connection frames, checked byte for
-- byte and against a real Python peer), large messages and connections
-- passed to child processes.
local H = require "spec.support.helpers"
local lmp = require "lmp"

local raises = H.raises
local function raises_lmp(f, ...) return H.raises(nil, f, ...) end

-- 4-byte big-endian length, as CPython writes it.
local function be32(n)
  return string.char(math.floor(n / 2^24) % 256, math.floor(n / 2^16) % 256,
                     math.floor(n / 2^8) % 256, n % 256)
end

local function contains(list, x)
  for _, v in ipairs(list) do if rawequal(v, x) then return true end end
  return false
end

describe("lmp.Pipe", function()
  H.check_leaks()

  it("is duplex by default", function()
    local a, b = lmp.Pipe()
    for _, c in ipairs({a, b}) do
      assert.is_true(c.readable)
      assert.is_true(c.writable)
      assert.is_false(c.closed)
      assert.is_number(c:fileno())
      assert.is_true(H.fd_open(c:fileno()))
    end
    a:send("to b")
    b:send("to a")
    assert.is_true(b:poll(5))
    assert.equal("to b", b:recv())
    assert.is_true(a:poll(5))
    assert.equal("to a", a:recv())
    a:close(); b:close()
  end)

  it("Pipe(false): the first end receives, the second sends", function()
    local r, w = lmp.Pipe(false)
    assert.is_true(r.readable)
    assert.is_false(r.writable)
    assert.is_false(w.readable)
    assert.is_true(w.writable)
    w:send({1, 2})
    assert.is_true(r:poll(5))
    assert.same({1, 2}, r:recv())
    raises_lmp(r.send, r, "x")
    raises_lmp(r.send_bytes, r, "x")
    raises_lmp(w.recv, w)
    raises_lmp(w.recv_bytes, w)
    r:close(); w:close()
  end)

  it("Pipe(true) is duplex", function()
    local a, b = lmp.Pipe(true)
    assert.is_true(a.writable and a.readable and b.writable and b.readable)
    a:close(); b:close()
  end)

  it("sends and receives values through the codec", function()
    local a, b = lmp.Pipe()
    local values = {0, -1, 1.5, 2^53, "", "text", "bin\0\255", true, false,
                    {}, {1, 2, 3}, {a = {b = {c = "deep"}}, [10] = 1},
                    {n = 3, "x", nil, "z"}}
    for _, v in ipairs(values) do
      a:send(v)
      assert.is_true(b:poll(5))
      assert.same(v, b:recv())
    end
    a:close(); b:close()
  end)

  it("sends nil: recv returns nil without a reason", function()
    local a, b = lmp.Pipe()
    a:send(nil)
    assert.is_true(b:poll(5))
    local v, why = b:recv()
    assert.is_nil(v)
    assert.is_nil(why)
    a:close(); b:close()
  end)

  it("keeps several queued messages apart, in order", function()
    local a, b = lmp.Pipe()
    for i = 1, 100 do a:send(i) end
    a:send_bytes("raw")
    for i = 1, 100 do
      assert.is_true(b:poll(5))
      assert.equal(i, b:recv())
    end
    assert.equal("raw", b:recv_bytes())
    assert.is_false(b:poll())
    a:close(); b:close()
  end)

  it("send_bytes/recv_bytes carry bytes as they are", function()
    local a, b = lmp.Pipe()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    for _, s in ipairs({"", "abc", table.concat(all), ("\0"):rep(1000),
                        ("xyz"):rep(30000)}) do
      a:send_bytes(s)
      assert.is_true(b:poll(5))
      assert.equal(s, b:recv_bytes())
    end
    a:close(); b:close()
  end)

  it("handles frames around the 64 KiB read chunk", function()
    local a, b = lmp.Pipe()
    for _, n in ipairs({65535, 65536, 65537, 65536 - 4, 65536 + 4}) do
      local s = ("0123456789"):rep(math.ceil(n / 10)):sub(1, n)
      a:send_bytes(s)
      a:send_bytes("after")
      assert.is_true(b:poll(5))
      local got = b:recv_bytes()
      assert.equal(n, #got)
      assert.equal(s, got)
      assert.equal("after", b:recv_bytes())
    end
    a:close(); b:close()
  end)

  it("send_bytes(s, offset, size) counts bytes from 0", function()
    local a, b = lmp.Pipe()
    local s = "hello world"
    local cases = {
      {{6}, "world"}, {{0, 5}, "hello"}, {{0}, s}, {{11}, ""}, {{3, 0}, ""},
      {{4, 3}, "o w"}, {{10, 1}, "d"},
    }
    for _, c in ipairs(cases) do
      a:send_bytes(s, unpack(c[1]))
      assert.is_true(b:poll(5))
      assert.equal(c[2], b:recv_bytes())
    end
    raises("ValueError", a.send_bytes, a, s, -1)
    raises("ValueError", a.send_bytes, a, s, 12)
    raises("ValueError", a.send_bytes, a, s, 0, 12)
    raises("ValueError", a.send_bytes, a, s, 6, 6)
    raises("ValueError", a.send_bytes, a, s, 0, -1)
    assert.is_false(b:poll())
    a:close(); b:close()
  end)

  it("recv_bytes(maxlength) refuses a longer message with an lmp error", function()
    local a, b = lmp.Pipe()
    a:send_bytes("short")
    assert.equal("short", b:recv_bytes(5))
    a:send_bytes("too long")
    assert.is_true(b:poll(5))
    raises_lmp(b.recv_bytes, b, 3)
    raises("ValueError", b.recv_bytes, b, -1)
    a:close(); b:close()
  end)

  it("recv_bytes(0) takes an empty message only; math.huge is no limit; NaN is a ValueError", function()
    -- 0 was taken for "no limit", and math.huge and NaN were converted to
    -- a size_t, which C leaves undefined (clang's UBSan reports it).
    local a, b = lmp.Pipe()
    a:send_bytes("")
    assert.equal("", b:recv_bytes(0))
    a:send_bytes("x")
    assert.is_true(b:poll(5))
    raises("OSError", b.recv_bytes, b, 0)
    assert.equal("x", b:recv_bytes())  -- still there for a larger limit
    a:send_bytes("hello")
    assert.equal("hello", b:recv_bytes(math.huge))
    a:send_bytes("hello")
    assert.equal("hello", b:recv_bytes(2^70))
    a:send_bytes("hello")
    raises("ValueError", b.recv_bytes, b, 0 / 0)
    assert.equal("hello", b:recv_bytes(nil))
    a:close(); b:close()
  end)

  describe("poll", function()
    it("without a timeout does not wait", function()
      local a, b = lmp.Pipe()
      local t0 = H.now()
      assert.is_false(b:poll())
      assert.is_false(b:poll(0))
      assert.is_false(b:poll(-1))
      assert.is_true(H.now() - t0 < 0.1)
      a:close(); b:close()
    end)

    it("with a timeout waits that long", function()
      local a, b = lmp.Pipe()
      local t0 = H.now()
      assert.is_false(b:poll(0.2))
      local dt = H.now() - t0
      assert.is_true(dt >= 0.18 and dt < 1, "poll(0.2) took " .. dt)
      a:close(); b:close()
    end)

    it("waits the whole timeout even when the event loop was idle before", function()
      local p = lmp.Process(function() end)
      p:start()
      assert.equal(0, p:join(10))
      local a, b = lmp.Pipe()
      H.sleep(0.4)  -- time passes without lmp's loop running
      local t0 = H.now()
      assert.is_false(b:poll(0.2))
      local dt = H.now() - t0
      assert.is_true(dt >= 0.18, "poll(0.2) returned after " .. dt)
      a:close(); b:close()
    end)

    it("is true when a message is there, and stays true until it is read", function()
      local a, b = lmp.Pipe()
      a:send("m")
      assert.is_true(b:poll(5))
      assert.is_true(b:poll())
      assert.equal("m", b:recv())
      assert.is_false(b:poll())
      a:close(); b:close()
    end)

    it("poll(math.huge) blocks until a message comes from a child", function()
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(c)
        local l = require "lmp"
        local x = l.Pipe()
        x:poll(0.2)
        c:send("late")
      end, b)
      p:start()
      local t0 = H.now()
      assert.is_true(a:poll(math.huge))
      assert.is_true(H.now() - t0 >= 0.1)
      assert.equal("late", a:recv())
      assert.equal(0, p:join(10))
      a:close(); b:close()
    end)

    it("counts a closed peer as readable; then recv returns nil, \"eof\"", function()
      local a, b = lmp.Pipe()
      a:send("last")
      a:close()
      assert.is_true(b:poll())
      assert.equal("last", b:recv())
      assert.is_true(b:poll())
      assert.is_true(b:poll(5))
      local v, why = b:recv()
      assert.is_nil(v)
      assert.equal("eof", why)
      v, why = b:recv_bytes()
      assert.is_nil(v)
      assert.equal("eof", why)
      b:close()
    end)

    it("a closed peer of a one-way pipe counts as readable too", function()
      local r, w = lmp.Pipe(false)
      w:close()
      assert.is_true(r:poll(5))
      local v, why = r:recv_bytes()
      assert.is_nil(v)
      assert.equal("eof", why)
      r:close()
    end)
  end)

  describe("closing", function()
    it("sets closed and makes every use raise an lmp error", function()
      local a, b = lmp.Pipe()
      local fd = a:fileno()
      a:close()
      assert.is_true(a.closed)
      assert.is_false(H.fd_open(fd))
      raises_lmp(a.send, a, 1)
      raises_lmp(a.send_bytes, a, "x")
      raises_lmp(a.recv, a)
      raises_lmp(a.recv_bytes, a)
      raises_lmp(a.poll, a)
      raises_lmp(a.fileno, a)
      a:close()  -- again: fine
      b:close()
    end)

    it("sending to a peer that closed is an lmp error, not a SIGPIPE", function()
      local a, b = lmp.Pipe()
      b:close()
      raises_lmp(function()
        for _ = 1, 10 do a:send_bytes(("x"):rep(1000)) end
      end)
      raises_lmp(a.send, a, "again")
      a:close()
    end)

    it("a connection that is garbage collected closes its descriptor", function()
      local fd1, fd2
      do
        local a, b = lmp.Pipe()
        fd1, fd2 = a:fileno(), b:fileno()
      end
      collectgarbage(); collectgarbage()
      assert.is_false(H.fd_open(fd1))
      assert.is_false(H.fd_open(fd2))
    end)

    it("a Connection cannot be sent as a message", function()
      local a, b = lmp.Pipe()
      local c, d = lmp.Pipe()
      raises("CodecError", a.send, a, c)
      raises("CodecError", a.send, a, {conn = d})
      assert.is_false(b:poll())
      a:close(); b:close(); c:close(); d:close()
    end)
  end)

  describe("wire format", function()
    it("send_bytes writes a 4-byte big-endian length, then the bytes", function()
      local a, b = lmp.Pipe()
      a:send_bytes("abc")
      assert.equal("\0\0\0\3abc", H.raw_read(b:fileno(), 100, 5))
      local s = ("q"):rep(70000)
      a:send_bytes(s)
      local got = {}
      local n = 0
      while n < 70004 do
        local chunk = H.raw_read(b:fileno(), 70004 - n, 5)
        assert.is_true(#chunk > 0)
        got[#got + 1] = chunk
        n = n + #chunk
      end
      got = table.concat(got)
      assert.equal("\0\1\17\112", got:sub(1, 4))  -- 70000 = 0x00011170
      assert.equal(s, got:sub(5))
      a:close(); b:close()
    end)

    it("send writes the codec's text for plain data in a frame", function()
      local a, b = lmp.Pipe()
      a:send({1, 2, 3})
      local raw = H.raw_read(b:fileno(), 100, 5)
      local len = raw:byte(1) * 2^24 + raw:byte(2) * 2^16 + raw:byte(3) * 2^8 + raw:byte(4)
      assert.equal(#raw - 4, len)
      assert.equal("[1,2,3]", raw:sub(5))
      a:close(); b:close()
    end)

    it("recv_bytes reads frames written by hand, split at any byte", function()
      local a, b = lmp.Pipe()
      local frame = be32(5) .. "hello" .. be32(0) .. be32(3) .. "xyz"
      for i = 1, #frame do
        H.raw_write(a:fileno(), frame:sub(i, i))
      end
      assert.equal("hello", b:recv_bytes())
      assert.equal("", b:recv_bytes())
      assert.equal("xyz", b:recv_bytes())
      a:close(); b:close()
    end)

    it("reads the long header form (-1, then an 8-byte length)", function()
      local a, b = lmp.Pipe()
      H.raw_write(a:fileno(), "\255\255\255\255" .. "\0\0\0\0\0\0\0\5" .. "hello")
      assert.is_true(b:poll(5))
      assert.equal("hello", b:recv_bytes())
      a:close(); b:close()
    end)

    it("reads a long-form header that arrived with the message before it", function()
      local a, b = lmp.Pipe()
      -- one write: the second frame's header is already buffered when the
      -- first frame has been read
      H.raw_write(a:fileno(), "\0\0\0\2" .. "hi" ..
                  "\255\255\255\255" .. "\0\0\0\0\0\0\0\5" .. "hello" ..
                  "\0\0\0\3" .. "end")
      assert.is_true(b:poll(5))
      assert.equal("hi", b:recv_bytes())
      assert.equal("hello", b:recv_bytes())
      assert.equal("end", b:recv_bytes())
      a:close(); b:close()
    end)

    it("recv decodes JSON text written by a foreign peer", function()
      local a, b = lmp.Pipe()
      local json = '{"k": [1, 2, {"x": null}], "s": "\\u00e9"}'
      H.raw_write(a:fileno(), be32(#json) .. json)
      assert.is_true(b:poll(5))
      local v = b:recv()
      assert.equal(1, v.k[1])
      assert.equal("\195\169", v.s)
      a:close(); b:close()
    end)

    it("a peer that closes in the middle of a frame is an lmp error", function()
      local a, b = lmp.Pipe()
      H.raw_write(a:fileno(), be32(10) .. "abc")
      a:close()
      assert.is_true(b:poll(5))
      raises_lmp(b.recv_bytes, b)
      b:close()
    end)

    it("interoperates with CPython's multiprocessing.connection", function()
      local python = "/usr/bin/python3"
      if not io.open(python) then
        pending("no " .. python)
        return
      end
      local dir = H.tmpdir()
      local script = H.write(dir .. "/peer.py", [[
import sys, json
from multiprocessing.connection import Connection
c = Connection(int(sys.argv[1]))
x = c.recv_bytes()
c.send_bytes(x[::-1])
v = json.loads(c.recv_bytes())
c.send_bytes(json.dumps({"got": v}).encode())
big = c.recv_bytes()
c.send_bytes(b"%d:%s" % (len(big), big[:3] + big[-3:]))
c.send_bytes(b"z" * 3000000)
c.close()
print("python done", flush=True)
]])
      local a, b = lmp.Pipe()
      local fd = H.dup2(b:fileno(), H.free_fd(63))  -- inherited by the Python process
      b:close()
      H.set_blocking(fd)  -- Python's Connection expects a blocking descriptor
      local proc = io.popen("timeout 20 " .. python .. " " .. H.quote(script) .. " " .. fd)
      H.close_fd(fd)
      local ok, err = pcall(function()
        a:send_bytes("hello\0world")
        assert.is_true(a:poll(10))
        assert.equal("dlrow\0olleh", a:recv_bytes())
        a:send({k = {1, 2, 3}, s = "text", f = 1.5, t = true})
        assert.is_true(a:poll(10))
        assert.same({got = {k = {1, 2, 3}, s = "text", f = 1.5, t = true}}, a:recv())
        local big = "abc" .. ("-"):rep(3000000) .. "xyz"
        a:send_bytes(big)
        assert.is_true(a:poll(10))
        assert.equal(#big .. ":abcxyz", a:recv_bytes())
        assert.is_true(a:poll(10))
        assert.equal(("z"):rep(3000000), a:recv_bytes())
        assert.is_true(a:poll(10))
        local v, why = a:recv()
        assert.is_nil(v)
        assert.equal("eof", why)
      end)
      a:close()
      local out = proc:read("*a")
      proc:close()
      assert(ok, err)
      assert.equal("python done\n", out)
    end)
  end)
end)

describe("two processes sending large messages to each other at once", function()
  it("do not wait for each other for ever (a send reads what the peer sends meanwhile)", function()
    -- Both sides send more than a socket buffer holds before either reads.
    -- Run in a separate lmp with a timeout, since the bug was a hang.
    local r = H.lmp_run({"-e", [[
      local lmp = require "lmp"
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(conn)
        conn:send_bytes(string.rep("c", 4 * 1024 * 1024))
        conn:send({n = 1, big = string.rep("d", 1024 * 1024)})
        assert(#conn:recv_bytes() == 4 * 1024 * 1024)
        assert(conn:recv().big == string.rep("q", 1024 * 1024))
      end, b)
      p:start()
      a:send_bytes(string.rep("p", 4 * 1024 * 1024))
      a:send({big = string.rep("q", 1024 * 1024)})
      assert(#a:recv_bytes() == 4 * 1024 * 1024)
      assert(a:recv().big == string.rep("d", 1024 * 1024))
      assert(p:join(10) == 0)
      print("ok")
    ]]}, {timeout = 20})
    assert.equal(0, r.status, r.stderr)
    assert.equal("ok\n", r.stdout)
  end)
end)

describe("lmp.connection.wait", function()
  H.check_leaks()

  it("takes a negative timeout as 0 and math.huge as no limit", function()
    local a, b = lmp.Pipe()
    local t = H.now()
    assert.same({}, lmp.connection.wait({a}, -1))
    assert.is_false(a:poll(-5))
    assert.is_true(H.now() - t < 0.5)
    b:send("x")
    assert.same({a}, lmp.connection.wait({a}, math.huge))
    assert.is_true(a:poll(math.huge))
    local p = lmp.Process(function() end)
    p:start()
    assert.equal(0, p:join(math.huge))
    a:close(); b:close()
  end)

  it("returns the ready connections, as the same objects", function()
    local a, b = lmp.Pipe()
    local c, d = lmp.Pipe()
    local e, f = lmp.Pipe()
    a:send(1)
    e:send(2)
    local ready = lmp.connection.wait({b, d, f}, 5)
    assert.equal(2, #ready)
    assert.is_true(contains(ready, b))
    assert.is_true(contains(ready, f))
    assert.is_false(contains(ready, d))
    for _, x in ipairs({a, b, c, d, e, f}) do x:close() end
  end)

  it("times out with an empty list", function()
    local a, b = lmp.Pipe()
    local t0 = H.now()
    assert.same({}, lmp.connection.wait({b}, 0.2))
    local dt = H.now() - t0
    assert.is_true(dt >= 0.18 and dt < 1, "took " .. dt)
    assert.same({}, lmp.connection.wait({b}, 0))
    assert.same({}, lmp.connection.wait({}, 0.05))
    a:close(); b:close()
  end)

  it("waits for a message from a child (timeout nil and math.huge)", function()
    for _, timeout in ipairs({math.huge, false}) do
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(c)
        local l = require "lmp"
        local x = l.Pipe()
        x:poll(0.1)
        c:send("hi")
      end, b)
      p:start()
      local ready
      if timeout then ready = lmp.connection.wait({a}, timeout)
      else ready = lmp.connection.wait({a}) end
      assert.equal(1, #ready)
      assert.is_true(rawequal(a, ready[1]))
      assert.equal("hi", a:recv())
      assert.equal(0, p:join(10))
      a:close(); b:close()
    end
  end)

  it("counts a closed peer as ready", function()
    local a, b = lmp.Pipe()
    a:close()
    local ready = lmp.connection.wait({b}, 5)
    assert.equal(1, #ready)
    assert.is_true(rawequal(b, ready[1]))
    local v, why = b:recv()
    assert.is_nil(v)
    assert.equal("eof", why)
    b:close()
  end)

  it("sees a message already buffered by an earlier read", function()
    local a, b = lmp.Pipe()
    a:send(1)
    a:send(2)
    assert.is_true(b:poll(5))
    assert.equal(1, b:recv())  -- both frames were read at once
    local ready = lmp.connection.wait({b}, 0)
    assert.equal(1, #ready)
    assert.is_true(b:poll())
    assert.equal(2, b:recv())
    assert.same({}, lmp.connection.wait({b}, 0))
    a:close(); b:close()
  end)

  it("accepts raw descriptors and returns them as given", function()
    local a, b = lmp.Pipe()
    local c, d = lmp.Pipe()
    a:send("x")
    local ready = lmp.connection.wait({b:fileno(), d:fileno()}, 5)
    assert.same({b:fileno()}, ready)
    a:close(); b:close(); c:close(); d:close()
  end)

  it("mixes connections, processes and descriptors", function()
    local a, b = lmp.Pipe()
    local c, d = lmp.Pipe()
    local p = lmp.Process(function() end)
    local q = lmp.Process(function()
      local l = require "lmp"
      local x = l.Pipe()
      x:poll(30)
    end)
    p:start(); q:start()
    assert.equal(0, p:join(10))
    a:send("x")
    local list = {b, p, q, d:fileno()}
    local ok, err = pcall(function()
      local ready = lmp.connection.wait(list, 5)
      assert.equal(2, #ready)
      assert.is_true(contains(ready, b))
      assert.is_true(contains(ready, p))
    end)
    q:kill()
    assert.equal(-9, q:join(10))
    assert(ok, err)
    local ready = lmp.connection.wait(list, 5)
    assert.equal(3, #ready)
    assert.is_true(contains(ready, q))
    a:close(); b:close(); c:close(); d:close()
  end)

  it("accepts the same descriptor twice (a Process and its sentinel)", function()
    local a, b = lmp.Pipe()
    local q = lmp.Process(function()
      local l = require "lmp"
      local x = l.Pipe()
      x:poll(30)
    end)
    q:start()
    local ok, err = pcall(function()
      -- a message makes b ready; q and q.sentinel are not
      a:send(1)
      local ready = lmp.connection.wait({b, q, q.sentinel, b}, 5)
      assert.is_true(contains(ready, b))
      assert.is_false(contains(ready, q))
    end)
    q:kill()
    assert.equal(-9, q:join(10))
    assert(ok, err)
    local ready = lmp.connection.wait({q, q.sentinel}, 5)
    assert.equal(2, #ready)
    a:close(); b:close()
  end)

  it("waits the whole timeout even when the event loop was idle before", function()
    local p = lmp.Process(function() end)
    p:start()
    assert.equal(0, p:join(10))
    local a, b = lmp.Pipe()
    H.sleep(0.4)  -- time passes without lmp's loop running
    local t0 = H.now()
    assert.same({}, lmp.connection.wait({b}, 0.2))
    local dt = H.now() - t0
    assert.is_true(dt >= 0.18, "wait(list, 0.2) returned after " .. dt)
    a:close(); b:close()
  end)

  it("rejects a closed connection and entries that are not waitable", function()
    local a, b = lmp.Pipe()
    a:close()
    raises_lmp(lmp.connection.wait, {a}, 0)
    raises_lmp(lmp.connection.wait, {"nope"}, 0)
    raises_lmp(lmp.connection.wait, {{}}, 0)
    b:close()
  end)
end)

describe("Connections and child processes", function()
  H.check_leaks()

  it("a duplex connection passed as an argument works both ways", function()
    local a, b = lmp.Pipe()
    local p = lmp.Process(function(c)
      assert(c.readable and c.writable)
      assert(c:poll(10))
      local m = c:recv()
      c:send({echo = m, n = m.n + 1})
      assert(c:poll(10))
      c:send_bytes(c:recv_bytes() .. "!")
    end, b)
    p:start()
    a:send({n = 41})
    assert.is_true(a:poll(10))
    assert.same({echo = {n = 41}, n = 42}, a:recv())
    a:send_bytes("bytes")
    assert.is_true(a:poll(10))
    assert.equal("bytes!", a:recv_bytes())
    assert.equal(0, p:join(10))
    a:close(); b:close()
  end)

  it("one-way ends keep their direction in the child", function()
    local r1, w1 = lmp.Pipe(false)  -- child -> parent
    local r2, w2 = lmp.Pipe(false)  -- parent -> child
    local p = lmp.Process(function(w, r)
      assert(r:poll(10))
      local m = r:recv()
      w:send({m = m, wr = w.readable, ww = w.writable, rr = r.readable, rw = r.writable})
    end, w1, r2)
    p:start()
    w2:send("down")
    assert.is_true(r1:poll(10))
    assert.same({m = "down", wr = false, ww = true, rr = true, rw = false}, r1:recv())
    assert.equal(0, p:join(10))
    for _, c in ipairs({r1, w1, r2, w2}) do c:close() end
  end)

  it("connections inside tables and in the target's upvalues", function()
    local a, b = lmp.Pipe()
    local c, d = lmp.Pipe()
    local p = lmp.Process(function(t)
      t.conns[1]:send("via table")
      d:send("via upvalue")
    end, {conns = {b}})
    p:start()
    assert.is_true(a:poll(10))
    assert.equal("via table", a:recv())
    assert.is_true(c:poll(10))
    assert.equal("via upvalue", c:recv())
    assert.equal(0, p:join(10))
    a:close(); b:close(); c:close(); d:close()
  end)

  it("the same connection passed twice works", function()
    local a, b = lmp.Pipe()
    local p = lmp.Process(function(x, y)
      x:send(1)
      y:send(2)
    end, b, b)
    p:start()
    assert.is_true(a:poll(10))
    assert.equal(1, a:recv())
    assert.is_true(a:poll(10))
    assert.equal(2, a:recv())
    assert.equal(0, p:join(10))
    a:close(); b:close()
  end)

  it("end of file once the child ends and the parent closed its copy", function()
    local a, b = lmp.Pipe()
    -- a bystander child started in between must not hold b either
    local by = lmp.Process(function()
      local l = require "lmp"
      local x = l.Pipe()
      x:poll(30)
    end)
    local p = lmp.Process(function(c) c:send("bye") end, b)
    p:start()
    by:start()
    b:close()
    assert.equal(0, p:join(10))
    assert.is_true(a:poll(10))
    assert.equal("bye", a:recv())
    if H.forked then
      -- a forked bystander has a copy of b until it ends
      assert.is_false(a:poll(0.2))
      by:kill()
      assert.equal(-9, by:join(10))
    end
    assert.is_true(a:poll(10), "no end of file while a bystander child runs")
    local v, why = a:recv()
    assert.is_nil(v)
    assert.equal("eof", why)
    by:kill()
    assert.equal(-9, by:join(10))
    a:close()
  end)

  it("a child inherits no descriptor that it was not given", function()
    local a, b = lmp.Pipe()
    local f = assert(io.open("/dev/null"))  -- not close-on-exec
    local stray = H.dup2(a:fileno(), H.free_fd(77))
    local p = lmp.Process(function(c)
      local fds = {}
      local h = io.popen("ls /proc/" .. require("lmp").current_process().pid .. "/fd")
      for n in h:read("*a"):gmatch("%d+") do fds[#fds + 1] = tonumber(n) end
      h:close()
      c:send(fds)
    end, b)
    p:start()
    assert.is_true(a:poll(10))
    local fds = a:recv()
    assert.equal(0, p:join(10))
    H.close_fd(stray)
    f:close()
    local set = {}
    for _, n in ipairs(fds) do set[n] = true end
    -- a forked child is a copy of the parent, descriptors included
    if H.forked then assert.is_true(set[stray]) else
      assert.is_nil(set[stray], "the child inherited fd " .. stray)
    end
    a:close(); b:close()
  end)

  it("keeps the order of 10000 small messages each way", function()
    local a, b = lmp.Pipe()
    local N = 10000
    local p = lmp.Process(function(c, n)
      local got = {}
      for i = 1, n do
        assert(c:poll(10))
        got[i] = c:recv()
      end
      for i = 1, n do c:send(got[i]) end
      for i = 1, n do c:send_bytes(tostring(i)) end
    end, b, N)
    p:start()
    for i = 1, N do a:send({i = i}) end
    for i = 1, N do
      assert.is_true(a:poll(10))
      local m = a:recv()
      if m.i ~= i then assert.equal(i, m.i) end
    end
    for i = 1, N do
      assert.is_true(a:poll(10))
      local s = a:recv_bytes()
      if s ~= tostring(i) then assert.equal(tostring(i), s) end
    end
    assert.equal(0, p:join(20))
    a:close(); b:close()
  end)

  it("carries messages of 100 MB and more both ways", function()
    local a, b = lmp.Pipe()
    local N = 100 * 2^20 + 13
    local pat = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!"  -- 63 bytes
    local function make(n)
      return pat:rep(math.ceil(n / #pat)):sub(1, n)
    end
    local function expected(i) local k = (i - 1) % #pat + 1 return pat:sub(k, k) end
    local samples = {1, 2, 63, 64, 65535, 65536, 65537, 2^20, 50 * 2^20 + 7, N - 1, N}
    local p = lmp.Process(function(c, n, samples_, pat_)
      assert(c:poll(30))
      local s = c:recv_bytes()
      local got = {len = #s}
      for _, i in ipairs(samples_) do got[#got + 1] = s:sub(i, i) end
      s = nil
      collectgarbage()
      c:send(got)
      local big = pat_:rep(math.ceil(n / #pat_)):sub(1, n)
      c:send_bytes(big)
      c:send({big, n})
    end, b, N, samples, pat)
    p:start()
    local big = make(N)
    a:send_bytes(big)
    big = nil
    collectgarbage()
    assert.is_true(a:poll(30))
    local got = a:recv()
    assert.equal(N, got.len)
    for k, i in ipairs(samples) do assert.equal(expected(i), got[k], "byte " .. i) end
    assert.is_true(a:poll(30))
    local s = a:recv_bytes()
    assert.equal(N, #s)
    for _, i in ipairs(samples) do assert.equal(expected(i), s:sub(i, i), "byte " .. i) end
    s = nil
    collectgarbage()
    assert.is_true(a:poll(30))
    local t = a:recv()
    assert.equal(N, t[2])
    assert.equal(N, #t[1])
    for _, i in ipairs(samples) do assert.equal(expected(i), t[1]:sub(i, i), "byte " .. i) end
    t = nil
    collectgarbage()
    assert.equal(0, p:join(30))
    a:close(); b:close()
  end)
end)
