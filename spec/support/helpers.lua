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

-- Asserts that f(...) raises an lmp error, of the given kind if one is
-- given (tostring then reads "lmp.<kind>: ..."); returns the error.
function H.raises(kind, f, ...)
  local assert = require "luassert"
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an lmp." .. tostring(kind or "") .. " error")
  assert.is_true(lmp.is_error(e), "not an lmp error: " .. tostring(e))
  if kind then
    assert.equal(kind, e.kind, tostring(e))
    assert.equal("lmp." .. kind .. ": ", tostring(e):sub(1, #kind + 6))
  end
  return e
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

-- ---------------------------------------------------------------------------
-- Processes, descriptors and time, for the process and connection specs.

local ffi = require "ffi"
for _, decl in ipairs({
  "int poll(void *fds, unsigned long nfds, int timeout);",
  "long read(int fd, void *buf, unsigned long n);",
  "long write(int fd, const void *buf, unsigned long n);",
  "int dup2(int oldfd, int newfd);",
  "int close(int fd);",
  "int fcntl(int fd, int cmd, ...);",
  "struct lmp_spec_timespec { long tv_sec; long tv_nsec; };",
  "int clock_gettime(int clk, struct lmp_spec_timespec *ts);",
}) do
  pcall(ffi.cdef, decl)
end

-- How many mappings of lmp's anonymous segments (memfd "lmp") this
-- process has.
function H.lmp_mappings()
  local n = 0
  for line in io.lines("/proc/" .. own_pid() .. "/maps") do
    if line:find("/memfd:lmp", 1, true) then n = n + 1 end
  end
  return n
end

-- The names in /dev/shm, as a set.
function H.dev_shm()
  local set = {}
  local p = io.popen("ls -A /dev/shm")
  for name in p:read("*a"):gmatch("[^\n]+") do set[name] = true end
  p:close()
  return set
end

-- Seconds on a monotonic clock.
function H.now()
  local ts = ffi.new("struct lmp_spec_timespec")
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- Sleeps without running lmp's event loop.
function H.sleep(seconds)
  ffi.C.poll(nil, 0, math.floor(seconds * 1000 + 0.5))
end

-- Calls pred() until it returns a true value or `timeout` seconds passed;
-- returns that value (or false).  `step` runs between tries (default: a
-- 20 ms sleep).
function H.wait_until(pred, timeout, step)
  local deadline = H.now() + (timeout or 5)
  while true do
    local v = pred()
    if v then return v end
    if H.now() > deadline then return false end
    if step then step() else H.sleep(0.02) end
  end
end

-- The state letter of process `pid` ("R", "S", "Z", ...), or nil if there
-- is no such process.
function H.proc_state(pid)
  local s = slurp("/proc/" .. pid .. "/stat")
  return s and s:match("^%d+ %(.*%) (%a)")
end

-- True if `pid` has ended (gone, or a zombie that someone else must reap).
function H.dead(pid)
  local st = H.proc_state(pid)
  return st == nil or st == "Z" or st == "X"
end

-- Reads up to n bytes from a raw descriptor (waiting at most `timeout`
-- seconds for the first); returns the string ("" on timeout or end of file).
function H.raw_read(fd, n, timeout)
  local pfd = ffi.new("short[4]")
  ffi.cast("int *", pfd)[0] = fd
  pfd[2] = 1  -- POLLIN
  if ffi.C.poll(pfd, 1, math.floor((timeout or 5) * 1000)) <= 0 then return "" end
  local buf = ffi.new("char[?]", n)
  local r = tonumber(ffi.C.read(fd, buf, n))
  if r <= 0 then return "" end
  return ffi.string(buf, r)
end

-- Writes all of s to a raw descriptor (which may be non-blocking).
function H.raw_write(fd, s)
  local off = 0
  while off < #s do
    local w = tonumber(ffi.C.write(fd, ffi.cast("const char *", s) + off, #s - off))
    if w > 0 then off = off + w else H.sleep(0.001) end
  end
end

-- dup2 (the copy is inherited by programs this process starts) and close.
function H.dup2(fd, newfd)
  assert(ffi.C.dup2(fd, newfd) == newfd, "dup2 failed")
  return newfd
end
function H.close_fd(fd) return ffi.C.close(fd) end

-- Is `fd` an open descriptor of this process?  (H.fds() cannot tell for a
-- just-closed one: the pipe it reads through reuses the lowest free number.)
function H.fd_open(fd)
  return ffi.C.fcntl(fd, 1) ~= -1  -- F_GETFD
end

-- Clears O_NONBLOCK on the open file description behind fd.
function H.set_blocking(fd)
  local F_GETFL, F_SETFL, O_NONBLOCK = 3, 4, 2048
  local fl = ffi.C.fcntl(fd, F_GETFL)
  assert(fl >= 0 and ffi.C.fcntl(fd, F_SETFL, ffi.new("int", bit.band(fl, bit.bnot(O_NONBLOCK)))) == 0)
end

-- A readable description of the descriptors in `set` (number -> target).
function H.describe_fds(set)
  local out = {}
  for fd in pairs(set) do
    local p = io.popen("readlink /proc/" .. own_pid() .. "/fd/" .. fd .. " 2>/dev/null")
    out[#out + 1] = fd .. "->" .. (p:read("*l") or "?")
    p:close()
  end
  table.sort(out)
  return table.concat(out, ", ")
end

-- Installs before_each/after_each in the current describe block that make
-- a spec fail if it leaves a child process (running or zombie) or an open
-- descriptor behind.  Leftover lmp children are killed and joined first, so
-- that one failure does not cascade into the following specs.
function H.check_leaks()
  local lmp_ = require "lmp"
  -- busted's functions live in the calling spec file's environment
  local env = getfenv(2)
  local before_each, after_each = env.before_each, env.after_each
  local before, before_maps, before_shm
  local warmed = false
  before_each(function()
    if not warmed then
      -- The event loop and libuv's signal pipes are created on first use
      -- and live as long as the state: create them before counting.
      local p = lmp_.Process(function() end)
      p:start()
      p:join(10)
      p:close()
      local a, b = lmp_.Pipe()
      a:poll(0)
      lmp_.connection.wait({a, b}, 0)
      a:close(); b:close()
      warmed = true
    end
    collectgarbage(); collectgarbage()
    before = H.fds()
    before_maps, before_shm = H.lmp_mappings(), H.dev_shm()
  end)
  after_each(function()
    local problems = {}
    for _, p in ipairs(lmp_.active_children()) do
      problems[#problems + 1] = ("child %s (pid %d, state %s) still listed by active_children")
        :format(p.name, p.pid, tostring(H.proc_state(p.pid)))
      p:kill()
      if p:join(5) == nil then problems[#problems + 1] = "cannot join pid " .. p.pid end
    end
    collectgarbage(); collectgarbage()
    -- Finished children must have been reaped (no zombies) by now, or at
    -- least as soon as lmp's loop runs.
    local kids = H.wait_until(function()
      local k = H.children()
      return #k == 0 or nil
    end, 2, function() lmp_.connection.wait({}, 0.02) end)
    if not kids then
      for _, pid in ipairs(H.children()) do
        problems[#problems + 1] = ("child pid %d left behind (state %s)")
          :format(pid, tostring(H.proc_state(pid)))
        os.execute("kill -9 " .. pid .. " 2>/dev/null")
      end
    end
    -- Compiled traces may hold objects of the spec as constants, keeping
    -- them (and the descriptors they own) alive until the trace goes:
    -- drop the traces, then collect, so that only real leaks remain.
    if jit then jit.flush() end
    collectgarbage(); collectgarbage()
    local after = H.fds()
    local extra, missing = {}, {}
    for fd in pairs(after) do if not before[fd] then extra[fd] = true end end
    for fd in pairs(before) do if not after[fd] then missing[fd] = true end end
    if next(extra) then problems[#problems + 1] = "descriptors leaked: " .. H.describe_fds(extra) end
    if next(missing) then
      local l = {}
      for fd in pairs(missing) do l[#l + 1] = fd end
      table.sort(l)
      problems[#problems + 1] = "descriptors closed that the spec did not open: " .. table.concat(l, " ")
    end
    local maps = H.lmp_mappings()
    if maps > before_maps then
      problems[#problems + 1] = ("%d shared memory segments still mapped"):format(maps - before_maps)
    end
    -- Only names of lmp's and the specs' own (lmp*): other programs on
    -- the machine may use /dev/shm meanwhile.
    for name in pairs(H.dev_shm()) do
      if not before_shm[name] and name:match("^lmp") then
        problems[#problems + 1] = "left in /dev/shm: " .. name
        os.remove("/dev/shm/" .. name)
      end
    end
    H.cleanup()
    if #problems > 0 then error("leak check: " .. table.concat(problems, "; "), 0) end
  end)
end

-- ---------------------------------------------------------------------------
-- Children and timing, for the sync, shared memory and queue specs.

-- How far past its timeout a wait may return on this noisy machine, and how
-- long a call that must not block may take.
H.SLACK, H.QUICK = 1.5, 0.25

-- Sleeps `s` seconds.  Self-contained, so that child functions can use it
-- (it travels with them as an upvalue).
function H.csleep(s)
  local ffi_ = require "ffi"
  pcall(ffi_.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
  ffi_.C.poll(nil, 0, math.floor(s * 1000 + 0.5))
end

-- Starts lmp.Process(fn, ...) and returns it.
function H.spawn(fn, ...)
  local p = lmp.Process(fn, ...)
  p:start()
  return p
end

-- Joins p (bounded) and returns its exit code; fails if it does not end
-- (and kills it then).
function H.join(p, timeout)
  local code = p:join(timeout or 10)
  if code == nil then p:kill(); p:join(5) end
  assert(code ~= nil, ("%s did not end within %s s"):format(p.name, timeout or 10))
  return code
end

-- Joins p and asserts it exited with 0.
function H.finish(p, timeout)
  local code = H.join(p, timeout)
  assert(code == 0, p.name .. " failed with exit code " .. tostring(code) ..
                    " (see its traceback on stderr)")
end

-- Asserts that the time since t0 is about `timeout`: not before it, and
-- not much after it.
function H.took_about(t0, timeout, what)
  local el = H.now() - t0
  assert(el >= timeout * 0.9,
    ("%s returned after %.3f s, before its %.3f s timeout"):format(what, el, timeout))
  assert(el < timeout + H.SLACK,
    ("%s returned after %.3f s, long after its %.3f s timeout"):format(what, el, timeout))
end

-- Asserts that the time since t0 is short (a call that must not block).
function H.took_little(t0, what)
  local el = H.now() - t0
  assert(el < H.QUICK, ("%s blocked for %.3f s"):format(what, el))
end

-- Runs fn(pool) with a new pool, then terminates the pool, even if fn
-- fails.  (Not `finally`: busted keeps that closure, and with it the pool
-- and its initargs, alive after the spec.)
function H.with_pool(opts, fn)
  local pool = lmp.Pool(opts)
  local ok, err = pcall(fn, pool)
  pool:terminate()
  if not ok then error(err, 0) end
end

return H
