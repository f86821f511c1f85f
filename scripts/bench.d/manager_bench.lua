-- B14 of scripts/bench, lmp's side: a manager dict's `d[k] = v` then
-- `d[k]`, one after the other, in microseconds per pair (manager_bench.py
-- is CPython's side, with the same counts).
--
-- Usage: build/lmp scripts/bench.d/manager_bench.lua [--quick]
-- Output: `lmp.B14.manager_dict <us> us`.
local lmp = require "lmp"
local ffi = require "ffi"

ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } lmp_b14_timespec;
  int clock_gettime(int clk, lmp_b14_timespec *ts);
]]
local ts = ffi.new("lmp_b14_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local N, WARM = 20000, 500   -- set+get pairs timed, and before timing
if arg[1] == "--quick" then N = N / 10 end

local m = lmp.Manager()
local d = m:dict()
for i = 1, WARM do
  d[i % 100] = i
  assert(d[i % 100] == i)
end
local t = now()
for i = 1, N do
  d[i % 100] = i
  if d[i % 100] ~= i then error("B14: wrong value read back") end
end
local dt = now() - t
m:shutdown()
io.write(("lmp.B14.manager_dict %.6g us\n"):format(dt / N * 1e6))
