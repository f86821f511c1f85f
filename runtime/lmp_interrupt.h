/*
 * lmp_interrupt.h -- Ctrl-C in the middle of a blocking lmp call
 * (lmp_interrupt.c).
 */
#ifndef LMP_INTERRUPT_H
#define LMP_INTERRUPT_H

#include <signal.h>

#include "lmp_internal.h"

/* Raised by the lmp host's SIGINT handler (lmp_docall.c), cleared when
 * the interrupt is raised as an error.  While it is up, waits return
 * LMP_EINTR instead of looking again after the signal. */
extern volatile sig_atomic_t lmp__interrupted;

/* The hook the host set to raise the interrupt in running Lua code:
 * removed when a wait raises it instead. */
extern lua_Hook lmp__interrupt_hook;

/* Clears the flag (and the hook) and raises lmp.KeyboardInterrupt. */
int lmp__interrupt_raise(lua_State *L);

void lmp__interrupt_open(lua_State *L);

#endif /* LMP_INTERRUPT_H */
