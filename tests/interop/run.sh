#!/usr/bin/env bash
# Interop suite: real clients (curl) and a real upstream (Python) against the
# release binary. Installs what it needs. Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --quiet || exit 1
BIN=target/release/ringway
# The build without the epoll fallback (Cargo feature epoll-fallback, on by default).
cargo build --release --quiet --no-default-features --target-dir target/no-fallback || exit 1
NOFB=target/no-fallback/release/ringway
WORK=$(mktemp -d)
PIDS=()
URING_SYSCTL=/proc/sys/kernel/io_uring_disabled
URING_ORIG=$(cat $URING_SYSCTL 2>/dev/null || true)
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$URING_ORIG" ] && echo "$URING_ORIG" > $URING_SYSCTL 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

passed=0; failed=0
check() { # name, command...
  local name=$1; shift
  if "$@"; then passed=$((passed+1)); echo "ok   $name"; else failed=$((failed+1)); echo "FAIL $name"; fi
}

UP=$(free_port); PX=$(free_port); AD=$(free_port)
python3 tests/interop/upstream.py "$UP" & PIDS+=($!)
wait_port "$UP" || { echo "upstream did not start"; exit 1; }
cat > "$WORK/ringway.toml" <<TOML
[runtime]
workers = 2
[[listeners]]
name = "edge"
bind = "127.0.0.1:$PX"
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok\n" }
[[routes]]
name = "old"
match = { path_prefix = "/old/" }
redirect = { status = 308, location = "http://127.0.0.1:$PX/healthz" }
[[routes]]
name = "all"
match = { path_prefix = "/" }
cluster = "py"
response_headers = { add = { "x-via" = "ringway" } }
[clusters.py]
endpoints = ["127.0.0.1:$UP"]
[admin]
bind = "127.0.0.1:$AD"
TOML
$BIN --config "$WORK/ringway.toml" --log-level warn 2>"$WORK/proxy.log" & PROXY=$!; PIDS+=($PROXY)
wait_port "$PX" || { echo "proxy did not start"; cat "$WORK/proxy.log"; exit 1; }
URL=http://127.0.0.1:$PX
ADMIN=http://127.0.0.1:$AD

t_get() { [ "$(curl -s $URL/healthz)" = "ok" ]; }
t_proxy_headers() {
  local out; out=$(curl -s -D "$WORK/h" $URL/echo)
  grep -qi '^x-forwarded-for: 127.0.0.1' <<<"$out" && grep -qi '^x-request-id: ' <<<"$out" \
    && grep -qi '^x-via: ringway' "$WORK/h"
}
t_redirect() { [ "$(curl -s -L -o /dev/null -w '%{http_code} %{num_redirects}' $URL/old/x)" = "200 1" ]; }
t_404_free_head() { [ "$(curl -s -I -o /dev/null -w '%{http_code}' $URL/healthz)" = "200" ]; }
t_chunked() { [ "$(curl -s $URL/chunked)" = "hello chunked world" ]; }
t_http10() { [ "$(curl -s -0 $URL/chunked)" = "hello chunked world" ]; }
t_keepalive() { # three requests, one connection
  [ "$(curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}' $URL/healthz $URL/echo $URL/healthz | tr -d '\n')" = "100" ]; }
t_expect() { [ "$(head -c 3000000 /dev/zero | curl -s -H 'Expect: 100-continue' -X PUT --data-binary @- $URL/count)" = "3000000" ]; }
t_chunked_upload() { [ "$(head -c 5000000 /dev/zero | curl -s -H 'Transfer-Encoding: chunked' -X POST --data-binary @- $URL/count)" = "5000000" ]; }
GIB=$((1<<30))
t_gib_upload() { truncate -s $GIB "$WORK/gib"; [ "$(curl -s -T "$WORK/gib" $URL/count)" = "$GIB" ]; }
t_gib_chunked_upload() { [ "$(head -c $GIB /dev/zero | curl -s -T - $URL/count)" = "$GIB" ]; }
t_gib_download() { [ "$(curl -s -o /dev/null -w '%{size_download}' $URL/bytes/$GIB)" = "$GIB" ]; }
t_bounded_memory() { # peak RSS of the proxy after 3 GiB passed through
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' /proc/$PROXY/status)
  echo "     proxy peak RSS ${hwm} KiB"; [ "$hwm" -lt 65536 ]; }
t_check_ok() { $BIN check --config config/example.toml >/dev/null; }
t_check_bad() { printf '[[listeners]]\nbind="127.0.0.1:1"\n[[routes]]\ncluster="api"\n' > "$WORK/bad.toml"
  ! $BIN check --config "$WORK/bad.toml" 2>"$WORK/err" && grep -q 'routes\[0\].cluster: unknown cluster "api"' "$WORK/err"; }
t_version() { $BIN --version | grep -q '^ringway '; }
# The admin API with curl; /metrics parsed by the Prometheus project's own Python
# parser (installed here from PyPI if missing).
python3 -c 'import prometheus_client' 2>/dev/null \
  || pip install -q prometheus-client >/dev/null 2>&1 \
  || pip install -q --break-system-packages prometheus-client >/dev/null 2>&1
t_admin_metrics() {
  curl -s $URL/healthz >/dev/null
  curl -s $ADMIN/metrics > "$WORK/metrics.txt"
  python3 - "$WORK/metrics.txt" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name in ["ringway_requests", "ringway_request_duration_seconds", "ringway_upstream_requests",
             "ringway_downstream_connections_active", "process_resident_memory_bytes",
             "ringway_build_info", "ringway_config_reloads"]:
    assert name in families, name
ok = [s for s in families["ringway_requests"].samples
      if s.labels.get("route") == "health" and s.labels.get("code") == "200"]
assert ok and ok[0].value >= 1, ok
PY
}
t_admin_health() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' $ADMIN/ready)" = 200 ] \
    && [ "$(curl -s -o /dev/null -w '%{http_code}' $ADMIN/live)" = 200 ] \
    && [ "$(curl -s -o /dev/null -w '%{http_code}' $ADMIN/reload)" = 405 ] \
    && curl -s $ADMIN/clusters | python3 -c 'import json,sys; c=json.load(sys.stdin)["clusters"]; assert c[0]["name"]=="py"' \
    && [ "$(curl -s -D - $ADMIN/config | grep -i '^x-config-sha256' | tr -d '\r' | awk '{print $2}')" = "$(sha256sum "$WORK/ringway.toml" | cut -d' ' -f1)" ]
}
t_admin_reload() { [ "$(curl -s -X POST $ADMIN/reload)" = "reloaded" ]; }
t_systemd_unit() { local out; out=$(bash tests/interop/systemd.sh) || { echo "$out"; return 1; }; }

# Prints h2load's totals from FILE; true when requests succeeded and none failed,
# errored, timed out or got a non-2xx status.
h2load_clean() {
  grep -E '^requests:|^status codes:' "$1" | sed 's/^/     /'
  grep -qE ' [1-9][0-9]* succeeded, 0 failed, 0 errored, 0 timeout' "$1" \
    && grep -q ' 0 3xx, 0 4xx, 0 5xx' "$1"
}

# Binary upgrade under load: h2load runs 20 keep-alive connections for 4 s while a
# second binary takes the sockets over (--takeover) and the first drains and exits.
t_takeover() {
  local port; port=$(free_port)
  printf '[runtime]\nworkers = 2\ncontrol_socket = "%s"\n[[listeners]]\nname = "l"\nbind = "127.0.0.1:%s"\n[[routes]]\nrespond = { status = 200, body = "ok" }\n' \
    "$WORK/control.sock" "$port" > "$WORK/upgrade.toml"
  $BIN --config "$WORK/upgrade.toml" 2>"$WORK/old.log" & local old=$!
  wait_port "$port" || return 1
  # The control socket is served once the start is complete (after the listeners
  # open: as READY=1 is sent), so the open port alone does not mean it is there.
  for _ in $(seq 1 100); do [ -S "$WORK/control.sock" ] && break; sleep 0.05; done
  [ "$(stat -c %a "$WORK/control.sock")" = 600 ] || { echo "     control socket mode $(stat -c %a "$WORK/control.sock")"; return 1; }
  h2load --h1 -c 20 -D 4 "http://127.0.0.1:$port/" > "$WORK/h2load.txt" 2>&1 & local load=$!
  sleep 1
  $BIN --config "$WORK/upgrade.toml" --takeover 2>"$WORK/new.log" & local new=$!
  wait $old; local old_rc=$?
  wait $load
  local served; served=$(curl -s "http://127.0.0.1:$port/")
  kill -TERM $new; wait $new; local new_rc=$?
  h2load_clean "$WORK/h2load.txt" && [ $old_rc -eq 0 ] && [ $new_rc -eq 0 ] \
    && [ "$served" = ok ] && grep -q 'took over' "$WORK/new.log" && [ ! -e "$WORK/control.sock" ]
}

# SIGUSR2: the running binary starts its own path again with --takeover (as under
# systemd: systemctl kill -s USR2 ringway); the child takes over, the parent exits.
t_usr2_upgrade() {
  local port; port=$(free_port)
  printf '[runtime]\nworkers = 1\ncontrol_socket = "%s"\n[[listeners]]\nname = "l"\nbind = "127.0.0.1:%s"\n[[routes]]\nrespond = { status = 200, body = "ok" }\n' \
    "$WORK/usr2.sock" "$port" > "$WORK/usr2.toml"
  $BIN --config "$WORK/usr2.toml" 2>"$WORK/usr2.log" & local old=$!
  wait_port "$port" || return 1
  for _ in $(seq 1 100); do [ -S "$WORK/usr2.sock" ] && break; sleep 0.05; done
  kill -USR2 $old; wait $old; local rc=$?
  local child; child=$(pgrep -f "usr2.toml --takeover")
  local served; served=$(curl -s "http://127.0.0.1:$port/")
  [ -n "$child" ] && kill -TERM $child
  for _ in $(seq 1 100); do kill -0 "$child" 2>/dev/null || break; sleep 0.05; done
  [ $rc -eq 0 ] && [ -n "$child" ] && [ "$served" = ok ] && grep -q 'took over' "$WORK/usr2.log"
}

# 200 reloads (POST /reload, which returns once every worker serves the new file)
# alternating between two configurations that both route the path, under h2load.
t_reload_under_load() {
  local port adm; port=$(free_port); adm=$(free_port)
  for v in a b; do
    printf '[runtime]\nworkers = 2\n[[listeners]]\nname = "l"\nbind = "127.0.0.1:%s"\n[admin]\nbind = "127.0.0.1:%s"\n[[routes]]\nname = "%s"\nmatch = { path_prefix = "/" }\nrespond = { status = 200, body = "%s" }\n' \
      "$port" "$adm" "$v" "$v" > "$WORK/reload-$v.toml"
  done
  cp "$WORK/reload-a.toml" "$WORK/reload.toml"
  $BIN --config "$WORK/reload.toml" 2>"$WORK/reload.log" & local px=$!
  wait_port "$port" && wait_port "$adm" || return 1
  h2load --h1 -c 50 -D 6 "http://127.0.0.1:$port/" > "$WORK/h2reload.txt" 2>&1 & local load=$!
  sleep 0.5
  local done_ok=0
  for i in $(seq 1 200); do
    if [ $((i % 2)) -eq 1 ]; then cp "$WORK/reload-b.toml" "$WORK/reload.toml"; else cp "$WORK/reload-a.toml" "$WORK/reload.toml"; fi
    [ "$(curl -s -X POST "http://127.0.0.1:$adm/reload")" = reloaded ] && done_ok=$((done_ok + 1))
  done
  wait $load
  local successes; successes=$(curl -s "http://127.0.0.1:$adm/metrics" | awk '/^ringway_config_reloads_total\{result="success"\}/ {print $2}')
  echo "     reloads confirmed: $done_ok, counted: $successes"
  kill -TERM $px; wait $px
  h2load_clean "$WORK/h2reload.txt" && [ "$done_ok" = 200 ] && [ "$successes" = 200 ]
}

# SIGHUP re-reads the file: a route added to it is served, on a connection opened
# before the reload too; an invalid file is refused with the field named in the log.
hold_connection() { # port, seconds, flag file: one request, then an idle keep-alive
  rm -f "$3"  # connection; the flag file appears once the response has come
  python3 - "$1" "$2" "$3" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
s.recv(4096)
open(sys.argv[3], "w").close()
time.sleep(float(sys.argv[2]))
PY
}
t_sighup_reload() {
  cp "$WORK/ringway.toml" "$WORK/ringway.toml.orig"
  printf '[[routes]]\nname = "reloaded"\nmatch = { path = "/reloaded" }\nrespond = { status = 200, body = "new\\n" }\n' > "$WORK/head.toml"
  # The new route goes first (routes match in file order).
  awk 'NR==FNR {r = r $0 "\n"; next} /^\[\[routes\]\]/ && !done {printf "%s", r; done=1} {print}' \
    "$WORK/head.toml" "$WORK/ringway.toml.orig" > "$WORK/ringway.toml"
  kill -HUP $PROXY
  for _ in $(seq 1 100); do
    [ "$(curl -s $URL/reloaded)" = "new" ] && return 0; sleep 0.05
  done
  return 1
}
t_sighup_invalid() {
  printf '[[listeners]]\nbind = "127.0.0.1:1"\n[[routes]]\ncluster = "nope"\n' > "$WORK/ringway.toml"
  kill -HUP $PROXY
  for _ in $(seq 1 100); do
    grep -q 'reload failed.*routes\[0\].cluster: unknown cluster' "$WORK/proxy.log" && break; sleep 0.05
  done
  cp "$WORK/ringway.toml.orig" "$WORK/ringway.toml"
  grep -q 'reload failed.*routes\[0\].cluster: unknown cluster' "$WORK/proxy.log" \
    && [ "$(curl -s $URL/reloaded)" = "new" ] && [ "$(curl -s $URL/healthz)" = "ok" ]
}
# SIGTERM with an idle keep-alive client: the idle connection is closed at once, so
# the process exits long before drain_timeout (10 s by default).
t_sigterm() {
  hold_connection "$PX" 30 "$WORK/held"; local holder=$!
  for _ in $(seq 1 200); do [ -e "$WORK/held" ] && break; sleep 0.05; done
  local start; start=$(date +%s%N)
  kill -TERM $PROXY; wait $PROXY; local rc=$?
  local took=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "     exit after SIGTERM with an idle client: ${took} ms"
  kill $holder 2>/dev/null
  [ -e "$WORK/held" ] && [ $rc -eq 0 ] && [ $took -lt 5000 ]
}

check "direct response" t_get
check "forwarded headers" t_proxy_headers
check "redirect followed" t_redirect
check "HEAD" t_404_free_head
check "chunked response" t_chunked
check "HTTP/1.0 client, de-chunked" t_http10
check "keep-alive reuse" t_keepalive
check "Expect: 100-continue upload" t_expect
check "chunked upload" t_chunked_upload
check "1 GiB streamed upload" t_gib_upload
check "1 GiB chunked upload from stdin" t_gib_chunked_upload
check "1 GiB streamed download" t_gib_download
check "bounded proxy memory" t_bounded_memory
check "ringway check (valid)" t_check_ok
check "ringway check (invalid, names the field)" t_check_bad
check "ringway --version" t_version
check "admin: /metrics parses as Prometheus text" t_admin_metrics
check "admin: /ready, /live, /clusters, /config, 405" t_admin_health
check "admin: POST /reload" t_admin_reload
check "systemd-analyze verify deploy/ringway.service" t_systemd_unit
check "binary upgrade (--takeover) under h2load: 0 failed requests" t_takeover
check "200 reloads under h2load -c 50: 0 failed requests" t_reload_under_load
check "SIGUSR2 starts the binary again with --takeover" t_usr2_upgrade
check "SIGHUP reloads the file" t_sighup_reload
check "SIGHUP with an invalid file changes nothing" t_sighup_invalid
check "SIGTERM with an idle client exits at once, 0" t_sigterm

# TLS termination with real clients (curl, openssl s_client, h2load): tls.sh.
. tests/interop/tls.sh
. tests/interop/ws.sh
# HTTP/2 from clients with curl, nghttp and h2load: h2.sh.
. tests/interop/h2.sh
# The HTTP/2 conformance table of raw frames (Python hyperframe/hpack): h2conf.sh.
. tests/interop/h2conf.sh
# gRPC through the proxy with grpcio (HTTP/2 upstreams, all four call kinds): grpc.sh.
. tests/interop/grpc.sh

# Without io_uring: fall back to the epoll driver with a warning, or refuse to start
# when runtime.require_io_uring is set. Disables io_uring system-wide for a moment
# (kernel.io_uring_disabled, Linux 6.6+); the trap above restores it.
fallback_config() { # port, require
  printf '[runtime]\nworkers = 1\nrequire_io_uring = %s\n[[listeners]]\nname = "l"\nbind = "127.0.0.1:%s"\nrelease_buffers_after = "50ms"\n[[routes]]\nmatch = { path = "/healthz" }\nrespond = { status = 200, body = "ok" }\n[[routes]]\ncluster = "py"\n[clusters.py]\nendpoints = ["127.0.0.1:%s"]\n' "$2" "$1" "$UP" > "$WORK/fallback.toml"
}
# One keep-alive connection: a request, an idle pause past release_buffers_after
# (the read is cancelled and the buffer released), then two more requests.
keepalive_after_release() { # port
  python3 - "$1" <<'PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
def get():
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(1)
        data += chunk
for pause in (0, 0.3, 0):
    time.sleep(pause)
    get()
PY
}
# SIGHUP with a listener added to the fallback config: the running process (PID)
# binds it on its driver and serves on it.
reload_adds_listener() { # pid
  local extra; extra=$(free_port)
  printf '[[listeners]]\nname = "added"\nbind = "127.0.0.1:%s"\n' "$extra" >> "$WORK/fallback.toml"
  kill -HUP "$1"
  wait_port "$extra" && [ "$(curl -s http://127.0.0.1:$extra/healthz)" = "ok" ]
}
# Runs BINARY on the fallback config (log to LOG) and checks that it serves: a direct
# response, a proxied upload and download, keep-alive across a buffer release.
fallback_serves() { # binary, log
  local port; port=$(free_port); fallback_config "$port" false
  $1 --config "$WORK/fallback.toml" 2>"$2" & local pid=$!
  wait_port "$port" || return 1
  local ok=1
  [ "$(curl -s http://127.0.0.1:$port/healthz)" = "ok" ] \
    && [ "$(curl -s -X POST --data-binary 12345 http://127.0.0.1:$port/count)" = "5" ] \
    && [ "$(curl -s -o /dev/null -w '%{size_download}' http://127.0.0.1:$port/bytes/10000000)" = "10000000" ] \
    && keepalive_after_release "$port" && reload_adds_listener "$pid" && ok=0
  kill -TERM $pid; wait $pid || ok=1
  return $ok
}
t_legacy_fallback() {
  fallback_serves $BIN "$WORK/legacy.log" \
    && grep -q 'falling back to the legacy epoll driver' "$WORK/legacy.log"
}
t_require_io_uring() {
  local port; port=$(free_port); fallback_config "$port" true
  ! $BIN --config "$WORK/fallback.toml" 2>"$WORK/req.log" && grep -q 'io_uring is unavailable' "$WORK/req.log"
}
t_no_fallback_build_serves() { fallback_serves $NOFB "$WORK/nofb.log"; }
t_no_fallback_build_refuses() {
  local port; port=$(free_port); fallback_config "$port" false
  ! $NOFB --config "$WORK/fallback.toml" 2>"$WORK/nofb.log" \
    && grep -q 'io_uring is unavailable.*no epoll fallback' "$WORK/nofb.log"
}
check "build without epoll-fallback: serves on io_uring" t_no_fallback_build_serves
if [ -n "$URING_ORIG" ] && echo 2 > $URING_SYSCTL 2>/dev/null; then
  check "io_uring unavailable: legacy driver fallback" t_legacy_fallback
  check "io_uring unavailable: require_io_uring refuses to start" t_require_io_uring
  check "io_uring unavailable: a build without epoll-fallback refuses to start" t_no_fallback_build_refuses
  echo "$URING_ORIG" > $URING_SYSCTL
else
  echo "skip io_uring fallback checks: $URING_SYSCTL is not writable here"
fi

echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
