#!/usr/bin/env bash
# Builds the local cluster from the pinned Go modules below this folder, and prints the path of a directory
# holding all of it: the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok), the real node (kubelet, kube-proxy, containerd with its runc shim and ctr, CoreDNS, and the pause
# binary from the Kubernetes module's own pause.c), and the test tools that go with it (helm, and `kstatus`, a
# small checker on sigs.k8s.io/cli-utils' kstatus). runc and the CNI plugins come from Debian's packages.
#
# Each module is built into a cache directory keyed by a hash of its own files, and reused until they change:
# bumping one pin rebuilds one module. A second call with nothing changed returns at once.
#
# Each component is its own Go module: Kubernetes 1.37 requires etcd 3.7 libraries and kwok pins Kubernetes 0.36
# libraries, so one module would let Go's minimal version selection silently rebuild etcd and kwok against
# versions their releases were never tested with.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GOTOOLCHAIN=${TMI_GOTOOLCHAIN:-local}
export GOFLAGS="-mod=mod -buildvcs=false"
export CGO_ENABLED=0
cache=${TMI_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tmi-operator/controlplane}
# Bump when what this script produces changes (flags, extra files); comments here must not cost a rebuild.
revision=4

# module directory -> "binary=package ..."
declare -A targets=(
  [etcd]="etcd=go.etcd.io/etcd/server/v3"
  [kwok]="kwok=sigs.k8s.io/kwok/cmd/kwok"
  [kubernetes]="kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler kubectl=k8s.io/kubernetes/cmd/kubectl kubelet=k8s.io/kubernetes/cmd/kubelet kube-proxy=k8s.io/kubernetes/cmd/kube-proxy"
  [containerd]="containerd=github.com/containerd/containerd/v2/cmd/containerd containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 ctr=github.com/containerd/containerd/v2/cmd/ctr"
  [coredns]="coredns=github.com/coredns/coredns"
  [helm]="helm=helm.sh/helm/v4/cmd/helm"
  [kstatus]="kstatus=."
)
modules=(etcd kwok kubernetes containerd coredns helm kstatus)
# Build tags per module: containerd's snapshotters for btrfs, devmapper and zfs need C libraries and are unused
# here (the node uses overlayfs, or native where overlayfs is unavailable).
declare -A tags=(
  [containerd]="no_btrfs no_devmapper no_zfs"
)

# Release builds stamp their version in; a module build must too, or the API server reports v0.0.0 and tools
# that check the server version (helm's kubeVersion, kubectl's skew warning) refuse it.
kube_version() { (cd "$here/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes); }
extra_ldflags() {
  [ "$1" = kubernetes ] || return 0
  local v p; v=$(kube_version)
  local minor=${v#v1.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- ' -X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean' "$p" "$v" "$p" "$p" "$minor" "$p"
  done
}

module_key() { (cd "$here/$1" && cat go.mod go.sum ./*.go 2>/dev/null; echo "$revision ${targets[$1]} ${tags[$1]:-} $(extra_ldflags "$1")") | sha256sum | cut -c1-16; }

# kwok simulates nothing without stages. Take the upstream "fast" node and pod stages and the lease heartbeat
# (what kwokctl uses by default) from the very kwok release pinned here.
kwok_stages() {
  local dir f
  dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$dir/kustomize/stage/$f"
  done
}

# The sandbox ("pause") container's binary, from the C source in the pinned Kubernetes module, static so that it
# runs in an image holding nothing else.
build_pause() {
  local src; src="$(cd "$here/kubernetes" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
  echo "building pause (kubernetes)" >&2
  cc -Os -static -DVERSION=tmi-e2e -o "$1/pause.tmp" "$src" >&2
  strip "$1/pause.tmp"
  mv "$1/pause.tmp" "$1/pause"
}

build_module() { # module -> prints its output directory
  local m=$1 out t name pkg
  out="$cache/$m-$(module_key "$m")"
  [ -f "$out/.complete" ] && { echo "$out"; return 0; }
  mkdir -p "$out"
  (
    flock 9
    [ -f "$out/.complete" ] && exit 0
    local began; began=$(date +%s)
    for t in ${targets[$m]}; do
      name=${t%%=*} pkg=${t#*=}
      echo "building $name ($m)" >&2
      (cd "$here/$m" && go build -trimpath -tags="${tags[$m]:-}" -ldflags="-s -w$(extra_ldflags "$m")" -o "$out/$name.tmp" "$pkg") >&2
      mv "$out/$name.tmp" "$out/$name"
    done
    if [ "$m" = kwok ]; then kwok_stages >"$out/kwok-stages.yaml.tmp" && mv "$out/kwok-stages.yaml.tmp" "$out/kwok-stages.yaml"; fi
    if [ "$m" = kubernetes ]; then build_pause "$out"; fi
    touch "$out/.complete"
    echo "built $m in $(( $(date +%s) - began ))s" >&2
  ) 9>"$out/.lock"
  echo "$out"
}

dirs=()
for m in "${modules[@]}"; do dirs+=("$(build_module "$m")"); done

# One directory with every binary, named after the set of module builds it links to.
set_key=$(printf '%s\n' "${dirs[@]}" | sha256sum | cut -c1-16)
bin="$cache/bin-$set_key"
if [ ! -f "$bin/.complete" ]; then
  mkdir -p "$bin"
  for d in "${dirs[@]}"; do
    for f in "$d"/*; do [ -f "$f" ] && ln -sf "$f" "$bin/$(basename "$f")"; done
  done
  touch "$bin/.complete"
fi
echo "$bin"
