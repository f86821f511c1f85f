/*
 * lmp_net.c -- the sockets under Listener and Client: TCP ("host:port",
 * "[v6]:port"), Unix sockets (a path) and abstract Unix sockets ("\0name").
 * What travels on them is a Connection (lmp_conn.c); the authentication
 * and the policy for untrusted peers are in lua/lmp/listener.lua.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"
#include "lmp_loop.h"
#include "lmp_net.h"
#include "lmp_platform.h"
#include "lmp_time.h"

typedef struct {
  struct sockaddr_storage sa;
  socklen_t len;
  int family;
} net_addr;

/* Parses `address` (len bytes: an abstract name holds a NUL); pushes
 * nothing.  Raises a ValueError naming what is wrong. */
static void parse_address(lua_State *L, const char *address, size_t len,
                          net_addr *a) {
  const char *colon = memrchr(address, ':', len);
  memset(a, 0, sizeof(*a));
  if (len == 0)
    lmp__error_raise(L, "ValueError", "address is empty");
  if (address[0] == '\0' || memchr(address, '/', len) || colon == NULL) {
    struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
    if (len >= sizeof(un->sun_path))
      lmp__error_raise(L, "ValueError", "Unix socket address is longer than "
                       "%d bytes", (int)sizeof(un->sun_path) - 1);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, address, len);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                         (address[0] == '\0' ? 0 : 1));
    a->family = AF_UNIX;
    return;
  }
  {
    char host[256], port[16];
    size_t hlen = (size_t)(colon - address), plen = len - hlen - 1;
    struct addrinfo hints, *res = NULL;
    int r;
    if (hlen >= 2 && address[0] == '[' && address[hlen - 1] == ']') {
      address++;
      hlen -= 2;
    }
    if (hlen >= sizeof(host) || plen == 0 || plen >= sizeof(port))
      lmp__error_raise(L, "ValueError", "address is not \"host:port\"");
    memcpy(host, address, hlen);
    host[hlen] = 0;
    memcpy(port, colon + 1, plen);
    port[plen] = 0;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    r = getaddrinfo(hlen ? host : NULL, port, &hints, &res);
    if (r != 0 || res == NULL)
      lmp__error_raise(L, "ValueError", "address %s:%s: %s", host, port,
                       gai_strerror(r));
    memcpy(&a->sa, res->ai_addr, res->ai_addrlen);
    a->len = res->ai_addrlen;
    a->family = res->ai_family;
    freeaddrinfo(res);
  }
}

/* Pushes the printable form of a socket address. */
static void push_address(lua_State *L, const struct sockaddr_storage *sa,
                         socklen_t len) {
  char host[INET6_ADDRSTRLEN];
  if (sa->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    lua_pushfstring(L, "%s:%d", host, (int)ntohs(in->sin_port));
  } else if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    lua_pushfstring(L, "[%s]:%d", host, (int)ntohs(in6->sin6_port));
  } else if (sa->ss_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
                   ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && un->sun_path[0] != '\0') n = strnlen(un->sun_path, n);
    lua_pushlstring(L, un->sun_path, n);
  } else {
    lua_pushliteral(L, "");
  }
}

static void tune(int fd, int family) {
  int one = 1;
  if (family == AF_INET || family == AF_INET6)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* core.net_listen(address, backlog) -> fd, address */
static int l_listen(lua_State *L) {
  size_t len;
  const char *address = lmp__check_lstring(L, 1, &len);
  int backlog = (int)lmp__opt_integer(L, 2, 16), fd, one = 1;
  net_addr a;
  struct sockaddr_storage bound;
  socklen_t blen = sizeof(bound);
  parse_address(L, address, len, &a);
  fd = lmp__fd_above_stdio(
      socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd < 0)
    return lmp__error_raise(L, "OSError", "Listener: %s", strerror(errno));
  if (a.family != AF_UNIX)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&a.sa, a.len) != 0 ||
      listen(fd, backlog > 0 ? backlog : 1) != 0) {
    int err = errno;
    close(fd);
    lua_pushlstring(L, address[0] ? address : "\\0", address[0] ? len : 2);
    return lmp__error_raise(L, "OSError", "Listener: cannot listen on %s: %s",
                            lua_tostring(L, -1), strerror(err));
  }
  lua_pushinteger(L, fd);
  if (a.family == AF_UNIX) {
    lua_pushlstring(L, address, len);
  } else {
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    push_address(L, &bound, blen);
  }
  return 2;
}

/* core.net_accept(fd, timeout) -> fd, peer | nil */
static int l_accept(lua_State *L) {
  int fd = (int)lmp__check_integer(L, 1);
  double timeout = lmp__timeout_arg(L, 2, LMP_FOREVER);
  struct sockaddr_storage peer;
  for (;;) {
    socklen_t plen = sizeof(peer);
    int c = lmp__fd_above_stdio(accept4(fd, (struct sockaddr *)&peer, &plen,
                                        SOCK_CLOEXEC | SOCK_NONBLOCK));
    int ev = UV_READABLE, ready, n;
    if (c >= 0) {
      tune(c, peer.ss_family);
      lua_pushinteger(L, c);
      push_address(L, &peer, plen);
      return 2;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return lmp__error_raise(L, "OSError", "accept: %s", strerror(errno));
    n = lmp__wait_fds_bg(L, lmp__loop(L), &fd, &ev, &ready, 1, timeout);
    if (n == LMP_EINTR) return lmp__interrupt_raise(L);
    if (n < 0)
      return lmp__error_raise(L, "OSError", "accept: %s", lmp_strerror(n));
    if (n == 0) return 0;
  }
}

/* core.net_connect(address, timeout) -> fd | nil, "timeout" */
static int l_connect(lua_State *L) {
  size_t len;
  const char *address = lmp__check_lstring(L, 1, &len);
  double timeout = lmp__timeout_arg(L, 2, LMP_FOREVER);
  net_addr a;
  int fd, err = 0;
  parse_address(L, address, len, &a);
  fd = lmp__fd_above_stdio(
      socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd < 0)
    return lmp__error_raise(L, "OSError", "Client: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&a.sa, a.len) != 0) {
    if (errno == EINPROGRESS || errno == EAGAIN) {
      int ev = UV_WRITABLE, ready, n;
      socklen_t elen = sizeof(err);
      n = lmp__wait_fds_bg(L, lmp__loop(L), &fd, &ev, &ready, 1, timeout);
      if (n <= 0) {
        close(fd);
        if (n == LMP_EINTR) return lmp__interrupt_raise(L);
        if (n < 0)
          return lmp__error_raise(L, "OSError", "Client: %s", lmp_strerror(n));
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
      }
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
    } else {
      err = errno;
    }
  }
  if (err != 0) {
    close(fd);
    lua_pushlstring(L, address[0] ? address : "\\0", address[0] ? len : 2);
    return lmp__error_raise(L, "OSError", "Client: cannot connect to %s: %s",
                            lua_tostring(L, -1), strerror(err));
  }
  tune(fd, a.family);
  lua_pushinteger(L, fd);
  return 1;
}

/* core.net_close(fd [, unix_path]): closes a listening socket and removes
 * its socket file. */
static int l_close(lua_State *L) {
  close((int)lmp__check_integer(L, 1));
  if (lua_isstring(L, 2)) {
    const char *path = lua_tostring(L, 2);
    if (path[0] != '\0') unlink(path);
  }
  return 0;
}

void lmp__net_open(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"net_listen", l_listen},
    {"net_accept", l_accept},
    {"net_connect", l_connect},
    {"net_close", l_close},
    {NULL, NULL}
  };
  lmp__register(L, "lmp core.", functions, 0);
}
