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
//!
//! Then the list-to-list rewrite toward an HTTP/2 upstream (`client_fields`, the
//! tail, `upstream_request`), with the X-Forwarded-* mode, a trusted or untrusted
//! peer, a host rewrite and header edits chosen by the flag's other bits: when the
//! round trip through an HTTP/1.1 head (`write_request_head`, `request_of`) makes
//! a request, the list path makes the same one (cookie crumbs compared split).
//! And the same fields as an upstream's response (`downstream_response`), with a
//! status from the flag: when the HTTP/1.1 response rewrite accepts it, the list
//! path gives the same response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::config::Limits;
use ringway::config::{Cidr, ForwardingConfig, HeaderEdit, XffMode};
use ringway::h2::translate;
use ringway::http::parse::{parse_request, parse_response, Framing, HeaderSpan, RequestHead};
use ringway::http::rewrite::{self, Peer, RequestFields, RequestRewrite};

/// A request's method, URI and fields (cookies split into crumbs), sorted by
/// name.
type Seen = (String, Vec<(String, Vec<u8>)>);

fn seen(r: &http::Request<()>) -> Seen {
    let mut fields = Vec::new();
    for (n, v) in r.headers() {
        if n == http::header::COOKIE {
            for crumb in v.as_bytes().split(|&b| b == b';').map(<[u8]>::trim_ascii) {
                if !crumb.is_empty() {
                    fields.push((n.to_string(), crumb.to_vec()));
                }
            }
        } else {
            fields.push((n.to_string(), v.as_bytes().to_vec()));
        }
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    (format!("{} {}", r.method(), r.uri()), fields)
}

/// The upstream request both ways (see the module docs).
fn both_ways(
    flag: u8,
    parts: &http::request::Parts,
    rbuf: &[u8],
    head: &RequestHead,
    spans: &[HeaderSpan],
) {
    let forwarding = ForwardingConfig {
        x_forwarded_for: [XffMode::Overwrite, XffMode::Append, XffMode::Off]
            [(flag as usize >> 2) % 3],
        trusted_proxies: vec![Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        }],
        request_id: flag & 16 == 0,
        request_id_header: "x-request-id".into(),
    };
    let peer = if flag & 32 == 0 {
        "10.1.2.3"
    } else {
        "192.0.2.1"
    };
    let peer = Peer::of(std::net::SocketAddr::new(peer.parse().unwrap(), 1));
    let edits = match flag & 64 {
        0 => HeaderEdit::default(),
        _ => HeaderEdit {
            add: vec![("x-added".into(), "1".into())],
            set: vec![("x-set".into(), "2".into())],
            remove: vec!["x-gone".into(), "cookie".into()],
        },
    };
    let port = rewrite::port_line(443);
    let rw = RequestRewrite {
        peer: &peer,
        port_line: &port,
        proto_line: rewrite::proto_line(true),
        client_cert: (flag & 128 != 0).then_some(&b"x-forwarded-client-cert: Hash=1\r\n"[..]),
        forwarding: &forwarding,
        edits: &edits,
        host_rewrite: (flag & 64 != 0).then_some(&b"up.example"[..]),
        fallback_host: b"10.9.9.9:80",
    };
    let id = |o: &mut Vec<u8>| o.extend_from_slice(b"0123");
    let mut hbuf = Vec::new();
    rewrite::write_request_head(&mut hbuf, rbuf, head, spans, &rw, id);
    let Ok(round_trip) = translate::request_of(&hbuf, "https") else {
        return;
    };
    let mut fields = RequestFields::new(head, &rw);
    let map = translate::client_fields(&parts.headers, head, &rw, &mut fields);
    let mut tail = Vec::new();
    rewrite::write_request_tail(&mut tail, rbuf, head, spans, &rw, &fields, id);
    let host = rw.host(head, rbuf);
    let authority = translate::authority_of(parts, host).expect("the round trip's authority");
    let path = translate::path_of(parts, head, rbuf).expect("the round trip's path");
    let direct =
        translate::upstream_request(parts, map, &tail, b"x-request-id", authority, path, "https");
    assert_eq!(
        seen(&direct),
        seen(&round_trip),
        "{:?}",
        String::from_utf8_lossy(&hbuf)
    );
}

/// The fields as an HTTP/2 upstream's response both ways (see the module docs).
fn response_both_ways(flag: u8, fields: &[(http::HeaderName, http::HeaderValue)]) {
    let status = [200, 204, 304, 404, 103, 599][(flag as usize >> 2) % 6];
    let mut resp = http::Response::builder().status(status);
    // (The h2 crate refuses a response with connection-specific fields.)
    let specific = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
    ];
    for (n, v) in fields
        .iter()
        .filter(|(n, _)| !specific.contains(&n.as_str()))
    {
        resp = resp.header(n, v);
    }
    let Ok(resp) = resp.body(()) else { return };
    let (parts, ()) = resp.into_parts();
    let is_head = flag & 1 == 1;
    let edits = match flag & 64 {
        0 => HeaderEdit::default(),
        _ => HeaderEdit {
            add: vec![("x-added".into(), "1".into())],
            set: vec![("date".into(), "2".into())],
            remove: vec!["x-gone".into(), "content-length".into()],
        },
    };
    let date = b"Sat, 28 Nov 2026 12:00:00 GMT";
    let mut h1 = Vec::new();
    translate::h1_head_of(&parts, &mut h1);
    let mut spans = Vec::new();
    let Ok(Some(rh)) = parse_response(&h1, usize::MAX, is_head, &mut spans) else {
        return;
    };
    let framing = match rh.framing {
        Framing::Length(n) => rewrite::ClientFraming::Length(n),
        _ => rewrite::ClientFraming::None {
            keep_length: is_head,
        },
    };
    let rw = rewrite::ResponseRewrite {
        edits: &edits,
        framing,
        conn: ringway::http::answer::ConnHeader::None,
        date,
    };
    let mut out = Vec::new();
    rewrite::write_response_head(&mut out, &h1, &rh, &spans, &rw);
    let round_trip = translate::response_of(&out, rh.status);
    let (direct, len) = translate::downstream_response(parts, is_head, &edits, date)
        .expect("the HTTP/1.1 rewrite accepted it");
    let fields = |r: &http::Response<()>| {
        let mut f: Vec<_> = r
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        f.sort_by(|a, b| a.0.cmp(&b.0));
        (r.status(), f)
    };
    let text = String::from_utf8_lossy(&out);
    assert_eq!(fields(&direct), fields(&round_trip), "{text:?}");
    assert_eq!(len, out.len() as u64, "{text:?}");
}

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
        Ok(None) => panic!(
            "a written head is incomplete: {:?}",
            String::from_utf8_lossy(&out)
        ),
        // (Refused like an HTTP/1.1 request with the same fields: 400, 501, ...)
        Err(_) => return,
    };
    let text = String::from_utf8_lossy(&out);
    assert_eq!(head.head_len, out.len(), "the head ends early: {text:?}");
    if websocket {
        assert_eq!(head.method_span.get(&out), b"GET", "{text:?}");
        assert!(head.websocket && !head.has_body(), "{text:?}");
    } else {
        assert_eq!(
            head.method_span.get(&out),
            method.as_str().as_bytes(),
            "{text:?}"
        );
    }
    if let Some(a) = parts.uri.authority() {
        let host = head.host().map(|h| h.get(&out));
        assert_eq!(host, Some(a.as_str().as_bytes()), "{text:?}");
    }
    let lines = out.windows(2).filter(|w| w == b"\r\n").count() - 2;
    assert_eq!(headers.len(), lines, "{text:?}");
    let has_length = !websocket
        && fields
            .iter()
            .any(|(n, _)| n == http::header::CONTENT_LENGTH);
    match head.framing {
        Framing::Chunked => assert!(!end_stream && !has_length, "{text:?}"),
        Framing::Length(_) => assert!(has_length, "{text:?}"),
        Framing::None => {
            assert!(
                websocket || end_stream && !has_length || has_length,
                "{text:?}"
            )
        }
        Framing::CloseDelimited => panic!("a request is never close-delimited: {text:?}"),
    }
    // (The proxy takes the HTTP/1.1 path when a Connection field names others:
    // the h2 crate refuses Connection from clients anyway.)
    if !websocket && !head.connection_names_headers {
        both_ways(flag, &parts, &out, &head, &headers);
    }
    response_both_ways(flag, &fields);
});
