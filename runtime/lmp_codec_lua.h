/*
 * lmp_codec_lua.h -- lmp.codec, the Lua face of the codec
 * (lmp_codec_lua.c).
 */
#ifndef LMP_CODEC_LUA_H
#define LMP_CODEC_LUA_H

#include "lmp_internal.h"

/* Adds lmp.codec and the codec's core functions to the table at the top
 * of the stack. */
void lmp__codec_open(lua_State *L);

#endif /* LMP_CODEC_LUA_H */
