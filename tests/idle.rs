//! Idle keep-alive connections give their buffers back: many of them cost little
//! memory, and each still serves its next request correctly, whether that request
//! comes before or after the release. One test in its own binary, so that no other
//! test allocates meanwhile.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const REQUEST: &[u8] = b"GET /idle HTTP/1.1\r\nHost: a\r\n\r\n";
const RESPONSE_BODY: &str = "idle-ok";

/// Sends one request and reads its whole response into a stack buffer (no per-
/// connection heap in the test process).
fn exchange(s: &mut TcpStream) {
    s.write_all(REQUEST).unwrap();
    let mut buf = [0u8; 1024];
    let mut len = 0;
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "response within the deadline");
        let n = s.read(&mut buf[len..]).unwrap();
        assert!(n > 0, "connection closed early");
        len += n;
        let text = &buf[..len];
        if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
            if len == end + 4 + RESPONSE_BODY.len() {
                let head = std::str::from_utf8(&text[..end]).unwrap();
                assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
                assert_eq!(&text[end + 4..], RESPONSE_BODY.as_bytes());
                return;
            }
        }
    }
}

#[test]
fn idle_keep_alive_connections_release_their_buffers() {
    let p = proxy(
        "release_buffers_after = \"20ms\"",
        &format!("[[routes]]\nrespond = {{ status = 200, body = \"{RESPONSE_BODY}\" }}\n"),
        &[],
    );
    // Warm up allocator and pools.
    for _ in 0..50 {
        exchange(&mut TcpStream::connect(p.addr).unwrap());
    }
    let fds = open_fds();
    let before = rss_bytes();
    const N: usize = 2000;
    let mut conns: Vec<TcpStream> = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        exchange(&mut s);
        conns.push(s);
    }
    // Every connection idles past the hold time (the stimulus here, not a
    // synchronisation: nothing below depends on the proxy having done it).
    std::thread::sleep(Duration::from_millis(100));
    let per_conn = (rss_bytes().saturating_sub(before)) / N as u64;
    // Holding a 16 KiB read buffer (one page touched) and the request future would
    // be over 8 KiB per connection.
    assert!(
        per_conn < 4096,
        "{per_conn} bytes per idle connection (before {before}, after {})",
        rss_bytes()
    );
    // Released connections serve their next request; some twice in a row, which
    // lands within the hold time.
    for (i, s) in conns.iter_mut().enumerate() {
        exchange(s);
        if i % 7 == 0 {
            exchange(s);
        }
    }
    drop(conns);
    eventually("descriptors back to baseline", || open_fds() <= fds);
}
