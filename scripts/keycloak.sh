#!/usr/bin/env bash
# Fetches Keycloak (the real identity provider of the sign-in tests), at a pinned version, from Maven Central
# with mvn (org.keycloak:keycloak-quarkus-dist, checksums verified), unpacks it into a cache directory, runs its
# Quarkus build once there (so that each test run starts it `--optimized`, without the 20-odd seconds of
# augmentation `start-dev` spends on every start), and prints the Keycloak home directory. Run by scripts/test.sh
# before entering scripts/isolated.sh's namespaces, which have no network; scripts/services.sh starts it from
# TMI_KEYCLOAK_HOME or from this cache path. Installs Java and Maven from Debian packages when missing.
#   scripts/keycloak.sh            # fetches and builds when missing, prints the home directory
#   scripts/keycloak.sh --cached   # prints the home directory when cached, else fails (no network used)
set -euo pipefail
version=26.7.3
# Build-time options of the cached build; scripts/services.sh starts it with the matching runtime options.
build_options=(--db=dev-file)
root=${XDG_CACHE_HOME:-$HOME/.cache}/tmi-operator
home=$root/keycloak-$version
stamp="$version ${build_options[*]}"

if [ "$(cat "$home/.installed" 2>/dev/null)" = "$stamp" ]; then
  echo "$home"
  exit 0
fi
[ "${1:-}" != --cached ] || exit 1

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian packages" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi

mkdir -p "$root"
# One installer at a time (concurrent test runs share the cache); the lock goes with this shell.
exec 9>"$root/keycloak-$version.lock"
flock 9
if [ "$(cat "$home/.installed" 2>/dev/null)" != "$stamp" ]; then
  echo "fetching Keycloak $version (Maven Central) into $home" >&2
  tmp=$(mktemp -d "$root/keycloak-$version.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # A private local repository, thrown away with $tmp: the 176 MB archive is not kept twice.
  mvn -B -q -C -Dstyle.color=never -Dmaven.repo.local="$tmp/m2" dependency:copy \
    -Dartifact="org.keycloak:keycloak-quarkus-dist:$version:tar.gz" -DoutputDirectory="$tmp" >&2
  tar -xzf "$tmp/keycloak-quarkus-dist-$version.tar.gz" -C "$tmp"
  echo "building Keycloak's Quarkus application (${build_options[*]})" >&2
  "$tmp/keycloak-$version/bin/kc.sh" build "${build_options[@]}" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; exit 1; }
  rm -rf "$home"
  mv "$tmp/keycloak-$version" "$home"
  echo "$stamp" >"$home/.installed"
fi
echo "$home"
