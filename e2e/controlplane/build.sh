#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok)
# from the pinned Go modules below this folder into a cache directory keyed by those pins, and prints that
# directory's bin path. A second call with unchanged pins reuses the cache and returns at once.
#
# Each component is its own Go module: Kubernetes 1.37 requires etcd 3.7 libraries and kwok pins Kubernetes 0.36
# libraries, so one module would let Go's minimal version selection silently rebuild etcd and kwok against
# versions their releases were never tested with.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=${TMI_GOTOOLCHAIN:-local}
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0

# Bump when this script's output changes; editing comments here must not throw away a 25-minute build.
revision=2
key=$( (cd "$here" && cat kubernetes/go.mod kubernetes/go.sum etcd/go.mod etcd/go.sum kwok/go.mod kwok/go.sum; \
  echo "$revision") | sha256sum | cut -c1-16)
cache=${TMI_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tmi-operator/controlplane}
out="$cache/$key"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

complete() {
  for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || return 1; done
  [ -s "$out/bin/kwok-stages.yaml" ]
}
if complete; then echo "$out/bin"; exit 0; fi

mkdir -p "$out/bin"
exec 9>"$out/.lock"
flock 9
if complete; then echo "$out/bin"; exit 0; fi

start=$(date +%s)
build() { # module-dir output-name package
  local dir=$1 name=$2 pkg=$3
  [ -x "$out/bin/$name" ] && return 0
  echo "building $name ($pkg)" >&2
  (cd "$here/$dir" && go build -trimpath -ldflags='-s -w' -o "$out/bin/$name.tmp" "$pkg") >&2
  mv "$out/bin/$name.tmp" "$out/bin/$name"
}
build etcd etcd go.etcd.io/etcd/server/v3
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubernetes kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
build kubernetes kubectl k8s.io/kubernetes/cmd/kubectl
# kwok simulates nothing without stages. Take the upstream "fast" node and pod stages and the lease heartbeat
# (what kwokctl uses by default) from the very kwok release pinned above.
kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
{
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$kwok_dir/kustomize/stage/$f"
  done
} >"$out/bin/kwok-stages.yaml.tmp"
mv "$out/bin/kwok-stages.yaml.tmp" "$out/bin/kwok-stages.yaml"
echo "control plane built in $(( $(date +%s) - start ))s into $out" >&2
echo "$out/bin"
