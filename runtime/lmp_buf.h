/*
 * lmp_buf.h -- a growable byte buffer.  Buffers are kept and reused across
 * messages (reset, not freed), since on this kind of machine a page fault
 * costs as much as copying 4 KiB several times over.
 */
#ifndef LMP_BUF_H
#define LMP_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} lmp_buf;

/* Makes room for `extra` more bytes; 0 or LMP_ENOMEM (the buffer is then
 * unchanged). */
int lmp__buf_grow(lmp_buf *b, size_t extra);

/* Frees the memory; the buffer is then empty and usable again. */
void lmp__buf_free(lmp_buf *b);

static inline int lmp__buf_reserve(lmp_buf *b, size_t extra) {
  return b->cap - b->len >= extra ? 0 : lmp__buf_grow(b, extra);
}

static inline int lmp__buf_append(lmp_buf *b, const void *p, size_t n) {
  int err = lmp__buf_reserve(b, n);
  if (err) return err;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

#endif /* LMP_BUF_H */
