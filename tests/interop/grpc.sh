# gRPC through the proxy to an HTTP/2 cleartext upstream (cluster protocol = "h2c"),
# with the Python grpcio library's own client and server (its generic API, raw
# bytes: no protobuf code generation; installed here from PyPI if missing): unary
# calls with metadata both ways, status codes, server, client and bidirectional
# streaming (full duplex: each message's echo comes back before the next is sent),
# deadlines, the statuses the proxy makes itself (UNAVAILABLE, UNIMPLEMENTED), and
# 200 concurrent calls.
# Sourced by tests/interop/run.sh, whose helpers and variables it uses: check,
# free_port, wait_port, $WORK, $BIN, PIDS.
# shellcheck shell=bash

python3 -c 'import grpc' 2>/dev/null \
  || pip install -q grpcio >/dev/null 2>&1 \
  || pip install -q --break-system-packages grpcio >/dev/null 2>&1

GRPC_DIR=$WORK/grpc
mkdir -p "$GRPC_DIR"

# ---------------------------------------------------------------- the upstream

# A grpcio server for the service test.Echo, bytes in and bytes out:
# Unary echoes the request and sends what metadata it got back as trailing
# metadata x-echo-KEY (b"fail" is aborted with INVALID_ARGUMENT "bad");
# ServerStream answers b"N" with N messages of 64 KiB (message i is byte i % 256);
# ClientStream answers the number of bytes it received, in ASCII; Bidi echoes each
# message as it comes; Slow answers after 2 s.
cat > "$GRPC_DIR/server.py" <<'PY'
import sys, time
from concurrent import futures
import grpc

MIB16 = 16 << 20
OPTIONS = [("grpc.max_send_message_length", MIB16), ("grpc.max_receive_message_length", MIB16)]

def unary(request, context):
    if request == b"fail":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    echo = []
    for k, v in context.invocation_metadata():
        if not k.startswith((":", "grpc-")):
            echo.append(("x-echo-" + k, v))
    context.set_trailing_metadata(echo)
    return request

def server_stream(request, context):
    for i in range(int(request)):
        yield bytes([i % 256]) * 65536

def client_stream(requests, context):
    return str(sum(len(m) for m in requests)).encode()

def bidi(requests, context):
    for m in requests:
        yield m

def slow(request, context):
    time.sleep(2)
    return request

handler = grpc.method_handlers_generic_handler("test.Echo", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary, request_deserializer=None, response_serializer=None),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, request_deserializer=None, response_serializer=None),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, request_deserializer=None, response_serializer=None),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi, request_deserializer=None, response_serializer=None),
    "Slow": grpc.unary_unary_rpc_method_handler(slow, request_deserializer=None, response_serializer=None),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=OPTIONS)
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
server.wait_for_termination()
PY

# What the clients share: channel() to the proxy (messages up to 16 MiB, no proxy
# from the environment), the methods of test.Echo and others by name, and run(),
# which prints why a check failed.
cat > "$GRPC_DIR/grpcc.py" <<'PY'
import os, sys, traceback
import grpc

MIB16 = 16 << 20

def channel():
    return grpc.insecure_channel(f"127.0.0.1:{os.environ['GRPC_PX']}", options=[
        ("grpc.max_send_message_length", MIB16), ("grpc.max_receive_message_length", MIB16),
        ("grpc.enable_http_proxy", 0)])

def code_of(call, *args, **kw):
    """Calls and returns the RpcError's (code, details), or fails if it succeeded."""
    try:
        r = call(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError(f"succeeded: {r[:60]!r}")

def run(main):
    try:
        main()
    except Exception as e:
        print(f"     {type(e).__name__}: {str(e)[:500]}")
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            print(f"     at line {tb[-1].lineno}: {tb[-1].line}")
        sys.exit(1)
PY

# Runs the Python client on stdin with grpcc.py importable.
grpc_py() { PYTHONPATH="$GRPC_DIR" GRPC_PX="$GRPC_P" timeout 90 python3 -; }
grpc_logs() { # the last lines of the proxy's and the upstream's logs
  local f
  for f in proxy upstream; do tail -5 "$GRPC_DIR/$f.log" 2>/dev/null | sed "s/^/     $f: /" | cut -c1-300; done
}

# ---------------------------------------------------------------- the proxy

# The upstream, and a proxy with a cleartext listener (http2 = true), /test.Echo/
# routed to it (cluster grpc, h2c), /test.Dead/ to an h2c cluster whose endpoint
# refuses connections, and no route for the rest.
grpc_start() {
  echo "     grpcio $(python3 -c 'import grpc; print(grpc.__version__)' 2>&1)"
  GRPC_UP=$(free_port); GRPC_P=$(free_port); GRPC_AD=$(free_port); GRPC_DEAD=$(free_port)
  python3 "$GRPC_DIR/server.py" "$GRPC_UP" 2>"$GRPC_DIR/upstream.log" & GRPC_UPID=$!; PIDS+=("$GRPC_UPID")
  wait_port "$GRPC_UP" || { echo "     upstream not listening"; grpc_logs; return 1; }
  cat > "$GRPC_DIR/ringway.toml" <<TOML
[runtime]
workers = 2
[[listeners]]
name = "grpc"
bind = "127.0.0.1:$GRPC_P"
http2 = true
[[routes]]
name = "echo"
match = { path_prefix = "/test.Echo/" }
cluster = "grpc"
[[routes]]
name = "dead"
match = { path_prefix = "/test.Dead/" }
cluster = "dead"
[clusters.grpc]
protocol = "h2c"
endpoints = ["127.0.0.1:$GRPC_UP"]
[clusters.dead]
protocol = "h2c"
endpoints = ["127.0.0.1:$GRPC_DEAD"]
[admin]
bind = "127.0.0.1:$GRPC_AD"
TOML
  $BIN check --config "$GRPC_DIR/ringway.toml" >"$GRPC_DIR/check.log" 2>&1 \
    || { sed 's/^/     /' "$GRPC_DIR/check.log"; return 1; }
  $BIN --config "$GRPC_DIR/ringway.toml" --log-level "${GRPC_LOG_LEVEL:-warn}" 2>"$GRPC_DIR/proxy.log" & GRPC_PID=$!
  PIDS+=("$GRPC_PID")
  local p
  for p in $GRPC_P $GRPC_AD; do
    wait_port "$p" || { echo "     port $p not listening"; grpc_logs; return 1; }
  done
}

# ---------------------------------------------------------------- the checks

# 1. Unary: bytes echoed; metadata x-a: b comes back as trailing metadata
# x-echo-x-a: b; a 1 MiB request and response.
t_grpc_unary() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import os, time
from grpcc import channel, run

def main():
    with channel() as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        resp, call = unary.with_call(b"hello", metadata=[("x-a", "b")], timeout=20)
        assert resp == b"hello", resp
        trailers = dict(call.trailing_metadata())
        assert trailers.get("x-echo-x-a") == "b", trailers
        print(f"     upstream got x-a: {trailers['x-echo-x-a']},"
              f" x-forwarded-for: {trailers.get('x-echo-x-forwarded-for')}")
        big = os.urandom(1 << 20)
        start = time.monotonic()
        resp = unary(big, timeout=20)
        assert resp == big, (len(resp), "bytes, not the 1 MiB sent")
        print(f"     1 MiB echoed in {(time.monotonic() - start) * 1000:.0f} ms")

run(main)
PY
}

# 2. The upstream's status passes: b"fail" is INVALID_ARGUMENT with details "bad".
t_grpc_status() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import grpc
from grpcc import channel, code_of, run

def main():
    with channel() as ch:
        got = code_of(ch.unary_unary("/test.Echo/Unary"), b"fail", timeout=20)
        print(f"     b\"fail\": {got[0].name}, {got[1]!r}")
        assert got == (grpc.StatusCode.INVALID_ARGUMENT, "bad"), got

run(main)
PY
}

# 3. Server streaming: 64 messages of 64 KiB, each with its content.
t_grpc_server_stream() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import time
from grpcc import channel, run

def main():
    with channel() as ch:
        start, n = time.monotonic(), 0
        for i, m in enumerate(ch.unary_stream("/test.Echo/ServerStream")(b"64", timeout=20)):
            assert m == bytes([i % 256]) * 65536, (i, len(m))
            n += 1
        assert n == 64, n
        print(f"     {n} x 64 KiB received in {(time.monotonic() - start) * 1000:.0f} ms")

run(main)
PY
}

# 4. Client streaming: 64 messages of 64 KiB; the upstream counts 4194304 bytes.
t_grpc_client_stream() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import time
from grpcc import channel, run

def main():
    with channel() as ch:
        start = time.monotonic()
        resp = ch.stream_unary("/test.Echo/ClientStream")(
            (bytes([i % 256]) * 65536 for i in range(64)), timeout=20)
        print(f"     upstream counted {resp.decode()} bytes in {(time.monotonic() - start) * 1000:.0f} ms")
        assert resp == b"4194304", resp

run(main)
PY
}

# 5. Bidirectional: 100 messages, each sent only once the previous one's echo came
# back (which takes a proxy that relays both directions of the stream at once).
t_grpc_bidi() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import queue, time
from grpcc import channel, run

def main():
    q = queue.Queue()
    def requests():
        while (m := q.get()) is not None:
            yield m
    with channel() as ch:
        start = time.monotonic()
        call = ch.stream_stream("/test.Echo/Bidi")(requests(), timeout=20)
        try:
            for i in range(100):
                m = f"message {i} ".encode() * (1 + i * 10)
                q.put(m)
                got = next(call)
                assert got == m, (i, got[:40])
        finally:
            q.put(None)
        rest = list(call)
        assert rest == [], rest
        took = time.monotonic() - start
        print(f"     100 round trips in {took * 1000:.0f} ms ({took * 10:.1f} ms each)")

run(main)
PY
}

# 6. Slow (2 s) called with a 0.5 s deadline: DEADLINE_EXCEEDED, from the client's
# deadline or from the proxy (grpc-timeout caps the cluster's response_timeout),
# well before the 2 s; the next call is served.
t_grpc_deadline() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import grpc, time
from grpcc import channel, code_of, run

def main():
    with channel() as ch:
        start = time.monotonic()
        got = code_of(ch.unary_unary("/test.Echo/Slow"), b"zzz", timeout=0.5)
        took = time.monotonic() - start
        print(f"     Slow with timeout=0.5: {got[0].name}, {got[1]!r} after {took * 1000:.0f} ms")
        assert got[0] == grpc.StatusCode.DEADLINE_EXCEEDED, got
        assert took < 1.5, took
        assert ch.unary_unary("/test.Echo/Unary")(b"after", timeout=20) == b"after"

run(main)
PY
}

# 7. The statuses the proxy makes (HTTP 200, trailers only): an endpoint that refuses
# connections is UNAVAILABLE, a path without a route UNIMPLEMENTED.
t_grpc_proxy_status() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import grpc
from grpcc import channel, code_of, run

def main():
    with channel() as ch:
        dead = code_of(ch.unary_unary("/test.Dead/Unary"), b"x", timeout=20)
        nope = code_of(ch.unary_unary("/test.Nope/Unary"), b"x", timeout=20)
        print(f"     /test.Dead/Unary: {dead[0].name}, {dead[1]!r}")
        print(f"     /test.Nope/Unary: {nope[0].name}, {nope[1]!r}")
        assert dead[0] == grpc.StatusCode.UNAVAILABLE, dead
        assert nope[0] == grpc.StatusCode.UNIMPLEMENTED, nope

run(main)
PY
}

# 8. 200 unary calls at once: 10 threads each start 20 (futures) on one channel,
# then check every answer.
t_grpc_concurrent() {
  grpc_py <<'PY' || { grpc_logs; return 1; }
import threading, time
from grpcc import channel, run

def main():
    errors, done = [], []
    with channel() as ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        def worker(t):
            try:
                calls = [(f"call {t}.{i} ".encode() * 100, None) for i in range(20)]
                calls = [(m, unary.future(m, timeout=20)) for m, _ in calls]
                for m, f in calls:
                    r = f.result()
                    assert r == m, (m[:20], r[:20])
                    done.append(1)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        start = time.monotonic()
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"     {len(done)} of 200 answered in {(time.monotonic() - start) * 1000:.0f} ms")
        assert not errors and len(done) == 200, errors[:3]

run(main)
PY
}

grpc_stop() {
  kill -TERM "$GRPC_PID"; wait "$GRPC_PID"; local rc=$?
  kill "$GRPC_UPID" 2>/dev/null; wait "$GRPC_UPID" 2>/dev/null
  [ $rc -eq 0 ] || { echo "     exit status $rc"; sed 's/^/     /' "$GRPC_DIR/proxy.log" | tail -20; return 1; }
}

GRPC_UP=0; GRPC_P=0; GRPC_AD=0; GRPC_DEAD=0; GRPC_PID=0; GRPC_UPID=0
if check "grpc: upstream (Python grpcio) and proxy start, cluster protocol = \"h2c\"" grpc_start; then
  check "grpc: unary echo, metadata x-a: b back as trailing x-echo-x-a, 1 MiB each way" t_grpc_unary
  check "grpc: the upstream's status passes (INVALID_ARGUMENT, \"bad\")" t_grpc_status
  check "grpc: server streaming, 64 x 64 KiB" t_grpc_server_stream
  check "grpc: client streaming, 64 x 64 KiB counted 4194304" t_grpc_client_stream
  check "grpc: bidirectional, 100 ping-pong messages (full duplex)" t_grpc_bidi
  check "grpc: 0.5 s deadline on a 2 s call: DEADLINE_EXCEEDED" t_grpc_deadline
  check "grpc: proxy-made statuses: UNAVAILABLE (dead cluster), UNIMPLEMENTED (no route)" t_grpc_proxy_status
  check "grpc: 200 concurrent unary calls from 10 threads" t_grpc_concurrent
  check "grpc: proxy exits 0 on SIGTERM" grpc_stop
fi
