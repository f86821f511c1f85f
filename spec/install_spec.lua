-- `cmake --install` puts a working lmp under a prefix: the host, the Lua C
-- module a stock luajit loads, the libraries, the headers, the Lua
-- sources (to read), a pkg-config file and a CMake package.  Each is tried
-- as the docs tell users to use it, from the prefix alone.
local H = require "spec.support.helpers"
local lmp = require "lmp"

-- A C host, as docs/embedding.md builds one: it says which program its
-- workers run before and after lmp_worker_main(), then runs a task
-- through its own loop (lmp_backend_fd, lmp_dispatch) and shuts down.
local CONSUMER = [[
#include <poll.h>
#include <stdio.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>
#include <lmp.h>
#include <lmp_uv.h>

int main(int argc, char **argv) {
  const char *before = lmp_get_executable();
  int status;
  lua_State *L;
  time_t start = time(NULL);
  printf("before %s\n", before ? before : "(none)");
  status = lmp_worker_main(argc, argv);
  if (status >= 0) return status;
  printf("after %s\n", lmp_get_executable());
  L = luaL_newstate();
  luaL_openlibs(L);
  lmp_preload(L);
  if (luaL_dostring(L, "lmp = require 'lmp'\n"
                       "pool = lmp.Pool(1)\n"
                       "pool:apply_async(function(x) return x * 2 end, {21}, "
                       "function(v) answer = v end)\n") != 0) {
    printf("error %s\n", lua_tostring(L, -1));
    return 1;
  }
  for (;;) {
    struct pollfd p = {lmp_backend_fd(L), POLLIN, 0};
    lua_getglobal(L, "answer");
    if (lua_isnumber(L, -1) || time(NULL) - start > 20) break;
    lua_pop(L, 1);
    poll(&p, 1, 100);
    lmp_dispatch(L);
  }
  printf("answer %d\n", (int)lua_tointeger(L, -1));
  printf("killed %d\n", lmp_shutdown(L, 5));
  lua_close(L);
  (void)lmp_uv_detach;
  return 0;
}
]]

-- A build with LMP_SANITIZE installs sanitized libraries: a program that
-- links them must be built with the sanitizers too.
local function sanitize_flags()
  local cache = H.slurp(H.bindir .. "/CMakeCache.txt") or ""
  return cache:find("LMP_SANITIZE:BOOL=ON", 1, true) and "-fsanitize=address,undefined" or ""
end

describe("an installed lmp", function()
  local prefix

  setup(function()
    prefix = H.tmpdir()
    local r = H.run({"cmake", "--install", H.bindir, "--prefix", prefix}, {timeout = 60})
    assert.equal(0, r.status, r.stderr)
  end)

  teardown(function() H.cleanup() end)

  -- Checks what the consumer printed, built as `exe`.
  local function check_consumer(exe)
    local r = H.run({exe}, {cwd = "/", timeout = 30})
    assert.equal(0, r.status, r.stdout .. r.stderr)
    assert.equal("before " .. prefix .. "/bin/lmp", r.stdout:match("before [^\n]*"))
    assert.equal("after " .. exe, r.stdout:match("after [^\n]*"))
    assert.truthy(r.stdout:find("answer 42\n", 1, true), r.stdout)
    assert.truthy(r.stdout:find("killed 0\n", 1, true), r.stdout)
  end

  it("has the host, the libraries, the headers and the Lua sources", function()
    for _, path in ipairs({"bin/lmp", "lib/lua/5.1/lmp.so", "include/lmp.h", "include/lmp_uv.h",
                           "share/lmp/lua/lmp/init.lua", "share/lmp/lua/lmp/pool/init.lua",
                           "share/lmp/lua/lmp/pool/scheduler.lua",
                           "lib/pkgconfig/lmp.pc", "lib/cmake/lmp/lmp-config.cmake"}) do
      assert.truthy(H.slurp(prefix .. "/" .. path), path)
    end
    local libs = H.run({"sh", "-c", "ls " .. H.quote(prefix) .. "/lib*/liblmp.*"}).stdout
    assert.matches("liblmp%.a", libs)
    assert.matches("liblmp%.so", libs)
    -- nothing of lmp's on a stock luajit's package.path
    assert.is_nil(H.slurp(prefix .. "/share/lua/5.1/lmp/init.lua"))
  end)

  it("runs its host from anywhere", function()
    local r = H.run({prefix .. "/bin/lmp", "-e", "print(require('lmp').version)"}, {cwd = "/"})
    assert.equal(0, r.status, r.stderr)
    assert.equal(lmp.version .. "\n", r.stdout)
  end)

  it("works for a stock luajit after eval \"$(PREFIX/bin/lmp --env)\", as docs/cli.md says", function()
    local env = H.foreign_host_env()
    local r = H.run({"sh", "-c", 'eval "$(' .. H.quote(prefix .. "/bin/lmp") .. ' --env)" && ' ..
                     "luajit -e \"local lmp = require 'lmp'; " ..
                     "print(lmp.version, lmp.get_executable(), " ..
                     "lmp.Pool(1):apply(function(x) return x + 1 end, {1}))\""},
                    {env = env, cwd = "/"})
    assert.equal(0, r.status, r.stderr)
    assert.equal(lmp.version .. "\t" .. prefix .. "/bin/lmp\t2\n", r.stdout)
  end)

  it("compiles a C host with pkg-config --cflags --libs lmp", function()
    local dir = H.tmpdir()
    H.write(dir .. "/consumer.c", CONSUMER)
    local r = H.run({"sh", "-c", "cc " .. sanitize_flags() ..
                     " -o consumer consumer.c $(pkg-config --cflags --libs lmp)"},
                    {cwd = dir, env = {PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig"}, timeout = 60})
    assert.equal(0, r.status, r.stderr)
    check_consumer(dir .. "/consumer")
  end)

  it("compiles a C host with find_package(lmp) and lmp::lmp", function()
    local dir = H.tmpdir()
    H.write(dir .. "/consumer.c", CONSUMER)
    H.write(dir .. "/CMakeLists.txt", [[
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(lmp 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE lmp::lmp)
]])
    local flags = sanitize_flags()
    local r = H.run({"sh", "-c", "cmake -S . -B b -DCMAKE_PREFIX_PATH=" .. H.quote(prefix) ..
                     " -DCMAKE_C_FLAGS=" .. H.quote(flags) ..
                     " -DCMAKE_EXE_LINKER_FLAGS=" .. H.quote(flags) ..
                     " >/dev/null && cmake --build b >/dev/null"}, {cwd = dir, timeout = 120})
    assert.equal(0, r.status, r.stdout .. r.stderr)
    check_consumer(dir .. "/b/consumer")
  end)
end)
