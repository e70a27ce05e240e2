#!/usr/bin/env bash
# Installs the Debian packages mpx needs to build, test and benchmark, if any is missing.
# Safe to run again: it does nothing when everything is there.
#   bash scripts/deps.sh           # build, test and run the samples
#   bash scripts/deps.sh --bench   # also what scripts/bench.sh needs for its chart (gnuplot)
set -euo pipefail
packages=(build-essential cmake libcaf-dev libcereal-dev libspdlog-dev libfmt-dev
          googletest libgtest-dev libgmock-dev libbenchmark-dev python3 procps nlohmann-json3-dev libssl-dev curl
          libasio-dev iproute2 openssl)
[ "${1:-}" = "--bench" ] && packages+=(gnuplot-nox)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "mpx: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
