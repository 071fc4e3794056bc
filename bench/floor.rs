//! The floor: the least an HTTP/1.1 keep-alive proxy built on monoio 0.2.4 (and
//! httparse) can cost per request. A bare relay, same ring flags as Ringway's
//! defaults: read a request head, write it to the client's own upstream connection,
//! read the response head and its Content-Length body, write them back. No routing,
//! no header rewriting, no timeouts, no pools, no limits: everything a real proxy
//! must add. Only bodiless requests and Content-Length responses are understood.
//!
//! tuning.md section 2 measures it with callgrind next to Ringway, to show how much
//! of Ringway's cost per request is the runtime's and the parser's:
//!
//! ```sh
//! cargo bench --bench floor -- relay 127.0.0.1:18984 127.0.0.1:18980 [parse]
//! ```
//!
//! (`parse` runs httparse on both heads; without it the heads are found with a
//! memchr search.) SIGTERM ends it. Under callgrind, dump the counts first
//! (`callgrind_control -d`): valgrind does not deliver a signal to a process whose
//! only busy thread waits in `io_uring_enter`.
//!
//! Without `relay`, it measures itself: a backend thread, the relay and a client
//! doing requests over one connection on loopback, checking every response;
//! `cargo test` runs that with few requests.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Length: 5\r\n\r\nhello";

/// Where a head ends and the body length it declares (0 for requests).
fn head(buf: &[u8], parse: bool, response: bool) -> Option<(usize, usize)> {
    if parse {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let (status, hs) = if response {
            let mut r = httparse::Response::new(&mut headers);
            (r.parse(buf).ok()?, r.headers)
        } else {
            let mut r = httparse::Request::new(&mut headers);
            (r.parse(buf).ok()?, r.headers)
        };
        let httparse::Status::Complete(n) = status else {
            return None;
        };
        let len = hs
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        return Some((n, len));
    }
    let n = memchr::memmem::find(buf, b"\r\n\r\n")? + 4;
    let mut len = 0;
    if response {
        let at = memchr::memmem::find(&buf[..n], b"Content-Length: ")? + 16;
        for &b in &buf[at..n] {
            if !b.is_ascii_digit() {
                break;
            }
            len = len * 10 + (b - b'0') as usize;
        }
    }
    Some((n, len))
}

/// Reads into `buf`'s spare room until it holds a head and its body; returns their
/// length (`None`: closed or failed).
async fn read_message(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: bool,
    response: bool,
) -> Option<usize> {
    loop {
        if let Some((n, body)) = head(buf, parse, response) {
            if buf.len() >= n + body {
                return Some(n + body);
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(16 * 1024);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = s.read(std::mem::take(buf).slice_mut(len..cap)).await;
        *buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Relays one client connection's requests over its own upstream connection.
async fn serve(mut client: TcpStream, upstream: SocketAddr, parse: bool) -> Option<()> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    let mut req = Vec::with_capacity(16 * 1024);
    let mut resp = Vec::with_capacity(16 * 1024);
    loop {
        let n = read_message(&mut client, &mut req, parse, false).await?;
        let (res, r) = up.write_all(req.slice(..n)).await;
        req = r.into_inner();
        res.ok()?;
        req.drain(..n); // pipelined bytes (none from h2load or wrk) stay
        let n = read_message(&mut up, &mut resp, parse, true).await?;
        let (res, r) = client.write_all(resp.slice(..n)).await;
        resp = r.into_inner();
        res.ok()?;
        resp.drain(..n);
    }
}

fn ring() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
    let mut b = io_uring::IoUring::builder();
    b.setup_single_issuer();
    b.setup_defer_taskrun();
    b.setup_coop_taskrun();
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .uring_builder(b)
        .enable_timer()
        .build()
        .expect("io_uring runtime")
}

fn relay(listener: std::net::TcpListener, upstream: SocketAddr, parse: bool) {
    ring().block_on(async move {
        let listener = TcpListener::from_std(listener).expect("listener");
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            monoio::spawn(serve(s, upstream, parse));
        }
    });
}

/// Answers every request head with [`RESPONSE`], one thread per connection.
fn backend() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().expect("backend address");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        if s.write_all(RESPONSE).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Round trips through the relay over one connection; every response is read whole
/// and compared.
fn measure(requests: usize, parse: bool) -> f64 {
    let upstream = backend();
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let addr = l.local_addr().expect("relay address");
    std::thread::spawn(move || relay(l, upstream, parse));
    let mut c = std::net::TcpStream::connect(addr).expect("connect to relay");
    c.set_nodelay(true).expect("nodelay");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    let mut got = vec![0u8; RESPONSE.len()];
    let start = Instant::now();
    for _ in 0..requests {
        c.write_all(b"GET / HTTP/1.1\r\nHost: floor\r\nAccept: */*\r\n\r\n")
            .expect("send request");
        c.read_exact(&mut got).expect("read response");
        assert_eq!(got, RESPONSE, "relay answered something else");
    }
    start.elapsed().as_secs_f64() * 1e6 / requests as f64
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let parse = args.iter().any(|a| a == "parse");
    if args.first().map(String::as_str) == Some("relay") {
        let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: floor relay LISTEN UPSTREAM [parse]");
            std::process::exit(2);
        };
        let l = std::net::TcpListener::bind(listen).expect("bind");
        relay(l, upstream.parse().expect("upstream address"), parse);
        return;
    }
    if !monoio::utils::detect_uring() {
        // Ringway itself falls back to epoll; the floor is an io_uring figure.
        println!("floor relay: skipped, io_uring is unavailable here");
        return;
    }
    // `cargo bench` passes --bench; `cargo test` runs a short check.
    let requests = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        200
    };
    for parse in [false, true] {
        let us = measure(requests, parse);
        println!("floor relay, parse={parse}: {us:.1} us per round trip ({requests} requests, one connection)");
    }
}
