-- Ctrl-C in the lmp host: a blocking lmp call raises lmp.KeyboardInterrupt
-- at once (runtime/lmp_interrupt.c), a pool call cancels its tasks on the
-- way out, and the pool goes on.  At the prompt through a pseudo-terminal
-- (Ctrl-C reaches the whole process group, workers included), and in a
-- script that gets SIGINT.
local H = require "spec.support.helpers"

describe("Ctrl-C", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  local SLOW = "function slow(x) local t = os.clock() while os.clock() - t < 0.5 do end " ..
               "return x end"
  local MANY = "{" .. ("1,"):rep(40) .. "1}"  -- 41 tasks of 0.5 s: 10 s on 2 workers

  describe("at the prompt", function()
    local env
    before_each(function() env = {LMP_HISTORY = dir .. "/history"} end)

    -- Types lines into the REPL; "^C" is Ctrl-C, typed once the line
    -- before it has run for a second.
    local function session(lines)
      local typed = {}
      for i, l in ipairs(lines) do typed[i] = l == "^C" and "\3" or l end
      local t0 = os.time()
      local r = H.pty({}, typed, {env = env, timeout = 40})
      r.seconds = os.time() - t0
      return r
    end

    it("cancels a map and an imap loop, and the pool goes on", function()
      local r = session {
        "p = lmp.Pool(2)", SLOW,
        "p:map(slow, " .. MANY .. ")", "^C",
        "p:map(function(x) return x * 2 end, {1, 2, 3})",
        "for i, v in p:imap(slow, " .. MANY .. ") do end", "^C",
        "p:stats().queued",
        "p:apply(function() return 'still here' end)",
        "p:map_async(slow, " .. MANY .. ")",
        "p:close() p:join()", "^C",
        "p:terminate() p:join() print('terminated')",
      }
      assert.equal(0, r.status, r.stdout)
      local _, n = r.stdout:gsub("lmp%.KeyboardInterrupt: interrupted", "")
      assert.equal(3, n, r.stdout)
      assert.matches("{2, 4, 6}", r.stdout, 1, true)
      assert.matches("\nterminated\n", r.stdout, 1, true)
      assert.matches("\n0\n", r.stdout, 1, true)  -- nothing left queued of the cancelled calls
      assert.matches("\nstill here\n", r.stdout, 1, true)
      -- three 10 s waits, each given up after about a second
      assert.is_true(r.seconds < 15, r.seconds .. " s")
    end)

    it("interrupts a get, a join, a Queue, a Lock and an Event wait", function()
      -- Ctrl-C reaches the whole process group: a child that should outlive
      -- it ignores SIGINT, as pool workers do.
      local IGNORE = "local ffi = require 'ffi'; " ..
                     "ffi.cdef 'void (*signal(int, void (*)(int)))(int);'; " ..
                     "ffi.C.signal(2, ffi.cast('void (*)(int)', 1))"
      local r = session {
        "p = lmp.Pool(1)", SLOW,
        "r = p:apply_async(function() while true do end end)",
        "r:get()", "^C",
        "r:ready(), r:successful()",
        "q = lmp.Queue()", "q:get()", "^C",
        "l = lmp.Lock()",
        "holder = lmp.Pool{processes = 1, initializer = function(l) l:acquire() end, " ..
          "initargs = {l}}",
        "holder:apply(function() return 1 end)",
        "l:acquire()", "^C",
        "holder:terminate() holder:join()",
        "e = lmp.Event()", "e:wait()", "^C",
        "c = lmp.Process{target = function() " .. IGNORE .. " while true do end end}",
        "c:start()", "c:join()", "^C", "c:kill() print(c:join(5))",
        "p:close() p:join() print('joined')",
      }
      assert.equal(0, r.status, r.stdout)
      local _, n = r.stdout:gsub("lmp%.KeyboardInterrupt: interrupted", "")
      assert.equal(5, n, r.stdout)
      assert.matches("\ntrue\tfalse\n", r.stdout, 1, true)  -- the get was cancelled
      assert.matches("\n-9\n", r.stdout, 1, true)            -- the child outlived Ctrl-C
      assert.matches("\njoined\n", r.stdout, 1, true)
      assert.is_true(r.seconds < 20, r.seconds .. " s")
    end)

    it("still interrupts plain Lua code", function()
      local r = session {"jit.off()", "while true do end", "^C", "print('after')"}
      assert.equal(0, r.status, r.stdout)
      assert.matches("lmp.KeyboardInterrupt: interrupted", r.stdout, 1, true)
      assert.matches("\nafter\n", r.stdout, 1, true)
    end)
  end)

  it("gives a script a KeyboardInterrupt it can catch, and the pool goes on", function()
    local script = H.write(dir .. "/s.lua", [[
      local lmp = require "lmp"
      ]] .. SLOW .. [[

      local pool = lmp.Pool(2)
      io.stdout:write("ready\n") io.stdout:flush()
      local t0 = os.time()
      local ok, e = pcall(pool.map, pool, slow, ]] .. MANY .. [[)
      print(ok, lmp.is_error(e, "KeyboardInterrupt"), os.time() - t0 < 5)
      print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), " "))
      print(pool:stats().replaced >= 1)
      pool:close() pool:join()
    ]])
    local r = H.run({"sh", "-c", ("%q %q & pid=$!; sleep 1.5; kill -INT $pid; wait $pid")
                      :format(H.lmp, script)}, {timeout = 30})
    assert.equal(0, r.status, r.stderr)
    assert.equal("ready\nfalse\ttrue\ttrue\n2 4 6\ntrue\n", r.stdout)
  end)
end)
