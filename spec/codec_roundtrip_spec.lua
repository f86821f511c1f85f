-- lmp.codec round trips: a seeded property spec over randomly generated Lua
-- values (deep, cyclic, shared, sparse, binary strings, special numbers,
-- closures, module and C function references, registered metatables), plus
-- targeted cases from SPEC section 2.
--
-- Reproduce a failure with the seed its message prints:
--   LMP_SEED=<seed> build/lmp /usr/bin/busted spec/codec_roundtrip_spec.lua
local H = require "spec.support.helpers"
local lmp = require "lmp"
local codec = lmp.codec

local V = require "spec.support.values"
local SEED, new_rng, fmtnum, hex = V.SEED, V.new_rng, V.fmtnum, V.hex
local function show(v) return V.show(v, 40) end


local is_module, is_cfunction, deep_equal = V.is_module, V.is_cfunction, V.deep_equal


-- Registered metatables and a custom module for the generator.
local Point = {__index = {norm2 = function(self) return self.x * self.x + self.y * self.y end}}
codec.register("spec.roundtrip.Point", Point)
local Tagged = {}
codec.register("spec.roundtrip.Tagged", Tagged)
local custom_module = {name = "spec_codec_custom", answer = 42}
package.loaded["spec_codec_custom"] = custom_module

-- Closure makers.  Each returns closures whose upvalues are only the
-- locals declared here.
local makers = {
  function(_, v)  -- a counter
    local n = type(v) == "number" and v or 0
    return function() n = n + 1; return n end
  end,
  function(_, v)  -- over a local helper function
    local function helper(x) return x * 2 end
    local base = v
    return function(x) return helper(x or 1), base end
  end,
  function(_, v)  -- over an arbitrary value
    local captured = v
    return function() return captured end
  end,
  function(_, v)  -- two closures sharing one upvalue
    local shared = v
    return {get = function() return shared end, set = function(x) shared = x end}
  end,
  function()  -- recursive local function
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    return fact
  end,
  function()  -- no upvalues, uses globals
    return function(x) return math.sqrt(x) + #string.format("%d", 7) end
  end,
}

local special_numbers = {
  0 / 0, 1 / 0, -1 / 0, -0.0, 0, 1, -1, 0.1, 0.1 + 0.2, 1 / 3, -2.5,
  5e-324, 2.225073858507201e-308, 2.2250738585072014e-308, 1.7976931348623157e308,
  -1.7976931348623157e308, 1e-300, 1e300, 2 ^ 53 - 1, 2 ^ 53, 2 ^ 53 + 2,
  -(2 ^ 53 - 1), -(2 ^ 53), 2 ^ 63, -2 ^ 63, 2 ^ 64, 2 ^ 31 - 1, -2 ^ 31, 2 ^ 31,
  2 ^ 32, 127, 128, -128, -129, 255, 256, 65535, 65536, 1e15, 1e16, 1e21, 1e22,
  123456789012345678, 3.141592653589793, 6.02214076e23, 1.602176634e-19,
}

local function random_double(r)
  local k = r.int(1, 4)
  local m = r.int(0, 2 ^ 26 - 1) * 2 ^ 26 + r.int(0, 2 ^ 26 - 1)
  local sign = r.chance(0.5) and -1 or 1
  if k == 1 then return sign * math.ldexp(m, -1074) end            -- denormal
  if k == 2 then return sign * r.int(0, 2 ^ 30) end                -- integer
  if k == 3 then return sign * r.int(0, 1000000) / r.pick({10, 100, 1000, 3, 7}) end
  return sign * math.ldexp(1 + m / 2 ^ 52, r.int(-1022, 1023))     -- any normal
end

local function random_number(r)
  if r.chance(0.4) then return r.pick(special_numbers) end
  return random_double(r)
end

local function random_string(r)
  local k = r.int(1, 9)
  if k == 1 then return "" end
  if k == 2 then return r.pick({"null", "true", "[1]", "{}", "\xff", "\0", "0", "-0", "1e5", '"', "\\"}) end
  local n = r.chance(0.05) and r.int(200, 5000) or r.int(1, 24)
  local b = {}
  if k <= 5 then      -- printable ASCII and escapes
    for i = 1, n do b[i] = string.char(r.int(32, 126)) end
    if r.chance(0.3) then b[r.int(1, n)] = r.pick({"\n", "\t", '"', "\\", "/", "\1", "\31", "\127"}) end
  elseif k <= 7 then  -- valid UTF-8, multibyte
    for i = 1, n do
      b[i] = r.pick({"a", "\0", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xef\xbf\xbf", "\xe4\xb8\xad", "\xf4\x8f\xbf\xbf"})
    end
  else                -- arbitrary bytes: NUL, invalid UTF-8
    for i = 1, n do b[i] = string.char(r.int(0, 255)) end
    if r.chance(0.5) then
      b[r.int(1, n)] = r.pick({"\x80", "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82", "\xfe"})
    end
  end
  return table.concat(b)
end

local key_id = 0

-- A random value.  `pool` holds the tables and functions made so far in
-- this value (including enclosing ones still being filled), from which
-- shared references and cycles are drawn.
local gen

local function gen_key(r, pool, depth)
  local k = r.int(1, 12)
  if k <= 4 then return r.int(1, 12) end
  if k <= 7 then return random_string(r) end
  if k == 8 then return r.pick({0, -1, -7, 2 ^ 40, -(2 ^ 53 - 1), 2 ^ 53}) end
  if k == 9 then return r.pick({1.5, -0.25, 1e300, 1 / 0, -1 / 0, 5e-324, 0.1 + 0.2}) end
  if k == 10 then return r.chance(0.5) end
  -- a table key (fresh, or shared from the pool); tagged with a unique
  -- field so that the equality check can match keys without search.
  local t
  if #pool > 0 and r.chance(0.4) then
    t = r.pick(pool)
    if type(t) ~= "table" or getmetatable(t) or is_module(t) then t = nil end
  end
  if not t then t = gen(r, pool, depth + 1, "table") end
  if type(t) == "table" and not getmetatable(t) and not is_module(t) then
    if rawget(t, "\0key") == nil then
      key_id = key_id + 1
      rawset(t, "\0key", key_id)
    end
    return t
  end
  return "fallback"
end

gen = function(r, pool, depth, want)
  local k = want == "table" and 20 or r.int(1, 24)
  pool.nodes = (pool.nodes or 0) + 1
  pool.max = pool.max or (r.chance(0.05) and r.int(200, 1500) or r.int(1, 60))
  if (depth > 8 or pool.nodes > pool.max) and k >= 13 then k = r.int(1, 12) end
  if k <= 1 then return nil end
  if k <= 2 then return r.chance(0.5) end
  if k <= 3 then return lmp.null end
  if k <= 6 then return random_number(r) end
  if k <= 10 then return random_string(r) end
  if k <= 11 and #pool > 0 then return r.pick(pool) end             -- shared / cycle
  if k == 12 then
    return r.pick({math.sqrt, string.format, print, table.concat, string, math, table, custom_module})
  end
  if k <= 14 then                                                   -- a closure
    local v = gen(r, pool, depth + 1)
    local f = r.pick(makers)(r, v)
    pool[#pool + 1] = f
    return f
  end
  -- a table
  local t = {}
  if k == 15 then setmetatable(t, Point) elseif k == 16 then setmetatable(t, Tagged) end
  pool[#pool + 1] = t
  local shape = r.int(1, 5)
  local n = r.chance(0.1) and r.int(20, 200) or r.int(0, 6)
  if shape <= 2 then        -- an array, maybe with holes
    for i = 1, n do t[i] = gen(r, pool, depth + 1) end
  elseif shape == 3 then    -- string keys
    for _ = 1, n do
      local key = random_string(r)
      t[key] = gen(r, pool, depth + 1)
    end
  else                      -- mixed keys
    for i = 1, n do
      if r.chance(0.3) then t[i] = gen(r, pool, depth + 1) end
      local key = gen_key(r, pool, depth)
      if key == key then t[key] = gen(r, pool, depth + 1) end
    end
  end
  return t
end

-- Plain JSON data, per the contract: true (must be JSON text), false (must
-- be the binary format), nil (either).
local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    if c < 0x80 then
      i = i + 1
    else
      local len, min
      if c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
      elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
      elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
      else return false end
      if i + len - 1 > n then return false end
      local cp = c % (2 ^ (7 - len))
      for j = i + 1, i + len - 1 do
        local cc = s:byte(j)
        if cc < 0x80 or cc > 0xBF then return false end
        cp = cp * 64 + (cc - 0x80)
      end
      if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
      i = i + len
    end
  end
  return true
end

local function plainness(v)
  local seen, unknown = {}, false
  local function p(x)
    local t = type(x)
    if t == "boolean" or x == lmp.null then return true end
    if t == "number" then
      if x ~= x or x == 1 / 0 or x == -1 / 0 then return false end
      if x == 0 and 1 / x < 0 then unknown = true end
      return true
    end
    if t == "string" then return utf8_valid(x) end
    if t ~= "table" then return false end
    if seen[x] or getmetatable(x) or is_module(x) then return false end
    seen[x] = true
    local n, strkeys, count = #x, true, 0
    for key in next, x do
      count = count + 1
      if type(key) ~= "string" then strkeys = false end
    end
    local is_array = n > 0 and count == n
    if n > 0 then
      for i = 1, n do if rawget(x, i) == nil then is_array = false end end
    end
    if not (strkeys or is_array) then return false end
    for key, val in next, x do
      if type(key) == "string" and not utf8_valid(key) then return false end
      if not p(val) then return false end
    end
    return true
  end
  local r = v ~= nil and p(v)
  if r and unknown then return nil end
  return r
end

-- Runs Lua `code` in a fresh lmp process with arg[1] = a file holding
-- `data`; returns {status, stdout, stderr}.  opts as H.run's.
local function run_child(code, data, opts)
  local dir = H.tmpdir()
  H.write(dir .. "/data.bin", data)
  H.write(dir .. "/child.lua", code)
  return H.lmp_run({dir .. "/child.lua", dir .. "/data.bin"}, opts)
end

local function roundtrip_check(v, opts, what)
  local ok, enc = pcall(codec.encode, v, opts)
  if not ok then
    return false, what .. ": encode raised " .. tostring(enc)
  end
  local ok2, dec = pcall(codec.decode, enc)
  if not ok2 then
    return false, what .. ": decode raised " .. tostring(dec) .. "; encoding starts " .. hex(enc)
  end
  local same, why = deep_equal(v, dec)
  if not same then
    return false, what .. ": " .. why .. "; encoding starts " .. hex(enc)
  end
  return true, enc
end

describe("lmp.codec round trips", function()
  describe("random values (seed " .. SEED .. ")", function()
    it("decode(encode(v)) is isomorphic to v, in both formats, for thousands of values", function()
      local r = new_rng(SEED)
      local cases = 0
      for i = 1, 2500 do
        local pool = {}
        local v = gen(r, pool, 0)
        for _, opts in ipairs({false, {binary = true}}) do
          local ok, res = roundtrip_check(v, opts or nil,
            string.format("seed %d case %d%s", SEED, i, opts and " (binary)" or ""))
          assert(ok, res)
          cases = cases + 1
          if not opts then
            local plain = plainness(v)
            if plain == true then
              assert(res:byte(1) ~= 0xFF, string.format(
                "seed %d case %d: plain JSON data was encoded in the binary format: %s", SEED, i, hex(res)))
            elseif plain == false then
              assert(res:byte(1) == 0xFF, string.format(
                "seed %d case %d: a value that is not plain JSON data was encoded as text: %s", SEED, i, res:sub(1, 200)))
            end
          else
            assert(res:byte(1) == 0xFF, string.format(
              "seed %d case %d: {binary = true} did not give the binary format", SEED, i))
          end
        end
      end
      assert.equal(5000, cases)
    end)

    it("decoded closures behave like the originals (seed " .. SEED .. ")", function()
      local r = new_rng(SEED + 1)
      for i = 1, 300 do
        local start = r.int(-1000, 1000)
        local f = makers[1](r, start)
        for _ = 1, r.int(0, 3) do f() end
        local g = codec.decode(codec.encode(f))
        local a, b = f(), g()
        assert(a == b, string.format("seed %d case %d: counter gave %s, decoded gave %s", SEED, i, tostring(a), tostring(b)))
        f()
        assert(g() == b + 1, string.format("seed %d case %d: decoded counter shares state with the original", SEED, i))
      end
    end)
  end)

  describe("numbers", function()
    it("0.1 + 0.2 round-trips bit-exactly, as JSON text", function()
      local enc = codec.encode(0.1 + 0.2)
      assert.equal("0.30000000000000004", enc)
      assert.equal(0.1 + 0.2, codec.decode(enc))
      assert.is_true(codec.decode(codec.encode({0.1 + 0.2}))[1] == 0.30000000000000004)
    end)

    it("prints integers below 2^53 without a fraction", function()
      for _, n in ipairs({0, 1, -1, 42, 255, 256, -129, 65536, 2 ^ 31 - 1, -2 ^ 31, 2 ^ 32,
                          1e15, 2 ^ 53 - 1, -(2 ^ 53 - 1), 1234567890123}) do
        local expect = string.format("%.0f", n)
        assert.equal(expect, codec.encode(n))
        assert.equal("[" .. expect .. "]", codec.encode({n}))
        assert.equal(n, codec.decode(codec.encode(n)))
      end
    end)

    it("round-trips special numbers, each alone and in a table", function()
      for _, n in ipairs(special_numbers) do
        local ok, why = deep_equal(n, codec.decode(codec.encode(n)))
        assert(ok, fmtnum(n) .. ": " .. tostring(why))
        ok, why = deep_equal({n, x = n}, codec.decode(codec.encode({n, x = n})))
        assert(ok, fmtnum(n) .. ": " .. tostring(why))
      end
    end)

    it("keeps NaN, the infinities and -0.0 (binary format)", function()
      local v = codec.decode(codec.encode({0 / 0, 1 / 0, -1 / 0, -0.0}))
      assert.is_true(v[1] ~= v[1])
      assert.equal(1 / 0, v[2])
      assert.equal(-1 / 0, v[3])
      assert.equal(-1 / 0, 1 / v[4])
      assert.equal(0xFF, codec.encode(0 / 0):byte(1))
      assert.equal(0xFF, codec.encode(1 / 0):byte(1))
    end)

    it("round-trips every double bit-exactly over a sweep of exponents", function()
      local r = new_rng(SEED + 2)
      for i = 1, 3000 do
        local x = random_double(r)
        local back = codec.decode(codec.encode(x))
        assert(back == x and (x ~= 0 or 1 / x == 1 / back),
          string.format("seed %d case %d: %.17g came back as %.17g", SEED, i, x, back))
      end
    end)
  end)

  describe("tables", function()
    it("keeps holes and invents no null: {1, nil, 3}", function()
      local v = codec.decode(codec.encode({1, nil, 3}))
      assert.equal(1, v[1])
      assert.is_nil(v[2])
      assert.equal(3, v[3])
      local n = 0
      for _ in pairs(v) do n = n + 1 end
      assert.equal(2, n)
      local w = codec.decode(codec.encode({nil, nil, "x", [10] = true}))
      n = 0
      for _ in pairs(w) do n = n + 1 end
      assert.equal(2, n)
      assert.equal("x", w[3])
      assert.is_true(w[10])
    end)

    it("keeps mixed keys: integers, floats, strings, booleans, tables", function()
      local tk = {"key table"}
      local v = {1, 2, [0] = "zero", [-5] = "neg", [1.5] = "float", [1 / 0] = "inf",
                 [true] = "yes", [false] = "no", s = "str", ["1"] = "string one", [tk] = "tbl"}
      local d = codec.decode(codec.encode(v))
      local ok, why = deep_equal(v, d)
      assert(ok, why)
      assert.equal("string one", d["1"])
      assert.equal(1, d[1])
    end)

    it("t.self = t", function()
      local t = {name = "me"}
      t.self = t
      local d = codec.decode(codec.encode(t))
      assert.equal(d, d.self)
      assert.equal("me", d.name)
    end)

    it("keeps shared references shared and distinct tables distinct", function()
      local shared = {1, 2}
      local v = {a = shared, b = shared, c = {1, 2}, list = {shared, shared}}
      local d = codec.decode(codec.encode(v))
      assert.equal(d.a, d.b)
      assert.equal(d.a, d.list[1])
      assert.equal(d.a, d.list[2])
      assert.are_not.equal(d.a, d.c)
      assert.are.same({1, 2}, d.c)
      -- a cycle through keys and values, and a table that is its own key
      local k = {}
      k[k] = k
      local e = codec.decode(codec.encode(k))
      assert.equal(e, e[e])
      local ok, why = deep_equal({k, k, {k}}, codec.decode(codec.encode({k, k, {k}})))
      assert(ok, why)
    end)

    it("keeps references and repeated strings inside tables of 128 keys or more", function()
      -- A table's count of keys gets more bytes once it reaches 128, which
      -- moves what was written inside it: references to tables and to
      -- strings written there, met after it, must still find them.
      for _, n in ipairs({127, 128, 200, 20000}) do
        local shared, big = {x = "shared"}, {}
        for i = 1, n do big["k" .. i] = i end
        big.only = {inner = shared, s = "a string defined inside"}
        local v = {big, shared, "a string defined inside", {shared, "k1", "k" .. n}}
        for _, opts in ipairs({{binary = true}, {}}) do
          local d = codec.decode(codec.encode(v, opts))
          local ok, why = deep_equal(v, d)
          assert(ok, why)
          assert.equal(d[2], d[1].only.inner)
          assert.equal(d[2], d[4][1])
        end
        -- and nested: a big table inside a big table
        local outer = {}
        for i = 1, 130 do outer["o" .. i] = i end
        outer.big = big
        local w = {outer, shared, big.only, "a string defined inside", "k7"}
        local d = codec.decode(codec.encode(w))
        local ok, why = deep_equal(w, d)
        assert(ok, why)
        assert.equal(d[2], d[3].inner)
        assert.equal(d[3], d[1].big.only)
      end
    end)

    it("nests 1000 deep, arrays and objects, both ways", function()
      for _, kind in ipairs({"array", "object", "mixed"}) do
        local root = {}
        local t = root
        for i = 1, 1000 do
          local child = {}
          if kind == "array" then t[1] = child
          elseif kind == "object" then t.next = child
          else t[1] = child; t.depth = i; t[true] = i end
          t = child
        end
        t.leaf = "bottom"
        local enc = codec.encode(root)
        if kind ~= "mixed" then assert(enc:byte(1) ~= 0xFF, kind .. " nesting should be plain JSON") end
        local d = codec.decode(enc)
        for _ = 1, 1000 do
          d = kind == "object" and d.next or d[1]
          assert.is_table(d)
        end
        assert.equal("bottom", d.leaf)
        local b = codec.decode(codec.encode(root, {binary = true}))
        for _ = 1, 1000 do b = kind == "object" and b.next or b[1] end
        assert.equal("bottom", b.leaf)
      end
      -- and 1000 deep JSON text written by hand
      local text = string.rep("[", 1000) .. "7" .. string.rep("]", 1000)
      local d = codec.decode(text)
      for _ = 1, 1000 do d = d[1] end
      assert.equal(7, d)
      text = string.rep('{"a":', 1000) .. "7" .. string.rep("}", 1000)
      d = codec.decode(text)
      for _ = 1, 1000 do d = d.a end
      assert.equal(7, d)
    end)

    it("round-trips the top-level scalars and nil", function()
      for _, v in ipairs({true, false, lmp.null, "", "x", 0, -1.5}) do
        assert.equal(v, codec.decode(codec.encode(v)))
      end
      assert.is_nil(codec.decode(codec.encode(nil)))
      assert.equal(lmp.null, codec.decode(codec.encode({lmp.null}))[1])
    end)
  end)

  describe("strings", function()
    it("keeps every byte value, NUL and invalid UTF-8", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, s in ipairs({all, "\0", "a\0b", "\xff\xfe", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82",
                          string.rep("\0", 1000), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}) do
        assert.equal(s, codec.decode(codec.encode(s)))
        local t = codec.decode(codec.encode({[s] = s, s}))
        assert.equal(s, t[s])
        assert.equal(s, t[1])
      end
    end)

    -- One large case: 100 MB of binary bytes (with NUL and invalid UTF-8).
    it("LARGE: a 100 MB string round-trips", function()
      local chunk = {}
      for i = 0, 255 do chunk[#chunk + 1] = string.char((i * 37) % 256) end
      chunk = table.concat(chunk)
      local s = string.rep(chunk, 100 * 1024 * 1024 / 256)
      assert.equal(100 * 1024 * 1024, #s)
      local enc = codec.encode(s)
      assert.is_true(#enc >= #s)
      local back = codec.decode(enc)
      enc = nil
      assert.equal(#s, #back)
      assert.is_true(s == back, "100 MB string came back different")
      s, back = nil, nil
      collectgarbage()
      collectgarbage()
    end)
  end)

  describe("functions", function()
    it("a counter closure keeps working after decode, with its state copied", function()
      local n = 10
      local counter = function() n = n + 1; return n end
      counter()
      local copy = codec.decode(codec.encode(counter))
      assert.equal(12, copy())
      assert.equal(13, copy())
      assert.equal(12, counter())   -- the original is untouched
      assert.equal(14, copy())
      assert.equal(14, select(2, debug.getupvalue(copy, 1)))
    end)

    it("a closure over a local helper function", function()
      local function helper(x) return x * 3 end
      local offset = 1
      local f = function(x) return helper(x) + offset end
      local g = codec.decode(codec.encode(f))
      assert.equal(7, g(2))
      assert.are_not.equal(f, g)
    end)

    it("a recursive local function", function()
      local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
      local g = codec.decode(codec.encode(fib))
      assert.equal(55, g(10))
      local _, self = debug.getupvalue(g, 1)
      assert.equal(g, self)
    end)

    it("two closures sharing an upvalue still share it after decode", function()
      local value = 0
      local pair = {get = function() return value end, set = function(x) value = x end}
      local d = codec.decode(codec.encode(pair))
      d.set(5)
      assert.equal(5, d.get())
      assert.equal(0, pair.get())
      -- also when the two closures are encoded in different places of a value
      local function mk()
        local s = "start"
        return function() return s end, function(x) s = x end
      end
      local get, set = mk()
      local v = codec.decode(codec.encode({{get}, {deeper = {set}}}))
      v[2].deeper[1]("changed")
      assert.equal("changed", v[1][1]())
      if debug.upvalueid then
        assert.equal(debug.upvalueid(v[1][1], 1), debug.upvalueid(v[2].deeper[1], 1))
      end
    end)

    it("globals resolve in the receiving state", function()
      local f = function() return SPEC_CODEC_GLOBAL .. "!" end  -- luacheck: ignore
      local enc = codec.encode(f)
      rawset(_G, "SPEC_CODEC_GLOBAL", "here")
      local g = codec.decode(enc)
      assert.equal("here!", g())
      rawset(_G, "SPEC_CODEC_GLOBAL", nil)
      -- and in another process, where the global has another value
      local r = run_child([[
        local lmp = require "lmp"
        local fh = assert(io.open(arg[1], "rb")); local s = fh:read("*a"); fh:close()
        SPEC_CODEC_GLOBAL = "there"
        local g = lmp.codec.decode(s)
        io.write(g())
      ]], enc)
      assert.equal("there!", r.stdout, r.stderr)
      assert.equal(0, r.status)
    end)

    -- Closures decoded from the same bytecode share one prototype (so
    -- LuaJIT's traces for it are kept), but each decode is a new closure
    -- with new upvalues.
    it("each decode is a fresh closure of one shared prototype", function()
      local jutil = require "jit.util"
      local t, n = {m = 2}, 0
      local f = function(x) n = n + 1; return x * t.m + n end
      local enc = codec.encode(f)
      local a, b = codec.decode(enc), codec.decode(enc)
      assert.are_not.equal(a, b)
      assert.equal(jutil.funcinfo(a).proto, jutil.funcinfo(b).proto)
      assert.equal(3, a(1)); assert.equal(4, a(1)); assert.equal(3, b(1))
      assert.equal(0, n)
      assert.are_not.equal(select(2, debug.getupvalue(a, 1)), select(2, debug.getupvalue(b, 1)))
      -- a hot loop compiled in one copy runs compiled in the next
      local g = function(m) local s = 0 for i = 1, m do s = s + i * t.m end return s end
      local genc = codec.encode(g)
      for _ = 1, 50 do assert.equal(2 * 5050, codec.decode(genc)(100)) end
      -- no upvalues, and the most LuaJIT allows (60)
      local z = codec.decode(codec.encode(function(x) return x * 2 end))
      assert.equal(42, z(21))
      local src = {}
      for i = 1, 60 do src[#src + 1] = ("local u%d = %d"):format(i, i) end
      local terms = {}
      for i = 1, 60 do terms[i] = "u" .. i end
      src[#src + 1] = "return function() return " .. table.concat(terms, " + ") .. " end"
      local big = assert(loadstring(table.concat(src, "\n")))()
      local bigc = codec.decode(codec.encode(big))
      assert.equal(1830, bigc())
      assert.equal(60, jutil.funcinfo(bigc).upvalues)
    end)

    it("keeps the immutability of upvalues: a written upvalue stays writable when compiled", function()
      local acc = 0
      local function add(x) acc = acc + x end
      local function run(m) for i = 1, m do add(i) end return acc end
      local enc = codec.encode(run)
      for _ = 1, 30 do assert.equal(5050, codec.decode(enc)(100)) end
    end)

    it("many different functions: the prototype cache stays bounded and correct", function()
      for i = 1, 600 do
        local f = assert(loadstring(("local k = ... return function() return k + %d end"):format(i)))(i)
        assert.equal(2 * i, codec.decode(codec.encode(f))())
      end
    end)

    it("stripped bytecode (no debug info) still decodes", function()
      local ffi = require "ffi"
      local function fnv(s)
        local h = ffi.new("uint64_t", 0xcbf29ce4ULL * 2 ^ 32 + 0x84222325ULL)
        h = 0xcbf29ce484222325ULL
        for i = 1, #s do h = bit.bxor(h, s:byte(i)) * 0x100000001b3ULL end
        return h
      end
      local function u64le(x)
        local b = {}
        for i = 1, 8 do b[i] = string.char(tonumber(bit.band(x, 0xff))); x = bit.rshift(x, 8) end
        return table.concat(b)
      end
      local code = string.dump(function(x) return x + 1 end, true)
      assert.is_true(#code < 128)
      -- 0xFF 0x01, tag 0x0B, checksum, string (tag 0x07, length, bytes), no upvalues
      local msg = "\255\1\11" .. u64le(fnv(code)) .. "\7" .. string.char(#code) .. code .. "\0"
      local g = codec.decode(msg)
      assert.equal(2, g(1))
    end)

    it("math.sqrt, string.format and print travel by reference", function()
      for _, f in ipairs({math.sqrt, string.format, print, table.concat, require}) do
        local enc = codec.encode(f)
        assert.equal(0xFF, enc:byte(1))
        assert.equal(f, codec.decode(enc))
      end
      local d = codec.decode(codec.encode({fmt = string.format, sq = math.sqrt}))
      assert.equal(string.format, d.fmt)
      assert.equal(math.sqrt, d.sq)
      -- a closure using them
      local g = codec.decode(codec.encode(function(x) return string.format("%.1f", math.sqrt(x)) end))
      assert.equal("3.0", g(9))
    end)

    it("C function references resolve in another process", function()
      local r = run_child([[
        local lmp = require "lmp"
        local fh = assert(io.open(arg[1], "rb")); local s = fh:read("*a"); fh:close()
        local v = lmp.codec.decode(s)
        io.write(tostring(v[1] == math.sqrt), tostring(v[2] == string.format),
                 tostring(v[3] == string), tostring(v[4] == math))
      ]], codec.encode({math.sqrt, string.format, string, math}))
      assert.equal("truetruetruetrue", r.stdout, r.stderr)
    end)
  end)

  describe("modules", function()
    it("a module table captured as an upvalue travels by reference", function()
      local m, io_ = math, io
      local g = codec.decode(codec.encode(function() return m, io_ end))
      local a, b = g()
      assert.equal(math, a)
      assert.equal(io, b)
    end)

    it("a table that is package.loaded[name] comes back as the same table", function()
      for _, m in ipairs({string, math, table, custom_module, lmp}) do
        assert.equal(m, codec.decode(codec.encode(m)))
      end
      local d = codec.decode(codec.encode({s = string, m = custom_module, again = custom_module}))
      assert.equal(string, d.s)
      assert.equal(custom_module, d.m)
      assert.equal(custom_module, d.again)
    end)

    it("sees modules loaded, replaced and unloaded between two encodings", function()
      -- The encoder remembers package.loaded from one encoding to the next;
      -- every change to it must show in the next encoding.
      local late, other = {answer = 1}, {answer = 2}
      local function travels_by_reference(t)
        return codec.encode(t, {binary = true}):find("\13", 3, true) ~= nil
      end
      assert.is_false(travels_by_reference(late))
      package.loaded["spec_codec_late"] = late
      assert.is_true(travels_by_reference(late))
      assert.equal(late, codec.decode(codec.encode(late)))
      package.loaded["spec_codec_late"] = other   -- replaced under the same name
      assert.is_false(travels_by_reference(late))
      assert.is_true(travels_by_reference(other))
      package.loaded["spec_codec_late"] = nil     -- unloaded
      assert.is_false(travels_by_reference(other))
      assert.same({answer = 2}, codec.decode(codec.encode(other)))
      package.loaded["spec_codec_late_a"] = late  -- two at once, then one name moves
      package.loaded["spec_codec_late_b"] = other
      assert.is_true(travels_by_reference(late) and travels_by_reference(other))
      package.loaded["spec_codec_late_a"] = other
      package.loaded["spec_codec_late_b"] = late
      local d = codec.decode(codec.encode({a = late, b = other}))
      assert.equal(late, d.a)
      assert.equal(other, d.b)
      package.loaded["spec_codec_late_a"], package.loaded["spec_codec_late_b"] = nil, nil
      assert.is_false(travels_by_reference(late) or travels_by_reference(other))
      -- a module loaded while an encoding runs (an extension's encoder) is
      -- seen by the next encoding
      local mt = {}
      codec.register_extension("spec.codec.loader", mt, function()
        package.loaded["spec_codec_during"] = late
        return 0
      end, function() return {} end)
      codec.encode({setmetatable({}, mt), {}})
      assert.is_true(travels_by_reference(late))
      package.loaded["spec_codec_during"] = nil
      assert.is_false(travels_by_reference(late))
    end)
  end)

  describe("registered metatables", function()
    it("re-attaches the metatable by name", function()
      local p = setmetatable({x = 3, y = 4}, Point)
      local d = codec.decode(codec.encode(p))
      assert.equal(Point, getmetatable(d))
      assert.equal(25, d:norm2())
      local list = codec.decode(codec.encode({p, p, setmetatable({}, Tagged)}))
      assert.equal(list[1], list[2])
      assert.equal(Point, getmetatable(list[1]))
      assert.equal(Tagged, getmetatable(list[3]))
    end)

    it("a name not registered where it is decoded is a CodecError naming the class", function()
      local mt = {}
      codec.register("spec.roundtrip.OnlyHere", mt)
      local r = run_child([[
        local lmp = require "lmp"
        local fh = assert(io.open(arg[1], "rb")); local s = fh:read("*a"); fh:close()
        local ok, e = pcall(lmp.codec.decode, s)
        io.write(tostring(ok), "\n", type(e) == "table" and tostring(e.kind) or type(e), "\n", tostring(e))
      ]], codec.encode({obj = setmetatable({1}, mt)}))
      local ok, kind, msg = r.stdout:match("^(%a+)\n(%a+)\n(.*)$")
      assert.equal("false", ok, r.stdout .. r.stderr)
      assert.equal("CodecError", kind)
      assert.truthy(msg:find("spec.roundtrip.OnlyHere", 1, true), msg)
      assert.truthy(msg:find("register"), msg)
    end)

    it("a table with an unregistered metatable cannot be encoded", function()
      local ok, e = pcall(codec.encode, {inner = setmetatable({}, {__index = {}})})
      assert.is_false(ok)
      assert.equal("table", type(e))
      assert.equal("CodecError", e.kind)
      assert.matches("^value%.inner", e.message)
    end)
  end)

  describe("the structure of decoded data", function()
    it("closures inside the random generator's shapes survive a second round trip", function()
      local r = new_rng(SEED + 3)
      for i = 1, 300 do
        local v = gen(r, {}, 0)
        local once = codec.decode(codec.encode(v))
        local twice = codec.decode(codec.encode(once))
        local ok, why = deep_equal(v, twice)
        assert(ok, string.format("seed %d case %d (second round trip): %s", SEED, i, tostring(why)))
      end
    end)
  end)

  describe("while the state closes", function()
    -- os.exit(code, true) and lua_close run every finalizer, newest first:
    -- an object made before the first encoding (which makes the encoder's
    -- context) is finalized after the context, and may still encode (a
    -- goodbye message on a Queue or a Connection, say).  Memory used after
    -- it is freed crashes now and then; ASan sees it every time, and so
    -- does glibc with its per-thread cache turned off (a double free).
    it("encodes in a finalizer that runs after the encoder's own", function()
      local child = [[
        local codec = require("lmp").codec
        local guard = newproxy(true)
        getmetatable(guard).__gc = function()
          local v = {}
          for i = 1, 100 do v[i] = {i, name = "t" .. i} end
          local json = codec.decode(codec.encode(v))
          v.shared = v[1]
          local bin = codec.decode(codec.encode(v))
          assert(json[100].name == "t100" and bin[100].name == "t100" and bin.shared == bin[1])
          io.write("encoded while closing\n")
        end
        _G.guard = guard
        codec.encode({1})
        os.exit(0, true)
      ]]
      local r = run_child(child, "", {env = {GLIBC_TUNABLES = "glibc.malloc.tcache_count=0"}})
      assert.equal("encoded while closing\n", r.stdout, r.stderr)
      assert.equal(0, r.status, r.stderr)
    end)
  end)
end)
