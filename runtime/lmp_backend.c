/*
 * lmp_backend.c -- driving lmp from a host's own loop: lmp_backend_fd,
 * lmp_backend_timeout, lmp_dispatch, lmp_shutdown (lmp.h).
 *
 * Each state gets one epoll descriptor for its whole life.  It holds a
 * timerfd (the nearest deadline), an eventfd (work due now), and what the
 * Lua side lists after each dispatch (core.host.fds): every pool's hub
 * bell, armed, and its workers' sentinels.  What lmp does when the
 * host calls in is Lua code (core.host.dispatch, lmp.pool.pump); this file
 * keeps the descriptor true to it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "lmp_error.h"
#include "lmp_platform.h"
#include "lmp_time.h"

#define BACKEND_KEY "lmp.backend"

typedef struct {
  int epfd, timerfd, kickfd;
  int *fds;        /* what core.host.fds listed last, in epfd */
  int nfds;
  double changes;  /* ... and the count of changes it gave then */
  double timer;    /* when the timer goes off (lmp__now()), or -1 */
  int kicked;      /* the kick was written, and not read yet */
} backend;

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void backend_close(backend *b) {
  close_fd(&b->epfd);
  close_fd(&b->timerfd);
  close_fd(&b->kickfd);
  free(b->fds);
  b->fds = NULL;
  b->nfds = 0;
}

static int backend_gc(lua_State *L) {
  backend_close(lua_touserdata(L, 1));
  return 0;
}

static int watch(backend *b, int fd) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  /* A number listed before may now be another file (the old one closed,
   * which took it out of the set): MOD fails then, and it is added. */
  if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
  if (errno != ENOENT) return -errno;
  return epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

/* The state's backend, made on first use: NULL if it cannot be (*err). */
static backend *get_backend(lua_State *L, int *err) {
  backend *b = lmp__registry_udata(L, BACKEND_KEY);
  if (b != NULL) return b;
  b = lmp__registry_udata_new(L, BACKEND_KEY, sizeof(*b), backend_gc);
  b->epfd = b->timerfd = b->kickfd = -1;
  b->changes = b->timer = -1;
  b->epfd = lmp__fd_above_stdio(epoll_create1(EPOLL_CLOEXEC));
  b->timerfd = lmp__fd_above_stdio(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  b->kickfd = lmp__fd_above_stdio(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (b->epfd < 0 || b->timerfd < 0 || b->kickfd < 0 || watch(b, b->timerfd) != 0 ||
      watch(b, b->kickfd) != 0) {
    *err = errno ? -errno : LMP_EIO;
    backend_close(b);
    lua_pushnil(L);  /* the next call tries again */
    lua_setfield(L, LUA_REGISTRYINDEX, BACKEND_KEY);
    return NULL;
  }
  return b;
}

/* Pushes core.host[name] (a function), or nothing and returns 0 when lmp
 * was not opened in L. */
static int push_host(lua_State *L, const char *name) {
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CORE_KEY);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_getfield(L, -1, "host");
  lua_remove(L, -2);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Seconds to lmp's next deadline (0: work is due now), or -1 for none.
 * (An error there is reported, and counts as work due now.) */
static double host_timeout(lua_State *L) {
  double t = -1;
  if (!push_host(L, "timeout")) return -1;
  if (lmp__pcall_traceback(L, 0, 1) != 0) {
    lmp__report(L, "lmp: backend timeout");
    return 0;
  }
  if (lua_isnumber(L, -1)) t = lua_tonumber(L, -1) > 0 ? lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  return t;
}

static void drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR) {}
}

/* Brings epfd in line with the list at the top of the stack (popped). */
static int sync_fds(lua_State *L, backend *b) {
  int i, n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0, err = 0, *fds = NULL;
  if (n > 0 && (fds = malloc(sizeof(int) * (size_t)n)) == NULL) {
    lua_pop(L, 1);
    return LMP_ENOMEM;
  }
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, -1, i + 1);
    fds[i] = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  for (i = 0; i < b->nfds; i++) {
    int j, kept = 0;
    for (j = 0; j < n && !kept; j++) kept = fds[j] == b->fds[i];
    if (!kept) epoll_ctl(b->epfd, EPOLL_CTL_DEL, b->fds[i], NULL);  /* may be gone */
  }
  for (i = 0; i < n && err == 0; i++) err = watch(b, fds[i]);
  free(b->fds);
  b->fds = fds;
  b->nfds = n;
  return err;
}

/* Makes the descriptor say what lmp waits for now: the fds the Lua side
 * lists, the timer at the nearest deadline, the kick when work is due.
 * What is as it was costs no system call: a busy host dispatches once per
 * result. */
static int rearm(lua_State *L, backend *b) {
  int err = 0;
  double t = -1, at;
  if (push_host(L, "arm")) {  /* -> fds, changes, timeout */
    double changes;
    if (lmp__pcall_traceback(L, 0, 3) != 0) {
      lmp__report(L, "lmp: backend descriptors");
      return LMP_EIO;
    }
    if (lua_isnumber(L, -1)) t = lua_tonumber(L, -1) > 0 ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    changes = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -2;
    lua_pop(L, 1);
    if (changes != b->changes || changes == -2) {
      b->changes = -1;
      if ((err = sync_fds(L, b)) != 0) return err;
      b->changes = changes;
    } else {
      lua_pop(L, 1);
    }
  }
  if (t == 0 && !b->kicked) {
    uint64_t one = 1;
    while (write(b->kickfd, &one, sizeof(one)) < 0 && errno == EINTR) {}
    b->kicked = 1;
  }
  at = t > 0 ? lmp__now() + t : -1;
  if ((at < 0) != (b->timer < 0) || (at >= 0 && (at - b->timer > 5e-4 || b->timer - at > 5e-4))) {
    struct itimerspec its;
    memset(&its, 0, sizeof(its));  /* all zero: disarmed */
    if (t > 0) {
      its.it_value.tv_sec = (time_t)t;
      its.it_value.tv_nsec = (long)((t - (double)its.it_value.tv_sec) * 1e9);
      if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    }
    timerfd_settime(b->timerfd, 0, &its, NULL);
    b->timer = at;
  }
  return err;
}

int lmp_backend_fd(lua_State *L) {
  int err = 0;
  backend *b = get_backend(L, &err);
  if (b == NULL) return err;
  if ((err = rearm(L, b)) != 0) return err;
  return b->epfd;
}

int lmp_backend_timeout(lua_State *L) {
  double t = host_timeout(L), ms;
  int whole;
  if (t < 0) return -1;
  ms = t * 1000;
  if (ms >= INT32_MAX) return INT32_MAX;
  whole = (int)ms;
  return whole < ms ? whole + 1 : whole;  /* rounded up: never too early */
}

int lmp_dispatch(lua_State *L) {
  int err = 0, ran = 0, top = lua_gettop(L);
  backend *b = get_backend(L, &err);
  if (b == NULL) return err;
  if (b->kicked) {
    drain(b->kickfd);
    b->kicked = 0;
  }
  if (b->timer >= 0 && lmp__now() >= b->timer) {
    drain(b->timerfd);  /* it went off: it is disarmed now */
    b->timer = -1;
  }
  if (push_host(L, "dispatch")) {
    if (lmp__pcall_traceback(L, 0, 1) != 0) {
      lmp__report(L, "lmp: dispatch");
      err = LMP_EIO;
    } else {
      ran = (int)lua_tointeger(L, -1);
    }
  }
  lua_settop(L, top);
  if (err == 0) err = rearm(L, b);
  lua_settop(L, top);
  return err != 0 ? err : ran;
}

int lmp_shutdown(lua_State *L, double timeout) {
  int top = lua_gettop(L), killed = 0;
  if (!push_host(L, "shutdown")) return 0;
  lua_pushnumber(L, timeout);
  if (lmp__pcall_traceback(L, 1, 1) != 0) {
    lmp__report(L, "lmp: shutdown");
    lua_settop(L, top);
    return LMP_EIO;
  }
  killed = (int)lua_tointeger(L, -1);
  lua_settop(L, top);
  return killed;
}
