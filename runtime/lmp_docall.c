/*
 * lmp_docall.c -- running a chunk for a person at the command line and at
 * the prompt: a traceback on error, Ctrl-C turned into a Lua error, and
 * errors reported on stderr as "lmp: message" (as luajit's docall does).
 */
#include <signal.h>
#include <string.h>

#include "lmp_docall.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"

void lmp__docall_report(lua_State *L) {
  lmp__report(L, LMP_PROGNAME);
}

/* --- Ctrl-C: turn SIGINT into a Lua error at the next hook ------------------ */

static lua_State *interrupted_state;

/* Raises the interrupt in the Lua code that runs, unless that code is
 * lmp's own: its state must not be left half changed, so the hook looks
 * again a little later, and lmp's waits raise the interrupt at points where
 * they can (lmp_interrupt.c). */
static void interrupted_hook(lua_State *L, lua_Debug *ar) {
  if (lua_getinfo(L, "S", ar) && strncmp(ar->source, "@lmp/", 5) == 0) {
    lua_sethook(L, interrupted_hook, LUA_MASKCOUNT, 1000);
    return;
  }
  lmp__interrupt_raise(L);
}

static void on_sigint(int sig) {
  LMP_UNUSED(sig);
  /* SA_RESETHAND: a second Ctrl-C kills the process */
  lmp__interrupted = 1;
  lua_sethook(interrupted_state, interrupted_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void handle_sigint(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = handler;
  /* No SA_RESTART: a wait the signal cuts short must see EINTR. */
  sa.sa_flags = handler == SIG_DFL ? 0 : SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

int lmp__docall(lua_State *L, int nargs, int nresults) {
  int status;
  interrupted_state = L;
  lmp__interrupt_hook = interrupted_hook;
  lmp__interrupted = 0;
  handle_sigint(on_sigint);
  status = lmp__pcall_traceback(L, nargs, nresults);
  handle_sigint(SIG_DFL);
  lmp__interrupted = 0;
  if (lua_gethook(L) == interrupted_hook) lua_sethook(L, NULL, 0, 0);
  if (status != 0) {
    lmp__docall_report(L);
    return 1;
  }
  return 0;
}
