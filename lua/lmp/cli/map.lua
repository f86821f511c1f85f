-- lmp.cli.map: `lmp map`, JSON lines through a pool (docs/cli.md).
--
-- The parent never looks at a line: it reads the input in blocks of whole
-- lines and hands each block to the pool's lazy imap, so that it keeps up
-- with any number of workers, and memory holds only the blocks in flight
-- however long the input.  A worker decodes each line of its block, calls
-- the user's function, and returns the block's output lines as one string.
-- Blocks grow or shrink so that each takes about BLOCK_TIME in a worker:
-- big enough that their cost vanishes for a trivial function, small
-- enough that the workers share a heavy one evenly and output flows.
local M = {}

local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat

local USAGE = [[
usage: lmp map [-j N] [--ordered|--unordered] [--keep-going] [--progress]
               SCRIPT.lua[:FN] [FILE...]
Reads JSON lines from the FILEs (or stdin, or "-"), calls FN on each
decoded value in a pool of N workers (default: one per CPU), and writes
one JSON line per input line to stdout, in input order unless
--unordered.  FN is the function SCRIPT returns, or its field FN (or the
global FN it sets).  Blank lines are skipped.  A line that fails stops
the run (exit 1) with a message naming it; with --keep-going it becomes
{"error": MESSAGE, "line": N} and the run exits 3 at the end.
--progress draws a progress line on stderr when it is a terminal.
]]

local BLOCK_TIME = 0.01                      -- seconds of work per block
local MIN_BLOCK, MAX_BLOCK = 256, 1048576    -- bytes
local FIRST_BLOCK = 4096

-- --- in each worker --------------------------------------------------------

local user_fn

-- The function the script at `path` gives: what it returns, or its field
-- or global `name`.  Messages name it `shown`, as the user wrote it.
local function load_function(path, name, shown)
  local f, err = io.open(path, "rb")
  if not f then error(err, 0) end
  local source = f:read("*a")
  f:close()
  path = shown or path
  local chunk
  chunk, err = loadstring(source, "@" .. path)
  if not chunk then error(err, 0) end
  local returned = chunk()
  local fn = returned
  if name then
    fn = type(returned) == "table" and returned[name] or nil
    if fn == nil then fn = rawget(_G, name) end
    if type(fn) ~= "function" then
      error(("%s has no function '%s' (not in the table it returns, nor a global)")
            :format(path, name), 0)
    end
  elseif type(fn) ~= "function" then
    error(("%s returns %s, not a function (name one with %s:FN)")
          :format(path, type(returned), path), 0)
  end
  return fn
end

function M.init(path, name, shown)
  user_fn = load_function(path, name or nil, shown)
end

local function message(e)
  if type(e) == "table" and type(e.message) == "string" and e.kind then
    return tostring(e.message)
  end
  return tostring(e)
end

local NOT_JSON = "the result is not JSON data (NaN, infinity, a hole in an " ..
                 "array, a table used twice, a function...)"

-- Why v cannot be a line of JSON.
local function not_json(codec, v)
  local ok, e = pcall(codec.encode, v, {role = "result"})
  return ok and NOT_JSON or message(e)
end

-- One block: {first line number, text, keep going, file name (several
-- inputs only)}.  Returns {output, lines written, errors, seconds, bytes,
-- failed line, its message, its file}; output ends with a newline unless
-- empty.  Without keep going, the block stops at its first failing line.
function M.block(item)
  local lmp = require "lmp"
  local codec, null = lmp.codec, lmp.null
  -- lmp's C half decodes and encodes a whole block in one call each
  local core = debug.getregistry()["lmp.core"]
  local line_no, text, keep, file = item[1], item[2], item[3], item[4]
  local t0 = os.clock()
  local results, lines, bad_json, n = core.codec_decode_lines(text, line_no)
  local fn, errors, failed, why = user_fn, 0, nil, nil
  for i = 1, n do
    local v, ok = results[i], true
    if v == nil then
      ok, v = false, "invalid JSON: " .. tostring(bad_json[i]):gsub("^decode: ", "")
    else
      ok, v = pcall(fn, v)
      if not ok then v = message(v) elseif v == nil then v = null end
    end
    if not ok then
      if not keep then
        failed, why, n = lines[i], v, i - 1
        break
      end
      v = {error = v, line = lines[i], file = file}
      errors = errors + 1
    end
    results[i] = v
  end
  -- The output: the results as JSON lines, each that is not JSON data
  -- failing its line in turn.
  local parts, from = {}, 1
  while from <= n do
    local text_out, bad = core.codec_encode_lines(results, from, n)
    parts[#parts + 1] = text_out
    if not bad then break end
    local msg = not_json(codec, results[bad])
    if not keep then
      if not failed or lines[bad] < failed then failed, why = lines[bad], msg end
      n = bad - 1
      break
    end
    results[bad] = {error = msg, line = lines[bad], file = file}
    errors = errors + 1
    from = bad
  end
  return {table.concat(parts), n, errors, os.clock() - t0, #text, failed, why, file}
end

-- --- in the parent ------------------------------------------------------------

local function fail(status, fmt, ...)
  io.stderr:write("lmp map: ", fmt:format(...), "\n")
  return status
end

local function parse(args)
  local o = {ordered = true, files = {}}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      i = i + 1
      break
    elseif a == "-h" or a == "--help" then
      o.help = true
    elseif a == "--ordered" then
      o.ordered = true
    elseif a == "--unordered" then
      o.ordered = false
    elseif a == "--keep-going" then
      o.keep_going = true
    elseif a == "--progress" then
      o.progress = true
    elseif a == "-j" or a == "--jobs" then
      i = i + 1
      o.jobs = args[i] or false
    elseif a:match("^%-j.") then
      o.jobs = a:sub(3)
    elseif a:match("^%-%-jobs=") then
      o.jobs = a:sub(8)
    elseif a:match("^%-.") then
      return nil, ("unknown option '%s'"):format(a)
    else
      break
    end
    i = i + 1
  end
  if o.help then return o end
  if o.jobs ~= nil then
    local n = tonumber(o.jobs)
    if not n or n < 1 or n ~= math.floor(n) then
      return nil, ("-j needs a positive whole number, not '%s'"):format(tostring(o.jobs or ""))
    end
    o.jobs = n
  end
  o.script = args[i]
  if not o.script then return nil, "no SCRIPT given" end
  for k = i + 1, #args do o.files[#o.files + 1] = args[k] end
  -- SCRIPT.lua:FN, unless the whole argument names a file
  local path, name = o.script:match("^(.*):([%a_][%w_]*)$")
  local whole = io.open(o.script, "r")
  if whole then whole:close() end
  if path and not whole then o.script, o.fn = path, name end
  return o
end

local function absolute(core, path)
  if path:sub(1, 1) == "/" then return path end
  return core.getcwd() .. "/" .. path
end

-- The blocks of the inputs, as the pool's lazy imap pulls them:
-- {first line, text, keep going, file name if there are several}.
local function reader(inputs, keep, size)
  local k, file, line = 0, nil, 1
  return function()
    while true do
      if not file then
        k = k + 1
        if not inputs[k] then return nil end
        file, line = inputs[k].file, 1
      end
      local text = file:read(size())
      if text then
        if byte(text, -1) ~= 10 then  -- complete the last line
          local rest = file:read("*l")
          if rest then text = text .. rest .. "\n" end
        end
        local first, count, pos = line, 0, 0
        while true do
          pos = find(text, "\n", pos + 1, true)
          if not pos then break end
          count = count + 1
        end
        if byte(text, -1) ~= 10 then count = count + 1 end
        line = line + count
        return {first, text, keep, #inputs > 1 and inputs[k].name or nil}
      end
      if file ~= io.stdin then file:close() end
      file = nil
    end
  end
end

local function task(item) return require("lmp.cli.map").block(item) end
local function initializer(path, name, shown)
  require("lmp.cli.map").init(path, name, shown)
end

-- `lmp map ARGS...`: returns the exit status.
function M.main(core, ...)
  local lmp = require "lmp"
  local o, err = parse({...})
  if not o then
    io.stderr:write("lmp map: ", err, "\n", USAGE)
    return 2
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  local chunk, why = loadfile(o.script)
  if not chunk then return fail(1, "%s", why) end
  local inputs = {}
  if #o.files == 0 then o.files[1] = "-" end
  for i, name in ipairs(o.files) do
    local f = name == "-" and io.stdin or io.open(name, "rb")
    if not f then
      local _, e = io.open(name, "rb")
      return fail(1, "cannot open %s", e or name)
    end
    inputs[i] = {file = f, name = name == "-" and "stdin" or name}
  end

  local block = FIRST_BLOCK
  local pool = lmp.Pool{processes = o.jobs, initializer = initializer,
                        initargs = {absolute(core, o.script), o.fn or false, o.script}}
  local show = o.progress and core.isatty(2)
  local t0, lines, last_draw = core.now(), 0, 0
  local status = 0
  local ok, e = pcall(function()
    local results = (o.ordered and pool.imap or pool.imap_unordered)(
      pool, task, reader(inputs, o.keep_going, function() return block end), 1)
    local out = io.stdout
    for _, r in results do
      out:write(r[1])
      lines = lines + r[2]
      if r[3] > 0 then status = 3 end
      -- the next blocks: about BLOCK_TIME of work each
      local spent, bytes = r[4], r[5]
      local size = spent > 0 and math.floor(bytes * BLOCK_TIME / spent) or block * 4
      block = math.max(MIN_BLOCK, math.min(MAX_BLOCK, size, block * 4))
      if r[6] then
        out:flush()
        status = 1
        io.stderr:write(("lmp map: line %d%s: %s\n"):format(
          r[6], r[8] and " of " .. r[8] or "", r[7]))
        return
      end
      if show and core.now() - last_draw >= 0.1 then
        last_draw = core.now()
        io.stderr:write(("\r%d lines  %.0f lines/s "):format(lines, lines / (last_draw - t0)))
      end
    end
  end)
  if show then
    io.stderr:write(("\r%d lines  %.0f lines/s\n"):format(lines, lines / math.max(core.now() - t0, 1e-9)))
  end
  io.stdout:flush()
  if status == 1 or not ok then pool:terminate() else pool:close() end
  pool:join()
  if not ok then return fail(1, "%s", tostring(e)) end
  return status
end

return M
