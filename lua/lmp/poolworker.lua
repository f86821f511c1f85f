-- lmp.poolworker: the loop a Pool worker process runs (lua/lmp/pool.lua
-- starts it as the target "lmp.poolworker:main").
--
-- Messages from the pool, each a frame on `conn`:
--   {id, key, has_fn}      a task; if has_fn, the next frame is the
--                          function, which the worker keeps under `key`
--                          (a function is sent to a worker once);
--   then {star, items}     the chunk: fn(item) or fn(unpack(item)) for each.
-- Reply, one frame per task: {id, true, results} or {id, false, err}.
-- End of file on conn means the pool is done with this worker.
local lmp = require "lmp"
local codec = lmp.codec
local unpack = unpack or table.unpack

local M = {}

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
  local cache, done = {}, 0
  while true do
    local head = conn:recv()
    if head == nil then return end
    local id, key, has_fn = head[1], head[2], head[3]
    local fn
    if has_fn then
      fn = conn:recv()
      cache[key] = fn
    else
      fn = cache[key]
    end
    local body = conn:recv()
    if body == nil then return end
    local ok, value = xpcall(run_chunk, failure, fn, body[1], body[2])
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
