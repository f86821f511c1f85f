-- Every ```lua block of README.md and docs/*.md runs as shown: each is
-- written to a file of its own and run with the lmp host, in an empty
-- directory, and must exit 0 within the timeout.  A block that cannot run
-- on its own (a signature, a fragment of a bigger program) is marked
-- ```lua-norun, or is a plain ``` block, and is not run.
local H = require "spec.support.helpers"

-- The repository's root: this file is spec/docs_spec.lua.
local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."

local function doc_files()
  local files = {root .. "/README.md"}
  local p = io.popen("ls " .. H.quote(root .. "/docs") .. "/*.md")
  for path in p:lines() do files[#files + 1] = path end
  p:close()
  return files
end

-- The ```lua blocks of a file: {line = first line of code, code = text}.
local function lua_blocks(path)
  local blocks, current, n = {}, nil, 0
  for line in io.lines(path) do
    n = n + 1
    if current then
      if line:match("^%s*```%s*$") then
        blocks[#blocks + 1] = current
        current = nil
      else
        current.code = current.code .. line .. "\n"
      end
    elseif line:match("^%s*```") then
      local lang = line:match("^%s*```%s*(%S*)")
      if lang == "lua" then
        current = {line = n + 1, code = ""}
      else
        -- another language, or lua-norun: skip to the closing fence
        current = {skip = true, line = n + 1, code = ""}
      end
    end
  end
  assert(current == nil, path .. ": a code block is not closed")
  local runnable = {}
  for _, b in ipairs(blocks) do
    if not b.skip then runnable[#runnable + 1] = b end
  end
  return runnable
end

describe("the documentation's Lua examples", function()
  after_each(function()
    H.cleanup()
    assert.same({}, H.children())
  end)

  local total = 0
  for _, path in ipairs(doc_files()) do
    local name = path:sub(#root + 2)
    for _, block in ipairs(lua_blocks(path)) do
      total = total + 1
      it(("%s:%d runs"):format(name, block.line), function()
        local dir = H.tmpdir()
        local file = H.write(dir .. "/example.lua", block.code)
        local r = H.lmp_run({file}, {cwd = dir, timeout = 60})
        assert(r.status == 0, ("%s:%d exited with status %s\n--- stderr:\n%s--- stdout:\n%s")
               :format(name, block.line, tostring(r.status), r.stderr, r.stdout))
      end)
    end
  end

  it("found examples to run", function()
    assert.is_true(total >= 10, "only " .. total .. " ```lua blocks found")
  end)
end)
