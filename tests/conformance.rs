//! Conformance tables: raw request bytes -> the status the client gets (and whether
//! the connection closes), and raw upstream responses -> what the client sees.
//! Every rejected request must also never reach the upstream.

mod common;
use common::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// This status, then the connection closes.
    StatusThenClose(u16),
    /// This status, and the connection stays open.
    Status(u16),
    /// Closed without a response.
    Close,
}
use Want::*;

const REQUESTS: &[(&str, &str, Want)] = &[
    ("simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", Status(200)),
    ("leading empty line tolerated", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Status(200)),
    ("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", StatusThenClose(200)),
    ("CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", StatusThenClose(400)),
    ("TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", StatusThenClose(400)),
    ("differing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", StatusThenClose(400)),
    ("CL list differing", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", StatusThenClose(400)),
    ("CL signed", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", StatusThenClose(400)),
    ("CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", StatusThenClose(400)),
    ("CL with space inside", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nabc", StatusThenClose(400)),
    ("CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", StatusThenClose(400)),
    ("TE final not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", StatusThenClose(400)),
    ("TE unknown coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", StatusThenClose(400)),
    ("TE gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", StatusThenClose(501)),
    ("TE obfuscated", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", StatusThenClose(400)),
    ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", StatusThenClose(400)),
    ("chunk size not hex", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", StatusThenClose(400)),
    ("chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n", StatusThenClose(400)),
    ("chunk size bare LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n", StatusThenClose(400)),
    ("chunk data too long", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", StatusThenClose(400)),
    ("chunk size with space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n", StatusThenClose(400)),
    ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", StatusThenClose(400)),
    ("space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", StatusThenClose(400)),
    ("tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n", StatusThenClose(400)),
    ("bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", StatusThenClose(400)),
    ("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", StatusThenClose(400)),
    ("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", StatusThenClose(400)),
    ("NUL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", StatusThenClose(400)),
    ("control in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x0bc\r\n\r\n", StatusThenClose(400)),
    ("invalid name char", "GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", StatusThenClose(400)),
    ("missing Host", "GET / HTTP/1.1\r\n\r\n", StatusThenClose(400)),
    ("duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", StatusThenClose(400)),
    ("Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", StatusThenClose(400)),
    ("non-ASCII target", "GET /\u{00e9} HTTP/1.1\r\nHost: a\r\n\r\n", StatusThenClose(400)),
    ("bad target", "GET x HTTP/1.1\r\nHost: a\r\n\r\n", StatusThenClose(400)),
    ("garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\x7e\x03\x03\r\n\r\n", StatusThenClose(400)),
    ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", StatusThenClose(505)),
    ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", StatusThenClose(505)),
    ("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", StatusThenClose(405)),
    // An authority that is no host (it would reach logs and headers as it is).
    ("CONNECT to a quoted authority", "CONNECT a\",\"b:443 HTTP/1.1\r\nHost: h\r\n\r\n", StatusThenClose(400)),
    ("URI too long", "GET /AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: a\r\n\r\n", StatusThenClose(414)),
    ("body too large", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n", StatusThenClose(413)),
    ("client closes mid-head", "GET / HTTP/1.1\r\nHo", Close),
    ("client closes mid-body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", Close),
];

const LISTENER: &str =
    "max_uri_size = 128\nmax_request_head_size = 1024\nmax_headers = 8\nmax_body_size = 1024";
const ROUTES: &str = "[[routes]]\nmatch = { path_prefix = \"/\" }\ncluster = \"up\"\n[clusters.up]\nendpoints = [\"{up}\"]\n";

#[test]
fn request_table() {
    let up = Mock::fixed(200, "ok");
    let p = proxy(LISTENER, ROUTES, &[("up", up.addr)]);
    let mut failures = Vec::new();
    for (name, raw, want) in REQUESTS {
        let before = up.requests().len();
        let mut c = Client::connect(p.addr);
        c.send(raw.as_bytes());
        if *want == Close {
            c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let got = match c.try_read() {
            None => Close,
            Some(r) if r.header("connection").as_deref() == Some("close") => {
                c.expect_closed();
                StatusThenClose(r.status)
            }
            Some(r) => Status(r.status),
        };
        if got != *want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
        let forwarded = up.requests().len() - before;
        let should_forward = matches!(want, Status(200) | StatusThenClose(200));
        if should_forward != (forwarded == 1) {
            failures.push(format!("{name}: forwarded {forwarded} request(s) upstream"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn too_many_headers_and_large_head() {
    let up = Mock::fixed(200, "ok");
    let p = proxy(LISTENER, ROUTES, &[("up", up.addr)]);
    let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
    let r = get(p.addr, &format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n"));
    assert_eq!(r.status, 431);
    let r = get(
        p.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(1100)
        ),
    );
    assert_eq!(r.status, 431);
    assert!(up.requests().is_empty());
}

#[test]
fn smuggling_attempt_does_not_desync_the_next_request() {
    // A CL.TE attack body must never be parsed as a second request.
    let up = Mock::fixed(200, "ok");
    let p = proxy(LISTENER, ROUTES, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read();
    assert_eq!(r.status, 400);
    c.expect_closed();
    assert!(up.requests().is_empty());
    // A legitimate chunked body followed by a pipelined request: both handled, in order.
    let mut c = Client::connect(p.addr);
    c.send(b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read().status, 200);
    assert_eq!(c.read().status, 200);
    let seen = up.requests();
    assert_eq!(seen[0].body, b"abc");
    assert_eq!(seen[1].request_line(), "GET /b HTTP/1.1");
}

/// (name, raw upstream response, status the client sees or None for a broken
/// stream, body the client sees for a 200).
type ResponseCase = (&'static str, &'static [u8], Option<u16>, &'static [u8]);

/// Raw upstream responses -> what the client sees.
#[test]
fn upstream_response_table() {
    let cases: &[ResponseCase] = &[
        ("CL and TE", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Some(502), b""),
        ("differing CL", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", Some(502), b""),
        ("bad CL", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Some(502), b""),
        ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", Some(502), b""),
        ("NUL in header", b"HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n", Some(502), b""),
        ("not HTTP", b"SSH-2.0-OpenSSH\r\n\r\n", Some(502), b""),
        ("101 without upgrade", b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Some(502), b""),
        ("empty", b"", Some(502), b""),
        ("103 then 200", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Some(200), b"ok"),
        ("HTTP/1.0 CL", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", Some(200), b"ok"),
        ("bad chunk mid-body", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n", None, b""),
        ("status below 100", b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok", Some(502), b""),
        ("status 000", b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok", Some(502), b""),
        ("status above 599", b"HTTP/1.1 600 Big\r\nContent-Length: 2\r\n\r\nok", Some(502), b""),
        ("HTTP/1.0 with TE", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", Some(502), b""),
        ("chunk extensions and trailers", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nok\r\n0\r\nx-sum: 1\r\n\r\n", Some(200), b"ok"),
    ];
    let mut failures = Vec::new();
    for (name, raw, want_status, want_body) in cases {
        let bytes = raw.to_vec();
        let up = Mock::start(move |_, _| Some((bytes.clone(), true)));
        let p = proxy("", ROUTES, &[("up", up.addr)]);
        let mut c = Client::connect(p.addr);
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        match want_status {
            Some(s) => {
                let mut r = c.read();
                while (100..200).contains(&r.status) {
                    r = c.read(); // interim responses are passed on; the final one follows
                }
                if r.status != *s || (*s == 200 && r.body != *want_body) {
                    failures.push(format!("{name}: got {} {:?}", r.status, r.body_str()));
                }
            }
            None => {
                // The response started, then the upstream broke: the client sees a
                // truncated message and a close, never a well-formed end.
                let all = c.read_until_close();
                if all.ends_with(b"0\r\n\r\n") {
                    failures.push(format!(
                        "{name}: looked complete: {:?}",
                        String::from_utf8_lossy(&all)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Chunked bodies are passed on re-framed, both ways: chunk extensions are dropped,
/// and so are trailer fields that may not be trailers (Content-Length, Host, ...);
/// other trailer fields (gRPC's status, a checksum) pass.
#[test]
fn chunk_extensions_and_forbidden_trailer_fields_are_not_forwarded() {
    use std::io::{Read, Write};
    // An upstream that records each request as it came and answers with a chunked
    // body carrying both.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let raw_request = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = raw_request.clone();
    std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        // The request ends with its body's last CRLF CRLF (after the trailers).
        while !(got.windows(5).any(|w| w == b"\r\n0\r\n") && got.ends_with(b"\r\n\r\n")) {
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        *recorded.lock().unwrap() = got;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;name=\"v\"\r\nok\r\n3 ; a=b\r\n!!!\r\n0;last\r\nContent-Length: 99\r\ngrpc-status: 0\r\nHost: evil\r\n\r\n").unwrap();
        let _ = s.read(&mut chunk);
    });
    let p = proxy("", ROUTES, &[("up", up_addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n0\r\nHost: evil\r\nx-checksum: 9\r\nContent-Type: a/b\r\n\r\n");
    let all = c.read_until_close();
    let text = String::from_utf8_lossy(&all).into_owned();
    let body = &text[text.find("\r\n\r\n").expect("a head") + 4..];
    assert_eq!(
        body, "2\r\nok\r\n3\r\n!!!\r\n0\r\ngrpc-status: 0\r\n\r\n",
        "{text}"
    );
    let sent = String::from_utf8(raw_request.lock().unwrap().clone()).unwrap();
    let sent_body = &sent[sent.find("\r\n\r\n").expect("a head") + 4..];
    assert_eq!(
        sent_body, "4\r\nabcd\r\n0\r\nx-checksum: 9\r\n\r\n",
        "{sent}"
    );
}
