#!/usr/bin/env bash
# Generation throughput, KV cache against recomputing every whole sequence at each step
# (kto-ckpt generate --no-cache): a random Llama (hidden 512, 4 layers, 8/4 heads, ffn 1376,
# vocab 32000), prompts of 32 token ids, 128 new tokens each (greedy, no EOS), fp32, 1 thread,
# batch 1 and batch 8. Prints new tokens per second of each, alternated over rounds, and the
# ratio cached / recomputed.
#
#   bench/generate.sh [--rounds N] [--new N] [--threads N]
#
# Run nothing else meanwhile.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
rounds=2 new=128 threads=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --new) new=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "generate.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/kto-ckpt" ]] || { echo "generate.sh: build kto-ckpt first (scripts/build.sh)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/model.yaml" <<YAML
model:
  architecture: {arch: llama, vocab_size: 32000, hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 4,
                 num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 512}
data:
  train: [unused.h5]
YAML
"$bin/kto-ckpt" init --config "$work/model.yaml" --out "$work/model" >/dev/null 2>&1
/usr/bin/python3 - "$work" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1] + "/prompts.jsonl", "w") as f:
    for i in range(8):
        f.write(json.dumps({"prompt_ids": [random.randrange(1, 32000) for _ in range(32)]}) + "\n")
PY
head -1 "$work/prompts.jsonl" >"$work/one.jsonl"
run() {  # run PROMPTS BATCH [--no-cache]: new tokens per second of generation (its batch's figure)
  "$bin/kto-ckpt" generate --model "$work/model" --prompts "$1" --batch "$2" --max-new-tokens "$new" \
    --greedy --eos-id -1 --threads "$threads" --out "$work/out.jsonl" "${@:3}" >/dev/null 2>&1
  /usr/bin/python3 -c "import json; print('%.1f' % json.loads(open('$work/out.jsonl').readline())['tokens_per_s'])"
}
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $threads thread(s), fp32, prompts of 32 tokens, $new new tokens each, greedy; generation time only (tokens_per_s of the batch)"
printf '%-6s %-6s %-16s %-16s %s\n' round batch "cached tok/s" "no-cache tok/s" "ratio"
for ((r = 1; r <= rounds; r++)); do
  for b in 1 8; do
    prompts=$work/prompts.jsonl
    (( b == 1 )) && prompts=$work/one.jsonl
    c=$(run "$prompts" "$b")
    u=$(run "$prompts" "$b" --no-cache)
    printf '%-6s %-6s %-16s %-16s %s\n' "$r" "$b" "$c" "$u" "$(awk -v a="$c" -v b="$u" 'BEGIN { printf "%.2f", a / b }')"
  done
done
