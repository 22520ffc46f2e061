#!/usr/bin/env bash
# A paper projection, not a measurement: the communication time of one KTO step for
# Llama-2-7B and LLaMA-30B (configs/llama-2-7b.yaml, configs/llama-30b.yaml with the
# architectures of tests/fixtures/hf_configs; bf16 compute, resharded units, grad_accum 1:
# micro_batch 1 per GPU and global batch = GPUs) on N nodes of 8 GPUs, full sharding
# (dist.shard_group: world) against hybrid (node). The bytes per rank and link are kto-train
# --dry-run's (the formula fsdp::step_collective_bytes, which tests/mpi/test_fsdp.cpp checks
# against what runs count); the times divide them by stated per-GPU bus bandwidths (ring
# collectives, nccl-tests' busbw convention): a collective spanning nodes runs at the
# inter-node rate, one within a node at NVLink's. Overlap with compute is ignored.
#
#   bench/comm_projection.sh [--intra GBps] [--inter GBps,...] [--nodes N,...]
#
# Defaults: --intra 360 (H100 NVLink 4 all-gather busbw), --inter 45,11 (8 x 400 and
# 8 x 100 Gb/s NICs per node, ~90% of line rate), --nodes 2,4,16.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
intra=360 inter=45,11 node_list=2,4,16
while [[ $# -gt 0 ]]; do
  case "$1" in
    --intra) intra=$2; shift 2 ;;
    --inter) inter=$2; shift 2 ;;
    --nodes) node_list=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "comm_projection.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/kto-train" ]] || { echo "comm_projection.sh: build kto-train first (scripts/build.sh)" >&2; exit 1; }
IFS=, read -r -a inters <<<"$inter"
IFS=, read -r -a nodes <<<"$node_list"
# "377 GiB" -> bytes
to_bytes() { awk -v n="$1" -v u="$2" 'BEGIN { m["B"]=1; m["KiB"]=2^10; m["MiB"]=2^20; m["GiB"]=2^30; m["TiB"]=2^40; printf "%.0f", n * m[u] }'; }
header="| model | nodes x GPUs | sharding | state / GPU | shard-group link / GPU | replica link / GPU |"
rule="|---|---|---|---|---|---|"
for b in "${inters[@]}"; do header+=" comm s @ ${b} GB/s |"; rule+="---|"; done
echo "intra-node ${intra} GB/s per GPU; inter-node ${inter} GB/s per GPU; bf16, resharded, grad_accum 1"
echo
echo "$header"
echo "$rule"
for model in llama-2-7b llama-30b; do
  for n in "${nodes[@]}"; do
    W=$((8 * n))
    for g in world node; do
      out=$("$bin/kto-train" --config "$root/configs/$model.yaml" --dry-run --world-size "$W" --ranks-per-host 8 \
        --set "model.path=$root/tests/fixtures/hf_configs/$model" --set model.dtype=bf16 \
        --set model.reshard_after_forward=true --set data.micro_batch=1 --set "data.global_batch=$W" \
        --set "dist.shard_group=$g")
      traffic=$(sed -n 's/^traffic: *//p' <<<"$out")
      state=$(sed -n 's/^memory: *~[^:]*: \([0-9.]* [KMGT]*i*B\) weights.*/\1/p' <<<"$out")
      read -r sn su _ <<<"$traffic"
      shard=$(to_bytes "$sn" "$su")
      replica=0 rtext="-"
      if [[ "$traffic" == *replicas* ]]; then
        rtext=$(sed -n 's/.*), \([0-9.]* [KMGT]*i*B\) across.*/\1/p' <<<"$traffic")
        read -r rn ru <<<"$rtext"
        replica=$(to_bytes "$rn" "$ru")
      fi
      row="| $model | $n x 8 | $( [[ $g == world ]] && echo full || echo hybrid ) | $state | $sn $su | $rtext |"
      for b in "${inters[@]}"; do
        row+=" $(awk -v s="$shard" -v r="$replica" -v g="$g" -v bi="$intra" -v be="$b" \
          'BEGIN { t = (g == "world" ? s / (be * 1e9) : s / (bi * 1e9) + r / (be * 1e9)); printf "%.2f", t }') |"
      done
      echo "$row"
    done
  done
done
