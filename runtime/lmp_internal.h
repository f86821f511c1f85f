/*
 * lmp_internal.h -- what lmp's C files share and embedders never see.
 * Non-static internal functions are prefixed lmp__.
 */
#ifndef LMP_INTERNAL_H
#define LMP_INTERNAL_H

#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lmp.h"

#define LMP_UNUSED(x) ((void)(x))

/* --- Lua 5.1 compatibility (LuaJIT lacks these 5.2+ helpers) --------------- */
#define lmp__absindex(L, i) \
  ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)

/* --- embedded Lua modules (generated from lua/ by scripts/embed_lua.cmake) -- */
typedef struct {
  const char *name;       /* module name for require, e.g. "lmp.worker" */
  const char *chunkname;  /* "@lmp/worker.lua", as tracebacks show it */
  const char *source;
  size_t size;
} lmp__lua_module;

extern const lmp__lua_module lmp__lua_modules[];

/* Puts a loader for every embedded module into package.preload (entries
 * already there are kept, so a host can override one).  Raises on failure. */
void lmp__preload_lua(lua_State *L);

/* Loads embedded module `name` as a chunk; pushes it or raises. */
void lmp__load_embedded(lua_State *L, const char *name);

/* --- errors (lmp_error.c) -------------------------------------------------- */

/* Pushes a new lmp error table {kind=, message=} with the shared error
 * metatable; its __tostring gives "lmp.<kind>: <message>". */
void lmp__error_push(lua_State *L, const char *kind, const char *fmt, ...);

/* Raises an lmp error.  Never returns. */
int lmp__error_raise(lua_State *L, const char *kind, const char *fmt, ...);

/* Registers lmp.errors, lmp.error and the error metatable into the table
 * at the top of the stack. */
void lmp__error_open(lua_State *L);

/* The message handler used for every protected call that reports to a
 * person: turns the error into a string (honouring __tostring) and appends
 * a traceback. */
int lmp__traceback(lua_State *L);

/* lua_pcall with lmp__traceback as message handler. */
int lmp__pcall_traceback(lua_State *L, int nargs, int nresults);

/* Prints "<prefix>: <message>" to stderr for the error value at the top of
 * the stack and pops it. */
void lmp__report(lua_State *L, const char *prefix);

/* --- processes (lmp_worker.c) ---------------------------------------------- */

/* Replaces os.exit in a state that lmp owns (the host's, a worker's) with
 * one that closes the state before exiting unless told not to. */
void lmp__install_closing_exit(lua_State *L);

/* Runs lmp._atexit() if lmp is loaded: daemon children are terminated, the
 * others joined.  Errors are reported on stderr. */
void lmp__run_atexit(lua_State *L);

/* --- hashes (lmp_hash.c) ---------------------------------------------------- */

/* Adds hmac, digest and random_bytes to the core table at the top. */
void lmp__hash_open(lua_State *L);

/* --- platform (lmp_platform.c) --------------------------------------------- */

/* Absolute path of the running executable, or NULL.  Static storage. */
const char *lmp__self_exe(void);

/* Path of the shared object or executable that holds lmp's code, or NULL.
 * Static storage. */
const char *lmp__self_image(void);

/* Descriptors 0, 1 and 2.  A host may run with stdin, stdout or stderr
 * closed (a daemon, a job started with `<&-`); a descriptor opened then
 * takes the free number.  lmp's and libuv's descriptors must not: a child
 * inherits 1 and 2 as its stdout and stderr (its output would go into an
 * lmp connection), and libuv aborts the process when it closes one of its
 * own there (uv__close asserts fd > 2).  So: */

/* Returns fd if it is above 2; else a close-on-exec copy of it on the lowest
 * free number above 2, closing fd (-1 with errno set if that fails, fd
 * closed too).  fd < 0 is returned as is.  For every descriptor lmp opens. */
int lmp__fd_above_stdio(int fd);

/* Opens /dev/null on each of 0, 1 and 2 that is closed, so that what libuv
 * opens next (the loop's descriptors, those of uv_spawn) lands above them,
 * and a child started meanwhile gets /dev/null for a closed stdout or
 * stderr.  Returns which ones it opened, for lmp__stdio_release, which
 * closes them again: hold them only around such a call.  (A thread of the
 * host that dup2()s onto one of them in between loses that copy.) */
int lmp__stdio_hold(void);
void lmp__stdio_release(int held);

#endif /* LMP_INTERNAL_H */
