/*
 * lmp_module.c -- luaopen_lmp: the C core of the lmp module.
 *
 * The module is half C, half Lua: this file builds a table of C functions
 * (the core) and hands it to the embedded Lua chunk lua/lmp/init.lua, which
 * returns the table users see.  Logic that is not hot lives on the Lua side.
 */
#include "lmp_codec_lua.h"
#include "lmp_conn.h"
#include "lmp_error.h"
#include "lmp_hash.h"
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
  int err = lmp_set_executable(luaL_checkstring(L, 1));
  if (err) return lmp__error_raise(L, "ValueError", "set_executable: %s",
                                   lmp_strerror(err));
  return 0;
}

static const luaL_Reg core_functions[] = {
  {"cpu_count", l_cpu_count},
  {"get_executable", l_get_executable},
  {"set_executable", l_set_executable},
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
  luaL_register(L, NULL, core_functions);
  lua_pushstring(L, lmp_version());
  lua_setfield(L, -2, "version");
  lmp__error_open(L);
  lmp__codec_open(L);
  lmp__loop_open(L);
  lmp__time_open(L);
  lmp__conn_open(L);
  lmp__process_open(L);
  lmp__shm_open(L);
  lmp__sync_open(L);
  lmp__queue_open(L);
  lmp__hash_open(L);
  lmp__net_open(L);
  lua_call(L, 1, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, MODULE_KEY);
  return 1;
}
