-- Shared helpers for lmp's specs: run the host as a subprocess with a
-- timeout, make temporary files, and check that a spec left nothing behind.
local lmp = require "lmp"

local H = {}

-- LMP_START_METHOD=fork runs the specs under that start method
-- (scripts/test runs the files about children once per method); H.method
-- says which, for the few cases that differ by method.
H.method = os.getenv("LMP_START_METHOD") or "spawn"
lmp.set_start_method(H.method)
-- Under fork, a child's target and arguments are not encoded (anything
-- goes, closed objects included), and the child has copies of every
-- descriptor of the parent.
H.forked = H.method == "fork"

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
  "typedef struct lmp_spec_dir lmp_spec_dir;",
  -- glibc's struct dirent64, the same on every architecture
  "struct lmp_spec_dirent64 { uint64_t d_ino; int64_t d_off; unsigned short d_reclen;" ..
  " unsigned char d_type; char d_name[256]; };",
  "lmp_spec_dir *opendir(const char *name);",
  "struct lmp_spec_dirent64 *readdir64(lmp_spec_dir *d);",
  "int closedir(lmp_spec_dir *d);",
  "int dirfd(lmp_spec_dir *d);",
  "long readlink(const char *path, char *buf, unsigned long size);",
}) do
  pcall(ffi.cdef, decl)
end

-- ---------------------------------------------------------------------------
-- Descriptors, children and /dev/shm, read from /proc and /dev/shm directly.
-- Not through a program started with io.popen: its pipe is in this process
-- while the program runs, and for a moment both ends of it are (glibc closes
-- the child's end only once the child has started), so a listing of
-- /proc/PID/fd made by `ls` would include that second number or not
-- depending on scheduling: a spec would be blamed for a descriptor that
-- came or went with the listing itself.

-- The names in directory `path` (without "." and ".."), and the descriptor
-- that the listing itself used (or nil, nil if the directory cannot be
-- opened).
local function list_dir(path)
  local d = ffi.C.opendir(path)
  if d == nil then return nil, nil end
  local own, names = ffi.C.dirfd(d), {}
  while true do
    local e = ffi.C.readdir64(d)
    if e == nil then break end
    local name = ffi.string(e.d_name)
    if name ~= "." and name ~= ".." then names[#names + 1] = name end
  end
  ffi.C.closedir(d)
  return names, own
end

local linkbuf = ffi.new("char[?]", 4096)

-- What descriptor `fd` is open on, as a string that changes when the number
-- is closed and given to something else: the target as /proc shows it (a
-- path, "pipe:[inode]", "anon_inode:[eventfd]", ...), the file's mount and
-- inode numbers and, for an eventfd (all of which share one inode), its id.
-- Two opens of one file at one number look the same: /proc cannot tell
-- them apart.  Nil if fd is not open.
local function fd_identity(fd)
  local n = tonumber(ffi.C.readlink("/proc/self/fd/" .. fd, linkbuf, 4096))
  if n < 0 then return nil end
  local id = ffi.string(linkbuf, n):gsub(" %(deleted%)$", "")
  local info = slurp("/proc/self/fdinfo/" .. fd) or ""
  local mnt, ino = info:match("mnt_id:%s*(%d+)"), info:match("\nino:%s*(%d+)")
  if mnt and ino then id = id .. " #" .. mnt .. ":" .. ino end
  local efd = info:match("eventfd%-id:%s*(%d+)")
  if efd then id = id .. " eventfd " .. efd end
  return id
end
H.fd_identity = fd_identity

-- Runs f with the garbage collector stopped, so that no finalizer (which
-- may close a descriptor) runs in the middle; returns what f returns.
-- Calls nest: the outermost one restarts the collector.
local gc_stops = 0
function H.without_gc(f, ...)
  if gc_stops == 0 then collectgarbage("stop") end
  gc_stops = gc_stops + 1
  local r = {pcall(f, ...)}
  gc_stops = gc_stops - 1
  if gc_stops == 0 then collectgarbage("restart") end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, table.maxn(r))
end
local without_gc = H.without_gc

-- Open file descriptors of this process, as a table number -> identity
-- (see fd_identity), without the one the listing itself uses.
function H.fds()
  return without_gc(function()
    local set = {}
    local names, own = list_dir("/proc/self/fd")
    assert(names, "cannot list /proc/self/fd")
    -- first the whole listing, then the identities (reading them opens
    -- and closes a file: its number must not be in the listing)
    for _, name in ipairs(names) do
      local fd = tonumber(name)
      if fd ~= own then set[fd] = true end
    end
    for fd in pairs(set) do set[fd] = fd_identity(fd) or "(closed while listed)" end
    return set
  end)
end

local function by_number(a, b) return tonumber(a:match("^%d+")) < tonumber(b:match("^%d+")) end

-- What changed between two H.fds() tables, as a list of problems (empty if
-- nothing did).
function H.fd_changes(before, after)
  local leaked, closed, reopened, problems = {}, {}, {}, {}
  for fd, id in pairs(after) do
    if before[fd] == nil then
      leaked[#leaked + 1] = fd .. "->" .. id
    elseif before[fd] ~= id then
      reopened[#reopened + 1] = ("%d (was %s, now %s)"):format(fd, before[fd], id)
    end
  end
  for fd, id in pairs(before) do
    if after[fd] == nil then closed[#closed + 1] = fd .. "->" .. id end
  end
  for _, l in ipairs({leaked, closed, reopened}) do table.sort(l, by_number) end
  if #leaked > 0 then
    problems[#problems + 1] = "descriptors leaked: " .. table.concat(leaked, ", ")
  end
  if #closed > 0 then
    problems[#problems + 1] = "descriptors closed that the spec did not open: " ..
                              table.concat(closed, ", ")
  end
  if #reopened > 0 then
    problems[#problems + 1] = "descriptors closed that the spec did not open, their " ..
                              "numbers now used by something else: " ..
                              table.concat(reopened, ", ")
  end
  return problems
end

local function all_children()
  local kids = {}
  for _, tid in ipairs(list_dir("/proc/self/task") or {}) do
    for k in (slurp("/proc/self/task/" .. tid .. "/children") or ""):gmatch("%d+") do
      kids[#kids + 1] = tonumber(k)
    end
  end
  return kids
end

-- Children this process had before any spec ran are not the specs': a
-- shell starts the reader of `busted > >(tee log)` as a child of the
-- process that becomes busted, for instance.
local inherited_children = {}
for _, pid in ipairs(all_children()) do inherited_children[pid] = true end

-- The forkserver (lua/lmp/forkserver.lua) lives as long as the process
-- that started it, by design: it is not a child a spec leaves behind.
local function is_forkserver(pid)
  local cmd = slurp("/proc/" .. pid .. "/cmdline") or ""
  return cmd:find("%-%-lmp%-worker%z%d+%zForkServer%z") ~= nil
end

-- Pids of the children of this process (of all its threads) that it
-- started itself: with the forkserver start method, those are the
-- forkserver's children.
function H.children()
  local kids = {}
  for _, pid in ipairs(all_children()) do
    if is_forkserver(pid) then
      for _, tid in ipairs(list_dir("/proc/" .. pid .. "/task") or {}) do
        for k in (slurp("/proc/" .. pid .. "/task/" .. tid .. "/children") or ""):gmatch("%d+") do
          kids[#kids + 1] = tonumber(k)
        end
      end
    elseif not inherited_children[pid] then
      kids[#kids + 1] = pid
    end
  end
  return kids
end

-- How many mappings of lmp's anonymous segments (memfd "lmp") this
-- process has.
function H.lmp_mappings()
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("/memfd:lmp", 1, true) then n = n + 1 end
  end
  return n
end

-- The prefix of the names the specs give named shared memory: unique to
-- this run, which the leak check looks for in /dev/shm.  (Not "lmp...":
-- older versions of this check, running elsewhere on the machine, removed
-- every new name that starts so.)
H.shm_prefix = ("spec_lmp_%d_"):format(lmp.current_process().pid)
local generated_prefix = ("lmp_%d_"):format(lmp.current_process().pid)

-- The names in /dev/shm, as a set.
function H.dev_shm()
  local set = {}
  for _, name in ipairs(list_dir("/dev/shm") or {}) do set[name] = true end
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

-- The lowest number from `from` on that is not an open descriptor: a
-- number a spec may dup2 onto.  (A fixed one may hold a descriptor the
-- process inherited, or one of lmp's: dup2 would close it.)
function H.free_fd(from)
  local fd = from or 3
  while ffi.C.fcntl(fd, 1) ~= -1 do fd = fd + 1 end  -- F_GETFD
  return fd
end

-- dup2 (the copy is inherited by programs this process starts) and close.
function H.dup2(fd, newfd)
  assert(ffi.C.dup2(fd, newfd) == newfd, "dup2 failed")
  return newfd
end
function H.close_fd(fd) return ffi.C.close(fd) end

-- Is `fd` an open descriptor of this process?
function H.fd_open(fd)
  return ffi.C.fcntl(fd, 1) ~= -1  -- F_GETFD
end

-- Clears O_NONBLOCK on the open file description behind fd.
function H.set_blocking(fd)
  local F_GETFL, F_SETFL, O_NONBLOCK = 3, 4, 2048
  local fl = ffi.C.fcntl(fd, F_GETFL)
  assert(fl >= 0 and ffi.C.fcntl(fd, F_SETFL, ffi.new("int", bit.band(fl, bit.bnot(O_NONBLOCK)))) == 0)
end

-- Lets lmp finish what it does later rather than at once, so that what is
-- counted next is what a spec left behind: compiled traces may hold objects
-- of the spec as constants, keeping them (and the descriptors they own)
-- alive until the trace goes; finalizers close what was dropped; handles
-- closed on lmp's loop are done with in its next turn.
function H.settle()
  if jit then jit.flush() end
  collectgarbage(); collectgarbage()
  lmp.connection.wait({}, 0)
  collectgarbage(); collectgarbage()
end

-- Installs before_each/after_each in the current describe block that make
-- a spec fail if it leaves a child process (running or zombie) or an open
-- descriptor behind, or closes one it did not open (a number it never had,
-- or one now open on something else).  Leftover lmp children are killed
-- and joined first, so that one failure does not cascade into the
-- following specs.
function H.check_leaks(env)
  -- busted's functions live in the calling spec file's environment
  env = env or getfenv(2)
  local before_each, after_each = env.before_each, env.after_each
  local before, before_maps, before_shm
  local warmed = false
  before_each(function()
    if not warmed then
      -- The event loop and libuv's signal pipes are created on first use
      -- and live as long as the state: create them before counting.
      local p = lmp.Process(function() end)
      p:start()
      p:join(10)
      p:close()
      local a, b = lmp.Pipe()
      a:poll(0)
      lmp.connection.wait({a, b}, 0)
      a:close(); b:close()
      warmed = true
    end
    -- What earlier specs dropped goes now, not during this one.
    H.settle()
    before = H.fds()
    before_maps, before_shm = H.lmp_mappings(), H.dev_shm()
  end)
  after_each(function()
    local problems = {}
    for _, p in ipairs(lmp.active_children()) do
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
    end, 2, function() lmp.connection.wait({}, 0.02) end)
    if not kids then
      for _, pid in ipairs(H.children()) do
        problems[#problems + 1] = ("child pid %d left behind (state %s)")
          :format(pid, tostring(H.proc_state(pid)))
        os.execute("kill -9 " .. pid .. " 2>/dev/null")
      end
    end
    H.settle()
    for _, p in ipairs(H.fd_changes(before, H.fds())) do problems[#problems + 1] = p end
    local maps = H.lmp_mappings()
    if maps > before_maps then
      problems[#problems + 1] = ("%d shared memory segments still mapped"):format(maps - before_maps)
    end
    -- Only names of this run's own (H.shm_prefix, and lmp's generated
    -- names of this process, which must never be there): other programs on
    -- the machine, other runs of these specs among them, may use /dev/shm
    -- meanwhile, and their names are not ours to remove.
    for name in pairs(H.dev_shm()) do
      if not before_shm[name] and (name:sub(1, #H.shm_prefix) == H.shm_prefix or
                                   name:sub(1, #generated_prefix) == generated_prefix) then
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

-- Sleeps `s` seconds by polling a pipe.  Self-contained, so that a task
-- can take it along as an upvalue.
function H.nap(s)
  local l = require "lmp"
  local a, b = l.Pipe()
  a:poll(s)
  a:close(); b:close()
end

-- For the specs of a describe block that make pools: call it in the block;
-- it returns new_pool(opts), whose last pool is terminated and joined after
-- each spec, and registers the leak check after that (busted runs a
-- block's after_each in order, so a failing spec's pool is gone before the
-- leak check looks).
function H.pools()
  local env = getfenv(2)  -- the spec file's, where busted's functions are
  local current
  env.after_each(function()
    if current then
      pcall(current.terminate, current)
      pcall(current.join, current)
      current = nil
    end
  end)
  H.check_leaks(env)
  return function(opts)
    current = lmp.Pool(opts)
    return current
  end
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

-- The C core (lmp_module.c) is not part of the API: it is found among the
-- upvalues of lmp's Lua functions, as the table that has spawn and now.
function H.core()
  local seen, queue = {}, {require "lmp"}
  local function visit(v)
    if (type(v) == "table" or type(v) == "function") and not seen[v] then
      seen[v] = true
      queue[#queue + 1] = v
    end
  end
  local i = 1
  while queue[i] do
    local v = queue[i]
    i = i + 1
    if type(v) == "table" then
      if rawget(v, "spawn") and rawget(v, "now") and rawget(v, "queue_put") then return v end
      for _, x in pairs(v) do visit(x) end
      visit(getmetatable(v))
    else
      for k = 1, 60 do
        local name, x = debug.getupvalue(v, k)
        if not name then break end
        visit(x)
      end
    end
  end
end


return H
