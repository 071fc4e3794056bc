//! The access log: one line per request, JSON or Apache/nginx "combined".
//!
//! Workers never touch the disk. Each core formats its lines into a buffer of its
//! own ([`CoreLog`]) and hands a full buffer (or, once a second, whatever it holds,
//! and on drain and reload) to the writer thread ([`Writer`]) over a bounded
//! queue, without waiting: when the queue is full, because the disk cannot keep up,
//! the buffer's lines are dropped and counted (`ringway_access_log_dropped_total`),
//! never queued without bound. The writer thread owns the file; `SIGUSR1` makes it
//! reopen it, for logrotate.
//!
//! Values are escaped: in JSON every `"`, `\`, control byte and byte over 0x7e is
//! escaped (bytes over 0x7f as `\u00XX`, so a line is valid JSON whatever bytes a
//! header held); in combined format as nginx does (`\xHH`).

use crate::clock::civil_time;
use crate::config::{AccessLogConfig, LogFormat, LogPath};
use crate::http::parse::{HeaderKind, HeaderSpan, RequestHead, Version};
use crate::http::rewrite::push_decimal;
use crate::metrics::Counter;
use crate::outcome::Flags;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A core hands its buffer over once it holds this much.
const HAND_OVER_AT: usize = 32 * 1024;
/// Buffers waiting for the writer, all cores together; beyond, lines are dropped.
const QUEUE: usize = 64;

enum Msg {
    /// Complete lines, and how many.
    Lines(Vec<u8>, u64),
    Reopen,
}

/// A core's way to the writer thread.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Msg>,
    format: LogFormat,
}

/// The writer thread of one log file (or stdout).
pub struct Writer {
    pub config: AccessLogConfig,
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    /// Lines lost to write errors (the cores count the lines they drop).
    pub failed: Arc<AtomicU64>,
}

fn open(path: &LogPath) -> io::Result<Option<File>> {
    match path {
        LogPath::Stdout => Ok(None),
        LogPath::File(p) => File::options().create(true).append(true).open(p).map(Some),
    }
}

impl Writer {
    /// Opens the file (an error fails the start or the reload) and starts the
    /// thread that writes to it.
    pub fn start(config: &AccessLogConfig) -> io::Result<Writer> {
        let file = open(&config.path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let (path, lost) = (config.path.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name("ringway-log".into())
            .spawn(move || write_lines(rx, path, file, &lost))?;
        Ok(Writer {
            config: config.clone(),
            tx: Some(tx),
            thread: Some(thread),
            failed,
        })
    }

    /// What a core writes through.
    pub fn sink(&self) -> Option<Sink> {
        self.tx.as_ref().map(|tx| Sink {
            tx: tx.clone(),
            format: self.config.format,
        })
    }

    /// Closes and opens the file again (after logrotate moved it). Never waits: a
    /// writer so far behind that its queue is full is told to reopen later.
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Msg::Reopen).is_err() {
                tracing::warn!("access log writer busy: SIGUSR1 again to reopen");
            }
        }
    }

    /// Lets the thread finish writing what it holds without waiting for it (a
    /// reload replaced it: a worker that could not switch may still hold a sink).
    pub fn retire(mut self) {
        self.tx.take();
        self.thread.take();
    }
}

impl Drop for Writer {
    /// Waits until everything handed over is written: call once the cores have
    /// dropped their sinks (after they ended, or switched to another writer).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_lines(rx: Receiver<Msg>, path: LogPath, mut file: Option<File>, lost: &AtomicU64) {
    let mut warned = false;
    for msg in rx {
        match msg {
            Msg::Lines(buf, lines) => {
                let written = match &mut file {
                    Some(f) => f.write_all(&buf),
                    None => io::stdout().lock().write_all(&buf),
                };
                if let Err(e) = written {
                    lost.fetch_add(lines, Ordering::Relaxed);
                    if !warned {
                        tracing::error!(error = %e, "cannot write the access log; lines are dropped");
                        warned = true;
                    }
                } else {
                    warned = false;
                }
            }
            Msg::Reopen => match open(&path) {
                Ok(f) => {
                    if f.is_some() {
                        file = f;
                    }
                    tracing::info!("access log reopened");
                }
                Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
            },
        }
    }
}

/// One core's log buffer.
pub struct CoreLog {
    sink: Sink,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    clock: LogClock,
}

impl CoreLog {
    pub fn new(sink: Sink) -> CoreLog {
        CoreLog {
            sink,
            buf: RefCell::new(Vec::with_capacity(HAND_OVER_AT * 2)),
            lines: Cell::new(0),
            clock: LogClock::default(),
        }
    }

    /// Appends the line of `r`; hands the buffer over when it is full enough.
    pub fn write(&self, r: &Record<'_>, dropped: &Counter) {
        let mut buf = self.buf.borrow_mut();
        let now_ms = crate::clock::wall_ms();
        match self.sink.format {
            LogFormat::Json => json_line(&mut buf, &self.clock.json(now_ms), r),
            LogFormat::Combined => combined_line(&mut buf, &self.clock.combined(now_ms), r),
        }
        self.lines.set(self.lines.get() + 1);
        if buf.len() >= HAND_OVER_AT {
            drop(buf);
            self.flush(dropped);
        }
    }

    /// Hands over what is buffered, without waiting; if the writer is behind (its
    /// queue full) or gone, the lines are dropped and counted in `dropped`.
    pub fn flush(&self, dropped: &Counter) {
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let full = std::mem::replace(&mut *buf, Vec::with_capacity(HAND_OVER_AT * 2));
        let lines = self.lines.replace(0);
        match self.sink.tx.try_send(Msg::Lines(full, lines)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => dropped.add(lines),
        }
    }
}

/// The timestamp texts of the current second, made once per second per core.
#[derive(Default)]
struct LogClock {
    second: Cell<u64>,
    /// `2026-11-27T16:40:01` (JSON, UTC; milliseconds and `Z` added per line).
    json: Cell<[u8; 19]>,
    /// `27/Nov/2026:16:40:01 +0000` (combined).
    combined: Cell<[u8; 26]>,
}

impl LogClock {
    fn refresh(&self, secs: u64) {
        if self.second.get() == secs && secs != 0 {
            return;
        }
        self.second.set(secs);
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let (y, mo, d, h, mi, s) = civil_time(secs);
        let two = |n: u32| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
        let y = y.clamp(0, 9999) as u32;
        let year = [
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
        ];
        let mut j = [0u8; 19];
        j[0..4].copy_from_slice(&year);
        j[4] = b'-';
        j[5..7].copy_from_slice(&two(mo));
        j[7] = b'-';
        j[8..10].copy_from_slice(&two(d));
        j[10] = b'T';
        j[11..13].copy_from_slice(&two(h));
        j[13] = b':';
        j[14..16].copy_from_slice(&two(mi));
        j[16] = b':';
        j[17..19].copy_from_slice(&two(s));
        self.json.set(j);
        let mut c = [0u8; 26];
        c[0..2].copy_from_slice(&two(d));
        c[2] = b'/';
        c[3..6].copy_from_slice(MONTHS[(mo - 1) as usize]);
        c[6] = b'/';
        c[7..11].copy_from_slice(&year);
        c[11] = b':';
        c[12..20].copy_from_slice(&j[11..19]);
        c[20..26].copy_from_slice(b" +0000");
        self.combined.set(c);
    }

    /// `2026-11-27T16:40:01.123Z`
    fn json(&self, ms: u64) -> [u8; 24] {
        self.refresh(ms / 1000);
        let mut t = [0u8; 24];
        t[..19].copy_from_slice(&self.json.get());
        let frac = (ms % 1000) as u32;
        t[19] = b'.';
        t[20] = b'0' + (frac / 100) as u8;
        t[21] = b'0' + (frac / 10 % 10) as u8;
        t[22] = b'0' + (frac % 10) as u8;
        t[23] = b'Z';
        t
    }

    fn combined(&self, ms: u64) -> [u8; 26] {
        self.refresh(ms / 1000);
        self.combined.get()
    }
}

/// Everything a line says about one request.
pub struct Record<'a> {
    pub request_id: Option<&'a [u8]>,
    /// The client's IP address as text, and its port.
    pub client_ip: &'a [u8],
    pub client_port: u16,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    pub cluster: Option<&'a str>,
    /// The endpoint's address as text.
    pub endpoint: Option<&'a str>,
    /// The request line's parts; `None` when the head could not be parsed.
    pub method: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
    /// The request-target as received (path and query).
    pub target: Option<&'a [u8]>,
    /// `HTTP/1.1`, `HTTP/1.0`; `None` when unknown.
    pub protocol: Option<&'static str>,
    /// 0: no response was sent.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_ns: u64,
    pub upstream_ns: Option<u64>,
    pub attempts: u8,
    pub flags: Flags,
    pub user_agent: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    pub traceparent: Option<&'a [u8]>,
}

/// The request-side fields of a request's line, copied when its head arrives:
/// by the time the line is written a relayed body may have reused the buffer the
/// head was in. One per connection burst, reused by its requests.
#[derive(Default)]
pub struct Scratch {
    bytes: Vec<u8>,
    method: Option<Range<usize>>,
    host: Option<Range<usize>>,
    target: Option<Range<usize>>,
    protocol: Option<&'static str>,
    user_agent: Option<Range<usize>>,
    referer: Option<Range<usize>>,
    traceparent: Option<Range<usize>>,
    request_id: Option<Range<usize>>,
}

use std::ops::Range;

impl Scratch {
    fn keep(&mut self, v: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(v);
        start..self.bytes.len()
    }

    /// Forgets the last request's fields (a head that could not be parsed has none).
    pub fn clear(&mut self) {
        *self = Scratch {
            bytes: std::mem::take(&mut self.bytes),
            ..Scratch::default()
        };
        self.bytes.clear();
    }

    /// Copies the fields of the head in `buf`; `request_id_header` is the
    /// configured request id header's (lower-case) name.
    pub fn capture(
        &mut self,
        buf: &[u8],
        head: &RequestHead,
        headers: &[HeaderSpan],
        request_id_header: &str,
    ) {
        self.clear();
        self.method = Some(self.keep(head.method_span.get(buf)));
        self.target = Some(self.keep(head.target.get(buf)));
        if let Some(h) = head.host() {
            self.host = Some(self.keep(h.get(buf)));
        }
        self.protocol = Some(match head.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        });
        for h in headers.iter().filter(|h| h.kind == HeaderKind::Other) {
            let name = h.name.get(buf);
            let slot = if name.eq_ignore_ascii_case(b"user-agent") {
                &mut self.user_agent
            } else if name.eq_ignore_ascii_case(b"referer") {
                &mut self.referer
            } else if name.eq_ignore_ascii_case(b"traceparent") {
                &mut self.traceparent
            } else if name.eq_ignore_ascii_case(request_id_header.as_bytes()) {
                &mut self.request_id
            } else {
                continue;
            };
            if slot.is_none() {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(h.value.get(buf));
                *slot = Some(start..self.bytes.len());
            }
        }
    }

    /// The request id the proxy generated for a request that had none.
    pub fn set_request_id(&mut self, id: &[u8]) {
        if self.request_id.is_none() {
            self.request_id = Some(self.keep(id));
        }
    }

    fn get(&self, r: &Option<Range<usize>>) -> Option<&[u8]> {
        r.clone().map(|r| &self.bytes[r])
    }

    pub fn method(&self) -> Option<&[u8]> {
        self.get(&self.method)
    }
    pub fn host(&self) -> Option<&[u8]> {
        self.get(&self.host)
    }
    pub fn target(&self) -> Option<&[u8]> {
        self.get(&self.target)
    }
    pub fn protocol(&self) -> Option<&'static str> {
        self.protocol
    }
    pub fn user_agent(&self) -> Option<&[u8]> {
        self.get(&self.user_agent)
    }
    pub fn referer(&self) -> Option<&[u8]> {
        self.get(&self.referer)
    }
    pub fn traceparent(&self) -> Option<&[u8]> {
        self.get(&self.traceparent)
    }
    pub fn request_id(&self) -> Option<&[u8]> {
        self.get(&self.request_id)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any byte of the word is outside printable ASCII, or is `"` or `\`.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(0x20 * ONES) & !w & HIGH;
    (w & HIGH)
        | below_space
        | zero_byte(w ^ (0x22 * ONES))
        | zero_byte(w ^ (0x5c * ONES))
        | zero_byte(w ^ (0x7f * ONES))
        != 0
}

/// `s` as the inside of a JSON string: every byte outside printable ASCII, `"` and
/// `\` escaped (bytes over 0x7f as `\u00XX`: the line stays valid JSON). Clean
/// stretches are found eight bytes at a time (header values rarely need escaping).
#[inline]
pub fn push_json_escaped(out: &mut Vec<u8>, s: &[u8]) {
    let mut clean = 0;
    while let Some(word) = s.get(clean..clean + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        if word_needs_escape(w) {
            break;
        }
        clean += 8;
    }
    while clean < s.len() && !NEEDS_ESCAPE[usize::from(s[clean])] {
        clean += 1;
    }
    out.extend_from_slice(&s[..clean]);
    if clean < s.len() {
        push_json_escaped_slow(out, &s[clean..]);
    }
}

/// Bytes a JSON string cannot hold as they are (see [`push_json_escaped`]).
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b >= 0x7f || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    t
};

/// The rest of a value from its first byte that needs escaping.
#[cold]
fn push_json_escaped_slow(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if !NEEDS_ESCAPE[usize::from(b)] {
            out.push(b);
            continue;
        }
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]),
        }
    }
}

/// `s` as nginx escapes variables in its logs: `"`, `\`, control bytes and bytes
/// over 0x7e as `\xHH`.
pub fn push_combined_escaped(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if !NEEDS_ESCAPE[usize::from(b)] {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

#[inline]
fn push_str_or_null(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            out.push(b'"');
            push_json_escaped(out, v);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A value that needs no escaping (a token, an address, a version), quoted.
fn push_raw_or_null(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            out.push(b'"');
            out.extend_from_slice(v);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Nanoseconds as milliseconds with three decimals.
fn push_ms(out: &mut Vec<u8>, ns: u64) {
    let us = ns / 1000;
    push_decimal(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `ip:port`, `[ip]:port` for IPv6, without `fmt`.
fn push_client(out: &mut Vec<u8>, ip: &[u8], port: u16) {
    if ip.contains(&b':') {
        out.push(b'[');
        out.extend_from_slice(ip);
        out.push(b']');
    } else {
        out.extend_from_slice(ip);
    }
    out.push(b':');
    push_decimal(out, u64::from(port));
}

fn push_flags(out: &mut Vec<u8>, flags: Flags) {
    if flags.is_empty() {
        out.push(b'-');
        return;
    }
    for (i, name) in flags.names().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
    }
}

/// One JSON line (fields as in the README).
pub fn json_line(out: &mut Vec<u8>, time: &[u8; 24], r: &Record<'_>) {
    // Room for a typical line at once: no growth checks that fail in between.
    out.reserve(1024);
    out.extend_from_slice(b"{\"time\":\"");
    out.extend_from_slice(time);
    out.extend_from_slice(b"\",\"request_id\":");
    push_str_or_null(out, r.request_id);
    out.extend_from_slice(b",\"client\":\"");
    push_client(out, r.client_ip, r.client_port);
    out.extend_from_slice(b"\",\"listener\":");
    push_str_or_null(out, Some(r.listener.as_bytes()));
    out.extend_from_slice(b",\"route\":");
    push_str_or_null(out, r.route.map(str::as_bytes));
    out.extend_from_slice(b",\"cluster\":");
    push_str_or_null(out, r.cluster.map(str::as_bytes));
    out.extend_from_slice(b",\"endpoint\":");
    push_raw_or_null(out, r.endpoint.map(str::as_bytes));
    out.extend_from_slice(b",\"method\":");
    // (A method is a token: nothing in it needs escaping.)
    push_raw_or_null(out, r.method);
    out.extend_from_slice(b",\"host\":");
    push_str_or_null(out, r.host);
    out.extend_from_slice(b",\"path\":");
    push_str_or_null(out, r.target);
    out.extend_from_slice(b",\"protocol\":");
    push_raw_or_null(out, r.protocol.map(str::as_bytes));
    out.extend_from_slice(b",\"status\":");
    push_decimal(out, u64::from(r.status));
    out.extend_from_slice(b",\"request_bytes\":");
    push_decimal(out, r.request_bytes);
    out.extend_from_slice(b",\"response_bytes\":");
    push_decimal(out, r.response_bytes);
    out.extend_from_slice(b",\"duration_ms\":");
    push_ms(out, r.duration_ns);
    out.extend_from_slice(b",\"upstream_ms\":");
    match r.upstream_ns {
        Some(ns) => push_ms(out, ns),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attempts\":");
    push_decimal(out, u64::from(r.attempts));
    out.extend_from_slice(b",\"flags\":\"");
    push_flags(out, r.flags);
    out.extend_from_slice(b"\",\"user_agent\":");
    push_str_or_null(out, r.user_agent);
    out.extend_from_slice(b",\"traceparent\":");
    push_str_or_null(out, r.traceparent);
    out.extend_from_slice(b"}\n");
}

/// One "combined" line: `client - - [time] "request" status bytes "referer" "agent"`.
pub fn combined_line(out: &mut Vec<u8>, time: &[u8; 26], r: &Record<'_>) {
    out.extend_from_slice(r.client_ip);
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(time);
    out.extend_from_slice(b"] \"");
    match (r.method, r.target, r.protocol) {
        (Some(m), Some(t), Some(p)) => {
            push_combined_escaped(out, m);
            out.push(b' ');
            push_combined_escaped(out, t);
            out.push(b' ');
            out.extend_from_slice(p.as_bytes());
        }
        _ => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    push_decimal(out, u64::from(r.status));
    out.push(b' ');
    push_decimal(out, r.response_bytes);
    for v in [r.referer, r.user_agent] {
        out.extend_from_slice(b" \"");
        match v {
            Some(v) => push_combined_escaped(out, v),
            None => out.push(b'-'),
        }
        out.push(b'"');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(ua: Option<&'a [u8]>) -> Record<'a> {
        Record {
            request_id: Some(b"abc"),
            client_ip: b"127.0.0.1",
            client_port: 5000,
            listener: "edge",
            route: Some("api"),
            cluster: Some("web"),
            endpoint: Some("10.0.0.1:80"),
            method: Some(b"GET"),
            host: Some(b"example.com"),
            target: Some(b"/x?y=1"),
            protocol: Some("HTTP/1.1"),
            status: 200,
            request_bytes: 78,
            response_bytes: 1234,
            duration_ns: 1_234_567,
            upstream_ns: Some(999_000),
            attempts: 1,
            flags: Flags::default(),
            user_agent: ua,
            referer: None,
            traceparent: None,
        }
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut out = Vec::new();
        let hostile: &[u8] = b"a\"b\\c\x01\x7f\xff\xc3\xa9 d";
        json_line(
            &mut out,
            b"2026-11-27T16:40:01.123Z",
            &record(Some(hostile)),
        );
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-11-27T16:40:01.123Z");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["upstream_ms"], 0.999);
        assert_eq!(v["endpoint"], "10.0.0.1:80");
        assert_eq!(v["path"], "/x?y=1");
        assert_eq!(v["flags"], "-");
        assert_eq!(v["traceparent"], serde_json::Value::Null);
        // Bytes over 0x7f read as Latin-1 code points: nothing is lost or invalid.
        assert_eq!(v["user_agent"], "a\"b\\c\u{1}\u{7f}\u{ff}\u{c3}\u{a9} d");
        for key in [
            "request_id",
            "client",
            "listener",
            "route",
            "cluster",
            "method",
            "host",
            "protocol",
            "request_bytes",
            "response_bytes",
            "attempts",
        ] {
            assert!(!v[key].is_null(), "{key}");
        }
    }

    #[test]
    fn every_byte_escapes_to_valid_json() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = b"\"".to_vec();
        push_json_escaped(&mut out, &all);
        out.push(b'"');
        let s: String = serde_json::from_slice(&out).unwrap();
        let back: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(back, all);
        // Every byte value at every place of a word, for the word-at-a-time scan.
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut v = vec![b'a'; 20];
                v[at] = b;
                let mut out = b"\"".to_vec();
                push_json_escaped(&mut out, &v);
                out.push(b'"');
                let s: String =
                    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{b:#x} at {at}: {e}"));
                let back: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
                assert_eq!(back, v, "{b:#x} at {at}");
            }
        }
    }

    #[test]
    fn ipv6_clients_are_bracketed() {
        let mut out = Vec::new();
        push_client(&mut out, b"::1", 8080);
        assert_eq!(out, b"[::1]:8080");
    }

    #[test]
    fn combined_lines_look_like_nginx() {
        let mut out = Vec::new();
        let mut r = record(Some(b"curl/8 \"x\""));
        r.flags.set(Flags::NO_ROUTE);
        combined_line(&mut out, b"27/Nov/2026:16:40:01 +0000", &r);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [27/Nov/2026:16:40:01 +0000] \"GET /x?y=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8 \\x22x\\x22\"\n"
        );
    }

    #[test]
    fn clock_texts() {
        let c = LogClock::default();
        // 2026-11-27T16:40:01.123Z
        let ms = 1_795_797_601_123;
        assert_eq!(&c.json(ms), b"2026-11-27T16:40:01.123Z");
        assert_eq!(&c.combined(ms), b"27/Nov/2026:16:40:01 +0000");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let log = CoreLog::new(Sink {
            tx,
            format: LogFormat::Json,
        });
        let dropped = Counter::default();
        log.write(&record(None), &dropped);
        log.flush(&dropped); // fills the queue of one
        log.write(&record(None), &dropped);
        log.write(&record(None), &dropped);
        log.flush(&dropped); // nobody reads: dropped
        assert_eq!(dropped.get(), 2);
    }
}
