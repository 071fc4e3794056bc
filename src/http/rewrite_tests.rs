use super::*;
use crate::config::{Cidr, ForwardingConfig, HeaderEdit, Limits, XffMode};
use crate::http::parse::{parse_request, parse_response};

fn forwarding(mode: XffMode) -> ForwardingConfig {
    ForwardingConfig {
        x_forwarded_for: mode,
        trusted_proxies: vec![Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        }],
        request_id: true,
        request_id_header: "x-request-id".into(),
    }
}

fn rewrite(
    req: &str,
    peer: &str,
    mode: XffMode,
    edits: &HeaderEdit,
    host_rewrite: Option<&[u8]>,
) -> String {
    let mut headers = Vec::new();
    let buf = req.as_bytes();
    let head = parse_request(buf, &Limits::default(), &mut headers)
        .unwrap()
        .unwrap();
    let f = forwarding(mode);
    let peer = Peer::of(SocketAddr::new(peer.parse().unwrap(), 0));
    let rw = RequestRewrite {
        peer: &peer,
        port_line: &port_line(8080),
        proto_line: proto_line(false),
        client_cert: None,
        forwarding: &f,
        edits,
        host_rewrite,
        fallback_host: b"10.1.1.1:80",
    };
    let mut out = Vec::new();
    write_request_head(&mut out, buf, &head, &headers, &rw, |o| {
        o.extend_from_slice(b"ID")
    });
    String::from_utf8(out).unwrap()
}

#[test]
fn strips_hop_by_hop_and_normalizes_framing() {
    let req = "POST /p?q HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
               Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers, deflate\r\nTrailer: X-T\r\n\
               Upgrade: websocket\r\nTransfer-Encoding: chunked\r\nX-Keep: yes\r\n\r\n";
    let out = rewrite(
        req,
        "192.0.2.1",
        XffMode::Overwrite,
        &HeaderEdit::default(),
        None,
    );
    assert_eq!(
        out,
        "POST /p?q HTTP/1.1\r\nhost: a.example\r\nX-Keep: yes\r\ntransfer-encoding: chunked\r\n\
         te: trailers\r\nx-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: a.example\r\nx-forwarded-port: 8080\r\nx-request-id: ID\r\n\r\n"
    );
}

#[test]
fn xff_overwrite_ignores_client_values_even_from_trusted_peers() {
    let req =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n";
    let out = rewrite(
        req,
        "10.1.2.3",
        XffMode::Overwrite,
        &HeaderEdit::default(),
        None,
    );
    assert!(out.contains("x-forwarded-for: 10.1.2.3\r\n"), "{out}");
    assert!(!out.contains("6.6.6.6"));
    assert!(out.contains("x-forwarded-proto: http\r\n"));
}

#[test]
fn xff_append_only_for_trusted_peers() {
    let req = "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Host: front\r\n\r\n";
    let trusted = rewrite(
        req,
        "10.9.9.9",
        XffMode::Append,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        trusted.contains("x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.9.9.9\r\n"),
        "{trusted}"
    );
    assert!(trusted.contains("X-Forwarded-Proto: https\r\n"));
    assert!(trusted.contains("X-Forwarded-Port: 443\r\n"));
    assert!(trusted.contains("X-Forwarded-Host: front\r\n"));
    assert!(!trusted.contains("x-forwarded-proto: http\r\n"));
    let untrusted = rewrite(
        req,
        "192.0.2.7",
        XffMode::Append,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        untrusted.contains("x-forwarded-for: 192.0.2.7\r\n"),
        "{untrusted}"
    );
    assert!(!untrusted.contains("1.1.1.1"));
    assert!(untrusted.contains("x-forwarded-proto: http\r\n"));
    assert!(untrusted.contains("x-forwarded-host: a\r\n"));
    let v6 = rewrite(
        req,
        "::ffff:10.0.0.1",
        XffMode::Append,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        v6.contains("3.3.3.3, 10.0.0.1\r\n"),
        "mapped IPv4 is canonical: {v6}"
    );
}

#[test]
fn xff_off_passes_what_the_client_sent_and_adds_none() {
    let req =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n\
               X-Forwarded-Port: 443\r\nX-Forwarded-Host: front\r\nX-Keep: 1\r\n\r\n";
    let out = rewrite(req, "192.0.2.7", XffMode::Off, &HeaderEdit::default(), None);
    assert_eq!(
        out,
        "GET / HTTP/1.1\r\nhost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Port: 443\r\nX-Forwarded-Host: front\r\nX-Keep: 1\r\nx-request-id: ID\r\n\r\n"
    );
    let bare = rewrite(
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "192.0.2.7",
        XffMode::Off,
        &HeaderEdit::default(),
        None,
    );
    assert_eq!(
        bare,
        "GET / HTTP/1.1\r\nhost: a\r\nx-request-id: ID\r\n\r\n"
    );
}

#[test]
fn request_id_kept_when_present_and_edits_applied() {
    let edits = HeaderEdit {
        add: vec![("x-edge".into(), "ringway".into())],
        set: vec![("x-set".into(), "1".into())],
        remove: vec!["x-internal-token".into()],
    };
    let req = "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\nX-Internal-Token: s\r\nX-Set: old\r\n\r\n";
    let out = rewrite(
        req,
        "192.0.2.1",
        XffMode::Overwrite,
        &edits,
        Some(b"backend.internal"),
    );
    assert!(out.contains("host: backend.internal\r\n"));
    assert!(out.contains("X-Request-Id: abc\r\n"));
    assert!(!out.contains("x-request-id: ID"));
    assert!(!out.to_ascii_lowercase().contains("x-internal-token"));
    assert!(!out.contains("old"));
    assert!(out.ends_with("x-set: 1\r\nx-edge: ringway\r\n\r\n"));
    assert!(
        out.contains("x-forwarded-host: a\r\n"),
        "the client's host, not the rewrite"
    );
}

#[test]
fn absolute_form_becomes_origin_form_and_http10_gets_a_host() {
    let out = rewrite(
        "GET http://h.example:81 HTTP/1.1\r\nHost: h.example:81\r\n\r\n",
        "192.0.2.1",
        XffMode::Overwrite,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        out.starts_with("GET / HTTP/1.1\r\nhost: h.example:81\r\n"),
        "{out}"
    );
    let out = rewrite(
        "GET /x HTTP/1.0\r\n\r\n",
        "192.0.2.1",
        XffMode::Overwrite,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        out.starts_with("GET /x HTTP/1.1\r\nhost: 10.1.1.1:80\r\n"),
        "{out}"
    );
    let out = rewrite(
        "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        "192.0.2.1",
        XffMode::Overwrite,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        !out.to_ascii_lowercase().contains("expect"),
        "the proxy answers the expectation"
    );
    assert!(out.contains("content-length: 3\r\n"));
}

fn response(
    input: &str,
    is_head: bool,
    framing: ClientFraming,
    conn: ConnHeader,
    edits: &HeaderEdit,
) -> String {
    let mut headers = Vec::new();
    let buf = input.as_bytes();
    let r = parse_response(buf, 65536, is_head, &mut headers)
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    let rw = ResponseRewrite {
        edits,
        framing,
        conn,
        date: b"DATE",
    };
    write_response_head(&mut out, buf, &r, &headers, &rw);
    String::from_utf8(out).unwrap()
}

#[test]
fn response_head_rewrite() {
    let edits = HeaderEdit {
        add: vec![("strict-transport-security".into(), "max-age=1".into())],
        set: vec![],
        remove: vec!["x-backend-version".into()],
    };
    let out = response(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Backend-Version: 7\r\n\
         Transfer-Encoding: chunked\r\nX-App: a\r\n\r\n",
        false,
        ClientFraming::Chunked,
        ConnHeader::None,
        &edits,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nX-App: a\r\ntransfer-encoding: chunked\r\ndate: DATE\r\n\
         strict-transport-security: max-age=1\r\n\r\n"
    );
    let out = response(
        "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Length: 9\r\n\r\n",
        true,
        ClientFraming::None { keep_length: true },
        ConnHeader::Close,
        &HeaderEdit::default(),
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nDate: D\r\nContent-Length: 9\r\nconnection: close\r\n\r\n"
    );
    let out = response(
        "HTTP/1.0 404 \r\nContent-Length: 3\r\n\r\n",
        false,
        ClientFraming::Length(3),
        ConnHeader::KeepAlive,
        &HeaderEdit::default(),
    );
    assert_eq!(
        out,
        "HTTP/1.1 404 \r\ncontent-length: 3\r\ndate: DATE\r\nconnection: keep-alive\r\n\r\n"
    );
    // No reason at all: the status line keeps its required space; empty lines
    // before the status line are not part of it.
    let out = response(
        "\r\nHTTP/1.1 503\r\nContent-Length: 3\r\n\r\n",
        false,
        ClientFraming::Length(3),
        ConnHeader::None,
        &HeaderEdit::default(),
    );
    assert_eq!(
        out,
        "HTTP/1.1 503 \r\ncontent-length: 3\r\ndate: DATE\r\n\r\n"
    );
    // Copied in one piece only when it is an HTTP/1.1 status line ending in CRLF at
    // the start of the head.
    for input in [
        "HTTP/1.1 200 OK\nContent-Length: 3\n\n",
        "\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
    ] {
        let out = response(
            input,
            false,
            ClientFraming::Length(3),
            ConnHeader::None,
            &HeaderEdit::default(),
        );
        assert_eq!(
            out, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ndate: DATE\r\n\r\n",
            "{input:?}"
        );
    }
    let out = response(
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        false,
        ClientFraming::None { keep_length: false },
        ConnHeader::None,
        &HeaderEdit::default(),
    );
    assert_eq!(out, "HTTP/1.1 204 No Content\r\ndate: DATE\r\n\r\n");
}

#[test]
fn decimal_and_peer_text() {
    let edges = [
        0u64, 7, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 12_345, 99_999, 100_000,
    ];
    for n in edges
        .into_iter()
        .chain(0..=100_100)
        .chain([1 << 32, u64::MAX])
    {
        let mut out = b"x".to_vec();
        push_decimal(&mut out, n);
        assert_eq!(out, format!("x{n}").as_bytes());
    }
    let cases = [
        ("127.0.0.1", "127.0.0.1"),
        ("255.255.255.255", "255.255.255.255"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8::1", "2001:db8::1"),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
        ),
    ];
    for (ip, text) in cases {
        assert_eq!(
            Peer::of(SocketAddr::new(ip.parse().unwrap(), 0)).text(),
            text.as_bytes()
        );
    }
}

#[test]
fn peer_displays_as_a_socket_address_with_its_canonical_ip() {
    let cases = [
        ("10.0.0.1:5000", "10.0.0.1:5000"),
        ("[::ffff:10.1.2.3]:80", "10.1.2.3:80"),
        ("[2001:db8::1]:65535", "[2001:db8::1]:65535"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        (
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
        ),
    ];
    for (addr, shown) in cases {
        let peer = Peer::of(addr.parse().unwrap());
        assert_eq!(peer.to_string(), shown);
        assert_eq!(peer.addr_text(), shown.as_bytes());
        assert_eq!(
            peer.text(),
            shown
                .rsplit_once(':')
                .unwrap()
                .0
                .trim_matches(['[', ']'])
                .as_bytes()
        );
    }
}

/// Lines forwarded in one copy come out exactly as line-by-line writing would make
/// them: runs break at dropped lines, and lines not already in "name: value" CRLF form
/// (no space, extra spaces, a tab, a bare LF, an empty value) are normalised.
#[test]
fn forwarded_lines_are_normalised_whether_copied_in_runs_or_not() {
    let req = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nConnection: x\r\nC: 3\r\nD:4\r\nE:  5 \r\n\
               F:\t6\r\nG: 7\nH: 8\r\nI: \r\nJ:\r\nK: 9\r\nHost: h\r\nL: 10\r\n\r\n";
    let out = rewrite(
        req,
        "192.0.2.1",
        XffMode::Overwrite,
        &HeaderEdit::default(),
        None,
    );
    assert!(
        out.starts_with(
            "GET / HTTP/1.1\r\nhost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\
             G: 7\r\nH: 8\r\nI: \r\nJ: \r\nK: 9\r\nL: 10\r\nx-forwarded-for: 192.0.2.1\r\n"
        ),
        "{out}"
    );
    let resp = response(
        "HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nKeep-Alive: x\r\nC: 3\r\nD: 4\r\n\r\n",
        false,
        ClientFraming::None { keep_length: false },
        ConnHeader::KeepAlive,
        &HeaderEdit::default(),
    );
    assert_eq!(
        resp,
        "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\ndate: DATE\r\nconnection: keep-alive\r\n\r\n"
    );
}

/// With client certificates forwarded, the proxy's own line replaces whatever the
/// client sent under that name (dashes or underscores, any case).
#[test]
fn forwarded_client_cert_replaces_the_clients_own() {
    let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\
               x_forwarded_client_cert: forged2\r\nX-Keep: 1\r\n\r\n";
    let mut headers = Vec::new();
    let head = parse_request(raw.as_bytes(), &Limits::default(), &mut headers)
        .unwrap()
        .unwrap();
    let peer = Peer::of("192.0.2.1:5000".parse().unwrap());
    let forwarding = forwarding(XffMode::Overwrite);
    let edits = HeaderEdit::default();
    let port = port_line(443);
    let rw = |client_cert| RequestRewrite {
        peer: &peer,
        port_line: &port,
        proto_line: proto_line(true),
        client_cert,
        forwarding: &forwarding,
        edits: &edits,
        host_rewrite: None,
        fallback_host: b"up",
    };
    let mut out = Vec::new();
    let line: &[u8] = b"x-forwarded-client-cert: Hash=ab;Subject=\"CN=c\"\r\n";
    write_request_head(
        &mut out,
        raw.as_bytes(),
        &head,
        &headers,
        &rw(Some(line)),
        |_| {},
    );
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("forged"), "{text}");
    assert!(text.contains("x-forwarded-client-cert: Hash=ab;Subject=\"CN=c\"\r\n"));
    assert!(text.contains("x-forwarded-proto: https\r\n"));
    assert!(text.contains("X-Keep: 1\r\n"));
    // Forwarding off: the client's headers pass as received.
    let mut out = Vec::new();
    write_request_head(&mut out, raw.as_bytes(), &head, &headers, &rw(None), |_| {});
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("Hash=forged") && text.contains("forged2"),
        "{text}"
    );
}
