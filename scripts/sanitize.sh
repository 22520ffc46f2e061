#!/usr/bin/env bash
# kto under AddressSanitizer + UndefinedBehaviorSanitizer (clang 14), in build-sanitize/.
#   scripts/sanitize.sh                 builds everything; runs the whole suite (every tier, the
#                                       fuzzers' short runs included) under the sanitizers
#   scripts/sanitize.sh fuzz [SECONDS]  builds the fuzz harnesses only; replays their seeds and
#                                       saved crash inputs, then fuzzes each SECONDS (default 20)
# Extra arguments after -- go to ctest. KTO_SANITIZE_BUILD_DIR overrides the build directory.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KTO_SANITIZE_BUILD_DIR:-$root/build-sanitize}
mode=suite seconds=20
if [[ "${1:-}" == fuzz ]]; then
  mode=fuzz
  shift
  [[ "${1:-}" =~ ^[0-9]+$ ]] && { seconds=$1; shift; }
fi
[[ "${1:-}" == -- ]] && shift
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 0
fi

"$root/scripts/install-deps.sh" --test
if [[ ! -f "$build_dir/build.ninja" ]]; then
  # Debug info for the reports, -O1 for speed; the NCCL backend is left out (no sanitizer sees
  # into a GPU, and it runs only there).
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DKTO_FUZZ=ON -DKTO_WITH_NCCL=OFF
fi
cmake -DKTO_FUZZ_SECONDS="$seconds" "$build_dir" >/dev/null
jobs=$(nproc)
mem_jobs=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 2500000 ))
(( mem_jobs >= 1 && mem_jobs < jobs )) && jobs=$mem_jobs
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Leaks: LibTorch, Open MPI and HDF5 keep allocations for the life of the process by design;
# kto's own leaks show in the fuzzers, which check every input (libFuzzer -detect_leaks).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# A use after free of a tensor would land in a cached block, out of ASan's sight: use
# LibTorch's own CPU allocator here (kto/model/cpu_allocator.h).
export KTO_CPU_ALLOCATOR=system
if [[ $mode == fuzz ]]; then
  cmake --build "$build_dir" -j "$jobs" --target kto_fuzzers
  ctest --test-dir "$build_dir" -L fuzz -j "$(nproc)" --output-on-failure "$@"
else
  cmake --build "$build_dir" -j "$jobs"
  ctest --test-dir "$build_dir" -j "$(nproc)" --output-on-failure "$@"
fi
