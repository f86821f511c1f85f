/*
 * test_alloc -- a state of lmp__state_new gives each block back to the
 * allocator it came from (runtime/lmp_alloc.c), whatever its sizes.
 *
 * Blocks that grow and shrink across the line between LuaJIT's allocator
 * and malloc, big and small strings, tables and buffers, collected and
 * closed: under AddressSanitizer a block freed by the wrong allocator is
 * an error, and without it a crash or a broken heap.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "lmp_alloc.h"

static const char *const script =
    "local t = {}\n"
    /* an array part that grows past 64 KiB one slot at a time, then is
     * emptied and shrinks when rehashed */
    "for i = 1, 100000 do t[i] = i end\n"
    "for i = 1, 100000 do t[i] = nil end\n"
    "t.x = 1\n"
    "for k = 1, 20 do t['k' .. k] = k end\n"
    /* strings either side of the line, kept and dropped */
    "local keep = {}\n"
    "for _, n in ipairs{1, 1000, 65535, 65536, 65537, 300000, 5000000} do\n"
    "  keep[#keep + 1] = string.rep('x', n)\n"
    "  assert(#keep[#keep] == n)\n"
    "end\n"
    /* a buffer that grows through the line (table.concat) */
    "local parts = {}\n"
    "for i = 1, 20000 do parts[i] = tostring(i) end\n"
    "local s = table.concat(parts)\n"
    "assert(#s > 65536)\n"
    "keep = nil\n"
    "collectgarbage(); collectgarbage()\n"
    /* a hash part across the line, freed by the collector */
    "local h = {}\n"
    "for i = 1, 20000 do h['key' .. i] = i end\n"
    "h = nil\n"
    "collectgarbage()\n"
    "return 'done'\n";

/* A process that exits without closing its state (what os.exit does)
 * exits with its own status: under LeakSanitizer, blocks of the state
 * that malloc gave are not reported as leaks (LuaJIT's never are). */
static void test_exit_without_close(void) {
  int status;
  pid_t pid = fork();
  if (pid == 0) {
    lua_State *L = lmp__state_new();
    if (L == NULL) _exit(1);
    luaL_openlibs(L);
    if (luaL_dostring(L, "big = {} for i = 1, 100000 do big[i] = i end "
                         "s = string.rep('y', 200000)") != 0)
      _exit(2);
    exit(7);
  }
  CHECK(pid > 0);
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

int main(void) {
  int round;
  test_exit_without_close();
  for (round = 0; round < 3; round++) {
    lua_State *L = lmp__state_new();
    CHECK(L != NULL);
    if (L == NULL) break;
    luaL_openlibs(L);
    CHECK(luaL_loadstring(L, script) == 0);
    CHECK(lua_pcall(L, 0, 1, 0) == 0);
    CHECK(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "done") == 0);
    if (!lua_isstring(L, -1)) fprintf(stderr, "error: %s\n", lua_tostring(L, -1));
    lmp__state_close(L);
  }
  return CHECK_STATUS();
}
