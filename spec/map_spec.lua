-- `lmp map`: JSON lines through a pool (lua/lmp/cli/map.lua), run as a
-- user runs it, with real files, pipes and exit statuses.
local H = require "spec.support.helpers"
local lmp = require "lmp"
local codec = lmp.codec

describe("lmp map", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  local function map(args, stdin)
    return H.lmp_run({"map", unpack(args)}, {cwd = dir, stdin = stdin, timeout = 60})
  end

  local function lines(s)
    local t = {}
    for l in s:gmatch("[^\n]+") do t[#t + 1] = codec.decode(l) end
    return t
  end

  local function numbers(n)
    local t = {}
    for i = 1, n do t[i] = ('{"n": %d, "s": "x%d"}'):format(i, i) end
    return table.concat(t, "\n") .. "\n"
  end

  before_each(function()
    H.write(dir .. "/sq.lua", "return function(r) return {n = r.n, sq = r.n * r.n} end\n")
  end)

  it("writes one JSON line per input line, in input order", function()
    H.write(dir .. "/in.jsonl", numbers(5000))
    for _, j in ipairs {"1", "2", "3"} do
      local r = map({"-j", j, "sq.lua", "in.jsonl"})
      assert.equal(0, r.status, r.stderr)
      assert.equal("", r.stderr)
      local out = lines(r.stdout)
      assert.equal(5000, #out)
      for i = 1, 5000 do assert.same({n = i, sq = i * i}, out[i]) end
    end
  end)

  it("reads stdin, several files in order, and '-'", function()
    H.write(dir .. "/a.jsonl", '{"n": 1}\n{"n": 2}\n')
    H.write(dir .. "/b.jsonl", '{"n": 3}')  -- no newline at the end
    local r = map({"sq.lua", "a.jsonl", "-", "b.jsonl"}, '{"n": 10}\n')
    assert.equal(0, r.status, r.stderr)
    local out = lines(r.stdout)
    assert.same({1, 2, 10, 3}, {out[1].n, out[2].n, out[3].n, out[4].n})
  end)

  it("writes every line once with --unordered", function()
    H.write(dir .. "/in.jsonl", numbers(3000))
    local r = map({"--unordered", "sq.lua", "in.jsonl"})
    assert.equal(0, r.status, r.stderr)
    local seen = {}
    for _, v in ipairs(lines(r.stdout)) do
      assert.is_nil(seen[v.n])
      seen[v.n] = v.sq
    end
    for i = 1, 3000 do assert.equal(i * i, seen[i]) end
  end)

  it("calls SCRIPT:FN, a field of what the script returns or a global", function()
    H.write(dir .. "/m.lua", "double = function(r) return r.n * 2 end\n" ..
                             "return {triple = function(r) return r.n * 3 end}\n")
    assert.equal("21\n", map({"m.lua:triple"}, '{"n": 7}\n').stdout)
    assert.equal("14\n", map({"m.lua:double"}, '{"n": 7}\n').stdout)
    local r = map({"m.lua:nothing"}, '{"n": 7}\n')
    assert.equal(1, r.status)
    assert.matches("m.lua has no function 'nothing'", r.stderr, 1, true)
  end)

  it("runs the script once in each worker, so its setup is there", function()
    H.write(dir .. "/setup.lua", [[
      local table_of = {}
      for i = 1, 10 do table_of[i] = i * 100 end
      return function(r) return table_of[r.n] end
    ]])
    local r = map({"setup.lua"}, '{"n": 3}\n{"n": 10}\n{"n": 11}\n')
    assert.equal(0, r.status, r.stderr)
    assert.equal("300\n1000\nnull\n", r.stdout)
  end)

  it("skips blank lines, reads CRLF, and counts lines as a person does", function()
    local r = map({"--keep-going", "sq.lua"}, '{"n": 1}\r\n\n   \n{"n": "x"}\n{"n": 2}\r\n')
    assert.equal(3, r.status)
    local out = lines(r.stdout)
    assert.equal(3, #out)
    assert.same({n = 1, sq = 1}, out[1])
    assert.equal(4, out[2].line)
    assert.matches("attempt to perform arithmetic", out[2].error)
    assert.same({n = 2, sq = 4}, out[3])
  end)

  it("stops at a failing line with status 1 and names it", function()
    local input = numbers(2000):gsub('{"n": 1500, "s": "x1500"}', '{"n": "bad"}')
    H.write(dir .. "/in.jsonl", input)
    local r = map({"sq.lua", "in.jsonl"})
    assert.equal(1, r.status)
    assert.matches("^lmp map: line 1500: .*sq%.lua:1: attempt to perform arithmetic", r.stderr)
    local out = lines(r.stdout)
    assert.equal(1499, #out)  -- every line before it, in order
    assert.equal(1499, out[1499].n)
  end)

  it("names the file of a failing line when there are several", function()
    H.write(dir .. "/a.jsonl", '{"n": 1}\n')
    H.write(dir .. "/b.jsonl", '{"n": 2}\nnot json\n')
    local r = map({"sq.lua", "a.jsonl", "b.jsonl"})
    assert.equal(1, r.status)
    assert.matches("^lmp map: line 2 of b.jsonl: invalid JSON", r.stderr)
    r = map({"--keep-going", "sq.lua", "a.jsonl", "b.jsonl"})
    assert.equal(3, r.status)
    local out = lines(r.stdout)
    assert.same({2, "b.jsonl"}, {out[3].line, out[3].file})
  end)

  it("keeps going with --keep-going: errors become lines, status 3", function()
    H.write(dir .. "/odd.lua", [[
      return function(r)
        if r.n == 2 then error("two is bad") end
        if r.n == 3 then return 0 / 0 end
        if r.n == 4 then return coroutine.create(print) end
        return r.n
      end
    ]])
    local r = map({"--keep-going", "odd.lua"}, '{"n": 1}\n{"n": 2}\n{"n": 3}\n{"n": 4}\n{"n": 5}\n')
    assert.equal(3, r.status)
    local out = lines(r.stdout)
    assert.equal(1, out[1])
    assert.matches("two is bad", out[2].error)
    assert.equal(2, out[2].line)
    assert.matches("not JSON data", out[3].error)
    assert.matches("cannot encode a thread", out[4].error)
    assert.equal(5, out[5])
    r = map({"odd.lua"}, '{"n": 1}\n{"n": 3}\n{"n": 5}\n')
    assert.equal(1, r.status)
    assert.equal("1\n", r.stdout)
    assert.matches("line 2: the result is not JSON data", r.stderr, 1, true)
  end)

  it("never loads code from its input", function()
    local evil = codec.encode(function() os.exit(7) end)
    local r = map({"--keep-going", "sq.lua"}, evil .. "\n" .. '{"n": 2}\n')
    assert.equal(3, r.status)
    local out = lines(r.stdout)
    assert.matches("invalid JSON", out[1].error)
    assert.equal(4, out[2].sq)
  end)

  it("gives status 2 and the usage for a bad command line", function()
    for _, args in ipairs {{}, {"--bogus", "sq.lua"}, {"-j", "0", "sq.lua"}, {"-j"}} do
      local r = map(args, "")
      assert.equal(2, r.status, table.concat(args, " "))
      assert.matches("usage: lmp map", r.stderr, 1, true)
    end
    local r = map({"--help"})
    assert.equal(0, r.status)
    assert.matches("usage: lmp map", r.stdout, 1, true)
  end)

  it("fails clearly on a script that does not load or returns no function", function()
    H.write(dir .. "/syntax.lua", "return function(")
    H.write(dir .. "/nofn.lua", "return 42")
    local r = map({"syntax.lua"}, '{"n": 1}\n')
    assert.equal(1, r.status)
    assert.matches("syntax.lua", r.stderr, 1, true)
    r = map({"nofn.lua"}, '{"n": 1}\n')
    assert.equal(1, r.status)
    assert.matches("nofn.lua returns number, not a function", r.stderr, 1, true)
    r = map({"sq.lua", "missing.jsonl"})
    assert.equal(1, r.status)
    assert.matches("cannot open missing.jsonl", r.stderr, 1, true)
  end)

  it("draws --progress only on a terminal", function()
    local r = map({"--progress", "sq.lua"}, numbers(100))
    assert.equal(0, r.status)
    assert.equal("", r.stderr)
  end)

  it("keeps memory bounded on endless input", function()
    H.write(dir .. "/id.lua", "return function(r) return r end\n")
    -- `yes` never ends; lmp map's RSS is read twice, 3 s apart, while
    -- millions of lines go through.  (In a sanitizer build, freed memory
    -- waits in ASan's quarantine: it is turned off, or RSS would grow by
    -- the quarantine's size whatever lmp does.)
    local script = ([[
      cd %q
      export ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0"
      yes '{"a": [1, 2, 3], "b": "some text"}' | %q map id.lua > /dev/null &
      pid=$!
      sleep 2; a=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
      sleep 3; b=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
      kill $pid; wait $pid
      echo "$a $b"
    ]]):format(dir, H.lmp)
    local r = H.run({"sh", "-c", script}, {timeout = 30})
    local a, b = r.stdout:match("(%d+) (%d+)")
    assert.truthy(a, r.stdout .. r.stderr)
    assert.is_true(tonumber(b) - tonumber(a) < 8 * 1024,
                   ("RSS grew from %s to %s KiB"):format(a, b))
  end)
end)
