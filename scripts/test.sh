#!/usr/bin/env bash
# `make test`: every test of the project, with everything it needs started here and stopped on exit
# (also on failure or Ctrl-C): private PostgreSQL and Redis on free loopback ports, the local Kubernetes
# control plane (built once, then cached by version), then format and lint checks and the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tmi-test.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  scripts/services.sh stop "$work" || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

began=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - began ))"; }

step "starting PostgreSQL and Redis"
eval "$(scripts/services.sh start "$work")"
echo "PostgreSQL: ${TMI_TEST_DATABASE_URL}  Redis: ${TMI_TEST_REDIS_URL}"

step "building or reusing the local control plane"
TMI_CONTROLPLANE_BIN=$(e2e/controlplane/build.sh)
export TMI_CONTROLPLANE_BIN
echo "control plane binaries: $TMI_CONTROLPLANE_BIN"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

step "all tests passed"
