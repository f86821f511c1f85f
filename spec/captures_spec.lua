-- Functions defined at the prompt or in the main script take the user
-- globals they read with them (lua/lmp/captures.lua, the codec's
-- FUNCTION_ENV and GLOBALS).  Each case runs a real main script with
-- `lmp script.lua` (or luajit), so that the functions really are the main
-- program's.
local H = require "spec.support.helpers"
local lmp = require "lmp"
local codec = lmp.codec

describe("globals that travel with functions", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  -- Runs body as a main script (lmp in front of it) and returns its stdout.
  local function main(body, argv0)
    local path = H.write(dir .. "/main.lua", "local lmp = require 'lmp'\n" .. body)
    local r = H.lmp_run({argv0 or path}, {cwd = dir, timeout = 60})
    assert.equal(0, r.status, r.stderr)
    return r.stdout
  end

  it("sends the globals a pool function reads, as they are at each call", function()
    local out = main [[
      k = 10
      function f(x) return x * k end
      local pool = lmp.Pool(2)
      print(table.concat(pool:map(f, {1, 2, 3}), " "))
      k = 20
      print(table.concat(pool:map(f, {1, 2, 3}), " "))
      print(pool:apply(f, {5}))
      k = 30
      print(pool:apply(f, {5}), pool:apply_async(f, {1}):get(10))
      pool:close() pool:join()
    ]]
    assert.equal("10 20 30\n20 40 60\n100\n150\t30\n", out)
  end)

  it("sends a global table by value, as it is when sent", function()
    local out = main [[
      config = {scale = 2, tags = {"a", "b"}}
      function f(x) return x * config.scale .. table.concat(config.tags) end
      local pool = lmp.Pool(1)
      print(pool:apply(f, {1}))
      config.scale = 3
      config.tags[3] = "c"
      print(pool:apply(f, {1}))
      pool:close() pool:join()
    ]]
    assert.equal("2ab\n3abc\n", out)
  end)

  it("sends global helpers recursively, recursion and mutual calls included", function()
    local out = main [[
      base = 100
      function inner(x) return x + base end
      function outer(x) return inner(x) * 2 end
      function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
      function is_even(n) if n == 0 then return true end return is_odd(n - 1) end
      function is_odd(n) if n == 0 then return false end return is_even(n - 1) end
      local pool = lmp.Pool(2)
      print(pool:apply(outer, {1}), pool:apply(fact, {10}), pool:apply(is_even, {10}),
            pool:apply(is_odd, {7}))
      pool:close() pool:join()
    ]]
    assert.equal("202\t3628800\ttrue\ttrue\n", out)
  end)

  it("sends modules and standard functions by reference", function()
    local out = main [[
      M = math
      fmt = string.format
      function f(x) return fmt("%.1f", M.sqrt(x)), M == math, fmt == string.format end
      local codec = lmp.codec
      local back = codec.decode(codec.encode(f))
      print(back(16))
      -- by reference: the encoding does not grow with the module
      print(#codec.encode(f) < 400)
      local pool = lmp.Pool(1)
      print(pool:apply(function(x) return (f(x)) end, {81}))
      pool:close() pool:join()
    ]]
    assert.equal("4.0\ttrue\ttrue\ntrue\n9.0\n", out)
  end)

  it("leaves a global that was nil when sent to the receiver: an initializer's", function()
    local out = main [[
      function f() return type(later), db end
      local pool = lmp.Pool{processes = 1, initializer = function() db = "worker's db" end}
      print(pool:apply(function() return select(2, f()) end))
      print(pool:apply(function() return (f()) end))
      later = 5
      print(pool:apply(function() return (f()) end))
      print(db)
      pool:close() pool:join()
    ]]
    assert.equal("worker's db\nnil\nnumber\nnil\n", out)
  end)

  it("sends a global that several functions read once, and cycles through it", function()
    local out = main [[
      shared = {n = 1}
      shared.self = shared
      function a() return shared end
      function b() return shared.self end
      local back = lmp.codec.decode(lmp.codec.encode({a, b}))
      local ta, tb = back[1](), back[2]()
      print(rawequal(ta, tb), ta ~= shared, ta.n, rawequal(ta.self, ta))
      -- the functions of one message share their globals, as in the script
      function set(v) counter = v end
      function get() return counter end
      counter = 0
      local s = lmp.codec.decode(lmp.codec.encode({set, get}))
      s[1](42)
      print(s[2](), counter)
    ]]
    assert.equal("true\ttrue\t1\ttrue\n42\t0\n", out)
  end)

  it("sends the globals of a Process target and of a Queue item", function()
    local out = main [[
      greeting = "hello"
      function greet(q, who) q:put(greeting .. " " .. who) end
      local q = lmp.Queue()
      local p = lmp.Process{target = greet, args = {q, "child"}}
      p:start()
      print(q:get(10))
      print(p:join(10))
      function shout() return greeting:upper() end
      q:put(shout)
      print(q:get(10)())
    ]]
    assert.equal("hello child\n0\nHELLO\n", out)
  end)

  it("lets a function set globals of its worker, and its message's", function()
    local out = main [[
      function count() calls = (calls or 0) + 1; return calls end
      local pool = lmp.Pool(1)
      print(pool:apply(count), pool:apply(count), calls)
      step = 10  -- sent: the message's own copy changes, not the worker's
      function bump() step = step + 1; return step, rawget(_G, "step") end
      print(pool:apply(bump), pool:apply(bump), step)
      pool:close() pool:join()
    ]]
    -- calls: nil here, so the worker's own global, kept between tasks
    assert.equal("1\t2\tnil\n11\t11\t10\n", out)
  end)

  it("names a global that cannot travel", function()
    local out = main [[
      co = coroutine.create(function() end)
      function f() return co end
      local ok, e = pcall(lmp.codec.encode, f)
      print(tostring(e))
      local pool = lmp.Pool(1)
      ok, e = pcall(pool.apply, pool, f)
      print(tostring(e))
      pool:close() pool:join()
    ]]
    assert.equal("lmp.CodecError: value<global co>: cannot encode a thread\n" ..
                 "lmp.CodecError: function<global co>: cannot encode a thread\n", out)
  end)

  it("works for -e chunks and for a script run by a stock luajit", function()
    local r = H.lmp_run({"-e", "k = 7; local lmp = require 'lmp'; " ..
                         "function f(x) return x * k end; " ..
                         "local p = lmp.Pool(1); print(p:apply(f, {6})); p:close(); p:join()"},
                        {timeout = 60})
    assert.equal(0, r.status, r.stderr)
    assert.equal("42\n", r.stdout)
    local path = H.write(dir .. "/stock.lua", [[
      local lmp = require "lmp"
      k = 3
      function f(x) return x * k end
      local p = lmp.Pool(1)
      print(p:apply(f, {5}))
      p:close() p:join()
    ]])
    local env = H.foreign_host_env()
    env.LUA_CPATH = H.bindir .. "/?.so;;"
    local s = H.run({"luajit", path}, {env = env, cwd = dir, timeout = 60})
    assert.equal(0, s.status, s.stderr)
    assert.equal("15\n", s.stdout)
  end)

  describe("functions that are not the main program's", function()
    it("resolve their globals in the receiving process", function()
      -- this spec file is not the main script: its functions take nothing
      rawset(_G, "lmp_spec_global", 1)
      local function f() return rawget(_G, "lmp_spec_global") end
      local g = loadstring("return lmp_spec_global", "=spec")
      local s = codec.encode({f, g})
      rawset(_G, "lmp_spec_global", 2)
      local back = codec.decode(s)
      assert.equal(2, back[1]())
      assert.equal(2, back[2]())
      rawset(_G, "lmp_spec_global", nil)
    end)
  end)

  it("sends a C function under a global alias by its module's path", function()
    rawset(_G, "lmp_spec_fmt", string.format)
    local s = codec.encode({string.format, print})
    rawset(_G, "lmp_spec_fmt", nil)
    assert.truthy(s:find("format", 1, true))
    assert.falsy(s:find("lmp_spec_fmt", 1, true))
  end)

  describe("decoding", function()
    -- a main function: its source is the prompt's
    local f = loadstring("return lmp_spec_k + 1", "=stdin")

    it("gives the function its globals", function()
      rawset(_G, "lmp_spec_k", 41)
      local s = codec.encode(f)
      rawset(_G, "lmp_spec_k", nil)
      assert.equal(42, codec.decode(s)())
      assert.equal(0x12, s:byte(3))       -- FUNCTION_ENV
    end)

    it("refuses code in safe mode", function()
      rawset(_G, "lmp_spec_k", 1)
      local s = codec.encode(f)
      rawset(_G, "lmp_spec_k", nil)
      H.raises("CodecError", codec.decode, s, {safe = true})
    end)

    it("raises on damaged globals", function()
      rawset(_G, "lmp_spec_k", 1)
      local s = codec.encode(f)
      rawset(_G, "lmp_spec_k", nil)
      local globals = s:find("\19[^\19]*$")  -- the GLOBALS tag, the last one
      assert.truthy(globals)
      local e = H.raises("CodecError", codec.decode, s:sub(1, globals - 1))
      assert.matches("the globals of a function are missing", e.message)
      e = H.raises("CodecError", codec.decode, s:sub(1, globals) .. "\4\1\4\1\0")
      assert.matches("global name is not a string", e.message)
      e = H.raises("CodecError", codec.decode, s:sub(1, -2))
      assert.matches("truncated input", e.message)
    end)
  end)
end)
