//! Sans-io translation between HTTP/2 header lists and HTTP/1.1 heads (RFC 9113
//! §8.2, §8.3): a request's pseudo-headers and fields written as an HTTP/1.1
//! head for the shared parser, and an HTTP/1.1 response head (as this proxy
//! renders it) or trailer section read into HTTP/2 fields. A fuzz target
//! (`fuzz/fuzz_targets/h2_translation.rs`) checks the request direction.

use crate::error::ProxyError;
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
/// it) to `map`, dropping the fields HTTP/2 forbids (RFC 9113 §8.2.2).
pub fn add_fields(map: &mut HeaderMap, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        if connection_specific(name) || name.eq_ignore_ascii_case(b"te") {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
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
    let text_end = head.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
    let mut line = head[..text_end].splitn(3, |&b| b == b' ');
    let (Some(method), Some(target)) = (line.next(), line.next()) else {
        return Err(bad());
    };
    let mut authority = None;
    let mut headers = HeaderMap::new();
    for field in head[text_end + 2..].split(|&b| b == b'\n') {
        let field = field.strip_suffix(b"\r").unwrap_or(field);
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&field[..colon], field[colon + 1..].trim_ascii());
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
                if let Ok(v) = HeaderValue::from_bytes(crumb) {
                    headers.append(http::header::COOKIE, v);
                }
            }
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority.unwrap_or(b"localhost"))
        .path_and_query(target)
        .build()
        .map_err(|_| bad())?;
    let mut req = http::Request::builder()
        .method(http::Method::from_bytes(method).map_err(|_| bad())?)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .body(())
        .map_err(|_| bad())?;
    *req.headers_mut() = headers;
    Ok(req)
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
