/*
 * lmp_codec_dec.c -- decoding JSON text and lmp's binary format.
 *
 * Input may be hostile (it can come from a socket), so every length is
 * checked against the bytes that remain, nesting is bounded, and memory
 * stays proportional to the input.  Errors raise a CodecError that says
 * what was wrong and at which byte.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lmp_codec.h"
#include "lmp_error.h"
#include "lmp_proto.h"

/* JSON: keys of the pairs that wait for their table (see json_flush). */
#define KEYS_MAX 16

typedef struct {
  lua_State *L;
  const unsigned char *start, *p, *end;
  const lmp_codec_opts *opts;
  int depth, max_depth;
  int refs;        /* stack index of the table id -> object, or 0 */
  uint32_t nrefs;  /* tables and functions met so far (the next id) */
  uint32_t nenv;   /* FUNCTION_ENVs met, at refs[-1..-nenv] */
  int keep_all;    /* version 1: any table may be referenced again */
  int strs;        /* stack index of the table string id -> string */
  uint32_t nstrs;
  int pending;     /* JSON: stack slots of items waiting for their table */
  int nkeys;       /* JSON: the keys of waiting pairs, in `keys`: */
  struct {
    const unsigned char *s;  /* NULL: a key with escapes */
    size_t len;
  } keys[KEYS_MAX];
} dec;

static int dec_error(dec *d, const char *fmt, ...) {
  lua_State *L = d->L;
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return lmp__error_raise(L, "CodecError", "decode: %s at byte %d",
                          lua_tostring(L, -1), (int)(d->p - d->start));
}

static void enter(dec *d) {
  if (++d->depth > d->max_depth)
    dec_error(d, "nested too deeply (more than %d levels)", d->max_depth);
  /* The Lua stack of one C call is limited (LuaJIT: 8000 slots). */
  if (!lua_checkstack(d->L, 8)) dec_error(d, "nested too deeply (out of Lua stack)");
}

/* --- JSON --------------------------------------------------------------------- */

static void json_value(dec *d);

static void skip_ws(dec *d) {
  while (d->p < d->end &&
         (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
    d->p++;
}

static void expect_literal(dec *d, const char *word, size_t len) {
  if ((size_t)(d->end - d->p) < len || memcmp(d->p, word, len) != 0)
    dec_error(d, "invalid literal (expected '%s')", word);
  d->p += len;
}

static int hex4(dec *d, const unsigned char *p) {
  int i, v = 0;
  if (d->end - p < 4) {
    d->p = p;
    dec_error(d, "truncated \\u escape");
  }
  for (i = 0; i < 4; i++) {
    int c = p[i], x;
    if (c >= '0' && c <= '9') x = c - '0';
    else if ((c | 32) >= 'a' && (c | 32) <= 'f') x = (c | 32) - 'a' + 10;
    else {
      d->p = p + i;
      return dec_error(d, "invalid \\u escape");
    }
    v = v << 4 | x;
  }
  return v;
}

static void add_utf8(luaL_Buffer *b, unsigned cp) {
  char u[4];
  int n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | cp >> 6);
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | cp >> 12);
    u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | cp >> 18);
    u[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    u[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  luaL_addlstring(b, u, (size_t)n);
}

/* The bytes that end a run of plain bytes in a string: '"', '\\' and the
 * control characters (an error). */
static const unsigned char string_stop[256] = {
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

/* Reads a string (d->p at the opening quote) and pushes it.  Returns
 * where its bytes are in the input, with their number in *len, or NULL if
 * it has escapes. */
static const unsigned char *json_string(dec *d, size_t *len) {
  lua_State *L = d->L;
  const unsigned char *run = ++d->p;
  luaL_Buffer b;
  int buffered = 0;
  for (;;) {
    unsigned c;
    const unsigned char *p = d->p, *end = d->end;
    while (p < end && !string_stop[*p]) p++;  /* the plain bytes */
    d->p = p;
    if (d->p >= d->end) dec_error(d, "unterminated string");
    c = *d->p;
    if (c == '"') break;
    if (c < 0x20) dec_error(d, "control character in string");
    if (c != '\\') {
      d->p++;
      continue;
    }
    if (!buffered) {
      luaL_buffinit(L, &b);
      buffered = 1;
    }
    luaL_addlstring(&b, (const char *)run, (size_t)(d->p - run));
    if (d->end - d->p < 2) dec_error(d, "unterminated string");
    switch (d->p[1]) {
      case '"': luaL_addchar(&b, '"'); break;
      case '\\': luaL_addchar(&b, '\\'); break;
      case '/': luaL_addchar(&b, '/'); break;
      case 'b': luaL_addchar(&b, '\b'); break;
      case 'f': luaL_addchar(&b, '\f'); break;
      case 'n': luaL_addchar(&b, '\n'); break;
      case 'r': luaL_addchar(&b, '\r'); break;
      case 't': luaL_addchar(&b, '\t'); break;
      case 'u': {
        unsigned cp = (unsigned)hex4(d, d->p + 2);
        if (cp >= 0xDC00 && cp <= 0xDFFF)
          dec_error(d, "invalid \\u escape (lone low surrogate)");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo;
          if (d->end - d->p < 12 || d->p[6] != '\\' || d->p[7] != 'u')
            dec_error(d, "invalid \\u escape (high surrogate without low)");
          lo = (unsigned)hex4(d, d->p + 8);
          if (lo < 0xDC00 || lo > 0xDFFF)
            dec_error(d, "invalid \\u escape (high surrogate without low)");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          d->p += 6;
        }
        add_utf8(&b, cp);
        d->p += 4;
        break;
      }
      default:
        d->p++;
        dec_error(d, "invalid escape '\\%c'", d->p[0]);
    }
    d->p += 2;
    run = d->p;
  }
  if (buffered) {
    luaL_addlstring(&b, (const char *)run, (size_t)(d->p - run));
    luaL_pushresult(&b);
    run = NULL;
  } else {
    *len = (size_t)(d->p - run);
    lua_pushlstring(L, (const char *)run, *len);
  }
  d->p++;
  return run;
}

static int is_digit(const unsigned char *p, const unsigned char *end) {
  return p < end && *p >= '0' && *p <= '9';
}

static const double exact_powers_of_ten[] = {
  1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
  1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};

static void json_number(dec *d) {
  const unsigned char *s = d->p, *p = d->p;
  int negative = 0, digits = 0, exp10 = 0, exp_sign = 1, exp_digits = 0;
  uint64_t mantissa = 0;
  if (*p == '-') {
    negative = 1;
    p++;
  }
  if (!is_digit(p, d->end)) dec_error(d, "invalid number");
  if (*p == '0') {
    p++;
    if (is_digit(p, d->end)) dec_error(d, "invalid number (leading zero)");
  } else {
    for (; is_digit(p, d->end); p++, digits++)
      if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*p - '0');
  }
  if (digits > 19) digits = 99;  /* too long for the fast path */
  if (p < d->end && *p == '.') {
    p++;
    if (!is_digit(p, d->end)) {
      d->p = p;
      dec_error(d, "invalid number (no digit after '.')");
    }
    for (; is_digit(p, d->end); p++, exp10--) {
      if (digits < 19 && (mantissa || *p != '0')) digits++;
      if (digits < 19) mantissa = mantissa * 10 + (uint64_t)(*p - '0');
      else digits = 99;
    }
  }
  if (p < d->end && (*p == 'e' || *p == 'E')) {
    int e10 = 0;
    p++;
    if (p < d->end && (*p == '+' || *p == '-')) exp_sign = *p++ == '-' ? -1 : 1;
    if (!is_digit(p, d->end)) {
      d->p = p;
      dec_error(d, "invalid number (no digit in exponent)");
    }
    for (; is_digit(p, d->end); p++, exp_digits++)
      if (e10 < 10000) e10 = e10 * 10 + (*p - '0');
    exp10 += exp_sign * e10;
  }
  /* Clinger's fast path: a mantissa below 2^53 and a power of ten that is
   * exact as a double give a correctly rounded result in one operation,
   * the same value strtod returns. */
  if (digits <= 15 && mantissa < ((uint64_t)1 << 53) && exp10 >= -22 &&
      exp10 <= 22) {
    double v = (double)mantissa;
    v = exp10 < 0 ? v / exact_powers_of_ten[-exp10] : v * exact_powers_of_ten[exp10];
    lua_pushnumber(d->L, negative ? -v : v);
  } else {
    /* strtod needs a terminated copy; a Lua string is one. */
    lua_pushlstring(d->L, (const char *)s, (size_t)(p - s));
    lua_pushnumber(d->L, strtod(lua_tostring(d->L, -1), NULL));
    lua_remove(d->L, -2);
  }
  d->p = p;
}

/* JSON does not say how big an array or object is, and a table that grows
 * one key at a time is rebuilt at each power of two.  So the first items
 * wait on the Lua stack, and the table is made at its final size when the
 * array or object ends; a longer one is made at PENDING_MAX items and
 * grows from there.  The stack of one C call is limited (LuaJIT: 8000
 * slots, of which nesting to the depth limit takes up to 3 a level), so
 * the items waiting at all levels together take at most PENDING_SLOTS.
 * Room is asked for before each item that waits: a collection may shrink
 * the stack of a C function to twice what it uses, forgetting what an
 * earlier lua_checkstack granted. */
#define PENDING_MAX 32
#define PENDING_SLOTS 1024

/* Whether the next item of an array or object can wait on the stack. */
static int json_can_wait(dec *d, int n) {
  return n < PENDING_MAX && d->pending < PENDING_SLOTS &&
         lua_checkstack(d->L, 16);
}

/* Whether the keys of the pairs waiting from `kbase` on are known to be
 * all different: then the order in which they go into their table does
 * not matter (with a key twice, the last one must win, as in cjson).
 * `kbase` < 0: not all of them were kept (KEYS_MAX, shared by the levels
 * of nesting, bounds the comparisons, which grow as the square). */
static int json_keys_distinct(dec *d, int kbase) {
  int i, j;
  if (kbase < 0) return 0;
  for (i = kbase; i < d->nkeys; i++) {
    if (d->keys[i].s == NULL) return 0;
    for (j = kbase; j < i; j++)
      if (d->keys[j].len == d->keys[i].len &&
          memcmp(d->keys[j].s, d->keys[i].s, d->keys[i].len) == 0)
        return 0;
  }
  return 1;
}

/* The table for the `n` items (values, or key/value pairs) above `base`:
 * replaces them by it, at base + 1.  Pairs with keys known to differ go
 * in from the top of the stack, one call each. */
static void json_flush(dec *d, int base, int n, int pairs, int kbase) {
  lua_State *L = d->L;
  int i;
  if (pairs && json_keys_distinct(d, kbase)) {
    lua_createtable(L, 0, n);
    lua_insert(L, base + 1);
    for (i = 0; i < n; i++) lua_rawset(L, base + 1);
    d->pending -= 2 * n;
  } else if (pairs) {
    lua_createtable(L, 0, n);
    for (i = 0; i < n; i++) {
      lua_pushvalue(L, base + 1 + 2 * i);
      lua_pushvalue(L, base + 2 + 2 * i);
      lua_rawset(L, -3);
    }
    lua_replace(L, base + 1);
    d->pending -= 2 * n;
  } else {
    d->pending -= n;
    lua_createtable(L, n, 0);
    lua_insert(L, base + 1);
    for (i = n; i > 0; i--) lua_rawseti(L, base + 1, i);
  }
  lua_settop(L, base + 1);
}

static void json_array(dec *d) {
  lua_State *L = d->L;
  int n = 0, base = lua_gettop(L), pending;
  enter(d);
  d->p++;
  skip_ws(d);
  if (d->p < d->end && *d->p == ']') {
    lua_createtable(L, 0, 0);
    d->p++;
    d->depth--;
    return;
  }
  for (pending = 1;;) {
    if (pending && !json_can_wait(d, n)) {
      json_flush(d, base, n, 0, d->nkeys);
      pending = 0;
    }
    json_value(d);
    n++;
    if (pending) d->pending++;
    else lua_rawseti(L, base + 1, n);
    skip_ws(d);
    if (d->p >= d->end) dec_error(d, "unterminated array");
    if (*d->p == ']') break;
    if (*d->p != ',') dec_error(d, "expected ',' or ']' in array");
    d->p++;
  }
  if (pending) json_flush(d, base, n, 0, d->nkeys);
  d->p++;
  d->depth--;
}

static void json_object(dec *d) {
  lua_State *L = d->L;
  int n = 0, base = lua_gettop(L), pending, kbase = d->nkeys, all_kept = 1;
  enter(d);
  d->p++;
  skip_ws(d);
  if (d->p < d->end && *d->p == '}') {
    lua_createtable(L, 0, 0);
    d->p++;
    d->depth--;
    return;
  }
  for (pending = 1;;) {
    const unsigned char *key;
    size_t klen = 0;
    if (pending && !json_can_wait(d, n)) {
      json_flush(d, base, n, 1, all_kept ? kbase : -1);
      d->nkeys = kbase;
      pending = 0;
    }
    skip_ws(d);
    if (d->p >= d->end || *d->p != '"') dec_error(d, "expected a string key");
    key = json_string(d, &klen);
    if (pending && d->nkeys < KEYS_MAX) {
      d->keys[d->nkeys].s = key;
      d->keys[d->nkeys].len = klen;
      d->nkeys++;
    } else {
      all_kept = 0;
    }
    skip_ws(d);
    if (d->p >= d->end || *d->p != ':') dec_error(d, "expected ':' after key");
    d->p++;
    json_value(d);
    n++;
    if (pending) d->pending += 2;
    else lua_rawset(L, base + 1);
    skip_ws(d);
    if (d->p >= d->end) dec_error(d, "unterminated object");
    if (*d->p == '}') break;
    if (*d->p != ',') dec_error(d, "expected ',' or '}' in object");
    d->p++;
  }
  if (pending) json_flush(d, base, n, 1, all_kept ? kbase : -1);
  d->nkeys = kbase;
  d->p++;
  d->depth--;
}

static void json_value(dec *d) {
  skip_ws(d);
  if (d->p >= d->end) dec_error(d, "unexpected end of input");
  switch (*d->p) {
    case '{': json_object(d); break;
    case '[': json_array(d); break;
    case '"': {
      size_t len;
      json_string(d, &len);
      break;
    }
    case 't': expect_literal(d, "true", 4); lua_pushboolean(d->L, 1); break;
    case 'f': expect_literal(d, "false", 5); lua_pushboolean(d->L, 0); break;
    case 'n': expect_literal(d, "null", 4); lua_pushlightuserdata(d->L, NULL); break;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
      json_number(d);
      break;
    default:
      if (*d->p >= 0x20 && *d->p < 0x7f)
        dec_error(d, "unexpected character '%c'", *d->p);
      dec_error(d, "unexpected byte %d", (int)*d->p);
  }
}

/* --- binary ------------------------------------------------------------------- */

static void need(dec *d, size_t n) {
  if ((size_t)(d->end - d->p) < n) dec_error(d, "truncated input");
}

static uint64_t varint(dec *d) {
  uint64_t v = 0;
  int shift;
  for (shift = 0; shift < 64; shift += 7) {
    unsigned c;
    need(d, 1);
    c = *d->p++;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  return (uint64_t)dec_error(d, "invalid length");
}

/* A count of items that each take at least `min_bytes`: bounded by what
 * is left, so that a forged count cannot make us allocate. */
static size_t count(dec *d, size_t min_bytes) {
  uint64_t n = varint(d);
  if (n > (uint64_t)(d->end - d->p) / min_bytes)
    dec_error(d, "count larger than the input");
  return (size_t)n;
}

static const char *bin_bytes(dec *d, size_t *len) {
  const char *s;
  *len = count(d, 1);
  s = (const char *)d->p;
  d->p += *len;
  return s;
}

/* A string value (with its tag), as names and bytecode are stored. */
static const char *bin_tagged_string(dec *d, size_t *len) {
  need(d, 1);
  if (*d->p++ != LMP_TAG_STRING) dec_error(d, "expected a string");
  return bin_bytes(d, len);
}

/* The object at the top gets the next id; it is remembered if `keep`
 * (a REF to it may follow), else only counted. */
static void refs_add(dec *d, int keep) {
  lua_State *L = d->L;
  if (d->refs == 0) dec_error(d, "internal: no reference table");
  ++d->nrefs;
  if (keep) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->refs, (int)d->nrefs);
  }
  if (d->nrefs >= 0x3ffffff) dec_error(d, "too many objects");
}

/* Pushes the object with reference id `id`, or raises. */
static void push_ref(dec *d, uint64_t id, const char *what) {
  lua_State *L = d->L;
  if (id >= d->nrefs) dec_error(d, "%s", what);
  lua_rawgeti(L, d->refs, (int)id + 1);
  /* A table written without the SHARED flag was not kept. */
  if (lua_isnil(L, -1)) dec_error(d, "%s", what);
}

static void refuse_code(dec *d, const char *what) {
  if (d->opts->safe)
    dec_error(d, "%s refused in safe mode", what);
}

static void bin_value(dec *d);

static void bin_table(dec *d, int with_mt, int shared) {
  lua_State *L = d->L;
  size_t narr, nhash, i, namelen = 0;
  const char *name = NULL;
  if (with_mt) name = bin_tagged_string(d, &namelen);
  narr = count(d, 1);
  nhash = count(d, 2);
  enter(d);
  lua_createtable(L, narr > (1 << 20) ? 1 << 20 : (int)narr,
                  nhash > (1 << 20) ? 1 << 20 : (int)nhash);
  refs_add(d, shared || d->keep_all);
  for (i = 1; i <= narr; i++) {
    bin_value(d);
    lua_rawseti(L, -2, (int)i);
  }
  for (i = 0; i < nhash; i++) {
    /* A string key, the usual one, needs no check. */
    need(d, 1);
    if (*d->p == LMP_TAG_STRING_REF || *d->p == LMP_TAG_STRING_DEF) {
      bin_value(d);
    } else {
      bin_value(d);
      if (lua_isnil(L, -1)) dec_error(d, "table key is nil");
      if (lua_type(L, -1) == LUA_TNUMBER && isnan(lua_tonumber(L, -1)))
        dec_error(d, "table key is NaN");
    }
    bin_value(d);
    lua_rawset(L, -3);
  }
  if (name) {
    lmp__registry_table(L, LMP_CODEC_MT_BY_NAME, NULL);
    lua_pushlstring(L, name, namelen);
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
      const char *n = (lua_pushlstring(L, name, namelen), lua_tostring(L, -1));
      dec_error(d, "metatable '%s' is not registered in this process "
                "(register it here with lmp.codec.register(\"%s\", mt))", n, n);
    }
    lua_setmetatable(L, -3);
    lua_pop(L, 1);
  }
  d->depth--;
}

/* Number of upvalues of the function at idx. */
static int count_upvalues(lua_State *L, int idx) {
  int n = 0;
  while (lua_getupvalue(L, idx, n + 1) != NULL) {
    lua_pop(L, 1);
    n++;
  }
  return n;
}

static void bin_function(dec *d, int takes_globals) {
  lua_State *L = d->L;
  size_t len, nups, i;
  int f, actual;
  const char *code;
  uint64_t sum = 0;
  refuse_code(d, "function");
  need(d, 8);
  for (i = 0; i < 8; i++) sum |= (uint64_t)d->p[i] << (8 * i);
  d->p += 8;
  code = bin_tagged_string(d, &len);
  if (len < 4 || memcmp(code, "\033LJ", 3) != 0)
    dec_error(d, "function is not LuaJIT bytecode");
  if (lmp__fnv1a64(code, len) != sum)
    dec_error(d, "function bytecode is damaged (checksum mismatch)");
  if (lmp__proto_closure(L, code, len) != 0)
    dec_error(d, "function bytecode does not load: %s", lua_tostring(L, -1));
  f = lua_gettop(L);
  refs_add(d, 1);  /* upvalue joins name functions by id */
  if (takes_globals) {  /* its environment comes after the value */
    if (d->nenv >= 0x3ffffff) dec_error(d, "too many functions");
    lua_pushvalue(L, f);
    lua_rawseti(L, d->refs, -(int)++d->nenv);
  }
  nups = count(d, 1);
  actual = count_upvalues(L, f);
  if (nups != (size_t)actual)
    dec_error(d, "function has %d upvalues, not %d", actual, (int)nups);
  enter(d);
  for (i = 1; i <= nups; i++) {
    need(d, 1);
    if (*d->p == LMP_TAG_UPVAL_JOIN) {
      uint64_t id, n;
      d->p++;
      id = varint(d);
      n = varint(d);
      push_ref(d, id, "upvalue refers to an unknown function");
      if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1) || n < 1 ||
          n > (uint64_t)count_upvalues(L, lua_gettop(L)))
        dec_error(d, "upvalue refers to a missing upvalue");
      lua_upvaluejoin(L, f, (int)i, lua_gettop(L), (int)n);
      lua_pop(L, 1);
    } else {
      bin_value(d);
      lua_setupvalue(L, f, (int)i);
    }
  }
  d->depth--;
}

/* Calls require(name), turning its failure into a CodecError. */
static void require_module(dec *d, const char *name, size_t len) {
  lua_State *L = d->L;
  lua_getglobal(L, "require");
  lua_pushlstring(L, name, len);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    const char *why = lua_tostring(L, -1);
    const char *n = (lua_pushlstring(L, name, len), lua_tostring(L, -1));
    dec_error(d, "cannot require module '%s': %s", n, why ? why : "?");
  }
}

static void bin_value(dec *d) {
  lua_State *L = d->L;
  unsigned tag;
  need(d, 1);
  tag = *d->p++;
  switch (tag) {
    case LMP_TAG_NIL: lua_pushnil(L); break;
    case LMP_TAG_FALSE: lua_pushboolean(L, 0); break;
    case LMP_TAG_TRUE: lua_pushboolean(L, 1); break;
    case LMP_TAG_NULL: lua_pushlightuserdata(L, NULL); break;
    case LMP_TAG_INT8:
      need(d, 1);
      lua_pushnumber(L, (int8_t)*d->p++);
      break;
    case LMP_TAG_INT32: {
      uint32_t u;
      need(d, 4);
      u = (uint32_t)d->p[0] | (uint32_t)d->p[1] << 8 | (uint32_t)d->p[2] << 16 |
          (uint32_t)d->p[3] << 24;
      d->p += 4;
      lua_pushnumber(L, (int32_t)u);
      break;
    }
    case LMP_TAG_DOUBLE: {
      uint64_t u = 0;
      double v;
      int i;
      need(d, 8);
      for (i = 0; i < 8; i++) u |= (uint64_t)d->p[i] << (8 * i);
      d->p += 8;
      memcpy(&v, &u, 8);
      lua_pushnumber(L, v);
      break;
    }
    case LMP_TAG_STRING: {
      size_t len;
      const char *s = bin_bytes(d, &len);
      lua_pushlstring(L, s, len);
      break;
    }
    case LMP_TAG_STRING_REF: {
      uint64_t id = varint(d);
      if (id >= d->nstrs) dec_error(d, "reference to an unknown string");
      lua_rawgeti(L, d->strs, (int)id + 1);
      break;
    }
    case LMP_TAG_STRING_DEF: {
      size_t len;
      const char *s = bin_bytes(d, &len);
      if (len == 0 || len > LMP_CODEC_STRING_DEF_MAX)
        dec_error(d, "string with an id is %d bytes long", (int)len);
      if (d->nstrs >= LMP_CODEC_MAX_STRING_IDS) dec_error(d, "too many strings");
      lua_pushlstring(L, s, len);
      lua_pushvalue(L, -1);
      lua_rawseti(L, d->strs, (int)++d->nstrs);
      break;
    }
    case LMP_TAG_TABLE: bin_table(d, 0, 0); break;
    case LMP_TAG_TABLE_MT: bin_table(d, 1, 0); break;
    case LMP_TAG_TABLE | LMP_TAG_SHARED: bin_table(d, 0, 1); break;
    case LMP_TAG_TABLE_MT | LMP_TAG_SHARED: bin_table(d, 1, 1); break;
    case LMP_TAG_REF: push_ref(d, varint(d), "reference to an unknown object"); break;
    case LMP_TAG_FUNCTION: bin_function(d, 0); break;
    case LMP_TAG_FUNCTION_ENV: bin_function(d, 1); break;
    case LMP_TAG_MODULE: {
      size_t len;
      const char *name;
      refuse_code(d, "module reference");
      name = bin_tagged_string(d, &len);
      require_module(d, name, len);
      break;
    }
    case LMP_TAG_CFUNCTION: {
      size_t mlen, flen;
      const char *mod, *field;
      refuse_code(d, "C function reference");
      mod = bin_tagged_string(d, &mlen);
      field = bin_tagged_string(d, &flen);
      require_module(d, mod, mlen);
      if (!lua_istable(L, -1)) dec_error(d, "module is not a table");
      lua_pushlstring(L, field, flen);
      lua_rawget(L, -2);
      if (!lua_iscfunction(L, -1)) {
        const char *n = (lua_pushlstring(L, field, flen), lua_tostring(L, -1));
        dec_error(d, "C function '%s' not found in its module", n);
      }
      lua_remove(L, -2);
      break;
    }
    case LMP_TAG_EXTENSION: {
      size_t len;
      const char *name;
      refuse_code(d, "lmp object");
      name = bin_tagged_string(d, &len);
      lmp__registry_table(L, LMP_CODEC_EXT_BY_NAME, NULL);
      lua_pushlstring(L, name, len);
      lua_rawget(L, -2);
      lua_remove(L, -2);
      if (!lua_isfunction(L, -1)) {
        const char *n = (lua_pushlstring(L, name, len), lua_tostring(L, -1));
        dec_error(d, "unknown object type '%s'", n);
      }
      enter(d);
      bin_value(d);
      d->depth--;
      lua_call(L, 1, 1);
      break;
    }
    default:
      d->p--;
      dec_error(d, "unknown tag %d", (int)tag);
  }
}

/* The GLOBALS after the value: the table every FUNCTION_ENV of the
 * message gets as its environment.  What it does not hold -- a global the
 * sender did not have, one set for the first time -- is this process's
 * own: reads and first writes go through to its globals. */
static void bin_globals(dec *d) {
  lua_State *L = d->L;
  int env;
  uint32_t i;
  d->p++;
  lua_newtable(L);
  env = lua_gettop(L);
  enter(d);
  for (;;) {
    need(d, 1);
    if (*d->p == LMP_TAG_NIL) {
      d->p++;
      break;
    }
    bin_value(d);
    if (lua_type(L, -1) != LUA_TSTRING) dec_error(d, "global name is not a string");
    bin_value(d);
    lua_rawset(L, env);  /* a nil value sets nothing */
  }
  d->depth--;
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, LUA_GLOBALSINDEX);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, LUA_GLOBALSINDEX);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, env);
  for (i = 1; i <= d->nenv; i++) {
    lua_rawgeti(L, d->refs, -(int)i);
    lua_pushvalue(L, env);
    lua_setfenv(L, -2);
    lua_pop(L, 1);
  }
  lua_settop(L, env - 1);
}

/* --- entry point --------------------------------------------------------------- */

static int decode_protected(lua_State *L) {
  dec *d = lua_touserdata(L, 1);
  if (d->p >= d->end) dec_error(d, "empty input");
  if (*d->p == LMP_CODEC_MAGIC) {
    d->p++;
    need(d, 1);
    if (*d->p < LMP_CODEC_VERSION_MIN || *d->p > LMP_CODEC_VERSION)
      dec_error(d, "unsupported format version %d", (int)*d->p);
    d->keep_all = *d->p == 1;
    d->p++;
    lua_newtable(L);
    d->refs = lua_gettop(L);
    {
      /* Sized for the strings a small message can define (each takes 3
       * bytes or more), so that it does not grow one string at a time. */
      size_t most = (size_t)(d->end - d->p) / 3;
      lua_createtable(L, most < 32 ? (int)most : 32, 0);
    }
    d->strs = lua_gettop(L);
    bin_value(d);
    if (d->p < d->end && *d->p == LMP_TAG_GLOBALS) {
      refuse_code(d, "function");
      bin_globals(d);
    } else if (d->nenv > 0) {
      dec_error(d, "the globals of a function are missing");
    }
  } else {
    json_value(d);
    skip_ws(d);
  }
  if (d->p != d->end) dec_error(d, "trailing garbage");
  return 1;
}

void lmp__codec_decode(lua_State *L, const char *data, size_t len,
                       const lmp_codec_opts *opts) {
  dec d;
  memset(&d, 0, sizeof(d));
  d.L = L;
  d.start = d.p = (const unsigned char *)data;
  d.end = d.start + len;
  d.opts = opts;
  d.max_depth = opts->max_depth > 0 ? opts->max_depth : LMP_CODEC_MAX_DEPTH;
  luaL_checkstack(L, 8, "lmp.codec");
  /* A C function call gives the decoder a fresh stack frame: intermediate
   * values never pile up on the caller's stack. */
  lua_pushcfunction(L, decode_protected);
  lua_pushlightuserdata(L, &d);
  lua_call(L, 1, 1);
}
