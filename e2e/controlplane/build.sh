#!/usr/bin/env bash
# Builds the local cluster from the pinned Go modules below this folder, and prints the path of a directory
# holding all of it: the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok), the real node (kubelet, kube-proxy, containerd with its runc shim and ctr, CoreDNS, and the pause
# binary from the Kubernetes module's own pause.c), and the test tools that go with it (helm, and `kstatus`, a
# small checker on sigs.k8s.io/cli-utils' kstatus). runc and the CNI plugins come from Debian's packages.
# The cluster's edge, for exposure tests: Traefik, a cert-manager controller (our main.go on cert-manager's
# library module), and in `crds/` the CRDs of cert-manager and of Gateway API (standard and experimental).
# Some third-party dependencies need patching to build from the module proxy; see "Patches" below.
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
  [traefik]="traefik=github.com/traefik/traefik/v3/cmd/traefik"
  [cert-manager]="cert-manager-controller=."
  [gateway-api]=""
)
modules=(etcd kwok kubernetes containerd coredns helm kstatus traefik cert-manager gateway-api)
# Go toolchain per module, where a pin needs a newer Go than the machine's: Gateway API v1.7.0's go.mod says
# go 1.27 (the module proxy serves that toolchain like any module).
declare -A toolchains=(
  [gateway-api]=go1.27.3
)
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

# The key covers the module's files and the script's patch and extraction functions for it, so that changing a
# patch rebuilds that module alone.
module_key() {
  (cd "$here/$1" && cat go.mod go.sum ./*.go 2>/dev/null; echo "$revision ${targets[$1]} ${tags[$1]:-} $(extra_ldflags "$1")"
    [ -z "${toolchains[$1]:-}" ] || echo "toolchain ${toolchains[$1]}"
    declare -f "prepare_$1" "extras_$1" 2>/dev/null || true) | sha256sum | cut -c1-16
}

# The directory of module@version in the module cache, downloading it when needed (outside any module, so that
# no replace directive of ours applies). $1 names the module of ours whose toolchain to use.
dep_dir() { (cd / && GOTOOLCHAIN=${toolchains[$1]:-$GOTOOLCHAIN} go mod download -json "$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
# The version one of our modules pins for a dependency (its go.mod's require line).
pinned() { (cd "$here/$1" && GOTOOLCHAIN=${toolchains[$1]:-$GOTOOLCHAIN} go mod edit -json | awk -v p="\"$2\"," '$1 == "\"Path\":" && $2 == p { getline; gsub(/[",]/, "", $2); print $2; exit }'); }

# --- Patches, applied only to copies in the build cache --------------------------------------------------------
# A module with a prepare_<module> function is built from a staging copy (`$out/src`: our go.mod, go.sum and
# sources) in which that function first writes the directories that the module's go.mod `replace`s point to.
# Nothing third-party is ever written into the repository.

# Traefik v3.7.13 (cmd/traefik) cannot be built from the module proxy as it is:
prepare_traefik() {
  local src=$1 d
  # The providers whose SDKs the proxy refuses, and those SDKs' modules.
  local lego_refused_providers lego_refused_modules
  lego_refused_providers=(alidns aliesa azion dnsimple edgedns edgeone huaweicloud oraclecloud regfish sakuracloud
    tencentcloud ucloud yandexcloud)
  lego_refused_modules=(github.com/akamai/AkamaiOPEN-edgegrid-golang/v13 github.com/aziontech/azionapi-go-sdk
    github.com/dnsimple/dnsimple-go/v9 github.com/go-acme/alidns-20150109/v5 github.com/go-acme/esa-20240910/v3
    github.com/go-acme/tencentclouddnspod github.com/go-acme/tencentedgdeone github.com/huaweicloud/huaweicloud-sdk-go-v3
    github.com/nrdcg/oci-go-sdk/common/v1065 github.com/nrdcg/oci-go-sdk/dns/v1065 github.com/regfish/regfish-dnsapi-go
    github.com/sacloud/sacloud-sdk-go github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common
    github.com/ucloud/ucloud-sdk-go github.com/yandex-cloud/go-genproto github.com/yandex-cloud/go-sdk/services/dns
    github.com/yandex-cloud/go-sdk/v2)
  mkdir -p "$src/patched"
  # 1. Traefik's go.mod replaces github.com/traefik/traefik/dynamic/ext with ./pkg/config/dynamic/ext, a nested
  #    module that Go leaves out of the module zip, and the proxy serves no module of that name. The package
  #    is Traefik's extension point for its commercial edition: empty structs embedded into dynamic.HTTP and
  #    dynamic.Router. An equivalent stand-in, written here:
  d="$src/patched/traefik-dynamic-ext"
  mkdir -p "$d"
  printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' >"$d/go.mod"
  cat >"$d/ext.go" <<'GO'
// Package ext stands in for Traefik's dynamic configuration extension point (empty in open-source Traefik).
package ext

// HTTP is embedded into dynamic.HTTP.
type HTTP struct{}

// Router is embedded into dynamic.Router.
type Router struct{}

// RouterIng is the ingress annotations' counterpart of Router.
type RouterIng struct{}

// ToRouter converts RouterIng to a Router.
func (r RouterIng) ToRouter() Router { return Router{} }
GO
  # 2. Traefik replaces abbot/go-http-auth with its fork containous/go-http-auth, which the proxy refuses (403).
  #    abbot/go-http-auth v0.4.0 is served; the fork adds two functions Traefik's basic and digest auth
  #    middlewares call: CheckSecret (compare a password with an htpasswd secret) and
  #    DigestAuth.RequireAuthStale (a digest challenge with stale=true). A copy of v0.4.0 gets both, written
  #    on the library's own compare functions and challenge. (The e2e tests use neither middleware.)
  d="$src/patched/go-http-auth"
  cp -r "$(dep_dir traefik github.com/abbot/go-http-auth@v0.4.0)/." "$d"
  chmod -R u+w "$d"
  rm -rf "$d/examples" "$d"/*_test.go
  printf 'module github.com/abbot/go-http-auth\n\ngo 1.17\n' >"$d/go.mod"
  cat >"$d/zz_traefik_fork.go" <<'GO'
package auth

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// CheckSecret reports whether password matches an htpasswd secret (MD5, SHA or bcrypt), as BasicAuth.CheckAuth
// compares them.
func CheckSecret(password, secret string) bool {
	compare := compareFuncs[0].compare
	for _, cmp := range compareFuncs[1:] {
		if strings.HasPrefix(secret, cmp.prefix) {
			compare = cmp.compare
			break
		}
	}
	return compare([]byte(secret), []byte(password)) == nil
}

// RequireAuthStale is RequireAuth with stale=true: the client's nonce expired, its credentials may be right.
func (a *DigestAuth) RequireAuthStale(w http.ResponseWriter, r *http.Request) {
	if len(a.clients) > a.ClientCacheSize+a.ClientCacheTolerance {
		a.Purge(a.ClientCacheTolerance * 2)
	}
	nonce := RandomKey()
	a.clients[nonce] = &digest_client{nc: 0, last_seen: time.Now().UnixNano()}
	w.Header().Set(contentType, a.Headers.V().UnauthContentType)
	w.Header().Set(a.Headers.V().Authenticate,
		fmt.Sprintf(`Digest realm="%s", nonce="%s", opaque="%s", algorithm="MD5", qop="auth", stale=true`,
			a.Realm, nonce, a.Opaque))
	w.WriteHeader(a.Headers.V().UnauthCode)
	w.Write([]byte(a.Headers.V().UnauthResponse))
}
GO
  # 3. go-acme/lego/v5's DNS-provider registry imports every provider, and 13 providers' SDKs are refused by
  #    the proxy (403). A copy of lego without those providers: their packages, their imports and their cases
  #    in the generated registry (zz_gen_dns_providers.go), and their SDKs' requirements. Traefik then reports
  #    them as unknown DNS providers; ACME is unused here (certificates come from cert-manager).
  d="$src/patched/lego"
  cp -r "$(dep_dir traefik "github.com/go-acme/lego/v5@$(lego_version)")/." "$d"
  chmod -R u+w "$d"
  local p reg="$d/providers/dns/zz_gen_dns_providers.go"
  for p in "${lego_refused_providers[@]}"; do
    rm -rf "${d:?}/providers/dns/$p"
    # The import line and the `case "...":` with its `return` line.
    sed -i -e "\#\"github.com/go-acme/lego/v5/providers/dns/$p\"#d" \
      -e "/^\tcase .*:\$/{N;/\n\t\treturn $p\.New/d}" "$reg"
  done
  for p in "${lego_refused_modules[@]}"; do
    (cd "$d" && go mod edit -droprequire="$p")
  done
  # Nothing of lego may import a removed provider any more.
  if grep -rqE "lego/v5/providers/dns/($(IFS='|'; echo "${lego_refused_providers[*]}"))\"" --include='*.go' "$d"; then
    echo "prepare_traefik: a removed lego provider is still imported" >&2
    return 1
  fi
}
# --- CRDs, taken from the pinned modules' zips ----------------------------------------------------------------
# cert-manager's CRDs (deploy/crds/) from the very library module the controller is built from.
extras_cert-manager() {
  local dir f
  dir=$(dep_dir cert-manager "github.com/cert-manager/cert-manager@$(pinned cert-manager github.com/cert-manager/cert-manager)")
  mkdir -p "$1/crds"
  for f in "$dir"/deploy/crds/*.yaml; do echo "---"; cat "$f"; done >"$1/crds/cert-manager.yaml.tmp"
  mv "$1/crds/cert-manager.yaml.tmp" "$1/crds/cert-manager.yaml"
}
# Gateway API's standard and experimental channels (config/crd/{standard,experimental}/); HTTPRoute's
# sessionPersistence is in the experimental channel only.
extras_gateway-api() {
  local dir c f
  dir=$(dep_dir gateway-api "sigs.k8s.io/gateway-api@$(pinned gateway-api sigs.k8s.io/gateway-api)")
  mkdir -p "$1/crds"
  for c in standard experimental; do
    for f in "$dir"/config/crd/"$c"/*.yaml; do
      [ "$(basename "$f")" = kustomization.yaml ] && continue
      echo "---"; cat "$f"
    done >"$1/crds/gateway-api-$c.yaml.tmp"
    mv "$1/crds/gateway-api-$c.yaml.tmp" "$1/crds/gateway-api-$c.yaml"
  done
}

# The lego version Traefik requires (read from Traefik's own go.mod in the module cache).
lego_version() {
  local t; t="$(dep_dir traefik "github.com/traefik/traefik/v3@$(pinned traefik github.com/traefik/traefik/v3)")"
  awk '$1 == "github.com/go-acme/lego/v5" { print $2; exit }' "$t/go.mod"
}


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

# A staging copy of module $1 in directory $2, for modules with a prepare_<module> function.
stage() {
  local m=$1 src=$2
  rm -rf "$src"
  mkdir -p "$src"
  (cd "$here/$m" && cp go.mod go.sum "$src/" && for f in ./*.go; do [ -e "$f" ] && cp "$f" "$src/"; done; true)
  "prepare_$m" "$src"
}

build_module() { # module -> prints its output directory
  local m=$1 out t name pkg
  out="$cache/$m-$(module_key "$m")"
  [ -f "$out/.complete" ] && { echo "$out"; return 0; }
  mkdir -p "$out"
  (
    flock 9
    [ -f "$out/.complete" ] && exit 0
    local began src; began=$(date +%s)
    export GOTOOLCHAIN=${toolchains[$m]:-$GOTOOLCHAIN}
    src="$here/$m"
    if declare -F "prepare_$m" >/dev/null; then
      src="$out/src"
      echo "patching a copy of $m's dependencies in $src" >&2
      stage "$m" "$src" >&2
    fi
    for t in ${targets[$m]}; do
      name=${t%%=*} pkg=${t#*=}
      echo "building $name ($m)" >&2
      (cd "$src" && go build -trimpath -tags="${tags[$m]:-}" -ldflags="-s -w$(extra_ldflags "$m")" -o "$out/$name.tmp" "$pkg") >&2
      mv "$out/$name.tmp" "$out/$name"
    done
    if [ "$m" = kwok ]; then kwok_stages >"$out/kwok-stages.yaml.tmp" && mv "$out/kwok-stages.yaml.tmp" "$out/kwok-stages.yaml"; fi
    if [ "$m" = kubernetes ]; then build_pause "$out"; fi
    if declare -F "extras_$m" >/dev/null; then "extras_$m" "$out" >&2; fi
    touch "$out/.complete"
    echo "built $m in $(( $(date +%s) - began ))s" >&2
  ) 9>"$out/.lock"
  echo "$out"
}

# `build.sh --tidy MODULE`: `go mod tidy` for a module whose go.mod replaces point into the staging copy (the
# others are tidied in place). Stages the module in a temporary directory, tidies it there, and copies go.mod
# and go.sum back.
if [ "${1:-}" = "--tidy" ]; then
  m=${2:?usage: build.sh --tidy MODULE}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  export GOTOOLCHAIN=${toolchains[$m]:-$GOTOOLCHAIN}
  stage "$m" "$tmp/src"
  (cd "$tmp/src" && go mod tidy)
  cp "$tmp/src/go.mod" "$tmp/src/go.sum" "$here/$m/"
  exit 0
fi

dirs=()
for m in "${modules[@]}"; do dirs+=("$(build_module "$m")"); done

# One directory with every binary, named after the set of module builds it links to.
set_key=$(printf '%s\n' "${dirs[@]}" | sha256sum | cut -c1-16)
bin="$cache/bin-$set_key"
if [ ! -f "$bin/.complete" ]; then
  mkdir -p "$bin"
  mkdir -p "$bin/crds"
  for d in "${dirs[@]}"; do
    for f in "$d"/*; do [ -f "$f" ] && ln -sf "$f" "$bin/$(basename "$f")"; done
    for f in "$d"/crds/*; do [ -f "$f" ] && ln -sf "$f" "$bin/crds/$(basename "$f")"; done
  done
  touch "$bin/.complete"
fi
echo "$bin"
