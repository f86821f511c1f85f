-- lmp.pool.result: AsyncResult, the outcome of one pool call (an apply, or
-- every chunk of a map).
--
-- The scheduler hands it each chunk's outcome (_chunk); it keeps the
-- results in input order, finishes at the first failure or when the last
-- chunk is in, draws the call's progress bar and queues the call's
-- callbacks, which the pump runs (lmp.pool.pump).
return function(core, lmp, I, pump, progress)
  local AsyncResult = I.class("AsyncResult")
  local table_new = require "table.new"
  local pack = require "lmp.pool.pack"

  function AsyncResult:_describe()
    if not self.done then return "pending" end
    return self.ok and "ready" or "failed"
  end

  -- opts: the call's options (lmp.pool reads them); nitems: for the bar.
  function AsyncResult.new(pool, nchunks, opts, nitems, callback, error_callback)
    local job = setmetatable({pool = pool, pending = nchunks, results = table_new(nitems, 0),
                              opts = opts, callback = callback, error_callback = error_callback,
                              done = false, ndone = 0}, AsyncResult)
    if opts.progress then job.bar = progress(nitems) end
    return job
  end

  function AsyncResult:_finish(ok, value)
    if self.done then return end
    self.done, self.ok, self.value = true, ok, value
    if not ok then self.pool:_drop_queued(self) end
    if self.tickets then
      for _, ticket in ipairs(self.tickets) do pump.wake(ticket) end
      self.tickets = nil
    end
    if self.bar then self.bar(self.ndone, true) end
    local cb
    if ok then cb = self.callback else cb = self.error_callback end
    if cb then pump.later(cb, value) end
  end

  -- A chunk of the call is over: `base` is the index of its first item.
  function AsyncResult:_chunk(base, ok, values)
    if self.done then return end
    if not ok then return self:_finish(false, values) end
    local results, n = self.results
    if type(values) ~= "table" then  -- a frame of numbers (lmp.pool.pack)
      pack.unpack_into(values, results, base)
      n = pack.count(values)
    else
      n = values.n or #values
      for i = 1, n do results[base + i - 1] = values[i] end
    end
    self.ndone = self.ndone + n
    if self.bar then self.bar(self.ndone) end
    self.pending = self.pending - 1
    if self.pending == 0 then
      if self.single then results = results[1] end
      self:_finish(true, results)
    end
  end

  function AsyncResult:ready() return self.done end

  function AsyncResult:successful()
    if not self.done then
      I.raise("ValueError", "AsyncResult:successful: the result is not ready")
    end
    return self.ok
  end

  -- Ctrl-C while a call is waited for cancels the call, as the person
  -- gave up on it: its queued tasks are dropped, its running ones killed,
  -- and the pool goes on (lmp.pool.scheduler).
  function AsyncResult:wait(timeout)
    timeout = I.timeout(timeout, "AsyncResult:wait")
    local deadline = timeout and core.now() + timeout
    while not self.done do
      local left = deadline and deadline - core.now()
      if left and left <= 0 then break end
      local ok, err = pcall(pump.pump, left)
      if not ok then
        if lmp.is_error(err, "KeyboardInterrupt") then self:cancel() end
        error(err, 0)
      end
    end
    return self.done
  end

  function AsyncResult:get(timeout)
    timeout = I.timeout(timeout, "AsyncResult:get")
    if not self:wait(timeout) then return nil, "timeout" end
    if not self.ok then error(self.value, 2) end
    return self.value
  end

  -- In a coroutine, yields until the call is over (or `timeout` seconds
  -- have passed), then returns what get would; lmp resumes the coroutine
  -- from lmp.poll, any blocking lmp call, or a host's lmp_dispatch.  On
  -- the main thread, it is get.
  function AsyncResult:await(timeout)
    timeout = I.timeout(timeout, "AsyncResult:await")
    local co, main = coroutine.running()
    if co == nil or main then return self:get(timeout) end
    if not self.done and timeout ~= 0 then
      local ticket = pump.await(co, timeout)
      self.tickets = self.tickets or {}
      self.tickets[#self.tickets + 1] = ticket
      -- Resumed by someone else before the ticket was woken, it waits on.
      repeat coroutine.yield() until ticket.woken
    end
    if not self.done then return nil, "timeout" end
    if not self.ok then error(self.value, 2) end
    return self.value
  end

  -- Drops the tasks not started, kills and replaces the workers running
  -- the others; get then raises a CancelledError.  False if the call was
  -- already over.
  function AsyncResult:cancel()
    if self.done then return false end
    self.pool:_cancel(self)
    if self.done then return false end  -- its result came in just now
    self:_finish(false, lmp.error("CancelledError", "the call was cancelled"))
    return true
  end

  return AsyncResult
end
