/*
 * limits.c -- what this machine can do at best: the "C limit" column of
 * scripts/bench, the floor under every lmp figure.
 *
 * Build:  gcc -O2 -Wall -Wextra -std=gnu11 -o limits limits.c -lpthread
 * Usage:  limits [--quick] [TEST...]     (no TEST or "all": every test)
 * Tests:  cpu_probe syscall pagefault pipe_pingpong socketpair_pingpong
 *         eventfd_pingpong futex_pingpong spin_pingpong pipe_bandwidth
 *         memcpy fork spawn ring mutex rss
 * Env:    PYTHON, LUAJIT: the interpreters `spawn` and `rss` start (default:
 *         python3 and luajit on PATH; pass real binaries, not pyenv shims).
 *
 * Output: one `name value unit` line per result, e.g. `c.pipe_pingpong 21.9 us`;
 * one invocation is one run.  --quick divides iteration counts by 10 (a smoke
 * test; its figures are not comparable).  Two-process tests let the scheduler
 * place both processes, as Python and lmp do; only the spin ping-pong pins
 * them to different CPUs, since spinning against a peer on the same CPU
 * measures the scheduler's time slice and nothing else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Iteration counts (divided by `scale` under --quick).  Memory sizes stay
 * fixed: they decide whether data lives in cache or DRAM. */
#define PING_N      20000           /* round trips, blocking ping-pongs */
#define PING_WARM   1000
#define SPIN_N      500000          /* round trips, spin ping-pong */
#define SYSCALL_N   1000000
#define FAULT_BYTES (64u << 20)     /* page-fault probe span */
#define PIPE_BYTES  (256ul << 20)   /* pipe bandwidth volume */
#define CHUNK       (64u << 10)     /* pipe write size = default pipe capacity */
#define BLOCK       (1u << 20)      /* memcpy block */
#define HOT_N       4000            /* copies of one cache-resident block */
#define STREAM      (256ul << 20)   /* streaming memcpy span */
#define FORK_N      500
#define RING_SLOTS  4096            /* power of two */
#define RING_N      10000000        /* 8-byte messages */
#define RING_SPIN   2000            /* polls before sleeping */
#define MUTEX_N     100000          /* increments per process, 2 processes */

static long scale = 1;
#define N(x) ((x) / scale > 0 ? (x) / scale : 1)

/* ---------------------------------------------------------------- helpers */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void emit(const char *name, double value, const char *unit)
{
    printf("%s %.6g %s\n", name, value, unit);
    fflush(stdout);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* Memory both sides of a fork() see; populated so that the timed sections
 * take no page faults (a fault costs ~10 us on the project's VM). */
static void *shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    return p;                       /* anonymous memory starts zeroed */
}

static pid_t xfork(void)
{
    fflush(stdout);                 /* or the child would print it again */
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    return pid;
}

/* Reap pid; any failure of a child makes the whole measurement void. */
static void reap(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) < 0)
        die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "limits: child %d failed (status 0x%x)\n", (int)pid, st);
        exit(1);
    }
}

static void xread(int fd, void *buf, size_t n)
{
    for (char *p = buf; n > 0;) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("read");
        p += r;
        n -= (size_t)r;
    }
}

static void xwrite(int fd, const void *buf, size_t n)
{
    for (const char *p = buf; n > 0;) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("write");
        p += r;
        n -= (size_t)r;
    }
}

/* Process-shared futexes (no FUTEX_PRIVATE_FLAG): the word is in MAP_SHARED
 * memory and the waiters are in different processes. */
/* Bounded: every caller looks again, and a wake-up that this VM loses
 * (seen once in `ring`: both sides asleep, the waker's flag exchange done)
 * then costs 100 ms instead of hanging the benchmark. */
static void futex_wait(atomic_uint *word, unsigned expected)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static void futex_wake(atomic_uint *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
    __builtin_ia32_pause();
}

static void pin_to_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);     /* best effort */
}

/* A start line for children: each one checks in on `ready`, then spins until
 * the parent raises `go`, so that the timed part starts with every child
 * already running. */
struct gate {
    atomic_uint ready, go;
};

static void gate_pass(struct gate *g)
{
    atomic_fetch_add(&g->ready, 1);
    while (!atomic_load(&g->go))
        cpu_relax();
}

static void gate_open(struct gate *g, unsigned children)
{
    while (atomic_load(&g->ready) < children)
        usleep(100);
    atomic_store(&g->go, 1);
}

/* ------------------------------------------------------ machine probes */

/* A fixed chain of dependent multiplies (~35 ms); returns seconds. */
static double probe_loop(void)
{
    uint64_t x = 1;
    double t = now();
    for (long i = 0; i < 30000000; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    __asm__ volatile("" : : "r"(x));
    return now() - t;
}

/* The host is shared: single-CPU speed and, above all, how many of the
 * vCPUs really run at once change from minute to minute.  parallel_cores is
 * 2 x (one loop alone) / (two loops at once in two processes): 2.0 when two
 * full cores are ours, 1.0 when both vCPUs share one. */
static void t_cpu_probe(void)
{
    double alone = probe_loop();
    struct gate *g = shared_alloc(sizeof *g);
    pid_t pid[2];
    for (int k = 0; k < 2; k++)
        if ((pid[k] = xfork()) == 0) {
            gate_pass(g);
            probe_loop();
            _exit(0);
        }
    while (atomic_load(&g->ready) < 2)
        usleep(100);
    double t = now();
    atomic_store(&g->go, 1);
    reap(pid[0]);
    reap(pid[1]);
    double both = now() - t;
    emit("c.cpu_probe", alone * 1e3, "ms");
    emit("c.parallel_cores", 2 * alone / both, "x");
    munmap(g, sizeof *g);
}

/* The cheapest syscall: every blocking IPC step pays a few of these. */
static void t_syscall(void)
{
    long n = N(SYSCALL_N);
    double t = now();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    emit("c.syscall", (now() - t) / n * 1e9, "ns");
}

/* First touch of fresh anonymous 4 KiB pages (THP off), best of 3 passes:
 * what a freshly allocated message buffer costs before any byte is copied. */
static void t_pagefault(void)
{
    double best = 1e9;
    for (int pass = 0; pass < 3; pass++) {
        char *p = mmap(NULL, FAULT_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        madvise(p, FAULT_BYTES, MADV_NOHUGEPAGE);
        double t = now();
        for (size_t i = 0; i < FAULT_BYTES; i += 4096)
            p[i] = 1;
        double per = (now() - t) / (FAULT_BYTES / 4096);
        best = per < best ? per : best;
        munmap(p, FAULT_BYTES);
    }
    emit("c.pagefault", best * 1e6, "us");
    emit("c.fresh_touch_bw", 4096 / best / 1e9, "GB/s");
}

/* ------------------------------------------------------------ ping-pong */

/* 1-byte round trips over file descriptors.  The parent writes `out` and
 * reads `in`; the child closes `drop[0..1]` (the parent's ends, -1 = none)
 * and echoes from `cin` to `cout`.  Returns us per round trip. */
static double fd_pingpong(int out, int in, int cin, int cout, const int drop[2])
{
    char c = 'x';
    pid_t pid = xfork();
    if (pid == 0) {
        for (int k = 0; k < 2; k++)
            if (drop[k] >= 0)
                close(drop[k]);
        for (long i = 0; i < N(PING_N) + PING_WARM; i++) {
            xread(cin, &c, 1);
            xwrite(cout, &c, 1);
        }
        _exit(0);
    }
    double t = 0;
    for (long i = 0; i < N(PING_N) + PING_WARM; i++) {
        if (i == PING_WARM)
            t = now();
        xwrite(out, &c, 1);
        xread(in, &c, 1);
    }
    double dt = now() - t;
    reap(pid);
    return dt / N(PING_N) * 1e6;
}

/* Two pipes: what Pool's task and result channels are built on. */
static void t_pipe_pingpong(void)
{
    int down[2], up[2];                         /* parent->child, child->parent */
    if (pipe(down) || pipe(up))
        die("pipe");
    int drop[2] = {down[1], up[0]};
    emit("c.pipe_pingpong", fd_pingpong(down[1], up[0], down[0], up[1], drop), "us");
    close(down[0]), close(down[1]), close(up[0]), close(up[1]);
}

/* One AF_UNIX socketpair: what a duplex Pipe() is. */
static void t_socketpair_pingpong(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        die("socketpair");
    int drop[2] = {sv[0], -1};
    emit("c.socketpair_pingpong", fd_pingpong(sv[0], sv[0], sv[1], sv[1], drop), "us");
    close(sv[0]), close(sv[1]);
}

/* Two eventfds: the lightest fd a waiter can block on. */
static void t_eventfd_pingpong(void)
{
    int down = eventfd(0, 0), up = eventfd(0, 0);
    if (down < 0 || up < 0)
        die("eventfd");
    uint64_t v = 1;
    pid_t pid = xfork();
    if (pid == 0) {
        for (long i = 0; i < N(PING_N) + PING_WARM; i++) {
            xread(down, &v, 8);
            xwrite(up, &v, 8);
        }
        _exit(0);
    }
    double t = 0;
    for (long i = 0; i < N(PING_N) + PING_WARM; i++) {
        if (i == PING_WARM)
            t = now();
        xwrite(down, &v, 8);
        xread(up, &v, 8);
    }
    double dt = now() - t;
    reap(pid);
    emit("c.eventfd_pingpong", dt / N(PING_N) * 1e6, "us");
    close(down), close(up);
}

/* One shared word takes turns: 2r+1 = "round r, the child's move", 2r+2 =
 * "round r done, the parent's move", so a value never repeats.  The futex
 * version sleeps whenever it is not its move and always wakes the peer; the
 * spin version only polls.  The first 10% of the rounds are warm-up. */
struct turn {
    _Alignas(64) atomic_uint word;
};

static void await_turn(struct turn *s, unsigned want, int spin)
{
    unsigned cur;
    while ((cur = atomic_load(&s->word)) != want) {
        if (spin)
            cpu_relax();
        else
            futex_wait(&s->word, cur);
    }
}

static void give_turn(struct turn *s, unsigned val, int spin)
{
    atomic_store(&s->word, val);
    if (!spin)
        futex_wake(&s->word);
}

static double shm_pingpong(int spin, unsigned rounds)
{
    struct turn *s = shared_alloc(sizeof *s);
    pid_t pid = xfork();
    if (pid == 0) {
        if (spin)
            pin_to_cpu(1);
        for (unsigned r = 0; r < rounds; r++) {
            await_turn(s, 2 * r + 1, spin);
            give_turn(s, 2 * r + 2, spin);
        }
        _exit(0);
    }
    cpu_set_t saved;
    sched_getaffinity(0, sizeof saved, &saved);
    if (spin)
        pin_to_cpu(0);
    double t = 0;
    for (unsigned r = 0; r < rounds; r++) {
        if (r == rounds / 10)
            t = now();
        give_turn(s, 2 * r + 1, spin);
        await_turn(s, 2 * r + 2, spin);
    }
    double dt = now() - t;
    reap(pid);
    sched_setaffinity(0, sizeof saved, &saved);     /* later tests run unpinned */
    munmap(s, sizeof *s);
    return dt / (rounds - rounds / 10) * 1e6;
}

static void t_futex_pingpong(void)
{
    emit("c.futex_pingpong", shm_pingpong(0, N(PING_N) * 10 / 9), "us");
}

static void t_spin_pingpong(void)
{
    emit("c.spin_pingpong", shm_pingpong(1, N(SPIN_N)), "us");
}

/* ------------------------------------------------------------ bandwidth */

/* The parent writes 64 KiB chunks into a pipe of default capacity (as
 * Python's Queue does); the child reads until EOF.  Timed until the child
 * has drained everything. */
static void t_pipe_bandwidth(void)
{
    size_t total = N(PIPE_BYTES / CHUNK) * (size_t)CHUNK;
    int fd[2];
    char *buf = malloc(CHUNK);
    if (pipe(fd) || !buf)
        die("pipe");
    memset(buf, 'x', CHUNK);
    pid_t pid = xfork();
    if (pid == 0) {
        close(fd[1]);
        size_t got = 0;
        ssize_t r;
        while ((r = read(fd[0], buf, CHUNK)) > 0)
            got += (size_t)r;
        _exit(got == total ? 0 : 1);
    }
    close(fd[0]);
    xwrite(fd[1], buf, CHUNK);                      /* warm-up chunk */
    double t = now();
    for (size_t done = CHUNK; done < total; done += CHUNK)
        xwrite(fd[1], buf, CHUNK);
    close(fd[1]);
    reap(pid);
    emit("c.pipe_bandwidth", (total - CHUNK) / (now() - t) / 1e9, "GB/s");
    free(buf);
}

/* Copy `total` bytes in `block`-sized memcpys cycling through `span`. */
static double copy_rate(char *dst, const char *src, size_t span, size_t total)
{
    double t = now();
    for (size_t done = 0; done < total; done += BLOCK) {
        size_t off = done % span;
        memcpy(dst + off, src + off, BLOCK);
        __asm__ volatile("" : : "r"(dst) : "memory");  /* keep every copy */
    }
    return total / (now() - t) / 1e9;
}

/* memcpy of 1 MiB blocks: one cache-resident block again and again, and
 * blocks streaming through 256 MiB (DRAM).  Buffers are faulted in first. */
static void t_memcpy(void)
{
    char *src = malloc(STREAM), *dst = malloc(STREAM);
    if (!src || !dst)
        die("malloc");
    memset(src, 'a', STREAM);
    memset(dst, 'b', STREAM);
    copy_rate(dst, src, BLOCK, 100 * (size_t)BLOCK);   /* warm-up */
    emit("c.memcpy_hot", copy_rate(dst, src, BLOCK, N(HOT_N) * (size_t)BLOCK), "GB/s");
    emit("c.memcpy_stream", copy_rate(dst, src, STREAM, N(4) * STREAM), "GB/s");
    free(src);
    free(dst);
}

/* -------------------------------------------------------- process start */

static void t_fork(void)
{
    long n = N(FORK_N);
    double t = now();
    for (long i = 0; i < n; i++) {
        pid_t pid = xfork();
        if (pid == 0)
            _exit(0);
        reap(pid);
    }
    emit("c.fork_exit_wait", (now() - t) / n * 1e6, "us");
}

static const char *interp(const char *var, const char *fallback)
{
    const char *v = getenv(var);
    return v && *v ? v : fallback;
}

/* Spawn argv with posix_spawnp; stdin from `in` unless it is -1. */
static pid_t xspawn(char *const argv[], int in)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (in >= 0)
        posix_spawn_file_actions_adddup2(&fa, in, 0);
    pid_t pid;
    int err = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err) {
        fprintf(stderr, "limits: posix_spawnp %s: %s\n", argv[0], strerror(err));
        exit(1);
    }
    return pid;
}

/* ms per posix_spawn + waitpid of argv, after one untimed warm-up start
 * that brings the binary and its libraries into the page cache. */
static double spawn_ms(char *const argv[], long n)
{
    reap(xspawn(argv, -1));
    double t = now();
    for (long i = 0; i < n; i++)
        reap(xspawn(argv, -1));
    return (now() - t) / n * 1e3;
}

static void t_spawn(void)
{
    char *tru[] = {"/bin/true", NULL};
    char *lj[] = {(char *)interp("LUAJIT", "luajit"), "-e", "", NULL};
    char *py[] = {(char *)interp("PYTHON", "python3"), "-c", "pass", NULL};
    emit("c.spawn_true", spawn_ms(tru, N(200)), "ms");
    emit("c.spawn_luajit", spawn_ms(lj, N(100)), "ms");
    emit("c.spawn_python", spawn_ms(py, N(20)), "ms");
}

/* -------------------------------------------------------- SPSC shm ring */

/* One producer (the child) and one consumer (the parent) pass 8-byte
 * messages through a ring in shared memory: the best a Queue of small items
 * could do.  A side that finds the ring empty (full) spins RING_SPIN polls,
 * then raises its `sleeps` flag and futex-waits; the peer issues FUTEX_WAKE
 * only when it sees that flag, so the common case makes no syscall.  The
 * seq_cst store/load pairs (own index then peer's flag; own flag then peer's
 * index) form a Dekker handshake, so no wake-up is lost, and the waker
 * clears the flag with an exchange, so one sleep costs one wake.  The
 * consumer drains all it sees and publishes `tail` once per batch; the
 * producer publishes `head` per message, as a put() would. */
struct ring {
    _Alignas(64) atomic_uint head;          /* next slot to write */
    _Alignas(64) atomic_uint tail;          /* next slot to read */
    _Alignas(64) atomic_uint consumer_sleeps;
    _Alignas(64) atomic_uint producer_sleeps;
    _Alignas(64) struct gate gate;
    _Alignas(64) uint64_t slot[RING_SLOTS];
};

/* The producer's put of message h (it owns head).  *tail_seen caches the
 * last tail it read, so tail is only re-read when the ring looks full. */
static void ring_put(struct ring *r, unsigned h, unsigned *tail_seen, uint64_t v)
{
    for (int spins = 0; h - *tail_seen >= RING_SLOTS;) {
        unsigned t = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (h - t < RING_SLOTS) {
            *tail_seen = t;
            break;
        }
        if (++spins < RING_SPIN) {
            cpu_relax();
            continue;
        }
        atomic_store(&r->producer_sleeps, 1);
        t = atomic_load(&r->tail);
        if (h - t >= RING_SLOTS)
            futex_wait(&r->tail, t);
        atomic_store(&r->producer_sleeps, 0);
        spins = 0;
    }
    r->slot[h & (RING_SLOTS - 1)] = v;
    atomic_store(&r->head, h + 1);
    if (atomic_load(&r->consumer_sleeps) && atomic_exchange(&r->consumer_sleeps, 0))
        futex_wake(&r->head);
}

static void t_ring(void)
{
    struct ring *r = shared_alloc(sizeof *r);
    unsigned n = N(RING_N);
    pid_t pid = xfork();
    if (pid == 0) {
        gate_pass(&r->gate);
        unsigned tail_seen = 0;
        for (unsigned i = 0; i < n; i++)
            ring_put(r, i, &tail_seen, i);
        _exit(0);
    }
    while (atomic_load(&r->gate.ready) < 1)
        usleep(100);
    uint64_t sum = 0;
    unsigned t = 0;
    int spins = 0;
    double t0 = now();
    atomic_store(&r->gate.go, 1);
    while (t < n) {
        unsigned h = atomic_load_explicit(&r->head, memory_order_acquire);
        if (h != t) {
            for (; t != h; t++)
                sum += r->slot[t & (RING_SLOTS - 1)];
            atomic_store(&r->tail, t);
            if (atomic_load(&r->producer_sleeps) &&
                atomic_exchange(&r->producer_sleeps, 0))
                futex_wake(&r->tail);
            spins = 0;
        } else if (++spins < RING_SPIN) {
            cpu_relax();
        } else {
            atomic_store(&r->consumer_sleeps, 1);
            if (atomic_load(&r->head) == t)
                futex_wait(&r->head, t);
            atomic_store(&r->consumer_sleeps, 0);
            spins = 0;
        }
    }
    double dt = now() - t0;
    reap(pid);
    if (sum != (uint64_t)n * (n - 1) / 2) {
        fprintf(stderr, "limits: ring lost messages (sum %llu)\n",
                (unsigned long long)sum);
        exit(1);
    }
    emit("c.ring_msgs", n / dt, "msgs/s");
    munmap(r, sizeof *r);
}

/* ------------------------------------------------- process-shared mutex */

struct counter {
    pthread_mutex_t m;
    long value;
    struct gate gate;
    double start[2], end[2];
};

/* Two processes each increment a shared counter MUTEX_N times under a
 * PTHREAD_PROCESS_SHARED mutex (robust or not); returns increments/s, timed
 * from the first child's start to the last one's end, because the whole run
 * is a few ms and the children's wake-up after `go` would dominate it. */
static double mutex_rate(int robust)
{
    struct counter *s = shared_alloc(sizeof *s);
    long n = N(MUTEX_N);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (robust)
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->m, &a);
    pthread_mutexattr_destroy(&a);
    pid_t pid[2];
    for (int k = 0; k < 2; k++)
        if ((pid[k] = xfork()) == 0) {
            gate_pass(&s->gate);
            s->start[k] = now();
            for (long i = 0; i < n; i++) {
                pthread_mutex_lock(&s->m);
                s->value++;
                pthread_mutex_unlock(&s->m);
            }
            s->end[k] = now();
            _exit(0);
        }
    gate_open(&s->gate, 2);
    reap(pid[0]);
    reap(pid[1]);
    if (s->value != 2 * n) {
        fprintf(stderr, "limits: mutex lost updates (%ld)\n", s->value);
        exit(1);
    }
    double first = s->start[0] < s->start[1] ? s->start[0] : s->start[1];
    double last = s->end[0] > s->end[1] ? s->end[0] : s->end[1];
    pthread_mutex_destroy(&s->m);
    munmap(s, sizeof *s);
    return 2.0 * n / (last - first);
}

/* The same count with no lock: an atomic add on the shared word (lock
 * xadd), the limit of lmp's Value:add. */
static double atomic_rate(void)
{
    struct {
        atomic_long value;
        struct gate gate;
        double start[2], end[2];
    } *s = shared_alloc(sizeof *s);
    long n = N(MUTEX_N);
    pid_t pid[2];
    for (int k = 0; k < 2; k++)
        if ((pid[k] = xfork()) == 0) {
            gate_pass(&s->gate);
            s->start[k] = now();
            for (long i = 0; i < n; i++)
                atomic_fetch_add(&s->value, 1);
            s->end[k] = now();
            _exit(0);
        }
    gate_open(&s->gate, 2);
    reap(pid[0]);
    reap(pid[1]);
    if (atomic_load(&s->value) != 2 * n) {
        fprintf(stderr, "limits: atomic lost updates\n");
        exit(1);
    }
    double first = s->start[0] < s->start[1] ? s->start[0] : s->start[1];
    double last = s->end[0] > s->end[1] ? s->end[0] : s->end[1];
    munmap(s, sizeof *s);
    return 2.0 * n / (last - first);
}

static void t_mutex(void)
{
    emit("c.mutex", mutex_rate(0), "ops/s");
    emit("c.mutex_robust", mutex_rate(1), "ops/s");
    emit("c.atomic_add", atomic_rate(), "ops/s");
}

/* ------------------------------------------------------------------ RSS */

static long status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t len = strlen(field);
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die(path);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, len) && line[len] == ':')
            v = atol(line + len + 1);
    fclose(f);
    return v;
}

/* True once pid sits in read(0, ...): /proc/PID/syscall then starts with
 * "0 0x0 " (x86-64 syscall 0 = read, first argument fd 0). */
static int reading_stdin(pid_t pid)
{
    char path[64], buf[64] = "";
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    if (!fgets(buf, sizeof buf, f))
        buf[0] = 0;
    fclose(f);
    return !strncmp(buf, "0 0x0 ", 6);
}

/* The memory floor of an idle interpreter: start it reading a pipe, wait
 * until it blocks there, report VmRSS and RssAnon, then let it exit on EOF. */
static void idle_rss(const char *name, char *const argv[])
{
    int fd[2];
    if (pipe(fd))
        die("pipe");
    pid_t pid = xspawn(argv, fd[0]);
    close(fd[0]);
    for (int i = 0; i < 500 && !reading_stdin(pid); i++)
        usleep(10000);
    usleep(100000);                                 /* let it settle */
    char key[64];
    snprintf(key, sizeof key, "c.rss_%s", name);
    emit(key, status_kib(pid, "VmRSS") / 1024.0, "MiB");
    snprintf(key, sizeof key, "c.rss_anon_%s", name);
    emit(key, status_kib(pid, "RssAnon") / 1024.0, "MiB");
    xwrite(fd[1], "\n", 1);
    close(fd[1]);
    reap(pid);
}

static void t_rss(void)
{
    char *lj[] = {(char *)interp("LUAJIT", "luajit"), "-e", "io.read()", NULL};
    char *py[] = {(char *)interp("PYTHON", "python3"), "-c", "input()", NULL};
    idle_rss("luajit", lj);
    idle_rss("python", py);
}

/* ----------------------------------------------------------------- main */

static const struct {
    const char *name;
    void (*run)(void);
} tests[] = {
    {"cpu_probe", t_cpu_probe},
    {"syscall", t_syscall},
    {"pagefault", t_pagefault},
    {"pipe_pingpong", t_pipe_pingpong},
    {"socketpair_pingpong", t_socketpair_pingpong},
    {"eventfd_pingpong", t_eventfd_pingpong},
    {"futex_pingpong", t_futex_pingpong},
    {"spin_pingpong", t_spin_pingpong},
    {"pipe_bandwidth", t_pipe_bandwidth},
    {"memcpy", t_memcpy},
    {"fork", t_fork},
    {"spawn", t_spawn},
    {"ring", t_ring},
    {"mutex", t_mutex},
    {"rss", t_rss},
};
#define NTESTS (sizeof tests / sizeof tests[0])

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);       /* a dead reader shows up as EPIPE */
    int a = 1;
    if (a < argc && !strcmp(argv[a], "--quick"))
        scale = 10, a++;
    if (a == argc || (a + 1 == argc && !strcmp(argv[a], "all"))) {
        for (size_t i = 0; i < NTESTS; i++)
            tests[i].run();
        return 0;
    }
    for (; a < argc; a++) {
        size_t i = 0;
        while (i < NTESTS && strcmp(argv[a], tests[i].name))
            i++;
        if (i == NTESTS) {
            fprintf(stderr, "limits: unknown test %s; tests:", argv[a]);
            for (i = 0; i < NTESTS; i++)
                fprintf(stderr, " %s", tests[i].name);
            fputc('\n', stderr);
            return 2;
        }
        tests[i].run();
    }
    return 0;
}
