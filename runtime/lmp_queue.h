/*
 * lmp_queue.h -- the shared ring under Queue, JoinableQueue and SimpleQueue
 * (lmp_queue.c).
 */
#ifndef LMP_QUEUE_H
#define LMP_QUEUE_H

#include "lmp_internal.h"

/* Adds the queue functions to the core table at the top of the stack. */
void lmp__queue_open(lua_State *L);

#endif /* LMP_QUEUE_H */
