/*
 * lmp_uv.h -- lmp on a host's libuv loop (part of lmp's embedding API; see
 * lmp.h).
 *
 * A host that runs libuv attaches a state to its loop: lmp then puts a
 * poll handle on the state's backend descriptor, a timer for its next
 * deadline, and a prepare handle that keeps the timer up to date, all
 * calling lmp_dispatch().  Callbacks and awaiting coroutines then run from
 * the host's uv_run(), never inside another Lua call on the state.
 */
#ifndef LMP_UV_H
#define LMP_UV_H

#ifdef __cplusplus
extern "C" {
#endif

#include <uv.h>

#include "lmp.h"

/* Attaches L to loop (one loop per state; attaching again to the same
 * loop does nothing).  0, LMP_EBUSY if L is attached to another loop, or
 * a negative LMP_E* code. */
int lmp_uv_attach(lua_State *L, uv_loop_t *loop);

/* Removes lmp's handles from the loop (they are closed; the loop frees
 * them in its next turn).  Done by lua_close(L) too.  Returns 0. */
int lmp_uv_detach(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif /* LMP_UV_H */
