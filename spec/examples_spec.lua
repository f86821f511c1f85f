-- The examples that the README and scripts/quickstart run.
local H = require "spec.support.helpers"

describe("examples", function()
  it("montecarlo.lua estimates pi in parallel and reports the speedup", function()
    local r = H.lmp_run({"scripts/examples/montecarlo.lua", "200000"}, {timeout = 60})
    assert.equal(0, r.status, r.stderr)
    local pi = tonumber(r.stdout:match("pi ~ ([%d.]+)"))
    assert.truthy(pi, r.stdout)
    assert.is_true(math.abs(pi - math.pi) < 0.05, r.stdout)
    assert.matches("speedup [%d.]+x", r.stdout)
  end)

  it("hello.lua prints the version and the CPU count", function()
    local r = H.lmp_run({"scripts/examples/hello.lua"})
    assert.equal(0, r.status, r.stderr)
    assert.matches("^lmp %d+%.%d+%.%d+, LuaJIT", r.stdout)
  end)
end)
