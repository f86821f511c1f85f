-- The lmp command line: luajit-compatible options, exit codes, errors,
-- the REPL on a terminal, --env, and the worker entry point.
local H = require "spec.support.helpers"
local lmp = require "lmp"

describe("lmp command line", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  describe("running code", function()
    it("runs -e chunks in order", function()
      local r = H.lmp_run({"-e", "io.write('a')", "-e", "io.write('b')"})
      assert.equal(0, r.status)
      assert.equal("ab", r.stdout)
    end)

    it("accepts -e with its chunk attached", function()
      local r = H.lmp_run({"-eprint(6 * 7)"})
      assert.equal("42\n", r.stdout)
    end)

    it("requires -l modules into globals, relative to package.path", function()
      H.write(dir .. "/mymod.lua", "return {answer = 42}")
      local r = H.lmp_run({"-l", "mymod", "-e", "print(mymod.answer)"}, {cwd = dir})
      assert.equal(0, r.status)
      assert.equal("42\n", r.stdout)
    end)

    it("sets the arg table and passes script arguments as ...", function()
      local script = H.write(dir .. "/args.lua", [[
        print(arg[0], arg[1], arg[2], #arg)
        print(arg[-1], arg[-2] == nil)
        print(select('#', ...), ...)
      ]])
      local r = H.lmp_run({"-e", "x = 1", script, "p", "q q"})
      assert.equal(0, r.status)
      assert.equal(script .. "\tp\tq q\t2\n" ..
                   "x = 1\tfalse\n" ..
                   "2\tp\tq q\n", r.stdout)
      r = H.lmp_run({script})
      assert.equal(script .. "\tnil\tnil\t0\n" .. H.lmp .. "\ttrue\n0\n", r.stdout)
    end)

    it("reads the script from stdin with -", function()
      local r = H.lmp_run({"-", "a", "b"}, {stdin = "print(arg[0], ...)"})
      assert.equal(0, r.status)
      assert.equal("-\ta\tb\n", r.stdout)
    end)

    it("runs stdin as a script when it is not a terminal", function()
      local r = H.lmp_run({}, {stdin = "print('from stdin')"})
      assert.equal("from stdin\n", r.stdout)
    end)

    it("stops handling options after --", function()
      H.write(dir .. "/-v", "print('script named -v')")
      local r = H.lmp_run({"--", "-v"}, {cwd = dir})
      assert.equal("script named -v\n", r.stdout)
    end)

    it("runs LUA_INIT first, unless -E", function()
      local env = {LUA_INIT = "init_ran = true"}
      assert.equal("true\n", H.lmp_run({"-e", "print(init_ran)"}, {env = env}).stdout)
      assert.equal("nil\n", H.lmp_run({"-E", "-e", "print(init_ran)"}, {env = env}).stdout)
      H.write(dir .. "/init.lua", "init_file = 'yes'")
      env = {LUA_INIT = "@" .. dir .. "/init.lua"}
      assert.equal("yes\n", H.lmp_run({"-e", "print(init_file)"}, {env = env}).stdout)
    end)

    it("passes -j and -O to LuaJIT", function()
      local r = H.lmp_run({"-joff", "-O3", "-e", "print((jit.status()))"})
      assert.equal(0, r.status)
      assert.equal("false\n", r.stdout)
    end)

    it("prints the version with -v", function()
      local r = H.lmp_run({"-v"})
      assert.equal(0, r.status)
      assert.matches("^lmp " .. lmp.version:gsub("%.", "%%.") .. " %(LuaJIT 2%.1", r.stdout)
    end)

    it("finds lmp's own modules wherever it is run from", function()
      local r = H.lmp_run({"-e", "print(require('lmp').version, type(require('lmp.pool.worker').main))"},
                          {cwd = "/"})
      assert.equal(lmp.version .. "\tfunction\n", r.stdout)
    end)
  end)

  describe("exit status", function()
    it("is 0 when the script ends", function()
      assert.equal(0, H.lmp_run({"-e", "local x = 1"}).status)
    end)

    it("is n after os.exit(n)", function()
      assert.equal(7, H.lmp_run({"-e", "os.exit(7)"}).status)
      assert.equal(0, H.lmp_run({"-e", "os.exit(true)"}).status)
      assert.equal(1, H.lmp_run({"-e", "os.exit(false)"}).status)
      assert.equal(3, H.lmp_run({"-"}, {stdin = "os.exit(3)"}).status)
    end)

    it("runs finalizers at os.exit(n) (the state is closed), not with os.exit(n, false)", function()
      local code = "_G.keep = newproxy(true); getmetatable(keep).__gc = function() io.write('finalized') end;"
      local r = H.lmp_run({"-e", code .. "os.exit(6)"})
      assert.equal(6, r.status)
      assert.equal("finalized", r.stdout)
      r = H.lmp_run({"-e", code .. "coroutine.wrap(function() os.exit(true) end)()"})
      assert.equal(0, r.status)
      assert.equal("finalized", r.stdout)
      r = H.lmp_run({"-e", code .. "os.exit(6, false)"})
      assert.equal(6, r.status)
      assert.equal("", r.stdout)
    end)

    it("is 1 with the error and a traceback on stderr for an uncaught error", function()
      local script = H.write(dir .. "/boom.lua", "local function f()\n  error('boom')\nend\nf()\n")
      local r = H.lmp_run({script})
      assert.equal(1, r.status)
      assert.equal("", r.stdout)
      assert.matches("^lmp: " .. script:gsub("%p", "%%%0") .. ":2: boom\n", r.stderr)
      assert.matches("stack traceback:", r.stderr, 1, true)
      assert.matches("boom.lua:4: in main chunk", r.stderr, 1, true)
    end)

    it("prints error objects through __tostring", function()
      local r = H.lmp_run({"-e", "error(require('lmp').error('ValueError', 'bad value'))"})
      assert.equal(1, r.status)
      assert.matches("^lmp: lmp.ValueError: bad value\n", r.stderr)
      r = H.lmp_run({"-e", "error({})"})
      assert.equal(1, r.status)
      assert.matches("^lmp: %(error object is a table value%)", r.stderr)
    end)

    it("is 1 and quiet for error() without a value, as busted uses it", function()
      local r = H.lmp_run({"-e", "error()"})
      assert.equal(1, r.status)
      assert.equal("", r.stderr)
    end)

    it("is 1 for a syntax error, naming the file and the line", function()
      local script = H.write(dir .. "/syntax.lua", "local a = 1\nlocal b = = 2\n")
      local r = H.lmp_run({script})
      assert.equal(1, r.status)
      assert.matches("^lmp: " .. script:gsub("%p", "%%%0") .. ":2: unexpected symbol near '='", r.stderr)
    end)

    it("is 1 for a missing script file", function()
      local r = H.lmp_run({dir .. "/nope.lua"})
      assert.equal(1, r.status)
      assert.matches("cannot open " .. (dir .. "/nope.lua"):gsub("%p", "%%%0"), r.stderr)
    end)

    it("is 2 with usage for an unknown option", function()
      local r = H.lmp_run({"-x"})
      assert.equal(2, r.status)
      assert.matches("unrecognized option '%-x'", r.stderr)
      assert.matches("usage: lmp", r.stderr, 1, true)
      r = H.lmp_run({"-vx"})
      assert.equal(2, r.status)
      assert.matches("unrecognized option '%-vx'", r.stderr)
    end)

    it("is 2 with usage when an option lacks its argument", function()
      local r = H.lmp_run({"-e"})
      assert.equal(2, r.status)
      assert.matches("'%-e' needs argument", r.stderr)
      assert.matches("usage: lmp", r.stderr, 1, true)
    end)
  end)

  describe("REPL", function()
    local env
    before_each(function() env = {LMP_HISTORY = dir .. "/history"} end)

    it("prints the values of expressions", function()
      local r = H.pty({}, {"1 + 1", "=2 * 3, 'x'", "'str'", "nil"}, {env = env})
      assert.equal(0, r.status)
      assert.matches("^lmp " .. lmp.version:gsub("%.", "%%."), r.stdout)
      assert.matches("> 1 %+ 1\n2\n", r.stdout)
      assert.matches("> =2 %* 3, 'x'\n6\tx\n", r.stdout)
      assert.matches("> 'str'\nstr\n", r.stdout)
      assert.matches("> nil\nnil\n", r.stdout)
    end)

    it("runs the first session of docs/cli.md: globals travel, tables print", function()
      local r = H.pty({}, {"k = 10", "function f(x) return x * k end", "p = lmp.Pool(2)",
                           "p:map(f, {1,2,3})", "t = {a = 1, b = {2, 3}}", "t",
                           "k = 3", "p:map(f, {1,2,3})", "p:close() p:join()"},
                      {env = env, timeout = 30})
      assert.equal(0, r.status)
      assert.matches("> p:map%(f, {1,2,3}%)\n{10, 20, 30}\n", r.stdout)
      assert.matches("> t\n{a = 1, b = {2, 3}}\n", r.stdout)
      assert.matches("> p:map%(f, {1,2,3}%)\n{3, 6, 9}\n", r.stdout)
    end)

    it("prints several results, strings as themselves inside tables quoted", function()
      local r = H.pty({}, {"1, 'x', {'x', [2.5] = true}, nil, 0/0"}, {env = env})
      assert.matches('\n1\tx\t{"x", %[2%.5%] = true}\tnil\t0/0\n', r.stdout)
    end)

    it("continues an incomplete chunk on the next line", function()
      local r = H.pty({}, {"function twice(x)", "  return 2 * x", "end", "twice(21)"},
                      {env = env})
      assert.equal(0, r.status)
      assert.matches("> function twice%(x%)\n>>   return 2 %* x\n>> end\n> twice%(21%)\n42\n",
                     r.stdout)
    end)

    it("reports an error and keeps the session going", function()
      local r = H.pty({}, {"error('oops')", "local t = nil; t.x = 1", "print('still here')"},
                      {env = env})
      assert.equal(0, r.status)
      assert.matches("lmp: oops\n", r.stdout, 1, true)
      assert.matches("attempt to index local 't' %(a nil value%)", r.stdout)
      assert.matches("> print%('still here'%)\nstill here\n", r.stdout)
    end)

    it("reports a syntax error and keeps the session going", function()
      local r = H.pty({}, {"x = = 1", "print('next')"}, {env = env})
      assert.matches("unexpected symbol near '='", r.stdout, 1, true)
      assert.matches("\nnext\n", r.stdout)
    end)

    it("keeps a history across sessions", function()
      H.pty({}, {"history_marker = 1"}, {env = env})
      assert.matches("history_marker", H.slurp(env.LMP_HISTORY) or "", 1, true)
    end)

    it("enters interactive mode after a script with -i", function()
      local script = H.write(dir .. "/s.lua", "greeting = 'hello'")
      local r = H.pty({"-i", script}, {"greeting"}, {env = env})
      assert.equal(0, r.status)
      assert.matches("> greeting\nhello\n", r.stdout)
    end)

    it("reads from a pipe with -i and no terminal", function()
      local r = H.lmp_run({"-i"}, {stdin = "1 + 41\nfunction f()\nreturn 'ok' end\nf()\n"})
      assert.equal(0, r.status)
      assert.matches("42\n", r.stdout, 1, true)
      assert.matches("ok\n", r.stdout, 1, true)
    end)
  end)

  describe("--env", function()
    it("lets a stock luajit require lmp", function()
      local r = H.lmp_run({"--env"})
      assert.equal(0, r.status)
      local cpath = r.stdout:match("export LUA_CPATH='([^']*)'")
      assert.truthy(cpath)
      local env = H.foreign_host_env()
      env.LUA_CPATH = cpath
      local s = H.run({"luajit", "-e", "local lmp = require 'lmp'; " ..
                       "print(lmp.version, lmp.cpu_count() >= 1, lmp.get_executable())"},
                      {env = env, cwd = "/"})
      assert.equal(0, s.status, s.stderr)
      -- Workers of a stock luajit run the lmp host that sits beside lmp.so.
      assert.equal(lmp.version .. "\ttrue\t" .. H.lmp .. "\n", s.stdout)
    end)
  end)

  describe("a stock luajit that loaded lmp.so, at its exit", function()
    -- Runs a chunk in a stock luajit that finds lmp through lmp --env.
    local function stock(chunk)
      local cpath = H.lmp_run({"--env"}).stdout:match("export LUA_CPATH='([^']*)'")
      local env = H.foreign_host_env()
      env.LUA_CPATH = cpath
      local path = H.write(H.tmpdir() .. "/chunk.lua", chunk)
      local t0 = H.now()
      local r = H.run({"luajit", path}, {env = env, cwd = "/", timeout = 30})
      r.elapsed = H.now() - t0
      return r
    end

    it("joins its non-daemon children, as the lmp host does", function()
      local out = H.tmpdir() .. "/joined"
      local r = stock(([[
        local lmp = require "lmp"
        local p = lmp.Process(function(path)
          local t = os.clock() while os.clock() - t < 0.5 do end
          local f = io.open(path, "w") f:write("joined") f:close()
        end, %q)
        p:start()
        print("pid " .. p.pid)
      ]]):format(out))
      assert.equal(0, r.status, r.stderr)
      assert.equal("joined", H.slurp(out))
      local pid = tonumber(r.stdout:match("pid (%d+)"))
      assert.is_true(H.dead(pid))
    end)

    it("ends an open pool's busy workers and leaves no process", function()
      local r = stock([[
        local lmp = require "lmp"
        local pool = lmp.Pool(2)
        for i = 1, 4 do pool:apply_async(function() local t = os.clock() while os.clock() - t < 30 do end end, {}) end
        local t = os.time() repeat lmp.poll(0.05) until pool:stats().busy == 2 or os.time() - t > 10
        for _, p in ipairs(lmp.active_children()) do print("pid " .. p.pid) end
      ]])
      assert.equal(0, r.status, r.stderr)
      assert.is_true(r.elapsed < 20, "took " .. r.elapsed .. " s")
      local n = 0
      for pid in r.stdout:gmatch("pid (%d+)") do
        n = n + 1
        assert.is_truthy(H.wait_until(function() return H.dead(tonumber(pid)) end, 5),
                         "worker " .. pid .. " outlived luajit")
      end
      assert.equal(2, n)
    end)
  end)

  describe("worker entry point", function()
    local function frame(payload)
      local n = #payload
      return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                         math.floor(n / 256) % 256, n % 256) .. payload
    end

    -- A bootstrap record as Process:start writes it.
    local function record(target, args)
      local codec = lmp.codec
      args = args or {n = 0}
      return codec.encode({name = "w", daemon = false, path = package.path, cpath = package.cpath,
                           parent_pid = 1, parent_name = "MainProcess",
                           target = codec.encode(target, {binary = true}),
                           args = codec.encode(args, {binary = true})}, {binary = true})
    end

    it("runs the target of the bootstrap record from the inherited descriptor", function()
      local boot = H.write(dir .. "/boot", frame(record(function(a, b)
        print(a, b, require("lmp").current_process().name, require("lmp").parent_process().pid)
      end, {n = 2, "x", 7})))
      local r = H.lmp_run({"--lmp-worker", "3", "w-1"}, {shell = "3< " .. H.quote(boot)})
      assert.equal(0, r.status, r.stderr)
      assert.equal("x\t7\tw\t1\n", r.stdout)
    end)

    it("exits with the status the target gives os.exit", function()
      local boot = H.write(dir .. "/boot", frame(record(function() os.exit(5) end)))
      local r = H.lmp_run({"--lmp-worker", "3", "w-1"}, {shell = "3< " .. H.quote(boot)})
      assert.equal(5, r.status, r.stderr)
    end)

    it("prefixes a failure with the process name and exits 1", function()
      local boot = H.write(dir .. "/boot", frame(record(function() error("worker failed") end)))
      local r = H.lmp_run({"--lmp-worker", "3", "w-2"}, {shell = "3< " .. H.quote(boot)})
      assert.equal(1, r.status)
      assert.matches("^w%-2: [^\n]*: worker failed\nstack traceback:", r.stderr)
    end)

    it("refuses to start when its parent is already gone", function()
      local boot = H.write(dir .. "/boot", frame(record(function() print("ran") end)))
      local r = H.lmp_run({"--lmp-worker", "3", "w-4", "1"}, {shell = "3< " .. H.quote(boot)})
      assert.equal(1, r.status)
      assert.equal("", r.stdout)
      assert.matches("w%-4: the parent process is gone", r.stderr)
    end)

    it("refuses a truncated bootstrap message or a bad descriptor", function()
      local boot = H.write(dir .. "/boot", frame("return 0"):sub(1, 6))
      local r = H.lmp_run({"--lmp-worker", "3", "w-3"}, {shell = "3< " .. H.quote(boot)})
      assert.equal(1, r.status)
      assert.matches("w%-3: cannot read the bootstrap message: protocol error", r.stderr)
      r = H.lmp_run({"--lmp-worker", "x3"})
      assert.equal(2, r.status)
      assert.matches("bad bootstrap descriptor 'x3'", r.stderr, 1, true)
    end)
  end)
end)
