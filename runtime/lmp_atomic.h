/*
 * lmp_atomic.h -- atomic add, compare-and-swap and exchange on the shared
 * words of integer Values and Arrays (lmp_atomic.c).
 *
 * LuaJIT's FFI has no atomic operations, so these are small C functions
 * that Lua calls through FFI function pointers (core.atomic_<op>_<type>),
 * with the address of the word: a compiled trace calls them in place, with
 * no Lua/C API call.  Every operation is one hardware atomic instruction
 * (or a compare-and-swap loop the compiler emits), sequentially consistent,
 * and lock-free, so it works between processes on shared memory and never
 * waits for one that died.  Arithmetic wraps around as the C type's does
 * (modulo 2^bits): the functions compute on the unsigned type of the same
 * width, so a signed overflow is not undefined behaviour.
 *
 * For each type T, with suffix i8 u8 i16 u16 i32 u32 i64 u64:
 *   T lmp__atomic_add_<s>(T *p, T n)              *p += n; returns the new *p
 *   T lmp__atomic_cas_<s>(T *p, T expected, T v)  if *p == expected then
 *                                                 *p = v; returns the old *p
 *                                                 (== expected: it was set)
 *   T lmp__atomic_exchange_<s>(T *p, T v)         *p = v; returns the old *p
 * p must be aligned to sizeof(T) (every Value and Array element is).
 */
#ifndef LMP_ATOMIC_H
#define LMP_ATOMIC_H

#include <stdint.h>

#include "lmp_internal.h"

#define LMP_ATOMIC_TYPES(X)                                                  \
  X(i8, int8_t, uint8_t)                                                     \
  X(u8, uint8_t, uint8_t)                                                    \
  X(i16, int16_t, uint16_t)                                                  \
  X(u16, uint16_t, uint16_t)                                                 \
  X(i32, int32_t, uint32_t)                                                  \
  X(u32, uint32_t, uint32_t)                                                 \
  X(i64, int64_t, uint64_t)                                                  \
  X(u64, uint64_t, uint64_t)

#define LMP_ATOMIC_DECLARE(s, T, U)                                          \
  T lmp__atomic_add_##s(T *p, T n);                                          \
  T lmp__atomic_cas_##s(T *p, T expected, T v);                              \
  T lmp__atomic_exchange_##s(T *p, T v);
LMP_ATOMIC_TYPES(LMP_ATOMIC_DECLARE)
#undef LMP_ATOMIC_DECLARE

/* Adds the functions' addresses to the core table at the top of the
 * stack, as light userdata: atomic_add_i8, atomic_cas_i8, ... */
void lmp__atomic_open(lua_State *L);

#endif /* LMP_ATOMIC_H */
