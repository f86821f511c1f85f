/*
 * fuzz_support.c -- the shared half of the libFuzzer targets (see
 * fuzz_support.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <luajit.h>

#include "fuzz_support.h"
#include "lmp.h"

/* The Lua heap may not stay larger than this after a full collection. */
#define HEAP_LIMIT_KB (768 * 1024)

static const char *target = "fuzz";
static lua_State *state;
static int support_ref = LUA_NOREF;
static unsigned long inputs;

/* The Lua heap comes from malloc, not from LuaJIT's own mmap'ed arenas
 * (a GC64 LuaJIT takes the host's allocator).  AddressSanitizer then
 * checks what the C code does with Lua objects: the decoder reads its
 * input straight from a Lua string, which has a redzone only here.  And
 * LeakSanitizer, which looks for pointers in the memory it knows, finds
 * the C buffers that Lua objects own (the codec's cached encoding
 * context, a Connection's buffers): in LuaJIT's arenas it cannot, and
 * reports them as leaked, or not, depending on what is left on the stack.
 * The JIT is off for the same reason: its trace buffers are held by
 * biased pointers, which LeakSanitizer does not recognise. */
static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

/* Closing the state at exit runs the __gc of every lmp object left, so
 * that the exit-time leak check sees a clean heap. */
static void close_state(void) {
  if (state) lua_close(state);
  state = NULL;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s)", luaL_typename(L, 1));
  }
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_pushstring(L, msg);
  lua_pushinteger(L, 2);
  lua_call(L, 2, 1);
  return 1;
}

static const char support_lua[] =
  "local lmp = require 'lmp'\n"
  "lmp.codec.register('fuzz.Point', {__index = {}})\n"
  "package.loaded['fuzz_mod'] = {answer = 42}\n"
  "local null, next, type = lmp.null, next, type\n"
  "local S = {lmp = lmp}\n"
  /* Metatables are not looked into: safe mode attaches registered ones
   * only, by name. */
  "local function walk(v, seen, modules)\n"
  "  local t = type(v)\n"
  "  if t == 'table' then\n"
  "    if seen[v] then return end\n"
  "    if modules[v] then return 'a loaded module' end\n"
  "    seen[v] = true\n"
  "    for k, x in next, v do\n"
  "      local why = walk(k, seen, modules) or walk(x, seen, modules)\n"
  "      if why then return why end\n"
  "    end\n"
  "  elseif t ~= 'nil' and t ~= 'boolean' and t ~= 'number' and t ~= 'string'\n"
  "         and v ~= null then\n"
  "    return 'a ' .. t\n"
  "  end\n"
  "end\n"
  "function S.plain(v)\n"
  "  local modules = {}\n"
  "  for _, m in next, package.loaded do modules[m] = true end\n"
  "  return walk(v, {}, modules)\n"
  "end\n"
  "function S.lmp_error(e, kinds)\n"
  "  return lmp.is_error(e) and type(e.message) == 'string' and\n"
  "         kinds[e.kind] == true\n"
  "end\n"
  "return S\n";

lua_State *fuzz_new_state(const char *who) {
  lua_State *L = lua_newstate(fuzz_alloc, NULL);
  target = who;
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create a Lua state\n", target);
    abort();
  }
  state = L;
  atexit(close_state);
  luaL_openlibs(L);
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  lmp_preload(L);
  lua_pushcfunction(L, traceback);
  if (luaL_loadbuffer(L, support_lua, sizeof(support_lua) - 1, "=fuzz_support") ||
      lua_pcall(L, 0, 1, -2)) {
    fprintf(stderr, "%s: setup failed: %s\n", target, lua_tostring(L, -1));
    abort();
  }
  support_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return L;
}

void fuzz_run(lua_State *L, const char *chunk, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;  /* the arguments are above base */
  lua_pushcfunction(L, traceback);
  lua_insert(L, base + 1);
  if (luaL_loadbuffer(L, chunk, strlen(chunk), "=fuzz_chunk")) {
    fprintf(stderr, "%s: %s\n", target, lua_tostring(L, -1));
    abort();
  }
  lua_insert(L, base + 2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, support_ref);
  lua_insert(L, base + 3);
  if (lua_pcall(L, nargs + 1, nresults, base + 1)) {
    fprintf(stderr, "%s: %s\n", target, lua_tostring(L, -1));
    abort();
  }
  lua_remove(L, base + 1);
}

void fuzz_check_error(lua_State *L, const char *what, size_t size,
                      const char *const kinds[]) {
  const char *kind = NULL, *msg, *type = luaL_typename(L, -1);
  int i;
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "kind");
    lua_getfield(L, -2, "message");
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING)
      kind = lua_tostring(L, -2);
    for (i = 0; kind && kinds[i]; i++)
      if (strcmp(kind, kinds[i]) == 0) {
        lua_pop(L, 2);
        return;
      }
    lua_pop(L, 2);
  }
  msg = luaL_callmeta(L, -1, "__tostring") ? lua_tostring(L, -1)
                                            : lua_tostring(L, -1);
  fprintf(stderr, "%s: %s raised an unexpected error: %s (a %s), input of "
          "%zu bytes\n", target, what, msg ? msg : "?", type, size);
  abort();
}

void fuzz_collect(lua_State *L) {
  lua_settop(L, 0);
  if (++inputs % 64 == 0 || lua_gc(L, LUA_GCCOUNT, 0) > HEAP_LIMIT_KB / 4) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (lua_gc(L, LUA_GCCOUNT, 0) > HEAP_LIMIT_KB) {
      fprintf(stderr, "%s: the Lua heap holds %d KB after a full collection\n",
              target, lua_gc(L, LUA_GCCOUNT, 0));
      abort();
    }
  } else {
    lua_gc(L, LUA_GCSTEP, 0);
  }
}
