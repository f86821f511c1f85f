/*
 * redis_probe.c -- the raw Redis limit under B13 of scripts/bench: the
 * smallest task -> worker -> result round trip that a queue on Redis
 * streams can make, which lmp's Pool over Redis is read against.
 *
 * Build:  gcc -O2 -Wall -Wextra -std=gnu11 -o redis_probe redis_probe.c -lhiredis
 * Usage:  redis_probe [--quick] HOST PORT
 * Env:    REDIS_PASSWORD, the server's password (none if unset or empty)
 *
 * Two processes, one connection each.  The "worker" (a forked child) waits
 * in XREADGROUP ... BLOCK on a task stream and answers each entry with an
 * XADD to a result stream; the "client" XADDs a task and waits for its
 * result with XREAD ... BLOCK, one task at a time: four commands, two of
 * them blocking, per round trip, as a Redis work queue needs at least.
 * Nothing is acknowledged or deleted per task (both streams are deleted at
 * the end), the payload is a short decimal string.
 *
 * Output: `c.redis_roundtrip MEDIAN us` and `c.redis_roundtrip_p99 P99 us`
 * over the timed round trips, like limits.c's lines.  --quick divides the
 * count by 10.  Every blocking read gives up after BLOCK_MS, and the whole
 * probe after ALARM_S, so that a lost server cannot hang the benchmark.
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TRIP_N   5000        /* timed round trips (divided by 10 under --quick) */
#define TRIP_WARM 200        /* untimed ones first */
#define BLOCK_MS 10000       /* XREAD/XREADGROUP BLOCK */
#define ALARM_S  300         /* the whole probe */

static const char *host, *password;
static int port;
static char tasks[96], results[96];

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

static void fail(const char *who, const char *what, const redisReply *r)
{
    fprintf(stderr, "redis_probe (%s): %s%s%s\n", who, what,
            r && r->type == REDIS_REPLY_ERROR ? ": " : "",
            r && r->type == REDIS_REPLY_ERROR ? r->str : "");
    exit(1);
}

/* A command's reply; a failed connection or a Redis error ends the probe. */
static redisReply *cmd(redisContext *c, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r)
        fail(who, c->errstr[0] ? c->errstr : "connection lost", NULL);
    if (r->type == REDIS_REPLY_ERROR)
        fail(who, fmt, r);
    return r;
}

static redisContext *connect_auth(const char *who)
{
    struct timeval connect_timeout = {5, 0}, read_timeout = {BLOCK_MS / 1000 + 5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, connect_timeout);
    if (!c || c->err)
        fail(who, c ? c->errstr : "out of memory", NULL);
    redisSetTimeout(c, read_timeout);
    if (password && *password)
        freeReplyObject(cmd(c, who, "AUTH %s", password));
    return c;
}

/* The first entry of an XREAD/XREADGROUP reply: its id and its first
 * field's value (both point into r).  NULL when the read timed out. */
static const redisReply *first_entry(const char *who, const redisReply *r,
                                     const redisReply **value)
{
    if (r->type == REDIS_REPLY_NIL)
        return NULL;
    /* [[stream, [[id, [field, value]]]]] (RESP2) */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        fail(who, "unexpected reply", NULL);
    const redisReply *stream = r->element[0];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
        stream->element[1]->type != REDIS_REPLY_ARRAY ||
        stream->element[1]->elements < 1)
        fail(who, "unexpected stream reply", NULL);
    const redisReply *entry = stream->element[1]->element[0];
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[1]->type != REDIS_REPLY_ARRAY || entry->element[1]->elements < 2)
        fail(who, "unexpected entry", NULL);
    *value = entry->element[1]->element[1];
    return entry->element[0];
}

/* The worker: read a task as a consumer of the group, answer it; "stop"
 * ends it. */
static void worker(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    redisContext *c = connect_auth("worker");
    for (;;) {
        redisReply *r = cmd(c, "worker",
                            "XREADGROUP GROUP probe w COUNT 1 BLOCK %d STREAMS %s >",
                            BLOCK_MS, tasks);
        const redisReply *value;
        if (!first_entry("worker", r, &value))
            fail("worker", "no task within BLOCK_MS", NULL);
        if (!strcmp(value->str, "stop"))
            _exit(0);
        freeReplyObject(cmd(c, "worker", "XADD %s * v %b", results,
                            value->str, (size_t)value->len));
        freeReplyObject(r);
    }
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long scale = 1;
    int a = 1;
    if (a < argc && !strcmp(argv[a], "--quick"))
        scale = 10, a++;
    if (argc - a != 2) {
        fprintf(stderr, "usage: redis_probe [--quick] HOST PORT  (env REDIS_PASSWORD)\n");
        return 2;
    }
    host = argv[a], port = atoi(argv[a + 1]);
    password = getenv("REDIS_PASSWORD");
    alarm(ALARM_S);  /* the forked worker dies with this process */

    snprintf(tasks, sizeof tasks, "bench:probe:%d:tasks", (int)getpid());
    snprintf(results, sizeof results, "bench:probe:%d:results", (int)getpid());
    redisContext *c = connect_auth("client");
    freeReplyObject(cmd(c, "client", "DEL %s %s", tasks, results));
    freeReplyObject(cmd(c, "client", "XGROUP CREATE %s probe $ MKSTREAM", tasks));

    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("redis_probe: fork");
        return 1;
    }
    if (pid == 0)
        worker();

    long n = TRIP_N / scale, total = TRIP_WARM + n;
    double *trip = malloc(sizeof *trip * (size_t)n);
    char last[64] = "0-0", payload[32];
    for (long i = 0; i < total; i++) {
        int len = snprintf(payload, sizeof payload, "%ld", i);
        double t = now();
        freeReplyObject(cmd(c, "client", "XADD %s * v %b", tasks, payload, (size_t)len));
        redisReply *r = cmd(c, "client", "XREAD COUNT 1 BLOCK %d STREAMS %s %s",
                            BLOCK_MS, results, last);
        const redisReply *value, *id = first_entry("client", r, &value);
        if (!id)
            fail("client", "no result within BLOCK_MS", NULL);
        if (value->len != (size_t)len || memcmp(value->str, payload, (size_t)len))
            fail("client", "wrong result", NULL);
        if (i >= TRIP_WARM)
            trip[i - TRIP_WARM] = now() - t;
        snprintf(last, sizeof last, "%.*s", (int)id->len, id->str);
        freeReplyObject(r);
    }

    freeReplyObject(cmd(c, "client", "XADD %s * v stop", tasks));
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "redis_probe: the worker failed\n");
        return 1;
    }
    freeReplyObject(cmd(c, "client", "DEL %s %s", tasks, results));
    redisFree(c);

    qsort(trip, (size_t)n, sizeof *trip, by_value);
    emit("c.redis_roundtrip", trip[n / 2] * 1e6, "us");
    emit("c.redis_roundtrip_p99", trip[(long)(n * 0.99)] * 1e6, "us");
    free(trip);
    return 0;
}
