# WebSocket (RFC 6455 over HTTP/1.1) through the proxy, with the Python websockets
# library's own client and server (its asyncio API; installed here from PyPI if
# missing): echo, subprotocols, full duplex streams, wss:// on a TLS listener,
# upgrades = [] (403), the ringway_websocket_active gauge, close handshakes.
# Sourced by tests/interop/run.sh (after tls.sh), whose helpers and variables it
# uses: check, free_port, wait_port, $WORK, $BIN, PIDS, and $TLS_DIR (ca.pem, and
# a.pem/a.key for a.example.com, made by tls.sh).
# shellcheck shell=bash

python3 -c 'import websockets.asyncio.client' 2>/dev/null \
  || pip install -q 'websockets>=13' >/dev/null 2>&1 \
  || pip install -q --break-system-packages 'websockets>=13' >/dev/null 2>&1

WS_DIR=$WORK/ws
mkdir -p "$WS_DIR"

# ---------------------------------------------------------------- the upstream

# A websockets server. Every path echoes what it gets (text and binary; the text
# "__info__" is answered with what the handshake looked like here) and remembers,
# with ?id=ID, the close code and reason it saw; /ws/closed?id=ID sends those.
# /ws/stream?n=N sends N binary messages of 64 KiB while it receives, up to the
# text "end"; then it sends "COUNT SHA256" of the bytes it received.
# /ws/close?code=C&reason=R closes with C and R. /ws/seen sends the request paths
# seen so far. chat.v1 is chosen when offered (none otherwise).
cat > "$WS_DIR/upstream.py" <<'PY'
import asyncio, hashlib, json, random, sys
from urllib.parse import parse_qs, urlsplit
from websockets.asyncio.server import serve

CLOSES, SEEN = {}, []

def pattern(i, n=65536):
    return random.Random(i).randbytes(n)

async def echo(ws, q):
    try:
        async for msg in ws:
            if msg == "__info__":
                headers = {}
                for k, v in ws.request.headers.raw_items():
                    headers[k.lower()] = headers[k.lower()] + ", " + v if k.lower() in headers else v
                msg = json.dumps({"subprotocol": ws.subprotocol, "headers": headers})
            await ws.send(msg)
    finally:
        if "id" in q:
            CLOSES[q["id"][0]] = {"code": ws.close_code, "reason": ws.close_reason}

async def stream(ws, q):
    async def send():
        for i in range(int(q["n"][0])):
            await ws.send(pattern(i))
    sender = asyncio.create_task(send())
    digest, count = hashlib.sha256(), 0
    async for msg in ws:
        if isinstance(msg, str):
            break
        digest.update(msg)
        count += len(msg)
    await sender
    await ws.send(f"{count} {digest.hexdigest()}")

async def closed(ws, q):
    for _ in range(200):
        if q["id"][0] in CLOSES:
            break
        await asyncio.sleep(0.05)
    await ws.send(json.dumps(CLOSES.get(q["id"][0])))

async def handler(ws):
    url = urlsplit(ws.request.path)
    q = parse_qs(url.query)
    SEEN.append(ws.request.path)
    if url.path == "/ws/stream":
        await stream(ws, q)
    elif url.path == "/ws/closed":
        await closed(ws, q)
    elif url.path == "/ws/close":
        await ws.close(int(q["code"][0]), q["reason"][0])
    elif url.path == "/ws/seen":
        await ws.send(json.dumps(SEEN))
    else:
        await echo(ws, q)

async def main(port):
    pick = lambda conn, offered: "chat.v1" if "chat.v1" in offered else None
    async with serve(handler, "127.0.0.1", port, subprotocols=["chat.v1"],
                     select_subprotocol=pick, max_size=1 << 24) as server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
PY

# What the clients share: connect() through the proxy (no proxy from the
# environment; wss:// trusts the interop CA and asks for a.example.com), the
# stream's pattern, and run(), which gives a check 20 s and prints why it failed.
cat > "$WS_DIR/wsc.py" <<'PY'
import asyncio, inspect, os, random, ssl, sys, traceback
from websockets.asyncio.client import connect

def pattern(i, n=65536):
    return random.Random(i).randbytes(n)

def open_ws(base, path, **kw):
    if "proxy" in inspect.signature(connect).parameters:
        kw["proxy"] = None
    if base.startswith("wss:"):
        kw["ssl"] = ssl.create_default_context(cafile=os.environ["WS_CA"])
        kw["server_hostname"] = "a.example.com"
    return connect(base + path, max_size=1 << 24, open_timeout=10, close_timeout=10, **kw)

def run(coro):
    try:
        asyncio.run(asyncio.wait_for(coro, 20))
    except Exception as e:
        print(f"     {type(e).__name__}: {e}")
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            print(f"     at line {tb[-1].lineno}: {tb[-1].line}")
        sys.exit(1)
PY

# Runs the Python client on stdin (arguments follow) with wsc.py importable.
ws_py() { PYTHONPATH="$WS_DIR" WS_CA="$TLS_DIR/ca.pem" timeout 60 python3 - "$@"; }
ws_logs() { # the last lines of the proxy's and the upstream's logs
  local f
  for f in proxy upstream; do tail -5 "$WS_DIR/$f.log" 2>/dev/null | sed "s/^/     $f: /" | cut -c1-300; done
}

# ---------------------------------------------------------------- the proxy

# The upstream, and a proxy with a plain listener, a TLS one (a.example.com) and
# two routes to it: /ws (WebSocket allowed, the default) and /nows (upgrades = []).
ws_start() {
  [ -s "$TLS_DIR/a.pem" ] || { echo "     no $TLS_DIR/a.pem (made by tls.sh)"; return 1; }
  echo "     websockets $(python3 -c 'import websockets; print(websockets.__version__)' 2>&1)"
  WS_UP=$(free_port); WS_P=$(free_port); WS_PT=$(free_port); WS_AD=$(free_port)
  python3 "$WS_DIR/upstream.py" "$WS_UP" 2>"$WS_DIR/upstream.log" & WS_UPID=$!; PIDS+=("$WS_UPID")
  wait_port "$WS_UP" || { echo "     upstream not listening"; ws_logs; return 1; }
  cat > "$WS_DIR/ringway.toml" <<TOML
[runtime]
workers = 2
[[listeners]]
name = "plain"
bind = "127.0.0.1:$WS_P"
[[listeners]]
name = "tls"
bind = "127.0.0.1:$WS_PT"
[listeners.tls]
certificates = [{ cert = "$TLS_DIR/a.pem", key = "$TLS_DIR/a.key" }]
[[routes]]
name = "ws"
match = { path_prefix = "/ws" }
cluster = "wsup"
[[routes]]
name = "nows"
match = { path_prefix = "/nows" }
cluster = "wsup"
upgrades = []
[clusters.wsup]
endpoints = ["127.0.0.1:$WS_UP"]
[admin]
bind = "127.0.0.1:$WS_AD"
TOML
  $BIN check --config "$WS_DIR/ringway.toml" >"$WS_DIR/check.log" 2>&1 \
    || { sed 's/^/     /' "$WS_DIR/check.log"; return 1; }
  $BIN --config "$WS_DIR/ringway.toml" --log-level warn 2>"$WS_DIR/proxy.log" & WS_PID=$!; PIDS+=("$WS_PID")
  local p
  for p in $WS_P $WS_PT $WS_AD; do
    wait_port "$p" || { echo "     port $p not listening"; ws_logs; return 1; }
  done
}

# ---------------------------------------------------------------- the checks

# Echo of a text message, a 1 MiB binary message and 100 round trips; chat.v1
# negotiated end to end (the client's offer reaches the upstream, whose choice
# reaches the client), the handshake's headers as the upstream saw them.
t_ws_echo() { # base URL
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import asyncio, json, os, sys, time
from wsc import open_ws, run

async def main(base):
    async with open_ws(base, "/ws/echo", subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1", f"subprotocol {ws.subprotocol!r} at the client"
        assert ws.response.status_code == 101, ws.response.status_code
        await ws.send("hello, ringway")
        got = await ws.recv()
        assert got == "hello, ringway", f"text echo {got!r}"
        big = os.urandom(1 << 20)
        await ws.send(big)
        got = await ws.recv()
        assert got == big, f"binary echo: {type(got).__name__} of {len(got)} bytes, not the 1 MiB sent"
        start = time.monotonic()
        for i in range(100):
            await ws.send(f"round trip {i}")
            got = await ws.recv()
            assert got == f"round trip {i}", f"round trip {i}: {got!r}"
        took = (time.monotonic() - start) * 1000
        await ws.send("__info__")
        info = json.loads(await ws.recv())
        h = info["headers"]
        print(f"     100 round trips in {took:.0f} ms; upstream saw upgrade: {h.get('upgrade')},"
              f" connection: {h.get('connection')}, sec-websocket-protocol: {h.get('sec-websocket-protocol')},"
              f" x-forwarded-for: {h.get('x-forwarded-for')}")
        assert info["subprotocol"] == "chat.v1", f"subprotocol {info['subprotocol']!r} at the upstream"
        assert h.get("upgrade", "").lower() == "websocket", h
        assert "upgrade" in h.get("connection", "").lower(), h
        assert h.get("sec-websocket-protocol") == "chat.v1", h
        assert "sec-websocket-key" in h and h.get("sec-websocket-version") == "13", h

run(main(sys.argv[1]))
PY
}

# Full duplex: /ws/stream?n=64 sends 64 messages of 64 KiB while the client sends
# 64 of its own; each side gets every byte, in order (the upstream counts and hashes
# what it got).
t_ws_duplex() { # base URL
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import asyncio, hashlib, sys, time
from wsc import open_ws, pattern, run

async def main(base):
    async with open_ws(base, "/ws/stream?n=64") as ws:
        sent = hashlib.sha256()
        async def send():
            for i in range(64):
                m = pattern(1000 + i)
                sent.update(m)
                await ws.send(m)
            await ws.send("end")
        start = time.monotonic()
        sender = asyncio.create_task(send())
        got = 0
        while True:
            m = await ws.recv()
            if isinstance(m, str):
                break
            assert m == pattern(got), f"message {got} ({len(m)} bytes) is not the one sent"
            got += 1
        await sender
        count, digest = m.split()
        print(f"     4 MiB each way at once in {(time.monotonic() - start) * 1000:.0f} ms;"
              f" client got {got} messages, upstream got {count} bytes")
        assert got == 64, f"{got} messages, expected 64"
        assert int(count) == 64 * 65536, f"upstream got {count} bytes, expected {64 * 65536}"
        assert digest == sent.hexdigest(), "upstream got other bytes than those sent"

run(main(sys.argv[1]))
PY
}

# A route with upgrades = []: the handshake is answered 403 by the proxy, and never
# reaches the upstream.
t_ws_refused() {
  ws_py "ws://127.0.0.1:$WS_P" <<'PY' || { ws_logs; return 1; }
import json, sys
from websockets.exceptions import InvalidStatus
from wsc import open_ws, run

async def main(base):
    try:
        async with open_ws(base, "/nows/echo"):
            raise AssertionError("the handshake on /nows succeeded")
    except InvalidStatus as e:
        print(f"     {e}")
        assert e.response.status_code == 403, e.response.status_code
    async with open_ws(base, "/ws/seen") as ws:
        seen = json.loads(await ws.recv())
    assert not any(p.startswith("/nows") for p in seen), f"the upstream saw {seen}"

run(main(sys.argv[1]))
PY
}

# ringway_websocket_active{route="ws"} on the admin /metrics: 1 while a tunnel is
# open, 0 again after its close (polled, 10 s at most each).
t_ws_metrics() {
  ws_py "ws://127.0.0.1:$WS_P" "$WS_AD" <<'PY' || { ws_logs; return 1; }
import asyncio, subprocess, sys, time
from wsc import open_ws, run

def active(admin):
    out = subprocess.run(["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{admin}/metrics"],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith('ringway_websocket_active{route="ws"} '):
            return line
    return None

async def until(admin, want, when):
    deadline = time.monotonic() + 10
    while (line := active(admin)) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{when}: {line!r}, expected {want!r}")
        await asyncio.sleep(0.05)

async def main(base, admin):
    zero, one = 'ringway_websocket_active{route="ws"} 0', 'ringway_websocket_active{route="ws"} 1'
    await until(admin, zero, "before")
    async with open_ws(base, "/ws/echo") as ws:
        await ws.send("open")
        assert await ws.recv() == "open"
        await until(admin, one, "while open")
        print(f"     while open: {one}")
    await until(admin, zero, "after the close")
    print(f"     after the close: {zero}")

run(main(sys.argv[1], sys.argv[2]))
PY
}

# Close handshakes pass through as they are: the client's close (1000, "bye") is
# seen by the upstream and echoed back; the upstream's (4001, "server bye") reaches
# the client, which answers it.
t_ws_close() {
  ws_py "ws://127.0.0.1:$WS_P" <<'PY' || { ws_logs; return 1; }
import json, os, sys, time
from websockets.exceptions import ConnectionClosed
from wsc import open_ws, run

async def main(base):
    cid = os.urandom(8).hex()
    async with open_ws(base, f"/ws/echo?id={cid}") as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
        start = time.monotonic()
        await ws.close(1000, "bye")
        took = (time.monotonic() - start) * 1000
        assert (ws.close_code, ws.close_reason) == (1000, "bye"), (ws.close_code, ws.close_reason)
    async with open_ws(base, f"/ws/closed?id={cid}") as ws:
        server = json.loads(await ws.recv())
    print(f"     client close took {took:.0f} ms; upstream saw {server}")
    assert server == {"code": 1000, "reason": "bye"}, server
    async with open_ws(base, "/ws/close?code=4001&reason=server%20bye") as ws:
        try:
            await ws.recv()
            raise AssertionError("a message instead of the close")
        except ConnectionClosed as e:
            print(f"     server close: {e}")
            assert e.rcvd is not None and (e.rcvd.code, e.rcvd.reason) == (4001, "server bye"), e.rcvd
            assert e.sent is not None and e.sent.code == 4001, e.sent
        assert (ws.close_code, ws.close_reason) == (4001, "server bye")

run(main(sys.argv[1]))
PY
}

ws_stop() {
  kill -TERM "$WS_PID"; wait "$WS_PID"; local rc=$?
  kill "$WS_UPID" 2>/dev/null; wait "$WS_UPID" 2>/dev/null
  [ $rc -eq 0 ] || { echo "     exit status $rc"; sed 's/^/     /' "$WS_DIR/proxy.log" | tail -20; return 1; }
}

WS_UP=0; WS_P=0; WS_PT=0; WS_AD=0; WS_PID=0; WS_UPID=0
if check "websocket: upstream (Python websockets) and proxy start, plain and TLS listeners" ws_start; then
  check "websocket: ws:// echo (text, 1 MiB binary, 100 round trips), chat.v1 negotiated" t_ws_echo "ws://127.0.0.1:$WS_P"
  check "websocket: ws:// full duplex, 64 x 64 KiB each way at once" t_ws_duplex "ws://127.0.0.1:$WS_P"
  check "websocket: wss:// echo (text, 1 MiB binary, 100 round trips), chat.v1 negotiated" t_ws_echo "wss://127.0.0.1:$WS_PT"
  check "websocket: wss:// full duplex, 64 x 64 KiB each way at once" t_ws_duplex "wss://127.0.0.1:$WS_PT"
  check "websocket: upgrades = [] refuses the handshake with 403" t_ws_refused
  check "websocket: close handshakes both ways (1000 bye, 4001 server bye)" t_ws_close
  check "websocket: ringway_websocket_active{route=\"ws\"} 1 while open, 0 after" t_ws_metrics
  check "websocket: proxy exits 0 on SIGTERM" ws_stop
fi
