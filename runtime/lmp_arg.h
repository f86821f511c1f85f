/*
 * lmp_arg.h -- the arguments of the C functions lmp gives Lua code
 * (lmp_arg.c).
 *
 * The checks are luaL_check* and luaL_opt* as lmp spells them: a bad
 * argument raises an lmp TypeError (SPEC section 12) whose message starts
 * with the function's public name, as users call it:
 *
 *     lmp.codec.decode: bad argument #1 (string expected, got nil)
 *     Connection:send_bytes: bad argument #1 (string expected, got nil)
 *
 * In a method (a name with ':') self is not counted, as in luaL_argerror,
 * and a bad self is "bad self".  The names are recorded by lmp__register,
 * through which every table of lmp's C functions is filled; the running
 * function is found with lua_getstack and lua_getinfo.
 */
#ifndef LMP_ARG_H
#define LMP_ARG_H

#include "lmp_internal.h"

/* As luaL_setfuncs of Lua 5.2: sets t[name] = f for each entry of `l` in
 * the table t below the `nup` values at the top of the stack, each
 * function a closure with those values as upvalues (which are popped), and
 * records each function's public name: `prefix` followed by the entry's
 * name, "lmp.codec." + "decode", "Connection:" + "send" for a method,
 * "Connection." + "__index" for a metamethod, "lmp core." + "spawn" for
 * the core functions that lmp's Lua half calls. */
void lmp__register(lua_State *L, const char *prefix, const luaL_Reg *l,
                   int nup);

/* Pushes the metatable `tname` ("lmp.Connection") of a userdata type,
 * made on first use (as by luaL_newmetatable) with the metamethods `meta`
 * and the methods `methods` (either may be NULL): the methods are in a
 * table that is __index, or, given an `index` function, that function's
 * upvalue, and it is __index.  The functions are named after tname without
 * "lmp.": "Connection:send", "Connection.__gc". */
void lmp__push_class(lua_State *L, const char *tname, const luaL_Reg *meta,
                     const luaL_Reg *methods, lua_CFunction index);

/* Raise a TypeError for argument `arg` of the running function: "bad
 * argument #n (extramsg)", or "(tname expected, got <type>)".  Never
 * return. */
int lmp__argerror(lua_State *L, int arg, const char *extramsg);
int lmp__typeerror(lua_State *L, int arg, const char *tname);

/* The checks: the value, or a TypeError.  The lstring forms set *len when
 * len is not NULL; numbers are converted to strings in place, and numeric
 * strings to numbers, as by luaL_check*. */
lua_Number lmp__check_number(lua_State *L, int arg);
lua_Integer lmp__check_integer(lua_State *L, int arg);
const char *lmp__check_lstring(lua_State *L, int arg, size_t *len);
void lmp__check_type(lua_State *L, int arg, int type);
void lmp__check_any(lua_State *L, int arg);
/* A full userdata with the metatable named `tname` in the registry. */
void *lmp__check_udata(lua_State *L, int arg, const char *tname);

/* The same, or `def` when the argument is none or nil. */
lua_Number lmp__opt_number(lua_State *L, int arg, lua_Number def);
lua_Integer lmp__opt_integer(lua_State *L, int arg, lua_Integer def);
const char *lmp__opt_lstring(lua_State *L, int arg, const char *def,
                             size_t *len);

#define lmp__check_string(L, arg) lmp__check_lstring((L), (arg), NULL)
#define lmp__opt_string(L, arg, def) lmp__opt_lstring((L), (arg), (def), NULL)

#endif /* LMP_ARG_H */
