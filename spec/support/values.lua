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

-- Iterates a table like pairs().  The deep comparisons use it instead of
-- pairs()/next in `for ... in`, which LuaJIT compiles to ITERN: Debian 12's
-- LuaJIT (2.1.0~beta3+git20220320) has the ITERN bug of LuaJIT issue 827
-- (fixed upstream in April 2022), where nested pairs() loops under the JIT
-- sometimes stop early, so a correct decoder would seem to lose keys.
-- The parser only specialises iterators named pairs or next.
function V.entries(t)
  return next, t, nil
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

-- Deep equality of acyclic plain data; numbers exactly as doubles (the sign
-- of zero included).  Returns true, or false and where the two differ.
function V.same(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then
    return false, path .. ": " .. type(a) .. " " .. V.show(a, 60) .. " vs " .. type(b) .. " " .. V.show(b, 60)
  end
  if type(a) == "number" then
    if a == b and (a ~= 0 or 1 / a == 1 / b) or (a ~= a and b ~= b) then return true end
    return false, path .. ": " .. V.fmtnum(a) .. " vs " .. V.fmtnum(b)
  end
  if type(a) ~= "table" then
    if a == b then return true end
    return false, path .. ": " .. V.show(a, 60) .. " vs " .. V.show(b, 60)
  end
  local n = 0
  for k, va in V.entries(a) do
    n = n + 1
    local vb = b[k]
    if vb == nil then return false, path .. "[" .. V.show(k, 60) .. "]: missing" end
    local ok, why = V.same(va, vb, path .. "[" .. V.show(k, 60) .. "]")
    if not ok then return false, why end
  end
  for _ in V.entries(b) do n = n - 1 end
  if n ~= 0 then return false, path .. ": different number of keys" end
  return true
end

return V
