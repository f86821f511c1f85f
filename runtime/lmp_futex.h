/*
 * lmp_futex.h -- sleeping on 32-bit words in shared memory (lmp_futex.c).
 *
 * The kernel puts a waiter to sleep only if the word still holds the value
 * it saw, so a wake-up that comes between looking and sleeping is never
 * lost, and nothing spins or sleeps in a loop.  A futex cannot be polled
 * with descriptors, so a wait that must let the event loop run (a pool's
 * callbacks, connection.wait on a queue) has a watcher: a thread that
 * sleeps on the word and makes an eventfd readable, which the loop waits
 * on next to everything else.
 */
#ifndef LMP_FUTEX_H
#define LMP_FUTEX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "lmp_internal.h"

/* No futex sleep of lmp lasts longer than this: the sleeper looks again,
 * so that a wake-up that never comes costs this much and not a hang.  On
 * this project's VMs a FUTEX_WAKE on shared memory has been seen to leave
 * its sleeper asleep (both sides of the benchmark's C ring found asleep,
 * the sleeper's flag cleared by its waker); whatever the cause, lmp does
 * not bet a process on it. */
#define LMP_RECHECK_S 0.2

/* Sleeps while *word == expected, until woken or `deadline` (lmp_time.h;
 * LMP_FOREVER: none), and never longer than LMP_RECHECK_S.  Returns 0 when
 * woken, when the word differs, on a signal or after LMP_RECHECK_S,
 * LMP_ETIMEDOUT at the deadline, or LMP_EINTR on Ctrl-C in the lmp host
 * (lmp_interrupt.h).  A wake-up may be spurious: callers look again. */
int lmp__futex_wait(uint32_t *word, uint32_t expected, double deadline);

/* Wakes up to n sleepers on the word. */
void lmp__futex_wake(uint32_t *word, int32_t n);

/* As lmp__futex_wait, while the state's background work (lmp_loop.h) is
 * served: with a watcher when there is background work, else on this
 * thread.  0 when woken (maybe spuriously), LMP_ETIMEDOUT or LMP_EINTR. */
int lmp__wait_word(lua_State *L, uint32_t *word, uint32_t expected,
                   double deadline);

/* --- watchers ------------------------------------------------------------- */

typedef struct lmp_watcher lmp_watcher;

struct lmp_watcher {
  /* Set by the owner before lmp__watcher_start. */
  uint32_t *word;   /* the futex word the thread sleeps on */
  /* Runs on the watcher's thread: is what the owner waits for there?  If
   * not, sets *seen to the value of *word read before looking, which the
   * thread then sleeps on. */
  int (*ready)(lmp_watcher *w, uint32_t *seen);
  void *arg;        /* for ready() */
  double deadline;  /* the thread gives up then (LMP_FOREVER: never) */
  /* Set by lmp__watcher_start: readable once ready() has said yes. */
  int fd;
  /* The watcher's own. */
  int started;
  atomic_int stop;
  uint32_t done;    /* futex word: 1 once the thread has ended */
  pthread_t thread;
};

/* Makes the eventfd and starts the thread (with every signal blocked:
 * signals stay with the thread that runs Lua).  0, or a negative LMP_E*
 * code, and then nothing is left to stop. */
int lmp__watcher_start(lmp_watcher *w);

/* Ends the thread (waking it if it sleeps), then closes the eventfd.  May
 * be called again, and after a failed start. */
void lmp__watcher_stop(lmp_watcher *w);

#endif /* LMP_FUTEX_H */
