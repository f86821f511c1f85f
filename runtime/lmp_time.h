/*
 * lmp_time.h -- the clock, and the one timeout rule of lmp's C code
 * (lmp_time.c).
 *
 * A timeout is in seconds.  0 does not block.  A timeout of LMP_FOREVER_S
 * (1e9 s, some 31 years) or more blocks for ever: math.huge, and any
 * number a person would use to mean "no limit".  From Lua, nil blocks for
 * ever too (or does not block, where a call says so, as poll() does), a
 * negative timeout does not block (as in Python), and NaN is a TypeError.
 * Inside C, a timeout that blocks for ever is LMP_FOREVER (-1), and so is
 * any negative one; a deadline is a time of lmp__now(), or LMP_FOREVER.
 */
#ifndef LMP_TIME_H
#define LMP_TIME_H

#include <time.h>

#include "lmp_internal.h"

#define LMP_FOREVER (-1.0)
#define LMP_FOREVER_S 1e9

/* Monotonic time in seconds, on the clock of futex deadlines
 * (CLOCK_MONOTONIC). */
double lmp__now(void);

/* A timeout as C code waits with it: t, or LMP_FOREVER for a negative t,
 * one of LMP_FOREVER_S or more, and NaN. */
double lmp__timeout(double t);

/* The deadline of a timeout: now + timeout, or LMP_FOREVER. */
double lmp__deadline(double timeout);

/* The time left until a deadline: 0 or more, or LMP_FOREVER. */
double lmp__remaining(double deadline);

/* A time of lmp__now() (0 or more) for the kernel's absolute
 * CLOCK_MONOTONIC waits. */
struct timespec lmp__timespec(double t);

/* The timeout argument idx of a Lua call, by the rule above: `if_nil`
 * when it is none or nil.  Raises an argument error for a value that is
 * not a number, or NaN. */
double lmp__timeout_arg(lua_State *L, int idx, double if_nil);

/* Adds now() (lmp__now) to the core table at the top of the stack. */
void lmp__time_open(lua_State *L);

#endif /* LMP_TIME_H */
