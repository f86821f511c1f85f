-- Helpers for specs that generate and compare values: a seeded random
-- generator and readable renderings of numbers, strings and bytes.
local V = {}

-- The seed of this run: LMP_SEED, or the time.  Failure messages print it
-- so that a run can be replayed.
V.SEED = tonumber(os.getenv("LMP_SEED")) or os.time()

-- A small deterministic PRNG (Park-Miller), independent of math.random,
-- which busted reseeds.
function V.new_rng(seed)
  local s = (math.floor(seed) % 2147483646) + 1
  local r = {}
  function r.next()
    s = (s * 48271) % 2147483647
    return s
  end
  function r.int(a, b) return a + r.next() % (b - a + 1) end
  function r.float() return (r.next() - 1) / 2147483646 end
  function r.chance(p) return r.float() < p end
  function r.pick(t) return t[r.int(1, #t)] end
  return r
end

-- A number with all its digits, NaN and the sign of zero spelled out.
function V.fmtnum(x)
  if x ~= x then return "nan" end
  if x == 0 and 1 / x < 0 then return "-0.0" end
  return string.format("%.17g", x)
end

-- A value as a person reads it; strings cut at `width` bytes (default 40),
-- with unprintable bytes escaped.
function V.show(v, width)
  width = width or 40
  if type(v) == "number" then return V.fmtnum(v) end
  if type(v) == "string" then
    local s = v:sub(1, width):gsub("[^\32-\126]", function(c) return string.format("\\x%02x", c:byte()) end)
    return '"' .. s .. (#v > width and ('..." (' .. #v .. " bytes)") or '"')
  end
  return tostring(v)
end

-- The first n bytes of s (default 80) in hex.
function V.hex(s, n)
  return (s:sub(1, n or 80):gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

function V.is_cfunction(f)
  return type(f) == "function" and debug.getinfo(f, "S").what == "C"
end

-- Is t a table that travels by reference (the value of a
-- package.loaded[name])?
function V.is_module(t)
  if type(t) ~= "table" then return false end
  for _, m in pairs(package.loaded) do
    if rawequal(m, t) then return true end
  end
  return false
end

-- Deep equality up to isomorphism, the one comparison of every spec:
-- V.deep_equal(a, b) -> true, or false and the path where they differ.
-- The graph of b must have exactly the shape of the graph of a (a table referenced twice in a arrives as one
-- table referenced twice in b, and two distinct tables stay distinct).
-- NaN equals NaN, -0.0 differs from 0.0.  Module tables and C functions
-- must be the very same objects.  Lua functions compare by bytecode and
-- upvalues, and shared upvalues must still be shared.
local function new_ctx()
  return {ab = {}, ba = {}, uab = {}, uba = {}}
end

local function snapshot(ctx)
  local s = {}
  for name, m in pairs(ctx) do
    local c = {}
    for k, v in pairs(m) do c[k] = v end
    s[name] = c
  end
  return s
end

local function restore(ctx, s)
  for name, m in pairs(s) do ctx[name] = m end
end

local function keystr(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return "." .. k end
  return "[" .. V.show(k) .. "]"
end

local eq

local function eq_table(a, b, ctx)
  if getmetatable(a) ~= getmetatable(b) then
    return false, ": metatable " .. tostring(getmetatable(a)) .. " vs " .. tostring(getmetatable(b))
  end
  local nb, bkeys = 0, {}
  for k in pairs(b) do
    nb = nb + 1
    local kt = type(k)
    if (kt == "table" and not V.is_module(k)) or (kt == "function" and not V.is_cfunction(k)) then
      bkeys[#bkeys + 1] = k
    end
  end
  local na = 0
  for k, va in pairs(a) do
    na = na + 1
    local kt = type(k)
    if (kt == "table" and not V.is_module(k)) or (kt == "function" and not V.is_cfunction(k)) then
      local kb = ctx.ab[k]
      if kb ~= nil then
        local vb = rawget(b, kb)
        if vb == nil then return false, "[" .. tostring(k) .. "]: key missing" end
        local ok, why = eq(va, vb, ctx)
        if not ok then return false, "[" .. tostring(k) .. "]" .. why end
      else
        local found = false
        for _, cand in ipairs(bkeys) do
          if ctx.ba[cand] == nil and type(cand) == kt then
            local snap = snapshot(ctx)
            if eq(k, cand, ctx) and eq(va, rawget(b, cand), ctx) then
              found = true
              break
            end
            restore(ctx, snap)
          end
        end
        if not found then return false, "[" .. tostring(k) .. "]: no matching " .. kt .. " key" end
      end
    else
      local vb = rawget(b, k)
      if vb == nil then return false, keystr(k) .. ": key missing after decode" end
      local ok, why = eq(va, vb, ctx)
      if not ok then return false, keystr(k) .. why end
    end
  end
  if na ~= nb then return false, ": " .. na .. " keys before, " .. nb .. " after" end
  return true
end

-- The stripped bytecode of f, with the upvalue descriptors of its main
-- prototype reduced to their "immutable" mark.  The rest of a descriptor
-- says where FNEW finds the upvalue in the enclosing function; a decoded
-- closure is made by a factory of lmp's (runtime/lmp_proto.c), so that
-- part names the factory's slots instead of the original enclosing
-- function's.  Instructions, constants and everything else must be equal.
local function code_of(f)
  local s = string.dump(f, true)
  local i = 5
  local function uleb()
    local v, sh = 0, 0
    while true do
      local b = s:byte(i); i = i + 1
      v = v + bit.lshift(bit.band(b, 0x7f), sh)
      if b < 0x80 then return v end
      sh = sh + 7
    end
  end
  uleb()  -- header flags (stripped: no chunk name)
  local last_uv, nuv
  while true do
    local len = uleb()
    if len == 0 then break end
    local start = i
    nuv = s:byte(i + 3)
    i = i + 4
    uleb(); uleb()
    local nbc = uleb()
    last_uv = i + 4 * nbc
    i = start + len
  end
  local parts = {s:sub(1, last_uv - 1)}
  for k = 0, nuv - 1 do
    local hi = s:byte(last_uv + 2 * k + 1)
    parts[#parts + 1] = "\0" .. string.char(bit.band(hi, 0x40))
  end
  parts[#parts + 1] = s:sub(last_uv + 2 * nuv)
  return table.concat(parts)
end

local function eq_function(a, b, ctx)
  if V.is_cfunction(b) then return false, ": a Lua function became the C function " .. tostring(b) end
  local okd, da = pcall(code_of, a)
  local okb, db = pcall(code_of, b)
  if not okd then return false, ": the original function cannot be dumped: " .. tostring(da) end
  if not okb then return false, ": the decoded function cannot be dumped: " .. tostring(db) end
  if da ~= db then return false, ": bytecode differs" end
  local ia, ib = debug.getinfo(a, "u"), debug.getinfo(b, "u")
  if ia.nups ~= ib.nups then return false, ": " .. ia.nups .. " upvalues vs " .. ib.nups end
  for i = 1, ia.nups do
    local name, va = debug.getupvalue(a, i)
    local _, vb = debug.getupvalue(b, i)
    if debug.upvalueid then
      local ida, idb = debug.upvalueid(a, i), debug.upvalueid(b, i)
      local ma, mb = ctx.uab[ida], ctx.uba[idb]
      if ma == nil and mb == nil then
        ctx.uab[ida], ctx.uba[idb] = idb, ida
      elseif ma ~= idb or mb ~= ida then
        return false, "<upvalue " .. tostring(name) .. ">: upvalue sharing differs"
      end
    end
    local ok, why = eq(va, vb, ctx)
    if not ok then return false, "<upvalue " .. tostring(name) .. ">" .. why end
  end
  return true
end

eq = function(a, b, ctx)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return false, ": " .. ta .. " " .. V.show(a) .. " became " .. tb .. " " .. V.show(b) end
  if ta == "number" then
    if a ~= a then
      if b ~= b then return true end
    elseif a == b and (a ~= 0 or 1 / a == 1 / b) then
      return true
    end
    return false, ": number " .. V.fmtnum(a) .. " became " .. V.fmtnum(b)
  end
  if ta == "string" then
    if a == b then return true end
    return false, ": string " .. V.show(a) .. " became " .. V.show(b)
  end
  if (ta ~= "table" and ta ~= "function") or V.is_module(a) or V.is_cfunction(a) then
    if rawequal(a, b) then return true end
    return false, ": " .. V.show(a) .. " became " .. V.show(b) .. " (must be the same object)"
  end
  local mapped = ctx.ab[a]
  if mapped ~= nil then
    if rawequal(mapped, b) then return true end
    return false, ": shared reference became a different " .. ta
  end
  if ctx.ba[b] ~= nil then return false, ": two distinct " .. ta .. "s became one" end
  ctx.ab[a], ctx.ba[b] = b, a
  if ta == "table" then return eq_table(a, b, ctx) end
  return eq_function(a, b, ctx)
end

function V.deep_equal(a, b)
  local ok, why = eq(a, b, new_ctx())
  return ok, ok and nil or ("value" .. (why or ""))
end

return V
