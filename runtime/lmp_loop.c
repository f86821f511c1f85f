/*
 * lmp_loop.c -- the per-state event loop and waiting on it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"
#include "lmp_loop.h"
#include "lmp_platform.h"
#include "lmp_time.h"

#define LOOP_KEY "lmp.loop"

static void free_handle(uv_handle_t *h) {
  free(h);
}

void lmp__close_and_free(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, free_handle);
}

static void close_walk(uv_handle_t *h, void *arg) {
  LMP_UNUSED(arg);
  const lmp_handle_closer *closer = h->data;
  /* Handles still open at state close belong to objects already collected
   * or never closed; each was allocated with malloc by its owner, which
   * says how to end it (lmp_loop.h). */
  if (uv_is_closing(h)) return;
  uv_close(h, closer ? closer->close_cb : free_handle);
}

static int loop_gc(lua_State *L) {
  lmp_loop *lp = lua_touserdata(L, 1);
  if (!lp->closed) {
    uv_walk(&lp->loop, close_walk, NULL);
    uv_run(&lp->loop, UV_RUN_DEFAULT);
    uv_loop_close(&lp->loop);
    lp->closed = 1;
  }
  return 0;
}

lmp_loop *lmp__loop(lua_State *L) {
  lmp_loop *lp;
  int err, held;
  lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
  lp = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lp) return lp;
  lp = lua_newuserdata(L, sizeof(*lp));
  memset(lp, 0, sizeof(*lp));
  /* The loop's descriptors must not take 0, 1 or 2 (lmp_platform.c). */
  held = lmp__stdio_hold();
  err = uv_loop_init(&lp->loop);
  lmp__stdio_release(held);
  if (err != 0) {
    lp->closed = 1;
    lmp__error_raise(L, "OSError", "cannot create an event loop: %s",
                     lmp_strerror(err));
  }
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, loop_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
  return lp;
}

/* Handles being closed keep the loop "alive" until a loop iteration runs
 * their close callbacks; a live loop sends every later wait down the slow
 * path (lmp__loop_wait_fds), which closes handles of its own.  So the close
 * callbacks are run right away. */
static void finish_closing(lmp_loop *lp) {
  uv_run(&lp->loop, UV_RUN_NOWAIT);
}

typedef struct {
  uv_timer_t timer;  /* first: the block is freed as a handle */
  int expired;
} deadline_timer;

static void on_deadline(uv_timer_t *t) {
  ((deadline_timer *)t)->expired = 1;
}

static void on_interrupt_check(uv_timer_t *t) {
  LMP_UNUSED(t);
}

int lmp__loop_wait(lmp_loop *lp, double timeout, int (*done)(void *),
                   void *arg) {
  deadline_timer *timer = NULL;
  uv_timer_t *check = NULL;
  timeout = lmp__timeout(timeout);
  if (done(arg)) return 1;
  if (timeout == 0) {
    uv_run(&lp->loop, UV_RUN_NOWAIT);
    return done(arg);
  }
  if (timeout > 0) {
    timer = malloc(sizeof(*timer));
    if (timer == NULL) return done(arg);
    uv_timer_init(&lp->loop, &timer->timer);
    timer->timer.data = NULL;
    timer->expired = 0;
    /* The loop's clock is only updated when it runs: it may be stale by
     * however long the loop sat idle. */
    uv_update_time(&lp->loop);
    uv_timer_start(&timer->timer, on_deadline,
                   (uint64_t)(timeout * 1000 + 0.999), 0);
  }
  /* libuv waits again after a signal: in the lmp host, whose Ctrl-C must
   * end the wait (lmp_interrupt.h), the loop wakes up now and then to see
   * whether one came. */
  if (lmp__interrupt_hook != NULL && (check = malloc(sizeof(*check))) != NULL) {
    uv_timer_init(&lp->loop, check);
    check->data = NULL;
    uv_timer_start(check, on_interrupt_check, 100, 100);
  }
  while (!done(arg) && !(timer && timer->expired) && !lmp__interrupted)
    uv_run(&lp->loop, UV_RUN_ONCE);
  if (check) {
    uv_timer_stop(check);
    lmp__close_and_free((uv_handle_t *)check);
  }
  if (timer) {
    uv_timer_stop(&timer->timer);
    lmp__close_and_free((uv_handle_t *)&timer->timer);
  }
  if (timer || check) finish_closing(lp);
  return done(arg);
}

/* --- waiting on descriptors -------------------------------------------------- */

typedef struct {
  int *ready;
  int count;
} fd_wait;

typedef struct {
  uv_poll_t poll;
  fd_wait *wait;
  int index;
} fd_watch;

static void on_poll(uv_poll_t *h, int status, int events) {
  fd_watch *w = (fd_watch *)h;
  if (w->wait == NULL) return;
  if (w->wait->ready[w->index] == 0) w->wait->count++;
  /* An error (a closed peer, for instance) makes the descriptor ready: the
   * read or write that follows reports what happened. */
  w->wait->ready[w->index] |= status < 0 ? (UV_READABLE | UV_WRITABLE) : events;
  uv_poll_stop(h);
}

static int fd_wait_done(void *arg) {
  return ((fd_wait *)arg)->count > 0;
}

/* With nothing else on the loop, no callback can become due while we
 * wait, and poll(2) does the same job in one system call instead of the
 * nine that a libuv poll handle costs here (each about 1 us). */
static int wait_fds_directly(const int *fds, const int *events, int *ready,
                             int n, double timeout) {
  struct pollfd stack[8], *p = n <= 8 ? stack : calloc((size_t)n, sizeof(*p));
  double deadline = lmp__deadline(timeout);
  int i, r;
  if (p == NULL) return LMP_ENOMEM;
  for (i = 0; i < n; i++) {
    p[i].fd = fds[i];
    p[i].events = (short)(((events[i] & UV_READABLE) ? POLLIN : 0) |
                          ((events[i] & UV_WRITABLE) ? POLLOUT : 0));
    p[i].revents = 0;
  }
  for (;;) {
    double left = lmp__remaining(deadline);
    r = poll(p, (nfds_t)n, left < 0 ? -1 : (int)(left * 1000 + 0.999));
    if (r < 0) r = -errno;
    if (r != -EINTR || lmp__interrupted) break;
  }
  for (i = 0; i < n; i++) {
    ready[i] = 0;
    if (p[i].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) ready[i] |= UV_READABLE;
    if (p[i].revents & (POLLOUT | POLLERR | POLLNVAL)) ready[i] |= UV_WRITABLE;
    ready[i] &= events[i] | ((p[i].revents & (POLLHUP | POLLERR | POLLNVAL)) ? ~0 : 0);
  }
  if (p != stack) free(p);
  if (r < 0) return r;
  for (i = 0, r = 0; i < n; i++) r += ready[i] != 0;
  return r;
}

int lmp__loop_wait_fds(lmp_loop *lp, const int *fds, const int *events,
                       int *ready, int n, double timeout) {
  fd_watch **watches;
  fd_wait w;
  int i, err = 0, *events_union;
  if (!uv_loop_alive(&lp->loop))
    return wait_fds_directly(fds, events, ready, n, timeout);
  w.ready = ready;
  w.count = 0;
  for (i = 0; i < n; i++) ready[i] = 0;
  watches = calloc((size_t)(n > 0 ? n : 1), sizeof(*watches) + sizeof(int));
  if (watches == NULL) return LMP_ENOMEM;
  events_union = (int *)(watches + (n > 0 ? n : 1));
  for (i = 0; i < n; i++) events_union[i] = events[i];
  for (i = 0; i < n && err == 0; i++) {
    fd_watch *fw;
    int j;
    /* libuv allows one poll handle per descriptor: a descriptor listed
     * twice is watched once, for both. */
    for (j = 0; j < i && fds[j] != fds[i]; j++) {}
    if (j < i) continue;
    fw = malloc(sizeof(*fw));
    if (fw == NULL) {
      err = LMP_ENOMEM;
      break;
    }
    fw->wait = &w;
    fw->index = i;
    for (j = i + 1; j < n; j++)
      if (fds[j] == fds[i]) events_union[i] |= events[j];
    if ((err = uv_poll_init(&lp->loop, &fw->poll, fds[i])) != 0) {
      free(fw);
      break;
    }
    fw->poll.data = NULL;
    watches[i] = fw;
    err = uv_poll_start(&fw->poll, events_union[i] | UV_DISCONNECT, on_poll);
  }
  if (err == 0 && !lmp__loop_wait(lp, timeout, fd_wait_done, &w) && lmp__interrupted)
    err = LMP_EINTR;
  for (i = 0; i < n; i++) {
    if (watches[i] == NULL) continue;
    watches[i]->wait = NULL;
    uv_poll_stop(&watches[i]->poll);
    lmp__close_and_free((uv_handle_t *)&watches[i]->poll);
  }
  free(watches);
  finish_closing(lp);
  if (err) return err;
  /* Each entry gets what its own events asked for; repeated descriptors
   * share the result of their first entry (hence the reverse order). */
  for (i = n - 1; i >= 0; i--) {
    int j;
    for (j = 0; j < i && fds[j] != fds[i]; j++) {}
    ready[i] = ready[j] & (events[i] | UV_DISCONNECT);
  }
  for (i = 0, w.count = 0; i < n; i++) w.count += ready[i] != 0;
  return w.count;
}

/* --- background work while user code waits ------------------------------------ */

#define BACKGROUND_KEY "lmp.background"

/* Pushes nothing; returns the background descriptors in a malloc'ed array
 * (or NULL, *count = 0). */
static int *background_fds(lua_State *L, lmp_loop *lp, int *count) {
  int *fds = NULL, i, n;
  *count = 0;
  if (lp->in_background) return NULL;
  lua_getfield(L, LUA_REGISTRYINDEX, BACKGROUND_KEY);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_pcall(L, 0, 1, 0) != 0 || !lua_istable(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  n = (int)lua_objlen(L, -1);
  if (n > 0 && (fds = malloc(sizeof(int) * (size_t)n)) != NULL) {
    for (i = 0; i < n; i++) {
      lua_rawgeti(L, -1, i + 1);
      fds[i] = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    *count = n;
  }
  lua_pop(L, 1);
  return fds;
}

static void run_background(lua_State *L, lmp_loop *lp) {
  lua_getfield(L, LUA_REGISTRYINDEX, BACKGROUND_KEY);
  lua_pushboolean(L, 1);
  lp->in_background = 1;
  if (lmp__pcall_traceback(L, 1, 0) != 0) lmp__report(L, "lmp: background");
  lp->in_background = 0;
}

int lmp__background_active(lua_State *L) {
  int n;
  free(background_fds(L, lmp__loop(L), &n));
  return n > 0;
}

int lmp__wait_fds_bg(lua_State *L, lmp_loop *lp, const int *fds,
                     const int *events, int *ready, int n, double timeout) {
  double deadline = lmp__deadline(timeout);
  for (;;) {
    int nbg, i, r, primary = 0, background = 0;
    int *bg = background_fds(L, lp, &nbg), *all, *allev, *allready;
    if (nbg == 0) {
      free(bg);
      return lmp__loop_wait_fds(lp, fds, events, ready, n, timeout);
    }
    all = malloc(sizeof(int) * 3 * (size_t)(n + nbg));
    if (all == NULL) {
      free(bg);
      return lmp__loop_wait_fds(lp, fds, events, ready, n, timeout);
    }
    allev = all + n + nbg;
    allready = allev + n + nbg;
    for (i = 0; i < n; i++) {
      all[i] = fds[i];
      allev[i] = events[i];
    }
    for (i = 0; i < nbg; i++) {
      all[n + i] = bg[i];
      allev[n + i] = UV_READABLE;
    }
    free(bg);
    r = lmp__loop_wait_fds(lp, all, allev, allready, n + nbg, timeout);
    for (i = 0; i < n; i++) primary += (ready[i] = allready[i]) != 0;
    for (i = 0; i < nbg; i++) background += allready[n + i] != 0;
    free(all);
    if (r < 0) return r;
    if (background) run_background(L, lp);
    if (primary) return primary;
    timeout = lmp__remaining(deadline);
    if (timeout == 0) return 0;
  }
}

/* core.set_background(fn | nil) */
static int l_set_background(lua_State *L) {
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, BACKGROUND_KEY);
  return 0;
}

void lmp__loop_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"set_background", l_set_background},
    {NULL, NULL}
  };
  lmp__register(L, "lmp core.", functions, 0);
}
