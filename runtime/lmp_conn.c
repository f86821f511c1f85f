/*
 * lmp_conn.c -- Connection: messages over a socket or pipe descriptor,
 * framed as CPython's multiprocessing.connection frames them (a 4-byte
 * big-endian length, or -1 and an 8-byte length from 2 GiB on), so that a
 * Python peer reads what lmp writes and the other way round.
 *
 * Descriptors are non-blocking; a call that must wait runs the state's
 * event loop (lmp_loop.c) until the descriptor is ready.  Received bytes
 * are buffered, several frames per read when they are small; a large frame
 * is read straight into a buffer of its size and decoded from there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_buf.h"
#include "lmp_codec.h"
#include "lmp_conn.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"
#include "lmp_frame.h"
#include "lmp_loop.h"
#include "lmp_platform.h"
#include "lmp_time.h"

#define CONN_MT "lmp.Connection"
#define READ_CHUNK (64 * 1024)
#define KEEP_BUFFER (16u << 20)  /* larger buffers are freed after use */

typedef struct lmp_conn {
  int fd;              /* -1 once closed */
  int readable, writable;
  int is_socket;       /* send with MSG_NOSIGNAL: no SIGPIPE */
  int safe;            /* decode in safe mode (data from a socket peer) */
  size_t max_frame;    /* 0: no limit */
  double stall;        /* seconds the rest of a begun message may take
                          (LMP_FOREVER: no limit) */
  lmp_buf in;          /* received bytes; [in_pos, in.len) not consumed */
  size_t in_pos;
  int eof_seen;        /* the peer closed its end (seen while sending) */
  lmp_buf out;         /* the frame being sent */
  lmp_loop *lp;
} lmp_conn;

static lmp_conn *check_conn(lua_State *L, int idx) {
  lmp_conn *c = lmp__check_udata(L, idx, CONN_MT);
  if (c->fd < 0)
    lmp__error_raise(L, "ValueError", "the connection is closed");
  return c;
}

/* --- waiting ------------------------------------------------------------------- */

/* Waits for the descriptor; returns 1 when ready, 0 on timeout. */
static int wait_fd(lua_State *L, lmp_conn *c, int events, double timeout) {
  int ready, n = lmp__wait_fds_bg(L, c->lp, &c->fd, &events, &ready, 1, timeout);
  if (n == LMP_EINTR) lmp__interrupt_raise(L);
  if (n < 0)
    lmp__error_raise(L, "OSError", "waiting on the connection: %s",
                     lmp_strerror(n));
  return n > 0;
}

/* --- sending ------------------------------------------------------------------ */

static ssize_t write_some(lmp_conn *c, const char *p, size_t n) {
  if (c->is_socket) return send(c->fd, p, n, MSG_NOSIGNAL);
  return write(c->fd, p, n);
}

static void absorb(lua_State *L, lmp_conn *c);

/* Sends a whole buffer, waiting as needed.  While it waits, whatever the
 * peer sends is read into the input buffer: two processes that both send
 * more than a socket buffer holds would otherwise wait for each other for
 * ever (a pool sending tasks while its worker sends results). */
static void send_all(lua_State *L, lmp_conn *c, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write_some(c, p, n);
    if (w >= 0) {
      p += w;
      n -= (size_t)w;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int events = UV_WRITABLE, ready = 0, r;
      if (c->readable && !c->eof_seen) events |= UV_READABLE;
      r = lmp__wait_fds_bg(L, c->lp, &c->fd, &events, &ready, 1, -1);
      if (r == LMP_EINTR) lmp__interrupt_raise(L);
      if (r < 0)
        lmp__error_raise(L, "OSError", "send: waiting: %s", lmp_strerror(r));
      if (ready & UV_READABLE) absorb(L, c);
    } else if (errno != EINTR) {
      lmp__error_raise(L, "OSError", "send: %s", strerror(errno));
    }
  }
}

/* Writes the header for a payload of `len` bytes just before `payload`
 * (LMP_FRAME_HEADER_MAX bytes are free there) and returns where the frame
 * starts. */
static char *put_header(char *payload, uint64_t len) {
  unsigned char header[LMP_FRAME_HEADER_MAX];
  size_t n = lmp__frame_header(header, len);
  memcpy(payload - n, header, n);
  return payload - n;
}

static void check_writable(lua_State *L, lmp_conn *c) {
  if (!c->writable)
    lmp__error_raise(L, "ValueError", "the connection is read-only");
}

static void reset_out(lmp_conn *c) {
  c->out.len = 0;
  if (c->out.cap > KEEP_BUFFER) lmp__buf_free(&c->out);
}

/* conn:send(v): the value, encoded, as one frame. */
static int conn_send(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  lmp_codec_opts opts;
  char *payload;
  lmp__check_any(L, 2);
  check_writable(L, c);
  memset(&opts, 0, sizeof(opts));
  c->out.len = 0;
  if (lmp__buf_reserve(&c->out, LMP_FRAME_HEADER_MAX))
    return lmp__error_raise(L, "OSError", "send: out of memory");
  c->out.len = LMP_FRAME_HEADER_MAX;
  lmp__codec_encode(L, 2, &c->out, &opts);
  payload = c->out.data + LMP_FRAME_HEADER_MAX;
  {
    char *frame = put_header(payload, c->out.len - LMP_FRAME_HEADER_MAX);
    send_all(L, c, frame, (size_t)(c->out.data + c->out.len - frame));
  }
  reset_out(c);
  return 0;
}

/* conn:send_bytes(s [, offset [, size]]): bytes as they are. */
static int conn_send_bytes(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  size_t len;
  const char *s = lmp__check_lstring(L, 2, &len);
  lua_Number offset = lmp__opt_number(L, 3, 0);
  lua_Number size;
  char header[LMP_FRAME_HEADER_MAX], *frame;
  check_writable(L, c);
  if (offset < 0 || offset > (lua_Number)len || offset != (lua_Number)(size_t)offset)
    return lmp__error_raise(L, "ValueError", "send_bytes: offset %f is outside "
                            "the %d bytes", offset, (int)len);
  size = lmp__opt_number(L, 4, (lua_Number)len - offset);
  if (size < 0 || offset + size > (lua_Number)len || size != (lua_Number)(size_t)size)
    return lmp__error_raise(L, "ValueError", "send_bytes: offset + size "
                            "(%f + %f) exceeds the %d bytes", offset, size,
                            (int)len);
  frame = put_header(header + LMP_FRAME_HEADER_MAX, (uint64_t)size);
  if ((size_t)size <= READ_CHUNK) {
    /* One write for a small message: no second wake-up for the peer. */
    c->out.len = 0;
    if (lmp__buf_append(&c->out, frame, (size_t)(header + LMP_FRAME_HEADER_MAX - frame)) ||
        lmp__buf_append(&c->out, s + (size_t)offset, (size_t)size))
      return lmp__error_raise(L, "OSError", "send_bytes: out of memory");
    send_all(L, c, c->out.data, c->out.len);
    reset_out(c);
  } else {
    send_all(L, c, frame, (size_t)(header + LMP_FRAME_HEADER_MAX - frame));
    send_all(L, c, s + (size_t)offset, (size_t)size);
  }
  return 0;
}

/* --- receiving ------------------------------------------------------------------ */

static size_t buffered(lmp_conn *c) {
  return c->in.len - c->in_pos;
}

/* Reads whatever is available (at least one byte) into the buffer, waiting
 * up to `timeout`.  Returns 1 with data, 0 at end of file, -1 on timeout. */
static int fill(lua_State *L, lmp_conn *c, size_t want, double timeout) {
  ssize_t r;
  if (c->in_pos > 0 && c->in_pos == c->in.len) c->in_pos = c->in.len = 0;
  if (c->in_pos > 0 && c->in.cap - c->in.len < want) {
    memmove(c->in.data, c->in.data + c->in_pos, buffered(c));
    c->in.len -= c->in_pos;
    c->in_pos = 0;
  }
  if (lmp__buf_reserve(&c->in, want))
    lmp__error_raise(L, "OSError", "recv: out of memory for a %d-byte message",
                     (int)want);
  for (;;) {
    r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
    if (r > 0) {
      c->in.len += (size_t)r;
      return 1;
    }
    if (r == 0) return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(L, c, UV_READABLE, timeout)) return -1;
      timeout = -1;  /* ready now; a read that finds nothing waits again */
    } else if (errno != EINTR) {
      lmp__error_raise(L, "OSError", "recv: %s", strerror(errno));
    }
  }
}

/* Reads what the peer has sent into the input buffer, without waiting. */
static void absorb(lua_State *L, lmp_conn *c) {
  ssize_t r;
  if (c->in_pos > 0 && c->in_pos == c->in.len) c->in_pos = c->in.len = 0;
  if (lmp__buf_reserve(&c->in, READ_CHUNK))
    lmp__error_raise(L, "OSError", "send: out of memory for incoming data");
  do {
    r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
  } while (r < 0 && errno == EINTR);
  if (r > 0) c->in.len += (size_t)r;
  else if (r == 0) c->eof_seen = 1;
}

/* A peer that stops in the middle of a message is dropped: the connection
 * is closed (its stream can no longer be trusted to be in step). */
/* The time left of a message begun at *begun (0: not begun: it begins
 * now), or -1 with no limit.  The whole message shares one deadline, so a
 * peer cannot hold a recv by trickling a byte at a time. */
static double stall_timeout(lmp_conn *c, double *begun) {
  if (c->stall < 0) return LMP_FOREVER;
  if (*begun == 0) *begun = lmp__now();
  return lmp__remaining(*begun + c->stall);
}

static void conn_release(lmp_conn *c);

static void stalled(lua_State *L, lmp_conn *c) {
  double s = c->stall;
  conn_release(c);
  lmp__error_raise(L, "OSError", "recv: the peer sent part of a message and "
                   "then nothing for %f s; connection closed", s);
}

/* Makes a whole frame available in the buffer; returns its payload length
 * and sets *payload, or returns -1 (pushing nil, "eof") at end of file.
 * A frame longer than maxlength (SIZE_MAX: no limit) raises. */
static int64_t read_frame(lua_State *L, lmp_conn *c, const char **payload,
                          size_t maxlength) {
  uint64_t len = 0;
  size_t hlen = LMP_FRAME_HEADER_MIN;
  double begun = 0;
  if (!c->readable)
    lmp__error_raise(L, "ValueError", "the connection is write-only");
  /* The header's size is known from its first bytes, which may have come
   * with the message before (then nothing needs reading here). */
  for (;;) {
    int r;
    if (buffered(c) >= LMP_FRAME_HEADER_MIN)
      hlen = lmp__frame_header_size(
          (const unsigned char *)c->in.data + c->in_pos);
    if (buffered(c) >= hlen) break;
    r = fill(L, c, READ_CHUNK, buffered(c) > 0 ? stall_timeout(c, &begun) : -1);
    if (r < 0) stalled(L, c);
    if (r == 0) {
      if (buffered(c) == 0) return -1;
      lmp__error_raise(L, "OSError", "recv: the peer closed the connection "
                       "in the middle of a message");
    }
  }
  if (lmp__frame_length((const unsigned char *)c->in.data + c->in_pos,
                        &len) != 0) {
    conn_release(c);
    lmp__error_raise(L, "OSError", "recv: bad message length; connection "
                     "closed");
  }
  if ((c->max_frame && len > c->max_frame) || len > maxlength) {
    uint64_t limit = !c->max_frame || maxlength < c->max_frame
                         ? maxlength : c->max_frame;
    if (c->max_frame && len > c->max_frame) conn_release(c);
    lmp__error_raise(L, "OSError", "recv: a %f-byte message exceeds the limit "
                     "of %f bytes%s", (double)len, (double)limit,
                     c->fd < 0 ? "; connection closed" : "");
  }
  if (len > SIZE_MAX - hlen)
    lmp__error_raise(L, "OSError", "recv: message too large");
  while (buffered(c) < hlen + len) {
    size_t missing = hlen + (size_t)len - buffered(c);
    int r = fill(L, c, missing > READ_CHUNK ? missing : READ_CHUNK,
                 stall_timeout(c, &begun));
    if (r < 0) stalled(L, c);
    if (r == 0)
      lmp__error_raise(L, "OSError", "recv: the peer closed the connection "
                       "in the middle of a message");
  }
  *payload = c->in.data + c->in_pos + hlen;
  c->in_pos += hlen + (size_t)len;
  return (int64_t)len;
}

static void after_frame(lmp_conn *c) {
  if (c->in_pos == c->in.len) {
    c->in_pos = c->in.len = 0;
    if (c->in.cap > KEEP_BUFFER) lmp__buf_free(&c->in);
  }
}

/* conn:recv() -> value | nil, "eof" */
static int conn_recv(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  lmp_codec_opts opts;
  const char *payload;
  int64_t len = read_frame(L, c, &payload, SIZE_MAX);
  if (len < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "eof");
    return 2;
  }
  memset(&opts, 0, sizeof(opts));
  opts.safe = c->safe;
  lmp__codec_decode(L, payload, (size_t)len, &opts);
  after_frame(c);
  return 1;
}

/* conn:recv_bytes([maxlength]) -> string | nil, "eof".  As in Python, a
 * message longer than maxlength raises, whatever maxlength is (0 too);
 * math.huge, like no maxlength, is no limit.  The number is checked before
 * it becomes a size_t: a NaN or one past SIZE_MAX would not convert. */
static int conn_recv_bytes(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  size_t maxlength = SIZE_MAX;
  const char *payload;
  int64_t len;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number m = lmp__check_number(L, 2);
    if (m != m)
      return lmp__error_raise(L, "ValueError", "recv_bytes: maxlength is NaN");
    if (m < 0)
      return lmp__error_raise(L, "ValueError", "recv_bytes: negative maxlength");
    if (m < (lua_Number)SIZE_MAX) maxlength = (size_t)m;
  }
  len = read_frame(L, c, &payload, maxlength);
  if (len < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "eof");
    return 2;
  }
  lua_pushlstring(L, payload, (size_t)len);
  after_frame(c);
  return 1;
}

/* conn:poll([timeout]) -> boolean: is there something to read (a message,
 * or the end of file)?  No timeout means do not wait, as in Python. */
static int conn_poll(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  double timeout = lmp__timeout_arg(L, 2, 0);
  if (!c->readable)
    return lmp__error_raise(L, "ValueError", "the connection is write-only");
  lua_pushboolean(L, buffered(c) > 0 ||
                         wait_fd(L, c, UV_READABLE, timeout));
  return 1;
}

/* --- life cycle ------------------------------------------------------------------- */

static void conn_release(lmp_conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  lmp__buf_free(&c->in);
  lmp__buf_free(&c->out);
  c->in_pos = 0;
}

static int conn_close(lua_State *L) {
  lmp_conn *c = lmp__check_udata(L, 1, CONN_MT);
  conn_release(c);
  return 0;
}

static int conn_gc(lua_State *L) {
  conn_release(lmp__check_udata(L, 1, CONN_MT));
  return 0;
}

static int conn_fileno(lua_State *L) {
  lua_pushinteger(L, check_conn(L, 1)->fd);
  return 1;
}

static int conn_tostring(lua_State *L) {
  lmp_conn *c = lmp__check_udata(L, 1, CONN_MT);
  if (c->fd < 0) lua_pushliteral(L, "lmp.Connection (closed)");
  else lua_pushfstring(L, "lmp.Connection (fd %d)", c->fd);
  return 1;
}

static const luaL_Reg conn_methods[] = {
  {"send", conn_send},
  {"recv", conn_recv},
  {"send_bytes", conn_send_bytes},
  {"recv_bytes", conn_recv_bytes},
  {"poll", conn_poll},
  {"close", conn_close},
  {"fileno", conn_fileno},
  {NULL, NULL}
};

/* Fields closed, readable, writable; methods from the table upvalue. */
static int conn_index(lua_State *L) {
  lmp_conn *c = lmp__check_udata(L, 1, CONN_MT);
  const char *k = lmp__check_string(L, 2);
  if (strcmp(k, "closed") == 0) lua_pushboolean(L, c->fd < 0);
  else if (strcmp(k, "readable") == 0) lua_pushboolean(L, c->readable);
  else if (strcmp(k, "writable") == 0) lua_pushboolean(L, c->writable);
  else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
  }
  return 1;
}

static const luaL_Reg conn_meta[] = {
  {"__gc", conn_gc},
  {"__tostring", conn_tostring},
  {NULL, NULL}
};

static void push_conn_mt(lua_State *L) {
  lmp__push_class(L, CONN_MT, conn_meta, conn_methods, conn_index);
}

/* A new Connection over fd, which is a non-blocking socket already when
 * `socket` is set (from lmp_net.c: no system calls to find out). */
static lmp_conn *conn_new(lua_State *L, int fd, int readable, int writable,
                          int socket) {
  lmp_loop *lp = lmp__loop(L);
  lmp_conn *c = lua_newuserdata(L, sizeof(*c));
  int type = 0;
  socklen_t tlen = sizeof(type);
  memset(c, 0, sizeof(*c));
  c->fd = -1;  /* born closed: a failure below leaves nothing to undo */
  c->stall = LMP_FOREVER;
  c->lp = lp;
  push_conn_mt(L);
  lua_setmetatable(L, -2);
  if (!socket && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    close(fd);
    lmp__error_raise(L, "OSError", "Connection: %s", strerror(errno));
  }
  c->fd = fd;
  c->readable = readable;
  c->writable = writable;
  c->is_socket = socket ||
                 getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0;
  return c;
}

static lmp_conn *conn_new_fd(lua_State *L, int fd, int readable, int writable) {
  return conn_new(L, fd, readable, writable, 0);
}

/* The descriptor of the Connection at idx (-1 if closed), or -2 if the
 * value is not a Connection. */
static int conn_fd_at(lua_State *L, int idx) {
  lmp_conn *c = luaL_testudata(L, idx, CONN_MT);
  return c ? c->fd : -2;
}

/* Does the Connection at idx hold received bytes not read yet? */
static int conn_has_data(lua_State *L, int idx) {
  lmp_conn *c = luaL_testudata(L, idx, CONN_MT);
  return c && c->fd >= 0 && buffered(c) > 0;
}

/* lmp.Pipe([duplex]) or lmp.Pipe{duplex = d} -> a, b.  Both ends are
 * sockets (send() never raises SIGPIPE); a one-way pipe shuts the unused
 * directions down. */
static int l_pipe(lua_State *L) {
  int duplex = 1, sv[2];
  switch (lua_type(L, 1)) {
    case LUA_TNONE:
    case LUA_TNIL: break;
    case LUA_TBOOLEAN: duplex = lua_toboolean(L, 1); break;
    case LUA_TTABLE:  /* {duplex = false} */
      lua_getfield(L, 1, "duplex");
      if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return lmp__argerror(L, 1, lua_pushfstring(L, "duplex: boolean "
                             "expected, got %s", luaL_typename(L, -1)));
      duplex = lua_isnil(L, -1) || lua_toboolean(L, -1);
      lua_pop(L, 1);
      break;
    default:
      return lmp__typeerror(L, 1, "boolean or options table");
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return lmp__error_raise(L, "OSError", "Pipe: %s", strerror(errno));
  sv[0] = lmp__fd_above_stdio(sv[0]);
  sv[1] = lmp__fd_above_stdio(sv[1]);
  if (sv[0] < 0 || sv[1] < 0) {
    int err = errno;
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    return lmp__error_raise(L, "OSError", "Pipe: %s", strerror(err));
  }
  if (!duplex) {
    shutdown(sv[0], SHUT_WR);
    shutdown(sv[1], SHUT_RD);
  }
  /* Create both userdata before either can raise, so neither fd leaks. */
  conn_new_fd(L, sv[0], 1, duplex);
  conn_new_fd(L, sv[1], duplex, 1);
  return 2;
}

/* lmp.connection.wait(list [, timeout]) -> list of the ready objects.
 * Entries: Connections, raw descriptors (integers), and any object with a
 * fileno() method or a sentinel field (a Process). */
static int l_wait(lua_State *L) {
  int n, i, count, nready = 0;
  double timeout;
  int *fds, *events, *ready;
  lmp__check_type(L, 1, LUA_TTABLE);
  timeout = lmp__timeout_arg(L, 2, LMP_FOREVER);
  n = (int)lua_objlen(L, 1);
  fds = lua_newuserdata(L, sizeof(int) * 3 * (size_t)(n ? n : 1));
  events = fds + n;
  ready = events + n;
  lua_newtable(L);  /* the result */
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    events[i] = UV_READABLE;
    if (lua_type(L, -1) == LUA_TNUMBER) {
      fds[i] = (int)lua_tointeger(L, -1);
    } else if ((fds[i] = conn_fd_at(L, -1)) != -2) {
      if (fds[i] < 0)
        return lmp__error_raise(L, "ValueError", "wait: entry %d is a closed "
                                "connection", i + 1);
      if (conn_has_data(L, -1)) {
        lua_rawseti(L, -2, ++nready);
        continue;
      }
    } else if (!lua_istable(L, -1) && lua_type(L, -1) != LUA_TUSERDATA) {
      return lmp__error_raise(L, "TypeError", "wait: entry %d is not a "
                              "connection, process or descriptor", i + 1);
    } else {
      /* Process (sentinel) or any object with fileno() */
      lua_getfield(L, -1, "sentinel");
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "fileno");
        if (!lua_isfunction(L, -1))
          return lmp__error_raise(L, "TypeError", "wait: entry %d is not a "
                                  "connection, process or descriptor", i + 1);
        lua_pushvalue(L, -2);
        lua_call(L, 1, 1);
      }
      if (!lua_isnumber(L, -1))
        return lmp__error_raise(L, "ValueError", "wait: entry %d has no "
                                "descriptor", i + 1);
      fds[i] = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (nready > 0) timeout = 0;
  count = lmp__wait_fds_bg(L, lmp__loop(L), fds, events, ready, n, timeout);
  if (count == LMP_EINTR) lmp__interrupt_raise(L);
  if (count < 0)
    return lmp__error_raise(L, "OSError", "wait: %s", lmp_strerror(count));
  for (i = 0; i < n; i++) {
    if (!ready[i]) continue;
    lua_rawgeti(L, 1, i + 1);
    /* an entry that was already counted as having buffered data */
    if (conn_has_data(L, -1)) {
      lua_pop(L, 1);
      continue;
    }
    lua_rawseti(L, -2, ++nready);
  }
  return 1;
}

/* core.conn_configure(conn, safe, max_frame, stall): for a connection to
 * an untrusted peer (Listener, Client): decode in safe mode, refuse frames
 * longer than max_frame bytes (0: any), drop a peer that stalls for
 * `stall` seconds in the middle of a message (0: wait for ever). */
static int l_conn_configure(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  lua_Number max_frame = lmp__opt_number(L, 3, 0);
  lua_Number stall = lmp__opt_number(L, 4, 0);
  c->safe = lua_toboolean(L, 2);
  /* math.huge (and anything that does not fit a size_t) is no limit. */
  c->max_frame = max_frame > 0 && max_frame < (lua_Number)SIZE_MAX
                     ? (size_t)max_frame : 0;
  c->stall = stall > 0 ? lmp__timeout(stall) : LMP_FOREVER;
  return 0;
}

/* core.conn_info(conn) -> fd, readable, writable (for passing it on) */
static int l_conn_info(lua_State *L) {
  lmp_conn *c = check_conn(L, 1);
  lua_pushinteger(L, c->fd);
  lua_pushboolean(L, c->readable);
  lua_pushboolean(L, c->writable);
  return 3;
}

/* core.conn_from_fd(fd, readable, writable) -> Connection owning fd */
static int l_conn_from_fd(lua_State *L) {
  int fd = (int)lmp__check_integer(L, 1);
  if (fcntl(fd, F_GETFD) < 0)
    return lmp__error_raise(L, "OSError", "descriptor %d is not open", fd);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  conn_new_fd(L, fd, lua_toboolean(L, 2), lua_toboolean(L, 3));
  return 1;
}

/* core.conn_from_socket(fd) -> Connection owning fd, a non-blocking,
 * close-on-exec socket made by lmp_net.c */
static int l_conn_from_socket(lua_State *L) {
  conn_new(L, (int)lmp__check_integer(L, 1), 1, 1, 1);
  return 1;
}

void lmp__conn_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"Pipe", l_pipe},
    {NULL, NULL}
  };
  static const luaL_Reg connection[] = {
    {"wait", l_wait},
    {NULL, NULL}
  };
  static const luaL_Reg core_functions[] = {
    {"conn_info", l_conn_info},
    {"conn_configure", l_conn_configure},
    {"conn_from_socket", l_conn_from_socket},
    {"conn_from_fd", l_conn_from_fd},
    {NULL, NULL}
  };
  push_conn_mt(L);
  lua_setfield(L, -2, "connection_mt");
  lmp__register(L, "lmp core.", core_functions, 0);
  lmp__register(L, "lmp.", functions, 0);
  lua_newtable(L);
  lmp__register(L, "lmp.connection.", connection, 0);
  lua_setfield(L, -2, "connection");
}
