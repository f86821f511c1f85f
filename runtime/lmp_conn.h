/*
 * lmp_conn.h -- Connection objects (lmp_conn.c) as other C files use them.
 */
#ifndef LMP_CONN_H
#define LMP_CONN_H

#include "lmp_internal.h"

typedef struct lmp_conn lmp_conn;

/* Pushes a new Connection owning `fd` (closed on failure).  Raises. */
lmp_conn *lmp__conn_new(lua_State *L, int fd, int readable, int writable);

/* The descriptor of the Connection at idx (-1 if closed), or -2 if the
 * value is not a Connection. */
int lmp__conn_fd(lua_State *L, int idx);

/* Does the Connection at idx hold received bytes not read yet? */
int lmp__conn_has_data(lua_State *L, int idx);

/* Adds Pipe and connection.wait to the table at the top of the stack. */
void lmp__conn_open(lua_State *L);

/* Adds the socket functions of Listener and Client (lmp_net.c). */
void lmp__net_open(lua_State *L);

/* Adds spawn, getpid, getcwd, chdir (lmp_process.c) to the core table. */
void lmp__process_open(lua_State *L);

#endif /* LMP_CONN_H */
