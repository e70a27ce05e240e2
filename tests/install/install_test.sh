#!/usr/bin/env bash
# Installs the built mpx into a temporary prefix, builds tests/install/consumer
# against it with find_package(mpx), and runs the consumer.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/tests/install/consumer" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
output=$("$work/build/consumer")
echo "$output"
[ "$output" = "consumer: child exitcode 7, installed, actor sum 3" ]
