/*
 * lmp_docall.c -- running a chunk for a person at the command line and at
 * the prompt: a traceback on error, Ctrl-C turned into a Lua error, and
 * errors reported on stderr as "lmp: message" (as luajit's docall does).
 */
#include <signal.h>

#include "lmp_docall.h"
#include "lmp_error.h"

void lmp__docall_report(lua_State *L) {
  lmp__report(L, LMP_PROGNAME);
}

/* --- Ctrl-C: turn SIGINT into a Lua error at the next hook ------------------ */

static lua_State *interrupted_state;

static void interrupted_hook(lua_State *L, lua_Debug *ar) {
  LMP_UNUSED(ar);
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void on_sigint(int sig) {
  signal(sig, SIG_DFL);  /* a second Ctrl-C kills the process */
  lua_sethook(interrupted_state, interrupted_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

int lmp__docall(lua_State *L, int nargs, int nresults) {
  int status;
  interrupted_state = L;
  signal(SIGINT, on_sigint);
  status = lmp__pcall_traceback(L, nargs, nresults);
  signal(SIGINT, SIG_DFL);
  if (status != 0) {
    lmp__docall_report(L);
    return 1;
  }
  return 0;
}
