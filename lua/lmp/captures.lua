-- lmp.captures: the globals a function takes with it when it travels.
--
-- A function defined at the prompt or in the main script reads globals
-- that were set there (`k = 10; function f(x) return x * k end`), and a
-- worker's fresh state has none of them.  So, as cloudpickle does for
-- __main__, such a function takes the globals it reads along: the codec
-- asks the hook below for their names (the GGET instructions of its
-- bytecode and of the functions nested in it) and writes the values that
-- are not nil after the value it encodes, in one table that every such
-- function of the message gets as its environment (runtime/lmp_codec_enc.c,
-- bin_globals).  Modules and C functions among them travel by reference,
-- as everywhere.  What the environment does not hold -- a global that was
-- nil when sent, one set for the first time -- is the receiver's own: a
-- Pool initializer's `db = connect()` is what the tasks then read.
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

  -- Adds to `names` the globals that proto reads, nested functions
  -- included; returns whether it reads or sets any.
  local function scan(proto, names, seen)
    local pc, any = 1, false
    while true do
      local ins = funcbc(proto, pc)
      if not ins then break end
      local op = band(ins, 0xff)
      if op == GGET then
        local name = funck(proto, -rshift(ins, 16) - 1)
        if not seen[name] then
          seen[name] = true
          names[#names + 1] = name
        end
      end
      any = any or op == GGET or op == GSET
      pc = pc + 1
    end
    local i = -1
    while true do
      local k = funck(proto, i)
      if k == nil then break end
      if type(k) == "proto" and scan(k, names, seen) then any = true end
      i = i - 1
    end
    return any
  end

  -- Sources of the main program: the prompt, -e, lmp - and the script
  -- (arg[0], set by lmp and by luajit alike).
  local function is_main(source)
    if source == "=stdin" or source == "=(command line)" then return true end
    local arg = rawget(_G, "arg")
    return type(arg) == "table" and type(arg[0]) == "string" and source == "@" .. arg[0]
  end

  local names_of = setmetatable({}, {__mode = "k"})  -- function -> names or false

  -- fn -> the names of the globals it reads (maybe none: it only sets
  -- some), and the table they are read from; nothing when fn is not the
  -- main program's or touches no global.
  function I.captures(fn)
    local names = names_of[fn]
    if names == nil then
      names = false
      if is_main(debug.getinfo(fn, "S").source) then
        local list = {}
        if scan(fn, list, {}) then names = list end
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
