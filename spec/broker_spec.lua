-- Scale-out (SPEC section 14): lmp.Pool{broker = URL} and `lmp worker`,
-- against a real redis-server (private port, password, append-only file)
-- and real worker processes, killed and restarted as machines are.
local H = require "spec.support.helpers"
local S = require "spec.support.redis"
local lmp = require "lmp"

local raises = H.raises

describe("broker pool", function()
  local server
  local pools = {}

  setup(function() server = S.server() end)
  teardown(function()
    for _, p in ipairs(pools) do pcall(p.terminate, p) end
    S.stop_workers()
    if server then server:stop() end
  end)

  -- A pool on the spec's server, terminated after the spec.
  local function pool(opts)
    opts = opts or {}
    local o = {broker = server:url(), authkey = S.AUTHKEY, lease = 1}
    for k, v in pairs(opts) do o[k] = v end
    if o.authkey == false then o.authkey = nil end
    local p = lmp.Pool(o)
    pools[#pools + 1] = p
    return p
  end

  after_each(function()
    for i = #pools, 1, -1 do
      pcall(pools[i].terminate, pools[i])
      pools[i] = nil
    end
    S.stop_workers()
    H.cleanup()
  end)
  -- after the pools are ended: what they held must all be gone then
  H.check_leaks()

  describe("the Pool API", function()
    local worker
    before_each(function() worker = S.worker(server, {j = 2, queue = "api"}) end)

    it("applies, maps, starmaps and imaps as a local pool does", function()
      local p = pool{queue = "api"}
      assert.equal(5, p:apply(function(a, b) return a + b end, {2, 3}, {timeout = 20}))
      local k = 10
      assert.same({10, 20, 30}, p:map(function(x) return x * k end, {1, 2, 3}))
      assert.same({"a1", "b2"}, p:starmap(function(s, n) return s .. n end, {{"a", 1}, {"b", 2}}))
      local seen = {}
      for i, v in p:imap(function(x) return x .. "!" end, {"a", "b", "c"}) do seen[i] = v end
      assert.same({"a!", "b!", "c!"}, seen)
      local count = 0
      for i, v in p:imap_unordered(function(x) return -x end, {1, 2, 3, 4}) do
        assert.equal(-i, v)
        count = count + 1
      end
      assert.equal(4, count)
      -- a map big enough for several chunks, of numbers and of strings
      local xs = {}
      for i = 1, 1000 do xs[i] = i end
      local ys = p:map(function(x) return x * x end, xs, 37)
      for i = 1, 1000 do assert.equal(i * i, ys[i]) end
      assert.same({"x", lmp.null, "z"}, p:map(function(x) return x end, {"x", lmp.null, "z"}))
    end)

    it("runs callbacks and async results", function()
      local p = pool{queue = "api"}
      local got, failed
      local r1 = p:apply_async(function(x) return x + 1 end, {41}, function(v) got = v end)
      local r2 = p:apply_async(function() error("nope") end, {}, nil, function(e) failed = e end)
      local r3 = p:map_async(function(x) return x * 2 end, {1, 2, 3})
      assert.equal(42, r1:get(20))
      assert.is_true(r2:wait(20))
      assert.is_false(r2:successful())
      assert.same({2, 4, 6}, r3:get(20))
      lmp.poll(0)
      assert.equal(42, got)
      assert.is_true(lmp.is_error(failed, "RemoteError"))
      -- a coroutine awaits, resumed by lmp.poll
      local awaited
      local co = coroutine.wrap(function()
        awaited = p:apply_async(function() return "late" end, {}):await(20)
      end)
      co()
      assert.is_truthy(H.wait_until(function() lmp.poll(0.05) return awaited end, 20))
      assert.equal("late", awaited)
    end)

    it("raises the task's error as a RemoteError with the worker's traceback", function()
      local p = pool{queue = "api"}
      local e = raises("RemoteError", p.apply, p, function() error("bad thing") end, {})
      assert.matches("bad thing", e.message)
      assert.matches("traceback", e.traceback)
      assert.is_string(e.worker)
      e = raises("RemoteError", p.apply, p, function() error(lmp.error("ValueError", "v")) end, {})
      assert.equal("ValueError", e.remote_kind)
      -- the pool goes on
      assert.equal(1, p:apply(function() return 1 end, {}))
    end)

    it("sends upvalues and globals as they are at each call", function()
      local p = pool{queue = "api"}
      local k = 1
      local function f(x) return x + k end
      assert.equal(2, p:apply(f, {1}))
      k = 100
      assert.equal(101, p:apply(f, {1}))
      assert.same({101, 102}, p:map(f, {1, 2}))
    end)

    it("sends a call's function once per worker, not once per task", function()
      local p = pool{queue = "api"}
      server:cli("CONFIG", "RESETSTAT")
      local xs = {}
      for i = 1, 200 do xs[i] = i end
      local function double(x) return 2 * x end
      for _ = 1, 3 do p:map(double, xs, 5) end  -- 120 tasks
      local stats = server:cli("INFO", "commandstats")
      local gets = tonumber(stats:match("cmdstat_get:calls=(%d+)") or 0)
      local sets = tonumber(stats:match("cmdstat_set:calls=(%d+)") or 0)
      assert.is_true(gets <= 3, gets .. " GETs")
      assert.is_true(sets <= 3, sets .. " SETs")
    end)

    it("applies timeouts and retries", function()
      local p = pool{queue = "api"}
      local e = raises("TimeoutError", p.apply, p, function()
        local t = os.time() while os.time() - t < 30 do end
      end, {}, {timeout = 0.5})
      assert.equal(1, e.attempts)
      e = raises("RemoteError", p.apply, p, function()
        local t = os.time() while os.time() - t < 30 do end
      end, {}, {soft_timeout = 0.3})
      assert.equal("TimeoutError", e.remote_kind)
      -- retry_on: a flaky task runs until it succeeds
      local dir = H.tmpdir()
      local r = p:apply(function(path)
        local f = io.open(path, "a") f:write("x") f:close()
        f = io.open(path) local n = #f:read("*a") f:close()
        if n < 3 then error(lmp.error("ValueError", "flaky")) end
        return n
      end, {dir .. "/count"}, {retries = 5, retry_on = {"ValueError"}})
      assert.equal(3, r)
      assert.equal(2, p:stats().retried)
    end)

    it("reports queue length and pending tasks per worker in stats", function()
      S.worker(server, {j = 2, queue = "stats"})
      local p = pool{queue = "stats"}
      local rs = {}
      for i = 1, 6 do
        rs[i] = p:apply_async(function(s)
          local t = os.clock() while os.clock() - t < s do end
          return s
        end, {0.5})
      end
      local s = H.wait_until(function()
        lmp.poll(0.05)
        local st = p:stats()
        return st.busy > 0 and st
      end, 10)
      assert.is_table(s, "no task was ever pending")
      assert.equal(2, s.workers)  -- the queue's one `lmp worker -j 2`
      local n = 0
      for name, count in pairs(s.pending) do
        assert.matches("/%d+$", name)
        n = n + count
      end
      assert.equal(s.busy, n)
      assert.is_true(s.queue_length >= 0)
      for i = 1, 6 do assert.equal(0.5, rs[i]:get(20)) end
      assert.equal(6, p:stats().done)
    end)

    it("cancels a task that has not started, and kills a running one", function()
      local p = pool{queue = "api"}
      local long = function() local t = os.time() while os.time() - t < 60 do end end
      local r1 = p:apply_async(long, {})
      local r2 = p:apply_async(long, {})
      local r3 = p:apply_async(long, {})
      H.wait_until(function() lmp.poll(0.05) return p:stats().busy >= 2 end, 10)
      assert.is_true(r1:cancel())
      assert.is_true(r2:cancel())
      assert.is_true(r3:cancel())
      raises("CancelledError", r1.get, r1, 1)
      -- the workers are free again soon: their running tasks were killed
      local t0 = H.now()
      assert.equal(7, p:apply(function() return 7 end, {}, {timeout = 20}))
      assert.equal(7, p:apply(function() return 7 end, {}, {timeout = 20}))
      assert.is_true(H.now() - t0 < 10)
    end)

    it("leaves nothing open when dropped without being closed", function()
      local p = lmp.Pool{broker = server:url(), authkey = S.AUTHKEY, queue = "api"}
      assert.equal(1, p:apply(function() return 1 end, {}, {timeout = 20}))
      p = nil  -- luacheck: ignore
      -- (the leak check collects garbage, then counts descriptors)
    end)

    it("deletes what it kept in Redis when joined", function()
      local p = pool{queue = "api"}
      local k = 2
      assert.same({1, 2}, p:map(function(x) return x end, {1, 2}))
      local r = p:map_async(function(x) return x * k end, {1, 2, 3})  -- its fn is in Redis
      assert.matches(p.client, server:cli("KEYS", "lmp:api:*"))
      assert.same({2, 4, 6}, r:get(20))
      p:close()
      p:join()
      -- (the keys of a pool dropped unclosed expire after a day)
      assert.not_matches(p.client, server:cli("KEYS", "lmp:api:*"))
      raises("ValueError", p.apply, p, function() end, {})
    end)
  end)

  describe("arguments", function()
    it("checks the options of a broker pool", function()
      raises("ValueError", lmp.Pool, {broker = "http://x", authkey = "k"})
      raises("ValueError", lmp.Pool, {broker = server:url(), authkey = "k", queue = "a b"})
      raises("ValueError", lmp.Pool, {broker = server:url(), authkey = "k", lease = 0})
      raises("ValueError", lmp.Pool, {broker = server:url(), authkey = "k", frobnicate = 1})
      local e = raises("ValueError", lmp.Pool, {broker = server:url(), authkey = "k",
                                                initializer = print})
      assert.matches("initializer", e.message)
      raises("TypeError", lmp.Pool, {broker = 42, authkey = "k"})
      raises("OSError", lmp.Pool, {broker = "redis://127.0.0.1:1/0", authkey = "k"})
      local p = pool{queue = "args"}
      raises("ValueError", p.terminate_workers, p)
    end)

    it("checks lmp worker's arguments", function()
      local r = H.lmp_run({"worker"})
      assert.equal(2, r.status)
      assert.matches("%-%-broker is required", r.stderr)
      r = H.lmp_run({"worker", "--broker", server:url(), "-j", "0"})
      assert.equal(2, r.status)
      r = H.lmp_run({"worker", "--broker", server:url(), "--authkey-file", "/nonexistent"})
      assert.equal(2, r.status)
      assert.matches("authkey", r.stderr)
      r = H.lmp_run({"worker", "--help"})
      assert.equal(0, r.status)
      assert.matches("usage: lmp worker", r.stdout)
    end)
  end)

  describe("security", function()
    it("refuses to start without an authkey unless insecure", function()
      local e = raises("ValueError", lmp.Pool, {broker = server:url(), queue = "sec"})
      assert.matches("insecure", e.message)
      local w = S.worker(server, {authkey = false, queue = "sec", wait = false})
      assert.is_truthy(w:wait(20))
      assert.not_equal(0, w:status())
      assert.matches("authkey", w:output())
      -- insecure on both sides works
      S.worker(server, {authkey = false, insecure = true, queue = "insecure"})
      local p = pool{authkey = false, insecure = true, queue = "insecure"}
      assert.equal(3, p:apply(function() return 3 end, {}, {timeout = 20}))
    end)

    it("fails a task signed with another authkey with AuthenticationError", function()
      S.worker(server, {authkey = "the worker's key", queue = "sec2"})
      local p = pool{queue = "sec2"}
      local e = raises("AuthenticationError", p.apply, p, function() return 1 end, {},
                       {timeout = 20})
      assert.matches("authkey", e.message)
    end)

    it("never runs a task whose MAC is wrong", function()
      local w = S.worker(server, {queue = "forged"})
      local dir = H.tmpdir()
      local proof = dir .. "/ran"
      -- A task made as a pool makes it, then signed with the wrong key.
      local body = lmp.codec.encode({1, 1, true, {n = 1, {n = 1, proof}}, nil, function(path)
        local f = io.open(path, "w") f:write("ran") f:close()
        return 1
      end}, {binary = true})
      local env = lmp.codec.encode({false, false, 1, 1}, {binary = true})
      assert(server:call("XADD", "lmp:forged:tasks", "*", "c", "abcd", "i", "1", "e", env,
                         "b", body, "m", string.rep("x", 32)))
      -- the worker answers it (AuthenticationError) and drops it
      assert.is_truthy(H.wait_until(function()
        return server:cli("XLEN", "lmp:forged:results:abcd"):match("^1")
      end, 10), w:output())
      H.sleep(0.3)
      assert.is_nil(io.open(proof))
      assert.matches("^0", server:cli("XLEN", "lmp:forged:tasks"))
      -- and goes on serving real tasks
      local p = pool{queue = "forged"}
      assert.equal(1, p:apply(function() return 1 end, {}, {timeout = 20}))
    end)

    it("never shows the URL's password", function()
      local e = raises("AuthenticationError", lmp.Pool,
                       {broker = server:url("wrong-password"), authkey = "k"})
      assert.not_matches("wrong%-password", e.message)
      e = raises("ValueError", lmp.Pool, {broker = "redis://:hidden@host:notaport", authkey = "k"})
      assert.not_matches("hidden", e.message)
      local p = pool{queue = "pw"}
      assert.not_matches(S.PASSWORD:gsub("%-", "%%-"), tostring(p))
      local w = S.worker(server, {queue = "pw"})
      local f = io.open("/proc/" .. w.pid .. "/cmdline")
      local cmdline = f:read("*a")
      f:close()
      assert.matches("worker", cmdline)
      assert.is_nil(cmdline:find(S.PASSWORD, 1, true))
      assert.is_nil(w:output():find(S.PASSWORD, 1, true))
      -- a worker whose password is refused says so, without it, and exits 1
      local bad = S.worker(server, {queue = "pw", url = server:url("wrong-password"), wait = false})
      assert.is_truthy(bad:wait(20))
      assert.equal(1, bad:status())
      assert.matches("password was refused", bad:output())
      assert.is_nil(bad:output():find("wrong-password", 1, true))
      -- the password may come from the environment instead
      local url = ("redis://127.0.0.1:%d/0"):format(server.port)
      local w2 = S.worker(server, {queue = "pw-env", url = url,
                                   env = {LMP_REDIS_PASSWORD = S.PASSWORD}})
      assert.matches("serving", w2:output())
    end)
  end)

  describe("survival", function()
    -- A task that says where it runs (a file per run), then works for
    -- `seconds`.
    local function marked(dir, seconds)
      return function(i)
        local f = io.open(("%s/run-%d-%d"):format(dir, i, require("lmp").current_process().pid), "w")
        f:close()
        local t = os.clock() while os.clock() - t < seconds do end
        return i
      end
    end

    local function runs(dir)
      local n = 0
      local p = io.popen("ls " .. dir)
      for _ in p:lines() do n = n + 1 end
      p:close()
      return n
    end

    it("runs again the task of a worker SIGKILLed in the middle of it", function()
      local dir = H.tmpdir()
      local a = S.worker(server, {queue = "kill", lease = 1})
      local p = pool{queue = "kill"}
      local r = p:apply_async(marked(dir, 1), {1}, {retries = 1})
      assert.is_truthy(H.wait_until(function() lmp.poll(0.05) return runs(dir) == 1 end, 20))
      local pids = a:pids()
      a:signal("KILL")
      -- its local processes die with it
      assert.is_truthy(H.wait_until(function()
        for _, pid in ipairs(pids) do if not H.dead(pid) and H.proc_state(pid) then return false end end
        return true
      end, 10))
      S.worker(server, {queue = "kill", lease = 1})
      assert.equal(1, r:get(30))
      assert.equal(2, runs(dir))
      assert.equal(1, p:stats().done)
    end)

    it("fails with WorkerLost a task whose deliveries exhaust its retries", function()
      local dir = H.tmpdir()
      local a = S.worker(server, {queue = "lost", lease = 1})
      local p = pool{queue = "lost"}
      local r = p:apply_async(marked(dir, 30), {1})  -- retries = 0
      assert.is_truthy(H.wait_until(function() lmp.poll(0.05) return runs(dir) == 1 end, 20))
      a:signal("KILL")
      S.worker(server, {queue = "lost", lease = 1})
      local e = raises("WorkerLost", r.get, r, 30)
      assert.equal(1, e.attempts)
      assert.equal(1, runs(dir))  -- never run a second time
    end)

    it("retries a task whose local process died", function()
      S.worker(server, {queue = "crash"})
      local p = pool{queue = "crash"}
      local dir = H.tmpdir()
      local r = p:apply(function(path)
        local f = io.open(path, "a") f:write("x") f:close()
        f = io.open(path) local n = #f:read("*a") f:close()
        if n == 1 then os.exit(3) end
        return n
      end, {dir .. "/count"}, {retries = 1, timeout = 20})
      assert.equal(2, r)
      local e = raises("WorkerLost", p.apply, p, function() os.exit(4) end, {}, {timeout = 20})
      assert.equal(1, e.attempts)
    end)

    it("survives its connection being dropped in the middle of a map", function()
      S.worker(server, {queue = "drop", j = 2})
      local p = pool{queue = "drop"}
      local xs = {}
      for i = 1, 400 do xs[i] = i end
      local seen, count = {}, 0
      local dropped = false
      for i, v in p:imap_unordered(function(x)
        local t = os.clock() while os.clock() - t < 0.002 do end
        return x * 3
      end, xs, 4) do
        assert.is_nil(seen[i], "result " .. i .. " came twice")
        seen[i] = true
        assert.equal(3 * i, v)
        count = count + 1
        if count == 50 and not dropped then
          dropped = true
          server:cli("CLIENT", "KILL", "TYPE", "normal")
        end
      end
      assert.equal(400, count)
    end)

    it("completes a map across a Redis SIGKILL and restart, each result once", function()
      S.worker(server, {queue = "restart", j = 2})
      local p = pool{queue = "restart"}
      local xs = {}
      for i = 1, 300 do xs[i] = i end
      local seen, count, restarted = {}, 0, false
      for i, v in p:imap_unordered(function(x)
        local t = os.clock() while os.clock() - t < 0.005 do end
        return -x
      end, xs, 3) do
        assert.is_nil(seen[i], "result " .. i .. " came twice")
        seen[i] = true
        assert.equal(-i, v)
        count = count + 1
        if count == 60 and not restarted then
          restarted = true
          server:kill()
          H.sleep(0.5)
          server:restart()
        end
      end
      assert.equal(300, count)
      assert.equal(100, p:stats().done)  -- tasks: chunks of 3
    end)

    it("waits for Redis to come back, and never blocks a submit meanwhile", function()
      S.worker(server, {queue = "down"})
      local p = pool{queue = "down"}
      assert.equal(1, p:apply(function() return 1 end, {}, {timeout = 20}))
      server:kill()
      local t0 = H.now()
      local r = p:apply_async(function() return 2 end, {})
      assert.is_true(H.now() - t0 < H.QUICK)
      assert.same({nil, "timeout"}, {r:get(0.5)})
      server:restart()
      assert.equal(2, r:get(30))
    end)

    it("on SIGTERM finishes its running task, hands back the others and exits 0", function()
      local dir = H.tmpdir()
      local a = S.worker(server, {queue = "term", j = 1})
      local p = pool{queue = "term"}
      local rs = {}
      for i = 1, 2 do rs[i] = p:apply_async(marked(dir, 1.5), {i}) end
      -- a holds both (2j tasks), runs one
      assert.is_truthy(H.wait_until(function()
        lmp.poll(0.05)
        return runs(dir) == 1 and p:stats().busy == 2
      end, 20))
      a:signal("TERM")
      assert.is_truthy(a:wait(20), a:output())
      assert.equal(0, a:status(), a:output())
      assert.matches("handed 1 task", a:output())
      assert.equal(1, rs[1]:get(1))  -- finished before a exited
      S.worker(server, {queue = "term", j = 1})
      assert.equal(2, rs[2]:get(30))
      assert.equal(2, runs(dir), io.popen("ls " .. dir):read("*a") .. a:output())
    end)

    it("never hangs a get when no worker serves the queue", function()
      local p = pool{queue = "nobody"}
      local r = p:apply_async(function() return 1 end, {})
      local t0 = H.now()
      assert.same({nil, "timeout"}, {r:get(0.3)})
      H.took_about(t0, 0.3)
      assert.is_true(r:cancel())
    end)
  end)

  describe("modules", function()
    local dir
    before_each(function()
      dir = H.tmpdir()
      H.write(dir .. "/spec_scaled.lua", [[
        local M = {}
        local factor = 7
        function M.scale(x) return x * factor end
        return M
      ]])
      package.path = dir .. "/?.lua;" .. package.path
    end)
    after_each(function()
      package.path = package.path:gsub("^[^;]*;", "")
      package.loaded.spec_scaled = nil
    end)

    it("requires a module by name on the worker, and names it when missing", function()
      S.worker(server, {queue = "mod"})
      local p = pool{queue = "mod"}
      local scaled = require "spec_scaled"
      local e = raises("RemoteError", p.apply, p, function(x) return scaled.scale(x) end, {2},
                       {timeout = 20})
      assert.matches("spec_scaled", e.message)
    end)

    it("sends a module by value once registered with lmp.codec.by_value", function()
      S.worker(server, {queue = "mod"})
      local p = pool{queue = "mod"}
      local scaled = require "spec_scaled"
      lmp.codec.by_value("spec_scaled")
      assert.equal(14, p:apply(function(x) return scaled.scale(x) end, {2}, {timeout = 20}))
      assert.same({7, 14}, p:map(function(x) return scaled.scale(x) end, {1, 2}))
    end)
  end)
end)
