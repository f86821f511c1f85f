-- lmp.queue: Queue, JoinableQueue, SimpleQueue (SPEC section 5).
-- Installed by init.lua.
--
-- A queue is a ring of encoded items in a shared segment; runtime/
-- lmp_queue.c does the work, under robust locks, with no feeder thread: a
-- put that returned is in shared memory.  Queues travel to a child when it
-- starts, like the other shared objects (lmp.shm).
return function(core, lmp, I, shm)
  local raise, timeout_arg = I.raise, I.timeout
  local codec = lmp.codec

  local classes = {}

  local function class(name)
    local cls = I.class(name)
    function cls:_describe()
      if not self._seg then return "closed" end
      local count, _, maxsize = core.queue_info(self._seg)
      return ("%d item%s%s"):format(count, count == 1 and "" or "s",
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
      raise("TypeError", "lmp.%s: maxsize must be an integer, not %s", cls._name, type(maxsize))
    end
    local seg = core.segment_new(core.queue_segment_size)
    core.queue_init(seg, maxsize > 0 and maxsize or 0)
    -- (where the queue keeps the shared buffers of its big items:
    -- runtime/lmp_bag.c)
    local self = setmetatable({_seg = seg, _bag = core.bag_new()}, cls)
    shm.remember(seg, 0, cls._name, self)
    return self
  end

  function lmp.Queue(maxsize) return new(Queue, maxsize) end
  function lmp.JoinableQueue(maxsize) return new(JoinableQueue, maxsize) end
  function lmp.SimpleQueue() return new(SimpleQueue, 0) end

  for _, cls in ipairs(classes) do
    -- put(v [, timeout]) -> true | nil, "full"
    function cls:put(v, timeout)
      local seg = segment(self, self._name .. ":put")
      timeout = timeout_arg(timeout, self._name .. ":put")
      I.shared_sweep()
      return core.queue_put(seg, v, timeout, nil, nil, nil, self._bag)
    end

    -- get([timeout]) -> v | nil, "empty"
    function cls:get(timeout)
      local seg = segment(self, self._name .. ":get")
      timeout = timeout_arg(timeout, self._name .. ":get")
      I.shared_sweep()
      I.custody_get = self._bag  -- big items' buffers are there (lua/lmp/buffers.lua)
      local v, empty = core.queue_get(seg, timeout)
      I.shared_taken()  -- the item is out of the queue: its buffers are received
      I.shared_sweep()  -- what this get opened, if this process sent it
      if empty then return nil, empty end
      return v
    end

    function cls:empty()
      local _, empty = core.queue_info(segment(self, self._name .. ":empty"))
      return empty
    end

    -- Unmaps the queue in this process; items stay for the others.
    function cls:close()
      if self._bag then self._bag:close(); self._bag = nil end
      shm.close_segment(self)
    end

  end

  for _, cls in ipairs({Queue, JoinableQueue}) do
    function cls:put_nowait(v) return self:put(v, 0) end
    function cls:get_nowait() return self:get(0) end

    function cls:qsize()
      return (core.queue_info(segment(self, self._name .. ":qsize")))
    end

    function cls:full()
      local count, _, maxsize = core.queue_info(segment(self, self._name .. ":full"))
      return maxsize > 0 and count >= maxsize
    end

    -- There is no feeder thread to wait for or to abandon: a put that
    -- returned is already in shared memory.  As in Python, join_thread()
    -- is for after close().
    function cls:join_thread()
      if self._seg then raise("ValueError", "%s:join_thread: the queue is not closed", self._name) end
    end
    function cls:cancel_join_thread() end
  end

  function JoinableQueue:task_done()
    if not core.queue_task_done(segment(self, "JoinableQueue:task_done")) then
      raise("ValueError", "JoinableQueue:task_done: called more times than items were taken out")
    end
  end

  -- join([timeout]) -> true | nil, "timeout": every item put has been
  -- marked done.
  function JoinableQueue:join(timeout)
    local seg = segment(self, "JoinableQueue:join")
    timeout = timeout_arg(timeout, "JoinableQueue:join")
    if core.queue_join(seg, timeout) then return true end
    return nil, "timeout"
  end

  for _, cls in ipairs(classes) do
    codec.register_extension("lmp." .. cls._name, cls,
      function(self)
        local what = "a " .. cls._name
        local seg = shm.to_wire(segment(self, "pass"), what)
        local out, into = self._bag:fds()
        return {seg, I.attach_fd(out, what, true), I.attach_fd(into, what, true)}
      end,
      function(t)
        local seg = shm.from_wire(t[1])
        local self = shm.lookup(seg, 0, cls._name)
        if not self then
          self = setmetatable({_seg = seg, _bag = core.bag_from_fds(I.inherited_fd(t[2]),
                                                                   I.inherited_fd(t[3]))}, cls)
          shm.remember(seg, 0, cls._name, self)
        end
        return self
      end)
  end

  -- lmp.connection.wait takes queues too: ready when they hold an item.
  -- A thread watches each one for the wait (runtime/lmp_queue.c).
  for _, cls in ipairs(classes) do
    I.waitable(cls, function(q, what)
      local seg = segment(q, what)
      local _, empty = core.queue_info(seg)
      return not empty, core.queue_watch(seg)
    end)
  end
end
