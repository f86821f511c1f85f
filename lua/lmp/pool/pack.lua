-- lmp.pool.pack: a chunk of plain numbers as one string of doubles.
--
-- A map over numbers is the pool's most common work, and the codec pays a
-- few calls of the Lua C API per item (some 40 ns), more than the work of
-- a trivial task.  A chunk whose items are all numbers travels instead as
-- their doubles, copied by compiled Lua through the FFI (a few ns an
-- item), both ways: the task's items and the task's results.  Doubles are
-- copied bit for bit, so -0.0, infinities and NaN arrive as they left.
-- Anything else (a nil, a string, a table) takes the codec.
local ffi = require "ffi"
local table_new = require "table.new"

local M = {}

-- Below this many items, the codec is as fast.
M.MIN = 16

local doubles = ffi.typeof("double[?]")
local cdouble = ffi.typeof("const double *")

-- Where numbers are gathered before they become a string: kept, up to a
-- size worth keeping.
local scratch, scratch_n, KEEP = nil, 0, 131072

-- The string of t[base], ..., t[base + n - 1] if they are all numbers,
-- else nil.
function M.numbers(t, base, n)
  if n < M.MIN then return nil end
  local buf = scratch
  if n > scratch_n then
    buf = doubles(n)
    if n <= KEEP then scratch, scratch_n = buf, n end
  end
  for i = 0, n - 1 do
    local v = t[base + i]
    if type(v) ~= "number" then return nil end
    buf[i] = v
  end
  return ffi.string(buf, n * 8)
end

-- How many numbers a packed string holds.
function M.count(s) return #s / 8 end

-- Writes the numbers of s to dst[base], dst[base + 1], ...
function M.unpack_into(s, dst, base)
  local p = ffi.cast(cdouble, s)
  for i = 0, #s / 8 - 1 do dst[base + i] = p[i] end
  return s  -- keeps s alive while p is read
end

-- The numbers of s as a table {n = count, ...}.
function M.unpack(s)
  local n = #s / 8
  local t = table_new(n, 1)
  t.n = n
  M.unpack_into(s, t, 1)
  return t
end

return M
