/*
 * lmp_frame.c -- the header of a frame (see lmp_frame.h).
 */
#include <string.h>

#include "lmp_frame.h"
#include "lmp_internal.h"

static int is_long(const unsigned char *p) {
  return p[0] == 0xff && p[1] == 0xff && p[2] == 0xff && p[3] == 0xff;
}

size_t lmp__frame_header(unsigned char *out, uint64_t len) {
  int i;
  if (len < 0x7fffffff) {
    for (i = 0; i < 4; i++) out[i] = (unsigned char)(len >> (24 - 8 * i));
    return 4;
  }
  memset(out, 0xff, 4);
  for (i = 0; i < 8; i++) out[4 + i] = (unsigned char)(len >> (56 - 8 * i));
  return 12;
}

size_t lmp__frame_header_size(const unsigned char *p) {
  return is_long(p) ? 12 : 4;
}

int lmp__frame_length(const unsigned char *p, uint64_t *len) {
  uint64_t n = 0;
  int i;
  if (is_long(p)) {
    for (i = 4; i < 12; i++) n = n << 8 | p[i];
  } else {
    if (p[0] & 0x80) return LMP_EPROTO;
    for (i = 0; i < 4; i++) n = n << 8 | p[i];
  }
  *len = n;
  return 0;
}
