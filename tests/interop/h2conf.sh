# HTTP/2 conformance table (RFC 9113) of raw frames against a cleartext HTTP/2
# listener (prior knowledge): tests/interop/h2_conformance.py, with the Python
# hyperframe and hpack libraries (from PyPI, with h2; installed here if missing).
# Frame sizes, stream states, pseudo-headers, connection-specific fields,
# content-length, SETTINGS values, flow control, HPACK errors, the concurrent
# stream limit, and the floods answered with GOAWAY ENHANCE_YOUR_CALM, each
# counted in ringway_h2_goaway_total{reason}, with the proxy's memory flat.
# Sourced by tests/interop/run.sh, whose helpers and variables it uses: check,
# free_port, wait_port, $WORK, $BIN, $UP, PIDS.
# shellcheck shell=bash

python3 -c 'import hyperframe, hpack' 2>/dev/null \
  || pip install -q h2 >/dev/null 2>&1 \
  || pip install -q --break-system-packages h2 >/dev/null 2>&1

H2CONF_DIR=$WORK/h2conf
mkdir -p "$H2CONF_DIR"

# Routes: /healthz answered directly; /stall forwarded to a port where the
# conformance script listens with a full accept queue (the proxy's connect hangs,
# so a stream sent there stays open and its body is not read); the rest to the
# Python upstream.
h2conf_start() {
  H2CONF_P=$(free_port); H2CONF_AD=$(free_port); H2CONF_STALL=$(free_port)
  cat > "$H2CONF_DIR/ringway.toml" <<TOML
[runtime]
workers = 2
[[listeners]]
name = "h2c"
bind = "127.0.0.1:$H2CONF_P"
http2 = true
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok" }
[[routes]]
name = "stall"
match = { path = "/stall" }
cluster = "stall"
[[routes]]
name = "all"
match = { path_prefix = "/" }
cluster = "py"
[clusters.py]
endpoints = ["127.0.0.1:$UP"]
[clusters.stall]
endpoints = ["127.0.0.1:$H2CONF_STALL"]
connect_timeout = "60s"
[admin]
bind = "127.0.0.1:$H2CONF_AD"
TOML
  $BIN --config "$H2CONF_DIR/ringway.toml" --log-level warn 2>"$H2CONF_DIR/proxy.log" & H2CONF_PID=$!; PIDS+=("$H2CONF_PID")
  if ! { wait_port "$H2CONF_P" && wait_port "$H2CONF_AD"; }; then
    sed 's/^/     log: /' "$H2CONF_DIR/proxy.log" | tail -20; return 1
  fi
}

t_h2_conformance() {
  timeout 600 python3 tests/interop/h2_conformance.py --proxy "127.0.0.1:$H2CONF_P" \
    --admin "127.0.0.1:$H2CONF_AD" --pid "$H2CONF_PID" --stall-port "$H2CONF_STALL" \
    > "$H2CONF_DIR/table.txt" 2>&1
  local rc=$?
  sed 's/^/     /' "$H2CONF_DIR/table.txt"
  [ $rc -eq 0 ]
}

h2conf_stop() {
  kill -TERM "$H2CONF_PID"; wait "$H2CONF_PID"
}

H2CONF_N=$(python3 tests/interop/h2_conformance.py --count --pid 1 2>/dev/null || echo "?")
if check "h2 conformance: proxy starts with an h2c listener (http2 = true)" h2conf_start; then
  check "h2 conformance table ($H2CONF_N rules)" t_h2_conformance
  check "h2 conformance: proxy exits 0 on SIGTERM" h2conf_stop
fi
