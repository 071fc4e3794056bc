#!/usr/bin/env python3
"""Memory per idle TLS keep-alive connection of a server process.

usage: loadtest/tls_idle.py PORT CONNECTIONS PID

Opens 50 warm-up connections, then CONNECTIONS more to 127.0.0.1:PORT, each a
full TLS handshake (certificate not verified) and one `GET /` read once, then
left idle; prints the RSS of process PID before and after (2 s later, so that
the server has released what it releases for idle connections) and the
difference per connection. Run it against Ringway's worker process and against
nginx's worker (same certificate, same one-line response) in one sitting: see
tuning.md, TLS.
"""
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {pid}")


def open_idle(ctx, port):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="a.example.com")
    s.settimeout(10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    if not s.recv(4096):
        raise SystemExit("closed before a response")
    return s


def main():
    port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = [open_idle(ctx, port) for _ in range(50)]
    time.sleep(1)
    before = rss_kib(pid)
    conns += [open_idle(ctx, port) for _ in range(n)]
    time.sleep(2)
    after = rss_kib(pid)
    print(f"port {port}: {n} idle TLS keep-alive connections: RSS {before} -> {after} KiB, "
          f"{(after - before) * 1024 / n:.0f} bytes each")


if __name__ == "__main__":
    main()
