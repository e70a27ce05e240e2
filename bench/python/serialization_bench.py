"""pickle.dumps + pickle.loads round trips, the Python counterpart of
bench/serialization_bench.cpp. Prints "<scenario> <ns per op>" lines."""
import pickle
import sys
import time


class Small:
    __slots__ = ("id", "value", "tag", "ints")

    def __init__(self):
        self.id = 42
        self.value = 3.5
        self.tag = "abcdefgh"
        self.ints = [1, 2, 3, 4]


def ns_per_op(obj, n, rounds=5):
    dumps, loads = pickle.dumps, pickle.loads
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            loads(dumps(obj, 5))
        results.append((time.perf_counter_ns() - t0) / n)
    results.sort()
    return results[len(results) // 2]


def main():
    quick = "--quick" in sys.argv
    n = 20_000 if quick else 200_000
    cases = [
        ("pickle_int", 123456789, n),
        ("pickle_tuple4", (1, 2.0, 3.0, 4, 5), n),
        ("pickle_str_1k", "k" * 1024, n),
        ("pickle_object_small", Small(), n // 2),
        ("pickle_list_float_1k", [1.5] * 1024, n // 20),
        ("pickle_bytes_1m", b"\x07" * (1 << 20), 200 if quick else 2000),
    ]
    for name, obj, count in cases:
        print(f"{name} {ns_per_op(obj, count):.1f}", flush=True)


if __name__ == "__main__":
    main()
