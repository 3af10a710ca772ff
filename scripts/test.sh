#!/usr/bin/env bash
# `make test`: every test of the project. scripts/with-services.sh starts PostgreSQL, Redis and the local
# Kubernetes control plane (and stops them on exit, failure or Ctrl-C); then format and lint checks and the
# whole test suite, none skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${TMI_WITH_SERVICES:-}" ]; then exec scripts/with-services.sh "$0" "$@"; fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

step "all tests passed"
