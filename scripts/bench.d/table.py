#!/usr/bin/env python3
"""Turn scripts/bench's raw lines into its one table.

Usage: python3 table.py RAW_FILE

RAW_FILE holds `run name value unit` lines (run = 1..N).  A cell is
`median [min-max]` over the runs.  Ratios are taken within each run, so
that both sides saw the same host load, and the median over runs is shown.
"""
import statistics
import sys
from collections import defaultdict

HI, LO = True, False        # is a higher figure better?

# One row per comparison:
#   (label, unit, higher is better, lmp metric, CPython metric, C metric,
#    factor from the C metric's unit to the row's unit)
# None leaves a cell empty.  The lmp metric names are the ones lmp_bench.lua
# is to emit, in the row's unit; a row whose lmp figure exists switches its
# ratio from the C headroom to lmp vs CPython by itself.
ROWS = [
    ("B1 Pool.map 200k ints, default chunksize", "items/s", HI,
     "lmp.B1.pool_map_small", "B1.pool_map_small", None, 1),
    ("B1   same, MALLOC_TOP_PAD_=16M", "items/s", HI,
     None, "B1.pool_map_small+toppad", None, 1),
    ("B1 Pool.map 20k ints, chunksize=1", "items/s", HI,
     "lmp.B1.pool_map_chunksize1", "B1.pool_map_chunksize1", None, 1),
    ("B1 Pool(2) start+close+join, fork", "ms", LO,
     "lmp.B1.pool_lifecycle.fork", "B1.pool_lifecycle.fork", None, 1),
    ("B1 Pool(2) start+close+join, spawn", "ms", LO,
     "lmp.B1.pool_lifecycle.spawn", "B1.pool_lifecycle.spawn", None, 1),
    ("B1 Pool(2) start+close+join, forkserver (its start included)", "ms", LO,
     "lmp.B1.pool_lifecycle.forkserver", None, None, 1),
    ("B2 CPU map 40x~50ms, Pool(2) speedup | C: 2 loops at once", "x", HI,
     "lmp.B2.speedup", "B2.speedup", "c.parallel_cores", 1),
    ("B2 efficiency = speedup/2", "%", HI,
     "lmp.B2.efficiency", "B2.efficiency", None, 1),
    ("B2 serial time per task", "ms", LO,
     "lmp.B2.task_time", "B2.task_time", None, 1),
    ("B3 pool.apply round trip | C: pipe ping-pong 1 B", "us", LO,
     "lmp.B3.apply_latency", "B3.apply_latency", "c.pipe_pingpong", 1),
    ("B4 Queue small ints | C: shm SPSC ring 8 B", "items/s", HI,
     "lmp.B4.queue_small", "B4.queue_small", "c.ring_msgs", 1),
    ("B4 SimpleQueue small ints | C: shm SPSC ring", "items/s", HI,
     "lmp.B4.simplequeue_small", "B4.simplequeue_small", "c.ring_msgs", 1),
    ("B4 JoinableQueue put -> task_done -> join | C: futex ping-pong", "us", LO,
     "lmp.B4.joinable_roundtrip", "B4.joinable_roundtrip", "c.futex_pingpong", 1),
    ("B5 Queue 1 MiB bytes | C: pipe, 64 KiB writes", "MB/s", HI,
     "lmp.B5.queue_large", "B5.queue_large", "c.pipe_bandwidth", 1e3),
    ("B5   same, MALLOC_TOP_PAD_=16M | C: pipe", "MB/s", HI,
     None, "B5.queue_large+toppad", "c.pipe_bandwidth", 1e3),
    ("B5 Pool results of 1 MiB, by handle | C: pipe", "MB/s", HI,
     "lmp.B5.pool_results_large", None, "c.pipe_bandwidth", 1e3),
    ("B5 64 MiB FFI array to a child, by handle | C: pipe", "MB/s", HI,
     "lmp.B5.array_to_child", None, "c.pipe_bandwidth", 1e3),
    ("B6 Pipe send/recv ping-pong | C: socketpair 1 B", "us", LO,
     "lmp.B6.pipe_pingpong.send", "B6.pipe_pingpong.pickle",
     "c.socketpair_pingpong", 1),
    ("B6 Pipe send_bytes/recv_bytes | C: socketpair", "us", LO,
     "lmp.B6.pipe_pingpong.bytes", "B6.pipe_pingpong.bytes",
     "c.socketpair_pingpong", 1),
    ("B7 Process start+join, spawn | C: spawn python3 -c pass", "ms", LO,
     "lmp.B7.process_start.spawn", "B7.process_start.spawn",
     "c.spawn_python", 1),
    ("B7 Process start+join, fork | C: fork+_exit+waitpid", "ms", LO,
     "lmp.B7.process_start.fork", "B7.process_start.fork",
     "c.fork_exit_wait", 1e-3),
    ("B7 Process start+join, forkserver | C: fork+_exit", "ms", LO,
     "lmp.B7.process_start.forkserver", "B7.process_start.forkserver",
     "c.fork_exit_wait", 1e-3),
    ("B7 forkserver warm-up (first process)", "ms", LO,
     "lmp.B7.forkserver_warmup", "B7.forkserver_warmup", None, 1),
    ("B8 lock counter 2x100k | C: robust pshared mutex", "ops/s", HI,
     "lmp.B8.lock_counter", "B8.lock_counter", "c.mutex_robust", 1),
    ("B8 atomic counter v:add(1) 2x100k | C: atomic add", "ops/s", HI,
     "lmp.B8.atomic_counter", None, "c.atomic_add", 1),
    ("B8 Lock acquire+release, uncontended", "ns", LO,
     "lmp.B8.lock_uncontended", "B8.lock_uncontended", None, 1),
    ("B8 child fills a fresh Array('d') 1M | C: first-touch fill", "elements/s", HI,
     "lmp.B8.array_fill", "B8.array_fill", "c.fresh_touch_bw", 1e9 / 8),
    ("B12 embedding host: lmp per 60 Hz tick, workers saturated, p50", "us", LO,
     "lmp.B12.tick_p50", None, None, 1),
    ("B12   same, p99 (target <= 100)", "us", LO, "lmp.B12.tick_p99", None, None, 1),
    ("B12   same, max", "us", LO, "lmp.B12.tick_max", None, None, 1),
    ("B12 naive host: pool:map inside the tick, p50", "us", LO,
     "lmp.B12.naive_p50", None, None, 1),
    ("B12   same, max", "us", LO, "lmp.B12.naive_max", None, None, 1),
    ("B12 paths/s, pool host", "paths/s", HI, "lmp.B12.paths_per_s", None, None, 1),
    ("B12 paths/s, serial host", "paths/s", HI, "lmp.B12.serial_paths_per_s", None, None, 1),
    ("B12 pool host vs serial host (target >= 1.8)", "x", HI, "lmp.B12.vs_serial", None, None, 1),
    # B13: lmp.Pool{broker = redis://...} served by 2 `lmp worker -j 1` on a
    # private redis-server, against the local Pool(2) in the same program
    # and the raw stream round trip (XADD, XREADGROUP BLOCK, XADD, XREAD
    # BLOCK) between 2 C processes on that server: redis_probe.c.
    ("B13 Pool over Redis: apply round trip, p50 | C: raw XADD+XREADGROUP round trip", "us", LO,
     "lmp.B13.apply_redis", None, "c.redis_roundtrip", 1),
    ("B13   same, p99 | C: p99", "us", LO,
     "lmp.B13.apply_redis_p99", None, "c.redis_roundtrip_p99", 1),
    ("B13 apply over Redis (target <= 3x raw XADD+XREADGROUP round trip)", "x", LO,
     "lmp.B13.apply_vs_raw", None, None, 1),
    ("B13 local Pool(2): the same apply, p50", "us", LO,
     "lmp.B13.apply_local", None, None, 1),
    ("B13   same, p99", "us", LO, "lmp.B13.apply_local_p99", None, None, 1),
    ("B13 Pool over Redis: map 100k ints, default chunk", "items/s", HI,
     "lmp.B13.map_redis", None, None, 1),
    ("B13 local Pool(2): the same map", "items/s", HI,
     "lmp.B13.map_local", None, None, 1),
    ("B13 map over Redis vs local Pool, default chunk (target >= 25%)", "%", HI,
     "lmp.B13.map_vs_local", None, None, 1),
    ("MAP lmp map, trivial fn | ref: serial luajit+cjson loop", "lines/s", HI,
     "lmp.MAP.trivial", None, "lua.MAP.serial_trivial", 1),
    ("MAP   same vs the serial loop (target: 500k lines/s)", "x", HI,
     "lmp.MAP.trivial_vs_serial", None, None, 1),
    ("MAP   same, xargs -P 2 luajit loop on 8 batches", "lines/s", HI,
     None, None, "xargs.MAP.trivial", 1),
    ("MAP lmp map, ~50 us fn | ref: serial luajit+cjson loop", "lines/s", HI,
     "lmp.MAP.heavy", None, "lua.MAP.serial_heavy", 1),
    ("MAP   same vs the serial loop (target >= 1.8)", "x", HI,
     "lmp.MAP.heavy_vs_serial", None, None, 1),
    ("MAP   same, xargs -P 2 luajit loop on 8 batches", "lines/s", HI,
     None, None, "xargs.MAP.heavy", 1),
    # B14: Manager().dict(): d[k] = v, then d[k] (scripts/bench.d/
    # manager_bench.lua and .py).
    ("B14 manager dict set+get | C: socketpair ping-pong", "us", LO,
     "lmp.B14.manager_dict", "B14.manager_dict", "c.socketpair_pingpong", 1),
    ("B11 Client connect+authenticate, TCP loopback", "ms", LO,
     "lmp.B11.connect_auth", "B11.connect_auth", None, 1),
    ("B11 send/recv ping-pong, TCP loopback | C: socketpair", "us", LO,
     "lmp.B11.tcp_pingpong", "B11.tcp_pingpong", "c.socketpair_pingpong", 1),
    ("B9 idle Pool worker VmRSS, spawn | C: bare python3", "MiB", LO,
     "lmp.B9.worker_rss", "B9.worker_rss", "c.rss_python", 1),
    ("B9 idle Pool worker RssAnon | C: bare python3", "MiB", LO,
     "lmp.B9.worker_rss_anon", "B9.worker_rss_anon", "c.rss_anon_python", 1),
    # lmp.codec carries what pickle carries in Python, but its format is
    # cjson-compatible JSON: its rows are the json ones, against lua-cjson.
    ("B10 pickle encode", "records/s", HI,
     None, "B10.pickle.encode_records", None, 1),
    ("B10   same, MALLOC_TOP_PAD_=16M", "records/s", HI,
     None, "B10.pickle.encode_records+toppad", None, 1),
    ("B10 pickle decode", "records/s", HI,
     None, "B10.pickle.decode_records", None, 1),
    ("B10   same, MALLOC_TOP_PAD_=16M", "records/s", HI,
     None, "B10.pickle.decode_records+toppad", None, 1),
    ("B10 codec/json encode | ref: lua-cjson (luajit)", "records/s", HI,
     "lmp.B10.codec.encode_records", "B10.json.encode_records",
     "lua.cjson.encode_records", 1),
    ("B10 codec/json decode | ref: lua-cjson (luajit)", "records/s", HI,
     "lmp.B10.codec.decode_records", "B10.json.decode_records",
     "lua.cjson.decode_records", 1),
    ("B10 pickle encode", "MB/s", HI, None, "B10.pickle.encode", None, 1),
    ("B10 pickle decode", "MB/s", HI, None, "B10.pickle.decode", None, 1),
    ("B10 codec/json encode | ref: lua-cjson", "MB/s", HI,
     "lmp.B10.codec.encode", "B10.json.encode", "lua.cjson.encode", 1),
    ("B10 codec/json decode | ref: lua-cjson", "MB/s", HI,
     "lmp.B10.codec.decode", "B10.json.decode", "lua.cjson.decode", 1),
    ("B10 payload size, codec/json | ref: lua-cjson", "bytes", LO,
     "lmp.B10.codec.size", "B10.json.size", "lua.cjson.size", 1),
    ("B10 payload size, pickle", "bytes", LO,
     None, "B10.pickle.size", None, 1),
    ("B10 lmp binary format encode | vs pickle", "records/s", HI,
     "lmp.B10.codec.binary_encode_records", "B10.pickle.encode_records", None, 1),
    ("B10 lmp binary format decode | vs pickle", "records/s", HI,
     "lmp.B10.codec.binary_decode_records", "B10.pickle.decode_records", None, 1),
    ("B10 lmp binary format encode | vs pickle", "MB/s", HI,
     "lmp.B10.codec.binary_encode", "B10.pickle.encode", None, 1),
    ("B10 lmp binary format decode | vs pickle", "MB/s", HI,
     "lmp.B10.codec.binary_decode", "B10.pickle.decode", None, 1),
    ("B10 payload size, lmp binary format | vs pickle", "bytes", LO,
     "lmp.B10.codec.binary_size", "B10.pickle.size", None, 1),
    # The machine alone: no CPython or lmp counterpart.
    ("C: fixed CPU loop (noise probe)", "ms", LO,
     None, None, "c.cpu_probe", 1),
    ("C: syscall round trip (getppid)", "ns", LO,
     None, None, "c.syscall", 1),
    ("C: first-touch page fault, 4 KiB", "us", LO,
     None, None, "c.pagefault", 1),
    ("C: first-touch rate (4 KiB / fault)", "MB/s", HI,
     None, None, "c.fresh_touch_bw", 1e3),
    ("C: eventfd ping-pong", "us", LO, None, None, "c.eventfd_pingpong", 1),
    ("C: shm futex ping-pong", "us", LO, None, None, "c.futex_pingpong", 1),
    ("C: shm spin ping-pong (burns 2 cores)", "us", LO,
     None, None, "c.spin_pingpong", 1),
    ("C: memcpy 1 MiB, cache-hot", "MB/s", HI,
     None, None, "c.memcpy_hot", 1e3),
    ("C: memcpy 1 MiB blocks over 256 MiB", "MB/s", HI,
     None, None, "c.memcpy_stream", 1e3),
    ("C: posix_spawn /bin/true + waitpid", "ms", LO,
     None, None, "c.spawn_true", 1),
    ("C: posix_spawn luajit -e '' + waitpid", "ms", LO,
     None, None, "c.spawn_luajit", 1),
    ("C: pshared mutex (not robust) 2x100k", "ops/s", HI,
     None, None, "c.mutex", 1),
    ("C: idle luajit VmRSS", "MiB", LO, None, None, "c.rss_luajit", 1),
    ("C: idle luajit RssAnon", "MiB", LO, None, None, "c.rss_anon_luajit", 1),
]

LEGEND = """\
# cells: median [min-max] over runs; ratios are medians of per-run ratios.
# ratio: lmp vs CPython, >1 = lmp better; (in parentheses), while a row has no
#   lmp figure: the C limit's headroom over CPython, >1 = C better.
# lmp % of C: lmp as a share of the C limit, 100% = at the limit."""


def fmt(v):
    """3 significant digits, k/M/G from 10^4 up, no exponents."""
    for limit, div, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"),
                               (1e4, 1e3, "k")):
        if abs(v) >= limit:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def cell(series):
    v = list(series.values())
    if not v:
        return "—"
    return f"{fmt(statistics.median(v))} [{fmt(min(v))}-{fmt(max(v))}]"


def gain(a, b, higher):
    """Median over runs of how many times a beats b (>1 = a better)."""
    r = [a[k] / b[k] if higher else b[k] / a[k]
         for k in a if k in b and a[k] > 0 and b[k] > 0]
    return statistics.median(r) if r else None


def main(path):
    raw = defaultdict(dict)                 # metric -> {run: value}
    for line in open(path):
        f = line.split()
        if len(f) == 4:
            raw[f[1]][int(f[0])] = float(f[2])

    def series(name, factor=1):
        return {r: v * factor for r, v in raw.get(name, {}).items()}

    head = ("workload", "lmp", "CPython", "C limit", "unit", "ratio",
            "lmp % of C", "runs")
    rows, used = [], set()
    for label, unit, hi, lm, py, c, factor in ROWS:
        used.update((lm, py, c))
        L, P, C = series(lm), series(py), series(c, factor)
        if not (L or P or C):
            continue
        if L:
            g = gain(L, P, hi)
            ratio = f"{g:.3g}x" if g is not None else "—"
        else:
            g = gain(C, P, hi)
            ratio = f"({g:.3g}x)" if g is not None else "—"
        g = gain(L, C, hi)
        pct = f"{g * 100:.3g}%" if g is not None else "—"
        runs = max(len(L), len(P), len(C))
        rows.append((label, cell(L), cell(P), cell(C), unit, ratio, pct,
                     str(runs)))

    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def show(r):
        print(" | ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip())

    print(LEGEND)
    print()
    show(head)
    show(["-" * w for w in widths])
    for r in rows:
        show(r)
    # A metric no row shows is most likely a workload added without its row
    # (the +toppad reruns emit more than the table needs: not reported).
    stray = sorted(m for m in set(raw) - used if not m.endswith("+toppad"))
    if stray:
        print("\n# not in the table (add rows in scripts/bench.d/table.py): "
              + " ".join(stray))


if __name__ == "__main__":
    main(sys.argv[1])
