-- lmp.poolworker: the loop a Pool worker process runs (lua/lmp/pool.lua
-- starts it as the target "lmp.poolworker:main").
--
-- Messages from the pool, each a frame on `conn`:
--   {key, fn}                   the function of one call of the pool (map,
--                               apply_async, ...), kept under `key` for that
--                               call's later tasks; the worker keeps the
--                               last FUNCTIONS_KEPT (lua/lmp/pool.lua keeps
--                               count of them the same way);
--   {id, key, star, items}      a task: fn(item), or fn(unpack(item)) when
--                               star, for each item.
-- Reply, one frame per task: {id, true, results} or {id, false, err}.
-- End of file on conn means the pool is done with this worker.
local lmp = require "lmp"
local codec = lmp.codec
local unpack = unpack or table.unpack

local M = {}

local FUNCTIONS_KEPT = 4

local function failure(e)
  local kind = lmp.is_error(e) and e.kind or nil
  return {message = lmp.is_error(e) and e.message or tostring(e), kind = kind,
          traceback = debug.traceback("", 2):gsub("^\n", "")}
end

local function run_chunk(fn, star, items)
  local results, n = {n = items.n or #items}, items.n or #items
  for i = 1, n do
    if star then
      local a = items[i]
      results[i] = fn(unpack(a, 1, a.n or #a))
    else
      results[i] = fn(items[i])
    end
  end
  return results
end

function M.main(conn, initializer, initargs, maxtasks)
  if initializer then
    initargs = initargs or {}
    initializer(unpack(initargs, 1, initargs.n or #initargs))
  end
  local cache, kept, done = {}, {}, 0
  while true do
    local msg = conn:recv()
    if msg == nil then return end
    if msg[4] == nil then  -- {key, fn}
      cache[msg[1]] = msg[2]
      kept[#kept + 1] = msg[1]
      if #kept > FUNCTIONS_KEPT then cache[table.remove(kept, 1)] = nil end
      msg = conn:recv()
      if msg == nil then return end
    end
    local id = msg[1]
    local ok, value = xpcall(run_chunk, failure, cache[msg[2]], msg[3], msg[4])
    local okenc, frame = pcall(codec.encode, {id, ok, value}, {binary = true, role = "result"})
    if not okenc then
      frame = codec.encode({id, false, {message = tostring(frame), kind = "CodecError"}},
                           {binary = true})
    end
    conn:send_bytes(frame)
    done = done + 1
    if maxtasks and done >= maxtasks then return end
  end
end

return M
