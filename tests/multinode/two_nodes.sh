#!/usr/bin/env bash
# Two "nodes" on this machine for multi-node tests: two network namespaces joined by a veth pair
# (no network beyond the machine), each process in them with a hostname of its own (a UTS
# namespace) and an /etc/hosts naming both nodes (a mount namespace), and an Open MPI rsh agent
# that starts a command on a node by entering its namespaces — so mpirun launches its daemon on
# the second node as it would over ssh, ranks on different nodes talk over TCP between the
# namespaces, MPI's idea of a host (local rank, MPI_COMM_TYPE_SHARED) has two hosts, and daemons
# such as slurmd can run once per node.
#
#   tests/multinode/two_nodes.sh up DIR           creates the nodes; writes DIR/hosts (hostfile,
#                                                 2 slots each), DIR/agent (the rsh agent), DIR/names
#   tests/multinode/two_nodes.sh run DIR CMD...   runs CMD on the first node, with
#                                                 OMPI_MCA_plm_rsh_agent=DIR/agent set
#   tests/multinode/two_nodes.sh on DIR a|b CMD.. runs CMD on node a or b
#   tests/multinode/two_nodes.sh down DIR         removes what `up` created
#
# DIR/names sets ns_a, ns_b (namespaces), host_a, host_b (hostnames), addr_a, addr_b (addresses)
# and node_tmp: a directory each node sees as its own (node-local scratch, like a node's /tmp;
# the rest of the filesystem is shared, as a cluster's home and work directories are).
# Needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN (ip netns, unshare, mount). Exits 77 when it
# cannot create namespaces here, so a test can skip visibly.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
cmd=${1:-}
dir=${2:-}
case "$cmd" in
  -h | --help) usage; exit 0 ;;
  up | run | on | down) [[ -n "$dir" ]] || { usage >&2; exit 2; } ;;
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

if [[ "$cmd" == run || "$cmd" == on ]]; then
  shift 2
  side=a
  if [[ "$cmd" == on ]]; then
    side=${1:-}
    [[ "$side" == a || "$side" == b ]] || { usage >&2; exit 2; }
    shift
  fi
  [[ $# -gt 0 ]] || { usage >&2; exit 2; }
  # shellcheck disable=SC1091
  source "$dir/names"
  [[ "$cmd" == run ]] && export OMPI_MCA_plm_rsh_agent="$dir/agent"
  ns_var="ns_$side" host_var="host_$side"
  exec "$dir/enter" "${!ns_var}" "${!host_var}" "$dir/tmp-$side" "$@"
fi

# up
for exe in ip nsenter unshare mount mpirun; do
  command -v "$exe" >/dev/null || { echo "[two_nodes] $exe not found" >&2; exit 77; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Distinct names and subnet per test run: the first id from this pid's whose namespaces are not
# taken (by a concurrent test, or left by one that was killed).
id=$(($$ % 200 + 20))
for _ in $(seq 200); do
  ip netns list 2>/dev/null | grep -q "^kto-$id-[ab]\b" || break
  id=$(((id - 20 + 1) % 200 + 20))
done
ns_a="kto-$id-a" ns_b="kto-$id-b" host_a="kto-node-$id-a" host_b="kto-node-$id-b"
addr_a="10.211.$id.1" addr_b="10.211.$id.2"
if ! ip netns add "$ns_a" 2>/dev/null; then
  echo "[two_nodes] cannot create a network namespace here (needs root with CAP_SYS_ADMIN)" >&2
  exit 77
fi
cat >"$dir/names" <<EOF
ns_a=$ns_a
ns_b=$ns_b
host_a=$host_a
host_b=$host_b
addr_a=$addr_a
addr_b=$addr_b
node_tmp=$dir/node-tmp
EOF
mkdir -p "$dir/node-tmp" "$dir/tmp-a" "$dir/tmp-b"
trap '"$0" down "$dir"' ERR
ip netns add "$ns_b"
ip link add "kto$id-a" type veth peer name "kto$id-b"
ip link set "kto$id-a" netns "$ns_a"
ip link set "kto$id-b" netns "$ns_b"
ip netns exec "$ns_a" ip addr add "$addr_a/24" dev "kto$id-a"
ip netns exec "$ns_b" ip addr add "$addr_b/24" dev "kto$id-b"
for side in a b; do
  ip netns exec "kto-$id-$side" ip link set lo up
  ip netns exec "kto-$id-$side" ip link set "kto$id-$side" up
done
printf '%s slots=2\n%s slots=2\n' "$host_a" "$host_b" >"$dir/hosts"
# The nodes' /etc/hosts: this machine's, and the two nodes by name.
{ cat /etc/hosts; printf '%s %s\n%s %s\n' "$addr_a" "$host_a" "$addr_b" "$host_b"; } >"$dir/etc-hosts"
# `enter NAMESPACE HOSTNAME LOCAL_TMP COMMAND...`: COMMAND on that node (its network, hostname,
# /etc/hosts, and LOCAL_TMP seen at DIR/node-tmp).
cat >"$dir/enter" <<'EOF'
#!/bin/sh
ns=$1 host=$2 local_tmp=$3
shift 3
here=$(dirname "$0")
# nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts slurmd needs.
exec nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private /bin/sh -c \
  'mount --bind "$0/etc-hosts" /etc/hosts && mount --bind "$2" "$0/node-tmp" && hostname "$1" && shift 3 &&
   exec "$@"' "$here" "$host" "$local_tmp" - "$@"
EOF
# The rsh agent: `agent HOST COMMAND`, as mpirun calls ssh (COMMAND: one shell string).
cat >"$dir/agent" <<EOF
#!/bin/sh
host=\$1
shift
case "\$host" in
  $host_a) ns=$ns_a side=a ;;
  $host_b) ns=$ns_b side=b ;;
  *) echo "two_nodes agent: unknown host \$host" >&2; exit 255 ;;
esac
exec "$dir/enter" "\$ns" "\$host" "$dir/tmp-\$side" /bin/sh -c "\$*"
EOF
chmod +x "$dir/agent" "$dir/enter"
echo "[two_nodes] $host_a ($ns_a, $addr_a) and $host_b ($ns_b, $addr_b); hostfile $dir/hosts"
