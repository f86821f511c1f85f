/*
 * lmp_docall.h -- running a chunk for a person (lmp_docall.c); the command
 * line and the prompt of the lmp executable both do (not part of liblmp).
 */
#ifndef LMP_DOCALL_H
#define LMP_DOCALL_H

#include "lmp_internal.h"

#define LMP_PROGNAME "lmp"

/* Runs a chunk at the top of the stack (with nargs arguments below it ...
 * above it, as for lua_call) with a traceback handler and SIGINT turned
 * into a Lua error; on error reports it on stderr.  Returns 0 or 1. */
int lmp__docall(lua_State *L, int nargs, int nresults);

/* Prints the error at the top of the stack as "lmp: message" and pops it. */
void lmp__docall_report(lua_State *L);

#endif /* LMP_DOCALL_H */
