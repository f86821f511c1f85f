-- lmp.codec errors: encode errors name the path to the value; safe mode
-- refuses code; malformed, truncated, mutated and hostile input raises a
-- CodecError -- never a crash, a hang, another kind of error, or unbounded
-- memory.
--
-- Reproduce a failure with the seed its message prints:
--   LMP_SEED=<seed> build/lmp /usr/bin/busted spec/codec_errors_spec.lua
local H = require "spec.support.helpers"
local lmp = require "lmp"
local codec = lmp.codec

local V = require "spec.support.values"
local SEED = V.SEED
local function hex(s, n) return V.hex(s, n or 120) end


local function is_codec_error(e)
  return type(e) == "table" and e.kind == "CodecError" and type(e.message) == "string"
end

-- Calls f(...), which must raise a CodecError; returns the error.
local function codec_error(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected a CodecError, got success")
  assert(is_codec_error(e), "expected a CodecError, got " .. tostring(e))
  assert.equal("lmp.CodecError: " .. e.message, tostring(e):sub(1, 16 + #e.message))
  return e
end

-- Either decodes or raises a CodecError; anything else fails with `what`.
local function decodes_or_codec_error(s, opts, what)
  local ok, e = pcall(codec.decode, s, opts)
  assert(ok or is_codec_error(e), what .. ": raised a non-CodecError: " .. tostring(e) .. " for input " .. hex(s))
  return ok, e
end

describe("lmp.codec errors", function()
  it("are lmp error tables of kind CodecError", function()
    local e = codec_error(codec.decode, "[1,")
    assert.matches("^lmp%.CodecError: ", tostring(e))
    assert.equal(lmp.errors.CodecError, e.kind)
    e = codec_error(codec.encode, coroutine.create(function() end))
    assert.matches("^lmp%.CodecError: ", tostring(e))
  end)

  describe("encode names the path to what cannot be encoded", function()
    local co = coroutine.create(function() end)

    it("a thread deep in a value", function()
      local e = codec_error(codec.encode, {args = {1, {handler = co}}})
      assert.equal("value.args[2].handler: cannot encode a thread", e.message)
      assert.equal("lmp.CodecError: value.args[2].handler: cannot encode a thread", tostring(e))
      e = codec_error(codec.encode, co)
      assert.equal("value: cannot encode a thread", e.message)
      e = codec_error(codec.encode, {{}, {{co}}})
      assert.equal("value[2][1][1]: cannot encode a thread", e.message)
      e = codec_error(codec.encode, {["a b"] = co})
      assert.truthy(e.message:find('^value%[["\']a b["\']%]: cannot encode a thread'), e.message)
    end)

    it("starts at the role given", function()
      local e = codec_error(codec.encode, {1, {handler = co}}, {role = "args"})
      assert.equal("args[2].handler: cannot encode a thread", e.message)
    end)

    it("foreign userdata", function()
      local e = codec_error(codec.encode, {x = io.stdout})
      assert.matches("^value%.x: ", e.message)
      assert.truthy(e.message:find("userdata"), e.message)
      e = codec_error(codec.encode, {list = {1, 2, io.stderr}})
      assert.matches("^value%.list%[3%]: ", e.message)
      e = codec_error(codec.encode, newproxy and newproxy(true) or io.stdin)
      assert.matches("^value: ", e.message)
    end)

    it("a C function that no loaded module holds", function()
      local e = codec_error(codec.encode, {f = string.gmatch("a", "a")})
      assert.matches("^value%.f: ", e.message)
      e = codec_error(codec.encode, {g = coroutine.wrap(function() end)})
      assert.matches("^value%.g: ", e.message)
    end)

    it("inside a closure's upvalues, keys, and tables with metatables", function()
      local captured = co
      local e = codec_error(codec.encode, {f = function() return captured end})
      assert.matches("^value%.f", e.message)
      assert.truthy(e.message:find("thread"), e.message)
      e = codec_error(codec.encode, {[co] = 1})
      assert.matches("^value", e.message)
      assert.truthy(e.message:find("thread"), e.message)
      e = codec_error(codec.encode, {a = {b = setmetatable({}, {})}})
      assert.matches("^value%.a%.b", e.message)
      assert.truthy(e.message:find("register"), e.message)
    end)

    it("leaves the codec usable afterwards", function()
      for _ = 1, 100 do
        pcall(codec.encode, {deep = {{{co}}}})
      end
      assert.equal("[1,2]", codec.encode({1, 2}))
    end)
  end)

  describe("decode with {safe = true}", function()
    local n = 0
    local counter = function() n = n + 1; return n end

    it("refuses functions, module references and C function references", function()
      for name, v in pairs({
        ["a Lua function"] = counter,
        ["a nested function"] = {1, {f = function() end}},
        ["a module"] = string,
        ["a module in data"] = {lib = math},
        ["a C function"] = math.sqrt,
        ["a C function in data"] = {fmt = string.format},
        ["print"] = {p = print},
      }) do
        local enc = codec.encode(v)
        assert(pcall(codec.decode, enc), name .. " does not decode in normal mode")
        local ok, e = pcall(codec.decode, enc, {safe = true})
        assert(not ok, name .. " was decoded in safe mode")
        assert(is_codec_error(e), name .. ": " .. tostring(e))
      end
    end)

    it("accepts plain data, binary data and registered metatables", function()
      local mt = {}
      codec.register("spec.errors.Safe", mt)
      local t = {0 / 0, 1 / 0, "\0\xff", [1.5] = true}
      t.self = t
      local d = codec.decode(codec.encode(t), {safe = true})
      assert.equal(d, d.self)
      assert.equal(mt, getmetatable(codec.decode(codec.encode(setmetatable({1}, mt)), {safe = true})))
      assert.same({a = {1, 2}}, codec.decode('{"a":[1,2]}', {safe = true}))
    end)
  end)

  describe("malformed input", function()
    local Point = {}
    codec.register("spec.errors.Point", Point)

    local function complex_values()
      local shared = {1, 2, 3}
      local cyc = {name = "c"}
      cyc.self = cyc
      local k = 0
      local function helper(x) return x + 1 end
      return {
        {1, 2, 3, "four", {five = 5, six = {}}, true, false, lmp.null, -1.5e-300, "caf\xc3\xa9"},
        {a = {b = {c = {d = "deep"}}}, list = {1.5, -2, 1e300, 2 ^ 53 - 1}},
        {0 / 0, 1 / 0, -1 / 0, -0.0, 2 ^ 53 + 2, 5e-324, 255, 65536, -2 ^ 31},
        {[1.5] = "f", [true] = "t", [{}] = "k", "x", nil, "z", [-3] = "neg"},
        {shared, shared, cyc, {cyc}},
        string.rep("\0\xff", 50),
        {p = setmetatable({x = 1, y = 2}, Point), q = setmetatable({}, Point)},
        {s = string, sq = math.sqrt, fmt = string.format},
        {f = function() k = k + 1; return helper(k) end, g = function() return k end},
      }
    end

    it("every strict prefix of a binary encoding raises a CodecError", function()
      for i, v in ipairs(complex_values()) do
        local enc = codec.encode(v, {binary = true})
        assert.equal(0xFF, enc:byte(1))
        for len = 0, #enc - 1 do
          local prefix = enc:sub(1, len)
          for _, opts in ipairs({{}, {safe = true}}) do
            local ok, e = pcall(codec.decode, prefix, opts)
            assert(not ok, string.format("value %d: the %d-byte prefix of a %d-byte encoding decoded", i, len, #enc))
            assert(is_codec_error(e), string.format("value %d, %d-byte prefix: %s", i, len, tostring(e)))
          end
        end
        assert(pcall(codec.decode, enc))
      end
    end)

    it("every prefix of a JSON encoding decodes or raises a CodecError", function()
      for i, v in ipairs(complex_values()) do
        local enc = codec.encode(v)
        if enc:byte(1) ~= 0xFF then
          local last = enc:find("%S%s*$")
          for len = 0, #enc - 1 do
            local ok = decodes_or_codec_error(enc:sub(1, len), nil,
              string.format("value %d, %d-byte prefix", i, len))
            if len < last and enc:find("^%s*[%[{]") then
              assert(not ok, string.format("value %d: the truncated JSON %q decoded", i, enc:sub(1, len)))
            end
          end
        end
      end
      for _, text in ipairs({'{"a":[1,2,{"b":"c\\u00e9\\ud83d\\ude00"}],"d":-1.5e-7,"e":true,"f":null}',
                             '[1e5, "x\\n", [], {}, false]', '"a string \\" with escapes"'}) do
        for len = 0, #text - 1 do
          local ok = decodes_or_codec_error(text:sub(1, len), nil, "prefix " .. len)
          assert(not ok, "the truncated JSON " .. text:sub(1, len) .. " decoded")
        end
      end
    end)

    -- The heavy loops run in a child process, so that a crash, a sanitizer
    -- report or a hang fails this spec instead of ending the run.
    local child = [==[
      local lmp = require "lmp"
      local codec = lmp.codec
      local SEED = tonumber(arg[1])
      local WHAT = arg[2]
      local s = SEED % 2147483646 + 1
      local function rnd() s = (s * 48271) % 2147483647; return s end
      local function int(a, b) return a + rnd() % (b - a + 1) end
      local function hex(x) return (x:sub(1, 200):gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
      local Point = {}
      codec.register("spec.errors.Point", Point)
      local shared = {1, 2, 3}
      local cyc = {name = "c"}; cyc.self = cyc
      local data = {
        {1, 2, 3, "four", {five = 5, six = {}}, true, false, lmp.null, -1.5e-300, "caf\xc3\xa9"},
        {a = {b = {c = {d = "deep"}}}, list = {1.5, -2, 1e300, 2 ^ 53 - 1}, s = string.rep("x", 300)},
        {0 / 0, 1 / 0, -1 / 0, -0.0, 2 ^ 53 + 2, 5e-324, 255, 65536, -2 ^ 31, "\0\xff"},
        {[1.5] = "f", [true] = "t", [{}] = "k", "x", nil, "z", [-3] = "neg"},
        {shared, shared, cyc, {cyc}, {{{{{}}}}}},
        {p = setmetatable({x = 1, y = 2}, Point), q = setmetatable({}, Point)},
        {s = string, sq = math.sqrt, fmt = string.format},
      }
      local k = 0
      local function helper(x) return x + 1 end
      local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
      local code = {
        {f = function() k = k + 1; return helper(k) end, g = function() return k end},
        {fact, {1, 2, function(x) return string.format("%d", x) end}},
        function(a, b, ...) local t = {a, b, ...}; for i = 1, #t do t[i] = t[i] * 2 end return t, cyc end,
      }
      local encodings = {}
      local function add(v) encodings[#encodings + 1] = codec.encode(v); encodings[#encodings + 1] = codec.encode(v, {binary = true}) end
      for _, v in ipairs(data) do add(v) end
      if WHAT == "code" then encodings = {}; for _, v in ipairs(code) do add(v) end end
      local function peak_rss()
        local f = io.open("/proc/self/status")
        if not f then return 0 end
        local st = f:read("*a")
        f:close()
        return tonumber(st:match("VmHWM:%s*(%d+)")) or 0
      end
      local fails, count = 0, 0
      local base = collectgarbage("count")
      local peak = base
      local function check(input, label)
        for _, opts in ipairs({false, {safe = true}}) do
          count = count + 1
          local ok, e = pcall(codec.decode, input, opts or nil)
          if not ok and not (type(e) == "table" and e.kind == "CodecError" and type(e.message) == "string") then
            fails = fails + 1
            if fails <= 20 then
              print(string.format("FAIL seed %d %s%s: %s; input %s", SEED, label, opts and " (safe)" or "", tostring(e), hex(input)))
            end
          end
        end
        if count % 64 == 0 then
          local c = collectgarbage("count")
          if c > peak then peak = c end
          if c > base + 65536 then collectgarbage() end
        end
      end
      local function mutate(enc)
        local b = {enc:byte(1, -1)}
        for _ = 1, int(1, 4) do
          local op = int(1, 8)
          local n = #b
          local i = int(1, math.max(n, 1))
          if op == 1 and n > 0 then b[i] = (b[i] + 2 ^ int(0, 7)) % 256               -- bit-ish change
          elseif op == 2 and n > 0 then b[i] = ({0, 0xFF, 0x7F, 0x80, 0x01, int(0, 255)})[int(1, 6)]
          elseif op == 3 then table.insert(b, i, int(0, 255))
          elseif op == 4 and n > 0 then table.remove(b, i)
          elseif op == 5 and n > 0 then for j = #b, i, -1 do b[j] = nil end           -- truncate
          elseif op == 6 and n > 1 then                                                -- duplicate a slice
            local j = int(i, n); for p = i, j do table.insert(b, j + 1 + (p - i), b[p]) end
          elseif op == 7 and n > 3 then for p = i, math.min(n, i + 3) do b[p] = 0xFF end -- huge varint
          elseif op == 8 and n > 1 then local j = int(1, n); b[i], b[j] = b[j], b[i] end
        end
        local out = {}
        for j = 1, #b, 4000 do out[#out + 1] = string.char(unpack(b, j, math.min(#b, j + 3999))) end
        return table.concat(out)
      end
      if WHAT == "data" or WHAT == "code" then
        local n = tonumber(arg[3])
        for i = 1, n do
          local enc = encodings[int(1, #encodings)]
          check(mutate(enc), "mutation " .. i)
        end
      elseif WHAT == "lengths" then
        -- LEB128-style and other huge numbers written over, or before, each
        -- byte of small encodings: wherever a length or count is read, it
        -- must be checked against the input before anything is allocated.
        local huge = {
          "\x80\x80\x80\x80\x10", "\xff\xff\xff\xff\x0f", "\x80\x80\x80\x80\x80\x80\x40",
          "\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
          string.rep("\xff", 20) .. "\x01", "\xff\xff\xff\x7f", "\xff\xff\xff\xff\x07",
        }
        local samples = {codec.encode("abcdef", {binary = true}), codec.encode({}, {binary = true}),
                         codec.encode({1, 2, x = 3}, {binary = true}), codec.encode({"s", {t = "u"}}, {binary = true}),
                         codec.encode({t = setmetatable({}, Point)}), codec.encode(math.sqrt), codec.encode(string)}
        -- (encoded functions are the "code" mutations' business)
        local rss0 = peak_rss()
        for si, enc in ipairs(samples) do
          for pos = 2, #enc do
            for hi, h in ipairs(huge) do
              check(enc:sub(1, pos - 1) .. h .. enc:sub(pos + 1), string.format("sample %d byte %d length %d (over)", si, pos, hi))
              check(enc:sub(1, pos - 1) .. h .. enc:sub(pos), string.format("sample %d byte %d length %d (before)", si, pos, hi))
              local c = collectgarbage("count")
              if c > peak then peak = c end
            end
            collectgarbage()
          end
        end
        if peak_rss() - rss0 > 1024 * 1024 then
          fails = fails + 1
          print(string.format("FAIL peak RSS grew by %d KB", peak_rss() - rss0))
        end
      elseif WHAT == "deep_encode" then
        local function deep(n, field)
          local root = {}
          local t = root
          for _ = 1, n do t[field] = {}; t = t[field] end
          return root
        end
        local function chain(n)
          local f = function() return 0 end
          for _ = 1, n do local prev = f; f = function() return prev() + 1 end end
          return f
        end
        for _, c in ipairs({{"array 4001", deep(4001, 1)}, {"array 100000", deep(100000, 1)},
                            {"object 3999", deep(3999, "a")}, {"object 100000", deep(100000, "a")},
                            {"closures 20000", chain(20000)}}) do
          for _, opts in ipairs({{}, {binary = true}}) do
            count = count + 1
            local ok, e = pcall(codec.encode, c[2], opts)
            if not ok and not (type(e) == "table" and e.kind == "CodecError" and type(e.message) == "string") then
              fails = fails + 1
              print(string.format("FAIL encode %s%s: %s", c[1], opts.binary and " (binary)" or "", tostring(e):sub(1, 300)))
            elseif not ok and not e.message:find("^value") then
              fails = fails + 1
              print(string.format("FAIL encode %s: the message does not start with the path: %s", c[1], e.message:sub(1, 300)))
            end
            io.stdout:flush()
          end
        end
      elseif WHAT == "garbage" then
        local starts = {"", "\255", "\255\1", "[", "{", '{"', '"', "-", "1", "t", "n", "\255\1\8", "\255\1\7", "\255\1\11"}
        local tokens = {"[", "]", "{", "}", ",", ":", '"', "\\", "\\u", "d83d", "1", "-", "e", ".", "true", "null", "fals", " ", "\0", "\255"}
        for i = 1, tonumber(arg[3]) do
          local parts = {starts[int(1, #starts)]}
          local kind = int(1, 2)
          for j = 1, int(0, 64) do
            parts[#parts + 1] = kind == 1 and string.char(int(0, 255)) or tokens[int(1, #tokens)]
          end
          check(table.concat(parts), "garbage " .. i)
        end
      end
      collectgarbage()
      io.write(string.format("DONE %d decodes, %d failures, Lua heap peak %.0f KB (base %.0f KB)\n", count, fails, peak, base))
      os.exit(fails == 0 and 0 or 1)
    ]==]

    local function run_child(what, n, timeout)
      local dir = H.tmpdir()
      local script = H.write(dir .. "/child.lua", child)
      local r = H.lmp_run({script, tostring(SEED), what, tostring(n)}, {timeout = timeout or 120})
      local msg = string.format("seed %d, %s: child exited %s\n%s\n%s", SEED, what, tostring(r.status),
        r.stdout, r.stderr:sub(1, 4000))
      assert(r.status == 0, msg)
      assert(r.stdout:find("DONE"), msg)
      local peak, base = r.stdout:match("peak (%d+) KB %(base (%d+) KB%)")
      assert(tonumber(peak) - tonumber(base) < 256 * 1024, "Lua heap grew too much: " .. msg)
    end

    it("seeded random mutations of valid data encodings decode or raise a CodecError (seed " .. SEED .. ")", function()
      run_child("data", 6000)
    end)

    it("seeded random mutations of encoded functions decode or raise a CodecError (seed " .. SEED .. ")", function()
      run_child("code", 3000)
    end)

    it("random garbage decodes or raises a CodecError (seed " .. SEED .. ")", function()
      run_child("garbage", 4000)
    end)

    it("forged string ids and references to tables not marked shared raise a CodecError", function()
      -- version 2: \16 defines a string (gets the next id), \17 refers to one,
      -- a table tag with 0x40 is one that a reference (\10) points to
      local cases = {
        {"\255\2\17\0", "reference to an unknown string"},
        {"\255\2\8\2\0\16\1a\17\1", "reference to an unknown string"},
        {"\255\2\16\0", "string with an id is 0 bytes long"},
        {"\255\2\16\65" .. string.rep("x", 65), "string with an id is 65 bytes long"},
        {"\255\2\16\5ab", "count larger than the input"},
        {"\255\2\17\255\255\255\255\255\255\255\255\255\1", "reference to an unknown string"},
        {"\255\2\8\2\0\8\0\0\10\1", "reference to an unknown object"},   -- {{}, ref} unmarked
        {"\255\2\8\1\0\10\0", "reference to an unknown object"},           -- a cycle, unmarked
        {"\255\4\0", "unsupported format version 4"},
        {"\255\0\0", "unsupported format version 0"},
      }
      for _, c in ipairs(cases) do
        local e = codec_error(codec.decode, c[1])
        assert(e.message:find(c[2], 1, true), hex(c[1]) .. ": " .. e.message)
      end
      -- the same references, marked, decode; and version 1 keeps every table
      local d = codec.decode("\255\2\8\2\0\72\0\0\10\1")
      assert.equal(d[1], d[2])
      d = codec.decode("\255\2\72\1\0\10\0")
      assert.equal(d, d[1])
      d = codec.decode("\255\1\8\2\0\8\0\0\10\1")
      assert.equal(d[1], d[2])
      d = codec.decode("\255\2\8\3\0\16\2ab\17\0\17\0")
      assert.same({"ab", "ab", "ab"}, d)
    end)

    it("huge declared lengths raise a CodecError without allocating them", function()
      run_child("lengths", 0)
    end)

    -- Derives, from the encodings of {} and {{}}, the chunk that one more
    -- level of nesting adds, without knowing the format.
    local function nested_binary(depth)
      local e0 = codec.encode({}, {binary = true})
      local e1 = codec.encode({{}}, {binary = true})
      local e2 = codec.encode({{{}}}, {binary = true})
      local k = #e1 - #e0
      for i = 0, #e0 do
        local chunk = e1:sub(i + 1, i + k)
        if e1 == e0:sub(1, i) .. chunk .. e0:sub(i + 1) and e2 == e0:sub(1, i) .. chunk .. chunk .. e0:sub(i + 1) then
          return e0:sub(1, i) .. string.rep(chunk, depth) .. e0:sub(i + 1)
        end
      end
      error("could not derive the nesting chunk")
    end

    it("nesting far beyond the limit raises a CodecError, in both formats", function()
      local inputs = {
        string.rep("[", 100000),
        string.rep("[", 100000) .. string.rep("]", 100000),
        string.rep('{"a":', 100000) .. "1" .. string.rep("}", 100000),
        string.rep('[{"a":', 50000),
        nested_binary(100000),
      }
      for i, s in ipairs(inputs) do
        for _, opts in ipairs({{}, {safe = true}}) do
          local e = codec_error(codec.decode, s, opts)
          assert.truthy(e.message:find("deep") or e.message:find("depth") or e.message:find("nest"),
            "input " .. i .. ": " .. e.message)
        end
      end
      -- 1000 levels of the binary format are fine
      local d = codec.decode(nested_binary(1000))
      for _ = 1, 1000 do d = d[1] end
      assert.same({}, d)
    end)

    it("encoding nesting far beyond the limit raises a CodecError (in a child process)", function()
      run_child("deep_encode", 0)
    end)

    it("respects {max_depth = n}", function()
      local text = "[[[[1]]]]"
      assert.same({{{{1}}}}, codec.decode(text, {max_depth = 10}))
      codec_error(codec.decode, text, {max_depth = 2})
      codec_error(codec.decode, nested_binary(20), {max_depth = 5})
      assert.is_table(codec.decode(nested_binary(20), {max_depth = 50}))
    end)

    it("rejects trailing garbage and empty input", function()
      for _, s in ipairs({"", " ", "[1]x", "[1] [2]", "1 2", "\255", "\255\1", "nul", "tru", "[1,]", '{"a":1,}',
                          "\0", "[1]\0", codec.encode(0 / 0) .. "x", codec.encode({1, nil, 3}) .. "\0"}) do
        codec_error(codec.decode, s)
      end
    end)
  end)
end)
