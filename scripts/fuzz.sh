#!/usr/bin/env bash
# Fuzzes with libFuzzer (clang, ASan + UBSan) for a bounded time, per target:
#   decode   mpx::decode of arbitrary bytes as every fuzzed type
#   manager  the Manager server's request path (fuzz/manager_request_fuzz.cpp):
#            raw bytes as a request, and valid envelopes with fuzzed arguments
#   bash scripts/fuzz.sh              # both, 600 s each
#   bash scripts/fuzz.sh 60           # both, 60 s each
#   bash scripts/fuzz.sh 60 manager   # one target
#   FUZZ_JOBS=2 bash scripts/fuzz.sh 3600 decode
# Builds outside CMake into build-fuzz/ (override with FUZZ_DIR), regenerates
# the seed corpus from valid encodings, keeps the growing corpus in
# build-fuzz/corpus and writes crashes to build-fuzz/artifacts/, then replays
# the corpus with corpus_stats (which DecodeError kinds it reaches). Exit code:
# 0 when nothing was found, non-zero otherwise. Replay a finding with
# build-fuzz/decode_fuzz build-fuzz/artifacts/<file>. The manager target is
# built by CMake (MPX_BUILD_FUZZ) in build-fuzz/cmake, keeps its corpus in
# build-fuzz/manager-corpus and its findings in build-fuzz/manager-artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=${1:-600}
TARGET=${2:-all}
case "$TARGET" in
  decode | manager | all) ;;
  *) echo "usage: $0 [seconds] [decode|manager|all]" >&2; exit 2 ;;
esac
FUZZ_DIR=${FUZZ_DIR:-build-fuzz}
JOBS=${FUZZ_JOBS:-1}
CXX=${FUZZ_CXX:-clang++}
mkdir -p "$FUZZ_DIR"/{seeds,corpus,artifacts,obj}

fuzz_decode() {
  common=(-std=c++20 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Iserialization/include -Ifuzz)
  sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=all)

  # The library sources, instrumented for coverage.
  objects=()
  for src in serialization/src/*.cpp; do
    obj="$FUZZ_DIR/obj/$(basename "${src%.cpp}").o"
    "$CXX" "${common[@]}" "${sanitize[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
    objects+=("$obj")
  done
  "$CXX" "${common[@]}" "${sanitize[@]}" -fsanitize=fuzzer fuzz/decode_fuzz.cpp "${objects[@]}" -o "$FUZZ_DIR/decode_fuzz"
  "$CXX" "${common[@]}" "${sanitize[@]}" fuzz/make_seed_corpus.cpp "${objects[@]}" -o "$FUZZ_DIR/make_seed_corpus"
  "$CXX" "${common[@]}" "${sanitize[@]}" fuzz/corpus_stats.cpp "${objects[@]}" -o "$FUZZ_DIR/corpus_stats"

  rm -f "$FUZZ_DIR"/seeds/*
  "$FUZZ_DIR/make_seed_corpus" "$FUZZ_DIR/seeds"

  cd "$FUZZ_DIR"
  rm -f fuzz-*.log
  set +e
  echo "fuzzing for ${SECONDS_TO_RUN} s with ${JOBS} job(s); progress in $FUZZ_DIR/fuzz-0.log"
  ./decode_fuzz corpus seeds \
    -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=8192 -timeout=10 \
    -jobs="$JOBS" -workers="$JOBS" -artifact_prefix=artifacts/ -print_final_stats=1 >fuzz-main.log 2>&1
  status=$?
  set -e
  for log in fuzz-[0-9]*.log; do
    [ -f "$log" ] || continue
    echo "== $log: first and last progress lines, findings, final stats"
    awk '/^#[0-9]+/ { if (!first) first = $0; last = $0 } END { print first; print last }' "$log"
    grep -E 'ERROR|SUMMARY|Test unit written|deadly signal|out-of-memory|malloc\(' "$log" || echo "(no findings in $log)"
    grep -E '^stat::' "$log" || true
  done
  echo "corpus: $(ls corpus | wc -l) inputs; artifacts: $(ls artifacts | wc -l)"
  ls -l artifacts
  echo "== outcomes of the corpus, per type and mode (every DecodeError kind should appear)"
  ./corpus_stats corpus seeds
  return $status
}

fuzz_manager() {
  cmake -S . -B "$FUZZ_DIR/cmake" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Debug \
    -DMPX_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" -DMPX_BUILD_FUZZ=ON \
    -DMPX_BUILD_TESTS=OFF -DMPX_BUILD_SAMPLES=OFF -DMPX_BUILD_BENCH=OFF >/dev/null
  cmake --build "$FUZZ_DIR/cmake" -j"$(nproc)" --target manager_request_fuzz
  mkdir -p "$FUZZ_DIR"/manager-corpus "$FUZZ_DIR"/manager-artifacts
  (
    cd "$FUZZ_DIR"
    set +e
    echo "fuzzing the manager's request path for ${SECONDS_TO_RUN} s; progress in $FUZZ_DIR/manager-fuzz.log"
    ./cmake/fuzz/manager_request_fuzz manager-corpus -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=2048 \
      -malloc_limit_mb=2048 -max_len=4096 -timeout=10 -artifact_prefix=manager-artifacts/ -print_final_stats=1 \
      >manager-fuzz.log 2>&1
    status=$?
    awk '/^#[0-9]+/ { if (!first) first = $0; last = $0 } END { print first; print last }' manager-fuzz.log
    grep -E 'ERROR|SUMMARY|Test unit written|deadly signal|out-of-memory|malloc\(' manager-fuzz.log ||
      echo "(no findings in manager-fuzz.log)"
    grep -E '^stat::' manager-fuzz.log || true
    echo "manager corpus: $(ls manager-corpus | wc -l) inputs; artifacts: $(ls manager-artifacts | wc -l)"
    exit $status
  )
}

# Each target in a subshell with errexit on (a build failure stops it), the
# next target runs whatever the first found.
overall=0
for t in decode manager; do
  [ "$TARGET" = "$t" ] || [ "$TARGET" = all ] || continue
  set +e
  (
    set -e
    "fuzz_$t"
  )
  status=$?
  set -e
  [ $status -eq 0 ] || overall=1
done
exit $overall
