-- Nesting limits of the codec, on both formats and both directions.
local lmp = require "lmp"
local codec = lmp.codec

local function nest(depth, leaf)
  local root = {}
  local cur = root
  for _ = 2, depth do
    cur[1] = {}
    cur = cur[1]
  end
  cur[1] = leaf
  return root
end

local function codec_error(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok)
  assert.is_true(lmp.is_error(e, "CodecError"), tostring(e))
  return e
end

describe("codec nesting", function()
  it("round-trips 1000 levels as JSON and as binary", function()
    for _, leaf in ipairs({1, 0 / 0}) do
      local s = codec.encode(nest(1000, leaf))
      local v = codec.decode(s)
      for _ = 1, 999 do v = v[1] end
      assert.equal("table", type(v))
    end
  end)

  it("raises a CodecError with a path beyond the limit when encoding JSON-shaped data", function()
    local e = codec_error(codec.encode, nest(5000, 1))
    assert.matches("^value%[1%]%[1%]", e.message)
    assert.matches("nested too deeply", e.message, 1, true)
  end)

  it("raises a CodecError beyond the limit when encoding non-JSON data", function()
    local e = codec_error(codec.encode, nest(5000, 0 / 0))
    assert.matches("nested too deeply", e.message, 1, true)
  end)

  it("keeps the path in a deep error short, showing both ends", function()
    local e = codec_error(codec.encode, nest(5000, 1))
    assert.is_true(#e.message < 300, e.message)
    assert.matches("^value" .. string.rep("%[1%]", 12) .. "<1976 more levels>" ..
                   string.rep("%[1%]", 12) .. ": nested too deeply", e.message)
    local f = function() end
    for _ = 1, 3000 do
      local inner = f
      f = function() return inner end
    end
    e = codec_error(codec.encode, f)
    assert.is_true(#e.message < 500, e.message)
  end)

  it("honours max_depth on encode and decode", function()
    codec_error(codec.encode, nest(20, 1), {max_depth = 10})
    local s = codec.encode(nest(20, 1))
    codec_error(codec.decode, s, {max_depth = 10})
    assert.equal("table", type(codec.decode(s, {max_depth = 30})))
  end)

  it("turns running out of Lua stack into a CodecError when max_depth is raised", function()
    local deep = nest(20000, 1)
    codec_error(codec.encode, deep, {max_depth = 100000})
    codec_error(codec.encode, nest(20000, 0 / 0), {max_depth = 100000})
    codec_error(codec.decode, string.rep("[", 20000), {max_depth = 100000})
    codec_error(codec.decode, string.rep('{"a":', 20000), {max_depth = 100000})
    codec_error(codec.decode, "\255\1" .. string.rep("\8\0\1\7\1a", 20000), {max_depth = 100000})
  end)

  it("rejects deep hostile input without crashing", function()
    codec_error(codec.decode, string.rep("[", 100000))
    codec_error(codec.decode, string.rep('{"a":', 100000))
    codec_error(codec.decode, "\255\1" .. string.rep("\8\1\0", 100000))
  end)
end)
