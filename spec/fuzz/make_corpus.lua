-- Writes the seed corpora of the libFuzzer targets, one file per seed:
--   DIR/decode     fuzz_decode: JSON texts and lmp binary encodings of
--                  varied values
--   DIR/listener   fuzz_listener: a flags byte, then what the peer of a
--                  Listener or Client sends: handshakes in both forms,
--                  frames, oversized and truncated ones
--   build/lmp spec/fuzz/make_corpus.lua [DIR]   (DIR: spec/fuzz/corpus)
-- Files of the same names are overwritten; others (inputs that once
-- crashed a target, kept as regressions) are left alone.
-- The registrations fuzz_support.c makes in each target, so that these
-- seeds decode there.
local S = dofile("spec/fuzz/fuzz_support.lua")
local lmp = S.lmp
local codec = lmp.codec
local Point = S.Point

local root = arg[1] or "spec/fuzz/corpus"
local dir

local function write(name, data)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end

local function mkdir(path)
  assert(not path:find("'", 1, true), "a quote in the path")
  assert(os.execute("mkdir -p '" .. path .. "'") == 0, "cannot make " .. path)
end

dir = root .. "/decode"
mkdir(dir)

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

---------------------------------------------------------------- listener
-- As in spec/fuzz/fuzz_listener.c.
dir = root .. "/listener"
mkdir(dir)
local F_CLIENT, F_AUTH, F_STALL, F_SMALL, F_BYTES, F_MAXLEN = 1, 2, 4, 8, 16, 32
local KEY = "fuzz-authkey"
local CHALLENGE = "0123456789abcdefghijklmnopqrstuvwxyzABCD"
local SMALL = 200

-- The HMAC of the real code (lmp's core, as lua/lmp/listener.lua has it).
local core = S.listener_core()

local function be(n, bytes)
  local t = {}
  for i = bytes, 1, -1 do
    t[i] = string.char(n % 256)
    n = math.floor(n / 256)
  end
  return table.concat(t)
end
local function frame(s) return be(#s, 4) .. s end
local function long_frame(s) return "\255\255\255\255" .. be(#s, 8) .. s end

-- What lmp sends as its challenge, and the two right answers to it.
local ours = "{sha256}" .. CHALLENGE
local sha256_answer = "{sha256}" .. core.hmac("sha256", KEY, ours)
local md5_answer = core.hmac("md5", KEY, ours)
-- The peer's own challenges: the 3.12 form and the legacy 20 bytes.
local theirs = "#CHALLENGE#{sha256}" .. string.rep("r", 40)
local theirs_legacy = "#CHALLENGE#" .. string.rep("q", 20)

-- Messages after the handshake: values (for recv) ...
local values = table.concat({
  frame(codec.encode({1, 2, 3})),
  frame(codec.encode({a = {b = "c"}, [1.5] = true}, {binary = true})),
  frame(codec.encode(setmetatable({x = 1, y = 2}, Point))),
  frame('{"k": [1, 2.5, null, "\\u00e9"]}'),
  frame(codec.encode("\0binary\255")),
  long_frame(codec.encode(lmp.null)),
})
-- ... and what safe mode refuses: code, modules, an unregistered class.
local refused = {
  func = frame(codec.encode(function() return 1 end)),
  module = frame(codec.encode({string.format, math})),
  class = frame(codec.encode(setmetatable({}, (function()
    local mt = {}
    codec.register("fuzz.NotThere", mt)
    return mt
  end)()))),
}
-- ... and bytes (for recv_bytes).
local bytes = frame("") .. frame("hello") .. frame(string.rep("x", 100)) ..
              long_frame("long form") .. frame(string.rep("\0", 63))

local seeds = {
  -- No authentication: frames straight away.
  values = {0, values},
  bytes = {F_BYTES, bytes},
  bytes_maxlength = {F_BYTES + F_MAXLEN, frame("short") .. frame(string.rep("y", 65))},
  bytes_maxlength_zero = {F_BYTES + F_MAXLEN + 0x40, frame("") .. frame("y")},
  bytes_maxlength_huge = {F_BYTES + F_MAXLEN + 0x80, bytes},
  bytes_maxlength_2p64 = {F_BYTES + F_MAXLEN + 0xc0, bytes},
  small_limit = {F_SMALL + F_BYTES, frame(string.rep("s", SMALL)) .. frame(string.rep("s", SMALL + 1))},
  small_limit_values = {F_SMALL, frame(codec.encode(string.rep("v", 300)))},
  empty_frame = {0, frame("")},
  long_form = {F_BYTES, long_frame("hello")},
  long_form_huge = {0, "\255\255\255\255" .. be(2^40, 8) .. "x"},
  long_form_2gib = {F_BYTES, "\255\255\255\255" .. be(2^31, 8)},
  negative_length = {0, "\128\0\0\0payload"},
  max_length = {0, "\127\255\255\255"},
  over_max_message = {0, be(64 * 2^20 + 1, 4) .. "x"},
  at_max_message = {F_BYTES, be(64 * 2^20, 4) .. "truncated"},
  truncated_header = {0, "\0\0"},
  truncated_long_header = {0, "\255\255\255\255\0\0\0"},
  truncated_payload = {F_BYTES, be(10, 4) .. "abc"},
  refused_function = {0, refused.func},
  refused_module = {0, refused.module},
  refused_class = {0, refused.class},
  garbage_json = {0, frame("{\"a\": [1, 2,")},
  stall_idle = {F_STALL, frame(codec.encode({1}))},
  stall_partial = {F_STALL, frame(codec.encode({1})) .. be(100, 4) .. "part"},
  stall_header = {F_STALL + F_BYTES, "\0\0"},
  -- The Listener's handshake, answered by a 3.12 and by a legacy client.
  server_sha256 = {F_AUTH, frame(sha256_answer) .. frame(theirs) .. frame("#WELCOME#") .. values},
  server_md5 = {F_AUTH, frame(md5_answer) .. frame(theirs_legacy) .. frame("#WELCOME#") .. values},
  server_sha256_bytes = {F_AUTH + F_BYTES, frame(sha256_answer) .. frame(theirs) .. frame("#WELCOME#") .. bytes},
  server_md5_small = {F_AUTH + F_SMALL + F_BYTES, frame(md5_answer) .. frame(theirs_legacy) ..
                      frame("#WELCOME#") .. frame(string.rep("m", SMALL + 1))},
  server_stall_after = {F_AUTH + F_STALL, frame(sha256_answer) .. frame(theirs) .. frame("#WELCOME#") ..
                        be(50, 4) .. "part"},
  server_stall_handshake = {F_AUTH + F_STALL, be(40, 4) .. "{sha256}"},
  server_wrong_digest = {F_AUTH, frame("{sha256}" .. string.rep("\0", 32))},
  server_unknown_digest = {F_AUTH, frame("{sha512}" .. string.rep("\1", 64))},
  server_no_prefix = {F_AUTH, frame(string.rep("n", 32))},
  server_failure = {F_AUTH, frame(sha256_answer) .. frame(theirs) .. frame("#FAILURE#")},
  server_oversized = {F_AUTH, frame(string.rep("o", 300))},
  server_long_form = {F_AUTH, long_frame(sha256_answer) .. long_frame(theirs) .. long_frame("#WELCOME#")},
  server_silent = {F_AUTH, ""},
  -- The Client's handshake, with a 3.12 and a legacy Listener.
  client_values = {F_CLIENT, values},
  client_bytes = {F_CLIENT + F_BYTES, bytes},
  client_sha256 = {F_CLIENT + F_AUTH, frame(theirs) .. frame("#WELCOME#") .. frame(sha256_answer) .. values},
  client_md5 = {F_CLIENT + F_AUTH, frame(theirs_legacy) .. frame("#WELCOME#") .. frame(md5_answer) .. values},
  client_sha256_bytes = {F_CLIENT + F_AUTH + F_BYTES + F_MAXLEN,
                         frame(theirs) .. frame("#WELCOME#") .. frame(sha256_answer) .. bytes},
  client_not_challenge = {F_CLIENT + F_AUTH, frame("#WELCOME#")},
  client_short_challenge = {F_CLIENT + F_AUTH, frame("#CHALLENGE#abc")},
  client_failure = {F_CLIENT + F_AUTH, frame(theirs) .. frame("#FAILURE#")},
  client_wrong_digest = {F_CLIENT + F_AUTH, frame(theirs) .. frame("#WELCOME#") .. frame(string.rep("\0", 16))},
  client_truncated = {F_CLIENT + F_AUTH, frame(theirs):sub(1, 20)},
}
for name, s in pairs(seeds) do write(name, string.char(s[1]) .. s[2]) end

print("corpora written to " .. root)
