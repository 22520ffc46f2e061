#!/usr/bin/env bash
# A real, private Slurm cluster for the tests — Debian's munged, slurmctld and slurmd, configured
# in a directory of their own and stopped by pid:
#   tests/slurm/cluster.sh start DIR [OWNER_PID [NODES_DIR]]
#       writes DIR/slurm.conf, starts the daemons, waits until the nodes are idle; then
#       `export SLURM_CONF=DIR/slurm.conf`. With OWNER_PID, a watchdog stops the cluster when
#       that process ends, however it ends (a test killed by its timeout leaves nothing behind).
#       With NODES_DIR (tests/multinode/two_nodes.sh up NODES_DIR), two nodes: slurmctld and the
#       first slurmd on node a, the second slurmd on node b; clients (sbatch, sinfo, scontrol)
#       then run on node a: `tests/multinode/two_nodes.sh on NODES_DIR a sbatch ...`.
#   tests/slurm/cluster.sh stop DIR
#       stops exactly the daemons `start` started (by pid), after cancelling any jobs
# Needs root (the daemons run as root here) and the slurm-wlm and munge packages
# (scripts/install-deps.sh). Exits 77 when they are missing, so a test can skip visibly.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
cmd=${1:-}
dir=${2:-}
owner=${3:-}
nodes_dir=${4:-}
case "$cmd" in
  -h | --help) usage; exit 0 ;;
  start | stop) [[ -n "$dir" ]] || { usage >&2; exit 2; } ;;
  *) usage >&2; exit 2 ;;
esac

stop_pid_file() {  # kills the process named in a pid file and waits (up to 10 s) for it to go
  local file=$1 pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file")
  [[ "$pid" == "$$" ]] && { rm -f "$file"; return 0; }  # the watchdog, stopping the cluster itself
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# on_node a|b COMMAND...: COMMAND on that node of a two-node cluster; on this host otherwise.
on_node() {
  local side=$1
  shift
  if [[ -n "$nodes_dir" ]]; then
    "$(dirname "$0")/../multinode/two_nodes.sh" on "$nodes_dir" "$side" "$@"
  else
    "$@"
  fi
}

if [[ "$cmd" == stop ]]; then
  [[ -f "$dir/nodes_dir" ]] && nodes_dir=$(cat "$dir/nodes_dir")
  # Jobs still running belong to slurmstepd processes slurmd started: cancel them first.
  if [[ -f "$dir/slurm.conf" && -f "$dir/slurmctld.pid" ]]; then
    SLURM_CONF="$dir/slurm.conf" on_node a timeout 10 scancel --full --quiet -u "$(id -un)" 2>/dev/null || true
    sleep 1
  fi
  stop_pid_file "$dir/watchdog.pid"
  stop_pid_file "$dir/slurmd.pid"
  stop_pid_file "$dir/slurmd-b.pid"
  stop_pid_file "$dir/slurmctld.pid"
  stop_pid_file "$dir/munged.pid"
  exit 0
fi

for exe in munged mungekey slurmctld slurmd sbatch scontrol sinfo; do
  if ! command -v "$exe" >/dev/null && [[ ! -x "/usr/sbin/$exe" ]]; then
    echo "[slurm] $exe not found: install slurm-wlm and munge (scripts/install-deps.sh)" >&2
    exit 77
  fi
done
if [[ $(id -u) -ne 0 ]]; then
  echo "[slurm] the private cluster runs its daemons as root; run as root" >&2
  exit 77
fi
export PATH="$PATH:/usr/sbin"

dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
chmod 700 "$dir"
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
host=$(hostname -s) addr=127.0.0.1
if [[ -n "$nodes_dir" ]]; then
  # shellcheck disable=SC1091
  source "$nodes_dir/names"
  echo "$nodes_dir" >"$dir/nodes_dir"
  host=$host_a addr=$addr_a
  mkdir -p "$dir/spool/$host_b"
fi
mkdir -p "$dir/spool/$host"
# The CPUs this process may use (nproc alone would honour OMP_NUM_THREADS).
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [[ "$slurmd_port" == "$ctld_port" ]]; do slurmd_port=$(free_port); done

cat >"$dir/slurm.conf" <<CONF
# Written by tests/slurm/cluster.sh: a private one-node cluster for kto's tests.
ClusterName=kto-test
SlurmctldHost=$host($addr)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job is held back (default 120 s) while slurmd forgets the
# credential of its last run; 10 s keeps the preemption test short.
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd-%n.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmdParameters=config_overrides
MailProg=/bin/true
$([[ -n "$nodes_dir" ]] && echo "TmpFS=$node_tmp")
$(if [[ -n "$nodes_dir" ]]; then
    echo "NodeName=$host_a NodeAddr=$addr_a CPUs=$cpus State=UNKNOWN"
    echo "NodeName=$host_b NodeAddr=$addr_b CPUs=$cpus State=UNKNOWN"
    echo "PartitionName=debug Nodes=$host_a,$host_b Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
  else
    echo "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN"
    echo "PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES"
  fi)
CONF

# munged: its own key, socket and pid file (--force: it refuses root otherwise).
mungekey --create --force --keyfile="$dir/munge/munge.key" >/dev/null 2>&1 ||
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 600 "$dir/munge/munge.key"
start_daemon() {  # start_daemon NAME COMMAND...: runs it in the foreground of a new session
  local name=$1
  shift
  setsid "$@" >"$dir/log/$name.out" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}
start_daemon munged munged --foreground --force --key-file="$dir/munge/munge.key" \
  --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
for _ in $(seq 100); do [[ -S "$dir/munge/munge.socket" ]] && break; sleep 0.1; done
[[ -S "$dir/munge/munge.socket" ]] || { echo "[slurm] munged did not start:" >&2; cat "$dir/log/munged.out" >&2; exit 1; }

export SLURM_CONF="$dir/slurm.conf"
# The daemons' command prefix on each node (setsid runs programs, not shell functions).
node_a=() node_b=()
if [[ -n "$nodes_dir" ]]; then
  node_a=("$(dirname "$0")/../multinode/two_nodes.sh" on "$nodes_dir" a)
  node_b=("$(dirname "$0")/../multinode/two_nodes.sh" on "$nodes_dir" b)
fi
start_daemon slurmctld "${node_a[@]}" slurmctld -D -i -f "$SLURM_CONF"
start_daemon slurmd "${node_a[@]}" slurmd -D -f "$SLURM_CONF" -N "$host"
[[ -n "$nodes_dir" ]] && start_daemon slurmd-b "${node_b[@]}" slurmd -D -f "$SLURM_CONF" -N "$host_b"

# Ready when every node is idle (up to 60 s).
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
  state=$(on_node a timeout 5 sinfo -h -o %T 2>/dev/null | sort -u | paste -sd, || true)
  [[ "$state" == idle ]] && break
  sleep 0.1
done
if [[ "$state" != idle ]]; then
  echo "[slurm] the nodes did not become idle (state: '${state:-none}'); daemon logs:" >&2
  tail -n 20 "$dir"/log/*.log "$dir"/log/*.out >&2 || true
  "$0" stop "$dir"
  exit 1
fi
if [[ -n "$owner" ]]; then
  setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done; exec '$0' stop '$dir'" \
    >"$dir/log/watchdog.out" 2>&1 </dev/null &
  echo $! >"$dir/watchdog.pid"
fi
echo "[slurm] cluster up: SLURM_CONF=$SLURM_CONF (node(s) $(on_node a sinfo -h -o %N), $cpus CPUs each)"
