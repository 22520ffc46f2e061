#!/usr/bin/env bash
# Configures (once) and builds kto. Usage: scripts/build.sh [ninja targets...]
# KTO_BUILD_DIR (default: build/) and KTO_BUILD_TYPE (default: Release) may be set.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KTO_BUILD_DIR:-$root/build}
build_type=${KTO_BUILD_TYPE:-Release}

if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type"
fi
# One compile job per core, but never more than memory allows (~2 GB per LibTorch TU).
jobs=$(nproc)
mem_jobs=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 2000000 ))
(( mem_jobs >= 1 && mem_jobs < jobs )) && jobs=$mem_jobs
cmake --build "$build_dir" -j "$jobs" ${1:+--target "$@"}
echo "[build] binaries in $build_dir/bin"
