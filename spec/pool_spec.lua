-- lmp.Pool (SPEC section 8, details in sections 1 and 12; issue 5):
-- construction, map/starmap, imap/imap_unordered with lazy input, apply and
-- the async forms with callbacks, errors in tasks, workers that die, task
-- deadlines, maxtasksperchild, initializer/initargs, close/terminate/join,
-- pools left open or collected, and the progress bar.
--
-- Scenarios where a bug could block for ever (a map whose worker dies, ...)
-- run in a child host with a timeout; elsewhere every wait is bounded
-- (AsyncResult:get(timeout), H.wait_until).
local H = require "spec.support.helpers"
local lmp = require "lmp"

local raises = H.raises

local nap = H.nap

-- Runs a script with a fresh host: {status, stdout, stderr, elapsed, dir}.
-- The script gets its temporary directory as arg[1].
local function run_script(source, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local path = H.write(dir .. "/script.lua", source)
  local t0 = H.now()
  local r = H.lmp_run({path, dir}, {timeout = opts.timeout or 20})
  r.elapsed = H.now() - t0
  r.dir = dir
  return r
end

-- The pids listed on lines "pid N" of a script's output.
local function pids_in(out)
  local l = {}
  for p in out:gmatch("pid (%d+)") do l[#l + 1] = tonumber(p) end
  return l
end

-- Waits (bounded, running lmp's loop) until every pid in the list has ended.
local function all_dead(pids, timeout)
  return H.wait_until(function()
    for _, p in ipairs(pids) do if not H.dead(p) then return nil end end
    return true
  end, timeout or 5, function() lmp.poll(0.02) end)
end

-- Reads a number a worker wrote to a file.
local function read_number(path)
  return tonumber(H.slurp(path) or "")
end

-- Shared by the pools of a spec: closed (terminated) in after_each.
local new_pool  -- H.pools(), in the describe block

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("lmp.Pool", function()
  new_pool = H.pools()

  describe("construction", function()
    it("lmp.Pool(n) starts n workers, like lmp.Pool{processes = n}", function()
      local p = new_pool(3)
      assert.is_truthy(H.wait_until(function() return #H.children() == 3 end, 5),
        "expected 3 worker processes, have " .. #H.children())
      assert.same({1, 4, 9}, p:map(function(x) return x * x end, {1, 2, 3}))
      p:terminate(); p:join()
      assert.equal(0, #lmp.active_children())

      p = new_pool{processes = 2}
      assert.is_truthy(H.wait_until(function() return #H.children() == 2 end, 5),
        "expected 2 worker processes, have " .. #H.children())
      assert.same({2, 3}, p:map(function(x) return x + 1 end, {1, 2}))
      p:close(); p:join()
    end)

    it("defaults processes to lmp.cpu_count()", function()
      local p = new_pool()
      local n = lmp.cpu_count()
      assert.is_truthy(H.wait_until(function() return #H.children() == n end, 5),
        "expected " .. n .. " worker processes, have " .. #H.children())
      assert.same({1}, p:map(function(x) return x end, {1}))
      p:close(); p:join()
      p = new_pool{}
      assert.is_truthy(H.wait_until(function() return #H.children() == n end, 5))
      p:close(); p:join()
    end)

    it("refuses processes < 1 and a non-positive maxtasksperchild with ValueError", function()
      raises("ValueError", lmp.Pool, 0)
      raises("ValueError", lmp.Pool, -2)
      raises("ValueError", lmp.Pool, {processes = 0})
      raises("ValueError", lmp.Pool, {processes = 1, maxtasksperchild = 0})
      raises("ValueError", lmp.Pool, {processes = 1, maxtasksperchild = -1})
      assert.equal(0, #H.children())
    end)
  end)

  describe("map and starmap", function()
    it("returns results[i] = fn(list[i]) at any chunksize", function()
      local p = new_pool(2)
      local list, want = {}, {}
      for i = 1, 57 do list[i] = i; want[i] = i * i end
      local sq = function(x) return x * x end
      assert.same(want, p:map(sq, list))
      assert.same(want, p:map(sq, list, 1))
      assert.same(want, p:map(sq, list, 7))
      assert.same(want, p:map(sq, list, 1000))
      p:close(); p:join()
    end)

    it("carries chunks of numbers bit for bit, both ways", function()
      -- tasks and replies of numbers travel as doubles (lmp.pool.pack)
      local p = new_pool(2)
      local special = {-0.0, 0.1 + 0.2, 2 ^ 53 + 2, -2 ^ 63, 1 / 0, -1 / 0, 5e-324,
                       1.7976931348623157e308, -1, 0, 3}
      local list = {}
      for i = 1, 64 do list[i] = special[(i - 1) % #special + 1] end
      list[64] = 0 / 0
      local r = p:map(function(x) return x end, list, 32, {timeout = 20})
      assert.equal(64, #r)
      for i = 1, 63 do
        assert.equal(list[i], r[i], "item " .. i)
        assert.equal(1 / list[i], 1 / r[i], "the sign of item " .. i)
      end
      assert.is_true(r[64] ~= r[64], "NaN")
      -- one number a task, too (a frame of doubles each way)
      local one = p:map(function(x) return x end, list, 1, {timeout = 20})
      for i = 1, 63 do assert.equal(1 / list[i], 1 / one[i], "chunksize 1, item " .. i) end
      assert.is_true(one[64] ~= one[64], "NaN, chunksize 1")
      -- numbers computed by the task come back as computed
      local sq = p:map(function(x) return x * 0.5 end, list, 32, {timeout = 20})
      for i = 1, 63 do assert.equal(list[i] * 0.5, sq[i], "item " .. i) end
      -- a chunk with anything else in it takes the codec, holes and all
      local mixed = {}
      for i = 1, 40 do mixed[i] = i end
      mixed[17] = "x"
      local m = p:map(function(x) if x == 20 then return nil end return x end, mixed, 40,
                      {timeout = 20})
      assert.equal("x", m[17])
      assert.is_nil(m[20])
      assert.equal(40, m[40])
      local n = 0
      for i, v in p:imap(function(x) return -x end, list, 32, {timeout = 20}) do
        n = n + 1
        if i < 64 then assert.equal(1 / -list[i], 1 / v, "imap item " .. i) end
      end
      assert.equal(64, n)
    end)

    it("carries strings and tables both ways", function()
      local p = new_pool(2)
      local r = p:map(function(t) return {name = t.name:upper(), n = #t.items} end,
                      {{name = "a", items = {1, 2}}, {name = "bc", items = {}}})
      assert.same({{name = "A", n = 2}, {name = "BC", n = 0}}, r)
      p:close(); p:join()
    end)

    it("leaves a hole for a nil result, and gives {} for an empty list", function()
      local p = new_pool(2)
      local r = p:map(function(x) if x % 2 == 0 then return x * 10 end end, {1, 2, 3, 4, 5}, 1)
      assert.is_nil(r[1]); assert.equal(20, r[2]); assert.is_nil(r[3])
      assert.equal(40, r[4]); assert.is_nil(r[5])
      assert.equal(2, count_keys(r))
      local e = p:map(function(x) return x end, {})
      assert.same({}, e)
      assert.is_nil(next(e))
      p:close(); p:join()
    end)

    it("starmap unpacks each argument table", function()
      local p = new_pool(2)
      assert.same({2, 12, 30}, p:starmap(function(a, b) return a * b end, {{1, 2}, {3, 4}, {5, 6}}))
      assert.same({"x-1", "y-2"}, p:starmap(function(s, n) return s .. "-" .. n end, {{"x", 1}, {"y", 2}}, 1))
      assert.same({}, p:starmap(function(a) return a end, {}))
      p:close(); p:join()
    end)

    it("runs closures over local helpers and upvalue tables", function()
      local p = new_pool(2)
      local scale = {k = 3}
      local function helper(x) return x * scale.k end
      assert.same({4, 7, 10}, p:map(function(x) return helper(x) + 1 end, {1, 2, 3}))
      local words = {"zero", "one", "two"}
      local function name(i) return words[i + 1] end
      assert.same({"one", "two"}, p:map(function(i) return name(i) end, {1, 2}, 1))
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      assert.same({55, 6765}, p:map(fib, {10, 20}))
      p:close(); p:join()
    end)

    it("spreads the work over the workers", function()
      local p = new_pool(2)
      local r = p:map(function() nap(0.15); return require("lmp").current_process().pid end,
                      {1, 2, 3, 4}, 1)
      local seen = {}
      for _, pid in ipairs(r) do seen[pid] = true end
      assert.equal(2, count_keys(seen))
      assert.is_nil(seen[lmp.current_process().pid])
      p:close(); p:join()
    end)
  end)

  describe("several pools and big messages", function()
    it("two pools work side by side", function()
      local p1 = new_pool(1)
      local p2 = lmp.Pool(1)
      local ok, err = pcall(function()
        local a = p1:map_async(function(x) nap(0.05); return x + 1 end, {1, 2, 3}, 1)
        local b = p2:map_async(function(x) nap(0.05); return x - 1 end, {1, 2, 3}, 1)
        assert.same({0, 1, 2}, b:get(5))
        assert.same({2, 3, 4}, a:get(5))
      end)
      p2:terminate(); p2:join()
      assert(ok, err)
      p1:close(); p1:join()
    end)

    it("runs every pool's callbacks in lmp.poll and while waiting on another pool", function()
      local p1 = new_pool(1)
      local p2 = lmp.Pool(1)
      local ok, err = pcall(function()
        for round, p in ipairs({p1, p2, p1, p2}) do
          local got
          local r = p:apply_async(function() return "r" end, {}, function(v) got = v end)
          lmp.poll(1.5)
          assert.equal("r", got, "round " .. round .. ": the callback did not run within lmp.poll(1.5)")
          assert.is_true(r:ready())
        end
        -- waiting on one pool runs the callbacks of the other
        for round, pair in ipairs({{p1, p2}, {p2, p1}}) do
          local got
          pair[2]:apply_async(function() return "other" end, {}, function(v) got = v end)
          assert.equal("slow", pair[1]:apply_async(function() nap(0.5); return "slow" end, {}):get(5))
          assert.equal("other", got, "round " .. round .. ": callback of the other pool did not run")
        end
      end)
      p2:terminate(); p2:join()
      assert(ok, err)
      p1:close(); p1:join()
    end)

    it("carries megabyte arguments and results in both directions without deadlock", function()
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local list = {}
        for i = 1, 8 do list[i] = string.rep(string.char(64 + i), 2 * 1024 * 1024) end
        local r = pool:map(function(s) return s:lower() .. s end, list, 1)
        for i = 1, 8 do
          assert(#r[i] == 4 * 1024 * 1024 and r[i]:sub(1, 1) == string.char(96 + i)
                 and r[i]:sub(-1) == string.char(64 + i), "bad result " .. i)
        end
        local n = 0
        for i, v in pool:imap_unordered(function(s) return #s end, list, 1) do n = n + v end
        pool:close(); pool:join()
        print("ok", n)
      ]], {timeout = 30})
      assert.equal(0, r.status, "status " .. tostring(r.status) .. " (124: hung)\n" .. r.stderr)
      assert.equal("ok\t" .. 8 * 2 * 1024 * 1024 .. "\n", r.stdout)
    end)
  end)

  describe("imap and imap_unordered", function()
    it("imap yields index, result in input order", function()
      local p = new_pool(3)
      local got = {}
      for i, r in p:imap(function(x) nap((7 - x) * 0.05); return x * 2 end, {1, 2, 3, 4, 5, 6}, 1) do
        got[#got + 1] = {i, r}
      end
      assert.same({{1, 2}, {2, 4}, {3, 6}, {4, 8}, {5, 10}, {6, 12}}, got)
      p:close(); p:join()
    end)

    it("imap_unordered yields in completion order, every index exactly once", function()
      local p = new_pool(3)
      local order, seen = {}, {}
      for i, r in p:imap_unordered(function(x) nap((7 - x) * 0.08); return x * 2 end, {1, 2, 3, 4, 5, 6}, 1) do
        assert.equal(i * 2, r)
        assert.is_nil(seen[i], "index " .. i .. " yielded twice")
        seen[i] = true
        order[#order + 1] = i
      end
      assert.equal(6, #order)
      for i = 1, 6 do assert.is_true(seen[i]) end
      -- item 1 takes the longest of the first three: it cannot come first
      assert.are_not.equal(1, order[1])
      p:close(); p:join()
    end)

    it("takes an iterator function, called until it returns nil", function()
      local p = new_pool(2)
      for _, m in ipairs({"imap", "imap_unordered"}) do
        local n = 0
        local function gen()
          n = n + 1
          if n <= 25 then return n end
        end
        local got = {}
        for i, r in p[m](p, function(x) return x + 100 end, gen, 3) do got[i] = r end
        assert.equal(25, count_keys(got), m)
        for i = 1, 25 do assert.equal(i + 100, got[i], m) end
      end
      p:close(); p:join()
    end)

    it("handles an empty iterable, and a nil result at some index", function()
      local p = new_pool(2)
      local n = 0
      for _ in p:imap(function(x) return x end, {}) do n = n + 1 end
      for _ in p:imap_unordered(function(x) return x end, function() return nil end) do n = n + 1 end
      assert.equal(0, n)
      local idx = {}
      for i, r in p:imap(function(x) if x ~= 2 then return x end end, {1, 2, 3}, 1) do
        idx[#idx + 1] = i
        if i == 2 then assert.is_nil(r) else assert.equal(i, r) end
      end
      assert.same({1, 2, 3}, idx)
      idx = {}
      for i, r in p:imap_unordered(function(x) if x ~= 2 then return x end end, {1, 2, 3}, 1) do
        idx[i] = true
        if i == 2 then assert.is_nil(r) else assert.equal(i, r) end
      end
      assert.same({true, true, true}, idx)
      p:close(); p:join()
    end)

    it("yields false results as false", function()
      local p = new_pool(2)
      local got = {}
      for i, r in p:imap(function(x) return x > 2 end, {1, 2, 3}, 1) do got[i] = r end
      assert.same({false, false, true}, got)
      got = {}
      for i, r in p:imap(function(x) return x > 2 end, {1, 2, 3}, 3) do got[i] = r end
      assert.same({false, false, true}, got)
      assert.same({false, true}, p:map(function(x) return x > 1 end, {1, 2}))
      assert.is_false(p:apply(function() return false end, {}))
      p:close(); p:join()
    end)

    it("an error in the caller's generator reaches the caller; the pool still works", function()
      local p = new_pool(2)
      local n = 0
      local ok, e = pcall(function()
        for _ in p:imap(function(x) return x end, function()
          n = n + 1
          if n == 5 then error("generator broke") end
          return n
        end, 1) do end
      end)
      assert.is_false(ok)
      assert.truthy(tostring(e):find("generator broke", 1, true), tostring(e))
      assert.same({1, 2}, p:map(function(x) return x end, {1, 2}))
      p:close(); p:join()
    end)

    it("consumes a 1e6-item generator lazily: a bounded number of items ahead", function()
      local p = new_pool(2)
      local calls = 0
      local function gen()
        calls = calls + 1
        if calls <= 1e6 then return calls end
      end
      -- default buffer: at most 4 chunks per worker beyond what was consumed
      local consumed = 0
      for i, r in p:imap(function(x) return x * 2 end, gen, 1) do
        assert.equal(i * 2, r)
        consumed = consumed + 1
        if consumed == 10 then break end
      end
      lmp.poll(0.3)   -- let the pool pull whatever it would pull
      assert.is_true(calls <= 10 + 4 * 2 + 2,
        "generator called " .. calls .. " times after 10 results (buffer 4 chunks x 2 workers)")

      -- {buffersize = n} as the last argument, after a chunksize or alone
      calls = 0
      consumed = 0
      for i, r in p:imap(function(x) return x + 1 end, gen, 1, {buffersize = 3}) do
        assert.equal(i + 1, r)
        consumed = consumed + 1
        if consumed == 10 then break end
      end
      lmp.poll(0.3)
      assert.is_true(calls <= 10 + 3 + 2, "buffersize 3: generator called " .. calls .. " times")

      calls = 0
      consumed = 0
      for _ in p:imap_unordered(function(x) return x end, gen, {buffersize = 2}) do
        consumed = consumed + 1
        if consumed == 10 then break end
      end
      lmp.poll(0.3)
      assert.is_true(calls < 1000, "imap_unordered buffersize 2: generator called " .. calls .. " times")

      -- the default chunksize for a generator of unknown length is bounded too
      calls = 0
      consumed = 0
      for _ in p:imap(function(x) return x end, gen) do
        consumed = consumed + 1
        if consumed == 10 then break end
      end
      lmp.poll(0.3)
      assert.is_true(calls < 1e5, "default chunksize: generator called " .. calls .. " times")

      -- the pool still works after abandoned iterations
      assert.same({1, 2, 3}, p:map(function(x) return x end, {1, 2, 3}))
      p:close(); p:join()
    end)

    it("runs a 1e6-item generator to the end in constant memory", function()
      local p = new_pool(2)
      local calls = 0
      local function gen()
        calls = calls + 1
        if calls <= 1e6 then return calls end
      end
      local sum, n, expect = 0, 0, 1
      local mem_at = {}
      for i, r in p:imap(function(x) return x % 7 end, gen, 1000) do
        assert(i == expect, "out of order")
        expect = expect + 1
        sum = sum + r
        n = n + 1
        if n % 100000 == 0 then
          assert(calls <= n + 4 * 2 * 1000 + 1000 + 1, "generator ran ahead: " .. calls .. " calls at " .. n)
          collectgarbage(); collectgarbage()
          mem_at[n / 100000] = collectgarbage("count")
        end
      end
      assert.equal(1e6, n)
      local s = 0
      for x = 1, 1e6 do s = s + x % 7 end
      assert.equal(s, sum)
      -- live memory after 900k items is not above what it was after 200k
      -- (holding every result or every item would take megabytes)
      assert.is_true(mem_at[9] - mem_at[2] < 1024,
        ("memory grew by %.0f KB between 200k and 900k items"):format(mem_at[9] - mem_at[2]))
      p:close(); p:join()
    end)

    it("imap raises a task's error at that index, after the earlier results", function()
      local p = new_pool(2)
      local got = {}
      local ok, e = pcall(function()
        for i, r in p:imap(function(x) if x == 5 then error("bad item " .. x) end; return x end,
                           {1, 2, 3, 4, 5, 6, 7, 8}, 1) do
          got[#got + 1] = i
        end
      end)
      assert.is_false(ok)
      assert.same({1, 2, 3, 4}, got)
      assert.equal("RemoteError", e.kind, tostring(e))
      assert.truthy(e.message:find("bad item 5", 1, true))

      ok, e = pcall(function()
        for _ in p:imap_unordered(function(x) if x == 5 then error("bad item " .. x) end; return x end,
                                  {1, 2, 3, 4, 5, 6, 7, 8}, 1) do end
      end)
      assert.is_false(ok)
      assert.equal("RemoteError", e.kind, tostring(e))
      assert.same({10, 20}, p:map(function(x) return x * 10 end, {1, 2}))
      p:close(); p:join()
    end)
    it("imap goes on after a failed chunk with the next chunk, inventing no results", function()
      local p = new_pool(2)
      -- chunks {1,2,3} {4,5,6} {7,8}; the second fails at 5
      local f = function(x) if x == 5 then error("bad item " .. x) end; return x * 10 end
      for _, ordered in ipairs({true, false}) do
        local it = ordered and p:imap(f, {1, 2, 3, 4, 5, 6, 7, 8}, 3)
                           or p:imap_unordered(f, {1, 2, 3, 4, 5, 6, 7, 8}, 3)
        local got, errors = {}, 0
        for _ = 1, 20 do
          local ok, i, r = pcall(it)
          if not ok then
            errors = errors + 1
            assert.equal("RemoteError", i.kind, tostring(i))
          elseif i == nil then
            break
          else
            got[#got + 1] = i .. "=" .. tostring(r)
          end
        end
        table.sort(got)
        assert.equal(1, errors)
        assert.same({"1=10", "2=20", "3=30", "7=70", "8=80"}, got)
      end
      p:close(); p:join()
    end)
  end)

  describe("apply and the async forms", function()
    it("apply returns fn(unpack(args))", function()
      local p = new_pool(2)
      assert.equal(5, p:apply(function(a, b) return a + b end, {2, 3}))
      assert.equal("ab", p:apply(function(a, b) return a .. b end, {"a", "b"}))
      assert.is_nil(p:apply(function() end, {}))
      p:close(); p:join()
    end)

    it("apply_async returns an AsyncResult: get, wait, ready, successful", function()
      local p = new_pool(2)
      local r = p:apply_async(function(x) nap(0.4); return x * 2 end, {21})
      assert.is_false(r:ready())
      raises("ValueError", r.successful, r)
      local t0 = H.now()
      local v, why = r:get(0.05)
      assert.is_nil(v)
      assert.equal("timeout", why)
      assert.is_true(H.now() - t0 < 0.3)
      assert.is_false(r:wait(0.01))
      assert.is_true(r:wait(5))
      assert.is_true(r:ready())
      assert.is_true(r:successful())
      assert.equal(42, r:get(5))
      assert.equal(42, r:get(0))
      assert.equal(42, r:get())
      p:close(); p:join()
    end)

    it("get re-raises the task's error; successful() is false", function()
      local p = new_pool(2)
      local r = p:apply_async(function() error("async boom") end, {})
      assert.is_true(r:wait(5))
      assert.is_false(r:successful())
      local e = raises("RemoteError", r.get, r, 5)
      assert.truthy(e.message:find("async boom", 1, true))
      p:close(); p:join()
    end)

    it("map_async and starmap_async give the list", function()
      local p = new_pool(2)
      local m = p:map_async(function(x) return -x end, {1, 2, 3})
      local s = p:starmap_async(function(a, b) return a - b end, {{5, 1}, {9, 2}}, 1)
      assert.same({-1, -2, -3}, m:get(5))
      assert.same({4, 7}, s:get(5))
      assert.is_true(m:successful())
      assert.same({}, p:map_async(function(x) return x end, {}):get(5))
      p:close(); p:join()
    end)

    it("runs callbacks in the parent, only while it waits in lmp or lmp.poll", function()
      local p = new_pool(2)
      local got, me = {}, lmp.current_process().pid
      local r = p:apply_async(function(x) return x + 1 end, {1}, function(v)
        got[#got + 1] = {"apply", v, lmp.current_process().pid}
      end)
      -- the task is done within this time, but nothing runs behind our back
      H.sleep(0.3)
      assert.same({}, got)
      assert.is_truthy(H.wait_until(function() return #got == 1 end, 5, function() lmp.poll(0.05) end))
      assert.same({"apply", 2, me}, got[1])
      assert.is_true(r:ready())

      local m = p:map_async(function(x) return x * 3 end, {1, 2}, 1, function(v)
        got[#got + 1] = {"map", v}
      end)
      assert.same({3, 6}, m:get(5))
      assert.same({"map", {3, 6}}, got[2])

      local s = p:starmap_async(function(a, b) return a .. b end, {{"p", "q"}}, nil, function(v)
        got[#got + 1] = {"starmap", v}
      end)
      assert.is_true(s:wait(5))
      assert.same({"starmap", {"pq"}}, got[3])
      p:close(); p:join()
    end)

    it("runs callbacks while the parent waits in any lmp call (Connection:poll)", function()
      local p = new_pool(2)
      local got
      p:apply_async(function() return "x" end, {}, function(v) got = v end)
      local a, b = lmp.Pipe()
      assert.is_truthy(H.wait_until(function() return got end, 3, function() a:poll(0.05) end),
        "callback did not run while the parent waited in Connection:poll")
      a:close(); b:close()
      assert.equal("x", got)
      got = nil
      p:apply_async(function() return "y" end, {}, function(v) got = v end)
      assert.is_truthy(H.wait_until(function() return got end, 3, function()
        lmp.connection.wait({}, 0.05)
      end), "callback did not run while the parent waited in lmp.connection.wait")
      p:close(); p:join()
    end)

    it("serves its pools during another lmp wait without a thread of lmp's", function()
      -- Each such wait started a thread to watch each pool's ring; the
      -- pools' bells are descriptors that the wait polls with its own.  A
      -- child counts this process's threads in the middle of the wait.
      local p = new_pool(1)
      local busy = p:apply_async(function() local t = os.clock() while os.clock() - t < 1 do end end, {})
      local r, w = lmp.Pipe(false)
      local parent = lmp.current_process().pid
      local counter = lmp.Process(function(pid, out)
        local t = os.clock() while os.clock() - t < 0.3 do end
        local f = io.open("/proc/" .. pid .. "/status")
        out:send(tonumber(f:read("*a"):match("Threads:%s*(%d+)")))
        f:close()
      end, parent, w)
      counter:start()
      local f = io.open("/proc/self/status")
      local before = tonumber(f:read("*a"):match("Threads:%s*(%d+)"))  -- (libuv's pool, if started)
      f:close()
      local a, b = lmp.Pipe()
      assert.is_false(a:poll(0.6))  -- the wait (the pool is busy all along)
      assert.is_true(r:poll(10))
      assert.equal(before, r:recv())
      assert.equal(0, counter:join(10))
      a:close(); b:close(); r:close(); w:close()
      busy:get(10)
      p:close(); p:join()
    end)

    it("calls error_callback with the error (and not callback)", function()
      local p = new_pool(2)
      local ok_called, err
      local r = p:apply_async(function() error("for the callback") end, {},
        function() ok_called = true end, function(e) err = e end)
      assert.is_true(r:wait(5))
      assert.is_nil(ok_called)
      assert.is_true(lmp.is_error(err))
      assert.equal("RemoteError", err.kind)
      assert.truthy(err.message:find("for the callback", 1, true))

      local merr
      local m = p:map_async(function(x) if x == 2 then error("map item") end; return x end, {1, 2, 3}, 1,
        function() ok_called = true end, function(e) merr = e end)
      assert.is_true(m:wait(5))
      assert.is_nil(ok_called)
      assert.equal("RemoteError", merr and merr.kind)
      assert.is_false(m:successful())
      p:close(); p:join()
    end)

    it("survives an error in a user callback", function()
      local p = new_pool(2)
      local r = p:apply_async(function() return 1 end, {}, function() error("callback bug") end)
      assert.equal(1, r:get(5))
      local r2 = p:apply_async(function() error("x") end, {}, nil, function() error("error_callback bug") end)
      assert.is_true(r2:wait(5))
      assert.same({1, 2}, p:map(function(x) return x end, {1, 2}))
      assert.equal(7, p:apply(function() return 7 end, {}))
      p:close(); p:join()
    end)

    it("reports an error in a user callback on stderr", function()
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local a = pool:apply_async(function() return 1 end, {}, function() error("CALLBACK-BUG-1") end)
        print("get", a:get(10))
        local b = pool:apply_async(function() error("task") end, {}, nil, function() error("CALLBACK-BUG-2") end)
        print("wait", b:wait(10))
        print("map", table.concat(pool:map(function(x) return x end, {1, 2, 3}), ","))
        pool:close(); pool:join()
      ]])
      assert.equal(0, r.status, r.stderr)
      assert.truthy(r.stdout:find("get\t1", 1, true), r.stdout)
      assert.truthy(r.stdout:find("wait\ttrue", 1, true), r.stdout)
      assert.truthy(r.stdout:find("map\t1,2,3", 1, true), r.stdout)
      assert.truthy(r.stderr:find("CALLBACK-BUG-1", 1, true), r.stderr)
      assert.truthy(r.stderr:find("CALLBACK-BUG-2", 1, true), r.stderr)
    end)
  end)

  describe("errors in tasks", function()
    it("reach the caller as RemoteError with the message and the worker's traceback", function()
      local p = new_pool(2)
      local function inner(x) error("task failed on " .. x) end
      local e = raises("RemoteError", p.apply, p, function(x) inner(x) end, {"input-7"})
      assert.truthy(e.message:find("task failed on input-7", 1, true), e.message)
      assert.equal("string", type(e.traceback))
      assert.truthy(e.traceback:find("stack traceback", 1, true), e.traceback)
      assert.truthy(tostring(e):find("task failed on input-7", 1, true))
      -- the pool keeps working
      assert.equal(3, p:apply(function() return 3 end, {}))
      e = raises("RemoteError", p.map, p, function(x) if x == 3 then error("item three") end; return x end,
                 {1, 2, 3, 4}, 1)
      assert.truthy(e.message:find("item three", 1, true))
      assert.same({1, 2, 3, 4}, p:map(function(x) return x end, {1, 2, 3, 4}, 1))
      assert.same({"ok"}, p:starmap(function(s) return s end, {{"ok"}}))
      p:close(); p:join()
    end)

    it("a non-string error value still gives a RemoteError", function()
      local p = new_pool(1)
      local e = raises("RemoteError", p.apply, p, function() error({code = 17}) end, {})
      assert.equal("string", type(e.message))
      assert.equal(1, p:apply(function() return 1 end, {}))
      p:close(); p:join()
    end)

    it("arguments that cannot be encoded are a CodecError naming args", function()
      local p = new_pool(1)
      local e = raises("CodecError", p.apply, p, function(x) return x end, {coroutine.create(function() end)})
      assert.truthy(e.message:find("args", 1, true), e.message)
      assert.equal(2, p:apply(function() return 2 end, {}))
      p:close(); p:join()
    end)

    it("a function that cannot be encoded is a CodecError naming function", function()
      local p = new_pool(1)
      local co = coroutine.create(function() end)
      local function f() return co end
      for _, call in ipairs({
        function() return p:apply(f, {}) end,
        function() return p:apply_async(f, {}) end,
        function() return p:map(f, {1, 2}) end,
        function() return p:imap(f, {1, 2})() end,
      }) do
        local e = raises("CodecError", call)
        assert.truthy(e.message:match("^function"), e.message)
        assert.truthy(e.message:find("thread", 1, true), e.message)
      end
      assert.same({1}, p:map(function(x) return x end, {1}, {timeout = 20}))
      p:close(); p:join()
    end)

    it("a result that cannot be encoded fails that task with a message naming result", function()
      local p = new_pool(1)
      local ok, e = pcall(p.apply, p, function() return coroutine.create(function() end) end, {})
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e), tostring(e))
      assert.truthy(tostring(e):find("result", 1, true), tostring(e))
      assert.equal(2, p:apply(function() return 2 end, {}))
      p:close(); p:join()
    end)
  end)

  describe("workers that die", function()
    it("os.exit in a task: WorkerLost naming the pid and exit code, within a second", function()
      local p = new_pool(2)
      local dir = H.tmpdir()
      local t0 = H.now()
      local r = p:apply_async(function(path)
        local f = io.open(path, "w"); f:write(require("lmp").current_process().pid); f:close()
        os.exit(3)
      end, {dir .. "/pid"})
      assert.is_true(r:wait(10), "no outcome for a task whose worker exited")
      assert.is_true(H.now() - t0 < 1.5, "took " .. (H.now() - t0) .. " s")
      assert.is_false(r:successful())
      local e = raises("WorkerLost", r.get, r, 1)
      local pid = read_number(dir .. "/pid")
      assert.is_not_nil(pid)
      assert.truthy(e.message:find(tostring(pid), 1, true), e.message)
      local rest = e.message:gsub(tostring(pid), "")
      assert.truthy(rest:find("%f[%d]3%f[%D]"), "exit code 3 not named: " .. e.message)
      -- the worker is replaced and the pool works
      assert.is_truthy(H.wait_until(function() return #H.children() == 2 end, 5, function() lmp.poll(0.02) end))
      assert.same({1, 2, 3}, p:map(function(x) return x end, {1, 2, 3}, 1))
      p:close(); p:join()
    end)

    it("a task that SIGKILLs its worker: WorkerLost naming the pid and signal", function()
      local p = new_pool(2)
      local t0 = H.now()
      local errs = {}
      local r = p:apply_async(function()
        os.execute("kill -9 " .. require("lmp").current_process().pid)
        nap(5)
      end, {}, function() errs.ok = true end, function(e) errs.err = e end)
      assert.is_true(r:wait(10), "no outcome for a task whose worker was killed")
      assert.is_true(H.now() - t0 < 1.5, "took " .. (H.now() - t0) .. " s")
      local e = raises("WorkerLost", r.get, r, 1)
      assert.truthy(e.message:find("%d%d+"), e.message)
      assert.truthy(e.message:find("9", 1, true) or e.message:find("KILL", 1, true), e.message)
      assert.is_nil(errs.ok)
      assert.is_true(lmp.is_error(errs.err))
      assert.equal("WorkerLost", errs.err.kind)
      assert.equal(5, p:apply(function() return 5 end, {}))
      assert.same({2, 4}, p:map(function(x) return 2 * x end, {1, 2}))
      p:close(); p:join()
    end)

    it("a task that crashes (SIGSEGV): WorkerLost naming the signal", function()
      local p = new_pool(1)
      local r = p:apply_async(function()
        local ffi = require "ffi"
        ffi.cast("int *", 0)[0] = 1
      end, {})
      assert.is_true(r:wait(10))
      local e = raises("WorkerLost", r.get, r, 1)
      assert.truthy(e.message:find("11", 1, true) or e.message:find("SEGV", 1, true), e.message)
      assert.equal(1, p:apply(function() return 1 end, {}))
      p:close(); p:join()
    end)

    it("an idle worker killed from outside is replaced", function()
      local p = new_pool(2)
      assert.is_truthy(H.wait_until(function() return #H.children() == 2 end, 5))
      local victim = H.children()[1]
      os.execute("kill -9 " .. victim)
      assert.is_truthy(H.wait_until(function()
        local k = H.children()
        if #k ~= 2 then return nil end
        for _, pid in ipairs(k) do if pid == victim then return nil end end
        return true
      end, 5, function() lmp.poll(0.05) end), "the killed worker was not replaced")
      local r = p:map(function() nap(0.1); return require("lmp").current_process().pid end, {1, 2, 3, 4}, 1)
      for _, pid in ipairs(r) do assert.are_not.equal(victim, pid) end
      p:close(); p:join()
    end)

    it("map_async where one item kills the worker calls error_callback with WorkerLost", function()
      local p = new_pool(2)
      local err
      local m = p:map_async(function(x)
        if x == 4 then os.execute("kill -9 " .. require("lmp").current_process().pid); nap(5) end
        return x
      end, {1, 2, 3, 4, 5, 6, 7, 8}, 1, nil, function(e) err = e end)
      assert.is_true(m:wait(10))
      assert.is_false(m:successful())
      raises("WorkerLost", m.get, m, 1)
      assert.equal("WorkerLost", err and err.kind)
      assert.same({1, 2, 3}, p:map(function(x) return x end, {1, 2, 3}))
      p:close(); p:join()
    end)

    it("only the task whose worker died fails: tasks queued behind it still run", function()
      local p = new_pool(1)
      local killer = p:apply_async(function()
        nap(0.1)
        os.execute("kill -9 " .. require("lmp").current_process().pid)
        nap(5)
      end, {})
      local others = {}
      for i = 1, 4 do others[i] = p:apply_async(function(x) return x * 10 end, {i}) end
      assert.is_true(killer:wait(10))
      raises("WorkerLost", killer.get, killer, 1)
      for i = 1, 4 do
        assert.is_true(others[i]:wait(10), "task " .. i .. " never finished")
        assert.is_true(others[i]:successful(), "task " .. i .. ": " .. tostring(select(2, pcall(others[i].get, others[i], 0))))
        assert.equal(i * 10, others[i]:get(1))
      end
      p:close(); p:join()
    end)

    it("map where one item kills the worker raises WorkerLost; the pool still works", function()
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local t0 = os.time()
        local ok, e = pcall(pool.map, pool, function(x)
          if x == 5 then os.execute("kill -9 " .. require("lmp").current_process().pid) end
          return x
        end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 1)
        print("first", ok, type(e) == "table" and e.kind or tostring(e))
        print("message", type(e) == "table" and e.message or "")
        ok, e = pcall(pool.map, pool, function(x)
          if x == 2 then os.exit(7) end
          return x
        end, {1, 2, 3}, 1)
        print("second", ok, type(e) == "table" and e.kind or tostring(e))
        print("message2", type(e) == "table" and e.message or "")
        print("again", table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), ","))
        pool:close(); pool:join()
        print("done")
      ]])
      assert.equal(0, r.status, "status " .. tostring(r.status) .. " (124: hung)\n" .. r.stdout .. r.stderr)
      assert.truthy(r.stdout:find("first\tfalse\tWorkerLost", 1, true), r.stdout)
      assert.truthy(r.stdout:find("message\t[^\n]*9") or r.stdout:find("message\t[^\n]*KILL"), r.stdout)
      assert.truthy(r.stdout:find("second\tfalse\tWorkerLost", 1, true), r.stdout)
      assert.truthy(r.stdout:find("message2\t[^\n]*7"), r.stdout)
      assert.truthy(r.stdout:find("again\t2,4,6", 1, true), r.stdout)
      assert.truthy(r.stdout:find("done", 1, true), r.stdout)
      assert.is_true(r.elapsed < 8, "took " .. r.elapsed .. " s")
    end)

    it("imap raises WorkerLost at the index whose worker died", function()
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local seen = {}
        local ok, e = pcall(function()
          for i, v in pool:imap(function(x)
            if x == 4 then os.exit(9) end
            return x
          end, {1, 2, 3, 4, 5, 6}, 1) do
            seen[#seen + 1] = i
          end
        end)
        print("seen", table.concat(seen, ","))
        print("imap", ok, type(e) == "table" and e.kind or tostring(e))
        ok, e = pcall(function()
          for i, v in pool:imap_unordered(function(x)
            if x == 2 then os.execute("kill -9 " .. require("lmp").current_process().pid) end
            return x
          end, {1, 2, 3}, 1) do end
        end)
        print("unordered", ok, type(e) == "table" and e.kind or tostring(e))
        print("again", table.concat(pool:map(function(x) return x + 1 end, {1, 2}), ","))
        pool:terminate(); pool:join()
      ]])
      assert.equal(0, r.status, "status " .. tostring(r.status) .. " (124: hung)\n" .. r.stdout .. r.stderr)
      assert.truthy(r.stdout:find("seen\t1,2,3\n", 1, true), r.stdout)
      assert.truthy(r.stdout:find("imap\tfalse\tWorkerLost", 1, true), r.stdout)
      assert.truthy(r.stdout:find("unordered\tfalse\tWorkerLost", 1, true), r.stdout)
      assert.truthy(r.stdout:find("again\t2,3", 1, true), r.stdout)
    end)
  end)

  describe("task deadlines", function()
    it("apply with {timeout = s}: TimeoutError, the worker is killed and replaced", function()
      local p = new_pool(2)
      local dir = H.tmpdir()
      local t0 = H.now()
      local e = raises("TimeoutError", p.apply, p, function(path)
        local f = io.open(path, "w"); f:write(require("lmp").current_process().pid); f:close()
        nap(10)
        return "late"
      end, {dir .. "/pid"}, {timeout = 0.5})
      local dt = H.now() - t0
      assert.is_true(dt >= 0.45 and dt < 2, "took " .. dt .. " s")
      local pid = read_number(dir .. "/pid")
      assert.is_not_nil(pid)
      assert.is_truthy(H.wait_until(function() return H.dead(pid) end, 2, function() lmp.poll(0.02) end),
        "the worker running the late task is still alive")
      assert.is_truthy(H.wait_until(function() return #H.children() == 2 end, 5, function() lmp.poll(0.02) end))
      -- a task within its deadline is fine
      assert.equal("quick", p:apply(function() nap(0.05); return "quick" end, {}, {timeout = 2}))
      assert.same({1, 2}, p:map(function(x) return x end, {1, 2}))
      p:close(); p:join()
    end)

    it("map with {timeout = s} fails with TimeoutError", function()
      local p = new_pool(2)
      local t0 = H.now()
      raises("TimeoutError", p.map, p, function(x) if x == 2 then nap(10) end; return x end,
             {1, 2, 3}, 1, {timeout = 0.5})
      assert.is_true(H.now() - t0 < 3)
      assert.same({1, 2, 3}, p:map(function(x) return x end, {1, 2, 3}, 1, {timeout = 2}))
      p:close(); p:join()
    end)

    it("task_timeout applies to every task of the pool", function()
      local p = new_pool{processes = 2, task_timeout = 0.5}
      local t0 = H.now()
      local r = p:apply_async(function() nap(10); return 1 end, {})
      assert.is_true(r:wait(5))
      assert.is_true(H.now() - t0 < 2)
      local e = raises("TimeoutError", r.get, r, 1)
      assert.equal("string", type(e.message))
      local cb_err
      local r2 = p:apply_async(function() nap(10) end, {}, nil, function(err) cb_err = err end)
      assert.is_true(r2:wait(5))
      assert.equal("TimeoutError", cb_err and cb_err.kind)
      assert.equal(4, p:apply(function() return 4 end, {}))
      assert.same({1, 2}, p:map(function(x) return x end, {1, 2}))
      p:close(); p:join()
    end)
  end)

  -- A function's upvalues are part of its value: each call sends them as
  -- they are at that call, even to a worker that ran the function before.
  -- One worker, so that every call goes to the worker that has seen f.
  describe("functions reach the workers as they are at each call", function()
    it("map sees changed upvalues and a changed table inside one", function()
      local p = new_pool(1)
      local cfg, k = {m = 2}, 3
      local function f(x) return x * cfg.m + k end
      assert.same({5, 7, 9}, p:map(f, {1, 2, 3}))
      cfg.m, k = 10, 100
      assert.same({110, 120, 130}, p:map(f, {1, 2, 3}))
      cfg.m = 0
      assert.same({100, 100, 100}, p:map(f, {1, 2, 3}, 1))
      p:close(); p:join()
    end)

    it("sees a changed nested table and a changed helper's upvalue", function()
      local p = new_pool(1)
      local deep = {a = {b = {c = 1}}}
      local scale = 1
      local function helper(x) return x * scale end
      local function f(x) return helper(x) + deep.a.b.c end
      assert.same({2, 3}, p:map(f, {1, 2}))
      deep.a.b.c, scale = 50, 10
      assert.same({60, 70}, p:map(f, {1, 2}))
      deep.a.b = {c = -1}
      assert.same({9, 19}, p:map(f, {1, 2}))
      p:close(); p:join()
    end)

    it("sees an upvalue shared by several functions, changed through another", function()
      local p = new_pool(1)
      local n = 1
      local function set(v) n = v end
      local function get() return n end
      local function f(x) return get() + x end
      assert.same({2}, p:map(f, {1}))
      set(41)
      assert.same({42}, p:map(f, {1}))
      -- Both functions of one task still share their upvalue in the worker.
      local function g(x) set(x); return get() end
      assert.same({7, 8}, p:map(g, {7, 8}))
      assert.equal(41, n, "the worker's change does not come back")
      p:close(); p:join()
    end)

    it("apply, apply_async, starmap, map_async, imap and imap_unordered too", function()
      local p = new_pool(1)
      local k = 1
      local function f(x) return x + k end
      local function g(a, b) return a + b + k end
      local function check(want)
        assert.equal(want + 1, p:apply(f, {1}))
        assert.equal(want + 2, p:apply_async(f, {2}):get(10))
        assert.same({want + 3}, p:starmap(g, {{1, 2}}))
        assert.same({want + 4}, p:map_async(f, {4}):get(10))
        for _, r in p:imap(f, {5}) do assert.equal(want + 5, r) end
        for _, r in p:imap_unordered(f, {6}) do assert.equal(want + 6, r) end
      end
      check(1)
      k = 1000
      check(1000)
      p:close(); p:join()
    end)

    it("each call starts from the parent's values, not from what tasks left", function()
      local p = new_pool(1)
      local count = 0
      local function f() count = count + 1; return count end
      assert.same({1}, p:map(f, {0}))
      assert.same({1}, p:map(f, {0}))
      assert.equal(1, p:apply(f, {}))
      assert.equal(0, count)
      p:close(); p:join()
    end)

    it("a function whose upvalue changes in a loop of apply_async calls", function()
      local p = new_pool(2)
      local i = 0
      local function f() return i end
      local rs = {}
      for n = 1, 50 do
        i = n
        rs[n] = p:apply_async(f, {})
      end
      for n = 1, 50 do assert.equal(n, rs[n]:get(10)) end
      p:close(); p:join()
    end)

    it("a function without upvalues is kept, and reaches replacement workers too", function()
      local p = new_pool{processes = 1, maxtasksperchild = 2}
      local function triple(x) return 3 * x end
      local pids = {}
      for i = 1, 7 do
        assert.equal(3 * i, p:apply(triple, {i}, {timeout = 20}))
        assert.equal(3 * i .. "s", p:apply(function(a, b) return 3 * a .. b end, {i, "s"},
                                             {timeout = 20}))
        pids[p:apply(function() return require("lmp").current_process().pid end, {},
                     {timeout = 20})] = true
      end
      assert.same({3, 6, 9}, p:map(triple, {1, 2, 3}, {timeout = 20}))
      assert.same({3, 6}, p:map(math.abs, {-3, -6}, {timeout = 20}))
      local n = 0
      for _ in pairs(pids) do n = n + 1 end
      assert.is_true(n >= 7, "replacement workers: " .. n)
    end)

    it("a Process target takes its upvalues as they are at start()", function()
      local a, b = lmp.Pipe()
      local v = {x = 1}
      local function target(conn) conn:send(v.x) end
      local p1 = lmp.Process(target, b)
      v.x = 2
      p1:start()
      v.x = 3
      local p2 = lmp.Process(target, b)
      p2:start()
      assert.is_true(a:poll(10)); local r1 = a:recv()
      assert.is_true(a:poll(10)); local r2 = a:recv()
      assert.same({2, 3}, {math.min(r1, r2), math.max(r1, r2)})
      assert.equal(0, H.join(p1)); assert.equal(0, H.join(p2))
      p1:close(); p2:close(); a:close(); b:close()
    end)

    it("a replacement worker runs the initializer with its upvalues as they are then", function()
      local v = 1
      local p = new_pool{processes = 1, initializer = function() INIT_V = v end}
      assert.equal(1, p:apply(function() return INIT_V end, {}, {timeout = 10}))
      local pid = p:apply(function() return require("lmp").current_process().pid end, {})
      v = 2
      os.execute("kill -9 " .. pid)
      assert.is_truthy(H.wait_until(function()
        local kids = H.children()
        return #kids == 1 and kids[1] ~= pid
      end, 10, function() lmp.poll(0.02) end), "the worker was not replaced")
      assert.equal(2, p:apply(function() return INIT_V end, {}, {timeout = 10}))
      p:close(); p:join()
    end)
  end)

  describe("maxtasksperchild", function()
    it("= 1 gives a fresh worker for every task", function()
      local p = new_pool{processes = 2, maxtasksperchild = 1}
      local r = p:map(function() return require("lmp").current_process().pid end, {1, 2, 3, 4, 5, 6, 7}, 1)
      assert.equal(7, #r)
      local seen = {}
      for _, pid in ipairs(r) do
        assert.is_nil(seen[pid], "pid " .. pid .. " ran two tasks")
        seen[pid] = true
      end
      p:close(); p:join()
    end)

    it("= 1 with more tasks than workers: close and join complete every task", function()
      -- Workers retire after their one task while the pool is closed: the
      -- pool must still replace them while tasks are waiting.
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool{processes = 3, maxtasksperchild = 1}
        local rs = {}
        for i = 1, 6 do
          rs[i] = pool:apply_async(function(x)
            local t = os.clock() while os.clock() - t < 0.05 do end
            return x * x
          end, {i})
        end
        pool:close(); pool:join()
        for i = 1, 6 do io.write(tostring(rs[i]:get(0)), " ") end
        print()
      ]], {timeout = 20})
      assert.equal(0, r.status, r.stderr)
      assert.equal("1 4 9 16 25 36 \n", r.stdout)
    end)

    it("= 2 lets a worker run at most two tasks", function()
      local p = new_pool{processes = 2, maxtasksperchild = 2}
      local r = p:map(function() return require("lmp").current_process().pid end, {1, 2, 3, 4, 5, 6, 7, 8, 9}, 1)
      local count = {}
      for _, pid in ipairs(r) do count[pid] = (count[pid] or 0) + 1 end
      assert.is_true(count_keys(count) >= 5)
      for pid, n in pairs(count) do assert.is_true(n <= 2, "pid " .. pid .. " ran " .. n .. " tasks") end
      p:close(); p:join()
    end)
  end)

  describe("initializer", function()
    it("runs once per worker with initargs, before its tasks", function()
      local p = new_pool{processes = 2, initializer = function(v, w)
        INIT_VALUE = v .. w
        INIT_COUNT = (INIT_COUNT or 0) + 1
      end, initargs = {"4", "2"}}
      local r = p:map(function() nap(0.02); return {INIT_VALUE, INIT_COUNT} end, {1, 2, 3, 4, 5, 6}, 1)
      for i = 1, 6 do assert.same({"42", 1}, r[i]) end
      p:close(); p:join()
    end)

    it("runs again in replacement workers (maxtasksperchild)", function()
      local p = new_pool{processes = 1, maxtasksperchild = 1,
                         initializer = function() INIT_COUNT = (INIT_COUNT or 0) + 1 end}
      assert.same({1, 1, 1}, p:map(function() return INIT_COUNT end, {1, 2, 3}, 1))
      p:close(); p:join()
    end)

    it("can take a Connection in initargs", function()
      local a, b = lmp.Pipe()
      local p = new_pool{processes = 2, initializer = function(conn) CONN = conn end, initargs = {b}}
      p:map(function(x) CONN:send(x * 10) end, {1, 2, 3}, 1)
      local got = {}
      for _ = 1, 3 do
        assert.is_true(a:poll(5))
        got[#got + 1] = a:recv()
      end
      table.sort(got)
      assert.same({10, 20, 30}, got)
      p:close(); p:join()
      a:close(); b:close()
    end)
  end)

  describe("close, terminate, join", function()
    it("join before close or terminate raises ValueError", function()
      local p = new_pool(1)
      raises("ValueError", p.join, p)
      p:close(); p:join()
    end)

    it("close lets queued work finish; join waits for the workers to end", function()
      local p = new_pool(2)
      assert.is_truthy(H.wait_until(function() return #H.children() == 2 end, 5))
      local kids = H.children()
      local m = p:map_async(function(x) nap(0.1); return x end, {1, 2, 3, 4}, 1)
      p:close()
      p:join()
      assert.is_true(m:ready())
      assert.same({1, 2, 3, 4}, m:get(0))
      assert.is_truthy(all_dead(kids, 2))
      assert.equal(0, #lmp.active_children())
    end)

    it("a closed or terminated pool refuses work with ValueError", function()
      local p = new_pool(1)
      p:close()
      raises("ValueError", p.map, p, function(x) return x end, {1})
      raises("ValueError", p.apply, p, function() end, {})
      raises("ValueError", p.apply_async, p, function() end, {})
      raises("ValueError", p.map_async, p, function(x) return x end, {1})
      raises("ValueError", p.starmap, p, function(x) return x end, {{1}})
      raises("ValueError", p.imap, p, function(x) return x end, {1})
      raises("ValueError", p.imap_unordered, p, function(x) return x end, {1})
      p:join()
      p = new_pool(1)
      p:terminate()
      raises("ValueError", p.map, p, function(x) return x end, {1})
      p:join()
    end)

    it("terminate stops every worker promptly, even in the middle of a task", function()
      local p = new_pool(3)
      assert.is_truthy(H.wait_until(function() return #H.children() == 3 end, 5))
      local kids = H.children()
      local started = H.tmpdir() .. "/started"
      p:apply_async(function(path)
        local f = io.open(path, "w"); f:write("x"); f:close()
        nap(30)
      end, {started})
      assert.is_truthy(H.wait_until(function() return H.slurp(started) end, 5))
      local t0 = H.now()
      p:terminate()
      p:join()
      assert.is_true(H.now() - t0 < 2, "terminate + join took " .. (H.now() - t0) .. " s")
      for _, pid in ipairs(kids) do assert.is_true(H.dead(pid), "worker " .. pid .. " still alive") end
      assert.equal(0, #H.children())
      assert.equal(0, #lmp.active_children())
    end)

    it("close and terminate can be repeated; terminate after close is fine", function()
      local p = new_pool(1)
      p:close()
      p:close()
      p:terminate()
      p:terminate()
      p:join()
      p:join()
    end)

    it("a pool that is garbage collected leaves no process", function()
      local pids
      do
        local p = lmp.Pool(2)
        assert.is_truthy(H.wait_until(function() return #H.children() == 2 end, 5))
        pids = H.children()
        assert.same({1, 2}, p:map(function(x) return x end, {1, 2}))
      end
      collectgarbage(); collectgarbage()
      if jit then jit.flush() end
      collectgarbage(); collectgarbage()
      assert.is_truthy(all_dead(pids, 5), "workers of a collected pool still alive")
    end)

    it("an imap abandoned half way, its loop compiled by the JIT, lets its pool be collected", function()
      -- A trace keeps the constants compiled into it until it is flushed:
      -- an iterator whose pool had been one pinned the pool (seen in the
      -- never-hang matrix, gc x imap, about 1 run in 20).
      local r = run_script([[
        jit.opt.start("hotloop=1", "hotexit=1")
        local lmp = require "lmp"
        local alive = 0
        for round = 1, 5 do
          local pool = lmp.Pool(2)
          local n = 0
          for _, v in pool:imap(function(x)
            local t = os.clock() while os.clock() - t < 0.005 do end return x
          end, function() return 1 end) do
            n = n + 1
            if n == 20 then break end
          end
          local weak = setmetatable({pool}, {__mode = "v"})
          pool = nil
          collectgarbage(); collectgarbage()
          if weak[1] then alive = alive + 1 end
        end
        print("alive after collection: " .. alive)
      ]], {timeout = 30})
      assert.equal(0, r.status, r.stderr)
      assert.truthy(r.stdout:find("alive after collection: 0", 1, true), r.stdout)
    end)

    it("a pool left open at script exit, or collected in a script, leaves no process", function()
      local r = run_script([[
        local lmp = require "lmp"
        local function kids()
          local p = io.popen("cat /proc/" .. lmp.current_process().pid .. "/task/*/children")
          local out = p:read("*a"); p:close()
          return out
        end
        local pool = lmp.Pool(2)
        local r = pool:map(function(x) return x * 2 end, {1, 2, 3})
        assert(r[3] == 6)
        for pid in kids():gmatch("%d+") do
          local f = io.open("/proc/" .. pid .. "/comm")
          local comm = f and f:read("*l")
          if f then f:close() end
          -- (the cat that listed the children may be gone already)
          if comm and comm ~= "cat" and not comm:match("^sh") then print("pid " .. pid) end
        end
        local gc = lmp.Pool(2)
        gc:map(function(x) return x end, {1, 2})
        gc = nil
        -- the open pool stays open; the script ends without closing it
      ]])
      assert.equal(0, r.status, r.stderr)
      local pids = pids_in(r.stdout)
      assert.is_true(#pids >= 2, r.stdout)
      assert.is_truthy(H.wait_until(function()
        for _, p in ipairs(pids) do if H.proc_state(p) then return nil end end
        return true
      end, 3), "workers left behind after the script ended")
      -- and the script did not wait long for them
      assert.is_true(r.elapsed < 5, "script took " .. r.elapsed .. " s")
    end)

    it("a script whose pool is collected mid-run loses its workers", function()
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        pool:map(function(x) return x end, {1, 2})
        local p = io.popen("cat /proc/" .. lmp.current_process().pid .. "/task/*/children")
        local out = p:read("*a"); p:close()
        local pids = {}
        for pid in out:gmatch("%d+") do
          local f = io.open("/proc/" .. pid .. "/comm")
          local comm = f and f:read("*l")
          if f then f:close() end
          -- (the cat that listed the children may be gone already)
          if comm and comm ~= "cat" and not comm:match("^sh") then pids[#pids + 1] = pid end
        end
        pool = nil
        collectgarbage(); collectgarbage()
        local alive
        for _ = 1, 100 do
          alive = 0
          for _, pid in ipairs(pids) do
            local f = io.open("/proc/" .. pid .. "/stat")
            local st = f and f:read("*a"):match("^%d+ %(.*%) (%a)")
            if f then f:close() end
            if st and st ~= "Z" and st ~= "X" then alive = alive + 1 end
          end
          if alive == 0 then break end
          local a, b = lmp.Pipe(); a:poll(0.05); a:close(); b:close()   -- 5 s in all
        end
        print("workers", #pids, "alive", alive)
      ]])
      assert.equal(0, r.status, r.stderr)
      assert.truthy(r.stdout:find("workers\t2\talive\t0", 1, true), r.stdout)
    end)
  end)

  describe("progress", function()
    it("draws nothing when stderr is not a terminal", function()
      local r = run_script([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local list = {}
        for i = 1, 200 do list[i] = i end
        local r = pool:map(function(x) return x + 1 end, list, {progress = true})
        local r2 = pool:map(function(x) return x + 1 end, list, 10, {progress = true})
        local n = 0
        for i, v in pool:imap(function(x) return x end, list, 5, {progress = true}) do n = n + 1 end
        for i, v in pool:imap_unordered(function(x) return x end, list, {progress = true}) do n = n + 1 end
        pool:close(); pool:join()
        print("results", #r, r[200], #r2, r2[1], n)
      ]])
      assert.equal(0, r.status, r.stderr)
      assert.truthy(r.stdout:find("results\t200\t201\t200\t2\t400", 1, true), r.stdout)
      assert.equal("", r.stderr)
    end)

    it("draws a progress bar on a terminal", function()
      local dir = H.tmpdir()
      local script = H.write(dir .. "/bar.lua", [[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        local list = {}
        for i = 1, 40 do list[i] = i end
        local r = pool:map(function(x)
          local l = require "lmp"; local c, d = l.Pipe(); c:poll(0.02); c:close(); d:close()
          return x
        end, list, 1, {progress = true})
        pool:close(); pool:join()
        io.stdout:write("\nMAPPED ", #r, "\n")
      ]])
      local r = H.pty({script}, {""}, {timeout = 15})
      assert.truthy(r.stdout:find("MAPPED 40", 1, true), r.stdout)
      -- before the result, the bar showed the count of items done
      local bar = r.stdout:match("^(.-)MAPPED") or ""
      assert.truthy(bar:find("40", 1, true), r.stdout)
    end)
  end)
end)
