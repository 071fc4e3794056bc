#!/usr/bin/env python3
"""HTTP/2 conformance table for Ringway's cleartext (prior knowledge) HTTP/2.

Each row opens a fresh TCP connection, sends the client preface and an empty
SETTINGS frame, ACKs the server's SETTINGS, then sends the row's raw frames (built
with hyperframe, header blocks with hpack.Encoder; frames hyperframe refuses to
build are written by hand as bytes) and reads the server's frames until a
decisive one (GOAWAY, RST_STREAM or a response on the watched stream, the
connection closing) or a deadline. Expected outcomes: a GOAWAY with an error
code, an RST_STREAM with a code on a stream, a response with a :status, or the
connection staying usable (a GET /healthz sent after the row's frames gets 200).
Where RFC 9113 allows a stream error or a connection error (§5.4: an endpoint
may treat any stream error as a connection error), the row accepts both and the
line says which came.

The floods (RFC 9113 §10.5) come last; then /metrics on the admin address is
checked for every GOAWAY by its reason (ringway_h2_goaway_total{reason}), and the
proxy's resident memory (VmRSS of --pid) must have stayed within --rss-slack-mib of
its value at the start, sampled after every row.

The routes the proxy must have (tests/interop/h2conf.sh writes them):
  /healthz  a direct answer, 200 "ok";
  /stall    forwarded to --stall-port, where this script listens with a full
            accept queue: the proxy's connect hangs, so a stream sent there stays
            open and its request body is never read (no WINDOW_UPDATE);
  /...      anything else, forwarded to an HTTP/1.1 upstream.

Prints `ok   <rule> (RFC 9113 §x.y)` or `FAIL <rule>: expected ..., got ...` per
row and a summary; exits 1 if any row failed.
"""

import argparse
import http.client
import re
import socket
import struct
import sys
import threading
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Error codes (RFC 9113 §7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
CODE_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

# Frame types and flags, for frames written by hand.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
F_END_STREAM = 0x1
F_ACK = 0x1
F_END_HEADERS = 0x4
F_PADDED = 0x8
F_PRIORITY = 0x20

# SETTINGS identifiers (RFC 9113 §6.5.2).
S_HEADER_TABLE_SIZE = 0x1
S_ENABLE_PUSH = 0x2
S_MAX_CONCURRENT_STREAMS = 0x3
S_INITIAL_WINDOW_SIZE = 0x4
S_MAX_FRAME_SIZE = 0x5

MAX_WINDOW = 2**31 - 1


def code_name(code):
    return CODE_NAMES.get(code, f"0x{code:x}")


TYPE_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE",
              "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]


def frame_text(head, payload):
    """One frame as text: type, flags, stream, length, its first payload octets."""
    n, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
    sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    name = TYPE_NAMES[kind] if kind < len(TYPE_NAMES) else f"type=0x{kind:x}"
    shown = payload[:24].hex()
    more = "..." if len(payload) > 24 else ""
    return f"{name} flags=0x{flags:x} stream={sid} len={n} [{shown}{more}]"


def frames_text(data, limit=8):
    """The frames of a byte string, as text (runs of identical frames folded)."""
    out, at, last, run = [], 0, None, 0
    while at + 9 <= len(data):
        n = int.from_bytes(data[at:at + 3], "big")
        t = frame_text(data[at:at + 9], data[at + 9:at + 9 + n])
        at += 9 + n
        if t == last:
            run += 1
            continue
        if last is not None:
            out.append(last + (f" x{run}" if run > 1 else ""))
        last, run = t, 1
    if last is not None:
        out.append(last + (f" x{run}" if run > 1 else ""))
    if len(out) > limit:
        out = out[:limit - 1] + [f"... {len(out) - limit + 1} more", out[-1]]
    return out


def raw(kind, flags, sid, payload=b""):
    """A frame written by hand (any length, type, stream)."""
    n = len(payload)
    return struct.pack(">BHBBL", n >> 16, n & 0xFFFF, kind, flags, sid) + payload


def settings_payload(*pairs):
    return b"".join(struct.pack(">HL", k, v) for k, v in pairs)


def hpack_int(value, prefix_bits, first=0):
    """An HPACK integer (RFC 7541 §5.1) with `first` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal_indexed(name, value):
    """A literal field with incremental indexing and a new name, no Huffman."""
    return (b"\x40" + hpack_int(len(name), 7) + name
            + hpack_int(len(value), 7) + value)


def req(method="GET", path="/healthz", extra=(), authority="conformance"):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", authority), *extra]


# ------------------------------------------------------------------ events

class Ev:
    """Something read from the server: goaway, rst, response, data, eof,
    reset (ECONNRESET), timeout."""

    def __init__(self, kind, sid=0, code=None, status=None, last=None, debug=b""):
        self.kind, self.sid, self.code, self.status = kind, sid, code, status
        self.last, self.debug = last, debug

    def __str__(self):
        if self.kind == "goaway":
            d = f", debug {self.debug.decode('latin1')!r}" if self.debug else ""
            return f"GOAWAY {code_name(self.code)} (last stream {self.last}{d})"
        if self.kind == "rst":
            return f"RST_STREAM {code_name(self.code)} on stream {self.sid}"
        if self.kind == "response":
            return f":status {self.status} on stream {self.sid}"
        if self.kind == "eof":
            return "the connection closed without a GOAWAY"
        if self.kind == "reset":
            return "the connection was reset (ECONNRESET) without a GOAWAY"
        if self.kind == "timeout":
            return "nothing decisive before the deadline"
        return self.kind


class Conn:
    """A client connection: preface, empty SETTINGS, the server's SETTINGS
    ACKed; the frames read are kept as events."""

    def __init__(self, addr, deadline):
        self.deadline = deadline
        self.sock = socket.create_connection(addr, timeout=deadline)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = bytearray()
        self.events = []
        self.partial = None  # (stream, flags, block) of a header block in progress
        self.server_settings = {}
        self.conn_window = 65535  # the server's receive window, as it told us
        self.settings_acked = False
        self.received = []  # every frame read, as text
        self.sent = b""  # the row's bytes (after the handshake)
        self.writer = None
        self.send_error = None
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())
        # Settled: the server's SETTINGS ACKed and ours ACKed by it.
        until = time.monotonic() + deadline
        self.read_until(lambda e: e.kind == "settings-ack" or e.kind in
                        ("goaway", "eof", "reset"), until)
        if not self.settings_acked:
            raise RuntimeError("no SETTINGS ACK from the server: "
                               + ", ".join(map(str, self.events)))

    # -------------------------------------------------------- sending

    def hdr(self, sid, headers, end_stream=False, end_headers=True, block=None):
        """A HEADERS frame; its block from hpack.Encoder unless given."""
        if block is None:
            block = self.enc.encode(headers, huffman=False)
        flags = (F_END_STREAM if end_stream else 0) | (F_END_HEADERS if end_headers else 0)
        return raw(HEADERS, flags, sid, block)

    def send(self, data):
        """Writes in a thread (the server may stop reading and close: the reader
        must still see the GOAWAY it sent). `data`: bytes, or a list of bytes and
        pauses (a float: seconds to wait before the next bytes)."""
        parts = data if isinstance(data, list) else [data]
        self.sent += b"".join(p for p in parts if isinstance(p, bytes))

        def write():
            try:
                for p in parts:
                    if isinstance(p, bytes):
                        self.sock.sendall(p)
                    else:
                        time.sleep(p)
            except OSError as e:
                self.send_error = e
        self.writer = threading.Thread(target=write, daemon=True)
        self.writer.start()

    def wait_sent(self, timeout=None):
        if self.writer:
            self.writer.join(timeout)
            return not self.writer.is_alive()
        return True

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.writer:
            self.writer.join(2)

    def _quiet_send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    # -------------------------------------------------------- reading

    def _frame(self, until):
        """The next frame, or an Ev for eof/reset/timeout."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    head, body = bytes(self.buf[:9]), bytes(self.buf[9:9 + n])
                    del self.buf[:9 + n]
                    self.received.append(frame_text(head, body))
                    f, _ = Frame.parse_frame_header(memoryview(head))
                    f.parse_body(memoryview(body))
                    return f
            left = until - time.monotonic()
            if left <= 0:
                return Ev("timeout")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return Ev("timeout")
            except ConnectionResetError:
                return Ev("reset")
            except OSError:
                return Ev("eof")
            if not chunk:
                return Ev("eof")
            self.buf += chunk

    def _headers_done(self, sid, flags, block):
        status = None
        try:
            for name, value in self.dec.decode(block):
                if name in (":status", b":status"):
                    status = int(value)
        except hpack.HPACKError as e:
            return Ev(f"undecodable header block from the server ({e})", sid)
        return Ev("response", sid, status=status)

    def next_event(self, until):
        while True:
            f = self._frame(until)
            if isinstance(f, Ev):
                return f
            if isinstance(f, SettingsFrame):
                if "ACK" in f.flags:
                    self.settings_acked = True
                    return Ev("settings-ack")
                self.server_settings.update(f.settings)
                self._quiet_send(SettingsFrame(0, flags=["ACK"]).serialize())
                continue
            if isinstance(f, PingFrame):
                if "ACK" not in f.flags:
                    self._quiet_send(PingFrame(0, f.opaque_data, flags=["ACK"]).serialize())
                continue
            if isinstance(f, WindowUpdateFrame):
                if f.stream_id == 0:
                    self.conn_window += f.window_increment
                return Ev("window-update", f.stream_id)
            if isinstance(f, GoAwayFrame):
                return Ev("goaway", code=f.error_code, last=f.last_stream_id,
                          debug=bytes(f.additional_data))
            if isinstance(f, RstStreamFrame):
                return Ev("rst", f.stream_id, code=f.error_code)
            if isinstance(f, HeadersFrame):
                if "END_HEADERS" in f.flags:
                    return self._headers_done(f.stream_id, f.flags, bytes(f.data))
                self.partial = (f.stream_id, f.flags, bytes(f.data))
                continue
            if isinstance(f, ContinuationFrame) and self.partial:
                sid, flags, block = self.partial
                block += bytes(f.data)
                if "END_HEADERS" in f.flags:
                    self.partial = None
                    return self._headers_done(sid, flags, block)
                self.partial = (sid, flags, block)
                continue
            if isinstance(f, DataFrame):
                continue
            # (PRIORITY, PUSH_PROMISE, extension frames: not expected; ignored.)

    def read_until(self, stop, until):
        """Events until one `stop` accepts (returned) or the deadline (a timeout
        Ev); eof, reset and timeout always stop."""
        while True:
            ev = self.next_event(until)
            self.events.append(ev)
            if ev.kind in ("eof", "reset", "timeout") or stop(ev):
                return ev


def fold(texts, limit=12):
    out = []
    for t in texts:
        if out and out[-1][0] == t:
            out[-1][1] += 1
        else:
            out.append([t, 1])
    lines = [t + (f" x{n}" if n > 1 else "") for t, n in out]
    if len(lines) > limit:
        lines = lines[:limit - 1] + [f"... {len(lines) - limit + 1} more", lines[-1]]
    return lines


# ------------------------------------------------------------------ rows

class Want:
    """An acceptable outcome."""

    def __init__(self, kind, code=None, sid=None, status=None, note=""):
        self.kind, self.code, self.sid, self.status, self.note = kind, code, sid, status, note

    def matches(self, ev):
        if ev.kind != self.kind:
            return False
        if self.kind == "goaway":
            return ev.code == self.code
        if self.kind == "rst":
            return ev.sid == self.sid and ev.code == self.code
        if self.kind == "response":
            return ev.sid == self.sid and ev.status == self.status
        return False

    def __str__(self):
        if self.kind == "goaway":
            return f"GOAWAY {code_name(self.code)}"
        if self.kind == "rst":
            return f"RST_STREAM {code_name(self.code)} on stream {self.sid}"
        return f":status {self.status} on stream {self.sid}"


def goaway(code, note=""):
    return Want("goaway", code=code, note=note)


def rst(sid, code, note=""):
    return Want("rst", code=code, sid=sid, note=note)


def status(sid, code, note=""):
    return Want("response", sid=sid, status=code, note=note)


def stream_error(sid, code):
    """A stream error; §5.4 lets the endpoint make it a connection error."""
    return [rst(sid, code, "stream error"),
            goaway(code, "connection error (a stream error made a connection error, §5.4)")]


def malformed(sid=1):
    """A malformed request (§8.1.1): stream error PROTOCOL_ERROR, or answered
    400 by the proxy, or (§5.4) a connection error PROTOCOL_ERROR."""
    return [rst(sid, PROTOCOL_ERROR, "stream error"),
            status(sid, 400, "answered 400 by the proxy"),
            goaway(PROTOCOL_ERROR, "connection error (a stream error made a connection error, §5.4)")]


PROBE_SID = 1001  # the stream of the GET /healthz that checks a connection is usable
USABLE = "usable"


class Row:
    """One rule: `build(conn)` gives the bytes to send after the handshake (or
    a list of bytes and pauses); `expect` is a list of Want, or USABLE; a flood
    row's `reasons` are the ringway_h2_goaway_total labels its GOAWAY may be
    counted under, the first one the guard's (a GOAWAY without debug data)."""

    def __init__(self, rule, section, build, expect, reasons=None, custom=None, known=None):
        self.rule, self.section, self.build, self.expect = rule, section, build, expect
        self.reasons = reasons
        self.custom = custom
        # (Want, why): a documented deviation of the h2 crate (0.4.20) under
        # Ringway, accepted and reported as such; anything else still fails.
        self.known = known


class Ctx:
    def __init__(self, args):
        host, port = args.proxy.rsplit(":", 1)
        self.addr = (host, int(port))
        self.admin = args.admin
        self.pid = args.pid
        self.deadline = args.deadline
        self.stall_port = args.stall_port
        self.passed = 0
        self.failed = 0
        self.deviations = []  # rules passed only as a documented h2 deviation
        self.goaways = []  # (row, Ev) of every GOAWAY seen
        self.flood_reasons = {}  # reason label set -> count of rows expecting them
        self.rss = []

    def conn(self):
        return Conn(self.addr, self.deadline)


def run_row(ctx, row):
    got_text = None
    ok = False
    note = ""
    trace = []
    try:
        if row.custom:
            ok, got_text, evs = row.custom(ctx)
            for ev in evs:
                if ev.kind == "goaway":
                    ctx.goaways.append((row, ev))
        else:
            c = ctx.conn()
            try:
                data = row.build(c)
                until = time.monotonic() + ctx.deadline
                if row.expect == USABLE:
                    probe = c.hdr(PROBE_SID, req(), end_stream=True)
                    data = data + [probe] if isinstance(data, list) else data + probe
                    watch = {PROBE_SID}
                    wants = [status(PROBE_SID, 200)]
                else:
                    wants = row.expect
                    watch = {w.sid for w in wants if w.sid is not None}
                c.send(data)

                def decisive(ev):
                    return ev.kind == "goaway" or (
                        ev.kind in ("rst", "response") and ev.sid in watch)
                ev = c.read_until(decisive, until)
                if ev.kind == "goaway":
                    ctx.goaways.append((row, ev))
                match = next((w for w in wants if w.matches(ev)), None)
                ok = match is not None
                got_text = str(ev)
                if ok and len(wants) > 1 and match.note:
                    note = match.note
                if not ok and row.known and row.known[0].matches(ev):
                    ok = True
                    note = f"KNOWN DEVIATION, RFC wants {' or '.join(str(w) for w in wants)}: {row.known[1]}"
                    ctx.deviations.append(row.rule)
                if ok and row.reasons and ev.kind == "goaway":
                    label = label_of(row, ev)
                    note = f"counted as {label}"
                    if label not in row.reasons:
                        ok = False
                        got_text += f", counted as {label}, not {' or '.join(row.reasons)}"
                if not ok and c.send_error and ev.kind in ("eof", "reset"):
                    got_text += f" (while sending: {c.send_error})"
                if ok and ev.kind == "goaway":
                    # Read on briefly: the close after the GOAWAY.
                    c.read_until(lambda e: False, time.monotonic() + 0.2)
            finally:
                c.close()
                trace = (["sent (after the preface, SETTINGS and ACKs):"]
                         + ["  " + t for t in frames_text(c.sent)]
                         + ["received:"] + ["  " + t for t in fold(c.received)])
    except Exception as e:  # a row must not stop the table
        ok = False
        got_text = f"{type(e).__name__}: {e}"
    if row.expect == USABLE:
        expected = "the connection usable (GET /healthz on a later stream: :status 200)"
    elif row.custom:
        expected = row.expect
    else:
        expected = " or ".join(str(w) for w in row.expect)
    sect = row.section if row.section.startswith("RFC") else f"RFC 9113 §{row.section}"
    if ok:
        ctx.passed += 1
        extra = f": {got_text}" if got_text else ""
        if note:
            extra += f" [{note}]"
        print(f"ok   {row.rule} ({sect}){extra}", flush=True)
    else:
        ctx.failed += 1
        print(f"FAIL {row.rule} ({sect}): expected {expected}, got {got_text}", flush=True)
        for t in trace:
            print(f"       {t}", flush=True)
    ctx.rss.append((row.rule, rss_kib(ctx.pid)))
    return ok


# ------------------------------------------------------------------ the table

def stall(c, sid=1, end_stream=False, extra=()):
    """A request that stays open: POST /stall (its upstream never accepts)."""
    return c.hdr(sid, req("POST", "/stall", extra), end_stream=end_stream)


def frame_size_rows():
    return [
        Row("DATA frame larger than SETTINGS_MAX_FRAME_SIZE (16385 octets)", "4.2",
            lambda c: stall(c) + raw(DATA, 0, 1, b"x" * 16385),
            [goaway(FRAME_SIZE_ERROR, "connection error"),
             rst(1, FRAME_SIZE_ERROR, "stream error (§4.2 allows it for DATA)")]),
        Row("HEADERS frame larger than SETTINGS_MAX_FRAME_SIZE (a field block: connection error)", "4.2",
            lambda c: c.hdr(1, req(extra=[("x-big", "a" * 16400)]), end_stream=True),
            [goaway(FRAME_SIZE_ERROR)]),
        Row("PING with a 7-octet payload", "6.7",
            lambda c: raw(PING, 0, 0, b"\0" * 7), [goaway(FRAME_SIZE_ERROR)]),
        Row("PING with a 9-octet payload", "6.7",
            lambda c: raw(PING, 0, 0, b"\0" * 9), [goaway(FRAME_SIZE_ERROR)]),
        Row("WINDOW_UPDATE with a 3-octet payload", "6.9",
            lambda c: raw(WINDOW_UPDATE, 0, 0, b"\0\0\1"), [goaway(FRAME_SIZE_ERROR)]),
        Row("RST_STREAM with a 3-octet payload (on an open stream)", "6.4",
            lambda c: stall(c) + raw(RST_STREAM, 0, 1, b"\0\0\x08"),
            [goaway(FRAME_SIZE_ERROR)]),
        Row("SETTINGS with a 7-octet payload (not a multiple of 6)", "6.5",
            lambda c: raw(SETTINGS, 0, 0, settings_payload((S_MAX_CONCURRENT_STREAMS, 100)) + b"\0"),
            [goaway(FRAME_SIZE_ERROR)]),
        Row("SETTINGS ACK with a payload", "6.5",
            lambda c: raw(SETTINGS, F_ACK, 0, settings_payload((S_MAX_CONCURRENT_STREAMS, 100))),
            [goaway(FRAME_SIZE_ERROR)]),
        Row("PRIORITY with a 4-octet payload (on an open stream)", "6.3",
            lambda c: stall(c) + raw(PRIORITY, 0, 1, b"\0\0\0\3"),
            stream_error(1, FRAME_SIZE_ERROR)),
    ]


def stream_state_rows():
    return [
        Row("DATA on stream 0", "6.1",
            lambda c: raw(DATA, 0, 0, b"x"), [goaway(PROTOCOL_ERROR)]),
        Row("HEADERS on stream 0", "6.2",
            lambda c: c.hdr(0, req(), end_stream=True), [goaway(PROTOCOL_ERROR)]),
        Row("HEADERS on an even (server-initiated) stream id", "5.1.1",
            lambda c: c.hdr(2, req(), end_stream=True), [goaway(PROTOCOL_ERROR)]),
        Row("stream id going backwards (HEADERS on 5, then on 3)", "5.1.1",
            lambda c: c.hdr(5, req(), end_stream=True) + c.hdr(3, req(), end_stream=True),
            [goaway(PROTOCOL_ERROR)]),
        Row("DATA on an idle stream", "5.1",
            lambda c: raw(DATA, 0, 1, b"x"), [goaway(PROTOCOL_ERROR)]),
        Row("WINDOW_UPDATE on an idle stream", "5.1",
            lambda c: WindowUpdateFrame(1, 100).serialize(), [goaway(PROTOCOL_ERROR)]),
        Row("RST_STREAM on an idle stream", "6.4",
            lambda c: RstStreamFrame(1, CANCEL).serialize(), [goaway(PROTOCOL_ERROR)]),
        Row("DATA after END_STREAM (half-closed remote): STREAM_CLOSED", "5.1",
            lambda c: stall(c, end_stream=True) + raw(DATA, 0, 1, b"late"),
            stream_error(1, STREAM_CLOSED)),
        Row("HEADERS after END_STREAM (half-closed remote): STREAM_CLOSED", "5.1",
            lambda c: stall(c, end_stream=True) + c.hdr(1, [("x-trailer", "late")], end_stream=True),
            stream_error(1, STREAM_CLOSED)),
        Row("DATA on a stream the client reset (closed): STREAM_CLOSED", "6.1",
            lambda c: stall(c) + RstStreamFrame(1, CANCEL).serialize() + raw(DATA, 0, 1, b"late"),
            stream_error(1, STREAM_CLOSED)),
        Row("CONTINUATION without a preceding HEADERS", "6.10",
            lambda c: raw(CONTINUATION, F_END_HEADERS, 1, c.enc.encode(req(), huffman=False)),
            [goaway(PROTOCOL_ERROR)]),
        Row("another frame (PING) inside a header block", "6.10",
            lambda c: _split_block(c, 1, raw(PING, 0, 0, b"\0" * 8)),
            [goaway(PROTOCOL_ERROR)]),
        Row("CONTINUATION of another stream inside a header block", "6.10",
            lambda c: _split_block(c, 1, b"", cont_sid=3),
            [goaway(PROTOCOL_ERROR)]),
        Row("PUSH_PROMISE sent by a client", "8.4",
            lambda c: stall(c) + raw(PUSH_PROMISE, F_END_HEADERS, 1,
                                     struct.pack(">L", 2) + c.enc.encode(req(), huffman=False)),
            [goaway(PROTOCOL_ERROR)]),
        Row("padding length as long as the DATA payload", "6.1",
            lambda c: stall(c) + raw(DATA, F_PADDED, 1, bytes([5]) + b"abcd"),
            [goaway(PROTOCOL_ERROR)]),
        Row("padding length longer than the HEADERS payload", "6.2",
            lambda c: raw(HEADERS, F_PADDED | F_END_HEADERS | F_END_STREAM, 1,
                          bytes([200]) + c.enc.encode(req(), huffman=False)),
            [goaway(PROTOCOL_ERROR)]),
        Row("HEADERS whose priority makes the stream depend on itself", "5.3.1",
            lambda c: raw(HEADERS, F_PRIORITY | F_END_HEADERS | F_END_STREAM, 1,
                          struct.pack(">LB", 1, 15) + c.enc.encode(req(), huffman=False)),
            stream_error(1, PROTOCOL_ERROR)),
        Row("PRIORITY making a stream depend on itself", "5.3.1",
            lambda c: stall(c) + raw(PRIORITY, 0, 1, struct.pack(">LB", 1, 15)),
            stream_error(1, PROTOCOL_ERROR)),
        Row("trailers (a second HEADERS) without END_STREAM: malformed", "8.1",
            lambda c: stall(c) + c.hdr(1, [("x-trailer", "t")], end_stream=False),
            stream_error(1, PROTOCOL_ERROR)),
        # (Forwarded to the Python upstream, which answers 200 once the body
        # ends: a response means the malformed request went through.)
        Row("pseudo-header field in trailers: malformed", "8.3",
            lambda c: c.hdr(1, req("POST", "/count")) + raw(DATA, 0, 1, b"body")
            + c.hdr(1, [(":path", "/x")], end_stream=True),
            stream_error(1, PROTOCOL_ERROR), known=(status(1, 200), H2_TRAILER_PSEUDO)),
        Row("unknown frame type (0x20, all flags) on stream 0 is ignored", "4.1",
            lambda c: raw(0x20, 0xFF, 0, b"whatever"), USABLE),
        Row("unknown frame type (0x21) on an idle stream is ignored", "4.1",
            lambda c: raw(0x21, 0, 7, b"x" * 10), USABLE),
        Row("undefined flags on a frame are ignored (PING with 0xfe)", "4.1",
            lambda c: raw(PING, 0xFE, 0, b"\0" * 8), USABLE),
    ]


def _split_block(c, sid, between, cont_sid=None):
    """HEADERS without END_HEADERS, `between`, then CONTINUATION (on `cont_sid`)."""
    block = c.enc.encode(req(), huffman=False)
    a, b = block[:2], block[2:]
    return (raw(HEADERS, F_END_STREAM, sid, a) + between
            + raw(CONTINUATION, F_END_HEADERS, cont_sid or sid, b))


def header_rows():
    pseudo = [
        ("request without :method", [(":scheme", "http"), (":path", "/healthz"), (":authority", "a")], "8.3.1"),
        ("request without :scheme", [(":method", "GET"), (":path", "/healthz"), (":authority", "a")], "8.3.1"),
        ("request without :path", [(":method", "GET"), (":scheme", "http"), (":authority", "a")], "8.3.1"),
        ("request with an empty :path", [(":method", "GET"), (":scheme", "http"), (":path", ""),
                                         (":authority", "a")], "8.3.1"),
        ("pseudo-header after a regular header", [(":method", "GET"), (":scheme", "http"),
                                                  ("x-a", "b"), (":path", "/healthz")], "8.3"),
        ("duplicated :path", [(":method", "GET"), (":scheme", "http"), (":path", "/healthz"),
                              (":path", "/healthz"), (":authority", "a")], "8.3.1"),
        ("unknown pseudo-header :foo", req(extra=[(":foo", "bar")]), "8.3"),
        ("uppercase header field name", req(extra=[("X-Upper", "1")]), "8.2.1"),
        ("response pseudo-header :status in a request", req(extra=[(":status", "200")]), "8.3"),
        ("connection: keep-alive (connection-specific field)", req(extra=[("connection", "keep-alive")]), "8.2.2"),
        ("transfer-encoding: chunked (connection-specific field)",
         req(extra=[("transfer-encoding", "chunked")]), "8.2.2"),
        ("keep-alive: timeout=5 (connection-specific field)", req(extra=[("keep-alive", "timeout=5")]), "8.2.2"),
        ("upgrade: websocket (connection-specific field)", req(extra=[("upgrade", "websocket")]), "8.2.2"),
        ("proxy-connection: keep-alive (connection-specific field)",
         req(extra=[("proxy-connection", "keep-alive")]), "8.2.2"),
        ("te: gzip (te other than trailers)", req(extra=[("te", "gzip")]), "8.2.2"),
    ]
    # Field syntax (§8.2.1), sent through to the Python upstream (GET /echo): a
    # 200 means the malformed request was forwarded as HTTP/1.1.
    fields = [
        ("field value containing CR LF", [("x-a", "b\r\nx-injected: 1")]),
        ("field value containing NUL", [("x-a", "b\x00c")]),
        ("field value with leading whitespace", [("x-a", " b")]),
        ("field value with trailing whitespace", [("x-a", "b\t")]),
        ("field name containing a space", [("x a", "b")]),
        ("field name containing a colon", [("x:a", "b")]),
        ("empty field name", [("", "b")]),
    ]
    for rule, extra in fields:
        pseudo.append((rule, req("GET", "/echo", extra), "8.2.1"))
    rows = []
    for rule, headers, section in pseudo:
        rows.append(Row(rule + ": malformed", section,
                        (lambda h: lambda c: c.hdr(1, h, end_stream=True))(headers),
                        malformed(1)))
    rows.append(Row("te: trailers is allowed", "8.2.2",
                    lambda c: c.hdr(1, req(extra=[("te", "trailers")]), end_stream=True),
                    [status(1, 200)]))
    rows += [
        Row("content-length 10 with 5 octets of DATA, then END_STREAM: malformed", "8.1.1",
            lambda c: stall(c, extra=[("content-length", "10")]) + raw(DATA, F_END_STREAM, 1, b"12345"),
            stream_error(1, PROTOCOL_ERROR)),
        Row("content-length 5 with 10 octets of DATA: malformed", "8.1.1",
            lambda c: stall(c, extra=[("content-length", "5")]) + raw(DATA, F_END_STREAM, 1, b"1234567890"),
            stream_error(1, PROTOCOL_ERROR)),
        Row("content-length 5 in two DATA frames of 3 (second one overflows): malformed", "8.1.1",
            lambda c: stall(c, extra=[("content-length", "5")]) + raw(DATA, 0, 1, b"123")
            + raw(DATA, F_END_STREAM, 1, b"456"),
            stream_error(1, PROTOCOL_ERROR)),
        Row("header list over max_request_head_size (64 KiB, under 4x): 431", "10.5.1",
            lambda c: c.hdr(1, [], end_stream=True, block=_bomb(c, 20)),
            [status(1, 431)]),
    ]
    return rows


def _bomb(c, refs):
    """A request whose 4000-octet field is added to the dynamic table once and
    then referenced `refs` times (one octet each): decodes to refs x 4038."""
    block = c.enc.encode(req(), huffman=False)
    # (The encoder's table holds :authority now; the new entry becomes index 62.)
    block += hpack_literal_indexed(b"x-bomb", b"a" * 4000)
    block += b"\xbe" * refs
    # Keep the encoder's view of the table in step (for later blocks).
    c.enc.header_table.add(b"x-bomb", b"a" * 4000)
    return block


def settings_rows():
    return [
        Row("SETTINGS_ENABLE_PUSH = 2", "6.5.2",
            lambda c: raw(SETTINGS, 0, 0, settings_payload((S_ENABLE_PUSH, 2))),
            [goaway(PROTOCOL_ERROR)]),
        Row("SETTINGS_INITIAL_WINDOW_SIZE = 2^31 (above 2^31-1)", "6.5.2",
            lambda c: raw(SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 2**31))),
            [goaway(FLOW_CONTROL_ERROR)]),
        Row("SETTINGS_MAX_FRAME_SIZE = 16383 (below 2^14)", "6.5.2",
            lambda c: raw(SETTINGS, 0, 0, settings_payload((S_MAX_FRAME_SIZE, 16383))),
            [goaway(PROTOCOL_ERROR)]),
        Row("SETTINGS_MAX_FRAME_SIZE = 2^24 (above 2^24-1)", "6.5.2",
            lambda c: raw(SETTINGS, 0, 0, settings_payload((S_MAX_FRAME_SIZE, 2**24))),
            [goaway(PROTOCOL_ERROR)]),
        Row("SETTINGS on a stream other than 0", "6.5",
            lambda c: stall(c) + raw(SETTINGS, 0, 1, b""), [goaway(PROTOCOL_ERROR)]),
        Row("unknown SETTINGS identifier (0xff) is ignored", "6.5.2",
            lambda c: raw(SETTINGS, 0, 0, settings_payload((0xFF, 12345))), USABLE),
    ]


def flow_rows():
    def beyond_stream_window(c):
        w = c.server_settings.get(S_INITIAL_WINDOW_SIZE, 65535)
        frames = -(-(w + 1) // 16384)  # ceil: the last one crosses the window
        return stall(c) + raw(DATA, 0, 1, b"x" * 16384) * frames

    def beyond_connection_window(c):
        # Each stream gets exactly its window; together they pass the connection's
        # (as the server's first WINDOW_UPDATE on stream 0 sets it: waited for).
        c.read_until(lambda e: e.kind == "window-update" and e.sid == 0, time.monotonic() + 1)
        w = c.server_settings.get(S_INITIAL_WINDOW_SIZE, 65535)
        streams = c.conn_window // w + 1
        out = b""
        for i in range(streams):
            sid = 2 * i + 1
            out += stall(c, sid)
            left = w
            while left:
                n = min(left, 16384)
                out += raw(DATA, 0, sid, b"x" * n)
                left -= n
        return out

    def settings_overflow(c):
        # The server's send window of stream 1 is our initial 65535: raise it to
        # the maximum, then raise the initial window by one (§6.9.2).
        return (stall(c) + WindowUpdateFrame(1, MAX_WINDOW - 65535).serialize()
                + raw(SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 65536))))

    return [
        Row("WINDOW_UPDATE with increment 0 on the connection", "6.9",
            lambda c: raw(WINDOW_UPDATE, 0, 0, struct.pack(">L", 0)), [goaway(PROTOCOL_ERROR)]),
        Row("WINDOW_UPDATE with increment 0 on a stream", "6.9",
            lambda c: stall(c) + raw(WINDOW_UPDATE, 0, 1, struct.pack(">L", 0)),
            stream_error(1, PROTOCOL_ERROR)),
        Row("WINDOW_UPDATE overflowing the connection window past 2^31-1", "6.9.1",
            lambda c: WindowUpdateFrame(0, MAX_WINDOW).serialize(), [goaway(FLOW_CONTROL_ERROR)]),
        Row("WINDOW_UPDATE overflowing a stream window past 2^31-1", "6.9.1",
            lambda c: stall(c) + WindowUpdateFrame(1, MAX_WINDOW).serialize(),
            stream_error(1, FLOW_CONTROL_ERROR)),
        Row("SETTINGS_INITIAL_WINDOW_SIZE change pushing a stream window past 2^31-1", "6.9.2",
            settings_overflow, [goaway(FLOW_CONTROL_ERROR)]),
        Row("DATA beyond the stream's advertised window (SETTINGS_INITIAL_WINDOW_SIZE)", "6.9.1",
            beyond_stream_window, stream_error(1, FLOW_CONTROL_ERROR)),
        Row("DATA beyond the connection's advertised window (streams each within theirs)", "6.9.1",
            beyond_connection_window, [goaway(FLOW_CONTROL_ERROR)]),
    ]


# The h2 crate's deviations that Ringway cannot correct below it (its frame guard
# corrects the frame-size, window-size and STREAM_CLOSED ones).
H2_HPACK = ("h2 answers every HPACK decoding error with GOAWAY PROTOCOL_ERROR, "
            "not COMPRESSION_ERROR (its hpack decoder errors map to PROTOCOL_ERROR); "
            "the connection is still refused")
H2_TRAILER_PSEUDO = ("h2 drops pseudo-header fields from trailers while decoding them "
                     "instead of treating the request as malformed; the pseudo-header never "
                     "reaches Ringway or the upstream")


def hpack_rows():
    return [
        Row("header block with an indexed field of index 0", "RFC 9113 §4.3, RFC 7541 §6.1",
            lambda c: raw(HEADERS, F_END_HEADERS | F_END_STREAM, 1, b"\x82\x86\x84\x80"),
            [goaway(COMPRESSION_ERROR)], known=(goaway(PROTOCOL_ERROR), H2_HPACK)),
        Row("header block indexing past the dynamic table (index 70)", "RFC 9113 §4.3, RFC 7541 §2.3.3",
            lambda c: raw(HEADERS, F_END_HEADERS | F_END_STREAM, 1, b"\x82\x86\x84" + hpack_int(70, 7, 0x80)),
            [goaway(COMPRESSION_ERROR)], known=(goaway(PROTOCOL_ERROR), H2_HPACK)),
        Row("header block of garbage octets", "RFC 9113 §4.3",
            lambda c: raw(HEADERS, F_END_HEADERS | F_END_STREAM, 1, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
            [goaway(COMPRESSION_ERROR)], known=(goaway(PROTOCOL_ERROR), H2_HPACK)),
        Row("header block ending inside a string literal", "RFC 9113 §4.3",
            lambda c: raw(HEADERS, F_END_HEADERS | F_END_STREAM, 1, b"\x82\x86\x84\x41\x0aab"),
            [goaway(COMPRESSION_ERROR)], known=(goaway(PROTOCOL_ERROR), H2_HPACK)),
        Row("dynamic table size update above SETTINGS_HEADER_TABLE_SIZE (8192 > 4096)",
            "RFC 9113 §4.3, RFC 7541 §6.3",
            lambda c: raw(HEADERS, F_END_HEADERS | F_END_STREAM, 1, hpack_int(8192, 5, 0x20) + b"\x82\x86\x84"),
            [goaway(COMPRESSION_ERROR)], known=(goaway(PROTOCOL_ERROR), H2_HPACK)),
    ]


def concurrency_row():
    def run(ctx):
        c = ctx.conn()
        evs = c.events
        try:
            limit = c.server_settings.get(S_MAX_CONCURRENT_STREAMS)
            if limit is None:
                return False, "no SETTINGS_MAX_CONCURRENT_STREAMS from the server", evs
            over = 2 * limit + 1  # the (limit+1)th stream
            out = b"".join(stall(c, 2 * i + 1) for i in range(limit + 1))
            c.send(out)
            until = time.monotonic() + ctx.deadline
            ev = c.read_until(lambda e: e.kind == "goaway" or e.kind == "rst", until)
            if not (ev.kind == "rst" and ev.sid == over and ev.code in (REFUSED_STREAM, PROTOCOL_ERROR)):
                return False, f"first: {ev}", evs
            first = str(ev)
            # The others stay open: reset one, and a new stream is served.
            c.wait_sent(ctx.deadline)
            probe = over + 2
            c.send(RstStreamFrame(1, CANCEL).serialize() + c.hdr(probe, req(), end_stream=True))
            ev2 = c.read_until(lambda e: e.kind in ("goaway", "rst", "response"), time.monotonic() + ctx.deadline)
            if not (ev2.kind == "response" and ev2.sid == probe and ev2.status == 200):
                return False, f"{first}; then, after a client reset of stream 1: {ev2}", evs
            return True, (f"SETTINGS_MAX_CONCURRENT_STREAMS {limit}: {first}; after one is reset, "
                          f"stream {probe} served {ev2.status}"), evs
        finally:
            c.close()
    return Row("streams beyond SETTINGS_MAX_CONCURRENT_STREAMS refused (REFUSED_STREAM or PROTOCOL_ERROR)",
               "5.1.2", None,
               "RST_STREAM REFUSED_STREAM (or PROTOCOL_ERROR) on the (limit+1)th stream only, then service",
               custom=run)


def flood_rows():
    def rapid_reset(c):
        out = []
        for i in range(1000):
            sid = 2 * i + 1
            out.append(c.hdr(sid, req(), end_stream=True))
            out.append(RstStreamFrame(sid, CANCEL).serialize())
        return b"".join(out)

    def rapid_reset_accepted(c):
        # Batches of 50 streams (POST /stall: accepted, forwarding started),
        # reset 0.1 s later, once accepted: h2's pending-accept limit does not
        # apply, the guard's does (100 resets, more than half the streams).
        out = []
        for batch in range(4):
            sids = [2 * (50 * batch + i) + 1 for i in range(50)]
            out.append(b"".join(stall(c, sid) for sid in sids))
            out.append(0.1)
            out.append(b"".join(RstStreamFrame(sid, CANCEL).serialize() for sid in sids))
            out.append(0.05)
        return out

    def continuation(c):
        block = c.enc.encode(req(), huffman=False)
        out = [raw(HEADERS, F_END_STREAM, 1, block)]
        piece = hpack_literal_indexed(b"x", b"y")
        out += [raw(CONTINUATION, 0, 1, piece)] * 10000
        return b"".join(out)

    def hpack_bomb(c):
        return c.hdr(1, [], end_stream=True, block=_bomb(c, 12000))

    calm = [goaway(ENHANCE_YOUR_CALM)]
    return [
        Row("PING flood (1000 PINGs; budget 100 / 10 s)", "10.5",
            lambda c: PingFrame(0, b"12345678").serialize() * 1000, calm, ["ping_flood"]),
        Row("SETTINGS flood (1000 empty SETTINGS; budget 100 / 10 s)", "10.5",
            lambda c: SettingsFrame(0).serialize() * 1000, calm, ["settings_flood"]),
        Row("SETTINGS entries flood (one SETTINGS of 1001 entries; budget 1000 / 10 s)", "10.5",
            lambda c: raw(SETTINGS, 0, 0, settings_payload(*[(S_MAX_CONCURRENT_STREAMS, 100)] * 1001)),
            calm, ["settings_flood"]),
        Row("PRIORITY flood (1000 PRIORITY; budget 100 + 10 per stream)", "10.5",
            lambda c: PriorityFrame(3, depends_on=0, stream_weight=15).serialize() * 1000,
            calm, ["priority_flood"]),
        Row("WINDOW_UPDATE flood (5000 of increment 1; budget 1000 + 10 per DATA sent)", "10.5",
            lambda c: WindowUpdateFrame(0, 1).serialize() * 5000, calm, ["window_update_flood"]),
        Row("empty DATA flood (1000 empty non-final DATA frames; budget 100)", "10.5",
            lambda c: stall(c) + raw(DATA, 0, 1, b"") * 1000, calm, ["empty_frames"]),
        Row("Rapid Reset, streams reset before accepted (1000 x HEADERS + RST_STREAM; CVE-2023-44487)",
            "10.5", rapid_reset, calm, ["rapid_reset", "too_many_resets"]),
        Row("Rapid Reset, accepted streams reset (4 x 50 POSTs, each reset 0.1 s later)", "10.5",
            rapid_reset_accepted, calm, ["rapid_reset"]),
        Row("CONTINUATION flood (a header block of 10000 CONTINUATIONs that never ends)", "10.5",
            continuation, calm, ["continuation_flood"]),
        Row("HPACK bomb (a 4000-octet field referenced 12000 times in one HEADERS: 48 MB decoded)", "10.5.1",
            hpack_bomb, calm, ["header_list_too_large"]),
    ]


# ------------------------------------------------------------------ metrics, memory

# The reason Ringway counts a GOAWAY under (src/h2/guard.rs GoawayReason::of_frame).
def reason_of(code, debug):
    if code == 0:
        return "shutdown"
    if debug == b"too_many_continuations":
        return "continuation_flood"
    if debug == b"header_list_way_too_large":
        return "header_list_too_large"
    if debug in (b"too_many_resets", b"too_many_internal_resets"):
        return "too_many_resets"
    if debug == b"too_many_data_frames":
        return "empty_frames"
    return {1: "protocol_error", 3: "flow_control_error", 6: "frame_size_error",
            5: "stream_closed", 9: "compression_error"}.get(code, "other")


def label_of(row, ev):
    """The label Ringway counts a GOAWAY under: h2's own carry debug data; the
    guard's ENHANCE_YOUR_CALM carries none and is counted under its breach."""
    if ev.code == ENHANCE_YOUR_CALM and not ev.debug and row.reasons:
        return row.reasons[0]
    return reason_of(ev.code, ev.debug)


def goaway_counts(admin):
    host, port = admin.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    counts = {}
    for m in re.finditer(r'^ringway_h2_goaway_total\{reason="([a-z_]+)"\} ([0-9.e+]+)$', body, re.M):
        counts[m.group(1)] = int(float(m.group(2)))
    return counts


def rss_kib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stall_listener(port):
    """A listener whose accept queue is full (listen(0), one connection queued,
    never accepted): further connects hang (their SYNs are dropped)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(0)
    filler = socket.create_connection(("127.0.0.1", port))
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        raise RuntimeError("the stall listener accepted a second connection")
    except socket.timeout:
        pass
    finally:
        probe.close()
    return s, filler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxy", help="HOST:PORT of the h2c (prior knowledge) listener")
    ap.add_argument("--admin", help="HOST:PORT of the admin listener")
    ap.add_argument("--pid", type=int, help="the proxy's pid (VmRSS checked)")
    ap.add_argument("--stall-port", type=int,
                    help="port the proxy's /stall route forwards to; this script listens there")
    ap.add_argument("--deadline", type=float, default=5.0, help="seconds per row")
    ap.add_argument("--rss-slack-mib", type=int, default=50)
    ap.add_argument("--soak", type=int, default=10,
                    help="times every flood is repeated after the table (memory stays flat)")
    ap.add_argument("--count", action="store_true",
                    help="print the number of rules checked (rows and final checks) and exit")
    args = ap.parse_args()
    rows = (frame_size_rows() + stream_state_rows() + header_rows() + settings_rows()
            + flow_rows() + hpack_rows() + [concurrency_row()])
    floods = flood_rows()
    final_checks = 3 if args.pid else 2  # soak, metrics, memory
    if args.count:
        print(len(rows) + len(floods) + final_checks)
        return 0
    if not (args.proxy and args.admin and args.stall_port):
        ap.error("--proxy, --admin and --stall-port are required")
    ctx = Ctx(args)
    ctx.stall = stall_listener(args.stall_port)  # (kept open to the end)

    before = goaway_counts(ctx.admin)
    rss0 = rss_kib(ctx.pid)
    for row in rows + floods:
        run_row(ctx, row)

    # The floods again, --soak times each: every one answered, memory flat.
    soak_fail = []
    for i in range(args.soak):
        for row in floods:
            c = ctx.conn()
            try:
                c.send(row.build(c))
                ev = c.read_until(lambda e: e.kind == "goaway", time.monotonic() + ctx.deadline)
                if ev.kind == "goaway":
                    ctx.goaways.append((row, ev))
                if not (ev.kind == "goaway" and ev.code == ENHANCE_YOUR_CALM):
                    soak_fail.append(f"{row.rule} (round {i + 1}): {ev}")
                elif label_of(row, ev) not in row.reasons:
                    soak_fail.append(f"{row.rule} (round {i + 1}): counted as {label_of(row, ev)}")
            finally:
                c.close()
        ctx.rss.append((f"soak round {i + 1}", rss_kib(ctx.pid)))
    total = args.soak * len(floods)
    check(ctx, f"floods repeated {args.soak}x each ({total} connections): GOAWAY ENHANCE_YOUR_CALM every time",
          "10.5", not soak_fail, "; ".join(soak_fail[:5]))

    # Every GOAWAY seen, counted under its reason.
    seen = {}
    for row, ev in ctx.goaways:
        label = label_of(row, ev)
        seen[label] = seen.get(label, 0) + 1
    deadline = time.monotonic() + 5
    while True:
        after = goaway_counts(ctx.admin)
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
        delta.pop("shutdown", None)
        labels = sorted(set(seen) | {k for k, v in delta.items() if v})
        wrong = [f"{k}: seen {seen.get(k, 0)}, counted {delta.get(k, 0)}"
                 for k in labels if seen.get(k, 0) != delta.get(k, 0)]
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print("     ringway_h2_goaway_total{reason} increase during the run (GOAWAYs seen here / counted):")
    for k in labels:
        print(f"       {k:28s} {seen.get(k, 0):4d} / {delta.get(k, 0)}")
    missing = [" or ".join(row.reasons) for row in floods
               if not any(delta.get(r, 0) for r in row.reasons)]
    check(ctx, "every GOAWAY counted in ringway_h2_goaway_total under its reason, every flood's > 0",
          "10.5", not wrong and not missing,
          "; ".join(wrong + [f"{m} not counted" for m in missing]))

    # Memory flat throughout.
    samples = [(r, k) for r, k in ctx.rss if k is not None]
    if rss0 is not None and samples:
        top_rule, top = max(samples, key=lambda s: s[1])
        end = samples[-1][1]
        print(f"     proxy VmRSS: start {rss0} KiB, max {top} KiB (after: {top_rule}), end {end} KiB")
        check(ctx, f"proxy memory flat throughout (VmRSS max under start + {args.rss_slack_mib} MiB)",
              "10.5", top - rss0 < args.rss_slack_mib * 1024,
              f"VmRSS {top} KiB after {top_rule!r}, start {rss0} KiB")
    else:
        print("     (no --pid, or no /proc/PID/status: memory not checked)")

    print(f"h2 conformance: {ctx.passed} passed ({len(ctx.deviations)} of them as known "
          f"deviations of the h2 crate), {ctx.failed} failed")
    return 1 if ctx.failed else 0


def check(ctx, rule, section, ok, why):
    if ok:
        ctx.passed += 1
        print(f"ok   {rule} (RFC 9113 §{section})", flush=True)
    else:
        ctx.failed += 1
        print(f"FAIL {rule}: {why}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
