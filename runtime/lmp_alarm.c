/*
 * lmp_alarm.c -- the soft deadline of a Pool task, inside its worker.
 *
 * core.soft_deadline(seconds) arms a one-shot timer (setitimer, SIGALRM).
 * When it fires, the signal handler sets a Lua hook -- the one thing a
 * handler may do to a running state, as lua.c and luajit.c do for Ctrl-C
 * -- and the hook raises an lmp TimeoutError at the next instruction the
 * interpreter runs, so that the task can clean up in a pcall.  A loop that
 * the JIT compiled and that calls nothing does not leave its trace to run
 * the hook: the pool's hard deadline ends it.  core.soft_deadline(nil)
 * disarms the timer and puts back the hook that was there before.
 *
 * A worker runs one task at a time on one state, hence the statics.
 */
#include <signal.h>
#include <string.h>
#include <sys/time.h>

#include "lmp_alarm.h"
#include "lmp_error.h"
#include "lmp_time.h"

static lua_State *armed_state;        /* the state whose task has a deadline */
static volatile sig_atomic_t armed;   /* the timer may fire for it */
static double armed_seconds;          /* for the message */
static lua_Hook saved_hook;           /* the user's hook, put back after */
static int saved_mask, saved_count;

static void restore_hook(lua_State *L) {
  lua_sethook(L, saved_hook, saved_mask, saved_count);
}

static void on_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  restore_hook(L);
  if (!armed) return;  /* disarmed between the signal and this hook */
  armed = 0;
  lmp__error_raise(L, "TimeoutError",
                   "the task's soft timeout (%g s) expired", armed_seconds);
}

static void on_alarm(int sig) {
  (void)sig;
  if (armed && armed_state)
    lua_sethook(armed_state, on_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void set_timer(double seconds) {
  struct itimerval it;
  memset(&it, 0, sizeof(it));
  it.it_value.tv_sec = (time_t)seconds;
  it.it_value.tv_usec = (suseconds_t)((seconds - (double)it.it_value.tv_sec) * 1e6);
  /* 0 disarms: a zero deadline fires at once instead. */
  if (seconds > 0 && it.it_value.tv_sec == 0 && it.it_value.tv_usec == 0)
    it.it_value.tv_usec = 1;
  setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm(lua_State *L) {
  sigset_t alrm, old;
  sigemptyset(&alrm);
  sigaddset(&alrm, SIGALRM);
  sigprocmask(SIG_BLOCK, &alrm, &old);  /* no handler between the steps */
  set_timer(0);
  if (armed || lua_gethook(L) == on_hook) restore_hook(L);
  armed = 0;
  armed_state = NULL;
  sigprocmask(SIG_SETMASK, &old, NULL);
}

/* core.soft_deadline(seconds | nil) */
static int l_soft_deadline(lua_State *L) {
  static int installed;
  double seconds;
  if (lua_isnoneornil(L, 1)) {
    disarm(L);
    return 0;
  }
  seconds = lmp__timeout_arg(L, 1, LMP_FOREVER);
  disarm(L);
  if (seconds < 0) return 0;  /* for ever: nothing to arm */
  if (!installed) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0)
      return lmp__error_raise(L, "OSError", "soft_deadline: sigaction failed");
    installed = 1;
  }
  /* LuaJIT keeps one hook for the whole state, so L serves every
   * coroutine the task runs; the worker's loop, which calls this, outlives
   * the task. */
  saved_hook = lua_gethook(L);
  saved_mask = lua_gethookmask(L);
  saved_count = lua_gethookcount(L);
  armed_state = L;
  armed_seconds = seconds;
  armed = 1;
  set_timer(seconds);
  return 0;
}

void lmp__alarm_open(lua_State *L) {
  lua_pushcfunction(L, l_soft_deadline);
  lua_setfield(L, -2, "soft_deadline");
}
