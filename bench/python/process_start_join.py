"""Python's multiprocessing side of bench/process_bench.cpp: start + join of
an empty Process under the fork, forkserver and spawn start methods.

Two modes:
  --serve     (used by process_bench) a co-process: after warming up each
              start method it prints "ready", then for every stdin line
                  round <r> <fork_iters> <forkserver_iters> <spawn_iters>
              runs one round (the three methods in an order rotated by r) and
              prints "<scenario> <median us of the round> us" per method,
              then "done". Ends on EOF.
  standalone  python3 bench/python/process_start_join.py [--rounds 5]
              runs the rounds itself and prints the median of the per-round
              medians, "<scenario> <value> us".
Each timed iteration is: Process(target=_empty) constructed, start(), join().
"""
# Only cheap imports at module level: a spawn child re-imports this file.
import multiprocessing as mp
import sys
import time

METHODS = ("fork", "forkserver", "spawn")


def _empty():
    pass


def median(values):
    v = sorted(values)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def start_join_us(ctx, iters):
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        p = ctx.Process(target=_empty)
        p.start()
        p.join()
        samples.append((time.perf_counter() - t0) * 1e6)
        if p.exitcode != 0:
            raise SystemExit(f"child exited with {p.exitcode}")
    return median(samples)


def one_round(contexts, r, iters):
    order = METHODS[r % 3:] + METHODS[:r % 3]
    return {m: start_join_us(contexts[m], iters[m]) for m in order}


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100, help="fork and forkserver iterations per round")
    ap.add_argument("--spawn-iters", type=int, default=8)
    args = ap.parse_args()

    contexts = {m: mp.get_context(m) for m in METHODS}
    for m in METHODS:  # warm-up: starts the fork server, loads caches
        start_join_us(contexts[m], 2)

    if args.serve:
        print("ready", flush=True)
        for line in sys.stdin:
            parts = line.split()
            if not parts or parts[0] != "round":
                continue
            r, nf, ns, nsp = (int(x) for x in parts[1:5])
            result = one_round(contexts, r, {"fork": nf, "forkserver": ns, "spawn": nsp})
            for m in METHODS:
                print(f"python_{m} {result[m]:.3f} us")
            print("done", flush=True)
        return

    per_round = {m: [] for m in METHODS}
    iters = {"fork": args.iters, "forkserver": args.iters, "spawn": args.spawn_iters}
    for r in range(args.rounds):
        for m, v in one_round(contexts, r, iters).items():
            per_round[m].append(v)
    for m in METHODS:
        print(f"python_{m} {median(per_round[m]):.3f} us")


if __name__ == "__main__":
    main()
