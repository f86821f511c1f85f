-- Synchronisation across processes (SPEC section 6, conventions of section
-- 1, details of section 12): Lock, RLock, Semaphore, BoundedSemaphore,
-- Condition, Event and Barrier -- their API and return values, misuse,
-- exactness under contention from several processes, timeouts, what
-- happens when a holder or a peer dies, waits that keep a Pool served,
-- passing them to children, and closing them.
--
-- Every blocking call has a timeout, so that a bug fails a spec instead of
-- hanging it; where a bug could make even a call with a timeout hang, the
-- call runs in a child that the spec joins with a bound.
local H = require "spec.support.helpers"
local join, finish, took_about, took_little = H.join, H.finish, H.took_about, H.took_little
local lmp = require "lmp"
local ffi = require "ffi"

pcall(ffi.cdef, "int kill(int pid, int sig);")

local raises = H.raises

local SIGCONT, SIGSTOP = 18, 19

local csleep, spawn = H.csleep, H.spawn

-- Calls f(...) and returns select("#", ...) of its results, then them.
local function results(f, ...)
  local function pack(...) return select("#", ...), {...} end
  return pack(f(...))
end

-- A child that takes obj (a Lock, RLock, Semaphore or Condition) `depth`
-- times, sets `held`, then, per `how`:
--   "release": waits until `done` is set, then releases as often;
--   "exit":    os.exit(0) while holding it;
--   "return":  returns from its function while holding it;
--   "hang":    waits (up to 30 s) to be killed, holding it.
-- Returns the process and the `done` event.
local function holder(obj, how, depth)
  local held, done = lmp.Event(), lmp.Event()
  local p = spawn(function(o, held_, done_, depth_, how_)
    for _ = 1, depth_ do assert(o:acquire(5), "holder: cannot take it") end
    held_:set()
    if how_ == "exit" then os.exit(0) end
    if how_ == "return" then return end
    if how_ == "hang" then done_:wait(30); return end
    assert(done_:wait(10), "holder: never told to release")
    for _ = 1, depth_ do o:release() end
  end, obj, held, done, depth or 1, how or "release")
  assert.is_true(held:wait(10), "the holder child did not take " .. tostring(obj))
  return p, done
end

-- Asserts that `e` (an lmp error) has the kind and a message matching
-- each of the given Lua patterns.
local function says(e, ...)
  for i = 1, select("#", ...) do
    local pat = select(i, ...)
    assert.is_truthy(tostring(e.message):lower():find(pat),
      ("message %q does not say %q"):format(tostring(e.message), pat))
  end
end

-- Starts `n` children that each, holding the condition's lock, count
-- themselves in st[1], tell the parent through `ready` (a second
-- Condition on the same lock) and wait on `cond`.  On waking they count
-- st[2] (woken) or st[3] (timed out).  Returns once all n are waiting.
local function sleepers(n, cond, ready, st, wait_timeout)
  local ps = {}
  for k = 1, n do
    ps[k] = spawn(function(c, r, s, t)
      assert(c:acquire(10))
      s[1] = s[1] + 1
      r:notify()
      if c:wait(t) then s[2] = s[2] + 1 else s[3] = s[3] + 1 end
      c:release()
    end, cond, ready, st, wait_timeout)
  end
  -- All n are waiting once st[1] == n is seen under the lock: each
  -- counted itself and entered wait without letting the lock go.
  assert.is_true(cond:acquire(10))
  assert.is_true(ready:wait_for(function() return st[1] == n end, 10),
    "not all children reached wait")
  cond:release()
  return ps
end

-- How many are woken by now, after giving any extra ones time to wake.
local function woken_settled(st, want)
  H.wait_until(function() return st[2] >= want end, 5)
  csleep(0.2)
  return st[2]
end

describe("lmp synchronisation", function()
  H.check_leaks()

  -- =========================================================================
  describe("Lock", function()
    it("acquire() returns exactly true; release() frees it", function()
      local l = lmp.Lock()
      local n, r = results(l.acquire, l)
      assert.equal(1, n)
      assert.is_true(r[1])
      assert.matches("^lmp%.Lock%(locked", tostring(l))
      assert.is_nil(l:release())
      assert.matches("^lmp%.Lock%(unlocked%)$", tostring(l))
      assert.is_true(l:acquire(0))
      l:release()
      assert.is_true(l:acquire(5))
      l:release()
      l:close()
    end)

    it("with(fn, ...) passes the arguments, returns all of fn's results and holds the lock", function()
      local l = lmp.Lock()
      local n, r = results(l.with, l, function(a, b, c)
        -- held by this process meanwhile: not available, even to itself
        assert.is_false(l:acquire(0))
        return c, nil, a + b, nil
      end, 1, 2, "three")
      assert.equal(4, n)
      assert.same({"three", nil, 3, nil}, r)
      -- released after: free for a non-blocking acquire
      assert.is_true(l:acquire(0))
      l:release()
      assert.equal(0, select("#", l:with(function() end)))
      l:close()
    end)

    it("with() releases the lock when fn raises, then re-raises the same error value", function()
      local l = lmp.Lock()
      local err = {code = 42}
      local ok, e = pcall(l.with, l, function() error(err) end)
      assert.is_false(ok)
      assert.is_true(rawequal(err, e))
      assert.is_true(l:acquire(0), "the lock stayed held after fn raised")
      l:release()
      -- a string error keeps its exact text (no position added on the way)
      ok, e = pcall(l.with, l, function() error("plain", 0) end)
      assert.is_false(ok)
      assert.equal("plain", e)
      ok, e = pcall(l.with, l, function() error("where") end)
      assert.is_false(ok)
      assert.matches("sync_spec%.lua:%d+: where$", e)
      -- an lmp error raised inside keeps its kind
      local other = lmp.Lock()
      ok, e = pcall(l.with, l, function() other:release() end)
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e))
      assert.equal("ValueError", e.kind)
      assert.is_true(l:acquire(0))
      l:release()
      l:close()
    end)

    it("acquire() without a timeout by the holder itself raises ValueError instead of hanging", function()
      local l = lmp.Lock()
      assert.is_true(l:acquire())
      local e = raises("ValueError", l.acquire, l)
      says(e, "already holds")
      -- still held, and still ours
      l:release()
      l:close()
    end)

    it("acquire(timeout) by the holder itself returns false after about the timeout", function()
      local l = lmp.Lock()
      l:acquire()
      local t0 = H.now()
      assert.is_false(l:acquire(0.3))
      took_about(t0, 0.3, "acquire(0.3) of a lock held by the caller")
      t0 = H.now()
      assert.is_false(l:acquire(0))
      took_little(t0, "acquire(0) of a lock held by the caller")
      l:release()
      l:close()
    end)

    it("another process cannot take it while it is held, and can once it is released", function()
      local l, out = lmp.Lock(), lmp.RawArray("i", 2)
      l:acquire()
      local p = spawn(function(lk, o)
        o[1] = lk:acquire(0) and 1 or 2      -- held by the parent: false
        o[2] = lk:acquire(10) and 1 or 2     -- the parent releases it
        lk:release()
      end, l, out)
      assert.is_truthy(H.wait_until(function() return out[1] ~= 0 end, 10))
      csleep(0.1)
      l:release()
      finish(p)
      assert.same({2, 1}, out:totable())
      assert.is_true(l:acquire(0))
      l:release()
    end)
  end)

  -- =========================================================================
  describe("RLock", function()
    it("is re-entrant for its owner and freed by as many releases", function()
      local r = lmp.RLock()
      assert.is_true(r:acquire())
      assert.is_true(r:acquire())
      assert.is_true(r:acquire(0))
      assert.is_true(r:acquire(5))
      for _ = 1, 4 do r:release() end
      raises("ValueError", r.release, r)
      r:close()
    end)

    it("with() nests, returns fn's results and releases on error", function()
      local r = lmp.RLock()
      local n, res = results(r.with, r, function(x)
        return r:with(function(y) return y * 2, nil end, x + 1)
      end, 4)
      assert.equal(2, n)
      assert.same({10, nil}, res)
      local err = setmetatable({}, {__tostring = function() return "boom" end})
      local ok, e = pcall(r.with, r, function() return r:with(function() error(err) end) end)
      assert.is_false(ok)
      assert.is_true(rawequal(err, e))
      -- fully released: a single release more is an error
      raises("ValueError", r.release, r)
      r:close()
    end)

    it("is not available to another process until released as many times as taken", function()
      local r, out = lmp.RLock(), lmp.RawArray("i", 3)
      local step = lmp.Event()
      r:acquire(); r:acquire()
      local p = spawn(function(rl, o, st)
        o[1] = rl:acquire(0) and 1 or 2          -- depth 2 in the parent
        assert(st:wait(10))
        o[2] = rl:acquire(0.2) and 1 or 2        -- still depth 1 in the parent
        o[3] = rl:acquire(10) and 1 or 2         -- released
        rl:release()
      end, r, out, step)
      assert.is_truthy(H.wait_until(function() return out[1] ~= 0 end, 10))
      r:release()
      step:set()
      assert.is_truthy(H.wait_until(function() return out[2] ~= 0 end, 10))
      r:release()
      finish(p)
      assert.same({2, 2, 1}, out:totable())
    end)
  end)

  -- =========================================================================
  describe("Semaphore and BoundedSemaphore", function()
    it("Semaphore() starts at 1; acquire takes a permit, release gives one (past the start too)", function()
      local s = lmp.Semaphore()
      assert.equal(1, s:get_value())
      assert.is_true(s:acquire())
      assert.equal(0, s:get_value())
      local t0 = H.now()
      assert.is_false(s:acquire(0))
      took_little(t0, "acquire(0) of an empty Semaphore")
      s:release(); s:release(); s:release()
      assert.equal(3, s:get_value())
      assert.is_true(s:acquire(0))
      assert.equal(2, s:get_value())
      s:close()
    end)

    it("takes the value positionally or in an options table", function()
      for _, cls in ipairs({"Semaphore", "BoundedSemaphore"}) do
        assert.equal(3, lmp[cls](3):get_value())
        assert.equal(3, lmp[cls]{value = 3}:get_value())
        assert.equal(0, lmp[cls](0):get_value())
        assert.equal(1, lmp[cls]():get_value())
        assert.equal(1, lmp[cls]{}:get_value())
      end
    end)

    it("with() holds a permit while fn runs and gives it back, also when fn raises", function()
      for _, cls in ipairs({"Semaphore", "BoundedSemaphore"}) do
        local s = lmp[cls](2)
        local n, r = results(s.with, s, function(a) return s:get_value(), a end, "x")
        assert.equal(2, n)
        assert.same({1, "x"}, r)
        assert.equal(2, s:get_value())
        local ok, e = pcall(s.with, s, function() error("no", 0) end)
        assert.is_false(ok)
        assert.equal("no", e)
        assert.equal(2, s:get_value())
        s:close()
      end
    end)

    it("BoundedSemaphore raises ValueError when released past its initial value", function()
      local b = lmp.BoundedSemaphore(2)
      local e = raises("ValueError", b.release, b)
      says(e, "boundedsemaphore")
      assert.equal(2, b:get_value())
      assert.is_true(b:acquire(0))
      b:release()
      raises("ValueError", b.release, b)
      assert.equal(2, b:get_value())
      b:close()
    end)

    it("a permit released by another process wakes a waiter", function()
      local s = lmp.Semaphore(0)
      local p = spawn(function(sem) csleep(0.1); sem:release() end, s)
      local t0 = H.now()
      assert.is_true(s:acquire(10))
      assert.is_true(H.now() - t0 < 5)
      assert.equal(0, s:get_value())
      finish(p)
    end)
  end)

  -- =========================================================================
  describe("Condition", function()
    it("has a re-entrant lock by default, or uses the Lock or RLock it is given", function()
      local c = lmp.Condition()
      assert.matches("^lmp%.Condition%(lmp%.RLock%(", tostring(c))
      assert.is_true(c:acquire())
      assert.is_true(c:acquire(0))   -- an RLock: re-entrant
      c:release(); c:release()
      raises("ValueError", c.release, c)

      local l = lmp.Lock()
      local c2 = lmp.Condition(l)
      assert.is_true(c2:acquire(5))
      assert.is_false(l:acquire(0))  -- the very same lock
      c2:notify()                    -- held through the lock object: allowed
      l:release()
      raises("ValueError", c2.notify, c2)

      local c3 = lmp.Condition{lock = l}
      assert.is_true(l:acquire(5))
      c3:notify_all()
      c3:release()
      assert.is_true(l:acquire(0))
      l:release()
    end)

    it("with() holds the lock while fn runs and returns fn's results", function()
      local c = lmp.Condition(lmp.Lock())
      local n, r = results(c.with, c, function(a)
        c:notify()                   -- allowed: held
        c:notify_all()
        return a, nil
      end, 7)
      assert.equal(2, n)
      assert.same({7, nil}, r)
      raises("ValueError", c.notify, c)   -- released after
      local ok, e = pcall(c.with, c, function() error("in with", 0) end)
      assert.is_false(ok)
      assert.equal("in with", e)
      assert.is_true(c:acquire(0))
      c:release()
    end)

    it("wait(timeout) returns false after the timeout, holding the lock again (RLock depth kept)", function()
      local c = lmp.Condition()
      c:acquire(); c:acquire()
      local t0 = H.now()
      local n, r = results(c.wait, c, 0.3)
      took_about(t0, 0.3, "Condition:wait(0.3)")
      assert.equal(1, n)
      assert.is_false(r[1])
      c:notify()                     -- still held
      c:release(); c:release()
      raises("ValueError", c.release, c)
      t0 = H.now()
      c:acquire()
      assert.is_false(c:wait(0))
      took_little(t0, "Condition:wait(0)")
      c:release()
    end)

    it("wait_for returns the predicate's value, at once when it is already true", function()
      local c = lmp.Condition()
      c:acquire()
      assert.equal("ready", c:wait_for(function() return "ready" end, 0))
      assert.equal(7, c:wait_for(function() return 7 end))
      local calls = 0
      local t0 = H.now()
      local r = c:wait_for(function() calls = calls + 1; return false end, 0.3)
      took_about(t0, 0.3, "Condition:wait_for(false, 0.3)")
      assert.is_false(r)
      assert.is_true(calls >= 2)
      t0 = H.now()
      assert.is_nil(c:wait_for(function() return nil end, 0))
      took_little(t0, "Condition:wait_for(pred, 0)")
      c:notify()   -- still held
      c:release()
    end)

    it("notify and notify_all without waiters do nothing; notify(0) wakes nobody", function()
      local c = lmp.Condition()
      c:with(function()
        c:notify(); c:notify(3); c:notify(0); c:notify_all()
      end)
      c:acquire()
      assert.is_false(c:wait(0.05))  -- no notify was saved up for a later waiter
      c:release()
    end)
  end)

  -- =========================================================================
  describe("Event", function()
    it("is_set, set, clear, and wait returning booleans", function()
      local e = lmp.Event()
      assert.is_false(e:is_set())
      local t0 = H.now()
      assert.is_false(e:wait(0))
      took_little(t0, "Event:wait(0)")
      t0 = H.now()
      assert.is_false(e:wait(0.3))
      took_about(t0, 0.3, "Event:wait(0.3)")
      assert.matches("^lmp%.Event%(unset%)$", tostring(e))
      assert.is_nil(e:set())
      assert.is_true(e:is_set())
      assert.matches("^lmp%.Event%(set%)$", tostring(e))
      assert.is_true(e:wait())
      assert.is_true(e:wait(0))
      assert.is_true(e:wait(5))
      e:set()
      assert.is_true(e:is_set())
      assert.is_nil(e:clear())
      assert.is_false(e:is_set())
      assert.is_false(e:wait(0))
      e:clear()
      assert.is_false(e:is_set())
      e:close()
    end)
  end)

  -- =========================================================================
  describe("Barrier", function()
    it("has parties, n_waiting and broken; Barrier(1) lets every wait through with index 0", function()
      local b = lmp.Barrier(1)
      assert.equal(1, b.parties)
      assert.equal(0, b.n_waiting)
      assert.is_false(b.broken)
      for _ = 1, 3 do
        local n, r = results(b.wait, b, 5)
        assert.equal(1, n)
        assert.equal(0, r[1])
      end
      assert.equal(0, b:wait())
      assert.matches("^lmp%.Barrier%(parties=1, n_waiting=0%)$", tostring(b))
      b:close()
    end)

    it("runs the action once per generation, in the positional and the options-table form", function()
      local runs = 0
      local b = lmp.Barrier(1, function() runs = runs + 1 end)
      b:wait(5); b:wait(5); b:wait(5)
      assert.equal(3, runs)
      local b2 = lmp.Barrier{parties = 1, action = function() runs = runs + 10 end}
      assert.equal(0, b2:wait(5))
      assert.equal(13, runs)
      assert.equal(1, b2.parties)
    end)

    it("uses its default timeout (positional or in the options table) when wait gets none", function()
      for _, b in ipairs({lmp.Barrier(2, nil, 0.3), lmp.Barrier(2, function() end, 0.3),
                          lmp.Barrier{parties = 2, timeout = 0.3}}) do
        assert.equal(2, b.parties)
        local t0 = H.now()
        local n, r = results(b.wait, b)
        took_about(t0, 0.3, "Barrier:wait() with a default timeout of 0.3")
        assert.equal(2, n)
        assert.is_nil(r[1])
        assert.equal("broken", r[2])
        assert.is_true(b.broken)
        b:close()
      end
      -- a timeout given to wait wins over the default
      local b = lmp.Barrier(2, nil, 10)
      local t0 = H.now()
      assert.is_nil((b:wait(0.2)))
      took_about(t0, 0.2, "Barrier:wait(0.2) with a default of 10")
    end)

    it("an action error reaches the party that ran it and breaks the barrier", function()
      local b = lmp.Barrier(1, function() error({why = "action"}) end)
      local ok, e = pcall(b.wait, b, 5)
      assert.is_false(ok)
      assert.same({why = "action"}, e)
      assert.is_true(b.broken)
      assert.same({nil, "broken"}, {b:wait(5)})
      b:reset()
      assert.is_false(b.broken)
    end)

    it("counts n_waiting; abort breaks it for the waiters and later ones until reset", function()
      local b, out = lmp.Barrier(3), lmp.RawArray("i", 2)
      local p = spawn(function(bar, o)
        local i, why = bar:wait(10)
        o[1] = i == nil and why == "broken" and 1 or 2
        i, why = bar:wait(10)   -- while broken: at once
        o[2] = i == nil and why == "broken" and 1 or 2
      end, b, out)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 1 end, 10),
        "n_waiting did not reach 1")
      assert.matches("n_waiting=1", tostring(b))
      b:abort()
      finish(p)
      assert.same({1, 1}, out:totable())
      assert.is_true(b.broken)
      assert.equal(0, b.n_waiting)
      assert.matches("broken", tostring(b))
      local t0 = H.now()
      assert.same({nil, "broken"}, {b:wait(5)})
      took_little(t0, "wait on a broken barrier")
      b:reset()
      assert.is_false(b.broken)
      assert.equal(0, b.n_waiting)
      -- usable again: three parties
      local q1 = spawn(function(bar) assert(bar:wait(10)) end, b)
      local q2 = spawn(function(bar) assert(bar:wait(10)) end, b)
      local i = b:wait(10)
      assert.is_number(i)
      finish(q1); finish(q2)
    end)

    it("gives indices in arrival order", function()
      local b, out = lmp.Barrier(3), lmp.RawArray("i", 2)
      local p1 = spawn(function(bar, o) o[1] = bar:wait(10) + 1 end, b, out)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 1 end, 10))
      local p2 = spawn(function(bar, o) o[2] = bar:wait(10) + 1 end, b, out)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 2 end, 10))
      assert.equal(2, b:wait(10))
      finish(p1); finish(p2)
      assert.same({1, 2}, out:totable())
    end)

    it("reset() while parties wait gives them nil, \"broken\", and the barrier is as new", function()
      local b, out = lmp.Barrier(2), lmp.RawArray("i", 1)
      local p = spawn(function(bar, o)
        local i, why = bar:wait(10)
        o[1] = i == nil and why == "broken" and 1 or 2
      end, b, out)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 1 end, 10))
      b:reset()
      finish(p)
      assert.equal(1, out[1])
      assert.is_false(b.broken)
      assert.equal(0, b.n_waiting)
      local q = spawn(function(bar) assert(bar:wait(10)) end, b)
      assert.is_number(b:wait(10))
      finish(q)
    end)
  end)

  -- =========================================================================
  describe("misuse", function()
    it("releasing an unheld Lock or RLock is a ValueError that says so", function()
      for _, cls in ipairs({"Lock", "RLock"}) do
        local l = lmp[cls]()
        says(raises("ValueError", l.release, l), "not held")
        l:acquire(); l:release()
        says(raises("ValueError", l.release, l), "not held")
        l:close()
      end
    end)

    it("releasing a Lock or RLock held by another process is a ValueError that says so", function()
      for _, cls in ipairs({"Lock", "RLock"}) do
        local l = lmp[cls]()
        local p, done = holder(l, "release", cls == "RLock" and 2 or 1)
        says(raises("ValueError", l.release, l), "another process")
        -- and it is still held by the other process
        assert.is_false(l:acquire(0))
        done:set()
        finish(p)
        assert.is_true(l:acquire(0))
        l:release()
      end
    end)

    it("Semaphore and BoundedSemaphore values must be integers >= 0", function()
      for _, cls in ipairs({"Semaphore", "BoundedSemaphore"}) do
        says(raises("ValueError", lmp[cls], -1), "%-1")
        raises("ValueError", lmp[cls], {value = -5})
        raises("TypeError", lmp[cls], 1.5)
        raises("TypeError", lmp[cls], "2")
        raises("TypeError", lmp[cls], true)
      end
    end)

    it("Barrier parties must be an integer >= 1, action a function", function()
      says(raises("ValueError", lmp.Barrier, 0), "parties")
      raises("ValueError", lmp.Barrier, -3)
      raises("ValueError", lmp.Barrier, {parties = 0})
      says(raises("TypeError", lmp.Barrier, 2.5), "parties")
      raises("TypeError", lmp.Barrier, "3")
      raises("TypeError", lmp.Barrier)
      raises("TypeError", lmp.Barrier, {})
      raises("TypeError", lmp.Barrier, {parties = 1.5})
      says(raises("TypeError", lmp.Barrier, 2, "not a function"), "action")
      raises("TypeError", lmp.Barrier, {parties = 2, action = 42})
    end)

    it("Condition needs a Lock or RLock", function()
      raises("TypeError", lmp.Condition, 42)
      raises("TypeError", lmp.Condition, "lock")
      raises("TypeError", lmp.Condition, {lock = lmp.Event()})
      local l = lmp.Lock()
      l:close()
      raises("ValueError", lmp.Condition, l)
      -- other lmp objects are not locks either (and must not be mistaken
      -- for an options table without a lock)
      local wrong = {}
      for _, cls in ipairs({"Semaphore", "BoundedSemaphore", "Event"}) do
        local ok, e = pcall(lmp.Condition, lmp[cls]())
        if ok or not lmp.is_error(e) or e.kind ~= "TypeError" then
          wrong[#wrong + 1] = ("Condition(lmp.%s()) %s"):format(cls,
            ok and ("made " .. tostring(e)) or ("raised " .. tostring(e)))
        end
      end
      assert.same({}, wrong)
    end)

    it("wait, wait_for, notify and notify_all without holding the condition's lock are ValueErrors", function()
      for _, lock in ipairs({lmp.Lock(), lmp.RLock()}) do
        local c = lmp.Condition(lock)
        says(raises("ValueError", c.notify, c), "not held")
        raises("ValueError", c.notify, c, 2)
        raises("ValueError", c.notify_all, c)
        raises("ValueError", c.wait, c, 0.1)
        raises("ValueError", c.wait, c)
        raises("ValueError", c.wait_for, c, function() return false end, 0.1)
        -- nor when another process holds it
        local p, done = holder(c)
        raises("ValueError", c.notify, c)
        raises("ValueError", c.notify_all, c)
        raises("ValueError", c.wait, c, 0.1)
        done:set()
        finish(p)
      end
    end)

    it("timeouts that are not numbers (or NaN) are TypeErrors", function()
      local bad = {"1", {}, true, 0 / 0}
      local l, r = lmp.Lock(), lmp.RLock()
      local s, bs = lmp.Semaphore(0), lmp.BoundedSemaphore(1)
      bs:acquire()
      local c, e, b = lmp.Condition(), lmp.Event(), lmp.Barrier(2)
      local p, done = holder(l)
      local p2, done2 = holder(r)
      for _, t in ipairs(bad) do
        raises("TypeError", l.acquire, l, t)
        raises("TypeError", r.acquire, r, t)
        raises("TypeError", s.acquire, s, t)
        raises("TypeError", bs.acquire, bs, t)
        raises("TypeError", e.wait, e, t)
        c:acquire()
        raises("TypeError", c.wait, c, t)
        raises("TypeError", c.wait_for, c, function() return false end, t)
        c:release()
        raises("TypeError", b.wait, b, t)
        raises("TypeError", lmp.Barrier, 2, nil, t)
        raises("TypeError", lmp.Barrier, {parties = 2, timeout = t})
      end
      assert.is_false(b.broken)
      done:set(); done2:set()
      finish(p); finish(p2)
    end)

    it("timeouts that are not numbers are TypeErrors also when the call would not wait", function()
      -- Validation must not depend on the state of the object: a wrong
      -- argument should fail every time, not only under contention.
      local l, r = lmp.Lock(), lmp.RLock()
      local s, bs = lmp.Semaphore(5), lmp.BoundedSemaphore(5)
      local e = lmp.Event()
      e:set()
      r:acquire()
      local wrong = {}
      local function check(what, obj, m)
        local ok, err = pcall(obj[m], obj, "1")
        if ok or not lmp.is_error(err) or err.kind ~= "TypeError" then
          wrong[#wrong + 1] = what .. (ok and " accepted the timeout \"1\"" or (" raised " .. tostring(err)))
        end
      end
      check("Lock:acquire (free)", l, "acquire")
      check("RLock:acquire (held by this process: re-entry)", r, "acquire")
      check("Semaphore:acquire (permits available)", s, "acquire")
      check("BoundedSemaphore:acquire (permits available)", bs, "acquire")
      check("Event:wait (already set)", e, "wait")
      -- undo what the calls that went through did
      while pcall(r.release, r) do end
      pcall(l.release, l)
      while s:get_value() < 5 do s:release() end
      while bs:get_value() < 5 do bs:release() end
      assert.same({}, wrong)
    end)

    it("negative timeouts do not block", function()
      local l, s, e = lmp.Lock(), lmp.Semaphore(0), lmp.Event()
      l:acquire()
      local t0 = H.now()
      assert.is_false(l:acquire(-1))
      assert.is_false(s:acquire(-1))
      assert.is_false(e:wait(-1))
      took_little(t0, "waits with a negative timeout")
      l:release()
    end)
  end)

  -- =========================================================================
  describe("across processes", function()
    -- Each child does N increments of a plain shared counter (no lock of
    -- its own) under `lock`, through `inc(lock, counter)`.
    local function count_with(n, N, make_lock, inc)
      local lock, counter = make_lock(), lmp.Value("i", 0, {lock = false})
      local ps = {}
      for i = 1, n do
        ps[i] = spawn(function(lk, ctr, times, step)
          for _ = 1, times do step(lk, ctr) end
        end, lock, counter, N, inc)
      end
      for i = 1, n do finish(ps[i], 20) end
      return counter.value
    end

    local function inc_with(lk, ctr)
      lk:with(function()
        local v = ctr.value
        for _ = 1, 20 do end   -- widen the window between read and write
        ctr.value = v + 1
      end)
    end

    local function inc_manual(lk, ctr)
      assert(lk:acquire(10))
      local v = ctr.value
      ctr.value = v + 1
      lk:release()
    end

    local function inc_nested(lk, ctr)
      lk:with(function()
        assert(lk:acquire(5))          -- recursively
        lk:with(function()
          local v = ctr.value
          ctr.value = v + 1
        end)
        lk:release()
      end)
    end

    for _, n in ipairs({2, 4, 8}) do
      it(("%d processes incrementing under a Lock reach the exact total"):format(n), function()
        local N = 1500
        assert.equal(n * N, count_with(n, N, lmp.Lock, inc_with))
        assert.equal(n * 500, count_with(n, 500, lmp.Lock, inc_manual))
      end)

      it(("%d processes incrementing under an RLock taken recursively reach the exact total"):format(n), function()
        local N = 1000
        assert.equal(n * N, count_with(n, N, lmp.RLock, inc_nested))
      end)
    end

    it("a Barrier of n processes gives indices 0..n-1 once each, generation after generation", function()
      local n, G = 4, 6
      local b = lmp.Barrier(n)
      local rec = lmp.RawArray("i", n * G)
      local ps = {}
      for k = 1, n do
        ps[k] = spawn(function(bar, r, me, parties, gens)
          for g = 1, gens do
            local i = bar:wait(10)
            r[(g - 1) * parties + me] = i == nil and -1 or i + 1
          end
        end, b, rec, k, n, G)
      end
      for k = 1, n do finish(ps[k]) end
      for g = 1, G do
        local got = {}
        for k = 1, n do got[#got + 1] = rec[(g - 1) * n + k] - 1 end
        table.sort(got)
        assert.same({0, 1, 2, 3}, got, "generation " .. g)
      end
      assert.is_false(b.broken)
      assert.equal(0, b.n_waiting)
    end)

    it("a Barrier that includes the parent: indices once each, over several generations", function()
      local n, G = 3, 5
      local b = lmp.Barrier(n)
      local rec = lmp.RawArray("i", (n - 1) * G)
      local ps = {}
      for k = 1, n - 1 do
        ps[k] = spawn(function(bar, r, me, gens, kids)
          for g = 1, gens do
            local i = bar:wait(10)
            r[(g - 1) * kids + me] = i == nil and -1 or i + 1
          end
        end, b, rec, k, G, n - 1)
      end
      local mine = {}
      for g = 1, G do mine[g] = b:wait(10) end
      for k = 1, n - 1 do finish(ps[k]) end
      for g = 1, G do
        local got = {mine[g]}
        for k = 1, n - 1 do got[#got + 1] = rec[(g - 1) * (n - 1) + k] - 1 end
        table.sort(got)
        assert.same({0, 1, 2}, got, "generation " .. g)
      end
    end)

    it("the Barrier action runs once per generation, in one process, before any party is released", function()
      local n, G = 3, 5
      local runs = lmp.RawArray("i", 1 + G)
      local b = lmp.Barrier{parties = n, action = function()
        runs[1] = runs[1] + 1
        runs[1 + runs[1]] = require("lmp").current_process().pid
      end}
      local seen = lmp.RawArray("i", n * G)   -- runs[1] as each party left wait
      local ps = {}
      for k = 1, n - 1 do
        ps[k] = spawn(function(bar, s, me, parties, gens, rn)
          for g = 1, gens do
            assert(bar:wait(10))
            s[(g - 1) * parties + me] = rn[1]
          end
        end, b, seen, k, n, G, runs)
      end
      for g = 1, G do
        assert.is_number(b:wait(10))
        seen[(g - 1) * n + n] = runs[1]
      end
      for k = 1, n - 1 do finish(ps[k]) end
      assert.equal(G, runs[1])
      for g = 1, G do
        assert.is_true(runs[1 + g] > 0, "no pid recorded for generation " .. g)
        for k = 1, n do
          assert.is_true(seen[(g - 1) * n + k] >= g,
            ("party %d left generation %d before its action ran"):format(k, g))
        end
      end
    end)

    for _, cls in ipairs({"Semaphore", "BoundedSemaphore"}) do
      it(cls .. "(k) never lets more than k of more processes in at once", function()
        local k, procs, M = 2, 5, 25
        local sem, lock = lmp[cls](k), lmp.Lock()
        local st = lmp.RawArray("i", 3)   -- inside, max inside, total entries
        local ps = {}
        for i = 1, procs do
          ps[i] = spawn(function(s, lk, t, times, nap)
            for _ = 1, times do
              assert(s:acquire(10), "acquire timed out")
              lk:with(function()
                t[1] = t[1] + 1
                if t[1] > t[2] then t[2] = t[1] end
                t[3] = t[3] + 1
              end)
              nap(0.001)
              lk:with(function() t[1] = t[1] - 1 end)
              s:release()
            end
          end, sem, lock, st, M, csleep)
        end
        for i = 1, procs do finish(ps[i], 20) end
        assert.equal(0, st[1])
        assert.is_true(st[2] <= k, ("%d processes were inside at once"):format(st[2]))
        assert.is_true(st[2] >= 1)
        assert.equal(procs * M, st[3])
        assert.equal(k, sem:get_value())
      end)
    end

    it("an Event set in one process wakes waiters in several others; clear is seen everywhere", function()
      local e, go = lmp.Event(), lmp.Event()
      local ready = lmp.Semaphore(0)
      local out = lmp.RawArray("i", 6)
      local ps = {}
      for k = 1, 3 do
        ps[k] = spawn(function(ev, g, rd, o, me)
          rd:release()
          o[me] = ev:wait(10) and 1 or 2
          assert(g:wait(10))
          -- the parent cleared it meanwhile
          o[3 + me] = (not ev:is_set() and not ev:wait(0.05)) and 1 or 2
        end, e, go, ready, out, k)
      end
      for _ = 1, 3 do assert.is_true(ready:acquire(10)) end
      csleep(0.1)   -- let them block in wait
      e:set()
      assert.is_truthy(H.wait_until(function()
        return out[1] ~= 0 and out[2] ~= 0 and out[3] ~= 0
      end, 5), "not every waiter woke within 5 s of set()")
      e:clear()
      go:set()
      for k = 1, 3 do finish(ps[k]) end
      assert.same({1, 1, 1, 1, 1, 1}, out:totable())
    end)

    it("an Event set by a child is seen by the parent; cleared by a child, too", function()
      local e, step = lmp.Event(), lmp.Event()
      local p = spawn(function(ev, st)
        ev:set()
        assert(st:wait(10))
        ev:clear()
      end, e, step)
      assert.is_true(e:wait(10))
      step:set()
      finish(p)
      assert.is_false(e:is_set())
      assert.is_false(e:wait(0))
    end)

    it("notify() wakes exactly one waiting child, notify(2) two more", function()
      local lock = lmp.Lock()
      local cond, ready = lmp.Condition(lock), lmp.Condition(lock)
      local st = lmp.RawArray("i", 3)
      local ps = sleepers(4, cond, ready, st, 10)
      cond:with(function() cond:notify() end)
      assert.equal(1, woken_settled(st, 1))
      cond:with(function() cond:notify(2) end)
      assert.equal(3, woken_settled(st, 3))
      cond:with(function() cond:notify(5) end)
      assert.equal(4, woken_settled(st, 4))
      for k = 1, 4 do finish(ps[k]) end
      assert.equal(0, st[3], "a child timed out instead of being notified")
    end)

    it("notify_all() wakes every waiting child", function()
      local lock = lmp.RLock()
      local cond, ready = lmp.Condition(lock), lmp.Condition(lock)
      local st = lmp.RawArray("i", 3)
      local ps = sleepers(3, cond, ready, st, 10)
      cond:with(function() cond:notify_all() end)
      assert.equal(3, woken_settled(st, 3))
      for k = 1, 3 do finish(ps[k]) end
      assert.equal(0, st[3])
    end)

    it("wait_for sees a predicate made true by other processes", function()
      local cond = lmp.Condition()
      local st = lmp.RawArray("i", 1)
      assert.is_true(cond:acquire(5))
      local ps = {}
      for k = 1, 4 do
        ps[k] = spawn(function(c, s, nap)
          nap(0.05)
          assert(c:acquire(10))
          s[1] = s[1] + 1
          c:notify_all()
          c:release()
        end, cond, st, csleep)
      end
      local r = cond:wait_for(function() return st[1] == 4 and "all four" end, 10)
      assert.equal("all four", r)
      cond:release()
      for k = 1, 4 do finish(ps[k]) end
    end)

    it("a wait begun after notify() does not take that notification from the waiter it was meant for", function()
      -- notify(n) wakes at most n of the processes waiting at that moment
      -- (as in Python).  The child is stopped right after notify so that it
      -- cannot take its wake-up before the parent starts its own wait: the
      -- parent's wait must still time out, and the child must wake.
      local lock = lmp.Lock()
      local cond, ready = lmp.Condition(lock), lmp.Condition(lock)
      local st = lmp.RawArray("i", 3)
      local ps = sleepers(1, cond, ready, st, 1.5)
      assert.is_true(cond:acquire(5))
      ffi.C.kill(ps[1].pid, SIGSTOP)
      cond:notify()
      local t0 = H.now()
      local mine = cond:wait(0.3)
      local el = H.now() - t0
      ffi.C.kill(ps[1].pid, SIGCONT)
      cond:release()
      finish(ps[1])
      assert.is_false(mine, ("the parent's wait(0.3) returned true after %.3f s: it took the " ..
        "notification meant for the child"):format(el))
      assert.equal(1, st[2], "the notified child was not woken")
      assert.equal(0, st[3])
    end)
  end)

  -- =========================================================================
  describe("timeouts", function()
    it("Lock and RLock acquire(timeout) return false after about the timeout when another process holds them", function()
      for _, cls in ipairs({"Lock", "RLock"}) do
        local l = lmp[cls]()
        local p, done = holder(l)
        local t0 = H.now()
        local n, r = results(l.acquire, l, 0.4)
        took_about(t0, 0.4, cls .. ":acquire(0.4)")
        assert.equal(1, n)
        assert.is_false(r[1])
        t0 = H.now()
        assert.is_false(l:acquire(0))
        took_little(t0, cls .. ":acquire(0)")
        done:set()
        finish(p)
        assert.is_true(l:acquire(0))
        l:release()
      end
    end)

    it("acquire(timeout) gets a lock released by another process before the timeout", function()
      local l = lmp.Lock()
      local held = lmp.Event()
      local p = spawn(function(lk, h, nap)
        assert(lk:acquire(5)); h:set(); nap(0.2); lk:release()
      end, l, held, csleep)
      assert.is_true(held:wait(10))
      local t0 = H.now()
      local a, b = l:acquire(5)
      assert.is_true(a)
      assert.is_nil(b)
      assert.is_true(H.now() - t0 < 4)
      l:release()
      finish(p)
    end)

    it("Lock and RLock acquire(math.huge) wait for a lock held elsewhere (no deadline)", function()
      for _, cls in ipairs({"Lock", "RLock"}) do
        local l = lmp[cls]()
        local held = lmp.Event()
        local p = spawn(function(lk, h, nap)
          assert(lk:acquire(5)); h:set(); nap(0.2); lk:release()
        end, l, held, csleep)
        assert.is_true(held:wait(10))
        local ok, r = pcall(l.acquire, l, math.huge)
        finish(p)
        assert.is_true(ok, cls .. ":acquire(math.huge) raised: " .. tostring(r))
        assert.is_true(r)
        l:release()
      end
    end)

    it("Semaphore, Event and Barrier waits with math.huge do not time out", function()
      local s, e = lmp.Semaphore(0), lmp.Event()
      local p = spawn(function(sem, ev, nap) nap(0.1); sem:release(); ev:set() end, s, e, csleep)
      assert.is_true(s:acquire(math.huge))
      assert.is_true(e:wait(math.huge))
      finish(p)
      local b = lmp.Barrier(2)
      local q = spawn(function(bar, nap) nap(0.1); assert(bar:wait(10)) end, b, csleep)
      assert.is_number(b:wait(math.huge))
      finish(q)
    end)

    it("Semaphore and BoundedSemaphore acquire(timeout) return false after about the timeout", function()
      for _, cls in ipairs({"Semaphore", "BoundedSemaphore"}) do
        local s = lmp[cls](1)
        local p, done = holder(s)
        local t0 = H.now()
        assert.is_false(s:acquire(0.3))
        took_about(t0, 0.3, cls .. ":acquire(0.3)")
        t0 = H.now()
        assert.is_false(s:acquire(0))
        took_little(t0, cls .. ":acquire(0)")
        done:set()
        finish(p)
        assert.equal(1, s:get_value())
      end
    end)

    it("Event:wait(timeout) and Condition:wait(timeout) return false after about the timeout", function()
      local e = lmp.Event()
      local t0 = H.now()
      assert.is_false(e:wait(0.3))
      took_about(t0, 0.3, "Event:wait(0.3)")
      local c = lmp.Condition(lmp.Lock())
      c:acquire()
      t0 = H.now()
      assert.is_false(c:wait(0.3))
      took_about(t0, 0.3, "Condition:wait(0.3)")
      c:release()
    end)

    it("a Barrier wait that times out breaks it for the other waiters and later ones until reset", function()
      local b = lmp.Barrier(3)
      local out = lmp.RawArray("i", 2)
      local p = spawn(function(bar, o)
        local i, why = bar:wait(10)
        o[1] = i == nil and why == "broken" and 1 or 2
      end, b, out)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 1 end, 10))
      local t0 = H.now()
      local n, r = results(b.wait, b, 0.3)
      took_about(t0, 0.3, "Barrier:wait(0.3)")
      assert.equal(2, n)
      assert.same({nil, "broken"}, r)
      finish(p)
      assert.equal(1, out[1], "the other waiter was not released with nil, \"broken\"")
      assert.is_true(b.broken)
      -- later waiters, here and in another process, at once
      t0 = H.now()
      assert.same({nil, "broken"}, {b:wait(5)})
      took_little(t0, "wait on a broken barrier")
      local q = spawn(function(bar, o)
        local i, why = bar:wait(5)
        o[2] = i == nil and why == "broken" and 1 or 2
      end, b, out)
      finish(q)
      assert.equal(1, out[2])
      b:reset()
      assert.is_false(b.broken)
      local q2 = spawn(function(bar) assert(bar:wait(10)) end, b)
      local q3 = spawn(function(bar) assert(bar:wait(10)) end, b)
      assert.is_number(b:wait(10))
      finish(q2); finish(q3)
    end)

    it("Barrier:wait(0) does not block (and breaks the barrier, as a timeout)", function()
      local b = lmp.Barrier(2)
      local t0 = H.now()
      assert.same({nil, "broken"}, {b:wait(0)})
      took_little(t0, "Barrier:wait(0)")
      assert.is_true(b.broken)
      local one = lmp.Barrier(1)
      assert.equal(0, one:wait(0))
    end)

    it("a party that times out during the action leaves one consistent outcome", function()
      -- The last party runs a slow action; the other one times out meanwhile
      -- and gets nil, "broken".  Then the generation cannot also have
      -- succeeded for the last party, and the barrier must stay broken until
      -- reset() (SPEC 12: every current or later waiter gets "broken").
      local b = lmp.Barrier{parties = 2, action = function()
        local ffi_ = require "ffi"
        pcall(ffi_.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
        ffi_.C.poll(nil, 0, 600)
      end}
      local out = lmp.RawArray("i", 2)
      local started = lmp.Event()
      local p = spawn(function(bar, o, ev, nap)
        ev:set()
        nap(0.05)                -- so that the parent arrives first
        local i, why = bar:wait(10)
        o[1] = i and 1 or (why == "broken" and 2 or 3)
      end, b, out, started, csleep)
      assert.is_true(started:wait(10))
      local mine, why = b:wait(0.3)
      finish(p)
      assert.is_nil(mine)
      assert.equal("broken", why)
      assert.equal(2, out[1], "the last party returned an index for a generation the other " ..
        "party was told was broken")
      assert.is_true(b.broken, "the barrier is no longer broken, yet nobody called reset()")
    end)
  end)

  -- =========================================================================
  describe("when a holder or a peer dies", function()
    for _, how in ipairs({"kill", "exit", "return"}) do
      for _, cls in ipairs({"Lock", "RLock"}) do
        local depth = cls == "RLock" and 3 or 1
        it(("a %s whose holder %s goes to the next acquirer with \"owner-died\""):format(cls,
            how == "kill" and "is killed (SIGKILL)" or how == "exit" and "calls os.exit" or
            "returns"), function()
          local l = lmp[cls]()
          local p = holder(l, how == "kill" and "hang" or how, depth)
          if how == "kill" then p:kill() end
          join(p)
          local a, b = l:acquire(5)
          assert.is_true(a)
          assert.equal("owner-died", b)
          -- then it works normally
          if cls == "RLock" then
            assert.is_true(l:acquire(0))   -- re-entrant for its new owner, at depth 2
            l:release()
          end
          l:release()
          raises("ValueError", l.release, l)
          local n, r = results(l.acquire, l, 0)
          assert.equal(1, n)
          assert.is_true(r[1])
          l:release()
          -- and another process can have it
          local q = spawn(function(lk)
            local x, y = lk:acquire(5)
            assert(x == true and y == nil)
            lk:release()
          end, l)
          finish(q)
          l:close()
        end)
      end
    end

    it("a process blocked in acquire gets the lock, with \"owner-died\", when its holder dies", function()
      local l, held = lmp.Lock(), lmp.Event()
      local p = spawn(function(lk, h, nap)
        assert(lk:acquire(5)); h:set(); nap(0.3); os.exit(0)
      end, l, held, csleep)
      assert.is_true(held:wait(10))
      local t0 = H.now()
      local a, b = l:acquire(5)
      assert.is_true(a)
      assert.equal("owner-died", b)
      assert.is_true(H.now() - t0 < 4)
      l:release()
      finish(p)
    end)

    it("the lock of a Condition whose holder died is taken with \"owner-died\"", function()
      local c = lmp.Condition()
      local p = holder(c, "hang")
      p:kill()
      join(p)
      local a, b = c:acquire(5)
      assert.is_true(a)
      assert.equal("owner-died", b)
      c:notify()
      c:release()
      assert.is_true(c:acquire(0))
      c:release()
    end)

    it("Condition:wait tells \"owner-died\" when it had to take the lock back from a dead holder", function()
      local c = lmp.Condition(lmp.Lock())
      local started = lmp.Event()
      assert.is_true(c:acquire(5))
      local p = spawn(function(cd, st, nap)
        st:set()
        assert(cd:acquire(10))   -- once the parent waits
        nap(0.4)
        os.exit(0)               -- holding it
      end, c, started, csleep)
      assert.is_true(started:wait(10))
      local got, why = c:wait(0.2)
      finish(p)
      assert.is_false(got)
      assert.equal("owner-died", why)
      c:notify()                 -- held again
      c:release()
    end)

    it("waits on an Event, Condition or Semaphore whose peer died end at their timeout", function()
      local e, s = lmp.Event(), lmp.Semaphore(0)
      local c = lmp.Condition(lmp.Lock())
      local p = spawn(function(ev, sem, cd, nap)
        nap(30); ev:set(); sem:release()
        cd:with(function() cd:notify_all() end)
      end, e, s, c, csleep)
      csleep(0.05)
      p:kill()
      join(p)
      local t0 = H.now()
      assert.is_false(e:wait(0.4))
      took_about(t0, 0.4, "Event:wait(0.4)")
      t0 = H.now()
      assert.is_false(s:acquire(0.4))
      took_about(t0, 0.4, "Semaphore:acquire(0.4)")
      c:acquire()
      t0 = H.now()
      assert.is_false(c:wait(0.4))
      took_about(t0, 0.4, "Condition:wait(0.4)")
      c:release()
    end)

    it("a Condition waiter killed in wait leaves no wake-up behind for a later waiter", function()
      -- notify_all wakes the processes waiting at that moment; a dead one
      -- cannot take its wake-up, and a wait begun afterwards must not get
      -- it either.
      local lock = lmp.Lock()
      local cond, ready = lmp.Condition(lock), lmp.Condition(lock)
      local st = lmp.RawArray("i", 3)
      local ps = sleepers(1, cond, ready, st, 30)
      ps[1]:kill()
      join(ps[1])
      assert.is_true(cond:acquire(5))
      cond:notify_all()
      local t0 = H.now()
      local got = cond:wait(0.3)
      local el = H.now() - t0
      cond:release()
      assert.is_false(got, ("a wait begun after notify_all() returned true after %.3f s"):format(el))
      assert.is_true(el >= 0.27)
    end)

    it("a Barrier party whose peer was killed before arriving gets nil, \"broken\" at its timeout", function()
      local b = lmp.Barrier(2)
      local p = spawn(function(bar, nap) nap(30); bar:wait(10) end, b, csleep)
      csleep(0.05)
      p:kill()
      join(p)
      local t0 = H.now()
      assert.same({nil, "broken"}, {b:wait(0.5)})
      took_about(t0, 0.5, "Barrier:wait(0.5)")
      assert.is_true(b.broken)
    end)

    it("a Barrier party waiting when its peer is killed mid-wait gets nil, \"broken\" at its timeout", function()
      local b = lmp.Barrier(3)
      local p = spawn(function(bar) bar:wait(30) end, b)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 1 end, 10))
      p:kill()
      join(p)
      local t0 = H.now()
      assert.same({nil, "broken"}, {b:wait(0.5)})
      took_about(t0, 0.5, "Barrier:wait(0.5)")
    end)

    it("later Barrier waits still end at their timeout after the action's process died in the action", function()
      local b = lmp.Barrier{parties = 1, action = function() os.exit(3) end}
      local p = spawn(function(bar) bar:wait(5) end, b)
      assert.equal(3, join(p))
      -- A waiter that hangs here would hang the spec: wait in a child,
      -- joined with a bound.
      local out = lmp.RawArray("i", 1)
      local q = spawn(function(bar, o)
        bar:wait(0.5)
        o[1] = 1
      end, b, out)
      local code = q:join(4)
      if code == nil then q:kill(); q:join(5) end
      assert.is_not_nil(code, "Barrier:wait(0.5) was still blocked after 4 s")
      assert.equal(0, code)
      assert.equal(1, out[1])
    end)
  end)

  -- =========================================================================
  describe("with a Pool", function()
    it("objects passed as initargs synchronise the workers: exact total", function()
      local lock, value = lmp.Lock(), lmp.Value("i", 0, {lock = false})
      local pool = lmp.Pool{processes = 2, initializer = function(l, v) _G.L, _G.V = l, v end,
                            initargs = {lock, value}}
      local list = {}
      for i = 1, 20 do list[i] = 150 end
      local r = pool:map(function(n)
        for _ = 1, n do
          _G.L:with(function()
            local x = _G.V.value
            for _ = 1, 10 do end
            _G.V.value = x + 1
          end)
        end
        return true
      end, list, 1)
      assert.equal(20, #r)
      assert.equal(20 * 150, value.value)
      pool:close(); pool:join()
    end)

    it("an RLock and a Semaphore as initargs work in the workers too", function()
      local rl, sem = lmp.RLock(), lmp.Semaphore(1)
      local counts = lmp.RawArray("i", 2)   -- one under the RLock, one under the Semaphore
      local pool = lmp.Pool{processes = 2, initializer = function(l, s, v) _G.R, _G.S, _G.V = l, s, v end,
                            initargs = {rl, sem, counts}}
      pool:map(function(n)
        for _ = 1, n do
          _G.R:with(function() _G.R:with(function() _G.V[1] = _G.V[1] + 1 end) end)
          assert(_G.S:acquire(10)); _G.V[2] = _G.V[2] + 1; _G.S:release()
        end
      end, {200, 200, 200, 200}, 1)
      assert.same({800, 800}, counts:totable())
      assert.equal(1, sem:get_value())
      pool:close(); pool:join()
    end)

    -- A pool of one worker with `obj` as initarg and 200 one-item tasks,
    -- the last of which calls last(obj); returns the pool and the result.
    local function pool_with(obj, last)
      local pool = lmp.Pool{processes = 1, initializer = function(o) _G.O = o end, initargs = {obj}}
      local list = {}
      for i = 1, 200 do list[i] = i end
      local r = pool:map_async(function(x)
        if x == 200 then last(_G.O) end
        return x
      end, list, 1)
      return pool, r, list
    end

    it("Event:wait keeps the pool served: queued tasks are dispatched while the parent waits", function()
      local e = lmp.Event()
      local pool, r, list = pool_with(e, function(ev) ev:set() end)
      local t0 = H.now()
      assert.is_true(e:wait(10), "the last task never ran while the parent waited")
      assert.is_true(H.now() - t0 < 8)
      assert.same(list, r:get(10))
      pool:close(); pool:join()
    end)

    it("Semaphore:acquire keeps the pool served", function()
      local s = lmp.Semaphore(0)
      local pool, r, list = pool_with(s, function(sem) sem:release() end)
      assert.is_true(s:acquire(10), "the last task never ran while the parent waited")
      assert.same(list, r:get(10))
      pool:close(); pool:join()
    end)

    it("Barrier:wait keeps the pool served", function()
      local b = lmp.Barrier(2)
      local pool, r, list = pool_with(b, function(bar) assert(bar:wait(10)) end)
      assert.is_number(b:wait(10), "the last task never reached the barrier")
      assert.same(list, r:get(10))
      pool:close(); pool:join()
    end)

    it("Condition:wait keeps the pool served", function()
      local c = lmp.Condition()
      local flag = lmp.RawArray("i", 1)
      local pool = lmp.Pool{processes = 1, initializer = function(cd, f) _G.C, _G.F = cd, f end,
                            initargs = {c, flag}}
      local list = {}
      for i = 1, 200 do list[i] = i end
      assert.is_true(c:acquire(5))
      local r = pool:map_async(function(x)
        if x == 200 then
          assert(_G.C:acquire(10)); _G.F[1] = 1; _G.C:notify(); _G.C:release()
        end
        return x
      end, list, 1)
      assert.is_true(c:wait_for(function() return flag[1] == 1 end, 10),
        "the last task never ran while the parent waited")
      c:release()
      assert.same(list, r:get(10))
      pool:close(); pool:join()
    end)

    it("an apply_async callback runs while the parent is blocked in Event:wait", function()
      local pool = lmp.Pool(1)
      local e = lmp.Event()
      local got
      pool:apply_async(function(x) return x * 2 end, {21}, function(v) got = v; e:set() end)
      assert.is_true(e:wait(10), "the callback did not run during Event:wait")
      assert.equal(42, got)
      -- and during a wait that then times out
      got = nil
      local e2 = lmp.Event()
      pool:apply_async(function() return "cb" end, {}, function(v) got = v end)
      local t0 = H.now()
      assert.is_false(e2:wait(0.5))
      took_about(t0, 0.5, "Event:wait(0.5) with a pool busy")
      assert.equal("cb", got)
      pool:close(); pool:join()
    end)

    it("a callback releasing a Semaphore wakes the parent's acquire", function()
      local pool = lmp.Pool(1)
      local s = lmp.Semaphore(0)
      pool:apply_async(function() return 1 end, {}, function() s:release() end)
      assert.is_true(s:acquire(10))
      pool:close(); pool:join()
    end)

    it("timed waits still end at their timeout while the pool is busy", function()
      local pool = lmp.Pool(1)
      local r = pool:apply_async(function(nap) nap(1.5); return 1 end, {csleep})
      local s, e, b = lmp.Semaphore(0), lmp.Event(), lmp.Barrier(2)
      local c = lmp.Condition()
      local t0 = H.now()
      assert.is_false(s:acquire(0.3))
      took_about(t0, 0.3, "Semaphore:acquire(0.3) with a busy pool")
      t0 = H.now()
      assert.is_false(e:wait(0.3))
      took_about(t0, 0.3, "Event:wait(0.3) with a busy pool")
      t0 = H.now()
      assert.is_nil((b:wait(0.3)))
      took_about(t0, 0.3, "Barrier:wait(0.3) with a busy pool")
      c:acquire()
      t0 = H.now()
      assert.is_false(c:wait(0.3))
      took_about(t0, 0.3, "Condition:wait(0.3) with a busy pool")
      c:release()
      assert.equal(1, r:get(10))
      pool:close(); pool:join()
    end)

    it("refuses them as task arguments with a CodecError; the pool goes on", function()
      local pool = lmp.Pool(1)
      for _, obj in ipairs({lmp.Lock(), lmp.RLock(), lmp.Semaphore(), lmp.BoundedSemaphore(),
                            lmp.Condition(), lmp.Event(), lmp.Barrier(2)}) do
        local e = raises("CodecError", pool.apply, pool, function() return 1 end, {obj})
        says(e, "when it starts")
        raises("CodecError", pool.map, pool, function() return 1 end, {obj})
        raises("CodecError", pool.apply_async, pool, function() return 1 end, {{nested = obj}})
      end
      assert.equal(3, pool:apply(function(a, b) return a + b end, {1, 2}))
      pool:close(); pool:join()
    end)
  end)

  -- =========================================================================
  describe("passing", function()
    local function all_kinds()
      return {
        Lock = lmp.Lock(), RLock = lmp.RLock(), Semaphore = lmp.Semaphore(2),
        BoundedSemaphore = lmp.BoundedSemaphore(2), Condition = lmp.Condition(),
        Event = lmp.Event(), Barrier = lmp.Barrier(2),
      }
    end

    it("the same object passed twice arrives as the same object", function()
      local objs = all_kinds()
      local p = spawn(function(a, b, t)
        for k, v in pairs(a) do
          assert(rawequal(v, b[k]), k .. " arrived twice")
          assert(rawequal(v, t.deep[k]), k .. " arrived twice (nested)")
        end
      end, objs, objs, {deep = objs})
      finish(p)
      -- and in the options-table form
      local l = lmp.Lock()
      local q = lmp.Process{target = function(x, y) assert(rawequal(x, y)) end, args = {l, l}}
      q:start()
      finish(q)
    end)

    it("travels as an upvalue of the target function too, as the same object", function()
      local lock, counter = lmp.Lock(), lmp.Value("i", 0, {lock = false})
      local e = lmp.Event()
      local p = spawn(function(arg_lock)
        assert(rawequal(arg_lock, lock), "the upvalue and the argument differ")
        for _ = 1, 300 do lock:with(function() counter.value = counter.value + 1 end) end
        e:set()
      end, lock)
      for _ = 1, 300 do lock:with(function() counter.value = counter.value + 1 end) end
      finish(p)
      assert.equal(600, counter.value)
      assert.is_true(e:is_set())
    end)

    it("arrives as a working object of the same kind, with tostring", function()
      local objs = all_kinds()
      local out = lmp.RawArray("i", 1)
      local p = spawn(function(o, res)
        local want = {
          Lock = "^lmp%.Lock%(", RLock = "^lmp%.RLock%(", Semaphore = "^lmp%.Semaphore%(value=2%)$",
          BoundedSemaphore = "^lmp%.BoundedSemaphore%(value=2%)$",
          Condition = "^lmp%.Condition%(lmp%.RLock%(", Event = "^lmp%.Event%(unset%)$",
          Barrier = "^lmp%.Barrier%(parties=2, n_waiting=0%)$",
        }
        for k, pat in pairs(want) do
          assert(tostring(o[k]):match(pat), k .. ": " .. tostring(o[k]))
        end
        assert(o.Lock:acquire(5)); o.Lock:release()
        assert(o.RLock:acquire(5)); assert(o.RLock:acquire(5)); o.RLock:release(); o.RLock:release()
        assert(o.Semaphore:acquire(5))
        assert(o.BoundedSemaphore:get_value() == 2)
        o.Event:set()
        assert(o.Barrier.parties == 2)
        res[1] = 1
      end, objs, out)
      finish(p)
      assert.equal(1, out[1])
      assert.equal(1, objs.Semaphore:get_value())
      assert.is_true(objs.Event:is_set())
      for k, v in pairs(objs) do
        assert.matches("^lmp%." .. k .. "%(", tostring(v))
      end
    end)

    it("a Condition carries its lock: the child can take it and notify", function()
      local lock = lmp.Lock()
      local c = lmp.Condition(lock)
      local st = lmp.RawArray("i", 1)
      assert.is_true(c:acquire(5))
      local p = spawn(function(cd, s)
        assert(cd:acquire(10))
        s[1] = 1
        cd:notify()
        cd:release()
      end, c, st)
      assert.is_true(c:wait_for(function() return st[1] == 1 end, 10))
      c:release()
      finish(p)
      -- passed together with its lock: the same lock in the child
      local q = spawn(function(cd, lk)
        assert(lk:acquire(10))
        cd:notify()              -- held through the lock object
        cd:notify_all()
        lk:release()
        local ok = pcall(cd.notify, cd)
        assert(not ok, "notify without the lock did not raise")
      end, c, lock)
      finish(q)
    end)

    it("a child can pass what it was given on to a child of its own", function()
      local lock, counter = lmp.Lock(), lmp.Value("i", 0, {lock = false})
      local p = spawn(function(lk, ctr)
        local l = require "lmp"
        local kid = l.Process(function(lk2, ctr2)
          for _ = 1, 200 do lk2:with(function() ctr2.value = ctr2.value + 1 end) end
        end, lk, ctr)
        kid:start()
        for _ = 1, 200 do lk:with(function() ctr.value = ctr.value + 1 end) end
        assert(kid:join(10) == 0)
      end, lock, counter)
      finish(p)
      assert.equal(400, counter.value)
    end)

    it("refuses to send them over a Pipe with a CodecError", function()
      local a, b = lmp.Pipe()
      for k, obj in pairs(all_kinds()) do
        local e = raises("CodecError", a.send, a, obj)
        says(e, k:lower(), "when it starts")
        raises("CodecError", a.send, a, {inside = {obj}})
      end
      a:send("still works")
      assert.is_true(b:poll(5))
      assert.equal("still works", b:recv())
      a:close(); b:close()
    end)

    it("a closed object cannot be passed", function()
      local l = lmp.Lock()
      l:close()
      local p = lmp.Process(function(x) assert(not pcall(x.acquire, x)) end, l)
      if H.forked then  -- nothing is encoded: the child finds it closed
        p:start()
        assert.equal(0, p:join(10))
        return
      end
      local ok, e = pcall(p.start, p)
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e), tostring(e))
      -- a use of a closed object (ValueError), or an argument that cannot
      -- be encoded (CodecError, with its path): either says why
      assert.is_truthy(e.kind == "ValueError" or e.kind == "CodecError", tostring(e))
      says(e, "closed")
      assert.is_nil(p.pid)
    end)
  end)

  -- =========================================================================
  describe("close", function()
    local calls = {
      Lock = {"acquire", "release", "with"},
      RLock = {"acquire", "release", "with"},
      Semaphore = {"acquire", "release", "get_value", "with"},
      BoundedSemaphore = {"acquire", "release", "get_value", "with"},
      Condition = {"acquire", "release", "with", "wait", "wait_for", "notify", "notify_all"},
      Event = {"is_set", "set", "clear", "wait"},
      Barrier = {"wait", "reset", "abort"},
    }
    local args = {
      with = {function() return 1 end}, wait = {0.05}, acquire = {0.05},
      wait_for = {function() return false end, 0.05},
    }

    for cls, methods in pairs(calls) do
      it(("any use of a closed %s raises ValueError; close twice is harmless"):format(cls), function()
        local obj = cls == "Barrier" and lmp.Barrier(2) or lmp[cls]()
        obj:close()
        obj:close()
        assert.matches("^lmp%." .. cls .. "%(closed%)$", tostring(obj))
        local wrong = {}
        for _, m in ipairs(methods) do
          local ok, e = pcall(obj[m], obj, unpack(args[m] or {}))
          if ok or not lmp.is_error(e) or e.kind ~= "ValueError" or
             not tostring(e.message):find("closed") then
            wrong[#wrong + 1] = ("%s:%s() %s"):format(cls, m,
              ok and "did not raise" or "raised " .. tostring(e))
          end
        end
        assert.same({}, wrong)
        if cls == "Barrier" then
          for _, f in ipairs({"parties", "n_waiting", "broken"}) do
            raises("ValueError", function() return obj[f] end)
          end
        end
      end)
    end

    it("closing a held Lock or RLock releases it for other processes", function()
      for _, cls in ipairs({"Lock", "RLock"}) do
        local l = lmp[cls]()
        assert.is_true(l:acquire())
        if cls == "RLock" then l:acquire() end
        local out = lmp.RawArray("i", 2)
        local p = spawn(function(lk, o)
          o[1] = 1
          local a, b = lk:acquire(10)
          o[2] = (a == true and b == nil) and 1 or (a and 2 or 3)
          lk:release()
        end, l, out)
        assert.is_truthy(H.wait_until(function() return out[1] == 1 end, 10))
        csleep(0.05)
        l:close()
        finish(p)
        assert.equal(1, out[2], cls .. ": the child did not get the closed lock cleanly")
      end
    end)

    it("frees the shared memory of many objects, closed or collected", function()
      local kinds = {"Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event"}
      local objs = {}
      for i = 1, 3000 do
        local cls = kinds[i % #kinds + 1]
        objs[i] = lmp[cls]()
        if i % 5 == 0 then objs[i] = lmp.Barrier(3) end
      end
      for i = 1, #objs, 2 do objs[i]:close() end
      assert.is_true(H.lmp_mappings() >= 2)
      objs = nil
      -- check_leaks verifies that no segment stays mapped after collection
      for _ = 1, 500 do lmp.Event() end
    end)

    it("objects passed to a child are freed in the parent when closed there", function()
      local objs = {}
      for i = 1, 10 do objs[i] = lmp.Event() end
      local p = spawn(function(list) for _, e in ipairs(list) do e:set() end end, objs)
      finish(p)
      for i = 1, 10 do
        assert.is_true(objs[i]:is_set())
        objs[i]:close()
      end
    end)
  end)
end)
