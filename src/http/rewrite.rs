//! Writes the heads the proxy sends: the request head upstream and the response head
//! downstream. Hop-by-hop headers are dropped (RFC 9110 §7.6.1), framing headers are
//! re-emitted from the parsed framing (one Content-Length or `chunked`, RFC 9112 §6),
//! X-Forwarded-* and the request id are set, and route header edits applied.
//! Pure: bytes in, bytes appended to a reused buffer.

use crate::config::{ForwardingConfig, HeaderEdit, XffMode};
use crate::http::answer::ConnHeader;
use crate::http::parse::{
    is_named_by_connection, Framing, HeaderKind, HeaderSpan, RequestHead, ResponseHead,
};
use std::net::{IpAddr, SocketAddr};

/// The client's address, with the address's text form for X-Forwarded-For formatted
/// once per connection rather than per request. Displays as `ip:port` (for logs).
pub struct Peer {
    pub ip: IpAddr,
    pub port: u16,
    text: [u8; 46],
    len: u8,
    /// `ip:port`, `[ip]:port` for IPv6 (the access log's `client`).
    addr: [u8; 54],
    addr_len: u8,
}

impl Peer {
    pub fn of(addr: SocketAddr) -> Peer {
        use std::io::Write;
        let ip = addr.ip().to_canonical();
        let mut text = [0u8; 46];
        let mut cursor = &mut text[..];
        // An IPv6 address is at most 45 characters, so this always fits.
        let _ = write!(cursor, "{ip}");
        let len = (46 - cursor.len()) as u8;
        let ip_text = &text[..usize::from(len)];
        let mut addr_text = [0u8; 54];
        let mut n = 0;
        let mut push = |b: &[u8]| {
            addr_text[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        if ip.is_ipv6() {
            push(b"[");
            push(ip_text);
            push(b"]:");
        } else {
            push(ip_text);
            push(b":");
        }
        push(decimal_text(u64::from(addr.port()), &mut [0; 20]));
        Peer {
            ip,
            port: addr.port(),
            text,
            len,
            addr: addr_text,
            addr_len: n as u8,
        }
    }

    pub fn text(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    /// `ip:port`, or `[ip]:port` for IPv6.
    pub fn addr_text(&self) -> &[u8] {
        &self.addr[..usize::from(self.addr_len)]
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        SocketAddr::new(self.ip, self.port).fmt(f)
    }
}

/// What the request rewrite needs beyond the parsed head.
pub struct RequestRewrite<'a> {
    pub peer: &'a Peer,
    /// `port_line` of the listener's port.
    pub port_line: &'a [u8],
    /// `proto_line` of the listener's scheme.
    pub proto_line: &'a [u8],
    /// A TLS listener with `forward_client_cert`: the connection's
    /// `x-forwarded-client-cert` line (empty without a client certificate); the
    /// client's own such headers are dropped.
    pub client_cert: Option<&'a [u8]>,
    pub forwarding: &'a ForwardingConfig,
    pub edits: &'a HeaderEdit,
    pub host_rewrite: Option<&'a [u8]>,
    /// Host to send when the client sent none (HTTP/1.0).
    pub fallback_host: &'a [u8],
}

impl RequestRewrite<'_> {
    /// The Host (or `:authority`) the upstream gets: the route's rewrite, else
    /// the client's (parsed from `buf`), else the fallback.
    #[inline(always)]
    pub fn host<'b>(&'b self, head: &RequestHead, buf: &'b [u8]) -> &'b [u8] {
        match (self.host_rewrite, head.host()) {
            (Some(h), _) => h,
            (None, Some(h)) => h.get(buf),
            (None, None) => self.fallback_host,
        }
    }
}

/// Appends the upstream request head for `head` (parsed from `buf`) to `out`.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderSpan],
    rw: &RequestRewrite,
    write_request_id: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    if head.authority.is_some() {
        // absolute-form -> origin-form (RFC 9112 §3.2.2).
        let path = head.path.get(buf);
        out.extend_from_slice(if path.is_empty() { b"/" } else { path });
        if let Some(q) = head.query {
            out.push(b'?');
            out.extend_from_slice(q.get(buf));
        }
    } else {
        out.extend_from_slice(head.target.get(buf));
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut fields = RequestFields::new(head, rw);
    let mut run = LineRun::default();

    out.extend_from_slice(b"host: ");
    out.extend_from_slice(rw.host(head, buf));
    out.extend_from_slice(b"\r\n");

    for h in headers {
        let name = h.name.get(buf);
        if !fields.passes(h.kind, name, h.value.get(buf)) {
            continue;
        }
        if head.connection_names_headers && is_named_by_connection(buf, headers, name) {
            continue;
        }
        if !fields.keeps(name, rw) {
            continue;
        }
        run.push(out, buf, h);
    }
    run.flush(out, buf);

    match head.framing {
        Framing::Length(n) => push_length(out, n),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::CloseDelimited => {}
    }
    write_request_tail(out, buf, head, headers, rw, &fields, write_request_id);
    out.extend_from_slice(b"\r\n");
}

/// What the request rewrite does with each of the client's fields, and what it
/// noted of them for the fields it adds ([`write_request_tail`]). Shared by the
/// HTTP/1.1 head writer and the HTTP/2 header-list builder (`h2::translate`).
pub struct RequestFields {
    set_xf: bool,
    trusted: bool,
    expect_continue: bool,
    drop_client_cert: bool,
    may_drop: bool,
    has_id: bool,
    /// X-Forwarded-Proto, -Host, -Port from a trusted hop.
    has_xf: [bool; 3],
    te_trailers: bool,
}

impl RequestFields {
    #[inline(always)]
    pub fn new(head: &RequestHead, rw: &RequestRewrite) -> RequestFields {
        let f = rw.forwarding;
        let set_xf = f.x_forwarded_for != XffMode::Off;
        RequestFields {
            set_xf,
            trusted: f.x_forwarded_for == XffMode::Append
                && f.trusted_proxies.iter().any(|c| c.contains(rw.peer.ip)),
            expect_continue: head.expect_continue,
            drop_client_cert: rw.client_cert.is_some(),
            may_drop: rw.edits.drops_any(),
            has_id: false,
            has_xf: [false; 3],
            te_trailers: false,
        }
    }

    /// Whether a field of this kind passes the rewrite's own rules (hop-by-hop
    /// and framing fields, X-Forwarded-* the proxy sets, an answered Expect);
    /// then come the client's Connection and the route's edits ([`Self::keeps`]).
    #[inline(always)]
    pub fn passes(&mut self, kind: HeaderKind, name: &[u8], value: &[u8]) -> bool {
        match kind {
            HeaderKind::Host => false,
            HeaderKind::Te => {
                self.te_trailers |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
                false
            }
            k if k.is_hop_by_hop() => false,
            HeaderKind::Expect if self.expect_continue => false,
            // Written by the tail: prior values (trusted hops only) joined with the peer.
            HeaderKind::XForwardedFor if self.set_xf => false,
            HeaderKind::XForwardedClientCert if self.drop_client_cert => false,
            // `x_forwarded_client_cert` too: servers that map header names to
            // CGI/WSGI variables read it as the real one.
            HeaderKind::Other
                if self.drop_client_cert && name.len() == 23 && is_xfcc_alias(name) =>
            {
                false
            }
            HeaderKind::XForwardedProto
            | HeaderKind::XForwardedHost
            | HeaderKind::XForwardedPort
                if self.set_xf =>
            {
                if self.trusted {
                    self.has_xf[match kind {
                        HeaderKind::XForwardedProto => 0,
                        HeaderKind::XForwardedHost => 1,
                        _ => 2,
                    }] = true;
                }
                self.trusted
            }
            _ => true,
        }
    }

    /// Whether a field that [`Self::passes`] (and that the client's Connection
    /// does not name) survives the route's edits.
    #[inline(always)]
    pub fn keeps(&mut self, name: &[u8], rw: &RequestRewrite) -> bool {
        if self.may_drop && rw.edits.drops(name) {
            return false;
        }
        self.has_id |= name.eq_ignore_ascii_case(rw.forwarding.request_id_header.as_bytes());
        true
    }
}

/// Appends the fields the proxy adds after the client's: `te: trailers`,
/// X-Forwarded-*, the client certificate, the WebSocket upgrade, the request id
/// and the route's added fields.
#[inline(always)]
pub fn write_request_tail(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderSpan],
    rw: &RequestRewrite,
    fields: &RequestFields,
    write_request_id: impl FnOnce(&mut Vec<u8>),
) {
    if fields.te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    if fields.set_xf {
        push_forwarded(out, buf, head, headers, rw, fields.trusted, fields.has_xf);
    }
    if let Some(line) = rw.client_cert {
        out.extend_from_slice(line);
    }
    if head.websocket {
        // (The route allows it, or the request was refused.) Other upgrades are
        // not forwarded: Upgrade and Connection are hop-by-hop.
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
    }
    let f = rw.forwarding;
    if f.request_id && !fields.has_id {
        out.extend_from_slice(f.request_id_header.as_bytes());
        out.extend_from_slice(b": ");
        write_request_id(out);
        out.extend_from_slice(b"\r\n");
    }
    push_edits(out, rw.edits);
}

/// Appends X-Forwarded-For (prior values from a trusted hop joined with the peer),
/// and X-Forwarded-Proto, -Host and -Port where a trusted hop did not send them.
/// Inlined: as a call of its own it measured about 30 instructions per request more.
#[inline(always)]
fn push_forwarded(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderSpan],
    rw: &RequestRewrite,
    trusted: bool,
    has_xf: [bool; 3],
) {
    out.extend_from_slice(b"x-forwarded-for: ");
    if trusted {
        for h in headers
            .iter()
            .filter(|h| h.kind == HeaderKind::XForwardedFor)
        {
            out.extend_from_slice(h.value.get(buf));
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(rw.peer.text());
    out.extend_from_slice(b"\r\n");
    if !has_xf[0] {
        out.extend_from_slice(rw.proto_line);
    }
    if !has_xf[1] {
        if let Some(h) = head.host() {
            push_line(out, b"x-forwarded-host", h.get(buf));
        }
    }
    if !has_xf[2] {
        out.extend_from_slice(rw.port_line);
    }
}

/// How the body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// No body. `keep_length`: the upstream's Content-Length describes a body not
    /// sent (HEAD, 304) and is passed on as received (RFC 9110 §8.6).
    None {
        keep_length: bool,
    },
    Length(u64),
    Chunked,
    CloseDelimited,
}

/// How the downstream response head is written.
pub struct ResponseRewrite<'a> {
    pub edits: &'a HeaderEdit,
    pub framing: ClientFraming,
    pub conn: ConnHeader,
    /// IMF-fixdate, used when the upstream sent no Date (RFC 9110 §6.6.1).
    pub date: &'a [u8],
}

/// Appends the downstream response head to `out`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    resp: &ResponseHead,
    headers: &[HeaderSpan],
    rw: &ResponseRewrite,
) {
    let (edits, framing) = (rw.edits, rw.framing);
    let may_drop = edits.drops_any();
    write_status_line(out, buf, resp);
    let mut run = LineRun::default();
    for h in headers {
        let name = h.name.get(buf);
        match h.kind {
            HeaderKind::ContentLength
                if matches!(framing, ClientFraming::None { keep_length: true }) => {}
            k if k.is_hop_by_hop() => continue,
            _ => {}
        }
        if resp.connection_names_headers && is_named_by_connection(buf, headers, name) {
            continue;
        }
        if may_drop && edits.drops(name) {
            continue;
        }
        run.push(out, buf, h);
    }
    run.flush(out, buf);
    match framing {
        ClientFraming::Length(n) => push_length(out, n),
        ClientFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ClientFraming::None { .. } | ClientFraming::CloseDelimited => {}
    }
    if !resp.has_date {
        push_line(out, b"date", rw.date);
    }
    push_edits(out, edits);
    out.extend_from_slice(rw.conn.line());
    out.extend_from_slice(b"\r\n");
}

/// Appends an interim (1xx) response for the client, hop-by-hop headers dropped.
pub fn write_interim_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    resp: &ResponseHead,
    headers: &[HeaderSpan],
) {
    write_status_line(out, buf, resp);
    for h in headers.iter().filter(|h| !h.kind.is_hop_by_hop()) {
        push_line(out, h.name.get(buf), h.value.get(buf));
    }
    out.extend_from_slice(b"\r\n");
}

fn write_status_line(out: &mut Vec<u8>, buf: &[u8], resp: &ResponseHead) {
    // "200 OK" as received: the status code's three digits, then a space and the
    // reason, or nothing (the space is added then, RFC 9112 §4).
    let line = resp.status_line.get(buf);
    let end = resp.status_line.start as usize + line.len();
    if line.len() > 3
        && buf.get(..9) == Some(b"HTTP/1.1 ")
        && buf.get(end..end + 2) == Some(b"\r\n")
    {
        // An HTTP/1.1 status line with a reason and a CRLF, at the start of the head
        // (so `line` starts at 9): copied as received, in one piece.
        return out.extend_from_slice(&buf[..end + 2]);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(line);
    out.extend_from_slice(if line.len() > 3 { b"\r\n" } else { b" \r\n" });
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// "00" to "99".
pub static DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// `n` in decimal, written at the end of `digits`.
fn decimal_text(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}

/// Appends `n` in decimal (no `fmt` machinery: this runs for every response).
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    // Most values (ports, statuses, small lengths) have at most 5 digits: written as
    // a fixed-size array, without the variable-length copy of a digit buffer, two
    // digits per division.
    let pair = |k: u64| {
        let at = 2 * (k % 100) as usize;
        [DIGIT_PAIRS[at], DIGIT_PAIRS[at + 1]]
    };
    match n {
        0..=9 => return out.push(b'0' + n as u8),
        10..=99 => return out.extend_from_slice(&pair(n)),
        100..=999 => {
            let [b, c] = pair(n);
            return out.extend_from_slice(&[b'0' + (n / 100) as u8, b, c]);
        }
        1_000..=9_999 => {
            let ([a, b], [c, d]) = (pair(n / 100), pair(n));
            return out.extend_from_slice(&[a, b, c, d]);
        }
        10_000..=99_999 => {
            let ([b, c], [d, e]) = (pair(n / 100), pair(n));
            return out.extend_from_slice(&[b'0' + (n / 10_000) as u8, b, c, d, e]);
        }
        _ => {}
    }
    out.extend_from_slice(decimal_text(n, &mut [0; 20]));
}

/// The X-Forwarded-Port line for a listener's port, made once per worker (writing
/// the number for each request cost about 60 instructions).
/// `x-forwarded-client-cert` with any of its dashes written as underscores.
fn is_xfcc_alias(name: &[u8]) -> bool {
    name.iter()
        .map(|&b| {
            if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            }
        })
        .eq(b"x-forwarded-client-cert".iter().copied())
}

/// The X-Forwarded-Proto line of a connection: `https` over TLS.
pub fn proto_line(tls: bool) -> &'static [u8] {
    if tls {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    }
}

pub fn port_line(port: u16) -> Box<[u8]> {
    let mut line = b"x-forwarded-port: ".to_vec();
    push_decimal(&mut line, u64::from(port));
    line.extend_from_slice(b"\r\n");
    line.into_boxed_slice()
}

fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Header lines forwarded as received, gathered into runs of adjacent lines so that a
/// run is one copy rather than four appends per line. Only lines already in the form
/// the proxy would write ("name: value" CRLF) join a run, so the output is the same
/// as `push_line` on each.
#[derive(Default)]
struct LineRun {
    start: usize,
    end: usize,
}

impl LineRun {
    #[inline(always)]
    fn push(&mut self, out: &mut Vec<u8>, buf: &[u8], h: &HeaderSpan) {
        let name_start = h.name.start as usize;
        let name_end = name_start + h.name.len as usize;
        let value_start = h.value.start as usize;
        let line_end = value_start + h.value.len as usize + 2;
        let canonical = value_start == name_end + 2
            && buf.get(name_end..value_start) == Some(b": ")
            && buf.get(line_end - 2..line_end) == Some(b"\r\n");
        if !canonical {
            self.flush(out, buf);
            push_line(out, h.name.get(buf), h.value.get(buf));
        } else if self.end == name_start && self.end != self.start {
            self.end = line_end;
        } else {
            self.flush(out, buf);
            *self = LineRun {
                start: name_start,
                end: line_end,
            };
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>, buf: &[u8]) {
        out.extend_from_slice(&buf[self.start..self.end]);
        self.start = self.end;
    }
}

fn push_edits(out: &mut Vec<u8>, edits: &HeaderEdit) {
    for (name, value) in edits.set.iter().chain(&edits.add) {
        push_line(out, name.as_bytes(), value.as_bytes());
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
