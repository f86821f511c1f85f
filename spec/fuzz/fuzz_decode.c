/*
 * fuzz_decode.c -- libFuzzer target for lmp.codec.decode.
 *
 * One lua_State, created once with the standard libraries and lmp in
 * package.preload.  Each input is decoded twice under lua_pcall, by
 * lmp.codec.decode(input) and lmp.codec.decode(input, {safe = true}); a
 * value that decodes is encoded again.  The only acceptable failure is a
 * CodecError (an lmp error table with kind == "CodecError"): any other Lua
 * error -- "not enough memory", a C stack overflow, a string error -- is a
 * bug, and aborts, as do crashes and sanitizer reports.
 *
 * LMP_FUZZ_SAFE_ONLY=1 in the environment skips the decode without
 * {safe = true} (which loads bytecode): a way to fuzz the rest while a
 * bytecode-loading bug is open.  The default, and CI, decode both ways.
 *
 * Built by spec/fuzz/CMakeLists.txt (cmake -DLMP_FUZZ=ON, clang); run by
 * scripts/fuzz.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int ref_decode, ref_encode, ref_safe;
static unsigned long runs;
static int safe_only;

/* The Lua heap may not grow past this between collections. */
#define HEAP_LIMIT_KB (768 * 1024)

/* Closing the state at exit runs the __gc of whatever the codec keeps in
 * Lua objects: LuaJIT allocates its heap with mmap, where LeakSanitizer
 * does not look for pointers, so memory only reachable from there would
 * otherwise be reported as leaked. */
static void close_state(void) {
  if (L) lua_close(L);
  L = NULL;
}

static void setup(void) {
  const char *so = getenv("LMP_FUZZ_SAFE_ONLY");
  safe_only = so && *so && *so != '0';
  L = luaL_newstate();
  if (!L) abort();
  luaL_openlibs(L);
  lmp_preload(L);
  /* A registered metatable (the seed corpus uses it), a module of our
   * own, and the codec functions. */
  if (luaL_dostring(L,
        "local lmp = require 'lmp'\n"
        "lmp.codec.register('fuzz.Point', {__index = {}})\n"
        "package.loaded['fuzz_mod'] = {answer = 42}\n"
        "return lmp.codec.decode, lmp.codec.encode, {safe = true}")) {
    fprintf(stderr, "fuzz_decode: setup failed: %s\n", lua_tostring(L, -1));
    abort();
  }
  ref_safe = luaL_ref(L, LUA_REGISTRYINDEX);
  ref_encode = luaL_ref(L, LUA_REGISTRYINDEX);
  ref_decode = luaL_ref(L, LUA_REGISTRYINDEX);
  atexit(close_state);
}

/* Aborts unless the error at the top of the stack is a CodecError. */
static void check_error(const char *what, size_t size) {
  int ok = 0;
  if (lua_istable(L, -1)) {
    lua_pushliteral(L, "kind");
    lua_rawget(L, -2);
    lua_pushliteral(L, "message");
    lua_rawget(L, -3);
    ok = lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
         strcmp(lua_tostring(L, -2), "CodecError") == 0;
    lua_pop(L, 2);
  }
  if (!ok) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "fuzz_decode: %s raised a non-CodecError: %s (%s), input of %zu bytes\n",
            what, msg ? msg : "(not a string)", luaL_typename(L, -1), size);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) setup();
  for (int safe = safe_only; safe <= 1; safe++) {
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_decode);
    lua_pushlstring(L, (const char *)data, size);
    if (safe) lua_rawgeti(L, LUA_REGISTRYINDEX, ref_safe);
    if (lua_pcall(L, safe ? 2 : 1, 1, 0) != 0) {
      check_error(safe ? "decode(input, {safe = true})" : "decode(input)", size);
      continue;
    }
    /* What decodes encodes again (or raises a CodecError). */
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_encode);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != 0) check_error("encode(decode(input))", size);
  }
  lua_settop(L, 0);
  if (++runs % 64 == 0 || lua_gc(L, LUA_GCCOUNT, 0) > HEAP_LIMIT_KB / 4) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (lua_gc(L, LUA_GCCOUNT, 0) > HEAP_LIMIT_KB) {
      fprintf(stderr, "fuzz_decode: the Lua heap holds %d KB after a full collection\n",
              lua_gc(L, LUA_GCCOUNT, 0));
      abort();
    }
  } else {
    lua_gc(L, LUA_GCSTEP, 0);
  }
  return 0;
}
