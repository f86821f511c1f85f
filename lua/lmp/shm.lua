-- lmp.shm: the shared memory under locks, Values and Arrays (internal).
--
-- Small objects are carved out of 64 KiB arenas, each one anonymous segment
-- (a memfd, runtime/lmp_shm.c); larger ones get a segment of their own.  A
-- segment is unmapped when the last object in it is closed or collected,
-- and disappears from the system when the last process has done so.
--
-- Objects travel to a child only when it starts (Process args, Pool
-- initargs): the segment's descriptor is inherited and the object is named
-- by (segment, offset).  Sending one over a Pipe later is refused, as in
-- Python, because a descriptor cannot ride in a frame.
return function(core, lmp, I)
  local ffi = require "ffi"

  ffi.cdef(([[
typedef struct {
  union { char bytes[%d]; int64_t align; } mutex;
  int32_t owner;
  int32_t count;
} lmp_lock;
typedef struct { uint32_t value, waiters, max; } lmp_sem;
typedef struct { uint32_t flag, waiters; } lmp_event;
typedef struct {
  lmp_lock lock;
  uint32_t gen;
  int32_t parties, count, state;
  uint8_t broken[64];
} lmp_barrier;
typedef struct {
  int (*lock_init)(lmp_lock *l);
  int (*lock_acquire)(lmp_lock *l, double timeout);
  int (*lock_release)(lmp_lock *l);
  int (*permit_take)(lmp_sem *s);
  int (*permit_give)(lmp_sem *s, uint32_t n);
  void (*wake)(uint32_t *word, int32_t n);
  void (*event_set)(lmp_event *e);
  int32_t (*self_tid)(void);
} lmp_sync_api;
]]):format(core.sync_mutex_size))

  local M = {
    api = ffi.cast("const lmp_sync_api *", core.sync_api),
    ARENA = 64 * 1024,
    SLOT = 64,  -- objects start on their own cache line
  }

  local raise = I.raise

  -- Segment bookkeeping: base address and live objects per segment.
  local bases = setmetatable({}, {__mode = "k"})
  local users = setmetatable({}, {__mode = "k"})
  local arena = setmetatable({}, {__mode = "v"})  -- .seg: the open arena
  local arena_used = 0

  function M.base(seg)
    local b = bases[seg]
    if not b then
      b = ffi.cast("char *", seg:address())
      bases[seg] = b
    end
    return b
  end

  function M.retain(seg) users[seg] = (users[seg] or 0) + 1 end

  -- An object let go of seg: unmap it now if nothing else in this process
  -- uses it (the open arena stays for the next objects).
  function M.release(seg)
    local n = (users[seg] or 1) - 1
    users[seg] = n
    if n <= 0 and arena.seg ~= seg then
      bases[seg] = nil
      seg:close()
    end
  end

  -- size bytes, zero-filled -> segment, offset.  The caller retains.
  function M.alloc(size)
    size = math.ceil(math.max(size, 1) / M.SLOT) * M.SLOT
    if size > M.ARENA / 4 then return core.segment_new(size), 0 end
    local seg = arena.seg
    if not seg or arena_used + size > M.ARENA then
      seg = core.segment_new(M.ARENA)
      arena.seg, arena_used = seg, 0
    end
    local off = arena_used
    arena_used = arena_used + size
    return seg, off
  end

  -- close() of an object that owns a whole segment (Queue, SharedMemory).
  function M.close_segment(self)
    local seg = self._seg
    if seg then
      self._seg = nil
      seg:close()
    end
  end

  -- Travel to a child: the segment is named by the position of its
  -- inherited descriptor.
  function M.to_wire(seg, what)
    if seg:closed() then raise("ValueError", "%s is closed", what) end
    return I.attach_fd(seg:fd(), what, true)
  end

  local inherited = setmetatable({}, {__mode = "v"})
  function M.from_wire(index)
    local seg = inherited[index]
    if not seg then
      seg = core.segment_from_fd(I.inherited_fd(index))
      inherited[index] = seg
    end
    return seg
  end

  -- One object per (segment, offset, kind) in a process, so that an object
  -- passed twice is the same object on arrival.
  local objects = setmetatable({}, {__mode = "v"})
  function M.lookup(seg, off, kind)
    return objects[tostring(seg) .. ":" .. off .. ":" .. kind]
  end
  function M.remember(seg, off, kind, obj)
    objects[tostring(seg) .. ":" .. off .. ":" .. kind] = obj
  end

  return M
end
