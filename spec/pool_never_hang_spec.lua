-- No pool call ever hangs (SPEC section 8, issue 13): every way a pool can
-- end -- close+join, terminate+join, garbage collection, the end of the
-- script -- against every way a task or worker can go wrong: its worker
-- SIGKILLed mid-task, os.exit in a task, a hard deadline, a soft deadline,
-- maxtasksperchild = 1, an error in a callback, an error in the
-- initializer, an imap abandoned half way, a cancel.
--
-- Each cell runs a script in a fresh host, bounded by a timeout: a hang
-- fails the cell instead of the suite.  The script submits SIZE tasks
-- (task 2 is the one that goes wrong), ends the pool, and prints each
-- task's outcome (its result, or the kind of its error) and the pids of
-- its workers; the spec checks that every task ended, as the failure says
-- it must, and that no worker is left.
local H = require "spec.support.helpers"

local SIZE = 6

local SCRIPT = [==[
local lmp = require "lmp"
local MODE, ENDING, SIZE = %q, %q, %d

local function spin(s)
  local t = os.clock()
  while os.clock() - t < s do end
end

local function worker_pids()
  local p = io.popen("cat /proc/" .. lmp.current_process().pid .. "/task/*/children")
  local out = p:read("*a")
  p:close()
  local pids = {}
  for pid in out:gmatch("%%d+") do
    local f = io.open("/proc/" .. pid .. "/comm")
    local comm = f and f:read("*l")
    if f then f:close() end
    if comm and comm ~= "cat" and not comm:match("^sh") then pids[#pids + 1] = pid end
  end
  return table.concat(pids, " ")
end

local opts = {processes = 2}
if MODE == "maxtasks" then opts.maxtasksperchild = 1 end
if MODE == "initializer" then opts.initializer = function() error("the initializer fails") end end
local call = {}
if MODE == "hard" then call.timeout = 0.3 end
if MODE == "soft" then call.soft_timeout = 0.3; call.timeout = 1 end
if MODE == "callback" then
  call.callback = function() error("the callback fails") end
  call.error_callback = call.callback
end

local pool = lmp.Pool(opts)
local results = {}
local function task(i, mode)
  if i == 2 then
    if mode == "sigkill" then
      os.execute("kill -9 " .. require("lmp").current_process().pid)
      spin(30)
    elseif mode == "exit" then
      os.exit(7)
    elseif mode == "hard" or mode == "soft" or mode == "cancel" then
      spin(30)
    end
  end
  spin(0.05)
  return i * 10
end
for i = 1, SIZE do results[i] = pool:apply_async(task, {i, MODE}, call) end

local imap_taken = 0
if MODE == "imap" then
  for _, v in pool:imap(function(x) spin(0.01) return x end, function() return 1 end) do
    imap_taken = imap_taken + 1
    if imap_taken == 3 then break end
  end
end
if MODE == "cancel" then
  spin(0.1)
  results[2]:cancel()
  results[5]:cancel()
end
print("pids " .. worker_pids())

local function report()
  for i = 1, SIZE do
    local r = results[i]
    if not r:ready() then
      print("outcome " .. i .. " pending")
    else
      local ok, v = pcall(r.get, r, 0)
      if ok then print("outcome " .. i .. " " .. tostring(v))
      else print("outcome " .. i .. " " .. (lmp.is_error(v) and v.kind or "?" .. tostring(v))) end
    end
  end
end

if ENDING == "close_join" then
  pool:close(); pool:join()
  report()
elseif ENDING == "terminate_join" then
  pool:terminate(); pool:join()
  report()
elseif ENDING == "gc" then
  local pids = worker_pids()
  pool, results = nil, nil
  collectgarbage(); collectgarbage()
  -- wait (bounded) for the workers of the collected pool to end
  local deadline = os.time() + 10
  local alive
  repeat
    alive = 0
    for pid in pids:gmatch("%%d+") do
      local f = io.open("/proc/" .. pid .. "/stat")
      local st = f and f:read("*a"):match("^%%d+ %%(.*%%) (%%a)")
      if f then f:close() end
      if st and st ~= "Z" and st ~= "X" then alive = alive + 1 end
    end
    if alive > 0 then local a, b = lmp.Pipe(); a:poll(0.05); a:close(); b:close() end
  until alive == 0 or os.time() > deadline
  print("collected, alive " .. alive)
  -- and lmp goes on working
  local p2 = lmp.Pool(1)
  print("after " .. p2:apply(function() return "ok" end, {}))
  p2:close(); p2:join()
elseif ENDING == "exit" then
  print("exiting")
end
]==]

-- What task 2 (and the others) must end with after close+join.
local EXPECT = {
  sigkill = {[2] = "WorkerLost"},
  exit = {[2] = "WorkerLost"},
  hard = {[2] = "TimeoutError"},
  soft = {[2] = "RemoteError"},
  maxtasks = {},
  callback = {},
  initializer = "RemoteError",  -- every task
  imap = {},
  cancel = {[2] = "CancelledError", [5] = "CancelledError"},
}

local KINDS = {WorkerLost = true, TimeoutError = true, RemoteError = true,
               CancelledError = true, ProcessError = true}

local function run_cell(mode, ending)
  local dir = H.tmpdir()
  local path = H.write(dir .. "/cell.lua", SCRIPT:format(mode, ending, SIZE))
  local t0 = H.now()
  local r = H.lmp_run({path}, {timeout = 30})
  r.elapsed = H.now() - t0
  return r
end

local function outcomes(out)
  local o = {}
  for i, v in out:gmatch("outcome (%d+) (%S+)") do o[tonumber(i)] = v end
  return o
end

local function pids_of(out)
  local l = {}
  for line in out:gmatch("pids ([%d ]*)") do
    for p in line:gmatch("%d+") do l[#l + 1] = tonumber(p) end
  end
  return l
end

describe("a Pool never hangs", function()
  H.check_leaks()

  for _, ending in ipairs({"close_join", "terminate_join", "gc", "exit"}) do
    for _, mode in ipairs({"sigkill", "exit", "hard", "soft", "maxtasks", "callback",
                           "initializer", "imap", "cancel"}) do
      it(("%s x %s"):format(ending, mode), function()
        local r = run_cell(mode, ending)
        local where = ("%s x %s: status %s after %.1f s\nstdout:\n%s\nstderr:\n%s")
          :format(ending, mode, tostring(r.status), r.elapsed, r.stdout, r.stderr)
        assert.equal(0, r.status, where)
        assert.is_true(r.elapsed < 15, where)
        if ending == "close_join" or ending == "terminate_join" then
          local o = outcomes(r.stdout)
          for i = 1, SIZE do
            local v = o[i]
            assert.is_truthy(v, ("task %d has no outcome\n"):format(i) .. where)
            assert.are_not.equal("pending", v, ("task %d never ended\n"):format(i) .. where)
            local expect = EXPECT[mode]
            expect = type(expect) == "string" and expect or expect[i]
            if ending == "close_join" then
              -- close+join completes every task: its result, or the
              -- error its failure calls for
              assert.equal(expect or tostring(i * 10), v, ("task %d\n"):format(i) .. where)
            else
              assert.is_true(v == tostring(i * 10) or KINDS[v] ~= nil,
                             ("task %d ended with %s\n"):format(i, v) .. where)
            end
          end
        elseif ending == "gc" then
          assert.truthy(r.stdout:find("collected, alive 0", 1, true), where)
          assert.truthy(r.stdout:find("after ok", 1, true), where)
        end
        -- no worker outlives its script
        local pids = pids_of(r.stdout)
        assert.is_true(#pids >= 1, where)
        assert.is_truthy(H.wait_until(function()
          for _, p in ipairs(pids) do if not H.dead(p) then return nil end end
          return true
        end, 5), "workers left behind\n" .. where)
      end)
    end
  end
end)
