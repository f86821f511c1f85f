-- Queues (SPEC section 5, conventions of section 1, details of section 12):
-- lmp.Queue, lmp.JoinableQueue and lmp.SimpleQueue -- FIFO order, nil and
-- other values that must come back exactly, qsize/empty/full, maxsize
-- back-pressure and timeouts, many producers and consumers in many
-- processes, items of 100 MB and more, what survives a producer or a
-- consumer that exits or is killed at the worst moment, task_done/join,
-- queues in lmp.connection.wait, as Process args and Pool initargs, pool
-- callbacks served while a get or put waits, and close().
--
-- Every blocking call has a timeout (get(10), join(10), ...), so that a bug
-- fails a spec instead of hanging the run.  A SimpleQueue's get() takes no
-- timeout in the SPEC: where it could block, it runs in a child that the
-- spec joins with a bound.
local H = require "spec.support.helpers"
local join, finish, took_about, took_little, with_pool = H.join, H.finish, H.took_about, H.took_little, H.with_pool
local V = require "spec.support.values"
local lmp = require "lmp"

local raises = H.raises

local MiB = 2 ^ 20
-- The most bytes an item may take encoded (runtime/lmp_queue.c).
local ITEM_LIMIT = 2 ^ 30

local csleep, spawn = H.csleep, H.spawn

-- All the results of a call: {n = count, ...}.
local function pack(...) return {n = select("#", ...), ...} end

local function assert_same(expected, got, what)
  local ok, why = V.deep_equal(expected, got)
  assert.is_true(ok, ("%s: expected %s, got %s (%s)"):format(what, V.show(expected), V.show(got), tostring(why)))
end

-- A string of about `mb` MiB whose bytes vary, different for each `salt`.
-- Self-contained, so that a child builds the same string.
local function big_string(mb, salt)
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char((i * 7 + salt * 13) % 256) end
  local block = table.concat(bytes):rep(16)  -- 4 KiB
  return "<" .. salt .. ">" .. block:rep(mb * 256) .. "<end " .. salt .. ">"
end

-- A 1 MiB string that starts with its number.
local function mib_item(i, filler)
  return ("%08d"):format(i) .. filler
end

-- The values that must come back exactly.
local function sample_values()
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  local cycle = {name = "cycle"}
  cycle.self = cycle
  local deep = {}
  local t = deep
  for _ = 1, 200 do t.next = {}; t = t.next end
  t.leaf = "bottom"
  return {
    0, 1, -1, 42, 2 ^ 31, -2 ^ 31 - 1, 2 ^ 53, -2 ^ 53, 2 ^ 63, 0.1, 1 / 3, -0.0,
    1 / 0, -1 / 0, 0 / 0, 5e-324, 1.7976931348623157e308,
    "", "a", table.concat(all), "\0\0\0", ("\255\0"):rep(5000), "h\195\169llo",
    true, false, lmp.null,
    {}, {1, 2, 3}, {1, nil, 3}, {"a", {b = {c = {d = "deep"}}}, n = 3},
    {[1.5] = "float key", [true] = "bool key", [-3] = "negative", [0] = "zero"},
    {nan = 0 / 0, inf = 1 / 0, ninf = -1 / 0, nzero = -0.0},
    cycle, deep,
  }
end

-- A child that copies n items from `from` to `to`, in order, nil included.
-- (get() without a timeout, as a SimpleQueue has it: the child is joined
-- with a bound.)
local function copier(from, to, n)
  for _ = 1, n do
    local r = {from:get()}
    if r[1] == nil and r[2] ~= nil then error("copier: get: " .. tostring(r[2])) end
    assert(to:put(r[1]))
  end
end

-- get() from a queue of any class (a SimpleQueue's get has no timeout),
-- waiting at most `timeout` seconds for an item; this process must be the
-- only consumer.
local function bounded_get(q, timeout)
  assert.is_true(H.wait_until(function() return not q:empty() end, timeout or 10),
    "nothing arrived within " .. (timeout or 10) .. " s")
  return q:get()
end

describe("lmp queues", function()
  H.check_leaks()

  -- =========================================================================
  for _, cname in ipairs({"Queue", "JoinableQueue", "SimpleQueue"}) do
    local function new(...) return lmp[cname](...) end

    describe(cname, function()
      it("is first in, first out", function()
        local q = new()
        for i = 1, 1000 do assert.is_true(q:put(i)) end
        for i = 1, 1000 do assert.equal(i, q:get()) end
        assert.is_true(q:empty())
        -- interleaved
        q:put("a"); q:put("b")
        assert.equal("a", q:get())
        q:put("c")
        assert.equal("b", q:get())
        assert.equal("c", q:get())
        assert.is_true(q:empty())
        q:close()
      end)

      it("carries nil items, several in a row and between others", function()
        local q = new()
        local items = {n = 8, nil, nil, nil, 1, nil, "x", nil, false}
        for i = 1, items.n do assert.is_true(q:put(items[i])) end
        assert.is_false(q:empty())
        for i = 1, items.n do
          local r = pack(q:get())
          assert.equal(1, r.n, "get() of item " .. i .. " returned " .. r.n .. " values")
          assert.equal(items[i], r[1], "item " .. i)
        end
        assert.is_true(q:empty())
        -- put(nil) with no argument at all
        assert.is_true(q:put())
        local r = pack(q:get())
        assert.equal(1, r.n)
        assert.is_nil(r[1])
        q:close()
      end)

      it("gives back every kind of value exactly, here and through a child", function()
        local q, back = new(), new()
        local values = sample_values()
        for i = 1, #values do q:put(values[i]) end
        for i = 1, #values do
          assert_same(values[i], q:get(), "in this process, value " .. i)
        end
        -- a function by value, with its upvalues
        local k = 10
        q:put(function(x) return x + k end)
        assert.equal(15, q:get()(5))
        -- shared references stay shared within an item
        local shared = {1, 2}
        q:put({shared, shared})
        local got = q:get()
        assert.is_true(rawequal(got[1], got[2]))
        -- through a child and back
        local p = spawn(copier, q, back, #values + 2)
        for i = 1, #values do q:put(values[i]) end
        q:put(function(x) return x * k end)
        q:put({shared, shared})
        for i = 1, #values do
          assert_same(values[i], bounded_get(back), "through a child, value " .. i)
        end
        assert.equal(50, bounded_get(back)(5))
        got = bounded_get(back)
        assert.is_true(rawequal(got[1], got[2]))
        assert.same({1, 2}, got[1])
        finish(p)
        assert.is_true(q:empty())
        assert.is_true(back:empty())
        q:close(); back:close()
      end)

      it("empty() follows puts and gets", function()
        local q = new()
        assert.is_true(q:empty())
        q:put(nil)
        assert.is_false(q:empty())
        q:put(1)
        q:get()
        assert.is_false(q:empty())
        q:get()
        assert.is_true(q:empty())
        q:close()
      end)

      it("refuses a value that cannot be encoded with a CodecError, and goes on", function()
        local q = new()
        q:put(1)
        local e = raises("CodecError", q.put, q, {ok = 1, bad = coroutine.create(print)})
        assert.matches("bad", tostring(e))
        raises("CodecError", q.put, q, setmetatable({}, {}))
        q:put(2)
        assert.equal(1, q:get())
        assert.equal(2, q:get())
        assert.is_true(q:empty())
        q:close()
      end)

      it("a get blocked in another process returns as soon as this process puts", function()
        local q, out = new(), lmp.Queue()
        local p = spawn(function(q_, out_)
          out_:put("waiting")
          local v = q_:get()  -- SimpleQueue has no timeout: joined with a bound
          out_:put(v)
        end, q, out)
        assert.equal("waiting", out:get(10))
        csleep(0.3)
        local t0 = H.now()
        q:put("wake")
        assert.equal("wake", out:get(10))
        assert.is_true(H.now() - t0 < 1.5, "the child's get woke late")
        finish(p)
        q:close(); out:close()
      end)

      it("close(): later use raises ValueError; close() again and join_thread() do not", function()
        local q = new()
        q:put(1)
        q:close()
        local calls = {
          put = {1}, get = {}, empty = {},
          put_nowait = {1}, get_nowait = {}, qsize = {}, full = {},
          task_done = {}, join = {0},
        }
        local n = 0
        for _, m in ipairs({"put", "get", "empty", "put_nowait", "get_nowait", "qsize",
                            "full", "task_done", "join"}) do
          if q[m] then
            n = n + 1
            local e = raises("ValueError", q[m], q, unpack(calls[m]))
            assert.matches("closed", e.message)
          end
        end
        assert.is_true(n >= 3)
        assert.is_nil(q:close())
        if q.join_thread then
          assert.is_nil(q:join_thread())
          q:cancel_join_thread()
        end
        assert.matches("closed", tostring(q))
        raises("ValueError", lmp.connection.wait, {q}, 0)
      end)
    end)
  end

  -- =========================================================================
  for _, cname in ipairs({"Queue", "JoinableQueue"}) do
    local function new(...) return lmp[cname](...) end

    describe(cname .. " with maxsize", function()
      it("qsize(), empty() and full() count the items", function()
        local q = new(3)
        assert.equal(0, q:qsize())
        assert.is_true(q:empty())
        assert.is_false(q:full())
        q:put("a")
        assert.equal(1, q:qsize())
        assert.is_false(q:empty())
        assert.is_false(q:full())
        q:put(nil); q:put("c")
        assert.equal(3, q:qsize())
        assert.is_true(q:full())
        q:get()
        assert.equal(2, q:qsize())
        assert.is_false(q:full())
        q:close()
        -- unbounded: never full
        local u = new()
        for i = 1, 100 do u:put(i) end
        assert.equal(100, u:qsize())
        assert.is_false(u:full())
        u:close()
      end)

      it("takes maxsize positionally or in an options table", function()
        for _, q in ipairs({new(2), new{maxsize = 2}}) do
          assert.is_true(q:put(1, 0))
          assert.is_true(q:put(2, 0))
          assert.is_true(q:full())
          local r = pack(q:put(3, 0))
          assert.same({n = 2, nil, "full"}, r)
          q:close()
        end
        -- 0 and negative sizes mean no limit, as in Python
        for _, q in ipairs({new(0), new(-1), new{}}) do
          for i = 1, 50 do assert.is_true(q:put(i, 0)) end
          assert.is_false(q:full())
          q:close()
        end
      end)

      it("a maxsize that is not an integer is a TypeError", function()
        for _, bad in ipairs({2.5, "2", true, 0 / 0, {maxsize = 1.5}, {maxsize = "3"}}) do
          raises("TypeError", new, bad)
        end
      end)

      it("put on a full queue: nil, \"full\" after about its timeout; put_nowait and timeout 0 at once", function()
        local q = new(1)
        q:put("x")
        local t0 = H.now()
        local r = pack(q:put("y", 0.3))
        took_about(t0, 0.3, "put(v, 0.3) on a full queue")
        assert.same({n = 2, nil, "full"}, r)
        t0 = H.now()
        r = pack(q:put_nowait("y"))
        took_little(t0, "put_nowait on a full queue")
        assert.same({n = 2, nil, "full"}, r)
        t0 = H.now()
        r = pack(q:put("y", 0))
        took_little(t0, "put(v, 0) on a full queue")
        assert.same({n = 2, nil, "full"}, r)
        -- nothing was added by the failed puts
        assert.equal(1, q:qsize())
        assert.equal("x", q:get(0))
        assert.is_true(q:empty())
        q:close()
      end)

      it("get on an empty queue: nil, \"empty\" after about its timeout; get_nowait and timeout 0 at once", function()
        local q = new(2)
        local t0 = H.now()
        local r = pack(q:get(0.3))
        took_about(t0, 0.3, "get(0.3) on an empty queue")
        assert.same({n = 2, nil, "empty"}, r)
        t0 = H.now()
        r = pack(q:get_nowait())
        took_little(t0, "get_nowait on an empty queue")
        assert.same({n = 2, nil, "empty"}, r)
        t0 = H.now()
        r = pack(q:get(0))
        took_little(t0, "get(0) on an empty queue")
        assert.same({n = 2, nil, "empty"}, r)
        -- a nil item is told apart by the second result
        q:put(nil)
        r = pack(q:get_nowait())
        assert.equal(1, r.n)
        assert.is_nil(r[1])
        -- put_nowait and get_nowait on a queue with room and items
        assert.is_true(q:put_nowait(7))
        assert.equal(7, q:get_nowait())
        -- math.huge blocks: with an item there, returns it
        q:put(8)
        assert.equal(8, q:get(math.huge))
        assert.is_true(q:put(9, math.huge))
        assert.equal(9, q:get(10))
        q:close()
      end)

      it("a timeout that is not a number is a TypeError", function()
        local q = new(1)
        for _, bad in ipairs({"1", {}, true, 0 / 0}) do
          raises("TypeError", q.put, q, 1, bad)
          raises("TypeError", q.get, q, bad)
        end
        assert.is_true(q:empty(), "a refused put added an item")
        q:put(1)
        for _, bad in ipairs({"1", {}, true, 0 / 0}) do
          raises("TypeError", q.put, q, 2, bad)  -- full, but the argument is wrong first
        end
        assert.equal(1, q:get(0))
        if cname == "JoinableQueue" then
          raises("TypeError", q.join, q, "1")
          raises("TypeError", q.join, q, {})
        end
        q:close()
      end)

      it("a put blocked on a full queue proceeds as soon as another process gets an item", function()
        local q, out = new(1), lmp.Queue()
        q:put("first")
        local p = spawn(function(q_, out_, nap)
          nap(0.4)
          out_:put(q_:get(10))
        end, q, out, csleep)
        local t0 = H.now()
        assert.is_true(q:put("second", 10))
        local el = H.now() - t0
        assert.is_true(el >= 0.3, ("the put returned after %.3f s, before any get"):format(el))
        assert.is_true(el < 0.4 + H.SLACK, ("the put returned %.3f s after it started"):format(el))
        assert.equal("first", out:get(10))
        assert.equal("second", q:get(10))
        finish(p)
        q:close(); out:close()
      end)

      it("a get blocked on an empty queue returns as soon as another process puts", function()
        local q = new(1)
        local p = spawn(function(q_, nap)
          nap(0.4)
          q_:put({"late", 1})
        end, q, csleep)
        local t0 = H.now()
        assert.same({"late", 1}, q:get(10))
        local el = H.now() - t0
        assert.is_true(el >= 0.3, ("the get returned after %.3f s, before the put"):format(el))
        assert.is_true(el < 0.4 + H.SLACK, ("the get returned %.3f s after it started"):format(el))
        finish(p)
        q:close()
      end)

      it("a small maxsize keeps a producer and a consumer in step: every item in order", function()
        local q = new(4)
        local p = spawn(function(q_, n)
          for i = 1, n do assert(q_:put(i, 10), "put timed out") end
          assert(q_:put("done", 10))
        end, q, 20000)
        local max = 0
        for i = 1, 20000 do
          local v = q:get(10)
          assert.equal(i, v)
          local n = q:qsize()
          if n > max then max = n end
        end
        assert.equal("done", q:get(10))
        assert.is_true(max <= 4, "qsize() went up to " .. max .. " with maxsize 4")
        finish(p)
        q:close()
      end)
    end)
  end

  -- =========================================================================
  describe("SimpleQueue across processes", function()
    it("a child's put reaches the parent, and the parent's put the child", function()
      local up, down = lmp.SimpleQueue(), lmp.SimpleQueue()
      local p = spawn(function(up_, down_)
        up_:put({from = "child"})
        -- waits for the parent's put (the child is joined with a bound)
        local n, v = (function(...) return select("#", ...), ... end)(down_:get())
        up_:put(n == 1 and v == nil and "nil" or "other")
      end, up, down)
      assert.same({from = "child"}, bounded_get(up))
      down:put(nil)
      finish(p)
      assert.is_false(up:empty())
      assert.equal("nil", up:get())
      assert.is_true(up:empty())
      assert.is_true(down:empty())
      up:close(); down:close()
    end)
  end)

  -- =========================================================================
  describe("many producers and consumers", function()
    it("one consumer sees each producer's items in exactly the order they were put", function()
      local q = lmp.Queue()
      local N, P = 3000, 3
      local ps = {}
      for id = 1, P do
        ps[id] = spawn(function(q_, id_, n)
          for s = 1, n do assert(q_:put({id_, s}, 10)) end
        end, q, id, N)
      end
      local last = {}
      for id = 1, P do last[id] = 0 end
      for _ = 1, N * P do
        local v = q:get(10)
        assert.is_table(v)
        local id, s = v[1], v[2]
        assert.equal(last[id] + 1, s, ("producer %d: item %d after %d"):format(id, s, last[id]))
        last[id] = s
      end
      for id = 1, P do assert.equal(N, last[id]) end
      assert.same({n = 2, nil, "empty"}, pack(q:get(0)))
      for _, p in ipairs(ps) do finish(p) end
      q:close()
    end)

    it("4 producers x 4 consumers x 100000 items: each item exactly once, in order per producer", function()
      local N, P, C = 100000, 4, 4
      local q, res = lmp.Queue(), lmp.Queue()
      local seen = lmp.RawArray("B", P * N)
      local ps = {}
      for c = 1, C do
        ps[#ps + 1] = spawn(function(q_, res_, seen_, n, np)
          local last, cnt, sum, bad = {}, {}, {}, {}
          for i = 1, np do last[i], cnt[i], sum[i] = 0, 0, 0 end
          while true do
            local v, why = q_:get(30)
            if v == nil then
              if why ~= nil then error("consumer: get: " .. tostring(why)) end
              break  -- the nil item: no more
            end
            local id, s = v[1], v[2]
            if s <= last[id] then bad[#bad + 1] = ("p%d: %d after %d"):format(id, s, last[id]) end
            last[id] = s
            cnt[id] = cnt[id] + 1
            sum[id] = sum[id] + s
            local k = (id - 1) * n + s
            seen_[k] = seen_[k] + 1
          end
          assert(res_:put({consumer = c, cnt = cnt, sum = sum, bad = bad}, 10))
        end, q, res, seen, N, P)
      end
      local t0 = H.now()
      for id = 1, P do
        ps[#ps + 1] = spawn(function(q_, id_, n)
          for s = 1, n do assert(q_:put({id_, s}, 30)) end
        end, q, id, N)
      end
      for i = C + 1, C + P do finish(ps[i], 60) end
      for _ = 1, C do q:put(nil) end  -- one end marker per consumer
      for i = 1, C do finish(ps[i], 60) end
      local elapsed = H.now() - t0
      local cnt, sum = {}, {}
      for id = 1, P do cnt[id], sum[id] = 0, 0 end
      for _ = 1, C do
        local r = res:get(10)
        assert.is_table(r, "a consumer did not report")
        assert.same({}, r.bad, "consumer " .. r.consumer .. " saw a producer's items out of order")
        for id = 1, P do
          cnt[id] = cnt[id] + r.cnt[id]
          sum[id] = sum[id] + r.sum[id]
        end
      end
      for id = 1, P do
        assert.equal(N, cnt[id], "items of producer " .. id)
        assert.equal(N * (N + 1) / 2, sum[id], "sum of producer " .. id .. "'s items")
      end
      local wrong = 0
      for k = 1, P * N do
        if seen[k] ~= 1 then wrong = wrong + 1 end
      end
      assert.equal(0, wrong, "items not seen exactly once")
      assert.is_true(q:empty())
      assert.equal(0, q:qsize())
      assert.is_true(elapsed < 60, ("%.1f s"):format(elapsed))
      q:close(); res:close()
    end)
  end)

  -- =========================================================================
  describe("memory", function()
    -- The resident kB of the queue's mapping (the only lmp mapping of a
    -- gigabyte or more that this spec made last).
    local function queue_rss_kb()
      local rss, in_queue
      for line in io.lines("/proc/self/smaps") do
        local from, to = line:match("^(%x+)-(%x+) ")
        if from then
          in_queue = line:find("/memfd:lmp", 1, true)
                     and tonumber(to, 16) - tonumber(from, 16) >= 2 ^ 30
        elseif in_queue then
          local kb = line:match("^Rss:%s+(%d+) kB")
          if kb then rss = tonumber(kb) end
        end
      end
      return rss
    end

    it("a queue drained as fast as it is filled stays on a few pages", function()
      local q = lmp.SimpleQueue()
      local item = ("x"):rep(1000)
      for _ = 1, 40000 do  -- 40 MB through an 8 MiB ring, five laps
        q:put(item)
        assert(q:get(1) == item)
      end
      local rss = queue_rss_kb()
      assert.is_truthy(rss, "the queue's mapping was not found")
      assert.is_true(rss <= 1024, "the queue keeps " .. rss .. " kB resident")
      q:close()
    end)
  end)

  describe("frames of FFI memory (the pool's frames of numbers)", function()
    local ffi = require "ffi"
    local core = H.core()
    local bytes = ffi.typeof("uint8_t[?]")

    local function frame(n, first)
      local f = bytes(n)
      for i = 0, n - 1 do f[i] = (first + i) % 256 end
      return f
    end

    it("go as bytes from FFI memory, and come into a buffer that holds them", function()
      local q = lmp.SimpleQueue()
      local f = frame(100, 7)
      assert.is_true(core.queue_put(q._seg, f, nil, 100))
      for i = 0, 99 do f[i] = 0 end  -- the item was copied at the put
      local buf = bytes(128)
      local v, len = core.queue_get(q._seg, 1, true, buf, 128)
      assert.equal(buf, v)
      assert.equal(100, len)
      for i = 0, 99 do assert.equal((7 + i) % 256, buf[i]) end
      assert.equal(0, buf[100])  -- nothing past the frame
      q:close()
    end)

    it("come as a string when the buffer is too small, or there is none", function()
      local q = lmp.SimpleQueue()
      assert.is_true(core.queue_put(q._seg, frame(300, 1), nil, 300))
      assert.is_true(core.queue_put(q._seg, frame(3, 250), nil, 3))
      local buf = bytes(64)
      local v, len = core.queue_get(q._seg, 1, true, buf, 64)
      assert.is_string(v)
      assert.is_nil(len)
      assert.equal(300, #v)
      assert.equal(string.char(1, 2, 3), v:sub(1, 3))
      assert.equal(string.char(250, 251, 252), core.queue_get(q._seg, 1))
      -- the queue's own get (the codec's items) reads them as strings too
      assert.is_true(core.queue_put(q._seg, frame(2, 65), nil, 2))
      assert.equal("AB", q:get())
      q:close()
    end)

    it("of zero bytes, and a bad length is a ValueError", function()
      local q = lmp.SimpleQueue()
      assert.is_true(core.queue_put(q._seg, frame(8, 0), nil, 0))
      local buf = bytes(8)
      local v, len = core.queue_get(q._seg, 1, true, buf, 8)
      assert.equal(buf, v)
      assert.equal(0, len)
      for _, bad in ipairs({-1, 0 / 0, 2 ^ 31}) do
        raises("ValueError", core.queue_put, q._seg, frame(8, 0), nil, bad)
      end
      assert.is_true(q:empty())
      q:close()
    end)

    it("cross to another process intact", function()
      local q, back = lmp.Queue(), lmp.Queue()
      local p = spawn(function(q_, back_)
        local v = q_:get(10)
        local sum = 0
        for i = 1, #v do sum = sum + v:byte(i) end
        back_:put({#v, sum})
      end, q, back)
      local n, sum = 100000, 0
      local f = frame(n, 3)
      for i = 0, n - 1 do sum = sum + f[i] end
      assert.is_true(core.queue_put(q._seg, f, nil, n))
      assert.same({n, sum}, back:get(10))
      finish(p)
      q:close(); back:close()
    end)
  end)

  describe("large items", function()
    it("a 100 MB string goes to a child and comes back from it, byte for byte", function()
      local q, back = lmp.Queue(), lmp.Queue()
      local p = spawn(function(q_, back_)
        local s = q_:get(30)
        assert(type(s) == "string", "the child got " .. type(s))
        assert(back_:put({len = #s, head = s:sub(1, 64), tail = s:sub(-64)}, 10))
        assert(back_:put(s, 30))
      end, q, back)
      local big = big_string(100, 1)
      assert.is_true(#big > 100 * MiB)
      assert.is_true(q:put(big, 30))
      local r = back:get(30)
      assert.is_table(r, "the child did not report")
      assert.equal(#big, r.len)
      assert.equal(big:sub(1, 64), r.head)
      assert.equal(big:sub(-64), r.tail)
      local got = back:get(30)
      assert.is_string(got)
      assert.equal(#big, #got)
      assert.is_true(got == big, "the string came back different")
      finish(p)
      assert.is_true(q:empty())
      assert.is_true(back:empty())
      -- inside a table (through the codec), this process only
      assert.is_true(q:put({data = big, n = 1}, 30))
      got = q:get(30)
      assert.is_true(got.data == big, "the string in a table came back different")
      assert.equal(1, got.n)
      q:close(); back:close()
    end)

    it("1 MiB items: 150 of them through a queue that never empties, each one whole", function()
      local filler = big_string(1, 3):sub(1, MiB - 8)
      local big = big_string(12, 9)
      local q = lmp.Queue()
      -- 5 in the queue at all times while 150 go through: the positions
      -- go round the ring (past its end and back to its start) many times.
      -- After the 12th get the 5 waiting items lie across the end of the
      -- first ring (8 MiB in runtime/lmp_queue.c), and a 12 MiB item goes
      -- in: the ring must grow without breaking them.
      local expect, first, last = {}, 1, 0
      local put_i, N = 0, 150
      local function put_next()
        put_i = put_i + 1
        last = last + 1
        expect[last] = put_i
        assert.is_true(q:put(mib_item(put_i, filler), 10))
      end
      for _ = 1, 5 do put_next() end
      for get_i = 1, N + 1 do
        local want = expect[first]
        expect[first] = nil
        first = first + 1
        local v = q:get(10)
        if want == "big" then
          assert.is_true(v == big, "the 12 MiB item differs")
        else
          assert.equal(MiB, #v)
          assert.is_true(v == mib_item(want, filler), "item " .. want .. " differs")
        end
        if put_i < N then put_next() end
        if get_i == 12 then
          last = last + 1
          expect[last] = "big"
          assert.is_true(q:put(big, 10))
          assert.equal(6, q:qsize())
        end
      end
      assert.equal(last + 1, first)
      assert.is_true(q:empty())
      -- and from a child, 40 of them while the parent reads
      local p = spawn(function(q_, mk, fill)
        for i = 1, 40 do assert(q_:put(mk(i, fill), 10)) end
      end, q, mib_item, filler)
      for i = 1, 40 do
        local v = q:get(10)
        assert.is_true(v == mib_item(i, filler), "item " .. i .. " from the child differs")
      end
      finish(p)
      assert.is_true(q:empty())
      q:close()
    end)

    it("a child that put 40 MiB of items can be joined before they are read (no feeder pitfall)", function()
      -- SPEC 5: a put that returned is in the queue, and an unbounded
      -- queue (maxsize 0, as in Python) does not block a put: so joining a
      -- producer before reading what it put must not deadlock.
      local q = lmp.Queue()
      local filler = ("f"):rep(MiB - 8)
      local p = spawn(function(q_, mk, fill)
        for i = 1, 40 do
          local ok, why = q_:put(mk(i, fill), 5)
          assert(ok, "put " .. i .. " of 40 (1 MiB each) on an unbounded queue: " .. tostring(why))
        end
      end, q, mib_item, filler)
      local code = p:join(20)
      if code == nil then p:kill(); p:join(5) end
      assert.equal(0, code, "the producer did not finish its puts before anyone read")
      local n = 0
      while true do
        local v = q:get(0)
        if v == nil then break end
        n = n + 1
        assert.is_true(v == mib_item(n, filler), "item " .. n .. " differs")
      end
      assert.equal(40, n)
      q:close()
    end)

    it("an item over the limit (1 GiB encoded) is a ValueError that says so; the queue goes on", function()
      -- The limit is LMP_QUEUE_RING in runtime/lmp_queue.c (the brief said
      -- 256 MiB; the runtime moved it to 1 GiB).  The item is a table of the
      -- same 1 MiB string: cheap to make, 1 MiB more than the limit encoded.
      local q = lmp.Queue()
      -- (the limit of the queue's own ring: the item goes by value, not as
      -- handles to shared buffers, lua/lmp/buffers.lua)
      local threshold = lmp.codec.share_threshold
      finally(function() lmp.codec.share_threshold = threshold end)
      lmp.codec.share_threshold = math.huge
      q:put("before")
      local s = ("z"):rep(MiB)
      local t = {}
      for i = 1, ITEM_LIMIT / MiB + 1 do t[i] = s end
      local e = raises("ValueError", q.put, q, t)
      assert.is_truthy(e.message:find("%d%d%d%d%d"), "the message names no byte count: " .. e.message)
      assert.is_truthy(e.message:find("at most"), "the message does not say the limit: " .. e.message)
      t = nil
      collectgarbage()
      assert.equal(1, q:qsize())
      assert.equal("before", q:get(0))
      assert.same({n = 2, nil, "empty"}, pack(q:get(0)))
      q:put("after")
      assert.equal("after", q:get(0))
      q:close()
    end)
  end)

  -- =========================================================================
  describe("durability and crashes", function()
    it("items put by a child that calls os.exit(0) right after are all there", function()
      local q = lmp.Queue()
      local p = spawn(function(q_)
        for i = 1, 100 do q_:put(i) end
        q_:put(("m"):rep(1024 * 1024))
        q_:put(nil)
        os.exit(0)
      end, q)
      assert.equal(0, join(p))
      assert.equal(102, q:qsize())
      for i = 1, 100 do assert.equal(i, q:get(0)) end
      assert.equal(MiB, #q:get(0))
      local r = pack(q:get(0))
      assert.same({n = 1}, r)
      assert.same({n = 2, nil, "empty"}, pack(q:get(0)))
      q:close()
    end)

    it("items put by a child that is SIGKILLed right after the put returned are all there", function()
      local q, done = lmp.Queue(), lmp.Event()
      local p = spawn(function(q_, done_, nap)
        for i = 1, 100 do q_:put({i = i}) end
        q_:put(("k"):rep(3 * 1024 * 1024))
        done_:set()
        nap(30)  -- until killed
      end, q, done, csleep)
      assert.is_true(done:wait(10))
      p:kill()
      assert.equal(-9, join(p))
      assert.equal(101, q:qsize())
      for i = 1, 100 do assert.same({i = i}, q:get(0)) end
      assert.equal(3 * MiB, #q:get(0))
      assert.is_true(q:empty())
      -- and the queue works on
      assert.is_true(q:put("more", 1))
      assert.equal("more", q:get(1))
      q:close(); done:close()
    end)

    it("a consumer killed while blocked in get leaves the queue working for the others", function()
      local q, out, ready = lmp.Queue(), lmp.Queue(), lmp.Semaphore(0)
      local consumer = function(q_, out_, ready_, tag)
        ready_:release()
        local v, why = q_:get(30)
        out_:put({tag, v, why})
      end
      local victim = spawn(consumer, q, out, ready, "victim")
      local other = spawn(consumer, q, out, ready, "other")
      assert.is_true(ready:acquire(10)); assert.is_true(ready:acquire(10))
      csleep(0.3)  -- both in get, asleep
      victim:kill()
      assert.equal(-9, join(victim))
      assert.is_true(q:put("for the other", 1))
      local r = out:get(10)
      assert.same({"other", "for the other"}, r)
      finish(other)
      assert.is_true(q:empty())
      q:put(1); q:put(2)
      assert.equal(1, q:get(1))
      assert.equal(2, q:get(1))
      assert.is_true(out:empty())
      q:close(); out:close(); ready:close()
    end)

    it("a consumer killed while it decodes a 100 MB item loses nothing and duplicates nothing", function()
      -- The item is {100 MB string, a module}: a module travels by name and
      -- is require()d by the receiver, after the string is decoded.  In
      -- the child, that module tells the parent and sleeps: the child is
      -- killed in the middle of its get, for sure.
      local dir = H.tmpdir()
      local modname = ("lmpspec_qslow_%d"):format(lmp.current_process().pid)
      H.write(dir .. "/" .. modname .. ".lua", [[
local ev = rawget(_G, "LMPSPEC_DECODING")
if ev then
  ev:set()
  local ffi = require "ffi"
  pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")
  ffi.C.poll(nil, 0, 30000)
end
return {}
]])
      local mod = {}
      package.loaded[modname] = mod
      local ok, err = pcall(function()
        local q, decoding = lmp.Queue(), lmp.Event()
        local big = big_string(100, 4)
        assert.is_true(q:put({big, mod}, 30))
        assert.is_true(q:put("second", 10))
        local p = spawn(function(q_, ev, path, name)
          package.path = path .. "/?.lua;" .. package.path
          package.loaded[name] = nil  -- a forked child has the parent's
          _G.LMPSPEC_DECODING = ev
          q_:get(30)
          os.exit(3)  -- the get must not finish
        end, q, decoding, dir, modname)
        assert.is_true(decoding:wait(20), "the child never reached the decoding of the item")
        p:kill()
        assert.equal(-9, join(p))
        assert.equal(2, q:qsize())
        assert.is_false(q:empty())
        local v = q:get(10)
        assert.is_table(v, "the big item is gone")
        assert.equal(#big, #v[1])
        assert.is_true(v[1] == big, "the big item came back different")
        assert.is_true(rawequal(mod, v[2]))
        v = nil
        assert.equal("second", q:get(10))
        assert.same({n = 2, nil, "empty"}, pack(q:get(0.1)))
        -- another process uses it normally
        local c = spawn(function(q_) assert(q_:put("from another child", 10)) end, q)
        finish(c)
        assert.equal("from another child", q:get(10))
        q:put("back")
        c = spawn(function(q_) assert(q_:get(10) == "back") end, q)
        finish(c)
        assert.is_true(q:empty())
        q:close(); decoding:close()
      end)
      package.loaded[modname] = nil
      if not ok then error(err, 0) end
    end)

    -- A child that puts a `mb` MB string and is SIGKILLed in the middle of
    -- that put.  While the child holds the queue for its put, put_nowait
    -- fails: the parent probes with small items and kills the child at once
    -- when one fails.  With `drain`, each probe that went in is taken out
    -- again at once (so that the queue is empty when the child's put
    -- starts); otherwise they stay.  Returns the number of probes left in
    -- the queue.
    local function kill_in_put(q, mb, drain)
      local go = lmp.Event()
      local p = spawn(function(q_, go_, make, size)
        -- (into the queue's own ring, by value: not as a shared buffer)
        require("lmp").codec.share_threshold = math.huge
        local big = make(size, 5)
        go_:set()
        q_:put(big, 30)
        q_:put("never", 10)
      end, q, go, big_string, mb)
      assert.is_true(go:wait(20))
      local probes, t0 = 0, H.now()
      while q:put_nowait({probe = probes + 1}) do
        probes = probes + 1
        if drain then
          assert.same({probe = probes}, q:get_nowait())
          probes = 0
        end
        csleep(0.001)
        assert.is_true(H.now() - t0 < 20, "the child never started its put")
      end
      p:kill()
      assert.equal(-9, join(p))
      go:close()
      return probes
    end

    it("a producer killed in the middle of a 200 MB put: no half item; gets and puts work", function()
      local q = lmp.Queue()
      assert.equal(0, kill_in_put(q, 200, true))
      assert.equal(0, q:qsize())
      assert.is_true(q:empty())
      local t0 = H.now()
      local r = pack(q:get(0.2))
      assert.same({n = 2, nil, "empty"}, r, "a half-written item was delivered")
      took_about(t0, 0.2, "get(0.2) after the killed put")
      -- the queue still takes items, from here and from another process
      local ok, why = q:put("after", 2)
      assert.is_true(ok, "put after the killed producer: " .. tostring(why))
      local c = spawn(function(q_) assert(q_:put("from a child", 10)) end, q)
      finish(c)
      assert.equal(2, q:qsize())
      assert.equal("after", q:get(1))
      assert.equal("from a child", q:get(1))
      assert.is_true(q:empty())
      -- and a big one again
      local big = big_string(50, 6)
      assert.is_true(q:put(big, 10))
      assert.is_true(q:get(10) == big)
      q:close()
    end)

    it("a producer killed in the middle of a put while a 130 MB item waits: that item, then puts, work", function()
      local q = lmp.Queue()
      local big = big_string(130, 7)
      assert.is_true(q:put("first", 10))
      assert.equal("first", q:get(10))
      assert.is_true(q:put(big, 10))
      local probes = kill_in_put(q, 110, false)
      assert.equal(1 + probes, q:qsize())
      local v = q:get(10)
      assert.is_true(v == big, "the waiting item came back different")
      v = nil
      for i = 1, probes do assert.same({probe = i}, q:get(1)) end
      assert.same({n = 2, nil, "empty"}, pack(q:get(0.2)), "a half-written item was delivered")
      -- the consumer that emptied the queue must not keep producers out
      local t0 = H.now()
      local ok, why = q:put("after", 2)
      assert.is_true(ok, ("put after the killed producer: %s after %.2f s"):format(tostring(why), H.now() - t0))
      local c = spawn(function(q_) assert(q_:put("from a child", 5), "the child's put failed") end, q)
      finish(c)
      assert.equal("after", q:get(1))
      assert.equal("from a child", q:get(1))
      assert.is_true(q:empty())
      q:close()
    end)

    it("an item the receiver cannot decode raises there and leaves the next item", function()
      local q = lmp.Queue()
      local p = spawn(function(q_)
        local lmp_ = require "lmp"
        local mt = {}
        lmp_.codec.register("LmpSpecQueuePoint", mt)
        assert(q_:put(setmetatable({x = 1}, mt), 10))
        assert(q_:put("next", 10))
      end, q)
      finish(p)
      local e = raises("CodecError", q.get, q, 10)
      assert.matches("LmpSpecQueuePoint", tostring(e))
      assert.equal("next", q:get(1))
      assert.is_true(q:empty())
      q:close()
    end)
  end)

  -- =========================================================================
  describe("JoinableQueue", function()
    it("join() returns true at once when nothing is unfinished", function()
      local q = lmp.JoinableQueue()
      local t0 = H.now()
      assert.same({n = 1, true}, pack(q:join(10)))
      assert.same({n = 1, true}, pack(q:join(0)))
      took_little(t0, "join on a queue with nothing unfinished")
      q:close()
    end)

    it("join(timeout) returns nil, \"timeout\" while items are not done, true once they are", function()
      local q = lmp.JoinableQueue()
      q:put(1); q:put(2)
      local t0 = H.now()
      assert.same({n = 2, nil, "timeout"}, pack(q:join(0.3)))
      took_about(t0, 0.3, "join(0.3) with unfinished items")
      assert.equal(1, q:get(0))
      q:task_done()
      -- got but not done still counts
      assert.equal(2, q:get(0))
      assert.same({n = 2, nil, "timeout"}, pack(q:join(0)))
      q:task_done()
      assert.same({n = 1, true}, pack(q:join(0)))
      q:close()
    end)

    it("task_done() more times than items is a ValueError", function()
      local q = lmp.JoinableQueue()
      raises("ValueError", q.task_done, q)
      q:put("a")
      q:get(0)
      assert.is_nil(q:task_done())
      raises("ValueError", q.task_done, q)
      assert.is_true(q:join(0))
      -- the failed calls did not spoil the count
      q:put("b")
      assert.same({n = 2, nil, "timeout"}, pack(q:join(0)))
      q:get(0); q:task_done()
      assert.is_true(q:join(0))
      q:close()
    end)

    it("join() returns when children have task_done'd every item, not before", function()
      local q = lmp.JoinableQueue()
      for i = 1, 200 do q:put(i) end
      local workers = {}
      for w = 1, 2 do
        workers[w] = spawn(function(q_, nap)
          while true do
            local v, why = q_:get(0.5)
            if v == nil and why then break end
            if v == 200 then nap(0.4) end  -- the last one is slow
            q_:task_done()
          end
        end, q, csleep)
      end
      local t0 = H.now()
      assert.same({n = 1, true}, pack(q:join(10)))
      local el = H.now() - t0
      assert.is_true(el >= 0.3, ("join returned after %.3f s, before the last task_done"):format(el))
      assert.is_true(q:empty())
      for _, p in ipairs(workers) do finish(p) end
      raises("ValueError", q.task_done, q)
      q:close()
    end)

    it("a join in a child returns when the parent marks the items done", function()
      local q, out = lmp.JoinableQueue(), lmp.Queue()
      q:put("x"); q:put("y")
      local p = spawn(function(q_, out_)
        out_:put("joining")
        local t = {q_:join(10)}
        out_:put(t)
        -- and too many task_done calls are refused in the child too
        local ok, e = pcall(q_.task_done, q_)
        out_:put({ok, type(e) == "table" and e.kind})
      end, q, out)
      assert.equal("joining", out:get(10))
      csleep(0.2)
      assert.is_true(out:empty(), "the child's join returned with items unfinished")
      q:get(0); q:task_done()
      csleep(0.1)
      assert.is_true(out:empty(), "the child's join returned with an item unfinished")
      q:get(0); q:task_done()
      assert.same({true}, out:get(10))
      assert.same({false, "ValueError"}, out:get(10))
      finish(p)
      q:close(); out:close()
    end)
  end)

  -- =========================================================================
  describe("in lmp.connection.wait", function()
    it("an empty queue is not ready; one with an item is, as the same object; the item stays", function()
      local q = lmp.Queue()
      local t0 = H.now()
      local r = lmp.connection.wait({q}, 0.3)
      took_about(t0, 0.3, "wait({empty queue}, 0.3)")
      assert.same({}, r)
      q:put(nil)  -- a nil item counts
      t0 = H.now()
      r = lmp.connection.wait({q}, 10)
      took_little(t0, "wait on a queue with an item")
      assert.equal(1, #r)
      assert.is_true(rawequal(q, r[1]))
      assert.equal(1, q:qsize())
      r = lmp.connection.wait({q}, 0)
      assert.is_true(rawequal(q, r[1]))
      assert.same({n = 1}, pack(q:get(0)))
      assert.same({}, lmp.connection.wait({q}, 0))
      q:close()
    end)

    it("returns as soon as another process puts", function()
      local q, s, j = lmp.Queue(), lmp.SimpleQueue(), lmp.JoinableQueue()
      local p = spawn(function(q_, nap) nap(0.4); q_:put("now") end, j, csleep)
      local t0 = H.now()
      local r = lmp.connection.wait({q, s, j}, 10)
      local el = H.now() - t0
      assert.equal(1, #r)
      assert.is_true(rawequal(j, r[1]))
      assert.is_true(el >= 0.3 and el < 0.4 + H.SLACK, ("wait returned after %.3f s"):format(el))
      assert.equal("now", j:get(0))
      finish(p)
      q:close(); s:close(); j:close()
    end)

    it("mixes queues with a Pipe connection, a Process and its sentinel", function()
      local q, s = lmp.Queue(), lmp.SimpleQueue()
      local a, b = lmp.Pipe()
      local go = lmp.Event()
      local p = spawn(function(ev) ev:wait(10) end, go)
      local list = {q, a, p, s}
      local function ready_set(timeout)
        local set = {}
        for _, v in ipairs(lmp.connection.wait(list, timeout)) do
          for i, o in ipairs(list) do
            if rawequal(o, v) then set[#set + 1] = i end
          end
        end
        table.sort(set)
        return set
      end
      assert.same({}, ready_set(0.1))
      b:send("hello")
      assert.same({2}, ready_set(10))
      s:put("simple")
      assert.same({2, 4}, ready_set(10))
      q:put("queued")
      assert.same({1, 2, 4}, ready_set(10))
      assert.equal("hello", a:recv())
      assert.equal("simple", s:get())
      assert.same({1}, ready_set(10))
      go:set()
      assert.is_true(H.wait_until(function()
        local set = ready_set(1)
        return #set == 2 and set[2] == 3
      end, 10), "the ended Process never showed up as ready")
      assert.equal("queued", q:get(0))
      assert.same({3}, ready_set(0))
      -- the sentinel as a raw descriptor, next to a queue
      local r = lmp.connection.wait({q, p.sentinel}, 10)
      assert.equal(1, #r)
      assert.equal(p.sentinel, r[1])
      finish(p)
      a:close(); b:close(); q:close(); s:close(); go:close(); p:close()
    end)

    it("a queue closed by a pool callback during a wait or a get does not crash the process", function()
      -- In a child, so that a crash fails this spec and not the whole run.
      local p = spawn(function()
        local lmp_ = require "lmp"
        local pool = lmp_.Pool(1)
        -- during lmp.connection.wait
        local q = lmp_.Queue()
        local closed = false
        pool:apply_async(function() return 1 end, {}, function() q:close(); closed = true end)
        local ok, err = pcall(lmp_.connection.wait, {q}, 1)
        assert(closed, "the callback did not run during the wait")
        assert(ok or lmp_.is_error(err), tostring(err))
        -- during a get
        local q2 = lmp_.Queue()
        closed = false
        pool:apply_async(function() return 1 end, {}, function() q2:close(); closed = true end)
        ok, err = pcall(q2.get, q2, 1)
        assert(closed, "the callback did not run during the get")
        assert(ok or lmp_.is_error(err), tostring(err))
        pool:terminate()
      end)
      local code = join(p, 20)
      assert.equal(0, code, "the child ended with exit code " .. tostring(code))
    end)
  end)

  -- =========================================================================
  describe("passing", function()
    it("as Process args, nested in tables, and as upvalues of the target", function()
      local q = lmp.Queue()
      local up = lmp.JoinableQueue()
      local p = spawn(function(q_, t)
        q_:put("arg")
        t.inner.q:put("nested")
        up:put("upvalue")
      end, q, {inner = {q = q}})
      finish(p)
      assert.equal("arg", q:get(1))
      assert.equal("nested", q:get(1))
      assert.equal("upvalue", up:get(1))
      q:close(); up:close()
    end)

    it("a queue passed twice arrives as one object", function()
      local q, out = lmp.Queue(), lmp.Queue()
      local p = spawn(function(a, b, t, out_)
        out_:put({rawequal(a, b), rawequal(a, t.q), rawequal(a, t[1])})
      end, q, q, {q = q, q}, out)
      finish(p)
      assert.same({true, true, true}, out:get(10))
      q:close(); out:close()
    end)

    it("a child passes it on to its own child", function()
      local q = lmp.Queue()
      local p = spawn(function(q_)
        local lmp_ = require "lmp"
        local c = lmp_.Process(function(qq) qq:put("grandchild") end, q_)
        c:start()
        assert(c:join(10) == 0)
        q_:put("child")
      end, q)
      finish(p, 20)
      assert.equal("grandchild", q:get(1))
      assert.equal("child", q:get(1))
      q:close()
    end)

    it("as Pool initargs: the workers put, the parent gets every result", function()
      local q = lmp.Queue()
      with_pool({processes = 2, initializer = function(qq) _G.LMPSPEC_Q = qq end, initargs = {q}}, function(pool)
        local list = {}
        for i = 1, 50 do list[i] = i end
        local r = pool:map(function(x) _G.LMPSPEC_Q:put(x * x); return true end, list, 3)
        assert.equal(50, #r)
        local got = {}
        for _ = 1, 50 do got[#got + 1] = q:get(10) end
        table.sort(got)
        for i = 1, 50 do assert.equal(i * i, got[i]) end
        assert.is_true(q:empty())
        -- and passed twice, one object in each worker
        local pool2 = lmp.Pool{processes = 1, initializer = function(a, b) _G.LMPSPEC_AB = {a, b} end,
                               initargs = {q, q}}
        local same = pool2:apply(function() return rawequal(_G.LMPSPEC_AB[1], _G.LMPSPEC_AB[2]) end, {})
        pool2:terminate()
        assert.is_true(same, "a queue passed twice in initargs arrived as two objects")
      end)
      q:close()
    end)

    it("over a Pipe or as a Pool task argument is a CodecError that names the path; both go on", function()
      local a, b = lmp.Pipe()
      with_pool(1, function(pool)
        for _, q in ipairs({lmp.Queue(), lmp.JoinableQueue(), lmp.SimpleQueue()}) do
          local e = raises("CodecError", a.send, a, q)
          assert.matches("when it starts", e.message)
          e = raises("CodecError", a.send, a, {x = {q}})
          assert.matches("x", e.message)
          e = raises("CodecError", pool.apply, pool, function() return 1 end, {q})
          assert.matches("args", e.message)
          raises("CodecError", pool.map, pool, function() return 1 end, {q})
          raises("CodecError", pool.apply_async, pool, function() return 1 end, {{nested = q}})
          -- and as a result sent back from a worker... not possible there: no queue
          q:close()
        end
        a:send("still works")
        assert.is_true(b:poll(10))
        assert.equal("still works", b:recv())
        assert.equal(3, pool:apply(function(x, y) return x + y end, {1, 2}))
      end)
      a:close(); b:close()
    end)
  end)

  -- =========================================================================
  describe("with a Pool busy", function()
    it("an apply_async callback runs while the parent is blocked in get", function()
      local q = lmp.Queue()
      with_pool(1, function(pool)
        -- the callback itself puts what the get is waiting for
        local got
        pool:apply_async(function(x) return x * 2 end, {21}, function(v) got = v; q:put(v) end)
        assert.equal(42, q:get(10), "the callback did not run during the get")
        assert.equal(42, got)
        -- and during a get that then times out
        got = nil
        pool:apply_async(function() return "cb" end, {}, function(v) got = v end)
        local t0 = H.now()
        assert.same({n = 2, nil, "empty"}, pack(q:get(0.5)))
        took_about(t0, 0.5, "get(0.5) with a pool busy")
        assert.equal("cb", got)
      end)
      q:close()
    end)

    it("an apply_async callback runs while the parent is blocked in a put on a full queue", function()
      local q = lmp.Queue(1)
      q:put("old")
      with_pool(1, function(pool)
        local taken
        pool:apply_async(function() return 1 end, {}, function() taken = q:get_nowait() end)
        assert.is_true(q:put("new", 10), "the callback did not make room during the put")
        assert.equal("old", taken)
        assert.equal("new", q:get(0))
      end)
      q:close()
    end)

    it("an apply_async callback runs while the parent is blocked in JoinableQueue:join", function()
      local q = lmp.JoinableQueue()
      q:put("job")
      with_pool(1, function(pool)
        pool:apply_async(function() return 1 end, {}, function() q:get_nowait(); q:task_done() end)
        assert.is_true(q:join(10), "the callback did not run during the join")
      end)
      q:close()
    end)
  end)

  -- =========================================================================
  describe("close", function()
    it("leaves the items to the other processes that hold the queue", function()
      local q, out, go = lmp.Queue(), lmp.Queue(), lmp.Event()
      local p = spawn(function(q_, out_, go_)
        assert(go_:wait(10))
        local got = {}
        for i = 1, 3 do got[i] = q_:get(10) end
        out_:put(got)
        q_:put("from the child")
      end, q, out, go)
      q:put("a"); q:put({b = 1}); q:put(3)
      local maps = H.lmp_mappings()
      q:close()
      assert.equal(maps - 1, H.lmp_mappings(), "close() did not unmap the queue")
      raises("ValueError", q.get, q, 0)
      go:set()
      assert.same({"a", {b = 1}, 3}, out:get(10))
      finish(p)
      out:close(); go:close()
    end)

    it("a close in a child does not affect the parent", function()
      local q = lmp.Queue()
      local p = spawn(function(q_)
        q_:put(1)
        q_:close()
        local ok = pcall(q_.put, q_, 2)
        assert(not ok, "put after close worked")
      end, q)
      finish(p)
      assert.equal(1, q:get(1))
      assert.is_true(q:put(3, 1))
      assert.equal(3, q:get(1))
      q:close()
    end)

    it("a queue that is dropped without close() is unmapped by the collector", function()
      collectgarbage(); collectgarbage()
      local maps = H.lmp_mappings()
      local function make()
        local q = lmp.Queue()
        q:put("x")
        return H.lmp_mappings()
      end
      assert.equal(maps + 1, make())
      if jit then jit.flush() end
      collectgarbage(); collectgarbage()
      assert.equal(maps, H.lmp_mappings())
    end)

    it("passing a closed queue to a child fails at start()", function()
      local q = lmp.Queue()
      q:close()
      local p = lmp.Process(function(c) assert(not pcall(c.put, c, 1)) end, q)
      if H.forked then  -- nothing is encoded: the child finds it closed
        p:start()
        assert.equal(0, p:join(10))
        return
      end
      local ok, e = pcall(p.start, p)
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e), tostring(e))
      assert.matches("closed", tostring(e))
    end)
  end)
end)
