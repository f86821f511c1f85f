-- lmp and the descriptors of the program it runs in.  A program that embeds
-- lmp (a game server with its sockets) must never lose a descriptor to lmp,
-- nor find lmp's where its own belong.
--
-- A host may run with stdin, stdout or stderr closed: lmp's descriptors
-- must not take those numbers.
local H = require "spec.support.helpers"

describe("lmp and the descriptors it does not own", function()
  H.check_leaks()

  -- A host with stdin, stdout or stderr closed (a daemon, a job started
  -- with <&-): lmp's descriptors, and its libuv loop's, must not take
  -- those numbers.  Before, the loop's epoll descriptor took the first free
  -- one and libuv aborted the host when it closed the loop (it asserts
  -- fd > 2), and a Pipe made with stdout closed became every child's
  -- stdout: what a child printed arrived on the Pipe.
  describe("in a host with stdin, stdout or stderr closed", function()
    local script = [[
      local out = arg[1]
      local ok, err = pcall(function()
        local lmp = require "lmp"
        local a, b = lmp.Pipe()
        local q = lmp.Queue()
        q:put(1)
        assert(#lmp.connection.wait({q}, 5) == 1)
        local l = lmp.connection.Listener("127.0.0.1:0")
        local c = lmp.connection.Client(l.address, {timeout = 5})
        local s = l:accept(10)
        local sm = lmp.SharedMemory{size = 64}
        local p = lmp.Process(function(conn)
          print("printed by the child")
          io.stderr:write("written to stderr by the child\n")
          conn:send("sent by the child")
        end, b)
        p:start()
        assert(a:poll(10) and a:recv() == "sent by the child")
        assert(p:join(10) == 0, "the child failed")
        for what, fd in pairs({a = a:fileno(), b = b:fileno(), listener = l:fileno(),
                               client = c:fileno(), accepted = s:fileno(),
                               sentinel = p.sentinel}) do
          assert(fd > 2, "lmp's descriptor (" .. what .. ") took number " .. fd)
        end
        for _, conn in ipairs({a, b, c, s}) do
          assert(not conn:poll(0.2), "something arrived on fd " .. conn:fileno())
        end
        p:close(); a:close(); b:close(); c:close(); s:close(); l:close(); q:close(); sm:close()
      end)
      local f = assert(io.open(out, "w"))
      f:write(ok and "ok" or tostring(err))
      f:close()
    ]]
    for _, closed in ipairs({"0<&-", "1>&-", "2>&-", "0<&- 1>&- 2>&-"}) do
      it(("%s: no lmp descriptor takes the number, children and exit work"):format(closed), function()
        local dir = H.tmpdir()
        local path = H.write(dir .. "/host.lua", script)
        local r = H.run({"sh", "-c", "exec " .. closed .. '; exec "$0" "$@"', H.lmp, path,
                         dir .. "/result"}, {timeout = 30})
        local result = H.slurp(dir .. "/result")
        assert.equal("ok", result, r.stderr)
        assert.equal(0, r.status, r.stderr)
      end)
    end
  end)
end)
