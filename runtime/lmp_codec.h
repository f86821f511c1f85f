/*
 * lmp_codec.h -- the codec every value crossing a process boundary goes
 * through (docs/codec.md has the format and the security model).
 *
 * Two formats, told apart by the first byte:
 *   - JSON text, for plain data (what lua-cjson reads and writes), so that a
 *     peer in any language reads it with its stock JSON parser;
 *   - lmp's binary format, first byte 0xFF (never the start of JSON text),
 *     for everything else: NaN and infinities, any table shape, shared
 *     references and cycles, functions by value, modules and C functions by
 *     reference, registered metatables, lmp's own objects.
 * decode accepts both.
 */
#ifndef LMP_CODEC_H
#define LMP_CODEC_H

#include <stdint.h>

#include "lmp_buf.h"
#include "lmp_internal.h"

#define LMP_CODEC_MAGIC 0xFF
/* Version 2 added string back-references (STRING_DEF, STRING_REF) and
 * the SHARED flag; decode still reads version 1, which has neither and
 * where every table can be the target of a REF.  Version 3 added
 * FUNCTION_ENV and the GLOBALS that follow the value. */
#define LMP_CODEC_VERSION 3
#define LMP_CODEC_VERSION_MIN 1
/* At most 3 Lua stack slots per level must fit LuaJIT's 8000 per C call. */
#define LMP_CODEC_MAX_DEPTH 2000

/* Tags of the binary format: one byte before each value. */
enum {
  LMP_TAG_NIL = 0x00,
  LMP_TAG_FALSE = 0x01,
  LMP_TAG_TRUE = 0x02,
  LMP_TAG_NULL = 0x03,     /* lmp.null, JSON's null */
  LMP_TAG_INT8 = 0x04,     /* 1 byte, two's complement */
  LMP_TAG_INT32 = 0x05,    /* 4 bytes, little-endian */
  LMP_TAG_DOUBLE = 0x06,   /* 8 bytes, IEEE 754, little-endian */
  LMP_TAG_STRING = 0x07,   /* varint length, bytes */
  LMP_TAG_TABLE = 0x08,    /* varint narray, varint nhash, values, pairs */
  LMP_TAG_TABLE_MT = 0x09, /* string name, then as TABLE */
  LMP_TAG_REF = 0x0A,      /* varint id of a table/function seen before */
  LMP_TAG_FUNCTION = 0x0B, /* 8-byte checksum, string bytecode, varint
                              nups, upvalues */
  LMP_TAG_UPVAL_JOIN = 0x0C, /* varint function id, varint upvalue index */
  LMP_TAG_MODULE = 0x0D,   /* string name: require(name) */
  LMP_TAG_CFUNCTION = 0x0E, /* string module, string field */
  LMP_TAG_EXTENSION = 0x0F, /* string name, payload value */
  LMP_TAG_STRING_DEF = 0x10, /* as STRING, and gets the next string id */
  LMP_TAG_STRING_REF = 0x11, /* varint id of a STRING_DEF seen before */
  /* As FUNCTION, for a function that takes its globals with it: its
   * environment is the table the message's GLOBALS make. */
  LMP_TAG_FUNCTION_ENV = 0x12,
  /* After the value, when it holds FUNCTION_ENVs: pairs of a string name
   * and a value, ended by NIL. */
  LMP_TAG_GLOBALS = 0x13,
  /* Or'ed into TABLE and TABLE_MT: a REF to this table follows, so the
   * decoder must remember it (version 2; in version 1 it remembers all). */
  LMP_TAG_SHARED = 0x40
};

/* Strings of 1..LMP_CODEC_STRING_DEF_MAX bytes get an id (keys repeat);
 * longer ones would cost more to compare than to copy. */
#define LMP_CODEC_STRING_DEF_MAX 64
/* At most this many string ids per message: memory for them on both sides
 * stays bounded whatever the value. */
#define LMP_CODEC_MAX_STRING_IDS (1u << 22)

typedef struct {
  int binary;        /* encode: the binary format even for plain data */
  int safe;          /* decode: refuse code (functions, module and C function
                        references, extensions) */
  int max_depth;     /* 0: LMP_CODEC_MAX_DEPTH */
  const char *role;  /* encode: where error paths start ("value", "args") */
  int share;         /* encode: what of at least lmp.codec.share_threshold
                        bytes travels in shared memory, by handle:
                        LMP_SHARE_ARRAYS or LMP_SHARE_ALL (strings too) */
} lmp_codec_opts;

enum { LMP_SHARE_NONE, LMP_SHARE_ARRAYS, LMP_SHARE_ALL };

/* lmp.codec.share_threshold (users may set it): read at each encoding
 * that shares. */
double lmp__codec_share_threshold(lua_State *L);

/* Appends the encoding of the value at `idx` to `out`.  Raises a
 * CodecError naming the path to a value that cannot be encoded; `out` may
 * then hold a partial encoding, which the caller discards. */
void lmp__codec_encode(lua_State *L, int idx, lmp_buf *out,
                       const lmp_codec_opts *opts);

/* Pushes the JSON text of items first..last of the array at `idx`, one
 * line each; stops before the first item JSON cannot carry and returns
 * its index (0: none). */
lua_Integer lmp__codec_encode_lines(lua_State *L, int idx, lua_Integer first,
                                    lua_Integer last);

/* Encodes the value at `idx` and pushes the encoding as a string. */
void lmp__codec_encode_string(lua_State *L, int idx,
                              const lmp_codec_opts *opts);

/* Decodes `len` bytes and pushes the value, or raises a CodecError. */
void lmp__codec_decode(lua_State *L, const char *data, size_t len,
                       const lmp_codec_opts *opts);

/* 64-bit FNV-1a of a byte string: the checksum of function bytecode. */
static inline uint64_t lmp__fnv1a64(const void *data, size_t len) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ULL;
  size_t i;
  for (i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* Registry keys of the codec's per-state tables (lmp__registry_table). */
#define LMP_CODEC_MT_BY_NAME "lmp.codec.mt_by_name"
#define LMP_CODEC_NAME_BY_MT "lmp.codec.name_by_mt"
#define LMP_CODEC_EXT_BY_MT "lmp.codec.ext_by_mt"     /* mt -> {name, encode} */
#define LMP_CODEC_EXT_BY_NAME "lmp.codec.ext_by_name" /* name -> decode */
#define LMP_CODEC_CDATA_HOOK "lmp.codec.cdata_hook"   /* cdata, share_at, queue, serial -> name, payload */
/* string -> name, payload: a big string put in shared memory
 * (lua/lmp/buffers.lua) */
#define LMP_CODEC_SHARE_HOOK "lmp.codec.share_hook"
#define LMP_CODEC_TABLE "lmp.codec"  /* lmp.codec: its share_threshold */
/* The Queue (its bag, runtime/lmp_bag.c) that the item being encoded goes
 * into, or nil: the share and cdata hooks get it as their last argument.
 * Every encoding that shares sets it first (a Queue put; nil otherwise). */
#define LMP_CODEC_CUSTODY "lmp.codec.custody"
#define LMP_CODEC_SHARE_DEFAULT 1048576.0
#define LMP_CODEC_DUMPS "lmp.codec.dumps"  /* function -> bytecode (weak keys) */
/* fn -> names, env: the globals fn takes with it (lua/lmp/captures.lua) */
#define LMP_CODEC_GLOBALS_HOOK "lmp.codec.globals_hook"

/* lua_type() of an FFI cdata in LuaJIT (lua.h has no name for it). */
#define LMP_TCDATA 10

/* --- the registry (lmp_codec.c) ------------------------------------------- */

/* Tables with the metatable at index `mt` travel under the string at index
 * `name`, and get that metatable back on decode in every process that
 * registered it.  Registering a name again replaces the old metatable. */
void lmp__codec_register(lua_State *L, int name, int mt);

/* Registry key of lmp.codec.by_value's names (module name -> true): those
 * loaded modules travel by value, not by reference. */
#define LMP_CODEC_BY_VALUE_KEY "lmp.codec.by_value"
/* Counts registrations, so that encoders know their map of modules is
 * out of date. */
extern unsigned lmp__codec_by_value_gen;

/* Tables and userdata with the metatable at `mt` travel as the name at
 * `name` plus to_wire(obj), an encodable value, and come back as
 * from_wire(value).  Refused in safe mode. */
void lmp__codec_register_extension(lua_State *L, int name, int mt,
                                   int to_wire, int from_wire);

/* The function at index `fn` decides which cdata travel: fn(cdata) ->
 * extension name, payload (or nothing). */
void lmp__codec_set_cdata_hook(lua_State *L, int fn);

/* The function at index `fn` names the globals a Lua function takes with
 * it: fn(f) -> an array of names and the table to read them from, or
 * nothing (f's globals resolve in the receiving process). */
void lmp__codec_set_globals_hook(lua_State *L, int fn);

#endif /* LMP_CODEC_H */
