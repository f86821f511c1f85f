/*
 * lmp_repl.c -- the interactive prompt.
 *
 * On a terminal, lines are read with libedit (line editing, history kept
 * in ~/.lmp_history or $LMP_HISTORY); otherwise with plain stdio, so that
 * `lmp -i < file` works too.  A line is first tried as an expression
 * ("return <line>") so that `1 + 1` prints 2; "=expr" works as in luajit.
 * A chunk that is incomplete continues on the next line with the ">>"
 * prompt; an error is reported and the session goes on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "lmp_docall.h"
#include "lmp_repl.h"

#define LINE_MAX_LEN 65536

struct repl {
  int tty;
  char history[4096];
};

static const char *get_prompt(lua_State *L, int first) {
  const char *p;
  lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2");
  p = lua_tostring(L, -1);
  lua_pop(L, 1);  /* the string stays alive as the global's value */
  return p ? p : first ? "> " : ">> ";
}

/* Reads a line without its newline and pushes it; 0 at end of input. */
static int read_line(lua_State *L, struct repl *r, int first) {
  const char *prompt = get_prompt(L, first);
  if (r->tty) {
    char *line = readline(prompt);
    if (line == NULL) return 0;
    lua_pushstring(L, line);
    free(line);
  } else {
    char buf[LINE_MAX_LEN];
    size_t len;
    fputs(prompt, stdout);
    fflush(stdout);
    if (fgets(buf, sizeof(buf), stdin) == NULL) return 0;
    len = strlen(buf);
    if (len > 0 && buf[len - 1] == '\n') buf[--len] = '\0';
    lua_pushlstring(L, buf, len);
  }
  return 1;
}

/* A syntax error at the end of input means "more to come". */
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    static const char eof_mark[] = "'<eof>'";
    const size_t mark_len = sizeof(eof_mark) - 1;
    if (msg && len >= mark_len && strcmp(msg + len - mark_len, eof_mark) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* Compiles the source at the top of the stack as "return <source>" and
 * pushes the function on success; leaves the stack alone otherwise. */
static int try_expression(lua_State *L) {
  size_t len;
  const char *src = lua_tolstring(L, -1, &len);
  const char *body = src[0] == '=' ? src + 1 : src;
  int status;
  lua_pushliteral(L, "return ");
  lua_pushstring(L, body);
  lua_concat(L, 2);
  status = luaL_loadbuffer(L, lua_tostring(L, -1), lua_objlen(L, -1), "=stdin");
  lua_remove(L, -2);
  if (status == 0) return 1;
  lua_pop(L, 1);
  return 0;
}

/* Reads a whole chunk (one or more lines) and pushes its compiled
 * function; pushes nothing and returns -1 at end of input, or returns 1
 * with the syntax error pushed. */
static int load_chunk(lua_State *L, struct repl *r) {
  int status;
  if (!read_line(L, r, 1)) return -1;
  if (try_expression(L)) goto done;
  for (;;) {
    size_t len;
    const char *src = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, src, len, "=stdin");
    if (!incomplete(L, status)) break;
    if (!read_line(L, r, 0)) {  /* input ended inside a chunk */
      lua_pop(L, 1);
      return -1;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
  if (status != 0) {
    lua_remove(L, -2);
    return 1;
  }
done:
  if (r->tty) {
    /* The source is below the function; keep it in the history. */
    const char *src = lua_tostring(L, -2);
    if (src && src[0]) add_history(src);
  }
  lua_remove(L, -2);
  return 0;
}

/* Replaces each value above base by what lmp.repr makes of it (tables as
 * constructors); a value it fails on is printed as it is. */
static void readable(lua_State *L, int base) {
  int i, top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.repr");
  if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
    lua_settop(L, top);
    return;
  }
  for (i = base + 1; i <= top; i++) {
    lua_getfield(L, top + 1, "result");
    lua_pushvalue(L, i);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_isstring(L, -1))
      lua_replace(L, i);
    else
      lua_pop(L, 1);
  }
  lua_settop(L, top);
}

/* Prints the values left by a chunk with the global print, readably. */
static void print_results(lua_State *L, int base) {
  int n = lua_gettop(L) - base;
  if (n <= 0) return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  readable(L, base);
  lua_getglobal(L, "print");
  lua_insert(L, base + 1);
  if (lua_pcall(L, n, 0, 0) != 0) {
    lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1));
    lua_remove(L, -2);
    lmp__docall_report(L);
  }
}

static void history_path(struct repl *r) {
  const char *env = getenv("LMP_HISTORY");
  const char *home = getenv("HOME");
  r->history[0] = '\0';
  if (env) snprintf(r->history, sizeof(r->history), "%s", env);
  else if (home) snprintf(r->history, sizeof(r->history), "%s/.lmp_history", home);
}

void lmp__repl(lua_State *L) {
  struct repl r;
  int status;
  r.tty = isatty(STDIN_FILENO);
  if (r.tty) {
    history_path(&r);
    using_history();
    stifle_history(1000);
    if (r.history[0]) read_history(r.history);
  }
  /* lmp is at hand at the prompt, as the session in docs/cli.md shows. */
  lua_getglobal(L, "lmp");
  if (lua_isnil(L, -1)) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lmp");
    if (lua_pcall(L, 1, 1, 0) == 0) lua_setglobal(L, "lmp");
  }
  lua_settop(L, 0);
  for (;;) {
    int base = lua_gettop(L);
    status = load_chunk(L, &r);
    if (status < 0) break;
    if (status == 0 && lmp__docall(L, 0, LUA_MULTRET) == 0)
      print_results(L, base);
    else if (status > 0)
      lmp__docall_report(L);
    lua_settop(L, base);
  }
  if (r.tty && r.history[0]) write_history(r.history);
  fputs("\n", stdout);
  fflush(stdout);
}
