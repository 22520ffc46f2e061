#!/usr/bin/env bash
# Two "nodes" on this machine for multi-node tests: two network namespaces joined by a veth pair
# (no network beyond the machine), each process in them with a hostname of its own (a UTS
# namespace), and an Open MPI rsh agent that starts a command on a node by entering its
# namespaces — so mpirun launches its daemon on the second node as it would over ssh, ranks on
# different nodes talk over TCP between the namespaces, and MPI's idea of a host (local rank,
# MPI_COMM_TYPE_SHARED) has two hosts.
#
#   tests/multinode/two_nodes.sh up DIR        creates the nodes; writes DIR/hosts (hostfile,
#                                              2 slots each), DIR/agent (the rsh agent), DIR/names
#   tests/multinode/two_nodes.sh run DIR CMD.. runs CMD on the first node, with
#                                              OMPI_MCA_plm_rsh_agent=DIR/agent set
#   tests/multinode/two_nodes.sh down DIR      removes what `up` created
#
# Needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN (ip netns, unshare). Exits 77 when it cannot
# create namespaces here, so a test can skip visibly.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
cmd=${1:-}
dir=${2:-}
case "$cmd" in
  -h | --help) usage; exit 0 ;;
  up | run | down) [[ -n "$dir" ]] || { usage >&2; exit 2; } ;;
  *) usage >&2; exit 2 ;;
esac

if [[ "$cmd" == down ]]; then
  [[ -f "$dir/names" ]] || exit 0
  # shellcheck disable=SC1091
  source "$dir/names"
  ip netns del "$ns_a" 2>/dev/null || true  # deleting a namespace deletes its end of the veth pair
  ip netns del "$ns_b" 2>/dev/null || true
  rm -f "$dir/names"
  exit 0
fi

if [[ "$cmd" == run ]]; then
  shift 2
  # shellcheck disable=SC1091
  source "$dir/names"
  export OMPI_MCA_plm_rsh_agent="$dir/agent"
  exec ip netns exec "$ns_a" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "$host_a" "$@"
fi

# up
for exe in ip unshare mpirun; do
  command -v "$exe" >/dev/null || { echo "[two_nodes] $exe not found" >&2; exit 77; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
id=$(( $$ % 200 + 20 ))  # distinct names and subnet per test run
ns_a="kto-$id-a" ns_b="kto-$id-b" host_a="kto-node-$id-a" host_b="kto-node-$id-b"
if ! ip netns add "$ns_a" 2>/dev/null; then
  echo "[two_nodes] cannot create a network namespace here (needs root with CAP_SYS_ADMIN)" >&2
  exit 77
fi
cat >"$dir/names" <<EOF
ns_a=$ns_a
ns_b=$ns_b
host_a=$host_a
host_b=$host_b
EOF
trap '"$0" down "$dir"' ERR
ip netns add "$ns_b"
ip link add "kto$id-a" type veth peer name "kto$id-b"
ip link set "kto$id-a" netns "$ns_a"
ip link set "kto$id-b" netns "$ns_b"
ip netns exec "$ns_a" ip addr add "10.211.$id.1/24" dev "kto$id-a"
ip netns exec "$ns_b" ip addr add "10.211.$id.2/24" dev "kto$id-b"
for side in a b; do
  ns="kto-$id-$side"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set "kto$id-$side" up
done
printf '%s slots=2\n%s slots=2\n' "$host_a" "$host_b" >"$dir/hosts"
# The rsh agent: `agent HOST COMMAND...`, as mpirun calls ssh. COMMAND is one shell string.
cat >"$dir/agent" <<EOF
#!/bin/sh
host=\$1
shift
case "\$host" in
  $host_a) ns=$ns_a ;;
  $host_b) ns=$ns_b ;;
  *) echo "two_nodes agent: unknown host \$host" >&2; exit 255 ;;
esac
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$*"' "\$host" "\$@"
EOF
chmod +x "$dir/agent"
echo "[two_nodes] $host_a ($ns_a, 10.211.$id.1) and $host_b ($ns_b, 10.211.$id.2); hostfile $dir/hosts"
