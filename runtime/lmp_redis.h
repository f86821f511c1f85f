/*
 * lmp_redis.h -- a connection to a Redis server (lmp_redis.c).
 */
#ifndef LMP_REDIS_H
#define LMP_REDIS_H

#include "lmp_internal.h"

/* Adds redis_connect to the core table, and the connection's class. */
void lmp__redis_open(lua_State *L);

#endif /* LMP_REDIS_H */
