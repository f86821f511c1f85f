/*
 * lmp_codec_lua.c -- lmp.codec: encode, decode, register, and the extension
 * point lmp's own objects use to travel.
 */
#include <string.h>

#include "lmp_codec.h"
#include "lmp_codec_lua.h"

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
  lmp__codec_register(L, 1, 2);
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
  lmp__codec_register_extension(L, 1, 2, 3, 4);
  return 0;
}

/* core.codec_cdata_hook(fn): fn(cdata) -> extension name, payload (or
 * nothing) decides which cdata travel; lmp's shared Values and Arrays. */
static int l_cdata_hook(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lmp__codec_set_cdata_hook(L, 1);
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
  lua_pushliteral(L, "lmp.Error");
  luaL_getmetatable(L, "lmp.Error");
  lmp__codec_register(L, -2, -1);
  lua_pop(L, 2);
}
