/*
 * lmp_preload.h -- lmp's Lua modules, compiled into the binary
 * (lmp_preload.c; the table itself is generated from lua/ by
 * scripts/embed_lua.cmake).
 */
#ifndef LMP_PRELOAD_H
#define LMP_PRELOAD_H

#include "lmp_internal.h"

typedef struct {
  const char *name;       /* module name for require, e.g. "lmp.pool" */
  const char *chunkname;  /* "@lmp/pool.lua", as tracebacks show it */
  const char *source;
  size_t size;
} lmp__lua_module;

/* The embedded modules, ended by an entry whose name is NULL. */
extern const lmp__lua_module lmp__lua_modules[];

/* Puts a loader for every embedded module into package.preload (entries
 * already there are kept, so a host can override one).  Raises on failure. */
void lmp__preload_lua(lua_State *L);

/* Loads embedded module `name` as a chunk; pushes it or raises. */
void lmp__load_embedded(lua_State *L, const char *name);

#endif /* LMP_PRELOAD_H */
