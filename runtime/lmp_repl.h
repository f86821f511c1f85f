/*
 * lmp_repl.h -- the interactive prompt of the lmp executable (lmp_repl.c).
 */
#ifndef LMP_REPL_H
#define LMP_REPL_H

#include "lmp_internal.h"

/* The read-eval-print loop, on stdin/stdout; returns when input ends. */
void lmp__repl(lua_State *L);

#endif /* LMP_REPL_H */
