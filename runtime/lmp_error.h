/*
 * lmp_error.h -- lmp's error objects for Lua callers, and the traceback
 * handler every protected call shares (lmp_error.c).
 */
#ifndef LMP_ERROR_H
#define LMP_ERROR_H

#include "lmp_internal.h"

/* Pushes a new lmp error table {kind=, message=} with the shared error
 * metatable; its __tostring gives "lmp.<kind>: <message>". */
void lmp__error_push(lua_State *L, const char *kind, const char *fmt, ...);

/* Raises an lmp error.  Never returns. */
int lmp__error_raise(lua_State *L, const char *kind, const char *fmt, ...);

/* Pushes the metatable that every lmp error table has (created on first
 * use). */
void lmp__error_push_mt(lua_State *L);

/* The message handler used for every protected call that reports to a
 * person: turns the error into a string (honouring __tostring) and appends
 * a traceback. */
int lmp__traceback(lua_State *L);

/* lua_pcall with lmp__traceback as message handler. */
int lmp__pcall_traceback(lua_State *L, int nargs, int nresults);

/* Prints "<prefix>: <message>" to stderr for the error value at the top of
 * the stack and pops it. */
void lmp__report(lua_State *L, const char *prefix);

#endif /* LMP_ERROR_H */
