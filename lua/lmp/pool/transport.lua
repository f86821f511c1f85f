-- lmp.pool.transport: how the pool's scheduler reaches its workers.
--
-- The scheduler (lmp.pool.scheduler) decides which task runs where and
-- when; a transport starts workers, carries frames to them and replies
-- back, and says when a worker has ended.  The scheduler knows nothing
-- else of workers, so that they can be local processes (the transport
-- below) or anything with the same methods.
--
--   transport.open() -> hub             the pool's end of every channel
--   hub:start(spec, tag) -> worker      raises if no worker can start;
--       spec = {name, initializer, initargs, maxtasks, max_memory}; the
--       worker runs lmp.pool.worker's loop and speaks its frames
--   hub:receive(timeout [, idle])
--                         -> msg, tag   the next reply of any worker and
--                                       the tag its worker was started
--                                       with; nil when none came within
--                                       timeout seconds (0: do not wait);
--                                       `idle`: none is expected soon
--   hub:arm() -> bell                   for waits on descriptors (a
--                                       host's runtime/lmp_backend.c,
--                                       lmp's own blocking calls): a
--                                       Connection that becomes readable
--                                       when a reply is there (at once if
--                                       one is); hub:arm() again empties it
--   hub:close()
--   worker.name, worker.pid
--   worker.pipeline_bytes   bytes of frames that may wait, unread, at a
--                           busy worker
--   worker:send(frame [, size])
--                           sends one frame: a string, or FFI memory and
--                           its size in bytes (lmp.pool.pack's frames,
--                           good until the next is made); never waits for
--                           the worker; false if the worker cannot be
--                           reached any more (it is then seen to end)
--   worker:watch(list, owner, tag)
--                           appends to `list` what lmp.connection.wait
--                           must wait on to see the worker end, and sets
--                           owner[o] = tag for each
--   worker:fds(list)        the same as raw descriptors
--   worker:signal(how)      "terminate" (SIGTERM) or "kill" (SIGKILL)
--   worker:finish(timeout)  tells the worker to end after what it has,
--                           waits up to `timeout` s (then kills it), frees
--                           what it holds; returns its exit code (negative:
--                           the signal), or nil if it could not be reaped
--
-- Local workers are daemon Processes.  Frames go over shared memory: one
-- ring (lmp's SimpleQueue) of tasks per worker, and one ring of replies
-- that all the workers of a pool share, so that the pool waits on one
-- word.  A put never makes a system call unless the other side sleeps,
-- and each side looks a little while before it sleeps (runtime/
-- lmp_queue.c), so a busy pool runs without waking anyone up.  A worker's
-- death is seen through its sentinel; one killed in the middle of a put
-- leaves nothing half written (the ring's robust locks).
return function(core, lmp, worker_main)
  local M = {}
  local queue_put, queue_get = core.queue_put, core.queue_get
  local pack = require "lmp.pool.pack"

  -- A forked worker's initializer reads and sets the worker's globals,
  -- as a spawned worker's does (it is decoded there), whatever
  -- environment it had in the parent; and the memory it inherited is
  -- its parent's, not its own (max_memory_per_child).
  local function forked_main(tasks, inbox, slot, initializer, initargs, maxtasks, max_memory,
                             ringer)
    if type(initializer) == "function" then pcall(setfenv, initializer, _G) end
    return worker_main(tasks, inbox, slot, initializer, initargs, maxtasks, max_memory, ringer,
                       true)
  end

  local Hub, Worker = {}, {}
  Hub.__index, Worker.__index = Hub, Worker

  -- The bell: workers ring it (one byte on a socket) when the pool has
  -- armed it and a reply comes, so that a host polling descriptors hears
  -- of replies without a thread of lmp's watching the ring.
  function M.open()
    local bell, ringer = lmp.Pipe(false)
    return setmetatable({inbox = lmp.SimpleQueue(), tags = {}, slots = 0,
                         receiver = pack.receiver(), bell = bell, ringer = ringer}, Hub)
  end

  function Hub:start(spec, tag)
    local tasks = lmp.SimpleQueue()
    self.slots = self.slots + 1
    local slot = self.slots
    -- A forked worker calls the loop itself; a spawned one finds it by name.
    local forked = (spec.method or lmp.get_start_method()) == "fork"
    local p = lmp.Process{
      target = forked and forked_main or "lmp.pool.worker:main", daemon = true,
      name = spec.name,
      args = {n = 8, tasks, self.inbox, slot, spec.initializer, spec.initargs, spec.maxtasks,
              spec.max_memory, self.ringer},
    }
    p._method = spec.method
    local ok, err = pcall(p.start, p)
    if not ok then
      tasks:close()
      error(err, 0)
    end
    self.tags[slot] = tag
    return setmetatable({hub = self, slot = slot, proc = p, tasks = tasks, seg = tasks._seg,
                         name = p.name, pid = p.pid}, Worker)
  end

  -- Replies are {id, ok, value, retiring, slot} (lmp.pool.worker).
  function Hub:receive(timeout, idle)
    local msg = self.receiver:get(queue_get, self.inbox._seg, timeout, not idle)
    if msg == nil then return nil end
    if type(msg) ~= "table" then msg = pack.read_reply(msg) end  -- numbers
    return msg, self.tags[msg[5]]
  end

  function Hub:arm()
    core.queue_arm(self.inbox._seg, self.bell:fileno(), self.ringer:fileno())
    return self.bell
  end

  function Hub:close()
    self.bell:close()
    self.ringer:close()
    self.inbox:close()
  end

  -- Frames wait in shared memory, not in a socket buffer: a busy worker
  -- can hold a few of them without a send ever waiting.
  Worker.pipeline_bytes = 16 * 1048576

  -- (A ring cannot break as a pipe does: a dead worker's ring still
  -- takes frames, and its end is seen through its sentinel.)
  function Worker:send(frame, size) return queue_put(self.seg, frame, nil, size) end

  function Worker:watch(list, owner, tag)
    list[#list + 1] = self.proc
    owner[self.proc] = tag
  end

  function Worker:fds(list) list[#list + 1] = self.proc.sentinel end

  function Worker:signal(how) pcall(self.proc[how], self.proc) end

  function Worker:finish(timeout)
    pcall(queue_put, self.seg, false, 0)  -- the end: an idle worker returns
    local code = self.proc:join(timeout)
    if code == nil then
      pcall(self.proc.kill, self.proc)
      code = self.proc:join(timeout)
    end
    pcall(self.proc.close, self.proc)
    self.tasks:close()
    self.hub.tags[self.slot] = nil
    return code
  end

  return M
end
