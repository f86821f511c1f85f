-- scaleout_bench.lua -- B13 of scripts/bench: lmp.Pool over Redis, served by
-- `lmp worker`s, against the local lmp.Pool(2) and against the raw Redis
-- round trip that any work queue on Redis streams pays (redis_probe.c).
--
-- Usage:  build/lmp scaleout_bench.lua [--quick] URL AUTHKEY_FILE PROBE
--   URL           redis://:PASSWORD@HOST:PORT/DB of a running redis-server
--                 whose queue "bench" 2 `lmp worker -j 1` already serve
--   AUTHKEY_FILE  the workers' --authkey-file
--   PROBE         the compiled redis_probe, run last against the same server
-- scripts/bench starts and stops the server and the workers around this.
--
-- Output: `name value unit` lines, one invocation being one run, as the
-- other programs print them: lmp first (over Redis, then local), then the
-- reference, then the ratios the targets are about.  --quick divides counts
-- by 10.
local ffi = require "ffi"
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")

-- Wall-clock seconds (CLOCK_MONOTONIC).
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local APPLY_N = 3000      -- timed apply round trips per pool
local MAP_N = 100000      -- items per map
local MAP_REPS = 5        -- timed maps per pool (the median is reported)
local WARM = 100          -- untimed apply round trips first; and one map
local QUEUE = "bench"

local args, scale = {}, 1
for _, a in ipairs { ... } do
  if a == "--quick" then scale = 10 else args[#args + 1] = a end
end
local url, keyfile, probe = args[1], args[2], args[3]
if not probe then
  io.stderr:write("usage: lmp scaleout_bench.lua [--quick] URL AUTHKEY_FILE PROBE\n")
  os.exit(2)
end
local function n(count) return math.max(1, math.floor(count / scale)) end

local fig = {}  -- what was emitted, by name
local function emit(name, value, unit)
  fig[name] = value
  io.write(string.format("%s %.6g %s\n", name, value, unit))
  io.flush()
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return (s:gsub("\n$", ""))
end

local function median(t)
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

local lmp = require "lmp"

-- Round trips of pool:apply(identity, {1}), the same function each time:
-- median and p99 in us.
local function apply_latency(pool)
  local function identity(x) return x end
  for _ = 1, WARM do assert(pool:apply(identity, { 1 }) == 1) end
  local trips = {}
  for i = 1, n(APPLY_N) do
    local t = now()
    local r = pool:apply(identity, { 1 })
    trips[i] = (now() - t) * 1e6
    assert(r == 1, "bad apply result")
  end
  table.sort(trips)
  return trips[math.floor(#trips / 2) + 1], trips[math.floor(#trips * 0.99) + 1]
end

-- items/s of pool:map(double, xs) at the default chunksize: the median of
-- MAP_REPS maps after an untimed one.
local function map_rate(pool)
  local function double(x) return x * 2 end
  local xs = {}
  for i = 1, n(MAP_N) do xs[i] = i end
  local rates = {}
  for rep = 0, MAP_REPS do
    local t = now()
    local ys = pool:map(double, xs)
    local dt = now() - t
    assert(#ys == #xs and ys[#xs] == 2 * #xs, "bad map result")
    if rep > 0 then rates[rep] = #xs / dt end
  end
  return median(rates)
end

-- 1. lmp.Pool over Redis.  Its default chunksize is sized by the live
-- worker processes it finds when it starts: both workers must count.
local redis = lmp.Pool { broker = url, queue = QUEUE, authkey = slurp(keyfile), lease = 5 }
local t0 = now()
while redis:stats().workers < 2 do
  assert(now() - t0 < 10, "the pool sees fewer than 2 worker processes")
  lmp.poll(0.1)
end
local ok, err = pcall(function()
  local p50, p99 = apply_latency(redis)
  emit("lmp.B13.apply_redis", p50, "us")
  emit("lmp.B13.apply_redis_p99", p99, "us")
  emit("lmp.B13.map_redis", map_rate(redis), "items/s")
end)
if ok then redis:close(); redis:join() else redis:terminate() end
assert(ok, err)

-- 2. The local pool, same program, same calls.
local pool = lmp.Pool(2)
local p50, p99 = apply_latency(pool)
emit("lmp.B13.apply_local", p50, "us")
emit("lmp.B13.apply_local_p99", p99, "us")
emit("lmp.B13.map_local", map_rate(pool), "items/s")
pool:close(); pool:join()

-- 3. The raw round trip on the same server, and the ratios.
local host, port = url:match("@([^:/]+):(%d+)")
local password = url:match("^redis://[^:@/]*:([^@]*)@") or ""
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local cmd = ("REDIS_PASSWORD=%s timeout 300 %s %s %s %s"):format(
  q(password), q(probe), scale == 10 and "--quick" or "", q(host), port)
local p = assert(io.popen(cmd))
local out = p:read("*a")
local closed, how, code = p:close()
assert(closed == true or closed == 0, ("redis_probe failed (%s %s)"):format(how, code))
for name, value, unit in out:gmatch("(%S+) (%S+) (%S+)\n") do
  emit(name, assert(tonumber(value), out), unit)
end
assert(fig["c.redis_roundtrip"], "redis_probe printed no round trip")
emit("lmp.B13.apply_vs_raw", fig["lmp.B13.apply_redis"] / fig["c.redis_roundtrip"], "x")
emit("lmp.B13.map_vs_local", fig["lmp.B13.map_redis"] / fig["lmp.B13.map_local"] * 100, "%")
