-- lmp: Lua multiprocessing.  The table that `require "lmp"` returns.
--
-- `core` holds the C half of the module (runtime/lmp_module.c); this file
-- decides what users see.  Objects (Process, Queue, Pool, ...) are added by
-- their own modules as they land.
local core = ...

local lmp = {
  version = core.version,
  errors = core.errors,
  error = core.error,
  is_error = core.is_error,
  codec = core.codec,
  null = core.null,       -- JSON's null; the same value as cjson.null
  Pipe = core.Pipe,
  connection = core.connection,
  cpu_count = core.cpu_count,
  get_executable = core.get_executable,
  set_executable = core.set_executable,
}

require("lmp.process")(core, lmp)
local shm = require("lmp.shm")(core, lmp)
require("lmp.shared")(core, lmp, shm, require("lmp.sync")(core, lmp, shm))
require("lmp.queue")(core, lmp, shm)
require("lmp.listener")(core, lmp)
require("lmp.pool")(core, lmp)

return lmp
