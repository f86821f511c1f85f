/*
 * lmp.h -- the whole embedding API of lmp, Lua multiprocessing for LuaJIT.
 *
 * A host that owns its lua_State registers the module with lmp_preload(L)
 * (after luaL_openlibs), after which Lua code does `local lmp = require "lmp"`.
 *
 * Workers are fresh processes running an executable that calls
 * lmp_worker_main() at the top of its main(): by default the lmp host
 * itself, or the host program when it calls lmp_set_executable() with its
 * own path.
 *
 * Functions that can fail return 0 or a negative LMP_E* code; lmp_strerror()
 * and lmp_err_name() describe a code.  No function here calls exit() or
 * abort() on an error.
 */
#ifndef LMP_H
#define LMP_H

#ifdef __cplusplus
extern "C" {
#endif

#include <errno.h>

#include <lua.h>

#define LMP_VERSION_MAJOR 0
#define LMP_VERSION_MINOR 1
#define LMP_VERSION_PATCH 0

/* Error codes: every code lmp's C functions return, listed once.  OS
 * failures are the negated errno value, as in libuv (the errno values lmp
 * itself returns are named here; lmp_err_name() names any other); the
 * codes of lmp's own failures lie outside the errno range. */
#define LMP_ERRNO_MAP(XX)                                                    \
  XX(NOMEM,     -ENOMEM,     "out of memory")                                \
  XX(INVAL,     -EINVAL,     "invalid argument")                             \
  XX(IO,        -EIO,        "input/output error")                           \
  XX(NOENT,     -ENOENT,     "no such file or directory")                    \
  XX(PERM,      -EPERM,      "operation not permitted")                      \
  XX(SRCH,      -ESRCH,      "no such process")                              \
  XX(BUSY,      -EBUSY,      "resource busy")                                \
  XX(DEADLK,    -EDEADLK,    "waiting would never end")                      \
  XX(OVERFLOW,  -EOVERFLOW,  "value too large")                              \
  XX(TIMEDOUT,  -ETIMEDOUT,  "timed out")                                    \
  XX(OWNERDEAD, -EOWNERDEAD, "the previous holder died")                     \
  XX(INTR,      -EINTR,      "interrupted")                                  \
  XX(CODEC,     -4001,       "value cannot be encoded or decoded")           \
  XX(CLOSED,    -4002,       "object is closed")                             \
  XX(EOF,       -4003,       "end of file")                                  \
  XX(TOOBIG,    -4004,       "message exceeds the size limit")               \
  XX(AUTH,      -4005,       "authentication failed")                        \
  XX(PROTO,     -4006,       "protocol error")

enum {
#define LMP_ERRNO_ENUM(name, code, text) LMP_E##name = (code),
  LMP_ERRNO_MAP(LMP_ERRNO_ENUM)
#undef LMP_ERRNO_ENUM
  LMP_OK = 0
};

/* The version as "MAJOR.MINOR.PATCH". */
const char *lmp_version(void);

/* A message for an error code (never NULL; unknown codes are described as
 * such), and its symbolic name ("LMP_ECODEC", "EACCES", ...). */
const char *lmp_strerror(int err);
const char *lmp_err_name(int err);

/* The Lua module: pushes the lmp table.  Usable as a package.preload entry
 * or through lua_call; any number of lua_States in a process may open it. */
int luaopen_lmp(lua_State *L);

/* Makes `require "lmp"` work in L: puts luaopen_lmp into package.preload
 * (the package library must be open).  Leaves the stack as it was. */
void lmp_preload(lua_State *L);

/* Sets the executable that workers run.  It must call lmp_worker_main()
 * first thing in main().  Copies the path.  Returns 0, LMP_EINVAL for an
 * empty path or LMP_ENOMEM. */
int lmp_set_executable(const char *path);

/* The executable workers run, by one rule: the one set with
 * lmp_set_executable(); else the running program, if it has called
 * lmp_worker_main(); else the lmp host installed with lmp's code (beside
 * lmp.so or liblmp.so, in the build tree or the install prefix).  NULL if
 * none was set and none could be found. */
const char *lmp_get_executable(void);

/* Call at the top of main() in any program that workers may run.  When the
 * command line marks this process as an lmp worker, runs the worker to its
 * end and returns its exit status (0..255), which main() should return.
 * Otherwise returns -1 at once, touching nothing. */
int lmp_worker_main(int argc, char **argv);

/* Number of CPUs this process may run on (at least 1). */
int lmp_cpu_count(void);

/* --- driving lmp from the host's own loop ---------------------------------
 * A host that owns its loop (a game server's tick) never blocks in lmp: it
 * polls lmp_backend_fd(L) with its other descriptors, wakes up after at
 * most lmp_backend_timeout(L) ms, and then calls lmp_dispatch(L).  None of
 * these may be called from inside a Lua call on L. */

/* A descriptor, the same for L's whole life, that is readable whenever
 * lmp has work for L: a result arrived, a worker ended, a deadline is due,
 * a callback or an awaiting coroutine is ready to run.  The host polls it
 * (epoll, poll, uv_poll_t); it never reads or closes it.  Negative LMP_E*
 * on error. */
int lmp_backend_fd(lua_State *L);

/* Milliseconds until lmp's next deadline, 0 if work is due now, -1 if
 * there is none. */
int lmp_backend_timeout(lua_State *L);

/* Does what is ready, never blocking: reads results, replaces dead
 * workers, sends waiting tasks, fires deadlines, runs callbacks and resumes
 * coroutines in AsyncResult:await.  Returns how many callbacks and
 * resumptions ran, or a negative LMP_E* code.  An error raised in a
 * callback never reaches the host: it goes to lmp.on_error's handler
 * (default: stderr). */
int lmp_dispatch(lua_State *L);

/* Ends everything lmp started from L within about `timeout` seconds:
 * pools terminated, daemon children terminated, other children joined,
 * then killed when the time is up, all reaped.  Idempotent; call it before
 * lua_close(L) (which, without it, still leaves no children).  Returns how
 * many children were ended by a signal (workers killed in the middle of a
 * task, daemons, children killed at the time limit), or a negative LMP_E*
 * code. */
int lmp_shutdown(lua_State *L, double timeout);

#ifdef __cplusplus
}
#endif
#endif /* LMP_H */
