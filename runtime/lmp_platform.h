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

/* The symbolic name of errno value e ("EACCES"), or NULL if unknown.
 * Static storage. */
const char *lmp__errno_name(int e);

#endif /* LMP_PLATFORM_H */
