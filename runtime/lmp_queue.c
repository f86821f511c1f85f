/*
 * lmp_queue.c -- Queue, JoinableQueue and SimpleQueue over a shared ring.
 *
 * A queue is one anonymous shared segment: a header page, then a ring
 * (sparse: memory is used only where items are).
 * An item is a record [uint64 length][codec bytes], padded to 8 bytes, at
 * a monotonic byte position; its place in the ring is the position modulo
 * the ring size.  Producers take put_lock, consumers take get_lock, both
 * robust mutexes; so a put and a get run at the same time, and neither
 * makes a system call unless the other side sleeps.
 *
 * Crash safety comes from the order of writes.  A producer writes the
 * whole record and only then advances `tail`, so a producer that dies
 * mid-put leaves nothing a consumer can see.  A consumer decodes the whole
 * item and only then advances `head`, so a consumer that dies mid-get
 * leaves the item to the next one.  A put that has returned is in shared
 * memory and outlives its process.  The counters kept next to head and
 * tail (items in the queue) are recounted from the records by whoever
 * next takes a lock that a dead process held.
 *
 * The ring uses LMP_QUEUE_SMALL bytes and grows (under both locks) up to
 * the mapped LMP_QUEUE_RING when an item or a backlog needs more; when the
 * queue empties past its first LMP_QUEUE_KEEP bytes, it starts again at
 * the beginning of the small size and the rest of its memory goes back to
 * the system.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdatomic.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "lmp_arg.h"
#include "lmp_buf.h"
#include "lmp_codec.h"
#include "lmp_error.h"
#include "lmp_futex.h"
#include "lmp_interrupt.h"
#include "lmp_queue.h"
#include "lmp_shm.h"
#include "lmp_sync.h"
#include "lmp_time.h"

#define LMP_QUEUE_HEADER 4096
#define LMP_QUEUE_RING ((uint64_t)1 << 30)    /* mapped; the most in use */
#define LMP_QUEUE_SMALL ((uint64_t)8 << 20)   /* in use unless an item needs more */
#define LMP_QUEUE_KEEP ((uint64_t)256 << 10)  /* resident while the queue empties */

/* Record kinds, in the top byte of a record's length word: plain strings,
 * numbers, booleans and nil skip the codec.  A FRAME is bytes put from FFI
 * memory, which a get may copy into FFI memory of its own: a pool's
 * frames of numbers go from buffer to ring to buffer, making no Lua
 * string on the way (no allocation, no hashing, no fresh pages). */
enum { KIND_CODEC, KIND_NIL, KIND_FALSE, KIND_TRUE, KIND_NUMBER, KIND_STRING, KIND_FRAME };
#define KIND_SHIFT 56
#define LEN_MASK (((uint64_t)1 << KIND_SHIFT) - 1)

/* Producers write the first lines, consumers the next; what both read on
 * every call and rarely write (the size, the sleepers) has lines of its
 * own.  So a busy producer and a busy consumer do not pull each other's
 * cache lines back and forth, except to see new items and new room, and
 * even that only when their last look is used up (head_seen, tail_seen). */
typedef struct {
  _Alignas(64) lmp_lock put_lock;  /* producers, one at a time */
  uint64_t tail;           /* bytes published (under put_lock) */
  uint64_t puts;           /* items published (under put_lock) */
  uint64_t head_seen;      /* head as producers last read it */
  _Alignas(64) lmp_lock get_lock;  /* consumers, one at a time */
  uint64_t head;           /* bytes consumed (under get_lock) */
  uint64_t gets;           /* items consumed (under get_lock) */
  uint64_t tail_seen;      /* tail as consumers last read it */
  _Alignas(64) uint64_t size;  /* ring bytes in use: positions are modulo
                              this; changed under both locks */
  uint32_t maxsize;        /* 0: no limit */
  uint32_t data_seq;       /* futex: bumped when an item is published */
  uint32_t get_waiters;    /* sleepers on data_seq (a hint) */
  uint32_t woken;          /* 1 once a put has woken them: one wake-up per
                              sleep, not one per put while they wake */
  uint32_t space_seq;      /* futex: bumped when an item is taken */
  uint32_t put_waiters;    /* sleepers on space_seq */
  uint32_t space_woken;    /* as woken, for them */
  uint32_t bell_armed;     /* 1: the next put that has a bell rings it
                              (l_queue_arm) */
  _Alignas(64) uint64_t tasks_done;  /* task_done() calls; never above gets */
  uint32_t done_seq;       /* futex: bumped by task_done() while joined */
  uint32_t join_waiters;
} lmp_queue;

#define AT(p) ((_Atomic uint64_t *)(p))
#define AT32(p) ((_Atomic uint32_t *)(p))

static uint64_t pad8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static char *ring(lmp_queue *q) { return (char *)q + LMP_QUEUE_HEADER; }

static void ring_write(lmp_queue *q, uint64_t pos, const void *src,
                       size_t n) {
  size_t off = (size_t)(pos % q->size);
  size_t first = n < q->size - off ? n : q->size - off;
  if (n == 0) return;  /* nil and booleans have no bytes (src is NULL) */
  memcpy(ring(q) + off, src, first);
  memcpy(ring(q), (const char *)src + first, n - first);
}

static void ring_read(lmp_queue *q, uint64_t pos, void *dst, size_t n) {
  size_t off = (size_t)(pos % q->size);
  size_t first = n < q->size - off ? n : q->size - off;
  memcpy(dst, ring(q) + off, first);
  memcpy((char *)dst + first, ring(q), n - first);
}

static lmp_queue *queue_at(lua_State *L, int idx, lmp_segment **seg) {
  return lmp__shm_at(L, idx, 0, LMP_QUEUE_HEADER + LMP_QUEUE_RING, seg);
}

/* The per-state buffer items are encoded into (and copied into when an
 * item wraps around the ring's end). */
static lmp_buf *scratch(lua_State *L) {
  lmp_buf *b;
  lua_getfield(L, LUA_REGISTRYINDEX, "lmp.queue.scratch");
  b = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return b;
}

static int scratch_gc(lua_State *L) {
  lmp__buf_free(lua_touserdata(L, 1));
  return 0;
}

/* How long a get looks for a busy producer's next item before sleeping
 * (about 10 us here); the C ring limit of the benchmark does the same.
 * Every YIELD_EVERY looks it yields the processor: when processes
 * outnumber processors (a pool's parent and two workers on two), the
 * producer it waits for may be waiting for this very processor, and a
 * spin that kept it would only delay the item (a chunksize-1 map ran ~15%
 * faster so, with no cost to a round trip). */
#define SPIN 2000
#define YIELD_EVERY 50

static void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* A process died holding one of the locks: recount the items between head
 * and tail.  Both locks are held. */
static void recount_locked(lmp_queue *q) {
  uint64_t pos, len;
  uint64_t n = 0;
  for (pos = q->head; pos < q->tail; pos += 8 + pad8(len & LEN_MASK)) {
    ring_read(q, pos, &len, 8);
    if ((len & LEN_MASK) > q->size) break;  /* cannot be: records are whole */
    n++;
  }
  atomic_store(AT(&q->puts), q->gets + n);
}

/* Takes a lock that may have been left by a dead process (then the items
 * are recounted by the caller): 0, or the error. */
static int grab(lmp_lock *lock, double timeout) {
  int r = lmp__lock_acquire(lock, timeout);
  return r == 0 || r == LMP_EOWNERDEAD ? 0 : r;
}

/* As recount_locked, with neither lock held; takes both, in order. */
static void recount(lmp_queue *q) {
  grab(&q->put_lock, -1);
  grab(&q->get_lock, -1);
  recount_locked(q);
  lmp__lock_release(&q->get_lock);
  lmp__lock_release(&q->put_lock);
}

/* Takes `lock` by the deadline: 0, or LMP_ETIMEDOUT.  A lock left by a dead
 * process is taken after a recount. */
static int take(lmp_queue *q, lmp_lock *lock, double deadline) {
  for (;;) {
    int r = lmp__lock_acquire(lock, lmp__remaining(deadline));
    if (r == 0) return 0;
    if (r == LMP_EOWNERDEAD) {
      lmp__lock_release(lock);
      recount(q);
      continue;
    }
    return LMP_ETIMEDOUT;
  }
}

static void wake_all(uint32_t *word) {
  atomic_fetch_add(AT32(word), 1);
  lmp__futex_wake(word, INT_MAX);
}

/* core.queue_init(segment, maxsize) */
static int l_queue_init(lua_State *L) {
  lmp_queue *q = queue_at(L, 1, NULL);
  lua_Number maxsize = lmp__opt_number(L, 2, 0);
  if (lmp__lock_init(&q->put_lock) || lmp__lock_init(&q->get_lock))
    return lmp__error_raise(L, "OSError", "Queue: cannot create its locks");
  q->maxsize = maxsize > 0 && maxsize < UINT32_MAX ? (uint32_t)maxsize : 0;
  q->size = LMP_QUEUE_SMALL;
  return 0;
}

/* With put_lock held: the ring grows until `need` more bytes fit (up to
 * the mapped size).  Consumers are kept out by get_lock, taken after
 * put_lock, the order both sides use.  The bytes in the queue keep their
 * positions modulo the old size; a part that wrapped around the old end
 * moves to just past it, where it follows on in the larger ring. */
static int grow_for(lmp_queue *q, uint64_t need) {
  uint64_t size = q->size, live, h;
  int grown = 0;
  if (lmp__lock_acquire(&q->get_lock, -1) == LMP_EOWNERDEAD) recount_locked(q);
  live = q->tail - q->head;
  if (live + need > size && size < LMP_QUEUE_RING) {
    h = q->head % size;
    while (size < LMP_QUEUE_RING && live + need > size) size *= 2;
    if (h + live > q->size)
      memcpy(ring(q) + q->size, ring(q), (size_t)(h + live - q->size));
    atomic_store(AT(&q->head), h);
    atomic_store(AT(&q->tail), h + live);
    q->head_seen = q->head;
    q->tail_seen = q->tail;
    q->size = size;
    grown = 1;
  }
  lmp__lock_release(&q->get_lock);
  return grown;
}

/* core.queue_put(segment, value, timeout [, len [, bell [, share_all [, bag]]]])
 *   -> true | nil, "full"
 * With len, value is FFI memory (a cdata that holds its bytes, not a
 * pointer): its first len bytes go as a FRAME.  With bell (a socket), the
 * put rings it if the consumer armed it (l_queue_arm).
 * Big strings and FFI arrays go by handle (lua/lmp/buffers.lua): with bag
 * (a user's Queue), the Queue keeps their segments (runtime/lmp_bag.c),
 * since its items outlive their putter; with share_all (a pool worker's
 * results), the putter does until they are received. */
static int l_queue_put(lua_State *L) {
  lmp_segment *seg;
  lmp_queue *q = queue_at(L, 1, &seg);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 3, LMP_FOREVER));
  int share_all = lua_toboolean(L, 6) || !lua_isnoneornil(L, 7);
  lmp_codec_opts opts = {1, 0, 0, "item", LMP_SHARE_ARRAYS};
  const char *data = NULL;
  uint64_t len = 0, kind, need;
  lua_Number number;
  int full = 0, borrowed = 0, waited = 0;
  lmp_buf *b = NULL;
  if (lua_type(L, 2) == LMP_TCDATA && lua_type(L, 4) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, 4);
    if (!(n >= 0 && n <= (lua_Number)LMP_QUEUE_RING))
      return lmp__error_raise(L, "ValueError", "put: bad frame length %g", n);
    kind = KIND_FRAME;
    data = lua_topointer(L, 2);  /* LuaJIT: where a cdata's bytes are */
    len = (uint64_t)n;
    borrowed = 1;
  } else switch (lua_type(L, 2)) {
    case LUA_TNONE:
    case LUA_TNIL: kind = KIND_NIL; break;
    case LUA_TBOOLEAN: kind = lua_toboolean(L, 2) ? KIND_TRUE : KIND_FALSE; break;
    case LUA_TNUMBER:
      kind = KIND_NUMBER;
      number = lua_tonumber(L, 2);
      data = (const char *)&number;
      len = sizeof(number);
      break;
    case LUA_TSTRING: {
      size_t n;
      kind = KIND_STRING;
      data = lua_tolstring(L, 2, &n);
      len = n;
      if (!share_all || (double)n < lmp__codec_share_threshold(L)) break;
      opts.share = LMP_SHARE_ALL;  /* a big string goes by handle */
    }
    /* fall through */
    default:
      if (share_all) opts.share = LMP_SHARE_ALL;
      lua_pushvalue(L, 7);
      lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_CUSTODY);
      kind = KIND_CODEC;
      b = scratch(L);
      b->len = 0;
      lmp__codec_encode(L, 2, b, &opts);  /* may raise: no lock is held yet */
      data = b->data;
      len = b->len;
      borrowed = 1;
  }
  need = 8 + pad8(len);
  if (need > LMP_QUEUE_RING)
    return lmp__error_raise(L, "ValueError", "put: the item is %.0f bytes "
                            "encoded; a queue holds at most %.0f",
                            (double)len, (double)(LMP_QUEUE_RING - 8));
  lmp__shm_pin(seg);
  for (;;) {
    uint32_t seq;
    int room;
    if (take(q, &q->put_lock, deadline) != 0) {
      full = 1;
      break;
    }
#define ROOM() ((q->maxsize == 0 || q->puts - atomic_load(AT(&q->gets)) < q->maxsize) \
                && (q->tail + need - q->head_seen <= q->size || \
                    q->tail + need - (q->head_seen = atomic_load(AT(&q->head))) <= q->size))
    if (ROOM()) break;
    if ((q->maxsize == 0 || q->puts - atomic_load(AT(&q->gets)) < q->maxsize) &&
        grow_for(q, need) && ROOM())
      break;
    /* Count ourselves as waiting, then look again: a get that took an
     * item meanwhile either saw us (and bumps space_seq) or is seen. */
    seq = atomic_load(AT32(&q->space_seq));
    atomic_fetch_add(AT32(&q->put_waiters), 1);
    atomic_store(AT32(&q->space_woken), 0);
    room = ROOM();
#undef ROOM
    lmp__lock_release(&q->put_lock);
    if (!room && borrowed) {
      /* Callbacks may run while we wait, and put items of their own (or
       * write the frame's memory). */
      char *own = lua_newuserdata(L, (size_t)len + 1);
      memcpy(own, data, (size_t)len);
      data = own;
      borrowed = 0;
    }
    if (!room && (deadline >= 0 && lmp__now() >= deadline)) full = 1;
    else if (!room) waited = lmp__wait_word(L, &q->space_seq, seq, deadline);
    if (waited == LMP_ETIMEDOUT) full = 1;
    atomic_fetch_sub(AT32(&q->put_waiters), 1);
    if (full || waited == LMP_EINTR) break;
  }
  if (waited == LMP_EINTR) {
    lmp__shm_unpin(seg);
    return lmp__interrupt_raise(L);
  }
  if (full) {
    lmp__shm_unpin(seg);
    lua_pushnil(L);
    lua_pushliteral(L, "full");
    return 2;
  }
  {
    uint64_t word = len | kind << KIND_SHIFT;
    ring_write(q, q->tail, &word, 8);
  }
  ring_write(q, q->tail + 8, data, (size_t)len);
  atomic_store(AT(&q->tail), q->tail + need);  /* the item exists from here */
  atomic_store(AT(&q->puts), q->puts + 1);
  if (atomic_load(AT32(&q->get_waiters)) > 0 &&
      atomic_exchange(AT32(&q->woken), 1) == 0)
    wake_all(&q->data_seq);
  lmp__lock_release(&q->put_lock);
  if (lua_type(L, 5) == LUA_TNUMBER && atomic_load(AT32(&q->bell_armed)) &&
      atomic_exchange(AT32(&q->bell_armed), 0) == 1)
    send((int)lua_tointeger(L, 5), "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  lmp__shm_unpin(seg);
  if (b != NULL && b->cap > ((size_t)16 << 20)) lmp__buf_free(b);
  lua_pushboolean(L, 1);
  return 1;
}

typedef struct {
  const char *data;
  size_t len;
} decode_args;

static int decode_protected(lua_State *L) {
  decode_args *a = lua_touserdata(L, 1);
  lmp_codec_opts opts = {0, 0, 0, NULL, 0};
  lmp__codec_decode(L, a->data, a->len, &opts);
  return 1;
}

/* With get_lock held and the queue empty (if no put runs): the next item
 * goes at the start of the ring again, a ring grown for a big item goes
 * back to its small size, and what was used past the first
 * LMP_QUEUE_KEEP bytes goes back to the system.  So a queue that is
 * drained as fast as it is filled -- a pool's, a ping-pong -- stays on
 * the same few pages, warm in the cache, instead of making its whole ring
 * resident lap after lap. */
static void rewind_empty(lmp_queue *q) {
  int r = lmp__lock_acquire(&q->put_lock, 0);
  if (r == LMP_EOWNERDEAD) recount_locked(q);  /* a put died: it left nothing */
  else if (r != 0) return;
  if (q->head == q->tail) {
    uint64_t used = q->size != LMP_QUEUE_SMALL || q->head >= q->size ? q->size : q->head;
    used = (used + 4095) & ~(uint64_t)4095;
    if (used > LMP_QUEUE_KEEP)
      madvise(ring(q) + LMP_QUEUE_KEEP, used - LMP_QUEUE_KEEP, MADV_REMOVE);
    q->size = LMP_QUEUE_SMALL;
    atomic_store(AT(&q->tail), 0);
    atomic_store(AT(&q->head), 0);
    q->head_seen = q->tail_seen = 0;
  }
  lmp__lock_release(&q->put_lock);
}

/* core.queue_get(segment, timeout [, spin [, buf, cap]]) -> value | nil, "empty"
 * spin = false: sleep at once, without looking a while first (a waiter
 * that has been idle for some time, whose next item is not imminent).
 * A FRAME comes as a string, or, given buf (FFI memory of cap bytes) and
 * if it fits, copied into buf: then the value is buf, and its length
 * follows. */
static int l_queue_get(lua_State *L) {
  lmp_segment *seg;
  lmp_queue *q = queue_at(L, 1, &seg);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 2, LMP_FOREVER));
  uint64_t head, len, kind;
  decode_args a;
  int status, nresults = 1, spun = lua_gettop(L) >= 3 && !lua_toboolean(L, 3);
  lmp__shm_pin(seg);
  for (;;) {
    uint32_t seq;
    int ready, empty = 0, waited = 0;
    if (take(q, &q->get_lock, deadline) != 0) {
      empty = 1;
    } else {
      if (q->head < q->tail_seen ||
          q->head != (q->tail_seen = atomic_load(AT(&q->tail))))
        break;
      if (!spun && deadline != 0 && (deadline < 0 || deadline > lmp__now())) {
        /* A producer that is busy puts again within microseconds: look a
         * little while before sleeping, as a wake-up costs both sides a
         * system call and the sleeper some 10 us. */
        uint64_t seen = q->head;
        int i;
        spun = 1;
        lmp__lock_release(&q->get_lock);
        for (i = 0; i < SPIN && atomic_load(AT(&q->tail)) == seen; i++) {
          spin_pause();
          if (i % YIELD_EVERY == YIELD_EVERY - 1) sched_yield();
        }
        continue;
      }
      seq = atomic_load(AT32(&q->data_seq));
      atomic_fetch_add(AT32(&q->get_waiters), 1);
      atomic_store(AT32(&q->woken), 0);
      ready = q->head != atomic_load(AT(&q->tail));
      lmp__lock_release(&q->get_lock);
      if (!ready && deadline >= 0 && lmp__now() >= deadline) empty = 1;
      else if (!ready) waited = lmp__wait_word(L, &q->data_seq, seq, deadline);
      if (waited == LMP_ETIMEDOUT) empty = 1;
      atomic_fetch_sub(AT32(&q->get_waiters), 1);
    }
    if (waited == LMP_EINTR) {
      lmp__shm_unpin(seg);
      return lmp__interrupt_raise(L);
    }
    if (empty) {
      lmp__shm_unpin(seg);
      lua_pushnil(L);
      lua_pushliteral(L, "empty");
      return 2;
    }
  }
  head = q->head;
  ring_read(q, head, &len, 8);
  kind = len >> KIND_SHIFT;
  len &= LEN_MASK;
  a.len = (size_t)len;
  if ((head + 8) % q->size + len <= q->size) {
    a.data = ring(q) + (head + 8) % q->size;  /* read in place */
  } else {  /* wraps around the end of the ring: once per lap */
    char *own = lua_newuserdata(L, (size_t)len + 1);
    ring_read(q, head + 8, own, (size_t)len);
    a.data = own;
  }
  status = 0;
  switch (kind) {
    case KIND_NIL: lua_pushnil(L); break;
    case KIND_FALSE: lua_pushboolean(L, 0); break;
    case KIND_TRUE: lua_pushboolean(L, 1); break;
    case KIND_NUMBER: {
      lua_Number n;
      memcpy(&n, a.data, sizeof(n));
      lua_pushnumber(L, n);
      break;
    }
    case KIND_STRING: lua_pushlstring(L, a.data, a.len); break;
    case KIND_FRAME:
      if (lua_type(L, 4) == LMP_TCDATA && (lua_Number)a.len <= lua_tonumber(L, 5)) {
        memcpy((void *)lua_topointer(L, 4), a.data, a.len);
        lua_pushvalue(L, 4);
        nresults = 2;
      } else {
        lua_pushlstring(L, a.data, a.len);
      }
      break;
    default:
      lua_pushcfunction(L, decode_protected);
      lua_pushlightuserdata(L, &a);
      status = lua_pcall(L, 1, 1, 0);
  }
  /* Read (or undecodable): the item leaves the queue only now. */
  atomic_store(AT(&q->head), head + 8 + pad8(len));
  atomic_store(AT(&q->gets), q->gets + 1);
  if ((q->size != LMP_QUEUE_SMALL || q->head > LMP_QUEUE_KEEP) &&
      q->head == atomic_load(AT(&q->tail)))
    rewind_empty(q);
  if (atomic_load(AT32(&q->put_waiters)) > 0 &&
      atomic_exchange(AT32(&q->space_woken), 1) == 0)
    wake_all(&q->space_seq);
  lmp__lock_release(&q->get_lock);
  lmp__shm_unpin(seg);
  if (status != 0) lua_error(L);
  if (nresults == 2) lua_pushnumber(L, (lua_Number)len);
  return nresults;
}

/* core.queue_info(segment) -> count, empty, maxsize */
static int l_queue_info(lua_State *L) {
  lmp_queue *q = queue_at(L, 1, NULL);
  uint64_t gets = atomic_load(AT(&q->gets)), puts = atomic_load(AT(&q->puts));
  lua_pushnumber(L, (lua_Number)(puts > gets ? puts - gets : 0));
  lua_pushboolean(L, atomic_load(AT(&q->head)) == atomic_load(AT(&q->tail)));
  lua_pushnumber(L, q->maxsize);
  return 3;
}

/* core.queue_task_done(segment) -> true | false (called too many times).
 * Items are unfinished from put to task_done(); a task_done() for an item
 * not taken out yet is one too many (as it has no item to finish). */
static int l_queue_task_done(lua_State *L) {
  lmp_queue *q = queue_at(L, 1, NULL);
  uint64_t old = atomic_load(AT(&q->tasks_done));
  do {
    if (old >= atomic_load(AT(&q->gets))) {
      lua_pushboolean(L, 0);
      return 1;
    }
  } while (!atomic_compare_exchange_weak(AT(&q->tasks_done), &old, old + 1));
  if (atomic_load(AT32(&q->join_waiters)) > 0) wake_all(&q->done_seq);
  lua_pushboolean(L, 1);
  return 1;
}

static int all_done(lmp_queue *q) {
  return atomic_load(AT(&q->tasks_done)) >= atomic_load(AT(&q->puts));
}

/* core.queue_join(segment, timeout) -> boolean: every item put was
 * task_done(). */
static int l_queue_join(lua_State *L) {
  lmp_segment *seg;
  lmp_queue *q = queue_at(L, 1, &seg);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 2, LMP_FOREVER));
  int waited = 0;
  lmp__shm_pin(seg);
  atomic_fetch_add(AT32(&q->join_waiters), 1);
  for (;;) {
    uint32_t seq = atomic_load(AT32(&q->done_seq));
    if (all_done(q)) break;
    if (deadline >= 0 && lmp__now() >= deadline) break;
    waited = lmp__wait_word(L, &q->done_seq, seq, deadline);
    if (waited == LMP_ETIMEDOUT || waited == LMP_EINTR) break;
  }
  atomic_fetch_sub(AT32(&q->join_waiters), 1);
  lmp__shm_unpin(seg);
  if (waited == LMP_EINTR) return lmp__interrupt_raise(L);
  lua_pushboolean(L, all_done(q));
  return 1;
}

/* --- readiness for lmp.connection.wait ------------------------------------- */

/* A watcher (lmp_futex.h) sleeps on data_seq until the queue has an item;
 * connection.wait polls its descriptor.  While it lives it counts as a
 * sleeping consumer, so that puts wake it. */
typedef struct {
  lmp_watcher w;
  lmp_queue *q;
  lmp_segment *seg;  /* pinned: a callback may close the queue meanwhile */
} watcher;

static int has_item(lmp_watcher *w, uint32_t *seen) {
  lmp_queue *q = w->arg;
  *seen = atomic_load(AT32(&q->data_seq));
  atomic_store(AT32(&q->woken), 0);
  return atomic_load(AT(&q->head)) != atomic_load(AT(&q->tail));
}

static int watcher_close(lua_State *L) {
  watcher *w = lmp__check_udata(L, 1, "lmp.QueueWatcher");
  if (w->w.started) {
    lmp__watcher_stop(&w->w);
    atomic_fetch_sub(AT32(&w->q->get_waiters), 1);
  }
  if (w->seg) {
    lmp__shm_unpin(w->seg);
    w->seg = NULL;
  }
  return 0;
}

static int watcher_fd(lua_State *L) {
  watcher *w = lmp__check_udata(L, 1, "lmp.QueueWatcher");
  lua_pushinteger(L, w->w.fd);
  return 1;
}

/* core.queue_watch(segment) -> watcher (w:fd(), w:close()). */
static int l_queue_watch(lua_State *L) {
  lmp_segment *seg;
  lmp_queue *q = queue_at(L, 1, &seg);
  watcher *w = lua_newuserdata(L, sizeof(*w));
  int err;
  memset(w, 0, sizeof(*w));
  w->q = q;
  w->w.fd = -1;
  w->w.word = &q->data_seq;
  w->w.ready = has_item;
  w->w.arg = q;
  w->w.deadline = LMP_FOREVER;
  luaL_getmetatable(L, "lmp.QueueWatcher");
  lua_setmetatable(L, -2);
  lua_createtable(L, 1, 0);  /* the watcher keeps the segment alive */
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_setfenv(L, -2);
  lmp__shm_pin(seg);
  w->seg = seg;
  atomic_fetch_add(AT32(&q->get_waiters), 1);
  if ((err = lmp__watcher_start(&w->w)) != 0) {
    atomic_fetch_sub(AT32(&q->get_waiters), 1);
    return lmp__error_raise(L, "OSError", "wait: %s", lmp_strerror(err));
  }
  return 1;
}

/* core.queue_arm(segment, bell, ringer) -> whether the queue holds an item.
 * Whoever waits on descriptors (a host's lmp_backend.c, lmp's own waits
 * while a pool has work) hears of the next item through a bell: a socket
 * whose other end, `ringer`, the producers hold (a pool's workers).
 * Arming empties the bell and asks the next put that names it to ring it
 * once (queue_put's `bell`); if an item is there already, the bell is
 * rung at once.  A producer publishes before it looks at the flag, and
 * the consumer sets the flag before it looks at the items: an item is
 * never missed (at worst it is told twice). */
static int l_queue_arm(lua_State *L) {
  lmp_queue *q = queue_at(L, 1, NULL);
  int bell = (int)lmp__check_integer(L, 2);
  int ringer = (int)lmp__check_integer(L, 3);
  int pending;
  char drain[64];
  /* Emptied every time: a put that took the flag may send its byte only
   * after the flag is set again, and a byte left there would keep the
   * host's descriptor readable with nothing to do. */
  while (recv(bell, drain, sizeof(drain), MSG_DONTWAIT) > 0) {}
  atomic_store(AT32(&q->bell_armed), 1);
  pending = atomic_load(AT(&q->head)) != atomic_load(AT(&q->tail));
  if (pending && atomic_exchange(AT32(&q->bell_armed), 0) == 1)
    send(ringer, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  lua_pushboolean(L, pending);
  return 1;
}

void lmp__queue_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"queue_init", l_queue_init},
    {"queue_put", l_queue_put},
    {"queue_get", l_queue_get},
    {"queue_info", l_queue_info},
    {"queue_task_done", l_queue_task_done},
    {"queue_join", l_queue_join},
    {"queue_watch", l_queue_watch},
    {"queue_arm", l_queue_arm},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", watcher_close},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", watcher_close},
    {"fd", watcher_fd},
    {NULL, NULL}
  };
  lmp__push_class(L, "lmp.QueueWatcher", meta, methods, NULL);
  lua_pop(L, 1);
  lua_newuserdata(L, sizeof(lmp_buf));
  memset(lua_touserdata(L, -1), 0, sizeof(lmp_buf));
  lua_newtable(L);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "lmp.queue.scratch");
  lua_pushnumber(L, (lua_Number)(LMP_QUEUE_HEADER + LMP_QUEUE_RING));
  lua_setfield(L, -2, "queue_segment_size");
  lmp__register(L, "lmp core.", functions, 0);
}
