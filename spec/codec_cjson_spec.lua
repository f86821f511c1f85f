-- lmp.codec.decode against lua-cjson on the text cjson writes (SPEC 2:
-- decode(cjson.encode(v)) deep-equals cjson.decode(cjson.encode(v))):
-- tables nested 500 levels and more, every document of the JSONTestSuite
-- corpus that cjson reads, and a corpus of numbers
-- (spec/fixtures/numbers.json: edges of doubles and of the decoder's fast
-- path).  Each group also runs with the collector finishing a whole cycle
-- every kilobyte or so allocated, so that a string or table the codec holds
-- a pointer to without keeping it on the stack is freed under its feet
-- (ASan, valgrind or a wrong value then shows it).
--
-- Reproduce a failure with the seed its message prints:
--   LMP_SEED=<seed> build/lmp /usr/bin/busted spec/codec_cjson_spec.lua
local lmp = require "lmp"
local cjson = require "cjson"
local codec = lmp.codec

local H = require "spec.support.helpers"
local V = require "spec.support.values"
local SEED, new_rng, fmtnum, same = V.SEED, V.new_rng, V.fmtnum, V.deep_equal
local function show(v) return V.show(v, 60) end

local SPEC_DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local SUITE_DIRS = {
  SPEC_DIR .. "/fixtures/JSONTestSuite/test_parsing",
  -- The shared copy also has the test_transform documents.
  "/work/shared/conformance/JSONTestSuite/test_parsing",
  "/work/shared/conformance/JSONTestSuite/test_transform",
}

-- A cjson of our own, so that the depth limits set here leave the shared
-- module's configuration alone.  Its limits are well past lmp's 2000
-- levels, so that lmp's limit is what is tested.
local cj = cjson.new()
cj.encode_max_depth(5000)
cj.decode_max_depth(5000)

local function is_codec_error(e)
  return type(e) == "table" and e.kind == "CodecError" and type(e.message) == "string"
end

local read = H.slurp

local function list(dir)
  local p = io.popen("timeout 20 ls " .. "'" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  local files = {}
  for name in p:read("*a"):gmatch("[^\n]+") do
    if name:match("%.json$") then files[#files + 1] = dir .. "/" .. name end
  end
  p:close()
  return files
end

-- Runs fn with the collector finishing a whole cycle at every allocation
-- that checks for garbage (a pause of 0 starts the next cycle at once, and
-- a huge step multiplier runs each one to the end): whatever the codec
-- points to without keeping it reachable is freed at its next allocation.
-- This is slow (a cycle costs about a millisecond with busted loaded), so
-- the inputs below are small.  The collector's settings are restored
-- whatever happens.
local function under_gc_pressure(fn)
  local pause = collectgarbage("setpause", 0)
  local stepmul = collectgarbage("setstepmul", 1000000)
  collectgarbage("collect")  -- ends with the threshold at 0
  local ok, err = pcall(fn)
  collectgarbage("setpause", pause)
  collectgarbage("setstepmul", stepmul)
  collectgarbage("collect")
  if not ok then error(err, 0) end
end

-- Checks that lmp reads `text` as cjson does.  Returns false when cjson
-- itself refuses the text, or when the text is not JSON (cjson accepts some
-- such texts, and lmp need not): lmp may then do as it likes, short of
-- crashing.
local function check_text(text, what, not_json)
  local okc, expect = pcall(cj.decode, text)
  local ok, got = pcall(codec.decode, text)
  if not okc or (not_json and not ok) then
    assert(ok or is_codec_error(got), what .. ": lmp raised a non-CodecError: " .. tostring(got))
    return false
  end
  assert(ok, what .. ": lmp raised " .. tostring(got) .. " on " .. show(text))
  local eq, why = same(expect, got)
  assert(eq, what .. ": " .. tostring(why) .. "; text " .. show(text))
  return true
end

-- Checks SPEC 2's promise for v.  Returns false when cjson cannot encode
-- v (an excessively sparse array, inf, ...): the promise is then empty.
local function check(v, what)
  local ok, text = pcall(cj.encode, v)
  if not ok then return false end
  check_text(text, what)
  return true
end

-- Nested tables, `depth` levels in all, of three shapes: a chain of arrays,
-- a chain of objects, and levels that are wide as well as deep (objects with
-- siblings, every other one reaching its child through an array).
local function nest(shape, depth, leaf)
  local root = {}
  local cur, level = root, 1
  while level < depth do
    local child = {}
    if shape == "array" then
      cur[1] = child
    elseif shape == "object" then
      cur["k" .. level % 7] = child
    else
      cur.n, cur.s, cur.null, cur.t = level + 0.5, "level " .. level, cjson.null, {true, false, level}
      if level % 2 == 0 or level + 1 == depth then
        cur.child = child
      else  -- the array is a level too
        cur.child = {0, child, "after " .. level}
        level = level + 1
      end
    end
    cur = child
    level = level + 1
  end
  if shape == "array" then cur[1] = leaf else cur.leaf = leaf end
  return root
end

local SHAPES = {"array", "object", "wide"}
local LEAVES = {1, 0.1, -0.0, "leaf \0 \xe2\x82\xac", cjson.null, true}

local function nesting_cases()
  for _, shape in ipairs(SHAPES) do
    for _, depth in ipairs({1, 2, 10, 100, 499, 500, 501, 999, 1000, 1999, 2000}) do
      for li, leaf in ipairs(LEAVES) do
        local what = string.format("%s nested %d deep, leaf %d", shape, depth, li)
        local v = nest(shape, depth, leaf)
        assert(check(v, what), what .. ": cjson refused it")
        -- and lmp's own text, which cjson must read back the same
        local ok, mine = pcall(codec.encode, v)
        assert(ok, what .. ": lmp.codec.encode raised " .. tostring(mine))
        local eq, why = same(cj.decode(mine), codec.decode(mine))
        assert(eq, what .. " (lmp's text): " .. tostring(why))
      end
    end
  end
end

-- Past lmp's 2000 levels a CodecError, never a crash; cjson still reads it.
local function too_deep_cases()
  for _, shape in ipairs({"array", "object"}) do
    for _, depth in ipairs({2001, 2500, 3000}) do
      local text = cj.encode(nest(shape, depth, 1))
      local ok, e = pcall(codec.decode, text)
      assert(not ok and is_codec_error(e), string.format("%s nested %d deep: %s", shape, depth,
        ok and "accepted" or tostring(e)))
      assert.matches("nested too deeply", e.message, 1, true)
    end
  end
end

local function suite_cases()
  local files, read_by_cjson = 0, 0
  for _, dir in ipairs(SUITE_DIRS) do
    for _, path in ipairs(list(dir)) do
      local text = read(path)
      files = files + 1
      local name = path:match("[^/]*/[^/]*$")
      -- the document as it is, where cjson reads it
      check_text(text, name, name:match("/n_") ~= nil)
      -- and as cjson writes what it read
      local ok, v = pcall(cj.decode, text)
      if ok and check(v, name .. " (re-encoded by cjson)") then read_by_cjson = read_by_cjson + 1 end
    end
  end
  assert.is_true(files >= 300, "only " .. files .. " JSONTestSuite files found")
  assert.is_true(read_by_cjson >= 100, "cjson re-encoded only " .. read_by_cjson .. " documents")
end

local function number_texts()
  local text = assert(read(SPEC_DIR .. "/fixtures/numbers.json"), "spec/fixtures/numbers.json is missing")
  local texts = {}
  for token in text:gmatch("[-+.%deE]+") do texts[#texts + 1] = token end
  return text, texts
end

local function number_cases()
  local whole, texts = number_texts()
  assert.is_true(#texts >= 400, "numbers.json has " .. #texts .. " numbers")
  check_text(whole, "numbers.json")
  for i, t in ipairs(texts) do
    local what = string.format("numbers.json #%d %s", i, show(t))
    local expect = cj.decode(t)
    local ok, got = pcall(codec.decode, t)
    -- out of the range of doubles: implementation-defined (RFC 8259 6)
    if not ok and (expect == 1 / 0 or expect == -1 / 0) and is_codec_error(got) then
      ok, got = true, expect
    end
    assert(ok, what .. ": lmp raised " .. tostring(got))
    assert(same(expect, got), what .. ": lmp reads " .. fmtnum(got) .. ", cjson " .. fmtnum(expect))
    -- cjson's text of the number (14 digits), alone and inside tables
    if expect == expect and expect ~= 1 / 0 and expect ~= -1 / 0 then
      check(expect, what)
      check({expect, {expect}}, what .. " in an array")
      check({x = expect, [t] = {y = expect}}, what .. " in an object")
      -- lmp's own text is exact, and cjson reads it exactly too
      local mine = codec.encode(expect)
      assert(same(expect, codec.decode(mine)), what .. ": lmp's text " .. mine .. " does not read back")
      assert(same(expect, cj.decode(mine)), what .. ": cjson reads lmp's text " .. mine .. " differently")
    end
  end
end

-- Doubles from random bit patterns: every exponent, subnormals included.
local function random_number_cases(seed, n)
  local r = new_rng(seed)
  local list = {}
  for i = 1, n do
    local m = r.int(0, 2 ^ 26 - 1) * 2 ^ 26 + r.int(0, 2 ^ 26 - 1)
    local x
    if r.chance(0.1) then x = math.ldexp(m, -1074)
    elseif r.chance(0.2) then x = r.int(-2 ^ 30, 2 ^ 30) * 2 ^ r.int(0, 23) + r.pick({-1, 0, 1})
    else x = math.ldexp(1 + m / 2 ^ 52, r.int(-1022, 1023)) end
    if r.chance(0.5) then x = -x end
    list[i] = x
    check(x, string.format("seed %d number %d %s", seed, i, fmtnum(x)))
  end
  check(list, string.format("seed %d: all %d numbers in one array", seed, n))
end

describe("lmp.codec.decode reads what cjson.encode writes as cjson.decode does", function()
  it("for tables nested up to 2000 levels (lmp's limit), 500 among them", nesting_cases)

  it("and refuses deeper ones with a CodecError", too_deep_cases)

  it("for every JSONTestSuite document cjson reads, as it is and re-encoded by cjson", suite_cases)

  it("for the numbers of spec/fixtures/numbers.json", number_cases)

  it("for random doubles (seed " .. SEED .. ")", function() random_number_cases(SEED, 3000) end)

  -- cjson reads its texts beforehand: only lmp runs under the pressure.
  describe("with the collector running a whole cycle at every allocation", function()
    local function lmp_reads_under_gc_pressure(texts)
      local expect, got = {}, {}
      for i, t in ipairs(texts) do expect[i] = cj.decode(t[1]) end
      under_gc_pressure(function()
        for i, t in ipairs(texts) do got[i] = codec.decode(t[1], t.opts) end
      end)
      for i, t in ipairs(texts) do
        local eq, why = same(expect[i], got[i])
        assert(eq, t[2] .. ": " .. tostring(why))
      end
    end

    it("for nested tables", function()
      local texts, values = {}, {}
      for _, c in ipairs({{"array", 500}, {"object", 500}, {"wide", 100}}) do
        local v = nest(c[1], c[2], "leaf")
        values[#values + 1] = v
        texts[#texts + 1] = {cj.encode(v), string.format("%s nested %d deep", c[1], c[2])}
      end
      lmp_reads_under_gc_pressure(texts)
      local too_deep = cj.encode(nest("object", 101, 1))
      local mine = {}
      under_gc_pressure(function()
        for i, v in ipairs(values) do mine[i] = codec.encode(v) end
        local ok, e = pcall(codec.decode, too_deep, {max_depth = 100})
        assert(not ok and is_codec_error(e), "101 levels with max_depth = 100: " .. tostring(e))
      end)
      for i, v in ipairs(values) do
        local eq, why = same(v, cj.decode(mine[i]))
        assert(eq, texts[i][2] .. " (lmp's text): " .. tostring(why))
      end
    end)

    it("for the y_ documents of JSONTestSuite", function()
      local texts = {}
      for _, path in ipairs(list(SUITE_DIRS[1])) do
        local text = read(path)
        if path:match("/y_[^/]*$") and pcall(cj.decode, text) then
          texts[#texts + 1] = {text, path:match("[^/]*$")}
        end
      end
      assert.is_true(#texts >= 90, #texts .. " y_ documents")
      lmp_reads_under_gc_pressure(texts)
    end)

    it("for numbers.json", function()
      local whole, numbers = number_texts()
      local texts = {{whole, "numbers.json"}}
      for i = 1, #numbers, 3 do texts[#texts + 1] = {"[" .. numbers[i] .. "]", numbers[i]} end
      lmp_reads_under_gc_pressure(texts)
    end)
  end)
end)
