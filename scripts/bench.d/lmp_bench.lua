-- lmp_bench.lua -- the lmp column of scripts/bench: workloads B1..B10 on lmp.
--
-- Usage:  build/lmp lmp_bench.lua [--quick] ID...    run these workloads
--         build/lmp lmp_bench.lua --list             print the ids defined
--
-- Output: one `name value unit` line per result, one invocation being one
-- run, like mp_bench.py.  --quick divides counts by 10.
--
-- Adding a workload is one function here: define W.B<n> with the sizes
-- below (they mirror mp_bench.py) and emit the metric names that
-- table.py's rows already expect: "lmp." .. the CPython name, in the row's
-- unit, e.g. for B3:
--
--   function W.B3()
--     local pool, count = lmp.Pool(2), n(APPLY_N)
--     local function identity(x) return x end
--     for i = 1, WARM do pool:apply(identity, { i }) end
--     local t = now()
--     for i = 1, count do assert(pool:apply(identity, { i }) == i) end
--     emit("lmp.B3.apply_latency", (now() - t) / count * 1e6, "us")
--     pool:close(); pool:join()
--   end
--
-- scripts/bench asks --list which ids exist and runs each in a fresh process
-- next to its CPython and C counterparts.  Timed sections leave out process
-- and pool start, as on the Python side.

local ffi = require "ffi"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")

-- Wall-clock seconds (CLOCK_MONOTONIC, comparable across processes).
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Sizes, as in mp_bench.py.
local MAP_N, MAP1_N = 200000, 20000     -- B1 items: default chunksize, 1
local CPU_INPUTS, CPU_N = 40, 1300000   -- B2 inputs, loop length
local APPLY_N = 5000                    -- B3 round trips
local QUEUE_N = 200000                  -- B4 items
local JOIN_N = 5000                     -- B4 JoinableQueue round trips
local CONNECT_N = 200                   -- B11 connect+authenticate round trips
local BIG_N, BIG_SIZE = 200, 2 ^ 20     -- B5 items of 1 MiB
local PING_N = 50000                    -- B6 round trips
local START_N = 50                      -- B7 processes per start method
local LOCK_N = 100000                   -- B8 increments per child
local UNCONTENDED_N = 1000000           -- B8 acquire+release pairs
local FILL_N = 1000000                  -- B8 Array elements a child writes
local RECORDS = 1000                    -- B10 records in the payload
local WARM = 100                        -- untimed warm-up calls
local MB = 1e6                          -- rates are decimal

local scale = 1                         -- 10 under --quick
local lmp                               -- require "lmp", once workloads run

local function n(count) return math.max(1, math.floor(count / scale)) end

local function emit(name, value, unit)
  io.write(string.format("%s %.6g %s\n", name, value, unit))
  io.flush()
end

-- Rate of fn(), called in doubling batches for at least 0.3 s.
local function calls_per_second(fn)
  local calls, batch, t0 = 0, 1, now()
  while true do
    for _ = 1, batch do fn() end
    calls, batch = calls + batch, batch * 2
    local elapsed = now() - t0
    if elapsed >= 0.3 / scale then return calls / elapsed end
  end
end

-- The B10 payload: ids 0..RECORDS-1 like Python's range().
local function records()
  local t = {}
  for i = 0, RECORDS - 1 do
    t[i + 1] = { id = i, name = "user" .. i, score = i * 1.5,
                 tags = { "a", "b", "c" }, active = i % 2 == 0 }
  end
  return t
end

-- Workloads, keyed by id.  The others arrive with the issues that build the
-- parts of lmp they measure.
local W = {}

-- B1: Pool(2).map of a trivial function, default chunksize and chunksize
-- 1; then a pool's start+close+join alone.
function W.B1()
  local function square(x) return x * x end
  local pool = lmp.Pool(2)
  pool:map(square, (function() local t = {} for i = 1, WARM do t[i] = i end return t end)())
  for _, case in ipairs { {"pool_map_small", n(MAP_N)}, {"pool_map_chunksize1", n(MAP1_N), 1} } do
    local xs = {}
    for i = 1, case[2] do xs[i] = i - 1 end
    local t = now()
    local res = pool:map(square, xs, case[3])
    local dt = now() - t
    assert(res[case[2]] == (case[2] - 1) ^ 2)
    emit("lmp.B1." .. case[1], case[2] / dt, "items/s")
  end
  pool:close(); pool:join()
  for _, method in ipairs(lmp.get_all_start_methods()) do
    local t = now()
    pool = lmp.get_context(method).Pool(2)
    pool:close(); pool:join()
    emit("lmp.B1.pool_lifecycle." .. method, (now() - t) * 1e3, "ms")
  end
end

-- B2: a CPU-bound map on Pool(2) against the same loop run serially.  The
-- loop is longer than Python's so that a task also takes about 50 ms here.
function W.B2()
  local N = 33000000
  local function cpu_task(x)
    local s = 0
    for i = x, x + N - 1 do s = s + i * i % 7 end
    return s
  end
  local inputs = {}
  for i = 1, n(CPU_INPUTS) do inputs[i] = i - 1 end
  local t = now()
  local serial = {}
  for i, x in ipairs(inputs) do serial[i] = cpu_task(x) end
  local t_serial = now() - t
  local pool = lmp.Pool(2)
  pool:map(function(x) return x end, {1, 2, 3})
  t = now()
  local parallel = pool:map(cpu_task, inputs, 1)
  local t_pool = now() - t
  pool:close(); pool:join()
  for i = 1, #inputs do assert(parallel[i] == serial[i]) end
  emit("lmp.B2.task_time", t_serial / #inputs * 1e3, "ms")
  emit("lmp.B2.speedup", t_serial / t_pool, "x")
  emit("lmp.B2.efficiency", t_serial / t_pool / 2 * 100, "%")
end

-- B3: sequential pool:apply(identity, {i}) round trips.
function W.B3()
  local function identity(x) return x end
  local pool, count = lmp.Pool(2), n(APPLY_N)
  for i = 1, WARM do pool:apply(identity, {i}) end
  local t = now()
  for i = 1, count do assert(pool:apply(identity, {i}) == i) end
  emit("lmp.B3.apply_latency", (now() - t) / count * 1e6, "us")
  pool:close(); pool:join()
end

-- B9: memory of an idle Pool worker (mean of the two).
function W.B9()
  local pool = lmp.Pool(2)
  -- the workers' pids, from the warm-up tasks themselves
  local pids, seen = {}, {}
  local warm = pool:map(function() return require("lmp").current_process().pid end,
    (function() local t = {} for i = 1, WARM do t[i] = i end return t end)(), 1)
  for _, pid in ipairs(warm) do
    if not seen[pid] then seen[pid] = true; pids[#pids + 1] = pid end
  end
  local t = now()
  while now() - t < 0.3 do lmp.poll(0.05) end  -- settle in the idle loop
  for _, field in ipairs { {"VmRSS", "worker_rss"}, {"RssAnon", "worker_rss_anon"} } do
    local sum = 0
    for _, pid in ipairs(pids) do
      local f = assert(io.open("/proc/" .. pid .. "/status"))
      local kib = tonumber(f:read("*a"):match(field[1] .. ":%s*(%d+)"))
      f:close()
      sum = sum + kib
    end
    emit("lmp.B9." .. field[2], sum / #pids / 1024, "MiB")
  end
  pool:close(); pool:join()
end

-- B6: Pipe round trips with an echoing child: send/recv of an int, then
-- send_bytes/recv_bytes of one byte.
function W.B6()
  local count = n(PING_N)
  for _, form in ipairs { "send", "bytes" } do
    local a, b = lmp.Pipe()
    local raw = form == "bytes"
    local child = lmp.Process(function(conn, rounds, bytes)
      for _ = 1, rounds do
        if bytes then conn:send_bytes(conn:recv_bytes()) else conn:send(conn:recv()) end
      end
    end, b, WARM + count, raw)
    child:start()
    local function trip(i)
      if raw then
        a:send_bytes("x")
        return a:recv_bytes() == "x"
      end
      a:send(i)
      return a:recv() == i
    end
    for i = 1, WARM do trip(i) end
    local t = now()
    for i = 1, count do assert(trip(i), "bad echo") end
    local dt = now() - t
    assert(child:join(30) == 0)
    a:close(); b:close()
    emit("lmp.B6.pipe_pingpong." .. form, dt / count * 1e6, "us")
  end
end

-- B7: Process(noop) start + join, one after another, for each start
-- method; one warm-up process is left out.
function W.B7()
  local function noop() end
  for _, method in ipairs(lmp.get_all_start_methods()) do
    local ctx = lmp.get_context(method)
    local count = n(method == "spawn" and START_N or START_N * 4)
    local function start_join()
      local p = ctx.Process(noop)
      p:start()
      assert(p:join(30) == 0)
    end
    local t = now()
    start_join()
    if method == "forkserver" then  -- the first one starts the server
      emit("lmp.B7.forkserver_warmup", (now() - t) * 1e3, "ms")
    end
    t = now()
    for _ = 1, count do start_join() end
    emit("lmp.B7.process_start." .. method, (now() - t) / count * 1e3, "ms")
  end
end

-- B4/B5: a child puts `count` items (ints 0..count-1, or the same 1 MiB
-- string) on a new queue; the parent gets them all, timed from the go
-- signal to the last get.
local function produce(q, ready, go, count, size)
  local item = size > 0 and ("x"):rep(size) or nil
  ready:set()
  go:wait()
  if item then
    for _ = 1, count do q:put(item) end
  else
    for i = 0, count - 1 do q:put(i) end
  end
end

local function stream(make, count, size)
  local q, ready, go = make(), lmp.Event(), lmp.Event()
  local p = lmp.Process(produce, q, ready, go, count, size or 0)
  p:start()
  assert(ready:wait(30))
  local t = now()
  go:set()
  local total = 0
  for _ = 1, count do
    local item = q:get(30)
    total = total + (size and #item or item)
  end
  local dt = now() - t
  assert(p:join(30) == 0)
  assert(total == (size and count * size or count * (count - 1) / 2), "items lost")
  q:close()
  return dt
end

local function drain_joinable(q)
  while true do
    local item = q:get()
    q:task_done()
    if item == nil then break end
  end
end

function W.B4()
  local count = n(QUEUE_N)
  emit("lmp.B4.queue_small", count / stream(lmp.Queue, count), "items/s")
  emit("lmp.B4.simplequeue_small", count / stream(lmp.SimpleQueue, count), "items/s")
  count = n(JOIN_N)
  local q = lmp.JoinableQueue()
  local p = lmp.Process(drain_joinable, q)
  p:start()
  for i = 1, WARM do q:put(i); assert(q:join(30)) end
  local t = now()
  for i = 1, count do q:put(i); assert(q:join(30)) end
  local dt = now() - t
  q:put(nil)
  assert(p:join(30) == 0)
  emit("lmp.B4.joinable_roundtrip", dt / count * 1e6, "us")
end

function W.B5()
  local count = n(BIG_N)
  emit("lmp.B5.queue_large", count * BIG_SIZE / stream(lmp.Queue, count, BIG_SIZE) / MB, "MB/s")

  -- the same items as a Pool worker's results, which go by handle
  -- (lmp.codec.share_threshold): the worker returns the same 1 MiB string
  -- (a global of the worker's, made there once)
  local pool = lmp.Pool(1)
  local size = BIG_SIZE
  pool:apply(function(size) BIG_STRING = string.rep("x", size) end, {size})
  local items = {}
  for i = 1, count do items[i] = i end
  local total = 0
  local t = now()
  for _, item in pool:imap(function() return BIG_STRING end, items, 1) do total = total + #item end
  local dt = now() - t
  assert(total == count * size, "items lost")
  emit("lmp.B5.pool_results_large", count * size / dt / MB, "MB/s")

  -- a 64 MiB FFI array to a child (an argument of a Pool task): it arrives
  -- over the shared memory, with no copy; timed until the child has read
  -- its last element
  local n = 8 * 2 ^ 20
  local arr = require("ffi").new("double[?]", n)
  for i = 0, n - 1 do arr[i] = i end
  local reps = 5
  local best = math.huge
  for _ = 1, reps do
    t = now()
    local last = pool:apply(function(a, n) return a[n - 1] end, {arr, n})
    best = math.min(best, now() - t)
    assert(last == n - 1)
  end
  emit("lmp.B5.array_to_child", n * 8 / best / MB, "MB/s")
  pool:close(); pool:join()
end

-- B11: Client connect + authenticate (authkey, both ways) to a Listener on
-- TCP loopback; then send/recv ping-pong of an int on one such connection.
local function serve_echo(listener, count)
  for _ = 1, WARM + count do assert(listener:accept(30)):close() end
  local conn = assert(listener:accept(30))
  while true do
    local msg = conn:recv()
    if msg == nil then break end
    conn:send(msg)
  end
  conn:close()
end

function W.B11()
  local count = n(CONNECT_N)
  -- A free port; the child listens on it (a listening socket is not
  -- something lmp passes to a child).
  local probe = lmp.connection.Listener{address = "127.0.0.1:0"}
  local address = probe.address
  probe:close()
  local p = lmp.Process(function(addr, cnt, serve)
    local l = require("lmp").connection.Listener{address = addr, authkey = "secret"}
    serve(l, cnt)
    l:close()
  end, address, count, serve_echo)
  p:start()
  local opts = {authkey = "secret", timeout = 30}
  for _ = 1, 50 do
    local ok, c = pcall(lmp.connection.Client, address, opts)
    if ok then c:close() break end
    lmp.connection.wait({}, 0.05)
  end
  for _ = 1, WARM - 1 do lmp.connection.Client(address, opts):close() end
  local t = now()
  for _ = 1, count do lmp.connection.Client(address, opts):close() end
  emit("lmp.B11.connect_auth", (now() - t) / count * 1e3, "ms")
  local conn = lmp.connection.Client(address, opts)
  local pings = n(PING_N)
  for i = 1, WARM do conn:send(i); conn:recv() end
  t = now()
  for i = 1, pings do
    conn:send(i)
    assert(conn:recv() == i, "bad echo")
  end
  emit("lmp.B11.tcp_pingpong", (now() - t) / pings * 1e6, "us")
  conn:send(nil)
  conn:close()
  assert(p:join(30) == 0)
end

-- The clock, for a child process (a function travels without the cdef
-- made by this script's main chunk).
local function child_clock()
  local ffi = require "ffi"
  pcall(ffi.cdef, [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock, bench_timespec *ts);
  ]])
  local ts = ffi.new("bench_timespec")
  return function()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
  end
end

-- B8: two children each do LOCK_N `with v:get_lock(): v.value += 1` on a
-- Value('i'), timed from go to the last child's end; then acquire+release
-- of a Lock no one else wants; then a child filling an Array('d') through
-- a.ptr (the loop only).
local function increment(v, ready, go, count, ends, k, clock)
  local now = clock()
  local lock = v:get_lock()
  local function bump() v.value = v.value + 1 end
  ready:release()
  go:wait()
  for _ = 1, count do lock:with(bump) end
  ends[k] = now()
end

-- (timed from each child's own start, as the C probe is: the whole run is
-- a few ms, and waking up after `go` would dominate it)
local function add_atomically(v, ready, go, count, starts, ends, k, clock)
  local now = clock()
  ready:release()
  go:wait()
  starts[k] = now()
  for _ = 1, count do v:add(1) end
  ends[k] = now()
end

local function fill(a, count, took, clock)
  local now = clock()
  local p = a.ptr
  local t = now()
  for i = 0, count - 1 do p[i] = i end
  took.value = now() - t
end

function W.B8()
  local count = n(LOCK_N)
  local v = lmp.Value("i", 0)
  local ends = lmp.Array("d", 2, { lock = false })
  local ready, go = lmp.Semaphore(0), lmp.Event()
  local procs = {}
  for k = 1, 2 do
    procs[k] = lmp.Process(increment, v, ready, go, count, ends, k, child_clock)
    procs[k]:start()
  end
  for _ = 1, 2 do assert(ready:acquire(30)) end
  local t0 = now()
  go:set()
  for k = 1, 2 do assert(procs[k]:join(60) == 0) end
  assert(v.value == 2 * count, "lost updates")
  emit("lmp.B8.lock_counter", 2 * count / (math.max(ends[1], ends[2]) - t0), "ops/s")

  -- the same count with v:add(1), lock-free (SPEC section 15)
  local a = lmp.RawValue("i", 0)
  local starts = lmp.Array("d", 2, { lock = false })
  ready, go = lmp.Semaphore(0), lmp.Event()
  for k = 1, 2 do
    procs[k] = lmp.Process(add_atomically, a, ready, go, count, starts, ends, k, child_clock)
    procs[k]:start()
  end
  for _ = 1, 2 do assert(ready:acquire(30)) end
  go:set()
  for k = 1, 2 do assert(procs[k]:join(60) == 0) end
  assert(a.value == 2 * count, "lost updates")
  emit("lmp.B8.atomic_counter",
       2 * count / (math.max(ends[1], ends[2]) - math.min(starts[1], starts[2])), "ops/s")

  count = n(UNCONTENDED_N)
  local lock = lmp.Lock()
  for _ = 1, WARM do lock:acquire(); lock:release() end
  local t = now()
  for _ = 1, count do lock:acquire(); lock:release() end
  emit("lmp.B8.lock_uncontended", (now() - t) / count * 1e9, "ns")

  count = n(FILL_N)
  local a, took = lmp.RawArray("d", count), lmp.RawValue("d", 0)
  local p = lmp.Process(fill, a, count, took, child_clock)
  p:start()
  assert(p:join(60) == 0 and a[count] == count - 1, "array not filled")
  emit("lmp.B8.array_fill", count / took.value, "elements/s")
end

-- B10: the codec on 1000 records.  Plain data encodes to JSON text (the
-- rows against lua-cjson); the binary format, which lmp uses between its
-- own processes, is measured too.
function W.B10()
  local codec, payload = lmp.codec, records()
  local blob = codec.encode(payload)
  local back = codec.decode(blob)
  assert(blob:sub(1, 1) == "[" and #back == RECORDS and back[3].tags[3] == "c")
  for _, form in ipairs { "", "binary_" } do
    local opts = form == "binary_" and { binary = true } or nil
    local data = codec.encode(payload, opts)
    for _, op in ipairs { "encode", "decode" } do
      collectgarbage()
      local rate = calls_per_second(op == "encode"
        and function() return codec.encode(payload, opts) end
        or function() return codec.decode(data) end)
      emit("lmp.B10.codec." .. form .. op, rate * #data / MB, "MB/s")
      emit("lmp.B10.codec." .. form .. op .. "_records", rate * RECORDS, "records/s")
    end
    emit("lmp.B10.codec." .. form .. "size", #data, "bytes")
  end
end

-- B12: a 60 Hz embedding host (scripts/examples/tick_host.c, built
-- beside the lmp host) that offloads path-finding: the us it spends in
-- lmp per tick with both workers saturated (p50/p99/max); the same host
-- calling pool:map inside its tick (the stall it avoids); and the paths
-- per second against a serial host, which spends most of each tick
-- finding paths itself.
function W.B12()
  local exe = arg[-1] or "build/lmp"  -- the lmp host running this
  local tick_host = exe:gsub("[^/]*$", "") .. "tick_host"
  local game = (arg[0]:gsub("[^/]*$", "")) .. "../examples/tick_game.lua"
  local seconds = scale == 10 and 1 or 5
  local function run(mode)
    local p = assert(io.popen(("%q %q %s %d"):format(tick_host, game, mode, seconds)))
    local out = p:read("*a")
    p:close()
    local f = {out:match("tick_us p50 (%d+) p99 (%d+) max (%d+)")}
    assert(#f == 3, "tick_host " .. mode .. ": " .. out)
    return tonumber(f[1]), tonumber(f[2]), tonumber(f[3]),
           tonumber(out:match("per_s ([%d.]+)"))
  end
  local p50, p99, max, async_rate = run("async")
  emit("lmp.B12.tick_p50", p50, "us")
  emit("lmp.B12.tick_p99", p99, "us")
  emit("lmp.B12.tick_max", max, "us")
  local n50, _, nmax = run("naive")
  emit("lmp.B12.naive_p50", n50, "us")
  emit("lmp.B12.naive_max", nmax, "us")
  local _, _, _, serial_rate = run("serial")
  emit("lmp.B12.paths_per_s", async_rate, "paths/s")
  emit("lmp.B12.serial_paths_per_s", serial_rate, "paths/s")
  emit("lmp.B12.vs_serial", async_rate / serial_rate, "x")
end

local ids = {}
for i = 1, 12 do
  if W["B" .. i] then ids[#ids + 1] = "B" .. i end
end

local args = { ... }
if args[1] == "--quick" then
  scale = 10
  table.remove(args, 1)
end
if args[1] == "--list" then
  if #ids > 0 then print(table.concat(ids, "\n")) end
  return
end
for _, id in ipairs(args) do
  if not W[id] then
    io.stderr:write("lmp_bench: no workload ", id, "; defined: ",
                    #ids > 0 and table.concat(ids, " ") or "none", "\n")
    os.exit(2)
  end
end
if #args > 0 then lmp = require "lmp" end
for _, id in ipairs(args) do W[id]() end

