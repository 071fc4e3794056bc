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

--h2 runs the HTTP/2 and gRPC scenarios instead (--h2 --quick under 4 minutes), h2load
speaking HTTP/2 (no --h1), -m streams per connection. Each proxy serves HTTP/2 as an
operator sets it up:
  Ringway  over TLS: [listeners.tls] as in --tls (its ALPN list defaults to ["h2",
           "http/1.1"]); cleartext: listener http2 = true (prior knowledge);
  nginx    listen ... ssl http2 (nginx 1.22 syntax; the --tls settings) / listen ... http2;
  HAProxy  bind ... ssl crt FILE alpn h2,http/1.1 / bind ... proto h2.
  h2-small    small GET over TLS (ALPN h2), h2load -c 10 -m 10, to the HTTP/1.1 backend;
  h2c-small   the same over cleartext HTTP/2 with prior knowledge;
  h2-1m       1 MiB responses over TLS (ALPN h2), -c 5 -m 2 (10 streams in flight);
  grpc-unary  gRPC unary calls over h2c, -c 10 -m 10: POST /helloworld.Greeter/SayHello,
              content-type: application/grpc, te: trailers, a 12-byte length-prefixed
              protobuf message (h2load -d), to a gRPC backend over h2c: Ringway cluster
              protocol = "h2c", nginx grpc_pass grpc://..., HAProxy server ... proto h2.
The gRPC backend is a second server of the nginx backend (CPU 0), listen ... http2, that
reads each request body and answers 200 with a fixed 12-byte gRPC message and the trailer
grpc-status: 0 (NGINX_GRPC_BACKEND says how). With up to 100 streams in flight, each an
HTTP/1.1 exchange upstream (and for nginx's grpc_pass, which does not multiplex, a call on
an HTTP/2 connection of its own), the default idle pools of 64 made nginx and Ringway open
new upstream connections for about 13 % and 8 % of the small GETs, so both keep 128 here
(nginx upstream keepalive 128, Ringway pool_max_idle = 128; HAProxy kept its connections
with its defaults). Ringway keeps its default header work (X-Forwarded-*, request id),
which the peers do not do. Quick mode measures every figure for h2-small and grpc-unary
(cachegrind over 2,000 and 10,000 requests instead of 5,000 and 25,000), exact counts and
the timed figures for h2c-small and h2-1m.
Fixed loads: 10,000 req/s (gRPC: 5,000; 1 MiB: 100), about half of nginx's saturated rate
or less (nginx's, the lowest, measured 16,000-27,000 req/s for the small GETs on the 2-core
machine, 11,000-17,000 gRPC calls/s, 220-350 1 MiB downloads/s). A full run takes about 15
minutes.
Before measuring, each proxy must answer one request by another client: curl over HTTP/2
(ALPN h2 or prior knowledge: 200, the whole body), for gRPC nghttp (200, application/grpc,
the message in DATA, grpc-status: 0 in trailers after it) and grpcio's client when it is
installed (status OK, the reply). Every h2load run of these scenarios must negotiate h2
(TLS) or h2c, have no request failed, errored or other than 2xx, and receive every body
whole (h2load's data bytes: a proxy's trailers-only gRPC error is a 200 without a
message); the run stops with an error otherwise. A fixed-load run that falls 5 % short of
its offered rate is warned about. The issue's targets are printed under the table (and
under "targets" in the JSON): CPU per request in h2-small, h2c-small and grpc-unary at
most 0.9x nginx's in the same run.
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
GRPC_BACKEND_PORT = 18084  # the --h2 mode's gRPC backend (nginx, h2c)
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
                 saturation=True, quick="exact", notes=None, tls=False, handshakes=None, h2=False,
                 streams=1, grpc=False, body_size=None):
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
        # The --h2 scenarios: the client speaks HTTP/2 (over TLS by ALPN h2 when tls, else
        # cleartext with prior knowledge), `streams` concurrent streams per connection
        # (h2load -m); grpc: the proxies forward to the nginx gRPC responder over h2c
        # instead of the HTTP/1.1 backend; body_size: the response body's bytes, checked
        # against h2load's data count (a trailers-only gRPC error has none).
        self.h2 = h2
        self.streams = streams
        self.grpc = grpc
        self.body_size = body_size

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


# The gRPC unary call of grpc-unary: helloworld.Greeter/SayHello, a HelloRequest
# {name: "world"} in, a HelloReply {message: "hello"} out, each a length-prefixed gRPC
# message (flag 0, 4-byte big-endian length, protobuf bytes).
GRPC_PATH = "/helloworld.Greeter/SayHello"
GRPC_REQUEST = b"\x0a\x05world"
GRPC_REPLY = b"\x0a\x05hello"


def grpc_frame(msg):
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"]


def h2_scenarios(quick, grpc_request):
    k = 4 if quick else 1
    cg = (2_000, 10_000) if quick else (5_000, 25_000)  # quick runs stay under 4 minutes
    h1_backend = ("backend the HTTP/1.1 nginx backend, kept-alive connections (nginx upstream keepalive 128, "
                  "Ringway pool_max_idle = 128: room for the 100 streams in flight; HAProxy http-reuse safe)")
    return [
        Scenario("h2-small", "small GET over HTTP/2 and TLS, c=10 m=10", "/", 200_000 // k, 10, 10_000,
                 cg, tls=True, h2=True, streams=10, body_size=5, quick="all",
                 notes="h2load -c 10 -m 10, TLS with ALPN h2: Ringway [listeners.tls] (alpn defaults to "
                       "[\"h2\", \"http/1.1\"]); nginx listen ... ssl http2 (nginx 1.22 syntax), the "
                       "--tls settings; HAProxy bind ... ssl crt FILE alpn h2,http/1.1; " + h1_backend),
        Scenario("h2c-small", "small GET over cleartext HTTP/2 (prior knowledge), c=10 m=10", "/",
                 200_000 // k, 10, 10_000, cg, h2=True, streams=10, body_size=5, quick="timed",
                 notes="h2load -c 10 -m 10 over h2c (prior knowledge): Ringway listener http2 = true; "
                       "nginx listen ... http2 (no ssl); HAProxy bind ... proto h2; " + h1_backend),
        Scenario("h2-1m", "1 MiB response over HTTP/2 and TLS, c=5 m=2", "/1m", 4_000 // k, 5, 100, (100, 500),
                 tls=True, h2=True, streams=2, body_size=1 << 20, quick="timed",
                 notes="h2load -c 5 -m 2 (10 streams in flight, as tls-1m's 10 connections), TLS with ALPN h2 "
                       "as h2-small; " + h1_backend),
        Scenario("grpc-unary", "gRPC unary call, h2c client to an h2c gRPC backend, c=10 m=10", GRPC_PATH,
                 200_000 // k, 10, 5_000, cg, method_args=["-d", grpc_request],
                 headers=GRPC_HEADERS, h2=True, streams=10, grpc=True, body_size=len(grpc_frame(GRPC_REPLY)),
                 quick="all",
                 notes="h2load -c 10 -m 10 over h2c, POST " + GRPC_PATH + " with content-type: "
                       "application/grpc, te: trailers and a 12-byte gRPC message; each proxy's listener as "
                       "in h2c-small, to the nginx gRPC responder over h2c (prior knowledge): Ringway cluster "
                       "protocol = \"h2c\" (streams multiplexed on its upstream connections); nginx grpc_pass "
                       "grpc://UPSTREAM, upstream keepalive 128 (one stream per upstream connection); HAProxy "
                       "server ... proto h2 (multiplexed). The responder (nginx, listen ... http2) reads the "
                       "request body (mirror_request_body), then answers 200, a 12-byte gRPC message and the "
                       "trailer grpc-status: 0"),
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
    location = /upload-sink {{ default_type text/plain; return 200 "ok"; }} }}{grpc_server} }}
"""
# The --h2 mode's gRPC backend, in the same nginx backend process: cleartext HTTP/2
# (prior knowledge) answering every call with the same gRPC message ({dir}/grpc/reply.bin:
# flag 0, 4-byte length, protobuf) and the trailer grpc-status: 0. It reads the request
# body before answering, as a gRPC server does (mirror_request_body; an answer before the
# body has arrived would end each stream with RST_STREAM(NO_ERROR) instead). nginx's
# static module answers POST with 405, which error_page turns into the internal GET of
# the reply; nginx leaves out the empty grpc-message trailer. sendfile off: with it, nginx
# sends the file's DATA frame corked with TCP_NODELAY off, and Nagle then holds it (and the
# trailers) behind the unacknowledged HEADERS frame until the proxy's delayed ACK, 40 ms.
NGINX_GRPC_BACKEND = """
  server {{ listen 127.0.0.1:{port} http2 backlog=4096;
    sendfile off; open_file_cache max=16 inactive=1h; open_file_cache_valid 1h;
    location / {{ mirror /read-body; mirror_request_body on;
      root {dir}/grpc; try_files /reply.bin =404;
      error_page 405 =200 /grpc-reply; }}
    location = /read-body {{ internal; return 204; }}
    location = /grpc-reply {{ internal; alias {dir}/grpc/reply.bin; default_type application/grpc;
      etag off; max_ranges 0; add_header Last-Modified "";
      add_trailer grpc-status 0 always; add_trailer grpc-message "" always; }} }}"""

# The peers' reverse-proxy config of BENCHMARKING.md; uploads are streamed like Ringway's
# (no request buffering, no body size limit), and worker_connections leaves room for the
# idle-connection scenario.
NGINX_PROXY = """worker_processes 1; daemon off; {master} pid {dir}/ngx-proxy.pid;
error_log {dir}/ngx-proxy.err warn; worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{ {access_log} keepalive_requests 1000000; keepalive_timeout 75s;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive {keepalive}; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port} backlog=4096{tls};
    client_max_body_size 0;
    location / {{ {location} }} }} }}
"""
NGINX_PROXY_PASS = """proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_request_buffering off;"""
# grpc-unary: to the gRPC backend over h2c (the upstream's server is then that port).
NGINX_GRPC_PASS = "grpc_pass grpc://backend;"
# The TLS scenarios: the same server, terminating TLS ({dir}/tls, made by make_cert);
# {http2} is " http2" in the --h2 scenarios over TLS (ALPN h2), else empty.
NGINX_TLS = """ ssl{http2};
    ssl_certificate {dir}/tls/cert.pem; ssl_certificate_key {dir}/tls/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m"""
HAPROXY_TLS = " ssl crt {dir}/tls/haproxy.pem"
# The --h2 scenarios: HTTP/2 by ALPN over TLS, prior knowledge in cleartext, and (grpc)
# HTTP/2 to the server.
HAPROXY_ALPN_H2 = " alpn h2,http/1.1"
HAPROXY_H2C = " proto h2"
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
    server s1 127.0.0.1:{backend} maxconn 1000{server_extra}
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
endpoints = ["127.0.0.1:{backend}"]{cluster_extra}
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
        self.h2 = False  # the running process serves HTTP/2 (ALPN h2 with tls, else h2c)
        self.grpc = False  # the running process forwards to the gRPC backend over h2c

    def write_config(self, valgrind):
        log = self.access_log
        tls = ("-tls" if self.tls else "") + ("-h2" if self.h2 else "") + ("-grpc" if self.grpc else "")
        # --h2 mode: HTTP/2 clients put up to c x m requests in flight, each needing its
        # own HTTP/1.1 upstream connection (nginx's gRPC ones too): idle pools of 128.
        backend = GRPC_BACKEND_PORT if self.grpc else BACKEND_PORT
        if self.kind == "nginx":
            path = f"{self.dir}/ngx-proxy-{self.name}{'-vg' if valgrind else ''}{'-log' if log else ''}{tls}.conf"
            access_log = NGINX_ACCESS_LOG.format(path=log) if log else "access_log off;"
            listen = NGINX_TLS.format(dir=self.dir, http2=" http2" if self.h2 else "") if self.tls else (
                " http2" if self.h2 else "")
            text = NGINX_PROXY.format(dir=self.dir, backend=backend, port=self.port,
                                      master="master_process off;" if valgrind else "", access_log=access_log,
                                      tls=listen, keepalive=128 if self.h2 else 64,
                                      location=NGINX_GRPC_PASS if self.grpc else NGINX_PROXY_PASS)
        elif self.kind == "haproxy":
            path = f"{self.dir}/haproxy-{self.name}{'-log' if log else ''}{tls}.cfg"
            bind = HAPROXY_TLS.format(dir=self.dir) if self.tls else ""
            if self.h2:
                bind += HAPROXY_ALPN_H2 if self.tls else HAPROXY_H2C
            text = HAPROXY.format(port=self.port, backend=backend, maxconn=HAPROXY_MAXCONN,
                                  log=HAPROXY_LOG if log else "", tls=bind,
                                  server_extra=HAPROXY_H2C if self.grpc else "")
        else:
            path = f"{self.dir}/ringway-{self.name}{'-log' if log else ''}{tls}.toml"
            listener_extra = self.listener_extra
            if self.h2 and not self.tls:
                listener_extra = "http2 = true\n" + listener_extra
            cluster_extra = ""
            if self.h2:
                cluster_extra += "\npool_max_idle = 128"
            if self.grpc:
                cluster_extra += '\nprotocol = "h2c"'
            text = RINGWAY.format(port=self.port, backend=backend, runtime_extra=self.runtime_extra,
                                  listener_extra=listener_extra, forwarding_extra=self.forwarding_extra,
                                  access_log=RINGWAY_ACCESS_LOG.format(path=log) if log else "",
                                  tls=RINGWAY_TLS.format(dir=self.dir) if self.tls else "",
                                  cluster_extra=cluster_extra)
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

    def start(self, cachegrind_out=None, access_log=False, phase=None, tls=False, h2=False, grpc=False):
        """access_log: write an access log line per request (the "logged" scenario);
        phase: what this process measures, for its access log check; tls: terminate TLS;
        h2: serve HTTP/2 (ALPN h2 with tls, else prior knowledge); grpc: forward to the
        gRPC backend over h2c."""
        self.access_log = None
        self.tls = tls
        self.h2 = h2
        self.grpc = grpc
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
    argv = ["taskset", "-c", "0", "h2load", "-t", "1"]
    if sc.h2:
        # HTTP/2: by ALPN over TLS (h2load offers h2 first), with prior knowledge in cleartext.
        argv += ["-m", str(sc.streams)]
    else:
        argv += ["--h1"]
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
    if sc.h2:
        # The --h2 scenarios fail loudly: HTTP/2 negotiated, no request failed, errored or
        # answered other than 2xx, and every answer's whole body (a gRPC error from a
        # proxy is a 200 too, but trailers-only, without the message).
        proto = re.search(r"Application protocol: (\S+)", out)
        want = "h2" if sc.tls else "h2c"
        data = re.search(r"\((\d+)\) data", out)
        problems = []
        if not proto or proto.group(1) != want:
            problems.append(f"protocol {proto.group(1) if proto else None}, not {want}")
        if bad or not ok:
            problems.append(f"{ok} 2xx and {bad} failed, errored or not 2xx")
        # Bodies of the succeeded (completed) requests; a timed run (-D) also counts part
        # of those still in flight when it ends (their 2xx too).
        done = int(m.group(1))
        extra = (c or sc.c) * sc.streams * sc.body_size if duration and sc.body_size else 0
        if sc.body_size is not None and (not data or not done * sc.body_size <= int(data.group(1))
                                         <= done * sc.body_size + extra):
            problems.append(f"{data.group(1) if data else None} body bytes for {done} answers of {sc.body_size}")
        if problems:
            raise RuntimeError(f"h2load to port {port} ({sc.name}): {'; '.join(problems)}:\n{out}")
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


# One real gRPC call through a proxy with grpcio's client, when grpcio is installed (in a
# process of its own: grpcio's threads and fork handlers stay out of this one).
GRPCIO_CALL = """import sys, grpc
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
call = ch.unary_unary(sys.argv[2], request_serializer=None, response_deserializer=None)
resp, c = call.with_call(bytes.fromhex(sys.argv[3]), timeout=10)
print(resp.hex(), c.code().name)
"""


def probe_h2(port, sc, d):
    """Before measuring: one request through the proxy by another client than h2load,
    which must answer 200 over HTTP/2 with the whole body (curl); for gRPC, nghttp's
    frames must show the gRPC message in DATA and grpc-status: 0 in trailers after it,
    and grpcio's client (when installed) must get the reply with status OK."""
    scheme = "https" if sc.tls else "http"
    url = f"{scheme}://127.0.0.1:{port}{sc.path}"
    info = {}
    if not sc.grpc:
        r = subprocess.run(["curl", "-sk", "--http2" if sc.tls else "--http2-prior-knowledge", "-o", "/dev/null",
                            "-w", "%{http_version} %{http_code} %{size_download}", url],
                           capture_output=True, text=True, timeout=30)
        version, code, size = (r.stdout.split() + [None] * 3)[:3]
        info = {"http_version": version, "status": int(code) if code and code.isdigit() else None,
                "body_bytes": int(size) if size and size.isdigit() else None}
        if version != "2" or info["status"] != 200 or info["body_bytes"] != sc.body_size:
            raise RuntimeError(f"curl over HTTP/2 to port {port} ({sc.name}): {r.stdout} {r.stderr}")
        return info
    argv = ["nghttp", "-v", "-d", f"{d}/grpc/request.bin"]
    for h in sc.headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, timeout=30).stdout
    reply = grpc_frame(GRPC_REPLY)
    status = re.search(rb"recv \(stream_id=\d+\) :status: (\d+)", out)
    ctype = re.search(rb"recv \(stream_id=\d+\) content-type: (\S+)", out)
    trailer = re.search(rb"recv \(stream_id=\d+\) grpc-status: (\d+)", out)
    info = {"status": int(status.group(1)) if status else None,
            "content_type": ctype.group(1).decode() if ctype else None,
            "grpc_status_trailer": int(trailer.group(1)) if trailer else None,
            "message": reply in out and trailer is not None and out.index(reply) < trailer.start()}
    if info["status"] != 200 or info["content_type"] != "application/grpc" or info["grpc_status_trailer"] != 0 \
            or not info["message"]:
        raise RuntimeError(f"gRPC call through port {port} failed: {info}\n{out.decode(errors='replace')}")
    r = subprocess.run([sys.executable, "-c", GRPCIO_CALL, str(port), sc.path, GRPC_REQUEST.hex()],
                       capture_output=True, text=True, timeout=60)
    if "No module named 'grpc'" in r.stderr:
        info["grpcio"] = "not installed"
    elif r.returncode != 0 or r.stdout.split() != [GRPC_REPLY.hex(), "OK"]:
        raise RuntimeError(f"grpcio call through port {port} failed: {r.stdout} {r.stderr}")
    else:
        info["grpcio"] = "OK"
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
    if sc.h2 and r["ok"] < 0.95 * sc.rate * DURATION:
        # Not a fixed load: the proxy (or CPU 0) saturated, or host steal slowed it.
        print(f"   WARNING {px.name} {sc.name}: {r['ok'] / DURATION:.0f} req/s of {sc.rate} offered "
              f"(steal {steal:.1f} %)", file=sys.stderr, flush=True)
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
        px.start(cachegrind_out=out, access_log=sc.access_log, phase=f"cachegrind {n}", tls=sc.tls,
                 h2=sc.h2, grpc=sc.grpc)
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


# The targets for the --h2 scenarios, as ratios to nginx in the same run: CPU per
# h2 request (over TLS and h2c) and per gRPC unary call at most 0.9x.
H2_TARGETS = (("h2-small", 0.9), ("h2c-small", 0.9), ("grpc-unary", 0.9))


def h2_targets(results, proxies):
    out = []
    for sc_name, limit in H2_TARGETS:
        per_proxy = results["scenarios"].get(sc_name)
        if per_proxy is None:
            continue
        base = per_proxy.get("nginx", {}).get("cpu", {}).get("median_us_per_req")
        for px in proxies:
            if px.kind != "ringway" or px.name not in per_proxy:
                continue
            v = per_proxy[px.name].get("cpu", {}).get("median_us_per_req")
            ratio = v / base if v is not None and base else None
            out.append({"scenario": sc_name, "proxy": px.name, "limit": limit, "ratio": ratio,
                        "met": None if ratio is None else ratio <= limit})
    return out


# ----------------------------------------------------------------------------- main

DURATION = 5


def main():
    global DURATION
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests and rounds (< 3 minutes; --tls, --h2: < 4)")
    ap.add_argument("--ringway", action="append", default=[], metavar="NAME=BINARY[;KEY=VALUE...]",
                    help="a Ringway binary to measure, with optional settings ([runtime] keys, or listener.KEY), e.g. "
                         "'noflags=target/release/ringway;io_uring_flags=[]' (repeat to compare "
                         "builds or settings in one run)")
    ap.add_argument("--tls", action="store_true",
                    help="the TLS scenarios instead of the cleartext ones: tls-full,tls-resumed,tls-small,tls-1m,"
                         "tls-idle")
    ap.add_argument("--h2", action="store_true",
                    help="the HTTP/2 and gRPC scenarios instead of the cleartext ones: h2-small,h2c-small,h2-1m,"
                         "grpc-unary")
    ap.add_argument("--scenarios", help="comma-separated subset of: small,logged,1k,64k,1m,upload,newconn,idle "
                                        "(with --tls: tls-full,tls-resumed,tls-small,tls-1m,tls-idle; with --h2: "
                                        "h2-small,h2c-small,h2-1m,grpc-unary)")
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
    if args.tls and args.h2:
        ap.error("--tls and --h2 are separate runs")

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
    if not args.ringway and not args.no_peer_work and not args.tls and not args.h2:
        # Ringway doing the header work the nginx and HAProxy peers are configured for:
        # none beyond the hop-by-hop rules (no X-Forwarded-*, no request id).
        proxies.append(Proxy("ringway-peerwork", "ringway", PORTS["ringway"] + 10 * len(proxies), d,
                             os.path.abspath(binary), PEER_WORK, only={"small"}))
    if not args.tls and not args.h2 and not args.no_floor and (not args.proxies
                                                               or "floor" in args.proxies.split(",")):
        proxies.append(Proxy("floor", "floor", PORTS["floor"], d, floor_binary(), only={"small"}))
    proxies.append(Proxy("nginx", "nginx", PORTS["nginx"], d))
    proxies.append(Proxy("haproxy", "haproxy", PORTS["haproxy"], d))
    if args.proxies:
        keep = args.proxies.split(",")
        proxies = [p for p in proxies if p.name in keep]
    names = [p.name for p in proxies]

    grpc_request = f"{d}/grpc/request.bin"
    if args.h2:
        os.makedirs(f"{d}/grpc")
        for path, msg in ((grpc_request, GRPC_REQUEST), (f"{d}/grpc/reply.bin", GRPC_REPLY)):
            with open(path, "wb") as f:
                f.write(grpc_frame(msg))
    if args.h2:
        all_sc = h2_scenarios(args.quick, grpc_request)
    else:
        all_sc = tls_scenarios(args.quick) if args.tls else scenarios(args.quick, upload)
    idle = "tls-idle" if args.tls else "idle"
    wanted = args.scenarios.split(",") if args.scenarios else [s.name for s in all_sc] + (
        [] if args.h2 else [idle])
    unknown = [w for w in wanted if w not in [s.name for s in all_sc]]
    if unknown and args.h2:
        ap.error(f"unknown --h2 scenarios: {','.join(unknown)}")
    if args.tls or args.h2:
        make_cert(d)
    scs = [s for s in all_sc if s.name in wanted]
    idle_conns = 2_000 if args.quick and args.idle_conns == 10_000 else args.idle_conns

    with open(f"{d}/ngx-backend.conf", "w") as f:
        f.write(NGINX_BACKEND.format(dir=d, backend=BACKEND_PORT, grpc_server=NGINX_GRPC_BACKEND.format(
            dir=d, port=GRPC_BACKEND_PORT) if args.h2 else ""))
    backend = PROCS.start(["taskset", "-c", "0", "nginx", "-p", d, "-c", f"{d}/ngx-backend.conf"],
                          stderr=subprocess.DEVNULL)
    wait_port(BACKEND_PORT, 10, backend)
    if args.h2:
        wait_port(GRPC_BACKEND_PORT, 10, backend)

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
                px.start(access_log=sc.access_log, phase="perf", tls=sc.tls, h2=sc.h2, grpc=sc.grpc)
                warm_up(px, sc)
                if sc.tls:
                    res.setdefault(px.name, {})["tls"] = probe_tls(px.port)
                if sc.h2:
                    res.setdefault(px.name, {})["probe"] = probe_h2(px.port, sc, d)
                res.setdefault(px.name, {})["perf"] = perf_counts(px, sc, d)
                px.stop()
                print(f"   {px.name}: perf {res[px.name]['perf']['per_request']}", file=sys.stderr, flush=True)
            if full:
                for px in pxs:
                    px.start(access_log=sc.access_log, phase="timed", tls=sc.tls, h2=sc.h2, grpc=sc.grpc)
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
    if args.h2:
        targets = h2_targets(results, proxies)
        results["targets"] = targets
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        for t in targets:
            print(f"target {t['scenario']} CPU/req {t['proxy']} / nginx: "
                  f"{format(t['ratio'], '.3f') + 'x' if t['ratio'] is not None else 'n/a'} (<= {t['limit']}x: "
                  f"{'met' if t['met'] else 'NOT met' if t['met'] is False else 'not measured'})")
        if targets:
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
