/*
 * lmp_fdpass.c -- messages with descriptors attached, over a Unix socket
 * (the forkserver's channel: lua/lmp/forkserver.lua).
 *
 * A message is a 4-byte little-endian length, the bytes, and up to
 * FDPASS_MAX descriptors sent as SCM_RIGHTS with its first byte.  The
 * socket is a socketpair between a process and the server it spawned:
 * nobody else holds an end of it, so what arrives is trusted as a child's
 * bootstrap message is; lengths and descriptor counts are still bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_fdpass.h"
#include "lmp_platform.h"

#define FDPASS_MAX 250
#define FDPASS_BYTES_MAX ((uint32_t)1 << 30)

static void wait_for(int fd, short events) {
  struct pollfd p;
  p.fd = fd;
  p.events = events;
  p.revents = 0;
  while (poll(&p, 1, -1) < 0 && errno == EINTR) {}
}

/* Sends all of p (n bytes); the first sendmsg carries the descriptors. */
static int send_all(int sock, const char *p, size_t n, const int *fds, int nfds) {
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
  } control;
  while (n > 0) {
    struct iovec iov;
    struct msghdr m;
    ssize_t w;
    memset(&m, 0, sizeof(m));
    iov.iov_base = (void *)p;
    iov.iov_len = n;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
      struct cmsghdr *c;
      memset(&control, 0, sizeof(control));
      m.msg_control = control.buf;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
      c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    w = sendmsg(sock, &m, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_for(sock, POLLOUT);  /* a non-blocking end (a Connection's) */
      continue;
    }
    if (w < 0) return -errno;
    p += w;
    n -= (size_t)w;
    nfds = 0;
  }
  return 0;
}

/* Reads n bytes into p; descriptors that come with them are appended to
 * fds (*nfds of them, at most FDPASS_MAX; extra ones are closed). */
static int recv_all(int sock, char *p, size_t n, int *fds, int *nfds) {
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
  } control;
  while (n > 0) {
    struct iovec iov;
    struct msghdr m;
    struct cmsghdr *c;
    ssize_t r;
    memset(&m, 0, sizeof(m));
    iov.iov_base = p;
    iov.iov_len = n;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control.buf;
    m.msg_controllen = sizeof(control.buf);
    r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_for(sock, POLLIN);
      continue;
    }
    if (r < 0) return -errno;
    if (r == 0) return LMP_EEOF;
    for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int i, k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *in = (int *)CMSG_DATA(c);
        for (i = 0; i < k; i++) {
          if (*nfds < FDPASS_MAX) fds[(*nfds)++] = in[i];
          else close(in[i]);
        }
      }
    }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* core.fdpass_send(sock, data [, fds]) */
static int l_send(lua_State *L) {
  int sock = (int)lmp__check_integer(L, 1);
  size_t len;
  const char *data = lmp__check_lstring(L, 2, &len);
  int fds[FDPASS_MAX], nfds = 0, err, i;
  unsigned char hdr[4];
  char *buf;
  if (lua_istable(L, 3)) {
    nfds = (int)lua_objlen(L, 3);
    if (nfds > FDPASS_MAX)
      return lmp__error_raise(L, "ValueError", "send: more than %d descriptors", FDPASS_MAX);
    for (i = 0; i < nfds; i++) {
      lua_rawgeti(L, 3, i + 1);
      fds[i] = (int)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  }
  if (len > FDPASS_BYTES_MAX) return lmp__error_raise(L, "ValueError", "send: message too long");
  for (i = 0; i < 4; i++) hdr[i] = (unsigned char)(len >> (8 * i));
  if ((buf = malloc(len + 4)) == NULL) return lmp__error_raise(L, "OSError", "send: out of memory");
  memcpy(buf, hdr, 4);
  memcpy(buf + 4, data, len);
  err = send_all(sock, buf, len + 4, fds, nfds);
  free(buf);
  if (err != 0) return lmp__error_raise(L, "OSError", "send: %s", lmp_strerror(err));
  return 0;
}

/* core.fdpass_recv(sock) -> data, {fds} | nil (end of file) */
static int l_recv(lua_State *L) {
  int sock = (int)lmp__check_integer(L, 1);
  int fds[FDPASS_MAX], nfds = 0, err, i;
  unsigned char hdr[4];
  uint32_t len = 0;
  char *buf;
  err = recv_all(sock, (char *)hdr, 4, fds, &nfds);
  if (err == LMP_EEOF) {
    for (i = 0; i < nfds; i++) close(fds[i]);
    lua_pushnil(L);
    return 1;
  }
  for (i = 0; i < 4; i++) len |= (uint32_t)hdr[i] << (8 * i);
  if (err == 0 && len > FDPASS_BYTES_MAX) err = LMP_ETOOBIG;
  buf = err == 0 ? malloc(len ? len : 1) : NULL;
  if (err == 0 && buf == NULL) err = LMP_ENOMEM;
  if (err == 0) err = recv_all(sock, buf, len, fds, &nfds);
  if (err != 0) {
    free(buf);
    for (i = 0; i < nfds; i++) close(fds[i]);
    return lmp__error_raise(L, "OSError", "recv: %s", lmp_strerror(err));
  }
  lua_pushlstring(L, buf, len);
  free(buf);
  lua_createtable(L, nfds, 0);
  for (i = 0; i < nfds; i++) {
    lua_pushinteger(L, lmp__fd_above_stdio(fds[i]));
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

/* core.socketpair() -> fd, fd (blocking, close-on-exec) */
static int l_socketpair(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return lmp__error_raise(L, "OSError", "socketpair: %s", strerror(errno));
  lua_pushinteger(L, lmp__fd_above_stdio(sv[0]));
  lua_pushinteger(L, lmp__fd_above_stdio(sv[1]));
  return 2;
}

/* core.kill(pid, signum) -> true | nil, message */
static int l_kill(lua_State *L) {
  int pid = (int)lmp__check_integer(L, 1), sig = (int)lmp__check_integer(L, 2);
  if (pid <= 0) return lmp__error_raise(L, "ValueError", "kill: bad pid %d", pid);
  if (kill(pid, sig) != 0 && errno != ESRCH) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.close_fd(fd) */
static int l_close_fd(lua_State *L) {
  close((int)lmp__check_integer(L, 1));
  return 0;
}

void lmp__fdpass_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"fdpass_send", l_send},
    {"fdpass_recv", l_recv},
    {"socketpair", l_socketpair},
    {"kill", l_kill},
    {"close_fd", l_close_fd},
    {NULL, NULL}
  };
  lmp__register(L, "lmp core.", functions, 0);
}
