-- lmp.shared: Value, Array, RawValue, RawArray and SharedMemory (SPEC
-- section 7), and the atomics of integer Values and Arrays (section 15).
-- Installed by init.lua.
--
-- A Value or Array is an FFI cdata {ptr, _n, _id} whose `ptr` points into
-- shared memory, so `a.ptr[i]` in a loop compiles to a plain load or store.
-- `v.value` and `a[i]` go through metamethods that check the index and the
-- value.  What a cdata cannot hold (its segment, its lock) is kept in
-- `owners`, by _id, until the object is closed or collected.
return function(core, lmp, I, shm, sync)
  local ffi = require "ffi"
  local raise, codec = I.raise, lmp.codec

  -- typecode -> C type, and for integer types the range [lo, hi + 1) as
  -- doubles (exact: 2^63 and 2^64 are, 2^63 - 1 is not) and as text.
  local I64 = {"-9223372036854775808", "9223372036854775807"}
  local U64 = {"0", "18446744073709551615"}
  local TYPES = {
    b = {"int8_t", -128, 128}, B = {"uint8_t", 0, 256},
    h = {"int16_t", -32768, 32768}, H = {"uint16_t", 0, 65536},
    i = {"int32_t", -2^31, 2^31}, I = {"uint32_t", 0, 2^32},
    l = {"int64_t", -2^63, 2^63, I64}, L = {"uint64_t", 0, 2^64, U64},
    q = {"int64_t", -2^63, 2^63, I64}, Q = {"uint64_t", 0, 2^64, U64},
    f = {"float"}, d = {"double"},
  }
  local TYPECODES = "b B h H i I l L q Q f d"
  local INT64_MAX = ffi.new("uint64_t", 0x7fffffffffffffffULL)

  local owners = {}   -- _id -> {seg =, off =, lock =, typecode =}
  local next_id = 0
  local kinds = {}    -- {ctype, "Value" | "Array"} for the codec hook

  local function owner(obj, what)
    local o = owners[obj._id]
    if obj._n < 0 or not o then raise("ValueError", "%s: object is closed", what) end
    return o
  end

  local function forget(obj)
    local o = owners[obj._id]
    if o then
      owners[obj._id] = nil
      shm.release(o.seg)
    end
  end

  local function close(obj)
    if obj._n < 0 then return end
    forget(obj)
    obj._n = -1
    ffi.gc(obj, nil)
  end

  -- The checked conversion of a Lua value for an element of type tc.
  -- int64_t/uint64_t cdata are taken too, checked against the range.
  local function converter(tc, what)
    local ctype, lo, limit, text = unpack(TYPES[tc])
    local signed = ctype:sub(1, 1) == "i"
    local range = lo and (text and (text[1] .. ".." .. text[2]) or
                          ("%.0f..%.0f"):format(lo, limit - 1))
    local function out_of_range(v)
      raise("ValueError", "%s: %s is out of range for typecode '%s' (%s)",
            what, tostring(v), tc, range)
    end
    return function(v)
      if type(v) ~= "number" then
        if type(v) == "cdata" and lo then
          if ffi.istype("int64_t", v) then
            if not signed and v < 0 then out_of_range(v) end
            if text then return v end
            v = tonumber(v)
          elseif ffi.istype("uint64_t", v) then
            if signed and text and v > INT64_MAX then out_of_range(v) end
            if text then return v end
            v = tonumber(v)
          end
        end
        if type(v) ~= "number" then
          raise("TypeError", "%s: expected %s, got %s", what,
                lo and "an integer" or "a number", type(v))
        end
      end
      if lo then
        if v % 1 ~= 0 then
          raise("TypeError", "%s: expected an integer, got %s", what, tostring(v))
        end
        if v < lo or v >= limit then out_of_range(v) end
      end
      return v
    end
  end

  local function check_typecode(tc, what)
    I.check_type(tc, "string", what, "typecode", "one of " .. TYPECODES)
    if not TYPES[tc] then
      raise("ValueError", "%s: typecode must be one of %s, not '%s'", what, TYPECODES, tc)
    end
  end

  -- lock option: true (a new RLock), false, or an lmp.Lock/RLock.
  local function lock_option(opts, what)
    local lock = true
    if opts ~= nil then
      if type(opts) ~= "table" then raise("TypeError", "%s: options must be a table", what) end
      if opts.lock ~= nil then lock = opts.lock end
    end
    if lock == true then return lmp.RLock() end
    if lock == false then return nil end
    if not sync.is_lock(lock) then
      raise("TypeError", "%s: lock must be true, false, or an lmp.Lock or lmp.RLock", what)
    end
    return lock
  end

  local function get_lock(obj)
    local o = owner(obj, "get_lock")
    if not o.lock then
      raise("ValueError", "get_lock: this %s has no lock (made with lock = false)",
            o.kind)
    end
    return o.lock
  end

  local function make(ct, seg, off, n, info)
    shm.retain(seg)
    next_id = next_id + 1
    info.seg, info.off = seg, off
    owners[next_id] = info
    local ptr = ffi.cast(TYPES[info.typecode][1] .. " *", shm.base(seg) + off)
    return ffi.gc(ct(ptr, n, next_id), forget)
  end

  ----------------------------------------------------------------- atomics

  -- add, cas and exchange on integer Values and Arrays, lock-free (SPEC
  -- section 15).  LuaJIT's FFI has no atomics: these call the C functions
  -- of runtime/lmp_atomic.c through FFI pointers with the word's address,
  -- so a compiled loop calls them in place, with no Lua/C API call.  The
  -- arithmetic wraps around as the C type's does.  Results are Lua
  -- numbers, as v.value is.
  local function atomic_methods(tc, kind)
    local ctype, lo, limit, text = unpack(TYPES[tc])
    local function named(op) return kind .. ":" .. op end
    if not lo then
      local function refuse(op)
        return function()
          raise("TypeError", "%s: typecode '%s' is not an integer type " ..
                "(atomics work on integer typecodes only)", named(op), tc)
        end
      end
      return {add = refuse("add"), cas = refuse("cas"), exchange = refuse("exchange")}
    end
    local sign, bits = ctype:match("^(u?)int(%d+)_t$")
    local suffix = (sign == "u" and "u" or "i") .. bits
    local two = ("%s (*)(%s *, %s)"):format(ctype, ctype, ctype)
    local three = ("%s (*)(%s *, %s, %s)"):format(ctype, ctype, ctype, ctype)
    local c_add = ffi.cast(two, core["atomic_add_" .. suffix])
    local c_cas = ffi.cast(three, core["atomic_cas_" .. suffix])
    local c_exchange = ffi.cast(two, core["atomic_exchange_" .. suffix])
    local add_value = converter(tc, named("add"))
    local cas_value = converter(tc, named("cas"))
    local exchange_value = converter(tc, named("exchange"))

    -- The n of add: a value of the type, or, for an unsigned type, the
    -- negative of one (add(-1) counts down), passed on modulo 2^bits.
    local delta = add_value
    if lo == 0 then
      local wide = text ~= nil
      local max = text and text[2] or ("%.0f"):format(limit - 1)
      delta = function(n)
        if type(n) == "cdata" and ffi.istype("int64_t", n) and n < 0 then
          if wide then return ffi.cast("uint64_t", n) end
          n = tonumber(n)
        end
        if type(n) == "number" and n < 0 and n % 1 == 0 then
          if -n >= limit then
            raise("ValueError", "%s: %s is out of range for typecode '%s' (-%s..%s)",
                  named("add"), tostring(n), tc, max, max)
          end
          if wide then return -ffi.cast("uint64_t", -n) end
          return n + limit
        end
        return add_value(n)
      end
    end

    if kind == "Value" then
      return {
        add = function(v, n)
          if v._n < 0 then owner(v, "Value:add") end
          return tonumber(c_add(v.ptr, delta(n)))
        end,
        cas = function(v, expected, new)
          if v._n < 0 then owner(v, "Value:cas") end
          local e = cas_value(expected)
          local old = c_cas(v.ptr, e, cas_value(new))
          return old == e, tonumber(old)
        end,
        exchange = function(v, x)
          if v._n < 0 then owner(v, "Value:exchange") end
          return tonumber(c_exchange(v.ptr, exchange_value(x)))
        end,
      }
    end
    -- The 0-based offset of element i, checked as a[i] checks it.
    local function at(a, i, op)
      if type(i) == "number" and i >= 1 and i <= a._n and i % 1 == 0 then return i - 1 end
      owner(a, named(op))
      if type(i) ~= "number" then
        raise("TypeError", "%s: index must be an integer, got %s", named(op), type(i))
      end
      raise("IndexError", "Array index %s is out of range (1..%d)", tostring(i), a._n)
    end
    return {
      add = function(a, i, n)
        local k = at(a, i, "add")
        return tonumber(c_add(a.ptr + k, delta(n)))
      end,
      cas = function(a, i, expected, new)
        local k = at(a, i, "cas")
        local e = cas_value(expected)
        local old = c_cas(a.ptr + k, e, cas_value(new))
        return old == e, tonumber(old)
      end,
      exchange = function(a, i, x)
        local k = at(a, i, "exchange")
        return tonumber(c_exchange(a.ptr + k, exchange_value(x)))
      end,
    }
  end

  ------------------------------------------------------------------- Array

  local array_ct, value_ct = {}, {}

  for tc, t in pairs(TYPES) do
    local ctype = t[1]
    local name = tc:lower() == tc and tc or (tc:lower() .. "u")
    ffi.cdef(("typedef struct { %s * const ptr; int32_t _n; const int32_t _id; } " ..
              "lmp_array_%s;"):format(ctype, name))
    ffi.cdef(("typedef struct { %s * const ptr; int32_t _n; const int32_t _id; } " ..
              "lmp_value_%s;"):format(ctype, name))
    local set_element = converter(tc, "Array element")
    local set_value = converter(tc, "Value.value")

    local methods = {
      typecode = tc,
      totable = function(a)
        owner(a, "totable")
        local out, p = {}, a.ptr
        for i = 1, a._n do out[i] = tonumber(p[i - 1]) end
        return out
      end,
      get_lock = get_lock,
      close = close,
    }
    for op, f in pairs(atomic_methods(tc, "Array")) do methods[op] = f end
    local function bad_index(a, i)
      owner(a, "index")
      raise("IndexError", "Array index %s is out of range (1..%d)", tostring(i), a._n)
    end
    array_ct[tc] = ffi.metatype("lmp_array_" .. name, {
      __index = function(a, i)
        if type(i) == "number" then
          if i >= 1 and i <= a._n and i % 1 == 0 then return tonumber(a.ptr[i - 1]) end
          return bad_index(a, i)
        end
        return methods[i]
      end,
      __newindex = function(a, i, v)
        if type(i) == "number" and i >= 1 and i <= a._n and i % 1 == 0 then
          a.ptr[i - 1] = set_element(v)
          return
        end
        if type(i) == "number" then return bad_index(a, i) end
        raise("ValueError", "Array: cannot set field %s", tostring(i))
      end,
      __len = function(a) return a._n < 0 and 0 or a._n end,
      __tostring = function(a)
        if a._n < 0 then return "lmp.Array(closed)" end
        return ("lmp.Array('%s', %d)"):format(tc, a._n)
      end,
    })

    local value_methods = {typecode = tc, get_lock = get_lock, close = close}
    for op, f in pairs(atomic_methods(tc, "Value")) do value_methods[op] = f end
    value_ct[tc] = ffi.metatype("lmp_value_" .. name, {
      __index = function(v, k)
        if k == "value" then
          if v._n < 0 then owner(v, "value") end
          return tonumber(v.ptr[0])
        end
        return value_methods[k]
      end,
      __newindex = function(v, k, x)
        if k == "value" then
          if v._n < 0 then owner(v, "value") end
          v.ptr[0] = set_value(x)
          return
        end
        raise("ValueError", "Value: cannot set field %s (only value)", tostring(k))
      end,
      __tostring = function(v)
        if v._n < 0 then return "lmp.Value(closed)" end
        return ("lmp.Value('%s', %s)"):format(tc, tostring(tonumber(v.ptr[0])))
      end,
    })
    kinds[#kinds + 1] = {array_ct[tc], "Array"}
    kinds[#kinds + 1] = {value_ct[tc], "Value"}
  end

  local function new_array(what, tc, init, lock)
    check_typecode(tc, what)
    local n
    if type(init) == "number" then
      n = init
      if n % 1 ~= 0 or n < 0 or n > 2^31 - 1 then
        raise("ValueError", "%s: size must be an integer >= 0, not %s", what, tostring(n))
      end
    elseif type(init) == "table" then
      n = #init
    else
      raise("TypeError", "%s: expected a size or a table of initial values", what)
    end
    local size = n * ffi.sizeof(TYPES[tc][1])
    local seg, off = shm.alloc(size)
    local a = make(array_ct[tc], seg, off, n,
                   {kind = "Array", typecode = tc, lock = lock})
    if type(init) == "table" then
      local set = converter(tc, what)
      for i = 1, n do a.ptr[i - 1] = set(init[i]) end
    end
    return a
  end

  function lmp.Array(tc, init, opts)
    return new_array("lmp.Array", tc, init, lock_option(opts, "lmp.Array"))
  end
  function lmp.RawArray(tc, init) return new_array("lmp.RawArray", tc, init, nil) end

  local function new_value(what, tc, init, lock)
    check_typecode(tc, what)
    local seg, off = shm.alloc(ffi.sizeof(TYPES[tc][1]))
    local v = make(value_ct[tc], seg, off, 1, {kind = "Value", typecode = tc, lock = lock})
    if init ~= nil then v.ptr[0] = converter(tc, what)(init) end
    return v
  end

  function lmp.Value(tc, init, opts)
    return new_value("lmp.Value", tc, init, lock_option(opts, "lmp.Value"))
  end
  function lmp.RawValue(tc, init) return new_value("lmp.RawValue", tc, init, nil) end

  -- Values and Arrays travel to a child when it starts, with their lock.
  codec.register_extension("lmp.Array", {}, function() end, function(t)
    local seg = shm.from_wire(t[1])
    local a = shm.lookup(seg, t[2], "Array")
    if not a then
      a = make(array_ct[t[3]], seg, t[2], t[4],
               {kind = "Array", typecode = t[3], lock = t.lock})
      shm.remember(seg, t[2], "Array", a)
    end
    return a
  end)
  codec.register_extension("lmp.Value", {}, function() end, function(t)
    local seg = shm.from_wire(t[1])
    local v = shm.lookup(seg, t[2], "Value")
    if not v then
      v = make(value_ct[t[3]], seg, t[2], 1,
               {kind = "Value", typecode = t[3], lock = t.lock})
      shm.remember(seg, t[2], "Value", v)
    end
    return v
  end)
  core.codec_cdata_hook(function(obj, share_at, bag, serial)
    for i = 1, #kinds do
      local k = kinds[i]
      if ffi.istype(k[1], obj) then
        local o = owner(obj, "pass")
        return "lmp." .. k[2], {shm.to_wire(o.seg, "a " .. k[2]), o.off, o.typecode,
                                obj._n, lock = o.lock}
      end
    end
    -- a big FFI array of numbers, where it may go by handle
    return I.share_cdata(obj, share_at, bag, serial)
  end)

  ------------------------------------------------------------ SharedMemory

  -- A SharedMemory made with a name is /dev/shm/NAME: it outlives its
  -- processes until unlink(), as in Python.  One made without a name is an
  -- anonymous segment with a generated name, lmp_PID_FD_SERIAL, that other
  -- processes attach through /proc/PID/fd/FD while its creator has it open.
  -- It goes with the last process that uses it, so a crash cannot leave it
  -- behind (Python needs its resource tracker for that).
  local SharedMemory = {}
  SharedMemory.__index = SharedMemory
  SharedMemory.__tostring = function(self)
    return ("lmp.SharedMemory(%q, size=%d%s)"):format(self.name, self.size,
                                                        self._seg and "" or ", closed")
  end
  local serial = 0

  local function generated(size)
    serial = serial + 1
    local pid = core.getpid()
    local tag = ("lmp_%d_%d"):format(pid, serial)
    local seg = core.segment_new(size, tag)
    return seg, ("lmp_%d_%d_%d"):format(pid, seg:fd(), serial)
  end

  local function attach_generated(name)
    local pid, fd, n = name:match("^lmp_(%d+)_(%d+)_(%d+)$")
    if not pid then return nil end
    return core.segment_open_proc(name, tonumber(pid), tonumber(fd),
                                  ("lmp_%s_%s"):format(pid, n))
  end

  local function new_shared_memory(name, seg, is_generated)
    local self = setmetatable({name = name, size = seg:size(), _seg = seg,
                               _generated = is_generated}, SharedMemory)
    shm.remember(seg, 0, "SharedMemory", self)
    return self
  end

  function lmp.SharedMemory(opts, create, size)
    if type(opts) ~= "table" then opts = {name = opts, create = create, size = size} end
    local name = opts.name
    if name ~= nil and (type(name) ~= "string" or name == "" or name:find("/", 1, true)) then
      raise("ValueError", "lmp.SharedMemory: name must be a non-empty string without '/'")
    end
    local creating = opts.create
    if creating == nil then creating = name == nil end
    if creating then
      -- No size is size 0, as in Python: a ValueError.
      if opts.size ~= nil then
        I.check_type(opts.size, "number", "lmp.SharedMemory", "size", "a number of bytes")
      end
      if opts.size == nil or opts.size < 1 or opts.size % 1 ~= 0 then
        raise("ValueError", "lmp.SharedMemory: size must be a positive integer number of bytes")
      end
      if name == nil then
        local seg, generated_name = generated(opts.size)
        return new_shared_memory(generated_name, seg, true)
      end
      return new_shared_memory(name, core.segment_open(name, true, opts.size))
    elseif name == nil then
      raise("ValueError", "lmp.SharedMemory: name is needed to attach (create = false)")
    end
    local ok, seg = pcall(core.segment_open, name, false)
    if ok then return new_shared_memory(name, seg) end
    local anon = attach_generated(name)
    if anon then return new_shared_memory(name, anon, true) end
    error(seg, 2)
  end

  local function segment(self, what)
    local seg = self._seg
    if not seg then raise("ValueError", "SharedMemory:%s: SharedMemory %q is closed", what, self.name) end
    return seg
  end

  -- buf() -> uint8_t *: valid while this object is open and referenced.
  function SharedMemory:buf()
    return ffi.cast("uint8_t *", shm.base(segment(self, "buf")))
  end

  local function range(self, what, offset, len)
    if type(offset) ~= "number" or offset % 1 ~= 0 then
      raise("TypeError", "SharedMemory:%s: offset must be an integer", what)
    end
    if offset < 0 or offset + len > self.size then
      raise("IndexError", "SharedMemory:%s: bytes %d..%d are outside SharedMemory %q (%d bytes)",
            what, offset, offset + len - 1, self.name, self.size)
    end
  end

  function SharedMemory:read(offset, len)
    local seg = segment(self, "read")
    if type(len) ~= "number" or len % 1 ~= 0 or len < 0 then
      raise("TypeError", "SharedMemory:read: len must be an integer >= 0")
    end
    range(self, "read", offset, len)
    return seg:read(offset, len)
  end

  function SharedMemory:write(offset, s)
    local seg = segment(self, "write")
    I.check_type(s, "string", "SharedMemory:write", "data")
    range(self, "write", offset, #s)
    seg:write(offset, s)
  end

  SharedMemory.close = shm.close_segment

  -- A generated name has no file to remove: the memory is marked instead,
  -- so that no process can attach it by name any more.  Once closed here,
  -- its creator's descriptor (the name's only way in) may be gone already.
  function SharedMemory:unlink()
    if self._generated then
      if self._seg and not self._seg:unlink() then
        raise("OSError", "unlink: SharedMemory %q: no such file or directory (unlinked before)",
              self.name)
      end
      return
    end
    local ok, err = core.shm_unlink(self.name)
    if not ok then raise("OSError", "unlink: SharedMemory %q: %s", self.name, err) end
  end

  codec.register_extension("lmp.SharedMemory", SharedMemory,
    function(self)
      local seg = segment(self, "pass")
      return {shm.to_wire(seg, "a SharedMemory"), self.name, self._generated}
    end,
    function(t)
      local seg = shm.from_wire(t[1])
      return shm.lookup(seg, 0, "SharedMemory") or new_shared_memory(t[2], seg, t[3])
    end)
end
