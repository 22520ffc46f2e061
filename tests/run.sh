#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or an existing checkout:
# installs missing packages, builds, and runs every test (unit, multi-rank, end-to-end) with ctest.
# Extra arguments go to ctest, e.g. `tests/run.sh -L unit` or `tests/run.sh -R hf_reference`.
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
exit $status
