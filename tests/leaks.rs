//! File descriptors and memory return to baseline after error and timeout cases.
//! One test in its own binary, so no other test opens descriptors meanwhile.

mod common;
use common::*;
use std::io::Write;
use std::time::Duration;

const ROUTES: &str = r#"
[[routes]]
match = { path = "/ok" }
cluster = "ok"
[[routes]]
match = { path = "/slow" }
cluster = "slow"
[[routes]]
match = { path = "/refused" }
cluster = "refused"
[[routes]]
match = { path = "/blackhole" }
cluster = "blackhole"
[[routes]]
match = { path = "/truncated" }
cluster = "truncated"
[[routes]]
match = { path = "/direct" }
respond = { status = 200, body = "d" }
[clusters.ok]
endpoints = ["{ok}"]
pool_idle_timeout = "100ms"
[clusters.slow]
endpoints = ["{slow}"]
response_timeout = "100ms"
[clusters.refused]
endpoints = ["{refused}"]
[clusters.blackhole]
endpoints = ["{hole}"]
connect_timeout = "100ms"
[clusters.truncated]
endpoints = ["{truncated}"]
"#;

fn round(p: &Proxy) {
    // Successful keep-alive traffic (leaves pooled upstream connections behind).
    let mut c = Client::connect(p.addr);
    for _ in 0..5 {
        assert_eq!(c.request("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n").status, 200);
    }
    assert_eq!(
        c.request("GET /direct HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    // Upstream timeout, refusal, connect timeout, truncated body.
    assert_eq!(
        c.request("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").status,
        504
    );
    assert_eq!(
        c.request("GET /refused HTTP/1.1\r\nHost: a\r\n\r\n").status,
        502
    );
    assert_eq!(
        c.request("GET /blackhole HTTP/1.1\r\nHost: a\r\n\r\n")
            .status,
        503
    );
    // A small body cut short: read whole before the head would go out, so a clean
    // 502 on a connection that stays usable.
    assert_eq!(
        c.request("GET /truncated HTTP/1.1\r\nHost: a\r\n\r\n")
            .status,
        502
    );
    assert_eq!(
        c.request("GET /direct HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    // Malformed request, slow head (408), client vanishing mid-body and mid-head.
    assert_eq!(
        get(p.addr, "GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n").status,
        400
    );
    let mut slow = Client::connect(p.addr);
    slow.send(b"GET /ok HTTP/1.1\r\n");
    assert_eq!(slow.read().status, 408);
    let mut gone = Client::connect(p.addr);
    gone.send(b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc");
    drop(gone);
    let mut gone = Client::connect(p.addr);
    gone.stream.write_all(b"GET /ok HTTP/1.1\r\nHo").unwrap();
    drop(gone);
    // Idle connection closed by the proxy's idle timeout.
    let mut idle = Client::connect(p.addr);
    assert_eq!(
        idle.request("GET /direct HTTP/1.1\r\nHost: a\r\n\r\n")
            .status,
        200
    );
    idle.expect_closed();
}

#[test]
fn descriptors_and_memory_return_to_baseline() {
    let ok = Mock::fixed(200, "ok");
    let slow = Mock::start(|_, _| {
        std::thread::sleep(Duration::from_millis(400));
        None
    });
    let truncated = Mock::start(|_, _| {
        Some((
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab".to_vec(),
            true,
        ))
    });
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hole = Blackhole::new();
    let before_proxy = open_fds();
    let p = proxy(
        "header_timeout = \"200ms\"\nidle_timeout = \"200ms\"",
        ROUTES,
        &[
            ("ok", ok.addr),
            ("slow", slow.addr),
            ("refused", refused),
            ("hole", hole.addr),
            ("truncated", truncated.addr),
        ],
    );
    let baseline = open_fds();
    round(&p);
    eventually("descriptors back to baseline after the first round", || {
        open_fds() <= baseline
    });
    let rss_after_warmup = rss_bytes();
    for _ in 0..5 {
        round(&p);
    }
    eventually("descriptors back to baseline", || open_fds() <= baseline);
    let growth = rss_bytes().saturating_sub(rss_after_warmup);
    assert!(
        growth < 4 << 20,
        "RSS grew {} KiB over 5 rounds",
        growth >> 10
    );

    // Stopping the server with a client idle and upstream connections pooled
    // releases everything: sockets, listener, ring.
    let mut idle = Client::connect(p.addr);
    assert_eq!(
        idle.request("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    drop(p);
    idle.expect_closed();
    drop(idle);
    eventually(
        "descriptors back to the count before the proxy started",
        || open_fds() <= before_proxy,
    );
}
