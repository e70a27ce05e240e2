"""Python's multiprocessing side of bench/shared_memory_bench.cpp.

A child writes 256 MiB into a SharedMemory (buf[:] = payload), the parent
then reads it (bytes(buf)). Prints "<scenario> <value> <unit>".
    python3 bench/python/shared_memory_bench.py [--mib 256]
"""
import argparse
import multiprocessing as mp
import time
from multiprocessing import shared_memory


def _writer(name, size, ready, go, done):
    shm = shared_memory.SharedMemory(name)
    payload = b'\x5a' * size
    ready.set()
    go.wait()
    shm.buf[:size] = payload
    done.set()
    del payload
    shm.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--mib', type=int, default=256)
    args = parser.parse_args()
    size = args.mib << 20
    mp.set_start_method('fork')
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        ready, go, done = mp.Event(), mp.Event(), mp.Event()
        p = mp.Process(target=_writer, args=(shm.name, size, ready, go, done))
        p.start()
        ready.wait()
        t0 = time.perf_counter()
        go.set()
        done.wait()
        t1 = time.perf_counter()
        data = bytes(shm.buf)
        t2 = time.perf_counter()
        assert data[size - 1] == 0x5a
        p.join()
        print('shm_child_writes_parent_reads %.6g GB/s' % (size / (t2 - t0) / 1e9), flush=True)
        print('shm_child_write_phase %.6g GB/s' % (size / (t1 - t0) / 1e9), flush=True)
        print('shm_parent_read_phase %.6g GB/s' % (size / (t2 - t1) / 1e9), flush=True)
    finally:
        shm.close()
        shm.unlink()


if __name__ == '__main__':
    main()
