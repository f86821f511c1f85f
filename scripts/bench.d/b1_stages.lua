-- b1_stages.lua -- where the time of a B1 item goes: each stage of a
-- Pool.map of numbers, timed alone in one process, per item.
--
-- Usage:  build/lmp scripts/bench.d/b1_stages.lua [CHUNK]
--
-- A chunk of CHUNK numbers (default 25000, B1's default chunksize for
-- 200k items on 2 workers; 1 for B1's chunksize=1 row) goes through what
-- the pool does with it, stage by stage, in one process: the parent's copy
-- of the list (small chunks; big ones are framed from the list itself),
-- the task frame (lmp.pool.pack), the ring to the worker (the queue calls
-- of the pool's transport, frame to ring to buffer), the worker's reading
-- of the frame, the calls, the reply frame, the ring back, and the
-- parent's assembly of the results.  Run it from the top of the checkout
-- (it finds lmp's core as the specs do).  What this leaves out -- scheduling,
-- waiting, waking up, two processes sharing two cores with the parent --
-- is the end-to-end figure (Pool(2).map, last line) minus the sum.
local lmp = require "lmp"
local ffi = require "ffi"
local pack = require "lmp.pool.pack"
local table_new = require "table.new"

local CHUNK = tonumber(arg and arg[1]) or 25000
local TOTAL = 200000  -- items per measurement, as in B1
local REPS = 5        -- the best of these

local function square(x) return x * x end

local list = {}
for i = 1, TOTAL do list[i] = i - 1 end
local core = require("spec.support.helpers").core()
local now = ffi.cast("double (*)(void)", core.now_fn)  -- lmp's monotonic clock
local q = lmp.SimpleQueue()
local seg, receiver = q._seg, pack.receiver()
local BIG = CHUNK >= 256  -- framed at the call, from the list (lmp.pool)
local SLOTS = math.min(TOTAL / CHUNK, 64)

-- Runs stage(c, slot) for each chunk c of the list; the best of REPS, in
-- ns per item.
local function per_item(stage)
  local best = math.huge
  for _ = 1, REPS do
    local t = now()
    for c = 0, TOTAL / CHUNK - 1 do stage(c, c % SLOTS + 1) end
    best = math.min(best, now() - t)
  end
  return best / TOTAL * 1e9
end

-- What each stage needs from the one before, made ahead of time: chunk c
-- keeps its artifacts at slot c % SLOTS (small chunks are many; as in the
-- pool, each one's are garbage soon).
local copy = table_new(TOTAL, 0)
for i = 1, TOTAL do copy[i] = list[i] end
local frames, items, results, replies = {}, {}, {}, {}
local SIZE = pack.HEADER + 8 * CHUNK  -- of a frame
for c = 0, SLOTS - 1 do
  frames[c + 1] = pack.task_frame(c + 1, 1, copy, c * CHUNK + 1, CHUNK, nil, false, true)
  items[c + 1] = pack.read_task(frames[c + 1])[4]
  local r = table_new(CHUNK, 1)
  r.n = CHUNK
  for i = 1, CHUNK do r[i] = square(items[c + 1][i]) end
  results[c + 1] = r
  local f = pack.reply_frame(c + 1, r, false, 1)
  replies[c + 1] = ffi.new("uint8_t[?]", SIZE)
  ffi.copy(replies[c + 1], f, SIZE)
end

local rows = {}
local function row(name, ns) rows[#rows + 1] = {name, ns} end

if not BIG then
  row("copy of the list (map_async)", per_item(function(c)
    if c == 0 then copy = table_new(TOTAL, 0) end
    for i = c * CHUNK + 1, (c + 1) * CHUNK do copy[i] = list[i] end
  end))
end
local owned = {}
row("task frame (pack.task_frame)", per_item(function(c, k)
  owned[k] = pack.task_frame(c + 1, 1, copy, c * CHUNK + 1, CHUNK, nil, false, BIG)
end))
row("ring to the worker (put + get)", per_item(function(_, k)
  core.queue_put(seg, frames[k], nil, SIZE)
  assert(receiver:get(core.queue_get, seg, 1, true))
end))
row("worker reads the frame (pack.read_task)", per_item(function(_, k)
  items[k] = pack.read_task(frames[k])[4]
end))
row("calls of fn, results table", per_item(function(_, k)
  local it = items[k]
  local r = table_new(CHUNK, 1)
  r.n = CHUNK
  for i = 1, CHUNK do r[i] = square(it[i]) end
  results[k] = r
end))
row("reply frame (pack.reply_frame)", per_item(function(c, k)
  return pack.reply_frame(c + 1, results[k], false, 1)
end))
row("ring back (put + get)", per_item(function(_, k)
  core.queue_put(seg, replies[k], nil, SIZE)
  assert(receiver:get(core.queue_get, seg, 1, true))
end))
local all
row("assembly (pack.unpack_into)", per_item(function(c, k)
  if c == 0 then all = table_new(TOTAL, 0) end
  pack.unpack_into(replies[k], all, c * CHUNK + 1)
end))

local sum = 0
for _, r in ipairs(rows) do sum = sum + r[2] end

-- End to end, as B1 runs it.
local pool = lmp.Pool(2)
pool:map(square, list, CHUNK)
local best = math.huge
for _ = 1, REPS do
  local t = now()
  local r = pool:map(square, list, CHUNK)
  best = math.min(best, now() - t)
  assert(r[TOTAL] == (TOTAL - 1) ^ 2)
end
pool:close()
pool:join()

print(("B1 stages, chunks of %d numbers, ns per item (best of %d):"):format(CHUNK, REPS))
for _, r in ipairs(rows) do print(("  %-42s %8.1f"):format(r[1], r[2])) end
print(("  %-42s %8.1f"):format("sum of the stages", sum))
print(("  %-42s %8.1f  (%.1fM items/s)"):format("Pool(2):map end to end, wall", best / TOTAL * 1e9,
                                                  TOTAL / best / 1e6))
q:close()
