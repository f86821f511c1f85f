/*
 * lmp_conn.h -- Connection objects, Pipe and connection.wait (lmp_conn.c).
 */
#ifndef LMP_CONN_H
#define LMP_CONN_H

#include "lmp_internal.h"

/* Adds Pipe, connection.wait and the core functions of Connections to the
 * table at the top of the stack. */
void lmp__conn_open(lua_State *L);

#endif /* LMP_CONN_H */
