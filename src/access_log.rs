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

use crate::clock::{civil_time, Stamp};
use crate::config::{AccessLogConfig, LogFormat, LogPath};
#[cfg(test)]
use crate::http::parse::parse_request;
use crate::http::parse::{folded_eq, HeaderKind, HeaderSpan, Method, RequestHead, Span, Version};
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
    #[inline]
    pub fn write(&self, r: &Record<'_>, dropped: &Counter) {
        let mut buf = self.buf.borrow_mut();
        let ms = self.clock.millis(r.end);
        let b = &mut *buf;
        let end = loop {
            let mut line = Line {
                buf: &mut b.bytes,
                at: b.used,
            };
            match self.sink.format {
                LogFormat::Json => json_line(&mut line, &self.clock.json(), ms, r),
                LogFormat::Combined => combined_line(&mut line, &self.clock.combined(), r),
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

/// What a line is written into: a [`Line`] (every piece bounds-checked, for any
/// length) or a [`Block`] (a line known to fit in one, at a few instructions a
/// piece). The line formats are written once, generic over this.
trait Out {
    /// A constant piece (at most [`SLACK`] bytes).
    fn put<const N: usize>(&mut self, s: &[u8; N]);
    fn byte(&mut self, b: u8);
    fn slice(&mut self, s: &[u8]);
    /// `s` escaped for the inside of a JSON string (the rare path).
    fn escaped(&mut self, s: &[u8]);
    /// A decimal of five digits or more.
    fn long_decimal(&mut self, n: u64);

    /// `"value"` (escaped) or `null`. The value is checked sixteen bytes at a time,
    /// in blocks of the buffer it is in (a short value's block may start before it:
    /// see [`Val`]), and copied as it is when nothing needs escaping.
    #[inline(always)]
    fn quoted(&mut self, v: Option<Val<'_>>) {
        let Some(v) = v else {
            return self.put(b"null");
        };
        self.byte(b'"');
        if v.is_clean() {
            self.slice(v.bytes());
        } else {
            self.escaped(v.bytes());
        }
        self.byte(b'"');
    }

    /// `"value"` or `null` for a value confined to bytes a JSON string holds as they
    /// are: a method (a token, checked by the request parser), a Host (checked
    /// against `http::parse`'s host bytes), a request id the proxy generated.
    #[inline(always)]
    fn clean(&mut self, v: Option<Val<'_>>) {
        let Some(v) = v else {
            return self.put(b"null");
        };
        debug_assert_eq!(json_clean_len(v.bytes()), v.bytes().len());
        self.byte(b'"');
        self.slice(v.bytes());
        self.byte(b'"');
    }

    /// `"value"` (escaped) or `null`, for values not in a [`Val`] (rare ones).
    fn json_or_null(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.byte(b'"');
                self.escaped(v);
                self.byte(b'"');
            }
            None => self.put(b"null"),
        }
    }

    /// A decimal: up to four digits directly, longer ones two digits per division.
    #[inline(always)]
    fn decimal(&mut self, n: u64) {
        let pair = |p: u64| {
            let p = 2 * p as usize;
            [DIGIT_PAIRS[p], DIGIT_PAIRS[p + 1]]
        };
        if n < 10 {
            self.byte(b'0' + n as u8);
        } else if n < 100 {
            self.put(&pair(n));
        } else if n < 1000 {
            let [a, b] = pair(n % 100);
            self.put(&[b'0' + (n / 100) as u8, a, b]);
        } else if n < 10_000 {
            let ([a, b], [c, d]) = (pair(n / 100), pair(n % 100));
            self.put(&[a, b, c, d]);
        } else {
            self.long_decimal(n);
        }
    }

    /// Nanoseconds as milliseconds with three decimals.
    #[inline(always)]
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

    /// A value as nginx escapes variables in its logs (see [`Line::combined`]).
    #[inline]
    fn combined_val(&mut self, v: Val<'_>) {
        if v.is_clean() {
            self.slice(v.bytes());
        } else {
            self.combined(v.bytes());
        }
    }

    /// `s` as nginx escapes variables in its logs: `"`, `\`, control bytes and
    /// bytes over 0x7e as `\xHH`.
    #[cold]
    fn combined(&mut self, s: &[u8]) {
        for &b in s {
            if !NEEDS_ESCAPE[usize::from(b)] {
                self.byte(b);
            } else {
                self.put(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
        }
    }
}

impl Out for Line<'_> {
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

    #[inline]
    fn slice(&mut self, s: &[u8]) {
        if let Some(d) = self.buf.get_mut(self.at..self.at + s.len()) {
            copy_short(d, s);
        }
        self.at += s.len();
    }

    fn escaped(&mut self, s: &[u8]) {
        self.json(s);
    }

    /// Its digits written in place, two per division.
    fn long_decimal(&mut self, n: u64) {
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
}

/// `s` into `d` (of the same length): a short piece (most are: names, addresses,
/// numbers' neighbours) as two overlapping moves, not by a call of `memcpy`.
#[inline(always)]
fn copy_short(d: &mut [u8], s: &[u8]) {
    let n = s.len();
    match n {
        17..=32 => {
            d[..16].copy_from_slice(&s[..16]);
            d[n - 16..].copy_from_slice(&s[n - 16..]);
        }
        33..=64 => {
            d[..32].copy_from_slice(&s[..32]);
            d[n - 32..].copy_from_slice(&s[n - 32..]);
        }
        8..=16 => {
            d[..8].copy_from_slice(&s[..8]);
            d[n - 8..].copy_from_slice(&s[n - 8..]);
        }
        4..=7 => {
            d[..4].copy_from_slice(&s[..4]);
            d[n - 4..].copy_from_slice(&s[n - 4..]);
        }
        1..=3 => {
            d[0] = s[0];
            d[n / 2] = s[n / 2];
            d[n - 1] = s[n - 1];
        }
        _ => d.copy_from_slice(s),
    }
}

/// The most a [`Block`] line holds.
const BLOCK: usize = 4096;
/// Room after a block for the last piece written at its end: the longest piece
/// written without a length check.
const SLACK: usize = 64;

/// A line written into `BLOCK + SLACK` bytes without a bounds check per piece.
/// `pos` counts every byte of the line; each piece goes at `pos & (BLOCK - 1)`,
/// which is `pos` itself while the line is within [`BLOCK`] bytes, and which bounds
/// the position, so that a piece of at most `SLACK` bytes needs no check (the
/// compiler sees that it fits). A line that ends beyond `BLOCK` has wrapped round
/// and overwritten itself: [`Block::fits`] says so, and the caller writes it again
/// with checks (a line of kilobytes, rare). Nothing is ever written outside the
/// block.
struct Block<'b> {
    w: &'b mut [u8; BLOCK + SLACK],
    pos: usize,
}

impl Block<'_> {
    #[inline(always)]
    fn at(&self) -> usize {
        self.pos & (BLOCK - 1)
    }

    /// Whether the whole line is in the block, each piece where it belongs: `pos`
    /// never decreases, so no piece began at or beyond `BLOCK` and wrapped.
    #[inline(always)]
    fn fits(&self) -> bool {
        self.pos <= BLOCK
    }
}

// The rare pieces of a `Block` go through a `Line` in functions of their own that
// take the block and the position by value (not the `Block`, whose position then
// stays in a register while a line is written).

#[cold]
#[inline(never)]
fn block_escaped(w: &mut [u8], at: usize, s: &[u8]) -> usize {
    let mut line = Line { buf: w, at };
    line.json(s);
    line.at
}

#[inline(never)]
fn block_long_decimal(w: &mut [u8], at: usize, n: u64) -> usize {
    let mut line = Line { buf: w, at };
    line.long_decimal(n);
    line.at
}

impl Out for Block<'_> {
    #[inline(always)]
    fn put<const N: usize>(&mut self, s: &[u8; N]) {
        const { assert!(N <= SLACK) };
        let at = self.at();
        self.w[at..at + N].copy_from_slice(s);
        self.pos += N;
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        let at = self.at();
        self.w[at] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn slice(&mut self, s: &[u8]) {
        let (at, n) = (self.at(), s.len());
        if n <= SLACK {
            copy_short(&mut self.w[at..at + n], s);
        } else if let Some(d) = self.w.get_mut(at..at + n) {
            d.copy_from_slice(s);
        }
        self.pos += n;
    }

    #[inline(always)]
    fn escaped(&mut self, s: &[u8]) {
        let at = self.at();
        self.pos += block_escaped(&mut self.w[..], at, s) - at;
    }

    #[inline(always)]
    fn long_decimal(&mut self, n: u64) {
        let at = self.at();
        self.pos += block_long_decimal(&mut self.w[..], at, n) - at;
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

/// The timestamp texts of the current second, made once per second per core, and
/// the milliseconds into it, from the monotonic stamp each request already has.
#[derive(Default)]
struct LogClock {
    /// When (monotonic) the current wall-clock second began.
    start: Cell<Stamp>,
    /// That second, in seconds since the epoch (zero: not read yet).
    second: Cell<u64>,
    /// `2026-11-27T16:40:01` (JSON, UTC; milliseconds and `Z` added per line).
    json: Cell<[u8; 19]>,
    /// `27/Nov/2026:16:40:01 +0000` (combined).
    combined: Cell<[u8; 26]>,
}

impl LogClock {
    /// Sets the clock to the second of `at` (the texts of [`LogClock::json`] and
    /// [`LogClock::combined`]) and returns the milliseconds into it. Within the
    /// second the clock was last set to, that is the monotonic time since its
    /// start; past it, the wall clock is read again (so that a step of the wall
    /// clock shows within a second).
    #[inline]
    fn millis(&self, at: Stamp) -> u32 {
        let since = at.nanos_since(self.start.get());
        if since < 1_000_000_000 && self.second.get() != 0 {
            return (since / 1_000_000) as u32;
        }
        let (mono, wall) = Stamp::with_wall();
        self.set(at, mono, wall)
    }

    /// [`LogClock::millis`] with the wall clock read as `wall` (ns since the
    /// epoch) at `mono`.
    #[inline(never)]
    fn set(&self, at: Stamp, mono: Stamp, wall: u64) -> u32 {
        let wall = wall + at.nanos_since(mono);
        let into = wall % 1_000_000_000;
        self.start.set(mono.plus(at.nanos_since(mono)).minus(into));
        let secs = wall / 1_000_000_000;
        if self.second.get() != secs || secs == 0 {
            self.make_texts(secs);
        }
        (into / 1_000_000) as u32
    }

    fn make_texts(&self, secs: u64) {
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

    /// `2026-11-27T16:40:01` (the line adds `.123Z`).
    fn json(&self) -> [u8; 19] {
        self.json.get()
    }

    /// `27/Nov/2026:16:40:01 +0000`
    fn combined(&self) -> [u8; 26] {
        self.combined.get()
    }
}

/// Everything a line says about one request.
pub struct Record<'a> {
    /// The fields from the request head.
    pub req: Fields<'a>,
    /// The client's IP address as text, and as `ip:port` (`[ip]:port` for IPv6).
    pub client_ip: &'a [u8],
    pub client: &'a [u8],
    /// The listener's name as a JSON string ([`json_string`]), and the route's
    /// and the cluster's fields with their keys (`,"route":"api"`: [`json_field`],
    /// or [`NO_ROUTE`] and [`NO_CLUSTER`]), made when the configuration is
    /// compiled, not escaped per line.
    pub listener: &'a [u8],
    pub route: &'a [u8],
    pub cluster: &'a [u8],
    /// The endpoint's address as a JSON string, or `null`.
    pub endpoint: &'a [u8],
    /// 0: no response was sent.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_ns: u64,
    pub upstream_ns: Option<u64>,
    pub attempts: u8,
    pub flags: Flags,
    /// The connection's TLS, on TLS listeners.
    pub tls: Option<&'a TlsInfo>,
    /// When the request ended (the line's time).
    pub end: Stamp,
}

/// The route field of a request that matched none.
pub const NO_ROUTE: &[u8] = b",\"route\":null";
/// The cluster field of a request that was not forwarded.
pub const NO_CLUSTER: &[u8] = b",\"cluster\":null";

/// `,"key":"value"` (the value escaped): made once per configuration for the
/// fields every line carries.
pub fn json_field(key: &str, value: &str) -> Box<[u8]> {
    let mut field = format!(",\"{key}\":").into_bytes();
    field.extend_from_slice(&json_string(value));
    field.into_boxed_slice()
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

/// The block size of the escape check ([`escape_mask`]).
const PAD: usize = 16;

/// A value in the buffer it was read into (or a copy of it): `buf[start..][..len]`.
/// The buffer around the value lets a short one be checked in one block of sixteen
/// bytes that ends with it, without a loop over its tail (a request head is longer
/// than sixteen bytes).
#[derive(Clone, Copy)]
pub struct Val<'a> {
    buf: &'a [u8],
    start: u32,
    len: u32,
}

impl<'a> Val<'a> {
    #[inline]
    pub fn new(buf: &'a [u8], span: Span) -> Option<Val<'a>> {
        if span.start as usize + span.len as usize > buf.len() {
            return None;
        }
        Some(Val {
            buf,
            start: span.start,
            len: span.len,
        })
    }

    /// A value that is a whole buffer.
    pub fn of(buf: &'a [u8]) -> Val<'a> {
        Val {
            buf,
            start: 0,
            len: buf.len() as u32,
        }
    }

    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        &self.buf[self.start as usize..][..self.len as usize]
    }

    /// Whether no byte needs escaping (in JSON, and in the combined format alike),
    /// checked sixteen bytes at a time in blocks of the buffer.
    #[inline(always)]
    fn is_clean(&self) -> bool {
        let (start, n) = (self.start as usize, self.len as usize);
        let end = start + n;
        if n <= PAD {
            // The sixteen bytes ending with the value, or the buffer's first sixteen.
            let from = end.saturating_sub(PAD);
            self.buf
                .get(from..)
                .and_then(|b| b.first_chunk::<PAD>())
                .is_some_and(|block| (escape_mask(block) >> (start - from)) & ((1 << n) - 1) == 0)
        } else {
            json_clean_len(self.bytes()) == self.bytes().len()
        }
    }
}

/// The request-side fields of a request's line, as spans of its head. A request
/// without a body leaves its head untouched in the read buffer until its line is
/// written, so the spans point there; a request with a body may have its body read
/// over its head, so that head is copied first, whole, in one piece. One per
/// connection burst, reused by its requests.
pub struct Scratch {
    /// A copy of the request head (when it has a body).
    bytes: Vec<u8>,
    /// The request id the proxy generated (a UUID's text), when it did.
    generated_id: [u8; 36],
    /// Whether the head's spans are in `bytes` (else in the read buffer).
    copied: bool,
    method: Option<Span>,
    host: Option<Span>,
    target: Option<Span>,
    protocol: Option<&'static str>,
    user_agent: Option<Span>,
    referer: Option<Span>,
    traceparent: Option<Span>,
    request_id: Option<Span>,
    /// Whether `request_id` is `generated_id` rather than a span of the head.
    id_generated: bool,
    /// Whether the method is GET.
    get: bool,
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch {
            bytes: Vec::new(),
            generated_id: [0; 36],
            copied: false,
            method: None,
            host: None,
            target: None,
            protocol: None,
            user_agent: None,
            referer: None,
            traceparent: None,
            request_id: None,
            id_generated: false,
            get: false,
        }
    }
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

    /// Notes the fields of the head at the start of `buf`; `request_id_header` is
    /// the configured request id header's (lower-case) name.
    pub fn capture(
        &mut self,
        buf: &[u8],
        head: &RequestHead,
        headers: &[HeaderSpan],
        request_id_header: &str,
    ) {
        self.bytes.clear();
        self.copied = head.has_body();
        if self.copied {
            self.bytes
                .extend_from_slice(buf.get(..head.head_len).unwrap_or(buf));
        }
        self.method = Some(head.method_span);
        self.get = head.method == Method::Get;
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
        self.id_generated = false;
        let id = request_id_header.as_bytes();
        for h in headers.iter().filter(|h| h.kind == HeaderKind::Other) {
            let name = h.name.get(buf);
            let slot = match name.len() {
                10 if folded_eq(name, b"user-agent") => &mut self.user_agent,
                7 if folded_eq(name, b"referer") => &mut self.referer,
                11 if folded_eq(name, b"traceparent") => &mut self.traceparent,
                n if n == id.len() && name.eq_ignore_ascii_case(id) => &mut self.request_id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(h.value);
            }
        }
    }

    /// The protocol the request came in (`HTTP/2.0`: the head captured is the one
    /// the HTTP/2 server wrote for it).
    pub fn set_protocol(&mut self, protocol: &'static str) {
        self.protocol = Some(protocol);
    }

    /// The request id the proxy generated for a request that had none.
    pub fn set_request_id(&mut self, id: &[u8; 36]) {
        if self.request_id.is_none() {
            self.generated_id = *id;
            self.request_id = Some(Span { start: 0, len: 36 });
            self.id_generated = true;
        }
    }

    /// The fields, read from `rbuf` (the read buffer the head was captured from,
    /// untouched since, unless the head was copied) when the line is written.
    #[inline]
    pub fn fields<'a>(&'a self, rbuf: &'a [u8]) -> Fields<'a> {
        Fields {
            head: if self.copied { &self.bytes[..] } else { rbuf },
            s: Some(self),
        }
    }
}

/// A request's fields from its head ([`Scratch::fields`]), each found when asked
/// for (once, as its line is written); all `None` when the head could not be parsed.
#[derive(Clone, Copy, Default)]
pub struct Fields<'a> {
    s: Option<&'a Scratch>,
    /// The buffer the head's spans are in.
    head: &'a [u8],
}

impl<'a> Fields<'a> {
    #[inline(always)]
    fn val(&self, span: impl Fn(&Scratch) -> Option<Span>) -> Option<Val<'a>> {
        Val::new(self.head, span(self.s?)?)
    }
    #[inline(always)]
    pub fn method(&self) -> Option<Val<'a>> {
        self.val(|s| s.method)
    }
    #[inline(always)]
    pub fn host(&self) -> Option<Val<'a>> {
        self.val(|s| s.host)
    }
    /// The request-target as received (path and query).
    #[inline(always)]
    pub fn target(&self) -> Option<Val<'a>> {
        self.val(|s| s.target)
    }
    /// `HTTP/1.1`, `HTTP/1.0`; `None` when unknown.
    #[inline(always)]
    pub fn protocol(&self) -> Option<&'static str> {
        self.s?.protocol
    }
    #[inline(always)]
    pub fn user_agent(&self) -> Option<Val<'a>> {
        self.val(|s| s.user_agent)
    }
    #[inline(always)]
    pub fn referer(&self) -> Option<Val<'a>> {
        self.val(|s| s.referer)
    }
    #[inline(always)]
    pub fn traceparent(&self) -> Option<Val<'a>> {
        self.val(|s| s.traceparent)
    }
    #[inline(always)]
    pub fn request_id(&self) -> Option<Val<'a>> {
        let s = self.s?;
        match s.id_generated {
            true => Val::new(&s.generated_id, s.request_id?),
            false => Val::new(self.head, s.request_id?),
        }
    }

    /// The request id the proxy generated, when it did (a UUID's text).
    #[inline(always)]
    fn generated_id(&self) -> Option<&'a [u8; 36]> {
        self.s.filter(|s| s.id_generated).map(|s| &s.generated_id)
    }

    /// Whether the method is GET.
    #[inline(always)]
    fn is_get(&self) -> bool {
        self.s.is_some_and(|s| s.get)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bit `i` set: byte `i` of the block cannot stand in a JSON string as it is (see
/// [`json_clean_len`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn escape_mask(block: &[u8; PAD]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, and the load reads the sixteen
    // bytes of `block` (unaligned loads allowed).
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        // Signed: below 0x20, and every byte over 0x7f.
        let low = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        let del = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let bad = _mm_or_si128(_mm_or_si128(low, del), _mm_or_si128(quote, backslash));
        _mm_movemask_epi8(bad) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn escape_mask(block: &[u8; PAD]) -> u32 {
    let mut bad = 0;
    for (i, &b) in block.iter().enumerate() {
        bad |= u32::from(NEEDS_ESCAPE[usize::from(b)]) << i;
    }
    bad
}

/// How many bytes at the start of `s` a JSON string can hold as they are: every
/// byte outside printable ASCII, `"` and `\` is escaped (bytes over 0x7f as
/// `\u00XX`, so a line is valid JSON whatever bytes a header held). Checked in
/// blocks of sixteen ([`escape_mask`]), the last one overlapping the one before it
/// (a value shorter than a block is copied into one first).
#[inline]
fn json_clean_len(s: &[u8]) -> usize {
    let n = s.len();
    let Some(last) = s.last_chunk::<PAD>() else {
        let mut block = [b'a'; PAD];
        block[..n].copy_from_slice(s);
        return (escape_mask(&block).trailing_zeros() as usize).min(n);
    };
    let mut at = 0;
    loop {
        if at + PAD >= n {
            // The last block's first `at + PAD - n` bytes are checked already.
            let bad = escape_mask(last) >> (at + PAD - n);
            return match bad {
                0 => n,
                _ => at + bad.trailing_zeros() as usize,
            };
        }
        // (Always a whole block here; were it not, the caller's byte loop would
        // take over from `at`.)
        let Some(block) = s[at..].first_chunk::<PAD>() else {
            return at;
        };
        let bad = escape_mask(block);
        if bad != 0 {
            return at + bad.trailing_zeros() as usize;
        }
        at += PAD;
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
pub fn json_line(line: &mut Line<'_>, time: &[u8; 19], ms: u32, r: &Record<'_>) {
    let room = line.buf.get_mut(line.at..);
    if let Some(w) = room.and_then(|b| b.first_chunk_mut::<{ BLOCK + SLACK }>()) {
        let mut block = Block { w, pos: 0 };
        json_fields(&mut block, time, ms, r);
        if block.fits() {
            line.at += block.pos;
            return;
        }
    }
    // Near the end of the buffer, or longer than a block (written again: a line of
    // kilobytes, rare). (A local `Line`, so that its position stays in a register.)
    let mut out = Line {
        buf: &mut *line.buf,
        at: line.at,
    };
    json_fields(&mut out, time, ms, r);
    line.at = out.at;
}

/// The fields of one JSON line.
#[inline(always)]
fn json_fields<O: Out>(out: &mut O, time: &[u8; 19], ms: u32, r: &Record<'_>) {
    out.put(b"{\"time\":\"");
    out.put(time);
    // `.123Z"` (the milliseconds are under 1000).
    let ms = ms.min(999);
    let pair = 2 * (ms % 100) as usize;
    out.put(&[
        b'.',
        b'0' + (ms / 100) as u8,
        DIGIT_PAIRS[pair],
        DIGIT_PAIRS[pair + 1],
        b'Z',
        b'"',
    ]);
    out.put(b",\"request_id\":");
    match r.req.generated_id() {
        // (The proxy's: hexadecimal digits and dashes, nothing to escape.)
        Some(id) => {
            out.byte(b'"');
            out.put(id);
            out.byte(b'"');
        }
        None => out.quoted(r.req.request_id()),
    }
    out.put(b",\"client\":\"");
    out.slice(r.client);
    out.put(b"\",\"listener\":");
    out.slice(r.listener);
    out.slice(r.route);
    out.slice(r.cluster);
    out.put(b",\"endpoint\":");
    out.slice(r.endpoint);
    // (Most requests are GETs: one constant piece. A method needs no escaping,
    // being a token; nor does a host the parser accepted.)
    if r.req.is_get() {
        out.put(b",\"method\":\"GET\",\"host\":");
    } else {
        out.put(b",\"method\":");
        out.clean(r.req.method());
        out.put(b",\"host\":");
    }
    out.clean(r.req.host());
    out.put(b",\"path\":");
    out.quoted(r.req.target());
    // (Neighbouring constant pieces as one; an HTTP/1.1 200, most lines, as one.)
    match (r.req.protocol(), r.status) {
        (Some("HTTP/1.1"), 200) => {
            out.put(b",\"protocol\":\"HTTP/1.1\",\"status\":200,\"request_bytes\":")
        }
        (protocol, status) => {
            match protocol {
                Some("HTTP/1.1") => out.put(b",\"protocol\":\"HTTP/1.1\",\"status\":"),
                Some(p) => {
                    out.put(b",\"protocol\":\"");
                    out.slice(p.as_bytes());
                    out.put(b"\",\"status\":");
                }
                None => out.put(b",\"protocol\":null,\"status\":"),
            }
            out.decimal(u64::from(status));
            out.put(b",\"request_bytes\":");
        }
    }
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
    if r.attempts == 1 && r.flags.is_empty() {
        // (Most lines: one attempt, nothing to flag.)
        out.put(b",\"attempts\":1,\"flags\":\"-\",\"user_agent\":");
    } else if r.flags.is_empty() {
        out.put(b",\"attempts\":");
        out.decimal(u64::from(r.attempts));
        out.put(b",\"flags\":\"-\",\"user_agent\":");
    } else {
        out.put(b",\"attempts\":");
        out.decimal(u64::from(r.attempts));
        out.put(b",\"flags\":\"");
        for (i, name) in r.flags.names().enumerate() {
            if i > 0 {
                out.byte(b',');
            }
            out.slice(name.as_bytes());
        }
        out.put(b"\",\"user_agent\":");
    }
    out.quoted(r.req.user_agent());
    out.put(b",\"traceparent\":");
    out.quoted(r.req.traceparent());
    if let Some(tls) = r.tls {
        tls_fields(out, tls);
    }
    out.put(b"}\n");
}

/// The TLS fields of a line from a TLS connection (plain connections' lines have
/// none).
#[inline(never)]
fn tls_fields<O: Out>(out: &mut O, tls: &TlsInfo) {
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
    match (r.req.method(), r.req.target(), r.req.protocol()) {
        (Some(m), Some(t), Some(p)) => {
            out.combined_val(m);
            out.byte(b' ');
            out.combined_val(t);
            out.byte(b' ');
            out.slice(p.as_bytes());
        }
        _ => out.byte(b'-'),
    }
    out.put(b"\" ");
    out.decimal(u64::from(r.status));
    out.byte(b' ');
    out.decimal(r.response_bytes);
    for v in [r.req.referer(), r.req.user_agent()] {
        out.put(b" \"");
        match v {
            Some(v) => out.combined_val(v),
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
        format(4096, |l| json_line(l, b"2026-11-27T16:40:01", 123, r))
    }

    /// A request's fields with any bytes as values, as `Scratch::capture` would
    /// keep them (and bytes before and after, as in a read buffer).
    fn scratch(ua: Option<&[u8]>) -> Scratch {
        let mut s = Scratch {
            copied: true,
            protocol: Some("HTTP/1.1"),
            ..Scratch::default()
        };
        let mut put = |v: &[u8]| {
            let start = s.bytes.len() as u32;
            s.bytes.extend_from_slice(v);
            s.bytes.extend_from_slice(b"\r\n");
            Some(Span {
                start,
                len: v.len() as u32,
            })
        };
        let (method, target, host) = (put(b"GET"), put(b"/x?y=1"), put(b"example.com"));
        let (user_agent, request_id) = (ua.and_then(&mut put), put(b"abc"));
        s.method = method;
        s.target = target;
        s.host = host;
        s.user_agent = user_agent;
        s.request_id = request_id;
        s
    }

    fn record(s: &Scratch) -> Record<'_> {
        Record {
            req: s.fields(&[]),
            client_ip: b"127.0.0.1",
            client: b"127.0.0.1:5000",
            listener: b"\"edge\"",
            route: b",\"route\":\"api\"",
            cluster: b",\"cluster\":\"web\"",
            endpoint: b"\"10.0.0.1:80\"",
            status: 200,
            request_bytes: 78,
            response_bytes: 1234,
            duration_ns: 1_234_567,
            upstream_ns: Some(999_000),
            attempts: 1,
            flags: Flags::default(),
            tls: None,
            end: Stamp::default(),
        }
    }

    /// `v` quoted by the reference byte loop (`Line::json_or_null`).
    fn reference(v: &[u8]) -> Vec<u8> {
        format(1, |l| l.json_or_null(Some(v)))
    }

    #[test]
    fn values_are_checked_in_blocks_of_their_buffer_like_the_byte_loop() {
        // Every byte value at every place of values of every length up to three
        // blocks, at the start of their buffer (a short value's block is the
        // buffer's first sixteen bytes) and after other bytes (its block ends with
        // it), with a byte needing escape just before and just after the value.
        for len in 0..=48usize {
            for lead in [0usize, 3, 16, 21] {
                for b in 0..=255u8 {
                    for at in 0..len.max(1) {
                        let mut value = vec![b'a'; len];
                        if len > 0 {
                            value[at] = b;
                        }
                        let mut buf = vec![b'"'; lead];
                        buf.extend_from_slice(&value);
                        buf.extend_from_slice(b"\x01\"");
                        buf.resize(buf.len().max(PAD), b'\\');
                        let span = Span {
                            start: lead as u32,
                            len: len as u32,
                        };
                        let val = Val::new(&buf, span).unwrap();
                        let want = reference(&value);
                        let got = format(1, |l| l.quoted(Some(val)));
                        assert_eq!(got, want, "{b:#x} at {at} of {len} after {lead}");
                        let combined = format(1, |l| l.combined_val(val));
                        let nginx = format(1, |l| l.combined(&value));
                        assert_eq!(combined, nginx, "combined: {b:#x} at {at} of {len}");
                        let mut w = [0u8; BLOCK + SLACK];
                        let mut block = Block { w: &mut w, pos: 0 };
                        block.quoted(Some(val));
                        let end = block.pos;
                        assert_eq!(&w[..end], &want[..], "block: {b:#x} at {at} of {len}");
                    }
                }
            }
        }
        assert_eq!(format(1, |l| l.quoted(None)), b"null");
    }

    #[test]
    fn a_line_in_a_block_is_the_line_written_piece_by_piece() {
        let info = TlsInfo {
            version: "TLSv1.2",
            cipher: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            sni: Some("\u{7f}\"".repeat(40).into()),
            alpn: Some("h2".into()),
            client_subject: Some("\\".repeat(100).into()),
            client_cert_line: Box::default(),
        };
        let hostile: Vec<u8> = (0..=255).cycle().take(700).collect();
        // Escaped, over a block: written into the block (round and over itself),
        // then again with checks.
        let long: Vec<u8> = hostile.iter().copied().cycle().take(2_000).collect();
        let mut longest = 0;
        for ua in [
            None,
            Some(&b"x"[..]),
            Some(&hostile[..]),
            Some(&hostile[..66]),
            Some(&long[..]),
        ] {
            let s = scratch(ua);
            let mut r = record(&s);
            for variant in 0..4 {
                match variant {
                    1 => {
                        r.tls = Some(&info);
                        for (f, _) in Flags::NAMES {
                            r.flags.set(f);
                        }
                    }
                    2 => {
                        (r.status, r.attempts) = (0, u8::MAX);
                        (r.request_bytes, r.response_bytes) = (u64::MAX, u64::MAX);
                        (r.duration_ns, r.upstream_ns) = (u64::MAX, Some(u64::MAX));
                    }
                    3 => (r.route, r.cluster, r.endpoint) = (NO_ROUTE, NO_CLUSTER, b"null"),
                    _ => {}
                }
                // Piece by piece: a buffer too small for a block.
                let want = format(BLOCK, |l| json_line(l, b"2026-11-27T16:40:01", 123, &r));
                let mut buf = vec![0u8; 4 * BLOCK + SLACK];
                let mut line = Line::new(&mut buf);
                json_line(&mut line, b"2026-11-27T16:40:01", 123, &r);
                let end = line.end();
                assert_eq!(&buf[..end], &want[..]);
                longest = longest.max(want.len());
                let _: serde_json::Value = serde_json::from_slice(&want).unwrap();
            }
        }
        assert!(
            longest > BLOCK + SLACK,
            "no line longer than a block: {longest}"
        );
    }

    #[test]
    fn fields_of_a_request_without_a_body_are_read_from_its_buffer_and_with_one_copied() {
        let limits = crate::config::Limits::default();
        let mut headers = Vec::new();
        let get = b"GET /a HTTP/1.1\r\nHost: h.example\r\nUser-Agent: UA\r\n\r\n".to_vec();
        let head = parse_request(&get, &limits, &mut headers).unwrap().unwrap();
        let mut s = Scratch::default();
        s.capture(&get, &head, &headers, "x-request-id");
        assert!(!s.copied);
        let f = s.fields(&get);
        assert_eq!(f.user_agent().unwrap().bytes(), b"UA");
        assert_eq!(f.host().unwrap().bytes(), b"h.example");
        let post =
            b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-Request-Id: id7\r\n\r\nhi";
        let mut rbuf = post.to_vec();
        let head = parse_request(&rbuf, &limits, &mut headers)
            .unwrap()
            .unwrap();
        s.capture(&rbuf, &head, &headers, "x-request-id");
        s.set_request_id(b"00000000-0000-4000-8000-000000000000");
        assert!(s.copied);
        // The body relay reuses the buffer: the copy still says what came.
        rbuf.fill(b'#');
        let f = s.fields(&rbuf);
        assert_eq!(f.method().unwrap().bytes(), b"POST");
        assert_eq!(f.target().unwrap().bytes(), b"/b");
        assert_eq!(f.request_id().unwrap().bytes(), b"id7");
        assert!(f.generated_id().is_none());
        assert!(!f.is_get());
        s.capture(
            &get,
            &parse_request(&get, &limits, &mut headers).unwrap().unwrap(),
            &headers,
            "x-request-id",
        );
        s.set_request_id(b"0123abcd-0000-4000-8000-000000000001");
        let f = s.fields(&get);
        assert!(f.is_get());
        assert_eq!(
            f.generated_id(),
            Some(b"0123abcd-0000-4000-8000-000000000001")
        );
        assert_eq!(
            f.request_id().unwrap().bytes(),
            b"0123abcd-0000-4000-8000-000000000001"
        );
        assert!(Fields::default().method().is_none());
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let hostile: &[u8] = b"a\"b\\c\x01\x7f\xff\xc3\xa9 d";
        let s = scratch(Some(hostile));
        let out = json(&record(&s));
        // The pieces for a 200 and for one attempt without flags say what the
        // figures written out say.
        let text = |r: &Record<'_>| String::from_utf8(json(r)).unwrap();
        let mut other = record(&s);
        other.status = 201;
        assert_eq!(
            text(&other).replace("\"status\":201", "\"status\":200"),
            text(&record(&s))
        );
        other = record(&s);
        other.attempts = 2;
        assert_eq!(
            text(&other).replace("\"attempts\":2", "\"attempts\":1"),
            text(&record(&s))
        );
        // A GET's constant piece says what the method's span says.
        let mut get = scratch(Some(hostile));
        get.get = true;
        assert_eq!(json(&record(&get)), out);
        // A generated id is written as it is.
        let mut generated = scratch(Some(hostile));
        generated.request_id = None;
        generated.set_request_id(b"0123abcd-0000-4000-8000-0123456789ab");
        let v: serde_json::Value = serde_json::from_slice(&json(&record(&generated))).unwrap();
        assert_eq!(v["request_id"], "0123abcd-0000-4000-8000-0123456789ab");
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
        // Every byte value at every place of values shorter than a block, one block,
        // and two and three blocks (the last one overlapping), for the block scan.
        for len in 1..=40 {
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
        let s = scratch(None);
        let mut r = record(&s);
        let peer = crate::http::rewrite::Peer::of("[::1]:8080".parse().unwrap());
        r.client = peer.addr_text();
        let v: serde_json::Value = serde_json::from_slice(&json(&r)).unwrap();
        assert_eq!(v["client"], "[::1]:8080");
    }

    #[test]
    fn combined_lines_look_like_nginx() {
        let s = scratch(Some(b"curl/8 \"x\""));
        let mut r = record(&s);
        r.flags.set(Flags::NO_ROUTE);
        let out = format(16, |l| combined_line(l, b"27/Nov/2026:16:40:01 +0000", &r));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "127.0.0.1 - - [27/Nov/2026:16:40:01 +0000] \"GET /x?y=1 HTTP/1.1\" 200 1234 \"-\" \"curl/8 \\x22x\\x22\"\n"
        );
    }

    #[test]
    fn tls_connections_add_their_fields() {
        let s = scratch(None);
        let plain: serde_json::Value = serde_json::from_slice(&json(&record(&s))).unwrap();
        assert!(plain.get("tls_version").is_none());
        let info = TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            sni: Some("a.example.com".into()),
            alpn: Some("http/1.1".into()),
            client_subject: Some("CN=\"x\", O=y".into()),
            client_cert_line: Box::default(),
        };
        let mut r = record(&s);
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
        let s = scratch(Some(&long));
        let mut r = record(&s);
        r.flags.set(Flags::NO_ROUTE);
        r.flags.set(Flags::UPSTREAM_TIMEOUT);
        // Room for part of the line only: written again into a larger buffer.
        let out = format(100, |l| json_line(l, b"2026-11-27T16:40:01", 123, &r));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_agent"].as_str().unwrap().len(), 10_000);
        assert_eq!(v["flags"], "NR,UT");
        assert_eq!(out, json(&r));
    }

    #[test]
    fn clock_texts_and_milliseconds() {
        let c = LogClock::default();
        // The wall clock read 2026-11-27T16:40:01.123456789Z at monotonic 50 s; the
        // request ended 2 ms before.
        let wall = 1_795_797_601_123_456_789;
        let mono = Stamp::ZERO.plus(50_000_000_000);
        let end = mono.minus(2_000_000);
        assert_eq!(c.set(end, mono, wall), 123);
        assert_eq!(&c.json(), b"2026-11-27T16:40:01");
        assert_eq!(&c.combined(), b"27/Nov/2026:16:40:01 +0000");
        // The second began 123.456789 ms before `mono`; later stamps in it are read
        // without the wall clock.
        assert_eq!(c.millis(mono.plus(876_543_210)), 999);
        assert_eq!(&c.json(), b"2026-11-27T16:40:01");
        // The next second: read again (now the real clock).
        let later = c.millis(mono.plus(876_543_211));
        assert!(later < 1000);
        assert_ne!(&c.json(), b"2026-11-27T16:40:01");
        // A line's time.
        let s = scratch(None);
        let out = format(100, |l| {
            json_line(l, b"2026-11-27T16:40:01", 7, &record(&s))
        });
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2026-11-27T16:40:01.007Z");
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
        let s = scratch(None);
        log.write(&record(&s), &dropped);
        log.flush(&dropped); // fills the queue of one
        log.write(&record(&s), &dropped);
        log.write(&record(&s), &dropped);
        log.flush(&dropped); // nobody reads: dropped
        assert_eq!(dropped.get(), 2);
    }
}
