/*
 * fuzz_decode.c -- libFuzzer target for lmp.codec.decode.
 *
 * One lua_State (fuzz_support.c: malloc'ed heap, JIT off, lmp loaded).
 * Each input is decoded twice under lua_pcall, by
 * lmp.codec.decode(input) and lmp.codec.decode(input, {safe = true}); a
 * value that decodes is encoded again.  The only acceptable failure is a
 * CodecError (an lmp error table with kind == "CodecError"): any other Lua
 * error -- "not enough memory", a C stack overflow, a string error -- is a
 * bug, and aborts, as do crashes and sanitizer reports.  What the safe
 * decode returns must be plain data (SPEC 12): a function, a coroutine, a
 * userdata other than null, a cdata or a loaded module anywhere in it
 * aborts too.
 *
 * LMP_FUZZ_SAFE_ONLY=1 in the environment skips the decode without
 * {safe = true}, which loads the bytecode it is given: that is trusted
 * input by contract (SPEC 2: pipes to one's own children), and LuaJIT's
 * loader over-reads on forged bytecode, which the fuzzer learns to make
 * within minutes (its checksum catches corruption, not forgery).  CI
 * (scripts/test) sets it; run without it to fuzz the trusted decoder's
 * own parsing, knowing that such a crash inside lj_bcread is expected.
 *
 * Seeds: spec/fuzz/corpus/decode, written by spec/fuzz/make_corpus.lua.
 * Built by spec/fuzz/CMakeLists.txt (cmake -DLMP_FUZZ=ON, clang); run by
 * scripts/fuzz.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int ref_decode, ref_encode, ref_safe, ref_plain;
static int safe_only;

static const char *const codec_error[] = {"CodecError", NULL};

static void setup(void) {
  const char *so = getenv("LMP_FUZZ_SAFE_ONLY");
  safe_only = so && *so && *so != '0';
  L = fuzz_new_state("fuzz_decode");
  fuzz_push_support(L);
  lua_getfield(L, -1, "lmp");
  lua_getfield(L, -1, "codec");
  lua_getfield(L, -1, "decode");
  lua_getfield(L, -2, "encode");
  lua_newtable(L);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "safe");
  lua_getfield(L, -6, "plain");
  ref_plain = luaL_ref(L, LUA_REGISTRYINDEX);
  ref_safe = luaL_ref(L, LUA_REGISTRYINDEX);
  ref_encode = luaL_ref(L, LUA_REGISTRYINDEX);
  ref_decode = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!L) setup();
  for (int safe = safe_only; safe <= 1; safe++) {
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_decode);
    lua_pushlstring(L, (const char *)data, size);
    if (safe) lua_rawgeti(L, LUA_REGISTRYINDEX, ref_safe);
    if (lua_pcall(L, safe ? 2 : 1, 1, 0) != 0) {
      fuzz_check_error(L, safe ? "decode(input, {safe = true})" : "decode(input)",
                       size, codec_error);
      continue;
    }
    if (safe) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, ref_plain);
      lua_pushvalue(L, -2);
      lua_call(L, 1, 1);
      if (!lua_isnil(L, -1)) {
        fprintf(stderr, "fuzz_decode: decode(input, {safe = true}) returned "
                "%s, not plain data, from an input of %zu bytes\n",
                lua_tostring(L, -1), size);
        abort();
      }
      lua_pop(L, 1);
    }
    /* What decodes encodes again (or raises a CodecError). */
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref_encode);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0) != 0)
      fuzz_check_error(L, "encode(decode(input))", size, codec_error);
  }
  fuzz_collect(L);
  return 0;
}
