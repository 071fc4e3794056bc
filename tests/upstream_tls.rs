//! TLS to upstreams (a cluster's `tls`): the proxy in-process, in front of an
//! in-process rustls server on a std thread that tells, in each response body,
//! which SNI and client certificate it saw, and counts connections and full and
//! resumed handshakes. Certificates are generated at test time (rcgen).

mod common;
use common::certs::*;
use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use ringway::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A server certificate for `names` signed by `ca`.
fn leaf(ca: &Ca, names: &[&str]) -> Cert {
    signed(ca, names, ExtendedKeyUsagePurpose::ServerAuth)
}

// ---------------------------------------------------------------------------
// The TLS upstream
// ---------------------------------------------------------------------------

/// What the upstream saw in one completed handshake.
#[derive(Debug, Clone)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    client_cert: Option<CertificateDer<'static>>,
    kind: Option<HandshakeKind>,
}

/// Counters shared with the upstream's threads.
#[derive(Default)]
struct Counts {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    full: AtomicUsize,
    resumed: AtomicUsize,
    /// Handshakes that failed (or connections closed during one).
    failed: AtomicUsize,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// An HTTP/1.1 server over TLS (rustls): answers every request with 200 and a
/// body `sni=NAME cert=yes|no` (`-` without SNI), keeping the connection unless
/// `close`; one thread per connection.
struct Upstream {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

struct Options<'a> {
    /// Client certificates are required, signed by this CA (PEM).
    client_ca: Option<&'a str>,
    /// Answer with `connection: close` and close after each response.
    close: bool,
    ip: IpAddr,
    /// TLS 1.2 only (else 1.2 and 1.3).
    tls12_only: bool,
    /// The ALPN protocols it accepts.
    alpn: &'a [&'a str],
    /// Serve requests as `common::serve_streaming` does (echo, early answers).
    streaming: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            client_ca: None,
            close: false,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            tls12_only: false,
            alpn: &["http/1.1"],
            streaming: false,
        }
    }
}

impl Upstream {
    fn start(cert: &Cert) -> Upstream {
        Upstream::start_with(cert, Options::default())
    }

    fn start_with(cert: &Cert, opts: Options<'_>) -> Upstream {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let builder = match opts.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(vec![cert.der.clone()], cert.key())
            .unwrap();
        config.alpn_protocols = opts.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let config = Arc::new(config);
        let listener = TcpListener::bind((opts.ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, close, streaming) = (counts.clone(), stop.clone(), opts.close, opts.streaming);
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                let (c, config) = (c.clone(), config.clone());
                std::thread::spawn(move || serve(tcp, config, &c, close, streaming));
            }
        });
        Upstream { addr, counts, stop }
    }

    fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// (full, resumed) handshakes completed.
    fn handshakes(&self) -> (usize, usize) {
        (
            self.counts.full.load(Ordering::SeqCst),
            self.counts.resumed.load(Ordering::SeqCst),
        )
    }

    fn failed(&self) -> usize {
        self.counts.failed.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.counts.seen.lock().unwrap().clone()
    }

    fn last_seen(&self) -> Seen {
        self.seen().pop().expect("a completed handshake")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn serve(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    counts: &Counts,
    close: bool,
    streaming: bool,
) {
    let _ = tcp.set_read_timeout(Some(DEADLINE));
    let _ = tcp.set_write_timeout(Some(DEADLINE));
    let _ = tcp.set_nodelay(true);
    let mut conn = ServerConnection::new(config).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            counts.failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    let seen = Seen {
        sni: conn.server_name().map(str::to_string),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        client_cert: conn.peer_certificates().map(|c| c[0].clone()),
        kind: conn.handshake_kind(),
    };
    match seen.kind {
        Some(HandshakeKind::Full) | Some(HandshakeKind::FullWithHelloRetryRequest) => {
            counts.full.fetch_add(1, Ordering::SeqCst)
        }
        _ => counts.resumed.fetch_add(1, Ordering::SeqCst),
    };
    let body = format!(
        "sni={} cert={}",
        seen.sni.as_deref().unwrap_or("-"),
        if seen.client_cert.is_some() {
            "yes"
        } else {
            "no"
        }
    );
    counts.seen.lock().unwrap().push(seen);
    let mut s = StreamOwned::new(conn, tcp);
    if streaming {
        serve_streaming(&mut s);
        return;
    }
    loop {
        // A request head (the proxy sends GETs without a body here).
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        counts.requests.fetch_add(1, Ordering::SeqCst);
        let conn_header = if close { "connection: close\r\n" } else { "" };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{conn_header}\r\n{body}",
            body.len()
        );
        if s.write_all(response.as_bytes()).is_err() || s.flush().is_err() {
            return;
        }
        if close {
            s.conn.send_close_notify();
            let _ = s.flush();
            return;
        }
    }
}

/// A plain HTTP server (not TLS): answers whatever it reads with a 400 and closes,
/// as an HTTP server given a TLS ClientHello does.
fn plain_http() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(DEADLINE));
                let mut buf = [0u8; 4096];
                if matches!(tcp.read(&mut buf), Ok(n) if n > 0) {
                    let _ = tcp.write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------

/// A route for the path `/NAME` (exactly) to cluster `NAME`, whose only endpoint is `endpoint` (as
/// written) with `tls = { TLS }`, and `extra` cluster settings.
fn secure(name: &str, endpoint: &str, tls: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ path = \"/{name}\" }}\n\
         cluster = \"{name}\"\n\
         [clusters.{name}]\nendpoints = [\"{endpoint}\"]\ntls = {{ {tls} }}\n{extra}\n"
    )
}

fn access_log(path: &Path) -> String {
    format!(
        "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
        path.display()
    )
}

/// The proxy with `rest` as its routes and clusters.
fn start(rest: &str) -> Proxy {
    proxy("", rest, &[])
}

fn request(addr: SocketAddr, path: &str) -> Message {
    get(addr, &format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"))
}

/// The access log's lines (JSON), once it holds `n`.
fn log_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    eventually(&format!("{n} access log lines"), || read().len() >= n);
    read()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The access log line of the request for `path`.
fn line_for<'a>(lines: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no access log line for {path}: {lines:?}"))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn verified_tls_to_the_upstream_sends_sni_and_offers_http11() {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let up = Upstream::start(&leaf(&root, &["backend.internal"]));
    let ca_path = dir.write("ca.pem", &root.pem);
    let p = start(&secure(
        "secure",
        &up.addr.to_string(),
        &format!("server_name = \"backend.internal\", ca = \"{ca_path}\""),
        "",
    ));
    let r = request(p.addr, "/secure");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "sni=backend.internal cert=no");
    let seen = up.last_seen();
    assert_eq!(seen.sni.as_deref(), Some("backend.internal"));
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    assert_eq!(seen.kind, Some(HandshakeKind::Full));
    assert_eq!((up.accepted(), up.requests(), up.failed()), (1, 1, 0));
}

#[test]
fn pooled_tls_connections_are_reused_across_requests_and_clients() {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let up = Upstream::start(&leaf(&root, &["backend.internal"]));
    let ca_path = dir.write("ca.pem", &root.pem);
    let p = start(&secure(
        "secure",
        &up.addr.to_string(),
        &format!("server_name = \"backend.internal\", ca = \"{ca_path}\""),
        "",
    ));
    let mut first = Client::connect(p.addr);
    for _ in 0..5 {
        let r = first.request("GET /secure HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "sni=backend.internal cert=no")
        );
    }
    let mut second = Client::connect(p.addr);
    for _ in 0..5 {
        let r = second.request("GET /secure HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.head);
    }
    assert_eq!(up.requests(), 10);
    assert_eq!(
        (up.accepted(), up.handshakes()),
        (1, (1, 0)),
        "one upstream connection, one handshake, for ten requests"
    );
}

/// New upstream connections (none kept idle, or the upstream closing each one)
/// resume the session of an earlier one.
fn sessions_resume(pool_max_idle: Option<usize>, close: bool) {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let up = Upstream::start_with(
        &leaf(&root, &["backend.internal"]),
        Options {
            close,
            ..Options::default()
        },
    );
    let ca_path = dir.write("ca.pem", &root.pem);
    let extra = pool_max_idle.map_or(String::new(), |n| format!("pool_max_idle = {n}"));
    let p = start(&secure(
        "secure",
        &up.addr.to_string(),
        &format!("server_name = \"backend.internal\", ca = \"{ca_path}\""),
        &extra,
    ));
    let mut c = Client::connect(p.addr);
    for i in 0..4 {
        let r = c.request("GET /secure HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
    }
    assert_eq!(up.accepted(), 4, "a new upstream connection per request");
    assert_eq!(
        up.handshakes(),
        (1, 3),
        "the first handshake is full, later ones resume: {:?}",
        up.seen()
    );
    assert!(up
        .seen()
        .iter()
        .all(|s| s.sni.as_deref() == Some("backend.internal")));
}

#[test]
fn new_connections_resume_when_none_is_kept_idle() {
    sessions_resume(Some(0), false);
}

#[test]
fn new_connections_resume_when_the_upstream_closes_each() {
    sessions_resume(None, true);
}

#[test]
fn tls_failures_are_502_with_uf_utls() {
    let dir = TempDir::new();
    let log = dir.path("access.log");
    let root = ca("upstream ca");
    let other_ca = ca("another ca");
    let good = Upstream::start(&leaf(&root, &["backend.internal"]));
    let expired = Upstream::start(&cert_with(
        Some(&root),
        &["backend.internal"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
        |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        },
    ));
    let h2_only = Upstream::start_with(
        &leaf(&root, &["backend.internal"]),
        Options {
            alpn: &["h2"],
            ..Options::default()
        },
    );
    let plain = plain_http();
    let nothing = closed_port();
    let ca_path = dir.write("ca.pem", &root.pem);
    let other_ca_path = dir.write("other-ca.pem", &other_ca.pem);
    let verified = |ca: &str, name: &str| format!("server_name = \"{name}\", ca = \"{ca}\"");
    let good_addr = good.addr.to_string();
    let rest = [
        secure(
            "ok",
            &good_addr,
            &verified(&ca_path, "backend.internal"),
            "",
        ),
        secure(
            "wrongname",
            &good_addr,
            &verified(&ca_path, "other.internal"),
            "",
        ),
        secure(
            "unknownca",
            &good_addr,
            &verified(&other_ca_path, "backend.internal"),
            "",
        ),
        secure(
            "expired",
            &expired.addr.to_string(),
            &verified(&ca_path, "backend.internal"),
            "",
        ),
        secure(
            "noalpn",
            &h2_only.addr.to_string(),
            &verified(&ca_path, "backend.internal"),
            "",
        ),
        secure(
            "plain",
            &plain.to_string(),
            &verified(&ca_path, "backend.internal"),
            "",
        ),
        secure(
            "refused",
            &nothing.to_string(),
            &verified(&ca_path, "backend.internal"),
            "",
        ),
        access_log(&log),
    ]
    .concat();
    let p = start(&rest);
    let r = request(p.addr, "/ok");
    assert_eq!(r.status, 200, "{}", r.head);
    for path in [
        "/wrongname",
        "/unknownca",
        "/expired",
        "/noalpn",
        "/plain",
        "/refused",
    ] {
        let r = request(p.addr, path);
        assert_eq!(r.status, 502, "{path}: {}", r.head);
    }
    // The upstream refused nothing; the proxy ended the handshakes it did not trust,
    // and sent no request over them.
    assert_eq!(good.requests(), 1, "only /ok reached the upstream");
    eventually("the upstream sees two failed handshakes", || {
        good.failed() >= 2
    });
    assert_eq!((expired.requests(), expired.handshakes()), (0, (0, 0)));
    // An upstream that speaks no protocol the proxy offers refuses the handshake.
    assert_eq!((h2_only.requests(), h2_only.handshakes()), (0, (0, 0)));
    let lines = log_lines(&log, 7);
    assert_eq!(line_for(&lines, "/ok")["flags"], "-");
    for path in ["/wrongname", "/unknownca", "/expired", "/noalpn", "/plain"] {
        let line = line_for(&lines, path);
        assert_eq!(
            (line["status"].as_u64(), line["flags"].as_str()),
            (Some(502), Some("UF,UTLS")),
            "{path}: {line}"
        );
    }
    // A TCP connect failure is what it was without TLS.
    let line = line_for(&lines, "/refused");
    assert_eq!(
        (line["status"].as_u64(), line["flags"].as_str()),
        (Some(502), Some("UF")),
        "{line}"
    );
}

#[test]
fn verify_false_accepts_an_untrusted_certificate() {
    let self_signed = cert_with(
        None,
        &["somewhere.else"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
        |p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth],
    );
    let up = Upstream::start(&self_signed);
    let dir = TempDir::new();
    let log = dir.path("access.log");
    let p = start(
        &[
            secure("insecure", &up.addr.to_string(), "verify = false", ""),
            secure(
                "named",
                &up.addr.to_string(),
                "verify = false, server_name = \"backend.internal\"",
                "",
            ),
            access_log(&log),
        ]
        .concat(),
    );
    let r = request(p.addr, "/insecure");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "sni=- cert=no", "an IP address sends no SNI");
    let r = request(p.addr, "/named");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "sni=backend.internal cert=no");
    assert_eq!(up.failed(), 0);
    let lines = log_lines(&log, 2);
    assert_eq!(line_for(&lines, "/insecure")["flags"], "-");
}

#[test]
fn the_default_server_name_is_the_endpoint_host_as_written() {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let ca_path = dir.write("ca.pem", &root.pem);
    let tls = format!("ca = \"{ca_path}\"");
    // An IP address: verified against the certificate's IP SANs, no SNI sent.
    let with_ip = Upstream::start(&leaf(&root, &["backend.internal", "127.0.0.1"]));
    let without_ip = Upstream::start(&leaf(&root, &["backend.internal"]));
    // A host name: sent as SNI and verified, though the proxy resolved it.
    let first = ("localhost", 0)
        .to_socket_addrs()
        .expect("localhost resolves")
        .next()
        .expect("an address for localhost");
    let named = Upstream::start_with(
        &leaf(&root, &["localhost"]),
        Options {
            ip: first.ip(),
            ..Options::default()
        },
    );
    let p = start(
        &[
            secure("ip", &with_ip.addr.to_string(), &tls, ""),
            secure("noip", &without_ip.addr.to_string(), &tls, ""),
            secure(
                "named",
                &format!("localhost:{}", named.addr.port()),
                &tls,
                "",
            ),
        ]
        .concat(),
    );
    let r = request(p.addr, "/ip");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "sni=- cert=no");
    let r = request(p.addr, "/noip");
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(without_ip.requests(), 0);
    let r = request(p.addr, "/named");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "sni=localhost cert=no");
}

#[test]
fn client_certificates_are_presented_to_an_upstream_that_requires_them() {
    let dir = TempDir::new();
    let log = dir.path("access.log");
    let root = ca("upstream ca");
    let clients = ca("client ca");
    let stranger = ca("stranger ca");
    let requiring = |tls12_only| {
        Upstream::start_with(
            &leaf(&root, &["backend.internal"]),
            Options {
                client_ca: Some(&clients.pem),
                tls12_only,
                ..Options::default()
            },
        )
    };
    let up = requiring(false);
    let up12 = requiring(true);
    let ca_path = dir.write("ca.pem", &root.pem);
    let mine = client_cert(&clients, "proxy.internal");
    let (cert, key) = mine.write(&dir, "client");
    let (other_cert, other_key) = client_cert(&stranger, "proxy.internal").write(&dir, "other");
    let base = format!("server_name = \"backend.internal\", ca = \"{ca_path}\"");
    let with_mine = format!("{base}, cert = \"{cert}\", key = \"{key}\"");
    let (addr, addr12) = (up.addr.to_string(), up12.addr.to_string());
    let p = start(
        &[
            secure("nocert", &addr, &base, ""),
            secure(
                "stranger",
                &addr,
                &format!("{base}, cert = \"{other_cert}\", key = \"{other_key}\""),
                "",
            ),
            secure("mtls", &addr, &with_mine, ""),
            secure("nocert12", &addr12, &base, ""),
            secure("mtls12", &addr12, &with_mine, ""),
            access_log(&log),
        ]
        .concat(),
    );
    for path in ["/nocert", "/stranger", "/nocert12"] {
        let r = request(p.addr, path);
        assert_eq!(r.status, 502, "{path}: {}", r.head);
    }
    assert_eq!((up.requests(), up12.requests()), (0, 0));
    for (path, up) in [("/mtls", &up), ("/mtls12", &up12)] {
        let r = request(p.addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        assert_eq!(r.body_str(), "sni=backend.internal cert=yes");
        assert_eq!(up.last_seen().client_cert.as_ref(), Some(&mine.der));
        assert_eq!(up.requests(), 1);
    }
    let lines = log_lines(&log, 5);
    // (Under TLS 1.2 the refusal comes within the proxy's handshake; see
    // `a_client_certificate_refused_after_a_tls13_handshake_is_flagged_utls`.)
    assert_eq!(line_for(&lines, "/nocert12")["flags"], "UF,UTLS");
    assert_eq!(line_for(&lines, "/mtls")["flags"], "-");
}

/// Under TLS 1.3 the client's side of the handshake ends before the upstream
/// checks the client's certificate: its refusal (a `certificate_required` or
/// `unknown_ca` alert) is the first thing the proxy reads on the new connection.
/// It is still the handshake that failed, as under TLS 1.2.
#[test]
fn a_client_certificate_refused_after_a_tls13_handshake_is_flagged_utls() {
    let dir = TempDir::new();
    let log = dir.path("access.log");
    let root = ca("upstream ca");
    let clients = ca("client ca");
    let up = Upstream::start_with(
        &leaf(&root, &["backend.internal"]),
        Options {
            client_ca: Some(&clients.pem),
            ..Options::default()
        },
    );
    let ca_path = dir.write("ca.pem", &root.pem);
    let (cert, key) = client_cert(&ca("stranger ca"), "proxy.internal").write(&dir, "other");
    let base = format!("server_name = \"backend.internal\", ca = \"{ca_path}\"");
    let p = start(
        &[
            secure("nocert", &up.addr.to_string(), &base, ""),
            secure(
                "stranger",
                &up.addr.to_string(),
                &format!("{base}, cert = \"{cert}\", key = \"{key}\""),
                "",
            ),
            access_log(&log),
        ]
        .concat(),
    );
    for path in ["/nocert", "/stranger"] {
        assert_eq!(request(p.addr, path).status, 502, "{path}");
    }
    let lines = log_lines(&log, 2);
    for path in ["/nocert", "/stranger"] {
        assert_eq!(line_for(&lines, path)["flags"], "UF,UTLS", "{path}");
    }
}

#[test]
fn a_reload_keeps_pooled_tls_connections_unless_the_tls_settings_or_files_change() {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let up = Upstream::start(&leaf(&root, &["backend.internal", "alt.internal"]));
    let ca_path = dir.write("ca.pem", &root.pem);
    let text = |name: &str| {
        config_text(
            "drain_timeout = \"5s\"",
            "",
            &secure(
                "secure",
                &up.addr.to_string(),
                &format!("server_name = \"{name}\", ca = \"{ca_path}\""),
                "",
            ),
            &[],
        )
    };
    let config = |text: &str| Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = ringway::Server::start(config(&text("backend.internal"))).unwrap();
    let addr = server.local_addr("edge").unwrap();
    let mut c = Client::connect(addr);
    let ask = |c: &mut Client| {
        let r = c.request("GET /secure HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.head);
        r.body_str()
    };
    assert_eq!(ask(&mut c), "sni=backend.internal cert=no");
    assert_eq!((up.accepted(), up.handshakes()), (1, (1, 0)));

    // The same text: the pooled connection is reused, no handshake.
    server.reload(config(&text("backend.internal"))).unwrap();
    assert_eq!(ask(&mut c), "sni=backend.internal cert=no");
    assert_eq!(
        ask(&mut Client::connect(addr)),
        "sni=backend.internal cert=no"
    );
    assert_eq!(
        (up.accepted(), up.handshakes(), up.requests()),
        (1, (1, 0), 3),
        "an unchanged reload keeps the pooled TLS connection"
    );

    // The same text, another CA file's bytes (one more CA in the bundle).
    std::fs::write(&ca_path, format!("{}{}", root.pem, ca("extra").pem)).unwrap();
    server.reload(config(&text("backend.internal"))).unwrap();
    assert_eq!(ask(&mut c), "sni=backend.internal cert=no");
    assert_eq!(
        up.accepted(),
        2,
        "a changed `ca` file starts a new pool: {:?}",
        up.seen()
    );

    // Another server name.
    server.reload(config(&text("alt.internal"))).unwrap();
    assert_eq!(ask(&mut c), "sni=alt.internal cert=no");
    assert_eq!(
        up.accepted(),
        3,
        "a changed server_name starts a new pool: {:?}",
        up.seen()
    );
    assert_eq!(up.last_seen().sni.as_deref(), Some("alt.internal"));
    assert_eq!(up.failed(), 0);
}

/// `Config::from_toml` refuses the cluster `tls` `tls` with an error starting
/// with `prefix`.
fn config_error(tls: &str, prefix: &str) {
    let text = config_text("", "", &secure("secure", "127.0.0.1:9443", tls, ""), &[]);
    match Config::from_toml(&text) {
        Ok(_) => panic!("accepted: tls = {{ {tls} }}"),
        Err(e) => assert!(
            e.to_string().starts_with(prefix),
            "tls = {{ {tls} }}: {e:?} does not start with {prefix:?}"
        ),
    }
}

#[test]
fn config_errors_name_the_field() {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let ca_path = dir.write("ca.pem", &root.pem);
    let (cert, key) = client_cert(&root, "proxy.internal").write(&dir, "client");
    let missing = dir.path("missing.pem").display().to_string();
    let empty = dir.write("empty.pem", "");
    // A valid one first: the failures below are the field's.
    let ok = format!(
        "server_name = \"backend.internal\", ca = \"{ca_path}\", cert = \"{cert}\", key = \"{key}\""
    );
    let text = config_text("", "", &secure("secure", "127.0.0.1:9443", &ok, ""), &[]);
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    config_error(
        &format!("ca = \"{missing}\""),
        "clusters.secure.tls.ca: cannot read",
    );
    config_error(&format!("ca = \"{empty}\""), "clusters.secure.tls.ca: ");
    config_error(
        &format!("ca = \"{ca_path}\", server_name = \"bad name!\""),
        "clusters.secure.tls.server_name: \"bad name!\" is not a DNS name or IP address",
    );
    config_error(
        &format!("ca = \"{ca_path}\", cert = \"{cert}\""),
        "clusters.secure.tls.key: required with `cert`",
    );
    config_error(
        &format!("ca = \"{ca_path}\", key = \"{key}\""),
        "clusters.secure.tls.cert: required with `key`",
    );
    config_error(
        &format!("ca = \"{ca_path}\", cert = \"{missing}\", key = \"{key}\""),
        "clusters.secure.tls.cert: cannot read",
    );
    config_error(
        &format!("ca = \"{ca_path}\", cert = \"{cert}\", key = \"{missing}\""),
        "clusters.secure.tls.key: cannot read",
    );
    config_error(
        &format!("ca = \"{ca_path}\", cert = \"{empty}\", key = \"{key}\""),
        "clusters.secure.tls.cert: ",
    );
    config_error(
        &format!("ca = \"{ca_path}\", cert = \"{cert}\", key = \"{empty}\""),
        "clusters.secure.tls.key: ",
    );
}

#[test]
fn tls_upstreams_stream_both_ways_and_answer_early() {
    let dir = TempDir::new();
    let root = ca("upstream ca");
    let opts = Options {
        streaming: true,
        ..Options::default()
    };
    let up = Upstream::start_with(&leaf(&root, &["backend.internal"]), opts);
    let ca_path = dir.write("ca.pem", &root.pem);
    let tls = format!("server_name = \"backend.internal\", ca = \"{ca_path}\"");
    let addr = up.addr.to_string();
    let p = start(
        &[
            secure("echo", &addr, &tls, ""),
            secure("early", &addr, &tls, ""),
            secure("hold", &addr, &tls, ""),
        ]
        .concat(),
    );
    // Each piece comes back before the client sends the next.
    let mut c = Client::connect(p.addr);
    let head = "POST /echo HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\n\r\n";
    let pieces = ["5\r\nfirst\r\n", "6\r\nsecond\r\n", "0\r\n\r\n"];
    let text = echo_piece_by_piece(&mut c.stream, head, &pieces);
    assert!(text.starts_with("http/1.1 200 "), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    // An answer that comes while the client still owes most of its body reaches
    // it, though the client sends nothing more.
    let mut c = Client::connect(p.addr);
    c.send(b"POST /early HTTP/1.1\r\nHost: h\r\ncontent-length: 1000000\r\n\r\nfirst");
    let mut got = Vec::new();
    read_until(&mut c.stream, &mut got, |t| t.ends_with("\r\n\r\nnot this"));
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413 "), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // One that answers and stops reading, while the client sends far more than
    // the socket buffers hold: the answer still gets through.
    let mut c = Client::connect(p.addr);
    let total = 64 << 20;
    c.send(format!("POST /hold HTTP/1.1\r\nHost: h\r\ncontent-length: {total}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let piece = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < total && w.write_all(&piece).is_ok() {
            sent += piece.len();
        }
    });
    let mut got = Vec::new();
    read_until(&mut c.stream, &mut got, |t| t.ends_with("\r\n\r\nnot this"));
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413 "), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
}
