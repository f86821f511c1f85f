-- lmp.pool.deque: the tasks waiting in the parent, first in first out
-- (retried and requeued tasks go in front): a ring that doubles when full.
--
-- A Lua table used as a queue with keys that only grow degrades in
-- LuaJIT: the array part empties from the front, and rehashing moves the
-- rest into the hash part, where every later insert pays.  The ring keeps
-- its items in slots 1..cap of the array part.
local table_new = require "table.new"

local D = {}
D.__index = D

function D.new()
  return setmetatable({slots = table_new(64, 0), head = 1, count = 0, cap = 64}, D)
end

local function grow(self)
  local slots, cap, head = self.slots, self.cap, self.head
  local bigger = table_new(cap * 2, 0)
  for i = 0, self.count - 1 do bigger[i + 1] = slots[(head - 1 + i) % cap + 1] end
  self.slots, self.head, self.cap = bigger, 1, cap * 2
end

function D:push(v)
  if self.count == self.cap then grow(self) end
  self.slots[(self.head - 1 + self.count) % self.cap + 1] = v
  self.count = self.count + 1
end

function D:push_front(v)
  if self.count == self.cap then grow(self) end
  self.head = (self.head - 2) % self.cap + 1
  self.slots[self.head] = v
  self.count = self.count + 1
end

-- The first item (nil if empty).
function D:peek()
  if self.count == 0 then return nil end
  return self.slots[self.head]
end

function D:pop()
  if self.count == 0 then return nil end
  local v = self.slots[self.head]
  self.slots[self.head] = nil
  self.head = self.head % self.cap + 1
  self.count = self.count - 1
  if self.count == 0 and self.cap > 1024 then  -- a big backlog is gone
    self.slots, self.head, self.cap = table_new(64, 0), 1, 64
  end
  return v
end

-- Takes every item out, first to last.
function D:drain()
  local all = {}
  while self.count > 0 do all[#all + 1] = self:pop() end
  return all
end

return D
