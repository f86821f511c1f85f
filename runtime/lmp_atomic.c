/*
 * lmp_atomic.c -- atomic operations on shared integer words, for the FFI
 * (see lmp_atomic.h).
 *
 * Each function works on the unsigned type U of T's width, through a U *
 * (C lets a signed and an unsigned type of one width alias each other),
 * and converts back to T: unsigned arithmetic wraps, where a signed
 * overflow would be undefined, and GCC converts an out-of-range U to T
 * modulo 2^bits, as the hardware does.
 */
#include <stdint.h>

#include "lmp_atomic.h"

/* No lock may hide behind these: a process that died holding one would
 * stop every other. */
_Static_assert(__atomic_always_lock_free(sizeof(uint8_t), 0), "8-bit atomics take a lock");
_Static_assert(__atomic_always_lock_free(sizeof(uint16_t), 0), "16-bit atomics take a lock");
_Static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0), "32-bit atomics take a lock");
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0), "64-bit atomics take a lock");

#define LMP_ATOMIC_DEFINE(s, T, U)                                           \
  T lmp__atomic_add_##s(T *p, T n) {                                         \
    return (T)__atomic_add_fetch((U *)p, (U)n, __ATOMIC_SEQ_CST);            \
  }                                                                          \
  T lmp__atomic_cas_##s(T *p, T expected, T v) {                             \
    U old = (U)expected;                                                     \
    __atomic_compare_exchange_n((U *)p, &old, (U)v, 0, __ATOMIC_SEQ_CST,     \
                                __ATOMIC_SEQ_CST);                           \
    return (T)old;                                                           \
  }                                                                          \
  T lmp__atomic_exchange_##s(T *p, T v) {                                    \
    return (T)__atomic_exchange_n((U *)p, (U)v, __ATOMIC_SEQ_CST);           \
  }
LMP_ATOMIC_TYPES(LMP_ATOMIC_DEFINE)
#undef LMP_ATOMIC_DEFINE

void lmp__atomic_open(lua_State *L) {
#define LMP_ATOMIC_PUSH(s, T, U)                                             \
  lua_pushlightuserdata(L, (void *)(uintptr_t)lmp__atomic_add_##s);          \
  lua_setfield(L, -2, "atomic_add_" #s);                                     \
  lua_pushlightuserdata(L, (void *)(uintptr_t)lmp__atomic_cas_##s);          \
  lua_setfield(L, -2, "atomic_cas_" #s);                                     \
  lua_pushlightuserdata(L, (void *)(uintptr_t)lmp__atomic_exchange_##s);     \
  lua_setfield(L, -2, "atomic_exchange_" #s);
  LMP_ATOMIC_TYPES(LMP_ATOMIC_PUSH)
#undef LMP_ATOMIC_PUSH
}
