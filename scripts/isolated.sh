#!/usr/bin/env bash
# Runs a command inside network, mount and PID namespaces of its own, the only place where the local cluster's
# real node may run: pod, Service and bridge addresses exist only in that network namespace, and the node's
# mounts (overlay snapshots, pod volumes, network-namespace files) only in that mount namespace. When the
# command ends, for any reason, the kernel ends every process of the PID namespace (containers included) and
# drops the namespaces with their links, routes, firewall rules and mounts.
#
#   scripts/isolated.sh COMMAND [ARGS...]
#
# What a namespace cannot hold is handled here, on every exit path (success, failure, Ctrl-C, TERM):
# - sysctls that are global to the machine and that the kubelet sets (vm.overcommit_memory, kernel.panic,
#   kernel.panic_on_oops, …) are recorded before and restored after;
# - the cgroups the kubelet creates live under one parent, `tmi-e2e-<pid>`, in every cgroup hierarchy; it is
#   removed after;
# - directories that the node needs as mount points and that the host lacks are created empty, and removed
#   after;
# then a check compares the host with what was recorded (sysctls, cgroups, mounts, links, firewall rules,
# cluster processes) and fails the run when anything was left behind.
#
# Inside, the network namespace has `lo` and a veth link `tmi-node` holding the node's address
# (TMI_E2E_NODE_IP, 10.99.0.1; its peer `tmi-node-peer` is unused): the API server, the kubelet, CoreDNS and the test databases listen there, so
# that pods can reach them. TMI_E2E_ISOLATED=1 tells the harness it may start a real node.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

node_ip=10.99.0.1
# Sysctls outside any network namespace that a kubelet or kube-proxy may set.
global_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max
  net.nf_conntrack_max)
# Mount points the node needs at fixed paths (CNI's cache; the kubelet's container log links; the hostPath
# volumes of config/samples/local-pv.yaml).
mount_points=(/var/lib/cni /var/log/containers /var/log/pods /var/lib/tmi-local-pv)
# (`ps -o comm` shows at most 15 characters: cert-manager-controller is `cert-manager-co`.)
cluster_processes='kubelet|containerd|containerd-shim-runc-v2|kube-apiserver|kube-proxy|kube-controller-manager|kube-scheduler|coredns|etcd|kwok|pause|traefik|cert-manager-co'

if [ "${1:-}" = "--inside" ]; then
  shift
  # A new PID namespace needs its own /proc (unshare --mount-proc), a private mount tree, and fresh tmpfs
  # mounts where the node writes at fixed paths.
  for d in "${mount_points[@]}"; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
  # config/samples/local-pv.yaml's volumes, writable by the images' non-root user (a hostPath volume gets no
  # fsGroup), sticky like /tmp.
  for i in 0 1 2; do install -d -m 1777 "/var/lib/tmi-local-pv/pv-$i"; done
  ip link set lo up
  # The node's address on a link of its own (a veth pair whose peer stays unused: this kernel may lack the
  # dummy link type), so that it is neither loopback nor on the pods' bridge.
  ip link add tmi-node type veth peer name tmi-node-peer
  ip addr add "$node_ip/32" dev tmi-node
  ip link set tmi-node-peer up
  ip link set tmi-node up
  # The cluster's Service range (the API server's --service-cluster-ip-range): a route so that connections from
  # this namespace get as far as kube-proxy's DNAT rules, which send them on to the pods.
  ip route add 10.96.0.0/16 dev tmi-node
  export TMI_E2E_ISOLATED=1 TMI_E2E_NODE_IP=$node_ip
  export CARGO_NET_OFFLINE=true
  exec "$@"
fi

[ "$(id -u)" -eq 0 ] || { echo "scripts/isolated.sh needs root (namespaces, cgroups, mounts)" >&2; exit 1; }
command -v ip >/dev/null || { echo "scripts/isolated.sh needs iproute2 (ip)" >&2; exit 1; }

# One isolated run at a time on a machine: runs share the fixed mount points above and the host check would see
# another run's processes and cgroups as leftovers. A second run waits for the first (the lock is released when
# this shell exits, on every path).
exec 9>"${TMPDIR:-/tmp}/tmi-isolated.lock"
if ! flock -n 9; then
  echo "scripts/isolated.sh: another isolated run is active on this machine; waiting for it" >&2
  flock 9
fi

state=$(mktemp -d "${TMPDIR:-/tmp}/tmi-isolated.XXXXXX")
cgroup_parent="tmi-e2e-$$"
export TMI_E2E_CGROUP_PARENT=$cgroup_parent

# Every mounted cgroup hierarchy (v1 controllers, the v2 unified tree).
cgroup_mounts() { awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/mounts; }

snapshot() ( # what a finished run must leave as it found
  set +e +o pipefail
  local k
  for k in "${global_sysctls[@]}"; do printf '%s=%s\n' "$k" "$(sysctl -n "$k" 2>/dev/null || echo -)"; done
  echo "--- links"; ip -o link show | awk -F': ' '{ print $2 }' | sort
  echo "--- mounts"; awk '{ print $2 }' /proc/mounts | grep -E 'kubelet|containerd|netns|tmi-e2e|/var/lib/cni|/var/log/(containers|pods)' | sort || true
  echo "--- cgroups"; local m; for m in $(cgroup_mounts); do ls -d "$m"/tmi-e2e-* 2>/dev/null || true; done
  echo "--- iptables"; if command -v iptables-save >/dev/null; then iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//'; fi
  echo "--- nftables"; if command -v nft >/dev/null; then nft list ruleset 2>/dev/null; fi
  echo "--- processes"; ps -eo comm= | grep -xE "$cluster_processes" | sort
)

snapshot >"$state/before"
created_dirs=()
for d in "${mount_points[@]}"; do
  if [ ! -e "$d" ]; then mkdir -p "$d"; created_dirs+=("$d"); fi
done
# The kubelet needs its cgroup root to exist already, in every hierarchy.
for m in $(cgroup_mounts); do mkdir -p "$m/$cgroup_parent"; done
for k in "${global_sysctls[@]}"; do
  v=$(sysctl -n "$k" 2>/dev/null) && printf '%s\t%s\n' "$k" "$v" >>"$state/sysctls"
done

restore() {
  local rc=$?
  trap - EXIT INT TERM
  # Sysctls first: they matter most to the machine.
  if [ -f "$state/sysctls" ]; then
    while IFS=$'\t' read -r k v; do
      [ "$(sysctl -n "$k" 2>/dev/null)" = "$v" ] || sysctl -q -w "$k=$v" >/dev/null 2>&1 || echo "could not restore $k=$v" >&2
    done <"$state/sysctls"
  fi
  # The PID namespace is gone with its init, so its processes are dead or dying; their cgroups empty out.
  local m i
  for m in $(cgroup_mounts); do
    [ -d "$m/$cgroup_parent" ] || continue
    for i in $(seq 50); do
      find "$m/$cgroup_parent" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$m/$cgroup_parent" ] || break
      sleep 0.1
    done
  done
  for d in "${created_dirs[@]}"; do rmdir "$d" 2>/dev/null || true; done
  for m in $(cgroup_mounts); do rmdir "$m/$cgroup_parent" 2>/dev/null || true; done
  snapshot >"$state/after"
  if ! diff -u "$state/before" "$state/after" >"$state/diff"; then
    echo "scripts/isolated.sh: the run left the host changed (- before, + after):" >&2
    cat "$state/diff" >&2
    [ "$rc" -ne 0 ] || rc=1
  else
    echo "scripts/isolated.sh: host checked: no sysctl, cgroup, mount, link, firewall rule or process left behind" >&2
  fi
  rm -rf "$state"
  exit "$rc"
}
trap restore EXIT

# --kill-child: when unshare dies, the namespace's init gets SIGKILL and the kernel ends all it holds. Run in
# the background so that a signal to this script is handled at once (bash runs traps only between commands).
unshare --net --mount --pid --fork --kill-child --mount-proc --propagation private \
  bash "$0" --inside "$@" &
ns=$!
stop() { # forward the signal to the namespace's init (the command), give it time to stop, then end it all
  local init
  init=$(pgrep -P "$ns" | head -n1) && kill -TERM "$init" 2>/dev/null
  for _ in $(seq 200); do kill -0 "$ns" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$ns" 2>/dev/null || true
  wait "$ns" 2>/dev/null || true
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
wait "$ns"
