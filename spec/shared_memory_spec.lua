-- Shared memory (SPEC section 7, details in sections 1 and 12): lmp.Value,
-- lmp.Array, lmp.RawValue, lmp.RawArray and lmp.SharedMemory.  Typecodes,
-- checked reads and writes, FFI pointers, locks, children and pool workers
-- that share the memory, what cannot travel (Pipe, pool task arguments),
-- close() and collection, and named segments in /dev/shm: creation,
-- attaching, persistence, unlink, and clean-up when their creator ends.
--
-- Every wait is bounded (join(10), poll(10), get(10)), so that a bug fails
-- a spec instead of hanging the run.
local H = require "spec.support.helpers"
local with_pool = H.with_pool
local lmp = require "lmp"
local ffi = require "ffi"

local raises = H.raises

local PID = lmp.current_process().pid

-- Names in /dev/shm that the specs made or learned of; the last spec checks
-- that none of them is left.
local seen_names = {}
local serial = 0

-- A fresh name for a named segment, unique to this run.
local function unique_name(tag)
  serial = serial + 1
  local name = ("%s%d_%s"):format(H.shm_prefix, serial, tag or "x")
  seen_names[name] = true
  return name
end

local function note(name)
  seen_names[name] = true
  return name
end

-- Does /dev/shm/<name> exist?
local function shm_exists(name)
  local f = io.open("/dev/shm/" .. name, "rb")
  if f then f:close() return true end
  return false
end

-- How many mappings of /dev/shm/<name> this process has.
local function shm_mappings(name)
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("/dev/shm/" .. name, 1, true) then n = n + 1 end
  end
  return n
end

-- Starts p and joins it (bounded); returns the exit code.
local function run(p)
  p:start()
  local code = p:join(10)
  assert.is_not_nil(code, "join(10) timed out")
  return code
end

-- Runs fn(...) in a child and asserts that it exits with code 0 (a failed
-- assert in the child is exit code 1, with its message on stderr).
local function in_child(fn, ...)
  assert.equal(0, run(lmp.Process(fn, ...)), "the child failed (see stderr)")
end

-- Receives one message on conn, waiting at most 10 seconds.
local function recv10(conn)
  assert.is_true(conn:poll(10), "nothing received within 10 s")
  return conn:recv()
end

-- Runs a script with a fresh host: {status, stdout, stderr, dir}.
local function run_script(source, args)
  local dir = H.tmpdir()
  local path = H.write(dir .. "/script.lua", source)
  local argv = {path}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local r = H.lmp_run(argv, {timeout = 20})
  r.dir = dir
  return r
end

-- 1..n
local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- Typecodes: {code, C element type, min, max} (min/max for the integer
-- types whose whole range a Lua number holds exactly).
local TYPES = {
  {"b", "int8_t", -128, 127},
  {"B", "uint8_t", 0, 255},
  {"h", "int16_t", -32768, 32767},
  {"H", "uint16_t", 0, 65535},
  {"i", "int32_t", -2147483648, 2147483647},
  {"I", "uint32_t", 0, 4294967295},
  {"l", "int64_t"},
  {"L", "uint64_t"},
  {"q", "int64_t"},
  {"Q", "uint64_t"},
  {"f", "float"},
  {"d", "double"},
}
local CTYPE = {}
for _, t in ipairs(TYPES) do CTYPE[t[1]] = t[2] end
local SIGNED64 = {l = true, q = true}
local UNSIGNED64 = {L = true, Q = true}

describe("lmp shared memory", function()
  H.check_leaks()

  -------------------------------------------------------------- typecodes

  describe("typecodes", function()
    for _, t in ipairs(TYPES) do
      local tc, ctype = t[1], t[2]
      local ptr_type = ffi.typeof(ctype .. " *")

      it(("'%s': a Value starts at 0, reads and writes, and its ptr is a %s *"):format(tc, ctype), function()
        for _, make in ipairs({lmp.Value, lmp.RawValue}) do
          local v = make(tc)
          assert.equal(0, v.value)
          assert.equal("number", type(v.value))
          assert.equal(tc, v.typecode)
          v.value = 7
          assert.equal(7, v.value)
          assert.is_true(ffi.istype(ptr_type, v.ptr), tostring(ffi.typeof(v.ptr)))
          assert.equal(7, tonumber(v.ptr[0]))
          v.ptr[0] = 9
          assert.equal(9, v.value)
          local w = make(tc, 5)
          assert.equal(5, w.value)
          assert.equal(0, make(tc, 0).value)
          v:close(); w:close()
        end
      end)

      it(("'%s': an Array is zero-filled, 1-based, and a.ptr[i-1] is a[i] both ways"):format(tc), function()
        for _, make in ipairs({lmp.Array, lmp.RawArray}) do
          local a = make(tc, 5)
          assert.equal(5, #a)
          assert.equal(tc, a.typecode)
          assert.same({0, 0, 0, 0, 0}, a:totable())
          assert.is_true(ffi.istype(ptr_type, a.ptr), tostring(ffi.typeof(a.ptr)))
          for i = 1, 5 do a[i] = i * 3 end
          for i = 1, 5 do
            assert.equal(i * 3, tonumber(a.ptr[i - 1]))
            assert.equal("number", type(a[i]))
          end
          for i = 1, 5 do a.ptr[i - 1] = 100 + i end
          for i = 1, 5 do assert.equal(100 + i, a[i]) end
          assert.same({101, 102, 103, 104, 105}, a:totable())
          a:close()
        end
      end)

      it(("'%s': an Array made from a table holds its values, and may be empty"):format(tc), function()
        for _, make in ipairs({lmp.Array, lmp.RawArray}) do
          local a = make(tc, {1, 2, 3, 4})
          assert.equal(4, #a)
          assert.same({1, 2, 3, 4}, a:totable())
          assert.equal(3, tonumber(a.ptr[2]))
          for _, e in ipairs({make(tc, 0), make(tc, {})}) do
            assert.equal(0, #e)
            assert.same({}, e:totable())
            raises("IndexError", function() return e[1] end)
            raises("IndexError", function() e[1] = 1 end)
            e:close()
          end
          a:close()
        end
      end)
    end

    it("integer typecodes round-trip their min and max; one past either is a ValueError", function()
      for _, t in ipairs(TYPES) do
        local tc, lo, hi = t[1], t[3], t[4]
        if lo then
          local v = lmp.Value(tc, lo)
          assert.equal(lo, v.value)
          v.value = hi
          assert.equal(hi, v.value)
          local e = raises("ValueError", function() v.value = hi + 1 end)
          assert.truthy(e.message:find(("%.0f"):format(hi + 1), 1, true), e.message)
          raises("ValueError", function() v.value = lo - 1 end)
          assert.equal(hi, v.value, "a refused write must not change the value")
          raises("ValueError", lmp.Value, tc, hi + 1)
          raises("ValueError", lmp.RawValue, tc, lo - 1)

          local a = lmp.Array(tc, {lo, hi})
          assert.same({lo, hi}, a:totable())
          assert.equal(lo, tonumber(a.ptr[0]))
          assert.equal(hi, tonumber(a.ptr[1]))
          raises("ValueError", function() a[1] = lo - 1 end)
          raises("ValueError", function() a[2] = hi + 1 end)
          assert.same({lo, hi}, a:totable())
          raises("ValueError", lmp.Array, tc, {0, hi + 1})
          raises("ValueError", lmp.RawArray, tc, {lo - 1})
          v:close(); a:close()
        end
      end
    end)

    it("64-bit signed typecodes hold their whole range in ptr; Lua numbers round-trip where exact", function()
      local MIN = -9223372036854775807LL - 1
      local MAX = 9223372036854775807LL
      for tc in pairs(SIGNED64) do
        local a = lmp.Array(tc, 3)
        a[1] = -2^63                      -- the min is a Lua number exactly
        assert.equal(-2^63, a[1])
        assert.is_true(a.ptr[0] == MIN, tostring(a.ptr[0]))
        a[2] = MAX                        -- the max needs an int64 cdata
        assert.is_true(a.ptr[1] == MAX, tostring(a.ptr[1]))
        assert.equal("number", type(a[2]))
        a[3] = 2^63 - 1024                -- the largest double below 2^63
        assert.equal(2^63 - 1024, a[3])
        a.ptr[2] = MIN + 1
        assert.is_true(a.ptr[2] == MIN + 1)
        a[3] = 2^53 + 2
        assert.equal(2^53 + 2, a[3])
        assert.is_true(a.ptr[2] == 9007199254740994LL)
        -- the next double below -2^63
        raises("ValueError", function() a[1] = -2^63 - 2048 end)
        local v = lmp.Value(tc, -5)
        assert.equal(-5, v.value)
        v.value = MAX
        assert.is_true(v.ptr[0] == MAX)
        a:close(); v:close()
      end
    end)

    it("64-bit signed typecodes refuse 2^63 (one past the max) with a ValueError", function()
      for tc in pairs(SIGNED64) do
        local v = lmp.Value(tc, 1)
        raises("ValueError", function() v.value = 2^63 end)
        assert.equal(1, v.value, "a refused write must not change the value")
        local a = lmp.Array(tc, 1)
        raises("ValueError", function() a[1] = 2^63 end)
        raises("ValueError", function() a[1] = 2^64 end)
        assert.equal(0, a[1])
        v:close(); a:close()
      end
    end)

    it("64-bit unsigned typecodes hold their whole range in ptr; Lua numbers round-trip where exact", function()
      local MAX = 0xffffffffffffffffULL
      for tc in pairs(UNSIGNED64) do
        local a = lmp.Array(tc, 3)
        a[1] = 0
        assert.equal(0, a[1])
        a[2] = MAX
        assert.is_true(a.ptr[1] == MAX, tostring(a.ptr[1]))
        a[3] = 2^64 - 2048                -- the largest double below 2^64
        assert.equal(2^64 - 2048, a[3])
        a[3] = 2^63
        assert.equal(2^63, a[3])
        assert.is_true(a.ptr[2] == 9223372036854775808ULL)
        raises("ValueError", function() a[1] = -1 end)
        assert.equal(0, a[1])
        local v = lmp.Value(tc, 2^32)
        assert.equal(2^32, v.value)
        a:close(); v:close()
      end
    end)

    it("64-bit unsigned typecodes refuse 2^64 (one past the max) with a ValueError", function()
      for tc in pairs(UNSIGNED64) do
        local v = lmp.Value(tc, 1)
        raises("ValueError", function() v.value = 2^64 end)
        assert.equal(1, v.value, "a refused write must not change the value")
        local a = lmp.Array(tc, 1)
        raises("ValueError", function() a[1] = 2^64 end)
        assert.equal(0, a[1])
        v:close(); a:close()
      end
    end)

    it("64-bit typecodes range-check int64/uint64 cdata too (no silent wrap-around)", function()
      for tc in pairs(UNSIGNED64) do
        local v = lmp.Value(tc, 1)
        raises("ValueError", function() v.value = -1LL end)
        assert.equal(1, v.value)
        v:close()
      end
      for tc in pairs(SIGNED64) do
        local v = lmp.Value(tc, 1)
        raises("ValueError", function() v.value = 0xffffffffffffffffULL end)
        raises("ValueError", function() v.value = 9223372036854775808ULL end)
        assert.equal(1, v.value)
        v:close()
      end
    end)

    it("'f' stores float32 (0.1 comes back as the nearest float), 'd' stores doubles", function()
      local f32 = tonumber(ffi.new("float", 0.1))
      local v = lmp.Value("f", 0.1)
      assert.equal(f32, v.value)
      assert.are_not.equal(0.1, v.value)
      assert.is_true(math.abs(v.value - 0.1) < 1e-7)
      v.value = 2^24 + 1                 -- not a float32: rounds to 2^24
      assert.equal(2^24, v.value)
      v.value = -1.5
      assert.equal(-1.5, v.value)
      local a = lmp.Array("f", {0.1, 0.5, -3.25})
      assert.same({f32, 0.5, -3.25}, a:totable())
      assert.equal(f32, tonumber(a.ptr[0]))

      local d = lmp.Value("d", 0.1)
      assert.equal(0.1, d.value)
      d.value = 2^53 + 2
      assert.equal(2^53 + 2, d.value)
      d.value = -1e300
      assert.equal(-1e300, d.value)
      local da = lmp.Array("d", {0.1, 1 / 3})
      assert.same({0.1, 1 / 3}, da:totable())
      v:close(); a:close(); d:close(); da:close()
    end)

    it("writes of non-numbers are a TypeError, non-integers into integer types too", function()
      for _, t in ipairs(TYPES) do
        local tc = t[1]
        local v, a = lmp.Value(tc, 1), lmp.Array(tc, 2)
        for _, bad in ipairs({"1", "x", {}, true, print}) do
          raises("TypeError", function() v.value = bad end)
          raises("TypeError", function() a[1] = bad end)
        end
        raises("TypeError", function() v.value = nil end)
        raises("TypeError", function() a[2] = nil end)
        raises("TypeError", lmp.Value, tc, "2")
        raises("TypeError", lmp.Array, tc, {1, "2"})
        if tc ~= "f" and tc ~= "d" then
          raises("TypeError", function() v.value = 1.5 end)
          raises("TypeError", function() a[1] = -0.25 end)
          raises("TypeError", lmp.Value, tc, 2.5)
          raises("TypeError", lmp.RawArray, tc, {1, 2.5})
          -- NaN and infinities are no integers either (either kind will do)
          raises(nil, function() v.value = 0 / 0 end)
          raises(nil, function() v.value = math.huge end)
          raises(nil, function() a[1] = -math.huge end)
        else
          v.value = 1.5
          assert.equal(1.5, v.value)
        end
        assert.equal(0, a[1])
        assert.equal(0, a[2])
        v:close(); a:close()
      end
    end)

    it("indices outside 1..#a, or not integers, are an IndexError", function()
      for _, tc in ipairs({"b", "i", "Q", "d"}) do
        local a = lmp.Array(tc, 3)
        for _, i in ipairs({0, 4, -1, 1.5, 3.0000001, 0 / 0, math.huge, -math.huge, 2^40}) do
          local e = raises("IndexError", function() return a[i] end)
          assert.truthy(e.message:find("1..3", 1, true), e.message)
          raises("IndexError", function() a[i] = 1 end)
        end
        assert.same({0, 0, 0}, a:totable())
        a[3.0] = 1                          -- 3.0 is the integer 3
        assert.equal(1, a[3])
        a:close()
      end
    end)

    it("other fields of a Value or an Array cannot be assigned", function()
      local v, a = lmp.Value("i", 1), lmp.Array("i", 1)
      raises(nil, function() v.other = 1 end)
      raises(nil, function() a.other = 1 end)
      v:close(); a:close()
    end)

    it("an unknown typecode is a ValueError (a typecode that is not a string, a TypeError) that names the allowed ones", function()
      for _, make in ipairs({lmp.Value, lmp.RawValue, lmp.Array, lmp.RawArray}) do
        for _, tc in ipairs({"x", "u", "c", "D", "", "ii", "i ", 1, false}) do
          local e = raises(type(tc) == "string" and "ValueError" or "TypeError", make, tc, 1)
          for _, t in ipairs(TYPES) do
            assert.truthy(e.message:find("%f[%w]" .. t[1] .. "%f[%W]"),
                          "no '" .. t[1] .. "' in: " .. e.message)
          end
        end
        raises("TypeError", make, nil, 1)
      end
    end)

    it("a bad Array size raises", function()
      for _, make in ipairs({lmp.Array, lmp.RawArray}) do
        for _, n in ipairs({-1, 1.5, 0 / 0, math.huge, -math.huge}) do
          raises("ValueError", make, "i", n)
        end
        for _, n in ipairs({"3", true, print}) do
          raises(nil, make, "i", n)
        end
        raises(nil, make, "i", nil)
      end
    end)
  end)

  ------------------------------------------------------------------ locks

  describe("locks", function()
    it("a Value or Array has its own RLock by default (and with lock = true)", function()
      local objs = {lmp.Value("i", 0), lmp.Array("d", 2), lmp.Value("i", 0, {lock = true}),
                    lmp.Array("b", 1, {lock = true}), lmp.Value("d", 0, {})}
      local locks = {}
      for _, o in ipairs(objs) do
        local l = o:get_lock()
        assert.matches("^lmp%.RLock", tostring(l))
        assert.is_true(rawequal(l, o:get_lock()), "get_lock returns the same lock each time")
        -- re-entrant for its owner
        assert.is_true(l:acquire(0))
        assert.is_true(l:acquire(0))
        l:release(); l:release()
        raises("ValueError", l.release, l)
        assert.same({3, "x"}, {l:with(function(a, b) return a + 1, b end, 2, "x")})
        for _, other in ipairs(locks) do assert.is_false(rawequal(l, other)) end
        locks[#locks + 1] = l
      end
      for _, o in ipairs(objs) do o:close() end
    end)

    it("lock = false gives no lock: get_lock is a ValueError; Raw* have none either", function()
      for _, o in ipairs({lmp.Value("i", 1, {lock = false}), lmp.Array("i", 2, {lock = false}),
                          lmp.RawValue("i", 1), lmp.RawArray("i", 2)}) do
        raises("ValueError", o.get_lock, o)
        o:close()
      end
    end)

    it("lock = an existing Lock or RLock uses that one", function()
      local l, r = lmp.Lock(), lmp.RLock()
      local v1 = lmp.Value("i", 0, {lock = l})
      local v2 = lmp.Value("d", 0, {lock = l})
      local a = lmp.Array("i", 3, {lock = r})
      assert.is_true(rawequal(l, v1:get_lock()))
      assert.is_true(rawequal(l, v2:get_lock()))
      assert.is_true(rawequal(r, a:get_lock()))
      assert.is_true(l:acquire(0))
      assert.is_false(v2:get_lock():acquire(0), "a plain Lock is not re-entrant")
      l:release()
      v1:close(); v2:close(); a:close()
      -- the lock outlives the objects that used it
      assert.is_true(l:acquire(0)); l:release()
      l:close(); r:close()
    end)

    it("a lock option that is not a boolean or a lock raises", function()
      for _, bad in ipairs({"x", 1, {}, lmp.Event}) do
        raises(nil, lmp.Value, "i", 0, {lock = bad})
        raises(nil, lmp.Array, "i", 2, {lock = bad})
      end
      raises(nil, lmp.Value, "i", 0, "x")
      local ev = lmp.Event()
      raises(nil, lmp.Value, "i", 0, {lock = ev})
      ev:close()
    end)
  end)

  --------------------------------------------------------------- children

  describe("across processes", function()
    it("a child fills a big Array through a.ptr and the parent sees every element", function()
      local n = 1000000
      local a = lmp.Array("d", n)
      in_child(function(arr)
        local p = arr.ptr
        for i = 0, #arr - 1 do p[i] = i * 0.5 + 1 end
      end, a)
      local p, bad = a.ptr, 0
      for i = 0, n - 1 do
        if p[i] ~= i * 0.5 + 1 then bad = bad + 1 end
      end
      assert.equal(0, bad)
      assert.equal(1, a[1])
      assert.equal((n - 1) * 0.5 + 1, a[n])
      a:close()
    end)

    it("a child sees the parent's values and the parent sees the child's writes", function()
      local v = lmp.Value("d", 1.25)
      local w = lmp.RawValue("i", -3)
      local a = lmp.Array("h", {1, 2, 3})
      in_child(function(x, y, arr)
        assert(x.value == 1.25, "x.value: " .. tostring(x.value))
        assert(y.value == -3, "y.value: " .. tostring(y.value))
        assert(#arr == 3 and arr[3] == 3, "arr")
        x.value = 42.5
        y.value = 2147483647
        arr[1] = -32768
        arr.ptr[1] = 32767
      end, v, w, a)
      assert.equal(42.5, v.value)
      assert.equal(2147483647, w.value)
      assert.same({-32768, 32767, 3}, a:totable())
      v:close(); w:close(); a:close()
    end)

    it("objects keep their typecode, size, pointer type and values in a child, for every typecode", function()
      local arrays, values = {}, {}
      for _, t in ipairs(TYPES) do
        local tc = t[1]
        arrays[tc] = lmp.Array(tc, {t[3] or 1, t[4] or 2, 3})
        values[tc] = lmp.Value(tc, t[4] or ((tc == "f" or tc == "d") and 0.5 or 9))
      end
      local empty = lmp.Array("d", 0)
      local p = lmp.Process{target = function(arrs, vals, e, ctypes, types)
        local ffi_ = require "ffi"
        for _, t in ipairs(types) do
          local tc = t[1]
          local a, v = arrs[tc], vals[tc]
          assert(a.typecode == tc and v.typecode == tc, tc .. ": typecode")
          assert(#a == 3, tc .. ": #a")
          assert(ffi_.istype(ffi_.typeof(ctypes[tc] .. " *"), a.ptr), tc .. ": a.ptr type")
          assert(ffi_.istype(ffi_.typeof(ctypes[tc] .. " *"), v.ptr), tc .. ": v.ptr type")
          assert(a[1] == (t[3] or 1) and a[2] == (t[4] or 2) and a[3] == 3, tc .. ": a values")
          local want = t[4] or ((tc == "f" or tc == "d") and 0.5 or 9)
          assert(v.value == want, tc .. ": v.value")
          a[3] = 4
          v.value = 1
          assert(tostring(a:get_lock()):match("^lmp%.RLock"), tc .. ": lock")
        end
        assert(#e == 0 and next(e:totable()) == nil, "empty array")
        local ok, err = pcall(function() return e[1] end)
        assert(not ok and err.kind == "IndexError", "empty array index")
      end, args = {arrays, values, empty, CTYPE, TYPES}}
      assert.equal(0, run(p))
      for _, t in ipairs(TYPES) do
        assert.equal(4, arrays[t[1]][3], t[1])
        assert.equal(1, values[t[1]].value, t[1])
        arrays[t[1]]:close(); values[t[1]]:close()
      end
      empty:close()
    end)

    it("counters under the Value's own lock reach the exact total across 4 processes", function()
      local v = lmp.Value("i", 0)
      local a = lmp.Array("q", 2)
      local n, procs = 2000, {}
      for k = 1, 4 do
        procs[k] = lmp.Process(function(counter, arr, times)
          for _ = 1, times do
            counter:get_lock():with(function() counter.value = counter.value + 1 end)
            local l = arr:get_lock()
            l:acquire()
            arr[1] = arr[1] + 1
            arr[2] = arr[2] + 2
            l:release()
          end
        end, v, a, n)
        procs[k]:start()
      end
      for _, p in ipairs(procs) do assert.equal(0, p:join(10)) end
      assert.equal(4 * n, v.value)
      assert.same({4 * n, 8 * n}, a:totable())
      v:close(); a:close()
    end)

    it("Values made with lock = an existing lock share it in the children", function()
      local l = lmp.Lock()
      local v = lmp.Value("i", 0, {lock = l})
      local w = lmp.RawValue("i", 0)
      local x = lmp.Value("I", 0, {lock = l})
      local procs = {}
      for k = 1, 3 do
        procs[k] = lmp.Process(function(counter, raw, other, lock)
          assert(rawequal(counter:get_lock(), lock), "v:get_lock() is not the lock passed along")
          assert(rawequal(other:get_lock(), lock), "x:get_lock() is not the lock passed along")
          for _ = 1, 1000 do
            counter:get_lock():with(function()
              counter.value = counter.value + 1
              raw.value = raw.value + 1     -- a RawValue guarded by the same lock
            end)
            lock:with(function() other.value = other.value + 2 end)
          end
        end, v, w, x, l)
        procs[k]:start()
      end
      for _, p in ipairs(procs) do assert.equal(0, p:join(10)) end
      assert.equal(3000, v.value)
      assert.equal(3000, w.value)
      assert.equal(6000, x.value)
      v:close(); w:close(); x:close(); l:close()
    end)

    it("an object passed twice arrives as the same object, with the same lock", function()
      local a = lmp.Array("i", 2)
      local v = lmp.Value("d", 0)
      local l = lmp.RLock()
      local v2 = lmp.Value("i", 0, {lock = l})
      local p = lmp.Process{target = function(a1, a2, x1, x2, t, y, lock)
        assert(rawequal(a1, a2), "the Array arrived as two objects")
        assert(rawequal(a1, t.arr), "the Array in a table is another object")
        assert(rawequal(x1, x2) and rawequal(x1, t.val), "the Value arrived as several objects")
        assert(rawequal(x1:get_lock(), x2:get_lock()), "two locks")
        assert(rawequal(y:get_lock(), lock), "the lock passed along is another object")
        assert(not rawequal(a1, x1))
        a1[1] = 5
        assert(a2[1] == 5)
        x1.value = 2.5
        t.arr[2] = 6
      end, args = {a, a, v, v, {arr = a, val = v}, v2, l}}
      assert.equal(0, run(p))
      assert.same({5, 6}, a:totable())
      assert.equal(2.5, v.value)
      a:close(); v:close(); v2:close(); l:close()
    end)

    it("a child passes what it was given on to a grandchild", function()
      local v = lmp.Value("i", 1)
      local a = lmp.RawArray("d", 5000)      -- a segment of its own
      local sm = lmp.SharedMemory{size = 8}
      note(sm.name)
      in_child(function(x, arr, m)
        local l = require "lmp"
        local q = l.Process(function(y, arr2, m2)
          y:get_lock():with(function() y.value = y.value + 10 end)
          arr2[5000] = 3.5
          m2:write(0, "gc")
        end, x, arr, m)
        q:start()
        assert(q:join(10) == 0, "the grandchild failed")
        x.value = x.value + 100
      end, v, a, sm)
      assert.equal(111, v.value)
      assert.equal(3.5, a[5000])
      assert.equal("gc", sm:read(0, 2))
      v:close(); a:close()
      sm:close(); sm:unlink()
    end)

    it("RawArray and RawValue work across processes", function()
      local ra = lmp.RawArray("I", 100)
      local rv = lmp.RawValue("b", -1)
      in_child(function(arr, val)
        for i = 1, #arr do arr[i] = i * i end
        val.value = val.value - 1
      end, ra, rv)
      for i = 1, 100 do assert.equal(i * i, ra[i]) end
      assert.equal(-2, rv.value)
      ra:close(); rv:close()
    end)

    it("a Value captured as an upvalue of the target travels with it", function()
      local v = lmp.Value("i", 3)
      in_child(function() v.value = v.value + 1 end)
      assert.equal(4, v.value)
      v:close()
    end)

    it("writes either way are seen while both processes run", function()
      local a = lmp.Array("i", 2)
      local mine, theirs = lmp.Pipe()
      local p = lmp.Process(function(arr, conn)
        assert(conn:poll(10), "no go")
        assert(conn:recv() == "go")
        arr[2] = arr[1] * 2
        conn:send("done")
        assert(conn:poll(10), "no second go")
        conn:recv()
        conn:send(arr[1])
      end, a, theirs)
      p:start()
      theirs:close()
      a[1] = 21
      mine:send("go")
      assert.equal("done", recv10(mine))
      assert.equal(42, a[2])
      a[1] = 7
      mine:send("again")
      assert.equal(7, recv10(mine))
      assert.equal(0, p:join(10))
      mine:close(); a:close()
    end)

    it("a child keeps its copy when the parent closes its own after start", function()
      local v = lmp.Value("i", 7)
      local w = lmp.Value("i", 0)
      local go, go_child = lmp.Pipe()
      local p = lmp.Process(function(x, y, conn)
        assert(conn:poll(10))
        conn:recv()
        y.value = x.value + 1
        x.value = 99
      end, v, w, go_child)
      p:start()
      go_child:close()
      v:close()
      go:send("go")
      assert.equal(0, p:join(10))
      assert.equal(8, w.value)
      go:close(); w:close()
    end)

    it("a Value made with lock = false has no lock in the child either", function()
      local v = lmp.Value("i", 1, {lock = false})
      in_child(function(x)
        local ok, e = pcall(x.get_lock, x)
        assert(not ok and e.kind == "ValueError", "get_lock: " .. tostring(e))
        x.value = 2
      end, v)
      assert.equal(2, v.value)
      v:close()
    end)

    it("a closed object cannot be passed to a child", function()
      local v = lmp.Value("i", 1)
      local a = lmp.Array("i", 1)
      v:close(); a:close()
      for _, o in ipairs({v, a}) do
        local p = lmp.Process(function(x)
          assert(not pcall(function() return x.value or x[1] end))
        end, o)
        if H.forked then  -- nothing is encoded: the child finds it closed
          p:start()
          assert.equal(0, p:join(10))
        else
          raises(nil, p.start, p)
          assert.is_nil(p.pid)
        end
      end
    end)
  end)

  ------------------------------------------------------------------- pools

  describe("in Pool initargs", function()
    it("tasks write a[i] = f(i) and the parent reads the results from the Array", function()
      local n = 200
      local a = lmp.Array("d", n)
      local b = lmp.RawArray("i", n)
      local count = lmp.Value("i", 0)
      with_pool({processes = 2, initializer = function(arr, raw, c)
        A, RAW, COUNT = arr, raw, c
      end, initargs = {a, b, count}}, function(pool)
        local r = pool:map_async(function(i)
          A[i] = i * 1.5
          RAW.ptr[i - 1] = i * i
          COUNT:get_lock():with(function() COUNT.value = COUNT.value + 1 end)
          return true
        end, range(n), 7):get(10)
        assert.is_not_nil(r, "map did not finish within 10 s")
      end)
      for i = 1, n do
        assert.equal(i * 1.5, a[i])
        assert.equal(i * i, b[i])
      end
      assert.equal(n, count.value)
      a:close(); b:close(); count:close()
    end)

    it("a Value with a lock of its own choosing keeps it in the workers", function()
      local l = lmp.Lock()
      local v = lmp.Value("q", 0, {lock = l})
      with_pool({processes = 2, initializer = function(x, lock)
        V, SAME = x, rawequal(x:get_lock(), lock)
      end, initargs = {v, l}}, function(pool)
        local r = pool:map_async(function()
          V:get_lock():with(function() V.value = V.value + 10 end)
          return SAME
        end, range(50), 1):get(10)
        assert.is_not_nil(r, "map did not finish within 10 s")
        for i = 1, 50 do assert.is_true(r[i]) end
      end)
      assert.equal(500, v.value)
      v:close(); l:close()
    end)
  end)

  ------------------------------------------------------ what cannot travel

  describe("what cannot travel", function()
    local function objects()
      local sm = lmp.SharedMemory{size = 16}
      note(sm.name)
      return {lmp.Value("i", 1), lmp.Array("d", 3), lmp.RawValue("i", 1), lmp.RawArray("b", 2),
              lmp.Array("i", 0), sm}
    end
    local function close_all(objs)
      for _, o in ipairs(objs) do
        o:close()
        if type(o) == "table" then o:unlink() end
      end
    end

    it("sending one over a Pipe is a CodecError that says how to pass it", function()
      local objs = objects()
      local a, b = lmp.Pipe()
      for _, o in ipairs(objs) do
        for _, msg in ipairs({o, {x = {o}}, {1, 2, o}}) do
          local e = raises("CodecError", a.send, a, msg)
          assert.truthy(e.message:find("Process", 1, true), e.message)
          assert.truthy(e.message:find("initargs", 1, true), e.message)
        end
      end
      -- nothing half-sent: the pipe still works, and so do the objects
      a:send("ok")
      assert.equal("ok", recv10(b))
      assert.is_false(b:poll(0))
      objs[1].value = 5
      assert.equal(5, objs[1].value)
      a:close(); b:close()
      close_all(objs)
    end)

    it("as a Pool task argument, or an upvalue of a task, it is a CodecError", function()
      local objs = objects()
      with_pool(1, function(pool)
        for _, o in ipairs(objs) do
          raises("CodecError", pool.apply, pool, function(x) return 1 end, {o})
          raises("CodecError", pool.apply, pool, function(x) return 1 end, {1, {o}})
          raises("CodecError", pool.map, pool, function(x) return 1 end, {1, o})
          raises("CodecError", pool.apply_async, pool, function(x) return 1 end, {o})
          raises("CodecError", pool.apply, pool, function() return o ~= nil end, {})
        end
        -- the pool is still fine
        assert.equal(7, pool:apply_async(function() return 7 end, {}):get(10))
      end)
      close_all(objs)
    end)

    it("the CodecError names where the object was (value..., args...)", function()
      local v = lmp.Value("i", 1)
      local a, b = lmp.Pipe()
      local ok, err = pcall(function()
        local e = raises("CodecError", a.send, a, {x = {v}})
        assert.truthy(e.message:find("value.x[1]", 1, true), e.message)
      end)
      a:close(); b:close()
      with_pool(1, function(pool)
        local e = raises("CodecError", pool.apply, pool, function(x) return 1 end, {1, v})
        assert.truthy(e.message:find("args", 1, true), e.message)
      end)
      v:close()
      if not ok then error(err, 0) end
    end)

    it("a task result that holds one fails that task, and the pool goes on", function()
      with_pool(1, function(pool)
        local ok, e = pcall(pool.apply, pool, function()
          local l = require "lmp"
          return l.Value("i", 1)
        end, {})
        assert.is_false(ok)
        assert.is_true(lmp.is_error(e), tostring(e))
        assert.equal(3, pool:apply_async(function() return 3 end, {}):get(10))
      end)
    end)
  end)

  ------------------------------------------------------------------ close

  describe("close", function()
    it("a closed Value raises ValueError on use; closing twice is fine", function()
      local v = lmp.Value("i", 5)
      v:close()
      raises("ValueError", function() return v.value end)
      raises("ValueError", function() v.value = 1 end)
      raises("ValueError", v.get_lock, v)
      assert.equal("string", type(tostring(v)))
      v:close()
      local r = lmp.RawValue("d", 1)
      r:close(); r:close()
      raises("ValueError", function() return r.value end)
    end)

    it("a closed Array raises ValueError on use and has length 0; closing twice is fine", function()
      local a = lmp.Array("i", {1, 2, 3})
      a:close()
      assert.equal(0, #a)
      raises("ValueError", function() return a[1] end)
      raises("ValueError", function() a[1] = 1 end)
      raises("ValueError", a.totable, a)
      raises("ValueError", a.get_lock, a)
      assert.equal("string", type(tostring(a)))
      a:close()
      local r = lmp.RawArray("d", 4)
      r:close(); r:close()
      assert.equal(0, #r)
      raises("ValueError", function() return r[1] end)
    end)

    it("closing one object leaves its neighbours in the same segment alone", function()
      local objs = {}
      for i = 1, 20 do objs[i] = lmp.Value("i", i) end
      local a = lmp.Array("i", {1, 2, 3})
      for i = 1, 20, 2 do objs[i]:close() end
      for i = 2, 20, 2 do
        assert.equal(i, objs[i].value)
        objs[i].value = -i
        assert.equal(-i, objs[i].value)
        assert.is_true(objs[i]:get_lock():acquire(0))
        objs[i]:get_lock():release()
      end
      assert.same({1, 2, 3}, a:totable())
      local fresh = lmp.Value("i")
      assert.equal(0, fresh.value)
      for i = 2, 20, 2 do objs[i]:close() end
      a:close(); fresh:close()
    end)

    it("closed objects keep no memory mapped, even while they are still referenced", function()
      collectgarbage(); collectgarbage()
      local before = H.lmp_mappings()
      local kept = {}
      for _ = 1, 3 do
        local l = lmp.Lock()
        local r = lmp.RLock()
        local v = lmp.Value("i", 1, {lock = l})
        local a = lmp.Array("d", 4, {lock = r})
        local d = lmp.Value("d", 2)           -- with an RLock of its own
        local own = d:get_lock()
        v:close(); a:close(); d:close(); l:close(); r:close(); own:close()
        kept[#kept + 1] = {l, r, v, a, d, own}
      end
      if jit then jit.flush() end
      collectgarbage(); collectgarbage()
      assert.equal(before, H.lmp_mappings())
      assert.equal(3, #kept)
    end)

    it("close() unmaps a large Array's memory at once", function()
      local before = H.lmp_mappings()
      local a = lmp.RawArray("d", 100000)
      assert.equal(before + 1, H.lmp_mappings())
      a[100000] = 1
      a:close()
      assert.equal(before, H.lmp_mappings())
    end)

    it("thousands of objects dropped without close() are all released by the collector", function()
      collectgarbage(); collectgarbage()
      local maps0, fds0 = H.lmp_mappings(), H.fds()
      for i = 1, 3000 do
        local v = lmp.Value("i", i)
        v.value = v.value + 1
        local a = lmp.Array("d", 8)
        a[8] = i
        local r = lmp.RawValue("b", 1)
        local ra = lmp.RawArray("B", {1, 2})
        assert.equal(2, ra[2] + r.value - 1)
      end
      for i = 1, 1000 do
        local big = lmp.Array("d", 4096)    -- 32 KiB: a segment of its own
        big.ptr[4095] = i
      end
      if jit then jit.flush() end
      collectgarbage(); collectgarbage()
      assert.is_true(H.lmp_mappings() <= maps0,
                     ("mappings: %d before, %d after"):format(maps0, H.lmp_mappings()))
      local changes = H.fd_changes(fds0, H.fds())
      assert.is_nil(changes[1], table.concat(changes, "; "))
    end)
  end)

  ----------------------------------------------------------- SharedMemory

  describe("SharedMemory", function()
    it("creates a segment with a generated name (no leading '/', not in /dev/shm) and the size given", function()
      local made = {lmp.SharedMemory{size = 64}, lmp.SharedMemory{create = true, size = 100},
                    lmp.SharedMemory{name = nil, create = true, size = 1}}
      local names = {}
      for i, sm in ipairs(made) do
        note(sm.name)
        assert.equal("string", type(sm.name))
        assert.is_true(#sm.name > 0)
        assert.are_not.equal("/", sm.name:sub(1, 1))
        assert.is_nil(sm.name:find("/", 1, true))
        assert.is_false(shm_exists(sm.name), "a generated-name segment is anonymous, not in /dev/shm")
        assert.equal(({64, 100, 1})[i], sm.size)
        assert.is_nil(names[sm.name], "the same name twice")
        names[sm.name] = true
      end
      for _, sm in ipairs(made) do sm:close(); sm:unlink() end
      for name in pairs(names) do assert.is_false(shm_exists(name)) end
    end)

    it("a generated name attaches while its creator has it open, and not after", function()
      local sm = lmp.SharedMemory{size = 32}
      sm:write(0, "open")
      local other = lmp.SharedMemory{name = sm.name}
      assert.equal("open", other:read(0, 4))
      in_child(function(name)
        local l = require "lmp"
        local m = l.SharedMemory{name = name}
        assert(m:read(0, 4) == "open")
        m:write(4, "!")
        m:close()
      end, sm.name)
      assert.equal("open!", sm:read(0, 5))
      local name = sm.name
      sm:close()
      assert.equal("open!", other:read(0, 5), "an attached process keeps the memory")
      local e = raises("OSError", lmp.SharedMemory, {name = name})
      assert.truthy(e.message:find(name, 1, true), e.message)
      sm:unlink()  -- nothing to remove: fine
      other:close()
    end)

    it("write/read round-trip bytes at 0-based offsets; a new segment is zero-filled", function()
      local sm = lmp.SharedMemory{size = 64}
      note(sm.name)
      assert.equal(("\0"):rep(64), sm:read(0, 64))
      sm:write(0, "hello")
      assert.equal("hello", sm:read(0, 5))
      assert.equal("ell", sm:read(1, 3))
      local bin = "\0\1\127\128\255\0"
      sm:write(10, bin)
      assert.equal(bin, sm:read(10, #bin))
      sm:write(63, "z")
      assert.equal("z", sm:read(63, 1))
      assert.equal("", sm:read(64, 0))
      assert.equal("", sm:read(0, 0))
      sm:write(64, "")
      sm:write(0, "")
      local all = sm:read(0, 64)
      assert.equal(64, #all)
      assert.equal("hello", all:sub(1, 5))
      assert.equal("z", all:sub(64))
      sm:close(); sm:unlink()
    end)

    it("buf() is a uint8_t * over the same bytes as read and write", function()
      local sm = lmp.SharedMemory{size = 32}
      note(sm.name)
      local buf = sm:buf()
      assert.is_true(ffi.istype("uint8_t *", buf), tostring(ffi.typeof(buf)))
      buf[3] = 65
      buf[31] = 255
      assert.equal("A", sm:read(3, 1))
      assert.equal("\255", sm:read(31, 1))
      sm:write(4, "\1\2xyz")
      assert.equal(1, buf[4])
      assert.equal(2, buf[5])
      assert.equal("xyz", ffi.string(buf + 6, 3))
      ffi.copy(buf + 10, "copied", 6)
      assert.equal("copied", sm:read(10, 6))
      sm:close(); sm:unlink()
    end)

    it("attaches by name in the same process: another object over the same bytes", function()
      local name = unique_name("same")
      local sm = lmp.SharedMemory{name = name, create = true, size = 50}
      assert.equal(name, sm.name)
      assert.equal(50, sm.size)
      assert.is_true(shm_exists(name))
      local other = lmp.SharedMemory{name = name}
      local third = lmp.SharedMemory{name = name, create = false}
      local fourth = lmp.SharedMemory(name)      -- the positional form
      for _, o in ipairs({other, third, fourth}) do
        assert.equal(name, o.name)
        assert.equal(50, o.size)
      end
      sm:write(0, "from sm")
      assert.equal("from sm", other:read(0, 7))
      other:buf()[49] = 42
      assert.equal("*", sm:read(49, 1))
      assert.equal("*", fourth:read(49, 1))
      third:write(20, "third")
      assert.equal("third", ffi.string(sm:buf() + 20, 5))
      -- closing one leaves the others working
      sm:close()
      assert.equal("third", other:read(20, 5))
      other:close(); third:close(); fourth:close()
      lmp.SharedMemory{name = name}:unlink()
      assert.is_false(shm_exists(name))
    end)

    it("a child attaches by name and sees and changes the same bytes", function()
      local sm = lmp.SharedMemory{size = 128}
      note(sm.name)
      sm:write(0, "parent")
      in_child(function(name, size)
        local l = require "lmp"
        local m = l.SharedMemory{name = name}
        assert(m.name == name, "name: " .. tostring(m.name))
        assert(m.size == size, "size: " .. tostring(m.size))
        assert(m:read(0, 6) == "parent", "read: " .. m:read(0, 6))
        m:write(100, "child")
        m:buf()[127] = 7
        m:close()
      end, sm.name, sm.size)
      assert.equal("child", sm:read(100, 5))
      assert.equal(7, sm:buf()[127])
      local again = lmp.SharedMemory{name = sm.name}
      assert.equal("child", again:read(100, 5), "the child's exit must not take the parent's segment")
      again:close()
      sm:close(); sm:unlink()
    end)

    it("the SharedMemory object itself can be passed to a child", function()
      local name = unique_name("pass")
      local sm = lmp.SharedMemory{name = name, create = true, size = 40}
      sm:write(0, "abc")
      local gen = lmp.SharedMemory{size = 8}
      note(gen.name)
      in_child(function(m, want_name, g)
        local ffi_ = require "ffi"
        assert(m.name == want_name, "name: " .. tostring(m.name))
        assert(m.size == 40, "size: " .. tostring(m.size))
        assert(m:read(0, 3) == "abc")
        assert(ffi_.istype("uint8_t *", m:buf()))
        m:write(3, "def")
        g:write(0, "gen")
      end, sm, name, gen)
      assert.equal("abcdef", sm:read(0, 6))
      assert.equal("gen", gen:read(0, 3))
      local again = lmp.SharedMemory{name = gen.name}
      assert.equal("gen", again:read(0, 3), "a child must not take away a segment it was given")
      again:close()
      sm:close(); sm:unlink()
      gen:close(); gen:unlink()
    end)

    it("can be passed in Pool initargs", function()
      local sm = lmp.SharedMemory{size = 100}
      note(sm.name)
      with_pool({processes = 2, initializer = function(m) SHM = m end, initargs = {sm}}, function(pool)
        local r = pool:map_async(function(i)
          SHM:write(i - 1, string.char(64 + i))
          return true
        end, range(26), 1):get(10)
        assert.is_not_nil(r, "map did not finish within 10 s")
      end)
      assert.equal("ABCDEFGHIJKLMNOPQRSTUVWXYZ", sm:read(0, 26))
      sm:close(); sm:unlink()
    end)

    it("a named segment keeps its data after its creator closes it, until unlink()", function()
      local name = unique_name("persist")
      local sm = lmp.SharedMemory{name = name, create = true, size = 16}
      sm:write(0, "kept")
      sm:close()
      assert.is_true(shm_exists(name))
      assert.equal(0, shm_mappings(name))
      local again = lmp.SharedMemory{name = name}
      assert.equal(16, again.size)
      assert.equal("kept", again:read(0, 4))
      again:unlink()
      -- an unlinked segment stays usable through the objects still open
      again:write(4, "!")
      assert.equal("kept!", again:read(0, 5))
      again:close()
      assert.is_false(shm_exists(name))
    end)

    it("after unlink() attaching by that name is an OSError naming it", function()
      local name = unique_name("gone")
      local sm = lmp.SharedMemory{name = name, create = true, size = 16}
      sm:unlink()
      assert.is_false(shm_exists(name))
      local e = raises("OSError", lmp.SharedMemory, {name = name})
      assert.truthy(e.message:find(name, 1, true), e.message)
      -- unlinking again: the name is gone
      e = raises("OSError", sm.unlink, sm)
      assert.truthy(e.message:find(name, 1, true), e.message)
      sm:close()
      -- the name can be created afresh
      local new = lmp.SharedMemory{name = name, create = true, size = 8}
      assert.equal(("\0"):rep(8), new:read(0, 8))
      new:close(); new:unlink()
    end)

    it("after unlink() a segment made without a name cannot be attached either (SPEC 12)", function()
      local sm = lmp.SharedMemory{size = 16}
      sm:write(0, "anon")
      local before = lmp.SharedMemory{name = sm.name}   -- attaching works until unlink
      assert.equal("anon", before:read(0, 4))
      sm:unlink()
      local e = raises("OSError", lmp.SharedMemory, {name = sm.name})
      assert.truthy(e.message:find(sm.name, 1, true), e.message)
      -- nor from another process
      local code = H.join(H.spawn(function(name)
        local ok, err = pcall(require("lmp").SharedMemory, {name = name})
        os.exit((not ok and err.kind == "OSError") and 0 or 1)
      end, sm.name))
      assert.equal(0, code, "a child could attach an unlinked segment")
      -- the objects still open keep working, and share their bytes
      sm:write(4, "!")
      assert.equal("anon!", before:read(0, 5))
      -- unlinking again: the name is gone, as for a named segment
      e = raises("OSError", sm.unlink, sm)
      assert.truthy(e.message:find(sm.name, 1, true), e.message)
      before:close(); sm:close()
    end)

    it("unlink() in a child that was given the segment ends attaching by name everywhere", function()
      local sm = lmp.SharedMemory{size = 8}
      assert.equal(0, H.join(H.spawn(function(m) m:unlink() end, sm)))
      raises("OSError", lmp.SharedMemory, {name = sm.name})
      sm:write(0, "still")
      assert.equal("still", sm:read(0, 5))
      sm:close()
    end)

    it("a generated-name segment is never in /dev/shm, however the script that made it ends", function()
      local src = [[
        local lmp = require "lmp"
        local sm = lmp.SharedMemory{size = 16}
        sm:write(0, "x")
        local f = io.open("/dev/shm/" .. sm.name, "rb")
        print(sm.name, f ~= nil)
        io.stdout:flush()
        if f then f:close() end
        local how = arg[1]
        if how == "error" then error("boom") end
        if how == "exit" then os.exit(3) end
        if how == "closed" then sm:close() end
        if how == "dropped" then sm = nil collectgarbage() end
      ]]
      for _, how in ipairs({"end", "error", "exit", "closed", "dropped"}) do
        local r = run_script(src, {how})
        local name, existed = r.stdout:match("^(%S+)\t(%S+)")
        assert.is_not_nil(name, how .. ": " .. r.stdout .. r.stderr)
        note(name)
        assert.equal("false", existed, how .. ": the segment was in /dev/shm while open")
        assert.equal(({["end"] = 0, error = 1, exit = 3, closed = 0, dropped = 0})[how], r.status,
                     how .. ": " .. r.stderr)
        assert.is_false(shm_exists(name), how .. ": /dev/shm/" .. name .. " left behind")
      end
    end)

    it("a generated-name segment made by a child Process is unlinked when the child ends", function()
      local mine, theirs = lmp.Pipe()
      for _, fail in ipairs({false, true}) do
        local p = lmp.Process(function(conn, f)
          local l = require "lmp"
          local sm = l.SharedMemory{size = 16}
          conn:send(sm.name)
          if f then error("the child fails on purpose") end
        end, theirs, fail)
        p:start()
        local name = note(recv10(mine))
        assert.equal(fail and 1 or 0, p:join(10))
        assert.is_false(shm_exists(name), "/dev/shm/" .. name .. " left behind")
      end
      mine:close(); theirs:close()
    end)

    it("a generated-name segment of a terminated child is gone once its parent ends", function()
      local r = run_script([[
        local lmp = require "lmp"
        local mine, theirs = lmp.Pipe()
        local p = lmp.Process(function(conn)
          local l = require "lmp"
          local sm = l.SharedMemory{size = 16}
          conn:send(sm.name)
          conn:poll(30)
        end, theirs)
        p:start()
        assert(mine:poll(10), "no name from the child")
        print(mine:recv())
        io.stdout:flush()
        p:terminate()
        assert(p:join(10) == -15)
      ]])
      local name = r.stdout:match("^(%S+)")
      assert.is_not_nil(name, r.stdout .. r.stderr)
      note(name)
      assert.equal(0, r.status, r.stderr)
      local left = shm_exists(name)
      os.remove("/dev/shm/" .. name)
      assert.is_false(left, "/dev/shm/" .. name .. " left behind")
    end)

    it("a named segment made by a child that exits without unlink persists until unlinked", function()
      local name = unique_name("child")
      in_child(function(n)
        local l = require "lmp"
        local sm = l.SharedMemory{name = n, create = true, size = 32}
        sm:write(0, "left by the child")
        sm:close()
      end, name)
      assert.is_true(shm_exists(name), "the child's named segment was unlinked")
      local sm = lmp.SharedMemory{name = name}
      assert.equal(32, sm.size)
      assert.equal("left by the child", sm:read(0, 17))
      sm:unlink()
      sm:close()
      assert.is_false(shm_exists(name))
    end)

    it("ranges outside the segment are an IndexError, negative offsets too", function()
      local sm = lmp.SharedMemory{size = 10}
      note(sm.name)
      for _, r in ipairs({{-1, 1}, {-1, 0}, {0, 11}, {10, 1}, {9, 2}, {11, 0}, {-10, 5}, {2^40, 1}}) do
        raises("IndexError", sm.read, sm, r[1], r[2])
      end
      for _, w in ipairs({{-1, "a"}, {-1, ""}, {10, "a"}, {9, "ab"}, {0, ("x"):rep(11)}, {11, ""}}) do
        raises("IndexError", sm.write, sm, w[1], w[2])
      end
      assert.equal(("\0"):rep(10), sm:read(0, 10), "a refused write must not write anything")
      -- offsets and lengths that are not integers, data that is not a string
      raises(nil, sm.read, sm, 1.5, 1)
      raises(nil, sm.read, sm, 0, 1.5)
      raises(nil, sm.read, sm, 0, -1)
      raises(nil, sm.read, sm, "0", 1)
      raises(nil, sm.write, sm, 0.5, "a")
      raises(nil, sm.write, sm, 0, 65)
      raises(nil, sm.write, sm, 0, nil)
      sm:close(); sm:unlink()
    end)

    it("read, write and buf after close are a ValueError; close twice is fine", function()
      local sm = lmp.SharedMemory{size = 10}
      note(sm.name)
      local name = sm.name
      sm:close()
      assert.equal(0, shm_mappings(name))
      raises("ValueError", sm.read, sm, 0, 1)
      raises("ValueError", sm.write, sm, 0, "a")
      raises("ValueError", sm.buf, sm)
      sm:close()
      assert.equal(name, sm.name)
      assert.equal("string", type(tostring(sm)))
      sm:unlink()               -- unlinking works on a closed object
      assert.is_false(shm_exists(name))
    end)

    it("a size <= 0 (or not a whole number) is a ValueError and creates nothing", function()
      -- (only names of this process are looked at: other programs may be
      -- using /dev/shm meanwhile)
      local function generated()
        local set = {}
        for name in pairs(H.dev_shm()) do
          if name:find("^lmp_" .. PID .. "_") then set[name] = true end
        end
        return set
      end
      local before, tried = generated(), {}
      for _, size in ipairs({0, -1, -4096, 1.5, 0 / 0}) do
        raises("ValueError", lmp.SharedMemory, {size = size})
        raises("ValueError", lmp.SharedMemory, {create = true, size = size})
        tried[#tried + 1] = unique_name("size")
        raises("ValueError", lmp.SharedMemory, {name = tried[#tried], create = true, size = size})
      end
      raises("ValueError", lmp.SharedMemory, {create = true})
      tried[#tried + 1] = unique_name("nosize")
      raises("ValueError", lmp.SharedMemory, {name = tried[#tried], create = true})
      for _, name in ipairs(tried) do assert.is_false(shm_exists(name), "created: " .. name) end
      for name in pairs(generated()) do
        assert.is_true(before[name] or false, "created: " .. name)
      end
    end)

    it("attaching a name that does not exist is an OSError naming it", function()
      local name = unique_name("missing")
      local e = raises("OSError", lmp.SharedMemory, {name = name})
      assert.truthy(e.message:find(name, 1, true), e.message)
      e = raises("OSError", lmp.SharedMemory, {name = name, create = false})
      assert.truthy(e.message:find(name, 1, true), e.message)
      assert.is_false(shm_exists(name))
    end)

    it("creating a name that exists is an OSError, and leaves the segment alone", function()
      local name = unique_name("exists")
      local sm = lmp.SharedMemory{name = name, create = true, size = 16}
      sm:write(0, "first")
      local e = raises("OSError", lmp.SharedMemory, {name = name, create = true, size = 16})
      assert.truthy(e.message:find(name, 1, true), e.message)
      raises("OSError", lmp.SharedMemory, {name = name, create = true, size = 4096})
      assert.equal("first", sm:read(0, 5))
      local again = lmp.SharedMemory{name = name}
      assert.equal(16, again.size)
      again:close()
      sm:close(); sm:unlink()
    end)

    it("a name with '/' (or an empty name) is a ValueError", function()
      for _, name in ipairs({"a/b", "/" .. unique_name("slash"), unique_name("slash") .. "/", "/", ""}) do
        raises("ValueError", lmp.SharedMemory, {name = name, create = true, size = 8})
        raises("ValueError", lmp.SharedMemory, {name = name})
      end
      raises(nil, lmp.SharedMemory, {name = 42, create = true, size = 8})
      raises(nil, lmp.SharedMemory, {name = ("n"):rep(300), create = true, size = 8})
    end)

    it("closing unmaps at once, and dropped objects are released by the collector", function()
      local name = unique_name("maps")
      local sm = lmp.SharedMemory{name = name, create = true, size = 4096}
      assert.equal(1, shm_mappings(name))
      local fds0 = H.fds()
      for _ = 1, 500 do
        local o = lmp.SharedMemory{name = name}
        o:buf()[0] = o:buf()[0] + 1
      end
      if jit then jit.flush() end
      collectgarbage(); collectgarbage()
      assert.equal(1, shm_mappings(name))
      local changes = H.fd_changes(fds0, H.fds())
      assert.is_nil(changes[1], table.concat(changes, "; "))
      assert.equal(500 % 256, sm:buf()[0])
      sm:close()
      assert.equal(0, shm_mappings(name))
      sm:unlink()
    end)
  end)

  it("leaves nothing of its own in /dev/shm", function()
    local left = {}
    for name in pairs(H.dev_shm()) do
      if seen_names[name] or name:sub(1, #H.shm_prefix) == H.shm_prefix
         or name:find("^lmp_" .. PID .. "_") then
        left[#left + 1] = name
      end
    end
    table.sort(left)
    assert.same({}, left)
    assert.is_true(next(seen_names) ~= nil, "the specs above noted no names")
  end)
end)
