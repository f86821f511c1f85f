-- lmp.Process (SPEC section 3, details in section 12): construction,
-- spawning, exit codes, join/terminate/kill/close, sentinels, the current
-- and parent process, start methods, what the child inherits, and what
-- happens to children when the parent ends or is killed.
local H = require "spec.support.helpers"
local lmp = require "lmp"

local raises = H.raises

-- Starts a process and joins it (bounded); returns the exit code.
local function run(p)
  p:start()
  local code = p:join(10)
  assert.is_not_nil(code, "join(10) timed out")
  return code
end

-- Sleeps `s` seconds in a child (no sleep in the standard library).
local function child_sleep(s)
  local l = require "lmp"
  local a, b = l.Pipe()
  a:poll(s)
  a:close(); b:close()
end

-- Runs a parent script with the host: {status, stdout, stderr, elapsed}.
local function run_script(source, opts)
  opts = opts or {}
  local dir = opts.dir or H.tmpdir()
  local path = H.write(dir .. "/parent.lua", source)
  local t0 = H.now()
  local r = H.lmp_run({path, dir}, {cwd = opts.cwd, timeout = opts.timeout or 30})
  r.elapsed = H.now() - t0
  r.dir = dir
  return r
end

describe("lmp.Process", function()
  H.check_leaks()

  describe("construction", function()
    it("takes an options table; pid and exitcode are nil before start", function()
      local p = lmp.Process{target = function() end, args = {1, "x"}, name = "w1", daemon = true}
      assert.equal("w1", p.name)
      assert.is_true(p.daemon)
      assert.is_nil(p.pid)
      assert.is_nil(p.exitcode)
      assert.is_nil(p.sentinel)
      assert.is_false(p:is_alive())
    end)

    it("has distinct default names Process-N and is not a daemon by default", function()
      local p1 = lmp.Process(function() end)
      local p2 = lmp.Process{target = function() end}
      assert.matches("^Process%-%d+$", p1.name)
      assert.matches("^Process%-%d+$", p2.name)
      assert.are_not.equal(p1.name, p2.name)
      assert.is_false(p1.daemon)
      assert.is_false(p2.daemon)
    end)

    it("accepts daemon assigned before start", function()
      local p = lmp.Process(function() end)
      p.daemon = true
      assert.is_true(p.daemon)
      assert.equal(0, run(p))
      assert.is_true(p.daemon)
    end)

    it("rejects a target that is neither a function nor \"module:function\"", function()
      raises("TypeError", lmp.Process, {target = 42})
      raises("TypeError", lmp.Process, {target = {}})
      raises("TypeError", lmp.Process, {})
      raises("TypeError", lmp.Process, 42)
      raises("ValueError", lmp.Process, {target = "nocolon"})
      raises("ValueError", lmp.Process, {target = "mod:"})
      raises("ValueError", lmp.Process, {target = ":fn"})
    end)

    it("accepts \"module:function\" targets at construction", function()
      local p = lmp.Process{target = "string:rep"}
      assert.is_nil(p.pid)
    end)
  end)

  describe("running", function()
    it("runs the target in a new process with its arguments", function()
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(conn, x, y, t)
        local l = require "lmp"
        conn:send({x = x, y = y, t = t, pid = l.current_process().pid,
                   name = l.current_process().name})
      end, b, 42, "str", {1, 2, {k = "v"}})
      p:start()
      assert.is_number(p.pid)
      assert.is_true(a:poll(10))
      local msg = a:recv()
      assert.equal(42, msg.x)
      assert.equal("str", msg.y)
      assert.same({1, 2, {k = "v"}}, msg.t)
      assert.equal(p.pid, msg.pid)
      assert.equal(p.name, msg.name)
      assert.are_not.equal(lmp.current_process().pid, msg.pid)
      assert.equal(0, p:join(10))
      a:close(); b:close()
    end)

    it("passes nil arguments in the positional form (select('#') is kept)", function()
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(conn, ...)
        conn:send({n = select("#", ...), ...})
      end, b, 1, nil, 3, nil)
      assert.equal(0, run(p))
      assert.is_true(a:poll(10))
      local msg = a:recv()
      assert.equal(4, msg.n)
      assert.equal(1, msg[1])
      assert.is_nil(msg[2])
      assert.equal(3, msg[3])
      a:close(); b:close()
    end)

    it("passes args = {n = ..., ...} with holes in the options form", function()
      local a, b = lmp.Pipe()
      local p = lmp.Process{target = function(conn, ...)
        conn:send({n = select("#", ...), ...})
      end, args = {b, nil, "z", n = 3}}
      assert.equal(0, run(p))
      assert.is_true(a:poll(10))
      local msg = a:recv()
      assert.equal(2, msg.n)
      assert.equal("z", msg[2])
      a:close(); b:close()
    end)

    it("sends the target's upvalues by value", function()
      local a, b = lmp.Pipe()
      local secret = {answer = 42}
      local p = lmp.Process(function(conn) conn:send(secret.answer) end, b)
      assert.equal(0, run(p))
      assert.is_true(a:poll(10))
      assert.equal(42, a:recv())
      a:close(); b:close()
    end)

    it("has exitcode 0 after a normal return; join returns it again", function()
      local p = lmp.Process(function() return 5 end)
      assert.equal(0, run(p))
      assert.equal(0, p.exitcode)
      assert.equal(0, p:join(10))
      assert.equal(0, p:join())
      assert.is_false(p:is_alive())
    end)

    it("has exitcode 1 when the target raises", function()
      local p = lmp.Process{target = function() error("boom") end, name = "raiser"}
      -- the error goes to our stderr; that is checked with a script below
      assert.equal(1, run(p))
      assert.equal(1, p.exitcode)
    end)

    it("has exitcode 1 when the target raises a non-string error", function()
      assert.equal(1, run(lmp.Process(function() error({code = 7}) end)))
      assert.equal(1, run(lmp.Process(function() error(lmp.error("ValueError", "x")) end)))
    end)

    it("has exitcode n after os.exit(n)", function()
      assert.equal(3, run(lmp.Process(function() os.exit(3) end)))
      assert.equal(0, run(lmp.Process(function() os.exit(0) end)))
      assert.equal(0, run(lmp.Process(function() os.exit(true) end)))
      assert.equal(1, run(lmp.Process(function() os.exit(false) end)))
      assert.equal(255, run(lmp.Process(function() os.exit(255) end)))
    end)

    it("has exitcode -N when the child dies of signal N", function()
      local p = lmp.Process(function()
        local l = require "lmp"
        os.execute("kill -USR1 " .. l.current_process().pid)
        local a = l.Pipe()
        a:poll(10)
      end)
      assert.equal(-10, run(p))
    end)

    it("join(timeout) returns nil while the child runs, then the exit code", function()
      local p = lmp.Process(child_sleep, 0.5)
      p:start()
      assert.is_true(p:is_alive())
      assert.is_nil(p.exitcode)
      local t0 = H.now()
      assert.is_nil(p:join(0))
      assert.is_true(H.now() - t0 < 0.2, "join(0) waited")
      assert.is_nil(p:join(0.1))
      local waited = H.now() - t0
      assert.is_true(waited >= 0.09 and waited < 0.45, "join(0.1) took " .. waited)
      assert.equal(0, p:join(10))
      assert.is_false(p:is_alive())
    end)

    it("join(timeout) waits the whole timeout even when the event loop was idle", function()
      local p = lmp.Process(child_sleep, 5)
      p:start()
      H.sleep(0.4)  -- time passes without lmp's loop running
      local t0 = H.now()
      local code = p:join(0.2)
      local dt = H.now() - t0
      p:kill()
      assert.equal(-9, p:join(10))
      assert.is_nil(code)
      assert.is_true(dt >= 0.18, "join(0.2) returned after " .. dt)
    end)

    it("join() without a timeout waits for the end", function()
      local p = lmp.Process(child_sleep, 0.2)
      p:start()
      -- a bounded child: this join cannot hang for long
      assert.equal(0, p:join())
    end)

    it("join(math.huge) waits for the end", function()
      local p = lmp.Process(child_sleep, 0.2)
      p:start()
      local code = p:join(math.huge)
      if code == nil then p:join(10) end
      assert.equal(0, code)
    end)

    it("join with a negative timeout does not block", function()
      local p = lmp.Process(child_sleep, 0.5)
      p:start()
      local t0 = H.now()
      assert.is_nil(p:join(-1))
      assert.is_true(H.now() - t0 < 0.2)
      p:kill()
      assert.equal(-9, p:join(10))
    end)

    it("terminate() sends SIGTERM: exitcode -15", function()
      local p = lmp.Process(child_sleep, 30)
      p:start()
      assert.is_nil(p:join(0.1))
      assert.is_true(p:is_alive())
      p:terminate()
      assert.equal(-15, p:join(10))
      assert.equal(-15, p.exitcode)
      assert.is_false(p:is_alive())
    end)

    it("kill() sends SIGKILL: exitcode -9", function()
      local p = lmp.Process(child_sleep, 30)
      p:start()
      p:kill()
      assert.equal(-9, p:join(10))
    end)

    it("terminate() and kill() after the end do nothing", function()
      local p = lmp.Process(function() end)
      assert.equal(0, run(p))
      p:terminate()
      p:kill()
      assert.equal(0, p.exitcode)
    end)

    it("leaves no zombie after join", function()
      local p = lmp.Process(function() end)
      assert.equal(0, run(p))
      assert.is_nil(H.proc_state(p.pid), "pid " .. p.pid .. " is still there")
    end)

    it("sees exitcode and is_alive change without join", function()
      local p = lmp.Process(function() end)
      p:start()
      assert.is_truthy(H.wait_until(function() return not p:is_alive() end, 10))
      assert.equal(0, p.exitcode)
      assert.equal(0, p:join(0))
    end)

    it("reaps a child whose Process object was dropped", function()
      local pid
      do
        local p = lmp.Process(function() end)
        p:start()
        pid = p.pid
        assert.equal(0, p:join(10))
      end
      collectgarbage(); collectgarbage()
      assert.is_truthy(H.wait_until(function() return H.proc_state(pid) == nil end, 5,
        function() lmp.connection.wait({}, 0.02) end))
    end)

    it("runs many children at once", function()
      local ps = {}
      for i = 1, 20 do
        ps[i] = lmp.Process(function(n) os.exit(n) end, i)
        ps[i]:start()
      end
      for i = 1, 20 do assert.equal(i, ps[i]:join(20)) end
      local pids = {}
      for i = 1, 20 do pids[ps[i].pid] = true end
      local n = 0
      for _ in pairs(pids) do n = n + 1 end
      assert.equal(20, n)
    end)
  end)

  describe("sentinel", function()
    it("is a descriptor that becomes readable when the process ends", function()
      local p = lmp.Process(child_sleep, 0.3)
      p:start()
      local s = p.sentinel
      assert.is_number(s)
      assert.is_true(H.fd_open(s), "sentinel is not an open descriptor")
      assert.same({}, lmp.connection.wait({s}, 0))
      local ready = lmp.connection.wait({s}, 10)
      assert.equal(1, #ready)
      assert.equal(s, ready[1])
      assert.equal(0, p:join(10))
    end)

    it("makes connection.wait return the Process object itself", function()
      local p = lmp.Process(child_sleep, 0.2)
      local q = lmp.Process(child_sleep, 30)
      p:start(); q:start()
      local ready = lmp.connection.wait({q, p}, 10)
      assert.equal(1, #ready)
      assert.is_true(rawequal(p, ready[1]))
      q:kill()
      assert.equal(0, p:join(10))
      assert.equal(-9, q:join(10))
    end)
  end)

  describe("misuse", function()
    it("starting twice is a ProcessError", function()
      local p = lmp.Process(function() end)
      p:start()
      raises("ProcessError", p.start, p)
      assert.equal(0, p:join(10))
      raises("ProcessError", p.start, p)
    end)

    it("joining a process never started is a ProcessError", function()
      local p = lmp.Process(function() end)
      raises("ProcessError", p.join, p)
      raises("ProcessError", p.join, p, 1)
    end)

    it("terminate/kill of a process never started raise lmp errors", function()
      local p = lmp.Process(function() end)
      assert.is_false(pcall(p.terminate, p))
      assert.is_false(pcall(p.kill, p))
      local _, e = pcall(p.kill, p)
      assert.is_true(lmp.is_error(e))
    end)

    it("an argument the codec cannot send makes start raise; nothing is left", function()
      local p = lmp.Process(function(co) assert(type(co) == "thread") end,
                            coroutine.create(print))
      if H.method == "fork" then  -- nothing is encoded: the child has it
        assert.equal(0, run(p))
        return
      end
      raises("CodecError", p.start, p)
      assert.is_nil(p.pid)
      assert.is_false(p:is_alive())
      assert.same({}, H.children())
    end)

    it("a missing executable makes start raise a ProcessError; nothing is left", function()
      local exe = lmp.get_executable()
      lmp.set_executable("/nonexistent/lmp-worker")
      -- (a forkserver that runs already needs no executable either)
      local p = (H.method == "forkserver" and lmp.get_context("spawn") or lmp).Process(function() end)
      local ok, e = pcall(p.start, p)
      lmp.set_executable(exe)
      if H.method == "fork" then  -- no executable is started
        assert.is_true(ok, tostring(e))
        assert.equal(0, p:join(10))
      else
        assert.is_false(ok)
        assert.is_true(lmp.is_error(e, "ProcessError"), tostring(e))
      end
      assert.equal(0, run(lmp.Process(function() end)))
    end)

    it("a target module missing in the child: exit code 1", function()
      local p = lmp.Process{target = "lmp_spec_no_such_module:fn"}
      assert.equal(1, run(p))
    end)

    it("a target function missing in the module: exit code 1", function()
      local p = lmp.Process{target = "string:no_such_function"}
      assert.equal(1, run(p))
    end)

    it("a target function missing in the module is named on stderr", function()
      local r = run_script([[
        local p = require("lmp").Process{target = "string:no_such_function"}
        p:start()
        assert(p:join(10) == 1)
      ]])
      assert.equal(0, r.status, r.stderr)
      assert.truthy(r.stderr:find('target "string:no_such_function": module "string" has no ' ..
                                  'function "no_such_function"', 1, true), r.stderr)
    end)
  end)

  describe("close", function()
    it("raises a ValueError while the process runs", function()
      local p = lmp.Process(child_sleep, 30)
      p:start()
      raises("ValueError", p.close, p)
      assert.is_true(p:is_alive())
      p:kill()
      assert.equal(-9, p:join(10))
      p:close()
    end)

    it("releases the sentinel", function()
      local p = lmp.Process(function() end)
      assert.equal(0, run(p))
      local s = p.sentinel
      assert.is_true(H.fd_open(s))
      p:close()
      assert.is_false(H.fd_open(s))
    end)

    it("makes any later method call raise a ValueError", function()
      local p = lmp.Process(function() end)
      assert.equal(0, run(p))
      p:close()
      raises("ValueError", p.start, p)
      raises("ValueError", p.join, p, 1)
      raises("ValueError", p.is_alive, p)
      raises("ValueError", p.terminate, p)
      raises("ValueError", p.kill, p)
    end)

    it("makes exitcode, pid and sentinel raise a ValueError (as in Python)", function()
      local p = lmp.Process(function() end)
      assert.equal(0, run(p))
      p:close()
      raises("ValueError", function() return p.exitcode end)
      raises("ValueError", function() return p.sentinel end)
      raises("ValueError", function() return p.pid end)
    end)

    it("twice is allowed (as in Python)", function()
      local p = lmp.Process(function() end)
      assert.equal(0, run(p))
      p:close()
      p:close()
    end)

    it("of a process never started is allowed", function()
      local p = lmp.Process(function() end)
      p:close()
      raises("ValueError", p.start, p)
    end)
  end)

  describe("current, parent and active processes", function()
    it("in the main process: MainProcess, no parent", function()
      local cur = lmp.current_process()
      assert.equal("MainProcess", cur.name)
      assert.equal(tonumber(H.slurp("/proc/self/stat"):match("^(%d+)")), cur.pid)
      assert.is_nil(lmp.parent_process())
    end)

    it("in a child: its own name and pid, and the parent's pid", function()
      local a, b = lmp.Pipe()
      local p = lmp.Process{name = "kid", args = {b}, target = function(conn)
        local l = require "lmp"
        local cur, par = l.current_process(), l.parent_process()
        conn:send({name = cur.name, pid = cur.pid, ppid = par and par.pid,
                   pname = par and par.name})
      end}
      assert.equal(0, run(p))
      assert.is_true(a:poll(10))
      local m = a:recv()
      assert.equal("kid", m.name)
      assert.equal(p.pid, m.pid)
      assert.equal(lmp.current_process().pid, m.ppid)
      assert.equal("MainProcess", m.pname)
      a:close(); b:close()
    end)

    it("active_children lists live children only", function()
      local p = lmp.Process(child_sleep, 30)
      local q = lmp.Process(function() end)
      local never = lmp.Process(function() end)
      p:start(); q:start()
      H.wait_until(function() return not q:is_alive() end, 10)
      local act = lmp.active_children()
      assert.equal(1, #act)
      assert.is_true(rawequal(p, act[1]))
      assert.is_nil(never.pid)
      p:terminate()
      assert.equal(-15, p:join(10))
      assert.same({}, lmp.active_children())
      assert.equal(0, q:join(10))
    end)

    it("a grandchild's parent is the child", function()
      local a, b = lmp.Pipe()
      local p = lmp.Process(function(conn)
        local l = require "lmp"
        local g = l.Process(function(c)
          local l2 = require "lmp"
          c:send({ppid = l2.parent_process().pid, pname = l2.parent_process().name})
        end, conn)
        g:start()
        assert(g:join(10) == 0)
      end, b)
      p.name = "middle"
      assert.equal(0, run(p))
      assert.is_true(a:poll(10))
      local m = a:recv()
      assert.equal(p.pid, m.ppid)
      assert.equal("middle", m.pname)
      a:close(); b:close()
    end)
  end)

  describe("start methods", function()
    after_each(function() lmp.set_start_method(H.method) end)

    it("spawn and fork exist, and spawn is the default", function()
      local all = lmp.get_all_start_methods()
      local found = {}
      for _, m in ipairs(all) do found[m] = true end
      assert.is_true(found.spawn and found.fork)
      assert.equal(H.method, lmp.get_start_method())  -- spawn unless the run set one
      for _, m in ipairs(all) do
        lmp.set_start_method(m)
        assert.equal(m, lmp.get_start_method())
      end
    end)

    it("an unknown start method is a ValueError", function()
      raises("ValueError", lmp.set_start_method, "bogus")
      raises("ValueError", lmp.get_context, "bogus")
      assert.equal(H.method, lmp.get_start_method())
    end)

    it("get_context returns an object with every constructor, starting with its method", function()
      for _, name in ipairs({false, "spawn", "fork"}) do
        local ctx = name and lmp.get_context(name) or lmp.get_context()
        assert.equal(name or H.method, ctx.get_start_method())
        for _, k in ipairs({"Process", "Pool", "Pipe", "Queue", "Lock", "Value", "Array",
                            "SharedMemory", "Event"}) do
          assert.is_not_nil(ctx[k], k)
        end
        local a, b = ctx.Pipe()
        -- a coroutine travels to a forked child only
        local co = ctx.get_start_method() == "fork" and coroutine.create(print) or nil
        local p = ctx.Process(function(c, x) c:send(type(x)) end, b, co)
        assert.equal(0, run(p))
        assert.is_true(a:poll(10))
        assert.equal(co and "thread" or "nil", a:recv())
        a:close(); b:close()
        local pool = ctx.Pool(1)
        assert.same({2, 4}, pool:map(function(x) return 2 * x end, {1, 2}))
        pool:close(); pool:join()
      end
    end)
  end)

  describe("\"module:function\" targets", function()
    it("are required in the child with the parent's package.path", function()
      local dir = H.tmpdir()
      H.write(dir .. "/lmp_spec_target_mod.lua", [[
        local M = {}
        function M.work(conn, x) conn:send({x * 2, package.path}) end
        return M
      ]])
      local saved = package.path
      package.path = dir .. "/?.lua;" .. package.path
      local a, b = lmp.Pipe()
      local ok, err = pcall(function()
        local p = lmp.Process{target = "lmp_spec_target_mod:work", args = {b, 21}}
        assert.equal(0, run(p))
        assert.is_true(a:poll(10))
        local m = a:recv()
        assert.equal(42, m[1])
        assert.equal(package.path, m[2])
      end)
      package.path = saved
      package.loaded.lmp_spec_target_mod = nil
      a:close(); b:close()
      assert(ok, err)
    end)
  end)
end)

describe("lmp.Process seen from a parent script", function()
  H.check_leaks()

  it("prints a target's error with traceback on stderr, prefixed by the process name", function()
    local r = run_script([[
      local lmp = require "lmp"
      local p = lmp.Process{name = "worker-x", target = function() error("kaboom-42") end}
      p:start()
      io.write("code ", p:join(10), "\n")
    ]])
    assert.equal(0, r.status, r.stderr)
    assert.equal("code 1\n", r.stdout)
    assert.matches("worker%-x", r.stderr)
    assert.matches("kaboom%-42", r.stderr)
    assert.matches("traceback", r.stderr)
    local line = r.stderr:match("[^\n]*kaboom%-42[^\n]*")
    assert.matches("^worker%-x", line)
  end)

  it("a target module that does not exist: exit 1, error on stderr with the name", function()
    local r = run_script([[
      local lmp = require "lmp"
      local p = lmp.Process{name = "modless", target = "lmp_spec_nonexistent_mod:fn"}
      p:start()
      io.write("code ", p:join(10), "\n")
    ]])
    assert.equal(0, r.status, r.stderr)
    assert.equal("code 1\n", r.stdout)
    assert.matches("modless", r.stderr)
    assert.matches("lmp_spec_nonexistent_mod", r.stderr)
    assert.matches("^modless", r.stderr:match("[^\n]*lmp_spec_nonexistent_mod[^\n]*"))
  end)

  it("shares stdout and stderr with the child; the main script is not re-run", function()
    local r = run_script([[
      io.write("MAIN-START\n") io.stdout:flush()
      local lmp = require "lmp"
      local p = lmp.Process(function()
        io.write("child-out\n")
        io.stderr:write("child-err\n")
      end)
      p:start()
      assert(p:join(10) == 0)
      io.write("MAIN-END\n")
    ]])
    assert.equal(0, r.status, r.stderr)
    assert.equal("MAIN-START\nchild-out\nMAIN-END\n", r.stdout)
    assert.matches("child%-err", r.stderr)
  end)

  it("gives the child the parent's working directory, package.path and cpath", function()
    local cwd = H.tmpdir()
    local libdir = H.tmpdir()
    H.write(cwd .. "/marker.txt", "marker-content")
    H.write(cwd .. "/lmp_spec_cwdmod.lua", "return {v = 'from-cwd'}")
    H.write(libdir .. "/lmp_spec_libmod.lua", "return {v = 'from-lib'}")
    local r = run_script(([[
      local lmp = require "lmp"
      package.path = %q .. "/?.lua;" .. package.path
      package.cpath = "/lmp-spec-cpath/?.so;" .. package.cpath
      local p = lmp.Process(function(path, cpath)
        local f = assert(io.open("marker.txt"))
        io.write("marker=", f:read("*a"), "\n") f:close()
        io.write("cwdmod=", require("lmp_spec_cwdmod").v, "\n")
        io.write("libmod=", require("lmp_spec_libmod").v, "\n")
        io.write("path=", tostring(package.path == path), "\n")
        io.write("cpath=", tostring(package.cpath == cpath), "\n")
        local pw = io.popen("pwd -P") io.write("pwd=", pw:read("*l"), "\n") pw:close()
      end, package.path, package.cpath)
      p:start()
      assert(p:join(10) == 0)
    ]]):format(libdir), {cwd = cwd})
    assert.equal(0, r.status, r.stderr)
    local real = io.popen("cd " .. H.quote(cwd) .. " && pwd -P"):read("*l")
    assert.equal("marker=marker-content\ncwdmod=from-cwd\nlibmod=from-lib\n" ..
                 "path=true\ncpath=true\npwd=" .. real .. "\n", r.stdout)
  end)

  it("joins non-daemon children when the main script ends", function()
    local r = run_script([[
      local lmp = require "lmp"
      local p = lmp.Process(function()
        local l = require "lmp"
        local a = l.Pipe()
        a:poll(0.5)
        io.write("child done\n")
      end)
      p:start()
      io.write("pid ", p.pid, "\n") io.stdout:flush()
    ]])
    assert.equal(0, r.status, r.stderr)
    local pid = tonumber(r.stdout:match("pid (%d+)"))
    assert.matches("pid %d+\nchild done\n", r.stdout)
    assert.is_true(r.elapsed >= 0.45, "exited after " .. r.elapsed .. " s")
    assert.is_true(H.dead(pid))
  end)

  it("joins non-daemon children at os.exit(n) too", function()
    local r = run_script([[
      local lmp = require "lmp"
      local p = lmp.Process(function()
        local l = require "lmp"
        local a = l.Pipe()
        a:poll(0.3)
        io.write("child done\n")
      end)
      p:start()
      os.exit(3)
    ]])
    assert.equal(3, r.status, r.stderr)
    assert.equal("child done\n", r.stdout)
  end)

  it("joins non-daemon children when the main script raises an error", function()
    local r = run_script([[
      local lmp = require "lmp"
      local p = lmp.Process(function()
        local l = require "lmp"
        local a = l.Pipe()
        a:poll(0.3)
        io.write("child done\n")
      end)
      p:start()
      io.write("pid ", p.pid, "\n") io.stdout:flush()
      error("main script fails")
    ]])
    assert.is_not.equal(0, r.status)
    assert.matches("main script fails", r.stderr)
    assert.matches("child done\n", r.stdout)
    local pid = tonumber(r.stdout:match("pid (%d+)"))
    assert.is_true(H.dead(pid))
  end)

  it("terminates daemon children when the main script ends", function()
    local r = run_script([[
      local lmp = require "lmp"
      local d = lmp.Process{daemon = true, target = function()
        local l = require "lmp"
        local a = l.Pipe()
        a:poll(30)
        io.write("daemon survived\n")
      end}
      d:start()
      io.write("pid ", d.pid, "\n") io.stdout:flush()
    ]])
    assert.equal(0, r.status, r.stderr)
    assert.is_true(r.elapsed < 10, "exited after " .. r.elapsed .. " s")
    assert.not_matches("survived", r.stdout)
    local pid = tonumber(r.stdout:match("pid (%d+)"))
    assert.is_truthy(H.wait_until(function() return H.dead(pid) end, 2))
  end)

  it("a daemon cannot start children", function()
    local r = run_script([[
      local lmp = require "lmp"
      local d = lmp.Process{daemon = true, target = function()
        local l = require "lmp"
        local ok, e = pcall(function() l.Process(function() end):start() end)
        io.write(tostring(ok), " ", tostring(e and e.kind), "\n")
      end}
      d:start()
      io.write("code ", d:join(10), "\n")
    ]])
    assert.equal(0, r.status, r.stderr)
    assert.equal("false ProcessError\ncode 0\n", r.stdout)
  end)

  it("children (and grandchildren) die within 2 s when the parent is SIGKILLed", function()
    local dir = H.tmpdir()
    H.write(dir .. "/parent.lua", [[
      local lmp = require "lmp"
      local dir = arg[1]
      local function put(name, text)
        local f = assert(io.open(dir .. "/" .. name .. ".tmp", "w"))
        f:write(text) f:close()
        os.rename(dir .. "/" .. name .. ".tmp", dir .. "/" .. name)
      end
      local function snooze()
        local l = require "lmp"
        local a = l.Pipe()
        a:poll(60)
      end
      local a = lmp.Process(function(d, snooze, put)
        local l = require "lmp"
        local g = l.Process(snooze)
        g:start()
        put("grandchild", tostring(g.pid))
        snooze()
      end, dir, snooze, put)
      a:start()
      local b = lmp.Process{target = snooze, daemon = true}
      b:start()
      put("children", a.pid .. " " .. b.pid)
      snooze()
    ]])
    os.execute("cd " .. H.quote(dir) .. " && timeout -k 1 60 " .. H.quote(H.lmp) ..
               " parent.lua " .. H.quote(dir) .. " >out 2>&1 </dev/null & echo $! >" ..
               H.quote(dir .. "/ppid"))
    local ppid = tonumber(H.slurp(dir .. "/ppid"))
    -- `timeout` runs lmp as its child: find it.
    local function find_parent()
      local c = H.slurp("/proc/" .. ppid .. "/task/" .. ppid .. "/children")
      return c and tonumber(c:match("%d+"))
    end
    local pids = {}
    local ok, err = pcall(function()
      assert.is_truthy(H.wait_until(function()
        return H.slurp(dir .. "/children") and H.slurp(dir .. "/grandchild")
      end, 10), "the parent script did not start its children: " ..
        tostring(H.slurp(dir .. "/out")))
      local parent = find_parent()
      assert.is_number(parent)
      for pid in H.slurp(dir .. "/children"):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
      pids[#pids + 1] = tonumber(H.slurp(dir .. "/grandchild"))
      assert.equal(3, #pids)
      for _, pid in ipairs(pids) do assert.is_false(H.dead(pid)) end
      os.execute("kill -9 " .. parent)
      local gone = H.wait_until(function()
        for _, pid in ipairs(pids) do if not H.dead(pid) then return false end end
        return true
      end, 2)
      local states = {}
      for _, pid in ipairs(pids) do states[#states + 1] = pid .. ":" .. tostring(H.proc_state(pid)) end
      assert.is_truthy(gone, "still alive 2 s after the parent's SIGKILL: " ..
                             table.concat(states, " "))
    end)
    for _, pid in ipairs(pids) do
      if not H.dead(pid) then os.execute("kill -9 " .. pid .. " 2>/dev/null") end
    end
    os.execute("kill " .. ppid .. " 2>/dev/null")
    H.wait_until(function() return H.dead(ppid) end, 5)
    assert(ok, err)
  end)
end)
