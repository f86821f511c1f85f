-- lmp.pool: Pool (SPEC section 8), on top of Process and Pipe.
--
-- Each worker is a daemon Process running lua/lmp/poolworker.lua, with a
-- duplex Pipe to the pool.  Work is cut into tasks (chunks of items); each
-- worker has at most PIPELINE tasks sent to it, so that it never waits for
-- the pool between two tasks.  The function of a call (map, apply_async,
-- imap, ...) is encoded once, with its upvalues as they are at that call,
-- and sent to each worker before the first task of that call that it runs;
-- a worker keeps the functions of its last few calls.  The pool notices a dead worker through its sentinel: the
-- task it was running fails with WorkerLost, the tasks queued behind it go
-- back to the queue, and a new worker takes its place.
--
-- Nothing runs behind the user's back: results are collected, callbacks run
-- and workers replaced while the parent waits in a pool call (get, map,
-- imap, join, ...) or calls lmp.poll().
return function(core, lmp, I)
  local codec = lmp.codec
  local unpack = unpack or table.unpack
  local floor, huge = math.floor, math.huge

  -- Tasks in flight per worker: enough that a worker never waits for the
  -- pool between two tasks, few enough that work stays spread out.  Short
  -- tasks (under FAST seconds) get a deeper pipeline.
  local PIPELINE, PIPELINE_FAST, FAST = 2, 4, 0.002
  local BUFFER_PER_WORKER = 4 -- imap: chunks ahead of the caller, per worker
  -- Functions of recent calls a worker keeps (lmp.poolworker has the same
  -- number): the pool knows which, so it resends one only when it is gone.
  local FUNCTIONS_KEPT = 4

  local raise = I.raise

  local function now() return core.now() end

  local live = setmetatable({}, {__mode = "k"})  -- pools, for lmp.poll
  local background  -- defined with the pump, below

  -- Runs a user callback; an error in it is reported, never swallowed, and
  -- does not break the pool.
  local function run_callback(cb, ...)
    local ok, err = xpcall(cb, debug.traceback, ...)
    if not ok then
      io.stderr:write("lmp.Pool: error in a callback: ", tostring(err), "\n")
      io.stderr:flush()
    end
  end

  ---------------------------------------------------------------------------
  -- AsyncResult: the outcome of a job (one apply, or all the chunks of a map).

  local AsyncResult = {}
  AsyncResult.__index = AsyncResult

  local function new_job(pool, nchunks, opts)
    return setmetatable({pool = pool, pending = nchunks, results = {},
                         opts = opts or {}, done = false}, AsyncResult)
  end

  function AsyncResult:_finish(ok, value)
    if self.done then return end
    self.done, self.ok, self.value = true, ok, value
    if ok and self.opts.callback then run_callback(self.opts.callback, value) end
    if not ok and self.opts.error_callback then run_callback(self.opts.error_callback, value) end
  end

  -- A chunk of the job finished: `base` is the index of its first item.
  function AsyncResult:_chunk(base, ok, values)
    if self.done then return end
    if not ok then return self:_finish(false, values) end
    for i = 1, values.n or #values do self.results[base + i - 1] = values[i] end
    self.pending = self.pending - 1
    if self.pending == 0 then
      local r = self.results
      if self.single then r = r[1] end
      self:_finish(true, r)
    end
  end

  function AsyncResult:ready() return self.done end

  function AsyncResult:successful()
    if not self.done then raise("ValueError", "AsyncResult:successful: the result is not ready") end
    return self.ok
  end

  function AsyncResult:wait(timeout)
    timeout = I.timeout(timeout, "AsyncResult:wait")
    local deadline = timeout and now() + timeout
    while not self.done do
      local left = deadline and deadline - now()
      if left and left <= 0 then break end
      self.pool:_pump(left)
    end
    return self.done
  end

  function AsyncResult:get(timeout)
    timeout = I.timeout(timeout, "AsyncResult:get")
    if not self:wait(timeout) then return nil, "timeout" end
    if not self.ok then error(self.value, 2) end
    return self.value
  end

  ---------------------------------------------------------------------------
  -- The pool

  local Pool = {}
  Pool.__index = Pool

  -- what: "Pool" or "Pool:map" ..., name: the argument or option.
  local function check_positive_integer(v, what, name)
    I.check_type(v, "number", what, name, "a positive integer")
    if v < 1 or v ~= floor(v) then
      raise("ValueError", "%s: %s must be a positive integer, not %s", what, name, tostring(v))
    end
  end

  local function check_optional(v, tname, what, name)
    if v ~= nil then I.check_type(v, tname, what, name) end
  end

  function lmp.Pool(opts)
    if type(opts) ~= "table" then opts = {processes = opts} end
    local n = opts.processes
    if n == nil then n = lmp.cpu_count() end
    check_positive_integer(n, "lmp.Pool", "processes")
    if opts.maxtasksperchild ~= nil then
      check_positive_integer(opts.maxtasksperchild, "lmp.Pool", "maxtasksperchild")
    end
    check_optional(opts.initializer, "function", "lmp.Pool", "initializer")
    check_optional(opts.initargs, "table", "lmp.Pool", "initargs")
    check_optional(opts.task_timeout, "number", "lmp.Pool", "task_timeout")
    local self = setmetatable({
      size = n, initializer = opts.initializer, initargs = opts.initargs,
      maxtasks = opts.maxtasksperchild, task_timeout = opts.task_timeout,
      workers = {}, queue = {first = 1, last = 0}, tasks = {}, next_id = 0,
      next_key = 0,
      state = "running", nworkers_started = 0,
    }, Pool)
    -- A pool collected while open takes its workers down with it.
    local workers = self.workers
    self._gc = newproxy(true)
    getmetatable(self._gc).__gc = function()
      for _, w in ipairs(workers) do pcall(w.proc.terminate, w.proc) end
    end
    for _ = 1, n do self:_spawn() end
    live[self] = true
    core.set_background(background)
    return self
  end

  function Pool:_spawn()
    local a, b = lmp.Pipe()
    self.nworkers_started = self.nworkers_started + 1
    local p = lmp.Process{
      target = "lmp.poolworker:main", daemon = true,
      name = "PoolWorker-" .. self.nworkers_started,
      args = {n = 4, b, self.initializer, self.initargs, self.maxtasks},
    }
    local ok, err = pcall(p.start, p)
    b:close()
    if not ok then
      a:close()
      error(err, 0)
    end
    self.workers[#self.workers + 1] = {proc = p, conn = a, inflight = {}, kept = {}, has = {}, sent = 0}
  end

  function Pool:_check_running(what)
    if self.state ~= "running" then
      raise("ValueError", "%s: the pool is %s", what, self.state)
    end
  end

  -- A CodecError names the path in the task frame {id, key, star, items};
  -- the user knows the value as `args` (apply) or items[i] of the list.
  local function task_error(e, base, job)
    if not (lmp.is_error(e) and e.kind == "CodecError") then return e end
    local k, rest = e.message:match("^value%[4%]%[(%d+)%](.*)$")
    if not k then return e end
    local where = job.single and "args" or ("items[%d]"):format(base + tonumber(k) - 1)
    return lmp.error("CodecError", where .. rest)
  end

  -- Encodes fn, with its upvalues as they are now, for the tasks of one
  -- call: job.key names it on the workers, job.fnframe carries it.
  function Pool:_function(fn, job)
    self.next_key = self.next_key + 1
    local ok, frame = pcall(codec.encode, {self.next_key, fn}, {binary = true, role = "function"})
    if not ok then
      local e = frame
      if lmp.is_error(e, "CodecError") then
        local rest = e.message:match("^function%[2%](.*)$")
        if rest then e = lmp.error("CodecError", "function" .. rest) end
      end
      error(e, 0)
    end
    job.key, job.fnframe = self.next_key, frame
  end

  -- Queues a task: items[1..n] for the job's function, results delivered
  -- to job at base.
  function Pool:_submit(star, items, job, base)
    self.next_id = self.next_id + 1
    local id = self.next_id
    local ok, body = pcall(codec.encode, {id, job.key, star, items}, {binary = true})
    if not ok then error(task_error(body, base, job), 0) end
    local task = {id = id, job = job, base = base, body = body,
                  timeout = job.opts.timeout or self.task_timeout}
    self.tasks[id] = task
    local q = self.queue
    q.last = q.last + 1
    q[q.last] = task
    self:_dispatch()
    return task
  end

  -- A task is one frame, {id, key, star, items}, preceded by the frame of
  -- its call's function, {key, fn}, unless the worker still keeps it (see
  -- lmp.poolworker: both sides forget the oldest of FUNCTIONS_KEPT).
  local function send_task(w, task)
    local key = task.job.key
    if not w.has[key] then
      w.conn:send_bytes(task.job.fnframe)
      local kept = w.kept
      kept[#kept + 1] = key
      w.has[key] = true
      if #kept > FUNCTIONS_KEPT then w.has[table.remove(kept, 1)] = nil end
    end
    w.sent = w.sent + 1
    w.conn:send_bytes(task.body)
    task.worker = w
    w.inflight[#w.inflight + 1] = task
    if #w.inflight == 1 then task.started = now() end
  end

  -- The queue is a deque indexed first..last (never `#`: it has holes).
  -- Each task goes to the least busy worker that can take one.
  function Pool:_dispatch()
    local q = self.queue
    while q.first <= q.last do
      local best
      for _, w in ipairs(self.workers) do
        -- A worker near its maxtasksperchild gets no more than it will run:
        -- a task sent to a worker that then retires would be lost with it.
        if not w.broken and #w.inflight < (w.fast and PIPELINE_FAST or PIPELINE)
           and not (self.maxtasks and w.sent >= self.maxtasks)
           and (not best or #w.inflight < #best.inflight) then
          best = w
        end
      end
      if not best then break end
      local task = q[q.first]
      q[q.first] = nil
      q.first = q.first + 1
      if not pcall(send_task, best, task) then
        -- The worker is gone (broken pipe): the task runs elsewhere, and
        -- the worker is buried at the next pump.
        best.broken = true
        task.worker, task.started = nil, nil
        q.first = q.first - 1
        q[q.first] = task
      end
    end
    -- A deque keyed by ever larger numbers keeps the room of old keys in
    -- LuaJIT: start a fresh one when it is empty, so memory stays flat.
    if q.first > q.last and q.first > 1024 then self.queue = {first = 1, last = 0} end
  end

  -- A reply from a worker.
  function Pool:_reply(w, msg)
    local id, ok, value = msg[1], msg[2], msg[3]
    local task = self.tasks[id]
    if not task then return end
    self.tasks[id] = nil
    for i, t in ipairs(w.inflight) do
      if t == task then table.remove(w.inflight, i) break end
    end
    if task.started then w.fast = now() - task.started < FAST end
    if w.inflight[1] and not w.inflight[1].started then w.inflight[1].started = now() end
    if not ok then
      value = lmp.error("RemoteError", value.message or "?",
                        {traceback = value.traceback, remote_kind = value.kind,
                         pid = w.proc.pid})
    end
    task.job:_chunk(task.base, ok, value)
  end

  -- A worker has ended (or must end): the task it was running fails with
  -- `err` (WorkerLost unless given), the others go back to the queue.
  function Pool:_bury(w, err)
    for i, x in ipairs(self.workers) do
      if x == w then table.remove(self.workers, i) break end
    end
    local code = w.proc:join(5)
    if not err and w.inflight[1] then
      local how = code == nil and "did not exit"
                  or code < 0 and ("was killed by signal " .. -code)
                  or ("exited with code " .. code)
      err = lmp.error("WorkerLost", ("worker %s (pid %d) %s during a task")
                      :format(w.proc.name, w.proc.pid, how), {pid = w.proc.pid, exitcode = code})
    end
    for i = #w.inflight, 1, -1 do  -- backwards: requeued tasks keep their order
      local task = w.inflight[i]
      if i == 1 and err then
        self.tasks[task.id] = nil
        task.job:_chunk(task.base, false, err)
      else
        task.worker, task.started = nil, nil
        local q = self.queue                         -- never started: run it
        q.first = q.first - 1                        -- elsewhere, first
        q[q.first] = task
      end
    end
    w.conn:close()
    pcall(w.proc.close, w.proc)
    -- A closed pool still owes its queued tasks a worker: the one that
    -- ended may have retired (maxtasksperchild) or died after close().
    if self.state == "running" or (self.state == "closed" and self.queue.first <= self.queue.last) then
      self:_spawn()
    end
  end

  -- What this pool waits on, appended to `list`; returns the time left to
  -- the nearest task deadline (or nil).
  function Pool:_watch(list, t)
    local nearest
    for _, w in ipairs(self.workers) do
      if not w.conn.closed then list[#list + 1] = w.conn end
      list[#list + 1] = w.proc
      local task = w.inflight[1]
      if task and task.timeout and task.started then
        local left = task.started + task.timeout - t
        if not nearest or left < nearest then nearest = left > 0 and left or 0 end
      end
    end
    return nearest
  end

  -- Reads every reply that has arrived from a worker; returns true if the
  -- worker has ended (end of file, or its socket was reset by its death).
  function Pool:_drain(w)
    while not w.conn.closed do
      local ok, ready = pcall(w.conn.poll, w.conn)
      if not ok then return true end
      if not ready then return false end
      local okr, msg = pcall(w.conn.recv, w.conn)
      if not okr or msg == nil then return true end
      self:_reply(w, msg)
    end
    return true
  end

  -- Handles what `ready` (from connection.wait) says about this pool:
  -- replies, ended workers, tasks past their deadline; then dispatches.
  function Pool:_handle(ready)
    local ended = {}
    for _, obj in ipairs(ready) do
      for _, w in ipairs(self.workers) do
        if obj == w.conn then
          if self:_drain(w) then ended[w] = true end
        elseif obj == w.proc then
          ended[w] = true
        end
      end
    end
    for _, w in ipairs(self.workers) do
      if w.broken then ended[w] = true end
    end
    for w in pairs(ended) do
      self:_drain(w)  -- replies sent before the end are still in the pipe
      self:_bury(w)
    end
    local t = now()
    for _, w in ipairs(self.workers) do
      local task = w.inflight[1]
      if task and task.timeout and task.started and t - task.started >= task.timeout then
        w.proc:kill()
        self:_bury(w, lmp.error("TimeoutError",
          ("task timed out after %g s; worker %s (pid %d) was killed and replaced")
          :format(task.timeout, w.proc.name, w.proc.pid)))
      end
    end
    self:_dispatch()
  end

  -- Waits up to `timeout` seconds (nil: until something happens) for any
  -- pool: a pool that waits also serves the others, so that every pool's
  -- callbacks run while the program waits on one of them.
  local pumping = false

  -- What the pools wait on, for lmp's other blocking calls: while user code
  -- waits in Connection:recv, join, wait..., results are still collected
  -- and callbacks run (runtime/lmp_loop.c, lmp__wait_fds_bg).
  background = function(run)
    if pumping then return nil end
    if run then return lmp.poll(0) end
    local fds, t = {}, now()
    for p in pairs(live) do
      if p.state ~= "terminated" then
        for _, w in ipairs(p.workers) do
          if not w.conn.closed then fds[#fds + 1] = w.conn:fileno() end
          fds[#fds + 1] = w.proc.sentinel
        end
      end
    end
    return fds
  end

  local function pump_all(timeout)
    if pumping then return end  -- a callback that waits: no nested pump
    pumping = true
    local ok, err = pcall(function()
      local list, t, pools = {}, now(), {}
    for p in pairs(live) do
      if p.state ~= "terminated" then
        pools[#pools + 1] = p
        local nearest = p:_watch(list, t)
        if nearest and (not timeout or nearest < timeout) then timeout = nearest end
      end
    end
      local ready = lmp.connection.wait(list, timeout)
      for _, p in ipairs(pools) do p:_handle(ready) end
    end)
    pumping = false
    if not ok then error(err, 0) end
  end

  function Pool:_pump(timeout)
    live[self] = true
    pump_all(timeout)
  end

  ---------------------------------------------------------------------------
  -- The API

  local function last_options(n, ...)
    if n == 0 then return nil end
    local opts = select(n, ...)
    if type(opts) == "table" and select("#", ...) == n then return opts end
    return nil
  end

  local function default_chunksize(self, len)
    local size, extra = floor(len / (self.size * 4)), len % (self.size * 4)
    if extra > 0 then size = size + 1 end
    return size > 0 and size or 1
  end

  -- The checks every submitting call makes: the pool runs, fn is a
  -- function, the callbacks and the options are what they must be.
  local function check_call(self, what, fn, callback, error_callback, opts)
    self:_check_running(what)
    I.check_type(fn, "function", what, "fn")
    check_optional(callback, "function", what, "callback")
    check_optional(error_callback, "function", what, "error_callback")
    if opts ~= nil then
      I.check_type(opts, "table", what, "options")
      check_optional(opts.timeout, "number", what, "timeout")
    end
  end

  function Pool:apply_async(fn, args, callback, error_callback, opts)
    check_call(self, "Pool:apply_async", fn, callback, error_callback, opts)
    check_optional(args, "table", "Pool:apply_async", "args")
    args = args or {}
    local job = new_job(self, 1, {callback = callback, error_callback = error_callback,
                                  timeout = opts and opts.timeout})
    job.single = true
    self:_function(fn, job)
    self:_submit(true, {n = 1, {n = args.n or #args, unpack(args, 1, args.n or #args)}}, job, 1)
    return job
  end

  function Pool:apply(fn, args, opts)
    check_call(self, "Pool:apply", fn, nil, nil, opts)
    check_optional(args, "table", "Pool:apply", "args")
    local r = self:apply_async(fn, args, nil, nil, opts)
    return r:get()
  end

  local function map_job(self, what, fn, list, star, chunksize, callback, error_callback, opts)
    check_call(self, what, fn, callback, error_callback, opts)
    I.check_type(list, "table", what, "list", "an array table")
    local len = #list
    if star then
      for i = 1, len do
        if type(list[i]) ~= "table" then
          raise("TypeError", "%s: list[%d] must be a table of arguments, not %s", what, i,
                type(list[i]))
        end
      end
    end
    if chunksize == nil then chunksize = default_chunksize(self, len) end
    check_positive_integer(chunksize, what, "chunksize")
    local nchunks = math.ceil(len / chunksize)
    local job = new_job(self, nchunks, {callback = callback, error_callback = error_callback,
                                        timeout = opts and opts.timeout})
    if nchunks == 0 then job:_finish(true, {}) end
    if nchunks > 0 then self:_function(fn, job) end
    for c = 0, nchunks - 1 do
      local base = c * chunksize + 1
      local n = math.min(chunksize, len - base + 1)
      local items = {n = n}
      for i = 1, n do items[i] = list[base + i - 1] end
      self:_submit(star, items, job, base)
    end
    job.progress = opts and opts.progress and len
    return job
  end

  function Pool:map_async(fn, list, chunksize, callback, error_callback)
    return map_job(self, "Pool:map_async", fn, list, false, chunksize, callback, error_callback)
  end

  function Pool:starmap_async(fn, list, chunksize, callback, error_callback)
    return map_job(self, "Pool:starmap_async", fn, list, true, chunksize, callback, error_callback)
  end

  local progress_bar  -- defined below

  local function map_sync(self, what, star, fn, list, ...)
    local opts = last_options(select("#", ...), ...)
    local chunksize = select(1, ...)
    if chunksize == opts then chunksize = nil end
    local job = map_job(self, what, fn, list, star, chunksize, nil, nil, opts)
    if opts and opts.progress then
      local bar = progress_bar(#list)
      while not job.done do
        self:_pump(0.1)
        local n = 0
        for _ in pairs(job.results) do n = n + 1 end
        bar(n)
      end
      bar(#list, true)
    end
    return job:get()
  end

  function Pool:map(fn, list, ...) return map_sync(self, "Pool:map", false, fn, list, ...) end
  function Pool:starmap(fn, list, ...) return map_sync(self, "Pool:starmap", true, fn, list, ...) end

  -- imap / imap_unordered: lazily, with a bounded number of chunks ahead.
  local function imap(self, what, ordered, fn, iterable, ...)
    local opts = last_options(select("#", ...), ...)
    check_call(self, what, fn, nil, nil, opts)
    opts = opts or {}
    local chunksize = select(1, ...)
    if chunksize == nil or chunksize == opts then chunksize = 1 end
    check_positive_integer(chunksize, what, "chunksize")
    local limit = opts.buffersize or BUFFER_PER_WORKER * self.size
    check_positive_integer(limit, what, "buffersize")
    local source
    if type(iterable) == "table" then
      local i, n = 0, #iterable
      source = function()
        if i >= n then return nil end
        i = i + 1
        return iterable[i]
      end
    elseif type(iterable) == "function" then
      source = iterable
    else
      raise("TypeError", "%s: expected an array table or an iterator function, not %s",
            what, type(iterable))
    end
    local exhausted, submitted, outstanding = false, 0, 0
    local done = {}        -- index -> {ok, value}
    local order = {first = 1, last = 0}  -- imap_unordered: completion order
    local next_index, total = 1, nil
    local bar = opts.progress and progress_bar(nil)
    local sizes = {}  -- first index of a chunk in flight -> its item count
    local sink = setmetatable({opts = {timeout = opts.timeout}}, {__index = {
      -- A chunk that failed gives one entry, its error, at its first index;
      -- the rest of its items have no results.
      _chunk = function(_, base, ok, values)
        local n = ok and (values.n or #values) or 1
        if ok then sizes[base] = nil end
        for i = 1, n do
          if ok then done[base + i - 1] = {true, values[i]}
          else done[base + i - 1] = {false, values} end
          if not ordered then
            order.last = order.last + 1
            order[order.last] = base + i - 1
          end
        end
      end}})
    self:_function(fn, sink)
    local function fill()
      while not exhausted and outstanding < limit do
        local items = {}
        for i = 1, chunksize do
          local v = source()
          if v == nil then exhausted = true break end
          items[i] = v
        end
        local n = #items
        if n > 0 then
          items.n = n
          sizes[submitted + 1] = n
          self:_submit(false, items, sink, submitted + 1)
          submitted = submitted + n
          outstanding = outstanding + 1
        end
        if exhausted then total = submitted end
      end
    end
    local consumed_in_chunk, since_compact = 0, 0
    -- Hands entry i to the caller: `span` items are done with (a failed
    -- chunk counts for all its items).
    local function take(i, r)
      done[i] = nil
      local span = 1
      if not r[1] then
        span = sizes[i] or 1
        sizes[i] = nil
      end
      next_index = ordered and i + span or next_index + span
      consumed_in_chunk = consumed_in_chunk + span
      outstanding = outstanding - floor(consumed_in_chunk / chunksize)
      consumed_in_chunk = consumed_in_chunk % chunksize
      if bar then bar(next_index - 1) end
      -- `done`, `order` and `sizes` are keyed by ever larger numbers;
      -- LuaJIT keeps the room of keys long gone, so they are copied now and
      -- then to keep memory constant over an endless input.
      since_compact = since_compact + span
      if since_compact >= 4096 then
        since_compact = 0
        local d, z = {}, {}
        for k, v in pairs(done) do d[k] = v end
        for k, v in pairs(sizes) do z[k] = v end
        done, sizes = d, z
        local o = {first = order.first, last = order.last}
        for k = order.first, order.last do o[k] = order[k] end
        order = o
      end
      if not r[1] then error(r[2], 0) end
      return i, r[2]
    end
    return function()
      fill()
      while true do
        if total and next_index > total then
          if bar then bar(total, true) end
          return nil
        end
        if ordered then
          local r = done[next_index]
          if r then return take(next_index, r) end
        elseif order.first <= order.last then
          local i = order[order.first]
          order[order.first] = nil
          order.first = order.first + 1
          return take(i, done[i])
        end
        self:_pump(nil)
        fill()
      end
    end
  end

  function Pool:imap(fn, iterable, ...) return imap(self, "Pool:imap", true, fn, iterable, ...) end
  function Pool:imap_unordered(fn, iterable, ...)
    return imap(self, "Pool:imap_unordered", false, fn, iterable, ...)
  end

  function Pool:close()
    if self.state == "running" then self.state = "closed" end
  end

  function Pool:terminate()
    if self.state == "terminated" then return end
    self.state = "terminated"
    for _, w in ipairs(self.workers) do pcall(w.proc.terminate, w.proc) end
    local err = lmp.error("ProcessError", "the pool was terminated")
    for _, w in ipairs(self.workers) do
      w.proc:join(5)
      w.conn:close()
      pcall(w.proc.close, w.proc)
    end
    self.workers = {}
    for id, task in pairs(self.tasks) do
      self.tasks[id] = nil
      task.job:_chunk(task.base, false, err)
    end
    self.queue = {first = 1, last = 0}
    live[self] = nil
  end

  function Pool:join()
    if self.state == "running" then
      raise("ValueError", "Pool:join: close() or terminate() the pool first")
    end
    while next(self.tasks) do self:_pump(nil) end
    live[self] = nil  -- no background work on a pool that is going away
    for _, w in ipairs(self.workers) do
      w.conn:close()                    -- end of file: the worker returns
      w.proc:join()
      pcall(w.proc.close, w.proc)
    end
    self.workers = {}
  end

  -- Runs due callbacks of every pool, waiting up to `timeout` seconds
  -- (no timeout: do not wait).
  function lmp.poll(timeout)
    if timeout == nil then return pump_all(0) end
    pump_all(I.timeout(timeout, "lmp.poll"))
  end

  -- A progress bar on stderr, only if stderr is a terminal.
  progress_bar = function(total)
    if not core.isatty(2) then return function() end end
    local t0, last = now(), 0
    return function(n, final)
      local t = now()
      if not final and t - last < 0.1 then return end
      last = t
      local rate = n / math.max(t - t0, 1e-9)
      local line
      if total and total > 0 then
        local width = 30
        local filled = floor(width * n / total)
        local eta = rate > 0 and (total - n) / rate or 0
        line = ("\r[%s%s] %d/%d  %.1f/s  ETA %ds "):format(("#"):rep(filled),
          ("."):rep(width - filled), n, total, rate, floor(eta + 0.5))
      else
        line = ("\r%d done  %.1f/s "):format(n, rate)
      end
      io.stderr:write(line, final and "\n" or "")
      io.stderr:flush()
    end
  end

  lmp.AsyncResult = AsyncResult

  -- At exit, open pools are terminated before lmp joins the children, so
  -- that no worker is replaced while the program ends.
  I.at_exit[#I.at_exit + 1] = function()
    core.set_background(nil)
    for p in pairs(live) do pcall(p.terminate, p) end
  end
end
