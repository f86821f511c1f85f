/*
 * lmp_bag.h -- a Queue's custody of its items' shared buffers (lmp_bag.c).
 */
#ifndef LMP_BAG_H
#define LMP_BAG_H

#include "lmp_internal.h"

/* Adds bag_new and bag_from_fds to the core table. */
void lmp__bag_open(lua_State *L);

#endif /* LMP_BAG_H */
