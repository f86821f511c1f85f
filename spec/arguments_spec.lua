-- Argument type errors of lmp's functions written in Lua (SPEC sections 1
-- and 12): each is an lmp TypeError whose message starts with the name of
-- the function, as users call it ("Queue:put: timeout must be ..."), never
-- a Lua error about a nil value somewhere inside lmp.  The C functions have
-- their own spec (errors_spec.lua).
local H = require "spec.support.helpers"
local lmp = require "lmp"

-- Objects made once for the cases below, closed in teardown.
local objs = {}
local function keep(o) objs[#objs + 1] = o; return o end

describe("argument type errors", function()
  local pool
  setup(function() pool = lmp.Pool(1) end)
  teardown(function()
    pool:terminate(); pool:join()
    for _, o in ipairs(objs) do pcall(o.close, o) end
  end)

  -- {name the message starts with, function that misuses it}
  local cases = {
    {"lmp.Process", function() lmp.Process(42) end},
    {"lmp.Process", function() lmp.Process{target = function() end, args = 3} end},
    {"lmp.Process", function() lmp.Process{target = function() end, name = 7} end},
    {"Process:join", function()
      local p = lmp.Process(function() end); p:start()
      local ok, e = pcall(p.join, p, "soon")
      p:join(10); p:close()
      error(e, 0)
    end},
    {"lmp.set_start_method", function() lmp.set_start_method(3) end},
    {"lmp.get_context", function() lmp.get_context({}) end},
    {"lmp.Queue", function() lmp.Queue("ten") end},
    {"lmp.JoinableQueue", function() lmp.JoinableQueue(true) end},
    {"Queue:put", function() keep(lmp.Queue()):put(1, "x") end},
    {"Queue:get", function() keep(lmp.Queue()):get({}) end},
    {"Queue:get", function() keep(lmp.Queue()):get(0 / 0) end},
    {"JoinableQueue:join", function() keep(lmp.JoinableQueue()):join("x") end},
    {"SimpleQueue:get", function() keep(lmp.SimpleQueue()):get("x") end},
    {"Lock:acquire", function() keep(lmp.Lock()):acquire("x") end},
    {"RLock:acquire", function() keep(lmp.RLock()):acquire(false) end},
    {"Lock:with", function() keep(lmp.Lock()):with(5) end},
    {"lmp.Semaphore", function() lmp.Semaphore("1") end},
    {"Semaphore:acquire", function() keep(lmp.Semaphore()):acquire("x") end},
    {"BoundedSemaphore:acquire", function() keep(lmp.BoundedSemaphore()):acquire({}) end},
    {"lmp.Condition", function() lmp.Condition(5) end},
    {"Condition:wait", function()
      local c = keep(lmp.Condition()); c:acquire()
      local ok, e = pcall(c.wait, c, "x")
      c:release()
      error(e, 0)
    end},
    {"Condition:wait_for", function()
      local c = keep(lmp.Condition()); c:acquire()
      local ok, e = pcall(c.wait_for, c, 3)
      c:release()
      error(e, 0)
    end},
    {"Condition:notify", function()
      local c = keep(lmp.Condition()); c:acquire()
      local ok, e = pcall(c.notify, c, "all")
      c:release()
      error(e, 0)
    end},
    {"Event:wait", function() keep(lmp.Event()):wait("x") end},
    {"lmp.Barrier", function() lmp.Barrier("two") end},
    {"lmp.Barrier", function() lmp.Barrier(2, 5) end},
    {"lmp.Barrier", function() lmp.Barrier(2, nil, "x") end},
    {"Barrier:wait", function() keep(lmp.Barrier(1)):wait("x") end},
    {"lmp.Value", function() lmp.Value(5, 1) end},
    {"lmp.Value", function() lmp.Value("i", "one") end},
    {"lmp.Array", function() lmp.Array("d", "many") end},
    {"lmp.Array", function() lmp.Array(nil, 3) end},
    {"lmp.SharedMemory", function() lmp.SharedMemory{size = "big"} end},
    {"SharedMemory:read", function() keep(lmp.SharedMemory{size = 8}):read("0", 1) end},
    {"SharedMemory:write", function() keep(lmp.SharedMemory{size = 8}):write(0, 5) end},
    {"lmp.connection.wait", function() lmp.connection.wait("conn") end},
    {"lmp.connection.wait", function() lmp.connection.wait({}, "x") end},
    {"lmp.connection.wait", function() lmp.connection.wait({keep(lmp.Queue())}, "x") end},
    {"lmp.connection.Listener", function() lmp.connection.Listener(5) end},
    {"lmp.connection.Listener", function() lmp.connection.Listener{address = "127.0.0.1:0", authkey = 5} end},
    {"Listener:accept", function()
      keep(lmp.connection.Listener{address = "127.0.0.1:0"}):accept("x")
    end},
    {"lmp.connection.Client", function() lmp.connection.Client({}) end},
    {"lmp.connection.Client", function() lmp.connection.Client("127.0.0.1:1", 5) end},
    {"lmp.Pool", function() lmp.Pool("four") end},
    {"lmp.Pool", function() lmp.Pool{processes = 1, maxtasksperchild = "x"} end},
    {"lmp.Pool", function() lmp.Pool{initializer = 5} end},
    {"lmp.Pool", function() lmp.Pool{processes = 1, initargs = 5} end},
    {"lmp.Pool", function() lmp.Pool{processes = 1, task_timeout = "x"} end},
    {"Pool:map", function() pool:map(5, {1}) end},
    {"Pool:map", function() pool:map(function() end, 5) end},
    {"Pool:map", function() pool:map(function() end, {1}, "x") end},
    {"Pool:starmap", function() pool:starmap(function() end, {1}) end},
    {"Pool:imap", function() pool:imap(function() end, 5) end},
    {"Pool:imap_unordered", function() pool:imap_unordered(5, {}) end},
    {"Pool:apply", function() pool:apply(function() end, 5) end},
    {"Pool:apply_async", function() pool:apply_async(function() end, {}, 5) end},
    {"Pool:apply_async", function() pool:apply_async(function() end, {}, nil, "x") end},
    {"Pool:map_async", function() pool:map_async(function() end, {1}, nil, 5) end},
    {"Pool:starmap_async", function() pool:starmap_async(function() end, "x") end},
    {"Pool:map", function() pool:map(function() end, {1}, nil, {timeout = "x"}) end},
    {"AsyncResult:get", function() pool:apply_async(function() end, {}):get("x") end},
    {"AsyncResult:wait", function() pool:apply_async(function() end, {}):wait({}) end},
    {"lmp.poll", function() lmp.poll("x") end},
  }

  for i, case in ipairs(cases) do
    local name, f = case[1], case[2]
    it(("%d: %s"):format(i, name), function()
      local e = H.raises("TypeError", f)
      assert.equal(name, e.message:sub(1, #name), e.message)
      assert.is_truthy(e.message:find(": ", #name, true), e.message)
    end)
  end
end)
