//! TLS termination on listeners: the proxy in-process with certificates generated at
//! test time (rcgen) in a temporary directory, and a rustls client over loopback.
//! The client accepts any server certificate (signatures are still checked) so a
//! test can tell which certificate the proxy served by comparing DER bytes.

mod common;
use common::certs::*;
use common::*;
use ringway::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind,
    ProtocolVersion, SignatureScheme, StreamOwned, SupportedProtocolVersion,
};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

const WEB: &str = r#"
[[routes]]
name = "default"
match = { path_prefix = "/" }
cluster = "web"
[clusters.web]
endpoints = ["{up}"]
"#;

const GET: &str = "GET /t HTTP/1.1\r\nHost: h\r\n\r\n";

/// Tests take this shared; the descriptor test takes it exclusively, so that no
/// other test opens sockets while it counts the process's descriptors.
static FDS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    FDS.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    FDS.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Certificates (common::certs) and the proxy
// ---------------------------------------------------------------------------

/// A self-signed ECDSA P-256 certificate for `names`.
fn cert(names: &[&str]) -> Cert {
    cert_with(None, names, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {})
}

/// The listener's inline `tls` table: `pairs` as its certificates, then `extra`
/// (`key = value, ...`).
fn tls_table(pairs: &[(String, String)], extra: &str) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|(c, k)| format!("{{ cert = \"{c}\", key = \"{k}\" }}"))
        .collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!("tls = {{ certificates = [ {} ]{extra} }}", certs.join(", "))
}

fn tls_proxy(pairs: &[(String, String)], extra: &str, up: &Mock) -> Proxy {
    proxy(&tls_table(pairs, extra), WEB, &[("up", up.addr)])
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any server certificate, but checks the handshake signatures with it.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A client configuration: `versions` offered, `alpn` offered, `auth` presented.
fn client_with(
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
    auth: Option<&Cert>,
) -> Arc<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)));
    let mut config = match auth {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let (chain, key) = c.client_auth();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// TLS 1.2 and 1.3, ALPN http/1.1, no client certificate.
fn client() -> Arc<ClientConfig> {
    client_with(BOTH, &["http/1.1"], None)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Connects and completes the client's side of the handshake. `name` is the SNI;
/// an IP address sends none.
fn handshake(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> io::Result<Tls> {
    let mut tcp = tcp(addr);
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = ClientConnection::new(config.clone(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// [`handshake`] that must succeed.
fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> Tls {
    handshake(addr, config, name).unwrap_or_else(|e| panic!("handshake with SNI {name}: {e}"))
}

/// The rustls error inside an I/O error, if it is one.
fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The end-entity certificate the proxy presented.
/// (A resumed handshake shows the certificate of the original one: only a full
/// handshake tells which certificate the proxy picks now.)
fn served(s: &Tls) -> CertificateDer<'static> {
    assert_eq!(s.conn.handshake_kind(), Some(HandshakeKind::Full));
    s.conn.peer_certificates().expect("a server certificate")[0].clone()
}

/// A response read off a TLS stream.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `raw` and reads one response (Content-Length framed). Reads nothing past
/// its end, so that pipelined responses are read one by one.
fn exchange(s: &mut impl ReadWrite, raw: &str) -> io::Result<Response> {
    s.write_all(raw.as_bytes())?;
    s.flush()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", head.len()),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let len: usize = header_of(&head, "content-length")
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Response { status, head, body })
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// One request on `s` that must get a 200 with `body`.
fn ok(s: &mut Tls, body: &str) {
    let r = exchange(s, GET).expect("a response");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(String::from_utf8_lossy(&r.body), body);
}

/// Reads until the proxy closes the connection: what it sent, or the error.
fn read_until_closed(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(all),
            Err(e) => return Err(e),
        }
    }
}

/// The proxy closed the connection (within the deadline) having sent nothing, or
/// only a TLS alert record.
fn assert_closed_with_at_most_an_alert(s: &mut TcpStream, what: &str) {
    let got = read_until_closed(s).unwrap_or_else(|e| panic!("{what}: not closed: {e}"));
    assert!(
        got.is_empty() || (got[0] == 0x15 && got.len() == 7),
        "{what}: expected a close or one alert record, got {got:02x?}"
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn request_over_tls_reaches_the_upstream_with_forwarded_proto_https() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::fixed(200, "over-tls");
    let p = tls_proxy(&[pair], "", &up);
    let mut s = connect(p.addr, &client(), "a.example.com");
    ok(&mut s, "over-tls");
    let seen = up.last();
    assert_eq!(seen.request_line(), "GET /t HTTP/1.1");
    assert_eq!(seen.headers("x-forwarded-proto"), vec!["https"]);
    // A second request on the same TLS connection (keep-alive).
    ok(&mut s, "over-tls");
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn sni_selects_the_certificate_and_falls_back_to_the_first() {
    let _g = shared();
    let dir = TempDir::new();
    let a = cert(&["a.example.com"]);
    let net = cert(&["*.example.net"]);
    let up = Mock::fixed(200, "ok");
    let p = tls_proxy(&[a.write(&dir, "a"), net.write(&dir, "net")], "", &up);
    for (sni, want, which) in [
        ("a.example.com", &a, "exact name of the first"),
        ("A.Example.COM", &a, "names compare case-insensitively"),
        ("x.example.net", &net, "wildcard of the second"),
        ("deep.x.example.net", &a, "a wildcard covers one label only"),
        (
            "example.net",
            &a,
            "a wildcard does not cover its bare suffix",
        ),
        ("127.0.0.1", &a, "no SNI (IP address)"),
        ("other.org", &a, "no certificate names it"),
    ] {
        let mut s = connect(p.addr, &client(), sni);
        assert!(served(&s) == want.der, "SNI {sni}: {which}");
        ok(&mut s, "ok");
    }
}

#[test]
fn an_exact_name_beats_a_wildcard_listed_first() {
    let _g = shared();
    let dir = TempDir::new();
    let wild = cert(&["*.example.com"]);
    let exact = cert(&["b.example.com"]);
    let up = Mock::fixed(200, "ok");
    let p = tls_proxy(
        &[wild.write(&dir, "wild"), exact.write(&dir, "exact")],
        "",
        &up,
    );
    let s = connect(p.addr, &client(), "b.example.com");
    assert!(
        served(&s) == exact.der,
        "b.example.com gets the exact certificate"
    );
    let s = connect(p.addr, &client(), "c.example.com");
    assert!(served(&s) == wild.der, "c.example.com gets the wildcard");
}

#[test]
fn strict_sni_refuses_unknown_names_with_unrecognized_name() {
    let _g = shared();
    let dir = TempDir::new();
    let a = cert(&["a.example.com"]);
    let up = Mock::fixed(200, "strict");
    let p = tls_proxy(&[a.write(&dir, "a")], "strict_sni = true", &up);
    let config = client();
    for sni in ["z.example.com", "127.0.0.1"] {
        let err = handshake(p.addr, &config, sni)
            .map(|_| ())
            .expect_err("an unknown SNI is refused");
        assert_eq!(
            tls_error(&err),
            Some(&rustls::Error::AlertReceived(
                AlertDescription::UnrecognisedName
            )),
            "SNI {sni}: {err}"
        );
    }
    let mut s = connect(p.addr, &config, "a.example.com");
    assert!(served(&s) == a.der);
    ok(&mut s, "strict");
    assert_eq!(up.requests().len(), 1, "refused handshakes never reach it");
}

#[test]
fn every_key_type_serves_a_request() {
    let _g = shared();
    let dir = TempDir::new();
    let up = Mock::fixed(200, "keys");
    for (name, alg) in [
        ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519", &rcgen::PKCS_ED25519),
        // rcgen generates RSA keys with aws-lc-rs (2048 bits).
        ("rsa", &rcgen::PKCS_RSA_SHA256),
    ] {
        let c = cert_with(None, &["k.example.com"], alg, |_| {});
        let p = tls_proxy(&[c.write(&dir, name)], "", &up);
        for versions in [TLS13, TLS12] {
            let mut s = connect(
                p.addr,
                &client_with(versions, &["http/1.1"], None),
                "k.example.com",
            );
            assert!(served(&s) == c.der, "{name}");
            ok(&mut s, "keys");
        }
        let mut s = connect(p.addr, &client(), "k.example.com");
        ok(&mut s, "keys");
    }
}

#[test]
fn each_version_is_negotiated_and_min_version_refuses_tls12() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["v.example.com"]).write(&dir, "v");
    let up = Mock::fixed(200, "v");
    let p = tls_proxy(std::slice::from_ref(&pair), "min_version = \"1.2\"", &up);
    for (versions, want) in [
        (TLS12, ProtocolVersion::TLSv1_2),
        (TLS13, ProtocolVersion::TLSv1_3),
        (BOTH, ProtocolVersion::TLSv1_3),
    ] {
        let mut s = connect(
            p.addr,
            &client_with(versions, &["http/1.1"], None),
            "v.example.com",
        );
        assert_eq!(s.conn.protocol_version(), Some(want));
        ok(&mut s, "v");
    }

    let p13 = tls_proxy(&[pair], "min_version = \"1.3\"", &up);
    let err = handshake(
        p13.addr,
        &client_with(TLS12, &["http/1.1"], None),
        "v.example.com",
    )
    .map(|_| ())
    .expect_err("a TLS 1.2 client is refused");
    assert_eq!(
        tls_error(&err),
        Some(&rustls::Error::AlertReceived(
            AlertDescription::ProtocolVersion
        )),
        "{err}"
    );
    let mut s = connect(p13.addr, &client(), "v.example.com");
    assert_eq!(s.conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    ok(&mut s, "v");
}

#[test]
fn alpn_selects_h2_or_http11_and_a_listener_without_h2_refuses_a_client_offering_only_h2() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["p.example.com"]).write(&dir, "p");
    let up = Mock::fixed(200, "alpn");
    let p = tls_proxy(std::slice::from_ref(&pair), "", &up);
    let h1_only = tls_proxy(&[pair], "alpn = [\"http/1.1\"]", &up);
    for versions in [TLS13, TLS12] {
        // The default list prefers h2 (served as HTTP/2: tests/http2.rs).
        let s = connect(
            p.addr,
            &client_with(versions, &["h2", "http/1.1"], None),
            "p.example.com",
        );
        assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]));
        let mut s = connect(
            p.addr,
            &client_with(versions, &["http/1.1"], None),
            "p.example.com",
        );
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        ok(&mut s, "alpn");
        let mut s = connect(
            h1_only.addr,
            &client_with(versions, &["h2", "http/1.1"], None),
            "p.example.com",
        );
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        ok(&mut s, "alpn");

        // A client that offers no ALPN at all gets none and is served (HTTP/1.1).
        let mut s = connect(p.addr, &client_with(versions, &[], None), "p.example.com");
        assert_eq!(s.conn.alpn_protocol(), None);
        ok(&mut s, "alpn");

        // No overlap: rustls' server refuses with no_application_protocol (RFC
        // 7301 §3.2) rather than continuing without ALPN.
        let err = handshake(
            h1_only.addr,
            &client_with(versions, &["h2"], None),
            "p.example.com",
        )
        .map(|_| ())
        .expect_err("a client offering only h2 is refused");
        assert_eq!(
            tls_error(&err),
            Some(&rustls::Error::AlertReceived(
                AlertDescription::NoApplicationProtocol
            )),
            "{err}"
        );
    }
}

fn resumes(versions: &'static [&'static SupportedProtocolVersion]) {
    let dir = TempDir::new();
    let pair = cert(&["r.example.com"]).write(&dir, "r");
    let up = Mock::fixed(200, "again");
    let p = tls_proxy(&[pair], "", &up);
    let config = client_with(versions, &["http/1.1"], None);
    let mut first = connect(p.addr, &config, "r.example.com");
    assert_eq!(first.conn.handshake_kind(), Some(HandshakeKind::Full));
    // The response comes after the TLS 1.3 tickets: the client has them then.
    ok(&mut first, "again");
    for _ in 0..2 {
        let mut next = connect(p.addr, &config, "r.example.com");
        assert_eq!(next.conn.handshake_kind(), Some(HandshakeKind::Resumed));
        ok(&mut next, "again");
    }
    // Another client (its own session store) does a full handshake.
    let other = connect(
        p.addr,
        &client_with(versions, &["http/1.1"], None),
        "r.example.com",
    );
    assert_eq!(other.conn.handshake_kind(), Some(HandshakeKind::Full));
}

#[test]
fn tls13_sessions_resume() {
    let _g = shared();
    resumes(TLS13);
}

#[test]
fn tls12_sessions_resume() {
    let _g = shared();
    resumes(TLS12);
}

#[test]
fn sessions_resume_across_a_reload() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["r.example.com"]).write(&dir, "r");
    let up = Mock::fixed(200, "kept");
    let text = config_text(
        "drain_timeout = \"5s\"",
        &tls_table(&[pair], ""),
        WEB,
        &[("up", up.addr)],
    );
    let server = ringway::Server::start(Config::from_toml(&text).unwrap()).unwrap();
    let addr = server.local_addr("edge").unwrap();
    for versions in [TLS13, TLS12] {
        let config = client_with(versions, &["http/1.1"], None);
        let mut first = connect(addr, &config, "r.example.com");
        ok(&mut first, "kept");
        server.reload(Config::from_toml(&text).unwrap()).unwrap();
        let mut next = connect(addr, &config, "r.example.com");
        assert_eq!(
            next.conn.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{:?}",
            next.conn.protocol_version()
        );
        ok(&mut next, "kept");
    }
}

#[test]
fn client_auth_required_needs_a_certificate_from_client_ca() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["m.example.com"]).write(&dir, "m");
    let trusted = ca("trusted CA");
    let stranger = ca("other CA");
    let ca_path = dir.path("ca.pem");
    std::fs::write(&ca_path, &trusted.pem).unwrap();
    let up = Mock::fixed(200, "mtls");
    let p = tls_proxy(
        &[pair],
        &format!(
            "client_auth = \"required\", client_ca = \"{}\"",
            ca_path.display()
        ),
        &up,
    );
    let good = client_cert(&trusted, "client.example");
    let bad = client_cert(&stranger, "client.example");
    for versions in [TLS13, TLS12] {
        // Without a certificate, or with one the CA did not sign: no response.
        // (With TLS 1.3 the client finishes its side first; the refusal comes
        // with the server's next record.)
        for auth in [None, Some(&bad)] {
            let refused = handshake(
                p.addr,
                &client_with(versions, &["http/1.1"], auth),
                "m.example.com",
            )
            .and_then(|mut s| exchange(&mut s, GET));
            assert!(
                refused.is_err(),
                "{versions:?} cert {}: {refused:?}",
                auth.is_some()
            );
        }
        let mut s = connect(
            p.addr,
            &client_with(versions, &["http/1.1"], Some(&good)),
            "m.example.com",
        );
        ok(&mut s, "mtls");
    }
    assert_eq!(up.requests().len(), 2, "only the authenticated requests");
}

#[test]
fn client_auth_optional_serves_clients_with_and_without_a_certificate() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["m.example.com"]).write(&dir, "m");
    let trusted = ca("trusted CA");
    let ca_path = dir.path("ca.pem");
    std::fs::write(&ca_path, &trusted.pem).unwrap();
    let up = Mock::fixed(200, "maybe");
    let p = tls_proxy(
        &[pair],
        &format!(
            "client_auth = \"optional\", client_ca = \"{}\"",
            ca_path.display()
        ),
        &up,
    );
    let good = client_cert(&trusted, "client.example");
    let bad = client_cert(&ca("other CA"), "client.example");
    for versions in [TLS13, TLS12] {
        for auth in [None, Some(&good)] {
            let mut s = connect(
                p.addr,
                &client_with(versions, &["http/1.1"], auth),
                "m.example.com",
            );
            ok(&mut s, "maybe");
        }
        // Optional is not "anything goes": a certificate that is presented must verify.
        let refused = handshake(
            p.addr,
            &client_with(versions, &["http/1.1"], Some(&bad)),
            "m.example.com",
        )
        .and_then(|mut s| exchange(&mut s, GET));
        assert!(refused.is_err(), "{versions:?}: {refused:?}");
    }
    assert_eq!(up.requests().len(), 4);
}

/// The configuration error for `listener_extra`, which must start with `field: `.
fn config_error(listener_extra: &str, field: &str) {
    let text = config_text(
        "",
        listener_extra,
        WEB,
        &[("up", "127.0.0.1:9".parse().unwrap())],
    );
    let err = Config::from_toml(&text)
        .map(|_| ())
        .expect_err("the configuration is refused")
        .to_string();
    assert!(
        err.starts_with(&format!("{field}: ")),
        "expected an error naming {field}, got: {err}"
    );
}

#[test]
fn config_errors_name_the_field() {
    let _g = shared();
    let dir = TempDir::new();
    let a = cert(&["a.example.com"]);
    let b = cert(&["b.example.com"]);
    let (a_cert, a_key) = a.write(&dir, "a");
    let (_, b_key) = b.write(&dir, "b");
    let missing = dir.path("missing.pem").display().to_string();
    let ca_path = dir.path("ca.pem");
    std::fs::write(&ca_path, &ca("CA").pem).unwrap();

    // Valid as a reference: what the error cases change is what breaks them.
    let text = config_text(
        "",
        &tls_table(&[(a_cert.clone(), a_key.clone())], ""),
        WEB,
        &[("up", "127.0.0.1:9".parse().unwrap())],
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));

    config_error(
        &tls_table(&[(a_cert.clone(), b_key.clone())], ""),
        "listeners[0].tls.certificates[0].key",
    );
    config_error(
        &tls_table(&[(missing.clone(), a_key.clone())], ""),
        "listeners[0].tls.certificates[0].cert",
    );
    config_error(
        &tls_table(
            &[
                (a_cert.clone(), a_key.clone()),
                (missing.clone(), a_key.clone()),
            ],
            "",
        ),
        "listeners[0].tls.certificates[1].cert",
    );
    config_error(
        &tls_table(
            &[
                (a_cert.clone(), a_key.clone()),
                (a_cert.clone(), b_key.clone()),
            ],
            "",
        ),
        "listeners[0].tls.certificates[1].key",
    );
    config_error(
        "tls = { min_version = \"1.2\" }",
        "listeners[0].tls.certificates",
    );
    config_error(
        &tls_table(&[(a_cert.clone(), a_key.clone())], "min_version = \"1.1\""),
        "listeners[0].tls.min_version",
    );
    config_error(
        &tls_table(
            &[(a_cert.clone(), a_key.clone())],
            "client_auth = \"required\"",
        ),
        "listeners[0].tls.client_ca",
    );
    config_error(
        &tls_table(
            &[(a_cert.clone(), a_key.clone())],
            &format!("client_auth = \"required\", client_ca = \"{missing}\""),
        ),
        "listeners[0].tls.client_ca",
    );
    // The same with the CA present is accepted.
    let text = config_text(
        "",
        &tls_table(
            &[(a_cert, a_key)],
            &format!(
                "client_auth = \"required\", client_ca = \"{}\"",
                ca_path.display()
            ),
        ),
        WEB,
        &[("up", "127.0.0.1:9".parse().unwrap())],
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_expired_certificate_loads_and_is_served() {
    let _g = shared();
    let dir = TempDir::new();
    let old = cert_with(
        None,
        &["old.example.com"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
        |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        },
    );
    let up = Mock::fixed(200, "stale");
    let p = tls_proxy(&[old.write(&dir, "old")], "", &up);
    let mut s = connect(p.addr, &client(), "old.example.com");
    assert!(served(&s) == old.der);
    ok(&mut s, "stale");
}

#[test]
fn plaintext_http_on_the_tls_port_is_closed() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::fixed(200, "after");
    let p = tls_proxy(&[pair], "", &up);
    let mut plain = tcp(p.addr);
    plain.write_all(GET.as_bytes()).unwrap();
    let got = read_until_closed(&mut plain).expect("closed within the deadline");
    assert!(
        !got.starts_with(b"HTTP/"),
        "no plaintext answer: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        got.is_empty() || got[0] == 0x15,
        "nothing or an alert record: {got:02x?}"
    );
    assert!(up.requests().is_empty());
    let mut s = connect(p.addr, &client(), "a.example.com");
    ok(&mut s, "after");
}

/// A ClientHello that claims 64 KiB, sent one byte a record (six bytes each on the
/// wire, all of them kept until the message is complete): refused once the input
/// held passes what any message needs, not left to grow until the handshake
/// timeout (10 s, longer than the reads here wait).
#[test]
fn a_handshake_message_in_tiny_records_is_refused_before_it_grows() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::fixed(200, "alive");
    let p = tls_proxy(&[pair], "", &up);
    let mut s = tcp(p.addr);
    s.set_read_timeout(Some(DEADLINE / 2)).unwrap();
    let mut payload = vec![0x01, 0x00, 0xff, 0xff, 0x03, 0x03];
    payload.resize(20_000, 0);
    let wire: Vec<u8> = payload
        .iter()
        .flat_map(|&b| [0x16, 0x03, 0x01, 0x00, 0x01, b])
        .collect();
    // (The proxy may close while this is still being written.)
    let _ = s.write_all(&wire);
    assert_closed_with_at_most_an_alert(&mut s, "a ClientHello in one-byte records");
    let mut ok_conn = connect(p.addr, &client(), "a.example.com");
    ok(&mut ok_conn, "alive");
}

/// A keep-alive client whose request came with the first bytes of its next TLS
/// record, and no more: nothing decryptable is waiting, so the connection is idle
/// and a drain closes it at once (not at the 60 s idle timeout, longer than the
/// read here waits).
#[test]
fn a_drain_closes_a_tls_connection_holding_part_of_a_record() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::fixed(200, "alive");
    let extra = format!(
        "idle_timeout = \"60s\"\nrelease_buffers_after = \"30s\"\n{}",
        tls_table(&[pair], "")
    );
    let p = proxy_with("drain_timeout = \"60s\"", &extra, WEB, &[("up", up.addr)]);
    let mut s = connect(p.addr, &client(), "a.example.com");
    ok(&mut s, "alive");
    // The request and three bytes of a record header in one write.
    s.conn.writer().write_all(GET.as_bytes()).unwrap();
    let mut wire = Vec::new();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut wire).unwrap();
    }
    wire.extend_from_slice(&[0x17, 0x03, 0x03]);
    s.sock.write_all(&wire).unwrap();
    let mut body = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&body).ends_with("alive") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "the response, whole");
        body.push(byte[0]);
    }
    p.server.drain();
    read_until_closed(&mut s.sock).expect("closed by the drain");
    p.server.join();
}

/// A client that stops reading a large response: the proxy's write to it times
/// out (`idle_timeout`) with a write in flight, and the connection is dropped
/// then, cleanly: its descriptor closes and the core goes on serving.
#[test]
fn a_write_abandoned_at_its_timeout_closes_the_connection_cleanly() {
    let _g = exclusive();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let big: &'static [u8] = Box::leak(vec![b'x'; 16 << 20].into_boxed_slice());
    let up = Mock::start(move |r, _| {
        let body: &[u8] = if r.request_line().starts_with("GET /big") {
            big
        } else {
            b"alive"
        };
        Some((response(200, &[], body), false))
    });
    let extra = format!("idle_timeout = \"300ms\"\n{}", tls_table(&[pair], ""));
    let p = proxy(&extra, WEB, &[("up", up.addr)]);
    let config = client();
    // Warm up: the upstream connection is pooled before the count.
    let mut s = connect(p.addr, &config, "a.example.com");
    ok(&mut s, "alive");
    drop(s);
    eventually("warm-up connection closed", || {
        let base = open_fds();
        std::thread::sleep(std::time::Duration::from_millis(20));
        open_fds() == base
    });
    let baseline = open_fds();
    let mut slow = connect(p.addr, &config, "a.example.com");
    slow.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    slow.flush().unwrap();
    // Never read: the proxy's write stalls on a full window and times out.
    eventually("the stalled connection closed by the proxy", || {
        open_fds() <= baseline + 1
    });
    // Closed indeed: what was sent before, then the end (within the deadline).
    let got = read_until_closed(&mut slow.sock).expect("the proxy closed the connection");
    assert!(
        got.len() < 16 << 20,
        "not all of the response: {} bytes",
        got.len()
    );
    let mut s = connect(p.addr, &config, "a.example.com");
    ok(&mut s, "alive");
}

#[test]
fn stalled_and_garbage_handshakes_are_closed_without_leaking_descriptors_or_memory() {
    let _g = exclusive();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::fixed(200, "alive");
    let p = tls_proxy(&[pair], "handshake_timeout = \"300ms\"", &up);
    let config = client();
    // Warm up: the upstream connection is pooled before the count.
    let mut s = connect(p.addr, &config, "a.example.com");
    ok(&mut s, "alive");
    drop(s);

    // Sends nothing: closed at the handshake timeout. The reads wait at most half
    // the deadline, less than the default handshake_timeout (10s), so a listener
    // that ignored the setting fails here.
    let stalled = |addr| {
        let s = tcp(addr);
        s.set_read_timeout(Some(DEADLINE / 2)).unwrap();
        s
    };
    let mut silent = stalled(p.addr);
    assert_closed_with_at_most_an_alert(&mut silent, "a silent client");
    // Sends garbage: closed.
    let mut garbage = tcp(p.addr);
    garbage.write_all(b"\xff\xfe\x00garbage\r\n\r\n").unwrap();
    assert_closed_with_at_most_an_alert(&mut garbage, "a garbage client");
    // A ClientHello cut short, then silence: closed at the timeout.
    let mut partial = stalled(p.addr);
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert_closed_with_at_most_an_alert(&mut partial, "a partial ClientHello");
    // One complete record with the first part of a ClientHello that claims more,
    // then silence: closed at the timeout, which drops a read in flight while
    // rustls holds a position in the record (the core must go on serving).
    let mut first_part = stalled(p.addr);
    first_part
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x0a, 0x01, 0x00, 0x03, 0xe8, 0x03, 0x03, 0, 0, 0, 0,
        ])
        .unwrap();
    assert_closed_with_at_most_an_alert(&mut first_part, "a ClientHello's first record");
    drop((silent, garbage, partial, first_part));

    eventually("warm-up connections closed", || {
        let base = open_fds();
        std::thread::sleep(std::time::Duration::from_millis(20));
        open_fds() == base
    });
    let baseline = open_fds();
    // Fifty stalled and garbage handshakes at once; descriptors and memory come
    // back after each round (the first warms allocator and caches up).
    let round = || {
        let mut conns: Vec<TcpStream> = (0..50)
            .map(|i| {
                let mut c = stalled(p.addr);
                if i % 2 == 1 {
                    c.write_all(b"\x16\x03\x01\x00\x05\xff\xff\xff\xff\xff garbage")
                        .unwrap();
                }
                c
            })
            .collect();
        for (i, c) in conns.iter_mut().enumerate() {
            assert_closed_with_at_most_an_alert(c, &format!("connection {i}"));
        }
        drop(conns);
        eventually("descriptors back to baseline", || open_fds() <= baseline);
    };
    round();
    let rss = rss_bytes();
    for _ in 0..4 {
        round();
    }
    let growth = rss_bytes().saturating_sub(rss);
    assert!(
        growth < 4 << 20,
        "RSS grew {} KiB over 4 rounds",
        growth >> 10
    );

    // Still serving.
    let mut s = connect(p.addr, &config, "a.example.com");
    ok(&mut s, "alive");
}

#[test]
fn rotated_certificate_files_are_served_after_a_reload() {
    let _g = shared();
    let dir = TempDir::new();
    let a = cert(&["rot.example.com"]);
    let b = cert(&["rot.example.com"]);
    let (cert_path, key_path) = a.write(&dir, "site");
    let up = Mock::fixed(200, "rot");
    let path = dir.path("ringway.toml");
    std::fs::write(
        &path,
        config_text(
            "drain_timeout = \"5s\"",
            &tls_table(&[(cert_path.clone(), key_path.clone())], ""),
            WEB,
            &[("up", up.addr)],
        ),
    )
    .unwrap();
    let server = ringway::Server::start(Config::load(&path).unwrap()).unwrap();
    server.set_config_path(Some(path.clone()));
    let addr = server.local_addr("edge").unwrap();

    let mut before = connect(addr, &client(), "rot.example.com");
    assert!(served(&before) == a.der);
    ok(&mut before, "rot");

    // Rotate: new files at the same paths, the same configuration text.
    b.write(&dir, "site");
    server.reload_config_file().unwrap();
    let mut after = connect(addr, &client(), "rot.example.com");
    assert!(
        served(&after) == b.der,
        "new handshakes get the new certificate"
    );
    ok(&mut after, "rot");
    // A connection from before the reload keeps working.
    ok(&mut before, "rot");

    // A broken key file: the reload fails, naming the field; B stays.
    std::fs::write(
        &key_path,
        "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = server
        .reload_config_file()
        .expect_err("a garbage key fails the reload")
        .to_string();
    assert!(
        err.starts_with("listeners[0].tls.certificates[0].key: "),
        "{err}"
    );
    let mut still = connect(addr, &client(), "rot.example.com");
    assert!(served(&still) == b.der, "the running certificate stays");
    ok(&mut still, "rot");
    ok(&mut before, "rot");
    ok(&mut after, "rot");

    // Plain garbage (no PEM at all) fails the same way.
    std::fs::write(&key_path, "not a key").unwrap();
    let err = server.reload_config_file().unwrap_err().to_string();
    assert!(
        err.starts_with("listeners[0].tls.certificates[0].key: "),
        "{err}"
    );
    let s = connect(addr, &client(), "rot.example.com");
    assert!(served(&s) == b.der);
}

#[test]
fn pipelined_requests_and_large_bodies_cross_tls_intact() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::echo();
    let p = tls_proxy(&[pair], "", &up);
    let post = |body: &[u8]| {
        let mut r = format!(
            "POST /echo HTTP/1.1\r\nHost: h\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    for versions in [TLS13, TLS12] {
        // Two requests written before the handshake ends: with TLS 1.3 they travel
        // with the client's Finished, so they are read during the handshake.
        let mut tcp = tcp(p.addr);
        let name = ServerName::try_from("a.example.com").unwrap().to_owned();
        let mut conn =
            ClientConnection::new(client_with(versions, &["http/1.1"], None), name).unwrap();
        let mut early = post(b"first");
        early.extend_from_slice(&post(b"second"));
        conn.writer().write_all(&early).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).unwrap();
        }
        let mut s = StreamOwned::new(conn, tcp);
        for want in ["first", "second"] {
            let r = exchange(&mut s, "").expect("a response to a pipelined request");
            assert_eq!(
                (r.status, String::from_utf8_lossy(&r.body).into_owned()),
                (200, want.to_string()),
                "{versions:?}"
            );
        }
        // Bodies of many records both ways, two pipelined in one write.
        let big: Vec<u8> = (0..(1 << 20) + 7).map(|i| (i % 251) as u8).collect();
        let mut both = post(&big);
        both.extend_from_slice(&post(&big[1..]));
        s.write_all(&both).unwrap();
        for want in [&big[..], &big[1..]] {
            let r = exchange(&mut s, "").expect("a large response");
            assert_eq!(r.status, 200);
            assert!(r.body == want, "{versions:?}: the body crossed intact");
        }
    }
}

#[test]
fn a_close_delimited_response_ends_with_close_notify() {
    // RFC 8446 §6.1: each party MUST send close_notify before closing its write
    // side. Without it a client cannot tell a complete close-delimited body from
    // a truncated one (rustls reports UnexpectedEof).
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["a.example.com"]).write(&dir, "a");
    let up = Mock::start(|_, _| Some((b"HTTP/1.1 200 OK\r\n\r\nuntil-close".to_vec(), true)));
    let p = tls_proxy(&[pair], "", &up);
    for versions in [TLS13, TLS12] {
        let mut s = connect(
            p.addr,
            &client_with(versions, &["http/1.1"], None),
            "a.example.com",
        );
        s.write_all(GET.as_bytes()).unwrap();
        let mut all = Vec::new();
        let end = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\nuntil-close"),
            "{text}"
        );
        assert!(
            end.is_ok(),
            "{versions:?}: the body ends with close_notify, not a bare TCP close: {end:?}"
        );
        // A connection closed lingering (after a bad head: the client may still
        // be sending) sends close_notify before it shuts its writing side.
        let mut s = connect(
            p.addr,
            &client_with(versions, &["http/1.1"], None),
            "a.example.com",
        );
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nbad line\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        let end = s.read_to_end(&mut all);
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(
            end.is_ok(),
            "{versions:?}: close_notify before the close: {end:?}"
        );
    }
}

/// A session made where no client certificate is asked for does not resume where
/// one is required (rustls would resume it without asking for a certificate):
/// each client-auth policy has its own ticket keys and session cache.
#[test]
fn sessions_do_not_cross_client_auth_policies() {
    let _g = shared();
    let dir = TempDir::new();
    let pair = cert(&["m.example.com"]).write(&dir, "m");
    let trusted = ca("trusted CA");
    let ca_path = dir.path("ca.pem");
    std::fs::write(&ca_path, &trusted.pem).unwrap();
    let up = Mock::fixed(200, "x");
    let required = format!(
        "client_auth = \"required\", client_ca = \"{}\"",
        ca_path.display()
    );
    let internal = format!(
        "[[listeners]]\nname = \"internal\"\nbind = \"127.0.0.1:0\"\n{}\n{WEB}",
        tls_table(std::slice::from_ref(&pair), &required)
    );
    let p = proxy(&tls_table(&[pair], ""), &internal, &[("up", up.addr)]);
    let internal_addr = p.server.local_addr("internal").unwrap();
    for versions in [TLS13, TLS12] {
        // One client: its session store keeps the public listener's session for
        // the name, and offers it to the other listener too.
        let config = client_with(versions, &["http/1.1"], None);
        let mut public = connect(p.addr, &config, "m.example.com");
        ok(&mut public, "x");
        let resumed = connect(p.addr, &config, "m.example.com");
        assert_eq!(resumed.conn.handshake_kind(), Some(HandshakeKind::Resumed));
        let refused = handshake(internal_addr, &config, "m.example.com").and_then(|mut s| {
            let kind = s.conn.handshake_kind();
            exchange(&mut s, GET).map(|r| (kind, r.status))
        });
        assert!(refused.is_err(), "{versions:?}: {refused:?}");
    }
    assert_eq!(
        up.requests().len(),
        2,
        "only the public listener's requests"
    );
}
