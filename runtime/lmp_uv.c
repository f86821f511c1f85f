/*
 * lmp_uv.c -- lmp on a host's libuv loop (see lmp_uv.h).
 *
 * The handles live in a malloc'ed block, not in Lua memory: the host's
 * loop runs their close callbacks after lmp_uv_detach, maybe after the
 * state is gone.  The state keeps a userdata pointing at the block, whose
 * finalizer detaches it when the state closes first.
 */
#include <stdlib.h>
#include <string.h>

#include "lmp_internal.h"
#include "lmp_uv.h"

#define UV_KEY "lmp.uv"

typedef struct {
  uv_poll_t poll;
  uv_timer_t timer;
  uv_prepare_t prepare;
  uv_loop_t *loop;
  lua_State *L;  /* NULL once detached: callbacks still due do nothing */
  int closing;   /* handles whose close callback has not run yet */
} attachment;

static void on_closed(uv_handle_t *h) {
  attachment *a = h->data;
  if (--a->closing == 0) free(a);
}

static void on_timer(uv_timer_t *t);

/* The timer goes off at lmp's next deadline (stopped when there is none). */
static void set_timer(attachment *a) {
  int ms = lmp_backend_timeout(a->L);
  if (ms < 0) uv_timer_stop(&a->timer);
  else uv_timer_start(&a->timer, on_timer, (uint64_t)ms, 0);
}

static void dispatch(attachment *a) {
  if (a->L == NULL) return;
  lmp_dispatch(a->L);  /* errors went to lmp.on_error, or were reported */
  if (a->L != NULL) set_timer(a);
}

static void on_timer(uv_timer_t *t) { dispatch(t->data); }

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  dispatch(p->data);
}

static void on_prepare(uv_prepare_t *p) {
  attachment *a = p->data;
  if (a->L != NULL) set_timer(a);
}

static void detach(attachment *a) {
  a->L = NULL;
  a->closing = 3;
  uv_close((uv_handle_t *)&a->poll, on_closed);
  uv_close((uv_handle_t *)&a->timer, on_closed);
  uv_close((uv_handle_t *)&a->prepare, on_closed);
}


static int attachment_gc(lua_State *L) {
  attachment **slot = lua_touserdata(L, 1);
  if (*slot != NULL) detach(*slot);
  *slot = NULL;
  return 0;
}

int lmp_uv_attach(lua_State *L, uv_loop_t *loop) {
  attachment **slot = lmp__registry_udata(L, UV_KEY), *a;
  int fd, err;
  if (slot != NULL && *slot != NULL) return (*slot)->loop == loop ? 0 : LMP_EBUSY;
  if ((fd = lmp_backend_fd(L)) < 0) return fd;
  if ((a = calloc(1, sizeof(*a))) == NULL) return LMP_ENOMEM;
  a->loop = loop;
  a->L = L;
  if ((err = uv_poll_init(loop, &a->poll, fd)) != 0) {
    free(a);
    return err;
  }
  uv_timer_init(loop, &a->timer);
  uv_prepare_init(loop, &a->prepare);
  a->poll.data = a->timer.data = a->prepare.data = a;
  if ((err = uv_poll_start(&a->poll, UV_READABLE, on_poll)) != 0) {
    detach(a);
    return err;
  }
  uv_prepare_start(&a->prepare, on_prepare);
  /* The prepare handle alone must not keep the host's loop alive. */
  uv_unref((uv_handle_t *)&a->prepare);
  if (slot == NULL) slot = lmp__registry_udata_new(L, UV_KEY, sizeof(*slot), attachment_gc);
  *slot = a;
  set_timer(a);
  return 0;
}

int lmp_uv_detach(lua_State *L) {
  attachment **slot = lmp__registry_udata(L, UV_KEY);
  if (slot != NULL && *slot != NULL) {
    detach(*slot);
    *slot = NULL;
  }
  return 0;
}
