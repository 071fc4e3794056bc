//! HTTP/2 on the client side (RFC 9113): with prior knowledge on a cleartext
//! listener (`http2 = true`) and by ALPN on a TLS listener, each stream routed and
//! forwarded to an HTTP/1.1 upstream like an HTTP/1.1 request; flow control per
//! stream; GOAWAY on drain and, with ENHANCE_YOUR_CALM, on floods (raw frames).
//! The client is the `h2` crate's, on a tokio runtime of the test's own.

mod common;
use bytes::Bytes;
use common::*;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const ROUTES: &str = r#"
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok" }
[[routes]]
name = "only-a"
match = { host = "a.example", path_prefix = "/only-a" }
respond = { status = 200, body = "host a" }
[[routes]]
name = "up"
match = { path_prefix = "/up" }
cluster = "up"
response_headers = { add = { "x-via" = "ringway" } }
[clusters.up]
endpoints = ["{up}"]
[admin]
bind = "127.0.0.1:0"
"#;

/// Runs `f` on a fresh current-thread runtime, within the test deadline.
fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("the test's deadline")
    })
}

/// An HTTP/2 client connection with prior knowledge.
async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    handshake(tcp).await
}

async fn handshake<T>(io: T) -> h2::client::SendRequest<Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    // (A connection window larger than a stream's, as browsers have: a stream the
    // client does not read must not stop the others.)
    let (send, conn) = h2::client::Builder::new()
        .initial_connection_window_size(16 << 20)
        .handshake(io)
        .await
        .expect("h2 handshake");
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    send
}

struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

/// Sends a request (with `body` as DATA frames when given) and reads the whole
/// response, releasing flow-control capacity as it reads.
async fn request(
    send: &mut h2::client::SendRequest<Bytes>,
    req: http::Request<()>,
    body: Option<&[u8]>,
) -> Result<Got, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (resp, mut stream) = send.send_request(req, body.is_none())?;
    if let Some(body) = body {
        for piece in body.chunks(10_000) {
            stream.reserve_capacity(piece.len());
            let mut left = Bytes::copy_from_slice(piece);
            while !left.is_empty() {
                let n = std::future::poll_fn(|c| stream.poll_capacity(c))
                    .await
                    .expect("capacity")?;
                let chunk = left.split_to(n.min(left.len()));
                stream.send_data(chunk, false)?;
            }
        }
        stream.send_data(Bytes::new(), true)?;
    }
    let resp = resp.await?;
    let (parts, mut recv) = resp.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        body.extend_from_slice(&chunk);
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let trailers = recv.trailers().await?;
    Ok(Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        trailers,
    })
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://a.example{path}"))
        .body(())
        .unwrap()
}

/// A mock upstream that answers `/up/...` by echoing the request's head in
/// `x-head` lines, its body as the body; `/up/chunked` with a chunked body and a
/// trailer; `/up/big` with `BIG` bytes.
const BIG: usize = 4 << 20;

fn upstream() -> Mock {
    Mock::start(|req, _| {
        let path = req.head.split(' ').nth(1).unwrap_or("").to_string();
        let bytes = if path == "/up/chunked" {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\ncontent-length: 99\r\n\r\n".to_vec()
        } else if path == "/up/big" {
            response(200, &[], &vec![b'b'; BIG])
        } else {
            let head = req.head.replace("\r\n", "|");
            response(
                200,
                &[
                    ("x-head", &head),
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                ],
                &req.body,
            )
        };
        Some((bytes, false))
    })
}

#[test]
fn prior_knowledge_streams_are_routed_forwarded_and_answered() {
    let up = upstream();
    let p = proxy("http2 = true", ROUTES, &[("up", up.addr)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let mut c = connect(p.addr).await;
        // A direct answer, and a route that matches :authority as Host.
        let r = request(&mut c, get("/healthz"), None).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        let r = request(&mut c, get("/only-a"), None).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"host a"[..]));
        // No route.
        let other = http::Request::get("http://b.example/only-a")
            .body(())
            .unwrap();
        assert_eq!(request(&mut c, other, None).await.unwrap().status, 404);

        // Forwarded: the upstream gets HTTP/1.1 with Host from :authority, the
        // cookie crumbs joined, X-Forwarded-*, and a body framed by its length.
        let req = http::Request::post("http://a.example/up/echo?q=1")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("content-length", "5")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let r = request(&mut c, req, Some(b"hello")).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        let head = r.headers["x-head"].to_str().unwrap().to_string();
        assert!(head.starts_with("POST /up/echo?q=1 HTTP/1.1|"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("|host: a.example|"), "{head}");
        assert!(lower.contains("|cookie: a=1; b=2|"), "{head}");
        assert!(lower.contains("|x-forwarded-for: 127.0.0.1|"), "{head}");
        assert!(lower.contains("|x-forwarded-proto: http|"), "{head}");
        assert!(lower.contains("|content-length: 5|"), "{head}");
        // Connection-specific fields of the response are not passed on; the
        // route's response edits are.
        assert!(!r.headers.contains_key("connection"));
        assert!(!r.headers.contains_key("keep-alive"));
        assert_eq!(r.headers["x-via"], "ringway");

        // A body without a length goes upstream chunked.
        let req = http::Request::put("http://a.example/up/echo")
            .body(())
            .unwrap();
        let body = vec![b'x'; 100_000];
        let r = request(&mut c, req, Some(&body)).await.unwrap();
        assert_eq!(r.body.len(), body.len());
        let head = r.headers["x-head"].to_str().unwrap().to_ascii_lowercase();
        assert!(head.contains("|transfer-encoding: chunked|"), "{head}");

        // A chunked response: DATA de-chunked, its trailer fields as trailers
        // (those allowed in trailers only).
        let r = request(&mut c, get("/up/chunked"), None).await.unwrap();
        assert_eq!(&r.body[..], b"hello world");
        let trailers = r.trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "abc");
        assert!(!trailers.contains_key("content-length"));

        // HEAD: no body.
        let req = http::Request::head("http://a.example/healthz")
            .body(())
            .unwrap();
        let r = request(&mut c, req, None).await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
    }));
    // Every request went over the one connection, as HTTP/1.1 upstream.
    let requests = up.requests();
    let lines: Vec<_> = requests
        .iter()
        .map(|r| r.head.lines().next().unwrap().to_string())
        .collect();
    assert_eq!(requests.len(), 3, "{lines:?}");
    for r in requests {
        assert!(
            r.head.lines().next().unwrap().ends_with(" HTTP/1.1"),
            "{}",
            r.head
        );
    }
}

#[test]
fn http1_still_works_on_an_http2_listener_and_the_preface_is_no_request_without_it() {
    let up = upstream();
    let p = proxy("http2 = true", ROUTES, &[("up", up.addr)]);
    let r = common::get(p.addr, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.body_str().as_str()), (200, "ok"));
    let plain = proxy("", ROUTES, &[("up", up.addr)]);
    let mut s = TcpStream::connect(plain.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 505 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn many_streams_at_once_and_a_stalled_one_does_not_stop_the_others() {
    let up = upstream();
    let p = proxy("http2 = true", ROUTES, &[("up", up.addr)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let c = connect(p.addr).await;
        // A big download that the client does not read: its stream's window
        // fills and the proxy stops sending on it.
        let mut stalled_send = c.clone().ready().await.unwrap();
        let (stalled, _) = stalled_send.send_request(get("/up/big"), true).unwrap();
        let stalled = stalled.await.unwrap();
        assert_eq!(stalled.status(), 200);
        // Meanwhile 64 requests at once on the same connection all complete.
        let mut tasks = Vec::new();
        for i in 0..64 {
            let mut c = c.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let body = format!("request {i}");
                let req = http::Request::post("http://a.example/up/echo")
                    .header("content-length", body.len().to_string())
                    .body(())
                    .unwrap();
                let r = request(&mut c, req, Some(body.as_bytes())).await.unwrap();
                assert_eq!(r.body, body.as_bytes());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The stalled stream still completes once read.
        let mut recv = stalled.into_body();
        let mut n = 0;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            n += chunk.len();
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        assert_eq!(n, BIG);
    }));
}

#[test]
fn failures_get_their_status() {
    // An endpoint that refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let p = proxy(
        "http2 = true\nmax_request_head_size = \"4KiB\"\nmax_uri_size = \"1KiB\"",
        ROUTES,
        &[("up", dead)],
    );
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let mut c = connect(p.addr).await;
        assert_eq!(
            request(&mut c, get("/up/x"), None).await.unwrap().status,
            502
        );
        // A header list over the head limit.
        let big = http::Request::get("http://a.example/healthz")
            .header("x-big", "v".repeat(8000))
            .body(())
            .unwrap();
        assert_eq!(request(&mut c, big, None).await.unwrap().status, 431);
        // The connection still serves.
        assert_eq!(
            request(&mut c, get("/healthz"), None).await.unwrap().status,
            200
        );
    }));
}

#[test]
fn tls_negotiates_h2_by_alpn_and_http1_still_works() {
    let dir = certs::TempDir::new();
    let ca = certs::ca("h2 test ca");
    let cert = certs::signed(
        &ca,
        &["a.example"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (c, k) = cert.write(&dir, "a");
    let up = upstream();
    let tls = format!("tls = {{ certificates = [ {{ cert = \"{c}\", key = \"{k}\" }} ] }}");
    let p = proxy(&tls, ROUTES, &[("up", up.addr)]);
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = |alpn: &[&[u8]]| {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    };
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let name = rustls::pki_types::ServerName::try_from("a.example").unwrap();
        // ALPN h2 (offered first, as browsers do).
        let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config(&[b"h2", b"http/1.1"]))
            .connect(name.clone(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut c = handshake(tls).await;
        let req = http::Request::post("https://a.example/up/echo")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let r = request(&mut c, req, Some(b"abc")).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"abc"[..]));
        let head = r.headers["x-head"].to_str().unwrap().to_ascii_lowercase();
        assert!(head.contains("|x-forwarded-proto: https|"), "{head}");
        let big = request(&mut c, get("/up/big"), None).await.unwrap();
        assert_eq!(big.body.len(), BIG);
        // ALPN http/1.1: HTTP/1.1 as before.
        let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config(&[b"http/1.1"]))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got).await;
        assert!(got.starts_with(b"HTTP/1.1 200 "));
    }));
}

#[test]
fn drain_sends_goaway_and_open_streams_finish() {
    // The upstream holds its answer until the test lets it go.
    let (release, wait) = mpsc::channel::<()>();
    let wait = Arc::new(Mutex::new(wait));
    let up = Mock::start(move |_, _| {
        let _ = wait.lock().unwrap().recv_timeout(DEADLINE);
        Some((response(200, &[], b"late"), false))
    });
    let p = proxy("http2 = true", ROUTES, &[("up", up.addr)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let c = connect(p.addr).await;
        let mut slow = c.clone();
        let open =
            tokio::task::spawn_local(
                async move { request(&mut slow, get("/up/slow"), None).await },
            );
        // Until the request reached the upstream.
        while up.requests().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p.server.drain();
        // The GOAWAY arrives: new streams are refused by the client itself.
        let mut c2 = c.clone();
        let mut refused = false;
        for _ in 0..400 {
            if request(&mut c2, get("/healthz"), None).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused, "no GOAWAY after the drain");
        // The open stream completes.
        release.send(()).unwrap();
        let r = open.await.unwrap().unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"late"[..]));
    }));
    let scrape = metrics(&p);
    assert!(
        scrape.contains("ringway_h2_goaway_total{reason=\"shutdown\"} 1"),
        "{scrape}"
    );
}

fn metrics(p: &Proxy) -> String {
    common::get(
        p.server.admin_addr().unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n",
    )
    .body_str()
}

// ----------------------------------------------------------------- floods

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Sends `flood` after the preface and an empty SETTINGS frame, then reads
/// frames until a GOAWAY; its error code.
fn goaway_after(addr: SocketAddr, flood: &[u8]) -> u32 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend_from_slice(flood);
    // (The server may close before it read everything: a failed write is fine.)
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = s.write_all(&out);
        })
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let code = loop {
        // Whole frames in `buf`: look for a GOAWAY (type 7).
        let mut at = 0;
        let mut found = None;
        while buf.len() >= at + 9 {
            let len = (buf[at] as usize) << 16 | (buf[at + 1] as usize) << 8 | buf[at + 2] as usize;
            if buf.len() < at + 9 + len {
                break;
            }
            if buf[at + 3] == 7 {
                let p = &buf[at + 9..at + 9 + len];
                found = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
                break;
            }
            at += 9 + len;
        }
        if let Some(code) = found {
            break code;
        }
        let n = s.read(&mut chunk).expect("read until a GOAWAY");
        assert!(n > 0, "closed without a GOAWAY");
        buf.extend_from_slice(&chunk[..n]);
    };
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    code
}

const ENHANCE_YOUR_CALM: u32 = 0xb;

#[test]
fn floods_get_goaway_enhance_your_calm_and_are_counted() {
    let p = proxy(
        "http2 = true",
        ROUTES,
        &[("up", "127.0.0.1:9".parse().unwrap())],
    );
    let repeat = |f: Vec<u8>, n: usize| f.repeat(n);
    // PING flood.
    let pings = repeat(frame(6, 0, 0, &[0; 8]), 1000);
    assert_eq!(goaway_after(p.addr, &pings), ENHANCE_YOUR_CALM);
    // SETTINGS flood.
    let settings = repeat(frame(4, 0, 0, &[]), 1000);
    assert_eq!(goaway_after(p.addr, &settings), ENHANCE_YOUR_CALM);
    // Rapid Reset: open a stream (GET /healthz, HPACK static entries) and reset
    // it at once, over and over.
    let mut resets = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        resets.extend(frame(1, 0x4 | 0x1, id, &[0x82, 0x86, 0x84]));
        resets.extend(frame(3, 0, id, &[0, 0, 0, 8]));
    }
    assert_eq!(goaway_after(p.addr, &resets), ENHANCE_YOUR_CALM);
    // CONTINUATION flood: a header block that never ends.
    let mut cont = frame(1, 0x1, 1, &[0x82, 0x86, 0x84]);
    for _ in 0..10_000 {
        cont.extend(frame(9, 0, 1, &[0x40, 0x01, b'x', 0x01, b'y']));
    }
    assert_eq!(goaway_after(p.addr, &cont), ENHANCE_YOUR_CALM);
    // Empty DATA frames.
    let mut empty = frame(1, 0x4, 1, &[0x83, 0x86, 0x84]);
    empty.extend(repeat(frame(0, 0, 1, &[]), 1000));
    assert_eq!(goaway_after(p.addr, &empty), ENHANCE_YOUR_CALM);

    let scrape = metrics(&p);
    let count = |reason: &str| {
        scrape
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("ringway_h2_goaway_total{{reason=\"{reason}\"}} "))
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("ping_flood"), 1.0, "{scrape}");
    assert_eq!(count("settings_flood"), 1.0, "{scrape}");
    assert_eq!(
        count("rapid_reset") + count("too_many_resets"),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        count("continuation_flood") + count("header_list_too_large"),
        1.0,
        "{scrape}"
    );
    assert_eq!(count("empty_frames"), 1.0, "{scrape}");
    // The proxy still serves.
    assert_eq!(
        common::get(p.addr, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
}

#[test]
fn an_empty_data_frame_inside_a_body_does_not_end_the_chunked_body_upstream() {
    let up = upstream();
    let dir = certs::TempDir::new();
    let log = dir.path("access.log");
    let routes = format!("{ROUTES}\n[access_log]\npath = \"{}\"\n", log.display());
    let p = proxy("http2 = true", &routes, &[("up", up.addr)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let c = connect(p.addr).await;
        let mut send = c.ready().await.unwrap();
        let req = http::Request::post("http://a.example/up/echo")
            .body(())
            .unwrap();
        let (resp, mut stream) = send.send_request(req, false).unwrap();
        // An empty DATA frame between two pieces: were it a zero-size chunk, the
        // rest would reach the upstream as a second request.
        let smuggled = "GET /up/smuggled HTTP/1.1\r\nhost: a\r\n\r\n";
        for piece in [&b"abc"[..], b"", smuggled.as_bytes()] {
            stream.reserve_capacity(piece.len().max(1));
            stream
                .send_data(Bytes::copy_from_slice(piece), false)
                .unwrap();
        }
        stream.send_data(Bytes::new(), true).unwrap();
        let resp = resp.await.unwrap();
        let mut recv = resp.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(body, format!("abc{smuggled}").as_bytes());
    }));
    let requests = up.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    // The access log says HTTP/2.0.
    drop(p);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"protocol\":\"HTTP/2.0\""), "{text}");
}

// ------------------------------------------------------- HTTP/2 upstreams

/// An HTTP/2 upstream (h2c) on a thread of its own: echoes each request's body as
/// it comes (DATA by DATA, so a client can talk to it in turns), then sends
/// trailers `grpc-status: 0` and `x-conns: N` (connections accepted so far); the
/// response head carries the request's head in `x-head` lines.
fn h2_upstream() -> SocketAddr {
    h2_upstream_with(false)
}

/// [`h2_upstream`], where with `goaway_first` the first connection answers the
/// proxy's first stream with GOAWAY (last stream id 0: the stream was not
/// processed) and closes. A path under `/svc.Refuse/` is refused (REFUSED_STREAM)
/// the first time it comes; one under `/svc.RefuseLate/` once its first DATA came.
fn h2_upstream_with(goaway_first: bool) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let conns = std::rc::Rc::new(std::cell::Cell::new(0));
            let refused = std::rc::Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                conns.set(conns.get() + 1);
                if goaway_first && conns.get() == 1 {
                    tokio::task::spawn_local(goaway_at_first_stream(tcp));
                    continue;
                }
                tokio::task::spawn_local(serve_h2(tcp, conns.clone(), refused.clone()));
            }
        });
    });
    addr
}

/// Reads the client's frames up to its first HEADERS, then answers SETTINGS and
/// GOAWAY (NO_ERROR, last stream id 0) and waits for the close.
async fn goaway_at_first_stream(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut at = PREFACE.len();
    loop {
        while got.len() >= at + 9 {
            let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
            if got[at + 3] == 0x1 {
                let mut out = frame(0x4, 0, 0, &[]);
                out.extend(frame(0x7, 0, 0, &[0; 8]));
                let _ = tcp.write_all(&out).await;
                while tcp.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
                return;
            }
            at += 9 + len;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one connection of [`h2_upstream`].
async fn serve_h2(
    tcp: tokio::net::TcpStream,
    conns: std::rc::Rc<std::cell::Cell<usize>>,
    refused: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
) {
    let Ok(mut h2c) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = h2c.accept().await {
        let path = req.uri().path().to_string();
        if path.starts_with("/svc.Refuse/") && !refused.borrow().contains(&path) {
            refused.borrow_mut().push(path);
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        if path.starts_with("/svc.RefuseLate/") {
            // Refused once its first DATA came (so the proxy took it from its
            // client).
            tokio::task::spawn_local(async move {
                let _ = req.into_body().data().await;
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            });
            continue;
        }
        let conns = conns.clone();
        tokio::task::spawn_local(async move {
            let (parts, mut body) = req.into_parts();
            let mut head = format!("{} {} {:?}", parts.method, parts.uri, parts.version);
            for (n, v) in &parts.headers {
                head.push_str(&format!("|{n}: {}", v.to_str().unwrap_or("?")));
            }
            let resp = http::Response::builder()
                .status(200)
                .header("x-head", head)
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(resp, false) else {
                return;
            };
            if parts.uri.path().starts_with("/svc.Early/") {
                // Answers before reading the body (then resets it: NO_ERROR), as a
                // gRPC server ending a call early.
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "3".parse().unwrap());
                let _ = send.send_trailers(trailers);
                drop(body);
                return;
            }
            while let Some(Ok(data)) = body.data().await {
                let n = data.len();
                let _ = body.flow_control().release_capacity(n);
                send.reserve_capacity(n);
                let mut data = data;
                while !data.is_empty() {
                    let Some(Ok(k)) = std::future::poll_fn(|c| send.poll_capacity(c)).await else {
                        return;
                    };
                    let chunk = data.split_to(k.min(data.len()));
                    if send.send_data(chunk, false).is_err() {
                        return;
                    }
                }
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("x-conns", conns.get().to_string().parse().unwrap());
            let _ = send.send_trailers(trailers);
        });
    }
}

const H2_ROUTES: &str = r#"
[[routes]]
name = "grpc"
match = { path_prefix = "/svc." }
cluster = "h2up"
[[routes]]
name = "dead"
match = { path_prefix = "/dead." }
cluster = "dead"
[clusters.h2up]
endpoints = ["{up}"]
protocol = "h2c"
[clusters.dead]
endpoints = ["{dead}"]
protocol = "h2c"
"#;

fn grpc_req(path: &str) -> http::Request<()> {
    http::Request::post(format!("http://a.example{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[test]
fn http2_upstreams_stream_both_ways_at_once_with_trailers_on_shared_connections() {
    let up = h2_upstream();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let p = proxy("http2 = true", H2_ROUTES, &[("up", up), ("dead", dead)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let mut c = connect(p.addr).await;
        // A call with a body: echoed, with the upstream's trailers; the upstream
        // saw HTTP/2 with :authority and the forwarding headers.
        let r = request(&mut c, grpc_req("/svc.Echo/Unary"), Some(b"hello"))
            .await
            .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
        let head = r.headers["x-head"].to_str().unwrap().to_string();
        assert!(
            head.starts_with("POST http://a.example/svc.Echo/Unary HTTP/2.0"),
            "{head}"
        );
        assert!(head.contains("|x-forwarded-for: 127.0.0.1"), "{head}");
        assert!(head.contains("|te: trailers"), "{head}");
        let trailers = r.trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");

        // Full duplex: each message's echo comes back before the next is sent.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, mut stream) = send
            .send_request(grpc_req("/svc.Echo/Bidi"), false)
            .unwrap();
        stream
            .send_data(Bytes::from_static(b"ping 0"), false)
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut recv = resp.into_body();
        for i in 0..20 {
            let mut got = Vec::new();
            while got.len() < format!("ping {i}").len() {
                let chunk = recv.data().await.expect("an echo").unwrap();
                let _ = recv.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            assert_eq!(got, format!("ping {i}").as_bytes());
            let next = format!("ping {}", i + 1);
            stream.send_data(Bytes::from(next), i == 19).unwrap();
        }
        let mut rest = Vec::new();
        while let Some(chunk) = recv.data().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(rest, b"ping 20");
        assert_eq!(recv.trailers().await.unwrap().unwrap()["grpc-status"], "0");

        // Concurrent calls share the upstream connection.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let mut c = c.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let body = format!("call {i}");
                let r = request(&mut c, grpc_req("/svc.Echo/Unary"), Some(body.as_bytes()))
                    .await
                    .unwrap();
                assert_eq!(r.body, body.as_bytes());
                r.trailers.unwrap()["x-conns"]
                    .to_str()
                    .unwrap()
                    .parse::<u32>()
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(
                t.await.unwrap(),
                1,
                "one upstream connection for every stream"
            );
        }

        // Failures the proxy makes are gRPC statuses: unreachable, no route.
        let r = request(&mut c, grpc_req("/dead.Svc/Unary"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["grpc-status"], "14", "{:?}", r.headers);
        let r = request(&mut c, grpc_req("/nothing.Svc/Unary"), None)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.headers["grpc-status"].to_str().unwrap()),
            (200, "12")
        );
    }));
}

#[test]
fn http1_clients_reach_http2_upstreams() {
    let up = h2_upstream();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let p = proxy("", H2_ROUTES, &[("up", up), ("dead", dead)]);
    // A chunked body with a trailer: DATA and trailers upstream; the response
    // (no length from the upstream) comes back chunked with its trailers.
    let mut c = Client::connect(p.addr);
    c.send(
        b"POST /svc.Echo/Unary HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n",
    );
    let r = c.read();
    assert_eq!((r.status, r.body_str().as_str()), (200, "hello world"));
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    let head = r.header("x-head").unwrap();
    assert!(
        head.starts_with("POST http://a.example/svc.Echo/Unary HTTP/2.0"),
        "{head}"
    );
    // The connection stays usable: a request with a length, keep-alive.
    c.send(b"POST /svc.Echo/Unary HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.read();
    assert_eq!((r.status, r.body_str().as_str()), (200, "abc"));
    // An unreachable HTTP/2 endpoint is a 502.
    let r = common::get(p.addr, "GET /dead.x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 502);
}

#[test]
fn an_upstream_answering_before_the_body_ends_is_answered_and_long_streams_are_not_idle() {
    let up = h2_upstream();
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let p = proxy(
        "http2 = true\nidle_timeout = \"300ms\"",
        H2_ROUTES,
        &[("up", up), ("dead", dead)],
    );
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let c = connect(p.addr).await;
        // The upstream answers (trailers-only status 3) while the client still
        // has a body to send: the client gets that answer, not a 502.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, mut body) = send.send_request(grpc_req("/svc.Early/M"), false).unwrap();
        body.send_data(Bytes::from_static(b"first"), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut recv = resp.into_body();
        while let Some(chunk) = recv.data().await {
            chunk.unwrap();
        }
        assert_eq!(recv.trailers().await.unwrap().unwrap()["grpc-status"], "3");

        // A stream open for three idle_timeouts, quiet both ways: the connection
        // is not idle, and still takes new streams.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, mut body) = send
            .send_request(grpc_req("/svc.Echo/Long"), false)
            .unwrap();
        body.send_data(Bytes::from_static(b"a"), false).unwrap();
        let resp = resp.await.unwrap();
        let mut recv = resp.into_body();
        assert_eq!(&recv.data().await.unwrap().unwrap()[..], b"a");
        tokio::time::sleep(Duration::from_millis(900)).await;
        let mut c2 = c.clone();
        let r = request(&mut c2, grpc_req("/svc.Echo/Unary"), Some(b"still"))
            .await
            .unwrap();
        assert_eq!(&r.body[..], b"still");
        body.send_data(Bytes::from_static(b"b"), true).unwrap();
        assert_eq!(&recv.data().await.unwrap().unwrap()[..], b"b");
        while let Some(chunk) = recv.data().await {
            chunk.unwrap();
        }
        // Nothing open for three idle_timeouts: the connection got its GOAWAY,
        // and a new stream fails.
        tokio::time::sleep(Duration::from_millis(900)).await;
        let r = request(&mut c2, grpc_req("/svc.Echo/Unary"), Some(b"x")).await;
        assert!(r.is_err(), "no GOAWAY once idle");
    }));
}

// ----------------------------------------------------------------- WebSocket over HTTP/2

const WS_ROUTES: &str = r#"
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok" }
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
name = "to-h2"
match = { path_prefix = "/h2" }
cluster = "h2up"
[clusters.up]
endpoints = ["{up}"]
[clusters.h2up]
endpoints = ["{up}"]
protocol = "h2c"
[admin]
bind = "127.0.0.1:0"
"#;

/// How many bytes each side of the WebSocket test streams at the same time.
const WS_STREAM: usize = 1 << 20;

fn ws_pattern(tag: u8) -> Vec<u8> {
    (0..WS_STREAM)
        .map(|i| tag.wrapping_add((i % 251) as u8))
        .collect()
}

/// The accept of RFC 6455 §4.2.2, computed here as a WebSocket server would.
fn ws_accept(key: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// An HTTP/1.1 WebSocket server. `/ws/echo`: accepts (with `chat.v1`), sends
/// `SERVER-EARLY` behind its `101` and then 1 MiB while it reads 1 MiB, reports
/// the head and whether it got the client's bytes, then waits for the close and
/// reports it. `/ws/bye`: accepts, sends `bye` and closes. `/ws/bad`: a `101` with
/// a wrong accept. `/ws/plain`: a `200` (no switch).
fn ws_upstream() -> (SocketAddr, mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut chunk = [0u8; 65536];
                let end = loop {
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                let mut rest = got.split_off(end);
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                if path == "/ws/plain" {
                    let _ = tx.send(head);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
                    return;
                }
                let accept = match path.as_str() {
                    "/ws/bad" => ws_accept("another key"),
                    _ => ws_accept(&key),
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat.v1\r\n\r\n"
                );
                let _ = tx.send(head);
                if s.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                if path == "/ws/bye" {
                    let _ = s.write_all(b"bye");
                    return;
                }
                if path != "/ws/echo" {
                    while s.read(&mut chunk).is_ok_and(|n| n > 0) {}
                    return;
                }
                s.write_all(b"SERVER-EARLY").unwrap();
                let mut w = s.try_clone().unwrap();
                let writer = std::thread::spawn(move || w.write_all(&ws_pattern(b's')).is_ok());
                while rest.len() < WS_STREAM {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => rest.extend_from_slice(&chunk[..n]),
                    }
                }
                let ok = writer.join().unwrap() && rest == ws_pattern(b'c');
                let _ = tx.send(format!("streamed: {ok}"));
                // The client's END_STREAM closes this connection.
                let closed = loop {
                    match s.read(&mut chunk) {
                        Ok(0) => break true,
                        Ok(_) => continue,
                        Err(_) => break false,
                    }
                };
                let _ = tx.send(format!("closed: {closed}"));
            });
        }
    });
    (addr, rx)
}

/// An extended CONNECT (RFC 8441) for a WebSocket at `path`.
fn ws_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://a.example{path}"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat.v1")
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())
        .unwrap()
}

fn ws_gauge(p: &Proxy) -> Option<f64> {
    metrics(p).lines().find_map(|l| {
        l.strip_prefix("ringway_websocket_active{route=\"ws\"} ")?
            .parse()
            .ok()
    })
}

/// Waits for the upstream's next report, off the client's runtime thread.
async fn next_report(rx: &Arc<Mutex<mpsc::Receiver<String>>>) -> String {
    let rx = rx.clone();
    tokio::task::spawn_blocking(move || rx.lock().unwrap().recv_timeout(DEADLINE).unwrap())
        .await
        .unwrap()
}

#[test]
fn websockets_over_http2_are_tunnels_to_http1_upstreams() {
    let (up, rx) = ws_upstream();
    let rx = Arc::new(Mutex::new(rx));
    let p = proxy("http2 = true", WS_ROUTES, &[("up", up)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let mut c = connect(p.addr).await;
        // (After a first exchange the proxy's SETTINGS are known.)
        let r = request(&mut c, get("/healthz"), None).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(c.is_extended_connect_protocol_enabled());

        // The handshake goes upstream as HTTP/1.1 with the proxy's key; the
        // client gets 200 with the subprotocol and without the accept.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, mut out) = send.send_request(ws_request("/ws/echo"), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["sec-websocket-protocol"], "chat.v1");
        assert!(!resp.headers().contains_key("sec-websocket-accept"));
        assert!(!resp.headers().contains_key("upgrade"));
        let head = next_report(&rx).await.to_ascii_lowercase();
        assert!(head.starts_with("get /ws/echo http/1.1\r\n"), "{head}");
        for line in [
            "\r\nhost: a.example\r\n",
            "\r\nconnection: upgrade\r\n",
            "\r\nupgrade: websocket\r\n",
            "\r\nsec-websocket-version: 13\r\n",
            "\r\nsec-websocket-protocol: chat.v1\r\n",
            "\r\nx-forwarded-for: 127.0.0.1\r\n",
        ] {
            assert!(head.contains(line), "{line:?} in {head}");
        }
        let key = head.split("sec-websocket-key: ").nth(1).unwrap();
        assert_eq!(key.find("\r\n"), Some(24), "{head}");

        // 1 MiB each way at once (neither waits for the other).
        let writer = tokio::task::spawn_local(async move {
            let mut left = Bytes::from(ws_pattern(b'c'));
            while !left.is_empty() {
                out.reserve_capacity(left.len());
                let n = std::future::poll_fn(|c| out.poll_capacity(c))
                    .await
                    .unwrap()
                    .unwrap();
                out.send_data(left.split_to(n.min(left.len())), false)
                    .unwrap();
            }
            out
        });
        let (_, mut recv) = resp.into_parts();
        let mut want = b"SERVER-EARLY".to_vec();
        want.extend_from_slice(&ws_pattern(b's'));
        let mut got = Vec::new();
        while got.len() < want.len() {
            let chunk = recv.data().await.unwrap().unwrap();
            got.extend_from_slice(&chunk);
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        assert!(got == want, "the upstream's bytes");
        let mut out = writer.await.unwrap();
        assert_eq!(next_report(&rx).await, "streamed: true");
        assert_eq!(ws_gauge(&p), Some(1.0));

        // The client's END_STREAM closes the upstream connection, and the stream
        // ends both ways.
        out.send_data(Bytes::new(), true).unwrap();
        assert_eq!(next_report(&rx).await, "closed: true");
        while let Some(last) = recv.data().await {
            assert_eq!(last.unwrap().len(), 0, "more bytes after the close");
        }

        // The upstream closing ends the stream after its last bytes.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, _out) = send.send_request(ws_request("/ws/bye"), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        next_report(&rx).await;
        let mut recv = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = recv.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"bye");

        // A 101 without the right accept is not a WebSocket: 502.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, _out) = send.send_request(ws_request("/ws/bad"), false).unwrap();
        assert_eq!(resp.await.unwrap().status(), 502);
        next_report(&rx).await;

        // A 2xx without the switch is no WebSocket either.
        let mut send = c.clone().ready().await.unwrap();
        let (resp, _out) = send.send_request(ws_request("/ws/plain"), false).unwrap();
        assert_eq!(resp.await.unwrap().status(), 502);
        next_report(&rx).await;

        // Refused by the route, and toward an HTTP/2 upstream: 403.
        for path in ["/closed/x", "/h2/x"] {
            let mut send = c.clone().ready().await.unwrap();
            let (resp, _out) = send.send_request(ws_request(path), false).unwrap();
            assert_eq!(resp.await.unwrap().status(), 403, "{path}");
        }
    }));
    // Every tunnel is closed.
    let deadline = std::time::Instant::now() + DEADLINE;
    while ws_gauge(&p) != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "{:?}", ws_gauge(&p));
        std::thread::yield_now();
    }
}

#[test]
fn an_idle_websocket_over_http2_is_reset_at_the_idle_timeout() {
    let (up, rx) = ws_upstream();
    let p = proxy(
        "http2 = true\nidle_timeout = \"300ms\"",
        WS_ROUTES,
        &[("up", up)],
    );
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let mut c = connect(p.addr).await;
        let r = request(&mut c, get("/healthz"), None).await.unwrap();
        assert_eq!(r.status, 200);
        let mut send = c.clone().ready().await.unwrap();
        let (resp, _out) = send.send_request(ws_request("/ws/quiet"), false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        // Nothing moves either way: the proxy resets the stream (CANCEL) instead
        // of holding the tunnel open; the connection stays usable.
        let mut recv = resp.into_body();
        let end = recv.data().await.expect("a reset, not an end");
        let reason = end.expect_err("no data").reason();
        assert_eq!(reason, Some(h2::Reason::CANCEL));
        let r = request(&mut c, get("/healthz"), None).await.unwrap();
        assert_eq!(r.status, 200);
    }));
    assert!(rx
        .recv_timeout(DEADLINE)
        .unwrap()
        .starts_with("GET /ws/quiet "));
}

#[test]
fn streams_an_upstream_did_not_process_are_sent_again() {
    let up = h2_upstream();
    let going = h2_upstream_with(true);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let routes = format!(
        "{H2_ROUTES}[[routes]]\nname = \"going\"\nmatch = {{ path_prefix = \"/going.\" }}\n\
         cluster = \"going\"\n[clusters.going]\nendpoints = [\"{going}\"]\nprotocol = \"h2c\"\n\
         [admin]\nbind = \"127.0.0.1:0\"\n"
    );
    let vars = [("up", up), ("dead", closed.local_addr().unwrap())];
    let p = proxy("http2 = true", &routes, &vars);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let mut c = connect(p.addr).await;
        // REFUSED_STREAM, then answered on the second try.
        let r = request(&mut c, grpc_req("/svc.Refuse/a"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.trailers.expect("trailers")["grpc-status"], "0");
        // Above a GOAWAY's last stream id: sent again on a new connection.
        let r = request(&mut c, grpc_req("/going.Svc/a"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.trailers.expect("trailers")["x-conns"], "2");
    }));
    // A body already taken from the client is not sent again: the refusal is
    // the answer (gRPC UNAVAILABLE).
    run(local_refusal(p.addr));
    // From an HTTP/1.1 client too.
    let r = common::get(
        p.addr,
        "GET /svc.Refuse/b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let scrape = metrics(&p);
    let retries = scrape
        .lines()
        .find(|l| l.starts_with("ringway_upstream_retries_total{cluster=\"going\"}"));
    assert_eq!(
        retries.map(|l| l.rsplit(' ').next().unwrap()),
        Some("1"),
        "{scrape}"
    );
}

#[test]
fn an_http1_upstream_answering_during_an_http2_upload_is_answered() {
    let (up, done) = early_upstream();
    let routes = "[[routes]]\nname = \"all\"\nmatch = { path_prefix = \"/\" }\ncluster = \"up\"\n\
                  [clusters.up]\nendpoints = [\"{up}\"]\n";
    let p = proxy("http2 = true", routes, &[("up", up)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let c = connect(p.addr).await;
        for (path, status) in [("/close", 413), ("/hold", 401)] {
            let mut send = c.clone().ready().await.unwrap();
            let req = http::Request::post(format!("http://a.example{path}"))
                .body(())
                .unwrap();
            let (resp, mut out) = send.send_request(req, false).unwrap();
            // The body keeps going (as the windows allow) until the answer.
            let writer = tokio::task::spawn_local(async move {
                let piece = Bytes::from(vec![b'x'; 16 << 10]);
                loop {
                    out.reserve_capacity(piece.len());
                    match std::future::poll_fn(|c| out.poll_capacity(c)).await {
                        Some(Ok(n)) if n > 0 => {
                            if out
                                .send_data(piece.slice(..n.min(piece.len())), false)
                                .is_err()
                            {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            });
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), status, "{path}");
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                got.extend_from_slice(&chunk);
            }
            assert_eq!(got, b"not this", "{path}");
            writer.abort();
        }
    }));
    drop(done);
}

/// A gRPC call whose first DATA went up before the upstream refused its stream.
async fn local_refusal(addr: SocketAddr) {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let c = connect(addr).await;
            let mut send = c.clone().ready().await.unwrap();
            let (resp, mut out) = send
                .send_request(grpc_req("/svc.RefuseLate/with-body"), false)
                .unwrap();
            out.send_data(Bytes::from_static(b"\0\0\0\0\x03abc"), false)
                .unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(!resp.headers().contains_key("x-head"), "sent again");
            assert_eq!(resp.headers()["grpc-status"], "14");
        })
        .await
}

/// Reads from `s` into `got` until `done` says it has all it waits for.
#[test]
fn http1_clients_stream_both_ways_with_http2_upstreams() {
    let up = h2_upstream();
    let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let p = proxy("", H2_ROUTES, &[("up", up), ("dead", dead)]);
    // The upstream echoes each piece as it comes, and the client sends the next
    // only once the last came back: half duplex would wait for the body's end.
    let mut c = Client::connect(p.addr);
    c.send(
        b"POST /svc.Echo/Duplex HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    );
    let mut got = Vec::new();
    read_until(&mut c.stream, &mut got, |t| t.ends_with("5\r\nfirst\r\n"));
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    // (The response started before the body was all sent: the connection closes
    // after it.)
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    c.send(b"6\r\nsecond\r\n");
    read_until(&mut c.stream, &mut got, |t| t.ends_with("6\r\nsecond\r\n"));
    c.send(b"0\r\nx-sum: 2\r\n\r\n");
    read_until(&mut c.stream, &mut got, |t| {
        t.ends_with("\r\n\r\n") && t.contains("\r\n0\r\ngrpc-status: 0\r\n")
    });
    let mut rest = Vec::new();
    assert_eq!(
        c.stream.read_to_end(&mut rest).unwrap(),
        0,
        "closed after it"
    );

    // An upstream that answers (and resets the stream) before reading the body:
    // the client gets that answer whole, then the connection closes.
    let mut c = Client::connect(p.addr);
    c.send(
        b"POST /svc.Early/M HTTP/1.1\r\nHost: a.example\r\nContent-Length: 1000000\r\n\r\nfirst",
    );
    let mut got = Vec::new();
    read_until(&mut c.stream, &mut got, |t| {
        t.ends_with("\r\n\r\n") && t.contains("\r\n0\r\ngrpc-status: 3\r\n")
    });
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // A body the client sends whole before the answer keeps the connection.
    let mut c = Client::connect(p.addr);
    for _ in 0..2 {
        c.send(
            b"POST /svc.Echo/Unary HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello",
        );
        let r = c.read();
        assert_eq!((r.status, r.body_str().as_str()), (200, "hello"));
        assert_eq!(r.header("connection"), None);
    }
}

#[test]
fn http2_clients_stream_both_ways_with_http1_upstreams() {
    let up = streaming_upstream();
    let routes = "[[routes]]\nname = \"all\"\nmatch = { path_prefix = \"/\" }\ncluster = \"up\"\n\
                  [clusters.up]\nendpoints = [\"{up}\"]\n[admin]\nbind = \"127.0.0.1:0\"\n";
    let p = proxy("http2 = true", routes, &[("up", up)]);
    let local = tokio::task::LocalSet::new();
    run(local.run_until(async {
        let c = connect(p.addr).await;
        // A POST to `path` with `first` as its first DATA (and its last with
        // `end`): the response's head and the stream to send the rest on.
        let post = |path: &str, length: Option<usize>, first: &'static [u8], end: bool| {
            let mut req = http::Request::post(format!("http://a.example{path}"));
            if let Some(n) = length {
                req = req.header("content-length", n);
            }
            let c = c.clone();
            async move {
                let mut send = c.ready().await.unwrap();
                let (resp, mut out) = send.send_request(req.body(()).unwrap(), false).unwrap();
                out.send_data(Bytes::from_static(first), end).unwrap();
                let resp = resp.await.unwrap();
                assert_eq!(resp.status(), 200);
                (resp.into_body(), out)
            }
        };
        async fn rest(body: &mut h2::RecvStream, got: &mut Vec<u8>) {
            while let Some(chunk) = body.data().await {
                got.extend_from_slice(&chunk.unwrap());
            }
        }
        // The upstream echoes each piece as it comes (the chunked framing the proxy
        // gave it included), and the client sends the next only once the last came
        // back: half duplex would wait for the body's end.
        let (mut body, mut out) = post("/echo", None, b"first", false).await;
        let mut got = Vec::new();
        for (next, want) in [
            (Some("second"), "5\r\nfirst\r\n"),
            (None, "6\r\nsecond\r\n"),
        ] {
            while !String::from_utf8_lossy(&got).ends_with(want) {
                let chunk = body.data().await.expect("more of the echo").unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            match next {
                Some(piece) => out.send_data(Bytes::from(piece), false).unwrap(),
                None => out.send_data(Bytes::new(), true).unwrap(),
            }
        }
        rest(&mut body, &mut got).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            "5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"
        );

        // A response that ends before the body does reaches the client whole.
        let (mut body, _out) = post("/short", Some(1_000_000), b"first", false).await;
        let mut got = Vec::new();
        rest(&mut body, &mut got).await;
        assert_eq!(got, b"done");

        // The connection serves other streams after.
        let (mut body, _) = post("/echo", Some(5), b"hello", true).await;
        let mut got = Vec::new();
        rest(&mut body, &mut got).await;
        assert_eq!(got, b"hello");

        // A Content-Length body is whole with its last bytes: the upstream's answer
        // to it, before the client's END_STREAM, leaves its connection in step,
        // and pooled.
        let (mut body, mut out) = post("/sink", Some(5), b"hello", false).await;
        let mut got = Vec::new();
        rest(&mut body, &mut got).await;
        assert_eq!(got, b"5");
        // (The stream is over for the proxy: the client's END_STREAM may find it
        // reset with NO_ERROR.)
        let _ = out.send_data(Bytes::new(), true);
    }));
    eventually("the upstream connection pooled", || {
        metrics(&p)
            .lines()
            .any(|l| l.starts_with("ringway_upstream_pool_idle{") && l.ends_with(" 1"))
    });
}
