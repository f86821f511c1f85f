/*
 * lmp_proto.c -- fresh closures of received bytecode that share one
 * prototype.
 *
 * A function crosses processes by value: its bytecode, then its upvalues.
 * The receiver must make a new closure for every message (a function's
 * upvalues are part of its value, so a closure decoded earlier cannot be
 * reused), but loading the same bytecode again would make a new prototype
 * each time, and LuaJIT keeps its compiled traces per prototype: a worker
 * would compile the same function again for every task.
 *
 * So the first time some bytecode P arrives, it is wrapped in a factory F,
 * the bytecode of
 *
 *     local u1, ..., un
 *     return function ... end      -- P, its upvalues bound to u1..un
 *
 * and F is kept, keyed by P's bytes.  Every call of F returns a new closure
 * of the one prototype P, with fresh upvalues (all nil), which the decoder
 * then sets.  F is not written by hand: LuaJIT compiles a template with a
 * placeholder for P, and P's bytes replace the placeholder's.  Only the
 * upvalue descriptors of P change: they now name F's local slots, keeping
 * P's own "immutable" marks.  Anything this file does not understand falls
 * back to loading P as it is.
 *
 * The layout read here is LuaJIT 2.1's bytecode dump (lj_bcdump.h): a
 * header, then prototypes, children first, each preceded by its length,
 * then a zero byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lmp_buf.h"
#include "lmp_proto.h"

#define CACHE_KEY "lmp.proto.factories"     /* bytecode -> factory */
#define TEMPLATE_KEY "lmp.proto.templates"  /* upvalue count -> template */
#define CACHE_MAX 256   /* factories kept; the cache restarts when full */

/* Flags of a dump's header, and of upvalue descriptors (lj_bcdump.h and
 * lj_obj.h of LuaJIT 2.1). */
#define DUMP_F_BE 0x01
#define DUMP_F_STRIP 0x02
#define UV_IMMUTABLE 0x4000

typedef struct {
  const unsigned char *p, *end;
  int ok;
} reader;

static size_t uleb(reader *r) {
  size_t v = 0;
  int shift = 0;
  while (r->ok) {
    unsigned char b;
    if (r->p >= r->end || shift > 28) {
      r->ok = 0;
      break;
    }
    b = *r->p++;
    v |= (size_t)(b & 0x7f) << shift;
    if (b < 0x80) return v;
    shift += 7;
  }
  return 0;
}

static void skip(reader *r, size_t n) {
  if (!r->ok || (size_t)(r->end - r->p) < n) r->ok = 0;
  else r->p += n;
}

/* A parsed dump: where its header ends, and its last two prototypes
 * (offset of each one's length prefix, and of its upvalue descriptors). */
typedef struct {
  int flags;
  size_t body;                 /* the first prototype's length prefix */
  size_t last, last_uv, last_end;
  size_t prev, prev_uv;        /* the prototype before the last, if any */
  int last_nuv, prev_nuv;
} dump_info;

static int parse_dump(const char *code, size_t len, dump_info *di) {
  reader r = {(const unsigned char *)code, (const unsigned char *)code + len, 1};
  memset(di, 0, sizeof(*di));
  if (len < 5 || memcmp(code, "\033LJ", 3) != 0) return -1;
  r.p += 4;  /* the signature and the version, which lua_load checks */
  di->flags = (int)uleb(&r);
  if (!(di->flags & DUMP_F_STRIP)) skip(&r, uleb(&r));  /* the chunk name */
  di->body = (size_t)(r.p - (const unsigned char *)code);
  di->last = (size_t)-1;
  while (r.ok) {
    size_t at = (size_t)(r.p - (const unsigned char *)code), plen, nbc;
    const unsigned char *start;
    int nuv;
    plen = uleb(&r);
    if (!r.ok || plen == 0) break;
    start = r.p;
    skip(&r, 3);                 /* flags, numparams, framesize */
    if (!r.ok || r.p >= r.end) return -1;
    nuv = *r.p++;
    uleb(&r);                    /* constants: GC objects, */
    uleb(&r);                    /* numbers, */
    nbc = uleb(&r);              /* instructions (without the header) */
    if (!(di->flags & DUMP_F_STRIP) && uleb(&r) != 0) {
      uleb(&r);                  /* first line, */
      uleb(&r);                  /* number of lines */
    }
    if (nbc > len / 4) return -1;
    skip(&r, nbc * 4);
    di->prev = di->last;
    di->prev_uv = di->last_uv;
    di->prev_nuv = di->last_nuv;
    di->last = at;
    di->last_uv = (size_t)(r.p - (const unsigned char *)code);
    di->last_nuv = nuv;
    skip(&r, (size_t)nuv * 2);
    /* The fields read must lie inside the prototype's own length. */
    if (!r.ok || (size_t)(r.p - start) > plen) return -1;
    r.p = start;
    skip(&r, plen);
    di->last_end = (size_t)(r.p - (const unsigned char *)code);
  }
  /* A zero length (read above) ends the dump; nothing may follow it. */
  if (!r.ok || di->last == (size_t)-1 || r.p != r.end) return -1;
  return 0;
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  LMP_UNUSED(L);
  return lmp__buf_append(ud, p, n) ? 1 : 0;
}

/* Pushes the dump of the template for `nuv` upvalues (the factory of a
 * placeholder function), or nil if it cannot be made. */
static void push_template(lua_State *L, int nuv) {
  lmp__registry_table(L, TEMPLATE_KEY, NULL);
  lua_rawgeti(L, -1, nuv);
  if (lua_isnil(L, -1)) {
    /* Locals never assigned: the placeholder's descriptors carry the
     * immutable mark, which push_factory replaces with P's own. */
    char src[64 + 2 * 8 * 256];
    size_t n = 0;
    lmp_buf out = {0};
    int i, ok;
    lua_pop(L, 1);
    for (i = 1; i <= nuv; i++)
      n += (size_t)snprintf(src + n, sizeof(src) - n, "%su%d", i == 1 ? "local " : ",", i);
    n += (size_t)snprintf(src + n, sizeof(src) - n, " return function() return ");
    for (i = 1; i <= nuv; i++)
      n += (size_t)snprintf(src + n, sizeof(src) - n, "%su%d", i == 1 ? "" : ",", i);
    n += (size_t)snprintf(src + n, sizeof(src) - n, " end");
    ok = luaL_loadbuffer(L, src, n, "=lmp.proto") == 0;
    ok = ok && lua_dump(L, dump_writer, &out) == 0;
    lua_pop(L, 1);
    if (ok) lua_pushlstring(L, out.data, out.len);
    else lua_pushnil(L);
    lmp__buf_free(&out);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, nuv);
  }
  lua_remove(L, -2);
}

/* Pushes the factory of bytecode code[0..len) as a loaded function, or
 * returns -1 (pushing nothing) when it cannot be built. */
static int push_factory(lua_State *L, const char *code, size_t len) {
  dump_info p, t;
  const char *tpl;
  size_t tlen, i;
  lmp_buf out = {0};
  int rc = -1;
  if (parse_dump(code, len, &p) != 0 || (p.flags & DUMP_F_BE)) return -1;
  push_template(L, p.last_nuv);
  tpl = lua_tolstring(L, -1, &tlen);
  /* The template's placeholder is its last-but-one prototype, with exactly
   * P's number of upvalues; both dumps are of the same kind (stripped or
   * not), so that the factory's own prototype reads the same in P's. */
  if (!tpl || parse_dump(tpl, tlen, &t) != 0 || t.prev == (size_t)-1 ||
      t.prev_nuv != p.last_nuv ||
      (t.flags & DUMP_F_STRIP) != (p.flags & DUMP_F_STRIP))
    goto done;
  if (lmp__buf_append(&out, code, p.last_end) != 0 ||
      lmp__buf_append(&out, tpl + t.last, tlen - t.last) != 0)
    goto done;
  for (i = 0; i < (size_t)p.last_nuv; i++) {
    uint16_t mine, slot;
    memcpy(&mine, code + p.last_uv + 2 * i, 2);
    memcpy(&slot, tpl + t.prev_uv + 2 * i, 2);
    slot = (uint16_t)((slot & ~UV_IMMUTABLE) | (mine & UV_IMMUTABLE));
    memcpy(out.data + p.last_uv + 2 * i, &slot, 2);
  }
  if (luaL_loadbuffer(L, out.data, out.len, "=?") != 0) {
    lua_pop(L, 1);
    goto done;
  }
  lua_remove(L, -2);  /* the template */
  rc = 0;
done:
  if (rc != 0) lua_pop(L, 1);
  lmp__buf_free(&out);
  return rc;
}

int lmp__proto_closure(lua_State *L, const char *code, size_t len) {
  int cache;
  lmp__registry_table(L, CACHE_KEY, NULL);
  cache = lua_gettop(L);
  lua_pushlstring(L, code, len);
  lua_rawget(L, cache);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (push_factory(L, code, len) != 0) {
      lua_remove(L, cache);
      return luaL_loadbuffer(L, code, len, "=?") == 0 ? 0 : -1;
    }
    /* Count the entries in slot 0; start afresh when the cache is full. */
    lua_rawgeti(L, cache, 0);
    if (lua_tointeger(L, -1) >= CACHE_MAX) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_replace(L, cache);
      lua_pushvalue(L, cache);
      lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
      lua_pushinteger(L, 0);
    }
    lua_pushinteger(L, lua_tointeger(L, -1) + 1);
    lua_rawseti(L, cache, 0);
    lua_pop(L, 1);
    lua_pushlstring(L, code, len);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
  }
  lua_remove(L, cache);
  lua_call(L, 0, 1);
  return 0;
}
