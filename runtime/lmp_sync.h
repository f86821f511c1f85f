/*
 * lmp_sync.h -- the cross-process primitives as they lie in shared memory.
 *
 * Every object of SPEC sections 6 and 7 lives in a shared segment
 * (lmp_shm.c) that each process holding it has mapped.  The layouts below
 * are read and written by C and, through the LuaJIT FFI, by
 * lua/lmp/sync.lua, whose cdef must match them.
 *
 * Waiting is done on futex words (lmp_futex.h).  Locks are robust
 * process-shared pthread mutexes: when a holder dies, the kernel marks the
 * mutex and the next acquirer gets it with LMP_EOWNERDEAD.
 */
#ifndef LMP_SYNC_H
#define LMP_SYNC_H

#include <pthread.h>
#include <stdint.h>

#include "lmp_internal.h"

/* Lock and RLock.  `owner` and `count` are written by the holder only. */
typedef struct {
  pthread_mutex_t mutex;  /* robust, process-shared, error-checking */
  int32_t owner;          /* thread id of the holder, 0 when free */
  int32_t count;          /* re-entry depth (RLock) */
} lmp_lock;

/* Semaphore and BoundedSemaphore.  (A Condition is in lua/lmp/sync.lua:
 * a slot per waiter, each a futex word, changed under the lock.) */
typedef struct {
  uint32_t value;    /* futex word: permits available */
  uint32_t waiters;  /* processes in a wait (a hint: wake only if > 0) */
  uint32_t max;      /* release past this raises (BoundedSemaphore) */
} lmp_sem;

/* Event. */
typedef struct {
  uint32_t flag;     /* futex word: 1 when set */
  uint32_t waiters;
} lmp_event;

/* Barrier.  The fields after `lock` change under it. */
typedef struct {
  lmp_lock lock;
  uint32_t gen;          /* futex word: bumped when a generation ends */
  int32_t parties;
  int32_t count;         /* arrived in this generation */
  int32_t state;         /* 0 filling, 1 running the action, 2 broken */
  uint8_t broken[64];    /* [g % 64]: generation g ended broken */
} lmp_barrier;

/* The functions lua/lmp/sync.lua calls through the FFI (no lua_State):
 * the fast paths that do not block, or block without serving callbacks. */
typedef struct {
  /* Each returns 0 or a negative LMP_E* code (lmp.h), which Lua reads
   * by name from core.E. */
  int (*lock_init)(lmp_lock *l);
  /* 0 or LMP_EOWNERDEAD (held now, either way); LMP_EBUSY (timeout 0),
   * LMP_ETIMEDOUT, LMP_EDEADLK (this thread holds it and would wait for
   * ever), or another -errno.  The timeout follows lmp_time.h. */
  int (*lock_acquire)(lmp_lock *l, double timeout);
  int (*lock_release)(lmp_lock *l);  /* 0, or LMP_EPERM if not the holder */
  int (*permit_take)(lmp_sem *s);        /* 1 if a permit was taken */
  int (*permit_give)(lmp_sem *s, uint32_t n);  /* 0, or LMP_EOVERFLOW past max */
  void (*wake)(uint32_t *word, int32_t n);
  void (*event_set)(lmp_event *e);
  int32_t (*self_tid)(void);
} lmp_sync_api;

/* Adds sync_api and the blocking waits (which serve background work while
 * they wait) to the core table at the top of the stack. */
void lmp__sync_open(lua_State *L);

/* For other C files (lmp_queue.c): the lock functions of lmp_sync_api. */
int lmp__lock_init(lmp_lock *l);
int lmp__lock_acquire(lmp_lock *l, double timeout);
int lmp__lock_release(lmp_lock *l);

#endif /* LMP_SYNC_H */
