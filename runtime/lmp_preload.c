/*
 * lmp_preload.c -- makes lmp and its embedded Lua modules requirable.
 *
 * The sources under lua/ are compiled into the binary (see
 * scripts/embed_lua.cmake), so require "lmp.pool" never depends on the
 * current directory or on LUA_PATH.
 */
#include <string.h>

#include "lmp_preload.h"

static const lmp__lua_module *find_module(const char *name) {
  const lmp__lua_module *m;
  for (m = lmp__lua_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

void lmp__load_embedded(lua_State *L, const char *name) {
  const lmp__lua_module *m = find_module(name);
  if (m == NULL) luaL_error(L, "lmp: no embedded module '%s'", name);
  if (luaL_loadbuffer(L, m->source, m->size, m->chunkname) != 0)
    lua_error(L);
}

/* package.preload loader: upvalue 1 is the module's index in the table. */
static int embedded_loader(lua_State *L) {
  const lmp__lua_module *m =
      &lmp__lua_modules[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbuffer(L, m->source, m->size, m->chunkname) != 0)
    return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

void lmp__preload_lua(lua_State *L) {
  int i;
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) luaL_error(L, "lmp: the package library is not open");
  lua_getfield(L, -1, "preload");
  for (i = 0; lmp__lua_modules[i].name; i++) {
    /* "lmp" itself is luaopen_lmp; its Lua half is loaded from there. */
    if (strcmp(lmp__lua_modules[i].name, "lmp") == 0) continue;
    lua_getfield(L, -1, lmp__lua_modules[i].name);
    if (lua_isnil(L, -1)) {
      lua_pushinteger(L, i);
      lua_pushcclosure(L, embedded_loader, 1);
      lua_setfield(L, -3, lmp__lua_modules[i].name);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

void lmp_preload(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_lmp);
  lua_setfield(L, -2, "lmp");
  lua_pop(L, 2);
}
