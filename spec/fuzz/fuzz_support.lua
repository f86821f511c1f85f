-- fuzz_support.lua -- the Lua half of spec/fuzz/fuzz_support.c, run once
-- in each target's state: lmp, the registrations the seed corpora use,
-- and the checks the targets share.  Returns the support table.
local lmp = require "lmp"
local S = {lmp = lmp, Point = {__index = {}}}
lmp.codec.register("fuzz.Point", S.Point)
package.loaded["fuzz_mod"] = {answer = 42}

local null, next, type = lmp.null, next, type

-- lmp's core, the table of C functions, as lua/lmp/listener.lua sees it:
-- the targets and the corpus use its HMAC and replace its random bytes.
function S.listener_core()
  for i = 1, 100 do
    local name, v = debug.getupvalue(lmp.connection.Listener, i)
    if name == nil then break end
    if name == "core" then return v end
  end
  error("no core upvalue in lmp.connection.Listener")
end

-- Metatables are not looked into: safe mode attaches registered ones
-- only, by name.
local function walk(v, seen, modules)
  local t = type(v)
  if t == "table" then
    if seen[v] then return end
    if modules[v] then return "a loaded module" end
    seen[v] = true
    for k, x in next, v do
      local why = walk(k, seen, modules) or walk(x, seen, modules)
      if why then return why end
    end
  elseif t ~= "nil" and t ~= "boolean" and t ~= "number" and t ~= "string" and v ~= null then
    return "a " .. t
  end
end

-- plain(v) -> nil if v is plain data (nil, booleans, numbers, strings,
-- lmp.null and tables of them, no loaded module among them), or what in
-- it is not.
function S.plain(v)
  local modules = {}
  for _, m in next, package.loaded do modules[m] = true end
  return walk(v, {}, modules)
end

-- Is e an lmp error whose kind is a key of `kinds`?
function S.lmp_error(e, kinds)
  return lmp.is_error(e) and type(e.message) == "string" and kinds[e.kind] == true
end

return S
