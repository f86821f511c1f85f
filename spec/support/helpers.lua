-- Shared helpers for lmp's specs: run the host as a subprocess with a
-- timeout, make temporary files, and check that a spec left nothing behind.
local lmp = require "lmp"

local H = {}

-- The host running these specs (build/lmp, or build-asan/lmp).
H.lmp = lmp.get_executable()
H.bindir = H.lmp:match("^(.*)/[^/]*$")

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.quote = quote

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
H.slurp = slurp

function H.write(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

local tmpdirs = {}

-- A fresh temporary directory, removed by H.cleanup().
function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/lmp-spec.XXXXXX")
  local dir = p:read("*l")
  p:close()
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

function H.cleanup()
  for i = #tmpdirs, 1, -1 do
    os.execute("rm -rf " .. quote(tmpdirs[i]))
    tmpdirs[i] = nil
  end
end

-- Runs argv (a list of words; argv[1] defaults to the host) and returns
-- {status, stdout, stderr}.  opts: stdin (a string), env (a table of
-- NAME = value), cwd, timeout (seconds, default 20), shell (a raw shell
-- fragment appended to the command, e.g. fd redirections).  A command that
-- outlives its timeout is killed and gets status 124.
function H.run(argv, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local words = {}
  for i, w in ipairs(argv) do words[i] = quote(w) end
  local env = {}
  for k, v in pairs(opts.env or {}) do
    env[#env + 1] = k .. "=" .. quote(v)
  end
  local cmd = table.concat({
    opts.cwd and ("cd " .. quote(opts.cwd) .. " &&") or "",
    #env > 0 and ("env " .. table.concat(env, " ")) or "",
    "timeout -k 2 " .. (opts.timeout or 20),
    table.concat(words, " "),
    opts.shell or "",
    "<", opts.stdin and quote(H.write(dir .. "/stdin", opts.stdin)) or "/dev/null",
    ">", quote(dir .. "/stdout"), "2>", quote(dir .. "/stderr"),
    "; echo $? >", quote(dir .. "/status"),
  }, " ")
  os.execute(cmd)
  return {
    status = tonumber(slurp(dir .. "/status")),
    stdout = slurp(dir .. "/stdout") or "",
    stderr = slurp(dir .. "/stderr") or "",
  }
end

-- Runs the host with the given arguments.
function H.lmp_run(args, opts)
  local argv = {H.lmp}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return H.run(argv, opts)
end

-- Types `lines` into the host's REPL on a pseudo-terminal; returns
-- {status, stdout} with "\r" removed.
function H.pty(args, lines, opts)
  opts = opts or {}
  local argv = {H.bindir .. "/pty_run", "-t", tostring(opts.timeout or 20), "--", H.lmp}
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = H.run(argv, {stdin = table.concat(lines, "\n") .. "\n", env = opts.env,
                         timeout = (opts.timeout or 20) + 5})
  r.stdout = r.stdout:gsub("\r", "")
  return r
end

-- Environment for running lmp.so inside a program that was not built with
-- the sanitizers (a stock luajit): in a sanitizer build, the sanitizer
-- runtimes that lmp.so links must be loaded first.
function H.foreign_host_env()
  local p = io.popen("ldd " .. quote(H.bindir .. "/lmp.so"))
  local preload = {}
  for lib in p:read("*a"):gmatch("=> (%S*/lib%a+san%.so%S*)") do
    preload[#preload + 1] = lib
  end
  p:close()
  if #preload == 0 then return {} end
  return {LD_PRELOAD = table.concat(preload, " "), ASAN_OPTIONS = "detect_leaks=0"}
end

local function own_pid()
  return tonumber(slurp("/proc/self/stat"):match("^(%d+)"))
end

-- Pids of this process's children (all threads).
function H.children()
  local pid, kids = own_pid(), {}
  local p = io.popen("cat /proc/" .. pid .. "/task/*/children 2>/dev/null")
  local out = p:read("*a")
  p:close()
  -- The cat itself and its shell are children of ours while this runs.
  for k in out:gmatch("%d+") do
    local comm = slurp("/proc/" .. k .. "/comm")
    if comm and not comm:match("^sh") and not comm:match("^cat") then
      kids[#kids + 1] = tonumber(k)
    end
  end
  return kids
end

-- Open file descriptors of this process, as a set of numbers.
function H.fds()
  local set = {}
  local p = io.popen("ls /proc/" .. own_pid() .. "/fd")
  for n in p:read("*a"):gmatch("%d+") do set[tonumber(n)] = true end
  p:close()
  return set
end

return H
