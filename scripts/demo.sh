#!/usr/bin/env bash
# The demo: installs what is missing, builds, runs samples/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target demo >/dev/null
exec "$BUILD_DIR/samples/demo" "$@"
