/*
 * lmp_process.h -- starting, watching and signalling children
 * (lmp_process.c).
 */
#ifndef LMP_PROCESS_H
#define LMP_PROCESS_H

#include <uv.h>

#include "lmp_internal.h"

/* Adds spawn, getpid, getcwd, chdir to the core table. */
void lmp__process_open(lua_State *L);

/* The close callback of process handles: the state they report into is
 * freed by whichever of it and the Lua object ends last. */
void lmp__process_handle_closed(uv_handle_t *h);

#endif /* LMP_PROCESS_H */
