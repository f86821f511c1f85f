-- The fork start method (runtime/lmp_fork.c, lua/lmp/process.lua): what
-- a forked child has of its parent, and what it must not have.  The other
-- spec files about children run under each method too (scripts/test).
local H = require "spec.support.helpers"
local lmp = require "lmp"

describe("the fork start method", function()
  local fork = lmp.get_context("fork")
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  local function run(p)
    p:start()
    local code = p:join(20)
    if code == nil then p:kill(); p:join(5) end
    return code
  end

  it("gives the child what the parent holds, with no codec in between", function()
    local a, b = lmp.Pipe()
    local big = {}
    for i = 1, 100000 do big[i] = i end
    local co = coroutine.create(function() return "resumed" end)
    local counter = 0
    local p = fork.Process(function(c)
      counter = counter + 1  -- the child's copy
      local _, r = coroutine.resume(co)
      c:send({#big, big[100000], r, io.type(io.stdout), counter})
    end, b)
    assert.equal(0, run(p))
    assert.is_true(a:poll(10))
    assert.same({100000, 100000, "resumed", "file", 1}, a:recv())
    assert.equal(0, counter)  -- the parent's is untouched
    assert.equal("suspended", coroutine.status(co))
    a:close(); b:close()
  end)

  it("starts the child's lmp with no children, pools or callbacks of its parent", function()
    local a, b = lmp.Pipe()
    local pool = lmp.Pool(1)
    local waiting = pool:apply_async(function() return 1 end, {}, function() end)
    local sibling = fork.Process(function() lmp.Pipe():poll(30) end)
    sibling:start()
    local p = fork.Process(function(c)
      local ok, err = pcall(pool.map, pool, function(x) return x end, {1})
      c:send({#lmp.active_children(), ok, tostring(err), lmp.poll(0)})
    end, b)
    assert.equal(0, run(p))
    assert.is_true(a:poll(10))
    local got = a:recv()
    assert.equal(0, got[1])
    assert.is_false(got[2])
    assert.matches("belongs to the parent process", got[3], 1, true)
    assert.equal(0, got[4])
    -- the parent's pool and children are as they were
    assert.equal(1, waiting:get(10))
    assert.same({2}, pool:map(function(x) return 2 * x end, {1}))
    assert.is_true(sibling:is_alive())
    sibling:kill()
    assert.equal(-9, sibling:join(10))
    pool:close(); pool:join()
    a:close(); b:close()
  end)

  it("reports exit codes as a spawned child does", function()
    assert.equal(0, run(fork.Process(function() end)))
    assert.equal(7, run(fork.Process(function() os.exit(7) end)))
    assert.equal(1, run(fork.Process(function() error("boom") end)))
    local p = fork.Process(function() while true do end end)
    p:start()
    assert.is_true(p:is_alive())
    assert.is_number(p.sentinel)
    assert.equal(1, #lmp.connection.wait({p}, 0) + 1)  -- not ready while it runs
    p:terminate()
    assert.equal(-15, p:join(10))
    assert.equal(1, #lmp.connection.wait({p}, 5))
    assert.is_false(p:is_alive())
    p:close()
  end)

  it("writes what the parent had buffered once, and the child's own output", function()
    local r = H.run({H.lmp, "-e", [[
      local lmp = require "lmp"
      io.write("parent;")  -- buffered, not flushed before the fork
      local p = lmp.get_context("fork").Process(function() io.write("child;") end)
      p:start()
      assert(p:join(10) == 0)
      io.write("end")
    ]]}, {timeout = 30})
    assert.equal(0, r.status, r.stderr)
    assert.equal("parent;child;end", r.stdout)
  end)

  it("lets a forked child start children of its own, by either method", function()
    local a, b = lmp.Pipe()
    local p = fork.Process(function(c)
      local codes = {}
      for _, m in ipairs({"fork", "spawn"}) do
        local q = lmp.get_context(m).Process(function(x) os.exit(x) end, 5)
        q:start()
        codes[#codes + 1] = q:join(20)
      end
      c:send(codes)
    end, b)
    assert.equal(0, run(p))
    assert.is_true(a:poll(10))
    assert.same({5, 5}, a:recv())
    a:close(); b:close()
  end)

  it("gives a forked pool's initializer the parent's data, and its globals to the tasks", function()
    local table_of = {}
    for i = 1, 1000 do table_of[i] = i * i end
    local pool = fork.Pool{processes = 2, initializer = function()
      WORKER_SQUARES = table_of  -- not encoded: the worker's copy of it
    end}
    assert.same({1, 10000, 1000000},
                pool:map(function(i) return WORKER_SQUARES[i] end, {1, 100, 1000}))
    pool:close(); pool:join()
  end)

  it("takes the child down with its parent", function()
    local dir = H.tmpdir()
    local r = H.run({"sh", "-c", ([[
      %q -e '
        local lmp = require "lmp"
        local p = lmp.get_context("fork").Process(function() lmp.Pipe():poll(60) end)
        p:start()
        io.write(p.pid, "\n") io.flush()
        lmp.Pipe():poll(60)' > %q/pid &
      parent=$!
      sleep 1
      kill -9 $parent; wait $parent
      sleep 0.5
      child=$(cat %q/pid)
      state=$(awk '{print $3}' /proc/$child/stat 2>/dev/null)
      # dead: gone, or a zombie that its new parent has not reaped yet
      if [ -n "$state" ] && [ "$state" != Z ]; then echo "alive $child"; kill -9 "$child"
      else echo gone; fi
    ]]):format(H.lmp, dir, dir)}, {timeout = 30})
    assert.equal("gone\n", r.stdout, r.stderr)
  end)
end)

describe("the forkserver start method", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  -- Runs an lmp script in a process of its own (the server is per
  -- requesting process); returns its stdout.
  local function script(body)
    local path = H.write(dir .. "/s.lua", "local lmp = require 'lmp'\n" .. body)
    local r = H.run({H.lmp, path}, {cwd = dir, timeout = 60})
    assert.equal(0, r.status, r.stderr)
    return r.stdout
  end

  it("forks children from a clean server with the preloaded modules", function()
    H.write(dir .. "/preloaded.lua", "return {loaded_in = require('lmp').current_process().name}")
    local out = script [[
      package.path = "./?.lua;" .. package.path
      lmp.set_forkserver_preload{"preloaded"}
      local ctx = lmp.get_context("forkserver")
      local a, b = lmp.Pipe()
      local p = ctx.Process(function(c)
        local stat = io.open("/proc/self/stat"):read("*l")
        local ppid = tonumber(stat:match("^%d+ %b() %a (%d+)"))
        local server = io.open("/proc/" .. ppid .. "/cmdline"):read("*a")
        c:send({package.loaded.preloaded and package.loaded.preloaded.loaded_in,
                server:find("ForkServer", 1, true) ~= nil,
                ppid ~= lmp.parent_process().pid,
                lmp.parent_process().pid})
      end, b)
      p:start()
      local got = a:recv()
      print(got[1], got[2], got[3], got[4] == lmp.current_process().pid, p:join(10))
    ]]
    -- loaded in the server (before any fork), not in the child; the
    -- child's parent process is the server, but lmp names its requester
    assert.equal("ForkServer\ttrue\ttrue\ttrue\t0\n", out)
  end)

  it("checks the preload list", function()
    H.raises("TypeError", lmp.set_forkserver_preload, "preloaded")
    H.raises("TypeError", lmp.set_forkserver_preload, {1})
  end)

  it("takes the server and its children down with the process that asked", function()
    local r = H.run({"sh", "-c", ([[
      %q -e '
        local lmp = require "lmp"
        local p = lmp.get_context("forkserver").Process(function() lmp.Pipe():poll(60) end)
        p:start()
        io.write(p.pid, "\n") io.flush()
        lmp.Pipe():poll(60)' > %q/pid &
      parent=$!
      sleep 1
      server=$(pgrep -P $parent)
      kill -9 $parent; wait $parent
      sleep 0.5
      for pid in $(cat %q/pid) $server; do
        state=$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)
        if [ -n "$state" ] && [ "$state" != Z ]; then echo "alive $pid"; kill -9 $pid; fi
      done
      echo done
    ]]):format(H.lmp, dir, dir)}, {timeout = 30})
    assert.equal("done\n", r.stdout, r.stderr)
  end)
end)

describe("Ctrl-C and the start methods", function()
  after_each(function() assert.same({}, H.children()) end)

  it("reaches a child as it would in Python: default action, or a KeyboardInterrupt after fork", function()
    -- a forked child inherits the host's handler (this host is lmp's):
    -- it raises a KeyboardInterrupt in the target, which ends with code 1
    local expect = {spawn = -2, forkserver = -2, fork = 1}
    for _, method in ipairs(lmp.get_all_start_methods()) do
      local p = lmp.get_context(method).Process(function() lmp.Pipe():poll(30) end)
      p:start()
      lmp.connection.wait({}, 0.5)  -- until it waits in its target
      os.execute("kill -INT " .. p.pid)
      assert.equal(expect[method], p:join(10), method)
    end
  end)
end)
