-- lmp.pool.worker: the loop a Pool worker process runs (the local
-- transport, lmp.pool.transport, starts it as the target
-- "lmp.pool.worker:main").
--
-- Frames from the pool, on the worker's ring of tasks (lmp.pool.transport):
--   {key, fn}                     the function of one call of the pool
--                                 (map, apply_async, ...), kept under `key`
--                                 for that call's later tasks; the worker
--                                 keeps the last FUNCTIONS_KEPT, and the
--                                 pool counts them the same way;
--   {id, key, star, items, soft [, fn]}
--                                 a task: fn(item), or fn(unpack(item))
--                                 when star, for each item; `soft`, if
--                                 set, is its soft timeout in seconds; an
--                                 apply's function comes inside its one
--                                 task, the others' in a {key, fn} before;
--   false                         the end: the pool is done with it.
-- Replies, on the pool's ring of replies, one per task:
-- {id, true, results, retiring, slot} or {id, false, err, retiring, slot};
-- `retiring` says that this was the worker's last task (maxtasksperchild,
-- or max_memory_per_child exceeded) and that it ends now, `slot` which
-- worker this is.  Before its tasks, the worker says {0, true} once its
-- initializer has run, or {0, false, err} if the initializer failed (and
-- then ends).
--
-- lmp.pool installs this module (with lmp's core) as
-- package.loaded["lmp.pool.worker"].
return function(core, lmp)
  local codec = lmp.codec
  local unpack = unpack or table.unpack
  local table_new = require "table.new"
  local pack = require "lmp.pool.pack"
  local queue_put, queue_get = core.queue_put, core.queue_get

  local M = {}

  M.FUNCTIONS_KEPT = 4

  local function failure(e)
    local kind = lmp.is_error(e) and e.kind or nil
    return {message = lmp.is_error(e) and e.message or tostring(e), kind = kind,
            traceback = debug.traceback("", 2):gsub("^\n", "")}
  end

  local function run_chunk(fn, star, items, soft)
    if soft then core.soft_deadline(soft) end
    local n = items.n or #items
    local results = table_new(n, 1)
    results.n = n
    for i = 1, n do
      if star then
        local a = items[i]
        results[i] = fn(unpack(a, 1, a.n or #a))
      else
        results[i] = fn(items[i])
      end
    end
    -- Disarmed inside the protected call: a deadline that fires now fails
    -- this task, never the loop below.
    if soft then core.soft_deadline(nil) end
    return results
  end

  local function disarmed(e)
    core.soft_deadline(nil)
    return failure(e)
  end

  -- Runs fn over the items of one task as the loop below does: true and
  -- the results, or false and the error as a reply carries it (message,
  -- kind, traceback).  For the broker's workers (lmp.broker.task).
  function M.run_task(fn, star, items, soft)
    return xpcall(run_chunk, soft and disarmed or failure, fn, star, items, soft)
  end

  -- The resident set of this process, in MiB.
  local function rss_mib()
    local f = io.open("/proc/self/status")
    if not f then return 0 end
    local kib = f:read("*a"):match("VmRSS:%s*(%d+)")
    f:close()
    return (tonumber(kib) or 0) / 1024
  end

  local function encode_error(e, what)
    local message = lmp.is_error(e) and e.message or tostring(e)
    return {message = (message:gsub("^item%[3%]", what)), kind = "CodecError"}
  end

  function M.main(tasks, inbox, slot, initializer, initargs, maxtasks, max_memory, ringer,
                  forked)
    core.ignore_interrupts()
    -- A forked worker's resident set starts with every page it shares
    -- with its parent; only what it has added since is its own.
    local inherited = (max_memory and forked) and rss_mib() or 0
    local inbox_seg, tasks_seg = inbox._seg, tasks._seg
    local bell = ringer:fileno()  -- rung by a put when the pool armed it
    local function reply(id, ok, value, retiring)
      if ok and id ~= 0 then
        local f, size = pack.reply_frame(id, value, retiring, slot)
        if f then return queue_put(inbox_seg, f, nil, size, bell) end
      end
      -- (big strings and FFI arrays of the result go by handle: the pool
      -- takes them at once, and a worker waits for that before it exits)
      local sent, e = pcall(queue_put, inbox_seg, {id, ok, value, retiring, slot}, nil, nil, bell,
                            true)
      if not sent then
        queue_put(inbox_seg, {id, false, encode_error(e, ok and "result" or "error"), retiring, slot},
                  nil, nil, bell)
      end
    end
    if initializer then
      initargs = initargs or {}
      local ok, err = xpcall(initializer, failure, unpack(initargs, 1, initargs.n or #initargs))
      if not ok then
        reply(0, false, err)
        return
      end
    end
    reply(0, true)
    local cache, kept, done = {}, {}, 0
    local decode = codec.decode
    local receiver = pack.receiver()
    -- The next task, read: a frame of numbers, or the codec's; nil at the
    -- end.
    local function next_task()
      core.shared_sweep()  -- big results the pool has taken (lmp.buffers)
      local frame = receiver:get(queue_get, tasks_seg, nil, true)
      if not frame then return nil end
      if type(frame) ~= "string" or pack.is_frame(frame) then return pack.read_task(frame) end
      return decode(frame)
    end
    while true do
      local msg = next_task()
      if not msg then return end
      if msg[4] == nil then  -- {key, fn}
        cache[msg[1]] = msg[2]
        kept[#kept + 1] = msg[1]
        if #kept > M.FUNCTIONS_KEPT then cache[table.remove(kept, 1)] = nil end
        msg = next_task()
        if not msg then return end
      end
      local fn = msg[6]  -- an apply's function comes with its one task
      if fn == nil then fn = cache[msg[2]] end
      local ok, value = xpcall(run_chunk, msg[5] and disarmed or failure,
                               fn, msg[3], msg[4], msg[5])
      done = done + 1
      local retiring = (maxtasks and done >= maxtasks)
                       or (max_memory and rss_mib() - inherited > max_memory) or nil
      reply(msg[1], ok, value, retiring)
      if retiring then return end
    end
  end

  return M
end
