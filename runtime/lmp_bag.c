/*
 * lmp_bag.c -- a Queue's custody of the shared buffers its items refer to
 * (lua/lmp/buffers.lua).
 *
 * A big item put on a Queue travels as a handle to a shared segment, but a
 * Queue promises that an item outlives the process that put it, even one
 * killed right after the put.  So the putter hands the segment's
 * descriptor to the Queue itself: a Unix stream socketpair that every
 * process holding the Queue holds, where the descriptor waits in flight
 * (SCM_RIGHTS) with a record naming the buffer.  The kernel keeps a
 * descriptor in flight alive as long as the socket is, and drops it with
 * the socket's last holder, so a segment lives while its Queue does and
 * never longer.
 *
 * The socket is a bag, not a line: a consumer, under the Queue's get lock
 * (decoding happens there), takes the records out one by one, keeps the
 * descriptor it wants, and puts every record that is still in flight back.
 * A record whose buffer was received (the segment's state is no longer
 * SENT) or whose segment carries another buffer now (another generation)
 * is dropped.  The one taken is put back too, before its buffer is read:
 * a consumer killed while reading it leaves it to the next one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_bag.h"
#include "lmp_error.h"
#include "lmp_platform.h"

#define BAG_MT "lmp.Bag"
#define BAG_RECORDS_MAX 4096  /* looked at by one take */
#define STATE_SENT 0u         /* buffers.lua: header word 0; word 1 is the generation */

typedef struct {
  int out;  /* records go in here ... */
  int in;   /* ... and come out here */
} lmp_bag;

typedef struct {
  uint64_t pid;
  uint64_t serial;
  uint64_t generation;
  uint64_t spare;
} record;

static lmp_bag *check_bag(lua_State *L, int idx) {
  lmp_bag *b = luaL_checkudata(L, idx, BAG_MT);
  if (b->out < 0) lmp__error_raise(L, "ValueError", "the queue is closed");
  return b;
}

static void bag_close(lmp_bag *b) {
  if (b->out >= 0) close(b->out);
  if (b->in >= 0) close(b->in);
  b->out = b->in = -1;
}

static lmp_bag *push_bag(lua_State *L, int out, int in) {
  lmp_bag *b = lua_newuserdata(L, sizeof(*b));
  b->out = out;
  b->in = in;
  luaL_getmetatable(L, BAG_MT);
  lua_setmetatable(L, -2);
  return b;
}

/* One record with fd attached; 0 or -errno (EAGAIN when the bag is full,
 * ETOOMANYREFS when the user has too many descriptors in flight). */
static int put_record(int sock, const record *r, int fd) {
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } control;
  struct iovec iov;
  struct msghdr m;
  struct cmsghdr *c;
  ssize_t w;
  memset(&m, 0, sizeof(m));
  memset(&control, 0, sizeof(control));
  iov.iov_base = (void *)r;
  iov.iov_len = sizeof(*r);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control.buf;
  m.msg_controllen = sizeof(control.buf);
  c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  do w = sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (w < 0 && errno == EINTR);
  if (w < 0) return -errno;
  return w == (ssize_t)sizeof(*r) ? 0 : -EIO;  /* (never partial: records are tiny) */
}

/* The next record and its descriptor (-1 if it came without one);
 * 0, or -errno (EAGAIN: the bag is empty). */
static int take_record(int sock, record *r, int *fd) {
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * 4)];
  } control;
  struct iovec iov;
  struct msghdr m;
  struct cmsghdr *c;
  ssize_t n;
  memset(&m, 0, sizeof(m));
  iov.iov_base = r;
  iov.iov_len = sizeof(*r);
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control.buf;
  m.msg_controllen = sizeof(control.buf);
  do n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  *fd = -1;
  for (c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k, count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (k = 0; k < count; k++) {
        int got;
        memcpy(&got, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
        if (*fd < 0) *fd = got;
        else close(got);
      }
    }
  }
  if (n != (ssize_t)sizeof(*r)) {  /* only lmp writes here; still, never trust a length */
    if (*fd >= 0) close(*fd);
    *fd = -1;
    return -EIO;
  }
  return 0;
}

/* Whether the segment fd still waits for the buffer of this generation. */
static int in_flight(int fd, uint64_t generation) {
  uint32_t header[2];
  if (pread(fd, header, sizeof(header), 0) != (ssize_t)sizeof(header)) return 0;
  return header[0] == STATE_SENT && header[1] == (uint32_t)generation;
}

/* core.bag_new() -> bag */
static int l_bag_new(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return lmp__error_raise(L, "OSError", "cannot make a queue: %s", strerror(errno));
  sv[0] = lmp__fd_above_stdio(sv[0]);
  sv[1] = lmp__fd_above_stdio(sv[1]);
  push_bag(L, sv[0], sv[1]);
  return 1;
}

/* core.bag_from_fds(out, in) -> bag: the descriptors a child inherited */
static int l_bag_from_fds(lua_State *L) {
  push_bag(L, (int)lmp__check_integer(L, 1), (int)lmp__check_integer(L, 2));
  return 1;
}

/* bag:fds() -> out, in */
static int l_bag_fds(lua_State *L) {
  lmp_bag *b = check_bag(L, 1);
  lua_pushinteger(L, b->out);
  lua_pushinteger(L, b->in);
  return 2;
}

/* bag:put(fd, pid, serial, generation) -> true | nil, message: the bag
 * holds a copy of fd from now on. */
static int l_bag_put(lua_State *L) {
  lmp_bag *b = check_bag(L, 1);
  record r;
  int err;
  memset(&r, 0, sizeof(r));
  r.pid = (uint64_t)lmp__check_integer(L, 3);
  r.serial = (uint64_t)lmp__check_integer(L, 4);
  r.generation = (uint64_t)lmp__check_integer(L, 5);
  err = put_record(b->out, &r, (int)lmp__check_integer(L, 2));
  if (err == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, strerror(-err));
  return 2;
}

/* bag:take(pid, serial, generation) -> fd | nil: a descriptor of the
 * buffer's segment, the caller's to close; its record stays in the bag
 * until the buffer is received.  Run under the Queue's get lock. */
static int l_bag_take(lua_State *L) {
  lmp_bag *b = check_bag(L, 1);
  uint64_t pid = (uint64_t)lmp__check_integer(L, 2);
  uint64_t serial = (uint64_t)lmp__check_integer(L, 3);
  uint64_t generation = (uint64_t)lmp__check_integer(L, 4);
  int waiting = 0, found = -1, i;
  /* Only the records there now: those put back come around again. */
  if (ioctl(b->in, FIONREAD, &waiting) != 0) waiting = 0;
  waiting /= (int)sizeof(record);
  if (waiting > BAG_RECORDS_MAX) waiting = BAG_RECORDS_MAX;
  for (i = 0; i < waiting; i++) {
    record r;
    int fd = -1, keep;
    if (take_record(b->in, &r, &fd) != 0) break;
    if (fd < 0) continue;
    keep = in_flight(fd, r.generation);
    if (keep && found < 0 && r.pid == pid && r.serial == serial && r.generation == generation)
      found = dup(fd);
    /* Back in the bag; if that fails (it cannot be fuller than it was),
     * the buffer goes with this process's descriptor. */
    if (keep) put_record(b->out, &r, fd);
    close(fd);
  }
  if (found < 0) return 0;
  lua_pushinteger(L, lmp__fd_above_stdio(found));
  return 1;
}

static int l_bag_close(lua_State *L) {
  bag_close(luaL_checkudata(L, 1, BAG_MT));
  return 0;
}

void lmp__bag_open(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"fds", l_bag_fds},
    {"put", l_bag_put},
    {"take", l_bag_take},
    {"close", l_bag_close},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", l_bag_close},
    {NULL, NULL}
  };
  static const luaL_Reg functions[] = {
    {"bag_new", l_bag_new},
    {"bag_from_fds", l_bag_from_fds},
    {NULL, NULL}
  };
  lmp__push_class(L, BAG_MT, meta, methods, NULL);
  lua_pop(L, 1);
  lmp__register(L, "lmp core.", functions, 0);
}
