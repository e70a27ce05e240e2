"""Python's multiprocessing side of bench/sync_bench.cpp.

Prints one line per scenario: "<scenario> <value> <unit>". Run alone:
    python3 bench/python/sync_bench.py [--scale 1.0]
"""
import argparse
import multiprocessing as mp
import os
import time

CHILD_CPU = None


def _pin_child():
    if CHILD_CPU is not None:
        os.sched_setaffinity(0, {CHILD_CPU})


def _increment(v, n, go):
    _pin_child()
    go.wait()
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_lock_increment(n):
    v = mp.Value('l', 0)
    go = mp.Event()
    ps = [mp.Process(target=_increment, args=(v, n, go)) for _ in range(2)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    dt = time.perf_counter() - t0
    assert v.value == 2 * n, v.value
    return 2 * n / dt


def _event_echo(ping, pong, n):
    _pin_child()
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_roundtrip(n):
    ping, pong = mp.Event(), mp.Event()
    p = mp.Process(target=_event_echo, args=(ping, pong, n))
    p.start()
    t0 = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    dt = time.perf_counter() - t0
    p.join()
    return dt / n * 1e6


def _lock_echo(ping, pong, n):
    _pin_child()
    for _ in range(n):
        ping.acquire()   # blocks until the parent releases it
        pong.release()   # hands the turn back (multiprocessing.Lock allows this)


def lock_handoff_roundtrip(n):
    ping, pong = mp.Lock(), mp.Lock()
    ping.acquire()
    pong.acquire()
    p = mp.Process(target=_lock_echo, args=(ping, pong, n))
    p.start()
    t0 = time.perf_counter()
    for _ in range(n):
        ping.release()
        pong.acquire()
    dt = time.perf_counter() - t0
    p.join()
    return dt / n * 1e6


def lock_uncontended(n):
    lock = mp.Lock()
    t0 = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - t0) / n * 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--scale', type=float, default=1.0)
    parser.add_argument('--pin', choices=['none', 'cross', 'same'], default='none')
    args = parser.parse_args()
    global CHILD_CPU
    if args.pin != 'none':
        os.sched_setaffinity(0, {0})
        CHILD_CPU = 1 if args.pin == 'cross' else 0
    s = args.scale
    mp.set_start_method('fork')
    print('value_lock_increment_2proc %.6g ops/s' % value_lock_increment(int(200000 * s)), flush=True)
    print('event_pingpong_roundtrip %.6g us' % event_roundtrip(int(20000 * s)), flush=True)
    print('lock_handoff_roundtrip %.6g us' % lock_handoff_roundtrip(int(20000 * s)), flush=True)
    print('lock_uncontended_acquire_release %.6g ns' % lock_uncontended(int(500000 * s)), flush=True)


if __name__ == '__main__':
    main()
