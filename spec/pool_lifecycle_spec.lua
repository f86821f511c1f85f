-- The life of a Pool task (SPEC section 8, issue 13): per-call options and
-- pool defaults, soft and hard deadlines, retries, cancel, workers over a
-- memory limit, a broken initializer, stats, ending the workers, and
-- submitting that never waits for a busy worker.
--
-- Every wait is bounded (AsyncResult:get(timeout), H.wait_until); scenarios
-- that could block for ever live in pool_never_hang_spec.lua.
local H = require "spec.support.helpers"
local lmp = require "lmp"

local raises = H.raises

local nap = H.nap

-- Spins for `s` seconds, calling os.clock: the interpreter runs all along,
-- so a soft deadline reaches the task at once.
local function spin(s)
  local t = os.clock()
  while os.clock() - t < s do end
end

-- A file that a task appends a line to, to count how often it ran.
local function counter_file()
  local path = H.tmpdir() .. "/runs"
  H.write(path, "")
  return path, function()
    local n = 0
    for _ in (H.slurp(path) or ""):gmatch("\n") do n = n + 1 end
    return n
  end
end

local new_pool  -- H.pools(), in the describe block

describe("Pool task lifecycle", function()
  new_pool = H.pools()

  describe("options", function()
    it("refuses unknown pool and call options with a ValueError naming them", function()
      local e = raises("ValueError", lmp.Pool, {processes = 1, maxtaskperchild = 2})
      assert.truthy(e.message:find("maxtaskperchild", 1, true), e.message)
      local p = new_pool(1)
      e = raises("ValueError", p.apply, p, function() end, {}, {timout = 1})
      assert.truthy(e.message:find("Pool:apply", 1, true) and e.message:find("timout", 1, true),
                    e.message)
      raises("ValueError", p.map, p, function() end, {1}, {retries = -1})
      raises("TypeError", p.map, p, function() end, {1}, {retry_on = "WorkerLost"})
      raises("ValueError", p.apply_async, p, function() end, {}, {soft_timeout = 0})
      raises("TypeError", p.map_async, p, function() end, {1}, {callback = 1})
      raises("ValueError", p.imap, p, function() end, {1}, {callback = function() end})
      raises("ValueError", lmp.Pool, {processes = 1, max_memory_per_child = 0})
    end)

    it("take callback and error_callback from the options table", function()
      local p = new_pool(1)
      local got, failed = {}, nil
      local r1 = p:apply_async(function(x) return x + 1 end, {1}, {callback = function(v) got[1] = v end})
      local r2 = p:map_async(function(x) return x * 2 end, {1, 2},
                             {callback = function(v) got[2] = v end})
      local r3 = p:starmap_async(function() error("no") end, {{1}},
                                 {error_callback = function(e) failed = e end})
      assert.is_true(r1:wait(10) and r2:wait(10) and r3:wait(10))
      lmp.poll(0)
      assert.equal(2, got[1])
      assert.same({2, 4}, got[2])
      assert.equal("RemoteError", failed and failed.kind)
    end)

    it("map_async takes chunksize and callbacks in their places and options last", function()
      local p = new_pool(2)
      local seen
      local r = p:map_async(function(x) return -x end, {1, 2, 3}, 1, function(v) seen = v end,
                            nil, {timeout = 5})
      assert.same({-1, -2, -3}, r:get(10))
      lmp.poll(0)
      assert.same({-1, -2, -3}, seen)
      assert.same({-1, -2}, p:map_async(function(x) return -x end, {1, 2}, {retries = 1}):get(10))
      -- options right after some of the positional arguments
      assert.same({-1, -2}, p:map_async(function(x) return -x end, {1, 2}, 1, {retries = 1})
                              :get(10))
      local got
      r = p:map_async(function(x) return -x end, {1}, 1, function(v) got = v end, {retries = 1})
      assert.same({-1}, r:get(10))
      lmp.poll(0)
      assert.same({-1}, got)
      got = nil
      r = p:apply_async(function() return 5 end, {}, function(v) got = v end, {timeout = 5})
      assert.equal(5, r:get(10))
      lmp.poll(0)
      assert.equal(5, got)
    end)
  end)

  describe("soft_timeout", function()
    it("raises a TimeoutError inside the task, which can clean up and return", function()
      local p = new_pool(1)
      local t0 = H.now()
      local r = p:apply_async(function()
        local ok, e = pcall(spin, 10)
        return {ok = ok, kind = e.kind, message = e.message}
      end, {}, {soft_timeout = 0.2})
      local v = r:get(10)
      assert.is_false(v.ok)
      assert.equal("TimeoutError", v.kind)
      assert.truthy(v.message:find("0.2", 1, true), v.message)
      assert.is_true(H.now() - t0 < 3, "took " .. (H.now() - t0) .. " s")
      -- the worker is the same one, and still works
      assert.equal(3, p:apply(function() return 3 end, {}, {timeout = 20}))
      assert.equal(0, p:stats().replaced)
    end)

    it("a task that does not catch it fails with RemoteError of kind TimeoutError", function()
      local p = new_pool(1)
      local r = p:apply_async(function() spin(10) end, {}, {soft_timeout = 0.2})
      assert.is_true(r:wait(10))
      local e = raises("RemoteError", r.get, r, 0)
      assert.equal("TimeoutError", e.remote_kind)
      assert.truthy(e.traceback, "no traceback")
    end)

    it("is followed by the hard deadline when the task goes on", function()
      local p = new_pool(1)
      local t0 = H.now()
      local r = p:apply_async(function()
        pcall(spin, 10)  -- swallows the soft deadline and goes on
        spin(10)
      end, {}, {soft_timeout = 0.2, timeout = 1})
      assert.is_true(r:wait(10))
      local e = raises("TimeoutError", r.get, r, 0)
      assert.truthy(e.message:find("killed", 1, true), e.message)
      local el = H.now() - t0
      assert.is_true(el >= 0.9 and el < 4, "took " .. el .. " s")
      assert.equal(1, p:stats().replaced)
    end)

    it("without a timeout, the hard deadline is the soft one plus a grace second", function()
      local p = new_pool(1)
      local t0 = H.now()
      -- a JIT-compiled loop that calls nothing never runs the hook
      local r = p:apply_async(function()
        local x = 0
        for i = 1, 1e13 do x = x + i % 7 end
        return x
      end, {}, {soft_timeout = 0.2})
      assert.is_true(r:wait(10))
      raises("TimeoutError", r.get, r, 0)
      local el = H.now() - t0
      assert.is_true(el >= 1.1 and el < 4, "took " .. el .. " s")
    end)

    it("is disarmed when the task returns in time, and applies per chunk of a map", function()
      local p = new_pool(1)
      assert.same({1, 2, 3}, p:map(function(x) spin(0.05) return x end, {1, 2, 3}, 1,
                                   {soft_timeout = 0.5, timeout = 20}))
      -- a long pause after the task: no stray TimeoutError in the worker
      nap(0.7)
      assert.equal(7, p:apply(function() spin(0.6) return 7 end, {}, {timeout = 20}))
      assert.equal(0, p:stats().failed)
    end)

    it("comes from the pool's soft_timeout option by default", function()
      local p = new_pool{processes = 1, soft_timeout = 0.2}
      local r = p:apply_async(function() spin(10) end, {})
      assert.is_true(r:wait(10))
      local e = raises("RemoteError", r.get, r, 0)
      assert.equal("TimeoutError", e.remote_kind)
    end)
  end)

  describe("retries", function()
    it("re-run a task whose worker died, and it can then succeed", function()
      local path, runs = counter_file()
      local p = new_pool(1)
      local r = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("run\n"); f:close()
        local n = 0
        for _ in io.lines(file) do n = n + 1 end
        if n < 3 then os.exit(3) end
        return n
      end, {path}, {retries = 2})
      assert.equal(3, r:get(20))
      assert.equal(3, runs())
      local s = p:stats()
      assert.equal(2, s.retried)
      assert.equal(2, s.replaced)
    end)

    it("re-send a chunk of a map over numbers whole, values and all", function()
      -- (such chunks have no frame of their own: it is made each time
      -- they are sent, from the map's copy of its list)
      local path, runs = counter_file()
      local p = new_pool(2)
      local list = {}
      for i = 1, 40 do list[i] = i + 0.5 end
      local r = p:map_async(function(x)
        if x == 7.5 then
          local f = io.open(path, "a"); f:write("run\n"); f:close()
          local n = 0
          for _ in io.lines(path) do n = n + 1 end
          if n < 2 then os.exit(3) end
        end
        return -x
      end, list, 4, {retries = 1})
      local got = r:get(20)
      assert.equal(2, runs())
      for i = 1, 40 do assert.equal(-(i + 0.5), got[i]) end
      assert.equal(1, p:stats().retried)
    end)

    it("count attempts: the last error carries them", function()
      local path, runs = counter_file()
      local p = new_pool(1)
      local r = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("run\n"); f:close()
        os.exit(3)
      end, {path}, {retries = 2})
      assert.is_true(r:wait(20))
      local e = raises("WorkerLost", r.get, r, 0)
      assert.equal(3, e.attempts)
      assert.equal(3, runs())
    end)

    it("retry hard timeouts, and errors whose kind is in retry_on, not other errors", function()
      local p = new_pool(1)
      local r = p:apply_async(function() spin(10) end, {}, {timeout = 0.2, retries = 1})
      assert.is_true(r:wait(20))
      assert.equal(2, raises("TimeoutError", r.get, r, 0).attempts)

      local path, runs = counter_file()
      r = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("run\n"); f:close()
        error(require("lmp").error("OSError", "flaky disk"))
      end, {path}, {retries = 3, retry_on = {"OSError"}})
      assert.is_true(r:wait(20))
      local e = raises("RemoteError", r.get, r, 0)
      assert.equal("OSError", e.remote_kind)
      assert.equal(4, e.attempts)
      assert.equal(4, runs())

      path, runs = counter_file()
      r = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("run\n"); f:close()
        error("a bug, not worth a retry")
      end, {path}, {retries = 3, retry_on = {"OSError"}})
      assert.is_true(r:wait(20))
      assert.equal(1, raises("RemoteError", r.get, r, 0).attempts)
      assert.equal(1, runs())
    end)

    it("come from the pool's retries and retry_on options by default", function()
      local path, runs = counter_file()
      local p = new_pool{processes = 1, retries = 1, retry_on = {"RemoteError"}}
      local r = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("run\n"); f:close()
        error("always")
      end, {path})
      assert.is_true(r:wait(20))
      assert.equal(2, raises("RemoteError", r.get, r, 0).attempts)
      assert.equal(2, runs())
      -- a call's own option wins over the pool's
      path, runs = counter_file()
      r = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("run\n"); f:close()
        error("always")
      end, {path}, {retries = 0})
      assert.is_true(r:wait(20))
      assert.equal(1, runs())
    end)
  end)

  describe("cancel", function()
    it("drops a task that has not started: it never runs", function()
      local path, runs = counter_file()
      local p = new_pool(1)
      local busy = p:apply_async(function() nap(0.5) return "busy" end, {})
      local waiting = {}
      for i = 1, 4 do
        waiting[i] = p:apply_async(function(file)
          local f = io.open(file, "a"); f:write("run\n"); f:close()
        end, {path})
      end
      local failed
      local victim = p:apply_async(function(file)
        local f = io.open(file, "a"); f:write("victim\n"); f:close()
      end, {path}, nil, function(e) failed = e end)
      assert.is_true(victim:cancel())
      assert.is_false(victim:cancel(), "a second cancel")
      assert.is_true(victim:ready())
      assert.is_false(victim:successful())
      raises("CancelledError", victim.get, victim, 0)
      assert.equal("busy", busy:get(10))
      for i = 1, 4 do waiting[i]:get(10) end
      lmp.poll(0)
      assert.equal("CancelledError", failed and failed.kind)
      assert.equal(4, runs())
      assert.is_nil((H.slurp(path) or ""):find("victim", 1, true))
      assert.equal(0, p:stats().replaced)
    end)

    it("kills and replaces the worker of a running task", function()
      local p = new_pool(1)
      local pid1 = p:apply(function() return require("lmp").current_process().pid end, {}, {timeout = 20})
      local r = p:apply_async(function() nap(30) end, {})
      assert.is_truthy(H.wait_until(function() return p:stats().busy == 1 end, 5,
                                    function() lmp.poll(0.02) end))
      nap(0.2)  -- the task is running
      local t0 = H.now()
      assert.is_true(r:cancel())
      raises("CancelledError", r.get, r, 0)
      local pid2 = p:apply(function() return require("lmp").current_process().pid end, {}, {timeout = 10})
      assert.is_true(H.now() - t0 < 5)
      assert.are_not.equal(pid1, pid2)
      assert.is_truthy(H.wait_until(function() return H.dead(pid1) end, 5))
      assert.equal(1, p:stats().replaced)
    end)

    it("cancelling a map cancels its remaining chunks", function()
      local path, runs = counter_file()
      local p = new_pool(2)
      local list = {}
      for i = 1, 40 do list[i] = i end
      local r = p:map_async(function(x, file)
        local f = io.open(path, "a"); f:write(x, "\n"); f:close()
        nap(0.1)
        return x
      end, list, 1)
      nap(0.25)
      assert.is_true(r:cancel())
      raises("CancelledError", r.get, r, 0)
      -- the pool goes on, and the cancelled chunks do not run
      assert.same({1, 2}, p:map(function(x) return x end, {1, 2}, {timeout = 10}))
      nap(0.3)
      assert.is_true(runs() < 20, runs() .. " of 40 chunks ran")
      local s = p:stats()
      assert.equal(0, s.queued)
      assert.equal(2, s.workers)
    end)

    it("returns false for a call whose result came in but was not read yet", function()
      local p = new_pool(1)
      local a = p:apply_async(function() return "a" end, {})
      local b = p:apply_async(function() spin(0.3) return "b" end, {})
      spin(0.2)  -- no lmp call: a's reply waits unread
      assert.is_false(a:cancel())
      assert.equal("a", a:get(0))
      -- b, which the worker runs now, is not harmed
      assert.equal("b", b:get(10))
      assert.equal(0, p:stats().replaced)
    end)

    it("returns false for a call that is over", function()
      local p = new_pool(1)
      local r = p:apply_async(function() return 1 end, {})
      assert.equal(1, r:get(10))
      assert.is_false(r:cancel())
      assert.equal(1, r:get(0))
    end)
  end)

  describe("a failed map", function()
    it("drops its chunks still waiting in the parent", function()
      local path, runs = counter_file()
      local p = new_pool(1)
      local list = {}
      for i = 1, 30 do list[i] = i end
      -- tasks of 20 ms: the worker has two at a time (fast ones get more)
      local r = p:map_async(function(x)
        local f = io.open(path, "a"); f:write(x, "\n"); f:close()
        spin(0.02)
        if x == 2 then error("item 2") end
        return x
      end, list, 1)
      assert.is_true(r:wait(10))
      raises("RemoteError", r.get, r, 0)
      nap(0.2)
      lmp.poll(0)
      assert.is_true(runs() <= 6, runs() .. " chunks ran")
      assert.equal(0, p:stats().queued)
    end)
  end)

  describe("max_memory_per_child", function()
    it("replaces a worker whose RSS is over the limit after its task", function()
      local p = new_pool{processes = 1, max_memory_per_child = 40}
      local function pid() return require("lmp").current_process().pid end
      local a = p:apply(pid, {}, {timeout = 20})
      assert.equal(a, p:apply(pid, {}, {timeout = 20}), "a small worker was replaced")
      local r = p:apply(function()
        local t = {}
        for i = 1, 8e6 do t[i] = i end  -- 64 MiB of array
        _G.keep = t
        return #t
      end, {}, {timeout = 20})
      assert.equal(8e6, r)
      local b = p:apply(pid, {}, {timeout = 10})
      assert.are_not.equal(a, b)
      assert.equal(b, p:apply(pid, {}, {timeout = 20}))
      local s = p:stats()
      assert.equal(1, s.replaced)
      assert.equal(0, s.failed)
    end)

    it("counts a worker's own memory, not what it shares with its parent", function()
      local big = {}
      for i = 1, 8e6 do big[i] = i end  -- 64 MiB a forked worker inherits
      local p = new_pool{processes = 1, max_memory_per_child = 40}
      local function pid() return require("lmp").current_process().pid end
      local a = p:apply(pid, {}, {timeout = 20})
      assert.equal(a, p:apply(pid, {}, {timeout = 20}), "a small worker was replaced")
      assert.equal(0, p:stats().replaced)
      big = nil
    end)

    it("runs the tasks queued behind the retiring worker elsewhere", function()
      local p = new_pool{processes = 1, max_memory_per_child = 40}
      local rs = {}
      for i = 1, 6 do
        rs[i] = p:apply_async(function(x)
          if x == 1 then
            local t = {}
            for j = 1, 8e6 do t[j] = j end
            _G.keep = t
          end
          return x
        end, {i})
      end
      for i = 1, 6 do assert.equal(i, rs[i]:get(20)) end
      assert.equal(1, p:stats().replaced)
    end)
  end)

  describe("a broken initializer", function()
    it("fails the tasks with its error; the pool refuses more; join returns", function()
      local p = new_pool{processes = 2, initializer = function() error("no database") end}
      local rs = {}
      for i = 1, 5 do rs[i] = p:apply_async(function(x) return x end, {i}) end
      for i = 1, 5 do
        assert.is_true(rs[i]:wait(10), "task " .. i .. " has no outcome")
        local e = raises("RemoteError", rs[i].get, rs[i], 0)
        assert.truthy(e.message:find("initializer", 1, true), e.message)
        assert.truthy(e.message:find("no database", 1, true), e.message)
      end
      local e = raises("ProcessError", p.apply_async, p, function() end, {})
      assert.truthy(e.message:find("broken", 1, true), e.message)
      p:close()
      local t0 = H.now()
      p:join()
      assert.is_true(H.now() - t0 < 5)
    end)

    it("an initializer that exits its worker breaks the pool after three in a row", function()
      local p = new_pool{processes = 1, initializer = function() os.exit(4) end}
      local r = p:apply_async(function() return 1 end, {})
      assert.is_true(r:wait(20))
      local e = raises("WorkerLost", r.get, r, 0)
      assert.truthy(e.message:find("before it was ready", 1, true), e.message)
      assert.truthy(e.message:find("code 4", 1, true), e.message)
    end)
  end)

  describe("stats", function()
    it("counts workers, busy workers, queued, done, failed, retried and replaced tasks", function()
      local p = new_pool(2)
      local s = p:stats()
      assert.same({workers = 2, busy = 0, queued = 0, done = 0, failed = 0, retried = 0,
                   replaced = 0}, s)
      local slow = {}
      for i = 1, 6 do slow[i] = p:apply_async(function() nap(0.3) end, {}) end
      s = p:stats()
      assert.equal(2, s.workers)
      assert.is_true(s.queued >= 2, "queued " .. s.queued)
      assert.is_truthy(H.wait_until(function() return p:stats().busy == 2 end, 5,
                                    function() lmp.poll(0.02) end))
      for i = 1, 6 do slow[i]:get(10) end
      local r = p:apply_async(function() error("x") end, {})
      r:wait(10)
      r = p:apply_async(function() os.exit(1) end, {}, {retries = 1})
      r:wait(10)
      s = p:stats()
      assert.equal(6, s.done)
      assert.equal(2, s.failed)
      assert.equal(1, s.retried)
      assert.equal(2, s.replaced)
      assert.equal(0, s.queued)
    end)
  end)

  describe("terminate_workers and kill_workers", function()
    for _, how in ipairs({"terminate_workers", "kill_workers"}) do
      it(how .. " ends the workers now, failing their running tasks; the pool goes on", function()
        local p = new_pool(2)
        local running = {}
        for i = 1, 2 do running[i] = p:apply_async(function() nap(30) end, {}, {retries = 3}) end
        local queued = p:apply_async(function() return "later" end, {})
        assert.is_truthy(H.wait_until(function() return p:stats().busy == 2 end, 5,
                                      function() lmp.poll(0.02) end))
        nap(0.2)
        local t0 = H.now()
        p[how](p)
        assert.is_true(H.now() - t0 < 3)
        for i = 1, 2 do
          assert.is_true(running[i]:wait(0), "a running task is not over")
          local e = raises("WorkerLost", running[i].get, running[i], 0)
          assert.truthy(e.message:find(how, 1, true), e.message)
          assert.equal(1, e.attempts)
        end
        assert.equal("later", queued:get(10))
        assert.equal(9, p:apply(function() return 9 end, {}, {timeout = 20}))
        assert.equal(2, p:stats().workers)
      end)
    end
  end)

  describe("submitting", function()
    it("never waits for busy workers, even with big arguments", function()
      local p = new_pool(2)
      local busy = {}
      for i = 1, 2 do busy[i] = p:apply_async(function() nap(1.5) return "done" end, {}) end
      assert.is_truthy(H.wait_until(function() return p:stats().busy == 2 end, 5,
                                    function() lmp.poll(0.02) end))
      local big = ("x"):rep(1024 * 1024)
      local t0 = H.now()
      local rs = {}
      for i = 1, 8 do rs[i] = p:apply_async(function(s, k) return #s + k end, {big, i}) end
      local el = H.now() - t0
      assert.is_true(el < 0.7, ("8 apply_async calls took %.3f s"):format(el))
      for i = 1, 8 do assert.equal(1024 * 1024 + i, rs[i]:get(20)) end
      for i = 1, 2 do assert.equal("done", busy[i]:get(10)) end
    end)

    it("a map over numbers takes the list as it is at the call", function()
      local p = new_pool(1)
      -- small chunks (cut as workers take them) and big ones (framed at
      -- the call)
      for _, chunksize in ipairs({1, 300}) do
        local gate = p:apply_async(function() nap(0.3) end, {})  -- the map waits behind it
        local list = {}
        for i = 1, 1000 do list[i] = i end
        local r = p:map_async(function(x) return x * 2 end, list, chunksize)
        for i = 1, 1000 do list[i] = -1 end
        list[1001] = 7
        local got = r:get(20)
        gate:get(10)
        assert.equal(1000, #got)
        for i = 1, 1000 do assert.equal(2 * i, got[i], "chunksize " .. chunksize) end
      end
    end)

    it("a long map costs no memory per chunk until its chunks are sent", function()
      local p = new_pool(2)
      local gate = {}
      for i = 1, 2 do gate[i] = p:apply_async(function() nap(0.5) end, {}) end
      local list = {}
      for i = 1, 300000 do list[i] = i end
      collectgarbage(); collectgarbage()
      local before = collectgarbage("count")
      local r = H.without_gc(p.map_async, p, function(x) return x end, list, 1)
      local grew = (collectgarbage("count") - before) / 1024
      -- the copy of the list (2.3 MiB of doubles) and nothing per chunk
      assert.is_true(grew < 8, ("map_async of 300k chunks took %.1f MiB"):format(grew))
      -- (each busy worker may hold a few, unread)
      assert.is_true(p:stats().queued >= 300000 - 2 * 32, "queued " .. p:stats().queued)
      assert.is_true(r:cancel())
      assert.equal(0, p:stats().queued)
      for i = 1, 2 do gate[i]:get(10) end
    end)

    it("join after close runs the chunks not sent yet", function()
      local p = new_pool(2)
      local list = {}
      for i = 1, 5000 do list[i] = i end
      local r = p:map_async(function(x) return -x end, list, 1)
      p:close()
      p:join()
      assert.is_true(r:ready())
      local got = r:get(0)
      assert.equal(5000, #got)
      assert.equal(-5000, got[5000])
    end)

    it("terminate fails a map whose chunks were not sent yet", function()
      local p = new_pool(1)
      local list = {}
      for i = 1, 1000 do list[i] = i end
      local r = p:map_async(function(x) nap(0.01) return x end, list, 1)
      p:terminate()
      assert.is_true(r:ready())
      raises("ProcessError", r.get, r, 0)
      p:join()
    end)

    it("a broken pool fails a map whose chunks were not sent yet", function()
      local p = new_pool{processes = 2, initializer = function() error("no database") end}
      local list = {}
      for i = 1, 1000 do list[i] = i end
      local r = p:map_async(function(x) return x end, list, 1)
      assert.is_true(r:wait(10))
      local e = raises("RemoteError", r.get, r, 0)
      assert.truthy(e.message:find("no database", 1, true), e.message)
      assert.equal(0, p:stats().queued)
      p:close()
      p:join()
    end)
  end)

  describe("AsyncResult:await", function()
    -- Polls (bounded) until pred() holds.
    local function poll_until(pred, timeout)
      return H.wait_until(pred, timeout or 10, function() lmp.poll(0.01) end)
    end

    it("yields in a coroutine until the result is ready; lmp.poll resumes it", function()
      local p = new_pool(1)
      local r = p:apply_async(function() local t = os.clock() while os.clock() - t < 0.2 do end return 42 end, {})
      local got, steps = nil, 0
      local co = coroutine.create(function()
        steps = 1
        got = r:await()
        steps = 2
      end)
      assert.is_true(coroutine.resume(co))
      assert.equal(1, steps)  -- suspended in await
      assert.equal("suspended", coroutine.status(co))
      assert.is_truthy(poll_until(function() return steps == 2 end), "never resumed")
      assert.equal(42, got)
      assert.equal("dead", coroutine.status(co))
    end)

    it("returns at once, without yielding, for a call already over", function()
      local p = new_pool(1)
      local r = p:apply_async(function() return "x" end, {})
      assert.equal("x", r:get(10))
      local co = coroutine.wrap(function() return "done " .. r:await() end)
      assert.equal("done x", co())
    end)

    it("is get on the main thread", function()
      local p = new_pool(1)
      local r = p:apply_async(function() return 5 end, {})
      assert.equal(5, r:await(10))
      local slow = p:apply_async(function() local t = os.clock() while os.clock() - t < 1 do end end, {})
      local v, why = slow:await(0.05)
      assert.is_nil(v)
      assert.equal("timeout", why)
    end)

    it("raises the call's error inside the coroutine", function()
      local p = new_pool(1)
      local r = p:apply_async(function() error("boom") end, {})
      local caught
      local co = coroutine.create(function()
        local ok, e = pcall(r.await, r)
        caught = ok and "no error" or e
      end)
      assert.is_true(coroutine.resume(co))
      assert.is_truthy(poll_until(function() return caught ~= nil end))
      assert.is_true(lmp.is_error(caught, "RemoteError"), tostring(caught))
      assert.truthy(caught.message:find("boom", 1, true))
    end)

    it("gives nil, \"timeout\" when its timeout passes first", function()
      local p = new_pool(1)
      local r = p:apply_async(function() local t = os.clock() while os.clock() - t < 2 do end end, {})
      local result
      local co = coroutine.create(function() result = {r:await(0.1)} end)
      local t0 = H.now()
      assert.is_true(coroutine.resume(co))
      assert.is_truthy(poll_until(function() return result ~= nil end, 5))
      assert.is_true(H.now() - t0 < 1.5, "resumed after " .. (H.now() - t0) .. " s")
      assert.same({nil, "timeout"}, {result[1], result[2]})
      assert.is_false(r:ready())
    end)

    it("many coroutines, resumed by another call's get, each with its own result", function()
      local p = new_pool(2)
      local results, cos = {}, {}
      for i = 1, 6 do
        local r = p:apply_async(function(x) return x * 3 end, {i})
        cos[i] = coroutine.create(function() results[i] = r:await() end)
        assert.is_true(coroutine.resume(cos[i]))
      end
      -- a blocking wait of the main thread resumes them too
      local last = p:apply_async(function() local t = os.clock() while os.clock() - t < 0.3 do end return "last" end, {})
      assert.equal("last", last:get(10))
      lmp.poll(0)
      for i = 1, 6 do assert.equal(i * 3, results[i], "coroutine " .. i) end
    end)

    it("a coroutine resumed by its own caller before the result waits on", function()
      local p = new_pool(1)
      local r = p:apply_async(function() local t = os.clock() while os.clock() - t < 0.3 do end return 1 end, {})
      local got
      local co = coroutine.create(function() got = r:await() end)
      assert.is_true(coroutine.resume(co))
      assert.is_true(coroutine.resume(co))  -- too early: it yields again
      assert.equal("suspended", coroutine.status(co))
      assert.is_truthy(poll_until(function() return got ~= nil end))
      assert.equal(1, got)
    end)
  end)

  describe("lmp.on_error", function()
    after_each(function() lmp.on_error(nil) end)

    it("gets the errors of callbacks, with their traceback; the pool goes on", function()
      local p = new_pool(1)
      local seen = {}
      assert.is_nil(lmp.on_error(function(err, traceback) seen[#seen + 1] = {err, traceback} end))
      local r = p:apply_async(function() return 1 end, {}, function() error("in the callback") end)
      assert.equal(1, r:get(10))
      lmp.poll(0)
      assert.equal(1, #seen)
      assert.truthy(tostring(seen[1][1]):find("in the callback", 1, true), tostring(seen[1][1]))
      assert.truthy(seen[1][2]:find("traceback", 1, true), seen[1][2])
      assert.equal(2, p:apply(function() return 2 end, {}, {timeout = 10}))
    end)

    it("gets the errors of coroutines resumed from await", function()
      local p = new_pool(1)
      local seen
      lmp.on_error(function(err) seen = err end)
      local r = p:apply_async(function() return 1 end, {})
      local co = coroutine.create(function()
        r:await()
        error({"a table error"})
      end)
      assert.is_true(coroutine.resume(co))
      assert.is_truthy(H.wait_until(function() return seen ~= nil end, 10,
                                    function() lmp.poll(0.01) end))
      assert.same({"a table error"}, seen)
    end)

    it("returns the handler it replaces, and takes a function or nil", function()
      local f = function() end
      assert.is_nil(lmp.on_error(f))
      assert.equal(f, lmp.on_error(nil))
      raises("TypeError", lmp.on_error, "print")
    end)

    it("a handler that fails is reported on stderr, never raised", function()
      local dir = H.tmpdir()
      local path = H.write(dir .. "/script.lua", [[
        local lmp = require "lmp"
        local p = lmp.Pool(1)
        lmp.on_error(function() error("HANDLER-FAILS") end)
        local r = p:apply_async(function() return 1 end, {}, function() error("CALLBACK-FAILS") end)
        assert(r:get(10) == 1)
        lmp.poll(0)
        print("still here")
        p:close(); p:join()
      ]])
      local r = H.lmp_run({path}, {timeout = 20})
      assert.equal(0, r.status, r.stderr)
      assert.truthy(r.stdout:find("still here", 1, true))
      assert.truthy(r.stderr:find("HANDLER-FAILS", 1, true), r.stderr)
      assert.truthy(r.stderr:find("CALLBACK-FAILS", 1, true), r.stderr)
    end)
  end)

  describe("progress", function()
    it("map_async and imap take progress (drawn only on a terminal)", function()
      local p = new_pool(2)
      assert.same({1, 2, 3}, p:map_async(function(x) return x end, {1, 2, 3},
                                         {progress = true}):get(10))
      local n = 0
      for _ in p:imap_unordered(function(x) return x end, {1, 2, 3}, {progress = true}) do
        n = n + 1
      end
      assert.equal(3, n)
    end)
  end)
end)
