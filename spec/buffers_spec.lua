-- Big buffers by handle (SPEC section 15, lua/lmp/buffers.lua): strings
-- and FFI arrays of at least lmp.codec.share_threshold bytes travel through
-- Queues, to Processes and in Pool tasks and results as a shared segment's
-- handle; an FFI array arrives over the shared memory; segments go with
-- their last holder, SIGKILL included.
local H = require "spec.support.helpers"
local lmp = require "lmp"
local ffi = require "ffi"

local raises = H.raises
local MiB = 1048576

-- Descriptors of this process that hold a shared buffer.
local function buffer_fds()
  local n = 0
  local p = io.popen("ls -l /proc/" .. lmp.current_process().pid .. "/fd 2>/dev/null")
  for line in p:lines() do
    if line:find("memfd:lmp_buf_", 1, true) then n = n + 1 end
  end
  p:close()
  return n
end

-- Mappings of this process that are shared buffers.
local function buffer_maps()
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("memfd:lmp_buf_", 1, true) then n = n + 1 end
  end
  return n
end

-- Whether address p (a cdata) lies in a mapping of a shared buffer.
local function in_shared_buffer(p)
  local a = tonumber(ffi.cast("uintptr_t", p))
  for line in io.lines("/proc/self/maps") do
    local lo, hi = line:match("^(%x+)%-(%x+)")
    if line:find("memfd:lmp_buf_", 1, true) and a >= tonumber(lo, 16) and a < tonumber(hi, 16) then
      return true
    end
  end
  return false
end

local function pattern(n)
  local s = string.rep("0123456789abcdef", math.ceil(n / 16))
  return s:sub(1, n)
end

describe("big buffers by handle", function()
  H.check_leaks()
  local threshold = lmp.codec.share_threshold
  after_each(function()
    lmp.codec.share_threshold = threshold
    collectgarbage(); collectgarbage(); lmp.connection.wait({}, 0)
  end)

  it("has a threshold of 1 MiB that users may change", function()
    assert.equal(MiB, lmp.codec.share_threshold)
  end)

  it("sends a big string to a Process as a handle, and its bytes arrive", function()
    local s = pattern(3 * MiB + 7)
    local back = lmp.Queue()
    local p = lmp.Process(function(s, back)
      back:put(#s)
      back:put(s:sub(-20))
    end, s, back)
    p:start()
    -- the bytes are in a segment, held until received (a forked child
    -- gets the parent's own string)
    assert.equal(H.forked and 0 or 1, buffer_fds())
    assert.equal(#s, back:get(10))
    assert.equal(s:sub(-20), back:get(10))
    assert.equal(0, p:join(10))  -- the sender looks again: received, it may carry the next one
    -- kept until a garbage collection cycle in which none was needed
    collectgarbage(); collectgarbage(); lmp.connection.wait({}, 0)
    assert.equal(0, buffer_fds())
    back:close(); p:close()
  end)

  it("sends a big string through a Queue as a handle; the Queue keeps it", function()
    local q = lmp.Queue()
    local s = pattern(3 * MiB + 7)
    assert.is_true(q:put(s))
    assert.is_true(q:put({pattern(2 * MiB)}))
    assert.equal(2, buffer_fds())  -- in segments, not in the queue's ring
    assert.equal(s, q:get(1))
    assert.equal(pattern(2 * MiB), q:get(1)[1])
    q:close()
  end)

  it("keeps a big item that outlives its putter, killed right after the put", function()
    local q, done = lmp.Queue(), lmp.Event()
    local p = lmp.Process(function(q, done)
      q:put(string.rep("k", 2 * 1048576))
      q:put({data = require("ffi").new("int32_t[?]", 1048576, 7)})
      done:set()
      local ffi = require "ffi"
      pcall(ffi.cdef, "int poll(void *, unsigned long, int);")
      ffi.C.poll(nil, 0, 20000)
    end, q, done)
    p:start()
    assert.is_true(done:wait(10))
    p:kill()
    assert.equal(-9, p:join(10))
    assert.equal(string.rep("k", 2 * MiB), q:get(5))
    local t = q:get(5)
    assert.equal(7, t.data[1048575])
    t = nil
    q:close(); p:close(); done:close()
  end)

  it("applies the threshold users set, when the value is sent", function()
    lmp.codec.share_threshold = 1024
    local back = lmp.Queue()
    local p = lmp.Process(function(s, back) back:put(s) end, pattern(2048), back)
    local before = buffer_fds()
    p:start()
    assert.equal(before + (H.forked and 0 or 1), buffer_fds())
    assert.equal(pattern(2048), back:get(10))
    assert.equal(0, p:join(10))
    back:close(); p:close()
  end)

  it("reuses a segment for the next buffer, never showing the last one's bytes", function()
    local pool = lmp.Pool(1)
    -- results of one worker, one after the other: sizes that share
    -- segments, each string its own bytes
    local got = pool:map(function(i)
      local size = 1048576 + (i % 3) * 4096 + i
      local s = ("%08d"):format(i) .. string.rep(string.char(65 + i % 26), size - 16)
                .. ("%08d"):format(-i)
      return s
    end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
          21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40}, 1)
    for i = 1, 40 do
      local s = got[i]
      local size = MiB + (i % 3) * 4096 + i
      assert.equal(size, #s)
      assert.equal(("%08d"):format(i), s:sub(1, 8))
      assert.equal(("%08d"):format(-i), s:sub(-8))
      assert.equal(string.char(65 + i % 26), s:sub(size / 2, size / 2))
    end
    pool:close(); pool:join()
  end)

  it("delivers an FFI array as a reference over the shared memory", function()
    local q = lmp.Queue()
    local p = lmp.Process(function(q)
      local ffi = require "ffi"
      local a = ffi.new("double[?]", 300000)
      for i = 0, 299999 do a[i] = i / 4 end
      q:put({data = a, n = 300000})
      local b = ffi.new("int64_t[?]", 200000)
      b[199999] = -5
      q:put(b)
    end, q)
    p:start()
    local t = q:get(10)
    assert.equal(300000, t.n)
    -- (tostring, not ffi.typeof: busted memoizes ffi.typeof by its
    -- argument, which would keep t.data alive)
    assert.matches("^cdata<double %(&%)%[300000%]>", tostring(t.data))
    assert.equal(299999 / 4, t.data[299999])
    assert.equal(300000 * 8, ffi.sizeof(t.data))
    assert.is_true(in_shared_buffer(t.data))  -- read in place: no copy
    local b = q:get(10)
    assert.equal(-5, tonumber(b[199999]))
    assert.equal(0, p:join(10))
    assert.is_true(buffer_maps() >= 2)
    t, b = nil, nil
    collectgarbage(); collectgarbage(); lmp.connection.wait({}, 0)
    assert.equal(0, buffer_maps())  -- unmapped with the last array
    q:close(); p:close()
  end)

  it("sends big strings and FFI arrays as Process arguments", function()
    local s = pattern(2 * MiB)
    local a = ffi.new("float[?]", MiB / 2)
    a[MiB / 2 - 1] = 1.5
    local back = lmp.Queue()
    local p = lmp.Process(function(s, a, back)
      back:put({#s, s:sub(1, 16), a[524287], tostring(a)})
    end, s, a, back)
    p:start()
    local r = back:get(10)
    assert.same({2 * MiB, "0123456789abcdef", 1.5}, {r[1], r[2], r[3]})
    -- (a forked child calls its target with the parent's own objects)
    assert.matches(H.forked and "^cdata<float %[%?%]>" or "^cdata<float %(&%)", r[4])
    assert.equal(0, p:join(10))
    back:close(); p:close()
  end)

  it("sends them in Pool tasks and results", function()
    local pool = lmp.Pool(2)
    local s = pattern(MiB + 1)
    assert.same({MiB + 1, MiB + 2}, pool:map(function(x) return #x end, {s, s .. "y"}))
    local arr = pool:apply(function(n)
      local ffi = require "ffi"
      local a = ffi.new("int32_t[?]", n)
      for i = 0, n - 1 do a[i] = 3 * i end
      return a
    end, {400000}, {timeout = 20})
    assert.equal(3 * 399999, arr[399999])
    assert.is_true(in_shared_buffer(arr))
    local echoed = pool:apply(function(x) return x end, {s}, {timeout = 20})
    assert.equal(s, echoed)
    pool:close(); pool:join()
    arr = nil
  end)

  it("keeps a call's buffers until the call is over, for a task that runs again", function()
    local pool = lmp.Pool(1)
    local dir = H.tmpdir()
    local s = pattern(2 * MiB)
    local n = pool:apply(function(path, x)
      local f = io.open(path, "a") f:write("x") f:close()
      f = io.open(path) local runs = #f:read("*a") f:close()
      if runs == 1 then os.exit(9) end  -- the first run dies after receiving x
      return #x
    end, {dir .. "/runs", s}, {retries = 1, timeout = 20})
    assert.equal(2 * MiB, n)
    pool:close(); pool:join()
  end)

  it("lets go of a task's buffers once the task is done, in a long imap", function()
    local pool = lmp.Pool(1)
    local n, most = 0, 0
    local function items()
      n = n + 1
      if n > 40 then return nil end
      return pattern(MiB + n)
    end
    for _, len in pool:imap(function(s) return #s end, items, 1) do
      collectgarbage(); collectgarbage(); lmp.connection.wait({}, 0)
      most = math.max(most, buffer_fds())
      assert.is_true(len > MiB)
    end
    -- (a few in flight and kept for reuse; not one per task of the call)
    assert.is_true(most <= 10, "buffers held at once: " .. most)
    pool:close(); pool:join()
  end)

  it("delivers what a process put just before it exited, which does not wait", function()
    local q = lmp.Queue()
    local p = lmp.Process(function(q) q:put(require("ffi").new("char[?]", 2 * 1048576, 5)) end, q)
    p:start()
    assert.equal(0, p:join(10))
    local a = q:get(5)
    assert.equal(2 * MiB, ffi.sizeof(a))
    assert.equal(5, a[2 * MiB - 1])
    a = nil
    q:close(); p:close()
  end)

  it("says so when a handle's sender was killed before it was received", function()
    -- (a handle its sender keeps, as for a Pool result: here in bytes
    -- that a Pipe carries)
    local a, b = lmp.Pipe()
    local p = lmp.Process(function(b)
      local lmp = require "lmp"
      b:send_bytes(lmp.codec.encode(string.rep("k", 2 * 1048576), {binary = true, share = true}))
      local ffi = require "ffi"
      pcall(ffi.cdef, "int poll(void *, unsigned long, int);")
      ffi.C.poll(nil, 0, 20000)
    end, b)
    p:start()
    assert.is_true(a:poll(10))
    local bytes = a:recv_bytes()
    p:kill()
    p:join(10)
    local e = raises("OSError", lmp.codec.decode, bytes)
    assert.matches("gone", e.message)
    a:close(); b:close(); p:close()
  end)

  it("goes by value over a Pipe, where no handle can travel", function()
    local a, b = lmp.Pipe()
    local p = lmp.Process(function(b) b:send(#b:recv()[1]) end, b)
    p:start()
    local s = pattern(2 * MiB)
    a:send({s})
    assert.equal(0, buffer_fds())
    assert.is_true(a:poll(10))
    assert.equal(2 * MiB, a:recv())
    assert.equal(0, p:join(10))
    a:close(); b:close(); p:close()
  end)

  it("is off with a threshold of math.huge", function()
    lmp.codec.share_threshold = math.huge
    local back = lmp.Queue()
    local p = lmp.Process(function(s, back) back:put(#s) end, pattern(2 * MiB), back)
    p:start()
    assert.equal(0, buffer_fds())
    assert.equal(2 * MiB, back:get(10))
    assert.equal(0, p:join(10))
    -- an FFI array goes by handle or not at all
    raises("CodecError", back.put, back, ffi.new("double[?]", MiB))
    back:close(); p:close()
  end)

  it("leaves nothing behind when the process holding a received array is killed", function()
    local q, back = lmp.Queue(), lmp.Queue()
    local p = lmp.Process(function(q, back)
      local a = q:get(10)
      back:put(tonumber(a[MiB - 1]))
      local ffi = require "ffi"
      pcall(ffi.cdef, "int poll(void *, unsigned long, int);")
      ffi.C.poll(nil, 0, 20000)
    end, q, back)
    p:start()
    local a = ffi.new("int64_t[?]", MiB)
    a[MiB - 1] = 77
    q:put(a)
    assert.equal(77, back:get(10))
    p:kill()
    p:join(10)
    back:put(0); back:get(1)  -- the sender looks again, and lets go
    assert.equal(0, buffer_fds())
    -- no process anywhere maps or holds it any more: the memory is freed
    local tag = "memfd:lmp_buf_" .. lmp.current_process().pid .. "_"
    local found = io.popen("grep -l '" .. tag .. "' /proc/[0-9]*/maps 2>/dev/null"):read("*a")
    assert.equal("", found)
    q:close(); back:close(); p:close()
  end)

  it("refuses FFI arrays of pointers and small FFI arrays", function()
    local q = lmp.Queue()
    raises("CodecError", q.put, q, ffi.new("int *[?]", 300000))
    raises("CodecError", q.put, q, ffi.new("double[4]"))
    q:close()
  end)
end)
