#!/usr/bin/env bash
# The main job, for a newcomer on a fresh Debian 12 machine: installs missing packages, builds,
# and trains with KTO, end to end:
#   1. checks kto's forward pass against real Hugging Face transformers output;
#   2. prepares the bundled KTO demo set (300 rated conversations) with the bundled GPT-NeoX
#      tokenizer into an HDF5 dataset (train + eval split);
#   3. trains a tiny randomly initialised Llama on it with KTO for a couple of minutes on CPU,
#      on 2 ranks (launch/mpirun.sh; $KTO_DEMO_RANKS to change), sharded across them;
#   4. prints the final metrics and where everything is, including the HTML report.
# Outputs go to runs/demo/ (or $KTO_DEMO_DIR). Safe to run again (it starts over).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KTO_BUILD_DIR:-$root/build}
out=${KTO_DEMO_DIR:-$root/runs/demo}
ranks=${KTO_DEMO_RANKS:-2}

"$root/scripts/install-deps.sh"
KTO_BUILD_DIR="$build_dir" "$root/scripts/build.sh" kto-ckpt kto-data kto-train kto-report
bin="$build_dir/bin"
ref="$root/tests/fixtures/hf_models/llama_gqa"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$out"
cd "$root"

echo
echo "== 1. kto's forward pass vs Hugging Face transformers (bundled reference case)"
"$bin/kto-ckpt" forward --model "$ref" --ids "$ref/reference.safetensors" --out "$out/hf_check.safetensors" >/dev/null
"$bin/kto-ckpt" compare --a "$out/hf_check.safetensors" --b "$ref/reference.safetensors" --atol 1e-4 \
  --pair logits=logits_f32 --pair completion_logprob_sum=completion_logprob_sum_f32

echo
echo "== 2. prepare the KTO demo set with the GPT-NeoX tokenizer"
"$bin/kto-data" prepare --input tests/fixtures/data/kto/kto_en_demo.json \
  --tokenizer tests/fixtures/tokenizers/gpt-neox-20b/tokenizer.json \
  --out "$out/data" --max-length 128 --max-prompt-length 64 --eval-fraction 0.1 --seed 1 --overwrite

echo
echo "== 3. train a tiny Llama with KTO (configs/demo.yaml) on $ranks rank(s)"
rm -rf "$out/train"
KTO_BUILD_DIR="$build_dir" "$root/launch/mpirun.sh" --ranks "$ranks" -- "$bin/kto-train" --config configs/demo.yaml \
  --set "data.train=[$out/data/train.h5]" --set "data.eval=[$out/data/eval.h5]" --set "run.dir=$out/train"

echo
echo "== 4. results"
/usr/bin/env python3 - "$out/train/metrics.jsonl" <<'PY' || tail -n 3 "$out/train/metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if r.get("split") == "train"]
evals = [r for r in rows if r.get("split") == "eval"]
first, last = train[0], train[-1]
print(f"steps: {len(train)}; loss {first['loss']:.4f} -> {last['loss']:.4f}; "
      f"{last.get('tokens_per_s', 0):.0f} tokens/s")
for e in evals:
    print(f"eval @ step {int(e['step'])}: loss {e['eval/loss']:.4f}, "
          f"balanced accuracy {e.get('eval/balanced_accuracy', float('nan')):.3f}, "
          f"AUC {e.get('eval/auc', float('nan')):.3f}, "
          f"rewards desirable {e.get('eval/rewards/desirable', float('nan')):+.4f} / "
          f"undesirable {e.get('eval/rewards/undesirable', float('nan')):+.4f}")
PY
echo
echo "[demo] done. Outputs in $out:"
echo "  data/                 the tokenized dataset (train.h5, eval.h5, summary.json)"
echo "  train/metrics.jsonl   one line per step (loss, kl, rewards per class, grad norm, tokens/s, MFU)"
echo "  train/config.yaml     the resolved config (configs/, segments.jsonl: every segment of the run)"
echo "  train/final/          the trained policy as a Hugging Face directory"
echo "  train/report.html     charts of the run (loss, kl, rewards, accuracy, ...) and its facts;"
echo "                        open it in a browser, or rebuild it with: $bin/kto-report $out/train"
