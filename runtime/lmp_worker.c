/*
 * lmp_worker.c -- the entry point of a worker process.
 *
 * A parent starts a worker as
 * `<executable> --lmp-worker FD NAME PARENT_PID NFDS`, FD being the
 * inherited end of the bootstrap channel and FD+1 ... FD+NFDS descriptors
 * of lmp objects among the arguments; the worker dies with its parent
 * (PR_SET_PDEATHSIG) and closes every other descriptor it inherited.  The
 * worker is a fresh Lua state with the standard libraries and lmp;
 * core.run_child (lua/lmp/process.lua) reads the bootstrap message and
 * runs it.  Any program that links liblmp becomes a
 * possible worker executable by calling lmp_worker_main() first in main().
 */
#include <errno.h>
#include <signal.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmp_alloc.h"
#include "lmp_error.h"
#include "lmp_fork.h"
#include "lmp_frame.h"
#include "lmp_platform.h"
#include "lmp_preload.h"
#include "lmp_worker.h"

/* The bootstrap message is a frame as on every lmp connection
 * (lmp_frame.h).  It comes from our own parent, but is still bounded so
 * that a stray fd cannot make us allocate without limit. */
#define BOOTSTRAP_MAX ((uint64_t)1 << 31)

static int read_full(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) return LMP_EEOF;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Reads one frame from `fd` into a malloc'ed buffer. */
static int read_frame(int fd, char **out, size_t *outlen) {
  unsigned char hdr[LMP_FRAME_HEADER_MAX];
  uint64_t len;
  size_t hlen;
  int err;
  *out = NULL;
  if ((err = read_full(fd, hdr, LMP_FRAME_HEADER_MIN)) != 0) return err;
  hlen = lmp__frame_header_size(hdr);
  if (hlen > LMP_FRAME_HEADER_MIN &&
      (err = read_full(fd, hdr + LMP_FRAME_HEADER_MIN,
                       hlen - LMP_FRAME_HEADER_MIN)) != 0)
    return err;
  if ((err = lmp__frame_length(hdr, &len)) != 0) return err;
  if (len > BOOTSTRAP_MAX) return LMP_ETOOBIG;
  if ((*out = malloc(len ? len : 1)) == NULL) return LMP_ENOMEM;
  if ((err = read_full(fd, *out, len)) != 0) {
    free(*out);
    *out = NULL;
    return err == LMP_EEOF ? LMP_EPROTO : err;
  }
  *outlen = len;
  return 0;
}

void lmp__run_atexit(lua_State *L) {
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CORE_KEY);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "atexit");
    if (lua_isfunction(L, -1) && lmp__pcall_traceback(L, 0, 0) != 0)
      lmp__report(L, "lmp: at exit");
  }
  lua_settop(L, top);
}

/* os.exit(code [, close]) with `close` true unless given as false: the state
 * is closed first, so that finalizers run (objects that own processes,
 * segments or descriptors release them) and nothing is left for a leak
 * checker to find.  Upvalue 1 is LuaJIT's os.exit. */
static int closing_exit(lua_State *L) {
  int n = lua_gettop(L);
  lmp__run_atexit(L);
  lua_settop(L, n);
  if (lmp__forked_child) {  /* its state must not be closed (lmp_fork.c) */
    int code = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? 0 : 1)
                                   : (int)luaL_optinteger(L, 1, 0);
    lmp__fork_exit(code);
  }
  if (n < 2 || !lua_isboolean(L, 2) || lua_toboolean(L, 2)) {
    lua_settop(L, 1);
    lua_pushboolean(L, 1);
    n = 2;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, 0);
  return 0;
}

void lmp__install_closing_exit(lua_State *L) {
  lua_getglobal(L, "os");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "exit");
  lua_pushcclosure(L, closing_exit, 1);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
}

/* Closes every descriptor numbered `first` or more. */
static void close_descriptors_from(int first) {
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)first, ~0U, 0) == 0) return;
#endif
  {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int dfd;
    if (d == NULL) return;
    dfd = dirfd(d);
    while ((e = readdir(d)) != NULL) {
      int fd = atoi(e->d_name);
      if (fd >= first && fd != dfd) close(fd);
    }
    closedir(d);
  }
}

struct worker_args {
  int fd;
  const char *name;
  char *bootstrap;
  size_t bootstrap_len;
  int status;
};

/* Runs inside lua_pcall so that a memory error while setting up the state
 * is caught like any other. */
static int worker_pmain(lua_State *L) {
  struct worker_args *w = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lmp__install_closing_exit(L);
  lmp_preload(L);
  lmp__preload_lua(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CORE_KEY);
  lua_getfield(L, -1, "run_child");
  lua_pushlstring(L, w->bootstrap, w->bootstrap_len);
  free(w->bootstrap);
  w->bootstrap = NULL;
  lua_call(L, 1, 1);
  w->status = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  lmp__run_atexit(L);
  return 0;
}

int lmp_worker_main(int argc, char **argv) {
  struct worker_args w;
  lua_State *L;
  char *end;
  long fd;
  int err;
  lmp__note_worker_main();
  if (argc < 3 || strcmp(argv[1], LMP_WORKER_FLAG) != 0) return -1;
  memset(&w, 0, sizeof(w));
  errno = 0;
  fd = strtol(argv[2], &end, 10);
  if (errno || *end || fd < 0 || fd > 65535) {
    fprintf(stderr, "lmp worker: bad bootstrap descriptor '%s'\n", argv[2]);
    return 2;
  }
  w.fd = (int)fd;
  w.name = argc > 3 ? argv[3] : "worker";
  if (argc > 4) {
    /* Die with the parent instead of living on as an orphan.  The parent
     * may have died before this line: then we have been re-parented. */
    long parent = strtol(argv[4], NULL, 10);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)parent) {
      fprintf(stderr, "%s: the parent process is gone\n", w.name);
      return 1;
    }
  }
  if ((err = read_frame(w.fd, &w.bootstrap, &w.bootstrap_len)) != 0) {
    fprintf(stderr, "%s: cannot read the bootstrap message: %s\n", w.name,
            lmp_strerror(err));
    return 1;
  }
  if (argc > 5) {
    /* Keep only what the parent meant to give: stdio and the descriptors
     * of lmp objects among the arguments (fd+1 ...).  Anything else it had
     * open without close-on-exec is not ours (Python's spawn does the
     * same).  The bootstrap channel is done with too. */
    long nfds = strtol(argv[5], NULL, 10);
    if (nfds >= 0 && nfds < 65536) close_descriptors_from(w.fd + 1 + (int)nfds);
    close(w.fd);
  }
  if ((L = lmp__state_new()) == NULL) {
    fprintf(stderr, "%s: cannot create a Lua state: out of memory\n", w.name);
    free(w.bootstrap);
    return 1;
  }
  lua_pushcfunction(L, worker_pmain);
  lua_pushlightuserdata(L, &w);
  if (lmp__pcall_traceback(L, 1, 0) != 0) {
    lmp__report(L, w.name);
    w.status = 1;
    lmp__run_atexit(L);
  }
  free(w.bootstrap);
  lmp__state_close(L);
  return w.status & 0xff;
}
