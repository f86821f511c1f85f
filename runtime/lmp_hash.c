/*
 * lmp_hash.c -- MD5, SHA-256 and HMAC (RFC 1321, FIPS 180-4, RFC 2104),
 * for the challenge/response of multiprocessing.connection, plus random
 * bytes for the challenges.  Written from the specifications; small and
 * unoptimised, since a handshake hashes a few hundred bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "lmp_internal.h"

typedef struct {
  uint32_t state[8];
  uint64_t length;  /* bytes hashed */
  unsigned char block[64];
  size_t used;
  int md5;
} hash_ctx;

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }
static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* --- MD5 ------------------------------------------------------------------------ */

static const uint32_t md5_k[64] = {
  0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
  0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
  0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
  0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
  0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
  0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
  0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
  0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
  0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
  0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
  0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static const int md5_r[64] = {
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

static void md5_block(uint32_t *h, const unsigned char *p) {
  uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3];
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
           (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
  for (i = 0; i < 64; i++) {
    uint32_t f, t;
    int g;
    if (i < 16) {
      f = (b & c) | (~b & d);
      g = i;
    } else if (i < 32) {
      f = (d & b) | (~d & c);
      g = (5 * i + 1) % 16;
    } else if (i < 48) {
      f = b ^ c ^ d;
      g = (3 * i + 5) % 16;
    } else {
      f = c ^ (b | ~d);
      g = (7 * i) % 16;
    }
    t = d;
    d = c;
    c = b;
    b = b + rol(a + f + md5_k[i] + w[g], md5_r[i]);
    a = t;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
}

/* --- SHA-256 ---------------------------------------------------------------- */

static const uint32_t sha_k[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
  0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
  0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static void sha256_block(uint32_t *h, const unsigned char *p) {
  uint32_t w[64], s[8];
  int i;
  for (i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  memcpy(s, h, sizeof(s));
  for (i = 0; i < 64; i++) {
    uint32_t e1 = ror(s[4], 6) ^ ror(s[4], 11) ^ ror(s[4], 25);
    uint32_t ch = (s[4] & s[5]) ^ (~s[4] & s[6]);
    uint32_t t1 = s[7] + e1 + ch + sha_k[i] + w[i];
    uint32_t e0 = ror(s[0], 2) ^ ror(s[0], 13) ^ ror(s[0], 22);
    uint32_t maj = (s[0] & s[1]) ^ (s[0] & s[2]) ^ (s[1] & s[2]);
    uint32_t t2 = e0 + maj;
    memmove(s + 1, s, 7 * sizeof(uint32_t));
    s[4] += t1;
    s[0] = t1 + t2;
  }
  for (i = 0; i < 8; i++) h[i] += s[i];
}

/* --- the common part ------------------------------------------------------- */

static void hash_init(hash_ctx *c, int md5) {
  static const uint32_t md5_h[4] = {0x67452301, 0xefcdab89, 0x98badcfe,
                                    0x10325476};
  static const uint32_t sha_h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                    0xa54ff53a, 0x510e527f, 0x9b05688c,
                                    0x1f83d9ab, 0x5be0cd19};
  memset(c, 0, sizeof(*c));
  c->md5 = md5;
  memcpy(c->state, md5 ? md5_h : sha_h, md5 ? sizeof(md5_h) : sizeof(sha_h));
}

static void hash_update(hash_ctx *c, const void *data, size_t n) {
  const unsigned char *p = data;
  c->length += n;
  while (n > 0) {
    size_t take = 64 - c->used < n ? 64 - c->used : n;
    memcpy(c->block + c->used, p, take);
    c->used += take;
    p += take;
    n -= take;
    if (c->used == 64) {
      if (c->md5) md5_block(c->state, c->block);
      else sha256_block(c->state, c->block);
      c->used = 0;
    }
  }
}

/* Writes the digest (16 or 32 bytes) to out; returns its length. */
static size_t hash_final(hash_ctx *c, unsigned char *out) {
  uint64_t bits = c->length * 8;
  unsigned char pad[72];
  size_t n = (c->used < 56 ? 56 : 120) - c->used, i;
  memset(pad, 0, sizeof(pad));
  pad[0] = 0x80;
  for (i = 0; i < 8; i++)  /* the length, little-endian for MD5 */
    pad[n + i] = (unsigned char)(c->md5 ? bits >> (8 * i) : bits >> (56 - 8 * i));
  hash_update(c, pad, n + 8);
  if (c->md5) {
    for (i = 0; i < 16; i++) out[i] = (unsigned char)(c->state[i / 4] >> (8 * (i % 4)));
    return 16;
  }
  for (i = 0; i < 32; i++) out[i] = (unsigned char)(c->state[i / 4] >> (24 - 8 * (i % 4)));
  return 32;
}

static size_t hmac(int md5, const char *key, size_t klen, const char *msg,
                   size_t mlen, unsigned char *out) {
  unsigned char k[64], pad[64], inner[32];
  hash_ctx c;
  size_t i, n;
  memset(k, 0, sizeof(k));
  if (klen > 64) {
    hash_init(&c, md5);
    hash_update(&c, key, klen);
    hash_final(&c, k);
  } else {
    memcpy(k, key, klen);
  }
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  hash_init(&c, md5);
  hash_update(&c, pad, 64);
  hash_update(&c, msg, mlen);
  n = hash_final(&c, inner);
  for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  hash_init(&c, md5);
  hash_update(&c, pad, 64);
  hash_update(&c, inner, n);
  return hash_final(&c, out);
}

/* core.hmac(name, key, message) -> digest: name "md5" or "sha256" */
static int l_hmac(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  size_t klen, mlen;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *msg = luaL_checklstring(L, 3, &mlen);
  unsigned char out[32];
  int md5 = strcmp(name, "md5") == 0;
  if (!md5 && strcmp(name, "sha256") != 0)
    return luaL_argerror(L, 1, "md5 or sha256");
  lua_pushlstring(L, (const char *)out, hmac(md5, key, klen, msg, mlen, out));
  return 1;
}

/* core.digest(name, message) -> digest (for the specs' known answers) */
static int l_digest(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  size_t len;
  const char *msg = luaL_checklstring(L, 2, &len);
  unsigned char out[32];
  hash_ctx c;
  int md5 = strcmp(name, "md5") == 0;
  if (!md5 && strcmp(name, "sha256") != 0)
    return luaL_argerror(L, 1, "md5 or sha256");
  hash_init(&c, md5);
  hash_update(&c, msg, len);
  lua_pushlstring(L, (const char *)out, hash_final(&c, out));
  return 1;
}

/* core.random_bytes(n) -> string from the kernel's generator */
static int l_random_bytes(lua_State *L) {
  int n = (int)luaL_checkinteger(L, 1);
  unsigned char buf[256];
  ssize_t got = 0;
  if (n < 0 || n > (int)sizeof(buf)) return luaL_argerror(L, 1, "0..256");
  while (got < n) {
    ssize_t r = getrandom(buf + got, (size_t)(n - got), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      return lmp__error_raise(L, "OSError", "getrandom: %s", strerror(errno));
    got += r;
  }
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

void lmp__hash_open(lua_State *L) {
  lua_pushcfunction(L, l_hmac);
  lua_setfield(L, -2, "hmac");
  lua_pushcfunction(L, l_digest);
  lua_setfield(L, -2, "digest");
  lua_pushcfunction(L, l_random_bytes);
  lua_setfield(L, -2, "random_bytes");
}
