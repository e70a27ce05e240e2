#!/usr/bin/env bash
# The whole test suite: installs what is missing, configures, builds, runs ctest.
#   bash scripts/test.sh                 # build/ , RelWithDebInfo
#   BUILD_DIR=build-x bash scripts/test.sh -R queue   # extra args go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -DMPX_WERROR=ON ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$JOBS"
cd "$BUILD_DIR"
ctest --output-on-failure -j"$JOBS" --timeout 900 "$@"
