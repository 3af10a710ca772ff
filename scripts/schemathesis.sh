#!/usr/bin/env bash
# Installs schemathesis (PyPI), at a pinned version, into a cached virtualenv for the contract test
# (tmi-server/tests/api/schemathesis.rs) when it is missing, and prints the path of its command. Run by
# scripts/test.sh before entering scripts/isolated.sh's namespaces, which have no network; the test finds the
# command through TMI_SCHEMATHESIS or at this cache path.
set -euo pipefail
version=4.32.5
dir=${XDG_CACHE_HOME:-$HOME/.cache}/tmi-operator/schemathesis-$version
if [ ! -e "$dir/.installed" ]; then
  echo "installing schemathesis $version from PyPI into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
  touch "$dir/.installed"
fi
echo "$dir/bin/schemathesis"
