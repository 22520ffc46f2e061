#!/usr/bin/env bash
# Data parallel across ranks against threads in one rank, on the same cores: `--ranks N` ranks
# of 1 thread (each with 1/N of the batch) alternated with one rank of N threads (the whole
# batch), on the block-dominated shape of compare_peer.sh (hidden 1024, 4 layers, 16/8 heads,
# ffn 2816, vocab 2048, seq 256, global batch 4). Prints every round's tokens/s for both and the
# range of the ratio ranks / threads (1.0: sharding costs nothing over threading).
#
#   bench/ranks_vs_threads.sh [--ranks N] [--rounds N] [--steps N] [--dtype fp32|bf16] [--reshard 0|1]
#
# Needs N cores and Open MPI (run as root, it sets OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
# Run nothing else meanwhile.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
ranks=2 rounds=3 steps=3 dtype=fp32 reshard=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ranks) ranks=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --reshard) reshard=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ranks_vs_threads.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/bench_kto_step" ]] || { echo "ranks_vs_threads.sh: build bench_kto_step first (scripts/build.sh bench_kto_step)" >&2; exit 1; }
(( 4 % ranks == 0 )) || { echo "ranks_vs_threads.sh: --ranks must divide the global batch of 4" >&2; exit 2; }
shape="--hidden 1024 --layers 4 --heads 16 --kv-heads 8 --ffn 2816 --vocab 2048 --seq 256"
common="$shape --steps $steps --warmup 1 --dtype $dtype --reshard $reshard"
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" | tail -1; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "machine: $cpu, $(nproc) cores; $dtype, reshard $reshard, global batch 4, $steps timed steps, $rounds round(s)"
printf '%-7s %-16s %-16s %s\n' round "$ranks ranks x 1" "1 rank x $ranks" "tokens/s ratio"
ratios=()
[[ $(id -u) == 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
err=$(mktemp) && trap 'rm -f "$err"' EXIT
for ((r = 1; r <= rounds; r++)); do
  d=$(mpirun -np "$ranks" --oversubscribe --bind-to core "$bin/bench_kto_step" $common --batch $((4 / ranks)) --threads 1 2>"$err" | tail -1 | field tokens_per_s) || true
  [[ -n "$d" ]] || { echo "ranks_vs_threads.sh: the $ranks-rank run printed no figures; its stderr:" >&2; tail -20 "$err" >&2; exit 1; }
  t=$("$bin/bench_kto_step" $common --batch 4 --threads "$ranks" 2>"$err" | tail -1 | field tokens_per_s) || true
  [[ -n "$t" ]] || { echo "ranks_vs_threads.sh: the 1-rank run printed no figures; its stderr:" >&2; tail -20 "$err" >&2; exit 1; }
  ratios+=("$(awk -v a="$d" -v b="$t" 'BEGIN { printf "%.2f", a / b }')")
  printf '%-7s %-16s %-16s %s\n' "$r" "$d" "$t" "${ratios[-1]}"
done
echo "ratio range: $(printf '%s\n' "${ratios[@]}" | sort -n | head -1)–$(printf '%s\n' "${ratios[@]}" | sort -n | tail -1)"
