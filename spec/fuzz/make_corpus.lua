-- Writes the seed corpus of spec/fuzz/fuzz_decode: JSON texts and lmp
-- binary encodings of varied values, one file each.
--   build/lmp spec/fuzz/make_corpus.lua [DIR]   (DIR: spec/fuzz/corpus)
local lmp = require "lmp"
local codec = lmp.codec

local dir = arg[1] or "spec/fuzz/corpus"
-- Same names as fuzz_decode.c registers, so that these decode there.
local Point = {__index = {}}
codec.register("fuzz.Point", Point)
package.loaded["fuzz_mod"] = {answer = 42}

local function write(name, data)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end

-- JSON texts, as a peer in any language would send them.
local json = {
  empty_object = "{}", empty_array = "[]", null = "null", ["true"] = "true", ["false"] = "false",
  zero = "0", neg_zero = "-0", int = "-12345", float = "0.30000000000000004", exp = "1.5e-300",
  big = "1e308", tiny = "5e-324", bigint = "123456789012345678901234567890",
  string = '"hello"', escapes = '"\\" \\\\ \\/ \\b \\f \\n \\r \\t"',
  unicode = '"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\\u0000"', utf8 = '"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"',
  array = '[1, 2.5, "three", true, false, null, [], {}]',
  object = '{"a": 1, "b": [1, 2, {"c": null}], "d": {"e": "f"}, "": 0}',
  whitespace = ' \t\n\r[ \t\n\r1 \t\n\r, \t\n\r{ \t\n\r"a" \t\n\r: \t\n\r2 } ] ',
  nested = string.rep("[", 50) .. string.rep("]", 50),
  nested_objects = string.rep('{"a":', 30) .. "1" .. string.rep("}", 30),
  records = '[{"id":1,"name":"alpha","tags":["x","y"],"score":0.5,"ok":true},' ..
            '{"id":2,"name":"beta","tags":[],"score":-1e-3,"ok":false,"extra":null}]',
  duplicate_keys = '{"a":1,"a":2}',
}
for name, text in pairs(json) do write("json_" .. name .. ".json", text) end

-- Values whose encodings use the binary format (or JSON, where plain).
local shared = {1, 2, 3}
local cyc = {name = "cycle"}
cyc.self = cyc
local n = 0
local function helper(x) return x * 2 end
local counter = function() n = n + 1; return helper(n) end
local value = 0
local pair = {get = function() return value end, set = function(x) value = x end}
local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
local kt = {"key"}
local values = {
  nil_value = nil,
  nan = 0 / 0, inf = 1 / 0, ninf = -1 / 0, nzero = -0.0, denormal = 5e-324,
  int8 = -100, int32 = 2 ^ 31 - 1, double = 0.1 + 0.2, huge_int = 2 ^ 53 + 2,
  binary_string = "\0\1\2\xff\xfe\x80abc", long_string = string.rep("0123456789abcdef", 64),
  holes = {1, nil, 3, nil, 5},
  sparse = {[1] = "a", [100] = "b", [-1] = "c", [0] = "d"},
  mixed_keys = {1, 2, x = "y", [1.5] = "f", [true] = "t", [false] = "n", [kt] = "k", [1 / 0] = "inf"},
  shared = {shared, shared, {shared}},
  cycle = cyc,
  self_key = (function() local t = {}; t[t] = t; return t end)(),
  nested = (function() local r = {}; local t = r; for i = 1, 40 do t[1] = {i}; t = t[1] end; return r end)(),
  metatable = {p = setmetatable({x = 1, y = 2}, Point), q = setmetatable({}, Point)},
  modules = {s = string, m = math, custom = package.loaded["fuzz_mod"]},
  cfunctions = {sqrt = math.sqrt, fmt = string.format, print = print},
  counter = counter,
  shared_upvalue = pair,
  recursive = fact,
  closures_in_data = {fact, counter, {pair.get}, deep = {pair.set}},
  vararg = function(...) return select("#", ...), {...} end,
  plain_as_binary = {"binary", 1, 2.5, true, {a = {}}},
  null_and_nil = {lmp.null, nil, lmp.null},
}
for name, v in pairs(values) do
  write("bin_" .. name .. ".bin", codec.encode(v, name == "plain_as_binary" and {binary = true} or nil))
end
write("bin_nil.bin", codec.encode(nil))
write("bin_empty_table.bin", codec.encode({}, {binary = true}))
write("bin_records.bin", codec.encode(codec.decode(json.records), {binary = true}))
print("corpus written to " .. dir)
