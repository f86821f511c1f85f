-- lmp.pool.scheduler: which task runs where, and what becomes of it.
--
-- Work is cut into tasks (chunks of items, one frame each).  Tasks wait in
-- the parent, in one queue, until a worker can take them: a worker has at
-- most a few tasks sent to it (the pipeline), so that it never waits for
-- the pool between two tasks, and no more unread bytes than its transport
-- holds, so that sending never waits for a busy worker.  The function of
-- a call is encoded once, with its upvalues as they are at that call, and
-- sent to a worker before the first task of that call that it runs.
--
-- A task ends with its result, or fails with its error, WorkerLost (its
-- worker died), TimeoutError (its hard deadline passed: the worker is
-- killed) or CancelledError; a failure the call's `retries` allow puts it
-- back in the queue instead.  A worker that ends is replaced while the
-- pool runs, and while a closed pool still has tasks waiting.  A worker
-- whose initializer fails (or EARLY_DEATHS in a row that die before they
-- are ready) breaks the pool: waiting tasks fail with that error, since
-- every replacement would fail the same way.
--
-- The pool's workers are reached through a transport (lmp.pool.transport).
return function(core, lmp, I, Pool, transport, pump, FUNCTIONS_KEPT)
  local pack = require "lmp.pool.pack"
  -- Tasks in flight per worker; short tasks (under FAST seconds) get a
  -- deeper pipeline, so that a worker has work while the pool reads a
  -- batch of replies.
  local PIPELINE, PIPELINE_FAST, FAST = 2, 32, 0.002
  -- How long a worker may take to end once told to (or killed).
  local END_TIMEOUT = 5
  -- Workers in a row that die before they are ready break the pool.
  local EARLY_DEATHS = 3

  -- core.now, called through the FFI: in place inside a compiled trace
  -- (the scheduler reads the clock a few times per task).
  local now = require("ffi").cast("double (*)(void)", core.now_fn)

  local function enqueue(self, task, front)
    if self.broken then  -- no worker will come to run it
      self.tasks[task.id] = nil
      self.counts.failed = self.counts.failed + 1
      return task.job:_chunk(task.base, false, self.broken)
    end
    if front then self.queue:push_front(task) else self.queue:push(task) end
    self.nqueued = self.nqueued + 1
  end

  -- The queue holds tasks, and sources: the chunks of a map over numbers
  -- not yet cut (source.next is the first item of the next one).  A task
  -- is made of a source when a worker can take it, so that a long map
  -- costs neither time nor memory for the tasks it has yet to run.
  -- Returns the next task of source (and whether that was its last).
  local function cut(self, source)
    local job, base = source.job, source.next
    local n = math.min(source.chunksize, source.len - base + 1)
    local id = self.next_id + 1
    self.next_id = id
    source.next = base + n
    local o = job.opts
    -- No body: its frame is made from the list each time it is sent.
    local task = {id = id, job = job, base = base, attempts = 1, from = source.list, n = n,
                  timeout = o.timeout or (o.soft_timeout and o.soft_timeout + o.grace)}
    self.tasks[id] = task
    return task, source.next > source.len
  end

  -- Queues the chunks of a map over list[1..len], all numbers (a copy the
  -- caller does not keep: its values are those of the call).
  function Pool:_queue_source(job, list, len, chunksize)
    local nchunks = math.ceil(len / chunksize)
    if self.broken then
      self.counts.failed = self.counts.failed + nchunks
      return job:_chunk(1, false, self.broken)
    end
    local source = {source = true, job = job, list = list, len = len, chunksize = chunksize,
                    next = 1}
    job.source = source
    self.queue:push(source)
    self.nqueued = self.nqueued + nchunks
    pump.hold(self._dispatch, self)
  end

  -- Drops what is left of job's source; returns how many chunks that was.
  local function drop_source(self, job)
    local source = job.source
    if not source or source.dropped then return 0 end
    source.dropped = true
    local left = math.ceil((source.len - source.next + 1) / source.chunksize)
    self.nqueued = self.nqueued - left
    return left
  end

  function Pool:_spawn()
    self.nstarted = self.nstarted + 1
    local w = {pool = self, inflight = {}, kept = {}, has = {}, sent = 0, unread = 0,
               ready = false}
    w.ep = self.hub:start({
      name = "PoolWorker-" .. self.nstarted, initializer = self.initializer,
      initargs = self.initargs, maxtasks = self.maxtasks, max_memory = self.max_memory,
      method = self.method,
    }, w)
    self.workers[#self.workers + 1] = w
    I.host.changed()  -- a sentinel to watch
  end

  -- A worker has gone: replace it while the pool runs, or while a closed
  -- pool still owes queued tasks a worker.
  function Pool:_replace()
    if self.broken or self.state == "terminated" then return end
    if self.state == "running" or self.nqueued > 0 then
      self:_spawn()
      self.counts.replaced = self.counts.replaced + 1
    end
  end

  -- Queues a task of `job` (an AsyncResult, or imap's sink): `frame` is its
  -- encoded {id, key, star, items, soft} (a string, or a frame of numbers
  -- in FFI memory of `size` bytes), `base` the index of its first item.
  function Pool:_queue_task(job, id, frame, base, size)
    local o = job.opts
    local task = {id = id, job = job, base = base, body = frame, size = size, attempts = 1,
                  timeout = o.timeout or (o.soft_timeout and o.soft_timeout + o.grace)}
    self.tasks[id] = task
    enqueue(self, task)
    pump.hold(self._dispatch, self)
    return task
  end

  -- Sends a task to w, preceded by the frame of its call's function unless
  -- w still keeps it (lmp.pool.worker forgets the oldest of FUNCTIONS_KEPT
  -- the same way).  `queued`: w may not read it before its current task is
  -- done.  False if w cannot be reached.  (No pcall here: a trace cannot
  -- return through one, and this is the pool's hottest path.)
  local function send_task(w, task, size, queued)
    local job = task.job
    if job.fnframe and not w.has[job.key] then
      if not w.ep:send(job.fnframe) then return false end
      local kept = w.kept
      kept[#kept + 1] = job.key
      w.has[job.key] = true
      if #kept > FUNCTIONS_KEPT then w.has[table.remove(kept, 1)] = nil end
    end
    local body = task.body
    if body then
      if not w.ep:send(body, task.size) then return false end
    elseif not w.ep:send(pack.task_frame(task.id, job.key, task.from, task.base, task.n,
                                         job.opts.soft_timeout)) then
      return false
    end
    w.sent = w.sent + 1
    task.worker = w
    local inflight = w.inflight
    inflight[#inflight + 1] = task
    if queued then
      task.unread = size
      w.unread = w.unread + size
    elseif #inflight == 1 then
      task.started = now()
    end
    return true
  end

  -- The bytes a task puts on the way to w.
  local function frame_size(w, task)
    local size = task.size or (task.body and #task.body) or pack.HEADER + 8 * task.n
    local fnframe = task.job.fnframe
    if fnframe and not w.has[task.job.key] then size = size + #fnframe end
    return size
  end

  -- Whether w can take a task of `size` bytes now, and if so whether it
  -- waits there unread (w is busy, or still starting).
  local function can_take(self, w, size)
    if w.broken or w.retiring or (self.maxtasks and w.sent >= self.maxtasks) then return false end
    local n = #w.inflight
    if n == 0 and w.ready then return true, false end
    if n >= (w.fast and PIPELINE_FAST or PIPELINE) then return false end
    return w.unread + size <= w.ep.pipeline_bytes, true
  end

  -- Sends queued tasks to the least busy workers that can take them.
  function Pool:_dispatch()
    local q = self.queue
    while q.count > 0 do
      local task = q:peek()
      if task.source and not task.dropped then
        local last
        task, last = cut(self, task)
        if last then q:pop() end
        q:push_front(task)
      end
      if task.cancelled or task.dropped then
        q:pop()
      else
        local best, best_queued, best_size
        for _, w in ipairs(self.workers) do
          if not best or #w.inflight < #best.inflight then
            local size = frame_size(w, task)
            local ok, queued = can_take(self, w, size)
            if ok then best, best_queued, best_size = w, queued, size end
          end
        end
        if not best then break end
        q:pop()
        self.nqueued = self.nqueued - 1
        if not send_task(best, task, best_size, best_queued) then
          -- The worker is gone: the task runs elsewhere, and the worker is
          -- buried at the next pump.
          best.broken = true
          task.worker, task.started, task.unread = nil, nil, nil
          enqueue(self, task, true)
        end
      end
    end
  end

  -- Whether a task that failed with err runs again: its call's retries
  -- allow it, and err is one they are for.
  function Pool._retryable(task, err)
    local o = task.job.opts
    if err.final or task.attempts > (o.retries or 0) then return false end
    local kind, remote = err.kind, err.remote_kind
    if kind == "WorkerLost" or kind == "TimeoutError" or remote == "TimeoutError" then return true end
    for _, k in ipairs(o.retry_on or {}) do
      if k == kind or k == remote then return true end
    end
    return false
  end

  -- Fails a task with err, or queues it again if its call's retries allow.
  function Pool:_task_failed(task, err)
    if Pool._retryable(task, err) then
      task.attempts = task.attempts + 1
      self.counts.retried = self.counts.retried + 1
      task.worker, task.started, task.unread = nil, nil, nil
      enqueue(self, task, true)
      return
    end
    self.tasks[task.id] = nil
    self.counts.failed = self.counts.failed + 1
    err.attempts = task.attempts
    task.job:_chunk(task.base, false, err)
  end

  -- The head of w's pipeline is what w runs now.
  local function started(self, w)
    local head = w.inflight[1]
    if not head or head.started then return end
    head.started = now()
    if head.unread then
      w.unread = w.unread - head.unread
      head.unread = nil
    end
    -- A cancelled task that w was about to run: w is killed and replaced
    -- (its other tasks go back to the queue when it is buried).
    if head.cancelled then
      w.killed, w.killed_for_cancel = true, true
      w.ep:signal("kill")
    end
  end

  -- The initializer failed in w (err from the worker), or w ended before it
  -- was ready: the pool is broken.
  function Pool:_break(w, err)
    self.broken = self.broken or err
    err = self.broken
    local function fail(task)
      if not task.cancelled and self.tasks[task.id] then
        self.tasks[task.id] = nil
        self.counts.failed = self.counts.failed + 1
        task.job:_chunk(task.base, false, err)
      end
    end
    for _, task in ipairs(w.inflight) do fail(task) end
    w.inflight, w.unread = {}, 0
    for _, task in ipairs(self.queue:drain()) do
      if task.source then
        local left = drop_source(self, task.job)
        self.counts.failed = self.counts.failed + left
        if left > 0 then task.job:_chunk(1, false, err) end
      else
        fail(task)
      end
    end
    self.nqueued = 0
  end

  -- A reply from worker w.
  function Pool:_reply(w, msg)
    local id, ok, value = msg[1], msg[2], msg[3]
    if id == 0 then  -- ready, or its initializer failed
      if ok then
        w.ready = true
        self.early_deaths = 0
        started(self, w)
      else
        self:_break(w, lmp.error("RemoteError",
          ("the pool's initializer failed in worker %s (pid %d): %s")
          :format(w.ep.name, w.ep.pid, tostring(value.message)),
          {traceback = value.traceback, remote_kind = value.kind, pid = w.ep.pid}))
      end
      return
    end
    local inflight, task = w.inflight, nil
    for i = 1, #inflight do
      if inflight[i].id == id then
        task = table.remove(inflight, i)
        break
      end
    end
    if not task then return end
    if task.started then w.fast = now() - task.started < FAST end
    if msg[4] then
      -- w retires after this task: what it has not read runs elsewhere.
      w.retiring = true
      for i = #inflight, 1, -1 do
        local t = inflight[i]
        inflight[i] = nil
        t.worker, t.started, t.unread = nil, nil, nil
        if not t.cancelled then enqueue(self, t, true) end
      end
      w.unread = 0
    else
      started(self, w)
    end
    if task.cancelled then return end
    if ok then
      self.tasks[id] = nil
      self.counts.done = self.counts.done + 1
      task.job:_chunk(task.base, true, value)
    else
      self:_task_failed(task, lmp.error("RemoteError", value.message or "?",
        {traceback = value.traceback, remote_kind = value.kind, pid = w.ep.pid}))
    end
  end

  -- Worker w has ended (or must end now): the task it was running fails
  -- with err (WorkerLost, unless given), its other tasks go back to the
  -- queue, and it is replaced.
  function Pool:_bury(w, err)
    for i, x in ipairs(self.workers) do
      if x == w then table.remove(self.workers, i) break end
    end
    w.buried = true
    I.host.changed()
    local code = w.ep:finish(END_TIMEOUT)
    local how = code == nil and "did not exit"
                or code < 0 and ("was killed by signal " .. -code)
                or ("exited with code " .. code)
    if not w.ready and not w.retiring and not w.killed and self.state ~= "terminated" then
      -- It died before it was ready: killed from outside, or its
      -- initializer killed it.  Some in a row mean that every replacement
      -- would die the same way.
      self.early_deaths = self.early_deaths + 1
      if self.early_deaths >= EARLY_DEATHS then
        self:_break(w, lmp.error("WorkerLost",
          ("worker %s (pid %d) %s before it was ready, the %dth in a row")
          :format(w.ep.name, w.ep.pid, how, self.early_deaths), {pid = w.ep.pid, exitcode = code}))
      end
    end
    local inflight = w.inflight
    local head = inflight[1]
    local running = head and head.started and not head.cancelled and not w.killed_for_cancel
    if running and not err then
      err = lmp.error("WorkerLost", ("worker %s (pid %d) %s during a task")
                      :format(w.ep.name, w.ep.pid, how), {pid = w.ep.pid, exitcode = code})
    end
    w.inflight, w.unread = {}, 0
    for i = #inflight, 1, -1 do  -- backwards: requeued tasks keep their order
      local task = inflight[i]
      task.worker, task.started, task.unread = nil, nil, nil
      if not task.cancelled then
        if i == 1 and running then self:_task_failed(task, err)
        else enqueue(self, task, true) end
      end
    end
    self:_replace()
  end

  -- What this pool waits on to see its workers end (lmp.pool.pump);
  -- returns the time left to its nearest hard deadline (or nil).
  function Pool:_watch(list, owner, t)
    for _, w in ipairs(self.workers) do w.ep:watch(list, owner, w) end
    return self:_nearest(t)
  end

  -- The time left at t to the nearest hard deadline of a running task (nil:
  -- none).
  function Pool:_nearest(t)
    local nearest
    for _, w in ipairs(self.workers) do
      local task = w.inflight[1]
      if task and task.timeout and task.started then
        local left = task.started + task.timeout - t
        if not nearest or left < nearest then nearest = left > 0 and left or 0 end
      end
    end
    return nearest
  end

  function Pool:_fds(list)
    for _, w in ipairs(self.workers) do w.ep:fds(list) end
  end

  -- A reply (from hub:receive) of worker w.
  function Pool:_take(msg, w)
    if w and not w.buried then self:_reply(w, msg) end
  end

  -- Reads every reply that has come; true if there was one.
  function Pool:_take_replies()
    local hub, any = self.hub, false
    while true do
      local msg, w = hub:receive(0)
      if msg == nil then return any end
      any = true
      self:_take(msg, w)
    end
  end

  -- Serves what `ready` (from connection.wait) says about this pool:
  -- ended workers (after their last replies), tasks past their deadline;
  -- then dispatches.
  function Pool:_handle(ready, owner)
    local ended
    for _, obj in ipairs(ready) do
      local w = owner[obj]
      if w and w.pool == self and not w.buried then
        ended = ended or {}
        ended[w] = true
      end
    end
    for _, w in ipairs(self.workers) do
      if w.broken then
        ended = ended or {}
        ended[w] = true
      end
    end
    if ended then
      self:_take_replies()  -- replies sent before the end are still there
      for w in pairs(ended) do
        if not w.buried then self:_bury(w) end
      end
    end
    local t = now()
    for i = #self.workers, 1, -1 do
      local w = self.workers[i]
      local task = w and w.inflight[1]
      if task and task.timeout and task.started and t - task.started >= task.timeout then
        w.killed = true
        w.ep:signal("kill")
        self:_bury(w, lmp.error("TimeoutError",
          ("task timed out after %g s; worker %s (pid %d) was killed and replaced")
          :format(task.timeout, w.ep.name, w.ep.pid)))
      end
    end
    self:_dispatch()
  end

  -- Cancels the tasks of job that are not over.  A worker running one is
  -- killed, once its replies so far are read: what it runs now is known
  -- as well as it can be.  Should it have moved on to another task all
  -- the same, that task runs again elsewhere (_bury).
  local function cancel(self, job)
    self:_take_replies()
    drop_source(self, job)
    for id, task in pairs(self.tasks) do
      if task.job == job then
        self.tasks[id] = nil
        task.cancelled = true
        local w = task.worker
        if not w then
          self.nqueued = self.nqueued - 1
        elseif w.inflight[1] == task and task.started then
          w.killed, w.killed_for_cancel = true, true
          w.ep:signal("kill")  -- buried and replaced at the next pump
        end
      end
    end
  end

  Pool._drop_source = drop_source

  function Pool:_cancel(job) pump.hold(cancel, self, job) end

  -- A call failed: its tasks still queued will not be needed.
  function Pool:_drop_queued(job)
    drop_source(self, job)
    for id, task in pairs(self.tasks) do
      if task.job == job and not task.worker then
        self.tasks[id] = nil
        task.cancelled = true
        self.nqueued = self.nqueued - 1
      end
    end
  end

  -- Ends every worker now with `how` ("terminate" or "kill"): the tasks
  -- they were running fail with WorkerLost (never retried), the others run
  -- on their replacements.
  local function end_workers(self, how, what)
    local workers = {}
    for i, w in ipairs(self.workers) do workers[i] = w end
    for _, w in ipairs(workers) do
      w.killed = true
      w.ep:signal(how)
    end
    self:_take_replies()
    for _, w in ipairs(workers) do
      local err = lmp.error("WorkerLost", ("worker %s (pid %d) was ended by %s")
                            :format(w.ep.name, w.ep.pid, what), {pid = w.ep.pid})
      err.final = true
      self:_bury(w, w.inflight[1] and w.inflight[1].started and err or nil)
    end
    self:_dispatch()
  end

  function Pool:_end_workers(how, what) pump.hold(end_workers, self, how, what) end

  Pool._END_TIMEOUT = END_TIMEOUT
end
