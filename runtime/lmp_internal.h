/*
 * lmp_internal.h -- what every C file of lmp needs and embedders never see:
 * the Lua and lmp headers and the few helpers that stand in for what
 * LuaJIT's Lua 5.1 API lacks.  Each module declares its own functions in
 * its own header (lmp_<module>.h); non-static internal functions are
 * prefixed lmp__.
 */
#ifndef LMP_INTERNAL_H
#define LMP_INTERNAL_H

#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"

#define LMP_UNUSED(x) ((void)(x))

/* --- Lua 5.1 compatibility (LuaJIT lacks these 5.2+ helpers) --------------- */
#define lmp__absindex(L, i) \
  ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)

#endif /* LMP_INTERNAL_H */
