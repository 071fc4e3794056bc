//! Sans-io translation between HTTP/2 header lists and HTTP/1.1 heads (RFC 9113
//! §8.2, §8.3): a request's pseudo-headers and fields written as an HTTP/1.1
//! head for the shared parser, and an HTTP/1.1 response head (as this proxy
//! renders it) or trailer section read into HTTP/2 fields; and, from an HTTP/2
//! client to an HTTP/2 upstream, header lists rewritten as lists by the rules of
//! the HTTP/1.1 rewrite (`client_fields`, `upstream_request`,
//! `downstream_response`). A fuzz target (`fuzz/fuzz_targets/h2_translation.rs`)
//! checks the request direction; a unit test checks the list rewrite against the
//! round trip through an HTTP/1.1 head.

use crate::config::HeaderEdit;
use crate::error::ProxyError;
use crate::http::parse::{parse_content_length, Framing, HeaderKind, RequestHead};
use crate::http::rewrite::{RequestFields, RequestRewrite};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

/// Writes the request's header list as an HTTP/1.1 head into `out`.
///
/// An extended CONNECT (RFC 8441) for `:protocol` `websocket` becomes an HTTP/1.1
/// WebSocket opening handshake (RFC 6455 §4.1): `GET :path` with `Connection:
/// upgrade`, `Upgrade: websocket` and `ws_key` as its `Sec-WebSocket-Key` (an
/// HTTP/2 client sends none); another `:protocol` is refused.
pub fn write_head(
    parts: &http::request::Parts,
    end_stream: bool,
    ws_key: Option<&[u8; 24]>,
    out: &mut Vec<u8>,
) -> Result<(), ProxyError> {
    let bad = |what| ProxyError::BadRequest(crate::http::parse::ParseError::Malformed(what));
    let websocket = match parts.extensions.get::<h2::ext::Protocol>() {
        None => None,
        Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => {
            Some(ws_key.ok_or(ProxyError::UpgradeRefused)?)
        }
        Some(_) => return Err(ProxyError::UpgradeRefused),
    };
    if websocket.is_some() {
        out.extend_from_slice(b"GET");
    } else {
        out.extend_from_slice(parts.method.as_str().as_bytes());
    }
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => out.extend_from_slice(pq.as_str().as_bytes()),
        _ if parts.method == http::Method::CONNECT => {
            let authority = parts
                .uri
                .authority()
                .ok_or_else(|| bad("CONNECT without :authority"))?;
            out.extend_from_slice(authority.as_str().as_bytes());
        }
        _ => return Err(bad("no :path")),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority();
    if let Some(a) = authority {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(a.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut cookies = 0;
    for (name, value) in &parts.headers {
        // :authority stands for Host (RFC 9113 §8.3.1); cookies are joined below.
        if (authority.is_some() && name == http::header::HOST) || name == http::header::COOKIE {
            cookies += (name == http::header::COOKIE) as usize;
            continue;
        }
        // (The handshake's own fields are written below; it has no body.)
        if websocket.is_some()
            && (name == http::header::SEC_WEBSOCKET_KEY || name == http::header::CONTENT_LENGTH)
        {
            continue;
        }
        // A value with whitespace around it is malformed (RFC 9113 §8.2.1); the
        // HTTP/1.1 parser would trim it.
        let v = value.as_bytes();
        if matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t')) {
            return Err(bad("whitespace around a field value"));
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if cookies > 0 {
        // RFC 9113 §8.2.3: cookie crumbs are joined with "; " for HTTP/1.1.
        out.extend_from_slice(b"cookie: ");
        for (i, v) in parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(key) = websocket {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: ");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\r\n");
    } else if !end_stream && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Adds `name: value` lines (an HTTP/1.1 header section as this proxy writes
/// it) to `map`, dropping the fields HTTP/2 forbids (RFC 9113 §8.2.2). The
/// values share one copy of `lines`.
pub fn add_fields(map: &mut HeaderMap, lines: &[u8]) {
    let text = Bytes::copy_from_slice(lines);
    for (name, value) in fields_of(&text) {
        if connection_specific(name) || name.eq_ignore_ascii_case(b"te") {
            continue;
        }
        if let (Some(n), Some(v)) = (field_name(name), value_in(&text, value)) {
            map.append(n, v);
        }
    }
}

/// The `name: value` lines of a header section (lines without a colon skipped;
/// values trimmed).
fn fields_of(text: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    text.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        Some((&line[..colon], line[colon + 1..].trim_ascii()))
    })
}

/// A field value that is a part of `text`: sharing it (no copy) when `text` is
/// small, else a copy of its own. (HPACK tables keep the values they index: a
/// shared one holds its whole text alive for as long.)
fn value_in(text: &Bytes, value: &[u8]) -> Option<HeaderValue> {
    if text.len() <= SHARE_AT_MOST {
        HeaderValue::from_maybe_shared(text.slice_ref(value)).ok()
    } else {
        HeaderValue::from_bytes(value).ok()
    }
}

/// The largest head whose values share one copy of it.
const SHARE_AT_MOST: usize = 1024;

/// Room for a map of about `n` fields (`HeaderMap::with_capacity` panics past
/// 24,576; beyond a few dozen fields the map grows as needed).
fn map_for(n: usize) -> HeaderMap {
    HeaderMap::with_capacity(n.min(64))
}

/// A field name; the ones this proxy adds and gRPC's are static (the `http`
/// crate allocates a name it does not know for each use).
fn field_name(name: &[u8]) -> Option<HeaderName> {
    Some(HeaderName::from_static(match name {
        b"x-forwarded-for" => "x-forwarded-for",
        b"x-forwarded-proto" => "x-forwarded-proto",
        b"x-forwarded-host" => "x-forwarded-host",
        b"x-forwarded-port" => "x-forwarded-port",
        b"x-forwarded-client-cert" => "x-forwarded-client-cert",
        b"x-request-id" => "x-request-id",
        b"grpc-timeout" => "grpc-timeout",
        b"grpc-status" => "grpc-status",
        b"grpc-message" => "grpc-message",
        b"grpc-encoding" => "grpc-encoding",
        b"grpc-accept-encoding" => "grpc-accept-encoding",
        _ => return HeaderName::from_bytes(name).ok(),
    }))
}

/// An HTTP/2 response from an HTTP/1.1 response head (`status line CRLF fields`).
pub fn response_of(head: &[u8], status: u16) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let fields = match head.iter().position(|&b| b == b'\n') {
        Some(i) => &head[i + 1..],
        None => &[],
    };
    add_fields(r.headers_mut(), fields);
    r
}

/// One chunk of a chunked HTTP/1.1 body holding `data` (not empty: a zero-size
/// chunk ends the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    debug_assert!(!data.is_empty());
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked HTTP/1.1 body: the last chunk and a trailer section with
/// the HTTP/2 trailers allowed in one (RFC 9110 §6.5.1).
pub fn write_last_chunk(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if crate::http::body::allowed_in_trailers(name.as_str().as_bytes()) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Fields that do not exist in HTTP/2 (RFC 9113 §8.2.2).
fn connection_specific(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// An HTTP/2 request (to an upstream) from the HTTP/1.1 head this proxy wrote for
/// it (`write_request_head`: origin-form target, one Host; a Cookie split into its
/// crumbs): Host becomes
/// `:authority`, connection-specific fields are dropped, `te` is kept only as
/// `trailers`.
pub fn request_of(head: &[u8], scheme: &'static str) -> Result<http::Request<()>, ProxyError> {
    let bad = || ProxyError::BadRequest(crate::http::parse::ParseError::Malformed("head"));
    // One copy of the head, which the values, authority and path share (all
    // slices below are of it).
    let text = Bytes::copy_from_slice(head);
    let head = &text[..];
    let text_end = head.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
    let mut line = head[..text_end].splitn(3, |&b| b == b' ');
    let (Some(method), Some(target)) = (line.next(), line.next()) else {
        return Err(bad());
    };
    let mut authority = None;
    let mut headers = map_for(memchr::memchr_iter(b'\n', head).count());
    for (name, value) in fields_of(&text[text_end + 2..]) {
        if name.eq_ignore_ascii_case(b"host") {
            authority.get_or_insert(value);
            continue;
        }
        if connection_specific(name)
            || (name.eq_ignore_ascii_case(b"te") && !value.eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"cookie") {
            // Cookie crumbs as fields of their own (RFC 9113 §8.2.3: each is
            // compressed on its own, and one that changes costs only itself).
            let crumbs = value.split(|&b| b == b';').map(<[u8]>::trim_ascii);
            for crumb in crumbs.filter(|c| !c.is_empty()) {
                if let Some(v) = value_in(&text, crumb) {
                    headers.append(http::header::COOKIE, v);
                }
            }
            continue;
        }
        if let (Some(n), Some(v)) = (field_name(name), value_in(&text, value)) {
            headers.append(n, v);
        }
    }
    let authority = match authority {
        Some(a) => http::uri::Authority::from_maybe_shared(text.slice_ref(a)),
        None => Ok(http::uri::Authority::from_static("localhost")),
    };
    let path = http::uri::PathAndQuery::from_maybe_shared(text.slice_ref(target));
    let method = http::Method::from_bytes(method).map_err(|_| bad())?;
    let (Ok(authority), Ok(path)) = (authority, path) else {
        return Err(bad());
    };
    Ok(request(method, scheme_of(scheme), authority, path, headers))
}

fn scheme_of(scheme: &str) -> http::uri::Scheme {
    if scheme == "https" {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    }
}

fn request(
    method: http::Method,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    path: http::uri::PathAndQuery,
    headers: HeaderMap,
) -> http::Request<()> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path);
    let mut req = http::Request::new(());
    *req.method_mut() = method;
    // (Scheme, authority and path are all there: `from_parts` cannot fail.)
    *req.uri_mut() = http::Uri::from_parts(uri).unwrap_or_default();
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = headers;
    req
}

/// An HTTP/2 request for an HTTP/2 upstream, straight from the client's HTTP/2
/// request (no HTTP/1.1 head in between): the client's fields through the rules
/// of the HTTP/1.1 request rewrite ([`RequestFields`]: hop-by-hop and framing
/// fields, X-Forwarded-*, the route's removals), the Content-Length kept, cookie
/// crumbs as sent; then the fields the proxy adds, `tail` (as
/// `write_request_tail` writes them, the request id `request_id` not indexed by
/// HPACK: each one is new). `headers` are the client's fields from
/// [`client_fields`], whose [`RequestFields`] then tells the tail's writer what
/// it noted.
pub fn upstream_request(
    parts: &http::request::Parts,
    headers: HeaderMap,
    tail: &[u8],
    request_id: &[u8],
    authority: http::uri::Authority,
    path: http::uri::PathAndQuery,
    scheme: &'static str,
) -> http::Request<()> {
    let mut headers = headers;
    if !tail.is_empty() {
        let text = Bytes::copy_from_slice(tail);
        for (name, value) in fields_of(&text) {
            if let (Some(n), Some(mut v)) = (field_name(name), value_in(&text, value)) {
                if name.eq_ignore_ascii_case(request_id) {
                    v.set_sensitive(true);
                }
                headers.append(n, v);
            }
        }
    }
    request(
        parts.method.clone(),
        scheme_of(scheme),
        authority,
        path,
        headers,
    )
}

/// The upstream's `:authority`, `host` (the client's, unless rewritten).
pub fn authority_of(
    parts: &http::request::Parts,
    host: &[u8],
) -> Result<http::uri::Authority, ProxyError> {
    match parts.uri.authority() {
        Some(a) if a.as_str().as_bytes() == host => Ok(a.clone()),
        _ => http::uri::Authority::from_maybe_shared(Bytes::copy_from_slice(host)).map_err(|_| {
            ProxyError::BadRequest(crate::http::parse::ParseError::Malformed(":authority"))
        }),
    }
}

/// The client's fields that go to an HTTP/2 upstream (see [`upstream_request`]),
/// into a new map.
pub fn client_fields(
    client: &HeaderMap,
    head: &RequestHead,
    rw: &RequestRewrite,
    fields: &mut RequestFields,
) -> HeaderMap {
    let mut map = map_for(client.keys_len() + 8);
    for (name, value) in client {
        let n = name.as_str().as_bytes();
        let kind = HeaderKind::of(n);
        if kind != HeaderKind::ContentLength
            && fields.passes(kind, n, value.as_bytes())
            && fields.keeps(n, rw)
        {
            map.append(name.clone(), value.clone());
        }
    }
    // The body's length, once, as the HTTP/1.1 writer re-emits it from the parsed
    // framing (the client's own value when it is that number as written).
    if let Framing::Length(n) = head.framing {
        let mut sent = client.get_all(http::header::CONTENT_LENGTH).iter();
        let length = match (sent.next(), sent.next()) {
            (Some(v), None) if canonical_length(v.as_bytes()) => v.clone(),
            _ => HeaderValue::from(n),
        };
        map.insert(http::header::CONTENT_LENGTH, length);
    }
    map
}

/// A decimal number as this proxy writes one: digits, no leading zero.
fn canonical_length(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 19
        && v.iter().all(u8::is_ascii_digit)
        && (v == b"0" || v[0] != b'0')
}

/// The upstream's `:path`: the client's, in origin form (an absolute-form
/// `:path`, which the head parser reads as such, goes as its path and query, as
/// the HTTP/1.1 writer sends it).
pub fn path_of(
    parts: &http::request::Parts,
    head: &RequestHead,
    rbuf: &[u8],
) -> Result<http::uri::PathAndQuery, ProxyError> {
    let bad = || ProxyError::BadRequest(crate::http::parse::ParseError::Malformed(":path"));
    if head.authority.is_none() {
        return parts.uri.path_and_query().cloned().ok_or_else(bad);
    }
    let mut origin = Vec::new();
    let path = head.path.get(rbuf);
    origin.extend_from_slice(if path.is_empty() { b"/" } else { path });
    if let Some(q) = head.query {
        origin.push(b'?');
        origin.extend_from_slice(q.get(rbuf));
    }
    http::uri::PathAndQuery::from_maybe_shared(Bytes::from(origin)).map_err(|_| bad())
}

/// The client's response from an HTTP/2 upstream's head, by the rules of the
/// HTTP/1.1 response rewrite (`write_response_head`), without an HTTP/1.1 head in
/// between: connection-specific and other hop-by-hop fields dropped, a
/// Content-Length kept where the response has a body (or answers a HEAD), the
/// route's edits applied, Date added when the upstream sent none. Returns it
/// with the size its head would have as HTTP/1.1 text (the access log's figure).
pub fn downstream_response(
    up: http::response::Parts,
    is_head: bool,
    edits: &HeaderEdit,
    date: &[u8],
) -> Result<(Response<()>, u64), ProxyError> {
    let bad = |what| ProxyError::BadResponse(crate::http::parse::ParseError::Malformed(what));
    let status = up.status;
    let mut headers = up.headers;
    let code = status.as_u16();
    // (The checks of the HTTP/1.1 response parser.)
    if !(100..=599).contains(&code) {
        return Err(bad("status code outside 100-599"));
    }
    if headers.len() > crate::config::MAX_HEADERS_CAP {
        return Err(bad("too many fields"));
    }
    let bodiless = (100..200).contains(&code) || code == 204 || code == 304;
    let has_date = headers.contains_key(http::header::DATE);
    let may_drop = edits.drops_any();
    let mut drop: smallvec::SmallVec<[HeaderName; 2]> = smallvec::SmallVec::new();
    let mut length = None;
    for name in headers.keys() {
        let n = name.as_str().as_bytes();
        let gone = match HeaderKind::of(n) {
            // A HEAD's is passed on as received (and may be edited); a body's is
            // the length of what follows, once (and not edited); else none.
            HeaderKind::ContentLength if is_head => false,
            HeaderKind::ContentLength if !bodiless => {
                length = Some(name.clone());
                continue;
            }
            k => k.is_hop_by_hop(),
        };
        if gone || (may_drop && edits.drops(n)) {
            drop.push(name.clone());
        }
    }
    for name in drop {
        headers.remove(name);
    }
    if let Some(name) = length {
        let mut values = headers.get_all(&name).iter();
        let first = values.next().map(HeaderValue::as_bytes);
        let n = first.and_then(|v| parse_content_length(v).ok());
        let (Some(v), Some(n)) = (first, n) else {
            return Err(bad("Content-Length"));
        };
        let canonical = canonical_length(v);
        let mut more = 0;
        for other in values {
            more += 1;
            if parse_content_length(other.as_bytes()).ok() != Some(n) {
                return Err(bad("differing Content-Length values"));
            }
        }
        if more > 0 || !canonical {
            headers.insert(name, HeaderValue::from(n));
        }
    }
    // Whitespace around a value (malformed in HTTP/2, RFC 9113 §8.2.1): trimmed,
    // as the HTTP/1.1 parser trims it.
    for v in headers.values_mut() {
        let b = v.as_bytes();
        if matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t')) {
            let trimmed = b.trim_ascii();
            if let Ok(mut t) = HeaderValue::from_bytes(trimmed) {
                t.set_sensitive(v.is_sensitive());
                *v = t;
            }
        }
    }
    if !has_date {
        if let Ok(v) = HeaderValue::from_bytes(date) {
            headers.insert(http::header::DATE, v);
        }
    }
    for (name, value) in edits.set.iter().chain(&edits.add) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    // "HTTP/1.1 200 OK\r\n", then "name: value\r\n" each, then "\r\n".
    let reason = status.canonical_reason().unwrap_or("-");
    let mut head_len = 9 + 3 + 1 + reason.len() + 2 + 2;
    for (name, value) in &headers {
        head_len += name.as_str().len() + 2 + value.len() + 2;
    }
    let mut r = Response::new(());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok((r, head_len as u64))
}

/// An HTTP/1.1 response head (status line and fields) for an HTTP/2 response, for
/// the response rewrite that HTTP/1.1 responses go through.
pub fn h1_head_of(parts: &http::response::Parts, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("-").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: http::Request<()>, end_stream: bool) -> Result<String, ProxyError> {
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        write_head(&parts, end_stream, None, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn requests_become_http11_heads() {
        let req = http::Request::get("https://a.example:8443/p?q=1")
            .header("host", "ignored.example")
            .header("cookie", "a=1")
            .header("x-b", "2")
            .header("cookie", "c=3")
            .body(())
            .unwrap();
        assert_eq!(
            head(req, true).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nhost: a.example:8443\r\nx-b: 2\r\ncookie: a=1; c=3\r\n\r\n"
        );
        // Without :authority, Host is kept; a body without a length is chunked.
        let req = http::Request::post("/up")
            .header("host", "b.example")
            .body(())
            .unwrap();
        assert_eq!(
            head(req, false).unwrap(),
            "POST /up HTTP/1.1\r\nhost: b.example\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let req = http::Request::post("http://a/up")
            .header("content-length", "3")
            .body(())
            .unwrap();
        assert_eq!(
            head(req, false).unwrap(),
            "POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
        );
        // Whitespace around a value is malformed (RFC 9113 §8.2.1).
        for v in [" b", "b\t"] {
            let req = http::Request::get("http://a/")
                .header("x-a", v)
                .body(())
                .unwrap();
            assert!(head(req, true).is_err(), "{v:?}");
        }
    }

    #[test]
    fn an_extended_connect_becomes_a_websocket_handshake() {
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        let connect = |protocol: &'static str| {
            http::Request::builder()
                .method(http::Method::CONNECT)
                .uri("https://a.example/chat?room=1")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "the client's")
                .extension(h2::ext::Protocol::from_static(protocol))
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let mut out = Vec::new();
        write_head(&connect("websocket"), false, Some(key), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat?room=1 HTTP/1.1\r\nhost: a.example\r\nsec-websocket-version: 13\r\n\
             connection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        // Another protocol is not forwarded.
        let refused = write_head(&connect("h2c-tunnel"), false, Some(key), &mut Vec::new());
        assert!(matches!(refused, Err(ProxyError::UpgradeRefused)));
    }

    #[test]
    fn upstream_requests_get_authority_and_cookie_crumbs() {
        let head = b"POST /p?q=1 HTTP/1.1\r\nhost: up.example\r\nconnection: keep-alive\r\n\
                     te: trailers\r\ncookie: a=1; b=2;c=3\r\nx-a: 1\r\n\r\n";
        let req = request_of(head, "http").unwrap();
        assert_eq!(req.uri(), "http://up.example/p?q=1");
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "c=3"]);
        assert_eq!(req.headers()["te"], "trailers");
        assert!(!req.headers().contains_key("connection"));
        assert_eq!(req.headers()["x-a"], "1");
    }

    /// A request case for the two ways to an HTTP/2 upstream.
    struct Case {
        req: http::Request<()>,
        end_stream: bool,
        peer: &'static str,
        mode: crate::config::XffMode,
        request_id: bool,
        edits: HeaderEdit,
        host_rewrite: Option<&'static [u8]>,
        client_cert: Option<&'static [u8]>,
    }

    fn case(req: http::request::Builder) -> Case {
        Case {
            req: req.body(()).unwrap(),
            end_stream: true,
            peer: "192.0.2.1",
            mode: crate::config::XffMode::Overwrite,
            request_id: true,
            edits: HeaderEdit::default(),
            host_rewrite: None,
            client_cert: None,
        }
    }

    /// The request both ways: the client's list written as an HTTP/1.1 head,
    /// rewritten and read back (`request_of`), and rewritten as a list
    /// (`client_fields`, the tail, `upstream_request`). Fields sorted by name (a
    /// name's values in order).
    fn both_ways(c: Case) -> [(String, Vec<(String, String)>); 2] {
        use crate::http::parse::parse_request;
        use crate::http::rewrite::{
            port_line, proto_line, write_request_head, write_request_tail, Peer,
        };
        let (parts, ()) = c.req.into_parts();
        let mut rbuf = Vec::new();
        write_head(&parts, c.end_stream, None, &mut rbuf).unwrap();
        let mut spans = Vec::new();
        let limits = crate::config::Limits::default();
        let head = parse_request(&rbuf, &limits, &mut spans).unwrap().unwrap();
        let forwarding = crate::config::ForwardingConfig {
            x_forwarded_for: c.mode,
            trusted_proxies: vec![crate::config::Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8,
            }],
            request_id: c.request_id,
            request_id_header: "x-request-id".into(),
        };
        let peer = Peer::of(std::net::SocketAddr::new(c.peer.parse().unwrap(), 0));
        let port = port_line(8443);
        let rw = RequestRewrite {
            peer: &peer,
            port_line: &port,
            proto_line: proto_line(true),
            client_cert: c.client_cert,
            forwarding: &forwarding,
            edits: &c.edits,
            host_rewrite: c.host_rewrite,
            fallback_host: b"10.1.1.1:80",
        };
        let id = |o: &mut Vec<u8>| o.extend_from_slice(b"the-id");
        let mut hbuf = Vec::new();
        write_request_head(&mut hbuf, &rbuf, &head, &spans, &rw, id);
        let round_trip = request_of(&hbuf, "https").unwrap();
        let mut fields = RequestFields::new(&head, &rw);
        let map = client_fields(&parts.headers, &head, &rw, &mut fields);
        let mut tail = Vec::new();
        write_request_tail(&mut tail, &rbuf, &head, &spans, &rw, &fields, id);
        let host = rw.host(&head, &rbuf);
        let authority = authority_of(&parts, host).unwrap();
        let path = path_of(&parts, &head, &rbuf).unwrap();
        let direct = upstream_request(
            &parts,
            map,
            &tail,
            b"x-request-id",
            authority,
            path,
            "https",
        );
        assert_eq!(direct.version(), http::Version::HTTP_2);
        // The id the proxy made is not indexed by HPACK (a client's is as sent).
        for v in direct.headers().get_all("x-request-id") {
            assert_eq!(v.is_sensitive(), v == "the-id");
        }
        [round_trip, direct].map(|r| (format!("{} {}", r.method(), r.uri()), sorted(r.headers())))
    }

    /// A map's fields sorted by name (a name's values in order).
    fn sorted(map: &HeaderMap) -> Vec<(String, String)> {
        let mut fields: Vec<_> = map
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        fields.sort_by(|a: &(String, String), b| a.0.cmp(&b.0));
        fields
    }

    #[test]
    fn the_list_to_list_translation_matches_the_http11_round_trip() {
        use crate::config::XffMode;
        let grpc = || {
            http::Request::post("https://api.example:8443/svc.Echo/Say?x=1")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", "5S")
                .header("user-agent", "grpc-c/1.0")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("host", "ignored.example")
                .header("x-forwarded-for", "198.51.100.7")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "front.example")
                .header("x-custom", "v1")
                .header("x-custom", "v2")
                .header("content-length", "17")
        };
        let mut cases = vec![case(grpc())];
        // A body without a length; a trusted hop appending.
        let mut c = case(grpc());
        c.req.headers_mut().remove("content-length");
        c.end_stream = false;
        c.peer = "10.1.2.3";
        c.mode = XffMode::Append;
        cases.push(c);
        // Untrusted, appending; no request id but the client's own.
        let mut c = case(grpc().header("x-request-id", "client-id"));
        c.mode = XffMode::Append;
        c.request_id = true;
        cases.push(c);
        let mut c = case(grpc());
        c.mode = XffMode::Off;
        c.request_id = false;
        cases.push(c);
        // The route's edits and host rewrite.
        let mut c = case(grpc());
        c.edits = HeaderEdit {
            add: vec![("x-added".into(), "1".into())],
            set: vec![("x-custom".into(), "set".into())],
            remove: vec!["user-agent".into(), "Cookie".into()],
        };
        c.host_rewrite = Some(b"up.example:9000");
        cases.push(c);
        // A client certificate line: the client's own such fields go.
        let mut c = case(
            grpc()
                .header("x-forwarded-client-cert", "forged")
                .header("x_forwarded_client_cert", "forged"),
        );
        c.client_cert = Some(b"x-forwarded-client-cert: Hash=abc\r\n");
        cases.push(c);
        // An answered expectation; a GET without :authority but with Host.
        cases.push(case(
            http::Request::put("https://a.example/up")
                .header("expect", "100-continue")
                .header("content-length", "0"),
        ));
        cases.push(case(
            http::Request::get("/only-path").header("host", "h.example"),
        ));
        // One length sent twice; `OPTIONS *`. (An absolute-form :path cannot
        // come: the h2 crate refuses a :path without a leading slash.)
        cases.push(case(
            http::Request::options("*").header("host", "a.example"),
        ));
        cases.push(case(
            http::Request::post("https://a.example/up")
                .header("content-length", "5")
                .header("content-length", "005"),
        ));
        for (i, c) in cases.into_iter().enumerate() {
            let [round_trip, direct] = both_ways(c);
            assert_eq!(direct, round_trip, "case {i}");
        }
    }

    /// A response's status, its fields sorted by name, its head's length.
    type Seen = (u16, Vec<(String, String)>, u64);

    /// An HTTP/2 upstream's response both ways: through an HTTP/1.1 head and the
    /// HTTP/1.1 response rewrite, and rewritten as a list (`downstream_response`).
    /// Err: a 502.
    fn response_both_ways(
        up: http::response::Builder,
        is_head: bool,
        edits: &HeaderEdit,
    ) -> [Result<Seen, ()>; 2] {
        use crate::http::parse::parse_response;
        use crate::http::rewrite::{write_response_head, ClientFraming, ResponseRewrite};
        let date = b"Sat, 28 Nov 2026 12:00:00 GMT";
        let (parts, ()) = up.body(()).unwrap().into_parts();
        let mut h1 = Vec::new();
        h1_head_of(&parts, &mut h1);
        let mut spans = Vec::new();
        let round_trip = match parse_response(&h1, usize::MAX, is_head, &mut spans) {
            Ok(Some(head)) => {
                let framing = match head.framing {
                    Framing::Length(n) => ClientFraming::Length(n),
                    _ => ClientFraming::None {
                        keep_length: is_head,
                    },
                };
                let rw = ResponseRewrite {
                    edits,
                    framing,
                    conn: crate::http::answer::ConnHeader::None,
                    date,
                };
                let mut out = Vec::new();
                write_response_head(&mut out, &h1, &head, &spans, &rw);
                Ok((response_of(&out, head.status), out.len() as u64))
            }
            _ => Err(()),
        };
        let direct = downstream_response(parts, is_head, edits, date).map_err(|_| ());
        [round_trip, direct]
            .map(|r| r.map(|(r, len)| (r.status().as_u16(), sorted(r.headers()), len)))
    }

    #[test]
    fn the_list_response_matches_the_http11_rewrite() {
        let grpc = || {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-encoding", "identity")
                .header("x-a", "1")
                .header("x-a", "2")
        };
        let none = HeaderEdit::default();
        let edits = HeaderEdit {
            add: vec![("x-added".into(), "yes".into())],
            set: vec![("x-a".into(), "set".into())],
            remove: vec!["grpc-encoding".into(), "Content-Length".into()],
        };
        let remove_date = HeaderEdit {
            remove: vec!["date".into()],
            ..HeaderEdit::default()
        };
        let set_date = HeaderEdit {
            set: vec![("date".into(), "route".into())],
            ..HeaderEdit::default()
        };
        let dated = || grpc().header("date", "Fri, 27 Nov 2026 00:00:00 GMT");
        let cases = [
            (grpc(), false, &none),
            (grpc().header("content-length", "12"), false, &none),
            // (Not canonical, twice: one value, written as a number.)
            (
                grpc()
                    .header("content-length", "012")
                    .header("content-length", "12"),
                false,
                &none,
            ),
            (
                grpc()
                    .header("content-length", "12")
                    .header("content-length", "13"),
                false,
                &none,
            ),
            (grpc().header("content-length", "12"), false, &edits),
            (grpc().header("content-length", "12"), true, &edits),
            (grpc().header("content-length", "12"), true, &none),
            (
                grpc().status(204).header("content-length", "0"),
                false,
                &none,
            ),
            (
                grpc().status(304).header("content-length", "7"),
                false,
                &none,
            ),
            (grpc().header("trailer", "grpc-status"), false, &none),
            (dated(), false, &none),
            (dated(), false, &remove_date),
            (dated(), false, &set_date),
            (grpc(), false, &set_date),
            (grpc().header("x-b", " padded\t"), false, &none),
            (grpc().status(600), false, &none),
            (grpc().status(999), false, &none),
        ];
        for (i, (up, is_head, edits)) in cases.into_iter().enumerate() {
            let [round_trip, direct] = response_both_ways(up, is_head, edits);
            assert_eq!(direct, round_trip, "case {i}");
        }
    }

    #[test]
    fn chunks_and_the_last_chunk_with_allowed_trailers() {
        let mut out = Vec::new();
        write_chunk(&mut out, &[b'x'; 26]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("content-length", HeaderValue::from_static("9"));
        write_last_chunk(&mut out, Some(&trailers));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("1a\r\n{}\r\n0\r\ngrpc-status: 0\r\n\r\n", "x".repeat(26))
        );
        let mut out = Vec::new();
        write_last_chunk(&mut out, None);
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn response_heads_and_trailers_become_fields_without_connection_ones() {
        let r = response_of(
            b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nConnection: close\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nUpgrade: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
            201,
        );
        assert_eq!(r.status(), 201);
        let h = r.headers();
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        for gone in ["connection", "keep-alive", "transfer-encoding", "upgrade"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        let mut trailers = HeaderMap::new();
        add_fields(
            &mut trailers,
            b"grpc-status: 0\r\ngrpc-message:  ok \r\n\r\n",
        );
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");
    }
}
