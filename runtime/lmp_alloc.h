/*
 * lmp_alloc.h -- the Lua states of lmp's own processes (lmp_alloc.c).
 */
#ifndef LMP_ALLOC_H
#define LMP_ALLOC_H

#include "lmp_internal.h"

/* A new Lua state whose big blocks (64 KiB and more) come
 * from malloc, the rest from LuaJIT's own allocator; NULL if out of
 * memory. */
lua_State *lmp__state_new(void);

/* Closes a state made by lmp__state_new. */
void lmp__state_close(lua_State *L);

#endif /* LMP_ALLOC_H */
