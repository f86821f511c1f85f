/*
 * test_embed -- the embedding API as a C host uses it: open the module in
 * a state of one's own, read errors as codes, and be a worker executable.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "lmp.h"


static void test_error_codes(void) {
  CHECK(strcmp(lmp_strerror(LMP_ENOMEM), "out of memory") == 0);
  CHECK(strcmp(lmp_err_name(LMP_ECODEC), "LMP_ECODEC") == 0);
  CHECK(strcmp(lmp_strerror(-13), "Permission denied") == 0);
  CHECK(strcmp(lmp_strerror(-999999), "unknown error") == 0);
  CHECK(strcmp(lmp_strerror(0), "success") == 0);
  /* Errno values are negated, as in libuv, and named as errno names them. */
  CHECK(LMP_ETIMEDOUT == -ETIMEDOUT && LMP_ENOMEM == -ENOMEM);
  CHECK(strcmp(lmp_err_name(LMP_ETIMEDOUT), "LMP_ETIMEDOUT") == 0);
  CHECK(strcmp(lmp_err_name(-EACCES), "EACCES") == 0);
  CHECK(strcmp(lmp_err_name(-EADDRINUSE), "EADDRINUSE") == 0);
  CHECK(strcmp(lmp_err_name(-999999), "LMP_EUNKNOWN") == 0);
  CHECK(strcmp(lmp_err_name(0), "LMP_OK") == 0);
}

static void test_module(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lmp_preload(L);
  lua_pushstring(L, lmp_version());
  lua_setglobal(L, "expected_version");
  CHECK(luaL_dostring(L,
    "local lmp = require 'lmp'\n"
    "assert(lmp.version == expected_version)\n"
    "assert(lmp.cpu_count() >= 1)\n"
    "assert(lmp.errors.WorkerLost == 'WorkerLost')\n"
    "assert(type(lmp.Process) == 'function' or type(lmp.Process) == 'table')\n"
    "assert(type(lmp.connection.wait) == 'function')\n") == 0 ||
    (fprintf(stderr, "%s\n", lua_tostring(L, -1)), 0));
  CHECK(lmp_cpu_count() >= 1);
  lua_close(L);
}

/* A bootstrap record as Process:start writes it, made with the codec in a
 * state of our own; the worker exits with status 7. */
static size_t make_bootstrap(char *buf, size_t cap) {
  lua_State *L = luaL_newstate();
  const char *s;
  size_t n = 0;
  luaL_openlibs(L);
  lmp_preload(L);
  if (luaL_dostring(L,
      "local codec = require('lmp').codec\n"
      "local function target(name) assert(require('lmp').current_process().name == name); os.exit(7) end\n"
      "return codec.encode({name = 'w1', daemon = false, path = package.path,\n"
      "  cpath = package.cpath, parent_pid = 1, parent_name = 'MainProcess',\n"
      "  target = codec.encode(target, {binary = true}),\n"
      "  args = codec.encode({n = 1, 'w1'}, {binary = true})}, {binary = true})\n") == 0) {
    s = lua_tolstring(L, -1, &n);
    if (n <= cap) memcpy(buf, s, n);
    else n = 0;
  } else {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
  }
  lua_close(L);
  return n;
}

static void test_worker(const char *self) {
  static char record[65536];
  unsigned char hdr[4];
  size_t n = make_bootstrap(record, sizeof(record));
  int fds[2], status;
  pid_t pid;
  CHECK(n > 0);
  CHECK(lmp_set_executable("") == LMP_EINVAL);
  CHECK(lmp_set_executable(self) == 0);
  CHECK(strcmp(lmp_get_executable(), self) == 0);
  CHECK(pipe(fds) == 0);
  hdr[0] = (unsigned char)(n >> 24);
  hdr[1] = (unsigned char)(n >> 16);
  hdr[2] = (unsigned char)(n >> 8);
  hdr[3] = (unsigned char)n;
  CHECK(write(fds[1], hdr, 4) == 4);
  CHECK(write(fds[1], record, n) == (ssize_t)n);
  close(fds[1]);
  pid = fork();
  if (pid == 0) {
    char fdarg[16];
    snprintf(fdarg, sizeof(fdarg), "%d", fds[0]);
    execl(lmp_get_executable(), lmp_get_executable(), "--lmp-worker", fdarg,
          "w1", (char *)NULL);
    _exit(127);
  }
  close(fds[0]);
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv);
  if (status >= 0) return status;
  CHECK(lmp_worker_main(1, argv) == -1);
  {
    /* The default worker executable: this program, since it called
     * lmp_worker_main() (the rule of lmp_get_executable). */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    CHECK(n > 0);
    self[n > 0 ? n : 0] = '\0';
    CHECK(lmp_get_executable() != NULL && strcmp(lmp_get_executable(), self) == 0);
  }
  test_error_codes();
  test_module();
  test_worker(argv[0]);
  return CHECK_STATUS();
}
