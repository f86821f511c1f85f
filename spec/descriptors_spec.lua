-- lmp and the descriptors of the program it runs in.  A program that embeds
-- lmp (a game server with its sockets) must never lose a descriptor to lmp,
-- nor find lmp's where its own belong.
--
-- lmp closes only descriptors it owns (SPEC section 1), and each of them
-- once: never a number a second time after it has been handed out again.
-- Each spec of the first part has lmp do some work, closing some objects
-- and dropping others; every number it frees becomes a "sentinel" of the
-- host's at once (a copy of one pipe's read end); lmp finishes its deferred
-- work (collection, its loop's close callbacks) and works again among the
-- sentinels; every sentinel must still be open on the same pipe.
--
-- A host may run with stdin, stdout or stderr closed: lmp's descriptors
-- must not take those numbers (the second part).
local H = require "spec.support.helpers"
local lmp = require "lmp"
local ffi = require "ffi"

for _, decl in ipairs({
  "int pipe2(int fds[2], int flags);",
  "int dup3(int oldfd, int newfd, int flags);",
}) do
  pcall(ffi.cdef, decl)
end

local O_CLOEXEC = 0x80000

-- Sentinel sets placed during the current spec.
local held = {}

-- Occupies every free number up to the highest open one plus `margin` with
-- a copy of a new pipe's read end (close-on-exec, as a careful host's
-- descriptors are): numbers that lmp freed now belong to the host.
local function grab(margin)
  local fds = ffi.new("int[2]")
  assert(ffi.C.pipe2(fds, O_CLOEXEC) == 0)
  local s = {r = fds[0], w = fds[1], list = {}}
  s.id, s.wid = H.fd_identity(s.r), H.fd_identity(s.w)
  local top = 0
  for fd in pairs(H.fds()) do if fd > top and fd < 4096 then top = fd end end
  for fd = 0, top + (margin or 8) do
    if not H.fd_open(fd) then
      assert(ffi.C.dup3(s.r, fd, O_CLOEXEC) == fd, "dup3 failed")
      s.list[#s.list + 1] = fd
    end
  end
  held[#held + 1] = s
end

-- Asserts that every sentinel is still open on its pipe; closes them all.
local function check_sentinels()
  local lost, numbers = {}, {}
  for _, s in ipairs(held) do
    local expect = {[s.r] = s.id, [s.w] = s.wid}
    for _, fd in ipairs(s.list) do expect[fd] = s.id end
    for fd, id in pairs(expect) do
      local now = H.fd_identity(fd)
      if now ~= id then lost[#lost + 1] = fd .. " (" .. tostring(now or "closed") .. ")" end
      numbers[fd] = true
    end
  end
  held = {}
  local list = {}
  for fd in pairs(numbers) do
    H.close_fd(fd)
    list[#list + 1] = fd
  end
  table.sort(list)
  assert.is_nil(lost[1], "descriptors of the host closed or replaced by lmp: " ..
                         table.concat(lost, ", ") .. " (the host's were " ..
                         table.concat(list, " ") .. ")")
end

-- Runs work() with the collector stopped (so that nothing it drops is
-- collected before the sentinels are in place): work() grabs the numbers
-- it frees as it goes; what is free at its end is grabbed too.
local function work_with_sentinels(work)
  return H.without_gc(function()
    local ok, err = pcall(work)
    grab(32)
    return ok, err
  end)
end

-- work(), lmp's deferred work (collection, its loop's close callbacks),
-- then both again, lmp now working among the first sentinels; then every
-- sentinel is checked.
local function among_sentinels(work)
  local ok, err = work_with_sentinels(work)
  if ok then
    H.settle()
    ok, err = work_with_sentinels(work)
    H.settle()
  end
  -- The workers of a Pool dropped without terminate() end some time after
  -- its collection.
  H.wait_until(function() return #lmp.active_children() == 0 end, 10,
               function() lmp.connection.wait({}, 0.05) end)
  check_sentinels()
  if not ok then error(err, 0) end
end

local function finish(p)
  local code = p:join(10)
  if code == nil then p:kill(); p:join(5) end
  assert.equal(0, code)
end

describe("lmp and the descriptors it does not own", function()
  H.check_leaks()

  it("Pipe: closed, closed twice, dropped, and waited on", function()
    among_sentinels(function()
      local a, b = lmp.Pipe()
      a:send("x")
      assert.equal("x", b:recv())
      a:close(); b:close()
      grab()
      a:close(); b:close()
      local c, d = lmp.Pipe(false)
      d:send({1, 2})
      assert.same({1, 2}, lmp.connection.wait({c}, 5)[1]:recv())
      c:close()
      grab()
      local e, f = lmp.Pipe()  -- dropped: closed by the collector
      e:send(1)
      assert.is_true(f:poll(5))
      e, f, d = nil, nil, nil
    end)
  end)

  it("Process: joined and closed, joined and dropped, killed, given a Connection", function()
    among_sentinels(function()
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(c) c:send(c:recv() + 1) end, b)
      p:start()
      b:close()
      grab()
      a:send(41)
      assert.is_true(a:poll(10))
      assert.equal(42, a:recv())
      finish(p)
      assert.same({p}, lmp.connection.wait({p}, 0))
      p:close()
      a:close()
      grab()
      p:close()
      local q = lmp.Process(function() end)
      q:start()
      assert.equal(1, #lmp.connection.wait({q.sentinel}, 10))
      finish(q)
      q = nil  -- its sentinel goes with it
      local k = lmp.Process(function() while true do end end)
      k:start()
      k:kill()
      assert.equal(-9, k:join(10))
      k:close()
      grab()
    end)
  end)

  it("Process: a start that fails", function()
    among_sentinels(function()
      local exe = lmp.get_executable()
      lmp.set_executable("/nonexistent/lmp")
      -- (spawn's: a forked child starts no executable)
      local ok, err = pcall(function() lmp.get_context("spawn").Process(function() end):start() end)
      lmp.set_executable(exe)
      assert.is_false(ok)
      assert.equal("ProcessError", err.kind, tostring(err))
      grab()
      lmp.connection.wait({}, 0)  -- the failed handle's close callback
    end)
  end)

  it("Queue, SimpleQueue, JoinableQueue: used, waited on, closed and dropped", function()
    among_sentinels(function()
      for _, cls in ipairs({"Queue", "SimpleQueue", "JoinableQueue"}) do
        local q = lmp[cls]()
        assert.same({}, lmp.connection.wait({q}, 0.05))  -- a watcher thread and its eventfd
        grab()
        local p = lmp.Process(function(q_) q_:put("from child") end, q)
        p:start()
        assert.same({q}, lmp.connection.wait({q}, 10))
        grab()
        assert.equal("from child", q:get())
        finish(p)
        p:close()
        q:close()
        grab()
        q:close()
        local dropped = lmp[cls]()
        dropped:put(1)
        assert.equal(1, #lmp.connection.wait({dropped}, 5))
      end
    end)
  end)

  it("semaphores, events and queues waited on while a Pool is busy", function()
    among_sentinels(function()
      -- (each wait has a thread sleep on the object, and an eventfd wake
      -- the loop that serves the pool)
      local pool = lmp.Pool(1)
      local ev, sem, q = lmp.Event(), lmp.Semaphore(0), lmp.JoinableQueue()
      local done = 0
      pool:apply_async(function() return 1 end, {}, function() done = done + 1; ev:set() end)
      assert.is_true(ev:wait(10))
      grab()
      pool:apply_async(function() return 2 end, {}, function() done = done + 1; sem:release() end)
      assert.is_true(sem:acquire(10))
      grab()
      pool:apply_async(function() return 3 end, {}, function(v) done = done + 1; q:put(v) end)
      assert.equal(3, q:get(10))
      grab()
      pool:apply_async(function() return 4 end, {}, function() done = done + 1; q:task_done() end)
      assert.is_true(q:join(10))
      grab()
      assert.equal(4, done)
      pool:terminate()
      q:close()
      grab()
      pool, ev, sem, q = nil, nil, nil, nil
    end)
  end)

  it("Pool: closed and joined, terminated, and dropped", function()
    among_sentinels(function()
      local pool = lmp.Pool(2)
      assert.same({2, 4, 6}, pool:map(function(x) return x * 2 end, {1, 2, 3}))
      pool:close()
      pool:join()
      grab()
      local t = lmp.Pool(1)
      t:apply_async(function() while true do end end)
      t:terminate()
      grab()
      local dropped = lmp.Pool(1)
      assert.equal(9, dropped:apply(function() return 9 end))
      dropped = nil
    end)
  end)

  it("SharedMemory, Value and Array: closed, unlinked and dropped", function()
    among_sentinels(function()
      local name = H.shm_prefix .. "descriptors"
      local sm = lmp.SharedMemory{name = name, create = true, size = 4096}
      local other = lmp.SharedMemory{name = name}
      other:buf()[0] = 7
      assert.equal(7, sm:buf()[0])
      other:close()
      grab()
      other:close()
      sm:close()
      sm:unlink()
      local anon = lmp.SharedMemory{size = 100}
      anon:close()
      grab()
      local v, arr = lmp.Value("i", 1), lmp.Array("d", 10000)
      local p = lmp.Process(function(v_, a_) v_.value = 2; a_[1] = 3 end, v, arr)
      p:start()
      finish(p)
      p:close()
      grab()
      assert.equal(2, v.value)
      v, arr = nil, nil
    end)
  end)

  it("Listener and Client: accepted, refused, failed handshakes, closed and dropped", function()
    among_sentinels(function()
      local Listener, Client = lmp.connection.Listener, lmp.connection.Client
      local l = Listener{address = "127.0.0.1:0", authkey = "key"}
      local p = lmp.Process(function(address)
        local lmp_ = require "lmp"
        local c = lmp_.connection.Client(address, {authkey = "key", timeout = 5})
        c:send("hello")
        c:close()
        local ok = pcall(lmp_.connection.Client, address, {authkey = "wrong", timeout = 5})
        assert(not ok, "a wrong key was accepted")
      end, l.address)
      p:start()
      local s = l:accept(10)
      assert.is_true(s:poll(10))
      assert.equal("hello", s:recv())
      s:close()
      grab()
      local ok, err = pcall(l.accept, l, 10)
      assert.is_false(ok)
      assert.equal("AuthenticationError", err.kind, tostring(err))
      grab()
      finish(p)
      p:close()
      local address = l.address
      l:close()
      grab()
      l:close()
      -- nothing listens there now: the connect fails
      assert.is_false(pcall(Client, address, {timeout = 5}))
      grab()
      local dropped = Listener{address = "127.0.0.1:0"}
      local c = Client(dropped.address, {timeout = 5})
      local a = dropped:accept(10)
      c:send(1)
      assert.equal(1, a:recv())
      dropped, c, a = nil, nil, nil
    end)
  end)

  -- A host with stdin, stdout or stderr closed (a daemon, a job started
  -- with <&-): lmp's descriptors, and its libuv loop's, must not take
  -- those numbers.  Before, the loop's epoll descriptor took the first free
  -- one and libuv aborted the host when it closed the loop (it asserts
  -- fd > 2), and a Pipe made with stdout closed became every child's
  -- stdout: what a child printed arrived on the Pipe.
  describe("in a host with stdin, stdout or stderr closed", function()
    local script = [[
      local out = arg[1]
      local ok, err = pcall(function()
        local lmp = require "lmp"
        local a, b = lmp.Pipe()
        local q = lmp.Queue()
        q:put(1)
        assert(#lmp.connection.wait({q}, 5) == 1)
        local l = lmp.connection.Listener("127.0.0.1:0")
        local c = lmp.connection.Client(l.address, {timeout = 5})
        local s = l:accept(10)
        local sm = lmp.SharedMemory{size = 64}
        local p = lmp.Process(function(conn)
          print("printed by the child")
          io.stderr:write("written to stderr by the child\n")
          conn:send("sent by the child")
        end, b)
        p:start()
        assert(a:poll(10) and a:recv() == "sent by the child")
        assert(p:join(10) == 0, "the child failed")
        for what, fd in pairs({a = a:fileno(), b = b:fileno(), listener = l:fileno(),
                               client = c:fileno(), accepted = s:fileno(),
                               sentinel = p.sentinel}) do
          assert(fd > 2, "lmp's descriptor (" .. what .. ") took number " .. fd)
        end
        for _, conn in ipairs({a, b, c, s}) do
          assert(not conn:poll(0.2), "something arrived on fd " .. conn:fileno())
        end
        p:close(); a:close(); b:close(); c:close(); s:close(); l:close(); q:close(); sm:close()
      end)
      local f = assert(io.open(out, "w"))
      f:write(ok and "ok" or tostring(err))
      f:close()
    ]]
    for _, closed in ipairs({"0<&-", "1>&-", "2>&-", "0<&- 1>&- 2>&-"}) do
      it(("%s: no lmp descriptor takes the number, children and exit work"):format(closed), function()
        local dir = H.tmpdir()
        local path = H.write(dir .. "/host.lua", script)
        local r = H.run({"sh", "-c", "exec " .. closed .. '; exec "$0" "$@"', H.lmp, path,
                         dir .. "/result"}, {timeout = 30})
        local result = H.slurp(dir .. "/result")
        assert.equal("ok", result, r.stderr)
        assert.equal(0, r.status, r.stderr)
      end)
    end
  end)

  it("a descriptor of the host's that lmp only waits on", function()
    local fds = ffi.new("int[2]")
    assert(ffi.C.pipe2(fds, O_CLOEXEC) == 0)
    among_sentinels(function()
      local pool = lmp.Pool(1)
      assert.same({}, lmp.connection.wait({fds[0]}, 0.05))
      H.raw_write(fds[1], "x")
      assert.same({fds[0]}, lmp.connection.wait({fds[0]}, 5))
      assert.equal("x", H.raw_read(fds[0], 1))
      pool:terminate()
    end)
    assert.is_true(H.fd_open(fds[0]) and H.fd_open(fds[1]))
    H.close_fd(fds[0]); H.close_fd(fds[1])
  end)
end)
