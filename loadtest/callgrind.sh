#!/usr/bin/env bash
# Instructions per small keep-alive GET through Ringway, whole process, by callgrind:
# the "callgrind recipe" of tuning.md section 2 (20,000 GETs at c=10 with
# `h2load --h1` through one worker to a local nginx backend answering "hello";
# figure = callgrind's total Ir for the whole process / requests it served).
#
# usage: loadtest/callgrind.sh BINARY [EXTRA_TOML]
#   BINARY      the ringway executable to measure
#   EXTRA_TOML  optional TOML text appended to the proxy config (after the
#               [clusters.backend] table), e.g. $'[access_log]\npath = "/tmp/a.log"'.
#               The base config already has [runtime], [[listeners]], [[routes]] and
#               [clusters.backend]; it has no [forwarding] section, so the snippet may
#               add one (e.g. $'[forwarding]\nrequest_id = false').
# env:
#   REQUESTS=20000 CONNS=10   h2load -n / -c (the recipe's values by default)
#   KEEP=1                    keep the work directory (callgrind.out, configs, logs)
#   PIN=1                     pin like compare.py: proxy on CPU 1, nginx and h2load on CPU 0
#                             (the tuning.md recipe does not pin; default off)
#   CG_ARGS="..."             extra valgrind options
# Output: diagnostic lines on stderr; the last stdout line is the figure:
#   instr_per_req=NNNNN.N total_ir=... requests=...
# Starts its own nginx backend and proxy on free ports and stops only those, by PID.
set -euo pipefail

BIN=${1:?usage: $0 BINARY [EXTRA_TOML]}
EXTRA=${2:-}
REQUESTS=${REQUESTS:-20000}
CONNS=${CONNS:-10}
BIN=$(readlink -f "$BIN")
[ -x "$BIN" ] || { echo "not executable: $BIN" >&2; exit 2; }
for t in valgrind callgrind_annotate nginx h2load curl python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install valgrind nginx nghttp2-client curl)" >&2; exit 2; }
done

if [ "${PIN:-0}" = 1 ]; then PX_PIN=(taskset -c 1); LD_PIN=(taskset -c 0); else PX_PIN=(); LD_PIN=(); fi

WORK=$(mktemp -d /tmp/cg-small-get.XXXXXX)
chmod 755 "$WORK"
NGINX_PID=""
PROXY_PID=""

stop_pid() {  # stop_pid PID SIGNAL SECONDS: signal, wait, then SIGKILL that PID only
  local pid=$1 sig=$2 secs=$3 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$PROXY_PID" KILL 2
  # nginx master (daemon off): SIGTERM stops it and its worker.
  stop_pid "$NGINX_PID" TERM 10
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free ports (bound without SO_REUSEPORT, so a port held by a forgotten
# SO_REUSEPORT listener is not handed out).
read -r BACKEND_PORT PROXY_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
EOF
)

wait_port() {  # wait_port PORT SECONDS PID
  local port=$1 secs=$2 pid=$3 i
  for ((i = 0; i < secs * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before port $port opened" >&2; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "port $port did not open in ${secs}s" >&2; return 1
}

# Backend: compare.py's NGINX_BACKEND (small GET location only).
cat > "$WORK/ngx-backend.conf" <<EOF
worker_processes 1; daemon off; pid $WORK/ngx-backend.pid;
error_log $WORK/ngx-backend.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  server { listen 127.0.0.1:$BACKEND_PORT backlog=4096;
    location / { default_type text/plain; return 200 "hello"; } } }
EOF
"${LD_PIN[@]}" nginx -p "$WORK" -c "$WORK/ngx-backend.conf" </dev/null 2>"$WORK/ngx-backend.stderr" &
NGINX_PID=$!
wait_port "$BACKEND_PORT" 10 "$NGINX_PID"

# Proxy: one worker, one listener, one catch-all route to the backend (compare.py's
# RINGWAY template, without its empty [forwarding] section), plus EXTRA_TOML.
cat > "$WORK/bench.toml" <<EOF
[runtime]
workers = 1
pin_workers = false

[[listeners]]
name = "bench"
bind = "127.0.0.1:$PROXY_PORT"

[[routes]]
name = "all"
match = { path_prefix = "/" }
cluster = "backend"

[clusters.backend]
endpoints = ["127.0.0.1:$BACKEND_PORT"]
EOF
if [ -n "$EXTRA" ]; then printf '\n%s\n' "$EXTRA" >> "$WORK/bench.toml"; fi
"$BIN" check -c "$WORK/bench.toml" >"$WORK/check.out" 2>&1 || { cat "$WORK/check.out" >&2; exit 2; }

CG_OUT="$WORK/callgrind.out"
# shellcheck disable=SC2086
"${PX_PIN[@]}" valgrind --tool=callgrind -q --callgrind-out-file="$CG_OUT" ${CG_ARGS:-} \
  "$BIN" -c "$WORK/bench.toml" </dev/null >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
wait_port "$PROXY_PORT" 120 "$PROXY_PID"

"${LD_PIN[@]}" h2load --h1 -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$PROXY_PORT/" >"$WORK/h2load.out" 2>&1 || true
OK=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$WORK/h2load.out")
SUCC=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$WORK/h2load.out")
grep -E '^(finished in|requests:|status codes:)' "$WORK/h2load.out" >&2 || true
if [ "${OK:-0}" != "$REQUESTS" ]; then
  echo "h2load: expected $REQUESTS 2xx, got ${OK:-none}" >&2; cat "$WORK/h2load.out" >&2; exit 1
fi

# Stop gracefully so callgrind writes its output. Under valgrind the signal can stay
# undelivered while the worker sleeps in io_uring_enter: while the process lives, send
# one request (counted) and the signal again (tuning.md section 2).
EXTRA_REQ=0
kill -INT "$PROXY_PID"
for ((i = 0; i < 60; i++)); do
  for ((j = 0; j < 10; j++)); do kill -0 "$PROXY_PID" 2>/dev/null || break 2; sleep 0.1; done
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PROXY_PORT/" || true)
  [ "$code" = 200 ] && EXTRA_REQ=$((EXTRA_REQ + 1))
  echo "proxy still running $((i + 1))s after SIGINT: nudge request -> HTTP $code, SIGINT again" >&2
  kill -INT "$PROXY_PID" 2>/dev/null || true
done
if kill -0 "$PROXY_PID" 2>/dev/null; then echo "proxy did not stop" >&2; exit 1; fi
wait "$PROXY_PID" || true
PROXY_PID=""

TOTAL=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$CG_OUT" | head -1)
[ -n "$TOTAL" ] || { echo "no total in $CG_OUT" >&2; exit 1; }
N=$((REQUESTS + EXTRA_REQ))
echo "requests: $REQUESTS by h2load + $EXTRA_REQ nudge(s) after SIGINT; total Ir $TOTAL" >&2
python3 -c "import sys; t, n = int(sys.argv[1]), int(sys.argv[2]); print(f'instr_per_req={t / n:.1f} total_ir={t} requests={n}')" "$TOTAL" "$N"
