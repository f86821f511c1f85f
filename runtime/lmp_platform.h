/*
 * lmp_platform.h -- facts about this process that only the platform knows
 * (lmp_platform.c).
 */
#ifndef LMP_PLATFORM_H
#define LMP_PLATFORM_H

/* Absolute path of the running executable, or NULL.  Static storage. */
const char *lmp__self_exe(void);

/* Path of the shared object or executable that holds lmp's code, or NULL.
 * Static storage. */
const char *lmp__self_image(void);

/* lmp_worker_main() was called: the running program can run workers (the
 * rule of lmp_get_executable). */
void lmp__note_worker_main(void);

/* The symbolic name of errno value e ("EACCES"), or NULL if unknown.
 * Static storage. */
const char *lmp__errno_name(int e);

/* Descriptors 0, 1 and 2.  A host may run with stdin, stdout or stderr
 * closed (a daemon, a job started with `<&-`); a descriptor opened then
 * takes the free number.  lmp's and libuv's descriptors must not: a child
 * inherits 1 and 2 as its stdout and stderr (its output would go into an
 * lmp connection), and libuv aborts the process when it closes one of its
 * own there (uv__close asserts fd > 2).  So: */

/* Returns fd if it is above 2; else a close-on-exec copy of it on the lowest
 * free number above 2, closing fd (-1 with errno set if that fails, fd
 * closed too).  fd < 0 is returned as is.  For every descriptor lmp opens. */
int lmp__fd_above_stdio(int fd);

/* Opens /dev/null on each of 0, 1 and 2 that is closed, so that what libuv
 * opens next (the loop's descriptors, those of uv_spawn) lands above them,
 * and a child started meanwhile gets /dev/null for a closed stdout or
 * stderr.  Returns which ones it opened, for lmp__stdio_release, which
 * closes them again: hold them only around such a call.  (A thread of the
 * host that dup2()s onto one of them in between loses that copy.) */
int lmp__stdio_hold(void);
void lmp__stdio_release(int held);

#endif /* LMP_PLATFORM_H */
