-- Argument type errors of lmp's C functions (SPEC section 12): each raises
-- an lmp TypeError whose message starts with the function's public name,
-- "lmp.codec.decode: bad argument #1 (string expected, got nil)", or for a
-- method "Connection:send_bytes: bad argument #1 (...)" (self not counted).
-- The internal core functions, which lmp's Lua half calls, are named
-- "lmp core.<name>".  (Functions written in Lua, lua/lmp/*.lua, such as
-- lmp.connection.wait, check their own arguments: spec/arguments_spec.lua.)
local H = require "spec.support.helpers"
local lmp = require "lmp"

local function type_error(name, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, name .. " accepted a bad argument")
  assert.is_true(lmp.is_error(e, "TypeError"), name .. ": not an lmp TypeError: " .. tostring(e))
  assert.equal(name .. ": ", e.message:sub(1, #name + 2), tostring(e))
  assert.truthy(e.message:find("bad argument #%d+ %(") or e.message:find("bad self %("),
                tostring(e))
  return e
end

local find_core = H.core

describe("argument type errors of lmp's C functions", function()
  H.check_leaks()

  describe("are lmp TypeErrors naming the function", function()
    it("lmp.codec", function()
      local e = type_error("lmp.codec.decode", lmp.codec.decode, nil)
      assert.equal("lmp.codec.decode: bad argument #1 (string expected, got nil)", e.message)
      assert.equal("lmp.TypeError: lmp.codec.decode: bad argument #1 (string expected, got nil)",
                   tostring(e))
      type_error("lmp.codec.decode", lmp.codec.decode, {})
      type_error("lmp.codec.decode", lmp.codec.decode, "1", 5)
      type_error("lmp.codec.decode", lmp.codec.decode, "1", {max_depth = "deep"})
      type_error("lmp.codec.decode", lmp.codec.decode, "1", {max_depth = -1})
      type_error("lmp.codec.encode", lmp.codec.encode)
      type_error("lmp.codec.encode", lmp.codec.encode, 1, "binary")
      type_error("lmp.codec.encode", lmp.codec.encode, 1, {role = {}})
      type_error("lmp.codec.register", lmp.codec.register, nil, {})
      type_error("lmp.codec.register", lmp.codec.register, "x", "mt")
      type_error("lmp.codec.register_extension", lmp.codec.register_extension,
                 {}, {}, print, print)
      type_error("lmp.codec.register_extension", lmp.codec.register_extension,
                 "x", {}, "to_wire", print)
      type_error("lmp.codec.register_extension", lmp.codec.register_extension,
                 "x", {}, print, nil)
    end)

    it("lmp.Pipe", function()
      type_error("lmp.Pipe", lmp.Pipe, "duplex")
      type_error("lmp.Pipe", lmp.Pipe, 1)
      type_error("lmp.Pipe", lmp.Pipe, {duplex = "no"})
    end)

    it("Connection methods, self not counted", function()
      local a, b = lmp.Pipe()
      local e = type_error("Connection:send_bytes", a.send_bytes, a, nil)
      assert.equal("Connection:send_bytes: bad argument #1 (string expected, got nil)", e.message)
      type_error("Connection:send_bytes", function() return a:send_bytes({}) end)
      type_error("Connection:send_bytes", a.send_bytes, a, "x", "start")
      type_error("Connection:send_bytes", a.send_bytes, a, "x", 0, {})
      type_error("Connection:send", a.send, a)
      type_error("Connection:recv_bytes", a.recv_bytes, a, "all")
      type_error("Connection:poll", a.poll, a, "now")
      type_error("Connection:poll", a.poll, a, 0 / 0)
      e = type_error("Connection:fileno", a.fileno, nil)
      assert.equal("Connection:fileno: bad self (lmp.Connection expected, got nil)", e.message)
      type_error("Connection:recv", a.recv, {})
      type_error("Connection:close", a.close, 42)
      type_error("Connection.__index", function() return a[{}] end)
      assert.is_false(a:poll())  -- and the connection is still usable
      a:close(); b:close()
    end)

    it("lmp.error, lmp.is_error, set_executable", function()
      type_error("lmp.error", lmp.error)
      type_error("lmp.error", lmp.error, "ValueError")
      type_error("lmp.error", lmp.error, {}, "message")
      type_error("lmp.is_error", lmp.is_error)
      type_error("lmp.is_error", lmp.is_error, lmp.error("ValueError", "x"), {})
      type_error("lmp.set_executable", lmp.set_executable)
      type_error("lmp.set_executable", lmp.set_executable, {})
      -- cpu_count and get_executable take no arguments: extra ones are ignored
      assert.equal(lmp.cpu_count(), lmp.cpu_count("x"))
      assert.equal(lmp.get_executable(), lmp.get_executable({}))
    end)

    it("the objects under SharedMemory and Process", function()
      local shm = lmp.SharedMemory({create = true, size = 16})
      local seg = rawget(shm, "_seg")
      if seg then
        type_error("Segment:read", seg.read, seg, "start", 1)
        type_error("Segment:read", seg.read, seg, 0, {})
        type_error("Segment:write", seg.write, seg, 0, {})
        type_error("Segment:size", seg.size, nil)
      end
      shm:close()
      shm:unlink()
      local p = lmp.Process(function() end)
      p:start()
      local h = rawget(p, "_handle")
      if h then
        local name = H.method == "fork" and "ForkedHandle" or "ProcessHandle"
        type_error(name .. ":wait", h.wait, h, "soon")
        type_error(name .. ":signal", h.signal, h, "TERM")
        type_error(name .. ".__index", function() return h[{}] end)
      end
      assert.equal(0, p:join(10))
      p:close()
    end)
  end)

  describe("of the internal core functions", function()
    local core = find_core()

    local function check(name, ...)
      if not core then return pending("the C core is not reachable from lmp's functions") end
      assert.is_function(core[name], name)
      return type_error("lmp core." .. name, core[name], ...)
    end

    it("processes, time, errors, hashes", function()
      check("spawn", nil, "name", "boot")
      check("spawn", "exe", {}, "boot")
      check("chdir", {})
      check("isatty", "stdout")
      check("strerror", "EINVAL")
      check("hmac", {}, "key", "message")
      check("hmac", "sha256", nil, "message")
      check("digest", "sha1", "message")
      check("compare_digest", "x", nil)
      check("random_bytes", "eight")
      check("random_bytes", 1000)
      check("codec_cdata_hook", 5)
    end)

    it("connections and sockets", function()
      check("conn_info", nil)
      check("conn_configure", "conn")
      check("conn_from_fd", "three")
      check("conn_from_socket", {})
      check("net_listen", {})
      check("net_accept", "fd")
      check("net_connect", nil)
      check("net_close", "fd")
    end)

    it("shared segments, synchronisation, queues", function()
      if not core then return pending("the C core is not reachable") end
      check("segment_new", "big")
      check("segment_new", 64, {})
      check("segment_open", {})
      check("segment_from_fd", "fd")
      check("segment_open_proc", "name", "pid", 3, "tag")
      check("shm_unlink", {})
      check("sync_sem_acquire", nil, 0)
      check("sync_event_wait", {}, 0)
      check("sync_wait_change", "segment", 0, 0)
      check("queue_init", nil)
      check("queue_put", nil, 1)
      check("queue_get", 5)
      check("queue_info", {})
      check("queue_task_done", "q")
      check("queue_join", nil)
      check("queue_watch", nil)
      local seg = core.segment_new(64)
      check("sync_sem_acquire", seg, {})
      check("sync_sem_acquire", seg, 0, "forever")
      check("sync_wait_change", seg, 0, 0, 0 / 0)
      seg:close()
    end)
  end)
end)
