-- Managers (SPEC section 15): lmp.Manager and lmp.managers.BaseManager.
-- Every proxy type and its table-like indexing, proxies passed to
-- children and Pool workers and used from several processes at once,
-- BaseManager's register/start/connect/shutdown with a client in a
-- separate lmp program, authentication, safe decoding on the server, a
-- client killed in the middle of a call, a server killed under its
-- clients, and the timeout of every blocking call.
--
-- Every blocking call has a timeout, so that a bug fails a spec instead
-- of hanging it.
local H = require "spec.support.helpers"
local lmp = require "lmp"
local ffi = require "ffi"

pcall(ffi.cdef, "int kill(int pid, int sig);")

local raises, took_about, took_little, finish = H.raises, H.took_about, H.took_little, H.finish
local csleep, spawn = H.csleep, H.spawn
local SIGKILL = 9

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

describe("lmp managers", function()
  -- Managers made by a spec, shut down after it, before the leak check.
  local managers = {}
  local function manager(opts)
    local m = lmp.Manager(opts)
    managers[#managers + 1] = m
    return m
  end
  after_each(function()
    for i = #managers, 1, -1 do
      managers[i]:shutdown()
      managers[i] = nil
    end
  end)
  H.check_leaks()

  -- =========================================================================
  describe("the manager", function()
    it("is started by lmp.Manager(), runs its server in a child, shuts down once", function()
      local m = manager()
      assert.matches("^lmp%.Manager%(.*started%)$", tostring(m))
      local pid = m:get_server_pid()
      assert.is_number(pid)
      assert.is_true(H.proc_state(pid) ~= nil)
      assert.is_string(m.address)
      assert.is_string(m.authkey)
      m:shutdown()
      m:shutdown()
      assert.is_truthy(H.wait_until(function() return H.dead(pid) or nil end, 5))
      raises("ValueError", m.dict, m)
    end)

    it("is made by a context with its start method", function()
      local m = lmp.get_context(H.method).Manager()
      managers[#managers + 1] = m
      local d = m:dict()
      d.x = 1
      assert.equal(1, d.x)
    end)

    it("refuses misuse", function()
      local b = lmp.managers.BaseManager()
      raises("ProcessError", b.dict, b)
      raises("TypeError", lmp.managers.BaseManager, 5)
      raises("ValueError", b.register, b, "start", function() return {} end)
      raises("ValueError", b.register, b, "dict", function() return {} end)
      raises("TypeError", b.register, b, "x", 5)
      local m = manager()
      raises("ProcessError", m.start, m)
      raises("ProcessError", m.register, m, "Thing", function() return {} end)
      raises("TypeError", m.dict)               -- m.dict() instead of m:dict()
      local d = m:dict()
      raises("TypeError", d.keys)               -- d.keys() instead of d:keys()
    end)

    it("stops its server when the process that started it is killed", function()
      local q = lmp.Queue()
      local p = spawn(function(q_)
        local l = require "lmp"
        local m = l.Manager()
        q_:put(m:get_server_pid())
        H.csleep(30)
      end, q)
      local pid = q:get(30)
      assert.is_number(pid)
      p:kill()
      H.join(p)
      assert.is_truthy(H.wait_until(function() return H.dead(pid) or nil end, 10),
                       "the server outlived its parent")
      q:close()
    end)
  end)

  -- =========================================================================
  describe("dict", function()
    it("indexes like a table; method names are methods", function()
      local m = manager()
      local d = m:dict({a = 1})
      d.b = "two"
      d[3] = true
      assert.equal(1, d.a)
      assert.equal("two", d.b)
      assert.equal(true, d[3])
      assert.is_nil(d.missing)
      assert.equal(3, #d)
      assert.equal(3, d:len())
      -- a key that names a method is read and written with get/set
      d:set("get", 42)
      assert.is_function(d.get)
      assert.equal(42, d:get("get"))
      assert.equal(7, d:get("nothing", 7))
      d.a = nil
      assert.is_false(d:contains("a"))
      assert.equal(3, #d)
    end)

    it("has keys, values, items, totable, pop, update, setdefault, clear", function()
      local m = manager()
      local d = m:dict()
      d:update({x = 1, y = 2, z = 3})
      local keys = d:keys()
      table.sort(keys)
      assert.same({"x", "y", "z"}, keys)
      local values = d:values()
      table.sort(values)
      assert.same({1, 2, 3}, values)
      local seen = {}
      for k, v in d:items() do seen[k] = v end
      assert.same({x = 1, y = 2, z = 3}, seen)
      assert.same({x = 1, y = 2, z = 3}, d:totable())
      assert.equal(1, d:pop("x"))
      assert.equal("dflt", d:pop("x", "dflt"))
      local e = raises("IndexError", d.pop, d, "x")
      assert.matches("no key x", e.message)
      assert.equal(2, d:setdefault("y", 9))
      assert.equal(9, d:setdefault("w", 9))
      d:clear()
      assert.equal(0, #d)
      raises("TypeError", d.set, d, nil, 1)
      raises("TypeError", d.update, d, 5)
    end)

    it("keeps tables, booleans, lmp.null and binary strings as values", function()
      local m = manager()
      local d = m:dict()
      local s = "\0\1\255" .. ("x"):rep(100000)
      d.t = {1, {a = 2}, n = lmp.null}
      d.f = false
      d.s = s
      assert.same({1, {a = 2}, n = lmp.null}, d.t)
      assert.equal(false, d.f)
      assert.equal(s, d.s)
    end)

    it("is written by Pool workers (a proxy as upvalue and as task argument)", function()
      local m = manager()
      local d = m:dict()
      H.with_pool({processes = 2}, function(pool)
        pool:map(function(x) d[x] = x * x end, {1, 2, 3, 4, 5, 6, 7, 8})
        assert.same({1, 4, 9, 16, 25, 36, 49, 64}, d:totable())
        assert.equal(99, pool:apply(function(dd, k) dd[k] = 99; return dd[k] end, {d, "k"}))
      end)
      assert.equal(99, d.k)
    end)
  end)

  -- =========================================================================
  describe("list", function()
    it("indexes from 1 and has the list methods", function()
      local m = manager()
      local l = m:list({"a", "b"})
      assert.equal(2, #l)
      assert.equal("a", l[1])
      l[3] = "c"              -- #l + 1 appends
      l:append("d")
      l:extend({"e", "f"})
      assert.equal(6, #l)
      assert.equal("f", l:pop())
      assert.equal("a", l:pop(1))
      l:insert(1, "z")
      assert.same({"z", "b", "c", "d", "e"}, l:totable())
      assert.equal(3, l:index("c"))
      assert.is_nil(l:index("nope"))
      l:remove("c")
      local got = {}
      for i, v in l:items() do got[i] = v end
      assert.same({"z", "b", "d", "e"}, got)
      raises("IndexError", function() return l[9] end)
      raises("IndexError", function() l[0] = 1 end)
      raises("ValueError", l.append, l, nil)
      raises("ValueError", l.remove, l, "nope")
      l:clear()
      raises("IndexError", l.pop, l)
      assert.equal(0, #l)
    end)

    it("takes appends from several processes", function()
      local m = manager()
      local l = m:list()
      local ps = {}
      for c = 1, 3 do
        ps[c] = spawn(function(l_, c_) for i = 1, 50 do l_:append(c_ * 1000 + i) end end, l, c)
      end
      for _, p in ipairs(ps) do finish(p) end
      assert.equal(150, #l)
      local per = {}
      for _, v in ipairs(l:totable()) do
        local c = math.floor(v / 1000)
        assert.is_true((per[c] or 0) < v % 1000, "appends of one process out of order")
        per[c] = v % 1000
      end
    end)
  end)

  -- =========================================================================
  describe("set, Namespace, Value, Array", function()
    it("set: add, remove, discard, contains, totable, len", function()
      local m = manager()
      local s = m:set({1, 2, 2})
      assert.equal(2, #s)
      s:add("x")
      assert.is_true(s:contains("x"))
      assert.is_false(s:contains("y"))
      s:remove(1)
      raises("IndexError", s.remove, s, 1)
      assert.is_false(s:discard(1))
      local t = s:totable()
      table.sort(t, function(a, b) return tostring(a) < tostring(b) end)
      assert.same({2, "x"}, t)
      assert.equal(2, s:len())
    end)

    it("Namespace: attributes", function()
      local m = manager()
      local ns = m:Namespace()
      ns.x = 10
      ns.name = "n"
      assert.equal(10, ns.x)
      assert.equal("n", ns.name)
      assert.is_nil(ns.other)
      local p = spawn(function(n) n.x = n.x + 1 end, ns)
      finish(p)
      assert.equal(11, ns.x)
    end)

    it("Value: v.value, get, set", function()
      local m = manager()
      local v = m:Value("i", 5)
      assert.equal(5, v.value)
      v.value = 6
      assert.equal(6, v:get())
      v:set(7)
      assert.equal(7, v.value)
      assert.equal("i", v:typecode())
      raises("TypeError", function() v.other = 1 end)
    end)

    it("Array: a[i], #a, totable", function()
      local m = manager()
      local a = m:Array("d", {1.5, 2.5})
      assert.equal(2, #a)
      assert.equal(1.5, a[1])
      a[2] = 3
      assert.same({1.5, 3}, a:totable())
      raises("IndexError", function() return a[3] end)
      raises("IndexError", function() a[0] = 1 end)
      local z = m:Array("i", 3)
      assert.same({0, 0, 0}, z:totable())
    end)
  end)

  -- =========================================================================
  describe("Queue and JoinableQueue", function()
    it("put and get, nil items, (block, timeout) and nowait forms", function()
      local m = manager()
      local q = m:Queue()
      q:put(1)
      q:put(nil)
      q:put({a = 1})
      assert.equal(3, q:qsize())
      assert.equal(1, q:get())
      local n, v = select("#", q:get()), q:get()
      assert.equal(1, n)       -- a nil item: one result
      assert.same({a = 1}, v)
      assert.is_true(q:empty())
      local t0 = H.now()
      local r, why = q:get(0.3)
      took_about(t0, 0.3, "Queue:get(0.3)")
      assert.is_nil(r)
      assert.equal("empty", why)
      t0 = H.now()
      assert.same({nil, "empty"}, {q:get_nowait()})
      assert.same({nil, "empty"}, {q:get(false)})
      took_little(t0, "get_nowait")
      q:put_nowait("x")
      assert.equal("x", q:get(true, 1))
    end)

    it("with a maxsize, put waits for room", function()
      local m = manager()
      local q = m:Queue(1)
      assert.is_true(q:put(1))
      assert.is_true(q:full())
      local t0 = H.now()
      assert.same({nil, "full"}, {q:put(2, 0.3)})
      took_about(t0, 0.3, "Queue:put(v, 0.3)")
      local p = spawn(function(q_) H.csleep(0.2); assert(q_:get(5) == 1) end, q)
      assert.is_true(q:put(2, 10))
      finish(p)
      assert.equal(2, q:get(1))
    end)

    it("hands items between processes, a getter waiting in the server", function()
      local m = manager()
      local q, r = m:Queue(), m:Queue()
      local p = spawn(function(q_, r_)
        for _ = 1, 20 do r_:put(q_:get(10) * 2) end
      end, q, r)
      for i = 1, 20 do q:put(i) end
      for i = 1, 20 do assert.equal(i * 2, r:get(10)) end
      finish(p)
    end)

    it("JoinableQueue: task_done and join", function()
      local m = manager()
      local q = m:JoinableQueue()
      assert.is_true(q:join(0))
      q:put(1)
      q:put(2)
      assert.same({nil, "timeout"}, {q:join(0.2)})
      local p = spawn(function(q_)
        for _ = 1, 2 do q_:get(5); H.csleep(0.05); q_:task_done() end
      end, q)
      assert.is_true(q:join(10))
      finish(p)
      raises("ValueError", q.task_done, q)
      assert.is_nil(m:Queue().task_done)
    end)
  end)

  -- =========================================================================
  describe("Lock and RLock", function()
    it("acquire, release, with; a held lock times out", function()
      local m = manager()
      local l = m:Lock()
      assert.is_true(l:acquire())
      assert.is_true(l:locked())
      local p = spawn(function(l_)
        assert(l_:acquire(0.2) == false)
        assert(l_:acquire(false) == false)
      end, l)
      finish(p)
      l:release()
      raises("ValueError", l.release, l)
      assert.equal(7, l:with(function(a) return a + 1 end, 6))
      assert.is_false(l:locked())
      assert.has_error(function() l:with(function() error("boom") end) end)
      assert.is_false(l:locked())
    end)

    it("RLock is re-entrant and only its owner releases it", function()
      local m = manager()
      local r = m:RLock()
      assert.is_true(r:acquire())
      assert.is_true(r:acquire())
      local p = spawn(function(r_)
        assert(r_:acquire(0.1) == false)
        local ok, e = pcall(r_.release, r_)
        assert(not ok and e.kind == "ValueError")
      end, r)
      finish(p)
      r:release()
      r:release()
      raises("ValueError", r.release, r)
    end)

    it("keeps a counter exact under contention from 4 processes", function()
      local m = manager()
      local l, d = m:Lock(), m:dict({n = 0})
      local ps = {}
      for i = 1, 4 do
        ps[i] = spawn(function(l_, d_)
          for _ = 1, 50 do
            assert(l_:acquire(10))
            d_.n = d_.n + 1
            l_:release()
          end
        end, l, d)
      end
      for _, p in ipairs(ps) do finish(p, 60) end
      assert.equal(200, d.n)
    end)

    it("a holder SIGKILLed while holding it gives it to the next acquirer", function()
      local m = manager()
      local l, e = m:Lock(), m:Event()
      local p = spawn(function(l_, e_)
        assert(l_:acquire(5))
        e_:set()
        H.csleep(30)
      end, l, e)
      assert.is_true(e:wait(10))
      assert.is_false(l:acquire(0))
      p:kill()
      H.join(p)
      local ok, why = l:acquire(10)
      assert.is_true(ok)
      assert.equal("owner-died", why)
      l:release()
      assert.same({true}, {l:acquire(1)})
    end)
  end)

  -- =========================================================================
  describe("Semaphore, Event, Condition, Barrier", function()
    it("Semaphore and BoundedSemaphore", function()
      local m = manager()
      local s = m:Semaphore(2)
      assert.is_true(s:acquire())
      assert.is_true(s:acquire(0))
      assert.is_false(s:acquire(0))
      local t0 = H.now()
      assert.is_false(s:acquire(0.2))
      took_about(t0, 0.2, "Semaphore:acquire(0.2)")
      s:release()
      assert.equal(1, s:get_value())
      local b = m:BoundedSemaphore(1)
      raises("ValueError", b.release, b)
      assert.equal(3, b:with(function() return 3 end))
    end)

    it("a semaphore's permits come back when their holder is killed", function()
      local m = manager()
      local s, e = m:Semaphore(1), m:Event()
      local p = spawn(function(s_, e_) assert(s_:acquire(5)); e_:set(); H.csleep(30) end, s, e)
      assert.is_true(e:wait(10))
      p:kill()
      H.join(p)
      assert.is_true(s:acquire(10))
    end)

    it("Event: wait, set, clear, is_set", function()
      local m = manager()
      local e = m:Event()
      assert.is_false(e:is_set())
      local t0 = H.now()
      assert.is_false(e:wait(0.2))
      took_about(t0, 0.2, "Event:wait(0.2)")
      local p = spawn(function(e_) H.csleep(0.2); e_:set() end, e)
      assert.is_true(e:wait(10))
      finish(p)
      assert.is_true(e:is_set())
      e:clear()
      assert.is_false(e:wait(0))
    end)

    it("Condition: wait, notify, notify_all, wait_for", function()
      local m = manager()
      local c, d = m:Condition(), m:dict({ready = 0})
      raises("ValueError", c.notify, c)
      raises("ValueError", c.wait, c, 0.1)
      assert.is_true(c:acquire())
      local t0 = H.now()
      assert.is_false(c:wait(0.2))
      took_about(t0, 0.2, "Condition:wait(0.2)")
      c:release()
      local ps = {}
      for i = 1, 2 do
        ps[i] = spawn(function(c_, d_)
          c_:acquire()
          d_.ready = d_.ready + 1
          assert(c_:wait(20), "not notified")
          d_.woken = (d_.woken or 0) + 1
          c_:release()
        end, c, d)
      end
      assert.is_truthy(H.wait_until(function() return d.ready == 2 or nil end, 10))
      c:with(function() c:notify_all() end)
      for _, p in ipairs(ps) do finish(p, 30) end
      assert.equal(2, d.woken)
      c:acquire()
      assert.is_true(c:wait_for(function() return d.woken == 2 end, 1))
      assert.is_false(c:wait_for(function() return false end, 0.2))
      c:release()
    end)

    it("Barrier: indices, fields, a timeout breaks it, abort, reset", function()
      local m = manager()
      local b, q = m:Barrier(3), m:Queue()
      assert.equal(3, b.parties)
      assert.equal(0, b.n_waiting)
      assert.is_false(b.broken)
      local ps = {}
      for i = 1, 2 do ps[i] = spawn(function(b_, q_) q_:put(b_:wait(20)) end, b, q) end
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 2 or nil end, 10))
      local mine = b:wait(10)
      for _, p in ipairs(ps) do finish(p) end
      local idx = {mine, q:get(1), q:get(1)}
      table.sort(idx)
      assert.same({0, 1, 2}, idx)
      local t0 = H.now()
      assert.same({nil, "broken"}, {b:wait(0.2)})
      took_about(t0, 0.2, "Barrier:wait(0.2)")
      assert.is_true(b.broken)
      assert.same({nil, "broken"}, {b:wait(1)})
      b:reset()
      assert.is_false(b.broken)
      b:abort()
      assert.same({nil, "broken"}, {b:wait(1)})
      assert.is_nil(b.nothing)
      -- a barrier's own timeout applies to a wait without one
      local b2 = m:Barrier(2, nil, 0.2)
      local t1 = H.now()
      assert.same({nil, "broken"}, {b2:wait()})
      took_about(t1, 0.2, "Barrier(2, nil, 0.2):wait()")
    end)
  end)

  -- =========================================================================
  describe("proxies", function()
    it("travel as Process arguments, through queues, and print their type", function()
      local m = manager()
      local d, q = m:dict(), lmp.Queue()
      assert.matches("^lmp%.DictProxy%(%d+ at ", tostring(d))
      q:put(d)
      local d2 = q:get(5)
      assert.is_true(d2 == d)
      assert.is_false(d2 == m:dict())
      d2.via_queue = true
      assert.is_true(d.via_queue)
      local p = spawn(function(q_) local dd = q_:get(5); dd.child = true end, q)
      q:put(d)
      finish(p)
      assert.is_true(d.child)
      q:close()
    end)

    it("are refused by safe decoding (they never come from a socket peer)", function()
      local m = manager()
      local d = m:dict()
      local s = lmp.codec.encode(d, {binary = true})
      raises("CodecError", lmp.codec.decode, s, {safe = true})
      -- nor can they be stored in a managed object
      local l = m:list()
      raises("CodecError", l.append, l, d)
      l:append(1)
      assert.equal(1, #l)
    end)

    it("a function sent to the server is refused; the server stays up", function()
      local m = manager()
      local d = m:dict()
      local e = raises("CodecError", function() d.f = function() return 1 end end)
      assert.matches("function", tostring(e.message))
      d.ok = 1
      assert.equal(1, d.ok)
      assert.is_nil(d.f)
    end)

    it("raise an OSError at once when the server has been killed", function()
      local m = manager()
      local d, q, l = m:dict(), m:Queue(), m:Lock()
      d.x = 1
      -- a child blocked in the server on a call with no timeout
      local p = spawn(function(q_)
        local ok, e = pcall(q_.get, q_)
        assert(not ok and e.kind == "OSError", "expected an OSError, got " .. tostring(e))
      end, q)
      H.csleep(0.3)
      ffi.C.kill(m:get_server_pid(), SIGKILL)
      finish(p, 10)
      local t0 = H.now()
      local e = raises("OSError", function() return d.x end)
      assert.matches("has gone", e.message)
      raises("OSError", l.acquire, l, 5)
      took_little(t0, "calls to a dead server")
    end)

    it("a client killed while blocked in Queue:get leaves the server serving", function()
      local m = manager()
      local q, e = m:Queue(), m:Event()
      local p = spawn(function(q_, e_) e_:set(); q_:get(30) end, q, e)
      assert.is_true(e:wait(10))
      H.csleep(0.2)
      p:kill()
      H.join(p)
      q:put("kept")
      assert.equal("kept", q:get(5))
      assert.equal(0, q:qsize())
    end)

    it("a client killed while waiting on a Condition or a Barrier is forgotten", function()
      local m = manager()
      local c, b, e = m:Condition(), m:Barrier(2), m:Event()
      local p = spawn(function(c_, e_)
        c_:acquire()
        e_:set()
        c_:wait(30)
      end, c, e)
      assert.is_true(e:wait(10))
      local p2 = spawn(function(b_) b_:wait(30) end, b)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 1 or nil end, 10))
      p:kill(); p2:kill()
      H.join(p); H.join(p2)
      assert.is_truthy(H.wait_until(function() return b.n_waiting == 0 or nil end, 10))
      assert.is_true(c:acquire(5))  -- the waiter gave the lock up and is gone
      c:notify()
      c:release()
      assert.is_false(b.broken)
    end)
  end)

  -- =========================================================================
  describe("BaseManager", function()
    local function counter_manager(opts)
      local m = lmp.managers.BaseManager(opts)
      m:register("Counter", function(start)
        local c = {n = start or 0}
        function c:incr(k) self.n = self.n + (k or 1); return self.n end
        function c:get() return self.n end
        function c:fail() error(lmp.error("ValueError", "counter says no")) end
        function c:boom() error("plain error") end
        function c:_hidden() return "secret" end
        return c
      end)
      local shared = {}
      m:register("shared", function() return shared end)
      managers[#managers + 1] = m
      return m:start()
    end

    it("serves registered types; errors come back as RemoteErrors", function()
      local m = counter_manager()
      local c = m:Counter(5)
      assert.equal(6, c:incr())
      assert.equal(10, c:incr(4))
      assert.equal(10, c:get())
      assert.is_nil(c._hidden)
      local e = raises("RemoteError", c.fail, c)
      assert.equal("ValueError", e.remote_kind)
      assert.matches("counter says no", e.message)
      assert.matches("traceback", tostring(e.traceback))
      e = raises("RemoteError", c.boom, c)
      assert.matches("plain error", e.message)
      local p = spawn(function(cc) assert(cc:incr() == 11) end, c)
      finish(p)
      assert.equal(11, c:get())
      -- a constructor that returns the same object gives the same object
      local s1, s2 = m:shared(), m:shared()
      assert.equal(tostring(s1), tostring(s2))
      -- and the built-in types are there too
      local d = m:dict()
      d.x = 1
      assert.equal(1, d.x)
    end)

    it("is reached by address and authkey from a separate lmp program", function()
      local m = counter_manager({address = "127.0.0.1:0", authkey = "sesame"})
      assert.matches("^127%.0%.0%.1:%d+$", m.address)
      local c = m:Counter(100)
      local dir = H.tmpdir()
      local script = H.write(dir .. "/client.lua", [[
        local lmp = require "lmp"
        local address, key = arg[1], arg[2]
        local bad = lmp.managers.BaseManager{address = address, authkey = "wrong"}
        local ok, e = pcall(bad.connect, bad)
        print("wrong key:", not ok and e.kind)
        local m = lmp.managers.BaseManager{address = address, authkey = key}
        m:connect()
        local c = m:Counter(1)
        print("own counter:", c:incr(2))
        local d = m:dict()
        d.x = 5
        print("dict:", d.x)
        m:shutdown()
        m:shutdown()
      ]])
      local r = H.lmp_run({script, m.address, "sesame"}, {timeout = 30})
      assert.equal(0, r.status, r.stderr)
      assert.matches("wrong key:\tAuthenticationError", r.stdout)
      assert.matches("own counter:\t3", r.stdout)
      assert.matches("dict:\t5", r.stdout)
      -- the server is still there for this program
      assert.equal(101, c:incr())
    end)

    it("serves a program that started it, from another one (abstract socket, random key)", function()
      local dir = H.tmpdir()
      local server = H.write(dir .. "/server.lua", [[
        local lmp = require "lmp"
        local m = lmp.managers.BaseManager()
        m:register("Box", function() local b = {v = 0}; function b:put(x) self.v = x end
                                     function b:get() return self.v end; return b end)
        m:start()
        local hex = function(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
        io.write(hex(m.address), " ", hex(m.authkey), "\n")
        io.flush()
        io.read("*l")   -- until the spec closes stdin
        m:shutdown()
      ]])
      local p = io.popen("timeout -k 2 30 " .. H.quote(H.lmp) .. " " .. H.quote(server) ..
                         " < /dev/zero 2>&1", "r")
      local line = p:read("*l")
      local a, k = tostring(line):match("^(%x+) (%x+)$")
      local unhex = function(s) return (s:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
      assert.is_truthy(a, "server program said: " .. tostring(line))
      local m = lmp.managers.BaseManager{address = unhex(a), authkey = unhex(k)}
      managers[#managers + 1] = m
      m:connect()
      local b = m:Box()
      b:put({1, 2})
      assert.same({1, 2}, b:get())
      m:shutdown()
      p:close()
    end)

    it("a client that sends garbage or code is refused and the server serves on", function()
      local m = counter_manager({authkey = "k"})
      local conn = lmp.connection.Client(m.address, {authkey = "k", safe = false})
      conn:send(function() return 1 end)
      local r = conn:recv()
      assert.is_false(r[1])
      assert.equal("CodecError", r[2])
      conn:send({0, "no such request", 0})
      assert.is_false(conn:recv()[1])
      conn:send("hello")
      assert.is_false(conn:recv()[1])
      conn:send_bytes("\255\255\255")
      r = conn:recv()
      assert.is_false(r[1])
      conn:close()
      raises("AuthenticationError", lmp.connection.Client, m.address, {authkey = "nope"})
      local c = m:Counter()
      assert.equal(1, c:incr())
    end)
  end)

  -- =========================================================================
  describe("lanes and sockets", function()
    it("serves socket clients at once while local clients use lanes", function()
      local m = manager()
      local d = m:dict({x = 1})     -- this process: a lane
      assert.equal(1, d.x)
      local id = tonumber(tostring(d):match("%((%d+) at"))
      -- a client that speaks the protocol on its socket
      local conn = lmp.connection.Client(m.address, {authkey = m.authkey})
      local t0 = H.now()
      for i = 1, 50 do
        conn:send({id, "set", 2, "y", i})
        assert.same({0}, conn:recv())
        assert.equal(i, d.y)         -- and the lane in between
        conn:send({id, "get", 1, "y"})
        assert.same({1, i}, conn:recv())
      end
      assert.is_true(H.now() - t0 < 1, "socket requests waited for the loop's look")
      conn:close()
      -- a lane's writes are seen by the socket client's next request
      d.z = "lane"
      conn = lmp.connection.Client(m.address, {authkey = m.authkey})
      conn:send({id, "get", 1, "z"})
      assert.same({1, "lane"}, conn:recv())
      conn:close()
    end)

    it("a proxy in a new process connects quickly while lanes are busy", function()
      local m = manager()
      local d = m:dict()
      d.n = 0
      local t0 = H.now()
      local p = spawn(function(dd) dd.child = 1 end, d)
      finish(p)
      assert.equal(1, d.child)
      assert.is_true(H.now() - t0 < 5)
    end)
  end)

  -- =========================================================================
  describe("speed", function()
    it("a dict set + get round trip stays well under a millisecond", function()
      local m = manager()
      local d = m:dict()
      local n = 2000
      local t0 = H.now()
      for i = 1, n do
        d[i % 10] = i
        assert(d[i % 10] == i)
      end
      local us = (H.now() - t0) / n * 1e6
      assert.is_true(us < 1000, ("%.0f us per set+get"):format(us))
    end)
  end)
end)
