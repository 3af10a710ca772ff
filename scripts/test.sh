#!/usr/bin/env bash
# `make test`: every test of the project, none skipped.
#
# Outside any namespace (these need the package registries): the Debian packages, schemathesis (PyPI, for the
# contract test tmi-server/tests/api/schemathesis.rs), Keycloak (Maven Central, the sign-in tests' identity
# provider, which scripts/services.sh starts), the local cluster's build
# (control plane and real node, cached by version), format and lint checks, the test binaries, and the images
# (`make images`) that the real node runs. Then, inside the network, mount and PID namespaces of
# scripts/isolated.sh: PostgreSQL, Redis, Keycloak (scripts/with-services.sh) and the whole test suite. isolated.sh
# restores what a namespace cannot hold and fails the run when the host was left changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TMI_STEP_BEGAN=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - TMI_STEP_BEGAN ))"; }
export -f step
export TMI_STEP_BEGAN

step "Debian packages"
scripts/packages.sh

step "schemathesis for the contract test (PyPI, pinned, cached)"
TMI_SCHEMATHESIS=$(scripts/schemathesis.sh)
export TMI_SCHEMATHESIS
echo "schemathesis: $TMI_SCHEMATHESIS"

step "Keycloak for the sign-in tests (Maven Central, pinned, cached)"
TMI_KEYCLOAK_HOME=$(scripts/keycloak.sh)
export TMI_KEYCLOAK_HOME
echo "Keycloak: $TMI_KEYCLOAK_HOME"

step "building or reusing the local cluster (control plane and node)"
TMI_CONTROLPLANE_BIN=$(e2e/controlplane/build.sh)
export TMI_CONTROLPLANE_BIN
echo "cluster binaries: $TMI_CONTROLPLANE_BIN"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building the tests"
cargo test --workspace --locked --no-run

step "images (make images)"
scripts/images.sh

step "cargo test, inside the run's own namespaces"
scripts/isolated.sh scripts/with-services.sh cargo test --workspace --locked --no-fail-fast

step "all tests passed"
