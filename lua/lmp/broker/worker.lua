-- lmp.broker.worker: what `lmp worker` runs (lua/lmp/cli/worker.lua):
-- serves the tasks of a queue (lmp.broker.pool) with a local pool of j
-- processes.
--
-- This process is one consumer of the queue's group.  It reads at most
-- 2j tasks at a time (XREADGROUP), checks each one's MAC, and hands it
-- to the local pool as plain strings (lmp.broker.task runs it there), so
-- that nothing of a task is decoded here and a task that kills its
-- process only costs a local worker.  A task's entry is acknowledged and
-- deleted only after its reply is written, in the same round trip.
--
-- Leases: every BEAT seconds, the entries held here are claimed again
-- (XCLAIM JUSTID: their idle time restarts), which is the heartbeat; an
-- entry that is gone was cancelled by its pool, and its local task is
-- cancelled too.  Every lease/2 seconds, entries idle for longer than the
-- lease (their worker stopped answering) are taken over (XAUTOCLAIM);
-- one delivered more times than its `tries` fails with WorkerLost.
--
-- On SIGTERM, tasks not started are handed back (added again as new
-- entries, the old ones acknowledged), running ones finish, and the
-- process exits 0.  When Redis goes away, the local pool goes on; replies
-- wait here, and the connection is made again with backoff.
return function(core, lmp, I, R)
  local M = {}
  local codec = lmp.codec
  local now = core.now

  local CONNECT_TIMEOUT = 5
  local COMMAND_TIMEOUT = 10
  local FUNCTIONS_KEPT = 64

  local function log(fmt, ...)
    io.stderr:write("lmp worker: ", fmt:format(...), "\n")
    io.stderr:flush()
  end

  local function hostname()
    local f = io.open("/proc/sys/kernel/hostname")
    local name = f and f:read("*l")
    if f then f:close() end
    return (name and name ~= "") and name or "localhost"
  end

  -- Runs in the local pool's processes: a module function, so that its
  -- frame is kept by the pool and each process decodes it once.
  local function run_remote(body, key, frame)
    return require("lmp.broker.task").run(body, key, frame)
  end

  local Worker = {}
  Worker.__index = Worker

  -- --- the connections -----------------------------------------------------

  function Worker:connect()
    local backoff
    while true do
      -- Asked to stop while Redis is away: what is held here is taken
      -- over by other workers once its lease runs out.
      if not self.stopping and core.terminate_requested() then
        log("SIGTERM: finishing the running tasks")
        self.stopping = now()
      end
      if self.stopping and now() - self.stopping > self.lease then return false end
      local cmd, err, how = R.connect(self.cfg, CONNECT_TIMEOUT)
      local reader
      if cmd then reader, err, how = R.connect(self.cfg, CONNECT_TIMEOUT) end
      if cmd and reader then
        local ok, msg, kind = R.call(cmd, COMMAND_TIMEOUT, "XGROUP", "CREATE", self.keys.tasks,
                                     R.GROUP, "0", "MKSTREAM")
        if ok or (kind == "reply" and msg:find("BUSYGROUP", 1, true)) then
          ok, msg = R.pipeline(cmd, {{"HSET", self.keys.workers, self.name, self.j}},
                               COMMAND_TIMEOUT)
        end
        if ok then
          self.cmd, self.reader, self.reading = cmd, reader, false
          if self.down then log("reconnected to %s", self.cfg.shown) end
          self.down = nil
          return true
        end
        err = msg
      end
      if cmd then cmd:close() end
      if reader then reader:close() end
      if how == "auth" then error(lmp.error("AuthenticationError", err), 0) end
      if not self.down then log("%s; trying again", err) end
      self.down = err
      backoff = R.next_backoff(backoff)
      -- The local pool goes on meanwhile (its callbacks run in this wait).
      lmp.connection.wait({self.wake}, backoff)
      self:drain_wake()
    end
  end

  function Worker:lost(err)
    if self.cmd then self.cmd:close() end
    if self.reader then self.reader:close() end
    self.cmd, self.reader, self.reading = nil, nil, false
    self.down = self.down or tostring(err)
    log("lost %s: %s", self.cfg.shown, tostring(err))
  end

  -- Commands on the command connection; nil (and the connection dropped)
  -- if it broke.
  function Worker:pipeline(cmds)
    if not self.cmd then return nil end
    local replies, err, how = R.pipeline(self.cmd, cmds, COMMAND_TIMEOUT)
    if not replies and how ~= "reply" then
      self:lost(err)
      return nil
    end
    return replies or {}
  end

  function Worker:drain_wake()
    while self.wake:poll(0) do self.wake:recv_bytes() end
    self.woken = false
  end

  -- --- tasks in ------------------------------------------------------------

  -- Writes a reply for the entry, and acknowledges and deletes it, now
  -- (or once Redis is back).  The loop is woken if it must read tasks
  -- again: a task's end makes room for more.
  function Worker:reply(held, reply)
    held.replied = true
    self.outbox[#self.outbox + 1] = {held = held, reply = reply}
    self:flush()
    if not self.reading and not self.woken then
      self.woken = true
      self.wake_writer:send_bytes("!")
    end
  end

  local function failure(kind, message, extra)
    local v = {message = message, kind = kind, system = true}
    for k, x in pairs(extra or {}) do v[k] = x end
    return codec.encode({false, v}, {binary = true})
  end

  -- The function of a call, from Redis, authenticated; nil and why.
  function Worker:function_frame(client, key)
    local id = client .. ":" .. key
    local frame = self.functions[id]
    if frame then return frame end
    local replies = self:pipeline({{"GET", self.keys.fn(client, key)}})
    if not replies then return nil, "the broker went away" end
    local v = replies[1]
    if type(v) ~= "string" or #v < 1 then
      return nil, "its function is no longer in Redis (the pool that sent it has ended)"
    end
    local n = v:byte(1)
    local mac, got = v:sub(2, 1 + n), v:sub(2 + n)
    if not R.mac_ok(self.authkey, mac, client, "fn", key, got) then
      return nil, "its function failed authentication"
    end
    self.functions[id] = got
    self.kept[#self.kept + 1] = id
    if #self.kept > FUNCTIONS_KEPT then self.functions[table.remove(self.kept, 1)] = nil end
    return got
  end

  -- A task entry, new or taken over; `deliveries`: how many times Redis
  -- has handed it out.
  function Worker:take(entry_id, fields, deliveries)
    local f = R.fields(fields)
    local client, id = f.c, f.i
    if type(client) ~= "string" or not client:match("^%x+$") or #client > 64
       or type(id) ~= "string" or not id:match("^%d+$") then
      -- Not lmp's: dropped, with nobody to tell.
      self:pipeline({{"XACK", self.keys.tasks, R.GROUP, entry_id}, {"XDEL", self.keys.tasks, entry_id}})
      return
    end
    local held = {entry = entry_id, client = client, id = id, fields = fields}
    self.held[entry_id] = held
    self.nheld = self.nheld + 1
    if type(f.e) ~= "string" or type(f.b) ~= "string"
       or not R.mac_ok(self.authkey, f.m, client, id, f.e, f.b) then
      return self:reply(held, failure("AuthenticationError",
        ("worker %s: the task failed authentication (has this worker the pool's authkey?)")
        :format(self.name), {final = true}))
    end
    local ok, env = pcall(codec.decode, f.e, {safe = true})
    if not ok or type(env) ~= "table" then
      return self:reply(held, failure("CodecError", "worker " .. self.name .. ": a malformed task",
                                      {final = true}))
    end
    local body, key, hard, tries = f.b, env[1], env[2], tonumber(env[3]) or 1
    held.attempt = tostring(tonumber(env[4]) or 1)
    if deliveries > tries then
      return self:reply(held, failure("WorkerLost",
        ("the task was delivered %d times and each worker holding it stopped answering " ..
         "(no heartbeat for %g s)"):format(deliveries - 1, self.lease),
        {final = true, deliveries = deliveries - 1}))
    end
    local frame
    if key then
      local why
      frame, why = self:function_frame(client, tostring(key))
      if not frame then
        return self:reply(held, failure("ProcessError", "worker " .. self.name .. ": " .. why,
                                        {final = true}))
      end
    end
    local extra = deliveries > 1 and {deliveries = deliveries} or nil
    held.args = {body, key and client .. ":" .. key or false, frame}
    -- The task is over in the local pool: the next one starts there
    -- before this one's reply goes to Redis.  A bug here must not leave
    -- the task held for ever (its heartbeat would keep it from every
    -- other worker): the task fails instead.
    local function guarded(fn)
      return function(v)
        self.running = self.running - 1
        local ok, err = xpcall(function()
          self:start_waiting()
          fn(v)
        end, debug.traceback)
        if not ok then
          log("internal error: %s", tostring(err))
          if not held.replied then
            self:reply(held, failure("ProcessError", "worker " .. self.name .. ": " .. tostring(err),
                                     {final = true}))
          end
        end
      end
    end
    held.opts = {
      timeout = type(hard) == "number" and hard or nil,
      callback = guarded(function(reply)
        if extra then
          -- The deliveries that were lost count as attempts.
          local dok, v = pcall(codec.decode, reply)
          if dok and type(v) == "table" and v[1] == false and type(v[2]) == "table" then
            v[2].deliveries = deliveries
            reply = codec.encode(v, {binary = true})
          end
        end
        self:reply(held, reply)
      end),
      error_callback = guarded(function(e)
        if held.cancelled then
          self:reply(held, nil)
        else
          local kind = lmp.is_error(e) and e.kind or "ProcessError"
          self:reply(held, failure(kind, ("worker %s: %s"):format(self.name,
            lmp.is_error(e) and e.message or tostring(e)), extra))
        end
      end),
    }
    self.waiting:push(held)
    self:start_waiting()
  end

  -- Hands waiting tasks to the local pool while it has a process free:
  -- never more, so that what has not started is here to hand back.
  function Worker:start_waiting()
    local q = self.waiting
    while self.running < self.j and q.count > 0 do
      local held = q:pop()
      if not held.cancelled then
        self.running = self.running + 1
        held.job = self.pool:apply_async(run_remote, held.args, held.opts)
      end
    end
  end

  -- Sends the replies that are ready, each with its acknowledgement.
  function Worker:flush()
    if #self.outbox == 0 or not self.cmd then return end
    local cmds, done = {}, {}
    for _, out in ipairs(self.outbox) do
      local held = out.held
      if out.reply then
        local results = self.keys.results(held.client)
        local attempt = held.attempt or "1"
        cmds[#cmds + 1] = {"XADD", results, "*", "i", held.id, "a", attempt, "w", self.name,
                           "r", out.reply,
                           "m", R.mac(self.authkey, held.client, held.id, attempt, out.reply)}
        -- A pool that went away without deleting its stream leaves it
        -- for a day at most (set now and then, not with every reply).
        local t = now()
        if t - (self.expiring[held.client] or -math.huge) > 3600 then
          if self.nexpiring > 10000 then self.expiring, self.nexpiring = {}, 0 end
          if not self.expiring[held.client] then self.nexpiring = self.nexpiring + 1 end
          cmds[#cmds + 1] = {"EXPIRE", results, 86400}
          self.expiring[held.client] = t
        end
      end
      cmds[#cmds + 1] = {"XACK", self.keys.tasks, R.GROUP, held.entry}
      cmds[#cmds + 1] = {"XDEL", self.keys.tasks, held.entry}
      done[#done + 1] = held
    end
    if not self:pipeline(cmds) then return end  -- sent again once connected
    self.outbox = {}
    for _, held in ipairs(done) do
      if self.held[held.entry] == held then
        self.held[held.entry] = nil
        self.nheld = self.nheld - 1
      end
    end
  end

  function Worker:capacity()
    if self.stopping then return 0 end
    return 2 * self.j - self.nheld
  end

  -- Reads new tasks: sends a blocking read if none is in flight; takes
  -- what a read brought.
  function Worker:read_tasks()
    local c = self.reader
    if not c then return end
    if not self.reading then
      local n = self:capacity()
      if n <= 0 then return end
      c:send("XREADGROUP", "GROUP", R.GROUP, self.name, "COUNT", n, "BLOCK", self.block_ms,
             "STREAMS", self.keys.tasks, ">")
      local ok, err = c:flush()
      if not ok then return self:lost(err) end
      self.reading = true
      return
    end
    local r, err, how = c:read(0)
    if r == nil then
      if how ~= "timeout" then self:lost(err) end
      return
    end
    self.reading = false
    if type(r) == "table" and type(r[1]) == "table" then
      for _, entry in ipairs(r[1][2]) do self:take(entry[1], entry[2], 1) end
      if self.stopping then self:hand_back() end
    end
    return self:read_tasks()
  end

  -- --- leases --------------------------------------------------------------

  -- The heartbeat: claims again what is held here.  An entry that did not
  -- come back was deleted: its pool cancelled it.
  function Worker:beat()
    local ids = {}
    for entry, held in pairs(self.held) do
      if not held.cancelled then ids[#ids + 1] = entry end
    end
    if #ids == 0 then return end
    local args = {"XCLAIM", self.keys.tasks, R.GROUP, self.name, 0}
    for _, id in ipairs(ids) do args[#args + 1] = id end
    args[#args + 1] = "JUSTID"
    local replies = self:pipeline({args})
    if not replies or type(replies[1]) ~= "table" then return end
    local back = {}
    for _, id in ipairs(replies[1]) do back[id] = true end
    for _, id in ipairs(ids) do
      local held = self.held[id]
      if not back[id] and held and not held.replied then
        held.cancelled = true
        if held.job then
          held.job:cancel()  -- its error_callback acknowledges it
        else
          self.held[id] = nil  -- still waiting here: dropped
          self.nheld = self.nheld - 1
        end
      end
    end
  end

  -- Takes over the entries whose worker stopped answering.
  function Worker:reclaim()
    local n = self:capacity()
    if n <= 0 or not self.cmd then return end
    local replies = self:pipeline({{"XAUTOCLAIM", self.keys.tasks, R.GROUP, self.name,
                                    math.floor(self.lease * 1000), "0-0", "COUNT", n}})
    if not replies or type(replies[1]) ~= "table" then return end
    local entries = replies[1][2]
    if type(entries) ~= "table" or #entries == 0 then return end
    local cmds = {}
    for _, entry in ipairs(entries) do
      cmds[#cmds + 1] = {"XPENDING", self.keys.tasks, R.GROUP, entry[1], entry[1], 1}
    end
    local counts = self:pipeline(cmds)
    if not counts then return end
    for i, entry in ipairs(entries) do
      local p = counts[i] and counts[i][1]
      local deliveries = type(p) == "table" and tonumber(p[4]) or 2
      if not self.held[entry[1]] and type(entry[2]) == "table" then
        self:take(entry[1], entry[2], deliveries)
      end
    end
  end

  -- Entries delivered here that this process does not know of (their
  -- read's reply was lost with the connection): taken as new ones.
  function Worker:adopt()
    local replies = self:pipeline({{"XREADGROUP", "GROUP", R.GROUP, self.name, "COUNT", 1000,
                                    "STREAMS", self.keys.tasks, "0"}})
    if not replies or type(replies[1]) ~= "table" or type(replies[1][1]) ~= "table" then return end
    local gone = {}
    for _, entry in ipairs(replies[1][1][2]) do
      if type(entry[2]) ~= "table" then
        gone[#gone + 1] = {"XACK", self.keys.tasks, R.GROUP, entry[1]}  -- deleted meanwhile
      elseif not self.held[entry[1]] then
        self:take(entry[1], entry[2], 1)
      end
    end
    if #gone > 0 then self:pipeline(gone) end
  end

  -- Consumers silent for long, with nothing pending, are forgotten.
  function Worker:prune()
    local replies = self:pipeline({{"XINFO", "CONSUMERS", self.keys.tasks, R.GROUP}})
    if not replies or type(replies[1]) ~= "table" then return end
    local cmds = {}
    for _, c in ipairs(replies[1]) do
      local f = R.fields(c)
      if f.name ~= self.name and tonumber(f.pending) == 0
         and (tonumber(f.idle) or 0) > 10 * self.lease * 1000 then
        cmds[#cmds + 1] = {"XGROUP", "DELCONSUMER", self.keys.tasks, R.GROUP, f.name}
        cmds[#cmds + 1] = {"HDEL", self.keys.workers, f.name}
      end
    end
    if #cmds > 0 then self:pipeline(cmds) end
  end

  -- --- ending --------------------------------------------------------------

  -- SIGTERM: the tasks that have not started go back to the queue as new
  -- entries; the running ones finish.
  function Worker:hand_back()
    self.stopping = self.stopping or now()
    local cmds, back = {}, {}
    for _, held in ipairs(self.waiting:drain()) do
      if not held.cancelled then
        back[#back + 1] = held
        cmds[#cmds + 1] = {"MULTI"}
        cmds[#cmds + 1] = {"XADD", self.keys.tasks, "*", unpack(held.fields)}
        cmds[#cmds + 1] = {"XACK", self.keys.tasks, R.GROUP, held.entry}
        cmds[#cmds + 1] = {"XDEL", self.keys.tasks, held.entry}
        cmds[#cmds + 1] = {"EXEC"}
      end
    end
    if #back == 0 then return end
    if self:pipeline(cmds) then log("handed %d task(s) back", #back) end
    for _, held in ipairs(back) do
      self.held[held.entry] = nil
      self.nheld = self.nheld - 1
    end
  end

  -- --- the loop ------------------------------------------------------------

  function Worker:serve()
    local beat = math.min(self.lease / 4, 0.5)
    local next_beat, next_reclaim, next_prune = now(), now(), now() + self.lease
    log("serving queue %s of %s as %s with %d processes", self.queue, self.cfg.shown, self.name,
        self.j)
    while true do
      if core.terminate_requested() and not self.handed_back then
        if not self.stopping then log("SIGTERM: finishing the running tasks") end
        self.handed_back = true
        self:hand_back()
      end
      if self.stopping and self.nheld == 0 and #self.outbox == 0 and not self.reading then break end
      if not self.cmd then
        if not self:connect() then break end
        self:adopt()
      end
      self:flush()
      self:read_tasks()
      local t = now()
      if t >= next_beat then
        self:beat()
        next_beat = t + beat
      end
      if t >= next_reclaim then
        self:reclaim()
        next_reclaim = t + self.lease / 2
      end
      if t >= next_prune then
        self:prune()
        next_prune = t + self.lease
      end
      self:flush()
      local list = {self.wake}
      if self.reader and self.reading then list[2] = self.reader_bell() end
      -- The local pool's replies run its callbacks inside this wait; its
      -- deadlines (hard timeouts) are served when the wait returns.
      local timeout = math.max(next_beat - now(), 0)
      local due = I.host.timeout()
      if due and due < timeout then timeout = due end
      if self.running >= self.j then
        -- Every process is busy: what comes next is one of their
        -- replies, which the pool's own wait sees soonest (it looks at
        -- its ring a while before it sleeps); new tasks can wait.
        lmp.poll(math.min(timeout, 0.05))
      else
        local ready = lmp.connection.wait(list, timeout)
        for _, x in ipairs(ready) do
          if x == self.wake then self:drain_wake() end
        end
        lmp.poll(0)
      end
    end
    if self.cmd then
      self:pipeline({{"HDEL", self.keys.workers, self.name}})
      self.cmd:close()
    end
    if self.reader then self.reader:close() end
    self.pool:close()
    self.pool:join()
    log("stopped")
    return 0
  end

  -- opts: {broker, queue, j, authkey, lease, insecure}
  function M.serve(opts)
    local what = "lmp worker"
    local cfg = R.parse(opts.broker, what)
    local authkey = R.check_authkey(opts.authkey, opts.insecure, what)
    local wake, wake_writer = lmp.Pipe(false)
    local self = setmetatable({
      cfg = cfg, queue = opts.queue or "lmp", keys = R.keys(opts.queue or "lmp"),
      j = opts.j or lmp.cpu_count(), authkey = authkey, lease = opts.lease or 30,
      name = hostname() .. "/" .. core.getpid(), held = {}, nheld = 0, outbox = {},
      waiting = require("lmp.pool.deque").new(), running = 0, expiring = {}, nexpiring = 0,
      functions = {}, kept = {}, wake = wake, wake_writer = wake_writer, woken = false,
    }, Worker)
    self.block_ms = math.max(math.floor(math.min(1000, self.lease * 250)), 1)
    core.catch_terminate()
    self.pool = lmp.Pool{processes = self.j}
    -- The reader's descriptor, as the waits take it.
    self.reader_bell = function() return self.reader:fileno() end
    return self:serve()
  end

  return M
end
