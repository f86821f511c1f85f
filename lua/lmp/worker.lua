-- lmp.worker: what a worker process runs after lmp_worker_main() has read
-- its bootstrap message (runtime/lmp_worker.c).  The message is a record
-- encoded by Process:start (lua/lmp/process.lua); it comes from the parent
-- over an inherited socket, so it is trusted.
local M = {}

function M.main(bootstrap)
  return require("lmp")._run_child(bootstrap)
end

return M
