/*
 * main.c -- the lmp executable: a worker when started as one, otherwise a
 * LuaJIT-compatible interpreter with lmp built in.
 */
#include "lmp_cli.h"

int main(int argc, char **argv) {
  int status = lmp_worker_main(argc, argv);
  if (status >= 0) return status;
  return lmp__cli_main(argc, argv);
}
