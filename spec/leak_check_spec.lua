-- The leak check of spec/support/helpers.lua (H.fds, H.fd_changes,
-- H.check_leaks): every other spec file relies on it, so it must neither
-- flake nor miss.  It once listed /proc/PID/fd with `ls` through io.popen,
-- whose own pipe came and went with the listing: specs were blamed, now
-- and then, for descriptors they never touched.
local H = require "spec.support.helpers"
local lmp = require "lmp"
local ffi = require "ffi"

for _, decl in ipairs({
  "int pipe2(int fds[2], int flags);",
  "int eventfd(unsigned int initval, int flags);",
}) do
  pcall(ffi.cdef, decl)
end

local O_CLOEXEC, F_DUPFD = 0x80000, 0

local function pipe()
  local fds = ffi.new("int[2]")
  assert(ffi.C.pipe2(fds, O_CLOEXEC) == 0, "pipe2 failed")
  return fds[0], fds[1]
end

-- The number the next open gets.
local function lowest_free()
  local fd = ffi.C.fcntl((next(H.fds())), F_DUPFD, ffi.new("int", 0))
  assert(fd >= 0, "fcntl(F_DUPFD) failed")
  H.close_fd(fd)
  return fd
end

-- A number above the ones in use, for descriptors placed by the specs.
local function spare_number()
  local top = 0
  for fd in pairs(H.fds()) do
    if fd > top and fd < 1000 then top = fd end
  end
  for fd = top + 20, top + 200 do
    if not H.fd_open(fd) then return fd end
  end
  error("no spare descriptor number")
end

local function has_problem(problems, prefix, fd)
  for _, p in ipairs(problems) do
    if p:sub(1, #prefix) == prefix and (" " .. p .. ","):find("[ (]" .. fd .. "[%- ]") then
      return true
    end
  end
  return false
end

describe("the leak check", function()
  describe("H.fds()", function()
    it("gives the same answer, listing after listing, while nothing changes", function()
      local first = H.fds()
      for i = 1, 500 do
        local again = H.fds()
        for fd, id in pairs(again) do
          if first[fd] ~= id then
            error(("listing %d: fd %d is %s, was %s"):format(i, fd, tostring(id), tostring(first[fd])))
          end
        end
        for fd in pairs(first) do
          if again[fd] == nil then error(("listing %d: fd %d is missing"):format(i, fd)) end
        end
      end
    end)

    it("does not list the descriptor that the listing itself uses", function()
      local free = lowest_free()
      assert.is_nil(H.fds()[free])
      -- nor any other number that is not open
      for fd in pairs(H.fds()) do assert.is_true(H.fd_open(fd), "fd " .. fd .. " is not open") end
    end)

    it("tells two pipes at the same number apart, and two eventfds", function()
      local n = spare_number()
      local r1, w1 = pipe()
      local r2, w2 = pipe()
      H.dup2(r1, n)
      local a = H.fds()[n]
      H.dup2(r2, n)
      local b = H.fds()[n]
      H.close_fd(n)
      assert.is_string(a)
      assert.is_string(b)
      assert.are_not.equal(a, b)
      for _, fd in ipairs({r1, w1, r2, w2}) do H.close_fd(fd) end
      local e1, e2 = ffi.C.eventfd(0, O_CLOEXEC), ffi.C.eventfd(0, O_CLOEXEC)
      assert.is_true(e1 >= 0 and e2 >= 0)
      local info = H.slurp("/proc/self/fdinfo/" .. e1) or ""
      if info:find("eventfd-id", 1, true) then
        H.dup2(e1, n)
        a = H.fds()[n]
        H.dup2(e2, n)
        b = H.fds()[n]
        H.close_fd(n)
        assert.are_not.equal(a, b)
      end
      H.close_fd(e1)
      H.close_fd(e2)
    end)
  end)

  describe("H.fd_changes()", function()
    it("finds nothing between two listings of the same descriptors", function()
      assert.same({}, H.fd_changes(H.fds(), H.fds()))
    end)

    it("names a descriptor left open, with what it is", function()
      local before = H.fds()
      local fd = lowest_free()
      local f = assert(io.open("/dev/null"))
      local problems = H.fd_changes(before, H.fds())
      f:close()
      assert.equal(1, #problems, table.concat(problems, "; "))
      assert.is_true(has_problem(problems, "descriptors leaked: ", fd), problems[1])
      assert.truthy(problems[1]:find("/dev/null", 1, true))
    end)

    it("names a descriptor closed that was open before", function()
      local n = spare_number()
      local r, w = pipe()
      H.dup2(r, n)
      local before = H.fds()
      H.close_fd(n)
      local problems = H.fd_changes(before, H.fds())
      H.close_fd(r); H.close_fd(w)
      assert.equal(1, #problems, table.concat(problems, "; "))
      assert.is_true(has_problem(problems, "descriptors closed that the spec did not open", n),
                     problems[1])
    end)

    it("names a number closed and opened again on something else", function()
      local n = spare_number()
      local r1, w1 = pipe()
      local r2, w2 = pipe()
      H.dup2(r1, n)
      local before = H.fds()
      H.close_fd(n)
      H.dup2(r2, n)
      local problems = H.fd_changes(before, H.fds())
      for _, fd in ipairs({n, r1, w1, r2, w2}) do H.close_fd(fd) end
      assert.equal(1, #problems, table.concat(problems, "; "))
      assert.is_true(has_problem(problems, "descriptors closed that the spec did not open", n),
                     problems[1])
    end)
  end)

  describe("H.check_leaks() in a spec file of its own", function()
    it("fails a spec that leaks, closes or replaces a descriptor or leaves a name in /dev/shm, " ..
       "and passes a clean one, leaving alone a child the process had from the start", function()
      local dir = H.tmpdir()
      local n = spare_number()
      -- a name as another run of these specs (pid 0: none) would make
      local foreign = ("spec_lmp_0_%d_foreign"):format(lmp.current_process().pid)
      local spec = H.write(dir .. "/probe_spec.lua", ([[
        local H = require "spec.support.helpers"
        local lmp = require "lmp"
        local ffi = require "ffi"
        pcall(ffi.cdef, "int open(const char *path, int flags, ...);")
        -- N and N + 1: open (on /dev/null) before any spec runs
        local N = %d
        for _, n in ipairs({N, N + 1}) do
          local fd = ffi.C.open("/dev/null", 0)
          H.dup2(fd, n)
          H.close_fd(fd)
        end
        describe("probe", function()
          H.check_leaks()
          it("clean", function()
            local a, b = lmp.Pipe()
            a:send("x"); assert(b:recv() == "x")
            a:close(); b:close()
          end)
          it("leaks", function()
            leaked = io.open("/dev/null")
          end)
          it("closes", function()
            H.close_fd(N)
          end)
          it("replaces", function()
            local a, b = lmp.Pipe()
            H.dup2(a:fileno(), N + 1)
            a:close(); b:close()
          end)
          it("shm", function()
            -- one name of this run's own, one of another run's
            assert(io.open("/dev/shm/" .. H.shm_prefix .. "left", "w")):close()
            assert(io.open("/dev/shm/%s", "w")):close()
          end)
          it("keeps", function()
            -- (checked at once: another run on the machine may be making
            -- its own check meanwhile)
            local f = io.open("/dev/shm/%s")
            os.remove("/dev/shm/%s")
            assert(f, "the leak check removed another run's name")
            f:close()
          end)
        end)
      ]]):format(n, foreign, foreign, foreign))
      -- The probe also has a child from before it started (as the reader
      -- of `busted > >(tee log)` is): not a spec's, not to be killed.
      local r = H.run({"sh", "-c", 'sleep 60 & echo $! > "$0"; exec "$@"', dir .. "/inherited",
                       H.lmp, "/usr/bin/busted", "-o", "TAP", spec}, {timeout = 60})
      local inherited = tonumber(H.slurp(dir .. "/inherited"))
      local survived = inherited and not H.dead(inherited)
      if inherited then os.execute("kill " .. inherited .. " 2>/dev/null") end
      -- TAP: each spec's line, then a line for its after_each if that failed
      local failed, current = {}, nil
      for line in r.stdout:gmatch("[^\n]+") do
        current = line:match("^ok %d+ %- probe (%w+)$") or current
        local spec_failed = line:match("^not ok %d+ %- probe (%w+)$")
        if spec_failed and spec_failed ~= "after_each" then failed[spec_failed] = line end
        if line:match("^not ok %d+ %- probe after_each") then failed[current] = "" end
        local msg = line:match("^# Failure message: (.*)")
        if msg and current and failed[current] then failed[current] = failed[current] .. msg end
      end
      local out = r.stdout .. r.stderr
      assert.is_nil(failed.clean, out)
      assert.is_true(survived, "the leak check killed a child the probe had from the start")
      assert.truthy(failed.leaks and failed.leaks:find("descriptors leaked: %d+%->/dev/null"), out)
      assert.truthy(failed.closes and failed.closes:find(
        "descriptors closed that the spec did not open: " .. n .. "%->/dev/null"), out)
      assert.truthy(failed.replaces and failed.replaces:find(
        "their numbers now used by something else: " .. (n + 1) .. " %(was /dev/null[^,]*, now socket:"), out)
      -- another run's name is neither blamed nor removed; this run's is both
      os.remove("/dev/shm/" .. foreign)
      assert.truthy(failed.shm and failed.shm:find("left in /dev/shm: spec_lmp_%d+_left"), out)
      assert.falsy(failed.shm:find(foreign, 1, true), out)
      assert.is_nil(failed.keeps, out)
    end)
  end)
end)
