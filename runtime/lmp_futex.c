/*
 * lmp_futex.c -- futex waits and wake-ups, and the watcher that turns a
 * futex word into a descriptor the event loop can wait on (lmp_futex.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lmp_futex.h"
#include "lmp_interrupt.h"
#include "lmp_loop.h"
#include "lmp_platform.h"
#include "lmp_time.h"

int lmp__futex_wait(uint32_t *word, uint32_t expected, double deadline) {
  double until = lmp__now() + LMP_RECHECK_S;
  struct timespec ts;
  long r;
  int capped = deadline < 0 || deadline > until;
  ts = lmp__timespec(capped ? until : deadline);
  r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, &ts, NULL,
              FUTEX_BITSET_MATCH_ANY);
  if (r == 0) return 0;
  if (errno == ETIMEDOUT && !capped) return LMP_ETIMEDOUT;
  if (errno == EINTR && lmp__interrupted) return LMP_EINTR;
  return 0;  /* EAGAIN: the word changed; EINTR: a signal; or look again */
}

void lmp__futex_wake(uint32_t *word, int32_t n) {
  syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* --- watchers ------------------------------------------------------------- */

static void *watch_main(void *arg) {
  lmp_watcher *w = arg;
  uint64_t one = 1;
  while (!atomic_load(&w->stop)) {
    uint32_t seen;
    if (w->ready(w, &seen)) {
      while (write(w->fd, &one, sizeof(one)) < 0 && errno == EINTR) {}
      break;
    }
    if (lmp__futex_wait(w->word, seen, w->deadline) == LMP_ETIMEDOUT) break;
  }
  atomic_store((_Atomic uint32_t *)&w->done, 1);
  lmp__futex_wake(&w->done, 1);
  return NULL;
}

int lmp__watcher_start(lmp_watcher *w) {
  sigset_t all, old;
  int err;
  w->started = 0;
  atomic_store(&w->stop, 0);
  w->done = 0;
  w->fd = lmp__fd_above_stdio(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (w->fd < 0) return -errno;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  err = pthread_create(&w->thread, NULL, watch_main, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err != 0) {
    close(w->fd);
    w->fd = -1;
    return -err;
  }
  w->started = 1;
  return 0;
}

void lmp__watcher_stop(lmp_watcher *w) {
  if (w->started) {
    atomic_store(&w->stop, 1);
    /* The thread may have read the word before `stop` was set and be
     * about to sleep on it: a wake-up before it sleeps would be lost.  So
     * it is woken until it has ended (once, nearly always).  Past its
     * deadline it ends by itself, without waking the word's sleepers. */
    while (!atomic_load((_Atomic uint32_t *)&w->done)) {
      if (w->deadline < 0 || lmp__remaining(w->deadline) > 0)
        lmp__futex_wake(w->word, INT_MAX);
      lmp__futex_wait(&w->done, 0, lmp__now() + 0.001);
    }
    pthread_join(w->thread, NULL);
    w->started = 0;
  }
  if (w->fd >= 0) {
    close(w->fd);
    w->fd = -1;
  }
}

/* --- waiting while the loop runs ----------------------------------------------- */

static int word_changed(lmp_watcher *w, uint32_t *seen) {
  *seen = *(const uint32_t *)w->arg;
  return atomic_load((_Atomic uint32_t *)w->word) != *seen;
}

int lmp__wait_word(lua_State *L, uint32_t *word, uint32_t expected,
                   double deadline) {
  lmp_watcher w;
  int ev = UV_READABLE, ready = 0, r;
  if (!lmp__background_active(L))
    return lmp__futex_wait(word, expected, deadline);
  memset(&w, 0, sizeof(w));
  w.word = word;
  w.ready = word_changed;
  w.arg = &expected;
  w.deadline = deadline;
  if (lmp__watcher_start(&w) != 0)
    return lmp__futex_wait(word, expected, deadline);
  r = lmp__wait_fds_bg(L, lmp__loop(L), &w.fd, &ev, &ready, 1,
                       lmp__remaining(deadline));
  lmp__watcher_stop(&w);
  if (r == LMP_EINTR) return r;
  if (r > 0 || atomic_load((_Atomic uint32_t *)word) != expected) return 0;
  return lmp__remaining(deadline) == 0 ? LMP_ETIMEDOUT : 0;
}
