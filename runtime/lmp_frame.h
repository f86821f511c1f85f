/*
 * lmp_frame.h -- the header of a frame (lmp_frame.c), as CPython's
 * multiprocessing.connection writes it: the payload's length as 4 bytes
 * big-endian, or, from 2 GiB on, -1 (four 0xFF bytes) and then the length
 * as 8 bytes big-endian.  Connections carry frames, and so does the
 * bootstrap channel from a parent to the worker it starts.
 */
#ifndef LMP_FRAME_H
#define LMP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define LMP_FRAME_HEADER_MIN 4
#define LMP_FRAME_HEADER_MAX 12

/* Writes the header of a payload of `len` bytes into out, which has room
 * for LMP_FRAME_HEADER_MAX bytes; returns the header's size. */
size_t lmp__frame_header(unsigned char *out, uint64_t len);

/* The size of the header whose first LMP_FRAME_HEADER_MIN bytes are at p. */
size_t lmp__frame_header_size(const unsigned char *p);

/* The payload length in the whole header at p: 0 and *len set, or
 * LMP_EPROTO for a 4-byte length with its top bit set, which no peer
 * writes (the stream is out of step). */
int lmp__frame_length(const unsigned char *p, uint64_t *len);

#endif /* LMP_FRAME_H */
