-- lmp.captures: the globals a function takes with it when it travels.
--
-- A function defined at the prompt or in the main script reads globals
-- that were set there (`k = 10; function f(x) return x * k end`), and a
-- worker's fresh state has none of them.  So, as cloudpickle does for
-- __main__, such a function takes the globals it reads along: the codec
-- asks the hook below for their names (the GGET instructions of its
-- bytecode and of the functions nested in it) and writes their values
-- after the value it encodes, in one table that every such function of the
-- message gets as its environment (runtime/lmp_codec_enc.c, bin_globals).
-- Modules and C functions among them travel by reference, as everywhere.
--
-- Functions of loaded modules keep resolving their globals in the process
-- that runs them: their module is there too.
return function(core, lmp, I)
  local jutil = require "jit.util"
  local funcbc, funck = jutil.funcbc, jutil.funck
  local band, rshift = bit.band, bit.rshift

  -- The opcodes of GGET and GSET, from functions made of them (opcodes
  -- are the VM's to number).
  local GGET = band(funcbc(loadstring("return lmp_probe"), 1), 0xff)
  local GSET = band(funcbc(loadstring("lmp_probe = 1"), 2), 0xff)

  -- Adds to `names` the globals that proto reads or sets, nested
  -- functions included.  (One that only sets a global takes it too, so
  -- that the functions of a message share their globals as the functions
  -- of the script did.)
  local function scan(proto, names, seen)
    local pc = 1
    while true do
      local ins = funcbc(proto, pc)
      if not ins then break end
      local op = band(ins, 0xff)
      if op == GGET or op == GSET then
        local name = funck(proto, -rshift(ins, 16) - 1)
        if not seen[name] then
          seen[name] = true
          names[#names + 1] = name
        end
      end
      pc = pc + 1
    end
    local i = -1
    while true do
      local k = funck(proto, i)
      if k == nil then break end
      if type(k) == "proto" then scan(k, names, seen) end
      i = i - 1
    end
  end

  -- Sources of the main program: the prompt, -e, lmp - and the script
  -- (arg[0], set by lmp and by luajit alike).
  local function is_main(source)
    if source == "=stdin" or source == "=(command line)" then return true end
    local arg = rawget(_G, "arg")
    return type(arg) == "table" and type(arg[0]) == "string" and source == "@" .. arg[0]
  end

  local names_of = setmetatable({}, {__mode = "k"})  -- function -> names or false

  -- fn -> the names of the globals it takes, and the table they are read
  -- from; nothing when it takes none.
  function I.captures(fn)
    local names = names_of[fn]
    if names == nil then
      names = false
      if is_main(debug.getinfo(fn, "S").source) then
        local list = {}
        scan(fn, list, {})
        if #list > 0 then names = list end
      end
      names_of[fn] = names
    end
    if names then return names, getfenv(fn) end
  end

  -- The name under which t is in package.loaded, if it is a module.
  function I.module_name(t)
    for name, m in pairs(package.loaded) do
      if m == t then return name end
    end
  end

  core.codec_globals_hook(I.captures)
end
