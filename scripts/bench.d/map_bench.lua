-- MAP: `lmp map` against the serial loop a user would write otherwise
-- (luajit + lua-cjson, line by line) and against GNU xargs -P 2 running
-- that loop on batches of the input.  Run with luajit:
--   luajit map_bench.lua LMP WORKDIR [--quick]
-- Prints `name value unit` lines, as the other workloads do.
local ffi = require "ffi"
ffi.cdef [[
  struct lmp_bench_ts { long sec, nsec; };
  int clock_gettime(int clock, struct lmp_bench_ts *ts);
]]
local ts = ffi.new("struct lmp_bench_ts")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

local lmp, dir, quick = arg[1], arg[2], arg[3] == "--quick"
local scale = quick and 10 or 1
local luajit = os.getenv("LUAJIT") or "luajit"
local here = arg[0]:gsub("[^/]*$", "")

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok == true or ok == 0, "failed: " .. cmd)
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The inputs: records as a log or an export would have them.
local function input(name, n)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  for i = 1, n do
    f:write('{"id":', i, ',"name":"item', i, '","tags":["a","b"],"v":', i * 0.5, "}\n")
  end
  f:close()
  return path
end

local trivial = write(dir .. "/map_trivial.lua", "return function(r) return r end\n")
-- about 50 us of arithmetic per record
local heavy = write(dir .. "/map_heavy.lua", [[
return function(r)
  local x = r.id
  for i = 1, 20000 do x = (x * 1103515245 + 12345) % 2147483648 end
  return {id = r.id, h = x}
end
]])
local serial = write(dir .. "/map_serial.lua", [[
local cjson = require "cjson"
local fn = dofile(arg[1])
local decode, encode, write = cjson.decode, cjson.encode, io.write
for line in io.lines(arg[2]) do write(encode(fn(decode(line))), "\n") end
]])

-- Seconds to run cmd (its output to a file, as a pipeline would).
local function timed(cmd)
  local t0 = now()
  sh(cmd .. " > " .. q(dir .. "/map_out"))
  return now() - t0
end

local function lines_of(path)
  local n = 0
  for _ in io.lines(path) do n = n + 1 end
  return n
end

local function xargs(fn, path)
  local batches = dir .. "/map_batch."
  return timed(("rm -f %s* && split -n l/8 -d %s %s && ls %s?? | " ..
                "xargs -P 2 -I{} sh -c %s && cat %s??.out")
    :format(q(batches), q(path), q(batches), q(batches),
            q(q(luajit) .. " " .. q(serial) .. " " .. q(fn) .. " {} > {}.out"), q(batches)))
end

for _, case in ipairs { { "trivial", trivial, 400000 }, { "heavy", heavy, 20000 } } do
  local name, fn, n = case[1], case[2], math.floor(case[3] / scale)
  local path = input("map_" .. name .. ".jsonl", n)
  local t_lmp = timed(("%s map %s %s"):format(q(lmp), q(fn), q(path)))
  assert(lines_of(dir .. "/map_out") == n, "lmp map lost lines")
  local t_serial = timed(("%s %s %s %s"):format(q(luajit), q(serial), q(fn), q(path)))
  local t_xargs = xargs(fn, path)
  assert(lines_of(dir .. "/map_out") == n, "xargs lost lines")
  print(("lmp.MAP.%s %.6g lines/s"):format(name, n / t_lmp))
  print(("lua.MAP.serial_%s %.6g lines/s"):format(name, n / t_serial))
  print(("xargs.MAP.%s %.6g lines/s"):format(name, n / t_xargs))
  print(("lmp.MAP.%s_vs_serial %.6g x"):format(name, t_serial / t_lmp))
end
sh("rm -f " .. q(dir) .. "/map_*")
