"""Python's multiprocessing.Manager on the workloads of bench/manager_bench.cpp.

Prints "<name> <value>":
  manager_dict_set_get          dict operations/s: d[i] = i then d[i], from a child process
  manager_list_append           appends/s from the parent
  manager_lock_acquire_release  acquire + release pairs/s of a manager Lock
  manager_tcp_dict_set_get      as the first, with the manager on TCP 127.0.0.1 and an authkey,
                                the child connecting with BaseManager.connect
Each value is the median over --repeat runs.
Run by manager_bench; alone: python3 bench/python/manager_bench.py [--quick] [--repeat N]
"""
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing.managers import DictProxy, SyncManager

QUICK = "--quick" in sys.argv
REPEAT = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
N_DICT = 5_000 if QUICK else 20_000
N_LIST = 5_000 if QUICK else 20_000
N_LOCK = 5_000 if QUICK else 20_000

DICTS = {}


def get_dict():
    return DICTS.setdefault("d", {})


class TcpManager(SyncManager):
    pass


TcpManager.register("get_dict", callable=get_dict, proxytype=DictProxy)


def dict_child(d, n, out):
    d[-1] = -1
    t0 = time.perf_counter()
    for i in range(n):
        d[i] = i
        assert d[i] == i
    out.send(2 * n / (time.perf_counter() - t0))


def tcp_child(address, n, out):
    m = TcpManager(address=address, authkey=b"bench-key")
    m.connect()
    dict_child(m.get_dict(), n, out)


def in_child(target, args):
    receive, send = mp.Pipe(False)
    p = mp.Process(target=target, args=args + (send,))
    p.start()
    rate = receive.recv()
    p.join()
    return rate


def median_of(f):
    return statistics.median(f() for _ in range(REPEAT))


def main():
    mp.set_start_method("fork")
    with mp.Manager() as m:
        d = m.dict()
        print("manager_dict_set_get", median_of(lambda: in_child(dict_child, (d, N_DICT))), "ops/s")

        def list_rate():
            lst = m.list()
            t0 = time.perf_counter()
            for i in range(N_LIST):
                lst.append(i)
            return N_LIST / (time.perf_counter() - t0)

        print("manager_list_append", median_of(list_rate), "ops/s")
        lock = m.Lock()

        def lock_rate():
            t0 = time.perf_counter()
            for _ in range(N_LOCK):
                lock.acquire()
                lock.release()
            return N_LOCK / (time.perf_counter() - t0)

        print("manager_lock_acquire_release", median_of(lock_rate), "pairs/s")
    with TcpManager(address=("127.0.0.1", 0), authkey=b"bench-key") as tm:
        print("manager_tcp_dict_set_get", median_of(lambda: in_child(tcp_child, (tm.address, N_DICT))), "ops/s")


if __name__ == "__main__":
    main()
