#!/usr/bin/env bash
# One rank throws while the others sit in a collective: every rank must exit (non-zero) and the
# log must name the failing rank, its host and the cause. A hang is caught by `timeout` (rc 124).
# Usage: abort_test.sh MPIEXEC NP PROBE
set -u
mpiexec=$1 np=$2 probe=$3
out=$(timeout 120 "$mpiexec" -np "$np" --oversubscribe "$probe" 2>&1)
rc=$?
echo "$out"
echo "exit status: $rc"
if [[ $rc -eq 0 ]]; then echo "FAIL: job exited 0 although a rank failed"; exit 1; fi
if [[ $rc -eq 124 ]]; then echo "FAIL: job hung (killed by timeout)"; exit 1; fi
last=$((np - 1))
if ! grep -q "rank $last of $np on" <<<"$out"; then echo "FAIL: failing rank not named"; exit 1; fi
if ! grep -q "simulated failure in the middle of a step" <<<"$out"; then echo "FAIL: cause not printed"; exit 1; fi
echo "PASS"
