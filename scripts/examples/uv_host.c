/*
 * uv_host.c -- lmp on a host's libuv loop (lmp_uv.h): a 60 Hz uv timer is
 * the game's tick; lmp's work (callbacks, awaiting coroutines) runs from
 * the same uv_run.
 *
 * Usage: uv_host [PATHS]   (default 20; the paths are sums, to keep it short)
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"
#include "lmp_uv.h"

static const char *const game =
  "local lmp = require 'lmp'\n"
  "local pool = lmp.Pool(2)\n"
  "local wanted = ...\n"
  "done, ticks = 0, 0\n"
  "local function work(n) local s = 0 for i = 1, n do s = s + i end return s end\n"
  "function tick()\n"
  "  ticks = ticks + 1\n"
  "  if ticks <= wanted / 2 then\n"
  "    -- one request with a callback, one from a coroutine, each tick\n"
  "    pool:apply_async(work, {1e6}, function(s) done = done + 1 end)\n"
  "    coroutine.wrap(function()\n"
  "      pool:apply_async(work, {2e6}):await()\n"
  "      done = done + 1\n"
  "    end)()\n"
  "  end\n"
  "  return done >= wanted\n"
  "end\n"
  "function finish() pool:close() pool:join() end\n";

static lua_State *L;

static void on_tick(uv_timer_t *t) {
  int finished;
  lua_getglobal(L, "tick");
  if (lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "uv_host: %s\n", lua_tostring(L, -1));
    uv_stop(t->loop);
    return;
  }
  finished = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (finished) uv_stop(t->loop);
}

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv);
  long wanted = argc > 1 ? atol(argv[1]) : 20;
  uv_loop_t *loop = uv_default_loop();
  uv_timer_t tick;
  if (status >= 0) return status;
  L = luaL_newstate();
  luaL_openlibs(L);
  lmp_preload(L);
  lua_pushinteger(L, wanted);
  if (luaL_loadstring(L, game) != 0 || (lua_insert(L, -2), lua_pcall(L, 1, 0, 0)) != 0) {
    fprintf(stderr, "uv_host: %s\n", lua_tostring(L, -1));
    return 1;
  }
  if ((status = lmp_uv_attach(L, loop)) != 0) {
    fprintf(stderr, "uv_host: lmp_uv_attach: %s\n", lmp_strerror(status));
    return 1;
  }
  uv_timer_init(loop, &tick);
  uv_timer_start(&tick, on_tick, 0, 16);
  uv_run(loop, UV_RUN_DEFAULT);
  lua_getglobal(L, "done");
  lua_getglobal(L, "ticks");
  printf("done %ld in %ld ticks\n", (long)lua_tointeger(L, -2), (long)lua_tointeger(L, -1));
  lua_pop(L, 2);
  uv_close((uv_handle_t *)&tick, NULL);
  lua_getglobal(L, "finish");
  lua_pcall(L, 0, 0, 0);
  lmp_uv_detach(L);
  lmp_shutdown(L, 5);
  lua_close(L);
  uv_run(loop, UV_RUN_NOWAIT);  /* lets lmp's handles close */
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
