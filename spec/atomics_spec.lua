-- Atomic operations on shared integers (SPEC section 15): Value:add, cas,
-- exchange and Array:add, cas, exchange.  Their return values, every
-- integer typecode with its wrap-around (64-bit ones exact through
-- v.ptr), the argument checks, closed objects, and counters that several
-- processes (children, pool workers) update at once, which end at the
-- exact total only if no update is lost.
--
-- Every wait is bounded (H.finish, get(30), the children's start), so that a bug
-- fails a spec instead of hanging the run.
local H = require "spec.support.helpers"
local lmp = require "lmp"
local ffi = require "ffi"

local raises = H.raises

-- Integer typecodes: {code, min, max}; min and max as Lua numbers for the
-- types whose whole range a number holds, as cdata for the 64-bit ones.
local INTEGERS = {
  {"b", -128, 127}, {"B", 0, 255},
  {"h", -32768, 32767}, {"H", 0, 65535},
  {"i", -2147483648, 2147483647}, {"I", 0, 4294967295},
  {"l", -0x7fffffffffffffffLL - 1, 0x7fffffffffffffffLL},
  {"q", -0x7fffffffffffffffLL - 1, 0x7fffffffffffffffLL},
  {"L", 0ULL, 0xffffffffffffffffULL},
  {"Q", 0ULL, 0xffffffffffffffffULL},
}
local WIDE = {l = true, q = true, L = true, Q = true}
local CTYPE = {b = "int8_t", B = "uint8_t", h = "int16_t", H = "uint16_t",
               i = "int32_t", I = "uint32_t", l = "int64_t", q = "int64_t",
               L = "uint64_t", Q = "uint64_t"}

-- The element as the C type holds it: exact for 64-bit types.
local function raw(p, k)
  return p[k or 0]
end

-- Runs fn(k, ...) in n children, k = 1..n, and checks that they all exit
-- with 0.  The children start together: each waits, spinning on an atomic
-- counter of arrivals, until all n have arrived (an Event would wake them
-- one after the other, and each child's work could be over before the
-- next one woke, so that a lost update would never show).  The wait reads
-- with add(0): the JIT may read a plain v.value once for the whole loop.
local function together(n, fn, ...)
  local arrived = lmp.RawValue("i", 0)
  local ps = {}
  for k = 1, n do
    ps[k] = H.spawn(function(arrived_, n_, k_, fn_, ...)
      arrived_:add(1)
      local deadline = os.time() + 30
      while arrived_:add(0) < n_ do
        assert(os.time() < deadline, "the other children did not arrive within 30 s")
      end
      fn_(k_, ...)
    end, arrived, n, k, fn, ...)
  end
  for k = 1, n do H.finish(ps[k], 60) end
  arrived:close()
end

describe("lmp atomics", function()
  H.check_leaks()

  ------------------------------------------------------------ return values

  describe("Value", function()
    it("add(n) returns the new value; a negative n subtracts", function()
      for _, make in ipairs({lmp.Value, lmp.RawValue}) do
        local v = make("i", 5)
        assert.equal(8, v:add(3))
        assert.equal(8, v.value)
        assert.equal(1, v:add(-7))
        assert.equal(1, v:add(0))
        assert.equal("number", type(v:add(1)))
        assert.equal(2, v.value)
        v:close()
      end
    end)

    it("cas(expected, new) sets and returns true, current only if the value is expected", function()
      local v = lmp.RawValue("h", 10)
      local ok, cur = v:cas(10, 20)
      assert.is_true(ok)
      assert.equal(10, cur)
      assert.equal(20, v.value)
      ok, cur = v:cas(10, 30)
      assert.is_false(ok)
      assert.equal(20, cur, "a failed cas returns the current value")
      assert.equal(20, v.value, "a failed cas changes nothing")
      ok, cur = v:cas(20, 20)
      assert.is_true(ok)
      assert.equal(20, cur)
      v:close()
    end)

    it("exchange(x) stores x and returns the old value", function()
      local v = lmp.Value("I", 7)
      assert.equal(7, v:exchange(4000000000))
      assert.equal(4000000000, v.value)
      assert.equal(4000000000, v:exchange(0))
      assert.equal(0, v.value)
      v:close()
    end)

    it("ignore the Value's lock: they work while another holds it", function()
      local v = lmp.Value("i", 0)
      local lock = v:get_lock()
      assert.is_true(lock:acquire(1))
      assert.equal(1, v:add(1))
      assert.is_true((v:cas(1, 2)))
      assert.equal(2, v:exchange(3))
      lock:release()
      v:close()
    end)
  end)

  describe("Array", function()
    it("add(i, n), cas(i, expected, new), exchange(i, x) work on element i only", function()
      for _, make in ipairs({lmp.Array, lmp.RawArray}) do
        local a = make("q", {1, 2, 3})
        assert.equal(12, a:add(2, 10))
        assert.same({1, 12, 3}, a:totable())
        local ok, cur = a:cas(3, 3, 30)
        assert.is_true(ok)
        assert.equal(3, cur)
        ok, cur = a:cas(3, 3, 300)
        assert.is_false(ok)
        assert.equal(30, cur)
        assert.equal(1, a:exchange(1, -1))
        assert.same({-1, 12, 30}, a:totable())
        assert.equal("number", type(a:add(1, 1)))
        assert.equal("number", type(a:exchange(1, 1)))
        a:close()
      end
    end)

    it("reach the first and the last element, as a.ptr[0] and a.ptr[#a - 1]", function()
      local a = lmp.RawArray("B", 4)
      assert.equal(1, a:add(1, 1))
      assert.equal(2, a:add(4, 2))
      assert.equal(1, a.ptr[0])
      assert.equal(2, a.ptr[3])
      assert.same({1, 0, 0, 2}, a:totable())
      a:close()
    end)
  end)

  ----------------------------------------------------------- every typecode

  describe("every integer typecode", function()
    for _, t in ipairs(INTEGERS) do
      local tc, lo, hi = t[1], t[2], t[3]

      it(("'%s': add, cas, exchange on a Value and an Array element"):format(tc), function()
        local v = lmp.Value(tc, 1)
        local a = lmp.RawArray(tc, {1, 1})
        assert.equal(3, v:add(2))
        assert.equal(3, a:add(2, 2))
        assert.same({true, 3}, {v:cas(3, 4)})
        assert.same({true, 3}, {a:cas(2, 3, 4)})
        assert.same({false, 4}, {v:cas(3, 5)})
        assert.same({false, 4}, {a:cas(2, 3, 5)})
        assert.equal(4, v:exchange(100))
        assert.equal(4, a:exchange(2, 100))
        assert.equal(100, v.value)
        assert.same({1, 100}, a:totable())
        v:close(); a:close()
      end)

      it(("'%s': add wraps around at both ends, as the C type does"):format(tc), function()
        local ct = ffi.typeof(CTYPE[tc])
        local v = lmp.RawValue(tc, hi)
        local a = lmp.RawArray(tc, {0, hi, 0})
        v:add(1)
        a:add(2, 1)
        assert.equal(ct(lo), raw(v.ptr))
        assert.equal(ct(lo), raw(a.ptr, 1))
        v:add(-1)
        a:add(2, -1)
        assert.equal(ct(hi), raw(v.ptr), "back the other way")
        assert.equal(ct(hi), raw(a.ptr, 1))
        -- the largest step: max + max is 2^bits - 2 for an unsigned type,
        -- -2 for a signed one ...
        v:add(hi)
        assert.equal(lo == 0 and ct(hi - 1) or ct(-2), raw(v.ptr))
        -- ... and the neighbours of an Array element never change
        assert.equal(0, a[1])
        assert.equal(0, a[3])
        if not WIDE[tc] then
          v.value = hi
          assert.equal(lo, v:add(1), "the returned value wraps too")
          assert.equal(hi, v:add(-1))
        end
        v:close(); a:close()
      end)

      it(("'%s': cas and exchange take and give the extremes exactly"):format(tc), function()
        local ct = ffi.typeof(CTYPE[tc])
        local v = lmp.RawValue(tc, 0)
        assert.equal(0, v:exchange(hi))
        assert.equal(ct(hi), raw(v.ptr))
        assert.is_true((v:cas(hi, lo)))
        assert.equal(ct(lo), raw(v.ptr))
        assert.is_false((v:cas(hi, 0)), "the extremes are told apart")
        assert.equal(ct(lo), raw(v.ptr))
        if WIDE[tc] then
          -- one apart, which no Lua number tells apart, compare exactly
          v:exchange(hi)
          assert.is_false((v:cas(hi - 1, 0)))
          assert.equal(ct(hi), raw(v.ptr))
          assert.is_true((v:cas(hi, 0)))
        end
        v:close()
      end)
    end

    it("unsigned: add(-n) counts down, modulo 2^bits; below -max is a ValueError", function()
      for _, t in ipairs(INTEGERS) do
        local tc, lo, hi = t[1], t[2], t[3]
        if lo == 0 then
          local ct = ffi.typeof(CTYPE[tc])
          local v = lmp.RawValue(tc, 5)
          assert.equal(3, v:add(-2))
          v:add(-4)
          assert.equal(ct(hi), raw(v.ptr), tc .. ": 3 - 4 wraps to max")
          if not WIDE[tc] then
            assert.equal(0, v:add(-hi))
            assert.equal(hi, v:add(-1))
            local e = raises("ValueError", v.add, v, -(hi + 1))
            assert.truthy(e.message:find("out of range", 1, true), e.message)
            assert.equal(hi, v.value)
          else
            v:add(-1)
            v:add(-1LL)
            assert.equal(0xfffffffffffffffdULL, raw(v.ptr), tc .. ": number and int64_t steps")
            v:add(-2^63)
            assert.equal(0x7ffffffffffffffdULL, raw(v.ptr))
            v:add(-0x7fffffffffffffffLL - 1)
            assert.equal(0xfffffffffffffffdULL, raw(v.ptr))
            raises("ValueError", v.add, v, -2^64)
            assert.equal(0xfffffffffffffffdULL, raw(v.ptr))
          end
          v:close()
        end
      end
    end)
  end)

  ------------------------------------------------------------------- errors

  describe("errors", function()
    it("float typecodes: add, cas, exchange are TypeErrors (integer typecodes only)", function()
      for _, tc in ipairs({"f", "d"}) do
        local v = lmp.Value(tc, 1.5)
        local a = lmp.RawArray(tc, {1.5})
        for _, call in ipairs({
          function() return v:add(1) end, function() return v:cas(1.5, 2) end,
          function() return v:exchange(2) end, function() return a:add(1, 1) end,
          function() return a:cas(1, 1.5, 2) end, function() return a:exchange(1, 2) end,
        }) do
          local e = raises("TypeError", call)
          assert.truthy(e.message:find("integer typecodes only", 1, true), e.message)
        end
        assert.equal(1.5, v.value)
        assert.equal(1.5, a[1])
        v:close(); a:close()
      end
    end)

    it("a fraction or a non-number is a TypeError; out of range is a ValueError; nothing changes", function()
      local v = lmp.Value("B", 9)
      local a = lmp.RawArray("B", {9})
      for _, bad in ipairs({1.5, "1", {}, true, 0 / 0, math.huge}) do
        raises("TypeError", v.add, v, bad)
        raises("TypeError", v.cas, v, bad, 1)
        raises("TypeError", v.cas, v, 9, bad)
        raises("TypeError", v.exchange, v, bad)
        raises("TypeError", a.add, a, 1, bad)
        raises("TypeError", a.cas, a, 1, 9, bad)
        raises("TypeError", a.exchange, a, 1, bad)
      end
      raises("TypeError", v.add, v)
      raises("TypeError", v.exchange, v)
      for _, bad in ipairs({256, 1e10}) do
        local e = raises("ValueError", v.add, v, bad)
        assert.truthy(e.message:find("Value:add", 1, true), e.message)
        assert.truthy(e.message:find("'B'", 1, true), e.message)
        raises("ValueError", v.exchange, v, bad)
        raises("ValueError", v.cas, v, bad, 1)
        raises("ValueError", v.cas, v, 9, bad)
        raises("ValueError", a.add, a, 1, bad)
        raises("ValueError", a.exchange, a, 1, bad)
        raises("ValueError", a.cas, a, 1, 9, bad)
      end
      -- cas and exchange store values, so they take no negatives into 'B'
      raises("ValueError", v.exchange, v, -1)
      raises("ValueError", v.cas, v, 9, -1)
      local s = lmp.RawValue("b", 0)
      raises("ValueError", s.add, s, 128)
      raises("ValueError", s.add, s, -129)
      raises("ValueError", s.exchange, s, 128)
      assert.equal(-128, s:add(-128))
      local w = lmp.RawValue("q", 0)
      raises("ValueError", w.add, w, 2^63)
      raises("ValueError", w.exchange, w, 0xffffffffffffffffULL)
      assert.equal(9, v.value)
      assert.same({9}, a:totable())
      v:close(); a:close(); s:close(); w:close()
    end)

    it("an index outside 1..#a is an IndexError, as a[i]; a non-number a TypeError", function()
      local a = lmp.Array("i", 3)
      for _, i in ipairs({0, 4, -1, 1.5, 0 / 0, math.huge}) do
        local e = raises("IndexError", a.add, a, i, 1)
        assert.truthy(e.message:find("1..3", 1, true), e.message)
        raises("IndexError", a.cas, a, i, 0, 1)
        raises("IndexError", a.exchange, a, i, 1)
      end
      for _, i in ipairs({"1", {}, true}) do
        raises("TypeError", a.add, a, i, 1)
        raises("TypeError", a.cas, a, i, 0, 1)
        raises("TypeError", a.exchange, a, i, 1)
      end
      raises("TypeError", a.add, a, nil, 1)
      local empty = lmp.RawArray("i", 0)
      raises("IndexError", empty.add, empty, 1, 1)
      assert.same({0, 0, 0}, a:totable())
      a:close(); empty:close()
    end)

    it("a closed Value or Array is a ValueError", function()
      local v = lmp.Value("i", 1)
      local a = lmp.RawArray("i", 2)
      v:close(); a:close()
      for _, call in ipairs({
        function() return v:add(1) end, function() return v:cas(1, 2) end,
        function() return v:exchange(2) end, function() return a:add(1, 1) end,
        function() return a:cas(1, 0, 2) end, function() return a:exchange(1, 2) end,
        function() return a:add("x", 1) end,
      }) do
        local e = raises("ValueError", call)
        assert.truthy(e.message:find("closed", 1, true), e.message)
      end
    end)
  end)

  ------------------------------------------------------- several processes

  describe("from several processes at once", function()
    local N = 20000

    it("4 children x 20000 add(1) on a Value and on Array elements lose no update", function()
      local v = lmp.RawValue("i", 0)
      local a = lmp.RawArray("q", 4)
      local last = lmp.RawArray("i", 4)   -- what each child's last add returned
      together(4, function(k, v_, a_, last_, n)
        local r
        for j = 1, n do
          r = v_:add(1)
          a_:add(j % 4 + 1, 1)   -- every element, from every child
        end
        last_[k] = r
      end, v, a, last, N)
      assert.equal(4 * N, v.value)
      assert.same({N, N, N, N}, a:totable())
      local top = 0
      for k = 1, 4 do top = math.max(top, last[k]) end
      assert.equal(4 * N, top, "the last add of all returns the total")
      v:close(); a:close(); last:close()
    end)

    it("a cas loop counts exactly from 4 children", function()
      local v = lmp.Value("I", 0)
      local retries = lmp.RawArray("i", 4)
      together(4, function(k, v_, retries_, n)
        local missed = 0
        for _ = 1, n do
          local cur = v_.value
          while true do
            local ok, now = v_:cas(cur, cur + 1)
            if ok then break end
            missed = missed + 1
            cur = now
          end
        end
        retries_[k] = missed
      end, v, retries, N)
      assert.equal(4 * N, v.value)
      v:close(); retries:close()
    end)

    it("exchange hands every value on exactly once", function()
      -- Each child stores its own distinct values and adds up the old
      -- values it gets back: what was stored (and the initial 0) is what
      -- came back plus what is left.
      local v = lmp.RawValue("i", 0)
      local got = lmp.RawArray("d", 4)
      local M = 5000
      together(4, function(k, v_, got_, m)
        local sum = 0
        for j = 1, m do sum = sum + v_:exchange(k * 100000 + j) end
        got_[k] = sum
      end, v, got, M)
      local stored = 0
      for k = 1, 4 do stored = stored + k * 100000 * M + M * (M + 1) / 2 end
      local back = v.value
      for k = 1, 4 do back = back + got[k] end
      assert.equal(stored, back)
      v:close(); got:close()
    end)

    it("a 64-bit counter and an 8-bit one that wraps many times stay exact", function()
      local a = lmp.RawArray("Q", 1)
      local b = lmp.RawArray("B", 1)
      a:exchange(1, 0xfffffffffffffff0ULL)
      together(3, function(_, a_, b_, n)
        for _ = 1, n do a_:add(1, 1); b_:add(1, 3) end
      end, a, b, 1000)
      assert.equal(0xfffffffffffffff0ULL + 3000, a.ptr[0])
      assert.equal(3000 * 3 % 256, b[1])
      a:close(); b:close()
    end)
  end)

  -------------------------------------------------------------------- pools

  describe("in Pool tasks", function()
    it("tasks add to a Value and an Array from initargs; every add returns a distinct total", function()
      local n = 400
      local v = lmp.Value("i", 0)
      local a = lmp.RawArray("l", 2)
      local tasks = {}
      for i = 1, n do tasks[i] = i end
      local r
      H.with_pool({processes = 2, initializer = function(x, y)
        ATOMIC_V, ATOMIC_A = x, y
      end, initargs = {v, a}}, function(pool)
        r = pool:map_async(function(i)
          ATOMIC_A:add(i % 2 + 1, i)
          return ATOMIC_V:add(1)
        end, tasks, 3):get(30)
        assert.is_not_nil(r, "map did not finish within 30 s")
      end)
      assert.equal(n, v.value)
      table.sort(r)
      for i = 1, n do assert.equal(i, r[i]) end
      assert.equal(n / 2 * (n / 2 + 1), a[1], "the even tasks")      -- 2 + 4 + ... + n
      assert.equal((n / 2) ^ 2, a[2], "the odd tasks")                -- 1 + 3 + ... + n - 1
      v:close(); a:close()
    end)
  end)
end)
