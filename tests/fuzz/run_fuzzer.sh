#!/usr/bin/env bash
# Runs one libFuzzer harness the way ctest and scripts/sanitize.sh do.
#   run_fuzzer.sh BINARY SOURCE_DIR BUILD_DIR replay    every seed and saved crash input, once
#   run_fuzzer.sh BINARY SOURCE_DIR BUILD_DIR SECONDS   mutation for SECONDS (then the stats)
# Extra arguments go to libFuzzer (e.g. -jobs=2, -dict=FILE).
set -euo pipefail
binary=$1 src=$2 build=$3 mode=$4
shift 4
name=$(basename "$binary")
inputs=("$src/seeds/$name")
[[ -d "$src/crashes/$name" ]] && inputs+=("$src/crashes/$name")
artifacts="$build/artifacts/$name"
mkdir -p "$artifacts"
# Leaks count here (libFuzzer checks each input), unlike in the rest of the sanitizer suite.
# An allocation the machine cannot hold returns null, as glibc's malloc does outside ASan:
# libhdf5 then fails cleanly on a corrupt size; in kto's code std::bad_alloc escapes the
# harness (not a kto::Error) and is a finding, and -malloc_limit_mb catches the large ones
# that do succeed.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:allocator_may_return_null=1
export LSAN_OPTIONS=suppressions=$src/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
limits=(-timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=2560 "-artifact_prefix=$artifacts/")
if [[ "$mode" == replay ]]; then
  # Files, not directories: libFuzzer runs each once and writes nothing into the source tree.
  mapfile -t files < <(find "${inputs[@]}" -type f ! -name README.md | sort)
  echo "[fuzz] $name: replaying ${#files[@]} inputs"
  exec "$binary" "${limits[@]}" "$@" "${files[@]}"
fi
corpus="$build/corpus/$name"  # what the search finds; kept between runs, never in the sources
mkdir -p "$corpus"
exec "$binary" "${limits[@]}" -max_total_time="$mode" -print_final_stats=1 "$@" "$corpus" "${inputs[@]}"
