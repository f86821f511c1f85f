/*
 * lmp_redis.c -- a connection to a Redis server, through hiredis (the
 * broker of scale-out: lua/lmp/broker/).
 *
 * Commands are queued with send and written with flush; their replies
 * are read one at a time with read, which waits at most its timeout, so
 * that several commands travel in one round trip and nothing ever blocks
 * without a way out.  The descriptor is there for lmp's waits: it is
 * readable when a reply (of a blocking XREAD, say) has come.
 *
 * Replies become Lua values: a string or status is a string, an integer
 * a number, an array a table (with n, since nil entries leave holes), a
 * nil reply false, an error reply (inside an array) {err = message}.
 * A server is trusted once it has taken the password, but its replies are
 * still bounded by hiredis' reader (512 MiB a string, 7 levels deep).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_interrupt.h"
#include "lmp_platform.h"
#include "lmp_redis.h"
#include "lmp_time.h"

#define REDIS_MT "lmp.redis"
#define ARGS_MAX 1024      /* arguments of one command */
#define POLL_SLICE_MS 100  /* how often a wait looks at Ctrl-C */

typedef struct {
  redisContext *c;
} redis;

static struct timeval to_timeval(double seconds) {
  struct timeval tv;
  if (!(seconds > 0)) seconds = 0.001;
  if (seconds > 86400) seconds = 86400;
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  return tv;
}

static redis *check_redis(lua_State *L) {
  redis *r = lmp__check_udata(L, 1, REDIS_MT);
  if (r->c == NULL) lmp__error_raise(L, "ValueError", "redis: the connection is closed");
  return r;
}

/* core.redis_connect(host, port, timeout) -> conn | nil, message.  The
 * connection's descriptor is close-on-exec, above stdio. */
static int l_connect(lua_State *L) {
  const char *host = lmp__check_string(L, 1);
  int port = (int)lmp__check_integer(L, 2);
  struct timeval tv = to_timeval(lmp__check_number(L, 3));
  redis *r = lua_newuserdata(L, sizeof(*r));
  r->c = NULL;
  luaL_getmetatable(L, REDIS_MT);
  lua_setmetatable(L, -2);
  r->c = host[0] == '/' ? redisConnectUnixWithTimeout(host, tv)
                        : redisConnectWithTimeout(host, port, tv);
  if (r->c == NULL || r->c->err) {
    lua_pushnil(L);
    lua_pushstring(L, r->c ? r->c->errstr : "out of memory");
    if (r->c) redisFree(r->c);
    r->c = NULL;
    return 2;
  }
  redisSetTimeout(r->c, tv);  /* a write or a partial reply that stalls */
  if (r->c->connection_type == REDIS_CONN_TCP) redisEnableKeepAlive(r->c);
  r->c->fd = lmp__fd_above_stdio(r->c->fd);
  fcntl(r->c->fd, F_SETFD, FD_CLOEXEC);
  return 1;
}

/* conn:send(arg, ...): queues one command; nothing is written yet. */
static int redis_send(lua_State *L) {
  redis *r = check_redis(L);
  int argc = lua_gettop(L) - 1, i;
  const char *argv[ARGS_MAX];
  size_t lens[ARGS_MAX];
  if (argc < 1) return lmp__error_raise(L, "ValueError", "redis: send needs a command");
  if (argc > ARGS_MAX)
    return lmp__error_raise(L, "ValueError", "redis: more than %d arguments", ARGS_MAX);
  for (i = 0; i < argc; i++) {
    if (lua_type(L, i + 2) != LUA_TSTRING && lua_type(L, i + 2) != LUA_TNUMBER)
      return lmp__error_raise(L, "TypeError", "redis: argument %d must be a string or number, not %s",
                              i + 1, luaL_typename(L, i + 2));
    argv[i] = lua_tolstring(L, i + 2, &lens[i]);
  }
  if (redisAppendCommandArgv(r->c, argc, argv, lens) != REDIS_OK)
    return lmp__error_raise(L, "OSError", "redis: %s", r->c->errstr);
  return 0;
}

static void push_reply(lua_State *L, redisReply *x) {
  size_t i;
  switch (x->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      lua_pushlstring(L, x->str, x->len);
      break;
    case REDIS_REPLY_INTEGER:
      lua_pushnumber(L, (lua_Number)x->integer);
      break;
    case REDIS_REPLY_ARRAY:
      lua_createtable(L, (int)x->elements, 1);
      for (i = 0; i < x->elements; i++) {
        push_reply(L, x->element[i]);
        lua_rawseti(L, -2, (int)i + 1);
      }
      lua_pushinteger(L, (lua_Integer)x->elements);
      lua_setfield(L, -2, "n");
      break;
    case REDIS_REPLY_ERROR:
      lua_createtable(L, 0, 1);
      lua_pushlstring(L, x->str, x->len);
      lua_setfield(L, -2, "err");
      break;
    default:
      lua_pushboolean(L, 0);
      break;
  }
}

/* Writes what is queued; 0, or hiredis' error. */
static int flush(redis *r) {
  int done = 0;
  while (!done) {
    if (redisBufferWrite(r->c, &done) != REDIS_OK) return -1;
  }
  return 0;
}

static int push_io_error(lua_State *L, redis *r) {
  lua_pushnil(L);
  lua_pushstring(L, r->c->errstr[0] ? r->c->errstr : "connection lost");
  lua_pushliteral(L, "io");
  return 3;
}

/* conn:flush() -> true | nil, message, "io" */
static int redis_flush(lua_State *L) {
  redis *r = check_redis(L);
  if (flush(r) != 0) return push_io_error(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:read([timeout]) -> reply | nil, message, how.  Writes what is
 * queued first.  how: "timeout" (nothing came in time: the reply may
 * still come), "reply" (the server's error reply), "io" (the connection
 * is broken: close it). */
static int redis_read(lua_State *L) {
  redis *r = check_redis(L);
  double timeout = lmp__opt_number(L, 2, -1);
  double deadline = timeout < 0 ? HUGE_VAL : lmp__now() + timeout;
  void *reply = NULL;
  if (flush(r) != 0) return push_io_error(L, r);
  for (;;) {
    struct pollfd p;
    double left;
    int ms, n;
    if (redisGetReplyFromReader(r->c, &reply) != REDIS_OK) return push_io_error(L, r);
    if (reply != NULL) break;
    /* The socket is looked at once even with no time left. */
    left = deadline - lmp__now();
    if (left < 0) left = 0;
    if (lmp__interrupted) return lmp__interrupt_raise(L);
    ms = left > POLL_SLICE_MS / 1000.0 ? POLL_SLICE_MS : (int)ceil(left * 1000);
    p.fd = r->c->fd;
    p.events = POLLIN;
    p.revents = 0;
    n = poll(&p, 1, ms);
    if (n < 0 && errno != EINTR) {
      lua_pushnil(L);
      lua_pushstring(L, strerror(errno));
      lua_pushliteral(L, "io");
      return 3;
    }
    if (n > 0) {
      if (redisBufferRead(r->c) != REDIS_OK) return push_io_error(L, r);
      continue;
    }
    if (left <= 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      lua_pushliteral(L, "timeout");
      return 3;
    }
  }
  if (((redisReply *)reply)->type == REDIS_REPLY_ERROR) {
    lua_pushnil(L);
    lua_pushlstring(L, ((redisReply *)reply)->str, ((redisReply *)reply)->len);
    lua_pushliteral(L, "reply");
    freeReplyObject(reply);
    return 3;
  }
  push_reply(L, reply);
  freeReplyObject(reply);
  return 1;
}

/* conn:fileno() */
static int redis_fileno(lua_State *L) {
  lua_pushinteger(L, check_redis(L)->c->fd);
  return 1;
}

static int redis_close(lua_State *L) {
  redis *r = lmp__check_udata(L, 1, REDIS_MT);
  if (r->c) redisFree(r->c);
  r->c = NULL;
  return 0;
}

static int redis_closed(lua_State *L) {
  redis *r = lmp__check_udata(L, 1, REDIS_MT);
  lua_pushboolean(L, r->c == NULL);
  return 1;
}

void lmp__redis_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", redis_close},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"send", redis_send},
    {"flush", redis_flush},
    {"read", redis_read},
    {"fileno", redis_fileno},
    {"close", redis_close},
    {"closed", redis_closed},
    {NULL, NULL}
  };
  static const luaL_Reg functions[] = {
    {"redis_connect", l_connect},
    {NULL, NULL}
  };
  lmp__push_class(L, REDIS_MT, meta, methods, NULL);
  lua_pop(L, 1);
  lmp__register(L, "lmp core.", functions, 0);
}
