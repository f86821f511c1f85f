/*
 * test_futex -- lmp's futex sleeps survive a wake-up that never comes.
 *
 * On this project's VMs a FUTEX_WAKE on shared memory has been seen to
 * leave its sleeper asleep.  A sleeper whose word changes without a wake
 * (the same thing, seen from the sleeper) must still see the change,
 * within LMP_RECHECK_S, and a deadline must still be kept exactly.
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lmp_futex.h"
#include "lmp_time.h"


static _Atomic uint32_t word;

static void *change_silently(void *arg) {
  (void)arg;
  usleep(50 * 1000);
  atomic_store(&word, 1);  /* no lmp__futex_wake: the wake-up is "lost" */
  return NULL;
}

int main(void) {
  pthread_t t;
  double t0, waited;
  int r;

  /* No deadline: the sleeper looks again by itself. */
  atomic_store(&word, 0);
  CHECK(pthread_create(&t, NULL, change_silently, NULL) == 0);
  t0 = lmp__now();
  while (atomic_load(&word) == 0 &&
         lmp__futex_wait((uint32_t *)&word, 0, LMP_FOREVER) == 0) {
    if (lmp__now() - t0 > 5) break;
  }
  waited = lmp__now() - t0;
  pthread_join(t, NULL);
  CHECK(atomic_load(&word) == 1);
  CHECK(waited < LMP_RECHECK_S + 1.0);

  /* A deadline past the recheck is still the deadline. */
  atomic_store(&word, 0);
  t0 = lmp__now();
  do {
    r = lmp__futex_wait((uint32_t *)&word, 0, t0 + 0.5);
  } while (r == 0 && lmp__now() - t0 < 5);
  waited = lmp__now() - t0;
  CHECK(r == LMP_ETIMEDOUT);
  CHECK(waited >= 0.5 && waited < 1.5);

  /* A deadline shorter than the recheck. */
  t0 = lmp__now();
  r = lmp__futex_wait((uint32_t *)&word, 0, t0 + 0.05);
  CHECK(r == LMP_ETIMEDOUT);
  CHECK(lmp__now() - t0 < LMP_RECHECK_S);

  return CHECK_STATUS();
}
