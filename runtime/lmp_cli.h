/*
 * lmp_cli.h -- the command line of the lmp executable (not part of liblmp).
 */
#ifndef LMP_CLI_H
#define LMP_CLI_H

#include "lmp_internal.h"

/* Runs the lmp command line; returns the process exit status. */
int lmp__cli_main(int argc, char **argv);

#endif /* LMP_CLI_H */
