/*
 * lmp_proto.h -- fresh closures of received bytecode that share one
 * prototype (lmp_proto.c).
 */
#ifndef LMP_PROTO_H
#define LMP_PROTO_H

#include "lmp_internal.h"

/* Pushes a new closure of the LuaJIT bytecode code[0..len), its upvalues
 * nil, and returns 0; or pushes an error message and returns -1.  Closures
 * of the same bytecode share one prototype. */
int lmp__proto_closure(lua_State *L, const char *code, size_t len);

#endif /* LMP_PROTO_H */
