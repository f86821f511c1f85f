/*
 * lmp_error.c -- error codes for C callers, error objects for Lua callers,
 * and the traceback handler every protected call shares.
 *
 * A Lua-visible lmp error is a table {kind = "ValueError", message = "..."}
 * with one shared metatable, so `tostring(e)` reads "lmp.ValueError: ..."
 * and code can branch on e.kind.  The kinds are listed once, in lmp.errors
 * (lmp_module.c); the error codes of C functions once, in lmp.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lmp_error.h"
#include "lmp_platform.h"

#define LMP_ERROR_MT "lmp.Error"

const char *lmp_version(void) {
  return LMP_VERSION_STRING;
}

const char *lmp_strerror(int err) {
  switch (err) {
#define XX(name, code, text) case LMP_E##name: return text;
    LMP_ERRNO_MAP(XX)
#undef XX
    case 0: return "success";
  }
  if (err < 0 && err > -4000) return strerror(-err);
  return "unknown error";
}

const char *lmp_err_name(int err) {
  const char *name;
  switch (err) {
#define XX(name, code, text) case LMP_E##name: return "LMP_E" #name;
    LMP_ERRNO_MAP(XX)
#undef XX
    case 0: return "LMP_OK";
  }
  if (err < 0 && err > -4000 && (name = lmp__errno_name(-err)) != NULL)
    return name;
  return "LMP_EUNKNOWN";
}

static void push_errorv(lua_State *L, const char *kind, const char *fmt,
                       va_list ap) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  lmp__error_push_mt(L);
  lua_setmetatable(L, -2);
}

void lmp__error_push(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
}

int lmp__error_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_errorv(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

/* __tostring: "lmp.<kind>: <message>", then the remote traceback if any.
 * It never raises: it describes whatever it is given. */
static int error_tostring(lua_State *L) {
  if (!lua_istable(L, 1)) {
    lua_pushliteral(L, "lmp.Error");
    return 1;
  }
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "lmp.%s: %s", lua_isstring(L, 2) ? lua_tostring(L, 2) : "Error",
                  lua_isstring(L, 3) ? lua_tostring(L, 3) : "");
  lua_getfield(L, 1, "traceback");
  if (lua_isstring(L, -1)) {
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
  }
  return 1;
}

void lmp__error_push_mt(lua_State *L) {
  if (luaL_newmetatable(L, LMP_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "lmp.Error");
    lua_setfield(L, -2, "__name");
  }
}

/* Converts the value at `idx` to a message a person can read. */
static const char *error_message(lua_State *L, int idx) {
  idx = lmp__absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tostring(L, idx);
  if (luaL_callmeta(L, idx, "__tostring") && lua_isstring(L, -1)) {
    lua_replace(L, idx);
    return lua_tostring(L, idx);
  }
  if (lua_isnumber(L, idx)) return lua_tostring(L, idx);
  lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  lua_replace(L, idx);
  return lua_tostring(L, idx);
}

int lmp__traceback(lua_State *L) {
  const char *msg;
  /* error() with no value is a quiet way to fail (busted exits like this
   * on Lua 5.1): keep it nil so that nothing is reported. */
  if (lua_isnoneornil(L, 1)) return 1;
  msg = error_message(L, 1);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int lmp__pcall_traceback(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  int status;
  lua_pushcfunction(L, lmp__traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}

void lmp__report(lua_State *L, const char *prefix) {
  const char *msg;
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  msg = error_message(L, -1);
  fprintf(stderr, "%s%s%s\n", prefix ? prefix : "", prefix ? ": " : "", msg);
  fflush(stderr);
  lua_pop(L, 1);
}
