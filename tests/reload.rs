//! Reloads: a new configuration replaces the running one on every core while
//! connections stay open; listeners, upstream pools and in-flight requests behave as
//! an operator of nginx or HAProxy expects.

mod common;
use common::*;
use ringway::control::ReloadError;
use ringway::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A configuration whose only route forwards to `up` and tags requests with `tag`.
fn tagged(tag: &str, up: SocketAddr, extra: &str) -> String {
    config_text(
        "drain_timeout = \"5s\"",
        "",
        &format!(
            "[[routes]]\nname = \"r-{tag}\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"web\"\n\
             request_headers = {{ set = {{ \"x-config\" = \"{tag}\" }} }}\n\
             [clusters.web]\nendpoints = [\"{up}\"]\n{extra}"
        ),
        &[],
    )
}

fn config(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn next_request_on_a_kept_alive_connection_uses_the_new_config_and_pool_is_kept() {
    let up = Mock::fixed(200, "ok");
    let server = ringway::Server::start(config(&tagged("a", up.addr, ""))).unwrap();
    let addr = server.local_addr("edge").unwrap();
    let mut c = Client::connect(addr);
    assert_eq!(c.request("GET /x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_eq!(up.last().header("x-config").as_deref(), Some("a"));
    server.reload(config(&tagged("b", up.addr, ""))).unwrap();
    assert_eq!(
        server.local_addr("edge"),
        Some(addr),
        "same socket, same port"
    );
    assert_eq!(c.request("GET /x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    let last = up.last();
    assert_eq!(last.header("x-config").as_deref(), Some("b"));
    assert_eq!(
        (last.conn, up.connections.load(Ordering::SeqCst)),
        (0, 1),
        "the pooled upstream connection of a kept endpoint is reused"
    );
}

#[test]
fn an_invalid_file_leaves_the_running_config_untouched() {
    let up = Mock::fixed(200, "ok");
    let dir = std::env::temp_dir().join(format!("ringway-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringway.toml");
    std::fs::write(&path, tagged("a", up.addr, "")).unwrap();
    let server = ringway::Server::start(Config::load(&path).unwrap()).unwrap();
    server.set_config_path(Some(path.clone()));
    let addr = server.local_addr("edge").unwrap();
    std::fs::write(
        &path,
        tagged("b", up.addr, "").replace("cluster = \"web\"", "cluster = \"nope\""),
    )
    .unwrap();
    let err = server.reload_config_file().unwrap_err();
    assert!(matches!(err, ReloadError::Config(_)), "{err}");
    assert!(
        err.to_string().starts_with("routes[0].cluster:"),
        "the error names the field: {err}"
    );
    assert_eq!(get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_eq!(up.last().header("x-config").as_deref(), Some("a"));
    // The fixed file is taken.
    std::fs::write(&path, tagged("c", up.addr, "")).unwrap();
    server.reload_config_file().unwrap();
    assert_eq!(get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_eq!(up.last().header("x-config").as_deref(), Some("c"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listeners_are_kept_added_and_removed() {
    let text = |listeners: &str, on: &str| {
        format!(
            "[runtime]\nworkers = 2\npin_workers = false\n{listeners}\n\
             [[routes]]\nname = \"on\"\nmatch = {{ listener = \"{on}\" }}\nrespond = {{ status = 200, body = \"matched\" }}\n\
             [[routes]]\nname = \"other\"\nrespond = {{ status = 200, body = \"other\" }}\n"
        )
    };
    let listener =
        |name: &str, bind: &str| format!("[[listeners]]\nname = \"{name}\"\nbind = \"{bind}\"\n");
    let first = format!(
        "{}{}",
        listener("a", "127.0.0.1:0"),
        listener("gone", "127.0.0.1:0")
    );
    let server = ringway::Server::start(config(&text(&first, "gone"))).unwrap();
    let a = server.local_addr("a").unwrap();
    let gone = server.local_addr("gone").unwrap();
    let mut kept = Client::connect(a);
    assert_eq!(
        kept.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").body_str(),
        "other"
    );
    let mut on_gone = Client::connect(gone);
    assert_eq!(
        on_gone
            .request("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            .body_str(),
        "matched"
    );
    // "a" renamed "b" on the same bind; "gone" removed; "new" added.
    let a_bind = a.to_string();
    server
        .reload(config(&text(
            &format!(
                "{}{}",
                listener("b", &a_bind),
                listener("new", "127.0.0.1:0")
            ),
            "b",
        )))
        .unwrap();
    assert_eq!(server.local_addr("b"), Some(a));
    assert_eq!(server.local_addr("gone"), None);
    // The kept connection goes on, matched by the listener's new name.
    assert_eq!(
        kept.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").body_str(),
        "matched"
    );
    // The removed listener's idle connection is closed, and its port refuses.
    on_gone.expect_closed();
    eventually("the removed listener's port is closed", || {
        TcpStream::connect(gone).is_err()
    });
    let new = server.local_addr("new").unwrap();
    assert_eq!(
        get(new, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body_str(),
        "other"
    );
}

#[test]
fn a_listener_that_cannot_be_bound_fails_the_reload_and_changes_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = Mock::fixed(200, "ok");
    let server = ringway::Server::start(config(&tagged("a", up.addr, ""))).unwrap();
    let addr = server.local_addr("edge").unwrap();
    let extra = format!(
        "[[listeners]]\nname = \"clash\"\nbind = \"{}\"\n",
        taken.local_addr().unwrap()
    );
    let err = server
        .reload(config(&tagged("b", up.addr, &extra)))
        .unwrap_err();
    assert!(matches!(err, ReloadError::Bind { .. }), "{err}");
    assert_eq!(get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert_eq!(up.last().header("x-config").as_deref(), Some("a"));
}

#[test]
fn pooled_connections_to_a_removed_endpoint_are_closed() {
    // A raw upstream: answers one request, then reports whether the proxy closed
    // the (pooled) connection.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let old = upstream.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = upstream.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .unwrap();
        let _ = tx.send(s.read(&mut buf).map(|n| n == 0).unwrap_or(false));
    });
    let new = Mock::fixed(200, "new");
    let server = ringway::Server::start(config(&tagged("a", old, ""))).unwrap();
    let addr = server.local_addr("edge").unwrap();
    assert_eq!(
        get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body_str(),
        "ok"
    );
    server.reload(config(&tagged("b", new.addr, ""))).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)),
        Ok(true),
        "the idle connection to the removed endpoint was closed"
    );
    assert_eq!(
        get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").body_str(),
        "new"
    );
}

#[test]
fn in_flight_request_finishes_on_its_snapshot() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let old = Mock::start(move |_, _| {
        let _ = rx.lock().unwrap().recv_timeout(DEADLINE);
        Some((response(200, &[], b"old"), false))
    });
    let new = Mock::fixed(200, "new");
    let server = ringway::Server::start(config(&tagged("a", old.addr, ""))).unwrap();
    let addr = server.local_addr("edge").unwrap();
    let mut busy = Client::connect(addr);
    busy.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    eventually("the request reached the old upstream", || {
        old.requests().len() == 1
    });
    server.reload(config(&tagged("b", new.addr, ""))).unwrap();
    tx.send(()).unwrap();
    let r = busy.read();
    assert_eq!((r.status, r.body_str().as_str()), (200, "old"));
    assert_eq!(r.header("connection"), None, "a reload is not a drain");
    // The same connection's next request goes by the new configuration.
    assert_eq!(
        busy.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").body_str(),
        "new"
    );
}

/// The acceptance test: 200 reloads alternating between two valid
/// configurations under continuous load, 0 failed requests.
#[test]
fn two_hundred_reloads_under_load_fail_no_request() {
    let up = Mock::fixed(200, "ok");
    let runtime = "workers = 2\ndrain_timeout = \"5s\"";
    let a = config_text(
        runtime,
        "",
        &format!(
            "[[routes]]\nname = \"a\"\nmatch = {{ path_prefix = \"/test\" }}\ncluster = \"web\"\n\
             [clusters.web]\nendpoints = [\"{}\"]\n",
            up.addr
        ),
        &[],
    );
    let b = config_text(
        runtime,
        "max_headers = 50",
        &format!(
            "[[routes]]\nname = \"health\"\nmatch = {{ path = \"/healthz\" }}\nrespond = {{ status = 200 }}\n\
             [[routes]]\nname = \"b\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"api\"\n\
             response_headers = {{ add = {{ \"x-b\" = \"1\" }} }}\n\
             [clusters.api]\nendpoints = [\"{0}\"]\nlb = \"weighted_round_robin\"\n",
            up.addr
        ),
        &[],
    );
    let (a, b) = (config(&a), config(&b));
    let server = ringway::Server::start(a.clone()).unwrap();
    let addr = server.local_addr("edge").unwrap();
    let load = Load::start(addr, b"GET /test HTTP/1.1\r\nHost: h\r\n\r\n", 6);
    for i in 0..200 {
        let next = if i % 2 == 0 { b.clone() } else { a.clone() };
        server.reload(next).unwrap();
        // Let some requests through between reloads (a count, not a time).
        load.flows(3);
    }
    let ok = load.finish().expect("every response is a 200");
    assert!(ok > 600);
}
