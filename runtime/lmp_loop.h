/*
 * lmp_loop.h -- the event loop lmp waits on.
 *
 * Every blocking lmp call (recv, join, wait, ...) waits by running a libuv
 * loop, so that callbacks of other lmp objects can run while user code
 * waits.  Each lua_State that opened lmp has one loop, kept in a userdata
 * in the registry: closing the state closes the loop and its handles.
 */
#ifndef LMP_LOOP_H
#define LMP_LOOP_H

#include <uv.h>

#include "lmp_internal.h"

typedef struct {
  uv_loop_t loop;
  int closed;
  int in_background;  /* running the background function: do not nest */
} lmp_loop;

/* The loop of the state (created on first use).  Raises on failure. */
lmp_loop *lmp__loop(lua_State *L);

/* Runs the loop until done(arg) is true or `timeout` seconds have passed
 * (by the rule of lmp_time.h: 0 polls once without blocking, a negative
 * timeout or one of LMP_FOREVER_S or more has no limit).  Returns 1 when
 * done, 0 on timeout.  done() is checked before the first wait, so a
 * condition already true returns at once. */
int lmp__loop_wait(lmp_loop *lp, double timeout, int (*done)(void *),
                   void *arg);

/* Waits until one of the n descriptors fds[i] is ready for events[i]
 * (UV_READABLE, UV_WRITABLE), running the loop meanwhile.  On return,
 * ready[i] holds the events seen on fds[i] (a hang-up or error counts as
 * ready).  Returns the number of ready descriptors: 0 on timeout, or a
 * negative LMP_E* code (libuv's are -errno on Unix, hence LMP_E* too). */
int lmp__loop_wait_fds(lmp_loop *lp, const int *fds, const int *events,
                       int *ready, int n, double timeout);

/* As lmp__loop_wait_fds, for a blocking call of user code: while it waits,
 * the state's background work (lmp.Pool collecting results and running
 * callbacks) is served too.  The background function, set in the registry
 * by core.set_background, returns the descriptors it waits on when called
 * with no argument and does its work when called with true. */
int lmp__wait_fds_bg(lua_State *L, lmp_loop *lp, const int *fds,
                     const int *events, int *ready, int n, double timeout);

/* Is the background work of the state (lmp.Pool) waiting on anything? */
int lmp__background_active(lua_State *L);

/* Adds set_background(fn | nil), which sets the background function of
 * the state, to the core table at the top of the stack. */
void lmp__loop_open(lua_State *L);

/* Handles on a state's loop are malloc'ed blocks that begin with the uv
 * handle.  Most are closed by the call that opened them, with
 * lmp__close_and_free.  A handle that stays open after that call (a running
 * child's process handle) carries the callback that ends it: its `data`
 * points to an lmp_handle_closer, and when the state closes, the loop
 * closes the handle with that callback.  A handle whose data is NULL is
 * freed with free() then. */
typedef struct {
  uv_close_cb close_cb;
} lmp_handle_closer;

/* Closes a handle and frees it (with free()) in its close callback. */
void lmp__close_and_free(uv_handle_t *h);

#endif /* LMP_LOOP_H */
