/*
 * lmp_shm.h -- shared memory segments (lmp_shm.c): the memory that locks,
 * Values, Arrays, queues and SharedMemory live in.
 */
#ifndef LMP_SHM_H
#define LMP_SHM_H

#include "lmp_internal.h"

typedef struct lmp_segment lmp_segment;

/* Adds the shared segment functions to the core table at the top of the
 * stack. */
void lmp__shm_open(lua_State *L);

/* The address of byte `offset` of the segment at idx, checked to hold
 * `size` bytes there; raises if closed or out of range.  *seg_out, if not
 * NULL, gets the segment for lmp__shm_pin. */
void *lmp__shm_at(lua_State *L, int idx, size_t offset, size_t size,
                  lmp_segment **seg_out);

/* A pinned segment stays mapped across a close until it is unpinned (a
 * close from a callback run while a wait sleeps on it). */
void lmp__shm_pin(lmp_segment *s);
void lmp__shm_unpin(lmp_segment *s);

#endif /* LMP_SHM_H */
