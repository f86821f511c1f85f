/*
 * lmp_codec_enc.c -- encoding: JSON text for plain data, lmp's binary
 * format for everything else (see lmp_codec.h for the format).
 *
 * encode() first writes JSON.  The moment it meets something JSON cannot
 * carry losslessly (NaN, a hole, a shared table, a function, ...) it starts
 * over in the binary format, so plain data pays nothing for the extensions
 * and everything else still round-trips.
 *
 * Memory: the maps and scratch buffers live in a context userdata kept in
 * the registry and reused, so an error raised in the middle of an encoding
 * (which longjmps) leaks nothing and the next encoding finds warm memory.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "lmp_buf.h"
#include "lmp_codec.h"
#include "lmp_error.h"

#define CTX_KEY "lmp.codec.encoder"
#define NOT_PLAIN 1  /* json_*: give up on JSON, use the binary format */

/* --- a pointer -> integer map (tables and upvalues seen so far) ------------ */

typedef struct {
  const void *key;
  uint32_t value;
  uint32_t gen;  /* entries of older generations are empty: no clearing */
} ptrmap_slot;

typedef struct {
  ptrmap_slot *slots;
  uint32_t mask, count, gen;
} ptrmap;

static void ptrmap_reset(ptrmap *m) {
  m->count = 0;
  if (++m->gen == 0) {  /* wrapped: really clear once every 2^32 uses */
    if (m->slots) memset(m->slots, 0, sizeof(*m->slots) * (m->mask + 1));
    m->gen = 1;
  }
}

static uint32_t ptr_hash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (uint32_t)x;
}

/* Returns the slot for `key`: filled (gen current) if present, else the
 * empty slot where it goes. */
static ptrmap_slot *ptrmap_find(ptrmap *m, const void *key) {
  uint32_t i = ptr_hash(key) & m->mask;
  for (;;) {
    ptrmap_slot *s = &m->slots[i];
    if (s->gen != m->gen || s->key == key) return s;
    i = (i + 1) & m->mask;
  }
}

static int ptrmap_grow(ptrmap *m) {
  ptrmap old = *m;
  uint32_t i, size = m->slots ? (m->mask + 1) * 2 : 64;
  ptrmap_slot *slots = calloc(size, sizeof(*slots));
  if (slots == NULL) return LMP_ENOMEM;
  m->slots = slots;
  m->mask = size - 1;
  m->gen = 1;
  m->count = 0;
  for (i = 0; old.slots && i <= old.mask; i++) {
    if (old.slots[i].gen == old.gen) {
      ptrmap_slot *s = ptrmap_find(m, old.slots[i].key);
      *s = old.slots[i];
      s->gen = m->gen;
      m->count++;
    }
  }
  free(old.slots);
  return 0;
}

/* --- the encoder context ---------------------------------------------------- */

enum { PATH_INDEX, PATH_KEY, PATH_UPVALUE, PATH_LABEL, PATH_GLOBAL };

typedef struct {
  int kind;
  int key_idx;        /* PATH_KEY: stack index of the key */
  lua_Integer index;  /* PATH_INDEX */
  const char *name;   /* PATH_UPVALUE, PATH_LABEL, PATH_GLOBAL */
} path_frame;

/* Where a string with an id was written, to check that a later string at
 * the same address is still the same bytes (see bin_str). */
typedef struct {
  size_t off;
  size_t len;
} str_def;

#define NO_TAG ((size_t)-1)

typedef struct {
  ptrmap tables;       /* table or function -> reference id */
  ptrmap upvalues;     /* upvalue id -> function id << 8 | index */
  ptrmap strings;      /* string bytes -> string id (binary format) */
  ptrmap modules;      /* tables of package.loaded -> 1 */
  const void **loaded; /* package.loaded when `modules` was made: its
                          string keys and table values, in order */
  uint32_t loaded_n, loaded_cap;
  int loaded_valid;
  unsigned by_value_gen; /* lmp__codec_by_value_gen when it was made */
  str_def *strs;       /* string id -> where its bytes were written */
  uint32_t strs_cap;
  size_t *obj_tag;     /* reference id -> offset of its table's tag, or
                          NO_TAG (a function: always remembered) */
  uint32_t obj_cap;
  lmp_buf scratch;     /* bytecode of the function being dumped */
  lmp_buf own_out;     /* the output of lmp.codec.encode() */
  path_frame *path;
  int path_cap;
  int busy;
  int finalized;       /* its __gc has run: the memory above is gone */
} enc_ctx;

typedef struct {
  lua_State *L;
  enc_ctx *ctx;
  lmp_buf *out;
  const lmp_codec_opts *opts;
  int max_depth;
  int depth;
  uint32_t next_ref;
  uint32_t next_str;
  int modules_built;   /* this encoding has scanned package.loaded */
  double share_at;     /* FFI arrays this big go by handle; 0: none */
  double share_strings_at;  /* strings this big go by handle; 0: none */
  double share_serial;  /* this encoding, for the share hooks: a value
                           met twice in one message shares one handle */
  uint32_t nglobals;   /* names queued in SLOT_GLOBALS */
  lua_Integer first, last, stopped;  /* lmp__codec_encode_lines */
  const char *path_prefix;  /* paths start here, not at the role: the path
                               of the function that reads a global */
  int base;            /* stack index of the first of the helper slots: */
#define SLOT_NAME_BY_MT(e) ((e)->base)
#define SLOT_EXT_BY_MT(e) ((e)->base + 1)
#define SLOT_MODULES(e) ((e)->base + 2)   /* table -> module name, lazily */
#define SLOT_CTX 3                        /* the context's userdata */
#define SLOT_CFUNCS(e) ((e)->base + 3)    /* C function -> {module, key} */
#define SLOT_GLOBALS(e) ((e)->base + 4)   /* [i] names to send, in order,
                                             [-i] the path of the function
                                             that reads it; name -> the
                                             table it is read from */
} enc;

static int push_module_name(enc *e, int idx, const void *p);

/* When the state closes (lua_close, os.exit(code, true)), every finalizer
 * runs, the registry's context being no exception, and the ones that run
 * after it may still encode.  So a finalized context is left empty and
 * marked, and push_ctx does not hand it out again. */
static int ctx_gc(lua_State *L) {
  enc_ctx *c = lua_touserdata(L, 1);
  free(c->tables.slots);
  free(c->upvalues.slots);
  free(c->strings.slots);
  free(c->modules.slots);
  free(c->strs);
  free(c->obj_tag);
  free(c->loaded);
  free(c->path);
  lmp__buf_free(&c->scratch);
  lmp__buf_free(&c->own_out);
  memset(c, 0, sizeof(*c));
  c->finalized = 1;
  return 0;
}

/* Pushes a context that is not in use: the state's shared one, or a fresh
 * one when encode is re-entered (from an extension's encoder).  A fresh
 * one becomes the shared one if there is none yet, or if the shared one
 * was finalized (the new one is finalized in a later round of lua_close). */
static enc_ctx *push_ctx(lua_State *L) {
  enc_ctx *c, *shared;
  lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  shared = lua_touserdata(L, -1);
  if (shared && !shared->busy && !shared->finalized) return shared;
  lua_pop(L, 1);  /* the registry still holds it */
  c = lua_newuserdata(L, sizeof(*c));
  memset(c, 0, sizeof(*c));
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  if (shared == NULL || shared->finalized) {
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
  }
  return c;
}

/* --- errors with paths ------------------------------------------------------- */

static int is_ident_char(char ch, int first) {
  return ch == '_' || ((ch | 32) >= 'a' && (ch | 32) <= 'z') ||
         (!first && ch >= '0' && ch <= '9');
}

static int is_identifier(const char *s, size_t len) {
  size_t i;
  if (len == 0) return 0;
  for (i = 0; i < len; i++)
    if (!is_ident_char(s[i], i == 0)) return 0;
  return 1;
}

#define PATH_SHOWN 12

/* Pushes the path to the value being encoded, e.g. value.args[2].handler */
static void push_path(enc *e) {
  lua_State *L = e->L;
  luaL_Buffer b;
  int i;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, e->path_prefix ? e->path_prefix
                    : e->opts->role ? e->opts->role : "value");
  for (i = 1; i <= e->depth && i < e->ctx->path_cap; i++) {
    path_frame *f = &e->ctx->path[i];
    char num[64];
    /* A path thousands of levels deep says no more than its two ends. */
    if (e->depth > 2 * PATH_SHOWN && i == PATH_SHOWN + 1) {
      snprintf(num, sizeof(num), "<%d more levels>", e->depth - 2 * PATH_SHOWN);
      luaL_addstring(&b, num);
      i = e->depth - PATH_SHOWN;
      continue;
    }
    switch (f->kind) {
      case PATH_INDEX:
        snprintf(num, sizeof(num), "[%lld]", (long long)f->index);
        luaL_addstring(&b, num);
        break;
      case PATH_KEY: {
        size_t len;
        const char *s;
        int t = lua_type(L, f->key_idx);
        if (t == LUA_TSTRING) {
          s = lua_tolstring(L, f->key_idx, &len);
          if (is_identifier(s, len)) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, s, len);
          } else {
            luaL_addstring(&b, "[\"");
            luaL_addlstring(&b, s, len > 40 ? 40 : len);
            luaL_addstring(&b, len > 40 ? "...\"]" : "\"]");
          }
        } else if (t == LUA_TNUMBER) {
          snprintf(num, sizeof(num), "[%.17g]", lua_tonumber(L, f->key_idx));
          luaL_addstring(&b, num);
        } else if (t == LUA_TBOOLEAN) {
          luaL_addstring(&b, lua_toboolean(L, f->key_idx) ? "[true]" : "[false]");
        } else {
          luaL_addstring(&b, "[<");
          luaL_addstring(&b, lua_typename(L, t));
          luaL_addstring(&b, " key>]");
        }
        break;
      }
      case PATH_UPVALUE:
        luaL_addstring(&b, "<upvalue ");
        luaL_addstring(&b, f->name && f->name[0] ? f->name : "?");
        luaL_addchar(&b, '>');
        break;
      case PATH_LABEL:
        luaL_addstring(&b, f->name);
        break;
      case PATH_GLOBAL:
        luaL_addstring(&b, "<global ");
        luaL_addstring(&b, f->name);
        luaL_addchar(&b, '>');
        break;
    }
  }
  luaL_pushresult(&b);
}

static int enc_error(enc *e, const char *fmt, const char *arg) {
  push_path(e);
  return lmp__error_raise(e->L, "CodecError", fmt, lua_tostring(e->L, -1), arg);
}

static void enc_nomem(enc *e) {
  enc_error(e, "%s: out of memory%s", "");
}

/* Adds `key`, absent from m (`s` is the slot ptrmap_find gave for it). */
static void ptrmap_add(enc *e, ptrmap *m, ptrmap_slot *s, const void *key,
                       uint32_t value) {
  if (m->count * 2 >= m->mask) {
    if (ptrmap_grow(m)) enc_nomem(e);
    s = ptrmap_find(m, key);
  }
  s->key = key;
  s->gen = m->gen;
  s->value = value;
  m->count++;
}

static inline void out_append(enc *e, const void *p, size_t n) {
  lmp_buf *b = e->out;
  if (b->cap - b->len < n && lmp__buf_grow(b, n)) enc_nomem(e);
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static inline void out_byte(enc *e, int c) {
  lmp_buf *b = e->out;
  if (b->cap == b->len && lmp__buf_grow(b, 1)) enc_nomem(e);
  b->data[b->len++] = (char)c;
}

/* The slow half of enter(): the depth limit, a longer path. */
static void enter_grow(enc *e) {
  enc_ctx *c = e->ctx;
  int cap = c->path_cap ? c->path_cap * 2 : 64;
  path_frame *p;
  if (e->depth >= e->max_depth)
    enc_error(e, "%s: nested too deeply (more than %s levels)",
              lua_pushfstring(e->L, "%d", e->max_depth));
  if (e->depth + 1 < c->path_cap) return;
  p = realloc(c->path, sizeof(*p) * (size_t)cap);
  if (p == NULL) enc_nomem(e);
  c->path = p;
  c->path_cap = cap;
}

/* Enters one level: checks the depth and records how we got there. */
static inline path_frame *enter(enc *e, int kind) {
  enc_ctx *c = e->ctx;
  if (e->depth >= e->max_depth || e->depth + 1 >= c->path_cap) enter_grow(e);
  e->depth++;
  c->path[e->depth].kind = kind;
  return &c->path[e->depth];
}

#define leave(e) ((e)->depth--)

/* The Lua stack of one C call is limited (LuaJIT: 8000 slots); running out
 * of it is one more way of being nested too deeply. */
static void stack_room(enc *e) {
  if (!lua_checkstack(e->L, 8))
    enc_error(e, "%s: nested too deeply (out of Lua stack)%s", "");
}

/* Compare and copy a few bytes without a call into libc, which costs more
 * than the work for the keys of a record. */
static inline int short_equal(const char *a, const char *b, size_t n) {
  if (n > 16) return memcmp(a, b, n) == 0;
  while (n--)
    if (*a++ != *b++) return 0;
  return 1;
}

static inline void short_copy(char *to, const char *from, size_t n) {
  if (n > 16) {
    memcpy(to, from, n);
    return;
  }
  while (n--) *to++ = *from++;
}

/* --- JSON --------------------------------------------------------------------- */

/* Length of the UTF-8 sequence of a non-ASCII character at s, or 0 if it
 * is not valid UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above
 * U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t avail) {
  unsigned c = s[0], c1;
  if (c >= 0xC2 && c <= 0xDF)
    return avail >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (avail < 3) return 0;
    c1 = s[1];
    if ((c1 & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0)) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (avail < 4) return 0;
    c1 = s[1];
    if ((c1 & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
      return 0;
    if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90)) return 0;
    return 4;
  }
  return 0;
}

/* Escapes needed inside a JSON string: '"', '\\' and control characters. */
static const char json_escape[256] = {
  'u','u','u','u','u','u','u','u','b','t','n','u','f','r','u','u',
  'u','u','u','u','u','u','u','u','u','u','u','u','u','u','u','u',
  0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
};

/* Bytes that go into a JSON string as they are: ASCII but for the
 * escapes. */
static const unsigned char json_plain[256] = {
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static int json_string(enc *e, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, run = 0;
  lmp_buf *b = e->out;
  if (b->cap - b->len < len + 2 && lmp__buf_grow(b, len + 2)) enc_nomem(e);
  b->data[b->len++] = '"';
  while (i < len) {
    unsigned c;
    while (i < len && json_plain[p[i]]) i++;  /* the bytes copied as is */
    if (i == len) break;
    c = p[i];
    if (c >= 0x80) {
      /* JSON text must be UTF-8: other bytes go in the binary format. */
      size_t valid = utf8_sequence(p + i, len - i);
      if (valid == 0) return NOT_PLAIN;
      i += valid;
      continue;
    }
    if (json_escape[c]) {
      char esc = json_escape[c];
      out_append(e, s + run, i - run);
      if (esc == 'u') {
        char u[6] = {'\\', 'u', '0', '0', "0123456789abcdef"[c >> 4],
                     "0123456789abcdef"[c & 15]};
        out_append(e, u, 6);
      } else {
        char two[2] = {'\\', esc};
        out_append(e, two, 2);
      }
      run = i + 1;
    }
    i++;
  }
  if (run == 0) {  /* nothing escaped: the room reserved above is there */
    short_copy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len++] = '"';
    return 0;
  }
  out_append(e, s + run, len - run);
  out_byte(e, '"');
  return 0;
}

/* Writes the decimal digits of v (v < 10^19) at the end of buf; returns
 * where they start. */
static char *format_uint(char *end, uint64_t v) {
  do {
    *--end = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return end;
}

static const double powers_of_ten[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
                                       1e7, 1e8};

/* Writes the shortest decimal form that reads back as exactly `d`. */
static void json_number(enc *e, double d) {
  char num[40], *p, *end = num + sizeof(num);
  int n, k;
  if (d == 0 && signbit(d)) {
    out_append(e, "-0", 2);
    return;
  }
  if (d == floor(d) && fabs(d) < 9007199254740992.0) {
    p = format_uint(end, (uint64_t)fabs(d));
    if (d < 0) *--p = '-';
    out_append(e, p, (size_t)(end - p));
    return;
  }
  /* Most numbers people write have a few decimals: if m = d * 10^k is an
   * integer and m / 10^k (one correctly rounded division, as strtod of the
   * decimal m·10^-k is) gives back d, that decimal is exact and, for the
   * smallest such k, the shortest. */
  if (fabs(d) < 1e15) {
    for (k = 1; k <= 8; k++) {
      double m = d * powers_of_ten[k];
      if (m == floor(m) && fabs(m) < 9007199254740992.0 &&
          m / powers_of_ten[k] == d) {
        uint64_t u = (uint64_t)fabs(m);
        int i;
        p = end;
        for (i = 0; i < k; i++, u /= 10) *--p = (char)('0' + u % 10);
        *--p = '.';
        p = format_uint(p, u);
        if (d < 0) *--p = '-';
        out_append(e, p, (size_t)(end - p));
        return;
      }
    }
  }
  for (k = 15; k < 17; k++) {
    n = snprintf(num, sizeof(num), "%.*g", k, d);
    if (strtod(num, NULL) == d) break;
  }
  if (k == 17) n = snprintf(num, sizeof(num), "%.17g", d);
  out_append(e, num, (size_t)n);
}

static int json_value(enc *e, int idx);

/* The rest of an array whose keys stopped arriving in order (key
 * `next` is at top + 1, its value at top + 2; keys 1..next-1 are written):
 * counts the keys left, which must be integers, then writes next..n if
 * the keys are exactly 1..n. */
static int json_array_rest(enc *e, int idx, int top, double next) {
  lua_State *L = e->L;
  double count = next - 1, max = next - 1, i;
  do {
    double k;
    if (lua_type(L, top + 1) != LUA_TNUMBER) return NOT_PLAIN;
    k = lua_tonumber(L, top + 1);
    if (k < 1 || k != floor(k) || k > 9007199254740992.0) return NOT_PLAIN;
    if (k > max) max = k;
    count++;
    lua_settop(L, top + 1);
  } while (lua_next(L, idx));
  if (count != max) return NOT_PLAIN;  /* holes */
  for (i = next; i <= max; i++) {
    if (i > 1) out_byte(e, ',');
    lua_rawgeti(L, idx, (int)i);
    if (json_value(e, top + 1)) return NOT_PLAIN;
    lua_settop(L, top);
  }
  return 0;
}

/* Writes the table at idx as a JSON array or object, in one pass over its
 * keys: string keys make an object; integer keys an array, if they are
 * exactly 1..n.  LuaJIT walks an array part in order, so the values can
 * usually be written as the keys come; json_array_rest takes over when
 * they do not.  Anything else is not plain. */
static int json_table(enc *e, int idx) {
  lua_State *L = e->L;
  ptrmap *m = &e->ctx->tables;
  const void *p = lua_topointer(L, idx);
  ptrmap_slot *s;
  int top;
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return NOT_PLAIN;
  }
  /* A table seen before makes a shared reference or a cycle, which JSON
   * would silently turn into copies. */
  s = ptrmap_find(m, p);
  if (s->gen == m->gen) return NOT_PLAIN;
  ptrmap_add(e, m, s, p, 0);
  /* A loaded module travels by reference, which JSON cannot say. */
  if (push_module_name(e, idx, p)) {
    lua_pop(L, 1);
    return NOT_PLAIN;
  }
  /* Too deep: the binary pass reports it, with the path. */
  if (e->depth >= e->max_depth) return NOT_PLAIN;
  if (!lua_checkstack(L, 8)) return NOT_PLAIN;
  enter(e, PATH_LABEL)->name = "";
  top = lua_gettop(L);
  lua_pushnil(L);
  if (!lua_next(L, idx)) {
    out_append(e, "{}", 2);
  } else if (lua_type(L, top + 1) == LUA_TSTRING) {
    out_byte(e, '{');
    for (;;) {
      size_t klen;
      const char *k = lua_tolstring(L, top + 1, &klen);
      if (json_string(e, k, klen)) return NOT_PLAIN;
      out_byte(e, ':');
      if (json_value(e, top + 2)) return NOT_PLAIN;
      lua_settop(L, top + 1);
      if (!lua_next(L, idx)) break;
      if (lua_type(L, top + 1) != LUA_TSTRING) return NOT_PLAIN;
      out_byte(e, ',');
    }
    out_byte(e, '}');
  } else {
    double next = 1;
    out_byte(e, '[');
    for (;;) {
      if (lua_type(L, top + 1) != LUA_TNUMBER ||
          lua_tonumber(L, top + 1) != next) {
        if (json_array_rest(e, idx, top, next)) return NOT_PLAIN;
        break;
      }
      if (next > 1) out_byte(e, ',');
      if (json_value(e, top + 2)) return NOT_PLAIN;
      lua_settop(L, top + 1);
      next++;
      if (!lua_next(L, idx)) break;
    }
    out_byte(e, ']');
  }
  leave(e);
  return 0;
}

static int json_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) out_append(e, "true", 4);
      else out_append(e, "false", 5);
      return 0;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, idx);
      if (!isfinite(d)) return NOT_PLAIN;
      json_number(e, d);
      return 0;
    }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (e->share_strings_at > 0 && (double)len >= e->share_strings_at) return NOT_PLAIN;
      return json_string(e, s, len);
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) != NULL) return NOT_PLAIN;
      out_append(e, "null", 4);
      return 0;
    case LUA_TTABLE:
      return json_table(e, idx);
    default:  /* nil inside JSON does not come back as nil; the rest is code */
      return NOT_PLAIN;
  }
}

/* --- the binary format ------------------------------------------------------- */

/* Writes v as an unsigned LEB128 varint into b[10]; returns its length. */
static int varint_bytes(unsigned char *b, uint64_t v) {
  int n = 0;
  do {
    b[n] = (unsigned char)(v & 0x7f);
    v >>= 7;
    if (v) b[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

static void bin_varint(enc *e, uint64_t v) {
  unsigned char b[10];
  out_append(e, b, (size_t)varint_bytes(b, v));
}

static void bin_string(enc *e, const char *s, size_t len) {
  if (lmp__buf_reserve(e->out, len + 11)) enc_nomem(e);
  e->out->data[e->out->len++] = LMP_TAG_STRING;
  bin_varint(e, len);
  memcpy(e->out->data + e->out->len, s, len);
  e->out->len += len;
}

/* A string value.  Short ones get an id the first time (STRING_DEF) and
 * travel as that id afterwards (STRING_REF): keys repeat in every record,
 * and the decoder then neither copies nor hashes them again.  Strings are
 * known by address (LuaJIT interns them); a string that died during the
 * encoding (an extension's encoder may run any code) may leave its address
 * to another, so a match is confirmed on the bytes written the first
 * time. */
static void bin_str(enc *e, const char *s, size_t len) {
  enc_ctx *c = e->ctx;
  ptrmap *m = &c->strings;
  ptrmap_slot *slot;
  lmp_buf *b = e->out;
  uint32_t id;
  if (len - 1 >= LMP_CODEC_STRING_DEF_MAX) {  /* also len == 0 */
    bin_string(e, s, len);
    return;
  }
  slot = ptrmap_find(m, s);
  if (slot->gen == m->gen) {
    str_def *d = &c->strs[slot->value];
    if (d->len == len && short_equal(b->data + d->off, s, len)) {
      if (lmp__buf_reserve(b, 6)) enc_nomem(e);
      b->data[b->len] = LMP_TAG_STRING_REF;
      b->len += (size_t)varint_bytes((unsigned char *)b->data + b->len + 1,
                                     slot->value) + 1;
      return;
    }
  }
  if (e->next_str >= LMP_CODEC_MAX_STRING_IDS) {
    bin_string(e, s, len);
    return;
  }
  if (e->next_str >= c->strs_cap) {
    uint32_t cap = c->strs_cap ? c->strs_cap * 2 : 256;
    str_def *t = realloc(c->strs, sizeof(*t) * cap);
    if (t == NULL) enc_nomem(e);
    c->strs = t;
    c->strs_cap = cap;
  }
  id = e->next_str++;
  if (slot->gen == m->gen) slot->value = id;  /* the address has new bytes */
  else ptrmap_add(e, m, slot, s, id);
  if (lmp__buf_reserve(b, len + 2)) enc_nomem(e);
  b->data[b->len++] = LMP_TAG_STRING_DEF;
  b->data[b->len++] = (char)len;  /* len <= 64: a one-byte varint */
  c->strs[id].off = b->len;
  c->strs[id].len = len;
  short_copy(b->data + b->len, s, len);
  b->len += len;
}

static void bin_number(enc *e, double d) {
  unsigned char b[9];
  if (d == floor(d) && d >= -2147483648.0 && d <= 2147483647.0 &&
      !(d == 0 && signbit(d))) {
    int32_t i = (int32_t)d;
    if (i >= -128 && i <= 127) {
      b[0] = LMP_TAG_INT8;
      b[1] = (unsigned char)(int8_t)i;
      out_append(e, b, 2);
    } else {
      uint32_t u = (uint32_t)i;
      b[0] = LMP_TAG_INT32;
      b[1] = (unsigned char)u;
      b[2] = (unsigned char)(u >> 8);
      b[3] = (unsigned char)(u >> 16);
      b[4] = (unsigned char)(u >> 24);
      out_append(e, b, 5);
    }
  } else {
    uint64_t u;
    int i;
    memcpy(&u, &d, 8);
    b[0] = LMP_TAG_DOUBLE;
    for (i = 0; i < 8; i++) b[1 + i] = (unsigned char)(u >> (8 * i));
    out_append(e, b, 9);
  }
}

/* How sure a path to a C function is to exist in another process: a
 * field of a module (string.format) is; a global of the base library
 * (print) too; any other global is the user's (fmt = string.format) and
 * may exist nowhere else. */
static int cfunction_path_rank(const char *module, const char *field) {
  static const char *const base[] = {
    "assert", "collectgarbage", "dofile", "error", "gcinfo", "getfenv",
    "getmetatable", "ipairs", "load", "loadfile", "loadstring", "module",
    "newproxy", "next", "pairs", "pcall", "print", "rawequal", "rawget",
    "rawset", "require", "select", "setfenv", "setmetatable", "tonumber",
    "tostring", "type", "unpack", "xpcall", NULL};
  int i;
  if (strcmp(module, "_G") != 0) return 0;
  for (i = 0; base[i]; i++)
    if (strcmp(field, base[i]) == 0) return 1;
  return 2;
}

/* Builds the reverse maps of package.loaded on first need: module tables
 * -> name, and C functions found in them -> {module, field, rank}: the
 * surest path found (cfunction_path_rank). */
static void build_module_maps(enc *e) {
  lua_State *L = e->L;
  if (!lua_isnil(L, SLOT_CFUNCS(e))) return;
  lua_newtable(L);
  lua_replace(L, SLOT_CFUNCS(e));
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "loaded");
  lua_remove(L, -2);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {  /* module name, module */
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {  /* field, value */
        if (lua_iscfunction(L, -1) && lua_type(L, -2) == LUA_TSTRING) {
          int rank = cfunction_path_rank(lua_tostring(L, -4), lua_tostring(L, -2));
          int kept = 3;  /* no path yet */
          lua_pushvalue(L, -1);
          lua_rawget(L, SLOT_CFUNCS(e));
          if (!lua_isnil(L, -1)) {
            lua_rawgeti(L, -1, 3);
            kept = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
          }
          lua_pop(L, 1);
          if (rank < kept) {
            lua_pushvalue(L, -1);
            lua_createtable(L, 3, 0);
            lua_pushvalue(L, -6);
            lua_rawseti(L, -2, 1);
            lua_pushvalue(L, -4);
            lua_rawseti(L, -2, 2);
            lua_pushinteger(L, rank);
            lua_rawseti(L, -2, 3);
            lua_rawset(L, SLOT_CFUNCS(e));
          }
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Table -> module name, for the tables that package.loaded holds.  Made
 * again only when package.loaded changed: modules may be loaded at any
 * time, so each encoding, on its first table, walks package.loaded and
 * compares it with what it held last time (a walk costs a fraction of
 * making the maps).  The C map answers "is it a module?" for every table
 * without a call into Lua; the Lua table, the environment of the context's
 * userdata, gives the names, and holds the modules and names, so no
 * address in the C map or the list can be reused by another object while
 * the context lives. */
static int loaded_unchanged(enc *e, int loaded) {
  lua_State *L = e->L;
  enc_ctx *c = e->ctx;
  uint32_t i = 0;
  if (!c->loaded_valid || c->by_value_gen != lmp__codec_by_value_gen) return 0;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
      if (i + 2 > c->loaded_n || c->loaded[i] != lua_tostring(L, -2) ||
          c->loaded[i + 1] != lua_topointer(L, -1)) {
        lua_pop(L, 2);
        return 0;
      }
      i += 2;
    }
    lua_pop(L, 1);
  }
  return i == c->loaded_n;
}

static void loaded_add(enc *e, const void *key, const void *table) {
  enc_ctx *c = e->ctx;
  if (c->loaded_n + 2 > c->loaded_cap) {
    uint32_t cap = c->loaded_cap ? c->loaded_cap * 2 : 64;
    const void **t = realloc((void *)c->loaded, sizeof(*t) * cap);
    if (t == NULL) enc_nomem(e);
    c->loaded = t;
    c->loaded_cap = cap;
  }
  c->loaded[c->loaded_n++] = key;
  c->loaded[c->loaded_n++] = table;
}

static void build_loaded_map(enc *e) {
  lua_State *L = e->L;
  enc_ctx *c = e->ctx;
  ptrmap *m = &c->modules;
  int loaded;
  stack_room(e);
  e->modules_built = 1;
  if (m->slots == NULL && ptrmap_grow(m)) enc_nomem(e);
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) lua_getfield(L, -1, "loaded");
  else lua_pushnil(L);
  loaded = lua_gettop(L);
  if (lua_istable(L, loaded) && loaded_unchanged(e, loaded)) {
    lua_pop(L, 2);
    return;
  }
  c->loaded_valid = 0;  /* until made again, whatever goes wrong */
  c->loaded_n = 0;
  ptrmap_reset(m);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfenv(L, SLOT_CTX);
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CODEC_BY_VALUE_KEY);  /* loaded + 2 */
  c->by_value_gen = lmp__codec_by_value_gen;
  if (lua_istable(L, loaded)) {
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
      int by_value = 0;
      if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, loaded + 2)) {
        lua_pushvalue(L, -2);
        lua_rawget(L, loaded + 2);
        by_value = lua_toboolean(L, -1);
        lua_pop(L, 1);
      }
      if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) && !by_value) {
        const void *p = lua_topointer(L, -1);
        ptrmap_slot *s = ptrmap_find(m, p);
        if (s->gen != m->gen) ptrmap_add(e, m, s, p, 1);
        loaded_add(e, lua_tostring(L, -2), p);
        lua_pushvalue(L, -2);
        lua_rawset(L, loaded + 1);
      } else {
        lua_pop(L, 1);
      }
    }
  }
  c->loaded_valid = 1;
  lua_pop(L, 4);
}

/* If the table at idx (whose address is p) is a loaded module, pushes its
 * name and returns 1; otherwise pushes nothing and returns 0. */
static int push_module_name(enc *e, int idx, const void *p) {
  lua_State *L = e->L;
  ptrmap *m = &e->ctx->modules;
  if (!e->modules_built) build_loaded_map(e);
  if (ptrmap_find(m, p)->gen != m->gen) return 0;
  if (lua_isnil(L, SLOT_MODULES(e))) {
    lua_getfenv(L, SLOT_CTX);
    lua_replace(L, SLOT_MODULES(e));
  }
  lua_pushvalue(L, idx);
  lua_rawget(L, SLOT_MODULES(e));
  if (lua_isnil(L, -1)) {  /* cannot happen: the two maps hold the same */
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

static void bin_value(enc *e, int idx);
static int bin_ext_by_mt(enc *e, int idx);

/* Returns 1 (and writes a REF) if the object at p was seen before;
 * otherwise gives it the next id and returns 0.  `tag` is where the tag
 * of a table will be written, NO_TAG for a function: a REF to a table
 * sets the SHARED flag in its tag, so that the decoder remembers only the
 * tables that are referenced again. */
static int bin_ref(enc *e, const void *p, size_t tag) {
  enc_ctx *c = e->ctx;
  ptrmap *m = &c->tables;
  ptrmap_slot *s = ptrmap_find(m, p);
  if (s->gen == m->gen) {
    size_t at = c->obj_tag[s->value];
    if (at != NO_TAG) e->out->data[at] |= LMP_TAG_SHARED;
    out_byte(e, LMP_TAG_REF);
    bin_varint(e, s->value);
    return 1;
  }
  if (e->next_ref >= c->obj_cap) {
    uint32_t cap = c->obj_cap ? c->obj_cap * 2 : 256;
    size_t *t = realloc(c->obj_tag, sizeof(*t) * cap);
    if (t == NULL || cap <= c->obj_cap) enc_nomem(e);
    c->obj_tag = t;
    c->obj_cap = cap;
  }
  c->obj_tag[e->next_ref] = tag;
  ptrmap_add(e, m, s, p, e->next_ref++);
  return 0;
}

static void bin_table(enc *e, int idx) {
  lua_State *L = e->L;
  lua_Integer n, i;
  uint64_t nhash = 0;
  size_t slot;
  uint32_t refs_from, strs_from;
  int has_mt, top, more, in_order = 1;
  const void *p = lua_topointer(L, idx);
  if (push_module_name(e, idx, p)) {
    size_t len;
    const char *name = lua_tolstring(L, -1, &len);
    out_byte(e, LMP_TAG_MODULE);
    bin_string(e, name, len);
    lua_pop(L, 1);
    return;
  }
  /* Plain data has no metatable: one call tells. */
  has_mt = lua_getmetatable(L, idx);
  if (has_mt) {
    lua_pop(L, 1);
    if (bin_ext_by_mt(e, idx)) return;
  }
  if (bin_ref(e, p, e->out->len)) return;
  stack_room(e);
  if (has_mt && lua_getmetatable(L, idx)) {
    size_t len;
    const char *name;
    lua_rawget(L, SLOT_NAME_BY_MT(e));
    name = lua_tolstring(L, -1, &len);
    if (name == NULL)
      enc_error(e, "%s: cannot encode a table with an unregistered metatable "
                "(register it with lmp.codec.register(name, mt))%s", "");
    out_byte(e, LMP_TAG_TABLE_MT);
    bin_string(e, name, len);
    lua_pop(L, 1);
  } else {
    out_byte(e, LMP_TAG_TABLE);
  }
  /* The array part is 1..#t; a hole inside it travels as nil, which the
   * decoder skips, so holes stay holes.  The count of the other keys is
   * only known after one pass over them: it gets a one-byte slot that
   * is widened in the rare case that it is 128 or more. */
  n = (lua_Integer)lua_objlen(L, idx);
  bin_varint(e, (uint64_t)n);
  slot = e->out->len;
  out_byte(e, 0);
  refs_from = e->next_ref;
  strs_from = e->next_str;
  top = lua_gettop(L);
  /* One pass: LuaJIT walks the array part first and in order, so keys
   * 1..n usually come first, and the rest are the other keys.  When they
   * do not, the rest of 1..n is read by index and a second pass writes
   * the other keys. */
  lua_pushnil(L);
  more = lua_next(L, idx);
  for (i = 1; i <= n; i++) {
    path_frame *f;
    if (!more || lua_type(L, top + 1) != LUA_TNUMBER ||
        lua_tonumber(L, top + 1) != (lua_Number)i) {
      in_order = 0;
      break;
    }
    f = enter(e, PATH_INDEX);
    f->index = i;
    bin_value(e, top + 2);
    leave(e);
    lua_settop(L, top + 1);
    more = lua_next(L, idx);
  }
  if (!in_order) {
    lua_settop(L, top);
    for (; i <= n; i++) {
      path_frame *f = enter(e, PATH_INDEX);
      f->index = i;
      lua_rawgeti(L, idx, (int)i);
      bin_value(e, top + 1);
      lua_settop(L, top);
      leave(e);
    }
    lua_pushnil(L);
    more = lua_next(L, idx);
  }
  for (; more; more = lua_next(L, idx)) {
    path_frame *f;
    int kt = lua_type(L, top + 1);
    if (kt == LUA_TNUMBER && !in_order) {
      double k = lua_tonumber(L, top + 1);
      if (k >= 1 && k <= (double)n && k == floor(k)) {
        lua_settop(L, top + 1);
        continue;
      }
    }
    f = enter(e, PATH_KEY);
    f->key_idx = top + 1;
    if (kt == LUA_TSTRING) {
      size_t len;
      const char *k = lua_tolstring(L, top + 1, &len);
      bin_str(e, k, len);
    } else {
      bin_value(e, top + 1);
    }
    bin_value(e, top + 2);
    leave(e);
    lua_settop(L, top + 1);
    nhash++;
  }
  if (nhash < 128) {
    e->out->data[slot] = (char)nhash;
  } else {
    unsigned char v[10];
    int len = varint_bytes(v, nhash);
    if (lmp__buf_reserve(e->out, (size_t)len - 1)) enc_nomem(e);
    memmove(e->out->data + slot + len, e->out->data + slot + 1,
            e->out->len - slot - 1);
    memcpy(e->out->data + slot, v, (size_t)len);
    e->out->len += (size_t)len - 1;
    /* What was written inside moved: so did the tags and strings that
     * later references patch or compare with. */
    for (; refs_from < e->next_ref; refs_from++)
      if (e->ctx->obj_tag[refs_from] != NO_TAG)
        e->ctx->obj_tag[refs_from] += (size_t)len - 1;
    for (; strs_from < e->next_str; strs_from++)
      e->ctx->strs[strs_from].off += (size_t)len - 1;
  }
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  LMP_UNUSED(L);
  return lmp__buf_append(ud, p, n) ? 1 : 0;
}

/* Pushes the bytecode of the Lua function at idx.  A closure's bytecode
 * never changes (only its upvalues do), so it is dumped once and kept while
 * the closure lives. */
static void push_bytecode(enc *e, int idx) {
  lua_State *L = e->L;
  enc_ctx *c = e->ctx;
  lmp__registry_table(L, LMP_CODEC_DUMPS, "k");
  lua_pushvalue(L, idx);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    c->scratch.len = 0;
    lua_pushvalue(L, idx);
    if (lua_dump(L, dump_writer, &c->scratch) != 0)
      enc_error(e, "%s: cannot encode this function (lua_dump failed)%s", "");
    lua_pop(L, 1);
    lua_pushlstring(L, c->scratch.data, c->scratch.len);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

/* A function defined at the prompt or in the main script takes the
 * globals it reads with it (the globals hook names them): they are queued
 * here and written after the value (bin_globals), all in one table, so that
 * a global several functions read travels once.  Returns whether the
 * function at idx gets that table as its environment: it does when it
 * touches globals at all, so that what the functions of one message set
 * for each other stays between them. */
static int queue_globals(enc *e, int idx) {
  lua_State *L = e->L;
  int names, i, n;
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CODEC_GLOBALS_HOOK);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushvalue(L, idx);
  lua_call(L, 1, 2);  /* -> names, env */
  names = lua_gettop(L) - 1;
  if (!lua_istable(L, names) || !lua_istable(L, names + 1)) {
    lua_settop(L, names - 1);
    return 0;
  }
  n = (int)lua_objlen(L, names);
  if (lua_isnil(L, SLOT_GLOBALS(e))) {
    lua_newtable(L);
    lua_replace(L, SLOT_GLOBALS(e));
  }
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, names, i);
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      continue;
    }
    lua_pushvalue(L, -1);
    lua_rawget(L, SLOT_GLOBALS(e));
    if (lua_isnil(L, -1)) {  /* first seen: queued, read from this env */
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_rawseti(L, SLOT_GLOBALS(e), (int)++e->nglobals);
      lua_pushvalue(L, names + 1);
      lua_rawset(L, SLOT_GLOBALS(e));
      if (lua_gettop(L) == names + 1) push_path(e);  /* once per function */
      lua_pushvalue(L, names + 2);
      lua_rawseti(L, SLOT_GLOBALS(e), -(int)e->nglobals);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_settop(L, names - 1);
  return 1;
}

/* Pushes env[name] (name and env on the stack) as the function would see
 * it, without running any code: raw, then along __index tables.  (An
 * __index function, a strict-globals guard say, is not called: the value
 * counts as nil.) */
static void push_global(lua_State *L, int env, int name) {
  int hops;
  lua_pushvalue(L, env);
  for (hops = 0; hops < 100; hops++) {
    lua_pushvalue(L, name);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1) || !lua_getmetatable(L, -2)) break;
    lua_getfield(L, -1, "__index");
    if (!lua_istable(L, -1)) {
      lua_pop(L, 2);
      break;
    }
    lua_replace(L, -4);  /* the next table to look in */
    lua_pop(L, 2);
  }
  lua_remove(L, -2);
}

/* The globals queued while the value was written, then those queued while
 * they were (a global helper reads globals of its own), until none is
 * left.  A nil one is left out: the receiver's own global of that name, if
 * any, is the one the function sees. */
static void bin_globals(enc *e) {
  lua_State *L = e->L;
  uint32_t i;
  out_byte(e, LMP_TAG_GLOBALS);
  for (i = 1; i <= e->nglobals; i++) {
    size_t len;
    const char *name;
    int top = lua_gettop(L);
    lua_rawgeti(L, SLOT_GLOBALS(e), (int)i);
    lua_pushvalue(L, -1);
    lua_rawget(L, SLOT_GLOBALS(e));
    push_global(L, top + 2, top + 1);
    if (lua_isnil(L, top + 3)) {
      lua_settop(L, top);
      continue;
    }
    name = lua_tolstring(L, top + 1, &len);
    bin_str(e, name, len);
    lua_rawgeti(L, SLOT_GLOBALS(e), -(int)i);
    e->path_prefix = lua_tostring(L, top + 4);
    enter(e, PATH_GLOBAL)->name = name;
    bin_value(e, top + 3);
    leave(e);
    e->path_prefix = NULL;
    lua_settop(L, top);
  }
  out_byte(e, LMP_TAG_NIL);
}

static void bin_function(enc *e, int idx) {
  lua_State *L = e->L;
  enc_ctx *c = e->ctx;
  uint32_t self_id;
  int nups, i;
  if (lua_iscfunction(L, idx)) {
    size_t len;
    const char *s;
    build_module_maps(e);
    lua_pushvalue(L, idx);
    lua_rawget(L, SLOT_CFUNCS(e));
    if (lua_isnil(L, -1))
      enc_error(e, "%s: cannot encode a C function that is not a field of a "
                "loaded module%s", "");
    out_byte(e, LMP_TAG_CFUNCTION);
    lua_rawgeti(L, -1, 1);
    s = lua_tolstring(L, -1, &len);
    bin_string(e, s, len);
    lua_rawgeti(L, -2, 2);
    s = lua_tolstring(L, -1, &len);
    bin_string(e, s, len);
    lua_pop(L, 3);
    return;
  }
  if (bin_ref(e, lua_topointer(L, idx), NO_TAG)) return;
  stack_room(e);
  self_id = e->next_ref - 1;
  push_bytecode(e, idx);
  out_byte(e, queue_globals(e, idx) ? LMP_TAG_FUNCTION_ENV : LMP_TAG_FUNCTION);
  {
    /* LuaJIT does not verify bytecode: a damaged function must be caught
     * before it is loaded, so it carries a checksum. */
    size_t len;
    const char *code = lua_tolstring(L, -1, &len);
    uint64_t sum = lmp__fnv1a64(code, len);
    unsigned char b[8];
    int k;
    for (k = 0; k < 8; k++) b[k] = (unsigned char)(sum >> (8 * k));
    out_append(e, b, 8);
    bin_string(e, code, len);
    lua_pop(L, 1);
  }
  for (nups = 0; lua_getupvalue(L, idx, nups + 1) != NULL; nups++)
    lua_pop(L, 1);
  bin_varint(e, (uint64_t)nups);
  for (i = 1; i <= nups; i++) {
    ptrmap *m = &c->upvalues;
    void *id = lua_upvalueid(L, idx, i);
    ptrmap_slot *s = ptrmap_find(m, id);
    if (s->gen == m->gen) {  /* shared with a function encoded before */
      out_byte(e, LMP_TAG_UPVAL_JOIN);
      bin_varint(e, s->value >> 8);
      bin_varint(e, s->value & 0xff);
      continue;
    }
    if (m->count * 2 >= m->mask) {
      if (ptrmap_grow(m)) enc_nomem(e);
      s = ptrmap_find(m, id);
    }
    s->key = id;
    s->gen = m->gen;
    s->value = self_id << 8 | (uint32_t)i;
    m->count++;
    {
      path_frame *f = enter(e, PATH_UPVALUE);
      f->name = lua_getupvalue(L, idx, i);
      bin_value(e, lua_gettop(L));
      lua_pop(L, 1);
      leave(e);
    }
  }
}

/* Writes an extension: its name, then its payload.  The payload (an
 * encodable value) is at the top of the stack and is popped. */
static void bin_extension(enc *e, const char *name, size_t len) {
  lua_State *L = e->L;
  out_byte(e, LMP_TAG_EXTENSION);
  bin_string(e, name, len);
  {
    path_frame *f = enter(e, PATH_LABEL);
    f->name = "<payload>";
    bin_value(e, lua_gettop(L));
    leave(e);
  }
  lua_pop(L, 1);
}

/* Calls an extension's encoder (function and object on the stack).  Its
 * error (an object that cannot travel now, say) becomes a CodecError that
 * says where the object was. */
static void call_encoder_n(enc *e, int nargs, int nresults) {
  lua_State *L = e->L;
  const char *msg;
  if (lua_pcall(L, nargs, nresults, 0) == 0) return;
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "message");
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushstring(L, "cannot encode this object");
    }
  } else if (!lua_isstring(L, -1)) {
    lua_pushstring(L, "cannot encode this object");
  }
  msg = lua_tostring(L, -1);
  enc_error(e, "%s: %s", msg);
}

static void call_encoder(enc *e, int nresults) { call_encoder_n(e, 1, nresults); }

/* Calls the hook at registry[key] on the value at idx, with the
 * arguments both of lmp's sharing hooks take after it (lua/lmp/buffers.lua):
 * [share_at,] the Queue that keeps big buffers or nil, this encoding's
 * serial.  Leaves name, payload; raises `what` if there is no hook. */
static void call_share_hook(enc *e, const char *key, int idx, int with_share_at,
                            const char *what) {
  lua_State *L = e->L;
  lua_getfield(L, LUA_REGISTRYINDEX, key);
  if (lua_isnil(L, -1)) enc_error(e, what, "");
  lua_pushvalue(L, idx);
  if (with_share_at) {
    if (e->share_at > 0) lua_pushnumber(L, e->share_at);
    else lua_pushnil(L);
  }
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CODEC_CUSTODY);
  lua_pushnumber(L, e->share_serial);
  call_encoder_n(e, with_share_at ? 4 : 3, 2);
}

/* A string of at least share_at bytes: its handle, made by the share hook
 * (lua/lmp/buffers.lua), goes instead of its bytes; or the bytes, if the
 * hook returns nothing (no shared memory to be had). */
static void bin_shared_string(enc *e, int idx) {
  lua_State *L = e->L;
  size_t len;
  const char *name;
  call_share_hook(e, LMP_CODEC_SHARE_HOOK, idx, 0, "%s: cannot share a string%s");
  if (lua_isnil(L, -2)) {
    const char *s = lua_tolstring(L, idx, &len);
    lua_pop(L, 2);
    bin_str(e, s, len);
    return;
  }
  name = lua_tolstring(L, -2, &len);
  if (name == NULL) enc_error(e, "%s: cannot share a string%s", "");
  bin_extension(e, name, len);
  lua_pop(L, 1);
}

/* A table or userdata whose metatable is an extension's: pushes nothing and
 * returns 0 when it is not one. */
static int bin_ext_by_mt(enc *e, int idx) {
  lua_State *L = e->L;
  size_t len;
  const char *name;
  if (!lua_getmetatable(L, idx)) return 0;
  lua_rawget(L, SLOT_EXT_BY_MT(e));
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);  /* the extension's encoder: obj -> payload */
  lua_pushvalue(L, idx);
  call_encoder(e, 1);
  name = lua_tolstring(L, -2, &len);
  bin_extension(e, name ? name : "", name ? len : 0);
  lua_pop(L, 2);
  return 1;
}

static void bin_userdata(enc *e, int idx) {
  if (!bin_ext_by_mt(e, idx))
    enc_error(e, "%s: cannot encode userdata%s", "");
}

/* FFI cdata travel when lmp's cdata hook claims them: hook(v, share_at,
 * queue, serial) -> name, payload, or nothing.  It claims shared Values
 * and Arrays, and with share_at, FFI arrays of numbers that big
 * (lua/lmp/buffers.lua). */
static void bin_cdata(enc *e, int idx) {
  lua_State *L = e->L;
  size_t len;
  const char *name;
  call_share_hook(e, LMP_CODEC_CDATA_HOOK, idx, 1, "%s: cannot encode a cdata%s");
  name = lua_tolstring(L, -2, &len);
  if (name == NULL) enc_error(e, "%s: cannot encode a cdata%s", "");
  bin_extension(e, name, len);
  lua_pop(L, 1);
}

static void bin_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      out_byte(e, LMP_TAG_NIL);
      break;
    case LUA_TBOOLEAN:
      out_byte(e, lua_toboolean(L, idx) ? LMP_TAG_TRUE : LMP_TAG_FALSE);
      break;
    case LUA_TNUMBER:
      bin_number(e, lua_tonumber(L, idx));
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      if (e->share_strings_at > 0 && (double)len >= e->share_strings_at)
        bin_shared_string(e, idx);
      else bin_str(e, s, len);
      break;
    }
    case LUA_TTABLE:
      bin_table(e, idx);
      break;
    case LUA_TFUNCTION:
      bin_function(e, idx);
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) != NULL)
        enc_error(e, "%s: cannot encode a light userdata%s", "");
      out_byte(e, LMP_TAG_NULL);
      break;
    case LUA_TUSERDATA:
      bin_userdata(e, idx);
      break;
    case LMP_TCDATA:
      bin_cdata(e, idx);
      break;
    default:
      enc_error(e, "%s: cannot encode a %s", luaL_typename(L, idx));
  }
}

/* --- entry point --------------------------------------------------------------- */

/* Runs inside lua_pcall: [1] the value, [2] the enc, [3] the context's
 * userdata. */
/* The helper slots and the maps, ready for a first value. */
double lmp__codec_share_threshold(lua_State *L) {
  double t = LMP_CODEC_SHARE_DEFAULT;
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CODEC_TABLE);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "share_threshold");
    if (lua_isnumber(L, -1)) t = lua_tonumber(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return t >= 1 ? t : 1;
}

static void encode_prepare(enc *e) {
  static atomic_ulong encodings;  /* (several states may encode at once) */
  lua_State *L = e->L;
  e->share_serial = (double)(atomic_fetch_add(&encodings, 1) + 1);
  e->share_at = e->opts->share >= LMP_SHARE_ARRAYS ? lmp__codec_share_threshold(L) : 0;
  e->share_strings_at = e->opts->share >= LMP_SHARE_ALL ? e->share_at : 0;
  e->base = SLOT_CTX + 1;
  lmp__registry_table(L, LMP_CODEC_NAME_BY_MT, NULL);
  lmp__registry_table(L, LMP_CODEC_EXT_BY_MT, NULL);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_pushnil(L);  /* SLOT_GLOBALS */
  if ((e->ctx->tables.slots == NULL && ptrmap_grow(&e->ctx->tables)) ||
      (e->ctx->upvalues.slots == NULL && ptrmap_grow(&e->ctx->upvalues)) ||
      (e->ctx->strings.slots == NULL && ptrmap_grow(&e->ctx->strings)))
    enc_nomem(e);
  ptrmap_reset(&e->ctx->tables);
  ptrmap_reset(&e->ctx->upvalues);
  ptrmap_reset(&e->ctx->strings);
}

static int encode_protected(lua_State *L) {
  enc *e = lua_touserdata(L, 2);
  size_t start = e->out->len;
  encode_prepare(e);
  if (e->opts->binary || json_value(e, 1) != 0) {
    e->out->len = start;
    e->depth = 0;
    ptrmap_reset(&e->ctx->tables);
    ptrmap_reset(&e->ctx->strings);
    lua_settop(L, SLOT_GLOBALS(e));
    out_byte(e, LMP_CODEC_MAGIC);
    out_byte(e, LMP_CODEC_VERSION);
    bin_value(e, 1);
    if (!lua_isnil(L, SLOT_GLOBALS(e))) bin_globals(e);
  }
  return 0;
}

/* [1] an array, [2] the enc, [3] the context's userdata: each of its items
 * from e->first to e->last as a line of JSON text.  Stops before the first
 * item JSON cannot carry (e->stopped): the caller encodes it alone to learn
 * why. */
static int encode_lines_protected(lua_State *L) {
  enc *e = lua_touserdata(L, 2);
  lua_Integer i;
  encode_prepare(e);
  for (i = e->first; i <= e->last; i++) {
    size_t start = e->out->len;
    lua_rawgeti(L, 1, (int)i);
    ptrmap_reset(&e->ctx->tables);
    ptrmap_reset(&e->ctx->strings);
    e->depth = 0;
    if (json_value(e, lua_gettop(L)) != 0) {
      e->out->len = start;
      e->stopped = i;
      break;
    }
    out_byte(e, '\n');
    lua_settop(L, SLOT_GLOBALS(e));
  }
  return 0;
}

/* Encodes the value at idx with context c (its userdata at the top of the
 * stack) into out.  The
 * context is busy while in use, so that an extension's encoder that encodes
 * in turn gets a context of its own; the protected call makes sure the flag
 * is cleared on every way out. */
static void run(lua_State *L, lua_CFunction f, int idx, enc *e, enc_ctx *c) {
  int status, ud = lua_gettop(L);  /* the context's userdata */
  e->L = L;
  e->max_depth = e->opts->max_depth > 0 ? e->opts->max_depth : LMP_CODEC_MAX_DEPTH;
  e->ctx = c;
  luaL_checkstack(L, 8, "lmp.codec");
  c->busy = 1;
  lua_pushcfunction(L, f);
  lua_pushvalue(L, idx);
  lua_pushlightuserdata(L, e);
  lua_pushvalue(L, ud);
  status = lua_pcall(L, 3, 0, 0);
  c->busy = 0;
  if (status) lua_error(L);
}

static void run_encode(lua_State *L, int idx, enc_ctx *c, lmp_buf *out,
                       const lmp_codec_opts *opts) {
  enc e;
  memset(&e, 0, sizeof(e));
  e.out = out;
  e.opts = opts;
  run(L, encode_protected, idx, &e, c);
}

lua_Integer lmp__codec_encode_lines(lua_State *L, int idx, lua_Integer first,
                                    lua_Integer last) {
  static const lmp_codec_opts opts;
  enc_ctx *c;
  enc e;
  idx = lmp__absindex(L, idx);
  c = push_ctx(L);
  c->own_out.len = 0;
  memset(&e, 0, sizeof(e));
  e.out = &c->own_out;
  e.opts = &opts;
  e.first = first;
  e.last = last;
  e.stopped = 0;
  run(L, encode_lines_protected, idx, &e, c);
  lua_pushlstring(L, c->own_out.data ? c->own_out.data : "", c->own_out.len);
  lua_remove(L, -2);
  return e.stopped;
}

void lmp__codec_encode(lua_State *L, int idx, lmp_buf *out,
                       const lmp_codec_opts *opts) {
  enc_ctx *c;
  idx = lmp__absindex(L, idx);
  c = push_ctx(L);
  run_encode(L, idx, c, out, opts);
  lua_pop(L, 1);
}

void lmp__codec_encode_string(lua_State *L, int idx,
                              const lmp_codec_opts *opts) {
  enc_ctx *c;
  idx = lmp__absindex(L, idx);
  c = push_ctx(L);
  c->own_out.len = 0;
  run_encode(L, idx, c, &c->own_out, opts);
  lua_pushlstring(L, c->own_out.data ? c->own_out.data : "", c->own_out.len);
  lua_remove(L, -2);
  /* Keep a warm buffer, but do not hold on to a huge one for ever. */
  if (c->own_out.cap > ((size_t)64 << 20)) lmp__buf_free(&c->own_out);
}
