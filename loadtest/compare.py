#!/usr/bin/env python3
"""Ringway, nginx and HAProxy side by side, in one run, in the fixed layout of
../shared/BENCHMARKING.md: each proxy alone on CPU 1 with one worker, the load
generator (h2load, one thread) and the nginx backend on CPU 0.

Run it through loadtest/compare.sh, which installs the tools and builds Ringway.

Figures, for each proxy and scenario:
  exact   syscalls, io_uring submissions, poll arms and context switches per request
          (perf stat tracepoints on the proxy's pid);
  exact   user-space instructions per request (cachegrind, Ir(n2) - Ir(n1) / (n2 - n1));
  timed   CPU microseconds per request at a fixed offered load below saturation
          (median of clean runs; runs with host CPU steal over 3 % discarded, counted);
  info    rps and p50/p99/p99.9 latency at saturation (median of clean runs);
  memory  RSS per idle keep-alive client connection (all of it, and the marginal cost
          of the second half of the connections).

"floor" is bench/floor.rs's bare relay (small GET only): monoio 0.2.4 with Ringway's
ring flags and httparse on both heads, nothing else. It is the least a proxy built on
this runtime costs per request, so it shows how much of Ringway's cost is its own.
"ringway-peerwork" (small GET only) is the same Ringway doing the header work the
nginx and HAProxy peers are configured for: no X-Forwarded-*, no request id.

"logged" is the small GET (same requests, keep-alive, c=50) with an access log line per
request written to a local file by each proxy, configured for the same work as
BENCHMARKING.md's fair peers ask (access logs stay off in every other scenario):
  Ringway  [access_log] path = "DIR/<name>-access.log", format = "json";
  nginx    log_format main = nginx's predefined "combined" format,
           access_log DIR/ngx-access.log main buffer=64k flush=1s;
  HAProxy  option httplog, option dontlognull, log stdout format raw local0, stdout to
           DIR/haproxy-access.log (one writev per request, done in HAProxy's own process
           and so in its measured CPU and syscalls; a UDP syslog sink would put the
           receiving side on the load generator's core instead, and may drop lines).
Each proxy process's log lines are counted when it stops (nginx flushes its buffer then;
Ringway must too) against the 2xx answers h2load got from it, reported as "access log
lines/req" and under "access_log" in the JSON, with a warning below 99 % (a timed run
may log up to c requests more than h2load counts: those in flight when it stops); the
file is then deleted. A Ringway binary whose `ringway check` rejects the [access_log]
section is left out of this scenario, with a warning. Ringway keeps its default header
work here (X-Forwarded-*, request id; ringway-peerwork is measured for "small" only).
Saturation (rps, latency) is not measured in this scenario, which keeps the full run
under 20 minutes (the scenario takes about 2 of them); exact counts, CPU at fixed load
and cachegrind are, as for the small GET. Quick mode measures its exact counts and CPU
at fixed load, and leaves cachegrind out (quick runs stay under 3 minutes).

--tls runs the TLS scenarios instead (under 15 minutes; --quick under 4): each proxy
terminates TLS with the same ECDSA P-256 certificate, generated for the run, TLS 1.2
and 1.3 on, session resumption by tickets and a session cache, as an operator sets them:
  Ringway  [listeners.tls] certificates = [{ cert, key }] (tickets and a session cache
           are its defaults);
  nginx    listen ... ssl; ssl_certificate; ssl_certificate_key;
           ssl_protocols TLSv1.2 TLSv1.3 (nginx 1.22 leaves 1.3 off unless told);
           ssl_session_cache shared:SSL:10m (tickets are on by default);
  HAProxy  bind ... ssl crt FILE (key and chain in one file; its session cache and
           tickets are on by default).
  tls-full     full TLS 1.3 handshakes, one HTTP/1.0 request per connection, one
               connection at a time (openssl s_time -new -tls1_3 -www /): figures per
               connection, i.e. per handshake; the pace is the client's, no saturation;
  tls-resumed  the same with resumed sessions (s_time -reuse: a TLS 1.3 ticket);
  tls-small    small GET over TLS keep-alive, c=50 (h2load over https, ALPN http/1.1);
  tls-1m       1 MiB responses over TLS, c=10;
  tls-idle     idle TLS keep-alive connections, RSS each (one GET each, then idle).
The protocol, cipher and key exchange each proxy negotiated are in the JSON ("tls").
Cachegrind over s_time counts the instructions of two runs of different lengths and
divides the difference by the difference of their connection counts.
"""

import argparse
import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_PORT = 18080
PORTS = {"nginx": 18081, "haproxy": 18082, "ringway": 18083, "floor": 18079}
PERF_EVENTS = [
    "raw_syscalls:sys_enter",
    "context-switches",
    "io_uring:io_uring_submit_req",
    "io_uring:io_uring_poll_arm",
]
PERF_NAMES = {
    "raw_syscalls:sys_enter": "syscalls",
    "context-switches": "ctx_switches",
    "io_uring:io_uring_submit_req": "uring_submits",
    "io_uring:io_uring_poll_arm": "poll_arms",
}
STEAL_LIMIT = 3.0
HAPROXY_MAXCONN = 9000  # ulimit -n is 20000 here and cannot be raised


class Scenario:
    def __init__(self, name, title, path, n, c, rate, cg, method_args=(), headers=(), access_log=False,
                 saturation=True, quick="exact", notes=None, tls=False, handshakes=None):
        self.name = name
        self.title = title
        self.path = path
        self.n = n  # requests for the exact counts
        self.c = c  # client connections
        self.rate = rate  # offered load (req/s) for the CPU figure
        self.cg = cg  # (n1, n2) request counts for cachegrind
        self.method_args = list(method_args)
        self.headers = list(headers)
        self.access_log = access_log  # every proxy writes an access log line per request
        self.saturation = saturation  # rps and latency at saturation (information only)
        # What quick mode measures: "exact" counts only, "timed" (exact counts and the timed
        # figures), or "all" (cachegrind too).
        self.quick = quick
        self.notes = notes  # how the peers are configured for the same work
        self.tls = tls  # every proxy terminates TLS (the --tls scenarios)
        # "new" or "reuse": connections made one at a time by `openssl s_time` (full or
        # resumed handshakes, one request each) instead of h2load; n and rate unused,
        # cg is then two s_time durations (seconds) under cachegrind.
        self.handshakes = handshakes

    def h2load_args(self):
        args = list(self.method_args)
        for h in self.headers:
            args += ["-H", h]
        return args


def scenarios(quick, upload_file):
    k = 4 if quick else 1  # quick mode: fewer requests
    return [
        Scenario("small", "small GET, keep-alive, c=50", "/", 200_000 // k, 50, 20_000, (5_000, 25_000),
                 quick="all"),
        # The small GET with access logs on; no saturation runs (full run under 20 minutes).
        Scenario("logged", "small GET, keep-alive, c=50, access log on", "/", 200_000 // k, 50, 20_000,
                 (5_000, 25_000), access_log=True, saturation=False, quick="timed",
                 notes="access log on: Ringway [access_log] format = \"json\" to a file; nginx "
                       "access_log FILE main buffer=64k flush=1s (main = the combined format); "
                       "HAProxy option httplog, option dontlognull, log stdout format raw local0, "
                       "stdout to a file"),
        Scenario("1k", "1 KiB response, c=50", "/1k", 100_000 // k, 50, 15_000, (2_000, 10_000)),
        Scenario("64k", "64 KiB response, c=50", "/64k", 40_000 // k, 50, 4_000, (1_000, 5_000)),
        Scenario("1m", "1 MiB response, c=10", "/1m", 4_000 // k, 10, 300, (100, 500)),
        Scenario("upload", "1 MiB request body (streamed), c=10", "/upload", 4_000 // k, 10, 300,
                 (100, 500), method_args=["-d", upload_file]),
        Scenario("newconn", "new connection per request, c=50", "/", 40_000 // k, 50, 4_000,
                 (1_000, 5_000), headers=["Connection: close"]),
    ]


def tls_scenarios(quick):
    k = 4 if quick else 1
    return [
        Scenario("tls-full", "TLS 1.3 full handshake, one request per connection, one at a time", "/",
                 None, 1, None, (4, 12), tls=True, handshakes="new", saturation=False, quick="timed",
                 notes="openssl s_time -new -tls1_3 -www /: figures per connection (= per handshake)"),
        Scenario("tls-resumed", "TLS 1.3 resumed handshake, one request per connection, one at a time", "/",
                 None, 1, None, (4, 12), tls=True, handshakes="reuse", saturation=False, quick="timed",
                 notes="openssl s_time -reuse -tls1_3 -www /: figures per connection (= per handshake)"),
        Scenario("tls-small", "small GET over TLS, keep-alive, c=50", "/", 200_000 // k, 50, 20_000,
                 (5_000, 25_000), tls=True, quick="all"),
        Scenario("tls-1m", "1 MiB response over TLS, c=10", "/1m", 4_000 // k, 10, 300, (100, 500), tls=True,
                 quick="timed"),
    ]


# ----------------------------------------------------------------------------- configs

NGINX_BACKEND = """worker_processes 1; daemon off; pid {dir}/ngx-backend.pid;
error_log {dir}/ngx-backend.err warn;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 75s; sendfile on;
  server {{ listen 127.0.0.1:{backend} backlog=4096;
    location / {{ default_type text/plain; return 200 "hello"; }}
    location ~ ^/(1k|64k|1m)$ {{ default_type application/octet-stream; root {dir}/www; }}
    # "return" answers before reading the body, which makes a streaming proxy's
    # keep-alive connection unusable (nginx closes it); a buffering hop in front of
    # it reads every upload whole before the answer, as an application would.
    location = /upload {{ client_max_body_size 0; client_body_buffer_size 1m;
      proxy_pass http://127.0.0.1:{backend}/upload-sink; }}
    location = /upload-sink {{ default_type text/plain; return 200 "ok"; }} }} }}
"""

# The peers' reverse-proxy config of BENCHMARKING.md; uploads are streamed like Ringway's
# (no request buffering, no body size limit), and worker_connections leaves room for the
# idle-connection scenario.
NGINX_PROXY = """worker_processes 1; daemon off; {master} pid {dir}/ngx-proxy.pid;
error_log {dir}/ngx-proxy.err warn; worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ {access_log} keepalive_requests 1000000; keepalive_timeout 75s;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port} backlog=4096{tls};
    client_max_body_size 0;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_request_buffering off; }} }} }}
"""
# The TLS scenarios: the same server, terminating TLS ({dir}/tls, made by make_cert).
NGINX_TLS = """ ssl;
    ssl_certificate {dir}/tls/cert.pem; ssl_certificate_key {dir}/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m"""
HAPROXY_TLS = " ssl crt {dir}/tls/haproxy.pem"
RINGWAY_TLS = """[listeners.tls]
certificates = [{{ cert = "{dir}/tls/cert.pem", key = "{dir}/tls/key.pem" }}]"""

# The "logged" scenario's access log (BENCHMARKING.md's fair peers); "main" is nginx's
# predefined "combined" format under the usual name.
NGINX_ACCESS_LOG = """log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent"';
  access_log {path} main buffer=64k flush=1s;"""

HAPROXY = """global
    nbthread 1
    maxconn {maxconn}
defaults
    mode http
{log}    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse safe
frontend fe
    bind 127.0.0.1:{port}{tls}
    default_backend be
backend be
    server s1 127.0.0.1:{backend} maxconn 1000
"""
# The "logged" scenario: one httplog line per request, written by HAProxy itself (one
# writev each) to its stdout, which Proxy.start redirects to the access log file;
# dontlognull leaves out connections without a request (wait_port's probe).
HAPROXY_LOG = """    log stdout format raw local0
    option httplog
    option dontlognull
"""

# Ringway with its defaults (X-Forwarded-*, X-Request-Id on), one unpinned worker
# (taskset places it).
# The settings of the ringway-peerwork row: the nginx and HAProxy peers add no
# X-Forwarded-* and no request id, so this row does the same header work as they do.
PEER_WORK = ('forwarding.x_forwarded_for = "off"', "forwarding.request_id = false")

RINGWAY = """[runtime]
workers = 1
pin_workers = false
{runtime_extra}

[[listeners]]
name = "bench"
bind = "127.0.0.1:{port}"
{listener_extra}
{tls}

[forwarding]
{forwarding_extra}

[[routes]]
name = "all"
match = {{ path_prefix = "/" }}
cluster = "backend"

[clusters.backend]
endpoints = ["127.0.0.1:{backend}"]
{access_log}"""

RINGWAY_ACCESS_LOG = """
[access_log]
path = "{path}"
format = "json"
"""


# ----------------------------------------------------------------------------- processes

class Procs:
    """Every process this run started, stopped by pid at exit."""

    def __init__(self):
        self.live = []

    def start(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        self.live.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=30):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in list(self.live):
            self.stop(p, signal.SIGKILL, 5)


PROCS = Procs()


def wait_port(port, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Proxy:
    """One proxy under test: how to start it (plain or under cachegrind) and which pid
    does the work (nginx: the worker, not the master)."""

    def __init__(self, name, kind, port, d, binary=None, settings=(), only=None):
        self.name = name
        # "key = value" goes to [runtime], "listener.key = value" to the listener,
        # "forwarding.key = value" to [forwarding].
        def section(prefix):
            return "\n".join(x[len(prefix):] for x in settings if x.startswith(prefix))
        self.runtime_extra = "\n".join(x for x in settings
                                       if not x.startswith(("listener.", "forwarding.")))
        self.listener_extra = section("listener.")
        self.forwarding_extra = section("forwarding.")
        # The scenarios this proxy is measured in (None: all of them).
        self.only = only
        self.kind = kind
        self.port = port
        self.dir = d
        self.binary = binary
        self.proc = None
        self.pid = None
        # The access log file of the running process ("logged" scenario; None: no log),
        # and one {"phase", "requests", "lines"} per logging process, in start order.
        self.access_log = None
        self.phase = None
        self.log_checks = []
        self.tls = False  # the running process terminates TLS

    def write_config(self, valgrind):
        log = self.access_log
        tls = "-tls" if self.tls else ""
        if self.kind == "nginx":
            path = f"{self.dir}/ngx-proxy-{self.name}{'-vg' if valgrind else ''}{'-log' if log else ''}{tls}.conf"
            access_log = NGINX_ACCESS_LOG.format(path=log) if log else "access_log off;"
            text = NGINX_PROXY.format(dir=self.dir, backend=BACKEND_PORT, port=self.port,
                                      master="master_process off;" if valgrind else "", access_log=access_log,
                                      tls=NGINX_TLS.format(dir=self.dir) if self.tls else "")
        elif self.kind == "haproxy":
            path = f"{self.dir}/haproxy-{self.name}{'-log' if log else ''}{tls}.cfg"
            text = HAPROXY.format(port=self.port, backend=BACKEND_PORT, maxconn=HAPROXY_MAXCONN,
                                  log=HAPROXY_LOG if log else "",
                                  tls=HAPROXY_TLS.format(dir=self.dir) if self.tls else "")
        else:
            path = f"{self.dir}/ringway-{self.name}{'-log' if log else ''}{tls}.toml"
            text = RINGWAY.format(port=self.port, backend=BACKEND_PORT, runtime_extra=self.runtime_extra,
                                  listener_extra=self.listener_extra, forwarding_extra=self.forwarding_extra,
                                  access_log=RINGWAY_ACCESS_LOG.format(path=log) if log else "",
                                  tls=RINGWAY_TLS.format(dir=self.dir) if self.tls else "")
        with open(path, "w") as f:
            f.write(text)
        return path

    def argv(self, valgrind):
        if self.kind == "floor":
            return [self.binary, "relay", f"127.0.0.1:{self.port}", f"127.0.0.1:{BACKEND_PORT}", "parse"]
        cfg = self.write_config(valgrind)
        if self.kind == "nginx":
            return ["nginx", "-p", self.dir, "-c", cfg]
        if self.kind == "haproxy":
            return ["haproxy", "-db", "-f", cfg]
        return [self.binary, "--config", cfg, "--log-level", "warn"]

    def start(self, cachegrind_out=None, access_log=False, phase=None, tls=False):
        """access_log: write an access log line per request (the "logged" scenario);
        phase: what this process measures, for its access log check; tls: terminate TLS."""
        self.access_log = None
        self.tls = tls
        if access_log:
            if self.kind == "floor":
                raise RuntimeError("the floor relay writes no access log")
            name = "ngx" if self.kind == "nginx" else self.name
            self.access_log = f"{self.dir}/{name}-access.log"
            self.phase = phase or ("cachegrind" if cachegrind_out else "run")
            if os.path.exists(self.access_log):
                os.unlink(self.access_log)
        ANSWERED[self.port] = 0
        argv = self.argv(cachegrind_out is not None)
        if cachegrind_out:
            argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "-q",
                    f"--cachegrind-out-file={cachegrind_out}"] + argv
        log = open(f"{self.dir}/{self.name}.log", "ab")
        out = log
        if self.access_log and self.kind == "haproxy":
            # "log stdout": HAProxy's stdout is its access log (O_APPEND).
            out = open(self.access_log, "ab")
        self.proc = PROCS.start(["taskset", "-c", "1"] + argv, stdout=out, stderr=log)
        if out is not log:
            out.close()
        wait_port(self.port, 120 if cachegrind_out else 20, self.proc)
        self.pid = self.proc.pid
        if self.kind == "nginx" and not cachegrind_out:
            deadline = time.monotonic() + 10
            while not children(self.proc.pid):
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx worker did not start")
                time.sleep(0.05)
            self.pid = children(self.proc.pid)[0]

    def stop(self):
        if self.proc is None:
            return
        # Graceful stops, so that cachegrind writes its output: nginx exits on SIGTERM,
        # Ringway drains on SIGTERM, HAProxy soft-stops on SIGUSR1.
        sig = signal.SIGUSR1 if self.kind == "haproxy" else signal.SIGTERM
        PROCS.stop(self.proc, sig, 120)
        self.proc = None
        if self.access_log:
            self.check_access_log()

    def check_access_log(self):
        """Counts the stopped process's access log lines (its buffers are flushed by
        then) against the 2xx answers h2load got from it, warns below 99 %, and deletes
        the file so that the next process starts a fresh one."""
        path, self.access_log = self.access_log, None
        lines = 0
        if os.path.exists(path):
            with open(path, "rb") as f:
                # HAProxy's stdout also gets "Proxy fe stopped (...)" when it stops.
                lines = sum(1 for line in f if not (self.kind == "haproxy" and line.startswith(b"Proxy ")))
            os.unlink(path)
        requests = ANSWERED.get(self.port, 0)
        self.log_checks.append({"phase": self.phase, "requests": requests, "lines": lines})
        share = lines / requests if requests else None
        if share is None or share < 0.99:
            print(f"   WARNING {self.name}: access log has {lines} lines for {requests} requests "
                  f"({self.phase})", file=sys.stderr, flush=True)

    def rejects_access_log(self):
        """Ringway only: why `ringway check` rejects this proxy's config with the
        [access_log] section (a build without access logs), or None."""
        if self.kind != "ringway":
            return None
        self.access_log = f"{self.dir}/{self.name}-access.log"
        try:
            cfg = self.write_config(False)
        finally:
            self.access_log = None
        r = subprocess.run([self.binary, "check", "--config", cfg], capture_output=True, text=True)
        return None if r.returncode == 0 else (r.stderr.strip() or f"exit status {r.returncode}")

    def take_log_checks(self):
        """The access log checks since the last call, summed, for the JSON results."""
        checks, self.log_checks = self.log_checks, []
        requests = sum(c["requests"] for c in checks)
        lines = sum(c["lines"] for c in checks)
        return {"requests": requests, "lines": lines,
                "lines_per_request": lines / requests if requests else None, "runs": checks}


# ----------------------------------------------------------------------------- measuring

# 2xx answers h2load got through each port since the proxy on it started: the requests
# its access log must hold (the "logged" scenario).
ANSWERED = {}


def h2load(port, sc, n=None, c=None, duration=None, rate=None, log_file=None, timeout=300):
    argv = ["taskset", "-c", "0", "h2load", "--h1", "-t", "1"]
    new_conn = any(h.lower() == "connection: close" for h in sc.headers)
    if new_conn and rate:
        # A new connection per request: h2load's --rps does not apply to those, so
        # open one connection per request at the offered rate (--rate per 100 ms).
        total = int(rate * (duration or 5))
        argv += ["-c", str(total), "-n", str(total), "--rate", str(max(1, rate // 10)),
                 "--rate-period", "100ms"]
    elif new_conn:
        # h2load's -D never ends with Connection: close (nghttp2 1.52): a count instead.
        argv += ["-c", str(c or sc.c), "-n", str(n or sc.n)]
    else:
        argv += ["-c", str(c or sc.c)]
        if duration:
            argv += ["-D", str(duration)]
        else:
            argv += ["-n", str(n or sc.n)]
        if rate:
            argv += ["--rps", f"{rate / (c or sc.c):.3f}"]
    if log_file:
        argv += ["--log-file", log_file]
    argv += sc.h2load_args() + [f"{'https' if sc.tls else 'http'}://127.0.0.1:{port}{sc.path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout).stdout
    m = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if not m or not codes:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    ok = int(codes.group(1))
    bad = int(m.group(2)) + int(m.group(3)) + sum(int(codes.group(i)) for i in (2, 3, 4))
    ANSWERED[port] = ANSWERED.get(port, 0) + ok
    return {"ok": ok, "bad": bad, "rps": float(rps.group(1)) if rps else None}


def s_time(port, mode, seconds, timeout=600):
    """`openssl s_time` for `seconds`: one connection at a time, each a TLS 1.3 handshake
    ("new": full, "reuse": resumed) and one HTTP/1.0 GET read to the end. Returns the
    number of connections it completed."""
    argv = ["taskset", "-c", "0", "openssl", "s_time", "-connect", f"127.0.0.1:{port}", f"-{mode}",
            "-tls1_3", "-time", str(seconds), "-www", "/"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    m = re.search(r"(\d+) connections in", r.stdout)
    if not m or "ERROR" in r.stdout + r.stderr:
        raise RuntimeError(f"s_time output not understood:\n{r.stdout}\n{r.stderr}")
    # s_time prints "r" for each resumed connection, "*" for each full handshake.
    n = int(m.group(1))
    marks = "".join(re.findall(r"^[r*]+$", r.stdout, re.M))
    want = "r" if mode == "reuse" else "*"
    if marks.count(want) != n:
        raise RuntimeError(f"s_time -{mode}: {marks.count(want)} of {n} connections {want!r}:\n{r.stdout}")
    return n


def probe_tls(port):
    """What a proxy negotiates with OpenSSL's client (TLS 1.3 offered, its default
    groups and ciphers), and whether a GET through it over TLS answers 200."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "bench.example",
                        "-brief", "-ign_eof"], input="GET / HTTP/1.0\r\n\r\n", capture_output=True,
                       text=True, timeout=30)
    info = {}
    for line in (r.stdout + r.stderr).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Protocol version", "Ciphersuite", "Server Temp Key", "Peer signature type"):
            info[key.strip()] = value.strip()
    status = re.search(r"HTTP/1\.\d (\d{3})", r.stdout)
    info["status"] = int(status.group(1)) if status else None
    if info["status"] != 200:
        raise RuntimeError(f"GET over TLS to port {port} failed:\n{r.stdout}\n{r.stderr}")
    return info


def cpu_ns(pid):
    """CPU time of every thread of `pid`, in ns (schedstat: exact, not tick-sampled)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def stat_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), v[7]  # total (user..steal), steal


def steal_pct(before, after):
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else 0.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def perf_counts(px, sc, d):
    out = f"{d}/perf-{px.name}-{sc.name}.csv"
    perf = PROCS.start(["perf", "stat", "-x,", "-e", ",".join(PERF_EVENTS), "-p", str(px.pid),
                        "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let perf attach
    before = stat_cpu()
    if sc.handshakes:
        r = {"ok": s_time(px.port, sc.handshakes, DURATION), "bad": 0}
    else:
        r = h2load(px.port, sc)
    after = stat_cpu()
    PROCS.stop(perf, signal.SIGINT, 30)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2] in PERF_NAMES and parts[0].strip().isdigit():
                counts[PERF_NAMES[parts[2]]] = int(parts[0])
    if r["bad"]:
        print(f"   WARNING {px.name} {sc.name}: {r['bad']} failed requests", file=sys.stderr, flush=True)
    per = {k: v / r["ok"] for k, v in counts.items()} if r["ok"] else {}
    return {"requests": r["ok"], "failed": r["bad"], "steal_pct": round(steal_pct(before, after), 2),
            "counts": counts, "per_request": per}


def user_sys_ticks(pid):
    """utime and stime of the process (clock ticks): only for the user/kernel split."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def fixed_load_cpu(px, sc):
    """CPU per request at the scenario's offered load (s_time scenarios: at the pace of
    one connection at a time)."""
    before_s, before_c, before_t = stat_cpu(), cpu_ns(px.pid), user_sys_ticks(px.pid)
    if sc.handshakes:
        r = {"ok": s_time(px.port, sc.handshakes, DURATION), "bad": 0}
    else:
        r = h2load(px.port, sc, duration=DURATION, rate=sc.rate)
    after_c, after_s, after_t = cpu_ns(px.pid), stat_cpu(), user_sys_ticks(px.pid)
    steal = steal_pct(before_s, after_s)
    us = (after_c - before_c) / 1000.0 / r["ok"] if r["ok"] else None
    user, kernel = after_t[0] - before_t[0], after_t[1] - before_t[1]
    return {"us_per_req": us, "requests": r["ok"], "failed": r["bad"], "offered": sc.rate,
            "achieved_rps": r["ok"] / DURATION, "steal_pct": round(steal, 2),
            "user_share": user / (user + kernel) if user + kernel else None}


def saturation(px, sc, d):
    log = f"{d}/lat-{px.name}-{sc.name}.tsv"
    before = stat_cpu()
    r = h2load(px.port, sc, duration=DURATION, log_file=log)
    steal = steal_pct(before, stat_cpu())
    lat = []
    with open(log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].startswith("2"):
                lat.append(int(parts[2]))
    os.unlink(log)
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000.0 if lat else None

    # h2load's own figure: a new-connection run is a request count, not a duration.
    rps = r["rps"] if r["rps"] is not None else r["ok"] / DURATION
    return {"rps": rps, "failed": r["bad"], "p50_ms": pct(50), "p99_ms": pct(99),
            "p999_ms": pct(99.9), "steal_pct": round(steal, 2)}


def cachegrind(px, sc, d):
    irs = []
    counts = []
    for n in sc.cg:
        out = f"{d}/cg-{px.name}-{sc.name}-{n}.out"
        px.start(cachegrind_out=out, access_log=sc.access_log, phase=f"cachegrind {n}", tls=sc.tls)
        if sc.handshakes:
            # s_time runs for n seconds: the connections it made are the count.
            counts.append(s_time(px.port, sc.handshakes, n))
        else:
            # Warm-up connection established; then exactly n requests at c=10.
            r = h2load(px.port, sc, n=n, c=10, timeout=900)
            if r["ok"] != n:
                px.stop()
                raise RuntimeError(f"{px.name} under cachegrind: {r}")
            counts.append(n)
        px.stop()
        with open(out) as f:
            ir = next(int(line.split()[1]) for line in f if line.startswith("summary:"))
        irs.append(ir)
    if counts[1] <= counts[0]:
        raise RuntimeError(f"{px.name} under cachegrind: s_time made {counts} connections")
    return {"ir": irs, "counts": counts, "per_request": (irs[1] - irs[0]) / (counts[1] - counts[0])}


def make_cert(d):
    """The TLS scenarios' certificate: ECDSA P-256, self-signed, for bench.example; the
    key PEM for nginx and Ringway, key and certificate in one file for HAProxy."""
    os.makedirs(f"{d}/tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{d}/tls/key.pem", "-out", f"{d}/tls/cert.pem", "-days", "7",
                    "-subj", "/CN=bench.example", "-addext", "subjectAltName=DNS:bench.example"],
                   check=True, capture_output=True)
    with open(f"{d}/tls/haproxy.pem", "w") as out:
        for name in ("cert.pem", "key.pem"):
            with open(f"{d}/tls/{name}") as f:
                out.write(f.read())


def floor_binary():
    """Builds bench/floor.rs (release profile) and returns its executable."""
    out = subprocess.run(["cargo", "bench", "--bench", "floor", "--no-run", "--quiet",
                          "--message-format=json"], cwd=ROOT, capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        msg = json.loads(line) if line.startswith("{") else {}
        if msg.get("target", {}).get("name") == "floor" and msg.get("executable"):
            return msg["executable"]
    raise RuntimeError("cargo built no floor executable")


IDLE_CLIENT = os.path.join(ROOT, "loadtest", "idle.py")


# Seconds between the last idle connection's response and the RSS reading: the
# proxies' idle state, after their periodic housekeeping (Ringway sweeps its pools
# once a second) has run; a connection opening burst is not idleness.
IDLE_SETTLE = 3.0


def idle_memory(px, conns, tls=False):
    """RSS per idle connection: (RSS with `conns` open - RSS before) / conns, and the
    marginal cost, from the second half alone (fixed costs such as pools and
    preallocated tables drop out of it). tls: each connection a TLS handshake first."""
    client = PROCS.start(["taskset", "-c", "0", sys.executable, IDLE_CLIENT, str(px.port), str(conns)]
                         + (["tls"] if tls else []),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def open_more(n):
        client.stdin.write(f"open {n}\n")
        client.stdin.flush()
        line = client.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"idle client failed: {line}")
        time.sleep(IDLE_SETTLE)
        return int(line[1]), rss_kib(px.pid)

    before = rss_kib(px.pid)
    half, mid = open_more(conns // 2)
    opened, during = open_more(conns - conns // 2)
    client.stdin.write("close\n")
    client.stdin.flush()
    client.wait(60)
    PROCS.live.remove(client)
    return {"connections": opened, "rss_before_kib": before, "rss_half_kib": mid,
            "rss_idle_kib": during, "settle_s": IDLE_SETTLE,
            "bytes_per_conn": (during - before) * 1024 / opened if opened else None,
            "marginal_bytes_per_conn": (during - mid) * 1024 / (opened - half) if opened > half else None}


def warm_up(px, sc):
    """Pools and caches warm before anything is counted."""
    if sc.handshakes:
        s_time(px.port, sc.handshakes, 1)
    else:
        h2load(px.port, sc, n=max(1000, sc.n // 20))


def median_clean(runs, key):
    clean = [r[key] for r in runs if r["steal_pct"] <= STEAL_LIMIT and r[key] is not None]
    return (statistics.median(clean) if clean else None), len(runs) - len(clean)


def fmt(v, digits=2):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def report(results, names):
    rows = []
    ratio_names = [n for n in names if n != "nginx"] if "nginx" in names else []
    rows.append("| scenario | metric | " + " | ".join(names + [f"{n} / nginx" for n in ratio_names]) + " |")
    rows.append("|" + "---|" * (2 + len(names) + len(ratio_names)))
    metrics = [
        ("syscalls/req", lambda r: r.get("perf", {}).get("per_request", {}).get("syscalls")),
        ("io_uring submits/req", lambda r: r.get("perf", {}).get("per_request", {}).get("uring_submits")),
        ("poll arms/req", lambda r: r.get("perf", {}).get("per_request", {}).get("poll_arms")),
        ("ctx switches/req", lambda r: r.get("perf", {}).get("per_request", {}).get("ctx_switches")),
        ("user instr/req", lambda r: r.get("cachegrind", {}).get("per_request")),
        ("CPU us/req @ fixed load", lambda r: r.get("cpu", {}).get("median_us_per_req")),
        ("  of which kernel us/req", lambda r: r.get("cpu", {}).get("kernel_us_per_req")),
        ("rps (info)", lambda r: r.get("sat", {}).get("median_rps")),
        ("p50 ms (info)", lambda r: r.get("sat", {}).get("median_p50_ms")),
        ("p99 ms (info)", lambda r: r.get("sat", {}).get("median_p99_ms")),
        ("p99.9 ms (info)", lambda r: r.get("sat", {}).get("median_p999_ms")),
        ("RSS bytes/idle conn", lambda r: r.get("idle", {}).get("bytes_per_conn")),
        ("RSS bytes/idle conn, marginal", lambda r: r.get("idle", {}).get("marginal_bytes_per_conn")),
        ("access log lines/req", lambda r: r.get("access_log", {}).get("lines_per_request")),
    ]
    for sc_name, per_proxy in results["scenarios"].items():
        for label, get in metrics:
            vals = {n: get(per_proxy.get(n, {})) for n in names}
            if all(v is None for v in vals.values()):
                continue
            digits = 3 if "/req" in label and "instr" not in label and "us" not in label else 2
            base = vals.get("nginx")
            ratios = [fmt(vals[n] / base, 2) + "x" if vals[n] is not None and base else "n/a"
                      for n in ratio_names]
            rows.append(f"| {sc_name} | {label} | " + " | ".join([fmt(vals[n], digits) for n in names] + ratios)
                        + " |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- main

DURATION = 5


def main():
    global DURATION
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests and rounds (< 3 minutes)")
    ap.add_argument("--ringway", action="append", default=[], metavar="NAME=BINARY[;KEY=VALUE...]",
                    help="a Ringway binary to measure, with optional settings ([runtime] keys, or listener.KEY), e.g. "
                         "'noflags=target/release/ringway;io_uring_flags=[]' (repeat to compare "
                         "builds or settings in one run)")
    ap.add_argument("--tls", action="store_true",
                    help="the TLS scenarios instead of the cleartext ones: tls-full,tls-resumed,tls-small,tls-1m,"
                         "tls-idle")
    ap.add_argument("--scenarios", help="comma-separated subset of: small,logged,1k,64k,1m,upload,newconn,idle "
                                        "(with --tls: tls-full,tls-resumed,tls-small,tls-1m,tls-idle)")
    ap.add_argument("--proxies", help="comma-separated subset of the proxy names")
    ap.add_argument("--rounds", type=int, help="interleaved rounds for the timed figures")
    ap.add_argument("--idle-conns", type=int, default=10_000)
    ap.add_argument("--no-cachegrind", action="store_true")
    ap.add_argument("--no-floor", action="store_true",
                    help="leave out the bare monoio relay of bench/floor.rs (small GET only)")
    ap.add_argument("--no-peer-work", action="store_true",
                    help="leave out the ringway-peerwork row (small GET only; measured when no "
                         "--ringway is given): Ringway with the peers' header work, " + "; ".join(PEER_WORK))
    ap.add_argument("--out", help="JSON output file (default loadtest/results/compare-<time>.json)")
    args = ap.parse_args()

    rounds = args.rounds or (1 if args.quick else 3)
    DURATION = 3 if args.quick else 5
    d = tempfile.mkdtemp(prefix="ringway-loadtest-")
    # nginx workers run as an unprivileged user: they must be able to read www/.
    os.chmod(d, 0o755)
    os.makedirs(f"{d}/www")
    for name, size in (("1k", 1024), ("64k", 65536), ("1m", 1 << 20)):
        with open(f"{d}/www/{name}", "wb") as f:
            f.write(os.urandom(size))
    upload = f"{d}/upload.bin"
    with open(upload, "wb") as f:
        f.write(os.urandom(1 << 20))

    binary = f"{ROOT}/target/release/ringway"
    ringways = [x.split("=", 1) for x in args.ringway] or [["ringway", binary]]
    proxies = []
    for i, (name, spec) in enumerate(ringways):
        path, *settings = spec.split(";")
        proxies.append(Proxy(name, "ringway", PORTS["ringway"] + 10 * i, d, os.path.abspath(path),
                             settings))
    if not args.ringway and not args.no_peer_work and not args.tls:
        # Ringway doing the header work the nginx and HAProxy peers are configured for:
        # none beyond the hop-by-hop rules (no X-Forwarded-*, no request id).
        proxies.append(Proxy("ringway-peerwork", "ringway", PORTS["ringway"] + 10 * len(proxies), d,
                             os.path.abspath(binary), PEER_WORK, only={"small"}))
    if not args.tls and not args.no_floor and (not args.proxies or "floor" in args.proxies.split(",")):
        proxies.append(Proxy("floor", "floor", PORTS["floor"], d, floor_binary(), only={"small"}))
    proxies.append(Proxy("nginx", "nginx", PORTS["nginx"], d))
    proxies.append(Proxy("haproxy", "haproxy", PORTS["haproxy"], d))
    if args.proxies:
        keep = args.proxies.split(",")
        proxies = [p for p in proxies if p.name in keep]
    names = [p.name for p in proxies]

    all_sc = tls_scenarios(args.quick) if args.tls else scenarios(args.quick, upload)
    idle = "tls-idle" if args.tls else "idle"
    wanted = args.scenarios.split(",") if args.scenarios else [s.name for s in all_sc] + [idle]
    if args.tls:
        make_cert(d)
    scs = [s for s in all_sc if s.name in wanted]
    idle_conns = 2_000 if args.quick and args.idle_conns == 10_000 else args.idle_conns

    with open(f"{d}/ngx-backend.conf", "w") as f:
        f.write(NGINX_BACKEND.format(dir=d, backend=BACKEND_PORT))
    backend = PROCS.start(["taskset", "-c", "0", "nginx", "-p", d, "-c", f"{d}/ngx-backend.conf"],
                          stderr=subprocess.DEVNULL)
    wait_port(BACKEND_PORT, 10, backend)

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "unknown")
    results = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                        "commit": commit, "kernel": os.uname().release, "cpu": cpu_model,
                        "quick": args.quick, "rounds": rounds, "duration_s": DURATION,
                        "steal_limit_pct": STEAL_LIMIT, "command": " ".join(sys.argv),
                        "scenario_notes": {s.name: s.notes for s in scs if s.notes}},
               "scenarios": {}}
    started = time.monotonic()
    try:
        for sc in scs:
            res = results["scenarios"].setdefault(sc.name, {})
            # Quick mode: every figure for the small GET, the timed ones with access logs,
            # exact counts for the rest.
            full = not args.quick or sc.quick in ("timed", "all")
            # The floor relay knows only bodiless requests and Content-Length responses;
            # it and the peer-work row are measured for the small GET, where Ringway's
            # own cost is the question.
            pxs = [p for p in proxies if p.only is None or sc.name in p.only]
            print(f"== {sc.title}", file=sys.stderr, flush=True)
            if sc.access_log:
                for px in list(pxs):
                    why = px.rejects_access_log()
                    if why:
                        print(f"   WARNING {px.name}: left out, its binary rejects [access_log]: {why}",
                              file=sys.stderr, flush=True)
                        res[px.name] = {"left_out": why}
                        pxs.remove(px)
            for px in pxs:
                px.start(access_log=sc.access_log, phase="perf", tls=sc.tls)
                warm_up(px, sc)
                if sc.tls:
                    res.setdefault(px.name, {})["tls"] = probe_tls(px.port)
                res.setdefault(px.name, {})["perf"] = perf_counts(px, sc, d)
                px.stop()
                print(f"   {px.name}: perf {res[px.name]['perf']['per_request']}", file=sys.stderr, flush=True)
            if full:
                for px in pxs:
                    px.start(access_log=sc.access_log, phase="timed", tls=sc.tls)
                    warm_up(px, sc)
                    res[px.name]["cpu_runs"] = []
                    res[px.name]["sat_runs"] = []
                # Interleaved: A B C A B C ...
                for _ in range(rounds):
                    for px in pxs:
                        res[px.name]["cpu_runs"].append(fixed_load_cpu(px, sc))
                    if sc.saturation:
                        for px in pxs:
                            res[px.name]["sat_runs"].append(saturation(px, sc, d))
                for px in pxs:
                    px.stop()
                    r = res[px.name]
                    med, discarded = median_clean(r["cpu_runs"], "us_per_req")
                    share = median_clean(r["cpu_runs"], "user_share")[0]
                    r["cpu"] = {"median_us_per_req": med, "discarded_for_steal": discarded,
                                "median_user_share": share,
                                "kernel_us_per_req": med * (1 - share) if med and share is not None else None}
                    rps = "not measured"
                    if sc.saturation:
                        sat = {"discarded_for_steal": median_clean(r["sat_runs"], "rps")[1]}
                        for k in ("rps", "p50_ms", "p99_ms", "p999_ms"):
                            sat[f"median_{k}"] = median_clean(r["sat_runs"], k)[0]
                        r["sat"] = sat
                        rps = sat["median_rps"]
                    else:
                        del r["sat_runs"]
                    print(f"   {px.name}: cpu {med} us/req ({discarded} discarded), rps {rps}",
                          file=sys.stderr, flush=True)
                if not args.no_cachegrind and (not args.quick or sc.quick == "all"):
                    # The floor relay cannot be stopped under valgrind (bench/floor.rs);
                    # tuning.md section 2 counts it with callgrind instead.
                    for px in [p for p in pxs if p.kind != "floor"]:
                        res[px.name]["cachegrind"] = cachegrind(px, sc, d)
                        print(f"   {px.name}: {res[px.name]['cachegrind']['per_request']:.0f} instr/req",
                              file=sys.stderr, flush=True)
            if sc.access_log:
                for px in pxs:
                    log = res[px.name]["access_log"] = px.take_log_checks()
                    print(f"   {px.name}: access log {log['lines']} lines for {log['requests']} requests",
                          file=sys.stderr, flush=True)
        for idle, tls in (("idle", False), ("tls-idle", True)):
            if idle not in wanted:
                continue
            print(f"== {idle_conns} idle {'TLS ' if tls else ''}keep-alive connections", file=sys.stderr,
                  flush=True)
            res = results["scenarios"].setdefault(idle, {})
            for px in [p for p in proxies if p.only is None or idle in p.only]:
                px.start(tls=tls)
                n = min(idle_conns, HAPROXY_MAXCONN - 100) if px.kind == "haproxy" else idle_conns
                res.setdefault(px.name, {})["idle"] = idle_memory(px, n, tls)
                px.stop()
                print(f"   {px.name}: {res[px.name]['idle']}", file=sys.stderr, flush=True)
    finally:
        for px in proxies:
            px.stop()
        PROCS.stop(backend)
        PROCS.stop_all()

    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    os.makedirs(f"{ROOT}/loadtest/results", exist_ok=True)
    out = args.out or f"{ROOT}/loadtest/results/compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    m = results["meta"]
    print(f"Ringway {m['commit']}, kernel {m['kernel']}, {m['cpu']}, {m['date']}, "
          f"{'quick' if args.quick else 'full'} run, {m['elapsed_s']} s")
    print()
    print(report(results, names))
    print()
    for name, notes in m["scenario_notes"].items():
        print(f"{name}: {notes}")
    if m["scenario_notes"]:
        print()
    print(f"Raw figures (steal of every run included): {out}")
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    def on_signal(sig, _frame):
        PROCS.stop_all()
        sys.exit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    main()
