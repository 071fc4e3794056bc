# HTTP/2 on the client side with real clients: curl (prior knowledge on a cleartext
# listener with http2 = true, ALPN h2 on a TLS listener), nghttp and h2load; HTTP/1.1
# on the same listeners; uploads with and without a length, large and chunked
# downloads; GOAWAY at idle_timeout and on SIGTERM (to a raw Python client); file
# descriptors after the load.
# Sourced by tests/interop/run.sh (after ws.sh), whose helpers and variables it
# uses: check, free_port, wait_port, h2load_clean, $WORK, $BIN, $UP, PIDS, and
# $TLS_DIR (ca.pem, and a.pem/a.key for a.example.com, made by tls.sh).
# shellcheck shell=bash

command -v nghttp >/dev/null || {
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
}

H2_DIR=$WORK/h2
mkdir -p "$H2_DIR"

# A raw HTTP/2 client that opens a connection (cleartext with prior knowledge, or
# TLS with ALPN h2), completes the SETTINGS exchange, creates the flag file, and then
# opens no stream: it answers SETTINGS and PING, and reads until the proxy closes
# (or 20 s pass). Prints the frames it got after the flag; exits 0 when a GOAWAY
# with NO_ERROR came, then the close.
cat > "$H2_DIR/idle.py" <<'PY'
import socket, ssl, struct, sys, time
port, use_tls, flag, ca = int(sys.argv[1]), sys.argv[2] == "tls", sys.argv[3], sys.argv[4]
NAMES = {0: "DATA", 1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE"}
s = socket.create_connection(("127.0.0.1", port), timeout=20)
if use_tls:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(s, server_hostname="a.example.com")
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00" + struct.pack(">I", 0))
buf, got, start, ready, goaway, closed = b"", [], None, False, None, None
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            break
        kind, flags, payload = buf[3], buf[4], buf[9:9 + n]
        buf = buf[9 + n:]
        if kind == 4 and not flags & 1:
            s.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
            if not ready:
                ready, start = True, time.monotonic()
                open(flag, "w").close()
                continue
        if kind == 6 and not flags & 1:
            s.sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
        if ready:
            name = NAMES.get(kind, str(kind))
            if kind == 7:
                last, code = struct.unpack(">II", payload[:8])
                name = f"GOAWAY(last stream {last & 0x7fffffff}, error {code})"
                goaway = code
            elif flags & 1 and kind in (4, 6):
                name += " ack"
            got.append(f"{name} at {time.monotonic() - start:.2f} s")
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    except (ConnectionResetError, ssl.SSLError):
        data = b""
    if not data:
        closed = time.monotonic() - start if start else None
        break
    buf += data
print(f"     idle h2 client ({'TLS' if use_tls else 'h2c'}) got: {', '.join(got) or 'nothing'};"
      f" closed: {'%.2f s' % closed if closed is not None else 'no'}")
sys.exit(0 if goaway == 0 and closed is not None else 1)
PY

# ---------------------------------------------------------------- helpers

h2_curl() { timeout 60 curl -sS --max-time 50 --cacert "$TLS_DIR/ca.pem" --resolve "a.example.com:$H2_PT:127.0.0.1" "$@"; }
h2_logs() { tail -5 "$H2_DIR/proxy.log" 2>/dev/null | sed 's/^/     proxy: /' | cut -c1-300; }
h2_is() { # got, want, what
  [ "$1" = "$2" ] || { echo "     $3: got '$1', expected '$2'"; h2_logs; return 1; }
}
h2_has() { # text, regex (grep -iE), what
  grep -qiE -- "$2" <<<"$1" || { echo "     expected $3 (/$2/); got:"; head -c 1500 <<<"$1" | sed 's/^/       /'; return 1; }
}
h2_fds() { find "/proc/$H2_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# Sum of metric NAME's samples whose labels contain each 'label="value"' given.
h2_metric() {
  local name=$1; shift
  timeout 15 curl -s --max-time 10 "http://127.0.0.1:$H2_AD/metrics" | awk -v n="$name" -v want="$*" '
    index($0, n "{") == 1 { k = split(want, w, " "); ok = 1
      for (i = 1; i <= k; i++) if (index($0, w[i]) == 0) ok = 0
      if (ok) s += $NF }
    END { printf "%.0f\n", s + 0 }'
}

# ---------------------------------------------------------------- the proxy

# A cleartext listener with http2 = true (and idle_timeout 2s, for the GOAWAY at
# idle), a TLS one for a.example.com with the default ALPN list (h2, http/1.1), the
# routes of run.sh's proxy; upstream connections idle for 2 s are closed (so that
# file descriptors come back after the load).
h2_start() {
  [ -s "$TLS_DIR/a.pem" ] || { echo "     no $TLS_DIR/a.pem (made by tls.sh)"; return 1; }
  echo "     $(curl --version | head -1 | cut -d' ' -f1-2), $(nghttp --version | head -1)"
  H2_P=$(free_port); H2_PT=$(free_port); H2_AD=$(free_port)
  H2C=http://127.0.0.1:$H2_P; H2S=https://a.example.com:$H2_PT
  cat > "$H2_DIR/ringway.toml" <<TOML
[runtime]
workers = 2
[[listeners]]
name = "h2c"
bind = "127.0.0.1:$H2_P"
http2 = true
idle_timeout = "2s"
[[listeners]]
name = "h2tls"
bind = "127.0.0.1:$H2_PT"
[listeners.tls]
certificates = [{ cert = "$TLS_DIR/a.pem", key = "$TLS_DIR/a.key" }]
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok\n" }
[[routes]]
name = "all"
match = { path_prefix = "/" }
cluster = "py"
response_headers = { add = { "x-via" = "ringway" } }
[clusters.py]
endpoints = ["127.0.0.1:$UP"]
pool_idle_timeout = "2s"
[admin]
bind = "127.0.0.1:$H2_AD"
TOML
  $BIN check --config "$H2_DIR/ringway.toml" >"$H2_DIR/check.log" 2>&1 \
    || { sed 's/^/     /' "$H2_DIR/check.log"; return 1; }
  $BIN --config "$H2_DIR/ringway.toml" --log-level warn 2>"$H2_DIR/proxy.log" & H2_PID=$!; PIDS+=("$H2_PID")
  local p
  for p in $H2_P $H2_PT $H2_AD; do
    wait_port "$p" || { echo "     port $p not listening"; h2_logs; return 1; }
  done
  H2_FD0=$(h2_fds)
}

# ---------------------------------------------------------------- the checks

# 1. Prior knowledge on the cleartext listener: the direct answer, and a forwarded
# stream, which the upstream gets as HTTP/1.1 with :authority as Host.
t_h2_prior_knowledge() {
  local v out
  v=$(h2_curl --http2-prior-knowledge -o "$H2_DIR/body" -w '%{http_version}' "$H2C/healthz") || { h2_logs; return 1; }
  h2_is "$v" 2 "HTTP version of /healthz" && h2_is "$(cat "$H2_DIR/body")" ok "body of /healthz" || return 1
  out=$(h2_curl --http2-prior-knowledge -D "$H2_DIR/h1" "$H2C/echo?q=1") || { h2_logs; return 1; }
  echo "     upstream got: $(tail -1 <<<"$out"), $(grep -i '^host:' <<<"$out" | tr -d '\r')"
  h2_has "$(head -1 "$H2_DIR/h1")" '^HTTP/2 200' "HTTP/2 200" \
    && h2_has "$(cat "$H2_DIR/h1")" '^x-via: ringway' "x-via: ringway (response_headers)" \
    && h2_has "$(tail -1 <<<"$out")" '^GET /echo\?q=1 HTTP/1\.1$' "an HTTP/1.1 request line at the upstream" \
    && h2_has "$out" "^host: 127\.0\.0\.1:$H2_P" "Host from :authority" \
    && h2_has "$out" '^x-forwarded-proto: http$' "x-forwarded-proto: http"
}

# 2. TLS: curl offers h2 and http/1.1 by ALPN and gets h2 (s_client too); the
# upstream sees x-forwarded-proto: https.
t_h2_alpn() {
  local out sc
  out=$(h2_curl --http2 -D "$H2_DIR/h2" -w '\nversion %{http_version}' "$H2S/echo") || { h2_logs; return 1; }
  sc=$(timeout 10 openssl s_client -connect "127.0.0.1:$H2_PT" -CAfile "$TLS_DIR/ca.pem" \
    -servername a.example.com -alpn h2,http/1.1 </dev/null 2>&1 | tr -d '\000')
  echo "     s_client: $(grep -m1 '^ALPN protocol' <<<"$sc"); $(grep -m1 -i '^x-forwarded-proto' <<<"$out" | tr -d '\r')"
  h2_has "$(tail -1 <<<"$out")" '^version 2$' "HTTP/2 (ALPN h2)" \
    && h2_has "$(head -1 "$H2_DIR/h2")" '^HTTP/2 200' "HTTP/2 200" \
    && h2_has "$sc" '^ALPN protocol: h2$' "ALPN protocol: h2 with s_client" \
    && h2_has "$out" '^x-forwarded-proto: https$' "x-forwarded-proto: https at the upstream" \
    && h2_has "$out" "^host: a\.example\.com:$H2_PT" "Host from :authority"
}

# 3. HTTP/1.1 on both listeners (on TLS: ALPN http/1.1).
t_h2_http11() {
  local a b c d
  a=$(h2_curl --http1.1 -w ' %{http_version}' "$H2C/healthz")
  b=$(h2_curl --http1.1 -o /dev/null -w '%{http_code} %{http_version}' "$H2C/echo")
  c=$(h2_curl --http1.1 -w ' %{http_version}' "$H2S/healthz")
  d=$(h2_curl --http1.1 -w '\n%{http_version}' "$H2S/echo")
  h2_is "$a" "ok
 1.1" "h2c listener, HTTP/1.1 /healthz" \
    && h2_is "$b" "200 1.1" "h2c listener, HTTP/1.1 /echo" \
    && h2_is "$c" "ok
 1.1" "TLS listener, HTTP/1.1 /healthz" \
    && h2_has "$d" '^x-forwarded-proto: https' "TLS listener, HTTP/1.1 /echo: x-forwarded-proto" \
    && h2_is "$(tail -1 <<<"$d")" 1.1 "TLS listener, HTTP/1.1 /echo: version"
}

# 4. 5,000,000 bytes POSTed over h2c and TLS: with content-length (from a file) and
# without (-T - from a pipe: DATA frames up to END_STREAM, chunked upstream).
t_h2_upload() {
  local n=5000000 ok=0 base flag got
  head -c $n /dev/zero > "$H2_DIR/upload"
  for base in "$H2C" "$H2S"; do
    if [ "$base" = "$H2C" ]; then flag=--http2-prior-knowledge; else flag=--http2; fi
    got=$(h2_curl $flag --data-binary @"$H2_DIR/upload" -w ' %{http_version}' "$base/count")
    h2_is "$got" "$n 2" "$base/count with content-length" || ok=1
    got=$(head -c $n /dev/zero | h2_curl $flag -v -X POST -T - -w ' %{http_version}' "$base/count" 2>"$H2_DIR/trace")
    h2_is "$got" "$n 2" "$base/count without content-length" || ok=1
    ! grep -qi '^> content-length' "$H2_DIR/trace" \
      || { echo "     $base: curl sent a content-length with -T -"; ok=1; }
  done
  return $ok
}

# 5. 50,000,000 bytes downloaded over h2 (TLS, then h2c); the upstream's chunked
# response comes de-chunked, without transfer-encoding.
t_h2_download() {
  local n=50000000 ok=0 got
  got=$(h2_curl --http2 -o /dev/null -w '%{size_download} %{http_version} %{speed_download}' "$H2S/bytes/$n")
  echo "     TLS h2: $(awk '{printf "%s bytes at %.0f MB/s", $1, $3 / 1e6}' <<<"$got")"
  h2_is "${got% *}" "$n 2" "TLS h2 /bytes/$n: size and version" || ok=1
  got=$(h2_curl --http2-prior-knowledge -o /dev/null -w '%{size_download} %{http_version} %{speed_download}' "$H2C/bytes/$n")
  echo "     h2c:    $(awk '{printf "%s bytes at %.0f MB/s", $1, $3 / 1e6}' <<<"$got")"
  h2_is "${got% *}" "$n 2" "h2c /bytes/$n: size and version" || ok=1
  got=$(h2_curl --http2 -D "$H2_DIR/hc" "$H2S/chunked")
  h2_is "$got" "hello chunked world" "TLS h2 /chunked" || ok=1
  ! grep -qi '^transfer-encoding' "$H2_DIR/hc" || { echo "     transfer-encoding in an HTTP/2 response"; ok=1; }
  got=$(h2_curl --http2-prior-knowledge "$H2C/chunked")
  h2_is "$got" "hello chunked world" "h2c /chunked" || ok=1
  return $ok
}

# 6. nghttp: one GET with the frames shown (status 200 in the response HEADERS), and
# 20 requests at once on one connection (-m 20), each 200.
h2_nghttp_ok() { # URL, what
  local out n
  out=$(timeout 30 nghttp -nv "$1" 2>&1)
  h2_has "$out" 'recv HEADERS frame <length=[0-9]+, flags=0x0[45], stream_id=[0-9]+>' "$2: a response HEADERS frame" \
    && h2_has "$out" 'recv \(stream_id=[0-9]+\) :status: 200' "$2: :status: 200" || return 1
  out=$(timeout 30 nghttp -n -s -m 20 "$1" 2>&1)
  # The statistics rows: id responseEnd requestStart process code size path.
  n=$(awk '$1 ~ /^[0-9]+$/ && $5 == 200' <<<"$out" | wc -l)
  echo "     $2: nghttp -m 20: $n of 20 answered 200"
  [ "$n" = 20 ] || { grep -iE 'error|not processed' <<<"$out" | head -5 | sed 's/^/     /'; return 1; }
}
t_h2_nghttp() {
  h2_nghttp_ok "$H2C/echo" "h2c" && h2_nghttp_ok "https://127.0.0.1:$H2_PT/echo" "TLS"
}

# 7. h2load, 10 connections x 10 streams, 20000 forwarded requests, on each
# listener.
h2_load() { # URL, file, protocol
  timeout 120 h2load -c 10 -m 10 -n 20000 "$1" > "$2" 2>&1
  echo "     $3: $(grep -m1 '^finished in' "$2")"
  h2load_clean "$2" && grep -q '^requests: 20000 total, 20000 started, 20000 done, 20000 succeeded' "$2" \
    && h2_has "$(cat "$2")" "^Application protocol: $3\$" "Application protocol: $3"
}
t_h2_h2load() {
  H2_FD1=$(h2_fds)
  h2_load "$H2C/echo" "$H2_DIR/h2load-h2c.txt" h2c && h2_load "https://127.0.0.1:$H2_PT/echo" "$H2_DIR/h2load-tls.txt" h2
}

# 8. After the load, the process's file descriptors come back to within 5 of what
# they were once the proxy had started (client connections closed, idle upstream
# ones after pool_idle_timeout, 2 s); 15 s at most. Peak RSS under 64 MiB, as in
# run.sh's bounded memory check.
t_h2_fds() {
  [ -n "$H2_FD0" ] || { echo "     no baseline"; return 1; }
  local now start hwm; start=$(date +%s%N)
  for _ in $(seq 1 150); do now=$(h2_fds); [ "$now" -le $((H2_FD0 + 5)) ] && break; sleep 0.1; done
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$H2_PID/status")
  echo "     file descriptors: $H2_FD0 at the start, ${H2_FD1:-?} before the load," \
    "$now $(( ($(date +%s%N) - start) / 1000000 )) ms after it; peak RSS $hwm KiB"
  [ "$now" -le $((H2_FD0 + 5)) ] && [ "$hwm" -lt 65536 ]
}

# 9. An idle h2c connection (no stream) gets a graceful GOAWAY at idle_timeout (2 s)
# and is closed; ringway_h2_goaway_total{reason="shutdown"} is a series and counts it.
t_h2_idle_goaway() {
  local before after
  curl -s --max-time 10 "http://127.0.0.1:$H2_AD/metrics" | grep -q '^ringway_h2_goaway_total{reason="shutdown"} ' \
    || { echo "     no ringway_h2_goaway_total{reason=\"shutdown\"} series"; return 1; }
  before=$(h2_metric ringway_h2_goaway_total 'reason="shutdown"')
  timeout 30 python3 "$H2_DIR/idle.py" "$H2_P" h2c "$H2_DIR/idle-flag" "$TLS_DIR/ca.pem" || { h2_logs; return 1; }
  for _ in $(seq 1 100); do
    after=$(h2_metric ringway_h2_goaway_total 'reason="shutdown"'); [ "$after" -gt "$before" ] && break; sleep 0.05
  done
  echo "     ringway_h2_goaway_total{reason=\"shutdown\"}: $before before, $after after"
  [ "$after" -gt "$before" ]
}

# 10. SIGTERM with an idle h2 client on the TLS listener: it gets the GOAWAY, the
# connection closes, and the proxy exits 0 long before drain_timeout.
h2_stop() {
  rm -f "$H2_DIR/term-flag"
  timeout 30 python3 "$H2_DIR/idle.py" "$H2_PT" tls "$H2_DIR/term-flag" "$TLS_DIR/ca.pem" > "$H2_DIR/term.txt" 2>&1 &
  local client=$!
  for _ in $(seq 1 200); do [ -e "$H2_DIR/term-flag" ] && break; sleep 0.05; done
  [ -e "$H2_DIR/term-flag" ] || { echo "     the idle client did not connect:"; sed 's/^/     /' "$H2_DIR/term.txt"; kill "$client" 2>/dev/null; }
  local start; start=$(date +%s%N)
  kill -TERM "$H2_PID"; wait "$H2_PID"; local rc=$?
  local took=$(( ($(date +%s%N) - start) / 1000000 ))
  wait "$client"; local crc=$?
  cat "$H2_DIR/term.txt"
  echo "     exit $rc after SIGTERM with an idle h2 client: ${took} ms"
  [ $rc -eq 0 ] || { sed 's/^/     /' "$H2_DIR/proxy.log" | tail -20; return 1; }
  [ $crc -eq 0 ] && [ $took -lt 5000 ]
}

H2_P=0; H2_PT=0; H2_AD=0; H2_PID=0; H2C=; H2S=; H2_FD0=; H2_FD1=
if check "h2: proxy starts, cleartext listener with http2 = true and a TLS listener" h2_start; then
  check "h2: curl --http2-prior-knowledge on the cleartext listener, direct and forwarded" t_h2_prior_knowledge
  check "h2: curl --http2 over TLS: ALPN h2, upstream sees x-forwarded-proto: https" t_h2_alpn
  check "h2: HTTP/1.1 still served on both listeners" t_h2_http11
  check "h2: 5 MB uploads over h2c and TLS, with and without content-length" t_h2_upload
  check "h2: 50 MB downloads over h2 (TLS, h2c), chunked response de-chunked" t_h2_download
  check "h2: nghttp GET and 20 concurrent streams on one connection, both listeners" t_h2_nghttp
  check "h2: h2load -c 10 -m 10 -n 20000 over h2c and TLS: 0 failed" t_h2_h2load
  check "h2: file descriptors back to the baseline after the load, peak RSS < 64 MiB" t_h2_fds
  check "h2: idle h2c connection gets GOAWAY at idle_timeout, counted reason=shutdown" t_h2_idle_goaway
  check "h2: SIGTERM: an idle h2 client over TLS gets GOAWAY, proxy exits 0" h2_stop
fi
