/*
 * lmp_platform.c -- facts about this process and machine: CPUs, where the
 * running executable and lmp's own code live, which executable workers run,
 * the names of errno values.
 * Linux-specific lookups stay in this file.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "lmp_internal.h"
#include "lmp_platform.h"

int lmp_cpu_count(void) {
  unsigned n = uv_available_parallelism();
  return n > 0 ? (int)n : 1;
}

const char *lmp__errno_name(int e) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
  return strerrorname_np(e);
#else
  /* libuv names the errno values it knows; it would allocate a name for
   * any other, which is not ours to free. */
  char buf[64];
  uv_err_name_r(-e, buf, sizeof(buf));
  return strncmp(buf, "Unknown", 7) == 0 ? NULL : uv_err_name(-e);
#endif
}

const char *lmp__self_exe(void) {
  static char path[PATH_MAX];
  if (!path[0]) {
    size_t size = sizeof(path);
    if (uv_exepath(path, &size) != 0) path[0] = '\0';
  }
  return path[0] ? path : NULL;
}

const char *lmp__self_image(void) {
  static char path[PATH_MAX];
  if (!path[0]) {
    Dl_info info;
    if (dladdr((void *)lmp__self_image, &info) && info.dli_fname &&
        realpath(info.dli_fname, path) == NULL)
      path[0] = '\0';
  }
  return path[0] ? path : NULL;
}

/* The worker executable set by lmp_set_executable(); process-wide, as the
 * program that children run is a property of the process, not of a state. */
static char *worker_executable;

int lmp_set_executable(const char *path) {
  char *copy;
  if (path == NULL || path[0] == '\0') return LMP_EINVAL;
  copy = strdup(path);
  if (copy == NULL) return LMP_ENOMEM;
  free(worker_executable);
  worker_executable = copy;
  return 0;
}

static int is_executable(const char *path) {
  return access(path, X_OK) == 0;
}

/* Whether this program called lmp_worker_main(): then it can run workers. */
static int worker_capable;

void lmp__note_worker_main(void) { worker_capable = 1; }

/* The one rule (lmp.h): the program set with lmp_set_executable(); else
 * the running program, if it called lmp_worker_main(); else the lmp host
 * found beside lmp's code (lmp.so loaded by a stock luajit, liblmp.so, or
 * a program that links liblmp.a), in the build tree or the install
 * prefix. */
const char *lmp_get_executable(void) {
  static char found[PATH_MAX];
  static const char *const relative[] = {
    "lmp",               /* build tree: build/lmp.so, build/liblmp.so */
    "../bin/lmp",        /* PREFIX/lib/liblmp.so */
    "../../bin/lmp",     /* PREFIX/lib/<multiarch>/liblmp.so */
    "../../../bin/lmp",  /* PREFIX/lib/lua/5.1/lmp.so */
    "../../../../bin/lmp", NULL
  };
  const char *image, *exe, *slash;
  int i;
  if (worker_executable) return worker_executable;
  exe = lmp__self_exe();
  if (worker_capable && exe) return exe;
  if (found[0]) return found;
  image = lmp__self_image();
  if (image == NULL) return NULL;
  slash = strrchr(image, '/');
  for (i = 0; slash && relative[i]; i++) {
    char candidate[PATH_MAX];
    snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)(slash - image),
             image, relative[i]);
    if (is_executable(candidate) && realpath(candidate, found)) return found;
  }
  return NULL;
}

/* --- descriptors 0, 1 and 2 ------------------------------------------------- */

int lmp__fd_above_stdio(int fd) {
  int copy, err;
  if (fd < 0 || fd > 2) return fd;
  copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  err = errno;
  close(fd);
  errno = err;
  return copy;
}

int lmp__stdio_hold(void) {
  int fd, held = 0;
  for (fd = 0; fd <= 2; fd++) {
    int got;
    if (fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    /* The lowest free number is fd, as the ones below it are open by now
     * (unless another thread of the host just opened or closed one: then
     * the copy is not ours to keep there, and fd stays as it is). */
    got = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (got == fd) held |= 1 << fd;
    else if (got >= 0) close(got);
  }
  return held;
}

void lmp__stdio_release(int held) {
  int fd;
  for (fd = 0; fd <= 2; fd++)
    if (held & (1 << fd)) close(fd);
}
