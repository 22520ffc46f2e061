#!/usr/bin/env bash
# Precomputed reference scores against the live reference: full KTO steps of bench_kto_step on
# the block-dominated shape of compare_peer.sh (hidden 1024, 4 layers, 16/8 heads, ffn 2816,
# vocab 2048, seq 256, batch 4; fp32; kept units), alternating a live reference
# (--precomputed 0) with scores written first by kto-train --score-reference's code path and no
# reference model (--precomputed 1). Prints per round the step time and peak RSS of both, the
# scoring throughput, the time ratio precomputed / live (8N against 12N FLOPs per token: 0.67
# ideal) and the RSS saved beside the reference's compute-dtype weights at this world size.
#
#   bench/precomputed.sh [--rounds N] [--steps N] [--threads N] [--ranks N]
#
# Run nothing else meanwhile.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
rounds=2 steps=3 threads=1 ranks=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "precomputed.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/bench_kto_step" ]] || { echo "precomputed.sh: build bench_kto_step first (scripts/build.sh)" >&2; exit 1; }
shape="--hidden 1024 --layers 4 --heads 16 --kv-heads 8 --ffn 2816 --vocab 2048 --seq 256 --batch 4"
common="$shape --steps $steps --warmup 1 --threads $threads --reshard 0"
launch=""
(( ranks > 1 )) && launch="mpirun -np $ranks --oversubscribe"
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" | tail -1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $ranks rank(s) x $threads thread(s), fp32, $steps timed steps after 1, $rounds round(s)"
printf '%-6s %-22s %-22s %-14s %-12s %s\n' round "live: ms/step RSS" "precomputed: ms RSS" "score tok/s" "time ratio" "RSS saved / reference MiB"
for ((r = 1; r <= rounds; r++)); do
  live=$($launch "$bin/bench_kto_step" $common --precomputed 0 2>/dev/null | tail -1)
  pre=$($launch "$bin/bench_kto_step" $common --precomputed 1 2>/dev/null | tail -1)
  lt=$(field ms_per_step <<<"$live") lr=$(field peak_rss_mib <<<"$live")
  pt=$(field ms_per_step <<<"$pre") pr=$(field peak_rss_mib <<<"$pre") st=$(field score_tokens_per_s <<<"$pre")
  ref=$(awk -v n="$(field params <<<"$live")" -v w="$ranks" 'BEGIN { printf "%.0f", n * 4 / w / 1048576 }')
  printf '%-6s %-22s %-22s %-14s %-12s %s\n' "$r" "$lt $lr" "$pt $pr" "$st" \
    "$(awk -v a="$pt" -v b="$lt" 'BEGIN { printf "%.3f", a / b }')" "$(awk -v a="$lr" -v b="$pr" 'BEGIN { printf "%.0f", a - b }') / $ref"
done
