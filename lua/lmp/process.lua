-- lmp.process: Process objects, start methods, the current process and its
-- children (SPEC section 3).  Installed into the lmp table by init.lua.
--
-- A child runs the worker executable (runtime/lmp_process.c starts it);
-- everything it needs travels in one bootstrap record encoded with the
-- codec: name, package paths, working directory, target, arguments.  The
-- descriptors of Connections among the arguments are inherited as fds
-- 4, 5, ... and the arguments refer to them by position.
return function(core, lmp, I)
  local codec = lmp.codec
  local unpack = unpack or table.unpack
  local raise = I.raise

  local state = {
    current = {name = "MainProcess", pid = core.getpid(), daemon = false},
    parent = nil,
    children = {},   -- started Process objects not known to have ended
    count = 0,       -- for default names
    attaching = nil, -- while a child's arguments are encoded: their fds
    start_method = "spawn",
  }

  -- lmp objects that own descriptors travel to a child as the position of
  -- the descriptor among those it inherits (fds 4, 5, ...).  A shared one
  -- (a memory segment that holds several objects) is inherited once.
  function I.attach_fd(fd, what, shared)
    local fds = state.attaching
    if not fds then
      error(lmp.error("CodecError", what .. " can only be passed to a child " ..
                      "process when it starts (in the args of a Process or the " ..
                      "initargs of a Pool)"), 0)
    end
    local i = shared and fds.shared[fd]
    if not i then
      i = #fds + 1
      fds[i] = fd
      if shared then fds.shared[fd] = i end
    end
    return i
  end

  -- Only a child's bootstrap record can name inherited descriptors: an lmp
  -- object arriving any other way (over a socket with safe = false, say)
  -- must not take over a descriptor of this process.
  function I.inherited_fd(i)
    if not state.inheriting then
      error(lmp.error("CodecError", "an lmp object that owns a descriptor can only " ..
                      "arrive in a child's arguments"), 0)
    end
    local at = state.inherited  -- a forkserver's child: where they arrived
    if at then return at[i] end
    return 3 + i
  end

  -- In a forkserver's child: its descriptors, in the order of its record.
  function I.inherit_from(fds) state.inherited = fds end

  codec.register_extension("lmp.Connection", core.connection_mt,
    function(conn)
      local fd, readable, writable = core.conn_info(conn)
      return {I.attach_fd(fd, "a Connection"), readable, writable}
    end,
    function(t)
      return core.conn_from_fd(I.inherited_fd(t[1]), t[2], t[3])
    end)

  local Process = {}
  local methods = {}

  Process.__index = function(self, k)
    local h = rawget(self, "_handle")
    if (k == "pid" or k == "exitcode" or k == "sentinel") and rawget(self, "_closed") then
      error(lmp.error("ValueError", ("%s: process object is closed"):format(k)), 2)
    end
    if k == "pid" then return h and h.pid end
    if k == "exitcode" then return h and h.exitcode end
    if k == "sentinel" then return h and h.sentinel end
    return methods[k]
  end

  Process.__tostring = function(self)
    local h = rawget(self, "_handle")
    local status = not h and "initial" or (h.exitcode and ("stopped exitcode=" .. h.exitcode)
                   or "started")
    return ("lmp.Process(%s, %s%s)"):format(self.name, status, self.daemon and " daemon" or "")
  end

  -- lmp.Process{target = fn, args = {...}, name = "w1", daemon = false}
  -- lmp.Process(fn, a, b, ...)
  function lmp.Process(opts, ...)
    if type(opts) ~= "table" then
      opts = {target = opts, args = {n = select("#", ...), ...}}
    end
    local target = opts.target
    if type(target) == "string" then
      if not target:match("^[%w_.]+:[%w_]+$") then
        raise("ValueError", "lmp.Process: target %q is not \"module:function\"", target)
      end
    elseif type(target) ~= "function" then
      raise("TypeError", "lmp.Process: target must be a function or \"module:function\", not %s",
            type(target))
    end
    local args = opts.args or {}
    if type(args) ~= "table" then
      raise("TypeError", "lmp.Process: args must be a table, not %s", type(args))
    end
    if opts.name ~= nil then I.check_type(opts.name, "string", "lmp.Process", "name") end
    state.count = state.count + 1
    local self = setmetatable({
      name = opts.name or ("Process-" .. state.count),
      daemon = opts.daemon == nil and state.current.daemon or not not opts.daemon,
      _target = target,
      _args = {n = args.n or #args, unpack(args, 1, args.n or #args)},
    }, Process)
    return self
  end

  local function handle(self, what)
    if rawget(self, "_closed") then raise("ValueError", "%s: process object is closed", what) end
    local h = rawget(self, "_handle")
    if not h then raise("ProcessError", "%s: process %s has not been started", what, self.name) end
    return h
  end

  -- The forkserver: spawned on first use, by this process only.
  local server  -- {sock = fd, proc = Process, owner = pid}

  -- A forked child has none of its parent's children, and uses a
  -- forkserver of its own.
  I.after_fork[#I.after_fork + 1] = function()
    state.children = {}
    if server then
      core.close_fd(server.sock)
      server = nil
    end
  end

  -- Resolves a "module:function" target in the child.
  local function resolve(target)
    if type(target) ~= "string" then return target end
    local modname, fname = target:match("^(.*):(.*)$")
    local mod = require(modname)
    local fn = type(mod) == "table" and mod[fname]
    if type(fn) ~= "function" then
      error(lmp.error("ProcessError", ("target %q: module %q has no function %q")
            :format(target, modname, fname)), 0)
    end
    return fn
  end

  -- The fork start method: the child is this process as it is now, and
  -- calls the target itself, upvalues and all, with no codec in between.
  -- It ends in core.fork_exit and never returns from here
  -- (runtime/lmp_fork.c says why).
  local function start_forked(self)
    local h = core.fork()
    if h then return h end
    local parent = state.current
    state.current = {name = self.name, pid = core.getpid(), daemon = self.daemon}
    state.parent = {name = parent.name, pid = parent.pid}
    for _, hook in ipairs(I.after_fork) do hook() end
    local args = self._args
    local ok, err = xpcall(function() resolve(self._target)(unpack(args, 1, args.n)) end,
                           debug.traceback)
    if not ok then
      io.stderr:write(self.name, ": ", tostring(err), "\n")
    end
    pcall(core.atexit)  -- the child's own children and pools
    core.fork_exit(ok and 0 or 1)
  end

  -- The forkserver start method (lua/lmp/forkserver.lua is the server).
  local function forkserver()
    if server and server.owner == core.getpid() then return server end
    local mine, theirs = core.socketpair()
    local conn = core.conn_from_fd(theirs, true, true)  -- to pass it
    local p = lmp.Process{target = "lmp.forkserver:serve", daemon = true,
                          name = "ForkServer", args = {conn, state.preload}}
    p._method = "spawn"
    local ok, err = pcall(p.start, p)
    conn:close()
    if not ok then
      core.close_fd(mine)
      error(err, 0)
    end
    state.children[p] = nil  -- lmp's, not one of the program's children
    server = {sock = mine, proc = p, owner = core.getpid()}
    return server
  end

  I.at_exit[#I.at_exit + 1] = function()
    if server and server.owner == core.getpid() then
      core.close_fd(server.sock)  -- the server sees end of file and ends
      if not server.proc:join(1) then server.proc:kill(); server.proc:join(1) end
      server = nil
    end
  end

  -- A child of the forkserver: its exit code comes from the server, on a
  -- pipe whose read end is its sentinel.
  local ServerChild = {}
  ServerChild.__index = function(h, k)
    if type(k) ~= "string" then
      raise("TypeError", "ProcessHandle.__index: bad argument #2 (string expected, got %s)", type(k))
    end
    if k == "exitcode" then return h:_poll(0) end
    return ServerChild[k]
  end

  -- The exit code, once the server has sent it (waiting up to timeout
  -- seconds; nil: for ever).
  function ServerChild:_poll(timeout)
    local code = rawget(self, "_code")
    if code then return code end
    if #lmp.connection.wait({self._conn}, timeout) > 0 then
      local v = self._conn:recv()
      self._code = type(v) == "number" and v or 255  -- the server died first
      -- The server closes its end right after the code: once that is
      -- seen, the sentinel is readable, as a spawned child's is once it
      -- has ended.
      if v ~= nil then lmp.connection.wait({self._conn}, 5) end
    end
    return rawget(self, "_code")
  end

  function ServerChild:wait(timeout)
    if timeout ~= nil and type(timeout) ~= "number" then
      raise("TypeError", "ProcessHandle:wait: bad argument #1 (number expected, got %s)",
            type(timeout))
    end
    return self:_poll(timeout)
  end

  function ServerChild:signal(sig)
    if type(sig) ~= "number" then
      raise("TypeError", "ProcessHandle:signal: bad argument #1 (number expected, got %s)",
            type(sig))
    end
    if self:_poll(0) then return true end
    return core.kill(self.pid, sig)
  end

  function ServerChild:close() self._conn:close() end

  -- Sends the request; a server that has died (killed by someone) is
  -- replaced once.
  local function request(record, fds)
    for attempt = 1, 2 do
      local s = forkserver()
      local ok, reply, got = pcall(function()
        core.fdpass_send(s.sock, record, fds)
        return core.fdpass_recv(s.sock)
      end)
      if ok and reply then return reply, got end
      core.close_fd(s.sock)
      pcall(s.proc.kill, s.proc)
      pcall(s.proc.join, s.proc, 1)
      server = nil
      if attempt == 2 then
        raise("ProcessError", "Process:start: the forkserver has gone (%s)",
              ok and "end of file" or tostring(reply))
      end
    end
  end

  local function start_from_server(self, record, fds)
    local reply, got = request(record, fds)
    local conn = core.conn_from_fd(got[1], true, false)
    return setmetatable({pid = codec.decode(reply).pid, sentinel = got[1], _conn = conn},
                        ServerChild)
  end

  function methods:start()
    if rawget(self, "_closed") then raise("ValueError", "Process:start: process object is closed") end
    if rawget(self, "_handle") then
      raise("ProcessError", "Process:start: process %s was already started (pid %d)", self.name, self.pid)
    end
    if state.current.daemon then
      raise("ProcessError", "Process:start: a daemon process cannot have children")
    end
    if (rawget(self, "_method") or state.start_method) == "fork" then
      self._handle = start_forked(self)
      state.children[self] = true
      return
    end
    local method = rawget(self, "_method") or state.start_method
    local exe = lmp.get_executable()
    if not exe then
      raise("ProcessError", "Process:start: no worker executable (see lmp.set_executable)")
    end
    local fds = {shared = {}}
    state.attaching = fds
    local ok, target, args = pcall(function()
      return codec.encode(self._target, {binary = true, role = "target"}),
             codec.encode(self._args, {binary = true, role = "args", share = true})
    end)
    state.attaching = nil
    if not ok then error(target, 2) end
    local record = codec.encode({
      name = self.name, daemon = self.daemon,
      path = package.path, cpath = package.cpath, cwd = core.getcwd(),
      parent_pid = state.current.pid, parent_name = state.current.name,
      target = target, args = args,
    }, {binary = true})
    if method == "forkserver" then
      self._handle = start_from_server(self, record, fds)
    else
      self._handle = core.spawn(exe, self.name, record, fds)
    end
    state.children[self] = true
  end

  function methods:join(timeout)
    local h = handle(self, "Process:join")
    local code = h:wait(I.timeout(timeout, "Process:join"))
    I.shared_sweep()  -- big arguments the child has opened (lmp.buffers)
    if code then state.children[self] = nil end
    return code
  end

  function methods:is_alive()
    if rawget(self, "_closed") then raise("ValueError", "Process:is_alive: process object is closed") end
    local h = rawget(self, "_handle")
    if not h then return false end
    local alive = h.exitcode == nil
    if not alive then state.children[self] = nil end
    return alive
  end

  function methods:terminate() handle(self, "Process:terminate"):signal(15) end
  function methods:kill() handle(self, "Process:kill"):signal(9) end

  function methods:close()
    if rawget(self, "_closed") then return end
    local h = rawget(self, "_handle")
    if h then
      if h.exitcode == nil then
        raise("ValueError", "Process:close: process %s (pid %d) is still running", self.name, self.pid)
      end
      h:close()
      state.children[self] = nil
    end
    self._closed = true
  end

  function lmp.current_process() return state.current end
  function lmp.parent_process() return state.parent end

  function lmp.active_children()
    local list = {}
    for p in pairs(state.children) do
      if p:is_alive() then list[#list + 1] = p end
    end
    table.sort(list, function(a, b) return a.pid < b.pid end)
    return list
  end

  -- Start methods.  A Process made by a context starts with the context's
  -- method; any other, with the method set when it starts.
  local methods_available = {"spawn", "fork", "forkserver"}
  local known = {spawn = true, fork = true, forkserver = true}
  function lmp.get_all_start_methods() return {unpack(methods_available)} end
  function lmp.get_start_method() return state.start_method end
  local function check_method(name, what)
    I.check_type(name, "string", what, "name")
    if not known[name] then
      raise("ValueError", "unknown or unavailable start method %q (available: %s)",
            tostring(name), table.concat(methods_available, ", "))
    end
  end
  function lmp.set_start_method(name)
    check_method(name, "lmp.set_start_method")
    state.start_method = name
  end

  -- Modules the forkserver loads before it forks anything (read when it
  -- starts: on the first forkserver Process).
  function lmp.set_forkserver_preload(names)
    I.check_type(names, "table", "lmp.set_forkserver_preload", "names")
    local list = {}
    for i, name in ipairs(names) do
      I.check_type(name, "string", "lmp.set_forkserver_preload", "names[" .. i .. "]")
      list[i] = name
    end
    state.preload = list
  end

  -- The constructors whose processes a context starts with its method.
  I.context_constructors = {
    Process = function(method)
      return function(...)
        local p = lmp.Process(...)
        p._method = method
        return p
      end
    end,
    Pool = function(method)
      return function(...)
        local saved = I.pool_method
        I.pool_method = method  -- read by the Pool constructor
        local ok, pool = pcall(lmp.Pool, ...)
        I.pool_method = saved
        if not ok then error(pool, 0) end
        return pool
      end
    end,
  }

  function lmp.get_context(name)
    name = name or state.start_method
    check_method(name, "lmp.get_context")
    local ctx = {get_start_method = function() return name end}
    for k, make in pairs(I.context_constructors) do ctx[k] = make(name) end
    return setmetatable(ctx, {__index = lmp})
  end

  -- At the end of the main script (and at os.exit): daemon children are
  -- terminated, the others joined, as Python does.  Other parts of lmp (the
  -- Pool) stop their work first (I.at_exit).  runtime/lmp_worker.c calls
  -- core.atexit.
  function core.atexit()
    for _, hook in ipairs(I.at_exit) do pcall(hook) end
    for p in pairs(state.children) do
      if p.daemon and p:is_alive() then p:terminate() end
    end
    for p in pairs(state.children) do p:join() end
  end

  -- lmp_shutdown (runtime/lmp_backend.c): within about `timeout` seconds,
  -- everything lmp started from this state ends: pools are terminated
  -- (I.at_exit hooks return how many busy workers they killed), daemon
  -- children terminated, the others joined, then killed when the time is
  -- up.  Returns how many children were ended by a signal.
  function I.host.shutdown(timeout)
    local deadline = core.now() + math.max(timeout or 0, 0)
    local ended = 0
    for _, hook in ipairs(I.at_exit) do
      local ok, n = pcall(hook)
      if ok and type(n) == "number" then ended = ended + n end
    end
    for p in pairs(state.children) do
      if p.daemon and p:is_alive() then
        p:terminate()
        ended = ended + 1
      end
    end
    for p in pairs(state.children) do
      if not p:join(math.max(deadline - core.now(), 0)) then
        p:kill()
        ended = ended + 1
        p:join()
      end
    end
    return ended
  end

  -- Runs in a new worker: the bootstrap record from the parent
  -- (runtime/lmp_worker.c calls it).
  function core.run_child(bootstrap)
    local rec = codec.decode(bootstrap)
    package.path, package.cpath = rec.path, rec.cpath
    if rec.cwd then core.chdir(rec.cwd) end
    state.current = {name = rec.name, pid = core.getpid(), daemon = rec.daemon}
    state.parent = {name = rec.parent_name, pid = rec.parent_pid}
    state.inheriting = true
    local ok, target, args = pcall(function()
      return codec.decode(rec.target), codec.decode(rec.args)
    end)
    state.inheriting = nil
    if not ok then error(target, 0) end
    resolve(target)(unpack(args, 1, args.n))
    return 0
  end
end
