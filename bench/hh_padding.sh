#!/usr/bin/env bash
# Full KTO steps on real feedback data: the bundled Anthropic HH-RLHF harmless-base test set,
# prepared with the bundled GPT-NeoX tokenizer (--max-length 1024), through kto-train, in four
# configurations alternated in one run: padded microbatches in the shuffled order, padded and
# length-grouped (data.group_by_length), packed (data.layout: packed) and packed with shared
# prompts (data.layout: shared_prompts, the default); the packed runs see the same examples as
# the padded one. Fixed random Llama (hidden 512, 4 layers, 8/4 heads, ffn 1360, vocab 50304),
# micro_batch 8, fp32. Prints per run the padding share of computed positions (target + KL
# batches), real tokens/s (median step), executed GFLOP per step (mean) and peak RSS, and the
# tokens/s and FLOP ratios.
#
#   bench/hh_padding.sh [--rounds N] [--steps N] [--threads N] [--hidden C] [--layers L] [--no-grouped]
#   (--no-grouped skips the padded + length-grouped runs)
#
# Run nothing else meanwhile.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
rounds=2 steps=6 threads=1 hidden=512 layers=4 grouped=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --hidden) hidden=$2; shift 2 ;;
    --layers) layers=$2; shift 2 ;;
    --no-grouped) grouped=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "hh_padding.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/kto-train" && -x "$bin/kto-data" ]] || { echo "hh_padding.sh: build first (scripts/build.sh)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/kto-data" prepare --input "$root/tests/fixtures/data/hh-rlhf/harmless-base/test.jsonl.gz" \
  --tokenizer "$root/tests/fixtures/tokenizers/gpt-neox-20b/tokenizer.json" --out "$work/data" \
  --max-length 1024 >/dev/null 2>&1
heads=$((hidden / 64)) ffn=$((hidden * 8 / 3 / 16 * 16))
echo "model: llama, hidden $hidden, $layers layers, $heads/$((heads / 2)) heads, ffn $ffn, vocab 50304, kept units (reshard_after_forward: false)"
run() {  # $1: layout, $2: true|false (group_by_length) -> "padding tokens/s gflop rss"
  cat >"$work/cfg.yaml" <<CFG
model:
  architecture: {arch: llama, vocab_size: 50304, hidden_size: $hidden, intermediate_size: $ffn, num_hidden_layers: $layers, num_attention_heads: $heads, num_key_value_heads: $((heads / 2)), max_position_embeddings: 1024}
  reshard_after_forward: false
data: {train: [$work/data/train.h5], micro_batch: 8, layout: $1, group_by_length: $2}
train: {steps: $((steps + 1)), log_every: 1000, export_final: false}
run: {dir: $work/run, threads: $threads}
CFG
  rm -rf "$work/run"
  "$bin/kto-train" --config "$work/cfg.yaml" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  /usr/bin/python3 - "$work/run/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"split": "train"' in l or '"split":"train"' in l][1:]
tok = statistics.median(r["tokens"] / r["step_seconds"] for r in rows)
print("%.3f %.1f %.1f %.0f" % (statistics.mean(r["padding"] for r in rows), tok,
                               statistics.mean(r["executed_flops"] for r in rows) / 1e9,
                               max(r["peak_rss_mib"] for r in rows)))
PY
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); HH-RLHF harmless test (4614 examples), hidden $hidden, $layers layers, micro_batch 8, fp32, $threads thread(s), $steps steps per run after 1"
echo "per run: padding share, real tokens/s, executed GFLOP/step, peak RSS MiB"
printf '%-5s %-26s %-26s %-26s %-26s %s\n' round "padded" "padded+grouped" "packed" "shared_prompts" \
  "tok/s vs padded: grouped packed shared; GFLOP packed/shared"
for ((r = 1; r <= rounds; r++)); do
  read -r pp pt pf pr < <(run padded false)
  gp=- gt=0 gf=- gr=-
  [[ $grouped == 1 ]] && read -r gp gt gf gr < <(run padded true)
  read -r kp kt kf kr < <(run packed false)
  read -r sp st sf sr < <(run shared_prompts false)
  printf '%-5s %-26s %-26s %-26s %-26s %s\n' "$r" "$pp $pt $pf $pr" "$gp $gt $gf $gr" "$kp $kt $kf $kr" \
    "$sp $st $sf $sr" "$(ratio "$gt" "$pt") $(ratio "$kt" "$pt") $(ratio "$st" "$pt"); $(ratio "$kf" "$sf")"
done
