//! WebSocket over HTTP/1.1 through the proxy (RFC 6455): the opening handshake is
//! forwarded with its Upgrade, the upstream's `101` comes back, and the two
//! connections become a byte tunnel in both directions at once, counted in
//! `ringway_websocket_active{route}` while it is open. A route with
//! `upgrades = []` refuses the handshake (403); other upgrades are not forwarded.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

const ROUTES: &str = r#"
[[routes]]
name = "ws"
match = { path_prefix = "/ws" }
cluster = "up"
[[routes]]
name = "closed"
match = { path_prefix = "/closed" }
cluster = "up"
upgrades = []
[[routes]]
name = "plain"
match = { path_prefix = "/" }
cluster = "up"
[clusters.up]
endpoints = ["{up}"]
[admin]
bind = "127.0.0.1:0"
"#;

const HANDSHAKE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// How many bytes each side streams to the other at the same time.
const STREAM: usize = 1 << 20;

fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(i + 4);
            return (String::from_utf8_lossy(&got).into_owned(), rest);
        }
        let n = s.read(&mut chunk).expect("read a head");
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until `want` bytes (after `have`) came; returns them.
fn read_exactly(s: &mut TcpStream, mut have: Vec<u8>, want: usize) -> Vec<u8> {
    let mut chunk = [0u8; 65536];
    while have.len() < want {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed after {} of {want} bytes", have.len());
        have.extend_from_slice(&chunk[..n]);
    }
    have
}

fn pattern(tag: u8) -> Vec<u8> {
    (0..STREAM)
        .map(|i| tag.wrapping_add((i % 251) as u8))
        .collect()
}

/// A WebSocket server at the bytes level: answers the handshake with `101` and
/// some bytes of its own, then sends `pattern(b's')` while it reads the client's
/// early bytes and `pattern(b'c')`, and reports the handshake it saw and whether
/// all came.
fn upstream() -> (SocketAddr, mpsc::Receiver<(String, bool)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let (head, early) = read_head(&mut s);
                if !head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain");
                    let _ = tx.send((head, false));
                    return;
                }
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nSERVER-EARLY")
                    .unwrap();
                let mut w = s.try_clone().unwrap();
                let writer = std::thread::spawn(move || w.write_all(&pattern(b's')).is_ok());
                let mut want = b"CLIENT-EARLY".to_vec();
                want.extend_from_slice(&pattern(b'c'));
                let got = read_exactly(&mut s, early, want.len());
                let ok = writer.join().unwrap() && got == want;
                let _ = tx.send((head, ok));
                // Until the client closes (through the tunnel).
                let mut rest = [0u8; 16];
                while s.read(&mut rest).is_ok_and(|n| n > 0) {}
            });
        }
    });
    (addr, rx)
}

fn admin(addr: SocketAddr) -> String {
    get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n",
    )
    .body_str()
}

fn gauge(scrape: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix("ringway_websocket_active{route=\"ws\"} ")?
            .parse()
            .ok()
    })
}

#[test]
fn a_websocket_is_a_tunnel_both_ways_at_once() {
    let (up, seen) = upstream();
    let p = proxy("", ROUTES, &[("up", up)]);
    let admin_addr = p.server.admin_addr().unwrap();
    let mut c = TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The handshake, and the first frame's bytes right behind it.
    c.write_all(
        format!("GET /ws/chat HTTP/1.1\r\nHost: a\r\n{HANDSHAKE}\r\nCLIENT-EARLY").as_bytes(),
    )
    .unwrap();
    let (head, early) = read_head(&mut c);
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101 "), "{head}");
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    // Open while it runs.
    eventually("the tunnel counted", || {
        gauge(&admin(admin_addr)) == Some(1.0)
    });

    // Both directions stream a megabyte at the same time.
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&pattern(b'c')).is_ok());
    let mut want = b"SERVER-EARLY".to_vec();
    want.extend_from_slice(&pattern(b's'));
    let got = read_exactly(&mut c, early, want.len());
    assert!(
        got == want,
        "the client got {} bytes, not what was sent",
        got.len()
    );
    assert!(writer.join().unwrap());
    let (up_head, all_came) = seen.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(all_came, "the upstream did not get the client's bytes");
    let up_lower = up_head.to_ascii_lowercase();
    assert!(up_lower.contains("\r\nupgrade: websocket\r\n"), "{up_head}");
    assert!(
        up_lower.contains("\r\nconnection: upgrade\r\n"),
        "{up_head}"
    );
    assert!(
        up_head.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        "{up_head}"
    );
    assert!(
        up_head.contains("Sec-WebSocket-Version: 13\r\n"),
        "{up_head}"
    );

    // The client leaves: the tunnel ends and is no longer counted.
    drop(c);
    eventually("the tunnel closed", || {
        gauge(&admin(admin_addr)) == Some(0.0)
    });
}

#[test]
fn refused_and_other_upgrades() {
    let (up, seen) = upstream();
    let p = proxy("", ROUTES, &[("up", up)]);
    // A route with `upgrades = []`: 403, and the upstream never sees it.
    let mut c = Client::connect(p.addr);
    c.send(format!("GET /closed HTTP/1.1\r\nHost: a\r\n{HANDSHAKE}\r\n").as_bytes());
    assert_eq!(c.read().status, 403);
    // Another upgrade is not forwarded: the request goes on without it.
    let r = get(
        p.addr,
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    );
    assert_eq!((r.status, r.body_str().as_str()), (200, "plain"));
    let (head, _) = seen.recv_timeout(Duration::from_secs(20)).unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
    assert!(!lower.contains("upgrade"), "{head}");
    // A handshake on HTTP/1.0 is none (RFC 6455 asks for HTTP/1.1).
    let r = get(
        p.addr,
        &format!("GET /ws HTTP/1.0\r\nHost: a\r\n{HANDSHAKE}\r\n"),
    );
    assert_eq!(r.status, 200);
    let (head, _) = seen.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
}

#[test]
fn an_upstream_that_declines_answers_as_usual_and_an_unasked_101_is_a_502() {
    // Declines: a 200 to the handshake goes to the client as a response.
    let declines = Mock::fixed(200, "no websocket here");
    let p = proxy("", ROUTES, &[("up", declines.addr)]);
    let mut c = Client::connect(p.addr);
    c.send(format!("GET /ws HTTP/1.1\r\nHost: a\r\n{HANDSHAKE}\r\n").as_bytes());
    let r = c.read();
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "no websocket here")
    );
    // A 101 to a request that asked for no upgrade, or to another protocol: 502.
    let switches = Mock::start(|_, _| {
        Some((
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                .to_vec(),
            true,
        ))
    });
    let p = proxy("", ROUTES, &[("up", switches.addr)]);
    assert_eq!(
        get(p.addr, "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n").status,
        502
    );
    let mut c = Client::connect(p.addr);
    c.send(format!("GET /ws HTTP/1.1\r\nHost: a\r\n{HANDSHAKE}\r\n").as_bytes());
    assert_eq!(c.read().status, 502);
}

#[test]
fn an_idle_tunnel_ends_at_the_idle_timeout() {
    let (up, _seen) = upstream();
    let p = proxy("idle_timeout = \"300ms\"", ROUTES, &[("up", up)]);
    let mut c = TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(format!("GET /ws HTTP/1.1\r\nHost: a\r\n{HANDSHAKE}\r\n").as_bytes())
        .unwrap();
    let (head, mut got) = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // The upstream streams its megabyte, then both sides go quiet: the proxy
    // closes the tunnel (the read ends) instead of holding it open.
    let mut chunk = [0u8; 65536];
    loop {
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("the tunnel stayed open: {e}"),
        }
    }
    assert_eq!(got.len(), b"SERVER-EARLY".len() + STREAM);
}
