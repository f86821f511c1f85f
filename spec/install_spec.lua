-- `cmake --install` puts a working lmp under a prefix: the host, the Lua C
-- module a stock luajit loads, the library, the header and the Lua sources.
local H = require "spec.support.helpers"
local lmp = require "lmp"

describe("an installed lmp", function()
  local prefix

  setup(function()
    prefix = H.tmpdir()
    local r = H.run({"cmake", "--install", H.bindir, "--prefix", prefix}, {timeout = 60})
    assert.equal(0, r.status, r.stderr)
  end)

  teardown(function() H.cleanup() end)

  it("has the host, the libraries, the header and the Lua modules", function()
    for _, path in ipairs({"bin/lmp", "lib/lua/5.1/lmp.so", "include/lmp.h",
                           "share/lua/5.1/lmp/init.lua", "share/lua/5.1/lmp/pool/init.lua",
                           "share/lua/5.1/lmp/pool/scheduler.lua"}) do
      assert.truthy(H.slurp(prefix .. "/" .. path), path)
    end
    local libs = H.run({"sh", "-c", "ls " .. H.quote(prefix) .. "/lib*/liblmp.*"}).stdout
    assert.matches("liblmp%.a", libs)
    assert.matches("liblmp%.so", libs)
  end)

  it("runs its host from anywhere", function()
    local r = H.run({prefix .. "/bin/lmp", "-e", "print(require('lmp').version)"}, {cwd = "/"})
    assert.equal(0, r.status, r.stderr)
    assert.equal(lmp.version .. "\n", r.stdout)
  end)

  it("tells a stock luajit where to find lmp, which then finds the host", function()
    local r = H.run({prefix .. "/bin/lmp", "--env"})
    assert.equal(0, r.status, r.stderr)
    local cpath = r.stdout:match("export LUA_CPATH='([^']*)'")
    assert.equal(prefix .. "/lib/lua/5.1/?.so;;", cpath)
    local env = H.foreign_host_env()
    env.LUA_CPATH = cpath
    local s = H.run({"luajit", "-e", "local lmp = require 'lmp'; print(lmp.version, lmp.get_executable())"},
                    {env = env, cwd = "/"})
    assert.equal(0, s.status, s.stderr)
    assert.equal(lmp.version .. "\t" .. prefix .. "/bin/lmp\n", s.stdout)
  end)
end)
