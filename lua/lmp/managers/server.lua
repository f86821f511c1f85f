-- lmp.managers.server: the loop of a manager's server process (SPEC
-- section 15).  Installed by lua/lmp/managers/init.lua, which starts it as
-- the target "lmp.managers.server:serve".
--
-- One process, one thread, no call ever waits inside the loop: the server
-- waits on its control pipe, its Listener and every client's connection
-- at once (lmp.connection.wait), or on the inbox of its lanes (below).
-- A client sends one request and reads one reply before it sends
-- another, so a connection (or a lane) needs no request ids.  A call that must wait (Lock:acquire, Queue:get, Event:wait, ...)
-- parks a waiter on its object and is answered when the object gives it
-- what it waits for, or when its deadline passes (lua/lmp/managers/
-- types.lua).
--
-- Messages (encoded by the connection; the server decodes in safe mode,
-- as every Listener does):
--   request   {id, method, n, arg1 .. argn}   id 0 is the manager itself
--   success   {n, result1 .. resultn}
--   failure   {false, kind, message, traceback, remote_kind}
-- A client that goes away (end of file, a broken stream) is dropped: its
-- waiter is removed and what it held (locks, permits) is given back.
return function(core, lmp, I)
  local T = require("lmp.managers.types")(lmp)
  local unpack = unpack or table.unpack
  local PARKED = {}
  local HANDSHAKE, STALL = 3, 5
  local LOOK = 0.02

  -- The public methods of a served object: the functions among its fields
  -- and along its metatable's __index tables, but not the names that
  -- start with "_".
  local function exposed_of(obj)
    local names, seen, t = {}, {}, obj
    for _ = 1, 16 do
      if type(t) ~= "table" then break end
      for k, v in pairs(t) do
        if type(k) == "string" and k:sub(1, 1) ~= "_" and type(v) == "function" and not seen[k] then
          seen[k] = true
          names[#names + 1] = k
        end
      end
      local mt = getmetatable(t)
      t = type(mt) == "table" and rawget(mt, "__index") or nil
    end
    table.sort(names)
    return names
  end

  local S = {}

  -- serve(ctl, address, authkey, registry): listens on address, tells the
  -- starting process {true, real address} (or {false, message}) on ctl,
  -- and serves until ctl says "stop" or closes.  registry maps the typeids
  -- of BaseManager:register to their constructors.
  function S.serve(ctl, address, authkey, registry)
    -- A client has HANDSHAKE seconds to authenticate, and STALL seconds
    -- for the rest of a message it has begun: the loop waits for it
    -- meanwhile (lmp.connection's handshake and reads are blocking ones).
    local ok, listener = pcall(lmp.connection.Listener, {address = address, authkey = authkey,
                                                         timeout = HANDSHAKE, stall = STALL})
    if not ok then
      ctl:send({false, lmp.is_error(listener) and listener.message or tostring(listener)})
      return
    end
    ctl:send({true, listener.address})
    local lfd = listener:fileno()

    local srv = {PARKED = PARKED, clients = {}}
    srv.timeout = I.timeout
    local objects, ids, next_id = {}, {}, 0  -- id -> entry; object -> id
    local by_conn = {}                       -- connection -> client
    local timed = {}                         -- waiters with a deadline
    local dropping = {}                      -- clients whose send failed
    local waitlist, dirty = nil, true

    -- Lanes (local clients): requests come through the inbox, a shared
    -- queue of all of them, as "<lane id>:" .. the encoded request; each
    -- lane's replies go through a queue of its own (lanes[id].lane).
    -- Both are decoded in safe mode, as the socket's messages are.
    local unix = not address:find(":", 1, true) or address:sub(1, 1) == "\0" or
                 address:find("/", 1, true) ~= nil
    local inbox, lanes, next_lane, nlanes = nil, {}, 0, 0
    local bell, ringer  -- a socket pair: a lane's put rings the bell when the loop armed it
    local nclients = 0
    local encode, decode = lmp.codec.encode, lmp.codec.decode
    local BINARY, SAFE = {binary = true}, {safe = true}

    local function send(cl, msg)
      if cl.dead then return false end
      local lane = cl.lane
      if lane then
        if pcall(core.queue_put, lane, encode(msg, BINARY), 0) then return true end
      elseif pcall(cl.conn.send, cl.conn, msg) then
        return true
      end
      cl.dead = true
      dropping[#dropping + 1] = cl
      return false
    end

    function srv:reply(cl, ...) return send(cl, {select("#", ...), ...}) end

    function srv:park(cl, timeout, list)
      local w = {cl = cl}
      list[#list + 1] = w
      if timeout then
        w.deadline = core.now() + timeout
        timed[w] = true
      end
      cl.waiter = w
      return w
    end

    function srv:finish(w)
      w.done = true
      timed[w] = nil
      if w.cl.waiter == w then w.cl.waiter = nil end
    end

    local function drop(cl)
      if not srv.clients[cl] then return end
      srv.clients[cl] = nil
      nclients = nclients - 1
      by_conn[cl.conn] = nil
      dirty = true
      cl.dead = true
      pcall(cl.conn.close, cl.conn)
      if cl.lane then
        lanes[cl.lane_id] = nil
        cl.lane:close()
        nlanes = nlanes - 1
      end
      local w = cl.waiter
      if w then srv:finish(w) end
      for obj, count in pairs(cl.held) do
        cl.held[obj] = nil
        if obj.type._drop then obj.type._drop(obj, cl, count) end
      end
    end

    -- Is the client still there?  A lane's client sends nothing on its
    -- socket, so a readable socket is one it has closed: it is dropped
    -- now (an item handed to it would be lost).
    function srv:alive(cl)
      if cl.dead then return false end
      if cl.lane then
        local ok, gone = pcall(cl.conn.poll, cl.conn, 0)
        if not ok or gone then
          drop(cl)
          return false
        end
      end
      return true
    end

    -- The manager's own requests (id 0).
    local manager = {}
    function manager.create(cl, typeid, ...)
      if type(typeid) ~= "string" then
        error(lmp.error("TypeError", "create: typeid must be a string"), 0)
      end
      local t, obj, exposed = T[typeid], nil, nil
      if registry[typeid] then
        obj = registry[typeid](...)
        if type(obj) ~= "table" and type(obj) ~= "userdata" then
          error(lmp.error("TypeError", ("%s: the constructor returned a %s, not an object")
                :format(typeid, type(obj))), 0)
        end
        exposed = exposed_of(obj)
        if ids[obj] then return ids[obj], exposed end
      elseif t then
        obj = t.new(srv, ...)
        obj.srv, obj.name, obj.type = srv, typeid, t
        if obj.lock then obj.lock.type = T.RLock end  -- a Condition's
      else
        error(lmp.error("ValueError", ("the manager has no type %q"):format(typeid)), 0)
      end
      next_id = next_id + 1
      objects[next_id] = {obj = obj, methods = t and t.methods, custom = exposed ~= nil}
      ids[obj] = next_id
      return next_id, exposed
    end
    function manager.typeids()
      local list = {}
      for k in pairs(registry) do list[#list + 1] = k end
      table.sort(list)
      return list
    end
    function manager.ping() return true end

    local function failure(e, tb)
      if lmp.is_error(e) then
        return {false, e.kind, e.message, e.traceback or tb, e.remote_kind}
      end
      return {false, "RemoteError", tostring(e), tb}
    end

    -- {n, results...} of a call that succeeded; nil, error otherwise.
    local function results(ok, ...)
      if ok then return {select("#", ...), ...} end
      return nil, (...)
    end

    -- A user object's method: its results, or its error as a RemoteError.
    local function call_custom(cl, obj, name, n, msg)
      local f = obj[name]
      if type(f) ~= "function" or name:sub(1, 1) == "_" then
        return send(cl, failure(lmp.error("ValueError", ("the object has no method %q"):format(name))))
      end
      local tb
      local r, e = results(xpcall(function() return f(obj, unpack(msg, 4, n + 3)) end,
                                  function(err)
                                    tb = debug.traceback(lmp.is_error(err) and err.message
                                                         or tostring(err), 2)
                                    return err
                                  end))
      if r then return send(cl, r) end
      return send(cl, {false, "RemoteError", lmp.is_error(e) and e.message or tostring(e), tb,
                       lmp.is_error(e) and e.kind or nil})
    end

    -- {0, "lane", 0}: the client asks for a lane; the answer, its id and
    -- the descriptors of the inbox and of its reply queue, comes as a
    -- message with descriptors attached (SCM_RIGHTS), with no descriptors
    -- when the server cannot give one (it listens on TCP).
    local function open_lane(cl)
      local fd = cl.conn:fileno()
      if not unix then return pcall(core.fdpass_send, fd, "") end
      local ok, err = pcall(function()
        if not inbox then
          inbox = core.segment_new(core.queue_segment_size)
          core.queue_init(inbox, 0)
          bell, ringer = core.socketpair()
        end
        local seg = core.segment_new(core.queue_segment_size)
        core.queue_init(seg, 0)
        next_lane = next_lane + 1
        core.fdpass_send(fd, tostring(next_lane), {inbox:fd(), seg:fd(), ringer})
        cl.lane, cl.lane_id = seg, next_lane
        lanes[next_lane] = cl
        nlanes = nlanes + 1
      end)
      if not ok then
        pcall(core.fdpass_send, fd, "")
        return false, err
      end
      return true
    end

    local function request(cl, msg)
      if type(msg) ~= "table" then
        return send(cl, failure(lmp.error("ValueError", "a request must be a table")))
      end
      local id, name, n = msg[1], msg[2], msg[3]
      if type(id) ~= "number" or type(name) ~= "string" or type(n) ~= "number" or n < 0 or n > 250 then
        return send(cl, failure(lmp.error("ValueError", "malformed request")))
      end
      local f, obj
      if id == 0 and name == "lane" and not cl.lane then return open_lane(cl) end
      if id == 0 then
        f = manager[name]
        if not f then return send(cl, failure(lmp.error("ValueError", "unknown request " .. name))) end
        local ok, a, b = pcall(f, cl, unpack(msg, 4, n + 3))
        if not ok then return send(cl, failure(a)) end
        return send(cl, {2, a, b})
      end
      local e = objects[id]
      if not e then
        return send(cl, failure(lmp.error("ValueError", ("no object %s on this manager"):format(tostring(id)))))
      end
      if e.custom then return call_custom(cl, e.obj, name, n, msg) end
      f = e.methods[name]
      obj = e.obj
      if not f then
        return send(cl, failure(lmp.error("ValueError", ("%s has no method %q"):format(obj.name, name))))
      end
      local r, err = results(pcall(f, obj, cl, unpack(msg, 4, n + 3)))
      if not r then return send(cl, failure(err)) end
      if r[2] == PARKED then return true end
      return send(cl, r)
    end

    -- A request that wants no reply: {-id, method, n, args...}, for the
    -- writes of ONEWAY with plain arguments, which cannot fail.
    local ONEWAY = {set = true, append = true}
    local function apply_oneway(cl, msg)
      local e, name, n = objects[-msg[1]], msg[2], msg[3]
      if e and not e.custom and ONEWAY[name] and type(n) == "number" and n >= 0 and n <= 250 then
        pcall(e.methods[name], e.obj, cl, unpack(msg, 4, n + 3))
      end
    end

    -- Reads what client cl has sent: the requests that want no reply are
    -- applied at once; the one that does (always the client's last) is
    -- put in due, to be served after every ready client was read.  So a
    -- write that a process made before it told another process (through
    -- any channel) is applied before the other's next request is served.
    local function read_client(cl, due)
      while true do
        local ok, msg, eof = pcall(cl.conn.recv, cl.conn)
        if not ok then
          -- A message that safe mode refuses (code from a client) was
          -- read whole: the client is told, and stays.  Anything else
          -- broke the stream.
          if lmp.is_error(msg, "CodecError") and not cl.conn.closed then
            due[#due + 1] = cl
            due[#due + 1] = msg
          else
            drop(cl)
          end
          return
        end
        if msg == nil and eof == "eof" then return drop(cl) end
        if type(msg) == "table" and type(msg[1]) == "number" and msg[1] < 0 then
          apply_oneway(cl, msg)
          local more
          ok, more = pcall(cl.conn.poll, cl.conn, 0)
          if not (ok and more) then return end
        else
          due[#due + 1] = cl
          due[#due + 1] = msg
          return
        end
      end
    end

    local function accept()
      local ok, conn = pcall(listener.accept, listener, 0)
      if ok and conn then
        local cl = {conn = conn, held = {}}
        nclients = nclients + 1
        srv.clients[cl] = true
        by_conn[conn] = cl
        dirty = true
      end
    end

    local function next_timeout()
      local first
      for w in pairs(timed) do
        if not first or w.deadline < first then first = w.deadline end
      end
      return first and math.max(first - core.now(), 0) or nil
    end

    local function expire()
      if next(timed) == nil then return end
      local now, due = core.now(), {}
      for w in pairs(timed) do
        if w.deadline <= now then due[#due + 1] = w end
      end
      table.sort(due, function(a, b) return a.deadline < b.deadline end)
      for _, w in ipairs(due) do
        if not w.done then
          srv:finish(w)
          w.expire()
        end
      end
    end

    -- A request from a lane: "<lane id>:" .. encoded request.
    local function lane_request(s)
      local colon = s:find(":", 1, true)
      local cl = colon and lanes[tonumber(s:sub(1, colon - 1))]
      if not cl or cl.dead then return end
      local ok, msg = pcall(decode, s:sub(colon + 1), SAFE)
      if not ok then return send(cl, failure(msg)) end
      if type(msg) == "table" and type(msg[1]) == "number" and msg[1] < 0 then
        return apply_oneway(cl, msg)
      end
      return request(cl, msg)
    end

    -- Serves what the inbox holds (at most `most` requests), waiting up
    -- to `timeout` seconds for the first.
    local function serve_inbox(timeout, most)
      local s = core.queue_get(inbox, timeout)
      while s ~= nil do
        lane_request(s)
        most = most - 1
        if most == 0 then return end
        s = core.queue_get(inbox, 0)
      end
    end

    -- When every client has a lane, the loop sleeps on the inbox (a
    -- futex) and looks at the sockets (new clients, clients gone, the
    -- control pipe) at least every LOOK seconds.  Otherwise it sleeps on
    -- the sockets, and on the bell if lanes are open: it arms the bell,
    -- so that the next put into the inbox rings it.
    local running = true
    while running do
      local sleep = next_timeout()
      if nlanes > 0 and nlanes == nclients then
        local ok, err = pcall(serve_inbox, sleep and math.min(sleep, LOOK) or LOOK, 1000)
        if not ok and not lmp.is_error(err, "KeyboardInterrupt") then error(err, 0) end
        sleep = 0
      elseif nlanes > 0 then
        if core.queue_arm(inbox, bell, ringer) then sleep = 0 end
        dirty = dirty or waitlist[3] ~= bell
      end
      if dirty then
        waitlist = {ctl, lfd, bell}  -- (no bell before the first lane)
        for conn in pairs(by_conn) do waitlist[#waitlist + 1] = conn end
        dirty = false
      end
      local ok, ready = pcall(lmp.connection.wait, waitlist, sleep)
      if not ok then
        -- Ctrl-C reaches the whole process group: the server goes on, as
        -- Python's does, until its manager shuts it down.
        if not lmp.is_error(ready, "KeyboardInterrupt") then error(ready, 0) end
        ready = {}
      end
      local due = {}
      for i = 1, #ready do
        local x = ready[i]
        if x == ctl then
          running = false
        elseif x == bell then
          local ok, err = pcall(serve_inbox, 0, 1000)
          if not ok and not lmp.is_error(err, "KeyboardInterrupt") then error(err, 0) end
        elseif x == lfd then
          accept()
        else
          local cl = by_conn[x]
          if cl then read_client(cl, due) end
        end
      end
      for i = 1, #due, 2 do
        local cl, msg = due[i], due[i + 1]
        if not cl.dead then
          if lmp.is_error(msg) then send(cl, failure(msg)) else request(cl, msg) end
        end
      end
      expire()
      while #dropping > 0 do drop(table.remove(dropping)) end
    end
    for cl in pairs(srv.clients) do pcall(cl.conn.close, cl.conn) end
    if inbox then
      inbox:close()
      core.close_fd(bell)
      core.close_fd(ringer)
    end
    listener:close()
    pcall(ctl.send, ctl, "stopped")
    ctl:close()
  end

  return S
end
