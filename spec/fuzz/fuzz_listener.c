/*
 * fuzz_listener.c -- libFuzzer target for what a Listener or a Client
 * reads from an untrusted peer: the challenge/response handshake of
 * lua/lmp/listener.lua, then messages, through the frame reader of
 * runtime/lmp_conn.c and the safe-mode decoder.
 *
 * An input is one byte of flags, then the bytes the peer sends:
 *
 *   0x01  F_CLIENT  lmp is the Client (else the Listener, in accept())
 *   0x02  F_AUTH    with an authkey: the handshake comes first
 *   0x04  F_STALL   Listener side only: the peer sends its bytes but does
 *                   not close its end, so that waits end by the deadlines,
 *                   1 ms then (else the peer closes: every wait ends at
 *                   once with the end of file, and a deadline of 30 s
 *                   that expires is a hang, caught by libFuzzer -timeout)
 *   0x08  F_SMALL   max_message = 200 (else the default, 64 MiB)
 *   0x10  F_BYTES   messages are read with recv_bytes (else recv)
 *   0x20  F_MAXLEN  ... with recv_bytes(maxlength), where flags >> 6
 *                   picks maxlength: 64, 0, math.huge, 2^64
 *
 * The real code runs, in one lua_State kept across inputs (the Lua half
 * of this target, with the constants, is fuzz_listener.lua): eight
 * Listeners (F_AUTH x F_STALL x F_SMALL) on abstract Unix sockets, made
 * once; the harness connects a socket to one, writes the input into it
 * (before the accept: what does not fit the socket buffer is cut off) and
 * calls accept().  On the Client side, a helper thread accepts lmp's
 * connection on a socket of the harness's, writes the input, closes its
 * sending half and reads whatever lmp sends until lmp closes.  After a
 * connection is made, messages are read until the end of file, an error,
 * or (F_STALL) nothing more to read.
 *
 * The challenges that lmp sends are made deterministic (the harness
 * replaces core.random_bytes in its state with a fixed string), so that
 * a seed can answer them and the fuzzer gets past the handshake; the
 * HMACs are computed by the real code.
 *
 * A failure is: a crash or a sanitizer report; an error other than an
 * AuthenticationError from accept() or Client(), or other than a
 * CodecError or an OSError of recv from reading a message; a received
 * value that is not plain data (safe mode); a descriptor more or fewer
 * after an input than before it (counted around every input); and any
 * difference from a model of the frames in the input (in
 * fuzz_listener.lua): after a handshake, which takes three whole frames,
 * recv_bytes must return exactly the payloads of the whole frames that
 * are within the limits, in order, then report the end of file where the
 * bytes end at a frame boundary, and raise an OSError where they do not
 * (a truncated frame, a negative length, a length over max_message or
 * maxlength); recv must return as many values, or raise a CodecError for
 * a payload that the safe decoder refuses on its own too.
 *
 * LMP_FUZZ_VERBOSE=1 in the environment prints how each session ends
 * (for checking what a seed reaches).
 *
 * Seeds: spec/fuzz/corpus/listener, written by spec/fuzz/make_corpus.lua
 * (its key and challenge are those of fuzz_listener.lua).  Built by
 * spec/fuzz/CMakeLists.txt; run by scripts/fuzz.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define F_CLIENT 0x01
#define F_AUTH 0x02
#define F_STALL 0x04
#define F_SMALL 0x08
#define F_BYTES 0x10
#define F_MAXLEN 0x20

/* One Listener per combination of F_AUTH, F_STALL, F_SMALL; this one: */
#define NLISTENERS 8
#define LISTENER_OF(flags) (((flags) >> 1) & 7)

static lua_State *L;
static int ref_server, ref_client;
static struct sockaddr_un addr[NLISTENERS + 1];  /* the last: the helper's */
static socklen_t addr_len[NLISTENERS + 1];

/* What the helper thread serves, one job at a time. */
enum { JOB_IDLE, JOB_POSTED, JOB_DONE };
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cv = PTHREAD_COND_INITIALIZER;
static int job_state = JOB_IDLE;
static const uint8_t *job_data;
static size_t job_size;
static int helper_fd = -1;

static void fail(const char *fmt, const char *arg) {
  fprintf(stderr, "fuzz_listener: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  abort();
}

/* The number of open descriptors; with `show`, lists them on stderr. */
static int count_fds(int show) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  if (d == NULL) fail("/proc/self/fd: %s", strerror(errno));
  while ((e = readdir(d)) != NULL) {
    char path[64], target[256];
    ssize_t len;
    if (e->d_name[0] == '.') continue;
    n++;
    if (!show) continue;
    snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
    len = readlink(path, target, sizeof(target) - 1);
    target[len > 0 ? len : 0] = 0;
    fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
  }
  closedir(d);
  return n - 1;  /* the directory's own */
}

/* Writes p[0..n), or what the socket takes of it: until it is full (with
 * MSG_DONTWAIT in flags) or the reader has gone.  Returns the count. */
static size_t write_some(int fd, const uint8_t *p, size_t n, int flags) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = send(fd, p + done, n - done, MSG_NOSIGNAL | flags);
    if (w > 0) done += (size_t)w;
    else if (w < 0 && errno == EINTR) continue;
    else break;  /* full (EAGAIN), or the reader has gone (EPIPE) */
  }
  return done;
}

/* The peer of a Client: accepts lmp's connection, sends the job's bytes,
 * closes its sending half and reads until lmp closes. */
static void *helper(void *arg) {
  char sink[4096];
  (void)arg;
  for (;;) {
    const uint8_t *p;
    size_t n;
    int fd;
    pthread_mutex_lock(&job_mu);
    while (job_state != JOB_POSTED) pthread_cond_wait(&job_cv, &job_mu);
    p = job_data;
    n = job_size;
    pthread_mutex_unlock(&job_mu);
    do fd = accept4(helper_fd, NULL, NULL, SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) fail("helper: accept: %s", strerror(errno));
    write_some(fd, p, n, 0);  /* blocking: lmp reads as it goes */
    shutdown(fd, SHUT_WR);
    for (;;) {
      ssize_t r = recv(fd, sink, sizeof(sink), 0);
      if (r <= 0 && !(r < 0 && errno == EINTR)) break;
    }
    close(fd);
    pthread_mutex_lock(&job_mu);
    job_state = JOB_DONE;
    pthread_cond_broadcast(&job_cv);
    pthread_mutex_unlock(&job_mu);
  }
  return NULL;
}

/* Calls server(flags) or client(flags); aborts on what they report. */
static void run_lua(int ref, int flags, const uint8_t *p, size_t n,
                    size_t size) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushinteger(L, flags);
  lua_pushlstring(L, (const char *)p, n);
  lua_call(L, 2, 1);
  if (!lua_isnil(L, -1)) {
    fprintf(stderr, "fuzz_listener: %s side, flags 0x%02x, input of %zu "
            "bytes: %s\n", ref == ref_client ? "Client" : "Listener", flags,
            size, lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
}

static void run_server(int flags, const uint8_t *p, size_t n, size_t size) {
  int i = LISTENER_OF(flags);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), big = 1 << 20;
  if (fd < 0) fail("socket: %s", strerror(errno));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  if (connect(fd, (struct sockaddr *)&addr[i], addr_len[i]) != 0)
    fail("connect to the Listener: %s", strerror(errno));
  write_some(fd, p, n, MSG_DONTWAIT);
  if (!(flags & F_STALL)) shutdown(fd, SHUT_WR);
  run_lua(ref_server, flags, p, n, size);
  close(fd);
}

static void run_client(int flags, const uint8_t *p, size_t n, size_t size) {
  struct timespec until;
  pthread_mutex_lock(&job_mu);
  job_data = p;
  job_size = n;
  job_state = JOB_POSTED;
  pthread_cond_broadcast(&job_cv);
  pthread_mutex_unlock(&job_mu);
  run_lua(ref_client, flags, p, n, size);
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 10;
  pthread_mutex_lock(&job_mu);
  while (job_state != JOB_DONE)
    if (pthread_cond_timedwait(&job_cv, &job_mu, &until) == ETIMEDOUT)
      fail("%s", "the helper did not finish: did the Client connect?");
  job_state = JOB_IDLE;
  pthread_mutex_unlock(&job_mu);
}

static void run(const uint8_t *data, size_t size) {
  int flags = size > 0 ? data[0] : 0;
  const uint8_t *p = size > 0 ? data + 1 : data;
  size_t n = size > 0 ? size - 1 : 0;
  if (flags & F_CLIENT) run_client(flags, p, n, size);
  else run_server(flags, p, n, size);
  fuzz_collect(L);
}

static void setup(void) {
  pthread_t t;
  int i;
  L = fuzz_new_state("fuzz_listener");
  /* Abstract socket names, unique to this process. */
  for (i = 0; i <= NLISTENERS; i++) {
    int len;
    memset(&addr[i], 0, sizeof(addr[i]));
    addr[i].sun_family = AF_UNIX;
    len = snprintf(addr[i].sun_path + 1, sizeof(addr[i].sun_path) - 1,
                   "lmp-fuzz-listener-%d-%d", (int)getpid(), i);
    addr_len[i] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
  }
  helper_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (helper_fd < 0 ||
      bind(helper_fd, (struct sockaddr *)&addr[NLISTENERS], addr_len[NLISTENERS]) ||
      listen(helper_fd, 4))
    fail("the helper's socket: %s", strerror(errno));
  if (pthread_create(&t, NULL, helper, NULL) != 0) fail("%s", "pthread_create");
  pthread_detach(t);
  lua_createtable(L, NLISTENERS + 1, 0);
  for (i = 0; i <= NLISTENERS; i++) {
    lua_pushlstring(L, addr[i].sun_path,
                    addr_len[i] - offsetof(struct sockaddr_un, sun_path));
    lua_rawseti(L, -2, i + 1);
  }
  fuzz_run(L, "fuzz_listener.lua", 1, 2);
  ref_client = luaL_ref(L, LUA_REGISTRYINDEX);
  ref_server = luaL_ref(L, LUA_REGISTRYINDEX);
  /* One round of each side makes what lmp creates on first use (the
   * event loop), which is no leak. */
  run(NULL, 0);
  run((const uint8_t *)"\x01", 1);
}

/* The descriptors are counted before and after each input: libFuzzer
 * opens some of its own between inputs (the pipes to llvm-symbolizer). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int before, after;
  if (!L) setup();
  before = count_fds(0);
  run(data, size);
  after = count_fds(0);
  if (after != before) {
    count_fds(1);
    fprintf(stderr, "fuzz_listener: %d descriptors open after an input of "
            "%zu bytes (flags 0x%02x), %d before\n", after, size,
            size > 0 ? data[0] : 0, before);
    abort();
  }
  return 0;
}
