"""Python's multiprocessing.Queue on the workloads of bench/queue_bench.cpp.

Prints one line per scenario: "<name> <value>" (items/s, or GB/s for 1 MiB).
Run by queue_bench; alone: python3 bench/python/queue_bench.py [--quick] [--repeat N]
"""
import multiprocessing as mp
import os
import sys
import time


def pin(cpu):
    # The two sides of a 1 -> 1 scenario on different cores, as in queue_bench.
    if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {cpu})


def produce(q, n, item, start):
    pin(1)
    start.wait()
    for _ in range(n):
        q.put(item)


def spsc(n, item):
    q = mp.Queue()
    start = mp.Event()
    p = mp.Process(target=produce, args=(q, n, item, start))
    p.start()
    pin(0)
    start.set()
    t0 = time.perf_counter()
    for _ in range(n):
        q.get()
    dt = time.perf_counter() - t0
    p.join()
    os.sched_setaffinity(0, range(os.cpu_count()))
    return n / dt


def produce_range(q, base, n, start):
    start.wait()
    for i in range(base, base + n):
        q.put(i)


def consume_until_pill(q, counts, start):
    start.wait()
    c = 0
    while True:
        v = q.get()
        if v < 0:
            break
        c += 1
    counts.put(c)


def mpmc(n, producers, consumers):
    q = mp.Queue()
    counts = mp.Queue()
    start = mp.Event()
    per = n // producers
    ps = [mp.Process(target=produce_range, args=(q, i * per, per, start)) for i in range(producers)]
    cs = [mp.Process(target=consume_until_pill, args=(q, counts, start)) for _ in range(consumers)]
    for p in ps + cs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in ps:
        p.join()
    for _ in cs:
        q.put(-1)
    total = sum(counts.get() for _ in cs)
    for c in cs:
        c.join()
    dt = time.perf_counter() - t0
    assert total == per * producers, total
    return total / dt


def main():
    quick = "--quick" in sys.argv
    mp.set_start_method("fork")
    n_int = 100_000 if quick else 500_000
    n_1k = 100_000 if quick else 300_000
    n_1m = 100 if quick else 500
    n_mpmc = 100_000 if quick else 400_000
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 1

    def best(f):  # best of `repeat` runs, as queue_bench does for mpx
        return max(f() for _ in range(repeat))

    print("queue_spsc_int64", best(lambda: spsc(n_int, 12345)), flush=True)
    print("queue_spsc_1k", best(lambda: spsc(n_1k, b"x" * 1024)), flush=True)
    print("queue_spsc_100b", best(lambda: spsc(n_1k, b"x" * 100)), flush=True)
    print("queue_spsc_1m", best(lambda: spsc(n_1m, b"x" * (1 << 20))) * (1 << 20) / 1e9, flush=True)
    print("queue_mpmc_4x4", best(lambda: mpmc(n_mpmc, 4, 4)), flush=True)


if __name__ == "__main__":
    main()
