//! End-to-end behaviour of the HTTP/1.1 data plane: the proxy in-process on port 0,
//! mock upstreams on loopback, complete reads under deadlines.

mod common;
use common::*;
use std::io::Write;
use std::time::Duration;

const WEB: &str = r#"
[[routes]]
name = "default"
match = { path_prefix = "/" }
cluster = "web"
request_headers = { add = { "x-edge" = "ringway" }, remove = ["x-internal-token"] }
response_headers = { add = { "strict-transport-security" = "max-age=31536000" }, remove = ["x-backend-version"] }
[clusters.web]
endpoints = ["{up}"]
"#;

#[test]
fn forwards_with_rewritten_headers_both_ways() {
    let up = Mock::start(|_, _| {
        Some((
            response(
                200,
                &[
                    ("x-backend-version", "7"),
                    ("connection", "x-hop"),
                    ("x-hop", "1"),
                    ("x-app", "a"),
                ],
                b"hello",
            ),
            false,
        ))
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let r = get(
        p.addr,
        "GET /a?b=1 HTTP/1.1\r\nHost: Example.com\r\nX-Internal-Token: secret\r\nConnection: keep-alive, X-Drop\r\n\
         X-Drop: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    assert_eq!(r.header("x-app").as_deref(), Some("a"));
    assert!(r.header("x-backend-version").is_none());
    assert!(
        r.header("x-hop").is_none(),
        "named by the upstream's Connection header"
    );
    assert!(r.header("date").is_some());
    let seen = up.last();
    assert_eq!(seen.request_line(), "GET /a?b=1 HTTP/1.1");
    assert_eq!(
        seen.header("host").as_deref(),
        Some("Example.com"),
        "the client's Host is kept"
    );
    assert_eq!(seen.header("x-edge").as_deref(), Some("ringway"));
    assert!(seen.header("x-internal-token").is_none());
    assert!(seen.header("x-drop").is_none());
    assert!(seen.header("keep-alive").is_none());
    assert!(seen.header("connection").is_none());
    assert_eq!(
        seen.headers("x-forwarded-for"),
        vec!["127.0.0.1"],
        "overwritten by default"
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("Example.com")
    );
    assert_eq!(
        seen.header("x-forwarded-port"),
        Some(p.addr.port().to_string())
    );
    assert_eq!(seen.header("x-request-id").map(|v| v.len()), Some(36));
}

#[test]
fn xff_append_for_trusted_peer_and_request_id_switch() {
    let up = Mock::fixed(200, "ok");
    let rest = format!("[forwarding]\nx_forwarded_for = \"append\"\ntrusted_proxies = [\"127.0.0.0/8\"]\nrequest_id = false\n{WEB}");
    let p = proxy("", &rest, &[("up", up.addr)]);
    get(p.addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n");
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert!(seen.header("x-request-id").is_none());
}

#[test]
fn xff_off_leaves_x_forwarded_alone() {
    let up = Mock::fixed(200, "ok");
    let rest = format!("[forwarding]\nx_forwarded_for = \"off\"\nrequest_id = false\n{WEB}");
    let p = proxy("", &rest, &[("up", up.addr)]);
    get(p.addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n");
    let seen = up.last();
    assert_eq!(seen.headers("x-forwarded-for"), vec!["203.0.113.9"]);
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert!(seen.header("x-forwarded-host").is_none());
    assert!(seen.header("x-forwarded-port").is_none());
    get(p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let seen = up.last();
    assert!(seen.header("x-forwarded-for").is_none());
    assert!(seen.header("x-forwarded-proto").is_none());
    assert!(seen.header("x-request-id").is_none());
}

#[test]
fn keep_alive_reuses_both_sides_and_pipelining_keeps_order() {
    let up = Mock::start(|req, _| {
        let path = req.request_line().split(' ').nth(1).unwrap().to_string();
        Some((response(200, &[], path.as_bytes()), false))
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    for i in 0..3 {
        let r = c.request(&format!("GET /k{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.body_str(), format!("/k{i}"));
        assert!(r.header("connection").is_none());
    }
    // Three pipelined requests in one write, answered in order.
    c.send(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a\r\n\r\n");
    for i in 1..=3 {
        assert_eq!(c.read().body_str(), format!("/p{i}"));
    }
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled upstream connection"
    );
    let r = c.request("GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    c.expect_closed();
}

#[test]
fn http10_clients() {
    let up = Mock::start(|_, _| {
        Some((b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec(), false))
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    // No keep-alive: the chunked upstream body is de-chunked and delimited by close.
    let mut c = Client::connect(p.addr);
    let r = c.request("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.body, b"abcde");
    assert!(r.close_delimited);
    assert!(r.header("transfer-encoding").is_none());
    assert!(
        up.last().header("host").is_some(),
        "HTTP/1.1 upstream requests always carry Host"
    );
    // Keep-alive with a length-delimited response stays open.
    let up2 = Mock::fixed(200, "hi");
    let p2 = proxy("", WEB, &[("up", up2.addr)]);
    let mut c = Client::connect(p2.addr);
    for _ in 0..2 {
        let r = c.request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(r.body, b"hi");
        assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    }
    let r = c.request("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    c.expect_closed();
}

#[test]
fn expect_100_continue() {
    let up = Mock::echo();
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read();
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.read();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    assert!(up.last().header("expect").is_none());
}

#[test]
fn head_204_304_have_no_body() {
    let up = Mock::start(|req, _| {
        let path = req.request_line().split(' ').nth(1).unwrap();
        Some((
            match path {
                "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                "/304" => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\n\r\n".to_vec(),
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n".to_vec(),
            },
            false,
        ))
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_as(true);
    assert_eq!(r.header("content-length").as_deref(), Some("50"));
    let r = c.request("GET /204 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 204);
    let r = c.request("GET /304 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        (r.status, r.header("content-length").as_deref()),
        (304, Some("50"))
    );
    // The connection is still in sync after all three.
    c.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_as(true).status, 200);
}

#[test]
fn chunked_both_directions_with_trailers() {
    let up = Mock::start(|req, _| {
        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        out.extend_from_slice(format!("{:x}\r\n", req.body.len()).as_bytes());
        out.extend_from_slice(&req.body);
        out.extend_from_slice(b"\r\n0\r\nx-sum: 1\r\n\r\n");
        Some((out, false))
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nx-t: 1\r\n\r\n");
    let r = c.read();
    assert_eq!(r.body, b"wikipedia");
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(
        up.last().header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    // The same connection carries on.
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(c.read().body, b"ok");
}

#[test]
fn close_delimited_upstream_response() {
    let up = Mock::start(|_, _| Some((b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), true)));
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    let r = c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.body, b"until close");
    assert!(r.close_delimited);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
}

#[test]
fn large_bodies_stream_with_bounded_memory() {
    const SIZE: usize = 256 << 20;
    // Upstream: counts the upload without keeping it, then streams a download back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let mut left = SIZE;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "upload truncated");
            left -= n;
        }
        s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n").as_bytes())
            .unwrap();
        let chunk = vec![b'd'; 1 << 16];
        for _ in 0..SIZE / chunk.len() {
            s.write_all(&chunk).unwrap();
        }
    });
    let p = proxy("", WEB, &[("up", up_addr)]);
    let mut c = Client::connect(p.addr);
    let before = rss_bytes();
    let mut peak = before;
    c.send(format!("PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes());
    let chunk = vec![b'u'; 1 << 16];
    for i in 0..SIZE / chunk.len() {
        c.stream.write_all(&chunk).unwrap();
        if i % 256 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    // Read the download in pieces, never holding it.
    use std::io::Read;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.stream.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains(&format!("content-length: {SIZE}")));
    let mut left = SIZE;
    let mut buf = vec![0u8; 1 << 16];
    let mut i = 0;
    while left > 0 {
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "download truncated with {left} left");
        left -= n;
        i += 1;
        if i % 256 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 48 << 20,
        "RSS grew by {} MiB while 512 MiB passed through",
        growth >> 20
    );
}

#[test]
fn direct_responses_redirects_and_404() {
    let rest = r#"
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok\n", content_type = "text/plain" }
[[routes]]
name = "old-docs"
match = { path_prefix = "/docs-old/" }
redirect = { status = 301, location = "https://docs.example.com/" }
"#;
    let p = proxy("", rest, &[]);
    let mut c = Client::connect(p.addr);
    let r = c.request("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok\n"));
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    let r = c.request("GET /docs-old/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://docs.example.com/")
    );
    let r = c.request("GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 404);
    // A small body is discarded and the connection stays usable.
    let r = c.request("POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 200);
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_as(true);
    assert_eq!(
        (r.status, r.header("content-length").as_deref()),
        (200, Some("3"))
    );
    let r = c.request("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200);
}

/// `redirect` with URL parts: only the parts given are replaced, per request; the
/// connection stays open.
#[test]
fn redirects_replace_url_parts() {
    let rest = r#"
[[routes]]
name = "to-https"
match = { path_prefix = "/secure/" }
redirect = { status = 301, scheme = "https" }
[[routes]]
name = "moved"
match = { path_prefix = "/old" }
redirect = { status = 308, host = "new.example", path = "/new" }
response_headers = { add = { "x-moved" = "1" } }
"#;
    let p = proxy("", rest, &[]);
    let mut c = Client::connect(p.addr);
    let r = c.request("GET /secure/x?y=1 HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://a.example/secure/x?y=1")
    );
    let r = c.request("GET /secure/ HTTP/1.1\r\nHost: a.example:8080\r\n\r\n");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://a.example:8080/secure/")
    );
    let r = c.request("GET /old/page?q HTTP/1.1\r\nHost: a.example:80\r\n\r\n");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://new.example/new?q")
    );
    assert_eq!(r.header("x-moved").as_deref(), Some("1"));
    // Absolute-form request-target: its authority is the host.
    let r = c.request("GET http://b.example/secure/z HTTP/1.1\r\nHost: b.example\r\n\r\n");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://b.example/secure/z")
    );
}

#[test]
fn routes_by_header_cookie_method_to_clusters() {
    let (canary, primary, web) = (
        Mock::fixed(200, "canary"),
        Mock::fixed(200, "primary"),
        Mock::fixed(200, "web"),
    );
    let rest = r#"
[[routes]]
match = { headers = [{ name = "x-canary", exact = "true" }] }
cluster = "canary"
[[routes]]
match = { cookies = [{ name = "cohort", exact = "beta" }] }
cluster = "canary"
[[routes]]
match = { path_prefix = "/orders", methods = ["POST", "PUT", "PATCH", "DELETE"] }
cluster = "primary"
[[routes]]
match = { path_prefix = "/" }
cluster = "web"
[clusters.canary]
endpoints = ["{canary}"]
[clusters.primary]
endpoints = ["{primary}"]
[clusters.web]
endpoints = ["{web}"]
"#;
    let p = proxy(
        "",
        rest,
        &[
            ("canary", canary.addr),
            ("primary", primary.addr),
            ("web", web.addr),
        ],
    );
    let mut c = Client::connect(p.addr);
    let body = |c: &mut Client, raw: &str| c.request(raw).body_str();
    assert_eq!(
        body(
            &mut c,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Canary: true\r\n\r\n"
        ),
        "canary"
    );
    assert_eq!(
        body(
            &mut c,
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=b; cohort=beta\r\n\r\n"
        ),
        "canary"
    );
    assert_eq!(
        body(&mut c, "DELETE /orders/1 HTTP/1.1\r\nHost: a\r\n\r\n"),
        "primary"
    );
    assert_eq!(
        body(&mut c, "GET /orders/1 HTTP/1.1\r\nHost: a\r\n\r\n"),
        "web"
    );
}

#[test]
fn weighted_round_robin_and_failover() {
    let (a, b) = (Mock::fixed(200, "a"), Mock::fixed(200, "b"));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rest = r#"
[[routes]]
match = { path = "/w" }
cluster = "weighted"
[[routes]]
match = { path = "/f" }
cluster = "failover"
[clusters.weighted]
endpoints = [{ addr = "{a}", weight = 3 }, { addr = "{b}", weight = 1 }]
lb = "weighted_round_robin"
[clusters.failover]
endpoints = ["{dead}", "{b}"]
"#;
    let p = proxy("", rest, &[("a", a.addr), ("b", b.addr), ("dead", dead)]);
    let mut c = Client::connect(p.addr);
    let picks: String = (0..8)
        .map(|_| c.request("GET /w HTTP/1.1\r\nHost: x\r\n\r\n").body_str())
        .collect();
    assert_eq!(picks, "aabaaaba");
    for _ in 0..4 {
        assert_eq!(
            c.request("GET /f HTTP/1.1\r\nHost: x\r\n\r\n").body_str(),
            "b",
            "refused endpoint skipped"
        );
    }
}

#[test]
fn upstream_failures_map_to_502_503_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hole = Blackhole::new();
    let silent = Mock::start(|_, _| {
        std::thread::sleep(Duration::from_secs(3));
        None
    });
    let garbage = Mock::start(|_, _| {
        Some((
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            true,
        ))
    });
    let closer = Mock::start(|_, _| None);
    let rest = r#"
[[routes]]
match = { path = "/refused" }
cluster = "refused"
[[routes]]
match = { path = "/blackhole" }
cluster = "blackhole"
[[routes]]
match = { path = "/silent" }
cluster = "silent"
[[routes]]
match = { path = "/garbage" }
cluster = "garbage"
[[routes]]
match = { path = "/closer" }
cluster = "closer"
[clusters.refused]
endpoints = ["{dead}"]
[clusters.blackhole]
endpoints = ["{hole}"]
connect_timeout = "200ms"
[clusters.silent]
endpoints = ["{silent}"]
response_timeout = "200ms"
[clusters.garbage]
endpoints = ["{garbage}"]
[clusters.closer]
endpoints = ["{closer}"]
"#;
    let p = proxy(
        "",
        rest,
        &[
            ("dead", dead),
            ("hole", hole.addr),
            ("silent", silent.addr),
            ("garbage", garbage.addr),
            ("closer", closer.addr),
        ],
    );
    let mut c = Client::connect(p.addr);
    for (path, status) in [
        ("/refused", 502),
        ("/blackhole", 503),
        ("/silent", 504),
        ("/garbage", 502),
        ("/closer", 502),
    ] {
        let r = c.request(&format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, status, "{path}");
        assert!(
            r.header("connection").is_none(),
            "{path}: the client connection stays usable"
        );
    }
}

#[test]
fn upstream_dying_mid_body_closes_the_client() {
    // A body larger than the buffer is streamed: the client has the head when the
    // upstream dies, so it gets the truncated body and a close.
    let up = Mock::start(|_, _| {
        Some((
            b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial".to_vec(),
            true,
        ))
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let all = c.read_until_close();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("partial"), "truncated, then closed: {text}");
}

#[test]
fn small_body_is_read_whole_before_the_head_goes_out() {
    // Head and a small body in separate segments reach the client in one message;
    // an upstream dying before the small body is complete gives a clean 502.
    let up = Mock::start(|req, _| {
        if req.request_line().contains("/short") {
            Some((
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial".to_vec(),
                true,
            ))
        } else {
            Some((response(200, &[], &[b'x'; 3000]), false))
        }
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    let r = c.request("GET /whole HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 3000));
    let r = c.request("GET /short HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
    // The client's connection is still in sync.
    let r = c.request("GET /whole HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (200, 3000));
}

#[test]
fn stale_pooled_connection_is_retried_once_for_idempotent_requests() {
    // Each upstream connection answers one request, then closes on the next one
    // without answering: the proxy's pooled connection goes stale mid-request.
    let up = Mock::start(|_, n| {
        if n == 0 {
            Some((response(200, &[], b"ok"), false))
        } else {
            None
        }
    });
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    assert_eq!(c.request("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    assert_eq!(
        c.request("GET /2 HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200,
        "retried on a fresh connection"
    );
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    // POST is not idempotent and its bytes were written: no retry, 502.
    let r = c.request("POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(r.status, 502);
}

#[test]
fn small_bodies_go_with_the_head_and_are_replayed_with_it() {
    // Bodies read whole with the head leave in the head's write (upstream::INLINE_BODY).
    // Each upstream connection echoes one request's body, then closes on the next
    // request without answering: the pooled connection goes stale mid-request.
    let up = Mock::start(|req, n| (n == 0).then(|| (response(200, &[], &req.body), false)));
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    let r = c.request("PUT /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none");
    assert_eq!((r.status, r.body_str()), (200, "one".to_string()));
    // PUT is idempotent and its body is still the proxy's: replayed on a fresh
    // connection, body included.
    let r = c.request("PUT /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo");
    assert_eq!((r.status, r.body_str()), (200, "two".to_string()));
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    let bodies: Vec<_> = up.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies, [&b"one"[..], b"two", b"two"]);

    // Pipelined behind a small body: the next request starts where the body ends.
    let echo = Mock::echo();
    let p = proxy("", WEB, &[("up", echo.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(b"POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nthreePOST /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nfourGET /5 HTTP/1.1\r\nHost: a\r\n\r\n");
    for want in ["three", "four", ""] {
        let r = c.read();
        assert_eq!((r.status, r.body_str()), (200, want.to_string()));
    }
    let lines: Vec<_> = echo
        .requests()
        .iter()
        .map(|r| r.request_line().to_string())
        .collect();
    assert_eq!(
        lines,
        ["POST /3 HTTP/1.1", "POST /4 HTTP/1.1", "GET /5 HTTP/1.1"]
    );
}

#[test]
fn pooled_connection_closed_by_backend_is_not_reused() {
    // The backend closes every connection right after answering, without saying so.
    let up = Mock::start(|_, _| Some((response(200, &[], b"ok"), true)));
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    for i in 0..3 {
        assert_eq!(
            c.request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
                .status,
            200,
            "request {i}"
        );
        // Wait until the backend's FIN has reached the proxy's pooled socket.
        eventually("pooled socket in CLOSE_WAIT", || {
            close_wait_to(up.addr.port()) >= 1
        });
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn slow_head_gets_408_and_idle_connections_close() {
    let p = proxy(
        "header_timeout = \"300ms\"\nidle_timeout = \"300ms\"",
        "[[routes]]\nrespond = { status = 200 }\n",
        &[],
    );
    let mut c = Client::connect(p.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let r = c.read();
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    c.expect_closed();
    // Idle after a response: closed silently.
    let mut c = Client::connect(p.addr);
    assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    c.expect_closed();
}

#[test]
fn limits_431_414_413() {
    let up = Mock::echo();
    let p = proxy(
        "max_request_head_size = 2048\nmax_headers = 10\nmax_uri_size = 256\nmax_body_size = 16",
        WEB,
        &[("up", up.addr)],
    );
    let r = get(
        p.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(3000)
        ),
    );
    assert_eq!(r.status, 431);
    let many: String = (0..11).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        get(p.addr, &format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).status,
        431
    );
    assert_eq!(
        get(
            p.addr,
            &format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(300))
        )
        .status,
        414
    );
    assert_eq!(
        get(
            p.addr,
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n"
        )
        .status,
        413
    );
    let r = get(p.addr, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n");
    assert_eq!(r.status, 413, "chunked body over the limit");
    let ok = get(
        p.addr,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16\r\n\r\n0123456789abcdef",
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn drain_closes_idle_connections_and_finishes_in_flight_requests_with_connection_close() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let up = Mock::start(move |req, _| {
        if req.request_line().contains("/slow") {
            let _ = rx.lock().unwrap().recv_timeout(DEADLINE);
        }
        Some((response(200, &[], b"done"), false))
    });
    // A drain timeout far beyond the client's read deadline: an idle connection
    // that were only closed by it would fail `expect_closed`. Three listeners put
    // their idle connections in the three kinds of idle wait: holding the buffer
    // (release_buffers_after 30 s), released (1 ms: released by the time of the
    // drain, or else still holding), and a plain read (hold past the idle timeout).
    let listeners = "[[listeners]]\nname = \"quick\"\nbind = \"127.0.0.1:0\"\nrelease_buffers_after = \"1ms\"\n\
                     [[listeners]]\nname = \"long\"\nbind = \"127.0.0.1:0\"\nrelease_buffers_after = \"2m\"\n";
    let p = proxy_with(
        "drain_timeout = \"60s\"",
        "release_buffers_after = \"30s\"",
        &format!("{WEB}\n{listeners}"),
        &[("up", up.addr)],
    );
    let mut idle: Vec<Client> = ["edge", "quick", "long"]
        .iter()
        .map(|name| {
            let mut c = Client::connect(p.server.local_addr(name).unwrap());
            let r = c.request("GET /fast HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(r.header("connection").is_none());
            c
        })
        .collect();
    idle.push(Client::connect(p.addr)); // accepted, no request yet
    let mut busy = Client::connect(p.addr);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    eventually("request reached the upstream", || up.requests().len() == 4);
    p.server.drain();
    eventually("listener closed", || {
        std::net::TcpStream::connect(p.addr).is_err()
    });
    // Idle connections are closed at once, whatever the wait they were in.
    for c in &mut idle {
        c.expect_closed();
    }
    // The request in flight finishes, with Connection: close.
    tx.send(()).unwrap();
    let r = busy.read();
    assert_eq!(
        (r.status, r.header("connection").as_deref()),
        (200, Some("close"))
    );
    busy.expect_closed();
    p.server.join();
}

#[test]
fn drain_timeout_ends_idle_connections() {
    let text = "[runtime]\nworkers = 1\npin_workers = false\ndrain_timeout = \"300ms\"\n\
                [[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\n\
                [[routes]]\nrespond = { status = 200 }\n";
    let server = ringway::Server::start(ringway::Config::from_toml(text).unwrap()).unwrap();
    let mut idle = Client::connect(server.local_addr("edge").unwrap());
    assert_eq!(
        idle.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    server.drain();
    server.join(); // returns once the 300 ms drain timeout has passed
    idle.expect_closed();
}

#[test]
fn host_rewrite_and_absolute_form() {
    let up = Mock::fixed(200, "ok");
    let rest = r#"
[[routes]]
match = { host = "*.example.com" }
cluster = "web"
host_rewrite = "backend.internal"
[[routes]]
cluster = "web"
[clusters.web]
endpoints = ["{up}"]
"#;
    let p = proxy("", rest, &[("up", up.addr)]);
    get(p.addr, "GET /x HTTP/1.1\r\nHost: shop.example.com\r\n\r\n");
    let seen = up.last();
    assert_eq!(seen.header("host").as_deref(), Some("backend.internal"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("shop.example.com")
    );
    // absolute-form: routed by the target's authority, sent upstream in origin-form.
    get(
        p.addr,
        "GET http://a.example.com/p?q HTTP/1.1\r\nHost: ignored.org\r\n\r\n",
    );
    let seen = up.last();
    assert_eq!(seen.request_line(), "GET /p?q HTTP/1.1");
    assert_eq!(seen.header("host").as_deref(), Some("backend.internal"));
}

#[test]
fn head_and_body_arriving_byte_by_byte() {
    let up = Mock::echo();
    let p = proxy("", WEB, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    for b in b"POST /slowly HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" {
        c.send(&[*b]);
    }
    let r = c.read();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
}

#[test]
fn several_workers_share_the_port() {
    let up = Mock::fixed(200, "ok");
    let text = format!(
        "[runtime]\nworkers = 2\npin_workers = false\n[[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\n\
         [[routes]]\ncluster = \"web\"\n[clusters.web]\nendpoints = [\"{}\"]\n",
        up.addr
    );
    let server = ringway::Server::start(ringway::Config::from_toml(&text).unwrap()).unwrap();
    assert_eq!(server.drivers().len(), 2);
    let addr = server.local_addr("edge").unwrap();
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(addr)).collect();
    for c in &mut clients {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    }
    // Requests went one at a time, so each worker reused its own pooled upstream
    // connection: at most one per worker, never one per client.
    let conns = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&conns), "{conns} upstream connections");
}

#[test]
fn response_head_larger_than_the_room_before_the_body() {
    // The rewritten head goes in front of the first body bytes when it fits in the
    // room kept there; a response-header edit of 2 KB does not fit, so the head and
    // the body go out in two writes. Both must give the same bytes on the wire.
    let big = "b".repeat(2000);
    let up = Mock::start(|req, _| {
        if req.request_line().contains("/chunked") {
            Some((
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                    .to_vec(),
                false,
            ))
        } else if req.request_line().contains("/empty") {
            Some((response(200, &[], b""), false))
        } else {
            Some((response(200, &[("x-app", "a")], b"hello"), false))
        }
    });
    let rest = format!(
        "[[routes]]\nmatch = {{ path_prefix = \"/big\" }}\ncluster = \"web\"\n\
         response_headers = {{ add = {{ \"x-big\" = \"{big}\" }} }}\n\
         [[routes]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"web\"\n\
         [clusters.web]\nendpoints = [\"{{up}}\"]\n"
    );
    let p = proxy("", &rest, &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    for path in [
        "/big",
        "/small",
        "/big/chunked",
        "/chunked",
        "/big/empty",
        "/big",
    ] {
        let r = c.request(&format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_eq!(r.status, 200, "{path}");
        let want: &[u8] = if path.ends_with("empty") {
            b""
        } else {
            b"hello"
        };
        assert_eq!(r.body, want, "{path}");
        assert_eq!(
            r.header("x-big").is_some_and(|v| v == big),
            path.starts_with("/big"),
            "{path}"
        );
    }
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the upstream connection stayed in sync"
    );
}

#[test]
fn response_timeout_bounds_a_head_that_trickles_in() {
    // The upstream sends its head a byte at a time, forever: response_timeout counts
    // from the request sent, not from each piece.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        let stop = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < stop {
            // The pace of the trickle (the stimulus), not a synchronisation.
            std::thread::sleep(Duration::from_millis(20));
            if s.write_all(b"x").is_err() {
                return;
            }
        }
    });
    let rest = "[[routes]]\ncluster = \"web\"\n[clusters.web]\nendpoints = [\"{up}\"]\nresponse_timeout = \"300ms\"\n";
    let p = proxy("", rest, &[("up", addr)]);
    let started = std::time::Instant::now();
    let r = get(p.addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "504 after {:?}: the deadline was extended by each piece",
        started.elapsed()
    );
}

#[test]
fn a_second_drain_does_not_cut_the_first_short() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let up = Mock::start(move |_, _| {
        let _ = rx.lock().unwrap().recv_timeout(DEADLINE);
        Some((response(200, &[], b"done"), false))
    });
    let p = proxy_with("drain_timeout = \"60s\"", "", WEB, &[("up", up.addr)]);
    let mut busy = Client::connect(p.addr);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    eventually("request reached the upstream", || up.requests().len() == 1);
    p.server.drain();
    p.server.drain(); // a retried POST /drain, or SIGTERM after it
    tx.send(()).unwrap();
    let r = busy.read();
    assert_eq!(
        (r.status, r.header("connection").as_deref()),
        (200, Some("close"))
    );
    p.server.join();
}

#[test]
fn http1_clients_and_upstreams_stream_both_ways() {
    use std::io::Read;
    let up = streaming_upstream();
    let p = proxy("", WEB, &[("up", up)]);
    // The upstream echoes each piece as it comes, and the client sends the next
    // only once the last came back: half duplex would wait for the body's end.
    for chunked in [true, false] {
        let mut c = Client::connect(p.addr);
        let (framing, pieces) = match chunked {
            true => (
                "transfer-encoding: chunked",
                ["5\r\nfirst\r\n", "6\r\nsecond\r\n", "0\r\n\r\n"],
            ),
            false => ("content-length: 16", ["first", "second", "third"]),
        };
        let head = format!("POST /echo HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n");
        let text = echo_piece_by_piece(&mut c.stream, &head, &pieces);
        assert!(text.starts_with("http/1.1 200 "), "{text}");
        // (The response started before the body was all sent: the connection
        // closes after it.)
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(text.contains("\r\nstrict-transport-security: "), "{text}");
        let mut rest = Vec::new();
        let _ = c.stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    // A response that ends before the body does: the client gets it whole and the
    // connection closes (the rest of the body is not read).
    let mut c = Client::connect(p.addr);
    c.send(b"POST /short HTTP/1.1\r\nHost: a\r\ncontent-length: 1000000\r\n\r\nfirst");
    let all = String::from_utf8_lossy(&c.read_until_close()).to_ascii_lowercase();
    assert!(all.starts_with("http/1.1 200 "), "{all}");
    assert!(all.contains("\r\nconnection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\ndone"), "{all}");
    // A body that went up whole before the answer keeps both connections: sent
    // with its head, and after it in pieces (neither small enough to go up in
    // the head's write).
    let mut c = Client::connect(p.addr);
    let body = vec![b'b'; 5000];
    for whole in [true, false, true] {
        let head = "POST /sink HTTP/1.1\r\nHost: a\r\ncontent-length: 5000\r\n\r\n";
        let mut raw = head.as_bytes().to_vec();
        if whole {
            raw.extend_from_slice(&body);
            c.send(&raw);
        } else {
            c.send(&raw);
            c.send(&body[..1000]);
            c.send(&body[1000..]);
        }
        let r = c.read();
        assert_eq!((r.status, r.body_str().as_str()), (200, "5000"));
        assert_eq!(r.header("connection"), None);
    }
}

#[test]
fn an_upstream_answering_during_the_upload_is_answered_not_502() {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let (up, done) = early_upstream();
    let p = proxy("", WEB, &[("up", up)]);
    for (path, status) in [("/close", 413), ("/hold", 401)] {
        let mut c = std::net::TcpStream::connect(p.addr).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        // A body far larger than any socket buffer, still going up when the
        // answer comes.
        let total = 64 << 20;
        c.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut w = c.try_clone().unwrap();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = sent.clone();
        let writer = std::thread::spawn(move || {
            let piece = vec![b'x'; 64 << 10];
            while counted.load(Ordering::SeqCst) < total && w.write_all(&piece).is_ok() {
                counted.fetch_add(piece.len(), Ordering::SeqCst);
            }
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut sent_at_head = None;
        // The whole response, then the end of the connection: the proxy closes
        // lingering (its writing side, then it drops what still comes), so the
        // client is not reset before it read the answer.
        loop {
            match c.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("{path}: {e} after {:?}", String::from_utf8_lossy(&got)),
            }
            if sent_at_head.is_none() && got.windows(4).any(|w| w == b"\r\n\r\n") {
                sent_at_head = Some(sent.load(Ordering::SeqCst));
            }
        }
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(
            text.starts_with(&format!("http/1.1 {status} ")),
            "{path}: {text}"
        );
        assert!(text.ends_with("\r\n\r\nnot this"), "{path}: {text}");
        // The rest of the request is never read: the connection closes.
        assert!(text.contains("\r\nconnection: close\r\n"), "{path}: {text}");
        let _ = c.shutdown(std::net::Shutdown::Both);
        writer.join().unwrap();
        assert!(
            sent_at_head.is_some_and(|n| n < total),
            "{path}: the whole body went up first"
        );
    }
    // A 200 that comes early, from an upstream still reading, lets the upload go on.
    let total = 8 << 20;
    let mut c = std::net::TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(
        format!("POST /stream HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&vec![b'x'; total]).is_ok());
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // (Up to the last chunk after the size line.)
    while !(got.windows(4).any(|w| w == b"got ") && got.ends_with(b"\r\n0\r\n\r\n")) {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.contains(&format!("got {total}")), "{text}");
    assert!(writer.join().unwrap());
    drop(done);
}
