#!/usr/bin/env bash
# `make images`: OCI image archives for tmi-server and tmi-operator, built without a container engine. The
# same recipe makes the images the tests run and the images a release publishes.
#
#   scripts/images.sh [OUT_DIR]     # default OUT_DIR: target/images
#
# Per image: a static binary (Rust's x86_64-unknown-linux-musl target, with Debian's musl-tools for the C parts
# of ring and SQLite), laid with /etc/passwd, /etc/group, the CA bundle and writable /tmp into one layer (owned
# by root, except the non-root user's home and the server's /data), assembled into an OCI image layout with
# umoci (Debian's package: it edits OCI layouts directly, so no registry or daemon is involved), labelled with
# the OCI annotations (source, version, revision, licenses), and written as `OUT_DIR/<name>.tar`. Each archive
# holds the OCI layout (index.json, blobs/) and, beside it, a Docker-style manifest.json pointing at the same
# blobs, so that `ctr images import`, `kind load image-archive` and `crane push` all accept it. Also writes
# `OUT_DIR/pause.tar`, the node's sandbox image, from the pause binary the cluster build made.
#
# Also writes two test-only server images for the upgrade tests (e2e/tests/pods/upgrades.rs), from the same
# binary: `tmi-server-next.tar` (tag `<version>-next`) and `tmi-server-broken.tar` (tag `<version>-broken`). They
# differ from tmi-server.tar only by TMI_TEST_EXTRA_MIGRATION in the image config: `upgrade` adds one migration
# (a newer release with a schema change), `fail` adds one that fails (a release whose migration breaks). A
# release publishes tmi-server.tar and tmi-operator.tar, never these.
#
# And a test-only backup image for the backups before migration (spec.upgrade.backup, e2e/tests/pods/backups.rs):
# `tmi-pgdump.tar` (ghcr.io/tmi-operator/tmi-pgdump:<version>), whose root filesystem holds the machine's Debian
# pg_dump and pg_restore (package postgresql-client-<major>, the same major as the tests' PostgreSQL server, under
# /usr/lib/postgresql/<major>/bin), exactly the shared libraries they load (resolved with ldd), and Debian's
# busybox-static for /bin/sh and the few tools the backup script calls. Nothing is downloaded but the Debian
# packages; nothing is committed.
#
# The images run as UID/GID 65532 ("nonroot"), like distroless' nonroot base. Timestamps come from the commit
# (SOURCE_DATE_EPOCH), so the same commit gives the same image digests.
#
# The musl build has its own target directory, cached beside the cluster build (TMI_IMAGES_TARGET_DIR), so a
# fresh clone rebuilds only the workspace crates.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=$(realpath -m "${1:-target/images}")
registry=${IMAGE_REGISTRY:-ghcr.io/tmi-operator}
target=x86_64-unknown-linux-musl
cache=${XDG_CACHE_HOME:-$HOME/.cache}/tmi-operator
export CARGO_TARGET_DIR=${TMI_IMAGES_TARGET_DIR:-$cache/target-images}

ensure_tools() {
  local need=()
  command -v umoci >/dev/null || need+=(umoci)
  [ -x /bin/busybox ] || need+=(busybox-static)
  command -v musl-gcc >/dev/null || need+=(musl-tools)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian packages" >&2
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
  fi
  rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >&2
}

ensure_tools
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
source_url=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml | head -n1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
# Not exported: build scripts that watch SOURCE_DATE_EPOCH would rebuild their crates at every commit.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

echo "building static binaries ($target, release)" >&2
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target" -p tmi-server -p tmi-operator >&2

work=$(mktemp -d "${TMPDIR:-/tmp}/tmi-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# build_image NAME BINARY_PATH|ROOTFS_DIR TITLE EXTRA_DIRS UMOCI_CONFIG_ARGS... : lays the root filesystem (one
# binary, or a prepared directory), assembles and exports the image.
build_image() {
  local name=$1 binary=$2 title=$3 extra_dirs=$4; shift 4
  local repo=${REPOSITORY:-$name} tag=${TAG:-$version}
  local ref="$registry/$repo:$tag" lay="$work/$name-layout"
  if [ -d "$binary" ]; then
    python3 scripts/oci.py rootfs "$work/$name-layer.tar" "$epoch" "$binary"
  else
    python3 scripts/oci.py layer "$work/$name-layer.tar" "$epoch" "$binary" "$extra_dirs"
  fi
  umoci init --layout "$lay"
  umoci new --image "$lay:$version"
  umoci raw add-layer --image "$lay:$version" --history.created "$created" \
    --history.created_by "scripts/images.sh" "$work/$name-layer.tar"
  local args=(--image "$lay:$version" --created "$created" --history.created "$created"
    --architecture amd64 --os linux --config.user 65532:65532 --config.workingdir /
    --config.env PATH=/usr/local/bin:/usr/bin:/bin)
  local e; for e in "$@"; do args+=("$e"); done
  local label
  for label in "org.opencontainers.image.source=$source_url" "org.opencontainers.image.version=$tag" \
    "org.opencontainers.image.revision=$revision" "org.opencontainers.image.licenses=Apache-2.0" \
    "org.opencontainers.image.title=$title" "org.opencontainers.image.created=$created"; do
    args+=(--config.label "$label" --manifest.annotation "$label")
  done
  umoci config "${args[@]}"
  umoci gc --layout "$lay"
  python3 scripts/oci.py archive "$lay" "$ref" "$out/$name.tar"
  echo "$out/$name.tar  $ref" >&2
}

# The server listens on loopback unless told otherwise (its zero-configuration run has the dev login);
# in a container it must listen on every interface.
build_image tmi-server "$CARGO_TARGET_DIR/$target/release/tmi-server" "tmi-server" data \
  --config.entrypoint /usr/local/bin/tmi-server --config.exposedports 8080/tcp \
  --config.env TMI_SERVER_INTERFACE=0.0.0.0
for variant in next:upgrade broken:fail; do
  REPOSITORY=tmi-server TAG="$version-${variant%%:*}" build_image "tmi-server-${variant%%:*}" \
    "$CARGO_TARGET_DIR/$target/release/tmi-server" "tmi-server" data \
    --config.entrypoint /usr/local/bin/tmi-server --config.exposedports 8080/tcp \
    --config.env TMI_SERVER_INTERFACE=0.0.0.0 --config.env "TMI_TEST_EXTRA_MIGRATION=${variant#*:}"
done
build_image tmi-operator "$CARGO_TARGET_DIR/$target/release/tmi-operator" "tmi-operator" "" \
  --config.entrypoint /usr/local/bin/tmi-operator --config.cmd run

# The backup test image: pg_dump and pg_restore of the machine's newest postgresql-client, their libraries, busybox.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [ -n "$pg_bin" ] && [ -x "$pg_bin/pg_dump" ]; then
  root="$work/tmi-pgdump-root"
  mkdir -p "$root/bin" "$root/${pg_bin#/}" "$root/usr/local/bin"
  cp /bin/busybox "$root/bin/busybox"
  for tool in sh date mkdir rm mv ls grep sed sort tail cut wc tr id cat sync; do
    ln -s busybox "$root/bin/$tool"
  done
  for tool in pg_dump pg_restore; do
    cp "$pg_bin/$tool" "$root/${pg_bin#/}/$tool"
    ln -s "$pg_bin/$tool" "$root/usr/local/bin/$tool"
  done
  # Every library ldd resolves, at the path the loader will look for it (symbolic links followed).
  ldd "$pg_bin/pg_dump" "$pg_bin/pg_restore" | awk '/=> \//{print $3} /^\t\//{print $1}' | sort -u |
    while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  REPOSITORY=tmi-pgdump build_image tmi-pgdump "$root" "tmi-pgdump (test only)" "" --config.cmd /bin/sh
else
  echo "no postgresql-client under /usr/lib/postgresql: skipping tmi-pgdump.tar (scripts/packages.sh installs it)" >&2
fi

# The local node's sandbox image, from the cluster build's pause binary: only where the cluster was built
# (`make test` and `make cluster-up` set TMI_CONTROLPLANE_BIN), since a release needs no pause image of ours.
bin=${TMI_CONTROLPLANE_BIN:-}
if [ -n "$bin" ] && [ -x "$bin/pause" ]; then
  build_image pause "$bin/pause" "pause" "" --config.entrypoint /usr/local/bin/pause
fi
