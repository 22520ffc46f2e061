#!/usr/bin/env bash
# The main job, for a newcomer on a fresh Debian 12 machine: installs missing packages, builds,
# and runs kto's model core:
#   1. checks kto against real Hugging Face transformers output (a bundled reference case);
#   2. initialises a tiny Llama from configs/tiny.yaml and computes its logits and the
#      completion log-probabilities that the KTO objective is built on.
# Outputs go to runs/demo/ (or $KTO_DEMO_DIR). Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${KTO_BUILD_DIR:-$root/build}
out=${KTO_DEMO_DIR:-$root/runs/demo}

"$root/scripts/install-deps.sh"
KTO_BUILD_DIR="$build_dir" "$root/scripts/build.sh" kto-ckpt
ckpt="$build_dir/bin/kto-ckpt"
ref="$root/tests/fixtures/hf_models/llama_gqa"
mkdir -p "$out"

echo
echo "== 1. kto vs Hugging Face transformers (Llama with GQA; reference logits from transformers 4.47)"
"$ckpt" forward --model "$ref" --ids "$ref/reference.safetensors" --out "$out/hf_check.safetensors"
"$ckpt" compare --a "$out/hf_check.safetensors" --b "$ref/reference.safetensors" --atol 1e-4 \
  --pair logits=logits_f32 --pair token_logprobs=token_logprobs_f32 \
  --pair completion_logprob_sum=completion_logprob_sum_f32

echo
echo "== 2. a tiny Llama from configs/tiny.yaml: random init, then logits and completion log-probs"
"$ckpt" init --config "$root/configs/tiny.yaml" --out "$out/tiny-llama"
for dtype in fp32 bf16; do
  "$ckpt" forward --model "$out/tiny-llama" --ids "$ref/reference.safetensors" \
    --out "$out/tiny_forward_$dtype.safetensors" --dtype "$dtype"
done
"$ckpt" show --file "$out/tiny_forward_fp32.safetensors"
"$ckpt" compare --a "$out/tiny_forward_bf16.safetensors" --b "$out/tiny_forward_fp32.safetensors"

echo
echo "[demo] done. Outputs in $out:"
echo "  hf_check.safetensors           our logits for the reference case (compare: kto-ckpt compare)"
echo "  tiny-llama/                    a Hugging Face directory (config.json + model.safetensors)"
echo "  tiny_forward_{fp32,bf16}.safetensors   logits, token_logprobs, completion_logprob_sum"
