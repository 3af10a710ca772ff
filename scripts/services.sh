#!/usr/bin/env bash
# Starts private PostgreSQL and Redis instances for the tests, on free loopback ports, with their data under a
# directory this script owns; never touches a system-wide instance. Installs the Debian packages when missing.
# Also starts Keycloak (the sign-in tests' identity provider) IN THE BACKGROUND: it takes 15-40 s to be ready,
# and the tests that need it wait for it (tests/common/keycloak.rs), the others do not.
#
#   scripts/services.sh start DIR   # prints `export ...` lines for TMI_TEST_DATABASE_URL, TMI_TEST_REDIS_URL,
#                                   # TMI_TEST_KEYCLOAK_URL
#   scripts/services.sh stop DIR    # stops all three and leaves DIR for the caller to remove
#
# Keycloak comes from TMI_KEYCLOAK_HOME (scripts/test.sh sets it), else from scripts/keycloak.sh's cache, which
# is filled first when missing outside scripts/isolated.sh (inside there is no network: no cache, no Keycloak,
# and the tests that need it fail saying so). TMI_KEYCLOAK=off leaves it out (the benchmarks, which it would
# disturb). It runs on a per-run home under DIR (its own data, the cached build's lib/ linked, read-only), with
# the realm tests/fixtures/keycloak/realm-tmi.json imported as `tmi` and a fixed bootstrap admin
# (tests/common/keycloak.rs knows it), heap capped at 512 MiB. It serves HTTP on loopback and HTTPS with a
# certificate from a CA made for the run (TMI_TEST_KEYCLOAK_HTTPS_URL, TMI_TEST_KEYCLOAK_CA_FILE): instances on
# real pods accept only https identity providers, so TMI_TEST_POD_KEYCLOAK_URL is the HTTPS one.
#
# Inside scripts/isolated.sh's namespaces (TMI_E2E_NODE_IP set) all three also listen on the node's address, so
# that the real node's pods reach them (TMI_TEST_POD_DATABASE_URL, TMI_TEST_POD_REDIS_URL,
# TMI_TEST_POD_KEYCLOAK_URL); PostgreSQL trusts the pods' range there. That address exists only inside the
# run's network namespace.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  return 1
}

ensure_packages() {
  local need=()
  pg_bin >/dev/null || need+=(postgresql)
  command -v redis-server >/dev/null || need+=(redis-server)
  [ ${#need[@]} -eq 0 ] && return 0
  echo "installing ${need[*]} from Debian packages" >&2
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
}

# PostgreSQL refuses to run as root; when we are root, run it as the `postgres` user the package creates.
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start() {
  local dir=$1
  ensure_packages
  mkdir -p "$dir/pg" "$dir/redis"
  [ "$(id -u)" -eq 0 ] && chmod 755 "$dir"
  [ "$(id -u)" -eq 0 ] && chown -R postgres "$dir/pg"
  local bin; bin=$(pg_bin)
  local pg_port redis_port listen=127.0.0.1 node_ip=${TMI_E2E_NODE_IP:-}
  if [ -n "$node_ip" ]; then listen="127.0.0.1,$node_ip"; fi
  pg_port=$(free_port)
  as_pg "$bin/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/pg/initdb.log" 2>&1
  if [ -n "$node_ip" ]; then
    echo "host all all 10.244.0.0/16 trust" >>"$dir/pg/data/pg_hba.conf"
  fi
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
    -o "-p $pg_port -k $dir/pg -c listen_addresses=$listen -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
    start >&2
  redis_port=$(free_port)
  local redis_bind=(--bind 127.0.0.1)
  if [ -n "$node_ip" ]; then redis_bind=(--bind 127.0.0.1 "$node_ip" --protected-mode no); fi
  redis-server --port "$redis_port" "${redis_bind[@]}" --save '' --appendonly no --daemonize yes \
    --dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "export TMI_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres"
  echo "export TMI_TEST_REDIS_URL=redis://127.0.0.1:$redis_port"
  echo "export TMI_TEST_REDIS_PORT=$redis_port"
  if [ -n "$node_ip" ]; then
    echo "export TMI_TEST_POD_DATABASE_URL=postgres://postgres@$node_ip:$pg_port/postgres"
    echo "export TMI_TEST_POD_REDIS_URL=redis://$node_ip:$redis_port"
  fi
  start_keycloak "$dir"
}

# The Keycloak home to run: TMI_KEYCLOAK_HOME, the cache, or (outside the namespaces) a fresh fetch.
keycloak_home() {
  if [ -n "${TMI_KEYCLOAK_HOME:-}" ]; then echo "$TMI_KEYCLOAK_HOME"; return 0; fi
  if [ -n "${TMI_E2E_NODE_IP:-}" ]; then "$repo/scripts/keycloak.sh" --cached; else "$repo/scripts/keycloak.sh"; fi
}

start_keycloak() {
  local dir=$1 home run port https_port host=127.0.0.1 node_ip=${TMI_E2E_NODE_IP:-}
  if [ "${TMI_KEYCLOAK:-}" = off ]; then echo "Keycloak: not started (TMI_KEYCLOAK=off)" >&2; return 0; fi
  if ! home=$(keycloak_home); then
    echo "Keycloak: not cached and no network here: run scripts/keycloak.sh first (make test does)" >&2
    return 0
  fi
  # kc.sh takes its home from its own location: a copy of bin/ makes DIR/keycloak the home (data, import,
  # logs), while lib/ (the cached, pre-built application) is shared read-only; `--optimized` never rebuilds it.
  run=$dir/keycloak
  mkdir -p "$run/data/import" "$run/providers" "$run/themes"
  cp -R "$home/bin" "$home/conf" "$run/"
  ln -s "$home/lib" "$run/lib"
  cp "$repo/tmi-server/tests/fixtures/keycloak/realm-tmi.json" "$run/data/import/"
  port=$(free_port)
  https_port=$(free_port)
  # HTTPS too, with a certificate of a CA made for this run (TMI_TEST_KEYCLOAK_CA_FILE): a TmiInstance accepts only
  # https identity-provider URLs, so the pods reach Keycloak over HTTPS with that CA as the instance's trusted CA.
  local sans="IP:127.0.0.1,DNS:localhost"
  if [ -n "$node_ip" ]; then sans="$sans,IP:$node_ip"; fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tmi-test-keycloak-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$run/ca.key" -out "$run/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=keycloak" -keyout "$run/tls.key" -out "$run/tls.csr" >/dev/null 2>&1
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$sans" >"$run/tls.ext"
  openssl x509 -req -in "$run/tls.csr" -CA "$run/ca.crt" -CAkey "$run/ca.key" -CAcreateserial -days 2 \
    -extfile "$run/tls.ext" -out "$run/tls.crt" >/dev/null 2>&1
  # Inside the namespaces the only addresses are loopback, the node's and the pods' bridge; Keycloak binds one
  # address, so it takes them all there (pods reach it through the node's address).
  if [ -n "$node_ip" ]; then host=0.0.0.0; fi
  # The development settings of `start-dev` (HTTP, the issuer following the request's host, a local cache, the
  # file database) on the production command, which alone can skip the build.
  # The JIT's first tier only (TieredStopAtLevel=1): half the CPU time to be ready (23 s instead of 43 s, measured
  # on the 2-core machine), which the tests running beside it get back; a few sign-ins need no faster code.
  # setsid: a process group of its own (its id in keycloak.pid), which `stop` ends as a whole.
  KC_BOOTSTRAP_ADMIN_USERNAME=tmi-test-admin KC_BOOTSTRAP_ADMIN_PASSWORD=tmi-test-admin-password \
    JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m" JAVA_OPTS_APPEND="-XX:TieredStopAtLevel=1" \
    setsid bash -c 'echo $$ >"$1/keycloak.pid"; shift; exec "$@"' keycloak "$run" \
    "$run/bin/kc.sh" start --optimized --import-realm --http-enabled=true --http-host="$host" \
    --http-port="$port" --https-port="$https_port" --https-certificate-file="$run/tls.crt" \
    --https-certificate-key-file="$run/tls.key" --hostname-strict=false --cache=local \
    </dev/null >"$run/keycloak.log" 2>&1 &
  for _ in $(seq 50); do [ -s "$run/keycloak.pid" ] && break; sleep 0.1; done
  echo "export TMI_TEST_KEYCLOAK_URL=http://127.0.0.1:$port"
  echo "export TMI_TEST_KEYCLOAK_HTTPS_URL=https://127.0.0.1:$https_port"
  echo "export TMI_TEST_KEYCLOAK_CA_FILE=$run/ca.crt"
  echo "export TMI_TEST_KEYCLOAK_LOG=$run/keycloak.log"
  if [ -n "$node_ip" ]; then echo "export TMI_TEST_POD_KEYCLOAK_URL=https://$node_ip:$https_port"; fi
}

stop_keycloak() {
  local dir=$1 pgid
  [ -f "$dir/keycloak/keycloak.pid" ] || return 0
  pgid=$(cat "$dir/keycloak/keycloak.pid")
  # kc.sh forwards TERM to java, which stops in a second or two; KILL what is left after 30 s.
  kill -TERM -- "-$pgid" 2>/dev/null || return 0
  for _ in $(seq 300); do pgrep -g "$pgid" >/dev/null || return 0; sleep 0.1; done
  echo "Keycloak did not stop on TERM: killing it" >&2
  kill -KILL -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 50); do pgrep -g "$pgid" >/dev/null || return 0; sleep 0.1; done
}

stop() {
  local dir=$1 bin
  stop_keycloak "$dir"
  if [ -f "$dir/redis/redis.pid" ]; then kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true; fi
  if bin=$(pg_bin) && [ -f "$dir/pg/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  start) start "${2:?directory}" ;;
  stop) stop "${2:?directory}" ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
