//! The HTTP/2 request translation (`ringway::h2::translate::write_head`): an
//! HTTP/2 header list written as an HTTP/1.1 head, then parsed by the proxy's
//! HTTP/1.1 parser, as every HTTP/2 stream is. The input is split at NUL bytes into
//! a method, a path, an authority and field name/value pairs (each kept when the
//! `http` crate accepts it, as h2 would have); one flag byte says whether the
//! stream has a body. Beyond "no panic", for a head the parser accepts:
//! - it is all of what was written (no field can end the head early or start a
//!   second request: the smuggling property);
//! - its method is the stream's, its Host the `:authority` when there is one;
//! - every written field line is one parsed header line;
//! - its framing is the stream's: no body, a length, or chunked for a body
//!   without a length.
//! A second flag bit makes the stream an extended CONNECT for `websocket` (RFC
//! 8441), which must become a bodiless WebSocket handshake (`GET`, Upgrade).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::config::Limits;
use ringway::http::parse::{parse_request, Framing};

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|&b| b == 0);
    let (Some(method), Some(path), Some(authority)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let mut uri = http::Uri::builder().scheme("http");
    if !authority.is_empty() {
        uri = uri.authority(authority);
    }
    let Ok(uri) = uri.path_and_query(path).build() else {
        return;
    };
    let websocket = flag & 2 == 2;
    let method = match websocket {
        true => http::Method::CONNECT,
        false => method,
    };
    let mut req = http::Request::builder().method(method.clone()).uri(uri);
    if websocket {
        req = req.extension(h2::ext::Protocol::from_static("websocket"));
    }
    let mut fields = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            fields.push((n.clone(), v.clone()));
            req = req.header(n, v);
        }
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let end_stream = flag & 1 == 1;
    let mut out = Vec::new();
    let key = b"dGhlIHNhbXBsZSBub25jZQ==";
    if ringway::h2::translate::write_head(&parts, end_stream, Some(key), &mut out).is_err() {
        return;
    }
    let limits = Limits {
        max_head_bytes: 1 << 20,
        max_headers: 512,
        max_uri_bytes: 1 << 20,
        max_body_bytes: None,
    };
    let mut headers = Vec::new();
    let head = match parse_request(&out, &limits, &mut headers) {
        Ok(Some(head)) => head,
        Ok(None) => panic!("a written head is incomplete: {:?}", String::from_utf8_lossy(&out)),
        // (Refused like an HTTP/1.1 request with the same fields: 400, 501, ...)
        Err(_) => return,
    };
    let text = String::from_utf8_lossy(&out);
    assert_eq!(head.head_len, out.len(), "the head ends early: {text:?}");
    if websocket {
        assert_eq!(head.method_span.get(&out), b"GET", "{text:?}");
        assert!(head.websocket && !head.has_body(), "{text:?}");
    } else {
        assert_eq!(head.method_span.get(&out), method.as_str().as_bytes(), "{text:?}");
    }
    if let Some(a) = parts.uri.authority() {
        let host = head.host().map(|h| h.get(&out));
        assert_eq!(host, Some(a.as_str().as_bytes()), "{text:?}");
    }
    let lines = out.windows(2).filter(|w| w == b"\r\n").count() - 2;
    assert_eq!(headers.len(), lines, "{text:?}");
    let has_length =
        !websocket && fields.iter().any(|(n, _)| n == http::header::CONTENT_LENGTH);
    match head.framing {
        Framing::Chunked => assert!(!end_stream && !has_length, "{text:?}"),
        Framing::Length(_) => assert!(has_length, "{text:?}"),
        Framing::None => {
            assert!(websocket || end_stream && !has_length || has_length, "{text:?}")
        }
        Framing::CloseDelimited => panic!("a request is never close-delimited: {text:?}"),
    }
});
