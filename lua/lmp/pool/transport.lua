-- lmp.pool.transport: how the pool's scheduler reaches its workers.
--
-- The scheduler (lmp.pool.scheduler) decides which task runs where and
-- when; a transport starts workers, carries frames (encoded strings) to and
-- from them and says when one has ended.  The scheduler knows nothing else
-- of workers, so that they can be local processes (the transport below,
-- one socketpair per worker) or anything with the same methods.
--
--   transport.start(spec) -> worker        raises if no worker can start
--       spec = {name, initializer, initargs, maxtasks, max_memory}; the
--       worker runs lmp.pool.worker's loop and speaks its frames.
--   worker.name, worker.pid
--   worker.pipeline_bytes   bytes of frames that may wait, unread, at a
--                           busy worker without a send ever waiting for it
--   worker:send(frame)      sends one frame; raises if the worker is gone
--   worker:receive()        the next reply, decoded; nil if none has come;
--                           false once the worker's stream has ended
--   worker:watch(list, owner, tag, ends)
--                           appends to `list` what lmp.connection.wait
--                           must wait on for this worker, sets owner[o] =
--                           tag for each, and ends[o] = true for an object
--                           whose readiness means the worker has ended
--   worker:fds(list)        appends raw descriptors, for the background
--                           waits of lmp's other blocking calls
--   worker:signal(how)      "terminate" (SIGTERM) or "kill" (SIGKILL)
--   worker:finish(timeout)  ends the stream, waits up to `timeout` s for
--                           the worker to end (then kills it), frees what
--                           it holds; returns its exit code (negative: the
--                           signal), or nil if it could not be reaped
return function(core, lmp)
  local M = {}

  local Local = {}
  Local.__index = Local

  -- A local worker: a daemon Process running the worker loop, with one end
  -- of a duplex Pipe.
  function M.start(spec)
    local a, b = lmp.Pipe()
    local p = lmp.Process{
      target = "lmp.pool.worker:main", daemon = true, name = spec.name,
      args = {n = 5, b, spec.initializer, spec.initargs, spec.maxtasks, spec.max_memory},
    }
    local ok, err = pcall(p.start, p)
    b:close()
    if not ok then
      a:close()
      error(err, 0)
    end
    return setmetatable({proc = p, conn = a, name = p.name, pid = p.pid}, Local)
  end

  -- A socketpair holds some 200 KiB each way: a quarter of it waits at a
  -- worker at most.
  Local.pipeline_bytes = 65536

  function Local:send(frame) self.conn:send_bytes(frame) end

  function Local:receive()
    local conn = self.conn
    if conn.closed then return false end
    local ok, ready = pcall(conn.poll, conn)
    if not ok then return false end
    if not ready then return nil end
    local okr, msg = pcall(conn.recv, conn)
    if not okr or msg == nil then return false end  -- end of file, or reset
    return msg
  end

  function Local:watch(list, owner, tag, ends)
    local conn, proc = self.conn, self.proc
    if not conn.closed then
      list[#list + 1] = conn
      owner[conn] = tag
    end
    list[#list + 1] = proc
    owner[proc], ends[proc] = tag, true
  end

  function Local:fds(list)
    if not self.conn.closed then list[#list + 1] = self.conn:fileno() end
    list[#list + 1] = self.proc.sentinel
  end

  function Local:signal(how) pcall(self.proc[how], self.proc) end

  function Local:finish(timeout)
    self.conn:close()  -- end of file: an idle worker returns from its loop
    local code = self.proc:join(timeout)
    if code == nil then
      pcall(self.proc.kill, self.proc)
      code = self.proc:join(timeout)
    end
    pcall(self.proc.close, self.proc)
    return code
  end

  return M
end
