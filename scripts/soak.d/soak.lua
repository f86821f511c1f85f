-- soak.lua -- scripts/soak: a long Pool job, run by build/lmp, that checks
-- that the pool neither loses nor duplicates work and that the parent does
-- not leak descriptors, memory or processes over a million tasks.
--
-- Usage:  build/lmp soak.lua [OPTION...]      (scripts/soak runs it niced)
--   --tasks N        items to run in all (default 1000000)
--   --workers N      pool size (default lmp.cpu_count())
--   --kill-rate R    share of items that kill their own worker (default 1/100)
--   --error-rate R   share of items that raise an error (default 1/100)
--   --seed S         seed of the plan (default: the time; printed)
--   --time-limit S   stop submitting after S seconds, then check what ran
--   --stall S        no item accounted for in S seconds is a hang: SIGALRM
--                    ends the run (default 120; scripts/soak reports it and
--                    exits with status 3)
--   --interval S     seconds between progress lines on stderr (default 10)
--   --warmup N       items before the descriptor and RSS baselines (20000)
--   --rss-slack MIB  allowed RSS growth over the baseline (default 5)
--   --maxtasks N     the pool's maxtasksperchild (default: none)
--   --jit off        run the parent's Lua without the JIT compiler (its trace
--                    cache is part of the parent's RSS; the workers keep it)
-- Rates are fractions, "0.01" or "1/100".
--
-- The job runs in rounds.  Each round submits a batch of apply_async calls
-- with callbacks and one map_async with chunks, then walks an imap or
-- imap_unordered loop (table or generator input, various chunk sizes)
-- while those run, then waits for the batch.  Every item is a number g;
-- what the task does with it is a pure function of g and the seed (the
-- function `plan`, sent to the workers as an upvalue of the task), so the
-- parent knows the one correct outcome of every item:
--   - a value (numbers, strings, tables, nil, false, now and then a few KiB)
--     that must come back equal;
--   - an error ("soak-error <g>", as a string or an lmp ValueError) that must
--     come back as a RemoteError naming g;
--   - the death of its worker: os.exit(code), SIGKILL through FFI kill(),
--     or `kill -9` run by os.execute; it must come back as a WorkerLost
--     carrying that exit code (or -9).
-- A chunk runs its items in order, so it fails with the outcome of its
-- first failing item, and its items all end with that error; a map_async
-- fails with the error of one of its failed chunks, and all its items end
-- with it.  So each item ends in exactly one of result, WorkerLost or error,
-- and the checks below hold for each: a callback fires exactly once, an
-- imap index comes once, get() agrees with the callback.
--
-- At every round boundary (all of the round's outcomes are in) the parent
-- counts its descriptors, its RSS and its children's states.  After the
-- warm-up the counts are the baseline: descriptors must stay equal to it,
-- RSS within --rss-slack MiB of it, no child may stay a zombie from one
-- boundary to the next, and no more children may be alive than the pool has
-- workers.  After close() and join() no child may be left and the
-- descriptors must be back to their count before the pool (lmp's event
-- loop, which opens its descriptors once, is started before counting).
--
-- Output: progress lines on stderr, the summary on stdout.  Exit status 0
-- if every check held, 1 if one failed, 2 for bad arguments.

local lmp = require "lmp"
local ffi = require "ffi"
local bit = require "bit"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clock, soak_timespec *ts);
typedef struct {
  uint64_t d_ino; int64_t d_off; unsigned short d_reclen; unsigned char d_type;
  char d_name[256];
} soak_dirent;
void *opendir(const char *name);
soak_dirent *readdir(void *dir);
int closedir(void *dir);
int dirfd(void *dir);
int getpagesize(void);
unsigned int alarm(unsigned int seconds);
]]
-- glibc's malloc statistics: C memory (libuv, lmp's buffers) as opposed to
-- the Lua heap, which LuaJIT allocates on its own.
local mallinfo2 = pcall(ffi.cdef, [[
struct soak_mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks,
                        uordblks, fordblks, keepcost; };
struct soak_mallinfo2 mallinfo2(void);
]]) and pcall(function() return ffi.C.mallinfo2 end) and ffi.C.mallinfo2

---------------------------------------------------------------------------
-- Options

local function usage(msg)
  if msg then io.stderr:write("soak: ", msg, "\n") end
  io.stderr:write("usage: soak.lua [--tasks N] [--workers N] [--kill-rate R] ",
                  "[--error-rate R] [--seed S] [--time-limit S] [--stall S] ",
                  "[--interval S] [--warmup N] [--rss-slack MIB] [--maxtasks N] [--jit on|off]\n")
  os.exit(msg and 2 or 0)
end

local function rate(s)
  local a, b = s:match("^([%d.]+)/([%d.]+)$")
  local r = a and tonumber(a) / tonumber(b) or tonumber(s)
  if not r or r < 0 or r > 1 then usage("not a rate: " .. s) end
  return r
end

local function number(s, min)
  local n = tonumber(s)
  if not n or n < (min or 0) then usage("not a number >= " .. (min or 0) .. ": " .. tostring(s)) end
  return n
end

local opt = {
  tasks = 1000000, workers = nil, kill_rate = 0.01, error_rate = 0.01,
  seed = nil, time_limit = nil, stall = 120, interval = 10, warmup = 20000,
  rss_slack = 5, jit = "on", maxtasks = nil,
}
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    local function val() if v == nil then usage(a .. " needs a value") end i = i + 1 return v end
    if a == "-h" or a == "--help" then usage()
    elseif a == "--tasks" then opt.tasks = math.floor(number(val(), 1))
    elseif a == "--workers" then opt.workers = math.floor(number(val(), 1))
    elseif a == "--kill-rate" then opt.kill_rate = rate(val())
    elseif a == "--error-rate" then opt.error_rate = rate(val())
    elseif a == "--seed" then opt.seed = math.floor(number(val()))
    elseif a == "--time-limit" then opt.time_limit = number(val())
    elseif a == "--stall" then opt.stall = math.floor(number(val(), 5))
    elseif a == "--interval" then opt.interval = number(val())
    elseif a == "--warmup" then opt.warmup = math.floor(number(val()))
    elseif a == "--rss-slack" then opt.rss_slack = number(val())
    elseif a == "--maxtasks" then opt.maxtasks = math.floor(number(val(), 1))
    elseif a == "--jit" then
      opt.jit = val()
      if opt.jit ~= "on" and opt.jit ~= "off" then usage("--jit is on or off") end
    else usage("unknown option " .. a) end
    i = i + 1
  end
end
if opt.kill_rate + opt.error_rate > 1 then usage("kill rate + error rate > 1") end
opt.workers = opt.workers or lmp.cpu_count()
opt.seed = opt.seed or os.time() % 1000000
opt.warmup = math.min(opt.warmup, math.floor(opt.tasks / 2))

---------------------------------------------------------------------------
-- The plan: what item g does, the same in the parent and in the workers.

local KILL_RATE, ERROR_RATE = opt.kill_rate, opt.error_rate
local SALT = bit.tobit(opt.seed * 2654435761 % 4294967296)

-- 32-bit wrapping multiply (bit.tobit is exact below 2^51).
local function imul(a, b)
  local lo, hi = bit.band(a, 0xffff), bit.rshift(a, 16)
  return bit.tobit(lo * b + bit.tobit(hi * b) * 65536)
end

-- MurmurHash3's finaliser: a well-mixed 32-bit hash of g.
local function hash(g, salt)
  local h = bit.bxor(bit.tobit(g), salt)
  h = imul(bit.bxor(h, bit.rshift(h, 16)), 0x85ebca6b)
  h = imul(bit.bxor(h, bit.rshift(h, 13)), 0xc2b2ae35)
  return bit.bxor(h, bit.rshift(h, 16))
end

-- "ok", "raise", "exit", "kill9" or "shkill", and the exit code a death
-- leaves (-9 for SIGKILL).
local function plan(g)
  local h = hash(g, SALT)
  local u = bit.band(h, 0xffffff) / 0x1000000
  if u < KILL_RATE then
    local m = bit.band(bit.rshift(h, 24), 7)
    if m < 3 then return "exit", bit.band(hash(g, 77), 127) end  -- 0 included
    if m < 7 then return "kill9", -9 end
    return "shkill", -9
  elseif u < KILL_RATE + ERROR_RATE then
    return "raise", bit.band(bit.rshift(h, 24), 1)
  end
  return "ok"
end

-- The value item g returns when its plan is "ok".
local function result(g)
  local sel = bit.band(bit.rshift(hash(g, bit.bnot(SALT)), 8), 1023)
  if sel == 0 then return nil end
  if sel == 1 then return false end
  if sel == 2 then return string.rep(string.char(65 + g % 26), 1024 + g % 7000) end
  if sel < 300 then
    return {g = g, sq = (g % 1000) ^ 2, tag = "t" .. g, list = {g, -g, g / 4}}
  end
  if sel < 600 then return "v" .. g end
  if sel < 800 then return g * 3 + 0.5 end
  return g * 3 + 1
end

-- The task every call of the soak maps.  The error messages are what the
-- parent looks for in the RemoteError.
local function task(g)
  local kind, code = plan(g)
  if kind == "ok" then return result(g) end
  if kind == "raise" then
    if code == 0 then error(("soak-error %d"):format(g)) end
    error(require("lmp").error("ValueError", ("soak-error %d"):format(g)))
  end
  if kind == "exit" then os.exit(code) end
  local ffi_ = require "ffi"
  for name, decl in pairs({kill = "int kill(int pid, int sig);", getpid = "int getpid(void);"}) do
    if not pcall(function() return ffi_.C[name] end) then ffi_.cdef(decl) end
  end
  local pid = ffi_.C.getpid()
  if kind == "kill9" then ffi_.C.kill(pid, 9)
  else os.execute("kill -9 " .. pid) end
  error("soak: item " .. g .. " is still alive after SIGKILL")
end

---------------------------------------------------------------------------
-- Measures of the parent

local ts = ffi.new("soak_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Names in a directory, without "." and ".."; the descriptor the listing
-- itself uses is reported as `self`, so that counting /proc/self/fd can
-- leave it out.
local function listdir(path)
  local d = ffi.C.opendir(path)
  if d == nil then return nil end
  local names, self = {}, tostring(ffi.C.dirfd(d))
  while true do
    local e = ffi.C.readdir(d)
    if e == nil then break end
    local name = ffi.string(e.d_name)
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  ffi.C.closedir(d)
  return names, self
end

-- Open descriptors of this process, exactly.
local function fd_count()
  local names, self = listdir("/proc/self/fd")
  local n = 0
  for _, name in ipairs(names) do if name ~= self then n = n + 1 end end
  return n
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local PAGE = ffi.C.getpagesize()
local MiB = 1024 * 1024

-- Resident set size in bytes.
-- Bytes in use in malloc's heap (nil without glibc's mallinfo2).
local function malloced()
  if not mallinfo2 then return nil end
  local m = mallinfo2()
  return tonumber(m.uordblks) + tonumber(m.hblkhd)
end

local function rss()
  local s = slurp("/proc/self/statm")
  return tonumber(s:match("^%d+%s+(%d+)")) * PAGE
end

-- The children of every thread of this process: pid -> state letter
-- ("Z" for a zombie).
local function children()
  local list = {}
  local tasks = listdir("/proc/self/task") or {}
  for _, tid in ipairs(tasks) do
    for pid in (slurp("/proc/self/task/" .. tid .. "/children") or ""):gmatch("%d+") do
      local stat = slurp("/proc/" .. pid .. "/stat")
      list[tonumber(pid)] = stat and stat:match("%) (%a)") or "?"
    end
  end
  return list
end

---------------------------------------------------------------------------
-- Bookkeeping

local count = {submitted = 0, result = 0, lost = 0, error = 0,
               apply = 0, map = 0, imap = 0, imap_unordered = 0,
               map_failed_jobs = 0, map_failed_items = 0, rounds = 0,
               planned_kills = 0, planned_raises = 0}
local violations, nviolations, kinds = {}, 0, {}

-- An error in one line: lmp errors carry the remote traceback in tostring().
local function brief(e)
  if lmp.is_error(e) then
    return ("%s: %s%s"):format(e.kind, e.message, e.exitcode and (" [exitcode " .. e.exitcode .. "]") or "")
  end
  return tostring(e)
end

local function violation(kind, fmt, ...)
  nviolations = nviolations + 1
  kinds[kind] = (kinds[kind] or 0) + 1
  if #violations < 30 then
    violations[#violations + 1] = kind .. ": " .. fmt:format(...)
    io.stderr:write("soak: VIOLATION ", violations[#violations], "\n")
  end
end

local function account(outcome, n)
  count[outcome] = count[outcome] + (n or 1)
end

local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    return a ~= a and b ~= b  -- NaN
  end
  for k, v in pairs(a) do if not deep_equal(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function show(v)
  if type(v) == "string" and #v > 60 then return ("%q..(%d bytes)"):format(v:sub(1, 20), #v) end
  if lmp.is_error(v) then return brief(v) end
  if type(v) == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = tostring(k) .. "=" .. show(x) end
    table.sort(parts)
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return tostring(v)
end

-- The outcome a chunk of items g0..g0+n-1 must end with: "result", or
-- "error"/"lost" and the item that decides it.
local function chunk_outcome(g0, n)
  for g = g0, g0 + n - 1 do
    local kind = plan(g)
    if kind == "raise" then return "error", g end
    if kind ~= "ok" then return "lost", g end
  end
  return "result"
end

-- Does `err` match the failure that item g plans?
local function error_matches(err, g)
  local kind, code = plan(g)
  if not lmp.is_error(err) then return false end
  if kind == "raise" then
    return err.kind == "RemoteError" and err.message:find("soak%-error " .. g .. "%f[%D]") ~= nil
  end
  return err.kind == "WorkerLost" and err.exitcode == code
end

local function check_value(api, g, v)
  local want = result(g)
  if not deep_equal(v, want) then
    violation("wrong-value", "%s item %d: got %s, want %s", api, g, show(v), show(want))
  end
end

-- Alarm-based hang guard: re-armed whenever items are accounted for.
local armed_at, armed_count = 0, -1
local function rearm()
  local t = now()
  if t - armed_at >= 1 and armed_count ~= count.result + count.lost + count.error then
    armed_at, armed_count = t, count.result + count.lost + count.error
    ffi.C.alarm(opt.stall)
  end
end

-- Waits for an AsyncResult, bounded: a wait past --stall is a hang.
local function await(r, what)
  local t0 = now()
  while not r:ready() do
    r:wait(1)
    rearm()
    if not r:ready() and now() - t0 > opt.stall then
      violation("hang", "%s: not ready after %d s", what, opt.stall)
      return false
    end
  end
  return true
end

---------------------------------------------------------------------------
-- The job

local pool
local next_g = 0
local function take(n)
  local g0 = next_g + 1
  next_g = next_g + n
  count.submitted = count.submitted + n
  for g = g0, g0 + n - 1 do
    local kind = plan(g)
    if kind == "raise" then count.planned_raises = count.planned_raises + 1
    elseif kind ~= "ok" then count.planned_kills = count.planned_kills + 1 end
  end
  return g0
end

-- A batch of apply_async calls with callbacks.
local function submit_applies(n)
  local recs = {}
  local g0 = take(n)
  for k = 1, n do
    local rec = {g = g0 + k - 1, fired = 0}
    rec.r = pool:apply_async(task, {rec.g},
      function(v) rec.fired, rec.ok, rec.v = rec.fired + 1, true, v end,
      function(e) rec.fired, rec.ok, rec.v = rec.fired + 1, false, e end)
    recs[k] = rec
  end
  return recs
end

local function check_applies(recs)
  for _, rec in ipairs(recs) do
    local g = rec.g
    if await(rec.r, "apply_async item " .. g) then
      if rec.fired ~= 1 then
        violation(rec.fired == 0 and "lost" or "duplicate",
                  "apply_async item %d: callbacks fired %d times", g, rec.fired)
      end
      local okg, v = pcall(rec.r.get, rec.r, 0)
      if rec.fired > 0 and (okg ~= rec.ok or v ~= rec.v and not (okg and deep_equal(v, rec.v))) then
        violation("inconsistent", "apply_async item %d: get() gave %s %s, the callback %s %s",
                  g, tostring(okg), show(v), tostring(rec.ok), show(rec.v))
      end
      local want, by = chunk_outcome(g, 1)
      if okg then
        account("result")
        count.apply = count.apply + 1
        if want ~= "result" then
          violation("wrong-outcome", "apply_async item %d: a result, want %s", g, want)
        end
        check_value("apply_async", g, v)
      else
        local outcome = lmp.is_error(v) and v.kind == "WorkerLost" and "lost" or "error"
        account(outcome)
        count.apply = count.apply + 1
        if want == "result" or not error_matches(v, by) then
          violation("wrong-outcome", "apply_async item %d: %s, want %s", g, brief(v), want)
        end
      end
    end
  end
end

-- One map_async with chunks; all its items end with the job's outcome.
local function submit_map(n, chunksize)
  local m = {g0 = take(n), n = n, chunksize = chunksize, fired = 0}
  local list = {}
  for i = 1, n do list[i] = m.g0 + i - 1 end
  m.r = pool:map_async(task, list, chunksize,
    function(v) m.fired, m.ok, m.v = m.fired + 1, true, v end,
    function(e) m.fired, m.ok, m.v = m.fired + 1, false, e end)
  return m
end

local function check_map(m)
  if not m then return end
  if not await(m.r, "map_async of items " .. m.g0 .. "..") then return end
  if m.fired ~= 1 then
    violation(m.fired == 0 and "lost" or "duplicate", "map_async of items %d..%d: callbacks fired %d times",
              m.g0, m.g0 + m.n - 1, m.fired)
  end
  local okg, v = pcall(m.r.get, m.r, 0)
  if m.fired > 0 and (okg ~= m.ok or v ~= m.v) then
    violation("inconsistent", "map_async of items %d..: get() and the callback disagree", m.g0)
  end
  count.map = count.map + m.n
  -- The chunks, and what each must end with.
  local cs = m.chunksize or math.ceil(m.n / (opt.workers * 4))
  local failed = {}
  for base = 0, m.n - 1, cs do
    local want, by = chunk_outcome(m.g0 + base, math.min(cs, m.n - base))
    if want ~= "result" then failed[#failed + 1] = by end
  end
  if okg then
    account("result", m.n)
    if #failed > 0 then
      violation("wrong-outcome", "map_async of items %d..: succeeded, but item %d fails", m.g0, failed[1])
    end
    if type(v) ~= "table" then
      violation("wrong-value", "map_async of items %d..: result %s", m.g0, show(v))
      return
    end
    for i = 1, m.n do check_value("map_async", m.g0 + i - 1, v[i]) end
    for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > m.n or k % 1 ~= 0 then
        violation("duplicate", "map_async of items %d..: extra key %s", m.g0, tostring(k))
      end
    end
  else
    local outcome = lmp.is_error(v) and v.kind == "WorkerLost" and "lost" or "error"
    account(outcome, m.n)
    count.map_failed_jobs = count.map_failed_jobs + 1
    count.map_failed_items = count.map_failed_items + m.n
    local matched = false
    for _, g in ipairs(failed) do
      if error_matches(v, g) then matched = true break end
    end
    if not matched then
      violation("wrong-outcome", "map_async of items %d..%d (chunks of %d): %s matches no failing chunk",
                m.g0, m.g0 + m.n - 1, cs, brief(v))
    end
  end
end

-- An imap or imap_unordered loop over n items, checked as it goes.
local function run_imap(ordered, n, chunksize, as_table)
  local api = ordered and "imap" or "imap_unordered"
  local g0 = take(n)
  local input
  if as_table then
    input = {}
    for i = 1, n do input[i] = g0 + i - 1 end
  else
    local i = 0
    input = function()
      if i >= n then return nil end
      i = i + 1
      return g0 + i - 1
    end
  end
  local function chunk_of(i) return math.floor((i - 1) / chunksize) end
  local function chunk_range(c)
    local first = c * chunksize + 1
    return first, math.min(first + chunksize - 1, n)
  end
  local it = ordered and pool:imap(task, input, chunksize) or pool:imap_unordered(task, input, chunksize)
  local seen = {}          -- index -> true (a result) / chunk failed
  local expect = 1         -- imap: the next index
  local lost_codes = {}    -- imap_unordered: exit codes of WorkerLost errors
  local steps = 0
  while true do
    local ok, i, v = pcall(it)
    steps = steps + 1
    if steps % 64 == 0 then rearm() end
    if ok and i == nil then break end
    if ok then
      if type(i) ~= "number" or i < 1 or i > n or i % 1 ~= 0 then
        violation("wrong-index", "%s: index %s", api, tostring(i))
        break
      end
      if seen[i] then violation("duplicate", "%s item %d (index %d) came twice", api, g0 + i - 1, i) end
      if ordered and i ~= expect then
        violation("order", "imap: index %d where %d was due", i, expect)
      end
      seen[i] = true
      expect = i + 1
      local f, l = chunk_range(chunk_of(i))
      local want = chunk_outcome(g0 + f - 1, l - f + 1)
      account("result")
      if want ~= "result" then
        violation("wrong-outcome", "%s item %d: a result, but its chunk fails", api, g0 + i - 1)
      end
      check_value(api, g0 + i - 1, v)
    else
      local err = i
      local outcome = lmp.is_error(err) and err.kind == "WorkerLost" and "lost" or "error"
      local c
      if ordered then
        c = chunk_of(expect)
        if (expect - 1) % chunksize ~= 0 then
          violation("wrong-index", "imap: an error in the middle of a chunk, at index %d", expect)
        end
      elseif outcome == "error" then
        local g = lmp.is_error(err) and tonumber(err.message:match("soak%-error (%d+)"))
        c = g and g >= g0 and g < g0 + n and chunk_of(g - g0 + 1)
        if not c then violation("wrong-outcome", "imap_unordered: an error of no item: %s", brief(err)) end
      else
        lost_codes[#lost_codes + 1] = tostring(err.exitcode)  -- matched to chunks at the end
      end
      if c then
        local f, l = chunk_range(c)
        local want, by = chunk_outcome(g0 + f - 1, l - f + 1)
        if want == "result" or not error_matches(err, by) then
          violation("wrong-outcome", "%s items %d..%d: %s, want %s", api, g0 + f - 1, g0 + l - 1,
                    brief(err), want == "result" and "results" or "item " .. by .. "'s failure")
        end
        for k = f, l do
          if seen[k] then violation("duplicate", "%s item %d: an outcome twice", api, g0 + k - 1) end
          seen[k] = true
        end
        account(outcome, l - f + 1)
        expect = l + 1
      end
    end
  end
  if not ordered then
    -- What is missing must be exactly the chunks that end with WorkerLost,
    -- one per WorkerLost raised, with the same exit codes.
    local want_codes = {}
    for c = 0, chunk_of(n) do
      local f, l = chunk_range(c)
      if not seen[f] then
        local want, by = chunk_outcome(g0 + f - 1, l - f + 1)
        if want ~= "lost" then
          violation("lost", "imap_unordered items %d..%d: no outcome (want %s)", g0 + f - 1, g0 + l - 1, want)
        else
          want_codes[#want_codes + 1] = tostring(select(2, plan(by)))
          account("lost", l - f + 1)
        end
        for k = f, l do seen[k] = true end
      end
    end
    table.sort(want_codes)
    table.sort(lost_codes)
    if table.concat(want_codes, ",") ~= table.concat(lost_codes, ",") then
      violation("wrong-outcome", "imap_unordered items %d..%d: WorkerLost exit codes {%s}, want {%s}",
                g0, g0 + n - 1, table.concat(lost_codes, ","), table.concat(want_codes, ","))
    end
  end
  for k = 1, n do
    if not seen[k] then violation("lost", "%s item %d (index %d): no outcome", api, g0 + k - 1, k) end
  end
  count[api] = count[api] + n
end

---------------------------------------------------------------------------
-- Main

local function pick(list) return list[math.random(#list)] end

local figures = {}
local t_start = now()
lmp.poll(0)  -- lmp's event loop opens its descriptors once, at its first use
figures.fd_start, figures.rss_start = fd_count(), rss()
if not slurp("/proc/self/task/" .. (listdir("/proc/self/task") or {"?"})[1] .. "/children") then
  io.stderr:write("soak: this kernel has no /proc/<pid>/task/<tid>/children: ",
                  "children and zombies are not counted\n")
end
ffi.C.alarm(opt.stall)
io.stderr:write(("soak: %d tasks, %d workers, kill rate %g, error rate %g, seed %d, pid %d\n")
                :format(opt.tasks, opt.workers, opt.kill_rate, opt.error_rate, opt.seed,
                        lmp.current_process().pid))
math.randomseed(opt.seed)

-- The parent's JIT compiler: its trace cache (IR and machine code, up to
-- LuaJIT's maxtrace/maxmcode, then flushed) is part of the RSS watched here.
local jit_traces, jit_flushes = 0, 0
if opt.jit == "off" then
  jit.off()
else
  jit.attach(function(what)
    if what == "stop" then jit_traces = jit_traces + 1
    elseif what == "flush" then jit_flushes = jit_flushes + 1 end
  end, "trace")
end
pool = lmp.Pool{processes = opt.workers, maxtasksperchild = opt.maxtasks}
figures.fd_pool = fd_count()

local baseline            -- {fd, rss, at} once warmed up
local fd_ref              -- the descriptor count last seen after the warm-up
local live_max, live_end = 0, 0  -- live Lua heap (bytes) after the warm-up
local malloc_max, malloc_end = 0, nil
local fd_max, fd_min, rss_max, rss_end_run = 0, math.huge, 0, 0
local zombies_prev, zombies_max, zombies_persistent = {}, 0, 0
local zombies_reported = {}
local children_max = 0
local last_line, last_done, last_t = now(), 0, now()
local stopped_early

local function sample(final)
  local t = now()
  local fds, r, kids, mal = fd_count(), rss(), children(), malloced()
  local nkids, zombies, nz = 0, {}, 0
  for pid, state in pairs(kids) do
    nkids = nkids + 1
    if state == "Z" then
      zombies[pid] = true
      nz = nz + 1
      if zombies_prev[pid] and not zombies_reported[pid] then
        zombies_reported[pid] = true  -- each zombie is reported once
        zombies_persistent = zombies_persistent + 1
        violation("zombie", "child %d is still a zombie a round later", pid)
      end
    end
  end
  zombies_prev = zombies
  if nkids - nz > opt.workers then
    violation("children", "%d live children for a pool of %d", nkids - nz, opt.workers)
  end
  zombies_max = math.max(zombies_max, nz)
  children_max = math.max(children_max, nkids)
  local done = count.result + count.lost + count.error
  local line = final or t - last_line >= opt.interval
  -- The Lua heap that is live (after a full collection), at the baseline
  -- and with each progress line: what a leak of Lua objects would grow.
  local heap, live = collectgarbage("count") * 1024, nil
  if line or (not baseline and done >= opt.warmup) then
    collectgarbage("collect")
    live = collectgarbage("count") * 1024
    if baseline then live_max = math.max(live_max, live) end
    live_end = live
  end
  if not baseline and done >= opt.warmup then
    baseline = {fd = fds, rss = r, at = done, t = t - t_start, live = live, malloc = mal,
                traces = jit_traces}
    fd_ref = fds
    io.stderr:write(("soak: warmed up after %d tasks: baseline %d descriptors, RSS %.1f MiB, Lua heap %.1f MiB live\n")
                    :format(done, fds, r / MiB, live / MiB))
  elseif baseline then
    fd_max, fd_min = math.max(fd_max, fds), math.min(fd_min, fds)
    rss_max = math.max(rss_max, r)
    if mal then malloc_max = math.max(malloc_max, mal) end
    if fds ~= fd_ref then
      violation("fd-growth", "%d descriptors after %d tasks, %d before (%d after the warm-up)",
                fds, done, fd_ref, baseline.fd)
      fd_ref = fds  -- each change is reported once
    end
  end
  rss_end_run, malloc_end = r, mal
  if line then
    io.stderr:write(("soak: %7d/%d tasks %6.0f/s  fds %d  rss %.1f MiB  lua %.1f MiB (%.1f live)  malloc %s  jit %d traces  children %d  zombies %d  (results %d, lost %d, errors %d, violations %d)\n")
                    :format(done, opt.tasks, (done - last_done) / (t - last_t), fds, r / MiB,
                            heap / MiB, live / MiB, mal and ("%.2f MiB"):format(mal / MiB) or "?", jit_traces, nkids, nz, count.result, count.lost,
                            count.error, nviolations))
    last_line, last_done, last_t = t, done, t
  end
end

local hung = false
while next_g < opt.tasks and not hung do
  if opt.time_limit and now() - t_start >= opt.time_limit then
    stopped_early = next_g
    break
  end
  local left = opt.tasks - next_g
  local na = math.min(math.random(20, 200), left); left = left - na
  local nm = math.min(math.random(20, 200), left); left = left - nm
  local ni = math.min(math.random(50, 600), left)
  local recs = na > 0 and submit_applies(na) or {}
  local m = nm > 0 and submit_map(nm, pick({1, 4, 10, 25, false}) or nil) or nil
  if ni > 0 then
    run_imap(math.random(2) == 1, ni, pick({1, 1, 2, 5, 16}), math.random(2) == 1)
  end
  check_applies(recs)
  check_map(m)
  count.rounds = count.rounds + 1
  if kinds.hang then hung = true end
  rearm()
  sample()
end
sample(true)
local t_run = now() - t_start

-- Close and join: every worker must end, none may be left behind.
ffi.C.alarm(opt.stall)
if hung then
  pool:terminate()
else
  pool:close()
end
pool:join()
ffi.C.alarm(0)
local t_total = now() - t_start
pool = nil
collectgarbage("collect")
collectgarbage("collect")
local kids_left, zombies_left = 0, 0
for _, state in pairs(children()) do
  kids_left = kids_left + 1
  if state == "Z" then zombies_left = zombies_left + 1 end
end
if kids_left > 0 then violation("children", "%d children left after close() and join()", kids_left) end
figures.fd_end, figures.rss_end = fd_count(), rss()
if figures.fd_end ~= figures.fd_start then
  violation("fd-growth", "%d descriptors after join(), %d before the pool", figures.fd_end, figures.fd_start)
end

local accounted = count.result + count.lost + count.error
if accounted ~= count.submitted then
  violation("accounting", "%d items submitted, %d accounted for", count.submitted, accounted)
end
if baseline and rss_max - baseline.rss > opt.rss_slack * MiB then
  violation("rss-growth", "RSS rose to %.1f MiB, %.1f MiB over the %.1f MiB after the warm-up",
            rss_max / MiB, (rss_max - baseline.rss) / MiB, baseline.rss / MiB)
end

local function p(fmt, ...) io.stdout:write(fmt:format(...), "\n") end
p("soak summary (seed %d, %d workers, kill rate %g, error rate %g%s)", opt.seed, opt.workers,
  opt.kill_rate, opt.error_rate, opt.maxtasks and ", maxtasksperchild " .. opt.maxtasks or "")
if stopped_early then p("  time limit: stopped submitting after %d of %d tasks", stopped_early, opt.tasks) end
p("  time           %.1f s (%.1f s to the last outcome, then close+join), %d rounds",
  t_total, t_run, count.rounds)
p("  tasks          %d submitted, %d accounted for: %.0f tasks/s", count.submitted, accounted,
  accounted / t_run)
p("  by call        apply_async %d, map_async %d, imap %d, imap_unordered %d",
  count.apply, count.map, count.imap, count.imap_unordered)
p("  outcomes       results %d, WorkerLost %d, errors %d", count.result, count.lost, count.error)
p("  planned        %d items kill their worker, %d raise; %d map_async jobs failed (%d items)",
  count.planned_kills, count.planned_raises, count.map_failed_jobs, count.map_failed_items)
p("  descriptors    start %d, with the pool %d, after warm-up %s, min/max after %s/%s, end %d",
  figures.fd_start, figures.fd_pool, baseline and baseline.fd or "-",
  baseline and fd_min or "-", baseline and fd_max or "-", figures.fd_end)
if baseline then
  p("  RSS            start %.1f MiB, after warm-up (%d tasks) %.1f MiB, max %.1f MiB (%+.2f), last round %.1f MiB, after join %.1f MiB",
    figures.rss_start / MiB, baseline.at, baseline.rss / MiB, rss_max / MiB,
    (rss_max - baseline.rss) / MiB, rss_end_run / MiB, figures.rss_end / MiB)
end
if baseline then
  p("  Lua heap live  after warm-up %.2f MiB, max %.2f MiB, last round %.2f MiB",
    baseline.live / MiB, live_max / MiB, live_end / MiB)
  if baseline.malloc then
    p("  malloc in use  after warm-up %.2f MiB, max %.2f MiB, last round %.2f MiB",
      baseline.malloc / MiB, malloc_max / MiB, malloc_end / MiB)
  end
end
if opt.jit == "off" then
  p("  parent's JIT   off")
else
  p("  parent's JIT   %d traces compiled (%s after the warm-up), %d cache flushes",
    jit_traces, baseline and jit_traces - baseline.traces or "-", jit_flushes)
end
p("  children       max %d; zombies max %d at a round boundary, %d persistent; left after join: %d (%d zombies)",
  children_max, zombies_max, zombies_persistent, kids_left, zombies_left)
if nviolations == 0 then
  p("  OK: every check held")
  os.exit(0)
end
local ks = {}
for k, n in pairs(kinds) do ks[#ks + 1] = k .. " " .. n end
table.sort(ks)
p("  FAILED: %d violations (%s)", nviolations, table.concat(ks, ", "))
for _, v in ipairs(violations) do p("    %s", v) end
os.exit(1)
