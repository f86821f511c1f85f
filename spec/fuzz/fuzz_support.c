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

/* Loads spec/fuzz/<file> (FUZZ_DIR is spec/fuzz, set by CMake). */
static void load(lua_State *L, const char *file) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", FUZZ_DIR, file);
  if (luaL_loadfile(L, path)) {
    fprintf(stderr, "%s: %s\n", target, lua_tostring(L, -1));
    abort();
  }
}

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
  load(L, "fuzz_support.lua");
  if (lua_pcall(L, 0, 1, -2)) {
    fprintf(stderr, "%s: setup failed: %s\n", target, lua_tostring(L, -1));
    abort();
  }
  support_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return L;
}

void fuzz_push_support(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, support_ref);
}

void fuzz_run(lua_State *L, const char *file, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;  /* the arguments are above base */
  lua_pushcfunction(L, traceback);
  lua_insert(L, base + 1);
  load(L, file);
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
