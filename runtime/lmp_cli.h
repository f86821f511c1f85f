/*
 * lmp_cli.h -- the command line of the lmp executable (not part of liblmp).
 */
#ifndef LMP_CLI_H
#define LMP_CLI_H

#include "lmp_internal.h"

#define LMP_PROGNAME "lmp"

/* Runs the lmp command line; returns the process exit status. */
int lmp__cli_main(int argc, char **argv);

/* Runs a chunk at the top of the stack (with nargs arguments below it ...
 * above it, as for lua_call) with a traceback handler and SIGINT turned
 * into a Lua error; on error reports it on stderr.  Returns 0 or 1. */
int lmp__cli_docall(lua_State *L, int nargs, int nresults);

/* Prints the error at the top of the stack as "lmp: message" and pops it. */
void lmp__cli_report(lua_State *L);

#endif /* LMP_CLI_H */
