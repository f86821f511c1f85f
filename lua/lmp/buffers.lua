-- lmp.buffers: big buffers by handle (SPEC section 15), as
-- torch.multiprocessing moves tensors to shared memory.
--
-- A string or FFI array of numbers of at least lmp.codec.share_threshold
-- bytes, put on a Queue, sent to a Process, or in a Pool task or result
-- (encodings with the codec's `share` option), is copied once into an
-- anonymous segment (a memfd, runtime/lmp_shm.c), and only its handle
-- travels.  A string is copied out by its receiver; an FFI array arrives
-- as a reference over the shared memory, with no copy, which keeps the
-- segment mapped while it lives.
--
-- The memory belongs to the kernel's count of whoever holds it: it goes
-- when the last process has closed or unmapped it, SIGKILL included, so
-- it can never outlive its processes.  Until a receiver has it:
-- - a Queue holds it (runtime/lmp_bag.c), as a Queue item outlives its
--   putter; the handle names it there;
-- - otherwise its sender does, and the handle is the sender's pid and
--   descriptor, which the receiver opens through /proc/PID/fd/FD.  The
--   sender sees that it was received (the state in the segment's header)
--   at its next lmp call that sends or waits, and a process that exits
--   first waits for that a while (EXIT_WAIT): a handle whose sender is
--   gone cannot be opened, and its receiver gets an error that says so,
--   never other bytes.  A Pool keeps a task's segments until the task is
--   done, so that a task that runs again finds them.
return function(core, lmp, I)
  local ffi = require "ffi"
  local raise = I.raise

  -- A segment starts with a header on a cache line of its own: its state
  -- and the generation of the buffer it carries; the bytes follow.
  local HEADER = 64
  local STATE, GENERATION = 0, 1  -- uint32_t words of the header
  local SENT, OPENED, DONE = 0, 1, 2
  -- A segment whose buffer was copied out (a string) carries the next one:
  -- its pages are already there, a fresh segment's would be faulted in one
  -- by one.  A few are kept, the memory of one call's worth of them.
  local KEEP, KEEP_BYTES = 4, 64 * 1048576
  local FRESH_BYTES_PER_S = 400e6  -- pages touched for the first time (a 10 us fault per 4 KiB)
  local GRAIN = 65536        -- segment sizes, so that sizes close to each other share
  local EXIT_WAIT = 10       -- seconds an exiting sender waits for its receivers
  local u32p = ffi.typeof("volatile uint32_t *")
  local u8p = ffi.typeof("uint8_t *")
  local c_exchange = ffi.cast("uint32_t (*)(uint32_t *, uint32_t)", core.atomic_exchange_u32)

  local M = {}
  local pending = {}  -- {seg}: sent, not opened by a receiver yet
  local kept = {}     -- {seg}: free to carry the next buffer
  local serial_of = setmetatable({}, {__mode = "k"})  -- seg -> the serial of its tag
  local serial, generation = 0, 0

  local function header(seg) return ffi.cast(u32p, seg:address()) end
  local received_now, forget  -- (below)

  -- A segment a receiver is done with: kept to carry another, or closed.
  local function release(seg)
    local bytes = seg:size()
    for i = 1, #kept do bytes = bytes + kept[i]:size() end
    if #kept < KEEP and bytes <= KEEP_BYTES then
      kept[#kept + 1] = seg
    else
      seg:close()
    end
  end

  -- Lets go of what receivers have opened.
  local trim_kept, trim_mapped  -- (below)
  local taken = {}  -- {seg, state, close, ...}: received in a get not finished yet (below)
  local function sweep()
    if taken[1] then I.shared_taken() end
    local n = 0
    for i = 1, #pending do
      local seg = pending[i]
      pending[i] = nil
      if seg:closed() then
        -- (closed by its pin's owner)
      else
        local state = header(seg)[STATE]
        if state == DONE then
          release(seg)
        elseif state == OPENED then
          seg:close()  -- an array: its receiver maps it from now on
        else
          n = n + 1
          pending[n] = seg
        end
      end
    end
    trim_kept(); trim_mapped()
  end

  -- Kept segments go at the end of a garbage collection cycle in which
  -- none was asked for: a sender that goes on sending keeps its few, one
  -- that stopped does not hold them for long.
  -- The same goes for a receiver's mappings of its senders' segments
  -- (below).
  local asked, read = false, false
  local mapped, order = {}, {}  -- tag -> a sender's segment mapped here; tags, oldest first
  local kept_due, mapped_due = false, false
  -- (the collector only marks them due: it may run in the middle of this
  -- module's work on the lists; sweep, at lmp's calls, lets them go)
  local function on_each_cycle()
    getmetatable(newproxy(true)).__gc = function()
      if not asked then kept_due = true end
      if not read then mapped_due = true end
      asked, read = false, false
      on_each_cycle()
    end
  end
  on_each_cycle()
  function trim_kept()
    if not kept_due then return end
    kept_due = false
    for i = #kept, 1, -1 do kept[i]:close(); kept[i] = nil end
  end
  function trim_mapped()
    if not mapped_due then return end
    mapped_due = false
    for tag, seg in pairs(mapped) do seg:close(); mapped[tag] = nil end
    order = {}
  end

  local function fitting(need)
    for i = 1, #kept do
      local size = kept[i]:size()
      if size >= need and size <= 2 * need then return table.remove(kept, i) end
    end
  end

  -- A segment for len bytes: a kept one that fits, or a new one.  When
  -- receivers are behind, a sender streaming big items would make a fresh
  -- segment for each, whose pages cost more to touch than to copy (and
  -- a receiver reads a fresh mapping slower too); so it first waits for
  -- its oldest one to be received, but never longer than making a fresh
  -- segment would take: the wait costs nothing it would not spend anyway,
  -- and cannot deadlock a process that puts several and gets them itself.
  local function segment_for(len)
    asked = true
    local need = HEADER + len
    local seg = fitting(need)
    if seg then return seg end
    if #pending >= KEEP then
      local deadline = core.now() + need / FRESH_BYTES_PER_S
      local oldest = pending[1]
      while not oldest:closed() and header(oldest)[STATE] == SENT and core.now() < deadline do
        lmp.connection.wait({}, 0.0001)
      end
      sweep()
      seg = fitting(need)
      if seg then return seg end
    end
    serial = serial + 1
    seg = core.segment_new(math.ceil(need / GRAIN) * GRAIN,
                                 ("lmp_buf_%d_%d"):format(core.getpid(), serial))
    serial_of[seg] = serial
    return seg
  end

  local in_custody = setmetatable({}, {__mode = "k"})  -- seg -> true: a Queue keeps it

  -- len bytes at src (a string or FFI memory) into a shared segment; its
  -- handle.  With bag (the Queue it goes into, runtime/lmp_bag.c), the
  -- Queue keeps the segment, so that it outlives this process as a Queue
  -- item does; if the bag is full, a string goes by value (nothing
  -- returned) and an FFI array with a handle this process keeps.
  local function share(src, len, kind, ctype, bag)
    sweep()
    local seg = segment_for(len)
    generation = generation % 0xffffffff + 1
    local h = header(seg)
    h[GENERATION] = generation
    h[STATE] = SENT
    ffi.copy(ffi.cast(u8p, h) + HEADER, src, len)
    pending[#pending + 1] = seg
    local pid, n = core.getpid(), serial_of[seg]
    in_custody[seg] = nil
    if bag then
      if bag:put(seg:fd(), pid, n, generation) then
        in_custody[seg] = true
        return "lmp.Buffer", {pid, 0, n, len, kind, ctype, generation, true}
      end
      if kind == "s" then
        h[STATE] = DONE  -- not sent: free to carry the next one
        return nil
      end
    end
    return "lmp.Buffer", {pid, seg:fd(), n, len, kind, ctype, generation}
  end

  -- A value met again in the same message gets the same handle (the same
  -- payload table, which the codec sends once and refers to after).
  local memo, memo_of = {}, nil
  local function shared_once(serial, src, ...)
    if memo_of ~= serial then memo, memo_of = {}, serial end
    local name, payload = memo[src], nil
    if name then return "lmp.Buffer", name end
    name, payload = share(src, ...)
    if name then memo[src] = payload end
    return name, payload
  end

  core.codec_share_hook(function(s, bag, serial) return shared_once(serial, s, #s, "s", nil, bag) end)

  -- Lets go of what was received: called by lmp's calls that send or wait
  -- (Queue put and get, the pools' pump), so that a sender does not keep
  -- memory its receivers have.
  function I.shared_sweep()
    if #pending > 0 or kept_due or mapped_due then sweep() end
  end
  core.shared_sweep = I.shared_sweep  -- for pool workers (lmp.pool.worker)

  -- Element types an FFI array may have to travel: numbers, which mean the
  -- same in every process (a pointer would not).
  local NUMERIC = {}
  for _, name in ipairs{"char", "signed char", "unsigned char", "short", "unsigned short",
                        "int", "unsigned int", "long", "unsigned long", "long long",
                        "unsigned long long", "float", "double", "bool", "int8_t", "uint8_t",
                        "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t", "uint64_t"} do
    NUMERIC[name] = true
  end

  -- For the codec's cdata hook (lua/lmp/shared.lua): an FFI array of
  -- numbers of at least share_at bytes -> name, payload; nothing if obj is
  -- not one.
  function I.share_cdata(obj, share_at, bag, serial)
    if not share_at then return nil end
    local ctype = tostring(ffi.typeof(obj)):match("^ctype<(.-) %[[%d?]*%]>$")
    if not ctype or not NUMERIC[ctype] then return nil end
    local size = ffi.sizeof(obj)
    if not size or size < share_at then return nil end
    return shared_once(serial, obj, size, "a", ctype, bag)
  end

  -- A mark before an encoding, and the segments made since, taken out of
  -- the pending list: their owner (a Pool call) keeps them, and they go
  -- with it.
  function I.shared_mark() return #pending end
  function I.shared_since(mark)
    local pins
    for i = #pending, mark + 1, -1 do
      pins = pins or {}
      pins[#pins + 1] = table.remove(pending, i)
    end
    return pins
  end

  -- Keeps each received array's segment mapped while the array lives.
  local holders = setmetatable({}, {__mode = "k"})

  -- Tells a buffer's sender it was received: at once, or for one a Queue
  -- keeps, once the get that took it has taken the item out of the queue
  -- (I.shared_taken): a consumer killed in the middle of its get leaves
  -- the item, and its buffer, to the next one.
  local function mark(seg, state, close)
    if seg:closed() then return end  -- (a mapping kept, let go since)
    c_exchange(ffi.cast("uint32_t *", seg:address()), state)
    if close then seg:close() end
  end
  function received_now(seg, state, from_bag, close)
    if not from_bag then return mark(seg, state, close) end
    local n = #taken
    taken[n + 1], taken[n + 2], taken[n + 3] = seg, state, close or false
  end
  -- A mapping let go of: closed, once its get has marked it.
  function forget(seg)
    for i = 1, #taken, 3 do
      if taken[i] == seg then taken[i + 2] = true; return end
    end
    seg:close()
  end
  function I.shared_taken()
    for i = 1, #taken, 3 do mark(taken[i], taken[i + 1], taken[i + 2]) end
    for i = #taken, 1, -1 do taken[i] = nil end
  end

  -- A handle met again in one message (the same payload table): the same
  -- value.
  local received = setmetatable({}, {__mode = "kv"})  -- (holding no array alive)
  local receive

  lmp.codec.register_extension("lmp.Buffer", {}, function() end, function(t)
    local v = received[t]
    if v == nil then
      v = receive(t)
      received[t] = v
    end
    return v
  end)

  function receive(t)
    local pid, fd, n, len, kind, ctype, gen = t[1], t[2], t[3], t[4], t[5], t[6], t[7]
    if type(pid) ~= "number" or type(fd) ~= "number" or type(n) ~= "number"
       or type(len) ~= "number" or type(gen) ~= "number" then
      raise("CodecError", "a malformed buffer handle")
    end
    local tag = ("lmp_buf_%d_%d"):format(pid, n)
    local seg
    local function gone()
      if seg then seg:close() end
      raise("OSError", "a shared buffer of %d bytes from process %d is gone: it was not " ..
            "received before its sender let go of it (the sender exited or was killed)",
            len, pid)
    end
    -- A string comes through a mapping kept from the segment's last
    -- buffer if its sender reused it: reading memory through a fresh
    -- mapping costs far more than copying it.
    local cached = kind == "s" and mapped[tag]
    if cached then
      mapped[tag] = nil
      for i = 1, #order do
        if order[i] == tag then table.remove(order, i); break end
      end
    end
    if t[8] then  -- kept by the Queue being read (lua/lmp/queue.lua)
      local bag = I.custody_get
      local got = bag and bag:take(pid, n, gen)
      if not got then
        if cached then cached:close() end
        gone()
      end
      if cached and cached:is_file(got) then
        core.close_fd(got)
        seg = cached
      else
        if cached then cached:close() end
        seg = core.segment_from_fd(got, true)
      end
    else
      if cached and not cached:is_held_by(pid, fd) then cached:close(); cached = nil end
      seg = cached or core.segment_open_proc(tag, pid, fd, tag, true)
    end
    if not seg then gone() end
    if seg:size() < HEADER + len then
      seg:close()
      raise("CodecError", "a shared buffer is shorter than its handle says")
    end
    local h = header(seg)
    if h[GENERATION] ~= gen then gone() end  -- (received once already)
    local base = ffi.cast(u8p, h)
    if kind == "s" then
      local s = ffi.string(base + HEADER, len)
      read = true
      if #order >= KEEP then  -- the oldest goes (a sender that stopped, say)
        local old = table.remove(order, 1)
        forget(mapped[old])
        mapped[old] = nil
      end
      mapped[tag] = seg
      order[#order + 1] = tag
      received_now(seg, DONE, t[8])  -- copied out: the sender may reuse it
      return s
    end
    if not NUMERIC[ctype] then
      seg:close()
      raise("CodecError", "a shared array of an unknown element type %s", tostring(ctype))
    end
    local count = len / ffi.sizeof(ctype)
    if count % 1 ~= 0 then
      seg:close()
      raise("CodecError", "a shared array of %d bytes is not a whole number of %s", len, ctype)
    end
    -- (the type by its whole name, never with "$" parameters: busted
    -- memoizes ffi.typeof by its first argument)
    local ref = ffi.cast(ffi.typeof(("%s(&)[%d]"):format(ctype, count)), base + HEADER)
    received_now(seg, OPENED, t[8])  -- mapped here: the sender may let go
    holders[ref] = seg
    return ref
  end

  -- A child made by fork: its parent's buffers are not its to hold.
  I.after_fork[#I.after_fork + 1] = function()
    pending, kept, mapped, order, taken = {}, {}, {}, {}, {}
  end

  -- An exiting process waits (EXIT_WAIT at most) for the buffers it
  -- keeps to be received: a Pool result sent just before the end must
  -- still arrive.  (A Queue keeps its items' buffers itself.)
  local function waited_for()
    for i = 1, #pending do
      if not in_custody[pending[i]] then return true end
    end
    return false
  end
  I.at_exit[#I.at_exit + 1] = function()
    local deadline = core.now() + EXIT_WAIT
    sweep()
    while waited_for() and core.now() < deadline do
      lmp.connection.wait({}, 0.005)
      sweep()
    end
    return 0
  end

  M.HEADER = HEADER
  return M
end
