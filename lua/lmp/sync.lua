-- lmp.sync: Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event,
-- Barrier across processes (SPEC section 6).  Installed by init.lua.
--
-- Each object is a table over a small struct in shared memory (lmp.shm):
-- the calls that do not block go straight to C through the FFI
-- (runtime/lmp_sync.c), the waits go through core.sync_*, which let a
-- Pool's callbacks run meanwhile.
return function(core, lmp, I, shm)
  local ffi = require "ffi"
  local api, raise, timeout_arg = shm.api, I.raise, I.timeout
  local codec = lmp.codec
  local unpack = unpack or table.unpack

  -- codes from the lock functions (negative, as all C error codes of lmp)
  local E = core.E
  local EBUSY, EDEADLK, ETIMEDOUT, EOWNERDEAD = E.BUSY, E.DEADLK, E.TIMEDOUT, E.OWNERDEAD
  local EINTR = E.INTR  -- Ctrl-C in the lmp host (runtime/lmp_interrupt.c)
  local interrupt_flag = require("ffi").cast("volatile int *", core.interrupt_flag)
  local MAX_PERMITS = 0x7fffffff
  local TID = api.self_tid()
  -- A child made by the fork start method is another thread.
  I.after_fork[#I.after_fork + 1] = function() TID = api.self_tid() end

  local lock_ct = ffi.typeof("lmp_lock *")
  local sem_ct = ffi.typeof("lmp_sem *")
  local event_ct = ffi.typeof("lmp_event *")
  local barrier_ct = ffi.typeof("lmp_barrier *")
  local u32p = ffi.typeof("uint32_t *")

  -- Objects are tables {_p = cdata pointer, _seg, _off}; _p is nil once
  -- closed.  Each kind has a class (metatable) and is registered with the
  -- codec so that it can be passed to a child when it starts.
  -- tostring(obj): "lmp.<name>(<state>)", or "(closed)".
  local function class(name)
    local cls = I.class(name)
    cls.__tostring = function(self)
      return ("lmp.%s(%s)"):format(name, self._p and self:_describe() or "closed")
    end
    return cls
  end

  local function check(self, what)
    local p = self._p
    if p == nil then raise("ValueError", "%s:%s: the %s is closed", self._name, what, self._name) end
    return p
  end

  local function new(cls, ct, size, fields)
    local seg, off = shm.alloc(size)
    shm.retain(seg)
    local self = fields or {}
    self._seg, self._off = seg, off
    self._p = ffi.cast(ct, shm.base(seg) + off)
    setmetatable(self, cls)
    shm.remember(seg, off, cls._name, self)
    return self
  end

  local function attach(cls, ct, index, off, fields)
    local seg = shm.from_wire(index)
    local self = shm.lookup(seg, off, cls._name)
    if self then return self end
    shm.retain(seg)
    self = fields or {}
    self._seg, self._off = seg, off
    self._p = ffi.cast(ct, shm.base(seg) + off)
    setmetatable(self, cls)
    shm.remember(seg, off, cls._name, self)
    return self
  end

  local function close(self)
    if self._p == nil then return end
    local seg = self._seg
    self._p, self._seg = nil, nil
    shm.release(seg)
  end

  local function extension(cls, ct, payload, restore)
    codec.register_extension("lmp." .. cls._name, cls,
      function(self)
        check(self, "pass")
        local t = payload and payload(self) or {}
        t[1], t[2] = shm.to_wire(self._seg, "a " .. cls._name), self._off
        return t
      end,
      function(t)
        local self = attach(cls, ct, t[1], t[2])
        if restore then restore(self, t) end
        return self
      end)
  end

  ------------------------------------------------------------------ locks

  local function lock_result(r, what)
    if r == 0 then return true end
    if r == EINTR then core.interrupt_raise() end
    if r == EOWNERDEAD then return true, "owner-died" end
    if r == EBUSY or r == ETIMEDOUT then return false end
    if r == EDEADLK then
      raise("ValueError", "%s: this process already holds the lock, so waiting " ..
            "would never end (an RLock can be re-entered)", what)
    end
    raise("OSError", "%s: the lock is unusable (%s)", what, core.strerror(r))
  end

  local function release_error(p, what)
    if p.owner == 0 then raise("ValueError", "%s: the lock is not held", what) end
    raise("ValueError", "%s: the lock is held by another process (%d)", what, p.owner)
  end

  -- After fn: release, unless fn failed having released the lock itself
  -- (its own error is the one to see).
  local function finish(self, ok, ...)
    if ok then
      self:release()
      return ...
    end
    pcall(self.release, self)
    error((...), 0)
  end

  local function new_lock(cls)
    local self = new(cls, lock_ct, ffi.sizeof("lmp_lock"))
    local r = api.lock_init(self._p)
    if r ~= 0 then raise("OSError", "%s: cannot initialise (%s)", cls._name, core.strerror(r)) end
    return self
  end

  local function take(self, p, timeout)
    local what = self._name .. ":acquire"
    return lock_result(api.lock_acquire(p, timeout_arg(timeout, what) or -1), what)
  end

  local Lock = class("Lock")

  function lmp.Lock() return new_lock(Lock) end

  function Lock:acquire(timeout)
    local p = self._p
    if p == nil then check(self, "acquire") end
    return take(self, p, timeout)
  end

  function Lock:release()
    local p = self._p
    if p == nil then check(self, "release") end
    if api.lock_release(p) ~= 0 then release_error(p, self._name .. ":release") end
  end

  -- with(fn, ...): fn's results, the lock held while fn runs.
  function Lock:with(fn, ...)
    if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
      I.check_type(fn, "function", self._name .. ":with", "fn")
    end
    self:acquire()
    return finish(self, pcall(fn, ...))
  end

  -- The managers' lock proxies share it (lua/lmp/managers/proxy.lua).
  I.lock_with = Lock.with

  -- A lock this process holds is released before its memory goes.
  function Lock:close()
    local p = self._p
    if p ~= nil and p.owner == TID then api.lock_release(p) end
    close(self)
  end

  function Lock:_describe()
    local owner = self._p.owner
    return owner == 0 and "unlocked" or ("locked by %d"):format(owner)
  end

  extension(Lock, lock_ct)

  local RLock = class("RLock")
  RLock.with, RLock.close, RLock._describe = Lock.with, Lock.close, Lock._describe

  function lmp.RLock() return new_lock(RLock) end

  function RLock:acquire(timeout)
    local p = self._p
    if p == nil then check(self, "acquire") end
    if p.owner == TID then
      if timeout ~= nil then timeout_arg(timeout, self._name .. ":acquire") end
      p.count = p.count + 1
      return true
    end
    return take(self, p, timeout)
  end

  function RLock:release()
    local p = self._p
    if p == nil then check(self, "release") end
    if p.owner ~= TID then release_error(p, self._name .. ":release") end
    if p.count > 1 then
      p.count = p.count - 1
    else
      api.lock_release(p)
    end
  end

  extension(RLock, lock_ct)

  -------------------------------------------------------------- semaphores

  local Semaphore = class("Semaphore")
  local BoundedSemaphore = class("BoundedSemaphore")

  local function semaphore(cls, what, value)
    if type(value) == "table" then value = value.value end
    if value == nil then value = 1 end
    if type(value) ~= "number" or value % 1 ~= 0 then
      raise("TypeError", "%s: value must be an integer", what)
    end
    if value < 0 or value > MAX_PERMITS then
      raise("ValueError", "%s: value must be between 0 and %d, not %d", what,
            MAX_PERMITS, value)
    end
    local self = new(cls, sem_ct, ffi.sizeof("lmp_sem"))
    self._p.value = value
    self._p.max = cls == BoundedSemaphore and value or MAX_PERMITS
    return self
  end

  function lmp.Semaphore(value) return semaphore(Semaphore, "lmp.Semaphore", value) end
  function lmp.BoundedSemaphore(value)
    return semaphore(BoundedSemaphore, "lmp.BoundedSemaphore", value)
  end

  for _, cls in ipairs({Semaphore, BoundedSemaphore}) do
    function cls:acquire(timeout)
      local p = self._p
      if p == nil then check(self, "acquire") end
      if timeout ~= nil then timeout = timeout_arg(timeout, self._name .. ":acquire") end
      if api.permit_take(p) == 1 then return true end
      if timeout == nil then return core.sync_sem_acquire(self._seg, self._off) end
      if timeout == 0 then return false end
      return core.sync_sem_acquire(self._seg, self._off, timeout)
    end

    function cls:release()
      local p = self._p
      if p == nil then check(self, "release") end
      if api.permit_give(p, 1) ~= 0 then
        if cls == BoundedSemaphore then
          raise("ValueError", "BoundedSemaphore:release: released more times than " ..
                "acquired (its initial value is %d)", p.max)
        end
        raise("ValueError", "%s:release: the value would exceed %d", self._name, MAX_PERMITS)
      end
    end

    function cls:get_value()
      return check(self, "get_value").value
    end

    cls.with, cls.close = Lock.with, close
    cls._describe = function(self) return "value=" .. self._p.value end
    extension(cls, sem_ct)
  end

  --------------------------------------------------------------- Condition

  -- Each waiter of a Condition has a slot, taken under the condition's
  -- lock, with a word to sleep on.  notify(n) flags the n oldest slots of
  -- live waiters, also under the lock, so it wakes exactly the processes
  -- that were waiting when it was called: a wait begun later cannot take
  -- their wake-up, and a waiter that died is skipped, not woken in vain.
  local SLOTS = 128
  ffi.cdef(([[
typedef struct { int32_t tid; uint32_t flag; uint32_t seq; uint32_t pad; } lmp_cond_slot;
typedef struct { uint32_t next_seq; uint32_t pad[3]; lmp_cond_slot slot[%d]; } lmp_cond;
int kill(int pid, int sig);
]]):format(SLOTS))
  local cond_ct = ffi.typeof("lmp_cond *")
  local SLOT_SIZE = ffi.sizeof("lmp_cond_slot")
  local SLOT0 = ffi.offsetof("lmp_cond", "slot") + ffi.offsetof("lmp_cond_slot", "flag")
  local ESRCH = -core.E.SRCH  -- ffi.errno() is positive
  local Condition = class("Condition")

  local function is_lock(v)
    local mt = getmetatable(v)
    return mt == Lock or mt == RLock
  end

  function lmp.Condition(lock)
    if type(lock) == "table" and getmetatable(lock) == nil then lock = lock.lock end
    if lock == nil then
      lock = lmp.RLock()
    elseif not is_lock(lock) then
      raise("TypeError", "lmp.Condition: lock must be an lmp.Lock or lmp.RLock")
    end
    check(lock, "Condition")
    return new(Condition, cond_ct, ffi.sizeof("lmp_cond"), {_lock = lock})
  end

  function Condition:acquire(timeout)
    check(self, "acquire")
    return self._lock:acquire(timeout)
  end
  function Condition:release()
    check(self, "release")
    return self._lock:release()
  end
  function Condition:with(fn, ...)
    check(self, "with")
    return Lock.with(self, fn, ...)
  end
  Condition.close = close
  function Condition:_describe() return tostring(self._lock) end

  local function held_lock(self, what)
    local p = check(self, what)
    local lp = check(self._lock, what)
    if lp.owner ~= TID then
      raise("ValueError", "Condition:%s: the condition's lock is not held by this process", what)
    end
    return p, lp
  end

  local function alive(tid)
    return ffi.C.kill(tid, 0) == 0 or ffi.errno() ~= ESRCH
  end

  -- wait([timeout]) -> boolean: false when the timeout passed first.  The
  -- lock (an RLock at any depth) is released while waiting and held again
  -- on return; a second result "owner-died" tells that it came back from
  -- a process that died holding it.
  function Condition:wait(timeout)
    local p, lp = held_lock(self, "wait")
    timeout = timeout_arg(timeout, self._name .. ":wait")
    local i
    for k = 0, SLOTS - 1 do
      local tid = p.slot[k].tid
      if tid == 0 or not alive(tid) then i = k break end
    end
    if not i then
      raise("ValueError", "Condition:wait: more than %d processes wait on this Condition", SLOTS)
    end
    local slot = p.slot[i]
    slot.tid, slot.flag, slot.seq = TID, 0, p.next_seq
    p.next_seq = p.next_seq + 1
    local depth = lp.count
    api.lock_release(lp)
    if timeout ~= 0 then
      core.sync_wait_change(self._seg, self._off + SLOT0 + i * SLOT_SIZE, 0, timeout)
    end
    -- The lock is taken back whatever happens, Ctrl-C included (raised
    -- once it is held, as Python does).
    local r
    repeat r = api.lock_acquire(lp, -1) until r ~= EINTR
    lp.count = depth
    if interrupt_flag[0] ~= 0 then core.interrupt_raise() end
    local got = slot.flag ~= 0  -- decided under the lock, with notify
    slot.tid = 0
    if r == EOWNERDEAD then return got, "owner-died" end
    if r ~= 0 then lock_result(r, "Condition:wait") end
    return got
  end

  -- wait_for(predicate [, timeout]) -> the predicate's last result.
  function Condition:wait_for(predicate, timeout)
    I.check_type(predicate, "function", "Condition:wait_for", "predicate")
    timeout = timeout_arg(timeout, self._name .. ":wait_for")
    local result = predicate()
    local deadline = timeout and core.now() + timeout
    while not result do
      local left
      if deadline then
        left = deadline - core.now()
        if left <= 0 then break end
      end
      self:wait(left)
      result = predicate()
    end
    return result
  end

  local function notify(self, n, what)
    local p = held_lock(self, what)
    while n > 0 do
      local oldest
      for k = 0, SLOTS - 1 do
        local s = p.slot[k]
        if s.tid ~= 0 and s.flag == 0 and  -- the oldest, by seq that wraps
           (not oldest or (s.seq - oldest.seq) % 2^32 >= 2^31) then
          if alive(s.tid) then oldest = s else s.tid = 0 end
        end
      end
      if not oldest then return end
      oldest.flag = 1
      api.wake(ffi.cast(u32p, ffi.cast("char *", oldest) + 4), 1)
      n = n - 1
    end
  end

  function Condition:notify(n)
    if n == nil then n = 1 end
    if type(n) ~= "number" or n ~= n then
      raise("TypeError", "Condition:notify: n must be a number, not %s", n ~= n and "NaN" or type(n))
    end
    if n < 0 then raise("ValueError", "Condition:notify: n must be >= 0, not %s", tostring(n)) end
    notify(self, math.floor(n), "notify")
  end

  function Condition:notify_all() notify(self, math.huge, "notify_all") end

  extension(Condition, cond_ct, function(self) return {lock = self._lock} end,
            function(self, t) self._lock = t.lock end)

  ------------------------------------------------------------------- Event

  local Event = class("Event")

  function lmp.Event() return new(Event, event_ct, ffi.sizeof("lmp_event")) end

  function Event:is_set() return check(self, "is_set").flag ~= 0 end
  function Event:set() api.event_set(check(self, "set")) end
  function Event:clear() check(self, "clear").flag = 0 end

  function Event:wait(timeout)
    local p = check(self, "wait")
    if timeout ~= nil then timeout = timeout_arg(timeout, self._name .. ":wait") end
    if p.flag ~= 0 then return true end
    if timeout == nil then return core.sync_event_wait(self._seg, self._off) end
    if timeout == 0 then return false end
    return core.sync_event_wait(self._seg, self._off, timeout)
  end

  Event.close = close
  function Event:_describe() return self._p.flag ~= 0 and "set" or "unset" end
  extension(Event, event_ct)

  ----------------------------------------------------------------- Barrier

  -- Generations: the last party to arrive runs the action, then bumps `gen`,
  -- which wakes the others.  A generation that ends broken (a timeout,
  -- abort, reset, or an error in the action) is marked in broken[gen % 64],
  -- so a waiter that wakes late still learns how its own generation ended.
  local FILLING, ACTION, BROKEN = 0, 1, 2
  local GEN_OFFSET = ffi.offsetof("lmp_barrier", "gen")
  local Barrier = {_name = "Barrier"}
  local barrier_methods = {_name = "Barrier"}

  Barrier.__index = function(self, k)
    if k == "parties" then return check(self, "parties").parties end
    if k == "n_waiting" then
      local p = check(self, "n_waiting")
      return p.state == FILLING and p.count or 0
    end
    if k == "broken" then return check(self, "broken").state == BROKEN end
    return barrier_methods[k]
  end
  Barrier.__tostring = function(self)
    if rawget(self, "_p") == nil then return "lmp.Barrier(closed)" end
    return ("lmp.Barrier(parties=%d, n_waiting=%d%s)"):format(
      self.parties, self.n_waiting, self.broken and ", broken" or "")
  end

  function lmp.Barrier(parties, action, timeout)
    if type(parties) == "table" then
      parties, action, timeout = parties.parties, parties.action, parties.timeout
    end
    if type(parties) ~= "number" or parties % 1 ~= 0 then
      raise("TypeError", "lmp.Barrier: parties must be an integer")
    end
    if parties < 1 or parties > MAX_PERMITS then
      raise("ValueError", "lmp.Barrier: parties must be at least 1, not %d", parties)
    end
    if action ~= nil and type(action) ~= "function" then
      raise("TypeError", "lmp.Barrier: action must be a function")
    end
    local self = new(Barrier, barrier_ct, ffi.sizeof("lmp_barrier"),
                     {_action = action, _timeout = timeout_arg(timeout, "lmp.Barrier")})
    local p = rawget(self, "_p")
    local r = api.lock_init(p.lock)
    if r ~= 0 then raise("OSError", "lmp.Barrier: cannot initialise (%s)", core.strerror(r)) end
    p.parties = parties
    return self
  end

  local function enter(p)
    local r
    repeat r = api.lock_acquire(p.lock, -1) until r ~= EINTR
    if r ~= 0 and r ~= EOWNERDEAD then lock_result(r, "Barrier") end
  end
  local function leave(p) api.lock_release(p.lock) end

  local function end_generation(p, broken)
    p.broken[p.gen % 64] = broken and 1 or 0
    p.count = 0
    p.gen = p.gen + 1
    api.wake(ffi.cast(u32p, ffi.cast("char *", p) + GEN_OFFSET), MAX_PERMITS)
  end

  local function break_barrier(p)
    if p.state ~= BROKEN then
      p.state = BROKEN
      end_generation(p, true)
    end
  end

  -- wait([timeout]) -> index (0 .. parties-1) | nil, "broken"
  function barrier_methods:wait(timeout)
    local p = check(self, "wait")
    if timeout == nil then timeout = self._timeout else timeout = timeout_arg(timeout, self._name .. ":wait") end
    local deadline = timeout and core.now() + timeout
    local seg, genoff = self._seg, self._off + GEN_OFFSET
    enter(p)
    while p.state == ACTION do  -- the previous generation's action runs
      local g = p.gen
      leave(p)
      local left = deadline and math.max(deadline - core.now(), 0)
      local changed = core.sync_wait_change(seg, genoff, g, left)
      enter(p)
      if not changed and p.gen == g and p.state == ACTION then
        break_barrier(p)  -- the action's process died or hangs
      end
    end
    if p.state == BROKEN then
      leave(p)
      return nil, "broken"
    end
    local index = p.count
    p.count = index + 1
    if index + 1 == p.parties then
      if self._action then
        p.state = ACTION
        leave(p)
        local ok, err = pcall(self._action)
        enter(p)
        if not ok then
          break_barrier(p)
          leave(p)
          error(err, 0)
        end
        if p.state == BROKEN then  -- a waiter timed out meanwhile
          leave(p)
          return nil, "broken"
        end
        p.state = FILLING
      end
      end_generation(p, false)
      leave(p)
      return index
    end
    local g = p.gen
    leave(p)
    local left = deadline and math.max(deadline - core.now(), 0)
    core.sync_wait_change(seg, genoff, g, left)
    enter(p)
    if p.gen == g then  -- timed out: that breaks the barrier for everyone
      break_barrier(p)
      leave(p)
      return nil, "broken"
    end
    local broken = p.broken[g % 64] ~= 0
    leave(p)
    if broken then return nil, "broken" end
    return index
  end

  -- Waiters of the current generation get "broken"; the barrier is then
  -- as new.
  function barrier_methods:reset()
    local p = check(self, "reset")
    enter(p)
    if p.state ~= BROKEN and p.count > 0 then end_generation(p, true) end
    p.state, p.count = FILLING, 0
    leave(p)
  end

  function barrier_methods:abort()
    local p = check(self, "abort")
    enter(p)
    break_barrier(p)
    leave(p)
  end

  barrier_methods.close = close
  extension(Barrier, barrier_ct,
            function(self) return {action = self._action, timeout = self._timeout} end,
            function(self, t) self._action, self._timeout = t.action, t.timeout end)

  return {Lock = Lock, RLock = RLock, is_lock = is_lock}
end
