/*
 * lmp_time.c -- the clock and the timeout rule (see lmp_time.h).
 */
#include <stdint.h>
#include <time.h>

#include "lmp_arg.h"
#include "lmp_time.h"

double lmp__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timespec lmp__timespec(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
  return ts;
}

double lmp__timeout(double t) {
  return t >= 0 && t < LMP_FOREVER_S ? t : LMP_FOREVER;
}

double lmp__deadline(double timeout) {
  timeout = lmp__timeout(timeout);
  return timeout < 0 ? LMP_FOREVER : lmp__now() + timeout;
}

double lmp__remaining(double deadline) {
  double left;
  if (deadline < 0) return LMP_FOREVER;
  left = deadline - lmp__now();
  return left > 0 ? left : 0;
}

double lmp__timeout_arg(lua_State *L, int idx, double if_nil) {
  double t;
  if (lua_isnoneornil(L, idx)) return if_nil;
  t = lmp__check_number(L, idx);
  if (t != t) lmp__argerror(L, idx, "timeout is NaN");
  return t > 0 ? lmp__timeout(t) : 0;
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, lmp__now());
  return 1;
}

void lmp__time_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"now", l_now},
    {NULL, NULL}
  };
  lmp__register(L, "lmp core.", functions, 0);
  /* The clock as a C function pointer, for FFI callers: a compiled trace
   * calls it in place, where calling now() would end the trace. */
  lua_pushlightuserdata(L, (void *)(uintptr_t)lmp__now);
  lua_setfield(L, -2, "now_fn");
}
