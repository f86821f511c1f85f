-- lmp.pool.pump: waiting on every pool at once, and running callbacks.
--
-- Nothing runs behind the user's back: results are collected, workers
-- replaced and callbacks run while the program waits in a pool call (get,
-- map, imap, join, ...), in lmp.poll(), or in any other blocking lmp call
-- (the background hook of runtime/lmp_loop.c).  A pool that waits serves
-- every live pool, so that the callbacks of one run while the program
-- waits on another.
--
-- Callbacks run after the pools have been served, outside the pump: a
-- callback may submit, wait, cancel or terminate like any other code.
return function(core, lmp, I)
  local P = {}

  local live = setmetatable({}, {__mode = "k"})
  local pumping = false
  local due = {first = 1, last = 0}  -- callbacks to run: {fn, value}

  -- Queues fn(value) to run once the current pump is over.
  function P.later(fn, value)
    due.last = due.last + 1
    due[due.last] = {fn, value}
  end

  -- Returns how many callbacks ran.
  local function run_due()
    local ran = 0
    while due.first <= due.last do
      ran = ran + 1
      local c = due[due.first]
      due[due.first] = nil
      due.first = due.first + 1
      local ok, err = xpcall(c[1], debug.traceback, c[2])
      if not ok then
        io.stderr:write("lmp.Pool: error in a callback: ", tostring(err), "\n")
        io.stderr:flush()
      end
    end
    -- Keys only grow: a fresh table keeps memory flat.
    if due.first > 1024 then due = {first = 1, last = 0} end
    return ran
  end

  -- What the pools wait on, for lmp's other blocking calls (the hook is
  -- called with run = true when one of these descriptors is ready).
  local function background(run)
    if pumping then return nil end
    if run then return P.pump(0) end
    local fds = {}
    for p in pairs(live) do p:_fds(fds) end
    return fds
  end

  -- Runs fn(...) as the pump would: lmp's waits inside it (a send that
  -- waits for a worker to read) serve no pool, so that no pool code runs
  -- in the middle of another (a frame sent half way, a worker buried
  -- twice).
  function P.hold(fn, ...)
    if pumping then return fn(...) end
    pumping = true
    local ok, err = pcall(fn, ...)
    pumping = false
    if not ok then error(err, 0) end
  end

  function P.add(pool)
    live[pool] = true
    core.set_background(background)
  end

  function P.remove(pool) live[pool] = nil end

  -- Waits up to `timeout` seconds (nil: until something happens) for any
  -- pool, then serves them all and runs the callbacks that are due;
  -- returns how many ran.
  function P.pump(timeout)
    if pumping then return 0 end  -- the background hook, inside our own wait
    pumping = true
    local ok, err = pcall(function()
      local list, owner, ends, pools, t = {}, {}, {}, {}, core.now()
      for p in pairs(live) do
        pools[#pools + 1] = p
        local nearest = p:_watch(list, owner, ends, t)
        if nearest and (not timeout or nearest < timeout) then timeout = nearest end
      end
      if due.first <= due.last then timeout = 0 end
      if #list == 0 and not timeout then
        -- Nothing could ever wake this wait up: a bug, never a hang.
        I.raise("ProcessError", "lmp.Pool: waiting with no worker to wait for")
      end
      local ready = lmp.connection.wait(list, timeout)
      for _, p in ipairs(pools) do p:_handle(ready, owner, ends) end
    end)
    pumping = false
    local ran = run_due()
    if not ok then error(err, 0) end
    return ran
  end

  -- Serves every pool and runs the callbacks that are due, waiting up to
  -- `timeout` seconds for one (no timeout: do not wait); returns how many
  -- ran.
  function lmp.poll(timeout)
    if timeout == nil then return P.pump(0) end
    timeout = I.timeout(timeout, "lmp.poll")
    local deadline = timeout and core.now() + timeout
    repeat
      local ran = P.pump(deadline and math.max(deadline - core.now(), 0))
      if ran > 0 then return ran end
    until deadline and core.now() >= deadline
    return 0
  end

  -- At exit, open pools are terminated before lmp joins the children, so
  -- that no worker is replaced while the program ends.
  I.at_exit[#I.at_exit + 1] = function()
    core.set_background(nil)
    for p in pairs(live) do pcall(p.terminate, p) end
  end

  return P
end
