-- lmp.broker.redis: the Redis server of a broker URL, and the names lmp
-- keeps there (SPEC section 14, docs/scale-out.md).
--
-- URL: redis://[[user]:password@]host[:port][/db].  The password may also
-- come from the environment (LMP_REDIS_PASSWORD), so that it is never on
-- a command line.  It is never in a message: URLs are shown without it.
--
-- Keys of a queue Q (all under "lmp:Q:"):
--   tasks              stream of tasks, read by the consumer group
--                      "workers" (each `lmp worker` is one consumer)
--   results:CLIENT     stream of the replies to one pool's tasks
--   fn:CLIENT:KEY      the function of one pool call, for workers that
--                      do not have it yet
--   workers            hash: consumer name -> its number of processes
return function(core, lmp, I)
  local M = {}

  M.GROUP = "workers"
  M.PASSWORD_ENV = "LMP_REDIS_PASSWORD"

  -- url with the password (if any) replaced by ***.
  function M.shown(url)
    return (tostring(url):gsub("^(%a[%w+.-]*://)[^@/]*@", "%1***@"))
  end

  local function unescape(s)
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end

  -- {host, port, db, user, password, shown}; raises a ValueError naming
  -- `what` (the caller).
  function M.parse(url, what)
    I.check_type(url, "string", what, "broker", "a redis:// URL")
    local function bad(why)
      I.raise("ValueError", "%s: broker %s: %s (expected redis://[:password@]host[:port][/db])",
              what, M.shown(url), why)
    end
    local rest = url:match("^redis://(.*)$")
    if not rest then bad("not a redis:// URL") end
    local userinfo, hostpart = rest:match("^([^@/]*)@(.*)$")
    if not userinfo then hostpart = rest end
    local user, password
    if userinfo then
      user, password = userinfo:match("^([^:]*):(.*)$")
      if not user then user, password = "", userinfo end
      user, password = unescape(user), unescape(password)
      if user == "" then user = nil end
    end
    local host, port, db = hostpart:match("^([^:/]+):?(%d*)/?(%d*)$")
    if not host then
      host, port, db = hostpart:match("^%[([^%]]+)%]:?(%d*)/?(%d*)$")  -- [IPv6]
    end
    if not host then bad("no host") end
    port = tonumber(port) or 6379
    db = tonumber(db) or 0
    if port < 1 or port > 65535 then bad("bad port") end
    if password == nil or password == "" then password = os.getenv(M.PASSWORD_ENV) end
    if password == "" then password = nil end
    return {host = host, port = port, db = db, user = user, password = password,
            shown = ("redis://%s:%d/%d"):format(host, port, db)}
  end

  function M.keys(queue)
    local p = "lmp:" .. queue .. ":"
    return {
      prefix = p, tasks = p .. "tasks", workers = p .. "workers",
      results = function(client) return p .. "results:" .. client end,
      fn = function(client, key) return p .. "fn:" .. client .. ":" .. key end,
    }
  end

  -- Connects, authenticates and selects the database; returns the
  -- connection (runtime/lmp_redis.c), or nil and a message that names the
  -- server (never the password) and whether it was the password.
  function M.connect(cfg, timeout)
    local c, err = core.redis_connect(cfg.host, cfg.port, timeout)
    if not c then return nil, ("broker %s: %s"):format(cfg.shown, err) end
    local n = 0
    if cfg.password then
      if cfg.user then c:send("AUTH", cfg.user, cfg.password)
      else c:send("AUTH", cfg.password) end
      n = n + 1
    end
    if cfg.db ~= 0 then
      c:send("SELECT", cfg.db)
      n = n + 1
    end
    for _ = 1, n do
      local ok, msg, how = c:read(timeout)
      if ok == nil then
        c:close()
        if how == "reply" and (msg:find("WRONGPASS", 1, true) or msg:find("NOAUTH", 1, true)
                               or msg:find("invalid password", 1, true)) then
          return nil, ("broker %s: the password was refused (%s)"):format(cfg.shown, msg), "auth"
        end
        return nil, ("broker %s: %s"):format(cfg.shown, msg)
      end
    end
    return c
  end

  -- Sends the commands of `cmds` (each a table of arguments) and reads
  -- their replies, within `timeout` seconds.  Returns the replies, or nil,
  -- a message and how it failed ("io", "timeout": the connection is no
  -- longer usable; "reply": the server refused command i, the 4th value).
  function M.pipeline(c, cmds, timeout)
    for i = 1, #cmds do c:send(unpack(cmds[i])) end
    local replies, failed = {}, nil
    local deadline = core.now() + timeout
    for i = 1, #cmds do
      local r, msg, how = c:read(math.max(deadline - core.now(), 0))
      if r == nil then
        if how ~= "reply" then return nil, msg, how end
        failed = failed or {msg, i}
        r = {err = msg}
      end
      replies[i] = r
    end
    if failed then return nil, failed[1], "reply", failed[2] end
    return replies
  end

  -- One command; as pipeline.
  function M.call(c, timeout, ...)
    local replies, msg, how = M.pipeline(c, {{...}}, timeout)
    if not replies then return nil, msg, how end
    return replies[1]
  end

  -- The fields of a stream entry ({k1, v1, k2, v2, ...}) as a table.
  function M.fields(list)
    local t = {}
    if type(list) ~= "table" then return t end
    for i = 1, #list - 1, 2 do t[list[i]] = list[i + 1] end
    return t
  end

  -- Backoff between attempts to reach a server that went away.
  M.BACKOFF_FIRST, M.BACKOFF_MAX = 0.05, 2

  function M.next_backoff(b) return math.min((b or M.BACKOFF_FIRST / 2) * 2, M.BACKOFF_MAX) end

  -- HMAC-SHA256 under authkey of the parts, joined so that no two lists
  -- of parts give the same message; "" without an authkey (insecure).
  function M.mac(authkey, ...)
    if not authkey then return "" end
    local parts = {...}
    for i = 1, #parts do parts[i] = #parts[i] .. ":" .. parts[i] end
    return core.hmac("sha256", authkey, table.concat(parts, ","))
  end

  function M.mac_ok(authkey, mac, ...)
    if not authkey then return true end
    return type(mac) == "string" and core.compare_digest(mac, M.mac(authkey, ...))
  end

  -- The authkey of a Pool or worker: a string, or nil with insecure.
  function M.check_authkey(authkey, insecure, what)
    if authkey ~= nil then
      I.check_type(authkey, "string", what, "authkey", "a string")
      if #authkey == 0 then I.raise("ValueError", "%s: authkey is empty", what) end
      return authkey
    end
    if not insecure then
      I.raise("ValueError", "%s: a broker pool needs an authkey (tasks carry code that workers " ..
              "run); %s to run without one", what,
              what == "lmp worker" and "pass --insecure" or "pass insecure = true")
    end
    return nil
  end

  return M
end
