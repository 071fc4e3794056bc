# WebSocket (RFC 6455 over HTTP/1.1) through the proxy, with the Python websockets
# library's own client and server (its asyncio API; installed here from PyPI if
# missing): echo, subprotocols, full duplex streams, wss:// on a TLS listener,
# upgrades = [] (403), the ringway_websocket_active gauge, close handshakes.
# And WebSocket over HTTP/2 (RFC 8441, extended CONNECT) to the same upstream, on
# an h2c listener (prior knowledge, http2 = true) and on the TLS listener (ALPN h2):
# a client made of the Python h2 library (the connection, :protocol websocket, flow
# control) and websockets' Sans-I/O ClientProtocol (the frames in the stream's
# DATA); SETTINGS_ENABLE_CONNECT_PROTOCOL, 200 without Sec-WebSocket-Accept, echo,
# full duplex, several WebSockets on one connection, close handshakes ending the
# stream with END_STREAM, 403 on upgrades = [], the gauge (after a close and after
# RST_STREAM).
# Sourced by tests/interop/run.sh (after tls.sh), whose helpers and variables it
# uses: check, free_port, wait_port, $WORK, $BIN, PIDS, and $TLS_DIR (ca.pem, and
# a.pem/a.key for a.example.com, made by tls.sh).
# shellcheck shell=bash

python3 -c 'import websockets.asyncio.client' 2>/dev/null \
  || pip install -q 'websockets>=13' >/dev/null 2>&1 \
  || pip install -q --break-system-packages 'websockets>=13' >/dev/null 2>&1
python3 -c 'import h2.connection' 2>/dev/null \
  || pip install -q h2 >/dev/null 2>&1 \
  || pip install -q --break-system-packages h2 >/dev/null 2>&1

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

# The HTTP/2 client (RFC 8441) for the checks over HTTP/2: H2("h2c:PORT") or
# H2("h2:PORT") (TLS), whose open_ws(path) sends the extended CONNECT; a stream
# answered 200 carries a websockets ClientProtocol (Sans-I/O, OPEN from the start)
# with send(), recv(), close(). run() gives a check 30 s (SIGALRM) on top of the
# 10 s deadline of every wait, and prints why it failed.
cat > "$WS_DIR/h2client.py" <<'PY'
import os, random, signal, socket, ssl, sys, time, traceback, urllib.request
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2 import events as ev
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

SEND_EOF = b""  # what the Sans-I/O layer writes for "half-close": END_STREAM here

def pattern(i, n=65536):
    return random.Random(i).randbytes(n)

class WsStream:
    """One extended CONNECT stream; once answered 200, a websockets ClientProtocol
    (Sans-I/O, state OPEN: the handshake is HTTP/2's) frames its DATA."""

    def __init__(self, conn, sid, path):
        self.conn, self.sid, self.path = conn, sid, path
        self.status, self.headers, self.body = None, {}, b""
        self.ws = None
        self.out, self.want_end, self.end_sent = bytearray(), False, False
        self.ended, self.reset = False, None
        self.messages, self.partial = [], None
        self.log = []  # the frames of the stream, in order, for the messages

    def clean_end(self):
        """Why the stream did not end with the server's END_STREAM (a RST_STREAM
        NO_ERROR after it is allowed: RFC 9113 section 8.1), or None."""
        if not self.ended:
            return f"no END_STREAM; frames: {', '.join(self.log)}"
        if self.reset is not None and (self.reset != "NO_ERROR" or
                                       self.log.index("END_STREAM") > self.log.index(f"RST_STREAM {self.reset}")):
            return f"RST_STREAM {self.reset}; frames: {', '.join(self.log)}"
        return None

    def _response(self, headers):
        for k, v in headers:
            self.headers[k] = self.headers[k] + ", " + v if k in self.headers else v
        self.status = int(self.headers[":status"])
        if self.status == 200:
            self.ws = ClientProtocol(parse_uri("ws://unused/"), state=State.OPEN, max_size=1 << 24)

    def _data(self, data):
        if self.ws is None:
            self.body += data
        else:
            self.ws.receive_data(data)
            self._drain()

    def _end(self):
        self.ended = True
        if self.ws is not None:
            self.ws.receive_eof()
            self._drain()

    def _drain(self):
        for f in self.ws.events_received():
            if f.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.partial = (f.opcode, bytearray(f.data))
            elif f.opcode is Opcode.CONT:
                self.partial[1].extend(f.data)
            else:
                continue
            if f.fin:
                op, data = self.partial
                self.messages.append(data.decode() if op is Opcode.TEXT else bytes(data))
                self.partial = None
        for chunk in self.ws.data_to_send():
            if chunk == SEND_EOF:
                self.want_end = True
            else:
                self.out += chunk

    def send(self, msg):
        if isinstance(msg, str):
            self.ws.send_text(msg.encode())
        else:
            self.ws.send_binary(msg)
        self._drain()
        self.conn.push()

    def recv(self, timeout=10):
        self.conn.until(lambda: self.messages or self.ended or self.reset is not None,
                        f"a message on stream {self.sid} ({self.path})", timeout)
        if not self.messages:
            raise AssertionError(f"stream {self.sid} ({self.path}) ended (reset {self.reset},"
                                 f" close {self.ws.close_rcvd}) instead of a message")
        return self.messages.pop(0)

    def close(self, code=1000, reason=""):
        self.ws.send_close(code, reason)
        self._drain()
        self.conn.push()

    def done(self):  # for the endpoints that close after their answer: close if the
        if self.ws.state is State.OPEN:  # upstream's close has not come yet, then
            self.close(1000)             # wait for the end
        self.wait_finished()

    def end(self):  # END_STREAM now, without a close frame
        self.want_end = True
        self.conn.push()

    def finished(self):  # the WebSocket closed and the stream ended both ways (or was reset)
        return self.reset is not None or (self.ended and self.end_sent and
                                          (self.ws is None or self.ws.state is State.CLOSED))

    def wait_finished(self, timeout=10):
        self.conn.until(self.finished, f"the end of stream {self.sid} ({self.path})", timeout)

class H2:
    """An HTTP/2 client connection (Python h2): h2c with prior knowledge, or TLS
    with ALPN h2 (the interop CA, SNI a.example.com). One thread; every read has
    a deadline; DATA is sent within the flow control windows, round robin over
    the streams, and acknowledged as it is read."""

    def __init__(self, target):
        mode, port = target.split(":")
        sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "h2":
            ctx = ssl.create_default_context(cafile=os.environ["WS_CA"])
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="a.example.com")
            alpn = sock.selected_alpn_protocol()
            assert alpn == "h2", f"ALPN {alpn!r}, not h2"
            self.scheme, self.authority = "https", "a.example.com"
        else:
            self.scheme, self.authority = "http", f"127.0.0.1:{port}"
        self.sock, self.streams = sock, {}
        self.settings_seen, self.terminated, self.eof = False, None, False
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.flush()
        self.until(lambda: self.settings_seen, "the proxy's SETTINGS")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.h2.close_connection()
            self.flush()
        except Exception:
            pass
        self.sock.close()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def push(self):
        progress = True
        while progress:  # one frame a stream a round, while a window allows
            progress = False
            for s in list(self.streams.values()):
                if s.reset is not None or s.end_sent:  # nothing more can go
                    s.out.clear()
                    continue
                if s.out:
                    n = min(len(s.out), self.h2.local_flow_control_window(s.sid),
                            self.h2.max_outbound_frame_size)
                    if n > 0:
                        self.h2.send_data(s.sid, bytes(s.out[:n]))
                        del s.out[:n]
                        progress = True
                if s.want_end and not s.out and not s.end_sent:
                    self.h2.end_stream(s.sid)
                    s.end_sent = True
        self.flush()

    def step(self, deadline):
        self.push()
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            return
        if not data:
            self.eof = True
            return
        for e in self.h2.receive_data(data):
            self.dispatch(e)
        self.push()

    def dispatch(self, e):
        s = self.streams.get(getattr(e, "stream_id", None))
        if isinstance(e, ev.RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(e, ev.ResponseReceived):
            s._response(e.headers)
            s.log.append(f"HEADERS {s.status}")
        elif isinstance(e, ev.DataReceived):
            self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            if s.log and s.log[-1].startswith("DATA "):  # runs of DATA frames as one entry
                s.log[-1] = f"DATA {int(s.log[-1].split()[1]) + len(e.data)}"
            else:
                s.log.append(f"DATA {len(e.data)}")
            s._data(e.data)
        elif isinstance(e, ev.StreamEnded):
            s.log.append("END_STREAM")
            s._end()
        elif isinstance(e, ev.StreamReset):
            s.reset = ErrorCodes(e.error_code).name if e.error_code in ErrorCodes._value2member_map_ else e.error_code
            s.log.append(f"RST_STREAM {s.reset}")
        elif isinstance(e, ev.ConnectionTerminated):
            self.terminated = f"GOAWAY {e.error_code!r} last stream {e.last_stream_id} {e.additional_data!r}"

    def until(self, cond, what, timeout=10):
        deadline = time.monotonic() + timeout
        while not cond():
            if self.eof or self.terminated:
                raise AssertionError(f"waiting for {what}: the proxy closed the connection"
                                     f" ({self.terminated or 'no GOAWAY'})")
            if time.monotonic() >= deadline:
                raise AssertionError(f"waiting for {what}: nothing after {timeout} s")
            self.step(deadline)

    def connect_protocol(self):
        return self.h2.remote_settings.enable_connect_protocol

    def open_ws(self, path, subprotocols=None, wait=True):
        assert self.connect_protocol() == 1, \
            f"SETTINGS_ENABLE_CONNECT_PROTOCOL is {self.connect_protocol()}, not 1"
        sid = self.h2.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", self.scheme),
                   (":path", path), (":authority", self.authority), ("sec-websocket-version", "13")]
        if subprotocols:
            headers.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        s = self.streams[sid] = WsStream(self, sid, path)
        self.h2.send_headers(sid, headers)
        self.flush()
        if wait:
            self.wait_response(s)
        return s

    def wait_response(self, s):
        self.until(lambda: s.status is not None or s.reset is not None,
                   f"the response to CONNECT {s.path} (stream {s.sid})")
        assert s.status is not None, f"CONNECT {s.path}: RST_STREAM {s.reset} without a response"

def active(admin, route="ws"):
    """The ringway_websocket_active{route=ROUTE} line of the admin /metrics."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f'ringway_websocket_active{{route="{route}"}} '):
                return line
    return None

def until_active(admin, n, when, route="ws", timeout=10):
    want = f'ringway_websocket_active{{route="{route}"}} {n}'
    deadline = time.monotonic() + timeout
    while (line := active(admin, route)) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{when}: {line!r}, expected {want!r}")
        time.sleep(0.05)
    return want

def run(main, *args):
    def expired(*_):
        raise TimeoutError("the check took over 30 s")
    signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    try:
        main(*args)
    except Exception as e:
        print(f"     {type(e).__name__}: {e}")
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            print(f"     at line {tb[-1].lineno}: {tb[-1].line}")
        sys.exit(1)
    finally:
        signal.alarm(0)
PY

# Runs the Python client on stdin (arguments follow) with wsc.py and h2client.py
# importable.
ws_py() { PYTHONPATH="$WS_DIR" WS_CA="$TLS_DIR/ca.pem" timeout 60 python3 - "$@"; }
ws_logs() { # the last lines of the proxy's and the upstream's logs
  local f
  for f in proxy upstream; do tail -5 "$WS_DIR/$f.log" 2>/dev/null | sed "s/^/     $f: /" | cut -c1-300; done
}

# ---------------------------------------------------------------- the proxy

# The upstream, and a proxy with a plain listener, an h2c one (http2 = true), a TLS
# one (a.example.com, ALPN h2 and http/1.1 by default) and two routes to it: /ws (WebSocket allowed, the default) and /nows (upgrades = []).
ws_start() {
  [ -s "$TLS_DIR/a.pem" ] || { echo "     no $TLS_DIR/a.pem (made by tls.sh)"; return 1; }
  echo "     websockets $(python3 -c 'import websockets; print(websockets.__version__)' 2>&1)"
  WS_UP=$(free_port); WS_P=$(free_port); WS_PH=$(free_port); WS_PT=$(free_port); WS_AD=$(free_port)
  python3 "$WS_DIR/upstream.py" "$WS_UP" 2>"$WS_DIR/upstream.log" & WS_UPID=$!; PIDS+=("$WS_UPID")
  wait_port "$WS_UP" || { echo "     upstream not listening"; ws_logs; return 1; }
  cat > "$WS_DIR/ringway.toml" <<TOML
[runtime]
workers = 2
[[listeners]]
name = "plain"
bind = "127.0.0.1:$WS_P"
[[listeners]]
name = "h2c"
bind = "127.0.0.1:$WS_PH"
http2 = true
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
  for p in $WS_P $WS_PH $WS_PT $WS_AD; do
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

# ---------------------------------------------------------------- over HTTP/2

# The checks over HTTP/2 take "h2c:PORT" (prior knowledge) or "h2:PORT" (TLS, ALPN
# h2); ws_h2_each checks one of them over each.
ws_h2_each() { # name, function
  check "websocket over h2c: $1" "$2" "h2c:$WS_PH"
  check "websocket over h2 (TLS): $1" "$2" "h2:$WS_PT"
}

# SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 in the proxy's SETTINGS; extended CONNECT is
# answered 200 with the upstream's choice of chat.v1 (and no sec-websocket-protocol
# when none was offered), never with sec-websocket-accept (RFC 8441 section 5).
t_h2_connect() { # h2c:PORT | h2:PORT
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import sys
from h2client import H2, run

def main(target):
    with H2(target) as c:
        rs = c.h2.remote_settings
        print(f"     SETTINGS: ENABLE_CONNECT_PROTOCOL={rs.enable_connect_protocol},"
              f" MAX_CONCURRENT_STREAMS={rs.max_concurrent_streams}, INITIAL_WINDOW_SIZE={rs.initial_window_size}")
        assert c.connect_protocol() == 1, f"SETTINGS_ENABLE_CONNECT_PROTOCOL {c.connect_protocol()}"
        s = c.open_ws("/ws/echo", subprotocols=["chat.v1"])
        print(f"     CONNECT :protocol websocket, sec-websocket-protocol: chat.v1 -> "
              + ", ".join(f"{k}: {v}" for k, v in s.headers.items()))
        assert s.status == 200, f":status {s.status} {s.headers} {s.body[:200]!r}"
        assert s.headers.get("sec-websocket-protocol") == "chat.v1", s.headers
        for h in ("sec-websocket-accept", "upgrade", "connection"):
            assert h not in s.headers, f"{h} in the 200: {s.headers}"
        assert not s.ended, "END_STREAM on the 200"
        plain = c.open_ws("/ws/echo")
        assert plain.status == 200, f":status {plain.status} {plain.headers}"
        assert "sec-websocket-protocol" not in plain.headers, f"none offered, got {plain.headers}"
        assert "sec-websocket-accept" not in plain.headers, plain.headers
        for t in (s, plain):
            t.close(1000)
        for t in (s, plain):
            t.wait_finished()

run(main, sys.argv[1])
PY
}

# Echo of a text message, a 1 MiB binary one (16 windows' worth each way) and 100
# round trips on the chat.v1 subprotocol; the upstream saw an HTTP/1.1 handshake
# made by the proxy (its own key, version 13, chat.v1 offered).
t_h2_echo() { # h2c:PORT | h2:PORT
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import json, os, sys, time
from h2client import H2, run

def main(target):
    with H2(target) as c:
        s = c.open_ws("/ws/echo", subprotocols=["chat.v1"])
        assert s.status == 200 and s.headers.get("sec-websocket-protocol") == "chat.v1", s.headers
        s.send("hello, ringway")
        got = s.recv()
        assert got == "hello, ringway", f"text echo {got!r}"
        big = os.urandom(1 << 20)
        s.send(big)
        got = s.recv()
        assert got == big, f"binary echo: {type(got).__name__} of {len(got)} bytes, not the 1 MiB sent"
        start = time.monotonic()
        for i in range(100):
            s.send(f"round trip {i}")
            got = s.recv()
            assert got == f"round trip {i}", f"round trip {i}: {got!r}"
        took = (time.monotonic() - start) * 1000
        s.send("__info__")
        info = json.loads(s.recv())
        h = info["headers"]
        print(f"     100 round trips in {took:.0f} ms; upstream saw upgrade: {h.get('upgrade')},"
              f" connection: {h.get('connection')}, sec-websocket-protocol: {h.get('sec-websocket-protocol')},"
              f" sec-websocket-version: {h.get('sec-websocket-version')}")
        assert info["subprotocol"] == "chat.v1", f"subprotocol {info['subprotocol']!r} at the upstream"
        assert h.get("upgrade", "").lower() == "websocket", h
        assert "upgrade" in h.get("connection", "").lower(), h
        assert h.get("sec-websocket-protocol") == "chat.v1", h
        assert len(h.get("sec-websocket-key", "")) == 24 and h.get("sec-websocket-version") == "13", h
        s.close(1000)
        s.wait_finished()

run(main, sys.argv[1])
PY
}

# Full duplex: /ws/stream?n=64 sends 64 x 64 KiB while the client sends its own
# 64 x 64 KiB (queued at once, sent as the windows allow); each side checks the
# SHA-256 of what it got.
t_h2_duplex() { # h2c:PORT | h2:PORT
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import hashlib, sys, time
from h2client import H2, pattern, run

def main(target):
    with H2(target) as c:
        s = c.open_ws("/ws/stream?n=64")
        assert s.status == 200, s.headers
        start = time.monotonic()
        sent = hashlib.sha256()
        for i in range(64):
            m = pattern(1000 + i)
            sent.update(m)
            s.send(m)
        s.send("end")
        expected, got, n = hashlib.sha256(), hashlib.sha256(), 0
        while True:
            m = s.recv()
            if isinstance(m, str):
                break
            assert len(m) == 65536, f"message {n}: {len(m)} bytes"
            expected.update(pattern(n))
            got.update(m)
            n += 1
        count, digest = m.split()
        print(f"     4 MiB each way at once in {(time.monotonic() - start) * 1000:.0f} ms;"
              f" client got {n} messages, upstream got {count} bytes")
        assert n == 64, f"{n} messages, expected 64"
        assert got.hexdigest() == expected.hexdigest(), "the client got other bytes than the upstream sent"
        assert int(count) == 64 * 65536, f"upstream got {count} bytes, expected {64 * 65536}"
        assert digest == sent.hexdigest(), "upstream got other bytes than those sent"
        s.wait_finished()  # /ws/stream closes (1000) after its summary
        assert s.ws.close_rcvd is not None and s.ws.close_rcvd.code == 1000, s.ws.close_rcvd
        assert s.clean_end() is None, s.clean_end()

run(main, sys.argv[1])
PY
}

# Three WebSockets at once on one connection: their CONNECTs sent together, then
# 20 rounds of a text and a 100 KiB binary message on each, queued before any is
# read, so that their DATA frames interleave; each stream gets its own echoes, in
# order.
t_h2_multi() { # h2c:PORT | h2:PORT
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import sys
from h2client import H2, pattern, run

def main(target):
    with H2(target) as c:
        streams = [c.open_ws(f"/ws/echo?s={k}", wait=False) for k in range(3)]
        for s in streams:
            c.wait_response(s)
            assert s.status == 200, (s.sid, s.headers)
        for r in range(20):
            for k, s in enumerate(streams):
                s.send(f"stream {k} round {r}")
                s.send(pattern(10_000 * k + r, 100_000))
        for r in range(20):
            for k, s in enumerate(streams):
                got = s.recv()
                assert got == f"stream {k} round {r}", f"stream {s.sid}: {got!r}"
                got = s.recv()
                assert got == pattern(10_000 * k + r, 100_000), \
                    f"stream {s.sid} round {r}: {len(got)} bytes, not its own"
        print(f"     streams {[s.sid for s in streams]}: 20 x (text + 100 KiB) each, echoed in order")
        for s in streams:
            s.close(1000)
        for s in streams:
            s.wait_finished()
            assert s.clean_end() is None, f"stream {s.sid}: {s.clean_end()}"

run(main, sys.argv[1])
PY
}

# Close handshakes: the client's (1000, "bye") is seen by the upstream (?id=) and
# echoed, the upstream's (4001, "server bye") reaches the client, which echoes it;
# each time the proxy ends the stream with END_STREAM (a RST_STREAM NO_ERROR may
# follow it) and the client ends its side (END_STREAM) too. The client's
# END_STREAM alone (no close frame) closes the upstream's connection (it sees 1006)
# and the proxy's END_STREAM follows. The connection serves on.
t_h2_close() { # h2c:PORT | h2:PORT
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import json, os, sys
from h2client import H2, run

def main(target):
    with H2(target) as c:
        cid = os.urandom(8).hex()
        s = c.open_ws(f"/ws/echo?id={cid}")
        s.send("x")
        assert s.recv() == "x"
        s.close(1000, "bye")
        s.wait_finished()
        rcvd = s.ws.close_rcvd
        assert s.clean_end() is None, s.clean_end()
        client_log = ", ".join(s.log)
        assert rcvd is not None and (rcvd.code, rcvd.reason) == (1000, "bye"), f"close echoed: {rcvd}"
        seen = c.open_ws(f"/ws/closed?id={cid}")
        server = json.loads(seen.recv())
        print(f"     client close: echoed {rcvd}; upstream saw {server}; frames: {client_log}")
        assert server == {"code": 1000, "reason": "bye"}, server
        seen.done()
        s = c.open_ws("/ws/close?code=4001&reason=server%20bye")
        s.wait_finished()
        rcvd, sent = s.ws.close_rcvd, s.ws.close_sent
        print(f"     server close: received {rcvd}; sent {sent}; frames: {', '.join(s.log)}")
        assert s.clean_end() is None, s.clean_end()
        assert not s.messages, s.messages
        assert rcvd is not None and (rcvd.code, rcvd.reason) == (4001, "server bye"), rcvd
        assert sent is not None and sent.code == 4001, sent
        cid = os.urandom(8).hex()
        s = c.open_ws(f"/ws/echo?id={cid}")
        s.send("y")
        assert s.recv() == "y"
        s.end()
        s.wait_finished()
        assert s.clean_end() is None, s.clean_end()
        seen = c.open_ws(f"/ws/closed?id={cid}")
        server = json.loads(seen.recv())
        seen.done()
        print(f"     client END_STREAM alone: upstream saw {server}; frames: {', '.join(s.log)}")
        assert server == {"code": 1006, "reason": ""}, server
        s = c.open_ws("/ws/echo")
        s.send("still serving")
        assert s.recv() == "still serving"
        s.close(1000)
        s.wait_finished()

run(main, sys.argv[1])
PY
}

# upgrades = []: extended CONNECT on /nows is answered 403 (the stream ended), and
# never reaches the upstream (its /ws/seen, asked on the same connection).
t_h2_refused() { # h2c:PORT | h2:PORT
  ws_py "$1" <<'PY' || { ws_logs; return 1; }
import json, sys
from h2client import H2, run

def main(target):
    with H2(target) as c:
        s = c.open_ws("/nows/echo", subprotocols=["chat.v1"])
        c.until(lambda: s.ended or s.reset is not None, "the end of the 403")
        print(f"     /nows: {len(s.body)} bytes of body; frames: {', '.join(s.log)}")
        assert s.status == 403, f":status {s.status} {s.headers}"
        assert s.clean_end() is None, s.clean_end()
        seen = c.open_ws("/ws/seen")
        paths = json.loads(seen.recv())
        assert not any(p.startswith("/nows") for p in paths), f"the upstream saw {paths}"
        seen.done()

run(main, sys.argv[1])
PY
}

# ringway_websocket_active{route="ws"}: 1 while a WebSocket over HTTP/2 is open, 0
# after its close handshake; 1 again for a second one, 0 after the client's
# RST_STREAM (CANCEL). Polled, 10 s at most each.
t_h2_metrics() { # h2c:PORT | h2:PORT
  ws_py "$1" "$WS_AD" <<'PY' || { ws_logs; return 1; }
import sys
from h2.errors import ErrorCodes
from h2client import H2, run, until_active

def main(target, admin):
    until_active(admin, 0, "before")
    with H2(target) as c:
        s = c.open_ws("/ws/echo")
        s.send("open")
        assert s.recv() == "open"
        print(f"     while open: {until_active(admin, 1, 'while open')}")
        s.close(1000)
        s.wait_finished()
        print(f"     after the close: {until_active(admin, 0, 'after the close')}")
        s = c.open_ws("/ws/echo")
        s.send("open")
        assert s.recv() == "open"
        until_active(admin, 1, "while the second is open")
        c.h2.reset_stream(s.sid, ErrorCodes.CANCEL)
        c.flush()
        print(f"     after RST_STREAM: {until_active(admin, 0, 'after RST_STREAM')}")
        s = c.open_ws("/ws/echo")
        s.send("after the reset")
        assert s.recv() == "after the reset"
        s.close(1000)
        s.wait_finished()
    until_active(admin, 0, "at the end")

run(main, sys.argv[1], sys.argv[2])
PY
}

ws_stop() {
  kill -TERM "$WS_PID"; wait "$WS_PID"; local rc=$?
  kill "$WS_UPID" 2>/dev/null; wait "$WS_UPID" 2>/dev/null
  [ $rc -eq 0 ] || { echo "     exit status $rc"; sed 's/^/     /' "$WS_DIR/proxy.log" | tail -20; return 1; }
}

WS_UP=0; WS_P=0; WS_PH=0; WS_PT=0; WS_AD=0; WS_PID=0; WS_UPID=0
if check "websocket: upstream (Python websockets) and proxy start, plain, h2c and TLS listeners" ws_start; then
  check "websocket: ws:// echo (text, 1 MiB binary, 100 round trips), chat.v1 negotiated" t_ws_echo "ws://127.0.0.1:$WS_P"
  check "websocket: ws:// full duplex, 64 x 64 KiB each way at once" t_ws_duplex "ws://127.0.0.1:$WS_P"
  check "websocket: wss:// echo (text, 1 MiB binary, 100 round trips), chat.v1 negotiated" t_ws_echo "wss://127.0.0.1:$WS_PT"
  check "websocket: wss:// full duplex, 64 x 64 KiB each way at once" t_ws_duplex "wss://127.0.0.1:$WS_PT"
  check "websocket: upgrades = [] refuses the handshake with 403" t_ws_refused
  check "websocket: close handshakes both ways (1000 bye, 4001 server bye)" t_ws_close
  check "websocket: ringway_websocket_active{route=\"ws\"} 1 while open, 0 after" t_ws_metrics
  ws_h2_each "SETTINGS_ENABLE_CONNECT_PROTOCOL=1; extended CONNECT 200, chat.v1, no sec-websocket-accept" t_h2_connect
  ws_h2_each "echo (text, 1 MiB binary, 100 round trips), chat.v1 negotiated" t_h2_echo
  ws_h2_each "full duplex, 64 x 64 KiB each way at once within the flow control windows" t_h2_duplex
  ws_h2_each "3 WebSockets interleaved on one connection, each echoed" t_h2_multi
  ws_h2_each "close handshakes both ways (1000 bye, 4001 server bye), END_STREAM; END_STREAM alone" t_h2_close
  ws_h2_each "upgrades = [] answers the extended CONNECT with 403" t_h2_refused
  ws_h2_each "ringway_websocket_active{route=\"ws\"} 1 while open, 0 after a close and a RST_STREAM" t_h2_metrics
  check "websocket: proxy exits 0 on SIGTERM" ws_stop
fi
