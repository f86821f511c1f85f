-- lmp.managers: lmp.Manager and lmp.managers.BaseManager (SPEC section
-- 15).  Installed by lua/lmp/init.lua.
--
-- A manager is the client's handle on a server process that holds shared
-- objects (lua/lmp/managers/server.lua), reached over an lmp.connection
-- Listener with authentication; its objects are used through proxies
-- (lua/lmp/managers/proxy.lua).  start() runs the server as a child
-- Process, as a daemon that dies with its parent; connect() reaches a
-- server that another program started.
return function(core, lmp, I)
  local P = require("lmp.managers.proxy")(core, lmp, I)
  -- the server's loop, found as the target "lmp.managers.server:serve" by
  -- a spawned server
  local server = require("lmp.managers.server")(core, lmp, I)
  package.loaded["lmp.managers.server"] = server
  local raise = I.raise

  local Manager = {}
  local methods = {}
  Manager.__index = function(m, k)
    local f = methods[k]
    if f ~= nil then return f end
    local types = rawget(m, "_types")
    if types and types[k] then
      -- a typeid of register: m:typeid(...) makes one
      return function(self, ...) return self:_create(k, ...) end
    end
  end
  Manager.__tostring = function(m)
    return ("lmp.Manager(%s, %s)"):format((tostring(m.address):gsub("%z", "@")), m._status)
  end

  local count = 0
  local started = setmetatable({}, {__mode = "k"})  -- managers this process started

  -- The default address: an abstract Unix socket no other manager uses.
  local function fresh_address()
    count = count + 1
    return ("\0lmp-manager-%d-%d-%s"):format(core.getpid(), count,
                                             (core.random_bytes(6):gsub(".", function(c)
                                               return ("%02x"):format(c:byte())
                                             end)))
  end

  -- BaseManager{address =, authkey =} (or BaseManager(address, authkey)).
  -- To start a server both may be left out (a private abstract socket, a
  -- random key); to connect, address is required and authkey must be the
  -- server's.
  local function new(opts, authkey)
    if type(opts) == "string" then opts = {address = opts, authkey = authkey} end
    if opts == nil then opts = {} end
    I.check_type(opts, "table", "lmp.managers.BaseManager", "options")
    if opts.address ~= nil then I.check_type(opts.address, "string", "lmp.managers.BaseManager", "address") end
    if opts.authkey ~= nil then I.check_type(opts.authkey, "string", "lmp.managers.BaseManager", "authkey") end
    local m = setmetatable({address = opts.address, authkey = opts.authkey, _status = "initial",
                            _registry = {}, _types = {}, _method = opts.method}, Manager)
    for typeid in pairs(P.builtin) do m._types[typeid] = true end
    return m
  end

  lmp.managers = {BaseManager = new}
  lmp.managers.SyncManager = new

  -- register(typeid, constructor): m:typeid(...) makes an object on the
  -- server with constructor(...) and returns its proxy.  The constructor
  -- travels to the server by value (lmp.codec), so register before
  -- start().  A client that connect()s learns the server's typeids.
  function methods:register(typeid, constructor)
    I.check_type(typeid, "string", "BaseManager:register", "typeid")
    if methods[typeid] or typeid:sub(1, 1) == "_" or typeid == "" then
      raise("ValueError", "BaseManager:register: %q is a name the manager uses", typeid)
    end
    if constructor ~= nil and type(constructor) ~= "function" then
      I.check_type(constructor, "function", "BaseManager:register", "constructor")
    end
    if self._status ~= "initial" and constructor ~= nil then
      raise("ProcessError", "BaseManager:register: the manager has already started")
    end
    if constructor then self._registry[typeid] = constructor end
    self._types[typeid] = true
    return self
  end

  local function usable(self, what)
    if self._status == "initial" then
      raise("ProcessError", "%s: the manager has not been started or connected", what)
    end
    if self._status == "shutdown" then raise("ValueError", "%s: the manager is shut down", what) end
    return P.handle(self.address, self.authkey)
  end

  function methods:_create(typeid, ...)
    local what = "Manager:" .. typeid
    local h = usable(self, what)
    local id, exposed = P.call(h, nil, what, 0, "create", typeid, ...)
    return P.proxy(h, typeid, id, exposed)
  end

  -- The built-in types: m:dict(), m:Queue(), ...
  for typeid in pairs(P.builtin) do
    methods[typeid] = function(self, ...)
      if getmetatable(self) ~= Manager then
        raise("TypeError", "Manager:%s: call it as a method (manager:%s(...))", typeid, typeid)
      end
      return self:_create(typeid, ...)
    end
  end

  -- start(): runs the server in a child process; returns the manager.
  function methods:start()
    if self._status ~= "initial" then
      raise("ProcessError", "BaseManager:start: the manager was already %s", self._status)
    end
    -- No key given: a random one (m.authkey), which other programs must be
    -- told to connect.
    if self.authkey == nil then self.authkey = core.random_bytes(32) end
    local address = self.address or fresh_address()
    local mine, theirs = lmp.Pipe()
    -- (a forked server calls the loop itself: its package.loaded is the
    -- parent's, where a test runner such as busted may have unloaded lmp's
    -- modules since)
    local method = self._method or lmp.get_start_method()
    local p = lmp.Process{target = method == "fork" and server.serve or "lmp.managers.server:serve",
                          daemon = true,
                          name = "SyncManager-" .. (count + 1),
                          args = {theirs, address, self.authkey, self._registry}}
    p._method = self._method
    local ok, err = pcall(p.start, p)
    theirs:close()
    if not ok then
      mine:close()
      error(err, 0)
    end
    local ready = lmp.connection.wait({mine, p}, 60)
    local msg = #ready > 0 and mine:poll(0) and mine:recv()
    if type(msg) ~= "table" or not msg[1] then
      mine:close()
      if p:join(0) == nil then p:kill() end
      p:join(5)
      raise("ProcessError", "BaseManager:start: the server did not start%s",
            type(msg) == "table" and (": " .. tostring(msg[2])) or "")
    end
    self.address = msg[2]
    self._proc, self._ctl, self._owner = p, mine, core.getpid()
    self._status = "started"
    started[self] = true
    return self
  end

  -- connect(): reaches the server at address (started by start(), in this
  -- program or another one) and learns its typeids.
  function methods:connect()
    if self._status ~= "initial" then
      raise("ProcessError", "BaseManager:connect: the manager was already %s", self._status)
    end
    if self.address == nil then raise("ValueError", "BaseManager:connect: no address") end
    local h = P.handle(self.address, self.authkey)
    local types = P.call(h, nil, "BaseManager:connect", 0, "typeids")
    for _, typeid in ipairs(types) do self._types[typeid] = true end
    self._status = "connected"
    return self
  end

  -- shutdown(): closes this process's connections to the server, and
  -- stops the server if this process started it.  Idempotent.  Proxies
  -- fail with an OSError once their server has stopped.
  function methods:shutdown()
    if self._status == "shutdown" or self._status == "initial" then
      self._status = "shutdown"
      return
    end
    self._status = "shutdown"
    started[self] = nil
    if self.address then
      local h = P.handle(self.address, self.authkey)
      P.disconnect(h)
    end
    local p = self._proc
    if p and self._owner == core.getpid() then
      pcall(self._ctl.send, self._ctl, "stop")
      if p:join(5) == nil then
        p:kill()
        p:join(5)
      end
      self._ctl:close()
      pcall(p.close, p)
    end
  end

  function methods:get_server_pid() return self._proc and self._proc.pid end

  -- At the end of the main script, the servers this process started stop.
  I.at_exit[#I.at_exit + 1] = function()
    for m in pairs(started) do pcall(m.shutdown, m) end
  end

  -- lmp.Manager([opts]): a started manager.
  function lmp.Manager(opts)
    return new(opts):start()
  end

  I.context_constructors.Manager = function(method)
    return function(opts)
      local m = new(opts)
      m._method = method
      return m:start()
    end
  end
end
