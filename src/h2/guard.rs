//! A watch over an HTTP/2 connection's frames, below the `h2` crate: the adapter
//! ([`super::io::H2Io`]) shows it every byte read and written, and it follows the
//! frame headers (9 bytes each; payloads are skipped, not copied).
//!
//! Incoming, it keeps budgets per 10-second window against the floods h2 does not
//! stop by itself (h2 bounds their memory, not their rate): PING, SETTINGS (and
//! their entries), PRIORITY, WINDOW_UPDATE beyond what the data we send explains,
//! empty non-final DATA frames, and streams reset by the client right after opening
//! them (Rapid Reset, CVE-2023-44487). A breach is noted in the shared
//! [`GuardState`], and the connection's task, woken at once, answers with GOAWAY
//! `ENHANCE_YOUR_CALM` (`super::server`).
//!
//! It also enforces the frame lengths each type allows, and the largest initial
//! window size, with the error codes RFC 9113 gives (FRAME_SIZE_ERROR,
//! FLOW_CONTROL_ERROR), where h2 would answer PROTOCOL_ERROR: the offending frame
//! is held back from h2 and the connection is sent GOAWAY with that code.
//!
//! Outgoing, it notes the GOAWAY frames sent (error code and debug data), so that
//! the GOAWAYs h2 sends on its own (its CONTINUATION, header-list and reset limits,
//! protocol errors) are counted by reason: h2 reports them without their debug data.

use crate::clock::Moment;
use std::cell::Cell;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Duration;

/// The connection preface a server reads first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Length of the window the incoming budgets count over.
const WINDOW: Duration = Duration::from_secs(10);

/// Incoming budgets per window. PING and SETTINGS are cheap to send and each costs
/// the server an answer; clients send a handful.
const MAX_PINGS: u32 = 100;
const MAX_SETTINGS: u32 = 100;
const MAX_SETTINGS_ENTRIES: u32 = 1000;
/// PRIORITY frames: this many, plus `PRIORITY_PER_STREAM` per stream opened.
const MAX_PRIORITY: u32 = 100;
const PRIORITY_PER_STREAM: u32 = 10;
/// WINDOW_UPDATE frames: this many, plus `WINDOW_UPDATES_PER_DATA` per DATA frame
/// sent (Envoy's default ratio).
const MAX_WINDOW_UPDATES: u32 = 1000;
const WINDOW_UPDATES_PER_DATA: u32 = 10;
/// Empty DATA frames without END_STREAM.
const MAX_EMPTY_DATA: u32 = 100;
/// Client resets: a breach once there are this many in a window and they reset
/// more than half the streams opened in it.
const MIN_RESETS: u32 = 100;

/// Why a connection was sent GOAWAY (`ringway_h2_goaway_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GoawayReason {
    /// A graceful one: drain, reload, idle timeout.
    Shutdown,
    RapidReset,
    PingFlood,
    SettingsFlood,
    PriorityFlood,
    WindowUpdateFlood,
    EmptyFrames,
    /// h2's own limits: CONTINUATION frames, header list size, resets it counts.
    ContinuationFlood,
    HeaderListTooLarge,
    TooManyResets,
    ProtocolError,
    FlowControlError,
    FrameSizeError,
    CompressionError,
    /// Frames on a stream the client had ended (the guard's).
    StreamClosed,
    Other,
}

impl GoawayReason {
    pub const ALL: [GoawayReason; 16] = [
        GoawayReason::Shutdown,
        GoawayReason::RapidReset,
        GoawayReason::PingFlood,
        GoawayReason::SettingsFlood,
        GoawayReason::PriorityFlood,
        GoawayReason::WindowUpdateFlood,
        GoawayReason::EmptyFrames,
        GoawayReason::ContinuationFlood,
        GoawayReason::HeaderListTooLarge,
        GoawayReason::TooManyResets,
        GoawayReason::ProtocolError,
        GoawayReason::FlowControlError,
        GoawayReason::FrameSizeError,
        GoawayReason::CompressionError,
        GoawayReason::StreamClosed,
        GoawayReason::Other,
    ];

    /// The GOAWAY error code for a breach the guard found.
    pub fn code(self) -> h2::Reason {
        match self {
            GoawayReason::FrameSizeError => h2::Reason::FRAME_SIZE_ERROR,
            GoawayReason::FlowControlError => h2::Reason::FLOW_CONTROL_ERROR,
            GoawayReason::StreamClosed => h2::Reason::STREAM_CLOSED,
            _ => h2::Reason::ENHANCE_YOUR_CALM,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            GoawayReason::Shutdown => "shutdown",
            GoawayReason::RapidReset => "rapid_reset",
            GoawayReason::PingFlood => "ping_flood",
            GoawayReason::SettingsFlood => "settings_flood",
            GoawayReason::PriorityFlood => "priority_flood",
            GoawayReason::WindowUpdateFlood => "window_update_flood",
            GoawayReason::EmptyFrames => "empty_frames",
            GoawayReason::ContinuationFlood => "continuation_flood",
            GoawayReason::HeaderListTooLarge => "header_list_too_large",
            GoawayReason::TooManyResets => "too_many_resets",
            GoawayReason::ProtocolError => "protocol_error",
            GoawayReason::FlowControlError => "flow_control_error",
            GoawayReason::FrameSizeError => "frame_size_error",
            GoawayReason::CompressionError => "compression_error",
            GoawayReason::StreamClosed => "stream_closed",
            GoawayReason::Other => "other",
        }
    }

    /// The reason of a GOAWAY frame as sent: its error code and debug data.
    pub fn of_frame(code: u32, debug: &[u8]) -> GoawayReason {
        match (code, debug) {
            (0, _) => GoawayReason::Shutdown,
            (_, b"too_many_continuations") => GoawayReason::ContinuationFlood,
            (_, b"header_list_way_too_large") => GoawayReason::HeaderListTooLarge,
            (_, b"too_many_resets" | b"too_many_internal_resets") => GoawayReason::TooManyResets,
            (_, b"too_many_data_frames") => GoawayReason::EmptyFrames,
            (1, _) => GoawayReason::ProtocolError,
            (3, _) => GoawayReason::FlowControlError,
            (6, _) => GoawayReason::FrameSizeError,
            (9, _) => GoawayReason::CompressionError,
            (5, _) => GoawayReason::StreamClosed,
            _ => GoawayReason::Other,
        }
    }
}

/// What the guard found, read by the connection's task.
#[derive(Default)]
pub struct GuardState {
    /// A budget was exceeded: answer with GOAWAY ENHANCE_YOUR_CALM.
    pub breach: Cell<Option<GoawayReason>>,
    /// The reason of the first GOAWAY frame written (not of a graceful
    /// shutdown's: a later one may follow it).
    pub goaway_sent: Cell<Option<GoawayReason>>,
}

/// Follows a byte stream's frame headers; `capture` frames of one type keep their
/// first payload bytes.
struct Scanner {
    /// Preface bytes still to skip.
    preface: usize,
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
    /// The current frame is being captured.
    capturing: bool,
    captured: [u8; 96],
    captured_len: usize,
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Scanner {
    fn new(preface: usize) -> Scanner {
        Scanner {
            preface,
            head: [0; 9],
            have: 0,
            skip: 0,
            capturing: false,
            captured: [0; 96],
            captured_len: 0,
        }
    }

    /// Follows `bytes`: `on_head` for each frame header completed, `on_capture` at
    /// the end of each frame of type `capture` with its first payload bytes. When
    /// either returns `true` the scan stops, and returns where that frame starts in
    /// `bytes` (0 when it started in an earlier part): the bytes from there on
    /// must not reach the codec.
    fn scan(
        &mut self,
        mut bytes: &[u8],
        capture: Option<u8>,
        on_head: &mut impl FnMut(Frame) -> bool,
        on_capture: &mut impl FnMut(&[u8]) -> bool,
    ) -> Option<usize> {
        let total = bytes.len();
        // Where the current frame starts, counted from the end of `bytes`.
        let mut frame_end_offset = None::<usize>;
        let cut = |left: Option<usize>| left.map_or(0, |l| total - l);
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                if self.capturing {
                    let room = self.captured.len() - self.captured_len;
                    let c = n.min(room);
                    self.captured[self.captured_len..self.captured_len + c]
                        .copy_from_slice(&bytes[..c]);
                    self.captured_len += c;
                }
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 && self.capturing {
                    self.capturing = false;
                    if on_capture(&self.captured[..self.captured_len]) {
                        return Some(cut(frame_end_offset));
                    }
                }
                continue;
            }
            if self.have == 0 {
                frame_end_offset = Some(bytes.len());
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < 9 {
                break;
            }
            self.have = 0;
            let h = &self.head;
            let frame = Frame {
                len: (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize,
                kind: h[3],
                flags: h[4],
                stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            };
            if on_head(frame) {
                return Some(cut(frame_end_offset));
            }
            self.skip = frame.len;
            self.capturing = capture == Some(frame.kind);
            self.captured_len = 0;
            if self.capturing && frame.len == 0 {
                self.capturing = false;
                if on_capture(&[]) {
                    return Some(cut(frame_end_offset));
                }
            }
        }
        None
    }
}

/// Counts of the current window.
#[derive(Default)]
struct Window {
    ends: Option<Moment>,
    streams: u32,
    resets: u32,
    pings: u32,
    settings: u32,
    settings_entries: u32,
    priority: u32,
    window_updates: u32,
    empty_data: u32,
    data_sent: u32,
}

pub struct Guard {
    pub state: Rc<GuardState>,
    incoming: Scanner,
    outgoing: Scanner,
    window: Window,
    /// Streams the client ended (END_STREAM), most recent last, at most
    /// `ENDED_KEPT`: a DATA or HEADERS frame on one is a STREAM_CLOSED error
    /// (RFC 9113 §5.1), which h2 reports as PROTOCOL_ERROR.
    ended: std::collections::VecDeque<u32>,
    /// Incoming budgets and rules are enforced (not for an upstream's frames).
    checks: bool,
}

/// How many ended streams the guard remembers.
const ENDED_KEPT: usize = 256;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

impl Guard {
    /// The guard of a server connection (the client's preface comes first).
    pub fn server() -> Guard {
        Guard {
            state: Rc::default(),
            incoming: Scanner::new(PREFACE.len()),
            outgoing: Scanner::new(0),
            window: Window::default(),
            ended: std::collections::VecDeque::new(),
            checks: true,
        }
    }

    /// The guard of an upstream connection: it only reads the GOAWAYs written.
    pub fn upstream() -> Guard {
        Guard {
            incoming: Scanner::new(0),
            checks: false,
            ..Guard::server()
        }
    }

    /// Bytes read from the peer. Returns where in `bytes` a frame that breached a
    /// rule starts: it and what follows must not reach the codec (the connection
    /// is answered with GOAWAY instead).
    pub fn saw_incoming(&mut self, bytes: &[u8]) -> Option<usize> {
        let Guard {
            state,
            incoming,
            window,
            ended,
            ..
        } = self;
        if !self.checks {
            return None;
        }
        if state.breach.get().is_some() {
            return Some(0);
        }
        let breach = |reason| {
            state.breach.set(Some(reason));
            true
        };
        incoming.scan(
            bytes,
            Some(SETTINGS),
            &mut |f| {
                let found = frame_size_error(f)
                    .or_else(|| stream_closed(ended, f))
                    .or_else(|| window.count(f));
                match found {
                    Some(reason) => breach(reason),
                    None => false,
                }
            },
            &mut |payload| match settings_error(payload) {
                Some(reason) => breach(reason),
                None => false,
            },
        )
    }

    /// The first `n` bytes of `bufs` were written to the peer.
    pub fn saw_outgoing(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        let Guard {
            state,
            outgoing,
            window,
            ..
        } = self;
        for b in bufs {
            if n == 0 {
                break;
            }
            let part = &b[..b.len().min(n)];
            n -= part.len();
            outgoing.scan(
                part,
                Some(GOAWAY),
                &mut |f| {
                    if f.kind == DATA {
                        window.data_sent = window.data_sent.saturating_add(1);
                    }
                    false
                },
                &mut |payload| {
                    if state.goaway_sent.get().is_some() || payload.len() < 8 {
                        return false;
                    }
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    let reason = GoawayReason::of_frame(code, &payload[8..]);
                    // A graceful shutdown's first GOAWAY may be followed by another.
                    if reason != GoawayReason::Shutdown {
                        state.goaway_sent.set(Some(reason));
                    }
                    false
                },
            );
        }
    }
}

/// A frame whose length its type does not allow (RFC 9113 §6): a connection
/// error FRAME_SIZE_ERROR (for PRIORITY a stream error, which §5.4 lets an
/// endpoint treat as a connection error). h2 would answer these with
/// PROTOCOL_ERROR.
fn frame_size_error(f: Frame) -> Option<GoawayReason> {
    let ok = match f.kind {
        PRIORITY => f.len == 5,
        RST_STREAM | WINDOW_UPDATE => f.len == 4,
        SETTINGS if f.flags & ACK != 0 => f.len == 0,
        SETTINGS => f.len % 6 == 0,
        PING => f.len == 8,
        GOAWAY => f.len >= 8,
        _ => true,
    };
    (!ok).then_some(GoawayReason::FrameSizeError)
}

/// Notes a stream the client ends; a DATA or HEADERS frame on a stream it ended
/// before is a STREAM_CLOSED error.
fn stream_closed(ended: &mut std::collections::VecDeque<u32>, f: Frame) -> Option<GoawayReason> {
    if !matches!(f.kind, DATA | HEADERS) || f.stream == 0 {
        return None;
    }
    if ended.contains(&f.stream) {
        return Some(GoawayReason::StreamClosed);
    }
    if f.flags & END_STREAM != 0 {
        if ended.len() == ENDED_KEPT {
            ended.pop_front();
        }
        ended.push_back(f.stream);
    }
    None
}

/// A SETTINGS frame's values (its first entries, as captured) that are
/// connection errors h2 would report with another code: an initial window size
/// above 2^31-1 is FLOW_CONTROL_ERROR (RFC 9113 §6.5.2).
fn settings_error(payload: &[u8]) -> Option<GoawayReason> {
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    payload
        .chunks_exact(6)
        .any(|e| {
            u16::from_be_bytes([e[0], e[1]]) == INITIAL_WINDOW_SIZE
                && u32::from_be_bytes([e[2], e[3], e[4], e[5]]) > 0x7fff_ffff
        })
        .then_some(GoawayReason::FlowControlError)
}

impl Window {
    /// Counts an incoming frame; the budget it exceeds, if any.
    fn count(&mut self, f: Frame) -> Option<GoawayReason> {
        let checked = matches!(
            f.kind,
            HEADERS | PRIORITY | RST_STREAM | SETTINGS | PING | WINDOW_UPDATE
        ) || (f.kind == DATA && f.len == 0);
        if !checked {
            return None;
        }
        let now = Moment::now();
        match self.ends {
            Some(end) if now < end => {}
            _ => {
                *self = Window {
                    ends: Some(now + WINDOW),
                    ..Window::default()
                }
            }
        }
        let add = |c: &mut u32| {
            *c = c.saturating_add(1);
            *c
        };
        match f.kind {
            HEADERS => {
                add(&mut self.streams);
                None
            }
            RST_STREAM => {
                let resets = add(&mut self.resets);
                (resets >= MIN_RESETS && resets > self.streams / 2)
                    .then_some(GoawayReason::RapidReset)
            }
            PING if f.flags & ACK == 0 => {
                (add(&mut self.pings) > MAX_PINGS).then_some(GoawayReason::PingFlood)
            }
            SETTINGS if f.flags & ACK == 0 => {
                self.settings_entries = self.settings_entries.saturating_add((f.len / 6) as u32);
                (add(&mut self.settings) > MAX_SETTINGS
                    || self.settings_entries > MAX_SETTINGS_ENTRIES)
                    .then_some(GoawayReason::SettingsFlood)
            }
            PRIORITY => {
                let allowed =
                    MAX_PRIORITY.saturating_add(self.streams.saturating_mul(PRIORITY_PER_STREAM));
                (add(&mut self.priority) > allowed).then_some(GoawayReason::PriorityFlood)
            }
            WINDOW_UPDATE => {
                let allowed = MAX_WINDOW_UPDATES
                    .saturating_add(self.data_sent.saturating_mul(WINDOW_UPDATES_PER_DATA));
                (add(&mut self.window_updates) > allowed).then_some(GoawayReason::WindowUpdateFlood)
            }
            DATA if f.flags & END_STREAM == 0 => {
                (add(&mut self.empty_data) > MAX_EMPTY_DATA).then_some(GoawayReason::EmptyFrames)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// Feeds `bytes` to a fresh server guard in pieces of `step` bytes.
    fn feed(bytes: &[u8], step: usize) -> Guard {
        let mut g = Guard::server();
        for piece in bytes.chunks(step) {
            g.saw_incoming(piece);
        }
        g
    }

    #[test]
    fn floods_are_breaches_at_every_split_and_normal_traffic_is_not() {
        let mut normal = PREFACE.to_vec();
        normal.extend(frame(SETTINGS, 0, 0, &[0; 18]));
        for id in (1..400).step_by(2) {
            normal.extend(frame(HEADERS, 0x4, id, &[0x82, 0x84]));
            normal.extend(frame(DATA, END_STREAM, id, b"body"));
            normal.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]));
        }
        normal.extend(frame(PING, 0, 0, &[0; 8]));
        normal.extend(frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
        for step in [1, 7, 9, 24, 4096] {
            assert_eq!(feed(&normal, step).state.breach.get(), None, "step {step}");
        }
        let flood = |kind, flags, payload: &[u8], count, opens: bool| {
            let mut b = PREFACE.to_vec();
            for i in 0..count {
                let id = 2 * i + 1;
                if opens {
                    b.extend(frame(HEADERS, 0x4, id, &[0x82]));
                }
                b.extend(frame(kind, flags, if opens { id } else { 0 }, payload));
            }
            b
        };
        let cases = [
            (flood(PING, 0, &[0; 8], 101, false), GoawayReason::PingFlood),
            (
                flood(SETTINGS, 0, &[], 101, false),
                GoawayReason::SettingsFlood,
            ),
            (
                flood(SETTINGS, 0, &[0; 6006], 1, false),
                GoawayReason::SettingsFlood,
            ),
            (
                flood(PRIORITY, 0, &[0; 5], 101, false),
                GoawayReason::PriorityFlood,
            ),
            (
                flood(WINDOW_UPDATE, 0, &[0, 0, 0, 1], 1001, false),
                GoawayReason::WindowUpdateFlood,
            ),
            (flood(DATA, 0, &[], 101, false), GoawayReason::EmptyFrames),
            (
                flood(RST_STREAM, 0, &[0, 0, 0, 8], 100, true),
                GoawayReason::RapidReset,
            ),
        ];
        for (bytes, reason) in cases {
            for step in [1, 5, 9, 4096] {
                assert_eq!(
                    feed(&bytes, step).state.breach.get(),
                    Some(reason),
                    "step {step}"
                );
            }
        }
        // One fewer than each budget is no breach; ACKs are not counted.
        for (bytes, _) in [
            (flood(PING, 0, &[0; 8], 100, false), ()),
            (flood(PING, ACK, &[0; 8], 500, false), ()),
            (flood(SETTINGS, ACK, &[], 500, false), ()),
            (flood(RST_STREAM, 0, &[0, 0, 0, 8], 99, true), ()),
        ] {
            assert_eq!(feed(&bytes, 4096).state.breach.get(), None);
        }
    }

    #[test]
    fn bad_frame_lengths_and_window_sizes_are_cut_where_their_frame_starts() {
        let with_preface = |mut b: Vec<u8>| {
            let mut all = PREFACE.to_vec();
            all.append(&mut b);
            all
        };
        let cases = [
            // (After the lead frames below: a stream the client ended.)
            (frame(DATA, 0, 1, b"late"), GoawayReason::StreamClosed),
            (frame(HEADERS, 0x5, 3, &[0x40]), GoawayReason::StreamClosed),
            (frame(PING, 0, 0, &[0; 7]), GoawayReason::FrameSizeError),
            (frame(PING, 0, 0, &[0; 9]), GoawayReason::FrameSizeError),
            (frame(SETTINGS, 0, 0, &[0; 7]), GoawayReason::FrameSizeError),
            (
                frame(SETTINGS, ACK, 0, &[0; 6]),
                GoawayReason::FrameSizeError,
            ),
            (
                frame(WINDOW_UPDATE, 0, 0, &[0; 3]),
                GoawayReason::FrameSizeError,
            ),
            (
                frame(RST_STREAM, 0, 1, &[0; 3]),
                GoawayReason::FrameSizeError,
            ),
            (frame(PRIORITY, 0, 1, &[0; 4]), GoawayReason::FrameSizeError),
            (frame(GOAWAY, 0, 0, &[0; 7]), GoawayReason::FrameSizeError),
            (
                frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100, 0, 4, 0x80, 0, 0, 0]),
                GoawayReason::FlowControlError,
            ),
        ];
        let good = [
            frame(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]),
            frame(HEADERS, 0x5, 1, &[0x82]),
            frame(HEADERS, 0x4, 3, &[0x83]),
            frame(DATA, 0x1, 3, b"x"),
        ]
        .concat();
        for (bad, reason) in cases {
            let mut bytes = good.clone();
            bytes.extend_from_slice(&bad);
            bytes.extend(frame(PING, 0, 0, &[0; 8]));
            let all = with_preface(bytes);
            let at = PREFACE.len() + good.len();
            for step in [1, 5, 9, 13, all.len()] {
                let mut g = Guard::server();
                let mut passed = 0;
                for piece in all.chunks(step) {
                    match g.saw_incoming(piece) {
                        Some(cut) => {
                            passed += cut;
                            break;
                        }
                        None => passed += piece.len(),
                    }
                }
                assert_eq!(g.state.breach.get(), Some(reason), "step {step}");
                // Nothing of the bad frame reached the codec whole (at most the
                // part of its header or payload in pieces before the verdict).
                assert!(passed < at + bad.len(), "step {step}: {passed}");
                if step == all.len() {
                    assert_eq!(passed, at, "cut where the frame starts");
                }
                assert_ne!(reason.code(), h2::Reason::ENHANCE_YOUR_CALM);
            }
        }
    }

    #[test]
    fn goaways_sent_are_read_with_their_reason_across_buffers() {
        let mut g = Guard::server();
        let mut out = frame(DATA, 0, 1, &[1; 100]);
        let mut payload = vec![0, 0, 0, 1, 0, 0, 0, 11];
        payload.extend_from_slice(b"too_many_continuations");
        out.extend(frame(GOAWAY, 0, 0, &payload));
        let (a, b) = out.split_at(113);
        g.saw_outgoing(&[IoSlice::new(a), IoSlice::new(b)], out.len() - 3);
        assert_eq!(g.state.goaway_sent.get(), None);
        g.saw_outgoing(&[IoSlice::new(&out[out.len() - 3..])], 3);
        assert_eq!(
            g.state.goaway_sent.get(),
            Some(GoawayReason::ContinuationFlood)
        );
        assert_eq!(g.window.data_sent, 1);
        // A graceful shutdown's GOAWAY (NO_ERROR) is not the reason.
        let mut g = Guard::server();
        let f = frame(GOAWAY, 0, 0, &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        g.saw_outgoing(&[IoSlice::new(&f)], f.len());
        assert_eq!(g.state.goaway_sent.get(), None);
        let f = frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 1]);
        g.saw_outgoing(&[IoSlice::new(&f)], f.len());
        assert_eq!(g.state.goaway_sent.get(), Some(GoawayReason::ProtocolError));
    }
}
