/*
 * lmp_internal.h -- what every C file of lmp needs and embedders never see:
 * the Lua and lmp headers and the few helpers that stand in for what
 * LuaJIT's Lua 5.1 API lacks.  Each module declares its own functions in
 * its own header (lmp_<module>.h); non-static internal functions are
 * prefixed lmp__.
 */
#ifndef LMP_INTERNAL_H
#define LMP_INTERNAL_H

#include <stddef.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"

#define LMP_UNUSED(x) ((void)(x))

/* --- Lua 5.1 compatibility (LuaJIT lacks these 5.2+ helpers) --------------- */
#define lmp__absindex(L, i) \
  ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)

/* --- per-state tables ---------------------------------------------------- */

/* Pushes the table registry[key], creating it if needed; a new table gets
 * a metatable with __mode = mode ("k": weak keys), unless mode is NULL. */
static inline void lmp__registry_table(lua_State *L, const char *key,
                                       const char *mode) {
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  if (lua_istable(L, -1)) return;
  lua_pop(L, 1);
  lua_newtable(L);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, key);
}

/* The userdata registry[key], or NULL. */
static inline void *lmp__registry_udata(lua_State *L, const char *key) {
  void *p;
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  p = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return p;
}

/* A new zeroed userdata of `size` bytes whose finalizer is gc, kept as
 * registry[key] (replacing what was there): per-state C objects that live
 * until the state closes.  Leaves the stack as it was. */
static inline void *lmp__registry_udata_new(lua_State *L, const char *key,
                                            size_t size, lua_CFunction gc) {
  void *p = lua_newuserdata(L, size);
  memset(p, 0, size);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, key);
  return p;
}

/* Registry key of the core table: the C half of the module, which the Lua
 * half (lua/lmp/init.lua) receives and to which it adds the functions C
 * calls back: core.run_child(bootstrap) and core.atexit() (lmp_worker.c). */
#define LMP_CORE_KEY "lmp.core"

#endif /* LMP_INTERNAL_H */
