#!/usr/bin/env bash
# launch/mpirun.sh — runs kto-train (or any kto program) under Open MPI's mpirun with the
# defaults a training job wants:
#
#   launch/mpirun.sh [options] [--] [PROGRAM] ARGS...
#   launch/mpirun.sh --config configs/llama-2-7b.yaml                 # one node, one rank per GPU
#   launch/mpirun.sh --hostfile hosts -n 16 -- --config configs/llama-2-13b.yaml
#
# PROGRAM defaults to kto-train from the build (KTO_BUILD_DIR, default build/); when the first
# argument starts with '-' and is not an option below, everything is passed to kto-train.
#
# Options:
#   -n, --ranks N       number of ranks. Default: in a Slurm allocation SLURM_NTASKS; else the
#                       GPUs on the listed hosts (one rank per GPU, GPU = local rank); else 1.
#   --per-node N        ranks per node. Default: in Slurm the allocation's tasks per node; with
#                       --hostfile or --host the hosts' slots (the smallest); else GPUs per node
#                       (nvidia-smi -L on this host), else all ranks on one node.
#   --threads N         CPU threads per rank (OMP_NUM_THREADS and kto's LibTorch pool).
#                       Default: this node's cores / ranks per node, at least 1.
#   --bind core|none    pin each rank to its own N cores (core, the default when they fit) or
#                       let the OS schedule (none; the default when ranks x threads exceed the
#                       cores, which on this host alone also allows oversubscription; hosts
#                       from --hostfile/--host take only their slots).
#   --hostfile FILE     Open MPI hostfile (one "host slots=N" per line); ignored in Slurm.
#   -H, --host LIST     host list, host1:slots,host2:slots (mpirun --host); ignored in Slurm.
#   -x, --env NAME      also pass environment variable NAME to the ranks (repeatable). Always
#                       passed: PATH, LD_LIBRARY_PATH, OMP_NUM_THREADS and every KTO_*,
#                       NCCL_*, CUDA_*, UCX_*, HF_*, SLURM_* and OMPI_ALLOW_* variable set here.
#   --mpirun-arg ARG    extra argument for mpirun itself (repeatable), e.g. --mpirun-arg=--tag-output
#   --dry-run           print the mpirun command and exit
#   -h, --help          this text
#
# Environment defaults (each kept if already set): NCCL_DEBUG=WARN (NCCL says why it failed),
# OMP_NUM_THREADS from --threads.
#
# Signals: SIGUSR1 or SIGTERM to this script, or a first Ctrl-C, ask every rank to finish its
# step, checkpoint and exit with status 75 (the next run resumes); a second Ctrl-C stops mpirun
# at once. (mpirun itself would kill the ranks on SIGTERM/SIGINT, so it runs in a session of its
# own and only hears the graceful SIGUSR1 from here.) The exit status is mpirun's: 0, 75 when
# stopped on request, the failing rank's status otherwise.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "launch/mpirun.sh: $*" >&2; exit 2; }

ranks="" per_node="" threads="" bind="" hostfile="" hosts="" dry_run=0
slots=()
extra_env=() mpirun_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n | --ranks) ranks=${2:?$1 needs a value}; shift 2 ;;
    --ranks=*) ranks=${1#*=}; shift ;;
    --per-node) per_node=${2:?$1 needs a value}; shift 2 ;;
    --per-node=*) per_node=${1#*=}; shift ;;
    --threads) threads=${2:?$1 needs a value}; shift 2 ;;
    --threads=*) threads=${1#*=}; shift ;;
    --bind) bind=${2:?$1 needs a value}; shift 2 ;;
    --bind=*) bind=${1#*=}; shift ;;
    --hostfile) hostfile=${2:?$1 needs a value}; shift 2 ;;
    --hostfile=*) hostfile=${1#*=}; shift ;;
    -H | --host) hosts=${2:?$1 needs a value}; shift 2 ;;
    --host=*) hosts=${1#*=}; shift ;;
    -x | --env) extra_env+=("${2:?$1 needs a value}"); shift 2 ;;
    --env=*) extra_env+=("${1#*=}"); shift ;;
    --mpirun-arg) mpirun_args+=("${2:?$1 needs a value}"); shift 2 ;;
    --mpirun-arg=*) mpirun_args+=("${1#*=}"); shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done

# The program: an explicit path or command, or kto-train from the build.
program=()
if [[ $# -gt 0 && "$1" != -* ]]; then
  program=("$1")
  shift
else
  program=("${KTO_BUILD_DIR:-$root/build}/bin/kto-train")
fi
if [[ $dry_run -eq 0 ]] && ! command -v "${program[0]}" >/dev/null; then
  die "${program[0]}: not found (build first: scripts/build.sh, or name the program)"
fi
command -v mpirun >/dev/null || die "mpirun not found (install Open MPI: scripts/install-deps.sh)"

for v in "$ranks" "$per_node" "$threads"; do
  [[ -z "$v" || "$v" =~ ^[1-9][0-9]*$ ]] || die "'$v' is not a positive integer"
done
[[ -z "$bind" || "$bind" == core || "$bind" == none ]] || die "--bind $bind: use core or none"
[[ -z "$hostfile" || -r "$hostfile" ]] || die "--hostfile $hostfile: not readable"

local_gpus=0
if command -v nvidia-smi >/dev/null; then
  local_gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
in_slurm=0
[[ -n "${SLURM_JOB_ID:-}" && -n "${SLURM_NTASKS:-}" ]] && in_slurm=1

if [[ $in_slurm -eq 1 ]]; then
  # mpirun reads the allocation (nodes, slots) from Slurm and starts its daemons with srun.
  ranks=${ranks:-$SLURM_NTASKS}
  if [[ -z "$per_node" ]]; then
    nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    per_node=$(((ranks + nodes - 1) / nodes))
  fi
  hostfile="" hosts=""
else
  # The slots of each host the hostfile ("host slots=N") or the host list ("host:N") names (1
  # where none is given, as Open MPI counts): they say how many ranks each node takes.
  slots=()
  if [[ -n "$hostfile" ]]; then
    mapfile -t slots < <(awk '!/^[[:space:]]*(#|$)/ { s = 1; for (i = 2; i <= NF; i++) if ($i ~ /^(slots|max_slots)=/) { split($i, a, "="); s = a[2]; break } print s }' "$hostfile")
  elif [[ -n "$hosts" ]]; then
    mapfile -t slots < <(tr ',' '\n' <<<"$hosts" | awk -F: 'NF { print (NF > 1 ? $2 : 1) }')
  fi
  if [[ -z "$per_node" ]]; then
    if [[ ${#slots[@]} -gt 0 ]]; then
      per_node=$(printf '%s\n' "${slots[@]}" | sort -n | head -1)  # the smallest node's slots
    elif [[ $local_gpus -gt 0 ]]; then per_node=$local_gpus; else per_node=${ranks:-1}; fi
  fi
  if [[ -z "$ranks" ]]; then
    node_count=1
    [[ ${#slots[@]} -gt 0 ]] && node_count=${#slots[@]}
    ranks=$((per_node * node_count))
  fi
fi
(( per_node > ranks )) && per_node=$ranks

cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # plain nproc honours OMP_NUM_THREADS
if [[ $in_slurm -eq 1 && -n "${SLURM_CPUS_ON_NODE:-}" ]]; then cores=$SLURM_CPUS_ON_NODE; fi
if [[ -z "$threads" ]]; then
  threads=$((cores / per_node))
  (( threads < 1 )) && threads=1
fi
if [[ -z "$bind" ]]; then
  if (( per_node * threads <= cores )); then bind=core; else bind=none; fi
fi

export OMP_NUM_THREADS=$threads
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

cmd=(mpirun -np "$ranks" --stdin none)
if [[ "$bind" == core ]]; then
  cmd+=(--map-by "ppr:$per_node:node:PE=$threads" --bind-to core)
elif [[ ${#slots[@]} -gt 0 ]]; then
  # Other hosts' slots are honoured as the hostfile gives them (their cores are theirs to count).
  cmd+=(--map-by "ppr:$per_node:node" --bind-to none)
else
  cmd+=(--map-by "ppr:$per_node:node" --bind-to none --oversubscribe)
fi
[[ -n "$hostfile" ]] && cmd+=(--hostfile "$hostfile")
[[ -n "$hosts" ]] && cmd+=(--host "$hosts")
# Environment passed to every rank (on this node mpirun's environment is inherited anyway;
# -x makes remote nodes match).
names=(PATH LD_LIBRARY_PATH OMP_NUM_THREADS)
while IFS= read -r name; do
  [[ "$name" =~ ^(KTO_|NCCL_|CUDA_|UCX_|HF_|SLURM_|OMPI_ALLOW_) ]] && names+=("$name")
done < <(compgen -e | sort)
for name in "${extra_env[@]+"${extra_env[@]}"}"; do
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env $name: not a variable name"
  names+=("$name")
done
declare -A seen=()
for name in "${names[@]}"; do
  [[ -n "${seen[$name]:-}" || -z "${!name+set}" ]] && continue
  seen[$name]=1
  cmd+=(-x "$name")
done
cmd+=("${mpirun_args[@]+"${mpirun_args[@]}"}" "${program[@]}" "$@")

echo "[mpirun.sh] $ranks rank(s), $per_node per node, $threads thread(s) each, bind $bind" >&2
if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi

# mpirun in a session of its own: a terminal's Ctrl-C reaches only this script, which turns the
# first one into the graceful SIGUSR1 (mpirun forwards it to every rank).
setsid "${cmd[@]}" &
child=$!
interrupts=0
graceful() {
  echo "[mpirun.sh] $1: asking every rank to checkpoint and stop" >&2
  kill -USR1 "$child" 2>/dev/null || true
}
on_interrupt() {
  interrupts=$((interrupts + 1))
  if (( interrupts == 1 )); then
    graceful "Ctrl-C (again to stop at once)"
  else
    echo "[mpirun.sh] second Ctrl-C: stopping now" >&2
    kill -TERM "$child" 2>/dev/null || true
  fi
}
trap 'graceful SIGUSR1' USR1
trap 'graceful SIGTERM' TERM
trap on_interrupt INT
# wait returns early (status > 128) when a trapped signal arrives: wait again until mpirun has
# exited; bash keeps an exited child's status, so the last wait returns mpirun's own.
while kill -0 "$child" 2>/dev/null; do wait "$child" || true; done
status=0
wait "$child" || status=$?
exit "$status"
