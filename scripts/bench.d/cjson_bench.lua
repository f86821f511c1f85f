-- cjson_bench.lua -- the codec reference of scripts/bench: lua-cjson encoding
-- and decoding the B10 payload under LuaJIT (SPEC section 2: lmp.codec must
-- be at least as fast on plain data).
--
-- Usage:  luajit cjson_bench.lua [--quick]
-- Output: `name value unit` lines as mp_bench.py's B10 prints them: MB/s of
-- JSON text (MB = 10^6 bytes), records/s, and the payload size.  --quick
-- times each side for 0.03 s instead of 0.3 s.

local cjson = require "cjson"
local ffi = require "ffi"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")

-- Wall-clock seconds (CLOCK_MONOTONIC); os.clock would be CPU time.
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local RECORDS = 1000
local min_time = arg[1] == "--quick" and 0.03 or 0.3

-- Rate of fn(), called in doubling batches for at least min_time seconds.
local function calls_per_second(fn)
  local calls, batch, t0 = 0, 1, now()
  while true do
    for _ = 1, batch do fn() end
    calls, batch = calls + batch, batch * 2
    local elapsed = now() - t0
    if elapsed >= min_time then return calls / elapsed end
  end
end

local function emit(name, value, unit)
  io.write(string.format("%s %.6g %s\n", name, value, unit))
  io.flush()
end

-- The B10 payload: ids 0..999 like Python's range(1000).
local payload = {}
for i = 0, RECORDS - 1 do
  payload[i + 1] = { id = i, name = "user" .. i, score = i * 1.5,
                     tags = { "a", "b", "c" }, active = i % 2 == 0 }
end

local blob = cjson.encode(payload)
local back = cjson.decode(blob)
assert(#back == RECORDS and back[RECORDS].name == "user" .. (RECORDS - 1)
       and back[2].active == false and back[3].tags[3] == "c",
       "cjson round trip mismatch")

for _, op in ipairs { "encode", "decode" } do
  collectgarbage()        -- start each side with the same clean heap
  local rate = calls_per_second(op == "encode"
    and function() return cjson.encode(payload) end
    or function() return cjson.decode(blob) end)
  emit("lua.cjson." .. op, rate * #blob / 1e6, "MB/s")
  emit("lua.cjson." .. op .. "_records", rate * RECORDS, "records/s")
end
emit("lua.cjson.size", #blob, "bytes")
