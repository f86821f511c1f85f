/*
 * lmp_codec.c -- the codec's registry: which metatables travel under which
 * name, which objects travel as extensions, which cdata travel.  The
 * encoder (lmp_codec_enc.c) and the decoder (lmp_codec_dec.c) read it;
 * lmp.codec (lmp_codec_lua.c) fills it.  Each table is per state, in the
 * Lua registry under the LMP_CODEC_* keys of lmp_codec.h.
 */
#include "lmp_codec.h"

/* If map[key] is set, clears reverse[map[key]]: the other half of an old
 * pair of the two-way map. */
static void forget(lua_State *L, int map, int key, int reverse) {
  lua_pushvalue(L, key);
  lua_rawget(L, map);
  if (!lua_isnil(L, -1)) {
    lua_pushnil(L);
    lua_rawset(L, reverse);
  } else {
    lua_pop(L, 1);
  }
}

void lmp__codec_register(lua_State *L, int name, int mt) {
  int by_name, by_mt;
  name = lmp__absindex(L, name);
  mt = lmp__absindex(L, mt);
  lmp__registry_table(L, LMP_CODEC_MT_BY_NAME, NULL);
  by_name = lua_gettop(L);
  lmp__registry_table(L, LMP_CODEC_NAME_BY_MT, NULL);
  by_mt = lua_gettop(L);
  forget(L, by_name, name, by_mt);  /* the old metatable of this name */
  forget(L, by_mt, mt, by_name);    /* and the old name of this metatable */
  lua_pushvalue(L, name);
  lua_pushvalue(L, mt);
  lua_rawset(L, by_name);
  lua_pushvalue(L, mt);
  lua_pushvalue(L, name);
  lua_rawset(L, by_mt);
  lua_pop(L, 2);
}

void lmp__codec_register_extension(lua_State *L, int name, int mt,
                                   int to_wire, int from_wire) {
  name = lmp__absindex(L, name);
  mt = lmp__absindex(L, mt);
  to_wire = lmp__absindex(L, to_wire);
  from_wire = lmp__absindex(L, from_wire);
  lmp__registry_table(L, LMP_CODEC_EXT_BY_MT, NULL);
  lua_pushvalue(L, mt);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, name);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, to_wire);
  lua_rawseti(L, -2, 2);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lmp__registry_table(L, LMP_CODEC_EXT_BY_NAME, NULL);
  lua_pushvalue(L, name);
  lua_pushvalue(L, from_wire);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

void lmp__codec_set_cdata_hook(lua_State *L, int fn) {
  lua_pushvalue(L, fn);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_CDATA_HOOK);
}

void lmp__codec_set_globals_hook(lua_State *L, int fn) {
  lua_pushvalue(L, fn);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_GLOBALS_HOOK);
}
