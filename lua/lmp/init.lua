-- lmp: Lua multiprocessing.  The table that `require "lmp"` returns.
--
-- `core` holds the C half of the module (runtime/lmp_module.c); this file
-- decides what users see.  Each part of lmp is installed by its own module
-- (Process, Queue, Pool, ...), which gets the core, the public table and
-- the internal table (lmp.internal) that the parts share with each other
-- and never with users.
local core = ...

local lmp = {
  version = core.version,
  errors = core.errors,
  error = core.error,
  is_error = core.is_error,
  codec = core.codec,
  null = core.null,       -- JSON's null; the same value as cjson.null
  Pipe = core.Pipe,
  connection = {},
  cpu_count = core.cpu_count,
  get_executable = core.get_executable,
  set_executable = core.set_executable,
}

local I = require("lmp.internal")(core, lmp)
require("lmp.captures")(core, lmp, I)
require("lmp.process")(core, lmp, I)
require("lmp.wait")(core, lmp, I)
local shm = require("lmp.shm")(core, lmp, I)
require("lmp.shared")(core, lmp, I, shm, require("lmp.sync")(core, lmp, I, shm))
require("lmp.buffers")(core, lmp, I)
require("lmp.queue")(core, lmp, I, shm)
require("lmp.listener")(core, lmp, I)
require("lmp.pool")(core, lmp, I)
require("lmp.managers")(core, lmp, I)
-- the forkserver's loop, found as the target "lmp.forkserver:serve"
package.loaded["lmp.forkserver"] = require("lmp.forkserver")(core, lmp, I)
-- What a host's C calls reach (runtime/lmp_backend.c).
core.host = I.host

return lmp
