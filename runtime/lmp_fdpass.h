/*
 * lmp_fdpass.h -- messages with descriptors attached (lmp_fdpass.c).
 */
#ifndef LMP_FDPASS_H
#define LMP_FDPASS_H

#include "lmp_internal.h"

/* Adds fdpass_send, fdpass_recv, socketpair, kill and close_fd to
 * the core table. */
void lmp__fdpass_open(lua_State *L);

#endif /* LMP_FDPASS_H */
