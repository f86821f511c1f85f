-- lmp.broker.pool: lmp.Pool{broker = URL}, the Pool API (lmp.pool) over a
-- Redis server, with workers on any number of machines (`lmp worker`,
-- lmp.broker.worker).  SPEC section 14; docs/scale-out.md.
--
-- The calls (map, imap, apply, their async forms, callbacks, progress,
-- retries, cancel) are lmp.pool's own: this file replaces what lies
-- under them, the scheduler.  A task is the frame a local worker would
-- get; it goes to the queue's stream of tasks with the fields c (this
-- pool), i (the task's id), b (the frame), e (its envelope
--   {key, timeout, tries, attempt}:
-- key names the call's function, stored once at fn:CLIENT:KEY; tries is
-- how many deliveries this entry may have before it fails with
-- WorkerLost) and m (HMAC-SHA256 of c, i, e, b under the authkey).  Replies come on this
-- pool's own stream, results:CLIENT, with the fields i, a (the attempt),
-- w (the worker), r (the reply: a frame of numbers, or the codec's
-- {ok, value}) and m (of CLIENT, i, a, r).
--
-- Nothing waits on Redis when a task is submitted: tasks wait in the
-- outbox, and go out, and replies come in, while the program waits in
-- lmp (lmp.pool.pump), as a local pool's do.  When the connection breaks
-- (or Redis restarts), the pool reconnects with backoff; tasks whose entry
-- Redis no longer has, and whose reply has not come, are sent again.  A
-- task may then run twice; its first reply is the one that counts.
return function(core, lmp, I, Pool, pump, R, A)
  local codec = lmp.codec
  local pack = require "lmp.pool.pack"
  local deque = require "lmp.pool.deque"
  local ffi = require "ffi"
  local now = core.now

  local BrokerPool = I.class("Pool")
  setmetatable(BrokerPool, {__index = Pool})

  local CONNECT_TIMEOUT = 2     -- seconds to reach the server
  local COMMAND_TIMEOUT = 10    -- a server slower than this is taken as gone
  local BLOCK_MS = 1000         -- how long one read of replies waits in Redis
  local READ_COUNT = 1000       -- replies per read
  local SEND_BATCH = 256        -- tasks per round trip
  local FUNCTION_TTL = 86400    -- seconds a call's function stays in Redis
  local DEFAULT_LEASE = 30
  local BINARY = {binary = true}

  local OPTIONS = {broker = true, queue = true, authkey = true, lease = true, insecure = true,
                   processes = true, task_timeout = true, soft_timeout = true, retries = true,
                   retry_on = true}
  local LOCAL_ONLY = {initializer = true, initargs = true, maxtasksperchild = true,
                      max_memory_per_child = true}

  -- The bell the pump waits on: this pool's connection for replies, which
  -- becomes readable when its blocking read of replies returns.
  local Bell = {}
  Bell.__index = Bell
  function Bell:fileno() return self.fd end
  I.waitable(Bell, function(bell)
    return false, {fd = function() return bell.fd end, close = function() end}
  end)

  -- Whether stream id a ("ms-seq") comes after b.
  local function later(a, b)
    local am, as = a:match("^(%d+)-(%d+)$")
    local bm, bs = b:match("^(%d+)-?(%d*)$")
    if not am then return false end
    if not bm then return true end
    am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs) or 0
    return am > bm or (am == bm and as > bs)
  end

  local function hex(s)
    return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
  end

  local function check_queue(queue, what)
    if queue == nil then return "lmp" end
    I.check_type(queue, "string", what, "queue", "a string")
    if not queue:match("^[%w_.-]+$") or #queue > 200 then
      I.raise("ValueError", "%s: queue must be letters, digits, '_', '.' or '-', not %q", what,
              queue)
    end
    return queue
  end

  local function check_lease(lease, what)
    if lease == nil then return DEFAULT_LEASE end
    I.check_type(lease, "number", what, "lease", "a number of seconds")
    if not (lease > 0) then I.raise("ValueError", "%s: lease must be a positive number of seconds", what) end
    return lease
  end

  ---------------------------------------------------------------------------
  -- The connections

  -- Drops the connections after an error; the next turn of the pump
  -- reconnects, after the backoff.
  function BrokerPool:_lost(why)
    if self.cmd then self.cmd:close() end
    if self.reader then self.reader:close() end
    self.cmd, self.reader, self.bell, self.reading = nil, nil, nil, false
    self.down = self.down or why
    self.backoff = R.next_backoff(self.backoff)
    self.retry_at = now() + self.backoff
  end

  local function ensure_group(c, keys)
    local r, msg, how = R.call(c, COMMAND_TIMEOUT, "XGROUP", "CREATE", keys.tasks, R.GROUP, "0",
                               "MKSTREAM")
    if r == nil and not (how == "reply" and msg:find("BUSYGROUP", 1, true)) then
      return nil, msg, how
    end
    return true
  end

  -- Opens both connections; nil and the error if the server cannot be
  -- reached (or refuses the password: how = "auth").
  function BrokerPool:_connect(timeout)
    local cmd, err, how = R.connect(self.cfg, timeout)
    if not cmd then return nil, err, how end
    local reader
    reader, err, how = R.connect(self.cfg, timeout)
    if not reader then
      cmd:close()
      return nil, err, how
    end
    local ok
    ok, err = ensure_group(cmd, self.keys)
    if not ok then
      cmd:close()
      reader:close()
      return nil, ("broker %s: %s"):format(self.cfg.shown, err)
    end
    self.cmd, self.reader, self.reading = cmd, reader, false
    self.bell = setmetatable({fd = reader:fileno()}, Bell)
    self.fn_sent = {}
    return true
  end

  -- After the connection came back: tasks sent whose entry Redis lost
  -- (it restarted without them) and whose reply has not come are sent
  -- again.  Replies are read after the entries are looked at: a worker
  -- writes its reply before it deletes the task's entry.
  function BrokerPool:_recover()
    local posted = {}
    for _, task in pairs(self.tasks) do
      if task.entry then posted[#posted + 1] = task end
    end
    local missing = {}
    for first = 1, #posted, SEND_BATCH do
      local cmds = {}
      for i = first, math.min(first + SEND_BATCH - 1, #posted) do
        local e = posted[i].entry
        cmds[#cmds + 1] = {"XRANGE", self.keys.tasks, e, e}
      end
      local replies, err = R.pipeline(self.cmd, cmds, COMMAND_TIMEOUT)
      if not replies then return self:_lost(err) end
      for k, r in ipairs(replies) do
        if type(r) == "table" and #r == 0 then missing[#missing + 1] = posted[first + k - 1] end
      end
    end
    repeat
      local got = self:_read_results(nil, true)
      if got == nil then return end
    until not got
    for _, task in ipairs(missing) do
      if self.tasks[task.id] == task then
        task.entry = nil
        self.outbox:push_front(task)
        self.nqueued = self.nqueued + 1
      end
    end
  end

  function BrokerPool:_reconnect()
    if self.cmd or now() < (self.retry_at or 0) then return end
    local ok, err = self:_connect(math.min(CONNECT_TIMEOUT, 0.5))
    if not ok then
      self.down = err
      self.backoff = R.next_backoff(self.backoff)
      self.retry_at = now() + self.backoff
      return
    end
    self.down, self.backoff = nil, nil
    self:_recover()
  end

  ---------------------------------------------------------------------------
  -- Tasks out

  -- Whether key names a function the pool keeps for later calls
  -- (lmp.pool's fn_keys: no upvalues, nothing that can change).
  local function kept_key(self, key)
    for _, kept in pairs(self.fn_keys) do
      if kept[1] == key then return true end
    end
    return false
  end

  -- A task is over for this pool (done, failed, cancelled): its call's
  -- function leaves Redis with the last of the call's tasks, unless the
  -- pool keeps it for the next call.
  function BrokerPool:_forget(task)
    self.tasks[task.id] = nil
    local key = task.key
    if not key then return end
    local users = self.fn_users[key] - 1
    if users > 0 then
      self.fn_users[key] = users
      return
    end
    self.fn_users[key] = nil
    if kept_key(self, key) then return end
    self.fn_frames[key], self.fn_sent[key] = nil, nil
    self.fn_dels[#self.fn_dels + 1] = self.keys.fn(self.client, tostring(key))
  end

  function BrokerPool:_queue_task(job, id, frame, base, size)
    if type(frame) ~= "string" then frame = ffi.string(frame, size) end
    local key = job.fnframe and job.key or false
    local task = {id = id, job = job, base = base, body = frame, attempts = 1, key = key}
    if key then self.fn_users[key] = (self.fn_users[key] or 0) + 1 end
    self.tasks[id] = task
    self:_post(task)
    return task
  end

  -- A map over numbers: its chunks are framed now (a local pool cuts them
  -- as workers come free; here every chunk goes to Redis at once).
  function BrokerPool:_queue_source(job, list, len, chunksize)
    for base = 1, len, chunksize do
      local n = math.min(chunksize, len - base + 1)
      self.next_id = self.next_id + 1
      self:_queue_task(job, self.next_id, pack.task(self.next_id, job.key, list, base, n,
                                                    job.opts.soft_timeout), base)
    end
  end

  function BrokerPool._drop_source() return 0 end

  -- Wraps the task in its envelope (for this attempt) and queues it.
  function BrokerPool:_post(task)
    local job, o = task.job, task.job.opts
    local key = task.key
    if key and not self.fn_frames[key] then self.fn_frames[key] = job.fnframe end
    local hard = o.timeout or (o.soft_timeout and o.soft_timeout + o.grace) or false
    local tries = (o.retries or 0) + 2 - task.attempts
    task.env = codec.encode({key, hard, tries, task.attempts}, BINARY)
    task.mac = R.mac(self.authkey, self.client, tostring(task.id), task.env, task.body)
    task.entry = nil
    self.outbox:push(task)
    self.nqueued = self.nqueued + 1
  end

  -- Sends what waits: functions first, then deletions, then up to
  -- SEND_BATCH tasks, in one round trip.
  function BrokerPool:_flush()
    local c = self.cmd
    if not c then return end
    local q = self.outbox
    -- The replies read are deleted with the next tasks, not in a round
    -- trip of their own (an apply would pay for it), unless they pile up.
    if q.count == 0 and #self.dels == 0 and #self.fn_dels == 0
       and #self.acked < READ_COUNT and now() - self.flushed_at < 1 then
      return
    end
    self.flushed_at = now()
    local cmds, sent = {}, {}
    -- The functions of the tasks about to go, unless Redis has them (and
    -- will for a while yet).
    local t = now()
    for i = 0, math.min(q.count, SEND_BATCH) - 1 do
      local key = q.slots[(q.head - 1 + i) % q.cap + 1].key
      local at = key and self.fn_sent[key]
      if key and (not at or t - at > FUNCTION_TTL / 2) and self.fn_frames[key] then
        local k, frame = tostring(key), self.fn_frames[key]
        local mac = R.mac(self.authkey, self.client, "fn", k, frame)
        cmds[#cmds + 1] = {"SET", self.keys.fn(self.client, k), string.char(#mac) .. mac .. frame,
                           "EX", FUNCTION_TTL}
        self.fn_sent[key] = t
      end
    end
    if #self.dels > 0 then
      cmds[#cmds + 1] = {"XDEL", self.keys.tasks, unpack(self.dels)}
      self.dels = {}
    end
    if #self.fn_dels > 0 then
      cmds[#cmds + 1] = {"DEL", unpack(self.fn_dels)}
      self.fn_dels = {}
    end
    if #self.acked > 0 then
      cmds[#cmds + 1] = {"XDEL", self.keys.results(self.client), unpack(self.acked)}
      self.acked = {}
    end
    local first = #cmds + 1
    while q.count > 0 and #sent < SEND_BATCH do
      local task = q:pop()
      self.nqueued = self.nqueued - 1
      if self.tasks[task.id] == task then
        sent[#sent + 1] = task
        cmds[#cmds + 1] = {"XADD", self.keys.tasks, "*", "c", self.client, "i", task.id,
                           "e", task.env, "b", task.body, "m", task.mac}
      end
    end
    if #cmds == 0 then return end
    local replies, err, how = R.pipeline(c, cmds, COMMAND_TIMEOUT)
    if not replies and how ~= "reply" then
      -- Sent again once the connection is back; what did reach Redis
      -- may run twice, and its first reply counts.
      for i = #sent, 1, -1 do
        q:push_front(sent[i])
        self.nqueued = self.nqueued + 1
      end
      self.fn_sent = {}
      return self:_lost(err)
    end
    replies = replies or {}
    for k, task in ipairs(sent) do
      local r = replies[first + k - 1]
      if type(r) == "string" then
        task.entry = r
      elseif self.tasks[task.id] == task then
        self:_forget(task)
        self.counts.failed = self.counts.failed + 1
        task.job:_chunk(task.base, false, lmp.error("OSError",
          ("broker %s refused a task: %s"):format(self.cfg.shown, type(r) == "table" and r.err or "?")))
      end
    end
  end

  ---------------------------------------------------------------------------
  -- Replies in

  local function reply_error(self, task, value, worker)
    local err
    if type(value) ~= "table" then value = {message = tostring(value)} end
    if value.system then
      err = lmp.error(value.kind or "ProcessError", tostring(value.message), {worker = worker})
      if value.final then err.final = true end
    else
      err = lmp.error("RemoteError", tostring(value.message or "?"),
                      {traceback = value.traceback, remote_kind = value.kind, worker = worker})
    end
    if value.deliveries and value.deliveries > 1 then
      task.attempts = task.attempts + value.deliveries - 1
    end
    return err
  end

  function BrokerPool:_task_failed(task, err)
    if Pool._retryable(task, err) then
      task.attempts = task.attempts + 1
      self.counts.retried = self.counts.retried + 1
      return self:_post(task)
    end
    self:_forget(task)
    self.counts.failed = self.counts.failed + 1
    err.attempts = task.attempts
    task.job:_chunk(task.base, false, err)
  end

  function BrokerPool:_result(f)
    local id = tonumber(f.i)
    local task = id and self.tasks[id]
    if not task or type(f.r) ~= "string" then return end  -- a second reply, or a cancelled task's
    if not R.mac_ok(self.authkey, f.m, self.client, f.i, tostring(f.a), f.r) then
      local err = lmp.error("AuthenticationError",
        ("the reply to a task from worker %s failed authentication (has the worker this " ..
         "pool's authkey?)"):format(tostring(f.w)))
      err.final = true
      return self:_task_failed(task, err)
    end
    local r, ok, value = f.r, nil, nil
    if pack.is_frame(r) then
      if not pack.valid(r) then
        return self:_task_failed(task, lmp.error("CodecError", "a malformed reply frame from worker "
                                                 .. tostring(f.w)))
      end
      ok, value = true, r
    else
      local decoded, msg = pcall(codec.decode, r)
      if not decoded or type(msg) ~= "table" then
        return self:_task_failed(task, lmp.error("CodecError", "a reply from worker " ..
                                                 tostring(f.w) .. " cannot be decoded"))
      end
      ok, value = msg[1], msg[2]
    end
    -- A failure of an earlier attempt (a duplicate delivery) is old news.
    if not ok and (tonumber(f.a) or 1) < task.attempts then return end
    if ok then
      self:_forget(task)
      self.counts.done = self.counts.done + 1
      task.job:_chunk(task.base, true, value)
    else
      self:_task_failed(task, reply_error(self, task, value, f.w))
    end
  end

  -- Reads replies: waits up to `timeout` for the blocking read in flight
  -- (`drain`: reads what is there now, without blocking, on the command
  -- connection).  Returns true if replies came, false if none, nil if
  -- the connection broke.
  function BrokerPool:_read_results(timeout, drain)
    local key = self.keys.results(self.client)
    local r, err, how
    if drain then
      r, err, how = R.call(self.cmd, COMMAND_TIMEOUT, "XREAD", "COUNT", READ_COUNT, "STREAMS", key,
                           self.last)
    else
      local c = self.reader
      if not c then return false end
      if not self.reading then
        c:send("XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS", key, self.last)
        self.reading = true
      end
      r, err, how = c:read(timeout)
      if r == nil and how == "timeout" then return false end
      self.reading = false
    end
    if r == nil then
      self:_lost(err)
      return nil
    end
    if type(r) ~= "table" or type(r[1]) ~= "table" then return false end
    local entries = r[1][2]
    for _, entry in ipairs(entries) do
      if later(entry[1], self.last) then self.last = entry[1] end
      self.acked[#self.acked + 1] = entry[1]
      self:_result(R.fields(entry[2]))
    end
    return #entries > 0
  end

  ---------------------------------------------------------------------------
  -- What the pump calls (lmp.pool.pump; as lmp.pool.scheduler's)

  local Hub = {}
  Hub.__index = Hub

  -- Sends what waits, then waits up to `timeout` for replies.
  function Hub:receive(timeout)
    local p = self.pool
    if p.state == "terminated" then return nil end
    p:_reconnect()
    p:_flush()
    if not p.reader then
      -- Down: nothing to wait on but the time of the next attempt.
      lmp.connection.wait({p.idle}, math.min(timeout or 0.05, math.max((p.retry_at or 0) - now(), 0)))
      return nil
    end
    if p:_read_results(timeout) then return true, nil end
    return nil
  end

  function Hub:arm()
    local p = self.pool
    if p.reader and not p.reading then
      p.reader:send("XREAD", "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS",
                    p.keys.results(p.client), p.last)
      local ok, err = p.reader:flush()
      if not ok then p:_lost(err) else p.reading = true end
    end
    return p.bell or p.idle
  end

  function Hub.close() end

  function BrokerPool:_take(msg) return msg end

  function BrokerPool:_take_replies()
    if self.state == "terminated" then return false end
    self:_reconnect()
    self:_flush()
    local any = false
    -- (the replies read are deleted with the next round trip)
    while self:_read_results(0) do any = true end
    return any
  end

  -- The time left to the next attempt to reconnect (nil: connected).
  function BrokerPool:_nearest(t)
    if self.cmd or self.state == "terminated" then return nil end
    return math.max((self.retry_at or t) - t, 0)
  end

  function BrokerPool:_watch(_, _, t) return self:_nearest(t) end
  function BrokerPool._fds() end
  function BrokerPool:_handle() self:_flush() end

  ---------------------------------------------------------------------------
  -- Cancelling, ending

  -- A cancelled task's entry is deleted: a worker that has not taken it
  -- never will, one that runs it sees it gone at its next heartbeat and
  -- kills the process running it.  Its reply, if one comes, is ignored.
  local function cancel(self, job)
    self:_take_replies()
    for _, task in pairs(self.tasks) do
      if task.job == job then
        self:_forget(task)
        if task.entry then self.dels[#self.dels + 1] = task.entry end
      end
    end
    self:_flush()
  end

  function BrokerPool:_cancel(job) pump.hold(cancel, self, job) end
  function BrokerPool:_drop_queued(job)
    for _, task in pairs(self.tasks) do
      if task.job == job then
        self:_forget(task)
        if task.entry then self.dels[#self.dels + 1] = task.entry end
      end
    end
  end

  function BrokerPool:_end_workers()
    I.raise("ValueError", "Pool:terminate_workers/kill_workers: a broker pool's workers are " ..
            "`lmp worker` processes, ended where they run (SIGTERM hands their tasks back)")
  end

  -- Deletes what this pool keeps in Redis, if it can within a moment.
  local function clean_up(self)
    if self.cmd then
      local cmds = {{"DEL", self.keys.results(self.client)}}
      if #self.dels > 0 then cmds[#cmds + 1] = {"XDEL", self.keys.tasks, unpack(self.dels)} end
      for key in pairs(self.fn_frames) do self.fn_dels[#self.fn_dels + 1] = self.keys.fn(self.client, tostring(key)) end
      if #self.fn_dels > 0 then cmds[#cmds + 1] = {"DEL", unpack(self.fn_dels)} end
      R.pipeline(self.cmd, cmds, 1)
    end
    if self.cmd then self.cmd:close() end
    if self.reader then self.reader:close() end
    self.cmd, self.reader, self.bell = nil, nil, nil
    self.idle_writer:close()
    self.idle:close()
  end

  function BrokerPool:_describe()
    local where = self.cfg.shown .. " queue " .. self.queue
    if self.down and self.state ~= "terminated" then where = where .. ", reconnecting" end
    return ("%s, %s"):format(self.state, where)
  end

  local function terminate(self)
    self.state = "terminated"
    pump.remove(self)
    local err = lmp.error("ProcessError", "the pool was terminated")
    for id, task in pairs(self.tasks) do
      self.tasks[id] = nil
      if task.entry then self.dels[#self.dels + 1] = task.entry end
      task.job:_chunk(task.base, false, err)
    end
    self.outbox:drain()
    self.nqueued = 0
    clean_up(self)
  end

  function BrokerPool:terminate()
    if self.state == "terminated" then return end
    pump.hold(terminate, self)
  end

  function BrokerPool:join()
    if self.state == "running" then
      I.raise("ValueError", "Pool:join: close() or terminate() the pool first")
    end
    if self.state == "terminated" then return end
    while next(self.tasks) do pump.pump(nil) end
    pump.remove(self)
    self.state = "terminated"
    pump.hold(clean_up, self)
  end

  -- Live workers: the consumers of the group heard from within a lease,
  -- and their processes (from the workers hash).
  function BrokerPool:stats()
    local c = self.counts
    local s = {workers = 0, busy = 0, queued = self.nqueued, done = c.done, failed = c.failed,
               retried = c.retried, replaced = 0, queue_length = 0, pending = {},
               broker = self.down and "reconnecting" or "connected"}
    if not self.cmd or self.state == "terminated" then return s end
    local replies = R.pipeline(self.cmd, {
      {"XINFO", "GROUPS", self.keys.tasks},
      {"XPENDING", self.keys.tasks, R.GROUP},
      {"XINFO", "CONSUMERS", self.keys.tasks, R.GROUP},
      {"HGETALL", self.keys.workers},
    }, 2)
    if not replies then return s end
    for _, g in ipairs(replies[1]) do
      local fields = R.fields(g)
      if fields.name == R.GROUP then s.queue_length = tonumber(fields.lag) or 0 end
    end
    s.queued = s.queued + s.queue_length
    s.busy = tonumber(replies[2][1]) or 0
    for _, pair in ipairs(type(replies[2][4]) == "table" and replies[2][4] or {}) do
      s.pending[pair[1]] = tonumber(pair[2])
    end
    local sizes = R.fields(replies[4])
    for _, consumer in ipairs(replies[3]) do
      local fields = R.fields(consumer)
      if (tonumber(fields.idle) or math.huge) < self.lease * 1000 then
        s.workers = s.workers + (tonumber(sizes[fields.name]) or 1)
      end
    end
    self.size = self.fixed_size or math.max(s.workers, 1)
    return s
  end

  ---------------------------------------------------------------------------
  -- The pool

  local function new(opts)
    local what = "lmp.Pool"
    for k in pairs(opts) do
      if LOCAL_ONLY[k] then
        I.raise("ValueError", "%s: %s is not an option of a broker pool (its workers are " ..
                "`lmp worker` processes, shared by every pool of the queue)", what, tostring(k))
      end
      if not OPTIONS[k] then I.raise("ValueError", "%s: unknown option %s", what, tostring(k)) end
    end
    local cfg = R.parse(opts.broker, what)
    local queue = check_queue(opts.queue, what)
    local lease = check_lease(opts.lease, what)
    local authkey = R.check_authkey(opts.authkey, opts.insecure, what)
    if opts.processes ~= nil then A.check_positive_integer(opts.processes, what, "processes") end
    A.check_common(opts, what)
    local idle, idle_writer = lmp.Pipe(false)
    local self = setmetatable({
      broker = true, cfg = cfg, keys = R.keys(queue), queue = queue, lease = lease,
      authkey = authkey,
      client = hex(core.random_bytes(8)), fixed_size = opts.processes, size = opts.processes or 1,
      task_timeout = opts.task_timeout, soft_timeout = opts.soft_timeout,
      retries = opts.retries, retry_on = opts.retry_on,
      state = "running", tasks = {}, outbox = deque.new(), nqueued = 0, next_id = 0, next_key = 0,
      fn_keys = setmetatable({}, {__mode = "k"}), fn_frames = {}, fn_sent = {}, fn_users = {},
      fn_dels = {},
      dels = {}, acked = {}, last = "0", flushed_at = 0, workers = {}, idle = idle, idle_writer = idle_writer,
      counts = {done = 0, failed = 0, retried = 0, replaced = 0},
    }, BrokerPool)
    self.defaults = {timeout = self.task_timeout, soft_timeout = self.soft_timeout,
                     retries = self.retries, retry_on = self.retry_on, grace = A.SOFT_GRACE}
    self.hub = setmetatable({pool = self}, Hub)
    local ok, err, how = self:_connect(CONNECT_TIMEOUT)
    if not ok then
      idle:close()
      idle_writer:close()
      I.raise(how == "auth" and "AuthenticationError" or "OSError", "%s: %s", what, err)
    end
    if not opts.processes then self:stats() end
    pump.add(self)
    return self
  end

  return {new = new, class = BrokerPool}
end
