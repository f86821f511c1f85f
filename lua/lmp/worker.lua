-- lmp.worker: what a worker process runs after lmp_worker_main() has read
-- its bootstrap message (runtime/lmp_worker.c).
--
-- The bootstrap message comes from the parent over an inherited pipe, so it
-- is trusted.  It is a Lua chunk, run with the bootstrap fd and the process
-- name as arguments; its return value, if a number, is the exit status.
local M = {}

function M.main(bootstrap, fd, name)
  local chunk, err = loadstring(bootstrap, "=" .. name)
  if not chunk then
    error(err, 0)
  end
  local status = chunk(fd, name)
  return type(status) == "number" and status or 0
end

return M
