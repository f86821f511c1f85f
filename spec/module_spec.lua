-- require "lmp": version, cpu_count, error objects, the worker executable.
local H = require "spec.support.helpers"
local lmp = require "lmp"

describe("the lmp module", function()
  it("has a version, the same that lmp -v prints", function()
    assert.matches("^%d+%.%d+%.%d+$", lmp.version)
    assert.matches("^lmp " .. lmp.version:gsub("%.", "%%.") .. " ", H.lmp_run({"-v"}).stdout)
  end)

  it("counts the CPUs this process may use", function()
    local n = lmp.cpu_count()
    assert.equal("number", type(n))
    assert.equal(math.floor(n), n)
    local p = io.popen("nproc")
    local nproc = tonumber(p:read("*l"))
    p:close()
    assert.equal(nproc, n)
  end)

  it("is the same table each time it is required", function()
    assert.equal(lmp, require "lmp")
  end)

  it("stays one module when package.loaded forgets it (its objects keep working)", function()
    local v = lmp.Value("i", 1)
    local saved = package.loaded.lmp
    package.loaded.lmp = nil
    local again = require "lmp"
    package.loaded.lmp = saved
    assert.equal(lmp, again)
    local w = again.Value("i", 2)
    assert.equal(3, v.value + w.value)
    v:close(); w:close()
  end)

  describe("errors", function()
    it("maps each error kind to itself", function()
      for _, kind in ipairs({"RemoteError", "WorkerLost", "ProcessError", "AuthenticationError",
                             "CodecError", "ValueError", "IndexError", "TimeoutError"}) do
        assert.equal(kind, lmp.errors[kind])
      end
      for k, v in pairs(lmp.errors) do assert.equal(k, v) end
    end)

    it("are tables with kind, message and a readable tostring", function()
      local e = lmp.error("ValueError", "Pool(0): processes must be at least 1")
      assert.equal("ValueError", e.kind)
      assert.equal("Pool(0): processes must be at least 1", e.message)
      assert.equal("lmp.ValueError: Pool(0): processes must be at least 1", tostring(e))
      local ok, caught = pcall(error, e)
      assert.is_false(ok)
      assert.equal(e, caught)
      assert.is_true(lmp.is_error(caught))
      assert.is_true(lmp.is_error(caught, "ValueError"))
      assert.is_false(lmp.is_error(caught, "CodecError"))
      assert.is_false(lmp.is_error({kind = "ValueError"}))
      assert.is_false(lmp.is_error("lmp.ValueError: x"))
    end)

    it("carry extra fields, and a remote traceback after the message", function()
      local e = lmp.error("RemoteError", "boom", {traceback = "stack traceback:\n\tx.lua:1", pid = 42})
      assert.equal(42, e.pid)
      assert.equal("lmp.RemoteError: boom\nstack traceback:\n\tx.lua:1", tostring(e))
    end)

    it("reject a missing kind or message", function()
      assert.has_error(function() lmp.error() end)
      assert.has_error(function() lmp.error("ValueError") end)
    end)
  end)

  describe("the worker executable", function()
    local saved
    before_each(function() saved = lmp.get_executable() end)
    after_each(function() lmp.set_executable(saved) end)

    it("defaults to the running lmp host", function()
      assert.equal(H.lmp, lmp.get_executable())
    end)

    it("can be set, and refuses an empty path", function()
      lmp.set_executable("/usr/local/bin/game-server")
      assert.equal("/usr/local/bin/game-server", lmp.get_executable())
      local ok, e = pcall(lmp.set_executable, "")
      assert.is_false(ok)
      assert.equal("ValueError", e.kind)
      assert.has_error(function() lmp.set_executable() end)
    end)
  end)
end)
