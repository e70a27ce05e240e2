#!/usr/bin/env bash
# Builds the benchmarks (Release, in build-bench/) and runs them one after
# another, each printing its table (mpx vs Python multiprocessing vs the
# machine's limits).
#   bash scripts/bench.sh                          # every bench/*_bench.cpp
#   bash scripts/bench.sh process_bench            # only the named ones
#   bash scripts/bench.sh process_bench -- --quick # arguments after -- go to each benchmark
#   BUILD_DIR=build-x JOBS=2 bash scripts/bench.sh
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

bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build-bench}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null

# Every target whose name ends in _bench.
mapfile -t available < <(cmake --build "$BUILD_DIR" --target help | grep -oE '[A-Za-z0-9_]+_bench$' | sort -u)
if ((${#available[@]} == 0)); then
  echo "bench.sh: no *_bench target in $BUILD_DIR" >&2
  exit 1
fi
if ((${#names[@]} == 0)); then
  names=("${available[@]}")
else
  for n in "${names[@]}"; do
    if ! printf '%s\n' "${available[@]}" | grep -qx "$n"; then
      echo "bench.sh: unknown benchmark '$n'; available: ${available[*]}" >&2
      exit 1
    fi
  done
fi

cmake --build "$BUILD_DIR" -j"$JOBS" --target "${names[@]}"

failed=()
for n in "${names[@]}"; do
  exe="$BUILD_DIR/bench/$n"
  if [ ! -x "$exe" ]; then
    echo "bench.sh: $exe was not built" >&2
    failed+=("$n")
    continue
  fi
  echo
  echo "==================== $n ===================="
  if ! "$exe" ${bench_args[@]+"${bench_args[@]}"}; then
    echo "bench.sh: $n exited with an error" >&2
    failed+=("$n")
  fi
done

if ((${#failed[@]})); then
  echo "bench.sh: failed: ${failed[*]}" >&2
  exit 1
fi
