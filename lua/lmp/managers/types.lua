-- lmp.managers.types: the objects a manager's server holds for lmp.Manager
-- (SPEC section 15): dict, list, set, Namespace, Queue, JoinableQueue,
-- Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier,
-- Value, Array.  Loaded by lua/lmp/managers/server.lua, in the server.
--
-- Each type is {new = function(srv, ...) -> object, methods = {...}}.  A
-- method is called as f(obj, client, ...) and returns its results, which
-- the server sends back at once; a call that must wait returns srv.PARKED
-- after parking a waiter (srv:park), and the result is sent later by
-- srv:reply.  A waiter is {cl = client, grant = fn, expire = fn, drop =
-- fn}: grant runs when the object gives it what it waited for, expire
-- when its deadline passes, drop when its client goes away.  Lists of
-- waiters are FIFO; a waiter that is done (answered, expired, dropped)
-- stays in them until it reaches the front, and is skipped there.
--
-- What a client holds (a Lock, an RLock and its count, Semaphore permits)
-- is counted in client.held[obj], so that the server can give it back when
-- the client goes away (obj:_drop(client, count)).
return function(lmp)
  local raise = function(kind, fmt, ...)
    error(lmp.error(kind, select("#", ...) > 0 and fmt:format(...) or fmt), 0)
  end
  local T = {}

  -- The first waiter of list that is not done, removed from it; or nil.
  local function shift(list)
    while list[1] do
      local w = table.remove(list, 1)
      if not w.done then return w end
    end
  end

  local function count_waiting(list)
    local n = 0
    for _, w in ipairs(list) do if not w.done then n = n + 1 end end
    return n
  end

  local function hold(obj, cl, n)
    cl.held[obj] = (cl.held[obj] or 0) + n
  end

  local function unhold(obj, cl, n)
    local c = (cl.held[obj] or 0) - n
    cl.held[obj] = c > 0 and c or nil
  end

  -- Arguments of a blocking call: (timeout) as lmp's own objects take it,
  -- or (block, timeout) as Python does.  Returns nil (for ever) or seconds.
  local function wait_time(srv, a, b, what)
    if a == false then return 0 end
    if a == true then a = b end
    if a ~= nil and type(a) ~= "number" then
      raise("TypeError", "%s: timeout must be a number of seconds, not %s", what, type(a))
    end
    return srv.timeout(a, what)
  end

  local function check_int(n, what, name, min)
    if type(n) ~= "number" or n % 1 ~= 0 or n < min then
      raise(type(n) == "number" and "ValueError" or "TypeError",
            "%s: %s must be an integer >= %d", what, name, min)
    end
  end

  ---------------------------------------------------------------- dict

  local dict = {methods = {}}
  T.dict = dict
  function dict.new(_, t)
    local d = {}
    if t ~= nil then
      if type(t) ~= "table" then raise("TypeError", "dict: initial value must be a table") end
      for k, v in pairs(t) do d[k] = v end
    end
    return {t = d}
  end
  local D = dict.methods
  function D.get(o, _, k, default)
    local v = o.t[k]
    if v == nil then return default end
    return v
  end
  function D.set(o, _, k, v)
    if k == nil then raise("TypeError", "dict: a key cannot be nil") end
    if k ~= k then raise("ValueError", "dict: a key cannot be NaN") end
    o.t[k] = v
  end
  function D.len(o)
    local n = 0
    for _ in pairs(o.t) do n = n + 1 end
    return n
  end
  function D.contains(o, _, k) return k ~= nil and o.t[k] ~= nil end
  function D.keys(o)
    local r, n = {}, 0
    for k in pairs(o.t) do n = n + 1; r[n] = k end
    return r
  end
  function D.values(o)
    local r, n = {}, 0
    for _, v in pairs(o.t) do n = n + 1; r[n] = v end
    return r
  end
  function D.totable(o)
    local r = {}
    for k, v in pairs(o.t) do r[k] = v end
    return r
  end
  -- pop(k [, default]): a missing key without a default is an IndexError
  -- (lmp's lookup error; Python raises KeyError).
  function D.pop(o, _, k, ...)
    local v
    if k ~= nil then v = o.t[k] end
    if v == nil then
      if select("#", ...) > 0 then return (...) end
      raise("IndexError", "dict:pop: no key %s", tostring(k))
    end
    o.t[k] = nil
    return v
  end
  function D.setdefault(o, cl, k, v)
    local cur
    if k ~= nil then cur = o.t[k] end
    if cur ~= nil then return cur end
    D.set(o, cl, k, v)
    return v
  end
  function D.update(o, _, t)
    if type(t) ~= "table" then raise("TypeError", "dict:update: argument must be a table") end
    for k, v in pairs(t) do o.t[k] = v end
  end
  function D.clear(o) o.t = {} end

  ---------------------------------------------------------------- list

  local list = {methods = {}}
  T.list = list
  local function check_item(v, what)
    if v == nil then raise("ValueError", "%s: a list cannot hold nil (use lmp.null)", what) end
  end
  function list.new(_, t)
    local l = {}
    if t ~= nil then
      if type(t) ~= "table" then raise("TypeError", "list: initial value must be a table") end
      for i = 1, #t do l[i] = t[i] end
    end
    return {t = l, n = #l}
  end
  local L = list.methods
  local function index(o, i, what, last)
    if type(i) ~= "number" or i % 1 ~= 0 then
      raise("TypeError", "%s: index must be an integer, not %s", what, type(i) == "number"
            and tostring(i) or type(i))
    end
    if i < 1 or i > (last or o.n) then
      raise("IndexError", "%s: index %d is out of range (1..%d)", what, i, last or o.n)
    end
    return i
  end
  function L.get(o, _, i) return o.t[index(o, i, "list:get")] end
  -- set(i, v): i may be #l + 1, which appends (as with a Lua table).
  function L.set(o, _, i, v)
    check_item(v, "list:set")
    index(o, i, "list:set", o.n + 1)
    if i == o.n + 1 then o.n = i end
    o.t[i] = v
  end
  function L.len(o) return o.n end
  function L.append(o, _, v)
    check_item(v, "list:append")
    o.n = o.n + 1
    o.t[o.n] = v
  end
  function L.extend(o, _, t)
    if type(t) ~= "table" then raise("TypeError", "list:extend: argument must be a table") end
    for i = 1, #t do
      o.n = o.n + 1
      o.t[o.n] = t[i]
    end
  end
  function L.insert(o, _, i, v)
    check_item(v, "list:insert")
    index(o, i, "list:insert", o.n + 1)
    table.insert(o.t, i, v)
    o.n = o.n + 1
  end
  -- pop([i]): the last item, or the i-th.
  function L.pop(o, _, i)
    if o.n == 0 then raise("IndexError", "list:pop: the list is empty") end
    i = i == nil and o.n or index(o, i, "list:pop")
    local v = table.remove(o.t, i)
    o.n = o.n - 1
    return v
  end
  -- index(v) -> position of the first v, or nil
  function L.index(o, _, v)
    for i = 1, o.n do if o.t[i] == v then return i end end
  end
  function L.remove(o, cl, v)
    local i = L.index(o, cl, v)
    if not i then raise("ValueError", "list:remove: %s is not in the list", tostring(v)) end
    L.pop(o, cl, i)
  end
  function L.totable(o)
    local r = {}
    for i = 1, o.n do r[i] = o.t[i] end
    return r
  end
  L.values = L.totable
  function L.clear(o) o.t, o.n = {}, 0 end

  ---------------------------------------------------------------- set

  local set = {methods = {}}
  T.set = set
  function set.new(_, t)
    local s = {t = {}, n = 0}
    if t ~= nil then
      if type(t) ~= "table" then raise("TypeError", "set: initial value must be a table") end
      for i = 1, #t do
        if not s.t[t[i]] then s.n = s.n + 1; s.t[t[i]] = true end
      end
    end
    return s
  end
  local S = set.methods
  function S.add(o, _, v)
    if v == nil or v ~= v then raise("ValueError", "set:add: nil and NaN cannot be members") end
    if not o.t[v] then o.n = o.n + 1; o.t[v] = true end
  end
  function S.discard(o, _, v)
    if v ~= nil and o.t[v] then o.n = o.n - 1; o.t[v] = nil; return true end
    return false
  end
  function S.remove(o, cl, v)
    if not S.discard(o, cl, v) then raise("IndexError", "set:remove: %s is not in the set", tostring(v)) end
  end
  function S.contains(o, _, v) return v ~= nil and o.t[v] == true end
  function S.len(o) return o.n end
  function S.totable(o)
    local r, n = {}, 0
    for v in pairs(o.t) do n = n + 1; r[n] = v end
    return r
  end
  function S.clear(o) o.t, o.n = {}, 0 end

  ---------------------------------------------------------------- Namespace

  local ns = {methods = {}}
  T.Namespace = ns
  function ns.new(_, t)
    local o = dict.new(nil, t)
    for k in pairs(o.t) do
      if type(k) ~= "string" then raise("TypeError", "Namespace: names must be strings") end
    end
    return o
  end
  function ns.methods.get(o, _, k) return o.t[k] end
  function ns.methods.set(o, _, k, v)
    if type(k) ~= "string" then raise("TypeError", "Namespace: names must be strings, not %s", type(k)) end
    o.t[k] = v
  end
  ns.methods.totable = D.totable

  ---------------------------------------------------------------- Value, Array

  local value = {methods = {}}
  T.Value = value
  function value.new(_, tc, v)
    if type(tc) ~= "string" then raise("TypeError", "Value: typecode must be a string") end
    return {tc = tc, v = v}
  end
  function value.methods.get(o) return o.v end
  function value.methods.set(o, _, v) o.v = v end
  function value.methods.typecode(o) return o.tc end

  local array = {methods = {}}
  T.Array = array
  function array.new(_, tc, t)
    if type(tc) ~= "string" then raise("TypeError", "Array: typecode must be a string") end
    local a = {tc = tc, t = {}, n = 0}
    if type(t) == "number" then
      check_int(t, "Array", "size", 0)
      for i = 1, t do a.t[i] = 0 end
      a.n = t
    elseif type(t) == "table" then
      for i = 1, #t do a.t[i] = t[i] end
      a.n = #t
    else
      raise("TypeError", "Array: size_or_table must be a number or a table, not %s", type(t))
    end
    return a
  end
  array.methods.get = function(o, _, i) return o.t[index(o, i, "Array:get")] end
  array.methods.set = function(o, _, i, v)
    o.t[index(o, i, "Array:set")] = v
  end
  array.methods.len, array.methods.totable = L.len, L.totable
  array.methods.typecode = value.methods.typecode

  ---------------------------------------------------------------- Queue

  -- Items are kept in items[head..tail]; nil is stored as NIL.
  local NIL = {}
  local queue = {methods = {}}
  T.Queue = queue
  function queue.new(_, maxsize)
    if type(maxsize) == "table" then maxsize = maxsize.maxsize end
    if maxsize == nil then maxsize = 0 end
    check_int(maxsize, "Queue", "maxsize", -math.huge)
    return {items = {}, head = 1, tail = 0, maxsize = maxsize > 0 and maxsize or 0,
            getters = {}, putters = {}, joiners = {}, unfinished = 0}
  end
  local Q = queue.methods
  local function qsize(o) return o.tail - o.head + 1 end
  local function push(o, v)
    o.tail = o.tail + 1
    o.items[o.tail] = v == nil and NIL or v
    o.unfinished = o.unfinished + 1
  end
  local function pop(o)
    local v = o.items[o.head]
    o.items[o.head] = nil
    o.head = o.head + 1
    if o.head > o.tail then o.head, o.tail = 1, 0 end
    if v == NIL then return nil end
    return v
  end
  -- After an item left: a waiting putter's item goes in.
  local function admit(srv, o)
    while o.maxsize == 0 or qsize(o) < o.maxsize do
      local w = shift(o.putters)
      if not w then return end
      srv:finish(w)
      push(o, w.item)
      srv:reply(w.cl, true)
    end
  end
  function Q.put(o, cl, v, a, b)
    local srv = o.srv
    local timeout = wait_time(srv, a, b, "Queue:put")
    -- A waiting getter takes it at once (it is only waiting if the queue
    -- is empty); if its client has gone, the next one, else the queue.
    local w = shift(o.getters)
    while w do
      srv:finish(w)
      if srv:alive(w.cl) then
        o.unfinished = o.unfinished + 1
        if srv:reply(w.cl, v) then return true end
        o.unfinished = o.unfinished - 1
      end
      w = shift(o.getters)
    end
    if o.maxsize > 0 and qsize(o) >= o.maxsize then
      if timeout == 0 then return nil, "full" end
      local pw = srv:park(cl, timeout, o.putters)
      pw.item = v
      pw.expire = function() srv:reply(cl, nil, "full") end
      return srv.PARKED
    end
    push(o, v)
    return true
  end
  function Q.get(o, cl, a, b)
    local srv = o.srv
    local timeout = wait_time(srv, a, b, "Queue:get")
    if qsize(o) > 0 then
      local v = pop(o)
      admit(srv, o)
      return v
    end
    if timeout == 0 then return nil, "empty" end
    local w = srv:park(cl, timeout, o.getters)
    w.expire = function() srv:reply(cl, nil, "empty") end
    return srv.PARKED
  end
  function Q.qsize(o) return qsize(o) end
  function Q.empty(o) return qsize(o) == 0 end
  function Q.full(o) return o.maxsize > 0 and qsize(o) >= o.maxsize end
  function Q.task_done(o)
    if o.unfinished <= 0 then
      raise("ValueError", "JoinableQueue:task_done: called more times than items were taken out")
    end
    o.unfinished = o.unfinished - 1
    if o.unfinished == 0 then
      local srv = o.srv
      for w in function() return shift(o.joiners) end do
        srv:finish(w)
        srv:reply(w.cl, true)
      end
    end
  end
  function Q.join(o, cl, timeout)
    if o.unfinished == 0 then return true end
    local srv = o.srv
    timeout = srv.timeout(timeout, "JoinableQueue:join")
    if timeout == 0 then return nil, "timeout" end
    local w = srv:park(cl, timeout, o.joiners)
    w.expire = function() srv:reply(cl, nil, "timeout") end
    return srv.PARKED
  end
  T.JoinableQueue = queue

  ---------------------------------------------------------------- Lock, RLock

  -- owner: the client holding it; count: its depth (RLock).  died: the
  -- last owner went away holding it; the next acquirer is told
  -- ("owner-died"), as lmp's own Locks tell.
  local lock = {methods = {}}
  T.Lock = lock
  function lock.new() return {waiters = {}, count = 0} end
  local K = lock.methods

  local function grant(o, cl, count)
    o.owner, o.count = cl, count or 1
    hold(o, cl, 1)
    if o.died then
      o.died = nil
      return true, "owner-died"
    end
    return true
  end

  -- The lock is free: the first waiter that is still there gets it.
  local function pass_on(o)
    local w = shift(o.waiters)
    if w then
      o.srv:finish(w)
      w.grant(grant(o, w.cl, w.count))
    end
  end

  -- acquire for the client, count levels deep; grant(...) gets the result
  -- when it had to wait.  Returns the results now, or PARKED.
  local function acquire(o, cl, timeout, count, granted)
    if o.owner == nil then return grant(o, cl, count) end
    if o.recursive and o.owner == cl then
      o.count = o.count + 1
      return true
    end
    if timeout == 0 then return false end
    local srv = o.srv
    local w = srv:park(cl, timeout, o.waiters)
    w.count = count
    w.grant = granted or function(...) srv:reply(cl, ...) end
    w.expire = function() srv:reply(cl, false) end
    return srv.PARKED
  end

  local function free(o)
    unhold(o, o.owner, 1)
    o.owner, o.count = nil, 0
    pass_on(o)
  end

  function K.acquire(o, cl, a, b)
    return acquire(o, cl, wait_time(o.srv, a, b, o.name .. ":acquire"), 1)
  end
  -- A Lock may be released by any client (as Python's); an RLock only by
  -- its owner.
  function K.release(o, cl)
    if o.owner == nil then raise("ValueError", "%s:release: the lock is not held", o.name) end
    if o.recursive then
      if o.owner ~= cl then
        raise("ValueError", "%s:release: the lock is held by another client", o.name)
      end
      if o.count > 1 then
        o.count = o.count - 1
        return
      end
    end
    free(o)
  end
  function K.locked(o) return o.owner ~= nil end
  function lock._drop(o, cl)
    if o.owner == cl then
      o.died = true
      free(o)
    end
  end
  T.RLock = {methods = K, _drop = lock._drop,
             new = function() return {waiters = {}, count = 0, recursive = true} end}

  ---------------------------------------------------------------- Semaphore

  local sem = {methods = {}}
  T.Semaphore = sem
  local function sem_new(bounded)
    return function(_, value)
      if value == nil then value = 1 end
      check_int(value, bounded and "BoundedSemaphore" or "Semaphore", "value", 0)
      return {value = value, initial = bounded and value or nil, waiters = {}}
    end
  end
  sem.new = sem_new(false)
  local M = sem.methods
  local function sem_give(o)
    while o.value > 0 do
      local w = shift(o.waiters)
      if not w then return end
      o.srv:finish(w)
      o.value = o.value - 1
      hold(o, w.cl, 1)
      o.srv:reply(w.cl, true)
    end
  end
  function M.acquire(o, cl, a, b)
    local srv = o.srv
    local timeout = wait_time(srv, a, b, "Semaphore:acquire")
    if o.value > 0 then
      o.value = o.value - 1
      hold(o, cl, 1)
      return true
    end
    if timeout == 0 then return false end
    local w = srv:park(cl, timeout, o.waiters)
    w.expire = function() srv:reply(cl, false) end
    return srv.PARKED
  end
  -- A permit released is no longer held by the releaser, or, if it holds
  -- none (a semaphore used as a signal), by some other holder.
  function M.release(o, cl, n)
    if n == nil then n = 1 end
    check_int(n, "Semaphore:release", "n", 1)
    if o.initial and o.value + n > o.initial then
      raise("ValueError", "BoundedSemaphore:release: released too many times")
    end
    for _ = 1, n do
      if cl.held[o] then
        unhold(o, cl, 1)
      else
        for other in pairs(o.srv.clients) do
          if other.held[o] then unhold(o, other, 1); break end
        end
      end
    end
    o.value = o.value + n
    sem_give(o)
  end
  function M.get_value(o) return o.value end
  function sem._drop(o, cl, count)
    unhold(o, cl, count)
    o.value = o.value + count
    sem_give(o)
  end
  T.BoundedSemaphore = {methods = M, _drop = sem._drop, new = sem_new(true)}

  ---------------------------------------------------------------- Event

  local event = {methods = {}}
  T.Event = event
  function event.new() return {flag = false, waiters = {}} end
  function event.methods.is_set(o) return o.flag end
  function event.methods.set(o)
    o.flag = true
    for w in function() return shift(o.waiters) end do
      o.srv:finish(w)
      o.srv:reply(w.cl, true)
    end
  end
  function event.methods.clear(o) o.flag = false end
  function event.methods.wait(o, cl, timeout)
    if o.flag then return true end
    local srv = o.srv
    timeout = srv.timeout(timeout, "Event:wait")
    if timeout == 0 then return false end
    local w = srv:park(cl, timeout, o.waiters)
    w.expire = function() srv:reply(cl, false) end
    return srv.PARKED
  end

  ---------------------------------------------------------------- Condition

  -- Its own RLock.  wait releases it entirely, waits for a notify (or
  -- the timeout), then takes it back at its old depth before answering.
  local cond = {methods = {}}
  T.Condition = cond
  function cond.new(srv)
    local l = T.RLock.new()
    l.srv, l.name = srv, "Condition"
    return {lock = l, waiters = {}}
  end
  local C = cond.methods
  function C.acquire(o, cl, a, b) return K.acquire(o.lock, cl, a, b) end
  function C.release(o, cl) return K.release(o.lock, cl) end
  local function owned(o, cl, what)
    if o.lock.owner ~= cl then
      raise("ValueError", "Condition:%s: the lock is not held by this client", what)
    end
  end
  -- Takes the lock back for the waiter, then answers result.
  local function reacquire(o, cl, count, result)
    local srv = o.srv
    local r = acquire(o.lock, cl, nil, count, function() srv:reply(cl, result) end)
    if r ~= srv.PARKED then srv:reply(cl, result) end
  end
  function C.wait(o, cl, timeout)
    owned(o, cl, "wait")
    local srv = o.srv
    timeout = srv.timeout(timeout, "Condition:wait")
    local count = o.lock.count
    o.lock.count = 1
    free(o.lock)
    local w = srv:park(cl, timeout, o.waiters)
    w.grant = function() reacquire(o, cl, count, true) end
    w.expire = function() reacquire(o, cl, count, false) end
    return srv.PARKED
  end
  local function notify(o, n)
    while n > 0 do
      local w = shift(o.waiters)
      if not w then return end
      o.srv:finish(w)
      w.grant()
      n = n - 1
    end
  end
  function C.notify(o, cl, n)
    owned(o, cl, "notify")
    if n == nil then n = 1 end
    check_int(n, "Condition:notify", "n", 0)
    notify(o, n)
  end
  function C.notify_all(o, cl)
    owned(o, cl, "notify_all")
    notify(o, math.huge)
  end

  ---------------------------------------------------------------- Barrier

  -- A waiter's index is its place among the parties of its round (0 for
  -- the first to arrive); a waiter whose client goes away leaves the
  -- round.  A timeout breaks the barrier, as in Python.
  local barrier = {methods = {}}
  T.Barrier = barrier
  function barrier.new(srv, parties, action, timeout)
    check_int(parties, "Barrier", "parties", 1)
    if action ~= nil then raise("TypeError", "Barrier: a manager's barrier has no action") end
    if timeout ~= nil then srv.timeout(timeout, "Barrier") end
    return {parties = parties, waiters = {}, broken = false, timeout = timeout}
  end
  local B = barrier.methods
  local function break_all(o)
    o.broken = true
    for w in function() return shift(o.waiters) end do
      o.srv:finish(w)
      o.srv:reply(w.cl, nil, "broken")
    end
  end
  function B.wait(o, cl, timeout)
    if o.broken then return nil, "broken" end
    local srv = o.srv
    if timeout == nil then timeout = o.timeout end
    timeout = srv.timeout(timeout, "Barrier:wait")
    local waiting = {}
    for _, w in ipairs(o.waiters) do if not w.done then waiting[#waiting + 1] = w end end
    if #waiting + 1 >= o.parties then
      o.waiters = {}
      for i, w in ipairs(waiting) do
        srv:finish(w)
        srv:reply(w.cl, i - 1)
      end
      return #waiting
    end
    if timeout == 0 then
      break_all(o)
      return nil, "broken"
    end
    local w = srv:park(cl, timeout, o.waiters)
    w.expire = function()
      srv:reply(cl, nil, "broken")
      break_all(o)
    end
    return srv.PARKED
  end
  function B.abort(o) break_all(o) end
  function B.reset(o)
    break_all(o)
    o.broken = false
  end
  function B.parties(o) return o.parties end
  function B.n_waiting(o) return count_waiting(o.waiters) end
  function B.broken(o) return o.broken end

  return T
end
