/*
 * lmp_buf.c -- growth of lmp_buf (see lmp_buf.h).
 */
#include <stdint.h>
#include <stdlib.h>

#include "lmp_buf.h"
#include "lmp_internal.h"

int lmp__buf_grow(lmp_buf *b, size_t extra) {
  size_t need, cap;
  char *p;
  if (extra > SIZE_MAX - b->len) return LMP_ENOMEM;
  need = b->len + extra;
  cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  p = realloc(b->data, cap);
  if (p == NULL) return LMP_ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

void lmp__buf_free(lmp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
