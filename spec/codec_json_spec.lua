-- lmp.codec against the real lua-cjson, in both directions, on generated
-- plain data and on JSON edge cases; plain data read by a stock JSON parser
-- (Python's); and the JSONTestSuite parsing corpus.
--
-- Reproduce a failure with the seed its message prints:
--   LMP_SEED=<seed> build/lmp /usr/bin/busted spec/codec_json_spec.lua
local H = require "spec.support.helpers"
local lmp = require "lmp"
local cjson = require "cjson"
local codec = lmp.codec

local V = require "spec.support.values"
local SEED, new_rng, fmtnum, hex = V.SEED, V.new_rng, V.fmtnum, V.hex
local function show(v) return V.show(v, 60) end

local SPEC_DIR = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
local SUITE_DIR = SPEC_DIR .. "/fixtures/JSONTestSuite/test_parsing"




local same = V.deep_equal

local function is_codec_error(e)
  return type(e) == "table" and e.kind == "CodecError" and type(e.message) == "string"
end

-- Plain JSON data: nil-free arrays, string-keyed tables, finite numbers,
-- valid UTF-8 strings, booleans, cjson.null.
local function random_number(r)
  local k = r.int(1, 6)
  if k == 1 then
    return r.pick({0, -0.0, 1, -1, 0.1, 0.1 + 0.2, 1 / 3, 1e308, -1e308, 5e-324, 2.2250738585072014e-308,
                   1.7976931348623157e308, 2 ^ 53 - 1, -(2 ^ 53 - 1), 2 ^ 53, 2 ^ 63, 1e15, 1e16, 1e21,
                   123456.789, 3.141592653589793, 1e-7, 255, 256, -129, 2 ^ 31, -2 ^ 31 - 1})
  end
  local sign = r.chance(0.5) and -1 or 1
  if k == 2 then return sign * r.int(0, 2 ^ 30) end
  if k == 3 then return sign * r.int(0, 1000000) / r.pick({10, 100, 1000, 3, 7}) end
  local m = r.int(0, 2 ^ 26 - 1) * 2 ^ 26 + r.int(0, 2 ^ 26 - 1)
  if k == 4 then return sign * math.ldexp(m, -1074) end
  return sign * math.ldexp(1 + m / 2 ^ 52, r.int(-1022, 1023))
end

local function random_utf8(r)
  local n = r.chance(0.05) and r.int(100, 3000) or r.int(0, 16)
  local b = {}
  for i = 1, n do
    local k = r.int(1, 10)
    if k <= 5 then b[i] = string.char(r.int(32, 126))
    elseif k == 6 then b[i] = string.char(r.int(0, 31))
    elseif k == 7 then b[i] = r.pick({'"', "\\", "/", "\127"})
    else b[i] = r.pick({"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xef\xbf\xbf", "\xe4\xb8\xad",
                        "\xf4\x8f\xbf\xbf", "\xc2\x80", "\xe2\x80\xa8", "\xef\xbb\xbf"}) end
  end
  return table.concat(b)
end

local function gen_plain(r, depth, budget)
  budget.n = budget.n + 1
  local k = r.int(1, 10)
  if depth > 6 or budget.n > budget.max then k = r.int(1, 6) end
  if k == 1 then return r.chance(0.5) end
  if k == 2 then return cjson.null end
  if k <= 4 then return random_number(r) end
  if k <= 6 then return random_utf8(r) end
  local n = r.chance(0.1) and r.int(10, 100) or r.int(0, 6)
  local t = {}
  if k <= 8 then
    for i = 1, n do t[i] = gen_plain(r, depth + 1, budget) end
  else
    for _ = 1, n do t[random_utf8(r)] = gen_plain(r, depth + 1, budget) end
  end
  return t
end

local function new_value(r)
  return gen_plain(r, 0, {n = 0, max = r.chance(0.05) and 500 or r.int(1, 40)})
end

describe("lmp.codec and lua-cjson", function()
  it("lmp.null is cjson.null", function()
    assert.equal(cjson.null, lmp.null)
    assert.equal(cjson.null, codec.null)
    assert.equal(cjson.null, codec.decode("null"))
    assert.equal(cjson.null, codec.decode("[null]")[1])
    assert.equal("null", codec.encode(cjson.null))
    assert.equal("[null]", codec.encode({lmp.null}))
    assert.equal(lmp.null, cjson.decode(codec.encode({a = lmp.null})).a)
  end)

  it("cjson.decode(lmp.codec.encode(v)) deep-equals v for generated plain data (seed " .. SEED .. ")", function()
    local r = new_rng(SEED)
    for i = 1, 2000 do
      local v = new_value(r)
      local text = codec.encode(v)
      assert(text:byte(1) ~= 0xFF, string.format("seed %d case %d: plain data encoded in the binary format: %s",
        SEED, i, hex(text)))
      local ok, back = pcall(cjson.decode, text)
      assert(ok, string.format("seed %d case %d: cjson could not read %s: %s", SEED, i, show(text), tostring(back)))
      local eq, why = same(v, back)
      assert(eq, string.format("seed %d case %d: %s; text %s", SEED, i, tostring(why), show(text)))
    end
  end)

  it("lmp.codec.decode(cjson.encode(v)) deep-equals cjson.decode(cjson.encode(v)) (seed " .. SEED .. ")", function()
    local r = new_rng(SEED + 1)
    for i = 1, 2000 do
      local v = new_value(r)
      local text = cjson.encode(v)
      local ok, mine = pcall(codec.decode, text)
      assert(ok, string.format("seed %d case %d: lmp could not read %s: %s", SEED, i, show(text), tostring(mine)))
      local eq, why = same(cjson.decode(text), mine)
      assert(eq, string.format("seed %d case %d: %s; text %s", SEED, i, tostring(why), show(text)))
    end
  end)

  it("round-trips generated plain data through its own JSON text (seed " .. SEED .. ")", function()
    local r = new_rng(SEED + 2)
    for i = 1, 1000 do
      local v = new_value(r)
      local eq, why = same(v, codec.decode(codec.encode(v)))
      assert(eq, string.format("seed %d case %d: %s", SEED, i, tostring(why)))
    end
  end)

  describe("JSON edge cases, decoded by both", function()
    local cases = {
      -- escapes
      [["\" \\ \/ \b \f \n \r \t"]], [["a\/b"]], [["\\\\\""]],
      [["\u0041\u00e9\u20ac\ud83d\ude00\u0000x"]], [["\uD83D\uDE00"]], [["\u0000"]], [["a\u0000b"]],
      [["\u001f\u007f\u0080\u07ff\u0800\uffff"]], [["\udbff\udfff"]], [["\ud800\udc00"]], [["\uFEFF"]],
      [["\u2028\u2029"]], [["é€😀中"]], [[""]], [[" "]],
      -- numbers
      "0", "-0", "1", "-1", "1e5", "1E5", "1e-5", "1E-5", "1e+5", "0.5e+3", "0.5E-3", "-0.0", "-0e0",
      "0e0", "1.0", "100e-2", "1E+2", "0.1", "0.30000000000000004", "1e308", "-1e308", "5e-324",
      "4.9e-324", "2.2250738585072014e-308", "2.2250738585072011e-308", "1.7976931348623157e308",
      "9007199254740991", "9007199254740992", "9007199254740993", "-9007199254740993",
      "18446744073709551615", "18446744073709551616", "-9223372036854775808", "9223372036854775807",
      "123456789012345678901234567890", "0.1000000000000000055511151231257827021181583404541015625",
      "1.00000000000000011102230246251565404236316680908203125",
      "1.00000000000000011102230246251565404236316680908203126",
      "7.038531e-26", "9007199254740993.0", "0.000001", "1e-7", "123.456e7", "1e22", "1e23",
      "8.41e21", "5e-310", "2.5e-323", "[1e5,1E-5,-0,0.5e+3]",
      -- literals and structure
      "true", "false", "null", "[true,false,null]", '{"n":null}',
      "{}", "[]", "[[]]", "[{}]", '{"a":{}}', '{"a":[]}', "[[[[]]]]", '[{},[],{"":[]}]', '{"":0}',
      '{"a":1,"a":2}', '{"a":{"b":{"c":[1,[2,[3]]]}}}',
      -- whitespace everywhere
      " \t\n\r[ \t\n\r1 \t\n\r, \t\n\r{ \t\n\r\"a\" \t\n\r: \t\n\r2 \t\n\r} \t\n\r, \t\n\r\"s\" \t\n\r] \t\n\r",
      "  0  ", "\n\"x\"\n", " {} ", "[ ]", "{ }", "\r\n[\r\n]\r\n",
      -- long ones
      '"' .. string.rep("abc\\n\\u00e9\\ud83d\\ude00", 20000) .. '"',
      "[" .. string.rep("1.5,", 20000) .. "2]",
      "{" .. string.rep('"k":1,', 5000) .. '"z":2}',
      string.rep("[", 500) .. string.rep("]", 500),
    }
    it("decode to what cjson.decode gives", function()
      for i, text in ipairs(cases) do
        local ok_c, expect = pcall(cjson.decode, text)
        assert(ok_c, "cjson rejects case " .. i .. ": " .. tostring(expect))
        local ok, got = pcall(codec.decode, text)
        assert(ok, "case " .. i .. " " .. show(text) .. ": lmp raised " .. tostring(got))
        local eq, why = same(expect, got)
        assert(eq, "case " .. i .. " " .. show(text) .. ": " .. tostring(why))
      end
    end)

    it("decode random number texts as cjson (strtod) does (seed " .. SEED .. ")", function()
      local r = new_rng(SEED + 3)
      for i = 1, 5000 do
        local parts = {}
        if r.chance(0.3) then parts[#parts + 1] = "-" end
        local nd = r.pick({1, 1, 2, 5, 9, 15, 16, 17, 18, 19, 20, 25, 40})
        local digits = {}
        for d = 1, nd do digits[d] = string.char(48 + r.int(d == 1 and nd > 1 and 1 or 0, 9)) end
        parts[#parts + 1] = table.concat(digits)
        if r.chance(0.5) then
          local fd = {}
          for d = 1, r.int(1, 25) do fd[d] = string.char(48 + r.int(0, 9)) end
          parts[#parts + 1] = "." .. table.concat(fd)
        end
        if r.chance(0.5) then
          parts[#parts + 1] = r.pick({"e", "E"}) .. r.pick({"", "+", "-"}) .. tostring(r.int(0, 330))
        end
        local text = table.concat(parts)
        local expect = cjson.decode(text)
        local ok, got = pcall(codec.decode, text)
        -- out of the range of doubles: implementation-defined (RFC 8259 6)
        if not ok and (expect == 1 / 0 or expect == -1 / 0) and is_codec_error(got) then
          ok, got = true, expect
        end
        assert(ok, string.format("seed %d case %d: %s: lmp raised %s", SEED, i, text, tostring(got)))
        assert(expect == got and (expect ~= 0 or 1 / expect == 1 / got) or (expect ~= expect and got ~= got),
          string.format("seed %d case %d: %s decoded to %s, strtod gives %s", SEED, i, text, fmtnum(got), fmtnum(expect)))
      end
    end)
  end)

  it("a key given twice in an object keeps its last value, as in cjson", function()
    -- The decoder may fill an object's table in any order when its keys are
    -- known to differ: a repeated key must never let the first value win.
    local texts = {
      '{"a":1,"a":2}', '{"a":1,"b":2,"a":3}', '{"a":{"a":1,"a":2},"a":{"b":[1,{"c":1,"c":2}]}}',
      '{"\\u0061":1,"a":2}', '{"a":1,"\\u0061":2}', '{"ab":1,"a\\u0062":2,"ab":3}',
    }
    local wide, parts = {}, {}
    for i = 1, 40 do parts[#parts + 1] = string.format('"k%d":%d', i % 17, i) end
    texts[#texts + 1] = "{" .. table.concat(parts, ",") .. "}"
    for depth = 1, 20 do wide[#wide + 1] = '{"x":1,"y":2,"z":3,"w":' end
    texts[#texts + 1] = table.concat(wide) .. '{"x":0,"x":9}' .. string.rep(',"x":4}', 20)
    for n = 1, 40 do  -- the repeated key at every position of objects of every size
      for at = 1, n do
        local p = {}
        for i = 1, n do p[i] = string.format('"k%d":%d', i, i) end
        p[#p + 1] = string.format('"k%d":-1', at)
        texts[#texts + 1] = "{" .. table.concat(p, ",") .. "}"
      end
    end
    for _, text in ipairs(texts) do
      local eq, why = same(cjson.decode(text), codec.decode(text))
      assert(eq, string.format("%s: %s", show(text), tostring(why)))
    end
  end)

  describe("the JSON text of plain data", function()
    it("starts like JSON text, never with 0xFF", function()
      for _, v in ipairs({{}, {1}, {a = 1}, "s", 1, -1, 0.5, true, false, lmp.null, {{}}, {""}}) do
        local text = codec.encode(v)
        assert.truthy(text:find("^[%s{%[\"%-0-9tfn]"), show(text))
      end
    end)

    it("is JSON for arrays however they were built, and not for near-arrays", function()
      -- The encoder writes an array while its keys come in order and counts
      -- the rest when they do not: the order a table is walked in must not
      -- change what the text says.
      local backwards, hashed, sparse_then_filled = {}, {}, {}
      for i = 50, 1, -1 do backwards[i] = i * 10 end
      for i = 1, 50 do hashed[i] = "v" .. i end
      for i = 50, 1, -1 do hashed[i] = nil; hashed[i] = "v" .. i end
      for i = 1, 40, 2 do sparse_then_filled[i] = i end
      for i = 2, 40, 2 do sparse_then_filled[i] = i end
      local grown = {}
      for i = 1, 8 do grown[i] = {i} end
      grown[20] = 1; grown[20] = nil
      for _, v in ipairs({backwards, hashed, sparse_then_filled, grown, {[2] = "b", [1] = "a", [3] = "c"}}) do
        local text = codec.encode(v)
        assert(text:sub(1, 1) == "[", show(text))
        assert.same(v, cjson.decode(text))
        assert.same(v, codec.decode(text))
      end
      -- not arrays: a hole, key 0, a float key, a string after numbers, a
      -- negative key, a number after strings
      local holes = {1, 2, 3}; holes[2] = nil
      local zero = {[0] = 0, 1, 2}
      local mixed = {1, 2, x = 3}
      local obj_then_num = {x = 1}; obj_then_num[1] = 2
      for _, v in ipairs({holes, zero, {1, [2.5] = 2}, mixed, {[-1] = 1, 2}, obj_then_num, {[3] = 3, [1] = 1}}) do
        local text = codec.encode(v)
        assert.equal(0xFF, text:byte(1))
        local ok, why = V.deep_equal(v, codec.decode(text))
        assert(ok, why)
      end
    end)

    it("is read by a stock JSON parser (Python's json)", function()
      local f = io.open("/usr/bin/python3", "rb")
      if not f then
        pending("/usr/bin/python3 is absent")
        return
      end
      f:close()
      local dir = H.tmpdir()
      local function canon(text)
        local path = H.write(dir .. "/in.json", text)
        local p = io.popen("timeout 20 /usr/bin/python3 -c 'import json,sys; " ..
          "print(json.dumps(json.loads(sys.stdin.read()), sort_keys=True))' < " .. H.quote(path) .. " 2>&1")
        local out = p:read("*a")
        local ok = p:close()
        return out, ok
      end
      local cases = {
        {{a = 1, b = {1, 2.5, "x"}, c = lmp.null, d = true, e = false}, '{"a":1,"b":[1,2.5,"x"],"c":null,"d":true,"e":false}'},
        {0.1 + 0.2, "0.30000000000000004"},
        {{1e308, 5e-324, 2 ^ 53 - 1, -1.5e-10, 1e21}, "[1e308,5e-324,9007199254740991,-1.5e-10,1e21]"},
        {"\0\1\31\"\\/\n\t\127 é€😀", '"\\u0000\\u0001\\u001f\\"\\\\/\\n\\t\\u007f \\u00e9\\u20ac\\ud83d\\ude00"'},
        {{[""] = {}, x = {{}, {{}}}}, '{"":{},"x":[{},[{}]]}'},
        {{["\xe2\x80\xa8"] = "\xe2\x80\xa9"}, '{"\\u2028":"\\u2029"}'},
        {"", '""'},
      }
      for i, c in ipairs(cases) do
        local got, ok1 = canon(codec.encode(c[1]))
        local expect, ok2 = canon(c[2])
        assert(ok2, "python rejects the expected text of case " .. i .. ": " .. expect)
        assert(ok1, "python rejects lmp's text of case " .. i .. ": " .. got .. " text: " .. codec.encode(c[1]))
        assert.equal(expect, got)
      end
    end)
  end)
end)

describe("JSONTestSuite conformance", function()
  local function list(prefix)
    local p = io.popen("timeout 20 ls " .. H.quote(SUITE_DIR))
    local files = {}
    for name in p:read("*a"):gmatch("[^\n]+") do
      if name:sub(1, #prefix) == prefix and name:match("%.json$") then files[#files + 1] = name end
    end
    p:close()
    return files
  end

  local function read(name)
    local f = assert(io.open(SUITE_DIR .. "/" .. name, "rb"))
    local s = f:read("*a")
    f:close()
    return s
  end

  local function timed_decode(text)
    local t0 = os.clock()
    local ok, v = pcall(codec.decode, text)
    local ok2, v2 = pcall(codec.decode, text, {safe = true})
    return ok, v, os.clock() - t0, ok2, v2
  end

  it("the corpus is in the project", function()
    assert.is_true(#list("y_") >= 90)
    assert.is_true(#list("n_") >= 180)
    assert.is_true(#list("i_") >= 30)
  end)

  it("accepts every y_ file, as cjson reads it where cjson accepts it", function()
    local failures = {}
    for _, name in ipairs(list("y_")) do
      local text = read(name)
      local ok, v, dt, ok2 = timed_decode(text)
      if not ok then
        failures[#failures + 1] = name .. ": " .. tostring(v)
      elseif not ok2 then
        failures[#failures + 1] = name .. ": rejected in safe mode"
      elseif dt > 2 then
        failures[#failures + 1] = name .. ": took " .. dt .. " s"
      else
        local okc, expect = pcall(cjson.decode, text)
        if okc then
          local eq, why = same(expect, v)
          if not eq then failures[#failures + 1] = name .. ": differs from cjson: " .. why end
        end
      end
    end
    assert(#failures == 0, table.concat(failures, "\n"))
  end)

  it("rejects every n_ file with a CodecError", function()
    local failures = {}
    for _, name in ipairs(list("n_")) do
      local ok, e, dt, ok2, e2 = timed_decode(read(name))
      if ok then
        failures[#failures + 1] = name .. ": accepted (" .. show(e) .. ")"
      elseif not is_codec_error(e) then
        failures[#failures + 1] = name .. ": raised a non-CodecError: " .. tostring(e)
      elseif ok2 or not is_codec_error(e2) then
        failures[#failures + 1] = name .. ": safe mode did not raise a CodecError: " .. tostring(e2)
      elseif dt > 2 then
        failures[#failures + 1] = name .. ": took " .. dt .. " s"
      end
    end
    assert(#failures == 0, #failures .. " n_ files:\n" .. table.concat(failures, "\n"))
  end)

  it("decodes or rejects with a CodecError every i_ file", function()
    local failures = {}
    for _, name in ipairs(list("i_")) do
      local ok, e, dt, ok2, e2 = timed_decode(read(name))
      if not ok and not is_codec_error(e) then
        failures[#failures + 1] = name .. ": raised a non-CodecError: " .. tostring(e)
      elseif not ok2 and not is_codec_error(e2) then
        failures[#failures + 1] = name .. ": safe mode raised a non-CodecError: " .. tostring(e2)
      elseif dt > 2 then
        failures[#failures + 1] = name .. ": took " .. dt .. " s"
      end
    end
    assert(#failures == 0, table.concat(failures, "\n"))
  end)
end)
