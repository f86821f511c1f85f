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
M.HEADER = HEADER
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

-- Where frames are written: kept, up to a size worth keeping.
local scratch, scratch_n, KEEP = nil, -1, 131072

local function frame(t, base, n, own)
  local f = scratch
  if own then
    f = frame_t(n)
  elseif n > scratch_n then
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

-- The frame of task `id` of the call `key`: fn(t[base]) ... fn(t[base +
-- n - 1]), or with `apply`, fn(t[base], ..., t[base + n - 1]); nil
-- unless those are all numbers.  The frame is FFI memory, and its size in
-- bytes: good until the next frame is made (a queue put copies it, see
-- runtime/lmp_queue.c), or, with `own`, a frame of its own; M.task makes
-- it a string.
function M.task_frame(id, key, t, base, n, soft, apply, own)
  local f = frame(t, base, n, own)
  if not f then return nil end
  f.retiring = 0
  f.unused[0] = apply and 1 or 0
  f.id, f.key, f.soft = id, key, soft or 0 / 0
  return f, HEADER + 8 * n
end

function M.task(...)
  local f, size = M.task_frame(...)
  return f and ffi.string(f, size)
end

-- The frame of the reply to task `id`: results[1..results.n]; nil unless
-- they are all numbers.  As task_frame: FFI memory and its size.
function M.reply_frame(id, results, retiring, slot)
  local n = results.n or #results
  local f = frame(results, 1, n)
  if not f then return nil end
  f.retiring = retiring and 1 or 0
  f.id, f.key, f.soft = id, slot, 0
  return f, HEADER + 8 * n
end

-- Frames are read where they are: in a string, or in FFI memory (a
-- buffer a queue get copied them into).
local bytes = ffi.typeof("const uint8_t *")

function M.is_frame(s) return ffi.cast(bytes, s)[0] == TAG end

-- Whether the string s is a whole frame: one from another machine
-- (lmp.broker) is read only if its count of numbers fits its length.
function M.valid(s)
  return #s >= HEADER and M.is_frame(s) and #s == HEADER + 8 * ffi.cast(view_t, s).n
end

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
-- its numbers; no copy of them is made here; a frame in a buffer must be
-- read before the buffer is reused).
function M.read_reply(s)
  local f = ffi.cast(view_t, s)
  return {f.id, true, s, f.retiring == 1 or nil, f.key}
end

-- How many numbers a reply frame holds.
function M.count(s) return ffi.cast(view_t, s).n end

-- Writes the numbers of a reply frame to dst[base], dst[base + 1], ...
function M.unpack_into(s, dst, base)
  local p = ffi.cast(cdouble, s) + HEADER / 8
  for i = 0, M.count(s) - 1 do dst[base + i] = p[i] end
  return s  -- keeps s alive while p is read
end

-- The numbers of a reply frame as a table {n = count, ...}.
function M.unpack(s)
  local n = M.count(s)
  local t = table_new(n, 1)
  t.n = n
  M.unpack_into(s, t, 1)
  return t
end

-- A receiver of frames: queue gets (runtime/lmp_queue.c) copy frames
-- into its buffer, which starts small and grows to the frames that come,
-- up to BUFFER_MAX; a frame that does not fit comes as a string.  A method
-- table, not a closure: a closure called from a trace would stay alive,
-- with its owner, for as long as the trace (see lmp.pool.imap).
local buffer_t = ffi.typeof("uint8_t[?]")
local BUFFER_MIN, BUFFER_MAX = 4096, 8 * 1048576

local Receiver = {}
Receiver.__index = Receiver

function M.receiver()
  return setmetatable({buf = buffer_t(BUFFER_MIN), cap = BUFFER_MIN}, Receiver)
end

-- The next item of the queue at `seg`: core.queue_get(seg, timeout,
-- spin), with frames in the buffer until the next get.
function Receiver:get(queue_get, seg, timeout, spin)
  local v = queue_get(seg, timeout, spin, self.buf, self.cap)
  if type(v) == "string" and #v > self.cap and #v <= BUFFER_MAX and M.is_frame(v) then
    local cap = self.cap
    while cap < #v do cap = cap * 2 end
    self.buf, self.cap = buffer_t(cap), cap
  end
  return v
end

return M
