#!/usr/bin/env python3
"""B14 of scripts/bench, CPython's side: a Manager().dict()'s `d[k] = v`
then `d[k]`, one after the other, in microseconds per pair
(manager_bench.lua is lmp's side, with the same counts).

Usage:  python3 manager_bench.py [--quick]
Output: `B14.manager_dict <us> us`.
"""
import multiprocessing as mp
import sys
import time

N, WARM = 20_000, 500       # set+get pairs timed, and before timing


def main():
    n = N // 10 if "--quick" in sys.argv[1:] else N
    with mp.Manager() as m:
        d = m.dict()
        for i in range(WARM):
            d[i % 100] = i
            assert d[i % 100] == i
        t = time.perf_counter()
        for i in range(n):
            d[i % 100] = i
            if d[i % 100] != i:
                raise SystemExit("B14: wrong value read back")
        dt = time.perf_counter() - t
    print(f"B14.manager_dict {dt / n * 1e6:.6g} us", flush=True)


if __name__ == "__main__":
    main()
