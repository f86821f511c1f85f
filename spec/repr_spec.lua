-- lmp.repr: how the REPL prints values.
local lmp = require "lmp"
local repr = require("lmp.repr").repr

describe("lmp.repr", function()
  it("prints scalars as Lua reads them", function()
    assert.equal("42", repr(42))
    assert.equal("-0.5", repr(-0.5))
    assert.equal("0.10000000000000001", repr(0.1))
    assert.equal("0/0", repr(0 / 0))
    assert.equal("math.huge", repr(math.huge))
    assert.equal("-math.huge", repr(-math.huge))
    assert.equal('"a\\n\\"b\\"\\0\\001"', repr('a\n"b"\0\1'))
    assert.equal("true", repr(true))
    assert.equal("nil", repr(nil))
    assert.equal("lmp.null", repr(lmp.null))
  end)

  it("prints tables as constructors, sorted, array part first", function()
    assert.equal("{}", repr({}))
    assert.equal("{1, 2, 3}", repr({1, 2, 3}))
    assert.equal('{1, "x", a = 1, b = {2, 3}}', repr({1, "x", b = {2, 3}, a = 1}))
    assert.equal('{[1.5] = 1, [3] = 3, ["a b"] = 2, ["end"] = 4, [true] = 5}',
                 repr({[1.5] = 1, ["a b"] = 2, [3] = 3, ["end"] = 4, [true] = 5}))
  end)

  it("marks cycles, and cuts depth, long arrays and long strings short", function()
    local t = {name = "t"}
    t.self = t
    assert.equal('{name = "t", self = <cycle>}', repr(t))
    local shared = {1}
    assert.equal("{{1}, {1}}", repr({shared, shared}))  -- shared is not a cycle
    assert.equal("{{{{{…}}}}}", repr({{{{{{1}}}}}}))
    local long = {}
    for i = 1, 120 do long[i] = i end
    local s = repr(long)
    assert.matches("^{\n  1, 2, 3,", s)
    assert.matches("50, …70 more\n}$", s)
    assert.matches('^"x+"…%(1000 bytes%)$', repr(("x"):rep(1000)))
  end)

  it("breaks a long table over indented lines", function()
    local s = repr({alpha = ("a"):rep(30), beta = ("b"):rep(30), gamma = {1, 2}})
    assert.equal('{\n  alpha = "' .. ("a"):rep(30) .. '",\n  beta = "' .. ("b"):rep(30) ..
                 '",\n  gamma = {1, 2}\n}', s)
  end)

  it("uses __tostring, and names modules inside tables", function()
    local obj = setmetatable({}, {__tostring = function() return "<obj>" end})
    assert.equal("<obj>", repr(obj))
    assert.equal("{<module math>, <obj>}", repr({math, obj}))
    assert.matches("^lmp%.ProcessError: ", repr({lmp.error("ProcessError", "x")}):sub(2))
  end)
end)
