/*
 * lmp_cli.c -- `lmp [options] [script [args]]`, compatible with luajit's
 * command line: -e -l -j -O -b -i -v -E -- -, LUA_INIT, the `arg` table, and
 * a REPL (lmp_repl.c) when stdin is a terminal and there is nothing to run.
 * lmp adds --env, and the commands `lmp map` (lua/lmp/cli/map.lua) and
 * `lmp worker` (lua/lmp/cli/worker.lua).  Exit
 * status: os.exit(n) exits with n, an uncaught error
 * is reported with a traceback and gives 1, bad usage gives 2.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <luajit.h>

#include "lmp_cli.h"
#include "lmp_docall.h"
#include "lmp_error.h"
#include "lmp_alloc.h"
#include "lmp_platform.h"
#include "lmp_repl.h"
#include "lmp_worker.h"

#define EXIT_USAGE 2

static void print_usage(void) {
  fputs("usage: " LMP_PROGNAME " [options]... [script [args]...].\n"
        "Available options are:\n"
        "  -e chunk  Execute string 'chunk'.\n"
        "  -l name   Require library 'name'.\n"
        "  -b ...    Save or list bytecode.\n"
        "  -j cmd    Perform LuaJIT control command.\n"
        "  -O[opt]   Control LuaJIT optimizations.\n"
        "  -i        Enter interactive mode after executing 'script'.\n"
        "  -v        Show version information.\n"
        "  -E        Ignore environment variables.\n"
        "  --env     Print shell lines that let a stock luajit require \"lmp\".\n"
        "Commands:\n"
        "  map ...     JSON lines through a pool (lmp map --help).\n"
        "  worker ...  Serve a Redis queue's pool tasks (lmp worker --help).\n"
        "  --        Stop handling options.\n"
        "  -         Execute stdin and stop handling options.\n",
        stderr);
  fflush(stderr);
}

static void print_version(void) {
  printf("lmp %s (%s) -- Lua multiprocessing\n", lmp_version(),
         LUAJIT_VERSION);
  fflush(stdout);
}

/* --- --env ------------------------------------------------------------------- */

static int file_exists(const char *path) {
  return access(path, R_OK) == 0;
}

/* The directory holding lmp.so: beside the host in the build tree, or
 * PREFIX/lib/lua/5.1 for an installed host at PREFIX/bin/lmp. */
static int print_env(void) {
  static const char *const candidates[] = {
    "%s/lmp.so", "%s/../lib/lua/5.1/lmp.so",
    "%s/../lib/x86_64-linux-gnu/lua/5.1/lmp.so", NULL
  };
  const char *exe = lmp__self_exe();
  char dir[PATH_MAX], path[PATH_MAX + 64], real[PATH_MAX];
  const char *slash;
  int i;
  if (exe == NULL || (slash = strrchr(exe, '/')) == NULL) {
    fprintf(stderr, LMP_PROGNAME ": cannot locate the running executable\n");
    return 1;
  }
  snprintf(dir, sizeof(dir), "%.*s", (int)(slash - exe), exe);
  for (i = 0; candidates[i]; i++) {
    snprintf(path, sizeof(path), candidates[i], dir);
    if (file_exists(path) && realpath(path, real)) {
      char *cdir = real;
      *strrchr(cdir, '/') = '\0';
      /* Only the C path: the Lua half is inside lmp.so, and a Lua path to
       * lmp's sources would find lmp/init.lua before lmp.so. */
      printf("export LUA_CPATH='%s/?.so;;'\n", cdir);
      return 0;
    }
  }
  fprintf(stderr, LMP_PROGNAME ": lmp.so not found next to %s\n", exe);
  return 1;
}

/* --- the command line ----------------------------------------------------------- */

struct cli {
  int argc;
  char **argv;
  int script;   /* index of the script in argv, or argc when none */
  int has_e, has_i, has_v, has_E;
  const char *bad;        /* the option that made the command line invalid */
  int bad_missing_value;  /* ... because its value is missing */
  const char *command;  /* "map" or "worker": `lmp map ...`, `lmp worker ...` */
  int status;
};

enum { PARSE_OK, PARSE_USAGE };

/* First pass: find the script and the flags, check the syntax.  Options
 * with a value (-e, -l, -j) take it attached or as the next word. */
static int parse_args(struct cli *c) {
  int i;
  for (i = 1; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (a[0] != '-') break;
    switch (a[1]) {
      case '\0':  /* "-": stdin */
        c->script = i;
        return PARSE_OK;
      case '-':
        if (a[2] != '\0') goto bad;
        c->script = i + 1;
        return PARSE_OK;
      case 'i':
        if (a[2] != '\0') goto bad;
        c->has_i = c->has_v = 1;
        break;
      case 'v':
        if (a[2] != '\0') goto bad;
        c->has_v = 1;
        break;
      case 'E':
        if (a[2] != '\0') goto bad;
        c->has_E = 1;
        break;
      case 'e':
        c->has_e = 1;
        /* fall through */
      case 'l':
      case 'j':
        if (a[2] == '\0' && ++i >= c->argc) {
          c->bad_missing_value = 1;
          goto bad;
        }
        break;
      case 'O':
        break;
      case 'b':  /* the rest of the line belongs to jit.bcsave */
        c->script = i;
        return PARSE_OK;
      default:
        goto bad;
    }
  }
  c->script = i;
  return PARSE_OK;
bad:
  c->bad = c->argv[i < c->argc ? i : i - 1];
  return PARSE_USAGE;
}

/* arg[0] is the script, arg[1..] its arguments, arg[-1..] the interpreter
 * and options, as luajit sets them. */
static void create_arg_table(lua_State *L, struct cli *c) {
  int i, base = c->script < c->argc ? c->script : c->argc;
  lua_createtable(L, c->argc - base, base);
  for (i = 0; i < c->argc; i++) {
    lua_pushstring(L, c->argv[i]);
    lua_rawseti(L, -2, i - base);
  }
  lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int load_status) {
  if (load_status != 0) {
    lmp__docall_report(L);
    return 1;
  }
  return lmp__docall(L, 0, 0);
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

static int dolibrary(lua_State *L, const char *name) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  if (lmp__docall(L, 1, 1) != 0) return 1;
  lua_setglobal(L, name);  /* as luajit and lua 5.1 do */
  return 0;
}

/* -j cmd: "on", "off", "flush" call jit.<cmd>(); anything else loads the
 * module jit.<cmd> and calls its start(args) with the text after '='. */
static int dojitcmd(lua_State *L, const char *cmd) {
  const char *eq = strchr(cmd, '=');
  lua_getglobal(L, "require");
  if (eq == NULL &&
      (!strcmp(cmd, "on") || !strcmp(cmd, "off") || !strcmp(cmd, "flush"))) {
    lua_pushliteral(L, "jit");
    if (lmp__docall(L, 1, 1) != 0) return 1;
    lua_getfield(L, -1, cmd);
    lua_remove(L, -2);
    return lmp__docall(L, 0, 0);
  }
  lua_pushliteral(L, "jit.");
  if (eq) lua_pushlstring(L, cmd, (size_t)(eq - cmd));
  else lua_pushstring(L, cmd);
  lua_concat(L, 2);
  if (lmp__docall(L, 1, 1) != 0) return 1;
  lua_getfield(L, -1, "start");
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_pop(L, 1);
    fprintf(stderr, LMP_PROGNAME ": unknown luaJIT command or jit.* modules "
            "not installed\n");
    return 1;
  }
  if (eq) lua_pushstring(L, eq + 1);
  return lmp__docall(L, eq ? 1 : 0, 0);
}

/* -O[opt,opt...]: jit.opt.start(opt, opt, ...) */
static int dojitopt(lua_State *L, const char *opts) {
  int n = 0;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "jit.opt");
  if (lmp__docall(L, 1, 1) != 0) return 1;
  lua_getfield(L, -1, "start");
  lua_remove(L, -2);
  while (*opts) {
    const char *comma = strchr(opts, ',');
    size_t len = comma ? (size_t)(comma - opts) : strlen(opts);
    lua_pushlstring(L, opts, len);
    n++;
    opts += len + (comma != NULL);
  }
  return lmp__docall(L, n, 0);
}

/* -b ...: hand the rest of the command line to jit.bcsave. */
static int dobytecode(lua_State *L, struct cli *c) {
  int i, n = 0;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "jit.bcsave");
  if (lmp__docall(L, 1, 1) != 0) return 1;
  lua_getfield(L, -1, "start");
  lua_remove(L, -2);
  if (c->argv[c->script][2]) {
    lua_pushfstring(L, "-%s", c->argv[c->script] + 2);
    n++;
  }
  for (i = c->script + 1; i < c->argc; i++, n++) lua_pushstring(L, c->argv[i]);
  return lmp__docall(L, n, 0);
}

/* Second pass: run -e, -l, -j and -O in command-line order. */
static int run_options(lua_State *L, struct cli *c) {
  int i;
  for (i = 1; i < c->script; i++) {
    const char *a = c->argv[i];
    const char *value = a[2] ? a + 2 : c->argv[i + 1];
    int status = 0;
    switch (a[1]) {
      case 'e': status = dostring(L, value, "=(command line)"); break;
      case 'l': status = dolibrary(L, value); break;
      case 'j': status = dojitcmd(L, value); break;
      case 'O': status = dojitopt(L, a + 2); break;
      default: continue;
    }
    if (status) return status;
    if (a[1] != 'O' && a[2] == '\0') i++;
  }
  return 0;
}

static int run_init(lua_State *L) {
  const char *init = getenv("LUA_INIT");
  if (init == NULL) return 0;
  if (init[0] == '@') return dochunk(L, luaL_loadfile(L, init + 1));
  return dostring(L, init, "=LUA_INIT");
}

/* Runs the script with its arguments as `...`.  "-" reads stdin. */
static int run_script(lua_State *L, struct cli *c) {
  const char *name = c->argv[c->script];
  int i, status, nargs = c->argc - c->script - 1;
  if (strcmp(name, "-") == 0) name = NULL;
  status = luaL_loadfile(L, name);
  if (status != 0) {
    lmp__docall_report(L);
    return 1;
  }
  luaL_checkstack(L, nargs, "too many arguments to script");
  for (i = c->script + 1; i < c->argc; i++) lua_pushstring(L, c->argv[i]);
  return lmp__docall(L, nargs, 0);
}

static int stdin_is_tty(void) {
  return isatty(STDIN_FILENO);
}

static int run_command_line(lua_State *L, struct cli *c) {
  if (parse_args(c) != PARSE_OK) {
    if (c->bad_missing_value)
      fprintf(stderr, LMP_PROGNAME ": '%s' needs argument\n", c->bad);
    else
      fprintf(stderr, LMP_PROGNAME ": unrecognized option '%s'\n", c->bad);
    print_usage();
    c->status = EXIT_USAGE;
    return 0;
  }
  if (c->has_E) {
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  lua_gc(L, LUA_GCSTOP, 0);
  luaL_openlibs(L);
  lua_gc(L, LUA_GCRESTART, -1);
  lmp__install_closing_exit(L);
  lmp_preload(L);
  create_arg_table(L, c);
  if (c->has_v) print_version();
  if (!c->has_E && (c->status = run_init(L)) != 0) return 0;
  if ((c->status = run_options(L, c)) != 0) return 0;
  if (c->script < c->argc) {
    if (c->argv[c->script][0] == '-' && c->argv[c->script][1] == 'b')
      c->status = dobytecode(L, c);
    else
      c->status = run_script(L, c);
    if (c->status != 0) return 0;
  }
  if (c->has_i) {
    lmp__repl(L);
  } else if (c->script == c->argc && !c->has_e && !c->has_v) {
    if (stdin_is_tty()) {
      print_version();
      lmp__repl(L);
    } else {
      c->status = dochunk(L, luaL_loadfile(L, NULL));
    }
  }
  return 0;
}

/* Overwrites, in place, the password of each redis:// URL among the
 * arguments (what `ps` shows of this process): `lmp worker` has its own
 * copy by then. */
static void hide_passwords(int argc, char **argv) {
  int i;
  for (i = 2; i < argc; i++) {
    char *start = strstr(argv[i], "://"), *at, *slash;
    if (start == NULL) continue;
    start += 3;
    slash = strchr(start, '/');
    at = strchr(start, '@');
    if (at == NULL || (slash != NULL && slash < at)) continue;
    for (; start < at; start++) *start = '*';
  }
}

/* `lmp COMMAND ARGS...`: lmp.cli.COMMAND.main(core, ARGS...) gives the
 * status. */
static void run_command(lua_State *L, struct cli *c) {
  int i;
  luaL_openlibs(L);
  lmp__install_closing_exit(L);
  lmp_preload(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 0);
  lua_getglobal(L, "require");
  lua_pushfstring(L, "lmp.cli.%s", c->command);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_remove(L, -2);
  lua_getfield(L, LUA_REGISTRYINDEX, LMP_CORE_KEY);
  luaL_checkstack(L, c->argc, "too many arguments");
  for (i = 2; i < c->argc; i++) lua_pushstring(L, c->argv[i]);
  hide_passwords(c->argc, c->argv);
  if (lmp__docall(L, c->argc - 1, 1) != 0) {
    c->status = 1;
    return;
  }
  c->status = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
}

static int pmain(lua_State *L) {
  struct cli *c = lua_touserdata(L, 1);
  if (c->command) run_command(L, c);
  else run_command_line(L, c);
  /* Also after an error: children are joined (daemons terminated) before
   * the interpreter goes, as Python does. */
  lmp__run_atexit(L);
  return 0;
}

int lmp__cli_main(int argc, char **argv) {
  struct cli c;
  lua_State *L;
  if (argc == 2 && strcmp(argv[1], "--env") == 0) return print_env();
  memset(&c, 0, sizeof(c));
  c.argc = argc;
  c.argv = argv;
  if (argc >= 2 && (strcmp(argv[1], "map") == 0 || strcmp(argv[1], "worker") == 0))
    c.command = argv[1];
  if ((L = lmp__state_new()) == NULL) {
    fprintf(stderr, LMP_PROGNAME ": cannot create state: not enough memory\n");
    return 1;
  }
  lua_pushcfunction(L, pmain);
  lua_pushlightuserdata(L, &c);
  if (lmp__pcall_traceback(L, 1, 0) != 0) {
    lmp__docall_report(L);
    c.status = 1;
  }
  lmp__state_close(L);
  return c.status;
}
