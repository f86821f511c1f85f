/*
 * lmp_interrupt.c -- Ctrl-C in the middle of a blocking lmp call.
 *
 * The lmp host turns SIGINT into an error in the Lua code that runs (a
 * hook, lmp_docall.c).  A call blocked in a wait runs no Lua code, and the
 * error must not strike in the middle of lmp's own bookkeeping either (a
 * reply taken and not yet recorded would be lost).  So the handler also
 * raises lmp__interrupted: a wait that the signal cut short returns
 * LMP_EINTR, the call puts its state back in order and raises a
 * KeyboardInterrupt, and a pool call cancels its tasks on the way out
 * (lua/lmp/pool/result.lua).
 */
#include <string.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"

volatile sig_atomic_t lmp__interrupted;
lua_Hook lmp__interrupt_hook;

int lmp__interrupt_raise(lua_State *L) {
  lmp__interrupted = 0;
  if (lmp__interrupt_hook != NULL && lua_gethook(L) == lmp__interrupt_hook)
    lua_sethook(L, NULL, 0, 0);
  return lmp__error_raise(L, "KeyboardInterrupt", "interrupted");
}

/* core.interrupt_raise(): the pump's safe point, when the flag is up. */
static int l_interrupt_raise(lua_State *L) {
  return lmp__interrupt_raise(L);
}

/* core.ignore_interrupts(): for pool workers.  Ctrl-C at a terminal
 * reaches the whole process group; what it means is the parent's to
 * decide (it cancels the call it was waiting for), and a worker goes on. */
static int l_ignore_interrupts(lua_State *L) {
  LMP_UNUSED(L);
  signal(SIGINT, SIG_IGN);
  return 0;
}

/* core.default_interrupts(): a forkserver's child gets SIGINT's default
 * action back, as a spawned child has it. */
static int l_default_interrupts(lua_State *L) {
  LMP_UNUSED(L);
  signal(SIGINT, SIG_DFL);
  return 0;
}

/* SIGTERM, for a process that ends cleanly when asked to (lmp worker):
 * the handler only raises a flag, which the process looks at between
 * its waits; a wait it cuts short just looks again. */
static volatile sig_atomic_t terminate_requested;

static void on_terminate(int sig) {
  LMP_UNUSED(sig);
  terminate_requested = 1;
}

/* core.catch_terminate() */
static int l_catch_terminate(lua_State *L) {
  struct sigaction sa;
  LMP_UNUSED(L);
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_terminate;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  return 0;
}

/* core.terminate_requested() -> whether SIGTERM came since
 * catch_terminate */
static int l_terminate_requested(lua_State *L) {
  lua_pushboolean(L, terminate_requested != 0);
  return 1;
}

void lmp__interrupt_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"interrupt_raise", l_interrupt_raise},
    {"ignore_interrupts", l_ignore_interrupts},
    {"default_interrupts", l_default_interrupts},
    {"catch_terminate", l_catch_terminate},
    {"terminate_requested", l_terminate_requested},
    {NULL, NULL}
  };
  lmp__register(L, "lmp core.", functions, 0);
  /* The flag's address, for FFI readers: the pump reads it at each turn,
   * and a call into C there would end a compiled trace. */
  lua_pushlightuserdata(L, (void *)&lmp__interrupted);
  lua_setfield(L, -2, "interrupt_flag");
}
