/*
 * lmp_arg.c -- argument checks that raise lmp TypeErrors naming the
 * function (see lmp_arg.h).
 */
#include <string.h>

#include "lmp_arg.h"
#include "lmp_error.h"

/* function -> public name, weak keys: a function that is gone is
 * forgotten. */
#define NAMES_KEY "lmp.names"

static void push_names(lua_State *L) {
  lmp__registry_table(L, NAMES_KEY, "k");
}

void lmp__register(lua_State *L, const char *prefix, const luaL_Reg *l,
                   int nup) {
  int i, names;
  push_names(L);
  lua_insert(L, -(nup + 1));
  names = lua_gettop(L) - nup;
  for (; l->name; l++) {
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_pushvalue(L, -1);
    lua_pushfstring(L, "%s%s", prefix, l->name);
    lua_rawset(L, names);              /* names[f] = prefix .. name */
    lua_setfield(L, names - 1, l->name);
  }
  lua_pop(L, nup + 1);
}

void lmp__push_class(lua_State *L, const char *tname, const luaL_Reg *meta,
                     const luaL_Reg *methods, lua_CFunction index) {
  static const luaL_Reg none[] = {{NULL, NULL}};
  const char *name = strncmp(tname, "lmp.", 4) == 0 ? tname + 4 : tname;
  const char *dot, *colon;
  int mt;
  if (!luaL_newmetatable(L, tname)) return;
  mt = lua_gettop(L);
  dot = lua_pushfstring(L, "%s.", name);
  colon = lua_pushfstring(L, "%s:", name);
  lua_pushvalue(L, mt);
  lmp__register(L, dot, meta ? meta : none, 0);
  lua_pop(L, 1);
  lua_newtable(L);
  lmp__register(L, colon, methods ? methods : none, 0);
  if (index) {
    luaL_Reg index_fn[] = {{"__index", NULL}, {NULL, NULL}};
    index_fn[0].func = index;
    lua_pushvalue(L, mt);
    lua_insert(L, -2);
    lmp__register(L, dot, index_fn, 1);  /* upvalue: the methods */
    lua_pop(L, 1);
  } else {
    lua_setfield(L, mt, "__index");
  }
  lua_settop(L, mt);
}

/* Pushes the public name of the running C function; "?" if it has none
 * (a function lmp did not register, or no function at all). */
static const char *push_running_name(lua_State *L, int *method) {
  lua_Debug ar;
  *method = 0;
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "nf", &ar)) {
    push_names(L);
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    lua_replace(L, -3);
    lua_pop(L, 1);
    if (lua_isstring(L, -1)) {
      *method = strchr(lua_tostring(L, -1), ':') != NULL;
      return lua_tostring(L, -1);
    }
    lua_pop(L, 1);
    /* Not registered: the name Lua called it by, as luaL_argerror does. */
    *method = ar.namewhat != NULL && strcmp(ar.namewhat, "method") == 0;
    lua_pushstring(L, ar.name ? ar.name : "?");
    return lua_tostring(L, -1);
  }
  lua_pushliteral(L, "?");
  return lua_tostring(L, -1);
}

int lmp__argerror(lua_State *L, int arg, const char *extramsg) {
  int method;
  const char *name = push_running_name(L, &method);
  if (method && --arg == 0)
    return lmp__error_raise(L, "TypeError", "%s: bad self (%s)", name,
                            extramsg);
  return lmp__error_raise(L, "TypeError", "%s: bad argument #%d (%s)", name,
                          arg, extramsg);
}

int lmp__typeerror(lua_State *L, int arg, const char *tname) {
  return lmp__argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname,
                                                luaL_typename(L, arg)));
}

lua_Number lmp__check_number(lua_State *L, int arg) {
  if (!lua_isnumber(L, arg)) lmp__typeerror(L, arg, "number");
  return lua_tonumber(L, arg);
}

lua_Integer lmp__check_integer(lua_State *L, int arg) {
  if (!lua_isnumber(L, arg)) lmp__typeerror(L, arg, "number");
  return lua_tointeger(L, arg);
}

const char *lmp__check_lstring(lua_State *L, int arg, size_t *len) {
  const char *s = lua_tolstring(L, arg, len);
  if (s == NULL) lmp__typeerror(L, arg, "string");
  return s;
}

void lmp__check_type(lua_State *L, int arg, int type) {
  if (lua_type(L, arg) != type) lmp__typeerror(L, arg, lua_typename(L, type));
}

void lmp__check_any(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNONE) lmp__argerror(L, arg, "value expected");
}

void *lmp__check_udata(lua_State *L, int arg, const char *tname) {
  void *p = luaL_testudata(L, arg, tname);
  if (p == NULL) lmp__typeerror(L, arg, tname);
  return p;
}

lua_Number lmp__opt_number(lua_State *L, int arg, lua_Number def) {
  return lua_isnoneornil(L, arg) ? def : lmp__check_number(L, arg);
}

lua_Integer lmp__opt_integer(lua_State *L, int arg, lua_Integer def) {
  return lua_isnoneornil(L, arg) ? def : lmp__check_integer(L, arg);
}

const char *lmp__opt_lstring(lua_State *L, int arg, const char *def,
                             size_t *len) {
  if (lua_isnoneornil(L, arg)) {
    if (len) *len = def ? strlen(def) : 0;
    return def;
  }
  return lmp__check_lstring(L, arg, len);
}
