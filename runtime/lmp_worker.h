/*
 * lmp_worker.h -- the life of a state that lmp owns (lmp_worker.c): the
 * worker's, and the lmp host's.
 */
#ifndef LMP_WORKER_H
#define LMP_WORKER_H

#include "lmp_internal.h"

/* The first argument that makes a process a worker: a parent starts one as
 * `EXE --lmp-worker FD NAME PARENT_PID NFDS` (lmp_process.c), and
 * lmp_worker_main() looks for it. */
#define LMP_WORKER_FLAG "--lmp-worker"

/* Replaces os.exit in a state that lmp owns (the host's, a worker's) with
 * one that closes the state before exiting unless told not to. */
void lmp__install_closing_exit(lua_State *L);

/* Runs core.atexit() if lmp is loaded: daemon children are terminated, the
 * others joined.  Errors are reported on stderr. */
void lmp__run_atexit(lua_State *L);

#endif /* LMP_WORKER_H */
