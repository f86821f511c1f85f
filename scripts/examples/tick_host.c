/*
 * tick_host.c -- a game server's loop, 60 ticks a second, that offloads
 * work to lmp and never waits for it (docs/embedding.md walks through it).
 *
 * Usage: tick_host GAME.lua [async|naive|serial] [SECONDS]
 *
 * GAME.lua (scripts/examples/tick_game.lua) defines game_tick(), which the
 * host calls once per tick, and counts paths_done.  Between ticks the host
 * sleeps in poll() on lmp_backend_fd() -- at most until the next tick or
 * lmp's next deadline -- and calls lmp_dispatch() when lmp has work: that
 * runs the game's callbacks and resumes its coroutines.  The host times
 * everything it spends in lmp and in the game's Lua code, per tick, and
 * prints:
 *   ticks N late L           (late: a tick's work overran its 16.7 ms)
 *   tick_us p50 A p99 B max C
 *   paths P per_s R
 */
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"

#define TICK (1.0 / 60)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Calls the global function `name`; reports an error. */
static int call(lua_State *L, const char *name) {
  lua_getglobal(L, name);
  if (lua_pcall(L, 0, 0, 0) == 0) return 0;
  fprintf(stderr, "tick_host: %s: %s\n", name, lua_tostring(L, -1));
  lua_pop(L, 1);
  return -1;
}

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv);  /* workers run this program */
  const char *mode;
  double seconds, start, next, *spent;
  long ticks = 0, late = 0, max_ticks, paths;
  lua_State *L;
  int fd;
  if (status >= 0) return status;
  if (argc < 2) {
    fprintf(stderr, "usage: tick_host GAME.lua [async|naive|serial] [SECONDS]\n");
    return 2;
  }
  mode = argc > 2 ? argv[2] : "async";
  seconds = argc > 3 ? atof(argv[3]) : 5;
  max_ticks = (long)(seconds / TICK) + 1;
  if ((spent = calloc((size_t)max_ticks, sizeof(double))) == NULL) return 1;

  L = luaL_newstate();
  luaL_openlibs(L);
  lmp_preload(L);
  lua_pushstring(L, mode);
  if (luaL_loadfile(L, argv[1]) != 0 || (lua_insert(L, -2), lua_pcall(L, 1, 0, 0)) != 0) {
    fprintf(stderr, "tick_host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  fd = lmp_backend_fd(L);
  if (fd < 0) {
    fprintf(stderr, "tick_host: lmp_backend_fd: %s\n", lmp_strerror(fd));
    return 1;
  }

  start = next = now();
  while (ticks < max_ticks) {
    double t0 = now(), work;
    /* The tick: the game's Lua code, then whatever lmp has for it. */
    if (call(L, "game_tick") != 0) break;
    lmp_dispatch(L);
    work = now() - t0;
    spent[ticks] += work;
    if (work > TICK) late++;
    /* Until the next tick: sleep, waking up only when lmp has work. */
    next += TICK;
    for (;;) {
      double left = next - now();
      int wait_ms, t = lmp_backend_timeout(L);
      struct pollfd p = {fd, POLLIN, 0};
      if (left <= 0) break;
      wait_ms = (int)ceil(left * 1000);
      if (t >= 0 && t < wait_ms) wait_ms = t;
      if (poll(&p, 1, wait_ms) > 0 || t == 0) {
        double d0 = now();
        lmp_dispatch(L);
        spent[ticks] += now() - d0;  /* part of this tick's cost to the host */
      }
    }
    ticks++;
  }

  lua_getglobal(L, "paths_done");
  paths = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  {
    double elapsed = now() - start;
    qsort(spent, (size_t)ticks, sizeof(double), by_value);
    printf("mode %s\n", mode);
    printf("ticks %ld late %ld\n", ticks, late);
    if (ticks > 0)
      printf("tick_us p50 %.0f p99 %.0f max %.0f\n", spent[ticks / 2] * 1e6,
             spent[(long)(ticks * 0.99)] * 1e6, spent[ticks - 1] * 1e6);
    printf("paths %ld per_s %.1f\n", paths, paths / elapsed);
  }
  call(L, "game_end");
  status = lmp_shutdown(L, 5);
  lua_close(L);
  free(spent);
  return status < 0 ? 1 : 0;
}
