#!/usr/bin/env bash
# Builds and runs the test suite under sanitizers.
#   bash scripts/sanitize.sh            # both: ASan+UBSan, then TSan
#   bash scripts/sanitize.sh asan       # AddressSanitizer + UndefinedBehaviorSanitizer only
#   bash scripts/sanitize.sh tsan -R process   # ThreadSanitizer, extra args go to ctest
# Build trees: build-asan/ and build-tsan/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
which=${1:-all}
[ $# -gt 0 ] && shift
JOBS=${JOBS:-$(nproc)}

run() {
  local name=$1 flags=$2
  shift 2
  echo "=== $name: -fsanitize=$flags"
  cmake -S . -B "build-$name" -DCMAKE_BUILD_TYPE=Debug -DMPX_SANITIZE="$flags" -DMPX_BUILD_BENCH=OFF -DMPX_WERROR=ON >/dev/null
  cmake --build "build-$name" -j"$JOBS"
  # The install test rebuilds a consumer without sanitizer flags: it runs in the plain suite.
  (cd "build-$name" && ctest --output-on-failure -j"$JOBS" --timeout 1200 -LE install "$@")
}

# Options given in the environment come last and so win over these defaults.
# Suppressions (scripts/sanitizers/*.supp) cover only code the sanitizer
# cannot see into; docs/sanitizers.md says what and why.
supp=$PWD/scripts/sanitizers
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1:die_after_fork=0:suppressions=$supp/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
case "$which" in
  asan) run asan address,undefined "$@" ;;
  tsan) run tsan thread "$@" ;;
  all) run asan address,undefined "$@"; run tsan thread "$@" ;;
  *) echo "usage: $0 [asan|tsan|all] [ctest args]" >&2; exit 2 ;;
esac
