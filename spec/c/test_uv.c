/*
 * test_uv -- lmp on a host's libuv loop (lmp_uv.h): callbacks and awaiting
 * coroutines run from the host's uv_run, a deadline with no descriptor
 * activity still wakes lmp (a coroutine's await timeout), detaching
 * removes lmp's handles, and a state closed while attached leaves the
 * loop sound.  Every run of the loop is bounded by a guard timer.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "lmp_uv.h"

static lua_State *watched;
static const char *watched_global;
static int guard_fired;

static int run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) == 0) return 1;
  fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
  lua_pop(L, 1);
  return 0;
}

static int global_set(lua_State *L, const char *name) {
  int set;
  lua_getglobal(L, name);
  set = !lua_isnil(L, -1);
  lua_pop(L, 1);
  return set;
}

static void on_check(uv_check_t *c) {
  if (global_set(watched, watched_global)) uv_stop(c->loop);
}

static void on_guard(uv_timer_t *t) {
  guard_fired = 1;
  uv_stop(t->loop);
}

/* Runs the loop until global `name` of L is set, at most `limit` ms. */
static int run_until(uv_loop_t *loop, lua_State *L, const char *name, uint64_t limit) {
  uv_check_t check;
  uv_timer_t guard;
  watched = L;
  watched_global = name;
  guard_fired = 0;
  uv_check_init(loop, &check);
  uv_check_start(&check, on_check);
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, on_guard, limit, 0);
  if (!global_set(L, name)) uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&check, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return !guard_fired;
}

static void count_handles(uv_handle_t *h, void *arg) {
  (void)h;
  ++*(int *)arg;
}

static int handles(uv_loop_t *loop) {
  int n = 0;
  uv_walk(loop, count_handles, &n);
  return n;
}

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv);
  uv_loop_t loop;
  lua_State *L;
  if (status >= 0) return status;
  CHECK(lmp_set_executable("/proc/self/exe") == 0);
  CHECK(uv_loop_init(&loop) == 0);
  L = luaL_newstate();
  luaL_openlibs(L);
  lmp_preload(L);
  CHECK(run(L, "lmp = require 'lmp'\npool = lmp.Pool(2)\n"));
  CHECK(lmp_uv_attach(L, &loop) == 0);
  CHECK(lmp_uv_attach(L, &loop) == 0);  /* again: nothing more */
  CHECK(handles(&loop) == 3);

  /* A callback, run from the host's loop. */
  CHECK(run(L, "pool:apply_async(function() return 6 * 7 end, {}, function(v) answer = v end)\n"));
  CHECK(run_until(&loop, L, "answer", 10000));
  CHECK(run(L, "assert(answer == 42)\n"));

  /* Coroutines: one resumed by its result, one by its await timeout (no
   * descriptor says anything then: the timer must). */
  CHECK(run(L,
    "coroutine.wrap(function()\n"
    "  got = pool:apply_async(function() return 'path' end, {}):await()\n"
    "end)()\n"
    "coroutine.wrap(function()\n"
    "  local v, why = pool:apply_async(function() local t = os.clock() "
    "while os.clock() - t < 3 do end end, {}):await(0.2)\n"
    "  timed_out = why\n"
    "end)()\n"));
  CHECK(run_until(&loop, L, "got", 10000));
  CHECK(run_until(&loop, L, "timed_out", 10000));
  CHECK(run(L, "assert(got == 'path' and timed_out == 'timeout')\n"));

  /* Detached: lmp's handles leave the loop. */
  CHECK(lmp_uv_detach(L) == 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(handles(&loop) == 0);
  CHECK(lmp_uv_detach(L) == 0);

  /* Attached again, then the state closes first: the loop stays sound. */
  CHECK(lmp_uv_attach(L, &loop) == 0);
  CHECK(lmp_shutdown(L, 5) >= 0);
  lua_close(L);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(handles(&loop) == 0);
  CHECK(uv_loop_close(&loop) == 0);
  CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD);
  return CHECK_STATUS();
}
