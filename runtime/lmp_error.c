/*
 * lmp_error.c -- error codes for C callers, error objects for Lua callers,
 * and the traceback handler every protected call shares.
 *
 * A Lua-visible lmp error is a table {kind = "ValueError", message = "..."}
 * with one shared metatable, so `tostring(e)` reads "lmp.ValueError: ..."
 * and code can branch on e.kind.  The kinds are listed once, below; the
 * error codes of C functions once, in lmp.h.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lmp_error.h"
#include "lmp_platform.h"

#define LMP_ERROR_MT "lmp.Error"

/* Every kind of error lmp raises; lmp.errors maps each name to itself. */
static const char *const error_kinds[] = {
  "AuthenticationError", "BufferTooShort", "CodecError", "IndexError",
  "OSError", "ProcessError", "RemoteError", "TimeoutError", "TypeError",
  "ValueError", "WorkerLost", NULL
};

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

static void push_error_mt(lua_State *L);

static void push_errorv(lua_State *L, const char *kind, const char *fmt,
                       va_list ap) {
  lua_createtable(L, 0, 2);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  push_error_mt(L);
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

/* __tostring: "lmp.<kind>: <message>", then the remote traceback if any. */
static int error_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "lmp.%s: %s", luaL_optstring(L, 2, "Error"),
                  luaL_optstring(L, 3, ""));
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

static void push_error_mt(lua_State *L) {
  if (luaL_newmetatable(L, LMP_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "lmp.Error");
    lua_setfield(L, -2, "__name");
  }
}

/* lmp.error(kind, message [, fields]) -> error table.  Lua modules of lmp
 * build their errors with it; extra fields (traceback, pid, ...) are copied. */
static int l_error_new(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *message = luaL_checkstring(L, 2);
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
  if (lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, LMP_ERROR_MT);
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
  lua_pushstring(L, lmp_strerror((int)luaL_checkinteger(L, 1)));
  return 1;
}

void lmp__error_open(lua_State *L) {
  int i;
  push_error_mt(L);
  lua_pop(L, 1);
  /* core.E: the codes of LMP_ERRNO_MAP by name (E.TIMEDOUT), for the Lua
   * code that calls C through the FFI. */
  lua_newtable(L);
#define XX(name, code, text) \
  lua_pushinteger(L, LMP_E##name); \
  lua_setfield(L, -2, #name);
  LMP_ERRNO_MAP(XX)
#undef XX
  lua_setfield(L, -2, "E");
  lua_pushcfunction(L, l_strerror);
  lua_setfield(L, -2, "strerror");
  lua_newtable(L);
  for (i = 0; error_kinds[i]; i++) {
    lua_pushstring(L, error_kinds[i]);
    lua_setfield(L, -2, error_kinds[i]);
  }
  lua_setfield(L, -2, "errors");
  lua_pushcfunction(L, l_error_new);
  lua_setfield(L, -2, "error");
  lua_pushcfunction(L, l_is_error);
  lua_setfield(L, -2, "is_error");
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
