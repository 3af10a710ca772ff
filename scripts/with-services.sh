#!/usr/bin/env bash
# Runs a command with everything the tests and benchmarks need, started here and stopped on exit (also on
# failure or Ctrl-C): private PostgreSQL and Redis on free loopback ports (TMI_TEST_DATABASE_URL,
# TMI_TEST_REDIS_URL), Keycloak starting in the background (TMI_TEST_KEYCLOAK_URL; TMI_KEYCLOAK=off leaves it
# out) and the local Kubernetes control plane's binaries (TMI_CONTROLPLANE_BIN; built once, then cached by
# version).
#   scripts/with-services.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/tmi-services.XXXXXX")
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

# `step` prints a heading with the seconds since start (scripts/test.sh's clock, when it called us).
TMI_STEP_BEGAN=${TMI_STEP_BEGAN:-$(date +%s)}
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - TMI_STEP_BEGAN ))"; }
export -f step
export TMI_STEP_BEGAN

step "starting PostgreSQL and Redis (and Keycloak, in the background)"
eval "$(scripts/services.sh start "$work")"
echo "PostgreSQL: ${TMI_TEST_DATABASE_URL}  Redis: ${TMI_TEST_REDIS_URL}"

if [ -z "${TMI_CONTROLPLANE_BIN:-}" ]; then
  step "building or reusing the local control plane"
  TMI_CONTROLPLANE_BIN=$(e2e/controlplane/build.sh)
  export TMI_CONTROLPLANE_BIN
fi
echo "control plane binaries: $TMI_CONTROLPLANE_BIN"

"$@"
