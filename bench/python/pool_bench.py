"""Python's multiprocessing.Pool and ProcessPoolExecutor on the workloads of bench/pool_bench.cpp.

Prints "<name> <value>":
  pool_map_trivial_pool            items/s of Pool(2).map(trivial, range(N)) (default chunksize)
  pool_map_trivial_executor        items/s of ProcessPoolExecutor(2).map(trivial, range(N), chunksize=N/8)
  pool_apply_async_pool            tasks/s of M apply_async calls, then get() of each
  pool_apply_async_executor        tasks/s of M submit calls, then result() of each
  pool_imap_unordered_sleepy_pool  total s / ideal s of imap_unordered over tasks sleeping 0-2 ms
Each value is the median over --repeat runs.
Run by pool_bench; alone: python3 bench/python/pool_bench.py [--quick] [--repeat N]
"""
import concurrent.futures as cf
import multiprocessing as mp
import random
import statistics
import sys
import time

QUICK = "--quick" in sys.argv
REPEAT = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
N_MAP = 1_000_000 if QUICK else 10_000_000
N_APPLY = 20_000 if QUICK else 100_000
N_SLEEPY = 500 if QUICK else 2000


def trivial(x):
    return x + 1


def nap(ms):
    time.sleep(ms / 1000.0)
    return ms


def sleeps():
    rng = random.Random(42)
    return [rng.uniform(0.0, 2.0) for _ in range(N_SLEEPY)]


def median_of(f):
    return statistics.median(f() for _ in range(REPEAT))


def main():
    with mp.Pool(2) as pool:
        def map_rate():
            t0 = time.perf_counter()
            pool.map(trivial, range(N_MAP))
            return N_MAP / (time.perf_counter() - t0)

        def apply_rate():
            t0 = time.perf_counter()
            results = [pool.apply_async(trivial, (i,)) for i in range(N_APPLY)]
            for r in results:
                r.get()
            return N_APPLY / (time.perf_counter() - t0)

        def sleepy_ratio():
            work = sleeps()
            t0 = time.perf_counter()
            for _ in pool.imap_unordered(nap, work):
                pass
            return (time.perf_counter() - t0) / (sum(work) / 1000.0 / 2)

        print("pool_map_trivial_pool", median_of(map_rate), flush=True)
        print("pool_apply_async_pool", median_of(apply_rate), flush=True)
        print("pool_imap_unordered_sleepy_pool", median_of(sleepy_ratio), flush=True)

    with cf.ProcessPoolExecutor(2) as executor:
        def map_rate():
            t0 = time.perf_counter()
            for _ in executor.map(trivial, range(N_MAP), chunksize=max(1, N_MAP // 8)):
                pass
            return N_MAP / (time.perf_counter() - t0)

        def submit_rate():
            t0 = time.perf_counter()
            futures = [executor.submit(trivial, i) for i in range(N_APPLY)]
            for f in futures:
                f.result()
            return N_APPLY / (time.perf_counter() - t0)

        print("pool_map_trivial_executor", median_of(map_rate), flush=True)
        print("pool_apply_async_executor", median_of(submit_rate), flush=True)


if __name__ == "__main__":
    main()
