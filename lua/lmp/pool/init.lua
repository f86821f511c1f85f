-- lmp.pool: Pool (SPEC section 8): the API, and the pool's state.
--
-- A pool is made of parts, each in its own module:
--   lmp.pool.scheduler  the queue of tasks, which worker runs what,
--                       deadlines, retries, cancelling, replacing workers;
--   lmp.pool.transport  how the scheduler reaches its workers (local
--                       processes, one socketpair each);
--   lmp.pool.worker     the loop each worker runs;
--   lmp.pool.result     AsyncResult;
--   lmp.pool.pump       waiting on all pools at once, running callbacks;
--   lmp.pool.imap       imap and imap_unordered;
--   lmp.pool.progress   the progress bar.
-- This file checks arguments and options, turns calls into tasks, and
-- closes, terminates and joins.
return function(core, lmp, I)
  local codec = lmp.codec
  local unpack = unpack or table.unpack
  local floor = math.floor
  local raise = I.raise
  local table_new = require "table.new"  -- LuaJIT: a table made at its size
  local pack = require "lmp.pool.pack"
  local deque = require "lmp.pool.deque"

  -- The worker's module needs lmp's core (for soft deadlines), which a
  -- plain require cannot give it: installed here, for the worker process
  -- to find as the target "lmp.pool.worker:main".
  local worker = require("lmp.pool.worker")(core, lmp)
  package.loaded["lmp.pool.worker"] = worker

  local Pool = I.class("Pool")
  local pump = require("lmp.pool.pump")(core, lmp, I)
  local progress = require("lmp.pool.progress")(core)
  local transport = require("lmp.pool.transport")(core, lmp, worker.main)
  local AsyncResult = require("lmp.pool.result")(core, lmp, I, pump, progress)
  require("lmp.pool.scheduler")(core, lmp, I, Pool, transport, pump, worker.FUNCTIONS_KEPT)

  local BINARY = {binary = true}
  -- Tasks of a local pool: big strings and FFI arrays go by handle
  -- (lmp.buffers); not over Redis, which cannot carry a handle.
  local SHARED = {binary = true, share = true}

  -- Encodes a task's frame; the shared buffers it made stay with the task
  -- (a task that runs again needs them) and go when the task's record is
  -- collected: not with the call, which may be an endless imap.
  local function encode_task(self, value)
    if self.broker then return pcall(codec.encode, value, BINARY) end
    local mark = I.shared_mark()
    local ok, frame = pcall(codec.encode, value, SHARED)
    local pins = I.shared_since(mark)
    local holder
    if pins then
      holder = newproxy(true)
      getmetatable(holder).__gc = function()
        for _, seg in ipairs(pins) do seg:close() end
      end
    end
    return ok, frame, holder
  end

  -- Without a `timeout`, a task's hard deadline follows its soft one by
  -- this much: time for the task to clean up.
  local SOFT_GRACE = 1
  -- How long join waits for an idle worker to end before killing it.
  local JOIN_TIMEOUT = 10

  function Pool:_describe()
    return ("%s, %d workers"):format(self.state, #self.workers)
  end

  ---------------------------------------------------------------------------
  -- Checking arguments and options

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

  local function check_seconds(v, what, name)
    if v == nil then return end
    I.check_type(v, "number", what, name, "a number of seconds")
    if not (v > 0) then
      raise("ValueError", "%s: %s must be a positive number of seconds, not %s", what, name,
            tostring(v))
    end
  end

  local function check_retries(v, what, name)
    if v == nil then return end
    I.check_type(v, "number", what, name, "a whole number")
    if v < 0 or v ~= floor(v) then
      raise("ValueError", "%s: %s must be 0 or more, and whole, not %s", what, name, tostring(v))
    end
  end

  local function check_kinds(v, what, name)
    if v == nil then return end
    I.check_type(v, "table", what, name, "a list of error kinds")
    for i, k in ipairs(v) do
      if type(k) ~= "string" then
        raise("TypeError", "%s: %s[%d] must be an error kind (a string), not %s", what, name, i,
              type(k))
      end
    end
  end

  local function check_known(t, known, what, noun)
    for k in pairs(t) do
      if not known[k] then raise("ValueError", "%s: unknown %s %s", what, noun, tostring(k)) end
    end
  end

  local POOL_OPTIONS = {processes = true, initializer = true, initargs = true,
                        maxtasksperchild = true, task_timeout = true, soft_timeout = true,
                        retries = true, retry_on = true, max_memory_per_child = true}
  local CALL_OPTIONS = {timeout = true, soft_timeout = true, retries = true, retry_on = true,
                        callback = true, error_callback = true, progress = true,
                        buffersize = true}

  -- The options table of a call is its last argument, if that is a table
  -- (no other argument of a pool call is one).  Returns it and how many
  -- arguments come before it.
  local function trailing_options(...)
    local n = select("#", ...)
    if n > 0 and type((select(n, ...))) == "table" then return (select(n, ...)), n - 1 end
    return nil, n
  end

  -- The positional arguments before the options: the first npos of ...,
  -- up to three (the options table is never one of them).
  local function positional(npos, ...)
    local a, b, c = ...
    if npos < 3 then c = nil end
    if npos < 2 then b = nil end
    if npos < 1 then a = nil end
    return a, b, c
  end

  -- A call's options, with the pool's defaults folded in, checked; and its
  -- callback and error_callback (positional, or from the options).  A call
  -- without an options table shares the pool's defaults (self.defaults):
  -- most calls have none, and a table less per call counts in a tick.
  local function call_options(self, what, fn, opts, callback, error_callback)
    if self.broken then
      raise("ProcessError", "%s: the pool is broken: %s", what, tostring(self.broken.message))
    end
    if self.state ~= "running" then
      raise("ValueError", "%s: the pool is %s", what, self.state)
    end
    I.check_type(fn, "function", what, "fn")
    if opts == nil then
      check_optional(callback, "function", what, "callback")
      check_optional(error_callback, "function", what, "error_callback")
      return self.defaults, callback, error_callback
    end
    check_known(opts, CALL_OPTIONS, what, "option")
    callback, error_callback = callback or opts.callback, error_callback or opts.error_callback
    local o = {
      timeout = opts.timeout, soft_timeout = opts.soft_timeout,
      retries = opts.retries, retry_on = opts.retry_on,
      progress = opts.progress, buffersize = opts.buffersize, grace = SOFT_GRACE,
    }
    check_optional(callback, "function", what, "callback")
    check_optional(error_callback, "function", what, "error_callback")
    check_seconds(o.timeout, what, "timeout")
    check_seconds(o.soft_timeout, what, "soft_timeout")
    check_retries(o.retries, what, "retries")
    check_kinds(o.retry_on, what, "retry_on")
    if o.buffersize ~= nil then check_positive_integer(o.buffersize, what, "buffersize") end
    if o.timeout == nil then o.timeout = self.task_timeout end
    if o.soft_timeout == nil then o.soft_timeout = self.soft_timeout end
    if o.retries == nil then o.retries = self.retries end
    if o.retry_on == nil then o.retry_on = self.retry_on end
    return o, callback, error_callback
  end

  ---------------------------------------------------------------------------
  -- The pool

  -- Options a broker pool shares with a local one.
  local function check_common(opts, what)
    check_seconds(opts.task_timeout, what, "task_timeout")
    check_seconds(opts.soft_timeout, what, "soft_timeout")
    check_retries(opts.retries, what, "retries")
    check_kinds(opts.retry_on, what, "retry_on")
  end

  -- Pool{broker = URL}: lmp.broker.pool, loaded on first use.
  local broker, redis
  local function broker_redis()
    redis = redis or require("lmp.broker.redis")(core, lmp, I)
    return redis
  end
  local function broker_pool(opts)
    broker = broker or require("lmp.broker.pool")(core, lmp, I, Pool, pump, broker_redis(),
      {check_positive_integer = check_positive_integer, check_common = check_common,
       SOFT_GRACE = SOFT_GRACE})
    return broker.new(opts)
  end

  -- What `lmp worker` (lmp.cli.worker) runs, reached through the core.
  function core.broker_worker()
    return require("lmp.broker.worker")(core, lmp, I, broker_redis())
  end

  function lmp.Pool(opts)
    if type(opts) ~= "table" then opts = {processes = opts} end
    if opts.broker ~= nil then return broker_pool(opts) end
    check_known(opts, POOL_OPTIONS, "lmp.Pool", "option")
    local n = opts.processes
    if n == nil then n = lmp.cpu_count() end
    check_positive_integer(n, "lmp.Pool", "processes")
    if opts.maxtasksperchild ~= nil then
      check_positive_integer(opts.maxtasksperchild, "lmp.Pool", "maxtasksperchild")
    end
    check_optional(opts.initializer, "function", "lmp.Pool", "initializer")
    check_optional(opts.initargs, "table", "lmp.Pool", "initargs")
    check_common(opts, "lmp.Pool")
    if opts.max_memory_per_child ~= nil then
      I.check_type(opts.max_memory_per_child, "number", "lmp.Pool", "max_memory_per_child",
                   "a number of MiB")
      if not (opts.max_memory_per_child > 0) then
        raise("ValueError", "lmp.Pool: max_memory_per_child must be a positive number of MiB")
      end
    end
    local self = setmetatable({
      size = n, initializer = opts.initializer, initargs = opts.initargs,
      maxtasks = opts.maxtasksperchild, max_memory = opts.max_memory_per_child,
      task_timeout = opts.task_timeout, soft_timeout = opts.soft_timeout,
      retries = opts.retries, retry_on = opts.retry_on,
      hub = transport.open(), workers = {}, queue = deque.new(), nqueued = 0,
      tasks = {},
      next_id = 0, next_key = 0, state = "running", nstarted = 0, early_deaths = 0,
      fn_keys = setmetatable({}, {__mode = "k"}),  -- function -> {key, frame, fixed}
      counts = {done = 0, failed = 0, retried = 0, replaced = 0},
    }, Pool)
    self.defaults = {timeout = self.task_timeout, soft_timeout = self.soft_timeout,
                     retries = self.retries, retry_on = self.retry_on, grace = SOFT_GRACE}
    -- A pool collected while open takes its workers down with it (not in
    -- a child forked from this process: they are not the child's).
    local workers, owner = self.workers, core.getpid()
    self.method = I.pool_method  -- set by a context (lmp.get_context)
    self._gc = newproxy(true)
    getmetatable(self._gc).__gc = function()
      if core.getpid() ~= owner then return end
      for _, w in ipairs(workers) do w.ep:signal("terminate") end
    end
    for _ = 1, n do self:_spawn() end
    pump.add(self)
    return self
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

  -- A function is its bytecode, its upvalues and the globals it takes
  -- with it (lmp.captures).  Its frame can be kept, and a worker that has
  -- it is not sent it again, when none of these can change: no upvalues,
  -- and globals that are modules or C functions (they travel by
  -- reference), as long as each is still the one it was.  Returns what to
  -- check before the frame is used again (true: nothing), or nil.
  local function fixed(fn)
    if debug.getinfo(fn, "u").nups ~= 0 then return nil end
    local names, env = I.captures(fn)
    if not names then return true end
    if getmetatable(env) ~= nil then return nil end
    local values = {}
    for i, name in ipairs(names) do
      local v = rawget(env, name)
      if not (type(v) == "table" and I.module_name(v))
         and not (type(v) == "function" and debug.getinfo(v, "S").what == "C") then
        return nil
      end
      values[i] = v
    end
    return {names = names, env = env, values = values}
  end

  -- fn's kept frame {key, frame, fixed}, if it is still true to fn.
  local function kept_frame(self, fn)
    local kept = self.fn_keys[fn]
    if not kept or kept[3] == true then return kept end
    local f = kept[3]
    for i, name in ipairs(f.names) do
      if rawget(f.env, name) ~= f.values[i] then
        self.fn_keys[fn] = nil
        return nil
      end
    end
    return kept
  end

  -- Encodes fn, with its upvalues and globals as they are now, for the
  -- tasks of one call: job.key names it on the workers, job.fnframe
  -- carries it.
  local function function_frame(self, fn, job)
    local kept = kept_frame(self, fn)
    if kept then
      job.key, job.fnframe = kept[1], kept[2]
      return
    end
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
    local f = fixed(fn)
    if f then self.fn_keys[fn] = {job.key, frame, f} end
  end

  -- Queues a task: items[1..n] for the job's function, results delivered
  -- to job at base.
  local function submit(self, star, items, job, base)
    self.next_id = self.next_id + 1
    local id = self.next_id
    local numbers = not star and pack.task(id, job.key, items, 1, items.n or #items,
                                           job.opts.soft_timeout)
    if numbers then return self:_queue_task(job, id, numbers, base) end
    local ok, frame, pins = encode_task(self, {id, job.key, star, items, job.opts.soft_timeout})
    if not ok then error(task_error(frame, base, job), 0) end
    local task = self:_queue_task(job, id, frame, base)
    task.pins = pins
    return task
  end

  -- An apply is one task: its function travels inside its frame,
  -- {id, key, star, items, soft, fn}, one encoding instead of two.
  local function submit_with_function(self, fn, items, job)
    self.next_key = self.next_key + 1
    self.next_id = self.next_id + 1
    local id = self.next_id
    job.key = self.next_key
    local ok, frame, pins = encode_task(self, {id, job.key, true, items, job.opts.soft_timeout, fn})
    if not ok then
      local e = frame
      local rest = lmp.is_error(e, "CodecError") and e.message:match("^value%[6%](.*)$")
      if rest then error(lmp.error("CodecError", "function" .. rest), 0) end
      error(task_error(e, 1, job), 0)
    end
    local task = self:_queue_task(job, id, frame, 1)
    task.pins = pins
    return task
  end

  ---------------------------------------------------------------------------
  -- The API

  local function default_chunksize(self, len)
    local size, extra = floor(len / (self.size * 4)), len % (self.size * 4)
    if extra > 0 then size = size + 1 end
    return size > 0 and size or 1
  end

  local NO_ARGS = {}

  local function apply_job(self, what, fn, args, o, callback, error_callback)
    check_optional(args, "table", what, "args")
    args = args or NO_ARGS
    local job = AsyncResult.new(self, 1, o, 1, callback, error_callback)
    job.single = true
    local n = args.n or #args
    -- (A broker pool sends an apply's function inside its task: a frame
    -- stored in Redis would cost two more commands per apply.)
    if not self.broker and (kept_frame(self, fn) or fixed(fn)) then
      -- A kept function (function_frame): most applies send no function,
      -- and arguments that are numbers no codec either.
      function_frame(self, fn, job)
      local id = self.next_id + 1
      local numbers = pack.task(id, job.key, args, 1, n, o.soft_timeout, true)
      if numbers then
        self.next_id = id
        self:_queue_task(job, id, numbers, 1)
      else
        submit(self, true, {n = 1, {n = n, unpack(args, 1, n)}}, job, 1)
      end
    else
      submit_with_function(self, fn, {n = 1, {n = n, unpack(args, 1, n)}}, job)
    end
    return job
  end

  function Pool:apply_async(fn, args, ...)
    local opts, npos = trailing_options(...)
    local callback, error_callback = positional(npos, ...)
    local o, cb, ecb = call_options(self, "Pool:apply_async", fn, opts, callback, error_callback)
    return apply_job(self, "Pool:apply_async", fn, args, o, cb, ecb)
  end

  function Pool:apply(fn, args, opts)
    return apply_job(self, "Pool:apply", fn, args, call_options(self, "Pool:apply", fn, opts)):get()
  end

  -- Chunks of at least this many items are framed at the call (map_job).
  local BIG_CHUNK = 256

  local function map_job(self, what, star, fn, list, ...)
    local opts, npos = trailing_options(...)
    local chunksize, callback, error_callback = positional(npos, ...)
    local o, cb, ecb = call_options(self, what, fn, opts, callback, error_callback)
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
    local job = AsyncResult.new(self, nchunks, o, len, cb, ecb)
    if nchunks == 0 then job:_finish(true, {}) return job end
    function_frame(self, fn, job)
    if not star and chunksize < BIG_CHUNK then
      -- Small chunks of numbers are cut when workers can take them
      -- (lmp.pool.scheduler), from a copy of the list: a task each, made
      -- at the call, would cost more than the copy.  Big chunks are
      -- framed at the call (below): their frames are the copy.
      local copy = table_new(len, 0)
      for i = 1, len do
        local x = list[i]
        if type(x) ~= "number" then copy = nil break end
        copy[i] = x
      end
      if copy then
        self:_queue_source(job, copy, len, chunksize)
        return job
      end
    end
    for c = 0, nchunks - 1 do
      local base = c * chunksize + 1
      local n = math.min(chunksize, len - base + 1)
      local id = self.next_id + 1
      local numbers, size
      if not star then
        numbers, size = pack.task_frame(id, job.key, list, base, n, o.soft_timeout, false, true)
      end
      if numbers then  -- straight from the list (lmp.pool.pack)
        self.next_id = id
        self:_queue_task(job, id, numbers, base, size)
      else
        local items = table_new(n, 1)
        items.n = n
        for i = 1, n do items[i] = list[base + i - 1] end
        submit(self, star, items, job, base)
      end
    end
    return job
  end

  function Pool:map_async(fn, list, ...) return map_job(self, "Pool:map_async", false, fn, list, ...) end
  function Pool:starmap_async(fn, list, ...)
    return map_job(self, "Pool:starmap_async", true, fn, list, ...)
  end

  -- map and starmap take (fn, list [, chunksize] [, opts]): no callbacks
  -- in positions.
  local function map_sync(self, what, star, fn, list, ...)
    local opts, npos = trailing_options(...)
    local chunksize = npos >= 1 and (...) or nil
    if npos > 1 then raise("TypeError", "%s: takes (fn, list [, chunksize] [, options])", what) end
    return map_job(self, what, star, fn, list, chunksize, nil, nil, opts):get()
  end

  function Pool:map(fn, list, ...) return map_sync(self, "Pool:map", false, fn, list, ...) end
  function Pool:starmap(fn, list, ...) return map_sync(self, "Pool:starmap", true, fn, list, ...) end

  require("lmp.pool.imap")(core, lmp, I, pump, progress, Pool, {
    trailing_options = trailing_options, call_options = call_options,
    check_positive_integer = check_positive_integer, function_frame = function_frame,
    submit = submit,
  })

  function Pool:stats()
    local busy = 0
    for _, w in ipairs(self.workers) do
      if w.inflight[1] then busy = busy + 1 end
    end
    local c = self.counts
    return {workers = #self.workers, busy = busy, queued = self.nqueued, done = c.done,
            failed = c.failed, retried = c.retried, replaced = c.replaced}
  end

  function Pool:terminate_workers() self:_end_workers("terminate", "Pool:terminate_workers()") end
  function Pool:kill_workers() self:_end_workers("kill", "Pool:kill_workers()") end

  function Pool:close()
    if self.state == "running" then self.state = "closed" end
  end

  local function terminate(self)
    self.state = "terminated"
    pump.remove(self)
    local workers = self.workers
    for _, w in ipairs(workers) do w.ep:signal("terminate") end
    for _, w in ipairs(workers) do w.ep:finish(self._END_TIMEOUT) end
    for i = #workers, 1, -1 do workers[i] = nil end
    self.hub:close()
    local err = lmp.error("ProcessError", "the pool was terminated")
    for id, task in pairs(self.tasks) do
      self.tasks[id] = nil
      task.job:_chunk(task.base, false, err)
    end
    for _, queued in ipairs(self.queue:drain()) do
      if queued.source and self:_drop_source(queued.job) > 0 then queued.job:_chunk(1, false, err) end
    end
    self.nqueued = 0
  end

  function Pool:terminate()
    if self.state == "terminated" then return end
    pump.hold(terminate, self)
  end

  function Pool:join()
    if self.state == "running" then
      raise("ValueError", "Pool:join: close() or terminate() the pool first")
    end
    while next(self.tasks) or self.nqueued > 0 do pump.pump(nil) end
    pump.remove(self)  -- no background work on a pool that is going away
    pump.hold(function()
      local workers = self.workers
      for _, w in ipairs(workers) do w.ep:finish(JOIN_TIMEOUT) end
      for i = #workers, 1, -1 do workers[i] = nil end
      self.hub:close()
    end)
  end

  lmp.AsyncResult = AsyncResult
end
