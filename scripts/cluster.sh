#!/usr/bin/env bash
# `make cluster-up` / `make cluster-shell` / `make cluster-down`: the tests' local cluster, for people: the
# control plane and a real node that runs the locally built images, in the background, inside the network and
# mount namespaces of scripts/isolated.sh (pod and Service addresses exist only there).
#   scripts/cluster.sh up [DIR]            # builds what is missing, starts it; files under DIR (default .cluster)
#   scripts/cluster.sh shell [DIR] [CMD]   # a shell (or CMD) inside the cluster's namespaces, with KUBECONFIG
#                                          # and PATH (kubectl, helm, ctr) set, in the repository root
#   scripts/cluster.sh down [DIR]          # stops it; isolated.sh then restores and checks the host
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmd=${1:?up, shell or down}
dir=$(realpath -m "${2:-.cluster}")
mkdir -p "$dir"

running() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

# The host-side PID of the process at the root of the cluster's PID namespace (isolated.sh → unshare → it).
inner_pid() {
  local unshare
  unshare=$(pgrep -P "$(cat "$dir/pid")" -x unshare) && pgrep -P "$unshare" | head -n1
}

case "$cmd" in
  up)
    if running; then echo "already running (pid $(cat "$dir/pid")); enter it with: make cluster-shell"; exit 0; fi
    scripts/packages.sh
    bin=$(e2e/controlplane/build.sh)
    TMI_CONTROLPLANE_BIN=$bin scripts/images.sh "$PWD/target/images"
    cargo build -q -p tmi-e2e --bin tmi-controlplane
    rm -f "$dir/ready"
    TMI_CONTROLPLANE_BIN=$bin TMI_E2E_IMAGES=$PWD/target/images \
      nohup scripts/isolated.sh target/debug/tmi-controlplane up "$dir" >"$dir/controlplane.log" 2>&1 &
    echo $! >"$dir/pid"
    echo "$bin" >"$dir/bin"
    for _ in $(seq 1800); do
      [ -f "$dir/ready" ] && break
      running || { echo "the cluster failed to start:" >&2; tail -n 40 "$dir/controlplane.log" >&2; exit 1; }
      sleep 0.1
    done
    [ -f "$dir/ready" ] || { echo "the cluster did not become ready; see $dir/controlplane.log" >&2; exit 1; }
    cat "$dir/controlplane.log"
    echo "enter it with: make cluster-shell   (kubectl, helm and the pods' addresses work only in there)"
    ;;
  shell)
    running || { echo "not running: make cluster-up" >&2; exit 1; }
    shift $(( $# >= 2 ? 2 : $# ))
    pid=$(inner_pid) || { echo "cannot find the cluster's namespaces" >&2; exit 1; }
    [ $# -gt 0 ] || set -- bash
    exec nsenter -t "$pid" --net --mount --pid --wd="$PWD" -- \
      env KUBECONFIG="$dir/kubeconfig" PATH="$(cat "$dir/bin"):$PATH" "$@"
    ;;
  down)
    if running; then
      kill -TERM "$(cat "$dir/pid")"
      for _ in $(seq 300); do running || break; sleep 0.1; done
      tail -n 3 "$dir/controlplane.log"
      echo "stopped"
    else
      echo "not running"
    fi
    rm -f "$dir/pid" "$dir/ready"
    ;;
  *) echo "usage: $0 up|shell|down [DIR]" >&2; exit 2 ;;
esac
