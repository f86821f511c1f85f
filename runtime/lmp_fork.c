/*
 * lmp_fork.c -- children made by fork(), for the "fork" start method.
 *
 * core.fork() forks this process: the parent gets a handle with the same
 * face as a spawned child's (pid, exitcode, sentinel, wait, signal,
 * close); the child gets nil and goes on from the same point in the same
 * Lua code, which then runs the target (lua/lmp/process.lua).  libuv does
 * not know these children: its SIGCHLD handler reaps only the processes it
 * spawned, so this file reaps its own, when the pidfd says one ended.
 *
 * In the child, only the forking thread exists.  The event loop is made
 * fit again with uv_loop_fork (the epoll instance is the parent's
 * otherwise), and the child dies with its parent, as a spawned one does.
 * A forked child must never close its Lua state: the finalizers of what
 * it inherited would act on the parent's pools, listeners and children.
 * So it ends with lmp__fork_exit, which flushes stdio and calls _exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_fork.h"
#include "lmp_interrupt.h"
#include "lmp_loop.h"
#include "lmp_platform.h"
#include "lmp_time.h"

#define FORKED_MT "lmp.ForkedHandle"
#define RUNNING INT_MIN

int lmp__forked_child;

typedef struct {
  int pid;
  int pidfd;     /* -1 once closed, or if pidfd_open is missing */
  int exitcode;  /* RUNNING until reaped */
  lmp_loop *lp;
} forked;

/* Collects the child's exit if it has ended (blocking: wait for it). */
static int reap(forked *f, int block) {
  int status;
  pid_t r;
  if (f->exitcode != RUNNING) return 1;
  do r = waitpid(f->pid, &status, block ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR && !lmp__interrupted);
  if (r == f->pid)
    f->exitcode = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
  else if (r < 0 && errno == ECHILD)
    f->exitcode = 255;  /* reaped by someone else (a SIGCHLD handler of the host) */
  return f->exitcode != RUNNING;
}

void lmp__fork_exit(int code) {
  fflush(NULL);
  _exit(code & 0xff);
}

#define DROP_MAX 250

/* Reads the integers of the table at idx (if any) into fds; returns how
 * many. */
static int fd_list(lua_State *L, int idx, int *fds) {
  int i, n = lua_istable(L, idx) ? (int)lua_objlen(L, idx) : 0;
  if (n > DROP_MAX) lmp__error_raise(L, "ValueError", "fork: more than %d descriptors", DROP_MAX);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    fds[i] = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  return n;
}

/* core.fork([drop]) -> handle in the parent, nil in the child.  The
 * child first closes the descriptors listed in `drop` (the forkserver's
 * own, lua/lmp/forkserver.lua). */
static int l_fork(lua_State *L) {
  lmp_loop *lp = lmp__loop(L);
  pid_t parent = getpid(), pid;
  forked *f;
  int drop[DROP_MAX], ndrop, i;
  ndrop = fd_list(L, 1, drop);
  fflush(NULL);  /* or what is buffered would be written twice */
  f = lua_newuserdata(L, sizeof(*f));
  f->pid = 0;
  f->pidfd = -1;
  f->exitcode = RUNNING;
  f->lp = lp;
  luaL_getmetatable(L, FORKED_MT);
  lua_setmetatable(L, -2);
  pid = fork();
  if (pid < 0) return lmp__error_raise(L, "OSError", "fork: %s", strerror(errno));
  if (pid == 0) {
    lmp__forked_child = 1;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) lmp__fork_exit(1);  /* the parent is already gone */
    for (i = 0; i < ndrop; i++) close(drop[i]);
    uv_loop_fork(&lp->loop);
    f->exitcode = 0;  /* the copy of the handle is no child of ours */
    lua_pushnil(L);
    return 1;
  }
  f->pid = (int)pid;
#ifdef SYS_pidfd_open
  f->pidfd = lmp__fd_above_stdio((int)syscall(SYS_pidfd_open, pid, 0));
#endif
  return 1;
}

static forked *check_forked(lua_State *L) {
  return lmp__check_udata(L, 1, FORKED_MT);
}

/* handle:wait([timeout]) -> exitcode | nil */
static int forked_wait(lua_State *L) {
  forked *f = check_forked(L);
  double deadline = lmp__deadline(lmp__timeout_arg(L, 2, LMP_FOREVER));
  while (!reap(f, 0)) {
    double left = lmp__remaining(deadline);
    int ev = UV_READABLE, ready, r;
    if (left == 0) break;
    if (f->pidfd >= 0) {
      r = lmp__wait_fds_bg(L, f->lp, &f->pidfd, &ev, &ready, 1, left);
      if (r == LMP_EINTR) return lmp__interrupt_raise(L);
      if (r < 0) return lmp__error_raise(L, "OSError", "join: %s", lmp_strerror(r));
    } else {
      usleep(1000);  /* no pidfd: look every millisecond */
      if (lmp__interrupted) return lmp__interrupt_raise(L);
    }
  }
  if (f->exitcode == RUNNING) lua_pushnil(L);
  else lua_pushinteger(L, f->exitcode);
  return 1;
}

/* handle:signal(signum) -> true | nil, message */
static int forked_signal(lua_State *L) {
  forked *f = check_forked(L);
  int sig = (int)lmp__check_integer(L, 2);
  if (!reap(f, 0) && kill(f->pid, sig) != 0 && errno != ESRCH) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int forked_close(lua_State *L) {
  forked *f = check_forked(L);
  if (!reap(f, 0))
    return lmp__error_raise(L, "ValueError", "cannot close a process that is "
                            "still running (pid %d)", f->pid);
  if (f->pidfd >= 0) close(f->pidfd);
  f->pidfd = -1;
  return 0;
}

/* A handle collected while its child runs: the child is left to end on
 * its own, and reaped now if it has. */
static int forked_gc(lua_State *L) {
  forked *f = check_forked(L);
  if (f->pidfd >= 0) close(f->pidfd);
  f->pidfd = -1;
  if (f->pid > 0) reap(f, 0);
  return 0;
}

static int forked_index(lua_State *L) {
  forked *f = check_forked(L);
  const char *k = lmp__check_string(L, 2);
  if (strcmp(k, "pid") == 0) {
    lua_pushinteger(L, f->pid);
  } else if (strcmp(k, "sentinel") == 0) {
    if (f->pidfd >= 0) lua_pushinteger(L, f->pidfd);
    else lua_pushnil(L);
  } else if (strcmp(k, "exitcode") == 0) {
    if (reap(f, 0)) lua_pushinteger(L, f->exitcode);
    else lua_pushnil(L);
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
  }
  return 1;
}

/* core.fork_exit(code): the end of a forked child (see above). */
static int l_fork_exit(lua_State *L) {
  lmp__fork_exit((int)lmp__opt_integer(L, 1, 0));
  return 0;
}

void lmp__fork_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", forked_gc},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"wait", forked_wait},
    {"signal", forked_signal},
    {"close", forked_close},
    {NULL, NULL}
  };
  static const luaL_Reg functions[] = {
    {"fork", l_fork},
    {"fork_exit", l_fork_exit},
    {NULL, NULL}
  };
  lmp__push_class(L, FORKED_MT, meta, methods, forked_index);
  lua_pop(L, 1);
  lmp__register(L, "lmp core.", functions, 0);
}
