/*
 * lmp_process.h -- starting, watching and signalling children
 * (lmp_process.c).
 */
#ifndef LMP_PROCESS_H
#define LMP_PROCESS_H

#include "lmp_internal.h"

/* Adds spawn, getpid, getcwd, chdir and isatty to the core table. */
void lmp__process_open(lua_State *L);

#endif /* LMP_PROCESS_H */
