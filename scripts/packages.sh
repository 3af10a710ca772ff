#!/usr/bin/env bash
# Installs the Debian packages that `make test`, `make images` and the local cluster need, when missing. Run
# before entering scripts/isolated.sh's namespaces, which have no network.
#   postgresql, redis-server         the test databases (scripts/services.sh)
#   openjdk-17-jre-headless, maven   Keycloak, the sign-in tests' identity provider (scripts/keycloak.sh)
#   runc, containernetworking-plugins the real node's runtime and pod network (bridge, host-local, loopback)
#   iptables, conntrack              kube-proxy's rules and connection cleanup
#   umoci, musl-tools, ca-certificates make images (scripts/images.sh)
#   busybox-static                   the backup test image's shell (tmi-pgdump.tar, with postgresql's pg_dump)
#   iproute2, util-linux, curl       the namespaces (ip, unshare) and readiness checks
set -euo pipefail
packages=(postgresql redis-server openjdk-17-jre-headless maven runc containernetworking-plugins iptables
  conntrack umoci musl-tools ca-certificates busybox-static iproute2 util-linux curl)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} from Debian packages" >&2
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
