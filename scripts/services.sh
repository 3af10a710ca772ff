#!/usr/bin/env bash
# Starts private PostgreSQL and Redis instances for the tests, on free loopback ports, with their data under a
# directory this script owns; never touches a system-wide instance. Installs the Debian packages when missing.
#
#   scripts/services.sh start DIR   # prints `export ...` lines for TMI_TEST_DATABASE_URL and TMI_TEST_REDIS_URL
#   scripts/services.sh stop DIR    # stops both and leaves DIR for the caller to remove
#
# Inside scripts/isolated.sh's namespaces (TMI_E2E_NODE_IP set) both also listen on the node's address, so that
# the real node's pods reach them (TMI_TEST_POD_DATABASE_URL, TMI_TEST_POD_REDIS_URL); PostgreSQL trusts the
# pods' range there. That address exists only inside the run's network namespace.
set -euo pipefail

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
}

stop() {
  local dir=$1 bin
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
