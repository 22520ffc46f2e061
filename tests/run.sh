#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or an existing checkout:
# installs missing packages, builds, and runs every test (unit, multi-rank, end-to-end) with ctest.
# Extra arguments go to ctest, e.g. `tests/run.sh -L unit` or `tests/run.sh -R hf_reference`;
# without any, the fuzzing tier runs after the suite (KTO_SKIP_FUZZ=1 leaves it out).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KTO_BUILD_DIR:-$root/build}

"$root/scripts/install-deps.sh" --test
KTO_BUILD_DIR="$build_dir" "$root/scripts/build.sh"

# Open MPI refuses to run as root unless told; the multi-rank tests oversubscribe small machines.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
status=0
ctest --test-dir "$build_dir" -j "$(nproc)" --output-on-failure "$@" || status=$?
echo "[tests] log: $build_dir/Testing/Temporary/LastTest.log"
# The fuzzing tier (tests/fuzz, a clang ASan+UBSan build in build-sanitize/): with a whole-suite
# run only, each harness replays its seeds and saved crashes, then fuzzes KTO_FUZZ_SECONDS.
if [[ $# -eq 0 && "${KTO_SKIP_FUZZ:-0}" != 1 ]]; then
  "$root/scripts/sanitize.sh" fuzz "${KTO_FUZZ_SECONDS:-20}" || status=$?
fi
exit $status
