-- fuzz_listener.lua -- the Lua half of spec/fuzz/fuzz_listener.c (which
-- explains the flags and the setup): the Listeners, and one session of
-- each side, checked against a model of the frames in the peer's bytes.
--   local server, client = dofile(...)(support, addresses)
-- server(flags, stream) and client(flags, stream) return nil, or what was
-- wrong.
local S, names = ...
local lmp, bit = S.lmp, require "bit"

-- Kept in step with spec/fuzz/make_corpus.lua.
local KEY = "fuzz-authkey"
local CHALLENGE = "0123456789abcdefghijklmnopqrstuvwxyzABCD"
local SMALL = 200
-- recv_bytes(maxlength) with F_MAXLEN: flags >> 6 picks maxlength.
local MAXLENGTHS = {[0] = 64, 0, math.huge, 2^64}
local DEFAULT_MAX = 64 * 2^20  -- listener.lua's default max_message
local F_AUTH, F_STALL, F_SMALL, F_BYTES, F_MAXLEN = 2, 4, 8, 16, 32
local SAFE = {safe = true}

local function has(flags, f) return bit.band(flags, f) ~= 0 end

-- The challenges lmp sends: always CHALLENGE, so that seeds can answer.
-- `core` is the module's table of C functions, as listener.lua sees it.
local core = S.listener_core()
assert(#CHALLENGE == 40)
core.random_bytes = function(n)
  assert(n <= #CHALLENGE)
  return CHALLENGE:sub(1, n)
end

-- LMP_FUZZ_VERBOSE=1: how each session ends, on stderr (for seeds).
local verbose = (os.getenv("LMP_FUZZ_VERBOSE") or "0") ~= "0"
local function trace(fmt, ...)
  if verbose then io.stderr:write(fmt:format(...), "\n") end
end

-- One Listener per combination of F_AUTH, F_STALL, F_SMALL: index
-- (flags >> 1) & 7, as LISTENER_OF in the C file.
local listeners = {}
for i = 0, 7 do
  local t = has(i * 2, F_STALL) and 1e-3 or 30
  listeners[i] = lmp.connection.Listener{address = names[i + 1],
    authkey = has(i * 2, F_AUTH) and KEY or nil, timeout = t, stall = t,
    max_message = has(i * 2, F_SMALL) and SMALL or nil}
end

-- The model: the frames of `s` from position `pos`, as CPython's
-- multiprocessing.connection writes them (a 4-byte big-endian signed
-- length; -1 and an 8-byte length), at most `count` of them.  Returns the
-- payloads, how the stream goes on after them ("end": nothing more;
-- "partial": a frame begun and not finished; "bad": a negative length
-- other than -1; "big": a length over `limit`; "more": `count` reached),
-- and the position after the last whole frame.
local function frames(s, pos, limit, count)
  local list = {}
  while true do
    local left = #s - pos + 1
    if #list == count then return list, "more", pos end
    if left == 0 then return list, "end", pos end
    if left < 4 then return list, "partial", pos end
    local b1, b2, b3, b4 = s:byte(pos, pos + 3)
    local len, hlen
    if b1 == 255 and b2 == 255 and b3 == 255 and b4 == 255 then
      if left < 12 then return list, "partial", pos end
      len, hlen = 0, 12
      for i = pos + 4, pos + 11 do len = len * 256 + s:byte(i) end
    elseif b1 >= 128 then
      return list, "bad", pos
    else
      len, hlen = ((b1 * 256 + b2) * 256 + b3) * 256 + b4, 4
    end
    if len > limit then return list, "big", pos end
    if left - hlen < len then return list, "partial", pos end
    list[#list + 1] = s:sub(pos + hlen, pos + hlen + len - 1)
    pos = pos + hlen + len
  end
end

local HANDSHAKE = {AuthenticationError = true}
local MESSAGE = {OSError = true, CodecError = true}

-- Reads messages until the end, an error, or (F_STALL) nothing to read,
-- and compares them with the model of `stream` from `pos`.
local function messages(conn, flags, stream, pos)
  local stall, bytes = has(flags, F_STALL), has(flags, F_BYTES)
  local maxlength = bytes and has(flags, F_MAXLEN) and MAXLENGTHS[bit.rshift(flags, 6)] or nil
  local limit = has(flags, F_SMALL) and SMALL or DEFAULT_MAX
  local list, ending = frames(stream, pos, maxlength and math.min(limit, maxlength) or limit)
  for n = 1, #list + 1 do
    local whole = n <= #list  -- the model has message n
    if stall and not conn:poll(0) then
      if whole or ending ~= "end" then
        return ("message %d: nothing to read, but the model has %s"):format(
          n, whole and "a whole frame" or ending)
      end
      return trace("%d messages, then nothing", n - 1)
    end
    local ok, v, why
    if bytes then ok, v, why = pcall(conn.recv_bytes, conn, maxlength)
    else ok, v, why = pcall(conn.recv, conn) end
    if not ok then
      if not S.lmp_error(v, MESSAGE) or
         (v.kind == "OSError" and not v.message:find("^recv: ")) then
        return ("message %d: raised %s"):format(n, tostring(v))
      end
      if v.kind == "CodecError" then
        if bytes or not whole then
          return ("message %d: a CodecError, from %s"):format(n, bytes and "recv_bytes" or ending)
        end
        if pcall(lmp.codec.decode, list[n], SAFE) then
          return ("message %d: recv raised %s, but the payload decodes"):format(n, tostring(v))
        end
      elseif whole or ending == "end" then
        return ("message %d: recv raised %s, but the model has %s"):format(
          n, tostring(v), whole and "a whole frame" or "the end")
      end
      return trace("%d messages, then %s", n - 1, tostring(v))
    end
    if why == "eof" and v == nil then
      if whole or ending ~= "end" then
        return ("message %d: eof, but the model has %s"):format(n, whole and "a whole frame" or ending)
      end
      return trace("%d messages, then eof", n - 1)
    end
    if why ~= nil then return ("message %d: a second value %s"):format(n, tostring(why)) end
    if not whole then return ("message %d: a message the model does not have (%s)"):format(n, ending) end
    if bytes then
      if v ~= list[n] then
        return ("message %d: %d bytes, not the %d bytes sent"):format(n, #tostring(v), #list[n])
      end
    else
      local what = S.plain(v)
      if what then return ("message %d: %s, not plain data"):format(n, what) end
    end
  end
  return "read past the model"  -- not reached: the last round returns
end

-- The messages after a connection is made: after the three frames of a
-- handshake (whichever side), which the model skips.
local function session(conn, flags, stream)
  local pos = 1
  if has(flags, F_AUTH) then
    local _, ending
    _, ending, pos = frames(stream, 1, math.huge, 3)
    if ending ~= "more" then
      conn:close()
      return "the handshake succeeded without three whole frames"
    end
  end
  local why = messages(conn, flags, stream, pos)
  conn:close()
  return why
end

local function server(flags, stream)
  local l = listeners[bit.band(bit.rshift(flags, 1), 7)]
  local ok, conn = pcall(l.accept, l, 1)
  if not ok then
    if S.lmp_error(conn, HANDSHAKE) then return trace("accept: %s", tostring(conn)) end
    return "accept raised " .. tostring(conn)
  end
  if conn == nil then return "accept found no peer" end
  return session(conn, flags, stream)
end

-- The Client side: the peer always closes its end (F_STALL is ignored).
local function client(flags, stream)
  flags = bit.band(flags, bit.bnot(F_STALL))
  local ok, conn = pcall(lmp.connection.Client, names[9], {timeout = 30,
    stall = 30, authkey = has(flags, F_AUTH) and KEY or nil,
    max_message = has(flags, F_SMALL) and SMALL or nil})
  if not ok then
    if S.lmp_error(conn, HANDSHAKE) then return trace("Client: %s", tostring(conn)) end
    return "Client raised " .. tostring(conn)
  end
  return session(conn, flags, stream)
end

return server, client
