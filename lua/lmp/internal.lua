-- lmp.internal: what lmp's Lua modules share and users never see.
--
-- init.lua makes one internal table per state and passes it to every
-- module; it is never reachable from the lmp table.  It holds the one way
-- each module raises errors, makes a class and reads a timeout, and the
-- hooks that tie modules together (descriptors handed to children, work to
-- do at exit, objects connection.wait can wait on), which each module fills
-- in as it is installed.
return function(core, lmp)
  local I = {}

  -- Raises an lmp error of `kind`; the message is fmt formatted with the
  -- rest.  lmp errors are tables, so no position is prepended.
  function I.raise(kind, fmt, ...)
    error(lmp.error(kind, select("#", ...) > 0 and fmt:format(...) or fmt), 0)
  end
  local raise = I.raise

  -- A class: the metatable of its objects and the table of its methods.
  -- tostring gives "lmp.<name>(<what _describe says>)".
  function I.class(name)
    local cls = {_name = name}
    cls.__index = cls
    cls.__tostring = function(self) return ("lmp.%s(%s)"):format(name, self:_describe()) end
    cls._describe = function() return "" end
    return cls
  end

  -- Raises a TypeError "what: name must be <expected>, not <type>" unless
  -- type(v) is `tname`.  Returns v.
  function I.check_type(v, tname, what, name, expected)
    if type(v) ~= tname then
      raise("TypeError", "%s: %s must be %s, not %s", what, name, expected or ("a " .. tname),
            type(v))
    end
    return v
  end

  -- Timeouts, as SPEC section 1 has them, read in one place: nil blocks
  -- for ever and so does any timeout of FOREVER seconds or more
  -- (math.huge); a negative one is 0, do not block.  Returns nil (no
  -- limit) or seconds in [0, FOREVER).  The C half reads them the same
  -- way (runtime/lmp_loop.c).
  I.FOREVER = 1e9
  function I.timeout(t, what)
    if t == nil then return nil end
    if type(t) ~= "number" or t ~= t then
      raise("TypeError", "%s: timeout must be a number of seconds, not %s", what,
            t ~= t and "NaN" or type(t))
    end
    if t >= I.FOREVER then return nil end
    return t > 0 and t or 0
  end

  -- Hooks the modules fill in:
  --   I.attach_fd(fd, what, shared) and I.inherited_fd(i)  (lmp.process):
  --     descriptors of lmp objects that travel to a child when it starts;
  --   I.at_exit: functions run at the end of the main script, before the
  --     children are joined (lmp.pool stops its pools there);
  --   I.waitable(mt, watch): objects of metatable mt can be given to
  --     lmp.connection.wait (lmp.wait).
  --   I.host: what a host that drives lmp from its own loop calls
  --     (runtime/lmp_backend.c): fds, timeout, dispatch (lmp.pool) and
  --     shutdown (lmp.process);
  --   I.after_fork: functions run first in a child made by the fork start
  --     method, so that nothing of the parent's lmp (its children, pools,
  --     callbacks) goes on in the child.
  I.at_exit = {}
  I.host = {}
  I.after_fork = {}

  return I
end
