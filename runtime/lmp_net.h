/*
 * lmp_net.h -- the sockets under Listener and Client (lmp_net.c).
 */
#ifndef LMP_NET_H
#define LMP_NET_H

#include "lmp_internal.h"

/* Adds the socket functions of Listener and Client to the core table. */
void lmp__net_open(lua_State *L);

#endif /* LMP_NET_H */
