#!/usr/bin/env bash
# bench_kto_step end to end on a tiny shape: one timed step plus a profiled one, its JSON line
# complete, and bench/op_profile.py's sum of the trace naming the matmuls. Keeps the bench and
# the profiling path from rotting; times nothing.
#   bench_smoke.sh BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$("$bin/bench_kto_step" --hidden 32 --layers 2 --heads 4 --kv-heads 2 --ffn 64 --vocab 97 --seq 16 \
  --batch 2 --steps 1 --warmup 0 --profile "$work/trace.json")
echo "$out"
for key in ms_per_step tokens_per_s model_gflops executed_vs_peak executed_vs_peak_after peak_gflops_after peak_rss_mib allocator_misses_per_step native_bf16; do
  grep -q "\"$key\": " <<<"$out" || { echo "bench_smoke: no $key in the bench's JSON" >&2; exit 1; }
done
sum=$(python3 "$src/bench/op_profile.py" "$work/trace.json" --top 40)
echo "$sum"
grep -q "aten::mm" <<<"$sum" || { echo "bench_smoke: the op profile has no aten::mm" >&2; exit 1; }

# --turns (bench/compare_peer.sh --paired): the bench computes only between a byte on GO and one
# on DONE — its set-up, each of 1 warm-up + 2 timed steps, its closing turn — and prints step_ms.
mkfifo "$work/go" "$work/done"
exec 3<>"$work/go" 4<>"$work/done"
"$bin/bench_kto_step" --hidden 32 --layers 2 --heads 4 --kv-heads 2 --ffn 64 --vocab 97 --seq 16 \
  --batch 2 --steps 2 --warmup 1 --turns "$work/go,$work/done" >"$work/turns.json" &
pid=$!
for ((i = 0; i < 5; i++)); do
  printf x >&3
  until read -r -n 1 -t 5 -u 4 _; do kill -0 "$pid" || { echo "bench_smoke: --turns run ended at turn $i" >&2; exit 1; }; done
done
for ((t = 0; t < 600 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); t++)); do sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill "$pid"; echo "bench_smoke: the --turns run did not end after its 5 turns" >&2; exit 1; }
wait "$pid"
cat "$work/turns.json"
grep -Eq '"step_ms": \[[0-9.]+, [0-9.]+\]' "$work/turns.json" || { echo "bench_smoke: no step_ms of 2 steps" >&2; exit 1; }
