-- lmp.broker.task: a broker task, run in one of `lmp worker`'s local
-- pool processes (lmp.broker.worker hands it over as plain strings).
--
-- The task is the frame a local pool worker would read
-- (lmp.pool.worker): {id, key, star, items, soft [, fn]}, from the codec
-- or a frame of numbers (lmp.pool.pack).  Its function comes inside it
-- (an apply's) or as the frame {key, fn} of its call, which this process
-- decodes once and keeps.  The reply is returned encoded, so that the
-- worker's supervisor passes it on untouched: a frame of numbers, or the
-- codec's {true, results} / {false, error}.
--
-- The task and function were authenticated by the supervisor (their MAC
-- under the queue's authkey) before they came here.
local M = {}

local ffi = require "ffi"

local FUNCTIONS_KEPT = 16
local functions, kept = {}, {}  -- "client:key" -> fn; the keys, oldest first

local function function_of(key, frame)
  local fn = functions[key]
  if fn then return fn end
  if not frame then error("lmp worker: the task's function did not come with it", 0) end
  fn = require("lmp").codec.decode(frame)[2]
  functions[key] = fn
  kept[#kept + 1] = key
  if #kept > FUNCTIONS_KEPT then functions[table.remove(kept, 1)] = nil end
  return fn
end

local function encode_failure(message, kind)
  return require("lmp").codec.encode({false, {message = message, kind = kind}}, {binary = true})
end

function M.run(body, key, frame)
  local lmp = require "lmp"
  local pack = require "lmp.pool.pack"
  local worker = require "lmp.pool.worker"
  local msg
  if pack.is_frame(body) then
    if not pack.valid(body) then
      return encode_failure("lmp worker: a malformed frame of numbers", "CodecError")
    end
    msg = pack.read_task(body)
  else
    msg = lmp.codec.decode(body)
  end
  local fn = msg[6]
  if fn == nil then
    local ok, got = pcall(function_of, key, frame)
    if not ok then return encode_failure(tostring(lmp.is_error(got) and got.message or got)) end
    fn = got
  end
  local ok, value = worker.run_task(fn, msg[3], msg[4], msg[5])
  if ok then
    local f, size = pack.reply_frame(msg[1], value, false, 0)
    if f then return ffi.string(f, size) end
  end
  local encoded, s = pcall(lmp.codec.encode, {ok, value}, {binary = true})
  if encoded then return s end
  local e = s
  local message = lmp.is_error(e) and e.message or tostring(e)
  return encode_failure((message:gsub("^value%[2%]", ok and "result" or "error")), "CodecError")
end

return M
