#!/usr/bin/env bash
# Builds the benchmarks (Release, in build-bench/) and runs each BENCH_RUNS
# times (default 3), one after another, each run printing its table (mpx vs
# Python multiprocessing vs CAF vs the machine's limits) and writing its
# --json records to $BUILD_DIR/results/. Then scripts/bench_report.py turns
# the records into medians over the runs with their range: docs/benchmarks.md
# and the chart docs/benchmarks.svg when every benchmark ran, else
# $BUILD_DIR/results/benchmarks.md (a partial run never overwrites the docs).
#   bash scripts/bench.sh                          # every bench/*_bench.cpp
#   bash scripts/bench.sh process_bench            # only the named ones
#   bash scripts/bench.sh process_bench -- --quick # arguments after -- go to each benchmark
#   BENCH_RUNS=5 BUILD_DIR=build-x JOBS=2 bash scripts/bench.sh
# Run it on a quiet machine: the figures are only as good as the machine is idle.
# Exits non-zero if a benchmark fails to build or exits with an error.
set -euo pipefail
cd "$(dirname "$0")/.."

names=()
bench_args=()
while (($#)); do
  if [ "$1" = "--" ]; then
    shift
    bench_args=("$@")
    break
  fi
  names+=("$1")
  shift
done

bash scripts/deps.sh --bench
BENCH_RUNS=${BENCH_RUNS:-3}
BUILD_DIR=${BUILD_DIR:-build-bench}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null

# Every target whose name ends in _bench.
mapfile -t available < <(cmake --build "$BUILD_DIR" --target help | grep -oE '[A-Za-z0-9_]+_bench$' | sort -u)
if ((${#available[@]} == 0)); then
  echo "bench.sh: no *_bench target in $BUILD_DIR" >&2
  exit 1
fi
all_ran=0
if ((${#names[@]} == 0)); then
  names=("${available[@]}")
  all_ran=1
else
  for n in "${names[@]}"; do
    if ! printf '%s\n' "${available[@]}" | grep -qx "$n"; then
      echo "bench.sh: unknown benchmark '$n'; available: ${available[*]}" >&2
      exit 1
    fi
  done
fi

cmake --build "$BUILD_DIR" -j"$JOBS" --target "${names[@]}"

results="$BUILD_DIR/results"
rm -rf "$results"
mkdir -p "$results"
failed=()
for n in "${names[@]}"; do
  exe="$BUILD_DIR/bench/$n"
  if [ ! -x "$exe" ]; then
    echo "bench.sh: $exe was not built" >&2
    failed+=("$n")
    continue
  fi
  for ((run = 1; run <= BENCH_RUNS; run++)); do
    echo
    echo "==================== $n (run $run/$BENCH_RUNS) ===================="
    if ! "$exe" ${bench_args[@]+"${bench_args[@]}"} --json "$results/$n.$run.json"; then
      echo "bench.sh: $n exited with an error" >&2
      failed+=("$n")
      rm -f "$results/$n.$run.json"
      break
    fi
  done
done

if ((all_ran)) && ((${#failed[@]} == 0)); then
  python3 scripts/bench_report.py "$results" docs/benchmarks.md docs/benchmarks.svg
else
  python3 scripts/bench_report.py "$results" "$results/benchmarks.md" "$results/benchmarks.svg"
fi

if ((${#failed[@]})); then
  echo "bench.sh: failed: ${failed[*]}" >&2
  exit 1
fi
