-- lmp.repr: values as a person at the prompt wants to read them.
--
-- Tables print as Lua constructors, `{1, 2, a = {3}}`, sorted, on one
-- line when they fit in WIDTH columns and indented otherwise.  What could
-- not end is cut short: levels below MAX_DEPTH print as `{…}`, arrays
-- and hashes after MAX_ITEMS entries as `…N more`, long strings after
-- MAX_STRING bytes, and a table inside itself as `<cycle>`.  A table with
-- a __tostring prints as that.  The REPL (runtime/lmp_repl.c) prints each
-- result with it; a string result prints as itself, as luajit prints it.
local M = {}

local WIDTH, MAX_DEPTH, MAX_ITEMS, MAX_STRING = 78, 4, 50, 200

local format, concat, sort = string.format, table.concat, table.sort

local escapes = {['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r",
                 ["\t"] = "\\t", ["\0"] = "\\0"}

local function quote(s)
  local cut = ""
  if #s > MAX_STRING then
    cut = format("…(%d bytes)", #s)
    s = s:sub(1, MAX_STRING)
  end
  s = s:gsub('[%c"\\]', function(c) return escapes[c] or format("\\%03d", c:byte()) end)
  return '"' .. s .. '"' .. cut
end

local function number(n)
  if n ~= n then return "0/0" end
  if n == math.huge then return "math.huge" end
  if n == -math.huge then return "-math.huge" end
  if n == math.floor(n) and n >= -2^53 and n <= 2^53 then return format("%d", n) end
  return format("%.17g", n)
end

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local
            nil not or repeat return then true until while]]):gmatch("%a+") do
  keywords[w] = true
end

local function is_name(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") and not keywords[k]
end

-- Sort keys: numbers, then strings, then anything else by its name.
local order = {number = 1, string = 2}
local function before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (order[ta] or 3) < (order[tb] or 3) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local render

-- The name of a loaded module t is: inside a table, a module prints as
-- its name, not as all its functions.
local function module_name(t)
  for name, m in pairs(package.loaded) do
    if m == t then return name end
  end
end

local function render_table(t, depth, indent, open)
  local mt = getmetatable(t)
  if type(mt) == "table" and rawget(mt, "__tostring") then
    local ok, s = pcall(tostring, t)
    if ok then return tostring(s) end
  end
  if open[t] then return "<cycle>" end
  if depth > 0 then
    local name = module_name(t)
    if name then return "<module " .. name .. ">" end
  end
  if next(t) == nil then return "{}" end
  if depth >= MAX_DEPTH then return "{…}" end
  open[t] = true
  local items, n, positional = {}, #t, 0
  local inner = indent .. "  "
  local shown = math.min(n, MAX_ITEMS)
  for i = 1, shown do items[#items + 1] = render(rawget(t, i), depth + 1, inner, open) end
  if n > shown then items[#items + 1] = format("…%d more", n - shown) end
  positional = #items
  local keys = {}
  for k in pairs(t) do
    if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then
      keys[#keys + 1] = k
    end
  end
  sort(keys, before)
  for i = 1, math.min(#keys, MAX_ITEMS) do
    local k = keys[i]
    local key = is_name(k) and k or "[" .. render(k, depth + 1, inner, open) .. "]"
    items[#items + 1] = key .. " = " .. render(rawget(t, k), depth + 1, inner, open)
  end
  if #keys > MAX_ITEMS then items[#items + 1] = format("…%d more", #keys - MAX_ITEMS) end
  open[t] = nil
  local line = "{" .. concat(items, ", ") .. "}"
  if #indent + #line <= WIDTH and not line:find("\n", 1, true) then return line end
  -- Indented: the array part fills lines, each pair has a line of its own.
  local lines, cur = {}, nil
  for i = 1, #items do
    local item = items[i]
    if i <= positional and cur and not item:find("\n", 1, true)
       and #inner + #cur + #item + 2 <= WIDTH then
      cur = cur .. ", " .. item
    else
      if cur then lines[#lines + 1] = cur end
      cur = item
    end
    if i > positional or item:find("\n", 1, true) then
      lines[#lines + 1] = cur
      cur = nil
    end
  end
  if cur then lines[#lines + 1] = cur end
  return "{\n" .. inner .. concat(lines, ",\n" .. inner) .. "\n" .. indent .. "}"
end

function render(v, depth, indent, open)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return number(v) end
  if t == "table" then return render_table(v, depth, indent, open) end
  if v == require("lmp").null then return "lmp.null" end
  return tostring(v)
end

-- v as a person reads it.
function M.repr(v)
  return render(v, 0, "", {})
end

-- What the prompt prints for a result: a string as itself, the rest as
-- repr says.
function M.result(v)
  if type(v) == "string" then return v end
  return M.repr(v)
end

return M
