-- lmp.listener: lmp.connection.Listener and lmp.connection.Client (SPEC
-- section 4), interoperable with CPython's multiprocessing.connection.
-- Installed by init.lua.
--
-- Sockets come from runtime/lmp_net.c, messages are ordinary Connections.
-- A peer on a socket is not trusted: what it sends is decoded in safe mode
-- (plain data and registered metatables, never code), messages are
-- bounded, and a peer that stops in the middle of a message is dropped.
--
-- Authentication is CPython's challenge/response, in its 3.12 form, which
-- also answers the legacy HMAC-MD5 form of Python <= 3.11:
--   server: "#CHALLENGE#{sha256}" .. 40 random bytes
--   client: "{sha256}" .. HMAC-SHA256(key, "{sha256}" .. random), or a bare
--           HMAC-MD5 (16 bytes) from an old client
--   server: "#WELCOME#" or "#FAILURE#"
-- and then the same the other way round.
return function(core, lmp, I)
  local CHALLENGE, WELCOME, FAILURE = "#CHALLENGE#", "#WELCOME#", "#FAILURE#"
  local RANDOM_LENGTH = 40
  local MD5_LENGTHS = {[16] = true, [20] = true}  -- legacy response, challenge
  local DIGESTS = {md5 = true, sha256 = true}
  local DEFAULTS = {
    max_message = 64 * 2^20,  -- bytes in one message from the peer
    timeout = 10,             -- seconds to connect and authenticate
    stall = 30,               -- seconds the rest of a begun message may take
  }

  local raise = I.raise

  local function auth_error(fmt, ...)
    error(lmp.error("AuthenticationError", fmt:format(...)), 0)
  end

  -- Options: a table, checked, with the defaults filled in.
  local function options(opts, what)
    if opts == nil then opts = {} end
    if type(opts) ~= "table" then raise("TypeError", "%s: options must be a table", what) end
    local o = {}
    for k, v in pairs(DEFAULTS) do o[k] = v end
    for k, v in pairs(opts) do o[k] = v end
    if o.authkey ~= nil and type(o.authkey) ~= "string" then
      raise("TypeError", "%s: authkey must be a string", what)
    end
    if o.authkey == "" then o.authkey = nil end  -- as Python: no authentication
    for _, k in ipairs({"max_message", "timeout", "stall"}) do
      if type(o[k]) ~= "number" or not (o[k] >= 0) then  -- NaN too
        raise("TypeError", "%s: %s must be a number >= 0", what, k)
      end
    end
    return o
  end

  -- A received message of the handshake (at most 256 bytes, as Python).
  local function recv_small(conn, deadline)
    local left = math.max(deadline - core.now(), 0)
    if not conn:poll(left) then
      auth_error("no answer from the peer within the timeout")
    end
    local ok, msg = pcall(conn.recv_bytes, conn, 256)
    if not ok then auth_error("%s", lmp.is_error(msg) and msg.message or tostring(msg)) end
    if msg == nil then auth_error("the peer closed the connection") end
    return msg
  end

  -- Python's _get_digest_name_and_payload.
  local function digest_of(message)
    if MD5_LENGTHS[#message] then return "md5", message end
    local name, payload = message:match("^{([%w_]+)}(.*)$")
    if name and #name + 2 <= 20 and DIGESTS[name] then return name, payload end
    auth_error("unsupported message length, missing digest prefix, or " ..
               "unsupported digest (%d bytes)", #message)
  end

  local function deliver_challenge(conn, key, deadline)
    local message = "{sha256}" .. core.random_bytes(RANDOM_LENGTH)
    conn:send_bytes(CHALLENGE .. message)
    local ok, name, mac = pcall(digest_of, recv_small(conn, deadline))
    if not ok then
      pcall(conn.send_bytes, conn, FAILURE)
      error(name, 0)
    end
    -- In constant time (CRYPTO_memcmp), as Python's hmac.compare_digest.
    if not core.compare_digest(core.hmac(name, key, message), mac) then
      pcall(conn.send_bytes, conn, FAILURE)
      auth_error("digest received was wrong")
    end
    conn:send_bytes(WELCOME)
  end

  local function answer_challenge(conn, key, deadline)
    local message = recv_small(conn, deadline)
    if message:sub(1, #CHALLENGE) ~= CHALLENGE then
      auth_error("protocol error: expected a challenge")
    end
    message = message:sub(#CHALLENGE + 1)
    if #message < 20 then auth_error("challenge too short: %d bytes", #message) end
    local name = digest_of(message)
    local mac = core.hmac(name, key, message)
    conn:send_bytes(name == "md5" and mac or ("{%s}%s"):format(name, mac))
    if recv_small(conn, deadline) ~= WELCOME then
      auth_error("digest sent was rejected")
    end
  end

  -- A connection to a peer: configured for distrust, then authenticated
  -- (server: challenge first, as Python).  Closed on any failure.
  local function open(fd, o, server, deadline)
    local conn = core.conn_from_socket(fd)
    if o.authkey then
      -- A handshake message, begun or not, must come by the deadline.
      core.conn_configure(conn, true, 256 + 12, math.max(deadline - core.now(), 1e-3))
      local ok, err = pcall(function()
        if server then
          deliver_challenge(conn, o.authkey, deadline)
          answer_challenge(conn, o.authkey, deadline)
        else
          answer_challenge(conn, o.authkey, deadline)
          deliver_challenge(conn, o.authkey, deadline)
        end
      end)
      if not ok then
        conn:close()
        if lmp.is_error(err) and err.kind ~= "AuthenticationError" then
          err = lmp.error("AuthenticationError", err.message)
        end
        error(err, 0)
      end
    end
    core.conn_configure(conn, o.safe ~= false, o.max_message, o.stall)
    return conn
  end

  ---------------------------------------------------------------- Listener

  local Listener = {}
  Listener.__index = Listener
  Listener.__tostring = function(self)
    return ("lmp.Listener(%q%s)"):format(self.address, self._fd and "" or ", closed")
  end

  -- Listener{address =, authkey =, backlog =, safe =, max_message =,
  -- timeout =, stall =}, or Listener(address [, opts])
  function lmp.connection.Listener(opts, more)
    if type(opts) == "string" then
      more = more or {}
      more.address = opts
      opts = more
    end
    local o = options(opts, "lmp.connection.Listener")
    local address = o.address or "127.0.0.1:0"
    if type(address) ~= "string" then raise("TypeError", "lmp.connection.Listener: address must be a string") end
    local fd, real = core.net_listen(address, o.backlog)
    -- A Unix socket file (a path: with a '/', or without a ':') goes with
    -- the Listener.
    local path = address:sub(1, 1) ~= "\0" and
                 (address:find("/", 1, true) or not address:find(":", 1, true)) and address
    local self = setmetatable({address = real, _fd = fd, _o = o, _unix = path or nil},
                              Listener)
    -- Closed with its descriptor when collected.
    self._guard = newproxy(true)
    local owner = core.getpid()  -- a forked child leaves it to its parent
    getmetatable(self._guard).__gc = function()
      if core.getpid() == owner then core.net_close(fd, self._unix) end
    end
    return self
  end

  -- accept([timeout]) -> Connection | nil, "timeout".  With an authkey, a
  -- peer that fails the handshake raises an AuthenticationError here; the
  -- Listener goes on accepting.
  function Listener:accept(timeout)
    if not self._fd then raise("ValueError", "accept: the listener is closed") end
    local fd, peer = core.net_accept(self._fd, I.timeout(timeout, "Listener:accept"))
    if not fd then return nil, "timeout" end
    local conn = open(fd, self._o, true, core.now() + self._o.timeout)
    self.last_accepted = peer
    return conn
  end

  function Listener:close()
    if not self._fd then return end
    getmetatable(self._guard).__gc = nil
    core.net_close(self._fd, self._unix)
    self._fd = nil
  end

  function Listener:fileno() return self._fd end

  ------------------------------------------------------------------ Client

  -- Client(address [, {authkey =, timeout =, safe =, max_message =,
  -- stall =}]) -> Connection
  function lmp.connection.Client(address, opts)
    if type(address) ~= "string" then raise("TypeError", "lmp.connection.Client: address must be a string") end
    local o = options(opts, "lmp.connection.Client")
    local deadline = core.now() + o.timeout  -- to connect and authenticate
    local fd, why = core.net_connect(address, o.timeout)
    if not fd then
      raise("TimeoutError", "lmp.connection.Client: no connection to %s within %g s (%s)",
            address, o.timeout, why)
    end
    return open(fd, o, false, deadline)
  end
end
