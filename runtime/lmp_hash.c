/*
 * lmp_hash.c -- what the challenge/response of multiprocessing.connection
 * needs (lua/lmp/listener.lua): digests and HMAC from OpenSSL's libcrypto,
 * as CPython's hashlib and hmac have them, a constant-time compare of MACs,
 * and random bytes for the challenges.
 *
 * The challenges come from getrandom(2), as CPython's os.urandom: straight
 * from the kernel, with no generator state in the process that a fork()
 * could duplicate.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_hash.h"

/* The digest named by argument `arg`: "md5" or "sha256", names that
 * libcrypto knows too. */
static const char *check_digest(lua_State *L, int arg) {
  const char *name = lmp__check_string(L, arg);
  if (strcmp(name, "md5") != 0 && strcmp(name, "sha256") != 0)
    lmp__argerror(L, arg, "md5 or sha256 expected");
  return name;
}

/* Raises a ValueError, as CPython's hashlib does, with libcrypto's reason
 * for a failure (say MD5 under a configuration that allows FIPS digests
 * only).  libcrypto's error queue is emptied first: it is per thread and
 * would keep the entry. */
static int raise_crypto(lua_State *L, const char *what, const char *name) {
  char reason[256] = "unknown error";
  unsigned long e = ERR_peek_last_error();
  if (e != 0) ERR_error_string_n(e, reason, sizeof(reason));
  ERR_clear_error();
  return lmp__error_raise(L, "ValueError", "%s %s: %s", what, name, reason);
}

/* core.hmac(name, key, message) -> the HMAC of message under key */
static int l_hmac(lua_State *L) {
  const char *name = check_digest(L, 1);
  size_t klen, mlen, n;
  const char *key = lmp__check_lstring(L, 2, &klen);
  const char *msg = lmp__check_lstring(L, 3, &mlen);
  unsigned char out[EVP_MAX_MD_SIZE];
  if (EVP_Q_mac(NULL, "HMAC", NULL, name, NULL, key, klen,
                (const unsigned char *)msg, mlen, out, sizeof(out), &n) == NULL)
    return raise_crypto(L, "HMAC", name);
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

/* core.digest(name, message) -> the digest of message */
static int l_digest(lua_State *L) {
  const char *name = check_digest(L, 1);
  size_t len, n;
  const char *msg = lmp__check_lstring(L, 2, &len);
  unsigned char out[EVP_MAX_MD_SIZE];
  if (!EVP_Q_digest(NULL, name, NULL, msg, len, out, &n))
    return raise_crypto(L, "digest", name);
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}

/* core.compare_digest(a, b) -> a == b, in a time that depends on the
 * lengths only, not on where the strings differ (CPython's
 * hmac.compare_digest).  For MACs, whose length is no secret. */
static int l_compare_digest(lua_State *L) {
  size_t alen, blen;
  const char *a = lmp__check_lstring(L, 1, &alen);
  const char *b = lmp__check_lstring(L, 2, &blen);
  lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
  return 1;
}

/* core.random_bytes(n) -> string from the kernel's generator */
static int l_random_bytes(lua_State *L) {
  int n = (int)lmp__check_integer(L, 1);
  unsigned char buf[256];
  ssize_t got = 0;
  if (n < 0 || n > (int)sizeof(buf))
    return lmp__argerror(L, 1, "0 to 256 bytes expected");
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
  static const luaL_Reg functions[] = {
    {"hmac", l_hmac},
    {"digest", l_digest},
    {"compare_digest", l_compare_digest},
    {"random_bytes", l_random_bytes},
    {NULL, NULL}
  };
  lmp__register(L, "lmp core.", functions, 0);
}
