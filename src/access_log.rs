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
use crate::http::parse::{HeaderKind, HeaderSpan, RequestHead, Span, Version};
use crate::http::rewrite::DIGIT_PAIRS;
use crate::metrics::Counter;
use crate::outcome::Flags;
use crate::tls::TlsInfo;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A core hands its buffer over once it holds this much.
const HAND_OVER_AT: usize = 32 * 1024;
/// Buffers waiting for the writer, all cores together; beyond, lines are dropped.
const QUEUE: usize = 64;

enum Msg {
    /// A buffer, the length of its complete lines, and how many lines.
    Lines(Vec<u8>, usize, u64),
    Reopen,
}

/// A core's way to the writer thread.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Msg>,
    format: LogFormat,
    spare: Arc<Spare>,
}

/// The writer thread of one log file (or stdout).
pub struct Writer {
    pub config: AccessLogConfig,
    tx: Option<SyncSender<Msg>>,
    spare: Arc<Spare>,
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
        let spare = Arc::new(Spare::default());
        let (path, lost, back) = (config.path.clone(), failed.clone(), spare.clone());
        let thread = std::thread::Builder::new()
            .name("ringway-log".into())
            .spawn(move || write_lines(rx, path, file, &lost, &back))?;
        Ok(Writer {
            config: config.clone(),
            tx: Some(tx),
            spare,
            thread: Some(thread),
            failed,
        })
    }

    /// What a core writes through.
    pub fn sink(&self) -> Option<Sink> {
        self.tx.as_ref().map(|tx| Sink {
            tx: tx.clone(),
            format: self.config.format,
            spare: self.spare.clone(),
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

fn write_lines(
    rx: Receiver<Msg>,
    path: LogPath,
    mut file: Option<File>,
    lost: &AtomicU64,
    spare: &Spare,
) {
    let mut warned = false;
    for msg in rx {
        match msg {
            Msg::Lines(buf, used, lines) => {
                let written = match &mut file {
                    Some(f) => f.write_all(&buf[..used]),
                    None => io::stdout().lock().write_all(&buf[..used]),
                };
                spare.give(buf);
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

/// A core's buffer size: it is handed over once it holds [`HAND_OVER_AT`] bytes, so
/// a line has at least the difference as room (a longer one grows the buffer).
const BUFFER: usize = 2 * HAND_OVER_AT;
/// Spare buffers kept for reuse, all cores together.
const SPARE: usize = 16;

/// Buffers the writer has written out, for the cores to fill again: a reused buffer
/// is already initialised, so a core never zeroes one (see [`Line`]).
#[derive(Default)]
struct Spare(Mutex<Vec<Vec<u8>>>);

impl Spare {
    /// A buffer of `BUFFER` initialised bytes.
    fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut s| s.pop());
        reused.unwrap_or_else(|| vec![0; BUFFER])
    }

    fn give(&self, buf: Vec<u8>) {
        if buf.len() != BUFFER {
            return;
        }
        if let Ok(mut s) = self.0.lock() {
            if s.len() < SPARE {
                s.push(buf);
            }
        }
    }
}

/// One core's log buffer: `bytes` is initialised in full, `used` of it holds lines.
pub struct CoreLog {
    sink: Sink,
    buf: RefCell<Lines>,
    clock: LogClock,
}

struct Lines {
    bytes: Vec<u8>,
    used: usize,
    count: u64,
}

impl CoreLog {
    pub fn new(sink: Sink) -> CoreLog {
        CoreLog {
            buf: RefCell::new(Lines {
                bytes: sink.spare.take(),
                used: 0,
                count: 0,
            }),
            sink,
            clock: LogClock::default(),
        }
    }

    /// Appends the line of `r`; hands the buffer over when it is full enough.
    pub fn write(&self, r: &Record<'_>, dropped: &Counter) {
        let mut buf = self.buf.borrow_mut();
        let now_ms = crate::clock::wall_ms();
        let b = &mut *buf;
        let end = loop {
            let mut line = Line {
                buf: &mut b.bytes,
                at: b.used,
            };
            match self.sink.format {
                LogFormat::Json => json_line(&mut line, &self.clock.json(now_ms), r),
                LogFormat::Combined => combined_line(&mut line, &self.clock.combined(now_ms), r),
            }
            if line.fits() {
                break line.at;
            }
            // Longer than the room left (rare: a line of kilobytes): grow and write
            // it again.
            let need = line.at;
            b.bytes.resize(need, 0);
        };
        b.used = end;
        b.count += 1;
        if end >= HAND_OVER_AT {
            drop(buf);
            self.flush(dropped);
        }
    }

    /// Hands over what is buffered, without waiting; if the writer is behind (its
    /// queue full) or gone, the lines are dropped and counted in `dropped`.
    pub fn flush(&self, dropped: &Counter) {
        let mut buf = self.buf.borrow_mut();
        if buf.used == 0 {
            return;
        }
        let full = std::mem::replace(&mut buf.bytes, self.sink.spare.take());
        let used = std::mem::replace(&mut buf.used, 0);
        let lines = std::mem::replace(&mut buf.count, 0);
        match self.sink.tx.try_send(Msg::Lines(full, used, lines)) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::Lines(full, ..)))
            | Err(TrySendError::Disconnected(Msg::Lines(full, ..))) => {
                dropped.add(lines);
                self.sink.spare.give(full);
            }
            Err(_) => dropped.add(lines),
        }
    }
}

/// A line being written at `at` into `buf`, whose bytes are all initialised: each
/// write is a bounds-checked copy (a constant-size one is a few moves), with no
/// growth check or length update per piece as `Vec::extend_from_slice` has. A piece
/// that does not fit is skipped but still counted in `at`, so a line that did not
/// fit is known afterwards ([`Line::fits`]) and written again into a larger buffer.
pub struct Line<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl<'b> Line<'b> {
    pub fn new(buf: &'b mut [u8]) -> Line<'b> {
        Line { buf, at: 0 }
    }

    /// Whether everything written fitted; the line is `buf[start..at]`.
    pub fn fits(&self) -> bool {
        self.at <= self.buf.len()
    }

    /// Where the line ends (past the buffer when it did not fit).
    pub fn end(&self) -> usize {
        self.at
    }

    #[inline(always)]
    fn put<const N: usize>(&mut self, s: &[u8; N]) {
        if let Some(d) = self.buf.get_mut(self.at..self.at + N) {
            d.copy_from_slice(s);
        }
        self.at += N;
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        if let Some(d) = self.buf.get_mut(self.at) {
            *d = b;
        }
        self.at += 1;
    }

    /// A short piece (most are: names, addresses, numbers' neighbours) is copied as
    /// two overlapping words, not by a call of `memcpy`.
    #[inline]
    fn slice(&mut self, s: &[u8]) {
        let n = s.len();
        if let Some(d) = self.buf.get_mut(self.at..self.at + n) {
            match n {
                8..=16 => {
                    d[..8].copy_from_slice(&s[..8]);
                    d[n - 8..].copy_from_slice(&s[n - 8..]);
                }
                4..=7 => {
                    d[..4].copy_from_slice(&s[..4]);
                    d[n - 4..].copy_from_slice(&s[n - 4..]);
                }
                _ => d.copy_from_slice(s),
            }
        }
        self.at += n;
    }

    /// `s` as the inside of a JSON string: see [`json_clean_len`].
    #[inline]
    fn json(&mut self, s: &[u8]) {
        let clean = json_clean_len(s);
        self.slice(&s[..clean]);
        if clean < s.len() {
            self.json_slow(&s[clean..]);
        }
    }

    /// The rest of a value from its first byte that needs escaping.
    #[cold]
    fn json_slow(&mut self, s: &[u8]) {
        for &b in s {
            if !NEEDS_ESCAPE[usize::from(b)] {
                self.byte(b);
                continue;
            }
            match b {
                b'"' => self.put(b"\\\""),
                b'\\' => self.put(b"\\\\"),
                b'\n' => self.put(b"\\n"),
                b'\r' => self.put(b"\\r"),
                b'\t' => self.put(b"\\t"),
                _ => self.put(&[
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

    /// `s` as nginx escapes variables in its logs: `"`, `\`, control bytes and
    /// bytes over 0x7e as `\xHH`.
    fn combined(&mut self, s: &[u8]) {
        for &b in s {
            if !NEEDS_ESCAPE[usize::from(b)] {
                self.byte(b);
            } else {
                self.put(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
        }
    }

    /// `"value"` (escaped) or `null`.
    #[inline]
    fn json_or_null(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.byte(b'"');
                self.json(v);
                self.byte(b'"');
            }
            None => self.put(b"null"),
        }
    }

    /// A decimal, its digits written in place, two per division.
    #[inline]
    fn decimal(&mut self, n: u64) {
        let digits = decimal_len(n);
        if let Some(d) = self.buf.get_mut(self.at..self.at + digits) {
            let mut n = n;
            let mut i = digits;
            while i >= 2 {
                let at = 2 * (n % 100) as usize;
                d[i - 2..i].copy_from_slice(&DIGIT_PAIRS[at..at + 2]);
                n /= 100;
                i -= 2;
            }
            if i == 1 {
                d[0] = b'0' + n as u8;
            }
        }
        self.at += digits;
    }

    /// Nanoseconds as milliseconds with three decimals.
    fn millis(&mut self, ns: u64) {
        let us = ns / 1000;
        self.decimal(us / 1000);
        let frac = (us % 1000) as usize;
        let pair = 2 * (frac % 100);
        self.put(&[
            b'.',
            b'0' + (frac / 100) as u8,
            DIGIT_PAIRS[pair],
            DIGIT_PAIRS[pair + 1],
        ]);
    }
}

/// The number of decimal digits of `n`.
#[inline]
fn decimal_len(n: u64) -> usize {
    // POW10[i] = 10^(i+1)
    const POW10: [u64; 19] = {
        let mut t = [10u64; 19];
        let mut i = 1;
        while i < 19 {
            t[i] = t[i - 1] * 10;
            i += 1;
        }
        t
    };
    let mut digits = 1;
    while digits < 20 && n >= POW10[digits - 1] {
        digits += 1;
    }
    digits
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
    /// The client's IP address as text, whether it is IPv6, and its port.
    pub client_ip: &'a [u8],
    pub client_ipv6: bool,
    pub client_port: u16,
    /// The listener's, route's and cluster's names as JSON strings ([`json_string`]),
    /// made when the configuration is compiled, not escaped per line.
    pub listener: &'a [u8],
    pub route: Option<&'a [u8]>,
    pub cluster: Option<&'a [u8]>,
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
    /// The connection's TLS, on TLS listeners.
    pub tls: Option<&'a TlsInfo>,
}

/// A name as a JSON string, quoted and escaped: made once per configuration for
/// the names every line carries.
pub fn json_string(name: &str) -> Box<[u8]> {
    let mut buf = vec![0; name.len() * 6 + 2];
    let mut line = Line::new(&mut buf);
    line.json_or_null(Some(name.as_bytes()));
    let len = line.end();
    buf.truncate(len);
    buf.into_boxed_slice()
}

/// The request-side fields of a request's line, kept when its head arrives: by the
/// time the line is written a relayed body may have reused the buffer the head was
/// in. The head is copied whole, in one piece, and the fields are spans of the
/// copy. One per connection burst, reused by its requests.
#[derive(Default)]
pub struct Scratch {
    /// The request head, then a request id the proxy generated.
    bytes: Vec<u8>,
    method: Option<Span>,
    host: Option<Span>,
    target: Option<Span>,
    protocol: Option<&'static str>,
    user_agent: Option<Span>,
    referer: Option<Span>,
    traceparent: Option<Span>,
    request_id: Option<Span>,
}

impl Scratch {
    /// Forgets the last request's fields (a head that could not be parsed has none).
    pub fn clear(&mut self) {
        *self = Scratch {
            bytes: std::mem::take(&mut self.bytes),
            ..Scratch::default()
        };
        self.bytes.clear();
    }

    /// Keeps the fields of the head at the start of `buf`; `request_id_header` is
    /// the configured request id header's (lower-case) name.
    pub fn capture(
        &mut self,
        buf: &[u8],
        head: &RequestHead,
        headers: &[HeaderSpan],
        request_id_header: &str,
    ) {
        self.bytes.clear();
        self.bytes
            .extend_from_slice(buf.get(..head.head_len).unwrap_or(buf));
        self.method = Some(head.method_span);
        self.target = Some(head.target);
        self.host = head.host();
        self.protocol = Some(match head.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        });
        self.user_agent = None;
        self.referer = None;
        self.traceparent = None;
        self.request_id = None;
        let id = request_id_header.as_bytes();
        for h in headers.iter().filter(|h| h.kind == HeaderKind::Other) {
            let name = h.name.get(buf);
            let slot = match name.len() {
                10 if name.eq_ignore_ascii_case(b"user-agent") => &mut self.user_agent,
                7 if name.eq_ignore_ascii_case(b"referer") => &mut self.referer,
                11 if name.eq_ignore_ascii_case(b"traceparent") => &mut self.traceparent,
                n if n == id.len() && name.eq_ignore_ascii_case(id) => &mut self.request_id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(h.value);
            }
        }
    }

    /// The request id the proxy generated for a request that had none.
    pub fn set_request_id(&mut self, id: &[u8]) {
        if self.request_id.is_none() {
            let start = self.bytes.len() as u32;
            self.bytes.extend_from_slice(id);
            self.request_id = Some(Span {
                start,
                len: id.len() as u32,
            });
        }
    }

    fn get(&self, span: Option<Span>) -> Option<&[u8]> {
        let span = span?;
        let start = span.start as usize;
        self.bytes.get(start..start + span.len as usize)
    }

    pub fn method(&self) -> Option<&[u8]> {
        self.get(self.method)
    }
    pub fn host(&self) -> Option<&[u8]> {
        self.get(self.host)
    }
    pub fn target(&self) -> Option<&[u8]> {
        self.get(self.target)
    }
    pub fn protocol(&self) -> Option<&'static str> {
        self.protocol
    }
    pub fn user_agent(&self) -> Option<&[u8]> {
        self.get(self.user_agent)
    }
    pub fn referer(&self) -> Option<&[u8]> {
        self.get(self.referer)
    }
    pub fn traceparent(&self) -> Option<&[u8]> {
        self.get(self.traceparent)
    }
    pub fn request_id(&self) -> Option<&[u8]> {
        self.get(self.request_id)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any byte of the word is outside printable ASCII, or is `"` or `\`.
#[inline(always)]
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

#[inline(always)]
fn word_at(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(w)
}

/// How many bytes at the start of `s` a JSON string can hold as they are: every
/// byte outside printable ASCII, `"` and `\` is escaped (bytes over 0x7f as
/// `\u00XX`, so a line is valid JSON whatever bytes a header held). Values rarely
/// need escaping: they are checked eight bytes at a time, the last word overlapping
/// the one before it, so a clean value of eight bytes or more is never looked at
/// byte by byte.
#[inline]
fn json_clean_len(s: &[u8]) -> usize {
    let n = s.len();
    if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            if word_needs_escape(word_at(s, at)) {
                break;
            }
            at += 8;
        }
        if at + 8 >= n && !word_needs_escape(word_at(s, n - 8)) {
            return n;
        }
        at + s[at..]
            .iter()
            .position(|&b| NEEDS_ESCAPE[usize::from(b)])
            .unwrap_or(n - at)
    } else {
        s.iter()
            .position(|&b| NEEDS_ESCAPE[usize::from(b)])
            .unwrap_or(n)
    }
}

/// Bytes a JSON string cannot hold as they are (see [`json_clean_len`]).
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b >= 0x7f || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    t
};

/// One JSON line (fields as in the README).
pub fn json_line(out: &mut Line<'_>, time: &[u8; 24], r: &Record<'_>) {
    out.put(b"{\"time\":\"");
    out.put(time);
    out.put(b"\",\"request_id\":");
    out.json_or_null(r.request_id);
    out.put(b",\"client\":\"");
    if r.client_ipv6 {
        out.byte(b'[');
        out.slice(r.client_ip);
        out.byte(b']');
    } else {
        out.slice(r.client_ip);
    }
    out.byte(b':');
    out.decimal(u64::from(r.client_port));
    out.put(b"\",\"listener\":");
    out.slice(r.listener);
    out.put(b",\"route\":");
    match r.route {
        Some(name) => out.slice(name),
        None => out.put(b"null"),
    }
    out.put(b",\"cluster\":");
    match r.cluster {
        Some(name) => out.slice(name),
        None => out.put(b"null"),
    }
    out.put(b",\"endpoint\":");
    match r.endpoint {
        // (An address needs no escaping; nor does a method, a token.)
        Some(e) => {
            out.byte(b'"');
            out.slice(e.as_bytes());
            out.byte(b'"');
        }
        None => out.put(b"null"),
    }
    out.put(b",\"method\":");
    match r.method {
        Some(m) => {
            out.byte(b'"');
            out.slice(m);
            out.byte(b'"');
        }
        None => out.put(b"null"),
    }
    out.put(b",\"host\":");
    out.json_or_null(r.host);
    out.put(b",\"path\":");
    out.json_or_null(r.target);
    out.put(b",\"protocol\":");
    match r.protocol {
        Some("HTTP/1.1") => out.put(b"\"HTTP/1.1\""),
        Some(p) => {
            out.byte(b'"');
            out.slice(p.as_bytes());
            out.byte(b'"');
        }
        None => out.put(b"null"),
    }
    out.put(b",\"status\":");
    out.decimal(u64::from(r.status));
    out.put(b",\"request_bytes\":");
    out.decimal(r.request_bytes);
    out.put(b",\"response_bytes\":");
    out.decimal(r.response_bytes);
    out.put(b",\"duration_ms\":");
    out.millis(r.duration_ns);
    out.put(b",\"upstream_ms\":");
    match r.upstream_ns {
        Some(ns) => out.millis(ns),
        None => out.put(b"null"),
    }
    out.put(b",\"attempts\":");
    out.decimal(u64::from(r.attempts));
    out.put(b",\"flags\":\"");
    if r.flags.is_empty() {
        out.byte(b'-');
    } else {
        for (i, name) in r.flags.names().enumerate() {
            if i > 0 {
                out.byte(b',');
            }
            out.slice(name.as_bytes());
        }
    }
    out.put(b"\",\"user_agent\":");
    out.json_or_null(r.user_agent);
    out.put(b",\"traceparent\":");
    out.json_or_null(r.traceparent);
    if let Some(tls) = r.tls {
        tls_fields(out, tls);
    }
    out.put(b"}\n");
}

/// The TLS fields of a line from a TLS connection (plain connections' lines have
/// none).
#[cold]
fn tls_fields(out: &mut Line<'_>, tls: &TlsInfo) {
    out.put(b",\"tls_version\":\"");
    out.slice(tls.version.as_bytes());
    out.put(b"\",\"tls_cipher\":\"");
    out.slice(tls.cipher.as_bytes());
    out.put(b"\",\"sni\":");
    out.json_or_null(tls.sni.as_deref().map(str::as_bytes));
    out.put(b",\"alpn\":");
    out.json_or_null(tls.alpn.as_deref().map(str::as_bytes));
    out.put(b",\"client_subject\":");
    out.json_or_null(tls.client_subject.as_deref().map(str::as_bytes));
}

/// One "combined" line: `client - - [time] "request" status bytes "referer" "agent"`.
pub fn combined_line(out: &mut Line<'_>, time: &[u8; 26], r: &Record<'_>) {
    out.slice(r.client_ip);
    out.put(b" - - [");
    out.put(time);
    out.put(b"] \"");
    match (r.method, r.target, r.protocol) {
        (Some(m), Some(t), Some(p)) => {
            out.combined(m);
            out.byte(b' ');
            out.combined(t);
            out.byte(b' ');
            out.slice(p.as_bytes());
        }
        _ => out.byte(b'-'),
    }
    out.put(b"\" ");
    out.decimal(u64::from(r.status));
    out.byte(b' ');
    out.decimal(r.response_bytes);
    for v in [r.referer, r.user_agent] {
        out.put(b" \"");
        match v {
            Some(v) => out.combined(v),
            None => out.byte(b'-'),
        }
        out.byte(b'"');
    }
    out.byte(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats one line with `f` into a buffer of exactly `room` bytes, growing it
    /// as `CoreLog::write` does when it did not fit.
    fn format(room: usize, f: impl Fn(&mut Line<'_>)) -> Vec<u8> {
        let mut buf = vec![0; room];
        loop {
            let mut line = Line::new(&mut buf);
            f(&mut line);
            if line.fits() {
                let len = line.end();
                buf.truncate(len);
                return buf;
            }
            let need = line.end();
            buf.resize(need, 0);
        }
    }

    fn json(r: &Record<'_>) -> Vec<u8> {
        format(4096, |l| json_line(l, b"2026-11-27T16:40:01.123Z", r))
    }

    fn record<'a>(ua: Option<&'a [u8]>) -> Record<'a> {
        Record {
            request_id: Some(b"abc"),
            client_ip: b"127.0.0.1",
            client_ipv6: false,
            client_port: 5000,
            listener: b"\"edge\"",
            route: Some(b"\"api\""),
            cluster: Some(b"\"web\""),
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
            tls: None,
        }
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let hostile: &[u8] = b"a\"b\\c\x01\x7f\xff\xc3\xa9 d";
        let out = json(&record(Some(hostile)));
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
        let quoted = |v: &[u8]| format(v.len() + 2, |l| l.json_or_null(Some(v)));
        let all: Vec<u8> = (0..=255).collect();
        let out = quoted(&all);
        let s: String = serde_json::from_slice(&out).unwrap();
        let back: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
        assert_eq!(back, all);
        // Every byte value at every place of a word, for the word-at-a-time scan.
        // and for the lengths around a word's (the last word overlaps).
        for len in 1..=20 {
            for b in 0..=255u8 {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let out = quoted(&v);
                    let s: String = serde_json::from_slice(&out)
                        .unwrap_or_else(|e| panic!("{b:#x} at {at} of {len}: {e}"));
                    let back: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
                    assert_eq!(back, v, "{b:#x} at {at} of {len}");
                }
            }
        }
        assert_eq!(quoted(b""), b"\"\"");
    }

    #[test]
    fn ipv6_clients_are_bracketed() {
        let mut r = record(None);
        r.client_ip = b"::1";
        r.client_ipv6 = true;
        r.client_port = 8080;
        let v: serde_json::Value = serde_json::from_slice(&json(&r)).unwrap();
        assert_eq!(v["client"], "[::1]:8080");
    }

    #[test]
    fn combined_lines_look_like_nginx() {
        let mut r = record(Some(b"curl/8 \"x\""));
        r.flags.set(Flags::NO_ROUTE);
        let out = format(16, |l| combined_line(l, b"27/Nov/2026:16:40:01 +0000", &r));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [27/Nov/2026:16:40:01 +0000] \"GET /x?y=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8 \\x22x\\x22\"\n"
        );
    }

    #[test]
    fn tls_connections_add_their_fields() {
        let plain: serde_json::Value = serde_json::from_slice(&json(&record(None))).unwrap();
        assert!(plain.get("tls_version").is_none());
        let info = TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            sni: Some("a.example.com".into()),
            alpn: Some("http/1.1".into()),
            client_subject: Some("CN=\"x\", O=y".into()),
            client_cert_line: Box::default(),
        };
        let mut r = record(None);
        r.tls = Some(&info);
        let v: serde_json::Value = serde_json::from_slice(&json(&r)).unwrap();
        assert_eq!(v["tls_version"], "TLSv1.3");
        assert_eq!(v["tls_cipher"], "TLS13_AES_128_GCM_SHA256");
        assert_eq!(v["sni"], "a.example.com");
        assert_eq!(v["alpn"], "http/1.1");
        assert_eq!(v["client_subject"], "CN=\"x\", O=y");
        let none = TlsInfo::default();
        r.tls = Some(&none);
        let v: serde_json::Value = serde_json::from_slice(&json(&r)).unwrap();
        assert_eq!(v["sni"], serde_json::Value::Null);
        assert_eq!(v["client_subject"], serde_json::Value::Null);
    }

    #[test]
    fn decimals_and_milliseconds() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            999_999,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(format(1, |l| l.decimal(n)), n.to_string().as_bytes(), "{n}");
        }
        assert_eq!(format(1, |l| l.millis(1_234_567)), b"1.234");
        assert_eq!(format(1, |l| l.millis(5_000)), b"0.005");
        assert_eq!(format(1, |l| l.millis(10_000_000_000)), b"10000.000");
    }

    #[test]
    fn names_are_json_strings_and_long_lines_grow_the_buffer() {
        assert_eq!(&*json_string("a\"b"), b"\"a\\\"b\"");
        let long = vec![b'x'; 10_000];
        let mut r = record(Some(&long));
        r.flags.set(Flags::NO_ROUTE);
        r.flags.set(Flags::UPSTREAM_TIMEOUT);
        // Room for part of the line only: written again into a larger buffer.
        let out = format(100, |l| json_line(l, b"2026-11-27T16:40:01.123Z", &r));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_agent"].as_str().unwrap().len(), 10_000);
        assert_eq!(v["flags"], "NR,UT");
        assert_eq!(out, json(&r));
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
            spare: Arc::default(),
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
