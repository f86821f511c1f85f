/*
 * lmp_shm.c -- shared memory segments (userdata "lmp.Segment").
 *
 * Two kinds: anonymous segments (memfd) hold locks, Values and Arrays,
 * and SharedMemory made without a name (attached through /proc by others);
 * named ones (shm_open, /dev/shm/NAME) are SharedMemory made with a name.  A process keeps
 * a segment's descriptor for as long as it maps it, so that it can hand it
 * to a child it starts (lua/lmp/process.lua passes it as an inherited fd).
 * An anonymous segment disappears when the last process closes it or
 * exits; nothing of it is ever in /dev/shm.
 *
 * Unmapping a segment that holds a lock this thread owns would leave a
 * dangling node in the thread's robust-mutex list (the kernel and glibc
 * follow it at every lock, unlock and exit), so such a mapping is kept
 * until the process ends, and the kernel then hands the lock on as
 * "owner died".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lmp_arg.h"
#include "lmp_error.h"
#include "lmp_platform.h"
#include "lmp_shm.h"

#define SEGMENT_MT "lmp.Segment"
#define UNLINKED_SEALS (F_SEAL_GROW | F_SEAL_SHRINK)

struct lmp_segment {
  char *base;        /* NULL once unmapped */
  size_t size;
  int fd;            /* -1 once closed */
  int pins;          /* waits sleeping on this segment */
  int close_pending; /* closed while pinned: unmap at the last unpin */
};

/* Does this thread's robust list (the kernel's view of the mutexes it
 * holds) point into [base, base + size)? */
static int robust_list_within(const char *base, size_t size) {
  struct robust_list_head *head;
  struct robust_list *node;
  size_t len;
  int guard = 0;
  if (syscall(SYS_get_robust_list, 0, &head, &len) != 0 || head == NULL)
    return 0;
  if ((const char *)head->list_op_pending >= base &&
      (const char *)head->list_op_pending < base + size)
    return 1;
  for (node = head->list.next; node != &head->list && node != NULL &&
       guard < 100000; guard++) {
    const char *p = (const char *)((uintptr_t)node & ~(uintptr_t)1);
    if (p >= base && p < base + size) return 1;
    node = ((struct robust_list *)p)->next;
  }
  return 0;
}

static void segment_unmap(lmp_segment *s) {
  if (s->base != NULL) {
    if (!robust_list_within(s->base, s->size)) munmap(s->base, s->size);
    s->base = NULL;
  }
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
}

void lmp__shm_pin(lmp_segment *s) { s->pins++; }

void lmp__shm_unpin(lmp_segment *s) {
  if (--s->pins == 0 && s->close_pending) segment_unmap(s);
}

static lmp_segment *check_segment(lua_State *L, int idx) {
  return lmp__check_udata(L, idx, SEGMENT_MT);
}

static lmp_segment *open_segment(lua_State *L, int idx) {
  lmp_segment *s = check_segment(L, idx);
  if (s->base == NULL || s->close_pending)
    lmp__error_raise(L, "ValueError", "shared memory segment is closed");
  return s;
}

void *lmp__shm_at(lua_State *L, int idx, size_t offset, size_t size,
                  lmp_segment **seg_out) {
  lmp_segment *s = open_segment(L, idx);
  if (offset > s->size || size > s->size - offset)
    lmp__error_raise(L, "IndexError", "offset %.0f size %.0f is outside the "
                     "segment (%.0f bytes)", (double)offset, (double)size,
                     (double)s->size);
  if (seg_out) *seg_out = s;
  return s->base + offset;
}

/* Maps fd (owned from here on) as a new Segment pushed on the stack;
 * flags adds to MAP_SHARED (MAP_POPULATE). */
static lmp_segment *push_mapped(lua_State *L, int fd, size_t size, int flags,
                                const char *what) {
  lmp_segment *s = lua_newuserdata(L, sizeof(*s));
  void *base;
  memset(s, 0, sizeof(*s));
  s->fd = -1;
  luaL_getmetatable(L, SEGMENT_MT);
  lua_setmetatable(L, -2);
  base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | flags, fd, 0);
  if (base == MAP_FAILED) {
    int err = errno;
    close(fd);
    lmp__error_raise(L, "OSError", "%s: cannot map %.0f bytes: %s", what,
                     (double)size, strerror(err));
  }
  s->base = base;
  s->size = size;
  s->fd = fd;
  return s;
}

/* core.segment_new(size [, tag]) -> segment: anonymous, zero-filled; the
 * tag names it in /proc (default "lmp"). */
static int l_segment_new(lua_State *L) {
  lua_Number n = lmp__check_number(L, 1);
  const char *tag = lmp__opt_string(L, 2, "lmp");
  int fd, err;
  if (!(n >= 1 && n <= (lua_Number)(SIZE_MAX / 2)))
    return lmp__error_raise(L, "ValueError", "size must be positive");
  fd = lmp__fd_above_stdio(memfd_create(tag, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0 || ftruncate(fd, (off_t)n) != 0) {
    err = errno;
    if (fd >= 0) close(fd);
    return lmp__error_raise(L, "OSError", "cannot create shared memory of "
                            "%.0f bytes: %s", n, strerror(err));
  }
  push_mapped(L, fd, (size_t)n, 0, "shared memory");
  return 1;
}

/* core.segment_open(name, create, size) -> segment: /dev/shm/name.  With
 * create the name must not exist yet (as Python's SharedMemory). */
static int l_segment_open(lua_State *L) {
  const char *name = lmp__check_string(L, 1);
  int create = lua_toboolean(L, 2);
  char path[256 + 2];
  struct stat st;
  size_t size = 0;
  int fd, err;
  if (strlen(name) > 255)
    return lmp__error_raise(L, "ValueError", "SharedMemory: name '%s' is "
                            "longer than 255 bytes", name);
  snprintf(path, sizeof(path), "/%s", name);
  if (create) {
    lua_Number n = lmp__check_number(L, 3);
    if (!(n >= 1 && n <= (lua_Number)(SIZE_MAX / 2)))
      return lmp__error_raise(L, "ValueError", "SharedMemory: size must be "
                              "a positive number of bytes");
    size = (size_t)n;
    fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0 && (fd = lmp__fd_above_stdio(fd)) < 0) {
      err = errno;
      shm_unlink(path);
      return lmp__error_raise(L, "OSError", "SharedMemory '%s': %s", name,
                              strerror(err));
    }
    if (fd >= 0 && ftruncate(fd, (off_t)size) != 0) {
      err = errno;
      close(fd);
      shm_unlink(path);
      return lmp__error_raise(L, "OSError", "SharedMemory '%s': cannot size "
                              "it to %.0f bytes: %s", name, (double)size,
                              strerror(err));
    }
  } else {
    fd = lmp__fd_above_stdio(shm_open(path, O_RDWR | O_CLOEXEC, 0));
  }
  if (fd < 0) {
    err = errno;
    if (err == ENOENT)
      return lmp__error_raise(L, "OSError", "SharedMemory '%s' does not "
                              "exist", name);
    if (err == EEXIST)
      return lmp__error_raise(L, "OSError", "SharedMemory '%s' already "
                              "exists", name);
    return lmp__error_raise(L, "OSError", "SharedMemory '%s': %s", name,
                            strerror(err));
  }
  if (!create) {
    if (fstat(fd, &st) != 0 || st.st_size <= 0) {
      close(fd);
      return lmp__error_raise(L, "OSError", "SharedMemory '%s' is empty",
                              name);
    }
    size = (size_t)st.st_size;
  }
  push_mapped(L, fd, size, 0, "SharedMemory");
  return 1;
}

/* core.segment_from_fd(fd) -> segment: an inherited descriptor, which the
 * segment owns from here on. */
static int l_segment_from_fd(lua_State *L) {
  int fd = (int)lmp__check_integer(L, 1);
  int populate = lua_toboolean(L, 2) ? MAP_POPULATE : 0;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0)
    return lmp__error_raise(L, "OSError", "descriptor %d is not a shared "
                            "memory segment", fd);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  push_mapped(L, fd, (size_t)st.st_size, populate, "shared memory");
  return 1;
}

/* core.segment_open_proc(name, pid, fd, tag [, populate]) -> segment | nil:
 * the anonymous segment that process pid holds as fd, if that is still
 * the one tagged `tag` (a SharedMemory made without a name, a big buffer).
 * populate maps its pages at once, which costs less than faulting them in
 * one by one when all of it is read next. */
static int l_segment_open_proc(lua_State *L) {
  const char *name = lmp__check_string(L, 1);
  int pid = (int)lmp__check_integer(L, 2), theirs = (int)lmp__check_integer(L, 3);
  const char *tag = lmp__check_string(L, 4);
  int populate = lua_toboolean(L, 5) ? MAP_POPULATE : 0;
  char path[64], link[300], want[300];
  struct stat st;
  ssize_t len;
  int fd;
  snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, theirs);
  snprintf(want, sizeof(want), "/memfd:%s (deleted)", tag);
  len = readlink(path, link, sizeof(link) - 1);
  if (len < 0) return 0;
  link[len] = 0;
  if (strcmp(link, want) != 0) return 0;
  fd = lmp__fd_above_stdio(open(path, O_RDWR | O_CLOEXEC));
  if (fd < 0) {
    int err = errno;
    return lmp__error_raise(L, "OSError", "SharedMemory '%s': cannot open it "
                            "in process %d: %s", name, pid, strerror(err));
  }
  /* An unlinked one is sealed against growing (l_segment_unlink). */
  if (fstat(fd, &st) != 0 || st.st_size <= 0 ||
      (fcntl(fd, F_GET_SEALS) & UNLINKED_SEALS) == UNLINKED_SEALS) {
    close(fd);
    return 0;
  }
  push_mapped(L, fd, (size_t)st.st_size, populate, "SharedMemory");
  return 1;
}

/* segment:is_held_by(pid, fd) -> bool: whether process pid's descriptor fd
 * is this very segment (the same file, not one that took its number or a
 * process that took its pid): a receiver that kept its mapping of a
 * sender's segment checks so before it reads it again. */
static int l_is_held_by(lua_State *L) {
  lmp_segment *s = open_segment(L, 1);
  int pid = (int)lmp__check_integer(L, 2), theirs = (int)lmp__check_integer(L, 3);
  char path[64];
  struct stat mine, other;
  snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, theirs);
  lua_pushboolean(L, fstat(s->fd, &mine) == 0 && stat(path, &other) == 0 &&
                     mine.st_dev == other.st_dev && mine.st_ino == other.st_ino);
  return 1;
}

/* segment:is_file(fd) -> bool: whether descriptor fd of this process is
 * this very segment. */
static int l_is_file(lua_State *L) {
  lmp_segment *s = open_segment(L, 1);
  struct stat mine, other;
  lua_pushboolean(L, fstat(s->fd, &mine) == 0 &&
                     fstat((int)lmp__check_integer(L, 2), &other) == 0 &&
                     mine.st_dev == other.st_dev && mine.st_ino == other.st_ino);
  return 1;
}

/* segment:unlink() -> true, or false if it was unlinked before: from now
 * on, core.segment_open_proc refuses it in every process.  A segment made
 * without a name has no file to remove, so the mark is on the memory
 * itself: seals against resizing, which nothing else sets (its size never
 * changes) and which every process that holds the memory sees. */
static int l_segment_unlink(lua_State *L) {
  lmp_segment *s = open_segment(L, 1);
  int seals = fcntl(s->fd, F_GET_SEALS);
  if (seals >= 0 && (seals & UNLINKED_SEALS) == UNLINKED_SEALS) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (seals < 0 || fcntl(s->fd, F_ADD_SEALS, UNLINKED_SEALS) != 0) {
    int err = errno;
    return lmp__error_raise(L, "OSError", "cannot unlink shared memory: %s",
                            strerror(err));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.shm_unlink(name) -> true | nil, message */
static int l_shm_unlink(lua_State *L) {
  const char *name = lmp__check_string(L, 1);
  char path[256 + 2];
  if (strlen(name) > 255) return 0;
  snprintf(path, sizeof(path), "/%s", name);
  if (shm_unlink(path) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* segment:address() -> number (for ffi.cast) */
static int l_address(lua_State *L) {
  lmp_segment *s = open_segment(L, 1);
  lua_pushnumber(L, (lua_Number)(uintptr_t)s->base);
  return 1;
}

static int l_fd(lua_State *L) {
  lua_pushinteger(L, open_segment(L, 1)->fd);
  return 1;
}

static int l_size(lua_State *L) {
  lua_pushnumber(L, (lua_Number)check_segment(L, 1)->size);
  return 1;
}

static int l_closed(lua_State *L) {
  lmp_segment *s = check_segment(L, 1);
  lua_pushboolean(L, s->base == NULL || s->close_pending);
  return 1;
}

/* segment:read(offset, len) -> string; segment:write(offset, s) */
static int l_read(lua_State *L) {
  lua_Number off = lmp__check_number(L, 2), len = lmp__check_number(L, 3);
  lmp_segment *s = open_segment(L, 1);
  if (!(off >= 0 && len >= 0 && off + len <= (lua_Number)s->size))
    return lmp__error_raise(L, "IndexError", "read(%.0f, %.0f) is outside "
                            "the %.0f bytes of the segment", off, len,
                            (double)s->size);
  lua_pushlstring(L, s->base + (size_t)off, (size_t)len);
  return 1;
}

static int l_write(lua_State *L) {
  lua_Number off = lmp__check_number(L, 2);
  size_t len;
  const char *data = lmp__check_lstring(L, 3, &len);
  lmp_segment *s = open_segment(L, 1);
  if (!(off >= 0 && off + (lua_Number)len <= (lua_Number)s->size))
    return lmp__error_raise(L, "IndexError", "write of %.0f bytes at %.0f is "
                            "outside the %.0f bytes of the segment", (double)len,
                            off, (double)s->size);
  memcpy(s->base + (size_t)off, data, len);
  return 0;
}

static int l_close(lua_State *L) {
  lmp_segment *s = check_segment(L, 1);
  if (s->pins > 0) s->close_pending = 1;
  else segment_unmap(s);
  return 0;
}

static int l_gc(lua_State *L) {
  lmp_segment *s = check_segment(L, 1);
  /* A pinned segment is on the stack of a running wait: not garbage. */
  segment_unmap(s);
  return 0;
}

static const luaL_Reg segment_methods[] = {
  {"address", l_address},
  {"fd", l_fd},
  {"size", l_size},
  {"closed", l_closed},
  {"read", l_read},
  {"write", l_write},
  {"close", l_close},
  {"unlink", l_segment_unlink},
  {"is_held_by", l_is_held_by},
  {"is_file", l_is_file},
  {NULL, NULL}
};

static const luaL_Reg shm_functions[] = {
  {"segment_new", l_segment_new},
  {"segment_open", l_segment_open},
  {"segment_from_fd", l_segment_from_fd},
  {"segment_open_proc", l_segment_open_proc},
  {"shm_unlink", l_shm_unlink},
  {NULL, NULL}
};

void lmp__shm_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", l_gc},
    {NULL, NULL}
  };
  lmp__push_class(L, SEGMENT_MT, meta, segment_methods, NULL);
  lua_pop(L, 1);
  lmp__register(L, "lmp core.", shm_functions, 0);
}
