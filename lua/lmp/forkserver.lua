-- lmp.forkserver: the server of the forkserver start method.
--
-- A process that uses forkserver spawns this server once (a clean lmp:
-- one thread, lmp and the preloaded modules loaded, nothing of the host)
-- with one end of a socketpair; nobody else holds the other end, so every
-- request comes from that process.  For each request -- a child's
-- bootstrap record, as a spawned child reads it, and the descriptors of
-- the lmp objects among its arguments (runtime/lmp_fdpass.c) -- the server
-- forks: the child puts the descriptors where a spawned child finds them
-- and runs the record (core.run_child).  The reply is the child's pid and
-- the read end of a pipe on which the server writes the child's exit code
-- once it has reaped it: the requester's sentinel and join.
--
-- The server dies with its requester, and its children with it (both
-- PR_SET_PDEATHSIG), so nothing outlives the process that asked.
return function(core, lmp, I)
  local codec = lmp.codec
  local M = {}

  -- In the forked child: never returns.  core.fork has closed what the
  -- server's objects held (their Lua objects stay reachable from the
  -- server's loop, so that no finalizer closes a number reused since); the
  -- request's descriptors are where they arrived, and the record's lmp
  -- objects find them there.
  local function run_child(record, name, fds)
    core.default_interrupts()  -- the server ignores Ctrl-C; a child does not
    for _, hook in ipairs(I.after_fork) do hook() end
    I.inherit_from(fds)
    local ok, code = xpcall(core.run_child, debug.traceback, record)
    if not ok then io.stderr:write(name, ": ", tostring(code), "\n") end
    pcall(core.atexit)
    core.fork_exit(ok and 0 or 1)
  end

  function M.serve(conn, preload)
    core.ignore_interrupts()  -- Ctrl-C is the requester's to act on
    for _, name in ipairs(preload or {}) do require(name) end
    local sock = core.conn_info(conn)
    local kids = {}  -- sentinel -> {handle, status Connection}
    while true do
      local list = {sock}
      for fd in pairs(kids) do list[#list + 1] = fd end
      for _, ready in ipairs(lmp.connection.wait(list)) do
        if ready == sock then
          local record, fds = core.fdpass_recv(sock)
          if not record then return end  -- the requester has gone
          local ok, rec = pcall(codec.decode, record)
          local name = ok and type(rec) == "table" and tostring(rec.name) or "child"
          local r, w = lmp.Pipe(false)
          -- the child keeps nothing of the server's (a sibling's status
          -- pipe held open would keep its sentinel from reporting its end)
          local drop = {sock, (core.conn_info(r)), (core.conn_info(w))}
          for fd, kid in pairs(kids) do
            drop[#drop + 1] = fd
            drop[#drop + 1] = (core.conn_info(kid[2]))
          end
          local h = core.fork(drop)
          if not h then run_child(record, name, fds) end
          for _, fd in ipairs(fds) do core.close_fd(fd) end
          core.fdpass_send(sock, codec.encode({pid = h.pid}), {(core.conn_info(r))})
          r:close()
          kids[h.sentinel] = {h, w}
        else
          local kid = kids[ready]
          local code = kid and kid[1].exitcode
          if code then
            pcall(kid[2].send, kid[2], code)
            kid[2]:close()
            kid[1]:close()
            kids[ready] = nil
          end
        end
      end
    end
  end

  return M
end
