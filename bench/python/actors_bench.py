"""Python's multiprocessing on the cross-process workloads of bench/actors_bench.cpp.

Prints "<name> <value>":
  actor_request_roundtrip_us      median round trip of a request over a Pipe:
                                  the parent sends (i, 1), the child replies
                                  i + 1 (microseconds)
  actor_request_roundtrip_p99_us  the 99th percentile of the same samples
  actor_oneway_throughput         small messages per second through a Queue to
                                  a child that counts them; a final request
                                  returns the count, so the time covers handling
Run by actors_bench; alone: python3 bench/python/actors_bench.py [--quick] [--repeat N] [--pin]
"""
import multiprocessing as mp
import os
import sys
import time


PIN = "--pin" in sys.argv


def pin(cpu):
    # With --pin: parent on CPU 0, child on CPU 1, as actors_bench --pin does.
    if PIN and hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
        os.sched_setaffinity(0, {cpu})


def adder(conn, n):
    pin(1)
    for _ in range(n):
        a, b = conn.recv()
        conn.send(a + b)


def roundtrip(n):
    a, b = mp.Pipe()
    p = mp.Process(target=adder, args=(b, n))
    p.start()
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        a.send((i, 1))
        r = a.recv()
        samples.append(time.perf_counter() - t0)
        assert r == i + 1, r
    p.join()
    samples = sorted(samples[n // 10:])
    m = len(samples)
    return samples[m // 2] * 1e6, samples[min(m - 1, m * 99 // 100)] * 1e6


def counter(q, reply):
    pin(1)
    count = 0
    while True:
        m = q.get()
        if m is None:  # the "total" request
            reply.send(count)
            return
        count += 1


def oneway(n):
    q = mp.Queue()
    a, b = mp.Pipe()
    p = mp.Process(target=counter, args=(q, b))
    p.start()
    t0 = time.perf_counter()
    for i in range(n):
        q.put(i)
    q.put(None)
    count = a.recv()
    dt = time.perf_counter() - t0
    p.join()
    assert count == n, count
    return n / dt


def main():
    quick = "--quick" in sys.argv
    mp.set_start_method("fork")
    pin(0)
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 1
    n_rtt = 2000 if quick else 10000
    n_one = 50_000 if quick else 200_000
    # best of `repeat` runs for every figure, as actors_bench does for mpx and CAF
    runs = [roundtrip(n_rtt) for _ in range(repeat)]
    print("actor_request_roundtrip_us", min(r[0] for r in runs), flush=True)
    print("actor_request_roundtrip_p99_us", min(r[1] for r in runs), flush=True)
    print("actor_oneway_throughput", max(oneway(n_one) for _ in range(repeat)), flush=True)


if __name__ == "__main__":
    main()
