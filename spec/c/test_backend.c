/*
 * test_backend -- a C host drives lmp from its own loop (lmp.h, SPEC
 * section 10): lmp_backend_fd becomes readable when there is work and
 * only then, lmp_dispatch never blocks and returns counts, an error in a
 * callback goes to lmp.on_error and never unwinds into C, lmp_shutdown
 * ends busy workers, is idempotent and leaves no children, lua_close
 * without it leaves none either, and two states work side by side.
 *
 * Every wait here is bounded: a bug fails a CHECK, never hangs.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "lmp.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lmp_preload(L);
  return L;
}

/* Runs Lua code; reports its error. */
static int run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) == 0) return 1;
  fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
  lua_pop(L, 1);
  return 0;
}

/* The value of global `name` as a number (0 if not a number). */
static double global_number(lua_State *L, const char *name) {
  double v;
  lua_getglobal(L, name);
  v = lua_tonumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Is fd readable within ms milliseconds? */
static int readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, ms) > 0;
}

/* The host's loop: waits on the descriptor (and the timeout lmp gives),
 * dispatches, until global `name` is a number or `limit` seconds passed.
 * Returns the number of loop turns, or -1 on timeout. */
static int loop_until(lua_State *L, const char *name, double limit) {
  double start = now();
  int turns = 0, fd = lmp_backend_fd(L);
  CHECK(fd >= 0);
  while (now() - start < limit) {
    int t = lmp_backend_timeout(L);
    lua_getglobal(L, name);
    if (lua_isnumber(L, -1)) {
      lua_pop(L, 1);
      return turns;
    }
    lua_pop(L, 1);
    readable(fd, t < 0 || t > 100 ? 100 : t);
    CHECK(lmp_dispatch(L) >= 0);
    turns++;
  }
  return -1;
}

/* Are there children of this process left, zombies included? */
static int children_left(void) {
  int status;
  pid_t r = waitpid(-1, &status, WNOHANG);
  return !(r < 0 && errno == ECHILD);
}

static void test_readable_when_a_result_comes(void) {
  lua_State *L = new_state();
  int fd, turns;
  double t0;
  CHECK(run(L,
    "lmp = require 'lmp'\n"
    "pool = lmp.Pool(1)\n"
    "assert(pool:apply(function() return 1 end, {}, {timeout = 10}) == 1)\n"));
  fd = lmp_backend_fd(L);
  CHECK(fd >= 0);
  CHECK(lmp_backend_fd(L) == fd);  /* one descriptor for the state's life */
  CHECK(lmp_dispatch(L) == 0);
  /* Nothing to do: not readable, and no deadline. */
  CHECK(!readable(fd, 100));
  CHECK(lmp_backend_timeout(L) == -1);
  CHECK(run(L,
    "r = pool:apply_async(function() local t = os.clock() "
    "while os.clock() - t < 0.2 do end return 42 end, {}, "
    "function(v) got = v end)\n"));
  /* The host's own Lua call armed nothing; the worker's reply must still
   * make the descriptor readable. */
  t0 = now();
  CHECK(readable(fd, 5000));
  CHECK(now() - t0 > 0.1);  /* not before the task could be over */
  CHECK(lmp_dispatch(L) == 1);  /* the callback */
  CHECK(global_number(L, "got") == 42);
  CHECK(!readable(fd, 50));
  /* Loop turns stay few: the descriptor is quiet while nothing happens. */
  CHECK(run(L,
    "got = nil\n"
    "pool:apply_async(function() local t = os.clock() "
    "while os.clock() - t < 0.5 do end return 7 end, {}, "
    "function(v) got = v end)\n"));
  turns = loop_until(L, "got", 10);
  CHECK(turns >= 0 && turns <= 10);
  CHECK(global_number(L, "got") == 7);
  CHECK(lmp_shutdown(L, 5) == 0);  /* no worker was busy */
  lua_close(L);
  CHECK(!children_left());
}

static void test_dispatch_never_blocks(void) {
  lua_State *L = new_state();
  double t0, longest = 0;
  int i, ran = 0;
  CHECK(run(L,
    "lmp = require 'lmp'\n"
    "pool = lmp.Pool(2)\n"
    "count = 0\n"
    "for i = 1, 20 do pool:apply_async(function(x) local t = os.clock() "
    "while os.clock() - t < 0.02 do end return x end, {i}, "
    "function() count = count + 1 end) end\n"
    "slow = pool:apply_async(function() local t = os.clock() "
    "while os.clock() - t < 30 do end end, {})\n"));
  t0 = now();
  while (global_number(L, "count") < 20 && now() - t0 < 20) {
    double t = now();
    int r = lmp_dispatch(L);
    CHECK(r >= 0);
    if (r > 0) ran += r;
    if (now() - t > longest) longest = now() - t;
    readable(lmp_backend_fd(L), 20);
  }
  CHECK(global_number(L, "count") == 20);
  CHECK(ran == 20);  /* counts: one per callback */
  CHECK(longest < 0.05);  /* with a 30 s task running */
  for (i = 0; i < 5; i++) CHECK(lmp_dispatch(L) == 0);
  /* Shutdown kills the busy worker (the 30 s task) and no other. */
  t0 = now();
  CHECK(lmp_shutdown(L, 2) == 1);
  CHECK(now() - t0 < 10);
  CHECK(!children_left());
  CHECK(lmp_shutdown(L, 2) == 0);  /* idempotent */
  CHECK(run(L, "local ok, e = pcall(slow.get, slow, 0)\n"
               "assert(not ok and lmp.is_error(e))\n"));
  lua_close(L);
}

/* A worker that dies makes the descriptor readable until the pool has
 * seen it: the host must not spin on it meanwhile. */
static void test_worker_death_wakes_once(void) {
  lua_State *L = new_state();
  int turns;
  CHECK(run(L,
    "lmp = require 'lmp'\n"
    "pool = lmp.Pool(1)\n"
    "assert(pool:apply(function() return 1 end, {}, {timeout = 10}) == 1)\n"
    "pool:apply_async(function() os.exit(3) end, {}, nil, "
    "function(e) lost, kind = 1, e.kind end)\n"));
  turns = loop_until(L, "lost", 10);
  if (!(turns >= 0 && turns <= 10)) fprintf(stderr, "death: %d turns\n", turns);
  CHECK(turns >= 0 && turns <= 10);
  CHECK(run(L, "assert(kind == 'WorkerLost', tostring(kind))\n"));
  CHECK(lmp_shutdown(L, 5) == 0);
  lua_close(L);
  CHECK(!children_left());
}

static void test_callback_errors_go_to_on_error(void) {
  lua_State *L = new_state();
  CHECK(run(L,
    "lmp = require 'lmp'\n"
    "pool = lmp.Pool(1)\n"
    "lmp.on_error(function(e) handled = (handled or 0) + 1; last = tostring(e) end)\n"
    "pool:apply_async(function() return 1 end, {}, function() error('callback fails') end)\n"
    "co = coroutine.wrap(function()\n"
    "  pool:apply_async(function() return 2 end, {}):await()\n"
    "  error('coroutine fails')\n"
    "end)\n"
    "co()\n"));
  /* A longjmp out of lmp_dispatch would end this test (a Lua panic). */
  CHECK(loop_until(L, "never_set", 1.0) == -1);
  CHECK(global_number(L, "handled") == 2);
  CHECK(run(L, "assert(last:find('fails'))\n"));
  CHECK(lmp_shutdown(L, 5) == 0);
  lua_close(L);
  CHECK(!children_left());
}

static void test_close_without_shutdown(void) {
  lua_State *L = new_state();
  double t0;
  CHECK(run(L,
    "lmp = require 'lmp'\n"
    "pool = lmp.Pool(2)\n"
    "for i = 1, 4 do pool:apply_async(function() local t = os.clock() "
    "while os.clock() - t < 30 do end end, {}) end\n"
    "p = lmp.Process(function() local t = os.clock() while os.clock() - t < 0.2 do end end)\n"
    "p:start()\n"));
  t0 = now();
  lua_close(L);
  CHECK(now() - t0 < 10);
  CHECK(!children_left());
}

static void test_two_states(void) {
  lua_State *a = new_state(), *b = new_state();
  double t0 = now();
  int i;
  const char *code =
    "lmp = require 'lmp'\n"
    "pool = lmp.Pool(1)\n"
    "pool:map_async(function(x) return x * x end, {1, 2, 3, 4}, 1, "
    "function(r) sum = r[1] + r[2] + r[3] + r[4] end)\n";
  CHECK(run(a, code));
  CHECK(run(b, code));
  CHECK(lmp_backend_fd(a) != lmp_backend_fd(b));
  while (now() - t0 < 10 &&
         (global_number(a, "sum") == 0 || global_number(b, "sum") == 0)) {
    struct pollfd p[2] = {{lmp_backend_fd(a), POLLIN, 0}, {lmp_backend_fd(b), POLLIN, 0}};
    poll(p, 2, 100);
    CHECK(lmp_dispatch(a) >= 0);
    CHECK(lmp_dispatch(b) >= 0);
  }
  CHECK(global_number(a, "sum") == 30);
  CHECK(global_number(b, "sum") == 30);
  for (i = 0; i < 2; i++) CHECK(lmp_shutdown(i ? b : a, 5) == 0);
  lua_close(a);
  lua_close(b);
  CHECK(!children_left());
}

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv);
  if (status >= 0) return status;
  (void)argc;
  CHECK(lmp_set_executable("/proc/self/exe") == 0);
  test_readable_when_a_result_comes();
  test_dispatch_never_blocks();
  test_worker_death_wakes_once();
  test_callback_errors_go_to_on_error();
  test_close_without_shutdown();
  test_two_states();
  return CHECK_STATUS();
}
