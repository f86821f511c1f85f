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

  describe("embedding (built by CMake)", function()
    -- Runs build/<name> with args from the top of the checkout.
    local function host(name, ...)
      return H.run({H.bindir .. "/" .. name, ...}, {timeout = 60})
    end

    local function figures(out)
      local f = {}
      f.ticks = tonumber(out:match("ticks (%d+)"))
      f.late = tonumber(out:match("late (%d+)"))
      f.p50, f.p99, f.max = out:match("tick_us p50 (%d+) p99 (%d+) max (%d+)")
      f.p50, f.p99, f.max = tonumber(f.p50), tonumber(f.p99), tonumber(f.max)
      f.paths = tonumber(out:match("paths (%d+)"))
      return f
    end

    it("tick_host keeps its 60 Hz tick while the pool finds paths, where pool:map in the tick stalls it", function()
      local a = host("tick_host", "scripts/examples/tick_game.lua", "async", "2")
      assert.equal(0, a.status, a.stdout .. a.stderr)
      local fa = figures(a.stdout)
      assert.truthy(fa.ticks and fa.p50 and fa.paths, a.stdout)
      assert.is_true(fa.ticks >= 110 and fa.ticks <= 125, a.stdout)  -- 2 s at 60 Hz
      assert.is_true(fa.paths > 100, a.stdout)
      -- the tick never waits for a path: far below a tick's 16.7 ms
      assert.is_true(fa.p50 < 5000, a.stdout)
      local n = host("tick_host", "scripts/examples/tick_game.lua", "naive", "2")
      assert.equal(0, n.status, n.stdout .. n.stderr)
      local fn = figures(n.stdout)
      assert.truthy(fn.p50, n.stdout)
      assert.is_true(fn.p50 > fa.p50, "naive " .. fn.p50 .. " us, async " .. fa.p50 .. " us")
      local s = host("tick_host", "scripts/examples/tick_game.lua", "serial", "1")
      assert.equal(0, s.status, s.stdout .. s.stderr)
      assert.is_true(figures(s.stdout).paths > 10, s.stdout)
    end)

    it("uv_host gets its results from its own libuv loop", function()
      local r = host("uv_host", "20")
      assert.equal(0, r.status, r.stdout .. r.stderr)
      assert.truthy(r.stdout:find("^done 20 in %d+ ticks"), r.stdout)
    end)
  end)

  it("hello.lua prints the version and the CPU count", function()
    local r = H.lmp_run({"scripts/examples/hello.lua"})
    assert.equal(0, r.status, r.stderr)
    assert.matches("^lmp %d+%.%d+%.%d+, LuaJIT", r.stdout)
  end)
end)
