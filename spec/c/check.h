/*
 * check.h -- the one assertion of the C tests: a failed CHECK is reported
 * with its place and counted, and the test goes on; main() returns
 * CHECK_STATUS().
 */
#ifndef LMP_SPEC_CHECK_H
#define LMP_SPEC_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                 \
      check_failures++;                                               \
    }                                                                 \
  } while (0)

/* Prints ok or FAILED; the exit status of the test. */
#define CHECK_STATUS() \
  (printf("%s\n", check_failures ? "FAILED" : "ok"), check_failures != 0)

#endif /* LMP_SPEC_CHECK_H */
