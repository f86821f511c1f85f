/*
 * lmp_hash.h -- digests, HMAC and random challenges (lmp_hash.c).
 */
#ifndef LMP_HASH_H
#define LMP_HASH_H

#include "lmp_internal.h"

/* Adds hmac, digest, compare_digest and random_bytes (libcrypto, getrandom)
 * to the core table at the top. */
void lmp__hash_open(lua_State *L);

#endif /* LMP_HASH_H */
