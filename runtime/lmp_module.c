/*
 * lmp_module.c -- luaopen_lmp: the C core of the lmp module.
 *
 * The module is half C, half Lua: this file builds a table of C functions
 * (the core) and hands it to the embedded Lua chunk lua/lmp/init.lua, which
 * returns the table users see.  Logic that is not hot lives on the Lua side.
 * The module-level functions are here (lmp.cpu_count, lmp.error, ...); each
 * object's are in its own file, added by its lmp__<module>_open.
 */
#include "lmp_alarm.h"
#include "lmp_arg.h"
#include "lmp_atomic.h"
#include "lmp_codec_lua.h"
#include "lmp_conn.h"
#include "lmp_error.h"
#include "lmp_bag.h"
#include "lmp_fdpass.h"
#include "lmp_redis.h"
#include "lmp_fork.h"
#include "lmp_hash.h"
#include "lmp_interrupt.h"
#include "lmp_loop.h"
#include "lmp_net.h"
#include "lmp_preload.h"
#include "lmp_process.h"
#include "lmp_queue.h"
#include "lmp_shm.h"
#include "lmp_sync.h"
#include "lmp_time.h"

static int l_cpu_count(lua_State *L) {
  lua_pushinteger(L, lmp_cpu_count());
  return 1;
}

static int l_get_executable(lua_State *L) {
  const char *path = lmp_get_executable();
  if (path) lua_pushstring(L, path);
  else lua_pushnil(L);
  return 1;
}

static int l_set_executable(lua_State *L) {
  int err = lmp_set_executable(lmp__check_string(L, 1));
  if (err) return lmp__error_raise(L, "ValueError", "set_executable: %s",
                                   lmp_strerror(err));
  return 0;
}

/* --- errors ------------------------------------------------------------------ */

/* Every kind of error lmp raises; lmp.errors maps each name to itself. */
static const char *const error_kinds[] = {
  "AuthenticationError", "BufferTooShort", "CancelledError", "CodecError",
  "IndexError", "KeyboardInterrupt",
  "OSError", "ProcessError", "RemoteError", "TimeoutError", "TypeError",
  "ValueError", "WorkerLost", NULL
};

/* lmp.error(kind, message [, fields]) -> error table.  Lua modules of lmp
 * build their errors with it; extra fields (traceback, pid, ...) are copied. */
static int l_error_new(lua_State *L) {
  const char *kind = lmp__check_string(L, 1);
  const char *message = lmp__check_string(L, 2);
  lmp__error_push(L, kind, "%s", message);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* lmp.is_error(v [, kind]) -> boolean */
static int l_is_error(lua_State *L) {
  int ok = 0;
  lmp__check_any(L, 1);
  lmp__opt_string(L, 2, NULL);
  if (lua_getmetatable(L, 1)) {
    lmp__error_push_mt(L);
    ok = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (ok && !lua_isnoneornil(L, 2)) {
    lua_getfield(L, 1, "kind");
    ok = lua_rawequal(L, -1, 2);
    lua_pop(L, 1);
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* core.strerror(code) -> lmp_strerror(code) */
static int l_strerror(lua_State *L) {
  lua_pushstring(L, lmp_strerror((int)lmp__check_integer(L, 1)));
  return 1;
}

/* lmp.errors, and core.E: the codes of LMP_ERRNO_MAP by name (E.TIMEDOUT),
 * for the Lua code that calls C through the FFI. */
static void open_errors(lua_State *L) {
  int i;
  lua_newtable(L);
  for (i = 0; error_kinds[i]; i++) {
    lua_pushstring(L, error_kinds[i]);
    lua_setfield(L, -2, error_kinds[i]);
  }
  lua_setfield(L, -2, "errors");
  lua_newtable(L);
#define XX(name, code, text) \
  lua_pushinteger(L, LMP_E##name); \
  lua_setfield(L, -2, #name);
  LMP_ERRNO_MAP(XX)
#undef XX
  lua_setfield(L, -2, "E");
}

static const luaL_Reg module_functions[] = {
  {"cpu_count", l_cpu_count},
  {"get_executable", l_get_executable},
  {"set_executable", l_set_executable},
  {"error", l_error_new},
  {"is_error", l_is_error},
  {NULL, NULL}
};

static const luaL_Reg core_functions[] = {
  {"strerror", l_strerror},
  {NULL, NULL}
};

/* One lmp per Lua state: its objects' bookkeeping (children, shared
 * segments, the FFI metatypes of Values and Arrays, which LuaJIT binds for
 * good) must not be split between two copies when package.loaded is reset
 * (busted's insulation, a host reloading modules). */
#define MODULE_KEY "lmp.module"

int luaopen_lmp(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
  if (lua_istable(L, -1)) return 1;
  lua_pop(L, 1);
  lmp__preload_lua(L);
  lmp__load_embedded(L, "lmp");
  lua_newtable(L);
  lmp__register(L, "lmp.", module_functions, 0);
  lmp__register(L, "lmp core.", core_functions, 0);
  lua_pushstring(L, lmp_version());
  lua_setfield(L, -2, "version");
  open_errors(L);
  lmp__codec_open(L);
  lmp__loop_open(L);
  lmp__time_open(L);
  lmp__alarm_open(L);
  lmp__conn_open(L);
  lmp__process_open(L);
  lmp__shm_open(L);
  lmp__atomic_open(L);
  lmp__sync_open(L);
  lmp__queue_open(L);
  lmp__hash_open(L);
  lmp__net_open(L);
  lmp__interrupt_open(L);
  lmp__fork_open(L);
  lmp__fdpass_open(L);
  lmp__bag_open(L);
  lmp__redis_open(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CORE_KEY);
  lua_call(L, 1, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
  return 1;
}
