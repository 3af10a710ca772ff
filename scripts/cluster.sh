#!/usr/bin/env bash
# `make cluster-up` / `make cluster-down`: the tests' local control plane in the background, for people.
#   scripts/cluster.sh up [DIR]    # starts it; kubeconfig at DIR/kubeconfig (default DIR: .cluster)
#   scripts/cluster.sh down [DIR]  # stops it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmd=${1:?up or down}
dir=${2:-.cluster}
mkdir -p "$dir"

running() { [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

case "$cmd" in
  up)
    if running; then echo "already running (pid $(cat "$dir/pid")); KUBECONFIG=$dir/kubeconfig"; exit 0; fi
    bin=$(e2e/controlplane/build.sh)
    cargo build -q -p tmi-e2e --bin tmi-controlplane
    rm -f "$dir/ready"
    TMI_CONTROLPLANE_BIN=$bin nohup target/debug/tmi-controlplane up "$dir" >"$dir/controlplane.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1200); do
      [ -f "$dir/ready" ] && break
      running || { echo "the control plane failed to start:" >&2; tail -n 40 "$dir/controlplane.log" >&2; exit 1; }
      sleep 0.1
    done
    [ -f "$dir/ready" ] || { echo "the control plane did not become ready; see $dir/controlplane.log" >&2; exit 1; }
    cat "$dir/controlplane.log"
    ln -sf "$bin/kubectl" "$dir/kubectl"
    echo "try: $dir/kubectl --kubeconfig $dir/kubeconfig get nodes"
    ;;
  down)
    if running; then
      kill -TERM "$(cat "$dir/pid")"
      for _ in $(seq 200); do running || break; sleep 0.1; done
      echo "stopped"
    else
      echo "not running"
    fi
    rm -f "$dir/pid" "$dir/ready"
    ;;
  *) echo "usage: $0 up|down [DIR]" >&2; exit 2 ;;
esac
