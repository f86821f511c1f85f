/*
 * lmp_codec_lua.c -- lmp.codec: encode, decode, register, and the extension
 * point lmp's own objects use to travel.
 */
#include <string.h>

#include "lmp_codec.h"
#include "lmp_codec_lua.h"

void lmp__codec_registry(lua_State *L, const char *key) {
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, key);
  }
}

static int opt_field(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  return lua_gettop(L);
}

static void read_opts(lua_State *L, int idx, lmp_codec_opts *o) {
  memset(o, 0, sizeof(*o));
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  o->binary = lua_toboolean(L, opt_field(L, idx, "binary"));
  o->safe = lua_toboolean(L, opt_field(L, idx, "safe"));
  o->max_depth = (int)luaL_optinteger(L, opt_field(L, idx, "max_depth"), 0);
  if (o->max_depth < 0) luaL_argerror(L, idx, "max_depth must be positive");
  o->role = luaL_optstring(L, opt_field(L, idx, "role"), NULL);
  /* The option values stay on the stack, which keeps `role` alive. */
}

/* lmp.codec.encode(v [, opts]) -> string */
static int l_encode(lua_State *L) {
  lmp_codec_opts o;
  luaL_checkany(L, 1);
  read_opts(L, 2, &o);
  lmp__codec_encode_string(L, 1, &o);
  return 1;
}

/* lmp.codec.decode(s [, opts]) -> v */
static int l_decode(lua_State *L) {
  lmp_codec_opts o;
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  read_opts(L, 2, &o);
  lmp__codec_decode(L, s, len, &o);
  return 1;
}

/* lmp.codec.register(name, mt): tables with metatable mt travel with the
 * name, and get mt back on decode in every process that registered it.
 * Registering a name again replaces the old metatable (a REPL redefines). */
static int l_register(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lmp__codec_registry(L, LMP_CODEC_MT_BY_NAME);   /* 3 */
  lmp__codec_registry(L, LMP_CODEC_NAME_BY_MT);   /* 4 */
  lua_pushvalue(L, 1);
  lua_rawget(L, 3);
  if (!lua_isnil(L, -1)) {  /* forget the old metatable of this name */
    lua_pushnil(L);
    lua_rawset(L, 4);
  } else {
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, 4);
  if (!lua_isnil(L, -1)) {  /* and the old name of this metatable */
    lua_pushnil(L);
    lua_rawset(L, 3);
  } else {
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_rawset(L, 3);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  lua_rawset(L, 4);
  return 0;
}

/* lmp.codec.register_extension(name, mt, to_wire, from_wire): tables and
 * userdata with metatable mt travel as name plus to_wire(obj), an encodable value, and
 * come back as from_wire(value).  Used by lmp's own objects; refused in
 * safe mode. */
static int l_register_extension(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lmp__codec_registry(L, LMP_CODEC_EXT_BY_MT);
  lua_pushvalue(L, 2);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, 2);
  lua_rawset(L, -3);
  lmp__codec_registry(L, LMP_CODEC_EXT_BY_NAME);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 4);
  lua_rawset(L, -3);
  return 0;
}

/* core.codec_cdata_hook(fn): fn(cdata) -> extension name, payload (or
 * nothing) decides which cdata travel; lmp's shared Values and Arrays. */
static int l_cdata_hook(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_CDATA_HOOK);
  return 0;
}

static const luaL_Reg codec_functions[] = {
  {"encode", l_encode},
  {"decode", l_decode},
  {"register", l_register},
  {"register_extension", l_register_extension},
  {NULL, NULL}
};

void lmp__codec_open(lua_State *L) {
  lua_newtable(L);
  luaL_register(L, NULL, codec_functions);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_setfield(L, -2, "codec");
  lua_pushcfunction(L, l_cdata_hook);
  lua_setfield(L, -2, "codec_cdata_hook");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  /* lmp's errors travel (a worker's error reaches the parent). */
  lua_pushcfunction(L, l_register);
  lua_pushliteral(L, "lmp.Error");
  luaL_getmetatable(L, "lmp.Error");
  lua_call(L, 2, 0);
}
