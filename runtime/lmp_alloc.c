/*
 * lmp_alloc.c -- where a Lua state's memory comes from (see lmp_alloc.h).
 *
 * LuaJIT's allocator is fast for small blocks, but it maps every block
 * of 128 KiB or more on its own and unmaps it when it is freed.  A pool
 * moving big chunks makes several such blocks per chunk (the task frame,
 * its items, the results, the reply), and every page of each is a fresh
 * page fault, some microseconds each on a virtual machine: a Pool.map of
 * 200k numbers spent more time faulting than working.  glibc's malloc
 * learns from the blocks freed to keep blocks of such sizes in its heap
 * and hand them out again, so here big blocks come from malloc and small
 * ones from LuaJIT.  Which allocator owns a block
 * follows from its size, which LuaJIT passes on every free and resize.
 */
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "lmp_alloc.h"

#define LMP_ALLOC_BIG ((size_t)64 << 10)

typedef struct {
  lua_Alloc small;
  void *small_ud;
} lmp_alloc;

/* A Lua state's blocks are found through LuaJIT's own memory, which
 * LeakSanitizer does not read: a process that ends without closing its
 * state (os.exit) would have every malloc'd block reported as a leak.
 * LuaJIT's own blocks are never reported; neither are these. */
#if defined(__SANITIZE_ADDRESS__)
/* (Not inlined: GCC would take the fresh block's bytes for an argument
 * read uninitialized.) */
static __attribute__((noinline)) void *big_block(void *p) {
  if (p != NULL) __lsan_ignore_object(p);
  return p;
}
#else
#define big_block(p) (p)
#endif

static void *small_alloc(lmp_alloc *a, void *ptr, size_t osize, size_t nsize) {
  return a->small(a->small_ud, ptr, osize, nsize);
}

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lmp_alloc *a = ud;
  int was_big = ptr != NULL && osize >= LMP_ALLOC_BIG;
  int big = nsize >= LMP_ALLOC_BIG;
  void *moved;
  if (nsize == 0) {
    if (was_big) free(ptr);
    else if (ptr != NULL) small_alloc(a, ptr, osize, 0);
    return NULL;
  }
  if (ptr == NULL) return big ? big_block(malloc(nsize)) : small_alloc(a, NULL, 0, nsize);
  if (was_big == big)
    return big ? big_block(realloc(ptr, nsize)) : small_alloc(a, ptr, osize, nsize);
  /* Across the line: the block moves to the other allocator.  NULL is
   * LuaJIT's out-of-memory error, even for a shrink. */
  moved = big ? big_block(malloc(nsize)) : small_alloc(a, NULL, 0, nsize);
  if (moved == NULL) return NULL;
  memcpy(moved, ptr, osize < nsize ? osize : nsize);
  if (was_big) free(ptr);
  else small_alloc(a, ptr, osize, 0);
  return moved;
}

lua_State *lmp__state_new(void) {
  lmp_alloc *a;
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  /* What the new state holds came from LuaJIT's allocator: it must all be
   * small for the rule above.  (It is: some 10 KiB.) */
  if ((size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 >= LMP_ALLOC_BIG) return L;
  if ((a = big_block(malloc(sizeof(*a)))) == NULL) return L;
  a->small = lua_getallocf(L, &a->small_ud);
  lua_setallocf(L, alloc, a);
  return L;
}

void lmp__state_close(lua_State *L) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  lua_close(L);
  /* LuaJIT's allocator of the state is not freed with it (LuaJIT frees
   * it only when it is the state's allocator): these are lmp's own
   * processes, which end next. */
  if (f == alloc) free(ud);
}
