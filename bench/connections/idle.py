#!/usr/bin/env python3
"""Per-connection memory of tmi-server: starts the server binary (zero configuration, SQLite in a temp
directory, loopback), opens N TCP connections and reads the server's RSS from /proc before and after.

    python3 bench/connections/idle.py BINARY [N]

Two kinds of idle connection, each in a fresh server:
  silent     connected, nothing sent (a client that never starts its request);
  keep-alive one complete `GET /livez` answered, then left open (a browser's pooled connection).
Prints RSS before, after, and the difference per connection. The server's own limits apply: with a
connection cap below N the extra connections wait in the listen backlog (and cost the server nothing), and
the header-read timeout closes idle connections, so measure within that window (the script takes its
reading two seconds after the last connection opened).
"""

import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_ready(port):
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def run(binary, n, kind):
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ)
        env.update(
            {
                "TMI_SERVER_PORT": str(port),
                "TMI_SERVER_INTERFACE": "127.0.0.1",
                "TMI_DATA_DIR": data,
                "TMI_LOG_LEVEL": "error",
                "TMI_DISABLE_RATE_LIMITING": "true",
            }
        )
        for k in ("TMI_DATABASE_URL", "TMI_REDIS_URL", "TMI_REDIS_HOST"):
            env.pop(k, None)
        server = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port)
            # Warm up: a few requests so that lazily built state (pools, caches) is not counted.
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    s.recv(4096)
            time.sleep(1)
            before = rss_kib(server.pid)
            conns = []
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port))
                if kind == "keep-alive":
                    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.recv(4096)
                conns.append(s)
            time.sleep(2)
            after = rss_kib(server.pid)
            open_now = sum(1 for s in conns if not closed(s))
            for s in conns:
                s.close()
            per = (after - before) / n
            print(
                f"{kind:10} {n} connections: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
                f"{per:.1f} KiB per connection ({open_now} still open when measured)"
            )
        finally:
            server.terminate()
            server.wait(timeout=10)


def closed(s):
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    for kind in ("silent", "keep-alive"):
        run(binary, n, kind)


if __name__ == "__main__":
    main()
