-- lmp.pool.pump: waiting on every pool at once, and running callbacks.
--
-- Nothing runs behind the user's back: results are collected, workers
-- replaced and callbacks run while the program waits in a pool call (get,
-- map, imap, join, ...), in lmp.poll(), or in any other blocking lmp call
-- (the background hook of runtime/lmp_loop.c).  A pool that waits serves
-- every live pool, so that the callbacks of one run while the program
-- waits on another.
--
-- Replies come on each pool's hub (lmp.pool.transport), a ring in shared
-- memory, and the end of a worker through its sentinel.  With one pool,
-- the pump waits on the hub itself, which looks a while before it sleeps,
-- so that a reply is seen within microseconds, and looks at the sentinels
-- between slices of SLICE seconds; with several, it waits on all of them
-- through lmp.connection.wait.
--
-- Callbacks run after the pools have been served, outside the pump: a
-- callback may submit, wait, cancel or terminate like any other code.
return function(core, lmp, I)
  local P = {}
  local now, min = core.now, math.min
  local wait = lmp.connection.wait

  -- How late the end of a worker may be seen while replies come (SLICE),
  -- and while none has come for a while (QUIET_SLICE: a quiet pool wakes
  -- up less often, and sleeps without spinning first).
  local SLICE, QUIET_SLICE = 0.005, 0.05

  -- Ctrl-C in the lmp host (runtime/lmp_interrupt.c): raised as a
  -- KeyboardInterrupt where the pools' state is whole, at the start and
  -- end of a turn; the waits in between raise it themselves.
  local interrupt_flag = require("ffi").cast("volatile int *", core.interrupt_flag)

  local live = setmetatable({}, {__mode = "k"})
  local pumping = false
  local due = {first = 1, last = 0}  -- callbacks to run: {fn, value}
  local last_look = 0                -- when the sentinels were last looked at
  local slice = SLICE                -- grows while no reply comes

  -- Queues fn(value) to run once the current pump is over.
  function P.later(fn, value)
    due.last = due.last + 1
    due[due.last] = {fn, value}
  end

  -- Errors raised by callbacks (and by coroutines resumed from await) go
  -- to the handler of lmp.on_error, never to the code that was waiting:
  -- that may be a host's C loop (lmp_dispatch), or code that has nothing
  -- to do with the callback.
  local on_error  -- nil: print on stderr

  local function print_error(err, traceback)
    io.stderr:write("lmp: error in a callback: ", tostring(err), "\n", traceback or "", "\n")
    io.stderr:flush()
  end

  local function with_traceback(e) return {e, debug.traceback("", 2)} end

  -- Runs fn(...) and hands its error, if any, to the handler.
  function P.protected(fn, ...)
    local ok, caught = xpcall(fn, with_traceback, ...)
    if ok then return end
    local err, traceback = caught[1], caught[2]
    -- Ctrl-C is the person's, not the callback's: it goes on up.
    if lmp.is_error(err, "KeyboardInterrupt") then error(err, 0) end
    if on_error then
      local handled, e = xpcall(on_error, debug.traceback, err, traceback)
      if handled then return end
      print_error("the lmp.on_error handler failed: " .. tostring(e))
    end
    print_error(err, traceback)
  end

  -- Coroutines in AsyncResult:await: a ticket {co, deadline, woken} per
  -- wait.  A ticket is woken once, when its call is over (wake) or its
  -- deadline passes (expire), and its coroutine is resumed after the pump,
  -- as callbacks are.
  local timed = {}  -- tickets with a deadline, not woken yet

  local function resume(ticket)
    local ok, err = coroutine.resume(ticket.co)
    if not ok then error(err, 0) end
  end

  function P.await(co, timeout)
    local ticket = {co = co, woken = false, deadline = timeout and now() + timeout}
    if ticket.deadline then timed[#timed + 1] = ticket end
    return ticket
  end

  function P.wake(ticket)
    if ticket.woken then return end
    ticket.woken = true
    P.later(resume, ticket)
  end

  -- Wakes the tickets whose deadline has passed; returns the time left to
  -- the nearest other one (nil: none).
  local function expire(t)
    local nearest, kept = nil, 0
    for i = 1, #timed do
      local ticket = timed[i]
      timed[i] = nil
      if not ticket.woken then
        if ticket.deadline <= t then
          P.wake(ticket)
        else
          kept = kept + 1
          timed[kept] = ticket
          local left = ticket.deadline - t
          if not nearest or left < nearest then nearest = left end
        end
      end
    end
    return nearest
  end

  function lmp.on_error(fn)
    if fn ~= nil and type(fn) ~= "function" then
      I.raise("TypeError", "lmp.on_error: handler must be a function or nil, not %s", type(fn))
    end
    local previous = on_error
    on_error = fn
    return previous
  end

  -- Returns how many callbacks ran.
  local function run_due()
    local ran = 0
    while due.first <= due.last do
      ran = ran + 1
      local c = due[due.first]
      due[due.first] = nil
      due.first = due.first + 1
      P.protected(c[1], c[2])
    end
    -- Keys only grow: a fresh table keeps memory flat.
    if due.first > 1024 then due = {first = 1, last = 0} end
    return ran
  end

  -- What the pools wait on, for lmp's other blocking calls (the hook is
  -- called with run = true when one of these descriptors is ready): their
  -- workers' sentinels, and their hubs' bells, armed.
  local function background(run)
    if pumping then return nil end
    if run then return P.pump(0) end
    local fds = {}
    for p in pairs(live) do
      p:_fds(fds)
      fds[#fds + 1] = p.hub:arm():fileno()
    end
    return fds
  end

  -- In a child made by fork: the parent's pools, their callbacks and the
  -- coroutines waiting on them stay the parent's.  A pool object the child
  -- still holds says so if used.
  I.after_fork[#I.after_fork + 1] = function()
    for p in pairs(live) do
      p.state, p.workers = "terminated", {}
      p.broken = lmp.error("ProcessError", "this pool belongs to the parent process " ..
                           "(the child was forked)")
    end
    live = setmetatable({}, {__mode = "k"})
    due = {first = 1, last = 0}
    timed = {}
    pumping = false
    core.set_background(nil)
  end

  function P.add(pool)
    I.host.changed()
    live[pool] = true
    core.set_background(background)
  end

  function P.remove(pool)
    I.host.changed()
    live[pool] = nil
  end

  -- Runs fn(...) as the pump would: lmp's waits inside it serve no pool,
  -- so that no pool code runs in the middle of another (a worker buried
  -- twice, a queue dispatched from inside its own dispatch).
  function P.hold(fn, ...)
    if pumping then return fn(...) end
    pumping = true
    local ok, err = pcall(fn, ...)
    pumping = false
    if not ok then error(err, 0) end
  end

  local function serve(timeout)
    if interrupt_flag[0] ~= 0 then core.interrupt_raise() end
    I.shared_sweep()
    local pools, busy = {}, due.first <= due.last
    for p in pairs(live) do
      pools[#pools + 1] = p
      if p:_take_replies() then busy = true end
    end
    local list, owner, t = {}, {}, now()
    local awaited = expire(t)
    if due.first <= due.last then busy = true end
    if busy then timeout = 0 end
    if awaited and (not timeout or awaited < timeout) then timeout = awaited end
    for _, p in ipairs(pools) do
      local nearest = p:_watch(list, owner, t)
      if nearest and (not timeout or nearest < timeout) then timeout = nearest end
    end
    local ready
    if #pools == 1 and timeout ~= 0 then
      -- Wait on the one hub, a slice at a time.
      local p = pools[1]
      local msg, w = p.hub:receive(timeout and min(timeout, slice) or slice, slice > SLICE)
      if msg then
        slice = SLICE
        p:_take(msg, w)
        p:_take_replies()
      else
        slice = min(slice * 2, QUIET_SLICE)
      end
      t = now()
      if not msg or t - last_look >= SLICE then
        last_look = t
        ready = wait(list, 0)
      end
    elseif timeout ~= 0 or t - last_look >= SLICE then
      if timeout ~= 0 then
        if #list == 0 and #pools == 0 and not timeout and #timed == 0 then
          -- Nothing could ever wake this wait up: a bug, never a hang.
          I.raise("ProcessError", "lmp.Pool: waiting with no worker to wait for")
        end
        for _, p in ipairs(pools) do list[#list + 1] = p.hub:arm() end
      end
      last_look = now()
      ready = wait(list, timeout)
      for _, p in ipairs(pools) do p:_take_replies() end
    end
    for _, p in ipairs(pools) do p:_handle(ready or {}, owner) end
    if interrupt_flag[0] ~= 0 then core.interrupt_raise() end
  end

  -- Waits up to `timeout` seconds (nil: until something happens) for any
  -- pool, then serves them all and runs the callbacks that are due;
  -- returns how many ran.
  function P.pump(timeout)
    if pumping then return 0 end  -- the background hook, inside our own wait
    pumping = true
    local ok, err = pcall(serve, timeout)
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
    local deadline = timeout and now() + timeout
    repeat
      local ran = P.pump(deadline and math.max(deadline - now(), 0))
      if ran > 0 then return ran end
    until deadline and now() >= deadline
    return 0
  end

  -- A host that drives lmp from its own loop (runtime/lmp_backend.c)
  -- polls the descriptors of host_fds, wakes up after host_timeout, and
  -- calls dispatch.
  local host = I.host

  -- The descriptors that become readable when there is work: each pool's
  -- bell (armed now: the last dispatch read the replies) and the sentinels
  -- of its workers.
  local changes = 0  -- the descriptors may have changed when this did

  function host.changed() changes = changes + 1 end

  -- Returns the list, and `changes`.
  function host.fds()
    local fds = {}
    for p in pairs(live) do
      fds[#fds + 1] = p.hub:arm():fileno()
      p:_fds(fds)
    end
    return fds, changes
  end

  -- Seconds until lmp has work to do without a descriptor saying so: 0
  -- when callbacks or coroutines are due, else the nearest task or await
  -- deadline; nil: none.
  function host.timeout()
    if due.first <= due.last then return 0 end
    local t, nearest = now(), nil
    for _, ticket in ipairs(timed) do
      if not ticket.woken then
        local left = math.max(ticket.deadline - t, 0)
        if not nearest or left < nearest then nearest = left end
      end
    end
    for p in pairs(live) do
      local left = p:_nearest(t)
      if left and (not nearest or left < nearest) then nearest = left end
    end
    return nearest
  end

  -- What the host's descriptor must say after a dispatch, in one call:
  -- host.fds(), then host.timeout().
  function host.arm()
    local fds, count = host.fds()
    return fds, count, host.timeout()
  end

  -- Does what is ready, never waiting; returns how many callbacks and
  -- coroutines ran.
  function host.dispatch()
    -- The sentinels are looked at every time: one that is readable keeps
    -- the host's descriptor readable until its worker is buried, and the
    -- host would come back at once, again and again.
    last_look = -math.huge
    return P.pump(0)
  end

  -- At exit, open pools are terminated before lmp joins the children, so
  -- that no worker is replaced while the program ends.
  I.at_exit[#I.at_exit + 1] = function()
    core.set_background(nil)
    local busy = 0
    for p in pairs(live) do
      busy = busy + p:stats().busy
      pcall(p.terminate, p)
    end
    return busy  -- workers killed in the middle of a task
  end

  return P
end
