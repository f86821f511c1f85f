-- lmp.cli.worker: `lmp worker`, the workers of a broker pool
-- (lmp.broker.worker; docs/scale-out.md).
local M = {}

local USAGE = [[
usage: lmp worker --broker URL [--queue NAME] [-j N] [--authkey-file FILE]
                  [--lease SECONDS] [--insecure]
Serves the tasks of lmp.Pool{broker = URL, queue = NAME} with N local
processes (default: one per CPU) until SIGTERM, which hands the tasks not
started back to the queue, lets the running ones finish, and exits 0.
  --broker URL         redis://[:password@]host[:port][/db]; the password may
                       come from LMP_REDIS_PASSWORD instead, and is hidden
                       from ps either way
  --queue NAME         the queue (default: lmp)
  --authkey-file FILE  the key that tasks and replies are signed with (the
                       pools' authkey; one trailing newline is ignored)
  --lease SECONDS      a task whose worker is silent this long runs again
                       elsewhere (default: 30)
  --insecure           run tasks without an authkey: anyone who can write
                       to the Redis server can run code here
]]

local function parse(args)
  local o = {}
  local i = 1
  local function value(name)
    local v = args[i + 1]
    if v == nil then return nil, name .. " needs a value" end
    i = i + 1
    return v
  end
  while i <= #args do
    local a = args[i]
    local name, attached = a:match("^(%-%-[%w-]+)=(.*)$")
    if name then
      a = name
      table.insert(args, i + 1, attached)
    end
    local v, err
    if a == "--help" or a == "-h" then
      o.help = true
    elseif a == "--broker" then
      v, err = value(a)
      o.broker = v
    elseif a == "--queue" then
      v, err = value(a)
      o.queue = v
    elseif a == "-j" or a:match("^%-j%d+$") then
      v = a:match("^%-j(%d+)$")
      if not v then v, err = value(a) end
      o.j = tonumber(v)
      if v and (not o.j or o.j < 1 or o.j ~= math.floor(o.j)) then
        return nil, "-j must be a positive whole number, not " .. v
      end
    elseif a == "--authkey-file" then
      v, err = value(a)
      o.authkey_file = v
    elseif a == "--lease" then
      v, err = value(a)
      o.lease = tonumber(v)
      if v and not (o.lease and o.lease > 0) then
        return nil, "--lease must be a positive number of seconds, not " .. v
      end
    elseif a == "--insecure" then
      o.insecure = true
    else
      return nil, "unknown argument " .. a
    end
    if err then return nil, err end
    i = i + 1
  end
  if not o.help and not o.broker then return nil, "--broker is required" end
  return o
end

function M.main(core, ...)
  local o, err = parse({...})
  if not o then
    io.stderr:write("lmp worker: ", err, "\n", USAGE)
    return 2
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  if o.authkey_file then
    local f, e = io.open(o.authkey_file, "rb")
    if not f then
      io.stderr:write("lmp worker: cannot read the authkey: ", e, "\n")
      return 2
    end
    o.authkey = f:read("*a"):gsub("\r?\n$", "")
    f:close()
  end
  local ok, status = pcall(core.broker_worker().serve, o)
  if not ok then
    local lmp = require "lmp"
    local message = tostring(lmp.is_error(status) and status.message or status)
    io.stderr:write(message:match("^lmp worker: ") and "" or "lmp worker: ", message, "\n")
    return 1
  end
  return status
end

return M
