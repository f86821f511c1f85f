/*
 * lmp_codec_lua.c -- lmp.codec: encode, decode, register, and the extension
 * point lmp's own objects use to travel.
 */
#include <string.h>

#include "lmp_arg.h"
#include "lmp_codec.h"
#include "lmp_codec_lua.h"
#include "lmp_error.h"

/* Pushes field `name` of the options table at idx; returns its index. */
static int opt_field(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  return lua_gettop(L);
}

/* A field that must be nil or of type `type`: a bad one is a bad
 * argument idx (the options table). */
static int typed_field(lua_State *L, int idx, const char *name, int type) {
  int f = opt_field(L, idx, name);
  if (!lua_isnil(L, f) && lua_type(L, f) != type)
    lmp__argerror(L, idx, lua_pushfstring(L, "%s: %s expected, got %s", name,
                                          lua_typename(L, type),
                                          luaL_typename(L, f)));
  return f;
}

static void read_opts(lua_State *L, int idx, lmp_codec_opts *o) {
  memset(o, 0, sizeof(*o));
  if (lua_isnoneornil(L, idx)) return;
  lmp__check_type(L, idx, LUA_TTABLE);
  o->binary = lua_toboolean(L, opt_field(L, idx, "binary"));
  o->safe = lua_toboolean(L, opt_field(L, idx, "safe"));
  o->max_depth = (int)lua_tointeger(L, typed_field(L, idx, "max_depth",
                                                   LUA_TNUMBER));
  if (o->max_depth < 0) lmp__argerror(L, idx, "max_depth must be positive");
  o->role = lua_tostring(L, typed_field(L, idx, "role", LUA_TSTRING));
  /* share: true (strings and FFI arrays) or "arrays" */
  {
    int i = opt_field(L, idx, "share");
    o->share = lua_type(L, i) == LUA_TSTRING ? LMP_SHARE_ARRAYS
               : lua_toboolean(L, i) ? LMP_SHARE_ALL : LMP_SHARE_NONE;
  }
  /* The option values stay on the stack, which keeps `role` alive. */
}

/* lmp.codec.encode(v [, opts]) -> string */
static int l_encode(lua_State *L) {
  lmp_codec_opts o;
  lmp__check_any(L, 1);
  read_opts(L, 2, &o);
  lua_pushnil(L);  /* (not into a Queue) */
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_CUSTODY);
  lmp__codec_encode_string(L, 1, &o);
  return 1;
}

/* lmp.codec.decode(s [, opts]) -> v */
static int l_decode(lua_State *L) {
  lmp_codec_opts o;
  size_t len;
  const char *s = lmp__check_lstring(L, 1, &len);
  read_opts(L, 2, &o);
  lmp__codec_decode(L, s, len, &o);
  return 1;
}

/* lmp.codec.register(name, mt): tables with metatable mt travel with the
 * name, and get mt back on decode in every process that registered it.
 * Registering a name again replaces the old metatable (a REPL redefines). */
static int l_register(lua_State *L) {
  lmp__check_string(L, 1);
  lmp__check_type(L, 2, LUA_TTABLE);
  lmp__codec_register(L, 1, 2);
  return 0;
}

/* lmp.codec.register_extension(name, mt, to_wire, from_wire): tables and
 * userdata with metatable mt travel as name plus to_wire(obj), an encodable value, and
 * come back as from_wire(value).  Used by lmp's own objects; refused in
 * safe mode. */
static int l_register_extension(lua_State *L) {
  lmp__check_string(L, 1);
  lmp__check_type(L, 2, LUA_TTABLE);
  lmp__check_type(L, 3, LUA_TFUNCTION);
  lmp__check_type(L, 4, LUA_TFUNCTION);
  lmp__codec_register_extension(L, 1, 2, 3, 4);
  return 0;
}

/* core.codec_cdata_hook(fn): fn(cdata) -> extension name, payload (or
 * nothing) decides which cdata travel; lmp's shared Values and Arrays. */
static int l_cdata_hook(lua_State *L) {
  lmp__check_type(L, 1, LUA_TFUNCTION);
  lmp__codec_set_cdata_hook(L, 1);
  return 0;
}

/* core.codec_globals_hook(fn): fn(f) -> names, env says which globals a
 * function defined at the prompt or in the main script takes with it. */
static int l_globals_hook(lua_State *L) {
  lmp__check_type(L, 1, LUA_TFUNCTION);
  lmp__codec_set_globals_hook(L, 1);
  return 0;
}

/* core.codec_encode_lines(list, first, last) -> text, index: items
 * first..last as lines of JSON, up to the first that is not JSON data
 * (its index; nil when all were). */
static int l_encode_lines(lua_State *L) {
  lua_Integer first, last, stopped;
  lmp__check_type(L, 1, LUA_TTABLE);
  first = lmp__check_integer(L, 2);
  last = lmp__check_integer(L, 3);
  stopped = lmp__codec_encode_lines(L, 1, first, last);
  if (stopped == 0) return 1;
  lua_pushinteger(L, stopped);
  return 2;
}

/* One line of decode_lines, in a protected call: [1] lightuserdata to
 * {data, len}. */
typedef struct {
  const char *data;
  size_t len;
} line_span;

static int decode_line(lua_State *L) {
  static const lmp_codec_opts safe = {0, 1, 0, NULL, 0};  /* data: no code */
  line_span *l = lua_touserdata(L, 1);
  lmp__codec_decode(L, l->data, l->len, &safe);
  return 1;
}

static int is_blank(const char *p, const char *end) {
  for (; p < end; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r') return 0;
  return 1;
}

/* core.codec_decode_lines(text, first) -> values, line numbers, errors, n:
 * the JSON lines of text (safe mode), blank lines skipped.  Item i came
 * from line numbers[i] (text's first line being `first`); a line that does
 * not decode leaves values[i] nil and its message in errors[i]. */
static int l_decode_lines(lua_State *L) {
  size_t len;
  const char *text = lmp__check_lstring(L, 1, &len), *p = text, *end = text + len;
  lua_Integer line = lmp__check_integer(L, 2);
  int n = 0;
  lua_settop(L, 2);
  lua_newtable(L);  /* 3: values */
  lua_newtable(L);  /* 4: line numbers */
  lua_newtable(L);  /* 5: errors */
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl ? nl : end;
    if (!is_blank(p, stop)) {
      line_span span;
      span.data = p;
      span.len = (size_t)(stop - p);
      n++;
      lua_pushinteger(L, line);
      lua_rawseti(L, 4, n);
      lua_pushcfunction(L, decode_line);
      lua_pushlightuserdata(L, &span);
      if (lua_pcall(L, 1, 1, 0) == 0) {
        lua_rawseti(L, 3, n);
      } else {
        if (lua_istable(L, -1)) lua_getfield(L, -1, "message");
        lua_rawseti(L, 5, n);
        lua_settop(L, 5);
      }
    }
    line++;
    p = stop + 1;
  }
  lua_pushinteger(L, n);
  return 4;
}

unsigned lmp__codec_by_value_gen;

/* lmp.codec.by_value(name): the loaded module `name` travels by value
 * from now on (its functions as code, its tables as tables), for
 * receivers that do not have its file (cloudpickle's
 * register_pickle_by_value). */
static int l_by_value(lua_State *L) {
  size_t len;
  lmp__check_lstring(L, 1, &len);
  if (len == 0) return lmp__error_raise(L, "ValueError", "lmp.codec.by_value: empty module name");
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CODEC_BY_VALUE_KEY);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_BY_VALUE_KEY);
  }
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lmp__codec_by_value_gen++;
  return 0;
}

static const luaL_Reg codec_functions[] = {
  {"by_value", l_by_value},
  {"encode", l_encode},
  {"decode", l_decode},
  {"register", l_register},
  {"register_extension", l_register_extension},
  {NULL, NULL}
};

/* core.codec_share_hook(fn): fn(s) -> name, payload puts a big string in
 * shared memory (lua/lmp/buffers.lua). */
static int l_share_hook(lua_State *L) {
  lmp__check_type(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_SHARE_HOOK);
  return 0;
}

static const luaL_Reg core_functions[] = {
  {"codec_cdata_hook", l_cdata_hook},
  {"codec_share_hook", l_share_hook},
  {"codec_globals_hook", l_globals_hook},
  {"codec_encode_lines", l_encode_lines},
  {"codec_decode_lines", l_decode_lines},
  {NULL, NULL}
};

void lmp__codec_open(lua_State *L) {
  lua_newtable(L);
  lmp__register(L, "lmp.codec.", codec_functions, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_pushnumber(L, LMP_CODEC_SHARE_DEFAULT);
  lua_setfield(L, -2, "share_threshold");
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMP_CODEC_TABLE);
  lua_setfield(L, -2, "codec");
  lmp__register(L, "lmp core.", core_functions, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  /* lmp's errors travel (a worker's error reaches the parent). */
  lua_pushliteral(L, "lmp.Error");
  lmp__error_push_mt(L);
  lmp__codec_register(L, -2, -1);
  lua_pop(L, 2);
}
