/*
 * lmp_process.c -- starting, watching and signalling child processes.
 *
 * A child is started with uv_spawn running the worker executable as
 * `EXE --lmp-worker 3 NAME PARENT_PID NFDS`: fd 3 is its end of a socketpair
 * that carries the bootstrap message, fds 4... are descriptors of lmp
 * objects passed as arguments, 1 and 2 are the parent's, 0 is /dev/null.  libuv reaps the
 * child; its exit is recorded by the exit callback.  The sentinel is a
 * pidfd, readable once the process has ended.
 *
 * Memory: the uv_process_t and the state it reports into are malloc'ed and
 * owned by libuv until the exit callback (or the loop's close) frees them,
 * so collecting the Lua object of a running process is safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"
#include "lmp_frame.h"
#include "lmp_loop.h"
#include "lmp_platform.h"
#include "lmp_process.h"
#include "lmp_time.h"
#include "lmp_worker.h"

#define PROC_MT "lmp.ProcessHandle"
#define RUNNING INT_MIN

typedef struct {
  uv_process_t handle; /* first: the handle's block is the state's */
  int exitcode;        /* RUNNING until the exit callback */
  int handle_closed;
  int orphaned;        /* the Lua object is gone: the close callback frees */
} proc_state;

typedef struct {
  proc_state *st;      /* NULL once closed */
  int exitcode;        /* kept when st goes */
  int pid;
  int pidfd;           /* -1 if none */
  lmp_loop *lp;
} proc;

/* The close callback of process handles, here or from the loop when the
 * state closes (lmp_loop.h): the state they report into is freed by
 * whichever of it and the Lua object ends last.  The Lua object may still
 * look at exitcode: it frees the state then. */
static void handle_closed(uv_handle_t *h) {
  proc_state *st = (proc_state *)h;
  if (st->orphaned) free(st);
  else st->handle_closed = 1;
}

static lmp_handle_closer closer = {handle_closed};

static void on_child_exit(uv_process_t *h, int64_t status, int signal) {
  proc_state *st = (proc_state *)h;
  st->exitcode = signal ? -signal : (int)status;
  uv_close((uv_handle_t *)h, handle_closed);
}

static proc *check_proc(lua_State *L, int idx) {
  proc *p = lmp__check_udata(L, idx, PROC_MT);
  if (p->st == NULL)
    lmp__error_raise(L, "ValueError", "process object is closed");
  return p;
}

/* Sends all of buf on a blocking socket; a child that died early is not an
 * error here (its exit code tells). */
static void send_bootstrap(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    buf += w;
    len -= (size_t)w;
  }
}

/* core.spawn(exe, name, bootstrap, fds) -> handle
 * `fds` lists descriptors the child gets as 4, 5, ...  */
/* The state's closer: a userdata whose finalizer does lmp's work at exit
 * (pools stopped, daemon children terminated, the others joined) when the
 * state is closed without lmp_shutdown: by a host's lua_close, or by a
 * stock luajit at the end of its script.  A closing state runs finalizers
 * newest first, so a closer is made anew after each spawn: it then runs
 * while the objects of the children it must join are still whole.  The
 * closers it replaces do nothing. */
#define CLOSER_KEY "lmp.closer"

static int closer_gc(lua_State *L) {
  int *live = lua_touserdata(L, 1);
  if (*live) {
    *live = 0;
    lmp__run_atexit(L);
  }
  return 0;
}

static void renew_closer(lua_State *L) {
  int *live = lmp__registry_udata(L, CLOSER_KEY);
  if (live) *live = 0;
  live = lmp__registry_udata_new(L, CLOSER_KEY, sizeof(*live), closer_gc);
  *live = 1;
}

static int l_spawn(lua_State *L) {
  const char *exe = lmp__check_string(L, 1);
  const char *name = lmp__check_string(L, 2);
  size_t blen;
  const char *boot = lmp__check_lstring(L, 3, &blen);
  int nfds = lua_istable(L, 4) ? (int)lua_objlen(L, 4) : 0;
  lmp_loop *lp = lmp__loop(L);
  uv_process_options_t opts;
  uv_stdio_container_t *stdio;
  char ppid[32], nfdarg[16], *args[7];
  unsigned char header[LMP_FRAME_HEADER_MAX];
  size_t hlen;
  proc *p;
  proc_state *st;
  int sv[2], i, err, held;

  p = lua_newuserdata(L, sizeof(*p));
  memset(p, 0, sizeof(*p));
  p->pidfd = -1;
  p->lp = lp;
  luaL_getmetatable(L, PROC_MT);
  lua_setmetatable(L, -2);
  stdio = lua_newuserdata(L, sizeof(*stdio) * (size_t)(4 + nfds));
  st = calloc(1, sizeof(*st));
  if (st == NULL) return lmp__error_raise(L, "OSError", "start: out of memory");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    free(st);
    return lmp__error_raise(L, "OSError", "start: %s", strerror(errno));
  }
  sv[0] = lmp__fd_above_stdio(sv[0]);
  sv[1] = lmp__fd_above_stdio(sv[1]);
  if (sv[0] < 0 || sv[1] < 0) {
    err = errno;
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    free(st);
    return lmp__error_raise(L, "OSError", "start: %s", strerror(err));
  }
  /* stdout and stderr are the parent's; stdin is /dev/null, as in Python,
   * so that children do not compete with a REPL for the terminal. */
  stdio[0].flags = UV_IGNORE;
  for (i = 1; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = sv[1];
  for (i = 0; i < nfds; i++) {
    lua_rawgeti(L, 4, i + 1);
    stdio[4 + i].flags = UV_INHERIT_FD;
    stdio[4 + i].data.fd = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  snprintf(ppid, sizeof(ppid), "%d", (int)getpid());
  args[0] = (char *)exe;
  args[1] = LMP_WORKER_FLAG;
  args[2] = "3";
  args[3] = (char *)name;
  args[4] = ppid;
  snprintf(nfdarg, sizeof(nfdarg), "%d", nfds);
  args[5] = nfdarg;
  args[6] = NULL;
  memset(&opts, 0, sizeof(opts));
  opts.file = exe;
  opts.args = args;
  opts.exit_cb = on_child_exit;
  opts.stdio_count = 4 + nfds;
  opts.stdio = stdio;
  st->exitcode = RUNNING;
  st->handle.data = &closer;
  /* 1 and 2 of a host that has them closed are /dev/null meanwhile: the
   * child's stdout and stderr then, and not where libuv's own descriptors
   * of the spawn go (lmp_platform.c). */
  held = lmp__stdio_hold();
  err = uv_spawn(&lp->loop, &st->handle, &opts);
  lmp__stdio_release(held);
  close(sv[1]);
  if (err != 0) {
    close(sv[0]);
    /* libuv: a failed spawn must still be closed. */
    st->orphaned = 1;
    uv_close((uv_handle_t *)&st->handle, handle_closed);
    return lmp__error_raise(L, "ProcessError", "cannot start '%s' (%s): %s",
                            name, exe, lmp_strerror(err));
  }
  p->st = st;
  p->pid = st->handle.pid;
  /* A running child does not keep the loop busy: waits on other things
   * may then take the fast path (lmp_loop.c).  join() refs it while it
   * waits for the exit. */
  uv_unref((uv_handle_t *)&st->handle);
#ifdef SYS_pidfd_open
  p->pidfd = lmp__fd_above_stdio((int)syscall(SYS_pidfd_open, p->pid, 0));
#endif
  /* The bootstrap frame: header as on every connection, then the record. */
  hlen = lmp__frame_header(header, blen);
  send_bootstrap(sv[0], (const char *)header, hlen);
  send_bootstrap(sv[0], boot, blen);
  close(sv[0]);
  lua_pop(L, 1);  /* stdio */
  renew_closer(L);
  return 1;
}

static int exited(void *arg) {
  return ((proc_state *)arg)->exitcode != RUNNING;
}

/* handle:wait([timeout]) -> exitcode | nil */
static int proc_wait(lua_State *L) {
  proc *p = check_proc(L, 1);
  double timeout = lmp__timeout_arg(L, 2, LMP_FOREVER);
  int done;
  if (!p->st->handle_closed) uv_ref((uv_handle_t *)&p->st->handle);
  if (p->pidfd >= 0 && p->st->exitcode == RUNNING) {
    /* Wait on the pidfd, serving background work meanwhile, then let
     * libuv collect the exit (its SIGCHLD may come a moment later). */
    double deadline = lmp__deadline(timeout);
    int ev = UV_READABLE, ready;
    for (;;) {
      double left = lmp__remaining(deadline);
      int fd = p->pidfd, r = lmp__wait_fds_bg(L, p->lp, &fd, &ev, &ready, 1, left);
      /* Background work (a pool burying its worker) may have closed this
       * very process while we waited. */
      if (p->st == NULL) {
        if (p->exitcode == RUNNING) lua_pushnil(L);
        else lua_pushinteger(L, p->exitcode);
        return 1;
      }
      if (r == LMP_EINTR) {
        if (!p->st->handle_closed && !uv_is_closing((uv_handle_t *)&p->st->handle))
          uv_unref((uv_handle_t *)&p->st->handle);
        return lmp__interrupt_raise(L);
      }
      if (r <= 0) break;
      lmp__loop_wait(p->lp, 1.0, exited, p->st);
      if (p->st->exitcode != RUNNING || left == 0) break;
    }
    done = p->st->exitcode != RUNNING;
  } else {
    done = lmp__loop_wait(p->lp, timeout, exited, p->st);
  }
  if (!done && lmp__interrupted) {
    if (!p->st->handle_closed && !uv_is_closing((uv_handle_t *)&p->st->handle))
      uv_unref((uv_handle_t *)&p->st->handle);
    return lmp__interrupt_raise(L);
  }
  if (!p->st->handle_closed && !uv_is_closing((uv_handle_t *)&p->st->handle))
    uv_unref((uv_handle_t *)&p->st->handle);
  if (done) lua_pushinteger(L, p->st->exitcode);
  else lua_pushnil(L);
  return 1;
}

/* handle:signal(signum) -> true | nil, message */
static int proc_signal(lua_State *L) {
  proc *p = check_proc(L, 1);
  int sig = (int)lmp__check_integer(L, 2), err;
  if (p->st->exitcode != RUNNING || p->st->handle_closed) {
    lua_pushboolean(L, 1);  /* already gone: nothing to do, as in Python */
    return 1;
  }
  err = uv_process_kill(&p->st->handle, sig);
  if (err != 0 && err != LMP_ESRCH) {
    lua_pushnil(L);
    lua_pushstring(L, lmp_strerror(err));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void proc_release(proc *p) {
  if (p->pidfd >= 0) close(p->pidfd);
  p->pidfd = -1;
  if (p->st) {
    p->exitcode = p->st->exitcode;
    if (p->st->handle_closed) {
      free(p->st);
    } else {
      /* Still running (or closing): libuv owns the state from now on. */
      p->st->orphaned = 1;
    }
    p->st = NULL;
  }
}

static int proc_close(lua_State *L) {
  proc *p = lmp__check_udata(L, 1, PROC_MT);
  if (p->st && p->st->exitcode == RUNNING)
    return lmp__error_raise(L, "ValueError", "cannot close a process that is "
                            "still running (pid %d)", p->pid);
  proc_release(p);
  return 0;
}

static int proc_gc(lua_State *L) {
  proc_release(lmp__check_udata(L, 1, PROC_MT));
  return 0;
}

static int proc_index(lua_State *L) {
  proc *p = lmp__check_udata(L, 1, PROC_MT);
  const char *k = lmp__check_string(L, 2);
  if (strcmp(k, "pid") == 0) lua_pushinteger(L, p->pid);
  else if (strcmp(k, "sentinel") == 0) {
    if (p->pidfd >= 0) lua_pushinteger(L, p->pidfd);
    else lua_pushnil(L);
  } else if (strcmp(k, "exitcode") == 0) {
    if (p->st && p->st->exitcode == RUNNING) {
      /* Collect a pending exit.  The handle is unref'ed (see l_spawn), and
       * a loop with nothing ref'ed does not even look for events. */
      uv_ref((uv_handle_t *)&p->st->handle);
      uv_run(&p->lp->loop, UV_RUN_NOWAIT);
      if (!p->st->handle_closed && !uv_is_closing((uv_handle_t *)&p->st->handle))
        uv_unref((uv_handle_t *)&p->st->handle);
    }
    if (p->st && p->st->exitcode != RUNNING) lua_pushinteger(L, p->st->exitcode);
    else lua_pushnil(L);
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
  }
  return 1;
}

static const luaL_Reg proc_methods[] = {
  {"wait", proc_wait},
  {"signal", proc_signal},
  {"close", proc_close},
  {NULL, NULL}
};

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_getcwd(lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof(buf)) == NULL) lua_pushnil(L);
  else lua_pushstring(L, buf);
  return 1;
}

static int l_chdir(lua_State *L) {
  const char *dir = lmp__check_string(L, 1);
  if (chdir(dir) != 0)
    return lmp__error_raise(L, "OSError", "cannot enter directory '%s': %s",
                            dir, strerror(errno));
  return 0;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)lmp__check_integer(L, 1)));
  return 1;
}

void lmp__process_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", proc_gc},
    {NULL, NULL}
  };
  static const luaL_Reg functions[] = {
    {"spawn", l_spawn},
    {"getpid", l_getpid},
    {"getcwd", l_getcwd},
    {"chdir", l_chdir},
    {"isatty", l_isatty},
    {NULL, NULL}
  };
  lmp__push_class(L, PROC_MT, meta, proc_methods, proc_index);
  lua_pop(L, 1);
  lmp__register(L, "lmp core.", functions, 0);
}
