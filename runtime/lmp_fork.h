/*
 * lmp_fork.h -- children made by fork() (lmp_fork.c).
 */
#ifndef LMP_FORK_H
#define LMP_FORK_H

#include "lmp_internal.h"

/* Set in a child made by core.fork: it must end with lmp__fork_exit. */
extern int lmp__forked_child;

/* Flushes stdio and ends the process at once, running no finalizer. */
void lmp__fork_exit(int code);

/* Adds fork and fork_exit to the core table. */
void lmp__fork_open(lua_State *L);

#endif /* LMP_FORK_H */
