/*
 * fuzz_support.h -- what the libFuzzer targets of spec/fuzz share: one
 * lua_State with lmp, set up for the sanitizers, a Lua support table, the
 * check of a raised error, and the collection after each input.
 *
 * Every function here aborts (which libFuzzer reports as a crash) on a
 * failure of the harness itself: a target has no other way to fail.
 */
#ifndef FUZZ_SUPPORT_H
#define FUZZ_SUPPORT_H

#include <stddef.h>

#include <lua.h>

/* A new state for target `who` (the prefix of its messages): the standard
 * libraries, the JIT off, lmp required, a registered metatable
 * "fuzz.Point" and a module "fuzz_mod" (the seed corpora use both): what
 * spec/fuzz/fuzz_support.lua does.  The
 * Lua heap is malloc'ed, so that AddressSanitizer checks the C code's
 * accesses to Lua objects and LeakSanitizer sees the C buffers that Lua
 * objects own.  The state is closed at exit. */
lua_State *fuzz_new_state(const char *who);

/* Pushes the support table, what spec/fuzz/fuzz_support.lua returns:
 *   lmp        require "lmp"
 *   plain(v)   nil if v is plain data (nil, booleans, numbers, strings,
 *              lmp.null and tables of them, no loaded module among them),
 *              else a message saying what is not
 *   lmp_error(e, kinds)   is e an lmp error whose kind is a key of kinds? */
void fuzz_push_support(lua_State *L);

/* Runs spec/fuzz/<file> with the support table and the `nargs` values at
 * the top of the stack (popped) as its arguments (`...`), and leaves its
 * `nresults` results on the stack.  Aborts, with the traceback, if it
 * raises. */
void fuzz_run(lua_State *L, const char *file, int nargs, int nresults);

/* Aborts unless the value at the top of the stack (an error that a call
 * raised) is an lmp error of one of the kinds in the NULL-terminated
 * `kinds`; `what` names the call, `size` the input's length. */
void fuzz_check_error(lua_State *L, const char *what, size_t size,
                      const char *const kinds[]);

/* After each input: empties the stack and collects some garbage, all of
 * it now and then; aborts if the heap stays large after a full
 * collection (something accumulates across inputs). */
void fuzz_collect(lua_State *L);

#endif /* FUZZ_SUPPORT_H */
