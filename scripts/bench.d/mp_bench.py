#!/usr/bin/env python3
"""The CPython column of scripts/bench: lmp's reference workloads B1..B10 run
on CPython's multiprocessing.

Usage:  python3 mp_bench.py [--quick] WORKLOAD...      (or: all)
Workloads, by name or id:
  B1 pool_map_small   B2 pool_cpu_scaling  B3 apply_latency  B4 queue_small
  B5 queue_large      B6 pipe_pingpong     B7 process_start  B8 lock_counter
  B9 worker_rss       B10 codec

Output: one `name value unit` line per result (e.g. `B3.apply_latency 239 us`);
one invocation is one run.  Timed sections leave out process and pool start
unless the name says otherwise.  The default start method (fork on Linux,
Python 3.11) is used unless a workload names one.  --quick divides counts
by 10 (a smoke test; its figures are not comparable).

Imports stay minimal at the top level: spawned workers import this module, and
B9 measures their memory.
"""
import multiprocessing as mp
import os
import sys
import time

now = time.perf_counter
MB = 1e6                    # rates are decimal: MB/s = 10^6 B/s

# Sizes; lmp's side (lmp_bench.lua) mirrors them.
MAP_N = 200_000             # B1 items, default chunksize
MAP1_N = 20_000             # B1 items, chunksize=1
CPU_INPUTS = 40             # B2 inputs
CPU_N = 1_300_000           # B2 loop length, ~50 ms per call here
APPLY_N = 5_000             # B3 round trips
QUEUE_N = 200_000           # B4 items
BIG_N = 200                 # B5 items
BIG_SIZE = 1 << 20          # B5 item size
PING_N = 50_000             # B6 round trips
START_N = 50                # B7 processes per start method
JOIN_N = 5_000              # B4 JoinableQueue round trips
CONNECT_N = 200             # B11 connect+authenticate round trips
LOCK_N = 100_000            # B8 increments per child
UNCONTENDED_N = 1_000_000   # B8 acquire+release pairs in one process
FILL_N = 1_000_000          # B8 Array elements a child writes
RECORDS = 1_000             # B10 records in the payload
WARM = 100                  # untimed warm-up calls/round trips

scale = 1                   # 10 under --quick


def n(count):
    return max(1, count // scale)


def emit(name, value, unit):
    print(f"{name} {value:.6g} {unit}", flush=True)


def timed(fn, *args):
    """Seconds fn(*args) takes."""
    t = now()
    fn(*args)
    return now() - t


def calls_per_second(fn):
    """Rate of fn(), called in doubling batches for at least 0.3 s."""
    min_time = 0.3 / scale
    calls, batch, t0 = 0, 1, now()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        batch *= 2
        elapsed = now() - t0
        if elapsed >= min_time:
            return calls / elapsed


# --- what workers run: module level, so that spawn and forkserver find it ---

def square(x):
    return x * x


def identity(x):
    return x


def noop():
    pass


def cpu_task(x):
    """Pure interpreter work: ~50 ms of integer arithmetic."""
    s = 0
    for i in range(x, x + CPU_N):
        s += i * i % 7
    return s


def release(sem):
    sem.release()


def produce(q, ready, go, count, size):
    """Put `count` items on q once the parent says go: the ints 0..count-1,
    or, with a size, the same `size` random bytes each time."""
    blob = os.urandom(size) if size else None
    ready.set()
    go.wait()
    for i in range(count):
        q.put(blob if size else i)


def echo(conn, count, raw):
    recv, send = ((conn.recv_bytes, conn.send_bytes) if raw
                  else (conn.recv, conn.send))
    for _ in range(count):
        send(recv())


def increment(val, ready, go, count, ends, k):
    lock = val.get_lock()
    ready.release()
    go.wait()
    for _ in range(count):
        with lock:
            val.value += 1
    ends[k] = time.monotonic()


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


# --- workloads ---------------------------------------------------------------

def pool_map_small():
    """B1: Pool(2).map of a trivial function (default chunksize and
    chunksize=1); then a pool's start+close+join alone, fork and spawn."""
    with mp.Pool(2) as pool:
        pool.map(square, range(WARM))
        for name, count, chunks in (("pool_map_small", n(MAP_N), None),
                                    ("pool_map_chunksize1", n(MAP1_N), 1)):
            t = now()
            res = pool.map(square, range(count), chunks)
            dt = now() - t
            assert res[-1] == (count - 1) ** 2
            emit(f"B1.{name}", count / dt, "items/s")
    for method in ("fork", "spawn"):
        ctx = mp.get_context(method)
        t = now()
        pool = ctx.Pool(2)
        pool.close()
        pool.join()
        emit(f"B1.pool_lifecycle.{method}", (now() - t) * 1e3, "ms")


def pool_cpu_scaling():
    """B2: a CPU-bound map on Pool(2) against the same loop run serially."""
    inputs = range(n(CPU_INPUTS))
    t = now()
    serial = [cpu_task(x) for x in inputs]
    t_serial = now() - t
    with mp.Pool(2) as pool:
        pool.map(square, range(10))
        t = now()
        parallel = pool.map(cpu_task, inputs)
        t_pool = now() - t
    assert parallel == serial
    emit("B2.task_time", t_serial / len(inputs) * 1e3, "ms")
    emit("B2.speedup", t_serial / t_pool, "x")
    emit("B2.efficiency", t_serial / t_pool / 2 * 100, "%")


def apply_latency():
    """B3: sequential pool.apply(identity, (i,)) round trips."""
    count = n(APPLY_N)
    with mp.Pool(2) as pool:
        for i in range(WARM):
            pool.apply(identity, (i,))
        t = now()
        for i in range(count):
            if pool.apply(identity, (i,)) != i:
                raise AssertionError("apply returned a wrong value")
        dt = now() - t
    emit("B3.apply_latency", dt / count * 1e6, "us")


def stream(make_queue, count, size=0):
    """A child puts `count` items on a new queue, the parent gets them all;
    timed from the go signal to the last get.  Returns the seconds."""
    q, ready, go = make_queue(), mp.Event(), mp.Event()
    p = mp.Process(target=produce, args=(q, ready, go, count, size))
    p.start()
    ready.wait()
    t = now()
    go.set()
    total = 0
    for _ in range(count):
        item = q.get()
        total += len(item) if size else item
    dt = now() - t
    p.join()
    if p.exitcode != 0 or total != (count * size if size
                                    else count * (count - 1) // 2):
        raise AssertionError("items lost or damaged")
    return dt


def drain_joinable(q):
    while True:
        item = q.get()
        q.task_done()
        if item is None:
            break


def queue_small():
    """B4: ints 0..N-1 from a child, through Queue and SimpleQueue; then a
    JoinableQueue round trip: put one item, a child gets it and calls
    task_done(), join() returns."""
    count = n(QUEUE_N)
    for name, make in (("queue", mp.Queue), ("simplequeue", mp.SimpleQueue)):
        dt = stream(make, count)
        emit(f"B4.{name}_small", count / dt, "items/s")
    count = n(JOIN_N)
    q = mp.JoinableQueue()
    p = mp.Process(target=drain_joinable, args=(q,))
    p.start()
    for i in range(WARM):
        q.put(i)
        q.join()
    t = now()
    for i in range(count):
        q.put(i)
        q.join()
    dt = now() - t
    q.put(None)
    p.join()
    emit("B4.joinable_roundtrip", dt / count * 1e6, "us")


def queue_large():
    """B5: the same 1 MiB bytes object, N times through a Queue."""
    count = n(BIG_N)
    dt = stream(mp.Queue, count, BIG_SIZE)
    emit("B5.queue_large", count * BIG_SIZE / dt / MB, "MB/s")


def pipe_pingpong():
    """B6: Pipe() round trips with an echoing child: send/recv of an int,
    then send_bytes/recv_bytes of 1 byte."""
    count = n(PING_N)
    for name, raw in (("pickle", False), ("bytes", True)):
        a, b = mp.Pipe()
        p = mp.Process(target=echo, args=(b, WARM + count, raw))
        p.start()
        if raw:
            def trip(i, msg=b"x"):
                a.send_bytes(msg)
                return a.recv_bytes() == msg
        else:
            def trip(i):
                a.send(i)
                return a.recv() == i
        for i in range(WARM):
            trip(i)
        t = now()
        for i in range(count):
            if not trip(i):
                raise AssertionError("bad echo")
        dt = now() - t
        p.join()
        a.close()
        b.close()
        emit(f"B6.pipe_pingpong.{name}", dt / count * 1e6, "us")


def process_start():
    """B7: Process(target=noop) start()+join(), one after another, per start
    method.  One warm-up process per method is left out; forkserver's, which
    starts the server, is reported on its own."""
    count = n(START_N)

    def start_join(ctx):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        assert p.exitcode == 0

    for method in ("spawn", "fork", "forkserver"):
        ctx = mp.get_context(method)
        warm = timed(start_join, ctx)
        if method == "forkserver":
            emit("B7.forkserver_warmup", warm * 1e3, "ms")
        dt = timed(lambda: [start_join(ctx) for _ in range(count)])
        emit(f"B7.process_start.{method}", dt / count * 1e3, "ms")


def lock_counter():
    lock_contended()
    lock_uncontended()


def lock_contended():
    """B8: 2 children x N `with lock: v.value += 1` on a Value('i'), timed
    from go to the last child's end (CLOCK_MONOTONIC is system-wide)."""
    count = n(LOCK_N)
    val = mp.Value("i", 0)
    ends = mp.Array("d", 2, lock=False)
    ready, go = mp.Semaphore(0), mp.Event()
    procs = [mp.Process(target=increment, args=(val, ready, go, count, ends, k))
             for k in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.monotonic()
    go.set()
    for p in procs:
        p.join()
    if val.value != 2 * count:
        raise AssertionError(f"lost updates: {val.value} != {2 * count}")
    emit("B8.lock_counter", 2 * count / (max(ends) - t0), "ops/s")


def fill(arr, count, took):
    t = time.monotonic()
    for i in range(count):
        arr[i] = i
    took.value = time.monotonic() - t


def lock_uncontended():
    """B8: acquire+release of a Lock no one else wants, in ns; and a child
    filling an Array('d') element by element (elements/s, the loop only)."""
    count = n(UNCONTENDED_N)
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    for _ in range(WARM):
        acquire(); release()
    t = time.monotonic()
    for _ in range(count):
        acquire(); release()
    emit("B8.lock_uncontended", (time.monotonic() - t) / count * 1e9, "ns")
    count = n(FILL_N)
    arr = mp.Array("d", count, lock=False)
    took = mp.Value("d", 0.0, lock=False)
    p = mp.Process(target=fill, args=(arr, count, took))
    p.start()
    p.join()
    if arr[count - 1] != count - 1:
        raise AssertionError("array not filled")
    emit("B8.array_fill", count / took.value, "elements/s")


def worker_rss():
    """B9: memory of an idle spawn-method Pool worker (mean of the two)."""
    ctx = mp.get_context("spawn")
    booted = ctx.Semaphore(0)
    with ctx.Pool(2, initializer=release, initargs=(booted,)) as pool:
        for _ in range(2):
            booted.acquire()
        pool.map(identity, range(WARM), chunksize=1)
        time.sleep(0.3)                         # settle in the idle loop
        pids = [w.pid for w in pool._pool]      # private, but the only way
        for field, name in (("VmRSS", "worker_rss"),
                            ("RssAnon", "worker_rss_anon")):
            kib = [status_kib(pid, field) for pid in pids]
            emit(f"B9.{name}", sum(kib) / len(kib) / 1024, "MiB")


def codec():
    """B10: pickle and json encode/decode of 1000 small records."""
    import json
    import pickle
    payload = [{"id": i, "name": f"user{i}", "score": i * 1.5,
                "tags": ["a", "b", "c"], "active": i % 2 == 0}
               for i in range(RECORDS)]
    for name, enc, dec in (("pickle", pickle.dumps, pickle.loads),
                           ("json", json.dumps, json.loads)):
        blob = enc(payload)
        assert dec(blob) == payload
        for op, rate in (("encode", calls_per_second(lambda: enc(payload))),
                         ("decode", calls_per_second(lambda: dec(blob)))):
            emit(f"B10.{name}.{op}", rate * len(blob) / MB, "MB/s")
            emit(f"B10.{name}.{op}_records", rate * RECORDS, "records/s")
        emit(f"B10.{name}.size", len(blob), "bytes")


def serve_echo(address, authkey, count):
    from multiprocessing.connection import Listener
    with Listener(address, authkey=authkey) as listener:
        for _ in range(WARM + count):   # connect+authenticate round trips
            listener.accept().close()
        conn = listener.accept()        # then one connection: ping-pong
        while True:
            msg = conn.recv()
            if msg is None:
                break
            conn.send(msg)
        conn.close()


def listener():
    """B11: Client connect + authenticate (authkey, both ways) to a Listener
    on TCP loopback, in ms; then send/recv ping-pong of an int on one such
    connection, in us."""
    from multiprocessing.connection import Client, Listener
    count = n(CONNECT_N)
    probe = Listener(("127.0.0.1", 0))
    address = probe.address
    probe.close()
    p = mp.Process(target=serve_echo, args=(address, b"secret", count))
    p.start()
    for _ in range(50):
        try:
            Client(address, authkey=b"secret").close()
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    for _ in range(WARM - 1):
        Client(address, authkey=b"secret").close()
    t = now()
    for _ in range(count):
        Client(address, authkey=b"secret").close()
    emit("B11.connect_auth", (now() - t) / count * 1e3, "ms")
    conn = Client(address, authkey=b"secret")
    pings = n(PING_N)
    for i in range(WARM):
        conn.send(i)
        conn.recv()
    t = now()
    for i in range(pings):
        conn.send(i)
        if conn.recv() != i:
            raise AssertionError("bad echo")
    emit("B11.tcp_pingpong", (now() - t) / pings * 1e6, "us")
    conn.send(None)
    conn.close()
    p.join()


WORKLOADS = [pool_map_small, pool_cpu_scaling, apply_latency, queue_small,
             queue_large, pipe_pingpong, process_start, lock_counter,
             worker_rss, codec, listener]


def main(args):
    global scale
    if "--quick" in args:
        scale = 10
        args = [a for a in args if a != "--quick"]
    table = {f.__name__: f for f in WORKLOADS}
    table.update((f"B{i}", f) for i, f in enumerate(WORKLOADS, 1))
    if args in ([], ["all"]):
        args = [f.__name__ for f in WORKLOADS]
    unknown = [a for a in args if a not in table]
    if unknown:
        sys.exit(f"unknown workload(s): {' '.join(unknown)}\n\n{__doc__}")
    for a in args:
        table[a]()


if __name__ == "__main__":
    main(sys.argv[1:])
