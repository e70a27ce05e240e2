#!/usr/bin/env bash
# The demo: installs what is missing, builds, runs the log-analytics service
# (demo/log_analytics.cpp): a generated 1,000,000-line access log parsed by
# actors in cpu_count() worker processes under a supervisor tree, one worker
# SIGKILLed midway, the result checked against a sequential reference.
# Arguments go to the demo: --lines N, --input FILE, --no-chaos, --compare-python, --help.
# BUILD_DIR and JOBS choose the build tree and the parallelism of the build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
echo "building the demo in $BUILD_DIR/ ..." >&2
cmake -S . -B "$BUILD_DIR" >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-$(nproc)}" --target log_analytics >/dev/null
exec "$BUILD_DIR/demo/log_analytics" "$@"
