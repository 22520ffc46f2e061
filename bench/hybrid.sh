#!/usr/bin/env bash
# Full vs hybrid sharding at 4 ranks, measured: KTO steps of bench_kto_step (Llama, hidden 512,
# 4 layers, 8/4 heads, ffn 1376, vocab 32000, seq 256, batch 2 per rank, fp32, 1 thread per
# rank, resharded units), alternating dist.shard_group world (one group of 4) and 2 (two groups
# of 2). Prints per round: time per step, peak RSS (the largest rank's), this rank's sharded
# state (fsdp::training_bytes_per_rank) and the bytes each rank sent per step on each link —
# counted by the run, beside fsdp::step_collective_bytes's formula (docs/distributed.md).
#
#   bench/hybrid.sh [--rounds N] [--steps N] [--two-nodes]
#
# --two-nodes runs the hybrid side as shard_group node on tests/multinode/two_nodes.sh's two
# network-namespace "nodes" (2 ranks each; root only), so its replica all-reduce crosses them.
# Run nothing else meanwhile: 4 ranks share this machine's cores.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${KTO_BUILD_DIR:-$root/build}/bin
rounds=2 steps=3 two_nodes=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --two-nodes) two_nodes=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "hybrid.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x "$bin/bench_kto_step" ]] || { echo "hybrid.sh: build bench_kto_step first (scripts/build.sh)" >&2; exit 1; }
export OMP_NUM_THREADS=1
common="--hidden 512 --layers 4 --heads 8 --kv-heads 4 --ffn 1376 --vocab 32000 --seq 256 --batch 2 \
--steps $steps --warmup 1 --threads 1 --reshard 1"
nodes=""
if (( two_nodes )); then
  nodes=$(mktemp -d)
  "$root/tests/multinode/two_nodes.sh" up "$nodes" >/dev/null
  trap '"$root/tests/multinode/two_nodes.sh" down "$nodes"; rm -rf "$nodes"' EXIT
fi
run() {  # run SHARD_GROUP: one bench_kto_step at 4 ranks, its JSON line
  if [[ -n "$nodes" && "$1" != world ]]; then
    "$root/tests/multinode/two_nodes.sh" run "$nodes" mpirun -np 4 --hostfile "$nodes/hosts" \
      -x OMP_NUM_THREADS "$bin/bench_kto_step" $common --shard-group node 2>/dev/null | tail -1
  else
    mpirun -np 4 --oversubscribe --bind-to none "$bin/bench_kto_step" $common --shard-group "$1" 2>/dev/null | tail -1
  fi
}
field() { sed -n "s/.*\"$1\": \"\{0,1\}\([0-9.a-z]*\).*/\1/p" | tail -1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(env -u OMP_NUM_THREADS nproc) cores; 4 ranks x 1 thread, fp32, resharded, $steps timed steps after 1, $rounds round(s)$( ((two_nodes)) && echo '; hybrid on two namespace nodes')"
printf '%-6s %-8s %-10s %-9s %-10s %-24s %s\n' round groups "ms/step" "RSS MiB" "state MiB" "shard link MiB (formula)" "replica link MiB (formula)"
for ((r = 1; r <= rounds; r++)); do
  for g in world 2; do
    line=$(run "$g")
    printf '%-6s %-8s %-10s %-9s %-10s %-24s %s\n' "$r" "$(field replicas <<<"$line")x$(field shard_size <<<"$line")" \
      "$(field ms_per_step <<<"$line")" "$(field peak_rss_mib <<<"$line")" "$(field state_mib_per_rank <<<"$line")" \
      "$(field shard_link_mib <<<"$line") ($(field shard_link_mib_formula <<<"$line"))" \
      "$(field replica_link_mib <<<"$line") ($(field replica_link_mib_formula <<<"$line"))"
  done
done
