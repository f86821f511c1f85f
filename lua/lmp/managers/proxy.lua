-- lmp.managers.proxy: the client side of a manager (SPEC section 15):
-- connections to a server, calls, and the proxies of its objects.
-- Installed by lua/lmp/managers/init.lua.
--
-- A process talks to a server through a connection of its own, opened on
-- its first call (so a child, forked or spawned, never shares its
-- parent's): a lane (shared-memory queues, below) when the server is on
-- this machine, else the socket.  A call sends one request and reads one reply on it
-- (lua/lmp/managers/server.lua has the messages).  A call made while
-- another is under way in the same process (from a callback that runs
-- while a call waits) takes a second connection.  A connection on which
-- something went wrong (the server went away, a call was cut short) is
-- closed, never reused: a late reply must not answer the next call.
--
-- A proxy is a userdata (so that `#l` works in LuaJIT) whose state
-- ({handle, id, typeid}) is kept aside, in a table with weak keys.  It
-- travels to other processes as an lmp object, by reference: its typeid,
-- id, the server's address and authkey.  Like every lmp object it is
-- refused by safe mode, so it never arrives from a socket peer.
return function(core, lmp, I)
  local codec = lmp.codec
  local raise = I.raise
  local unpack = unpack or table.unpack
  local GRACE = 10  -- seconds a timed call waits beyond its timeout for the reply

  local P = {}
  local state = setmetatable({}, {__mode = "k"})  -- proxy -> {h, id, typeid}
  local handles = {}  -- address -> handle, in this process
  local every = setmetatable({}, {__mode = "k"})  -- every handle, proxies' too

  -- A forked child opens connections of its own: those it has copies of
  -- are its parent's (they are left to the collector, which closes only
  -- the child's descriptors).
  I.after_fork[#I.after_fork + 1] = function()
    for h in pairs(every) do h.free = {} end
  end

  -- The handle of the server at address: {address, authkey, free =
  -- connections not in use}.
  function P.handle(address, authkey)
    local h = handles[address]
    if not h or h.authkey ~= authkey then
      h = {address = address, authkey = authkey, free = {}}
      handles[address] = h
      every[h] = true
    end
    return h
  end

  -- Closes this process's connections to the server of h.
  function P.disconnect(h)
    for i = #h.free, 1, -1 do
      pcall(h.free[i].close, h.free[i])
      h.free[i] = nil
    end
    if handles[h.address] == h then handles[h.address] = nil end
  end

  local function gone(h, what, why)
    raise("OSError", "%s: the manager at %s has gone (%s)", what, (h.address:gsub("%z", "@")), why)
  end

  -- A lane: the way of a client on this machine (a server on a Unix
  -- socket).  Requests go into the server's inbox, a shared queue of all
  -- its lanes, and replies come from a queue of the lane's own: a futex
  -- wakes each side, which is about twice as quick as a socket.  The
  -- socket stays open, unused: the server sees the client go when it
  -- closes, and the client sees the server go when it does.  A lane has
  -- the methods of a Connection that call() and tell() use.
  local encode, decode = codec.encode, codec.decode
  local BINARY, SAFE = {binary = true}, {safe = true}
  local SLICE = 0.1  -- seconds a wait for a reply goes without looking at the socket

  local Lane = {closed = false}
  Lane.__index = Lane

  function Lane:send(msg)
    if not core.queue_put(self.inbox, self.prefix .. encode(msg, BINARY), GRACE, nil, self.ringer) then
      error(lmp.error("OSError", "the server's inbox stays full"), 0)
    end
  end

  -- Is there a reply, or has the server gone, within wait seconds?
  function Lane:poll(wait)
    if self.pending ~= nil then return true end
    local deadline = core.now() + wait
    repeat
      local s = core.queue_get(self.reply, math.min(math.max(deadline - core.now(), 0), SLICE))
      if s ~= nil then
        self.pending = s
        return true
      end
      if self.conn:poll(0) then return true end
    until core.now() >= deadline
    return false
  end

  -- The next reply, or nil, "eof" once the server has gone.
  function Lane:recv()
    local s = self.pending
    self.pending = nil
    while s == nil do
      s = core.queue_get(self.reply, SLICE)
      if s == nil and self.conn:poll(0) then
        s = core.queue_get(self.reply, 0)  -- sent just before it went?
        if s == nil then return nil, "eof" end
      end
    end
    return decode(s, SAFE)
  end

  function Lane:close()
    if self.closed then return end
    self.closed = true
    self.conn:close()
    self.inbox:close()
    self.reply:close()
    core.close_fd(self.ringer)
  end

  local function unix(address)
    return not address:find(":", 1, true) or address:sub(1, 1) == "\0" or
           address:find("/", 1, true) ~= nil
  end

  -- A new connection to the server of h: a lane when the server is on
  -- this machine, else the socket.
  local function open(h, what)
    local ok, conn = pcall(lmp.connection.Client, h.address, {authkey = h.authkey})
    if not ok then
      if lmp.is_error(conn, "AuthenticationError") then error(conn, 0) end
      gone(h, what, lmp.is_error(conn) and conn.message or tostring(conn))
    end
    if not unix(h.address) then return conn end
    local lane
    ok, lane = pcall(function()
      conn:send({0, "lane", 0})
      local id, fds = core.fdpass_recv(conn:fileno())
      if id == nil then return nil end
      if #fds ~= 3 then
        for _, fd in ipairs(fds) do core.close_fd(fd) end
        return conn
      end
      return setmetatable({conn = conn, prefix = id .. ":", inbox = core.segment_from_fd(fds[1]),
                           reply = core.segment_from_fd(fds[2]), ringer = fds[3]}, Lane)
    end)
    if ok and lane then return lane end
    conn:close()
    if lmp.is_error(lane, "KeyboardInterrupt") then error(lane, 0) end
    gone(h, what, ok and "end of file" or (lmp.is_error(lane) and lane.message or tostring(lane)))
  end

  local function exchange(conn, msg, wait)
    conn:send(msg)
    if wait and not conn:poll(wait) then return nil, "late" end
    return conn:recv()
  end

  local function failed(r)
    local fields
    if r[2] == "RemoteError" then fields = {traceback = r[4], remote_kind = r[5]} end
    error(lmp.error(r[2] or "RemoteError", r[3] or "?", fields), 0)
  end

  -- A connection of this process to the server of h, not in use: the
  -- caller puts it back in h.free when its call is over.
  local function take(h, free, what)
    local n = #free
    if n == 0 then return open(h, what) end
    local conn = free[n]
    free[n] = nil
    return conn
  end

  -- call(h, wait, id, name, ...): the results of method name of object id
  -- (0: the manager).  wait: seconds to wait for the reply (nil: for ever).
  -- what names the call in errors.
  local function call(h, wait, what, id, name, ...)
    local free = h.free
    local conn = take(h, free, what)
    local ok, r, why = pcall(exchange, conn, {id, name, select("#", ...), ...}, wait)
    if ok and r then
      free[#free + 1] = conn
      if type(r[1]) == "number" then return unpack(r, 2, r[1] + 1) end
      failed(r)
    end
    if not ok and lmp.is_error(r, "CodecError") and not conn.closed then
      -- A reply that safe mode refuses was read whole: the stream is in
      -- step (a request that cannot be encoded was never sent).
      free[#free + 1] = conn
      error(r, 0)
    end
    pcall(conn.close, conn)
    if ok then
      if why == "late" then
        raise("TimeoutError", "%s: no answer from the manager at %s within %g s",
              what, (h.address:gsub("%z", "@")), wait)
      end
      gone(h, what, "end of file")
    end
    if lmp.is_error(r, "KeyboardInterrupt") or lmp.is_error(r, "TypeError") then error(r, 0) end
    gone(h, what, lmp.is_error(r) and r.message or tostring(r))
  end
  P.call = call

  -- tell(h, what, id, name, ...): a request that wants no reply (a write
  -- that cannot fail); only sent, so a write costs no round trip.  The
  -- server applies it before it serves any request that arrived after
  -- it, from any client.  If the server has gone, the next call says so.
  local function tell(h, what, id, name, ...)
    local free = h.free
    local conn = take(h, free, what)
    local ok, err = pcall(conn.send, conn, {-id, name, select("#", ...), ...})
    if ok then
      free[#free + 1] = conn
      return
    end
    pcall(conn.close, conn)
    if lmp.is_error(err, "KeyboardInterrupt") then error(err, 0) end
    gone(h, what, lmp.is_error(err) and err.message or tostring(err))
  end

  -- Can v travel in a write that cannot fail (plain, never refused)?
  local SCALAR = {string = true, boolean = true, number = true}
  local function scalar(v) return SCALAR[type(v)] and v == v end

  -- The seconds a blocking call may wait for its reply, from its (timeout)
  -- or (block, timeout) arguments: nil for ever.
  local function patience(what, a, b)
    if a == false then return GRACE end
    if a == true then a = b end
    local t = I.timeout(a, what)
    return t and t + GRACE
  end

  ---------------------------------------------------------------- proxies

  local classes = {}  -- typeid -> class {mt, proto, methods, name}

  -- The state of proxy p, or a TypeError (a method called with a dot).
  local function st(p, what)
    local s = state[p]
    if not s then raise("TypeError", "%s: call it as a method (proxy:%s(...))", what, what:match("[^:]+$")) end
    return s
  end

  -- A method that does not block.
  local function plain(cls, name)
    local what = cls.name .. ":" .. name
    return function(p, ...)
      local s = st(p, what)
      return call(s.h, nil, what, s.id, name, ...)
    end
  end

  -- A method whose arguments from the first'th on are (timeout) or
  -- (block, timeout).
  local function blocking(cls, name, first)
    local what = cls.name .. ":" .. name
    return function(p, ...)
      local s = st(p, what)
      local a, b = select(first, ...)
      return call(s.h, patience(what, a, b), what, s.id, name, ...)
    end
  end

  -- A write: told (no reply) when its arguments are plain scalars from
  -- the first'th on (nil too for the last), else called.
  local function writer(cls, name, first)
    local what = cls.name .. ":" .. name
    return function(p, ...)
      local s = st(p, what)
      local n = select("#", ...)
      local ok = n >= first
      for i = first, n do
        local v = select(i, ...)
        if not (scalar(v) or v == nil and i == n and i > first) then ok = false; break end
      end
      if ok then return tell(s.h, what, s.id, name, ...) end
      return call(s.h, nil, what, s.id, name, ...)
    end
  end

  local function class(typeid, name, plain_names, blocking_names)
    local cls = {name = name, methods = {}, typeid = typeid}
    local proto = newproxy(true)
    cls.proto, cls.mt = proto, getmetatable(proto)
    cls.mt.__index = cls.methods
    cls.mt.__tostring = function(p)
      local s = state[p]
      return ("lmp.%s(%d at %s)"):format(name, s.id, (s.h.address:gsub("%z", "@")))
    end
    -- Two proxies of one object are equal.
    cls.mt.__eq = function(a, b)
      local x, y = state[a], state[b]
      return x and y and x.id == y.id and x.h.address == y.h.address or false
    end
    for _, m in ipairs(plain_names or {}) do cls.methods[m] = plain(cls, m) end
    for m, first in pairs(blocking_names or {}) do cls.methods[m] = blocking(cls, m, first) end
    classes[typeid] = cls
    codec.register_extension("lmp." .. name, cls.mt,
      function(p)
        local s = state[p]
        return {typeid, s.id, s.h.address, s.h.authkey, s.exposed}
      end,
      function(t)
        return P.proxy(P.handle(t[3], t[4]), t[1], t[2], t[5])
      end)
    return cls
  end

  -- The proxy of object id, of type typeid, on the server of h.
  function P.proxy(h, typeid, id, exposed)
    local cls = classes[typeid] or classes[""]
    local p = newproxy(cls.proto)
    local s = {h = h, id = id, typeid = typeid, exposed = exposed}
    if exposed then
      s.expose = {}
      for _, name in ipairs(exposed) do s.expose[name] = true end
    end
    state[p] = s
    return p
  end

  -- with(fn, ...): fn's results, the lock held while fn runs (lmp.sync's,
  -- which calls acquire and release).
  local with = I.lock_with

  -- dict: d.k and d[k] read an item, unless k is the name of a method
  -- (then d:get(k) reads it); d[k] = v sets one, nil deletes; #d counts.
  local dict = class("dict", "DictProxy",
    {"get", "set", "keys", "values", "pop", "update", "totable", "len", "contains",
     "clear", "setdefault"})
  do
    local methods, get, len = dict.methods, dict.methods.get, dict.methods.len
    local set = writer(dict, "set", 1)
    methods.set = set
    -- for k, v in d:items() do ... end, over a copy taken in one call
    function methods.items(p) return next, p:totable(), nil end
    dict.mt.__index = function(p, k)
      local m = methods[k]
      if m then return m end
      return (get(p, k))
    end
    dict.mt.__newindex = set
    dict.mt.__len = function(p) return (len(p)) end
  end

  -- Number keys are items (get, set), string keys methods; #p is len.
  local function indexed(cls, get, set, len)
    local methods = cls.methods
    cls.mt.__index = function(p, k)
      if type(k) == "number" then return (get(p, k)) end
      return methods[k]
    end
    cls.mt.__newindex = function(p, k, v)
      if type(k) ~= "number" then raise("TypeError", "%s: cannot set field %s", cls.name, tostring(k)) end
      set(p, k, v)
    end
    cls.mt.__len = function(p) return (len(p)) end
  end

  -- list: l[i] for 1 <= i <= #l (l[#l + 1] = v appends); string keys are
  -- its methods.
  local list = class("list", "ListProxy",
    {"get", "set", "len", "append", "extend", "insert", "pop", "index", "remove",
     "totable", "values", "clear"})
  do
    local methods, get, set, len = list.methods, list.methods.get, list.methods.set, list.methods.len
    methods.append = writer(list, "append", 1)
    function methods.items(p) return ipairs(p:totable()) end
    indexed(list, get, set, len)
  end

  local set = class("set", "SetProxy",
    {"add", "discard", "remove", "contains", "len", "totable", "clear"})
  set.mt.__len = function(p) return (set.methods.len(p)) end

  -- Namespace: every field is an attribute on the server.
  local ns = class("Namespace", "NamespaceProxy", {"get", "set", "totable"})
  do
    local get, set = ns.methods.get, writer(ns, "set", 1)
    ns.methods.set = set
    ns.mt.__index = function(p, k) return (get(p, k)) end
    ns.mt.__newindex = set
  end

  for _, q in ipairs({{"Queue", "QueueProxy"}, {"JoinableQueue", "JoinableQueueProxy"}}) do
    local cls = class(q[1], q[2], {"qsize", "empty", "full", "task_done"},
                      {put = 2, get = 1, join = 1})
    local m = cls.methods
    function m.put_nowait(p, v) return m.put(p, v, 0) end
    function m.get_nowait(p) return m.get(p, 0) end
    if q[1] == "Queue" then m.task_done, m.join = nil, nil end
  end

  for _, l in ipairs({{"Lock", "LockProxy"}, {"RLock", "RLockProxy"}}) do
    local cls = class(l[1], l[2], {"release", "locked"}, {acquire = 1})
    cls.methods.with, cls.methods._name = with, cls.name  -- _name: for with's messages
  end

  for _, s in ipairs({{"Semaphore", "SemaphoreProxy"}, {"BoundedSemaphore", "BoundedSemaphoreProxy"}}) do
    local cls = class(s[1], s[2], {"release", "get_value"}, {acquire = 1})
    cls.methods.with, cls.methods._name = with, cls.name  -- _name: for with's messages
  end

  class("Event", "EventProxy", {"set", "clear", "is_set"}, {wait = 1})

  -- Condition:wait answers once the lock is taken back, which has no
  -- deadline: it waits for its reply as long as the server lives.
  local cond = class("Condition", "ConditionProxy",
    {"release", "notify", "notify_all", "wait"}, {acquire = 1})
  cond.methods.with, cond.methods._name = with, cond.name
  function cond.methods.wait_for(p, predicate, timeout)
    timeout = I.timeout(timeout, "ConditionProxy:wait_for")
    local deadline = timeout and core.now() + timeout
    local r = predicate()
    while not r do
      local left
      if deadline then
        left = deadline - core.now()
        if left <= 0 then break end
      end
      p:wait(left)
      r = predicate()
    end
    return r
  end

  -- Barrier: b.parties, b.n_waiting, b.broken are read from the server.
  local barrier = class("Barrier", "BarrierProxy", {"abort", "reset", "parties", "n_waiting", "broken"})
  do
    local methods, fields = barrier.methods, {}
    for _, f in ipairs({"parties", "n_waiting", "broken"}) do
      fields[f] = methods[f]
      methods[f] = nil
    end
    -- wait([timeout]): with no timeout, the barrier's own (if it has one)
    -- is the server's to apply, so the reply is awaited for ever.
    local wait = plain(barrier, "wait")
    local timed = blocking(barrier, "wait", 1)
    function methods.wait(p, timeout)
      if timeout == nil then return wait(p) end
      return timed(p, timeout)
    end
    barrier.mt.__index = function(p, k)
      local f = fields[k]
      if f then return (f(p)) end
      return methods[k]
    end
  end

  -- Value: v.value reads and writes it.
  local value = class("Value", "ValueProxy", {"get", "set", "typecode"})
  do
    local methods, get = value.methods, value.methods.get
    local set = writer(value, "set", 1)
    methods.set = set
    value.mt.__index = function(p, k)
      if k == "value" then return (get(p)) end
      return methods[k]
    end
    value.mt.__newindex = function(p, k, v)
      if k ~= "value" then raise("TypeError", "ValueProxy: cannot set field %s", tostring(k)) end
      set(p, v)
    end
  end

  local array = class("Array", "ArrayProxy", {"get", "set", "len", "totable", "typecode"})
  do
    local get, set, len = array.methods.get, array.methods.set, array.methods.len
    indexed(array, get, set, len)
  end

  -- The objects of BaseManager:register: the methods the server exposes.
  local custom = class("", "Proxy")
  local custom_methods = {}  -- name -> the method that calls it
  custom.mt.__index = function(p, k)
    local s = state[p]
    if not (s and s.expose[k]) then return nil end
    local m = custom_methods[k]
    if not m then
      local what = "Proxy:" .. k
      m = function(self, ...)
        local s2 = st(self, what)
        return call(s2.h, nil, what, s2.id, k, ...)
      end
      custom_methods[k] = m
    end
    return m
  end

  P.builtin = {}
  for typeid in pairs(classes) do
    if typeid ~= "" then P.builtin[typeid] = true end
  end
  P.builtin.BoundedSemaphore = true

  return P
end
