-- A real redis-server for the scale-out specs, on a private port, with a
-- password and an append-only file synced at every write; and real
-- `lmp worker` processes.  Everything started here runs under `timeout`,
-- so that nothing outlives a run that went wrong, and is stopped by
-- S.stop_all().
local H = require "spec.support.helpers"

local S = {}

S.PASSWORD = "spec-pw-" .. tostring(math.random(1e6))
S.AUTHKEY = "spec-authkey"

local started = {}  -- pids of workers, to kill after each spec

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

-- Starts a command in the background (not a child of this process: the
-- shell that starts it exits); returns its pid.  Its stdout and stderr go
-- to `log`; its exit status to `log`.status.
local function background(argv, log, env, seconds)
  local words = {}
  for i, w in ipairs(argv) do words[i] = H.quote(w) end
  local envs = {}
  for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. H.quote(v) end
  local inner = ("%s timeout -k 2 %d %s > %s 2>&1; echo $? > %s"):format(
    #envs > 0 and ("env " .. table.concat(envs, " ")) or "", seconds or 300,
    table.concat(words, " "), H.quote(log), H.quote(log .. ".status"))
  -- The pid printed is the shell's running `inner`; `timeout` is its
  -- child and the command the grandchild.
  return tonumber(sh(("sh -c %s >/dev/null 2>&1 & echo $!"):format(H.quote(inner))))
end

-- The pid of the process running argv[1] under the shell `pid` (through
-- `timeout`).
local function command_pid(shell_pid, name)
  return H.wait_until(function()
    local out = sh(("pgrep -f -P $(pgrep -P %d | head -1) %s 2>/dev/null | head -1"):format(
      shell_pid, H.quote(name)))
    return tonumber(out)
  end, 10)
end

local Server = {}
Server.__index = Server

-- A port nothing listens on now.
local function free_port()
  local core = H.core()
  for _ = 1, 50 do
    local port = 20000 + math.random(0, 20000)
    local c = core.redis_connect("127.0.0.1", port, 0.5)
    if not c then return port end
    c:close()
  end
  error("no free port")
end

function S.server()
  -- Not H.tmpdir(): the server outlives each spec's clean-up.
  local p = io.popen("mktemp -d /tmp/lmp-redis.XXXXXX")
  local dir = p:read("*l")
  p:close()
  local self = setmetatable({dir = dir, port = free_port()}, Server)
  self:start()
  return self
end

function Server:start()
  self.shell = background({"redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1",
                           "--requirepass", S.PASSWORD, "--appendonly", "yes",
                           "--appendfsync", "always", "--save", "", "--dir", self.dir,
                           "--daemonize", "no"}, self.dir .. "/redis.log", nil, 600)
  self.pid = command_pid(self.shell, "redis-server")
  assert(self.pid, "redis-server did not start: " .. (H.slurp(self.dir .. "/redis.log") or ""))
  assert(H.wait_until(function() return self:cli("PING"):match("PONG") end, 10),
         "redis-server does not answer: " .. (H.slurp(self.dir .. "/redis.log") or ""))
end

function Server:url(password)
  return ("redis://:%s@127.0.0.1:%d/0"):format(password or S.PASSWORD, self.port)
end

-- redis-cli's output for one command.
function Server:cli(...)
  local words = {}
  for i, w in ipairs({...}) do words[i] = H.quote(w) end
  return sh(("REDISCLI_AUTH=%s timeout 10 redis-cli -p %d %s 2>&1"):format(
    H.quote(S.PASSWORD), self.port, table.concat(words, " ")))
end

-- One command over lmp's own client (binary arguments; redis-cli takes
-- no NUL): the reply, or nil and the error.
function Server:call(...)
  local core = H.core()
  local c = assert(core.redis_connect("127.0.0.1", self.port, 5))
  c:send("AUTH", S.PASSWORD)
  c:send(...)
  assert(c:read(5))
  local r, err = c:read(5)
  c:close()
  return r, err
end

-- SIGKILL: what was written survives in the append-only file.
function Server:kill()
  -- (and the child it forks to rewrite the append-only file)
  os.execute(("pkill -9 -P %d 2>/dev/null; kill -9 %d 2>/dev/null"):format(self.pid, self.pid))
  H.wait_until(function() return H.dead(self.pid) or not H.proc_state(self.pid) end, 10)
end

function Server:restart()
  self:start()
end

function Server:stop()
  self:kill()
  os.execute("rm -rf " .. H.quote(self.dir))
end

local Worker = {}
Worker.__index = Worker

-- An `lmp worker` serving `server`.  opts: j, queue, lease, authkey
-- (default S.AUTHKEY; false: none), insecure, env, args (more words).
function S.worker(server, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local argv = {H.lmp, "worker", "--broker", opts.url or server:url(), "-j", tostring(opts.j or 1),
                "--lease", tostring(opts.lease or 1)}
  if opts.queue then argv[#argv + 1] = "--queue"; argv[#argv + 1] = opts.queue end
  local authkey = opts.authkey
  if authkey == nil then authkey = S.AUTHKEY end
  if authkey then
    H.write(dir .. "/key", authkey)
    argv[#argv + 1] = "--authkey-file"
    argv[#argv + 1] = dir .. "/key"
  end
  if opts.insecure then argv[#argv + 1] = "--insecure" end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local self = setmetatable({dir = dir, log = dir .. "/worker.log"}, Worker)
  -- A directory of its own: it sees none of the specs' files.
  local env = {LUA_PATH = ";;", LUA_PATH_5_1 = ";;"}
  for k, v in pairs(opts.env or {}) do env[k] = v end
  self.shell = background({"sh", "-c", 'cd "$0" && exec "$@"', dir, unpack(argv)}, self.log, env,
                          opts.seconds or 300)
  started[#started + 1] = self.shell
  self.pid = command_pid(self.shell, "worker")
  assert(self.pid or opts.wait == false, "lmp worker did not start: " .. (H.slurp(self.log) or ""))
  if opts.wait ~= false then
    assert(H.wait_until(function() return (H.slurp(self.log) or ""):find("serving") end, 20),
           "lmp worker is not serving: " .. (H.slurp(self.log) or ""))
  end
  return self
end

function Worker:output() return H.slurp(self.log) or "" end

-- The exit status, once it has exited (nil before).
function Worker:status()
  local s = H.slurp(self.log .. ".status")
  return s and tonumber(s)
end

function Worker:wait(seconds)
  return H.wait_until(function() return self:status() end, seconds or 20)
end

function Worker:signal(sig)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig, self.pid))
end

-- The worker's processes: itself and its local pool's.
function Worker:pids()
  local out = sh("pgrep -P " .. self.pid)
  local pids = {self.pid}
  for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  return pids
end

-- Kills every worker started so far.
function S.stop_workers()
  for _, pid in ipairs(started) do
    -- The shell, `timeout` and what it runs.
    os.execute(("pkill -9 -P $(pgrep -P %d | head -1) 2>/dev/null; pkill -9 -P %d 2>/dev/null; " ..
                "kill -9 %d 2>/dev/null"):format(pid, pid, pid))
  end
  started = {}
end

return S
