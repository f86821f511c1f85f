-- The LuaJIT lmp runs on (SPEC section 0): OpenResty's maintained branch,
-- which has the fix for LuaJIT issue 827.  Debian 12's own luajit
-- (2.1.0~beta3+git20220320) does not: there, a hot `for k, v in pairs(t)`
-- loop with another pairs() loop inside, once the JIT blacklists it, can
-- stop after its first key, silently, in user code and in workers alike.
local H = require "spec.support.helpers"
local lmp = require "lmp"

-- The shape of the issue-827 reproduction: an outer pairs() loop over five
-- keys, an inner pairs() loop in its body, and a call before it that goes
-- back to the interpreter (a vararg function), repeated until the JIT gives
-- up on the outer loop.  Returns the number of passes that saw fewer than
-- five keys.  Checked against Debian 12's luajit: 59356 of the 100000
-- passes there are short.
local function nested_pairs_passes()
  local inner = {10, 20, 30, 40, 50}
  local outer = {p = inner, q = inner, r = inner, s = inner, t = inner}
  local function leave_trace(...) for _ = 1, 100 do end end
  local short = 0
  for _ = 1, 100000 do
    leave_trace()
    local seen = 0
    for _, v in pairs(outer) do
      for _ in pairs(v) do end
      seen = seen + 1
    end
    if seen ~= 5 then short = short + 1 end
  end
  return short
end

describe("LuaJIT", function()
  it("is OpenResty's branch (its table.nkeys extension is there)", function()
    assert.truthy(jit and jit.version:match("^LuaJIT 2%.1"))
    local ok, nkeys = pcall(require, "table.nkeys")
    assert.is_true(ok, "not OpenResty's LuaJIT: " .. tostring(nkeys))
    assert.equal(3, nkeys({1, 2, x = 3}))
  end)

  it("keeps every key of nested pairs() loops under the JIT (LuaJIT issue 827)", function()
    assert.is_true(jit.status(), "the JIT must be on for this spec")
    assert.equal(0, nested_pairs_passes())
  end)

  it("... in a Pool worker too", function()
    local pool = lmp.Pool(1)
    local ok, r = pcall(function()
      return pool:apply_async(nested_pairs_passes, {}):get(60)
    end)
    pool:terminate(); pool:join()
    assert.is_true(ok, tostring(r))
    assert.equal(0, r)
  end)

  it("... and with the host's -joff the loop is interpreted, with the same result", function()
    local r = H.lmp_run({"-joff", "-e", "local short = 0 " ..
      "local inner = {1, 2, 3} local outer = {a = inner, b = inner, c = inner} " ..
      "for _ = 1, 20000 do local n = 0 for _, v in pairs(outer) do for _ in pairs(v) do end n = n + 1 end " ..
      "if n ~= 3 then short = short + 1 end end io.write(jit.status() and 'on ' or 'off ', short)"})
    assert.equal(0, r.status, r.stderr)
    assert.equal("off 0", r.stdout)
  end)
end)
