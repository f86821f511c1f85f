/*
 * lmp_sync.c -- locks, semaphores, events and waits on shared futex words.
 *
 * Two halves.  The FFI half (lmp_sync_api) holds what must be fast: taking
 * and giving locks and permits without blocking, which LuaJIT calls from
 * compiled code at the cost of a C call.  The Lua half (core.sync_*) holds
 * the blocking waits.  Those must let lmp.Pool collect results and run
 * callbacks meanwhile (SPEC section 8): they wait with lmp__wait_word
 * (lmp_futex.c).
 *
 * Lock acquisition does not serve callbacks: a lock is released by its
 * holder whatever the pool does, so the wait cannot depend on them.
 *
 * Timeouts are absolute CLOCK_MONOTONIC deadlines, so signals and spurious
 * wake-ups do not stretch them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_futex.h"
#include "lmp_interrupt.h"
#include "lmp_shm.h"
#include "lmp_sync.h"
#include "lmp_time.h"

/* --- shared words ----------------------------------------------------------- */

static uint32_t load(uint32_t *word) {
  return atomic_load((_Atomic uint32_t *)word);
}

static uint32_t fetch_add(uint32_t *word, int32_t delta) {
  return atomic_fetch_add((_Atomic uint32_t *)word, (uint32_t)delta);
}

/* --- the thread id that owns locks ------------------------------------------- */

static __thread int32_t cached_tid;

/* A child made by fork (by code other than lmp's) is a new thread. */
static void forget_tid(void) { cached_tid = 0; }

static void install_fork_handler(void) { pthread_atfork(NULL, NULL, forget_tid); }

static int32_t self_tid(void) {
  if (cached_tid == 0) cached_tid = (int32_t)syscall(SYS_gettid);
  return cached_tid;
}

/* --- the FFI half ------------------------------------------------------------------ */

int lmp__lock_init(lmp_lock *l) {
  pthread_mutexattr_t a;
  int r;
  memset(l, 0, sizeof(*l));
  if ((r = pthread_mutexattr_init(&a)) != 0) return -r;
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  r = pthread_mutex_init(&l->mutex, &a);
  pthread_mutexattr_destroy(&a);
  return -r;
}

int lmp__lock_acquire(lmp_lock *l, double timeout) {
  int r = pthread_mutex_trylock(&l->mutex);
  timeout = lmp__timeout(timeout);
  if (r == EBUSY || r == EDEADLK) {
    int32_t me = self_tid();
    if (l->owner == me || r == EDEADLK) {
      /* Our own lock: waiting cannot help.  Python waits out the
       * timeout and fails; without one it would hang for ever. */
      if (timeout < 0) return LMP_EDEADLK;
      if (timeout > 0) {
        struct timespec ts = lmp__timespec(lmp__now() + timeout);
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
               EINTR) {
          if (lmp__interrupted) return LMP_EINTR;
        }
      }
      return timeout == 0 ? LMP_EBUSY : LMP_ETIMEDOUT;
    }
    if (timeout != 0) {
      /* In slices, as every futex sleep of lmp (lmp_futex.h): a lost
       * wake-up of the mutex's own futex costs a slice, not a hang. */
      double deadline = lmp__deadline(timeout);
      do {
        double until = lmp__now() + LMP_RECHECK_S;
        struct timespec ts;
        if (deadline >= 0 && deadline < until) until = deadline;
        ts = lmp__timespec(until);
        r = pthread_mutex_clocklock(&l->mutex, CLOCK_MONOTONIC, &ts);
      } while (r == ETIMEDOUT && (deadline < 0 || lmp__now() < deadline) &&
               !lmp__interrupted);
      if (r == ETIMEDOUT && lmp__interrupted) return LMP_EINTR;
    }
  }
  if (r == EOWNERDEAD) pthread_mutex_consistent(&l->mutex);
  else if (r != 0) return -r;
  l->owner = self_tid();
  l->count = 1;
  return -r;
}

int lmp__lock_release(lmp_lock *l) {
  if (l->owner != self_tid()) return LMP_EPERM;
  l->owner = 0;
  l->count = 0;
  return -pthread_mutex_unlock(&l->mutex);
}

static int permit_take(lmp_sem *s) {
  _Atomic uint32_t *v = (_Atomic uint32_t *)&s->value;
  uint32_t old = atomic_load(v);
  while (old > 0)
    if (atomic_compare_exchange_weak(v, &old, old - 1)) return 1;
  return 0;
}

static int permit_give(lmp_sem *s, uint32_t n) {
  _Atomic uint32_t *v = (_Atomic uint32_t *)&s->value;
  uint32_t old = atomic_load(v);
  do {
    if (old > s->max || n > s->max - old) return LMP_EOVERFLOW;
  } while (!atomic_compare_exchange_weak(v, &old, old + n));
  if (load(&s->waiters) > 0) lmp__futex_wake(&s->value, (int32_t)n);
  return 0;
}

static void wake(uint32_t *word, int32_t n) { lmp__futex_wake(word, n); }

/* The store and the load of `waiters` must not be reordered (a waiter
 * counts itself, then sleeps only while the flag is 0). */
static void event_set(lmp_event *e) {
  atomic_store((_Atomic uint32_t *)&e->flag, 1);
  if (load(&e->waiters) > 0) lmp__futex_wake(&e->flag, INT_MAX);
}

static const lmp_sync_api sync_api = {
  lmp__lock_init, lmp__lock_acquire, lmp__lock_release, permit_take,
  permit_give, wake, event_set, self_tid,
};

/* --- the Lua half: blocking waits -------------------------------------------- */

/* Arguments (segment, offset, ..., timeout): the object's memory, pinned
 * while the wait runs, and the deadline. */
static void *object_at(lua_State *L, size_t size, lmp_segment **seg) {
  lua_Number off = lmp__check_number(L, 2);
  if (!(off >= 0)) lmp__argerror(L, 2, "offset must be 0 or more");
  return lmp__shm_at(L, 1, (size_t)off, size, seg);
}

/* Takes a permit, waiting until `deadline`.  1 taken, 0 timed out,
 * LMP_EINTR on Ctrl-C. */
static int sem_take(lua_State *L, lmp_sem *s, double deadline) {
  int got = 0;
  fetch_add(&s->waiters, 1);
  for (;;) {
    int r;
    if (permit_take(s)) {
      got = 1;
      break;
    }
    r = lmp__wait_word(L, &s->value, 0, deadline);
    if (r == LMP_ETIMEDOUT || r == LMP_EINTR) {
      got = permit_take(s);
      if (!got && r == LMP_EINTR) got = LMP_EINTR;
      break;
    }
  }
  fetch_add(&s->waiters, -1);
  return got;
}

/* core.sync_sem_acquire(seg, off, timeout) -> boolean */
static int l_sem_acquire(lua_State *L) {
  lmp_segment *seg;
  lmp_sem *s = object_at(L, sizeof(lmp_sem), &seg);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 3, LMP_FOREVER));
  int got;
  lmp__shm_pin(seg);
  got = sem_take(L, s, deadline);
  lmp__shm_unpin(seg);
  if (got == LMP_EINTR) return lmp__interrupt_raise(L);
  lua_pushboolean(L, got);
  return 1;
}

/* core.sync_event_wait(seg, off, timeout) -> boolean (the flag) */
static int l_event_wait(lua_State *L) {
  lmp_segment *seg;
  lmp_event *e = object_at(L, sizeof(lmp_event), &seg);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 3, LMP_FOREVER));
  int r = 0;
  lmp__shm_pin(seg);
  fetch_add(&e->waiters, 1);
  while (load(&e->flag) == 0 && r != LMP_ETIMEDOUT && r != LMP_EINTR)
    r = lmp__wait_word(L, &e->flag, 0, deadline);
  fetch_add(&e->waiters, -1);
  lmp__shm_unpin(seg);
  if (load(&e->flag) == 0 && r == LMP_EINTR) return lmp__interrupt_raise(L);
  lua_pushboolean(L, load(&e->flag) != 0);
  return 1;
}

/* core.sync_wait_change(seg, off, expected, timeout) -> boolean: waits
 * until the word at off is no longer `expected` (Barrier generations). */
static int l_wait_change(lua_State *L) {
  lmp_segment *seg;
  uint32_t *word = object_at(L, sizeof(uint32_t), &seg);
  uint32_t expected = (uint32_t)lmp__check_number(L, 3);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 4, LMP_FOREVER));
  int r = 0;
  lmp__shm_pin(seg);
  while (load(word) == expected && r != LMP_ETIMEDOUT && r != LMP_EINTR)
    r = lmp__wait_word(L, word, expected, deadline);
  lmp__shm_unpin(seg);
  if (load(word) == expected && r == LMP_EINTR) return lmp__interrupt_raise(L);
  lua_pushboolean(L, load(word) != expected);
  return 1;
}

/* core.sync_api -> light userdata: the lmp_sync_api for ffi.cast */
void lmp__sync_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"sync_sem_acquire", l_sem_acquire},
    {"sync_event_wait", l_event_wait},
    {"sync_wait_change", l_wait_change},
    {NULL, NULL}
  };
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_fork_handler);
  lmp__register(L, "lmp core.", functions, 0);
  lua_pushlightuserdata(L, (void *)&sync_api);
  lua_setfield(L, -2, "sync_api");
  /* The size of pthread_mutex_t, for the FFI declarations of the layouts. */
  lua_pushinteger(L, (lua_Integer)sizeof(pthread_mutex_t));
  lua_setfield(L, -2, "sync_mutex_size");
}
