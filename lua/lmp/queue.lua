-- lmp.queue: Queue, JoinableQueue, SimpleQueue (SPEC section 5).
-- Installed by init.lua.
--
-- A queue is a ring of encoded items in a shared segment; runtime/
-- lmp_queue.c does the work, under robust locks, with no feeder thread: a
-- put that returned is in shared memory.  Queues travel to a child when it
-- starts, like the other shared objects (lmp.shm).
return function(core, lmp, shm)
  local raise, timeout_arg = shm.raise, shm.timeout
  local codec = lmp.codec

  local classes = {}

  local function class(name)
    local cls = {_name = name}
    cls.__index = cls
    cls.__tostring = function(self)
      if not self._seg then return ("lmp.%s(closed)"):format(name) end
      local count, _, maxsize = core.queue_info(self._seg)
      return ("lmp.%s(%d item%s%s)"):format(name, count, count == 1 and "" or "s",
                                           maxsize > 0 and (", maxsize " .. maxsize) or "")
    end
    classes[#classes + 1] = cls
    return cls
  end

  local Queue = class("Queue")
  local JoinableQueue = class("JoinableQueue")
  local SimpleQueue = class("SimpleQueue")

  local function segment(self, what)
    local seg = self._seg
    if not seg then raise("ValueError", "%s: %s is closed", what, self._name) end
    return seg
  end

  local function new(cls, maxsize)
    if type(maxsize) == "table" then maxsize = maxsize.maxsize end
    if maxsize == nil then maxsize = 0 end
    if type(maxsize) ~= "number" or maxsize % 1 ~= 0 then
      raise("TypeError", "%s: maxsize must be an integer", cls._name)
    end
    local seg = core.segment_new(core.queue_segment_size)
    core.queue_init(seg, maxsize > 0 and maxsize or 0)
    local self = setmetatable({_seg = seg}, cls)
    shm.remember(seg, 0, cls._name, self)
    return self
  end

  function lmp.Queue(maxsize) return new(Queue, maxsize) end
  function lmp.JoinableQueue(maxsize) return new(JoinableQueue, maxsize) end
  function lmp.SimpleQueue() return new(SimpleQueue, 0) end

  for _, cls in ipairs(classes) do
    -- put(v [, timeout]) -> true | nil, "full"
    function cls:put(v, timeout)
      local seg = segment(self, "put")
      if timeout ~= nil then timeout = timeout_arg(timeout, "put") end
      return core.queue_put(seg, v, timeout)
    end

    -- get([timeout]) -> v | nil, "empty"
    function cls:get(timeout)
      local seg = segment(self, "get")
      if timeout ~= nil then timeout = timeout_arg(timeout, "get") end
      return core.queue_get(seg, timeout)
    end

    function cls:empty()
      local _, empty = core.queue_info(segment(self, "empty"))
      return empty
    end

    -- Unmaps the queue in this process; items stay for the others.
    cls.close = shm.close_segment

    function cls:_fileno_watch() return core.queue_watch(segment(self, "wait")) end
  end

  for _, cls in ipairs({Queue, JoinableQueue}) do
    function cls:put_nowait(v) return self:put(v, 0) end
    function cls:get_nowait() return self:get(0) end

    function cls:qsize()
      return (core.queue_info(segment(self, "qsize")))
    end

    function cls:full()
      local count, _, maxsize = core.queue_info(segment(self, "full"))
      return maxsize > 0 and count >= maxsize
    end

    -- There is no feeder thread to wait for or to abandon: a put that
    -- returned is already in shared memory.  As in Python, join_thread()
    -- is for after close().
    function cls:join_thread()
      if self._seg then raise("ValueError", "join_thread: the queue is not closed") end
    end
    function cls:cancel_join_thread() end
  end

  function JoinableQueue:task_done()
    if not core.queue_task_done(segment(self, "task_done")) then
      raise("ValueError", "task_done: called more times than items were taken out")
    end
  end

  -- join([timeout]) -> true | nil, "timeout": every item put has been
  -- marked done.
  function JoinableQueue:join(timeout)
    local seg = segment(self, "join")
    if timeout ~= nil then timeout = timeout_arg(timeout, "join") end
    if core.queue_join(seg, timeout) then return true end
    return nil, "timeout"
  end

  for _, cls in ipairs(classes) do
    codec.register_extension("lmp." .. cls._name, cls,
      function(self)
        return {shm.to_wire(segment(self, "pass"), "a " .. cls._name)}
      end,
      function(t)
        local seg = shm.from_wire(t[1])
        local self = shm.lookup(seg, 0, cls._name)
        if not self then
          self = setmetatable({_seg = seg}, cls)
          shm.remember(seg, 0, cls._name, self)
        end
        return self
      end)
  end

  -- lmp.connection.wait also takes queues: ready when they hold an item.
  local wait = lmp.connection.wait
  lmp.connection.wait = function(list, timeout)
    if type(list) ~= "table" then return wait(list, timeout) end
    local queues
    for i = 1, #list do
      local mt = getmetatable(list[i])
      if mt == Queue or mt == JoinableQueue or mt == SimpleQueue then
        queues = queues or {}
        queues[#queues + 1] = i
      end
    end
    if not queues then return wait(list, timeout) end
    local ready = {}
    for _, i in ipairs(queues) do
      local _, empty = core.queue_info(segment(list[i], "wait"))
      if not empty then ready[#ready + 1] = list[i] end
    end
    -- Each queue is watched by a thread that makes a descriptor readable.
    local proxy, watchers, back = {}, {}, {}
    for i = 1, #list do proxy[i] = list[i] end
    for _, i in ipairs(queues) do
      local w = list[i]:_fileno_watch()
      watchers[#watchers + 1] = w
      proxy[i] = w:fd()
      back[proxy[i]] = list[i]
    end
    local ok, got = pcall(wait, proxy, #ready > 0 and 0 or timeout)
    for _, w in ipairs(watchers) do w:close() end
    if not ok then error(got, 2) end
    local seen = {}
    for _, q in ipairs(ready) do seen[q] = true end
    for _, v in ipairs(got) do
      local q = back[v]
      if q then
        if not seen[q] then ready[#ready + 1] = q; seen[q] = true end
      else
        ready[#ready + 1] = v
      end
    end
    return ready
  end
end
