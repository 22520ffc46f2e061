# launch/slurm/job.sh — the body the sbatch scripts in this directory share; they source it and
# call kto_slurm_job. Not a script of its own.
#
#   kto_slurm_job srun|mpirun CONFIG [kto-train arguments...]
#
# - The run directory is keyed to the job: $KTO_RUN_DIR, default
#   runs/<job name>-<job id> in the submit directory. A requeued job keeps its id, so it finds its own
#   checkpoints there and resumes from the newest (kto-train --resume auto).
# - srun style: srun --mpi=pmix starts one kto-train per task (PMIx wire-up, no mpirun).
#   mpirun style: launch/mpirun.sh starts mpirun inside the allocation (it reads the nodes and
#   slots from Slurm). Each rank takes the GPU of its local rank (or the one GPU it can see).
# - Preemption and time limits: Slurm's warning signal (the scripts ask for USR1 120 s ahead)
#   makes every rank finish its step, checkpoint and exit 75; this then requeues the job
#   (scontrol requeue), which starts again later and resumes. A signal that reaches only this
#   batch shell (--signal=B:USR1, scancel --batch) is passed on to the ranks the same way.
#
# Environment: KTO_ROOT (the kto checkout; default the submit directory), KTO_BUILD_DIR
# (default $KTO_ROOT/build), KTO_RUN_DIR (see above), KTO_REQUEUE=0 to exit instead of
# requeueing, OMP_NUM_THREADS (default: the task's CPUs, --cpus-per-task).

kto_slurm_job() {
  local style=${1:?kto_slurm_job: srun or mpirun}
  shift
  if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: sbatch $0 CONFIG [kto-train arguments...]   (see docs/launching.md)" >&2
    return 2
  fi
  local config=$1
  shift
  if [[ -z "${SLURM_JOB_ID:-}" ]]; then
    echo "[kto-slurm] not inside a Slurm job: submit with sbatch" >&2
    return 2
  fi
  local root=${KTO_ROOT:-$SLURM_SUBMIT_DIR}
  local bin=${KTO_BUILD_DIR:-$root/build}/bin/kto-train
  if [[ ! -x "$bin" ]]; then
    echo "[kto-slurm] $bin not found: submit from the kto checkout or set KTO_ROOT / KTO_BUILD_DIR" >&2
    return 2
  fi
  [[ "$config" == /* ]] || config=$SLURM_SUBMIT_DIR/$config
  if [[ ! -r "$config" ]]; then
    echo "[kto-slurm] config $config: not readable" >&2
    return 2
  fi
  local run_dir=${KTO_RUN_DIR:-$SLURM_SUBMIT_DIR/runs/${SLURM_JOB_NAME:-kto}-$SLURM_JOB_ID}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  echo "[kto-slurm] job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}), $style style, ${SLURM_NTASKS:-1} rank(s) on ${SLURM_JOB_NODELIST:-?}; run dir $run_dir"

  local launcher=()
  case "$style" in
    srun)
      launcher=(srun --mpi=pmix --kill-on-bad-exit=1)
      # srun no longer inherits --cpus-per-task from the batch allocation (Slurm >= 22.05).
      [[ -n "${SLURM_CPUS_PER_TASK:-}" ]] && launcher+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
      ;;
    mpirun) launcher=("$root/launch/mpirun.sh" --threads "$OMP_NUM_THREADS" --) ;;
    *)
      echo "[kto-slurm] unknown style '$style' (srun or mpirun)" >&2
      return 2
      ;;
  esac

  "${launcher[@]}" "$bin" --config "$config" --set "run.dir=$run_dir" --resume auto "$@" &
  local child=$!
  # A warning that reaches this shell goes on to the launcher (srun and mpirun.sh pass SIGUSR1 to
  # every rank). SIGTERM too: the ranks checkpoint before Slurm's KillWait runs out.
  trap "echo '[kto-slurm] SIGUSR1: asking the ranks to checkpoint and stop'; kill -USR1 $child 2>/dev/null" USR1
  trap "echo '[kto-slurm] SIGTERM: asking the ranks to checkpoint and stop'; kill -USR1 $child 2>/dev/null" TERM
  while kill -0 "$child" 2>/dev/null; do wait "$child" || true; done
  local status=0
  wait "$child" || status=$?
  trap - USR1 TERM

  if [[ $status -eq 75 ]]; then
    if [[ "${KTO_REQUEUE:-1}" != 0 ]]; then
      echo "[kto-slurm] stopped on request at a checkpoint; requeueing job $SLURM_JOB_ID to resume"
      # Slurm ends this script as it requeues the job: wait for that here.
      if scontrol requeue "$SLURM_JOB_ID"; then
        sleep 300
      fi
      echo "[kto-slurm] scontrol requeue failed; resume by hand: sbatch with KTO_RUN_DIR=$run_dir" >&2
      return 75
    fi
    echo "[kto-slurm] stopped on request at a checkpoint (KTO_REQUEUE=0: not requeueing); resume with KTO_RUN_DIR=$run_dir"
    return 75
  fi
  # Slurm 22.05's srun exits 0 even when the step failed to launch: trust kto-train's own word.
  if [[ $status -eq 0 ]] && ! grep -q '"state": "done"' "$run_dir/status.json" 2>/dev/null; then
    echo "[kto-slurm] the launcher exited 0 but kto-train did not finish ($run_dir/status.json); see the log above" >&2
    status=1
  fi
  if [[ $status -eq 0 ]]; then
    echo "[kto-slurm] done: $run_dir (report.html, metrics.jsonl, final/)"
  else
    echo "[kto-slurm] kto-train failed with status $status; see the log above. Resubmitting with KTO_RUN_DIR=$run_dir resumes from its last checkpoint" >&2
  fi
  return "$status"
}
