-- lmp.wait: lmp.connection.wait(list [, timeout]) (SPEC sections 4, 12).
-- Installed by init.lua.
--
-- The C wait (runtime/lmp_conn.c) takes Connections, Processes (their
-- sentinel) and raw descriptors.  Other objects can be waited on when their
-- kind is registered here with I.waitable(mt, watch): watch(obj, what)
-- returns whether obj is ready now, and a watcher with fd() (readable once
-- obj is ready) and close(), which lives only for the wait.  Queues do so.
return function(core, lmp, I)
  local c_wait = core.connection.wait
  local watches = {}  -- metatable -> watch function

  function I.waitable(mt, watch) watches[mt] = watch end

  -- Returns the entries of list that are ready, as the objects given.
  function lmp.connection.wait(list, timeout)
    I.check_type(list, "table", "lmp.connection.wait", "list", "a table of objects")
    if timeout ~= nil then timeout = I.timeout(timeout, "lmp.connection.wait") or math.huge end
    I.shared_sweep()
    local kinds
    for i = 1, #list do
      local watch = watches[getmetatable(list[i])]
      if watch then
        kinds = kinds or {}
        kinds[i] = watch
      end
    end
    if not kinds then return c_wait(list, timeout) end
    -- Each such object is replaced by its watcher's descriptor.
    local ready, proxy, watchers, back = {}, {}, {}, {}
    for i = 1, #list do proxy[i] = list[i] end
    local ok, err = pcall(function()
      for i, watch in pairs(kinds) do
        local now, w = watch(list[i], "lmp.connection.wait")
        if now then ready[#ready + 1] = list[i] end
        watchers[#watchers + 1] = w
        proxy[i] = w:fd()
        back[proxy[i]] = list[i]
      end
    end)
    local got
    if ok then ok, got = pcall(c_wait, proxy, #ready > 0 and 0 or timeout) end
    for _, w in ipairs(watchers) do w:close() end
    if not ok then error(err or got, 0) end
    local seen = {}
    for _, v in ipairs(ready) do seen[v] = true end
    for _, v in ipairs(got) do
      local obj = back[v] or v
      if not seen[obj] then
        ready[#ready + 1] = obj
        seen[obj] = true
      end
    end
    return ready
  end
end
