"""Python's multiprocessing.Pipe on the workloads of bench/pipe_bench.cpp.

Prints "<name> <value>": pipe_pingpong_us (median round trip of a small
message, microseconds) and pipe_oneway (small messages per second).
Run by pipe_bench; alone: python3 bench/python/pipe_bench.py [--quick] [--repeat N]
"""
import multiprocessing as mp
import os
import statistics
import sys
import time


def pin(cpu):
    # Parent on CPU 0, child on CPU 1, as in pipe_bench.
    if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {cpu})


def echo(conn, n):
    pin(1)
    for _ in range(n):
        conn.send(conn.recv())


def pingpong(n):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, n))
    p.start()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        a.send(7)
        a.recv()
        samples.append(time.perf_counter() - t0)
    p.join()
    return statistics.median(samples[n // 10:]) * 1e6


def sink(conn, n):
    pin(1)
    for _ in range(n):
        conn.recv()
    conn.send(True)


def oneway(n):
    a, b = mp.Pipe()
    p = mp.Process(target=sink, args=(b, n))
    p.start()
    t0 = time.perf_counter()
    for i in range(n):
        a.send(i)
    a.recv()
    dt = time.perf_counter() - t0
    p.join()
    return n / dt


def main():
    quick = "--quick" in sys.argv
    mp.set_start_method("fork")
    pin(0)
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 1
    n_rtt = 5000 if quick else 20000
    n_one = 100_000 if quick else 300_000
    # best of `repeat` runs, as pipe_bench does for mpx
    print("pipe_pingpong_us", min(pingpong(n_rtt) for _ in range(repeat)), flush=True)
    print("pipe_oneway", max(oneway(n_one) for _ in range(repeat)), flush=True)


if __name__ == "__main__":
    main()
