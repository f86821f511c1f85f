-- The first lmp script: load the module and look at the machine.
-- Run it with:  build/lmp scripts/examples/hello.lua
local lmp = require "lmp"

print(("lmp %s, LuaJIT %s, %d CPUs available to this process"):format(
  lmp.version, jit.version:match("[%d.]+%S*"), lmp.cpu_count()))
print("worker executable: " .. tostring(lmp.get_executable()))
