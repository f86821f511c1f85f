-- lmp.pool.pack: tasks and replies of plain numbers, without the codec.
--
-- A map over numbers is the pool's most common work.  The codec pays a
-- fixed cost per message (some 1.5 us: its options, its context, a look
-- at package.loaded for modules) and a few calls of the Lua C API per item
-- (some 40 ns), more than the work of a trivial task.  A task whose items
-- are all numbers travels instead as one frame of doubles written by
-- compiled Lua through the FFI, and so does a reply whose results are all
-- numbers (and no hole).  Doubles are copied bit for bit: -0.0, infinities
-- and NaN arrive as they left.  Anything else takes the codec.
--
-- A frame is a header and n doubles:
--   byte 0      TAG (0xFE: the codec's frames start with 0xFF, JSON text
--               with neither)
--   byte 1      1 if the worker retires after this task (replies)
--   byte 2      1 if the numbers are the arguments of one call (apply)
--   bytes 4..7  n
--   then as doubles: id; key (tasks) or the worker's slot (replies); the
--   soft timeout (tasks; NaN: none); then the n numbers.
local ffi = require "ffi"
local table_new = require "table.new"

local M = {}

local TAG = 0xFE
local HEADER = 32
local frame_t = ffi.typeof([[struct {
  uint8_t tag, retiring, unused[2]; uint32_t n;
  double id, key, soft;
  double v[?];
}]])
local view_t = ffi.typeof([[const struct {
  uint8_t tag, retiring, unused[2]; uint32_t n;
  double id, key, soft;
  double v[1];
} *]])
local cdouble = ffi.typeof("const double *")

-- Where a frame is written before it becomes a string: kept, up to a size
-- worth keeping.
local scratch, scratch_n, KEEP = nil, -1, 131072

local function frame(t, base, n)
  local f = scratch
  if n > scratch_n then
    f = frame_t(n)
    if n <= KEEP then scratch, scratch_n = f, n end
  end
  local v = f.v
  for i = 0, n - 1 do
    local x = t[base + i]
    if type(x) ~= "number" then return nil end
    v[i] = x
  end
  f.tag = TAG
  f.n = n
  return f
end

local function finish(f, n) return ffi.string(f, HEADER + 8 * n) end

-- The frame of task `id` of the call `key`: fn(t[base]) ... fn(t[base +
-- n - 1]), or with `apply`, fn(t[base], ..., t[base + n - 1]); nil
-- unless those are all numbers.
function M.task(id, key, t, base, n, soft, apply)
  local f = frame(t, base, n)
  if not f then return nil end
  f.retiring = 0
  f.unused[0] = apply and 1 or 0
  f.id, f.key, f.soft = id, key, soft or 0 / 0
  return finish(f, n)
end

-- The frame of the reply to task `id`: results[1..results.n]; nil unless
-- they are all numbers.
function M.reply(id, results, retiring, slot)
  local n = results.n or #results
  local f = frame(results, 1, n)
  if not f then return nil end
  f.retiring = retiring and 1 or 0
  f.id, f.key, f.soft = id, slot, 0
  return finish(f, n)
end

function M.is_frame(s) return s:byte(1) == TAG end

-- A task frame as the codec would have given it: {id, key, star, items,
-- soft}.
function M.read_task(s)
  local f = ffi.cast(view_t, s)
  local n = f.n
  local items = table_new(n, 1)
  items.n = n
  local v = f.v
  for i = 0, n - 1 do items[i + 1] = v[i] end
  local soft = f.soft
  if soft ~= soft then soft = nil end
  if f.unused[0] == 1 then return {f.id, f.key, true, {n = 1, items}, soft} end
  return {f.id, f.key, false, items, soft}
end

-- A reply frame as the codec would have given it: {id, true, values,
-- retiring, slot}, where values is the frame itself (M.unpack_into reads
-- its numbers; no copy of them is made here).
function M.read_reply(s)
  local f = ffi.cast(view_t, s)
  return {f.id, true, s, f.retiring == 1 or nil, f.key}
end

-- How many numbers a reply frame holds.
function M.count(s) return (#s - HEADER) / 8 end

-- Writes the numbers of a reply frame to dst[base], dst[base + 1], ...
function M.unpack_into(s, dst, base)
  local p = ffi.cast(cdouble, s) + HEADER / 8
  for i = 0, (#s - HEADER) / 8 - 1 do dst[base + i] = p[i] end
  return s  -- keeps s alive while p is read
end

-- The numbers of a reply frame as a table {n = count, ...}.
function M.unpack(s)
  local n = (#s - HEADER) / 8
  local t = table_new(n, 1)
  t.n = n
  M.unpack_into(s, t, 1)
  return t
end

return M
