//! Sans-io HTTP/1.x head parsing (RFC 9112) over a connection's read buffer, and the
//! request-smuggling defences. httparse tokenises request heads and `http::scan`
//! upstream response heads; this module classifies the header lines once, records
//! them as offsets into the buffer (zero-copy, and no lifetimes tying the buffer to
//! the connection state), and decides message framing.
//! It never allocates after warm-up: the caller owns the reused `Vec<HeaderSpan>`.

use crate::config::{Limits, MAX_HEADERS_CAP};
use crate::http::scan::{scan_response, ScanError, StatusLine};
use std::mem::MaybeUninit;

/// A byte range inside the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        debug_assert!(start + part.len() <= buf.len());
        Span {
            start: start as u32,
            len: part.len() as u32,
        }
    }

    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..(self.start + self.len) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    fn of(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// RFC 9110 §9.2.2.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// The header lines the proxy acts on; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XForwardedPort,
    XForwardedClientCert,
    Cookie,
    Date,
    Other,
}

impl HeaderKind {
    /// One length dispatch, one first-letter dispatch where a length has several
    /// candidates, then one case-folded word compare: this runs for every header
    /// line of every request and response. `name` is a token (RFC 9110 §5.6.2), as
    /// both tokenisers guarantee.
    pub fn of(name: &[u8]) -> HeaderKind {
        let first = name.first().map_or(0, |b| b | 0x20);
        let (kind, lower): (HeaderKind, &[u8]) = match (name.len(), first) {
            (2, b't') => (HeaderKind::Te, b"te"),
            (4, b'h') => (HeaderKind::Host, b"host"),
            (4, b'd') => (HeaderKind::Date, b"date"),
            (6, b'c') => (HeaderKind::Cookie, b"cookie"),
            (6, b'e') => (HeaderKind::Expect, b"expect"),
            (7, b't') => (HeaderKind::Trailer, b"trailer"),
            (7, b'u') => (HeaderKind::Upgrade, b"upgrade"),
            (10, b'c') => (HeaderKind::Connection, b"connection"),
            (10, b'k') => (HeaderKind::KeepAlive, b"keep-alive"),
            (14, b'c') => (HeaderKind::ContentLength, b"content-length"),
            (15, b'x') => (HeaderKind::XForwardedFor, b"x-forwarded-for"),
            (16, b'p') => (HeaderKind::ProxyConnection, b"proxy-connection"),
            (16, b'x') => match name[12] | 0x20 {
                b'h' => (HeaderKind::XForwardedHost, b"x-forwarded-host"),
                _ => (HeaderKind::XForwardedPort, b"x-forwarded-port"),
            },
            (17, b't') => (HeaderKind::TransferEncoding, b"transfer-encoding"),
            (17, b'x') => (HeaderKind::XForwardedProto, b"x-forwarded-proto"),
            (23, b'x') => (HeaderKind::XForwardedClientCert, b"x-forwarded-client-cert"),
            _ => return HeaderKind::Other,
        };
        if folded_eq(name, lower) {
            kind
        } else {
            HeaderKind::Other
        }
    }

    /// Hop-by-hop headers never forwarded as such (RFC 9110 §7.6.1); framing headers
    /// are re-emitted by the proxy from the parsed framing (RFC 9112 §6).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            HeaderKind::Connection
                | HeaderKind::KeepAlive
                | HeaderKind::ProxyConnection
                | HeaderKind::Te
                | HeaderKind::Trailer
                | HeaderKind::Upgrade
                | HeaderKind::ContentLength
                | HeaderKind::TransferEncoding
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
    pub kind: HeaderKind,
}

/// How the message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    CloseDelimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("header section too large")]
    HeadTooLarge,
    #[error("too many header lines")]
    TooManyHeaders,
    #[error("request-target too long")]
    UriTooLong,
    #[error("HTTP version not supported")]
    Version,
    #[error("transfer coding not implemented")]
    UnsupportedCoding,
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub method_span: Span,
    pub target: Span,
    pub path: Span,
    pub query: Option<Span>,
    /// Authority of an absolute-form target (RFC 9112 §3.2.2): it overrides Host.
    pub authority: Option<Span>,
    /// The Host header's value.
    pub host_header: Option<Span>,
    pub version: Version,
    pub head_len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// True when a Connection header names other headers to drop.
    pub connection_names_headers: bool,
    /// A WebSocket opening handshake (RFC 6455 §4.1): an HTTP/1.1 GET with
    /// `Upgrade: websocket` and `Connection: upgrade`.
    pub websocket: bool,
}

impl RequestHead {
    /// The host used for routing and X-Forwarded-Host.
    pub fn host(&self) -> Option<Span> {
        self.authority.or(self.host_header)
    }

    /// True when a request body follows the head.
    pub fn has_body(&self) -> bool {
        !matches!(self.framing, Framing::None | Framing::Length(0))
    }
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    /// "200 OK": status code and reason, as received.
    pub status_line: Span,
    pub head_len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub connection_names_headers: bool,
    pub has_date: bool,
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, ParseError> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return check_partial(buf, limits).map(|_| None),
        Err(e) => return Err(request_error(e, buf, limits)),
    };
    if head_len > limits.max_head_bytes {
        return Err(ParseError::HeadTooLarge);
    }
    let method_bytes = req.method.expect("complete head has a method").as_bytes();
    let target_bytes = req.path.expect("complete head has a target").as_bytes();
    if target_bytes.len() > limits.max_uri_bytes {
        return Err(ParseError::UriTooLong);
    }
    if target_bytes.iter().any(|&b| b >= 0x80) {
        return Err(ParseError::Malformed("non-ASCII byte in request-target"));
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    let method = Method::of(method_bytes);
    let target = Span::of(buf, target_bytes);
    let (authority, path, query) = split_target(buf, target_bytes, method)?;

    headers.clear();
    let mut fields = Fields::default();
    for h in req.headers.iter() {
        let span = classify(buf, h);
        if span.kind != HeaderKind::Other {
            fields.note(&span, buf)?;
        }
        headers.push(span);
    }
    let host_header = match (fields.host_count, version) {
        (1, _) => fields.host,
        // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one in HTTP/1.0.
        (0, Version::Http10) => None,
        (0, Version::Http11) => return Err(ParseError::Malformed("missing Host")),
        _ => return Err(ParseError::Malformed("several Host headers")),
    };
    if let Some(h) = host_header {
        if !is_valid_host(h.get(buf)) {
            return Err(ParseError::Malformed("invalid Host"));
        }
    }
    let framing = request_framing(&fields, version)?;
    let keep_alive = match version {
        Version::Http11 => !fields.conn_close,
        Version::Http10 => fields.conn_keep_alive && !fields.conn_close,
    };
    Ok(Some(RequestHead {
        method,
        method_span: Span::of(buf, method_bytes),
        target,
        path,
        query,
        authority,
        host_header,
        version,
        head_len,
        framing,
        keep_alive,
        expect_continue: fields.expect_continue && version == Version::Http11,
        connection_names_headers: fields.conn_names_headers,
        // (Connection: upgrade names a header: the common case tests one flag.)
        websocket: fields.conn_names_headers
            && fields.conn_upgrade
            && fields.upgrade_websocket
            && method == Method::Get
            && version == Version::Http11,
    }))
}

/// Limits on an incomplete head: the buffer may not grow without bound.
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), ParseError> {
    // The request line (method SP target SP version), whole or so far, after any
    // empty lines: its target may not pass the URI limit, also while the rest of
    // the head is still coming. (Only the target: a long method with a short target
    // is a head the whole parse accepts.)
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
    if let Some(sp) = memchr::memchr(b' ', line) {
        let rest = &line[sp + 1..];
        if memchr::memchr(b' ', rest).unwrap_or(rest.len()) > limits.max_uri_bytes {
            return Err(ParseError::UriTooLong);
        }
    }
    if buf.len() >= limits.max_head_bytes {
        return Err(ParseError::HeadTooLarge);
    }
    Ok(())
}

fn request_error(e: httparse::Error, buf: &[u8], limits: &Limits) -> ParseError {
    // What is wrong lies past the head size limit: the head was too large before
    // anything was wrong with it, as reading it in smaller pieces finds too.
    if buf.len() > limits.max_head_bytes && is_partial(&buf[..limits.max_head_bytes], limits) {
        return ParseError::HeadTooLarge;
    }
    match e {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version if looks_like_http_version(buf) => ParseError::Version,
        httparse::Error::HeaderName => ParseError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => ParseError::Malformed("invalid header value"),
        httparse::Error::NewLine => ParseError::Malformed("invalid line ending"),
        httparse::Error::Status => ParseError::Malformed("invalid status"),
        httparse::Error::Token => ParseError::Malformed("invalid token"),
        httparse::Error::Version => ParseError::Malformed("invalid version"),
    }
}

/// Whether `buf` is the start of a request head with nothing wrong in it yet.
#[cold]
fn is_partial(buf: &[u8], limits: &Limits) -> bool {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    matches!(
        req.parse_with_uninit_headers(buf, slots),
        Ok(httparse::Status::Partial)
    )
}

/// A request line `method SP target SP HTTP/x.y` with digits: a well-formed version
/// we do not speak (505, not 400). Anything else wrong in the line is a 400.
fn looks_like_http_version(buf: &[u8]) -> bool {
    // (Empty lines before the request line are allowed: RFC 9112 §2.2.)
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let buf = &buf[start..];
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    if parts.next().is_some()
        || method.is_none_or(<[u8]>::is_empty)
        || target.is_none_or(<[u8]>::is_empty)
    {
        return false;
    }
    match version {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        Some([b'H', b'T', b'T', b'P', b'/', major]) => major.is_ascii_digit(),
        _ => false,
    }
}

/// origin-form, absolute-form, asterisk-form (RFC 9112 §3.2). authority-form is only
/// for CONNECT, which is refused later by method; its authority is checked like any
/// other (`host()` is always host bytes: the access log writes it unescaped).
fn split_target(
    buf: &[u8],
    target: &[u8],
    method: Method,
) -> Result<(Option<Span>, Span, Option<Span>), ParseError> {
    let (authority, rest) = if target.first() == Some(&b'/') {
        (None, target)
    } else if target == b"*" {
        if method != Method::Options {
            return Err(ParseError::Malformed(
                "asterisk-form target without OPTIONS",
            ));
        }
        return Ok((None, Span::of(buf, target), None));
    } else if method == Method::Connect {
        if !is_valid_host(target) {
            return Err(ParseError::Malformed("invalid authority in request-target"));
        }
        return Ok((
            Some(Span::of(buf, target)),
            Span::of(buf, &target[..0]),
            None,
        ));
    } else {
        let after_scheme = strip_prefix_ignore_case(target, b"http://")
            .or_else(|| strip_prefix_ignore_case(target, b"https://"))
            .ok_or(ParseError::Malformed("invalid request-target"))?;
        let end = after_scheme
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after_scheme.len());
        let authority = &after_scheme[..end];
        if authority.is_empty() || authority.contains(&b'@') || !is_valid_host(authority) {
            return Err(ParseError::Malformed("invalid authority in request-target"));
        }
        (Some(Span::of(buf, authority)), &after_scheme[end..])
    };
    let (path, query) = match memchr::memchr(b'?', rest) {
        Some(q) => (&rest[..q], Some(Span::of(buf, &rest[q + 1..]))),
        None => (rest, None),
    };
    if path.contains(&b'#') {
        return Err(ParseError::Malformed("fragment in request-target"));
    }
    // An absolute-form target with an empty path means "/" (RFC 9112 §3.2.1); the
    // rewriter emits "/" for an empty path.
    Ok((authority, Span::of(buf, path), query))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// uri-host [ ":" port ] (RFC 3986 §3.2.2): reg-name characters, or an IP literal.
fn is_valid_host(h: &[u8]) -> bool {
    !h.is_empty() && h.len() <= 1024 && h.iter().all(|&b| HOST_BYTE[usize::from(b)])
}

/// The bytes `is_valid_host` accepts, as a table: one load per byte instead of a
/// scan of the punctuation list (this runs for every request).
static HOST_BYTE: [bool; 256] = alnum_and(b"-._~!$&'()*+,;=:[]%");

/// A byte class as a table: ASCII letters and digits, and the bytes of `punct`.
pub(crate) const fn alnum_and(punct: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < punct.len() {
        t[punct[i] as usize] = true;
        i += 1;
    }
    t
}

/// `name` equals `lower` (same length; lower-case letters and '-') ignoring ASCII
/// case, compared a word at a time. Or-ing 0x20 into a byte turns it into a given
/// lower-case letter only from that letter or its capital, and into '-' only from
/// '-' or CR, which neither a token nor a field value can hold: exact for every
/// valid name, and for field values.
pub(crate) fn folded_eq(name: &[u8], lower: &[u8]) -> bool {
    debug_assert_eq!(name.len(), lower.len());
    let n = name.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    const FOLD8: u64 = 0x2020_2020_2020_2020;
    const FOLD4: u32 = 0x2020_2020;
    if n >= 8 {
        // Whole words, then the last word overlapping the one before.
        let mut at = 0;
        while at + 8 <= n {
            if word(name, at) | FOLD8 != word(lower, at) {
                return false;
            }
            at += 8;
        }
        at == n || word(name, n - 8) | FOLD8 == word(lower, n - 8)
    } else if n >= 4 {
        half(name, 0) | FOLD4 == half(lower, 0) && half(name, n - 4) | FOLD4 == half(lower, n - 4)
    } else {
        name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b)
    }
}

fn classify(buf: &[u8], h: &httparse::Header) -> HeaderSpan {
    let name = h.name.as_bytes();
    HeaderSpan {
        name: Span::of(buf, name),
        value: Span::of(buf, h.value),
        kind: HeaderKind::of(name),
    }
}

/// What the header lines say about framing and the connection, gathered in one pass.
#[derive(Default)]
struct Fields {
    host: Option<Span>,
    host_count: u32,
    content_length: Option<u64>,
    transfer_encoding: u32,
    te_chunked_last: bool,
    te_other_coding: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_names_headers: bool,
    /// `Connection: upgrade`, and `Upgrade` listing `websocket`.
    conn_upgrade: bool,
    upgrade_websocket: bool,
    expect_continue: bool,
    date: bool,
}

impl Fields {
    fn note(&mut self, h: &HeaderSpan, buf: &[u8]) -> Result<(), ParseError> {
        let value = h.value.get(buf);
        match h.kind {
            HeaderKind::Host => {
                self.host = Some(h.value);
                self.host_count += 1;
            }
            HeaderKind::ContentLength => {
                // RFC 9110 §8.6: a list of identical values may be taken as one;
                // differing values are unrecoverable. Usually one plain number:
                // read without splitting (same result as the loop below).
                if let Some(n) = plain_decimal(value) {
                    if self.content_length.is_some_and(|old| old != n) {
                        return Err(ParseError::Malformed("differing Content-Length values"));
                    }
                    self.content_length = Some(n);
                    return Ok(());
                }
                for item in value.split(|&b| b == b',') {
                    let n = parse_content_length(trim(item))?;
                    if self.content_length.is_some_and(|old| old != n) {
                        return Err(ParseError::Malformed("differing Content-Length values"));
                    }
                    self.content_length = Some(n);
                }
            }
            HeaderKind::TransferEncoding => {
                self.transfer_encoding += 1;
                for item in value.split(|&b| b == b',') {
                    let coding = trim(item);
                    if coding.is_empty() {
                        continue;
                    }
                    if self.te_chunked_last {
                        // chunked applied twice, or a coding after chunked.
                        return Err(ParseError::Malformed("chunked is not the final coding"));
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        self.te_chunked_last = true;
                    } else {
                        self.te_other_coding = true;
                    }
                }
            }
            HeaderKind::Connection => {
                // Usually a single option: compared without splitting.
                match value.len() {
                    5 if folded_eq(value, b"close") => self.conn_close = true,
                    10 if folded_eq(value, b"keep-alive") => self.conn_keep_alive = true,
                    _ => self.note_connection_list(value),
                }
            }
            HeaderKind::Expect if trim(value).eq_ignore_ascii_case(b"100-continue") => {
                self.expect_continue = true;
            }
            HeaderKind::Date => self.date = true,
            HeaderKind::Upgrade => {
                self.upgrade_websocket |= value
                    .split(|&b| b == b',')
                    .any(|t| trim(t).eq_ignore_ascii_case(b"websocket"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Connection options (RFC 9110 §7.6.1), as a comma-separated list.
    fn note_connection_list(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = trim(token);
            if token.eq_ignore_ascii_case(b"close") {
                self.conn_close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.conn_keep_alive = true;
            } else if !token.is_empty() {
                self.conn_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                self.conn_names_headers = true;
            }
        }
    }
}

/// A value that is nothing but 1 to 19 digits (no list, no whitespace), as a number.
fn plain_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in v {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

/// RFC 9112 §6.1-6.3 for requests.
fn request_framing(f: &Fields, version: Version) -> Result<Framing, ParseError> {
    if f.transfer_encoding > 0 {
        if version == Version::Http10 {
            return Err(ParseError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        if f.content_length.is_some() {
            return Err(ParseError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if !f.te_chunked_last {
            return Err(ParseError::Malformed("chunked is not the final coding"));
        }
        if f.te_other_coding {
            // We re-frame bodies as chunked only; other codings would be lost.
            return Err(ParseError::UnsupportedCoding);
        }
        return Ok(Framing::Chunked);
    }
    Ok(match f.content_length {
        None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// A Content-Length value: plain decimal digits (no sign, no spaces).
pub fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    plain_decimal(v).ok_or(ParseError::Malformed("invalid Content-Length"))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Parses an upstream response head. `request_is_head`: the response has no body
/// whatever its headers say (RFC 9112 §6.3 rule 1).
pub fn parse_response(
    buf: &[u8],
    max_head: usize,
    request_is_head: bool,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseHead>, ParseError> {
    let scanned = match scan_response(buf, MAX_HEADERS_CAP, headers) {
        Ok(Some(s)) => s,
        Ok(None) if buf.len() >= max_head => return Err(ParseError::HeadTooLarge),
        Ok(None) => return Ok(None),
        Err(ScanError::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
        Err(ScanError::Invalid) => return Err(ParseError::Malformed("invalid response head")),
    };
    let StatusLine {
        version,
        status,
        line: status_line,
        head_len,
    } = scanned;
    if head_len > max_head {
        return Err(ParseError::HeadTooLarge);
    }
    // Three digits, but only 100-599 are status codes (RFC 9110 §15): a code below
    // 100 is neither interim nor final, and taking it as either would desync the
    // connection.
    if !(100..=599).contains(&status) {
        return Err(ParseError::Malformed("status code outside 100-599"));
    }
    let mut fields = Fields::default();
    for h in headers.iter().filter(|h| h.kind != HeaderKind::Other) {
        fields.note(h, buf)?;
    }
    let framing =
        if request_is_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::None
        } else if fields.transfer_encoding > 0 {
            // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means its
            // framing is faulty (an HTTP/1.0 recipient would read the chunks as the
            // body). Without a body, the connection is closed after it (below).
            if version == Version::Http10 {
                return Err(ParseError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 response",
                ));
            }
            if fields.content_length.is_some() {
                return Err(ParseError::Malformed(
                    "both Content-Length and Transfer-Encoding",
                ));
            }
            if fields.te_chunked_last && !fields.te_other_coding {
                Framing::Chunked
            } else if fields.te_chunked_last {
                return Err(ParseError::UnsupportedCoding);
            } else {
                // RFC 9112 §6.3 rule 4: final coding not chunked -> read until close.
                Framing::CloseDelimited
            }
        } else {
            match fields.content_length {
                Some(n) => Framing::Length(n),
                None => Framing::CloseDelimited,
            }
        };
    let keep_alive = match version {
        Version::Http11 => !fields.conn_close,
        Version::Http10 => {
            fields.conn_keep_alive && !fields.conn_close && fields.transfer_encoding == 0
        }
    } && framing != Framing::CloseDelimited;
    Ok(Some(ResponseHead {
        version,
        status,
        status_line,
        head_len,
        framing,
        keep_alive,
        connection_names_headers: fields.conn_names_headers,
        has_date: fields.date,
    }))
}

/// True when the Connection header lines of this head list `name` (RFC 9110 §7.6.1).
pub fn is_named_by_connection(buf: &[u8], headers: &[HeaderSpan], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Connection)
        .flat_map(|h| h.value.get(buf).split(|&b| b == b','))
        .any(|token| trim(token).eq_ignore_ascii_case(name))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
