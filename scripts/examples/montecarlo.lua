-- A first parallel job: estimate pi by throwing random points at a square,
-- on every CPU with lmp.Pool, and compare with one CPU.
--
--   build/lmp scripts/examples/montecarlo.lua [points]
local lmp = require "lmp"

local points = tonumber(arg and arg[1]) or 80e6
local tasks = 64

-- Counts the points of one task that fall inside the quarter circle.  Each
-- task has its own generator (xorshift), seeded by its number, so that the
-- parallel and the serial runs throw the very same points.
local function inside(task, n)
  local bit = require "bit"
  local x = bit.bor(task * 2654435761 % 4294967296, 1)
  local function rand()
    x = bit.bxor(x, bit.lshift(x, 13))
    x = bit.bxor(x, bit.rshift(x, 17))
    x = bit.bxor(x, bit.lshift(x, 5))
    return (x % 4294967296) / 4294967296
  end
  local hits = 0
  for _ = 1, n do
    local a, b = rand(), rand()
    if a * a + b * b <= 1 then hits = hits + 1 end
  end
  return hits
end

local per_task = math.floor(points / tasks)
local work = {}
for t = 1, tasks do work[t] = {t, per_task} end

local ffi = require "ffi"
ffi.cdef [[
  struct example_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clock, struct example_timespec *ts);
]]
local function wall()  -- seconds, CLOCK_MONOTONIC
  local ts = ffi.new("struct example_timespec")
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local t0 = wall()
local serial = 0
for _, w in ipairs(work) do serial = serial + inside(w[1], w[2]) end
local t_serial = wall() - t0

local pool = lmp.Pool()            -- one worker per CPU
t0 = wall()
local hits = 0
for _, h in ipairs(pool:starmap(inside, work)) do hits = hits + h end
local t_pool = wall() - t0
pool:close()
pool:join()

assert(hits == serial, "the parallel run must count the same points")
local total = per_task * tasks
print(("pi ~ %.6f from %d points"):format(4 * hits / total, total))
print(("serial %.2f s, %d workers %.2f s: speedup %.2fx"):format(
  t_serial, lmp.cpu_count(), t_pool, t_serial / t_pool))
