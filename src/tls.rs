//! TLS termination with rustls (aws-lc-rs provider).
//!
//! A listener's `[listeners.tls]` is compiled once per configuration load (start and
//! every reload, which therefore re-reads the certificate and key files): each
//! certificate chain and key is loaded and checked, its subjectAltName DNS names
//! index it for SNI, and one `rustls::ServerConfig` is built and shared by the
//! cores. Session resumption (TLS 1.3 tickets, TLS 1.2 tickets and session ids)
//! uses one ticketer and one session cache for the whole process, so tickets stay
//! valid across reloads; the ticketer rotates its keys itself (rustls' default
//! rotation, every six hours, accepting the previous key meanwhile).
//!
//! [`TlsStream`] drives rustls' unbuffered API: the ciphertext read from the socket
//! stays in the connection's own buffer, where rustls decrypts it in place (rustls
//! 0.23 then hands each record's plaintext over in a heap chunk, copied once into
//! the reader's buffer), and records are encrypted into the connection's own output
//! buffer; both buffers are given back while the connection idles, so an idle TLS
//! connection keeps rustls' session state and nothing else (rustls' buffered API
//! keeps a record buffer of its own, 4 KiB at least, for the connection's life). A strict listener refuses an SNI that matches
//! no certificate with the `unrecognized_name` alert (RFC 6066 §3): the certificate
//! resolver, which rustls calls with each ClientHello, tells the handshake what it
//! saw (rustls' unbuffered server connection does not show the SNI itself).

use crate::config::ConfigError;
use crate::metrics::TlsFailure;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions,
    UnbufferedServerConnection,
};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{CommonState, RootCertStore, ServerConfig};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ciphertext read at once: one TLS record of the largest size and its header.
const CIPHER_READ: usize = 16 * 1024 + 256;
/// Plaintext encrypted at once (four records of the largest size).
const ENCRYPT_AT_ONCE: usize = 64 * 1024;
/// Room for each record's header, tag and padding when encrypting.
const RECORD_OVERHEAD: usize = 64;
/// Unprocessed ciphertext held at most: rustls keeps every record of a handshake
/// message that is still incomplete in our buffer, and takes messages of up to
/// 64 KiB (its buffered API refuses to hold more than that); one more read beyond.
const MAX_UNPROCESSED: usize = 64 * 1024 + CIPHER_READ;
/// TLS 1.2 session ids kept for resumption, the whole process together.
const SESSION_CACHE: usize = 16 * 1024;

/// Who must present a client certificate (mutual TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

/// A listener's TLS settings as written, with file paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// (certificate chain file, key file), the first being the default.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    pub min_tls13: bool,
    pub alpn: Vec<String>,
    pub handshake_timeout: Duration,
    pub strict_sni: bool,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
    pub forward_client_cert: bool,
}

/// What the proxy knows about a loaded certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    /// subjectAltName DNS names, lower-case (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// A listener's compiled TLS: what handshakes need.
pub struct ServerTls {
    pub settings: TlsSettings,
    pub config: Arc<ServerConfig>,
    pub certificates: Vec<CertInfo>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("settings", &self.settings)
            .field("certificates", &self.certificates)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// What a resumed session skips: the client-certificate check. rustls resumes a
/// session whatever the listener's client-auth policy is now (a resumed handshake
/// requests no certificate and takes the peer's from the session), so sessions are
/// only valid under the policy they were made under: listeners with the same
/// policy share a ticketer and a session cache, others (and a reload that changes
/// `client_auth` or the bytes of `client_ca`) get their own, whose tickets the
/// others cannot decrypt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Policy {
    client_auth: u8,
    /// SHA-256 of the `client_ca` file's bytes (none without client auth).
    client_ca: [u8; 32],
}

/// Resumption state of one policy: a ticketer (`None` if the system cannot make
/// one: resumption by tickets is then off, and the reason logged) and a session
/// cache. Kept for the process's life, so tickets stay valid across reloads.
type Resumption = (
    Option<Arc<dyn ProducesTickets>>,
    Arc<dyn StoresServerSessions>,
);

fn resumption(policy: Policy) -> Resumption {
    static BY_POLICY: OnceLock<std::sync::Mutex<HashMap<Policy, Resumption>>> = OnceLock::new();
    let mut map = BY_POLICY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    map.entry(policy)
        .or_insert_with(|| {
            let ticketer = match rustls::crypto::aws_lc_rs::Ticketer::new() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(error = %e, "no TLS session ticket keys: resumption by tickets is off");
                    None
                }
            };
            let cache: Arc<dyn StoresServerSessions> =
                rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
            (ticketer, cache)
        })
        .clone()
}

impl ServerTls {
    /// Loads and checks every file; `field` names the listener's `tls` table in
    /// errors (`listeners[1].tls`).
    pub fn load(settings: TlsSettings, field: &str) -> Result<ServerTls, ConfigError> {
        if settings.certificates.is_empty() {
            return Err(ConfigError::new(
                format!("{field}.certificates"),
                "at least one { cert, key } pair is required",
            ));
        }
        let mut keys = Vec::new();
        let mut infos = Vec::new();
        for (i, (cert, key)) in settings.certificates.iter().enumerate() {
            let f = format!("{field}.certificates[{i}]");
            let (certified, info) = load_pair(cert, key, &f)?;
            keys.push(Arc::new(certified));
            infos.push(info);
        }
        let resolver = Arc::new(SniResolver::new(keys, &infos, settings.strict_sni));
        let versions: &[&'static rustls::SupportedProtocolVersion] = if settings.min_tls13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| ConfigError::new(format!("{field}.min_version"), e.to_string()))?;
        let mut policy = Policy {
            client_auth: settings.client_auth as u8,
            client_ca: [0; 32],
        };
        let builder = match settings.client_auth {
            ClientAuth::None => {
                if settings.client_ca.is_some() {
                    tracing::warn!("{field}.client_ca is not used: client_auth is \"none\"");
                }
                builder.with_no_client_auth()
            }
            auth => {
                let path = settings.client_ca.as_ref().ok_or_else(|| {
                    ConfigError::new(
                        format!("{field}.client_ca"),
                        "required when client_auth is \"optional\" or \"required\"",
                    )
                })?;
                let roots = load_roots(path, &format!("{field}.client_ca"))?;
                if let Ok(bytes) = std::fs::read(path) {
                    use sha2::Digest;
                    policy.client_ca = sha2::Sha256::digest(&bytes).into();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                );
                let verifier = if auth == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| ConfigError::new(format!("{field}.client_ca"), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = settings
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let (ticketer, cache) = resumption(policy);
        config.session_storage = cache;
        if let Some(t) = ticketer {
            config.ticketer = t;
        }
        Ok(ServerTls {
            settings,
            config: Arc::new(config),
            certificates: infos,
        })
    }
}

/// A cluster's `tls` settings as written, with file paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsSettings {
    /// Sent as SNI and verified; default: each endpoint's host as written.
    pub server_name: Option<String>,
    /// PEM bundle of trusted CAs; default: the system's trust store.
    pub ca: Option<PathBuf>,
    /// A client certificate chain and key (mutual TLS to the upstream).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub verify: bool,
    /// HTTP/2: ALPN `h2` instead of `http/1.1`.
    pub h2: bool,
}

/// A cluster's compiled upstream TLS.
pub struct UpstreamTls {
    pub settings: UpstreamTlsSettings,
    pub config: Arc<rustls::ClientConfig>,
    /// What the settings and the files they name hold: endpoints' pools are keyed
    /// by it, so a reload that changes any of them starts new pools (connections
    /// made under the old settings are not reused) and one that changes nothing
    /// keeps them.
    pub id: u64,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("settings", &self.settings)
            .field("id", &self.id)
            .finish()
    }
}

impl UpstreamTls {
    /// Loads and checks every file; `field` names the cluster's `tls` in errors.
    pub fn load(settings: UpstreamTlsSettings, field: &str) -> Result<UpstreamTls, ConfigError> {
        use sha2::Digest;
        let mut identity = sha2::Sha256::new();
        identity.update(format!("{settings:?}").as_bytes());
        let mut read = |path: &Path, name: &str| -> Result<(), ConfigError> {
            let bytes = std::fs::read(path)
                .map_err(|e| ConfigError::new(format!("{field}.{name}"), read_error(path, e)))?;
            identity.update(&bytes);
            Ok(())
        };
        for (path, name) in [
            (&settings.ca, "ca"),
            (&settings.cert, "cert"),
            (&settings.key, "key"),
        ] {
            if let Some(path) = path {
                read(path, name)?;
            }
        }
        if let Some(name) = &settings.server_name {
            ServerName::try_from(name.clone()).map_err(|_| {
                ConfigError::new(
                    format!("{field}.server_name"),
                    format!("{name:?} is not a DNS name or IP address"),
                )
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(field, e.to_string()))?;
        let builder = if settings.verify {
            let roots = match &settings.ca {
                Some(path) => load_roots(path, &format!("{field}.ca"))?,
                None => system_roots(&format!("{field}.ca"))?,
            };
            builder.with_root_certificates(roots)
        } else {
            tracing::warn!(
                "{field}.verify = false: upstream certificates are not verified (for test set-ups only)"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        };
        let mut config = match (&settings.cert, &settings.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let f = format!("{field}.cert");
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| ConfigError::new(&f, read_error(cert, e)))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| ConfigError::new(&f, read_error(cert, e)))?;
                if chain.is_empty() {
                    return Err(ConfigError::new(
                        f,
                        format!("{}: no PEM certificate in the file", cert.display()),
                    ));
                }
                let kf = format!("{field}.key");
                let der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| ConfigError::new(&kf, read_error(key, e)))?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| ConfigError::new(kf, format!("{}: {e}", key.display())))?
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{field}.key"),
                    "required with `cert`",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{field}.cert"),
                    "required with `key`",
                ))
            }
        };
        config.alpn_protocols = vec![match settings.h2 {
            true => b"h2".to_vec(),
            false => b"http/1.1".to_vec(),
        }];
        let digest = identity.finalize();
        let id = u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"));
        Ok(UpstreamTls {
            settings,
            config: Arc::new(config),
            id,
        })
    }

    /// The name to ask `endpoint` (as written: `host:port`) for: the configured
    /// `server_name`, else the endpoint's host.
    pub fn server_name(&self, endpoint: &str) -> Option<ServerName<'static>> {
        let name = match &self.settings.server_name {
            Some(n) => n.as_str(),
            None => {
                let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h);
                host.trim_start_matches('[').trim_end_matches(']')
            }
        };
        ServerName::try_from(name.to_string()).ok()
    }
}

/// The system's trust store (`/etc/ssl/certs` and the like).
fn system_roots(field: &str) -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(ConfigError::new(
            field,
            format!("no system trust store ({why}): set `ca`"),
        ));
    }
    Ok(roots)
}

/// `verify = false`: any certificate is accepted, but the handshake's signatures
/// are still checked (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read_error(path: &Path, e: impl fmt::Display) -> String {
    format!("cannot read {}: {e}", path.display())
}

/// One certificate chain and its key, checked to belong together.
fn load_pair(
    cert: &Path,
    key: &Path,
    field: &str,
) -> Result<(CertifiedKey, CertInfo), ConfigError> {
    let cert_field = format!("{field}.cert");
    let key_field = format!("{field}.key");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ConfigError::new(&cert_field, read_error(cert, e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::new(&cert_field, read_error(cert, e)))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            &cert_field,
            format!("{}: no PEM certificate in the file", cert.display()),
        ));
    }
    // PKCS#8, PKCS#1 (RSA) or SEC1 (EC): the first key in the file.
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConfigError::new(&key_field, read_error(key, e)))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| ConfigError::new(&key_field, format!("{}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        ConfigError::new(
            &key_field,
            format!(
                "{} does not match the certificate in {}: {e}",
                key.display(),
                cert.display()
            ),
        )
    })?;
    let info = inspect(&certified.cert[0], cert)
        .map_err(|e| ConfigError::new(&cert_field, format!("{}: {e}", cert.display())))?;
    Ok((certified, info))
}

/// The names, subject and expiry of an end-entity certificate (from `file`),
/// with a warning when it is not valid now.
fn inspect(der: &CertificateDer<'_>, file: &Path) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let validity = cert.validity();
    let subject = cert.subject().to_string();
    if validity.not_before.timestamp() > now {
        tracing::warn!(file = %file.display(), %subject, "certificate is not valid yet; loaded anyway");
    }
    if validity.not_after.timestamp() < now {
        tracing::warn!(file = %file.display(), %subject, "certificate has expired; loaded anyway");
    }
    Ok(CertInfo {
        subject,
        names: dns_names(&cert).map(|n| n.to_ascii_lowercase()).collect(),
        not_after: validity.not_after.timestamp(),
    })
}

/// The subjectAltName DNS names of a certificate.
fn dns_names<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'_>,
) -> impl Iterator<Item = &'a str> {
    let san = cert.subject_alternative_name().ok().flatten();
    san.into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(n) => Some(*n),
            _ => None,
        })
}

fn load_roots(path: &Path, field: &str) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError::new(field, read_error(path, e)))?;
    for cert in certs {
        let cert = cert.map_err(|e| ConfigError::new(field, read_error(path, e)))?;
        roots
            .add(cert)
            .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(ConfigError::new(
            field,
            format!("{}: no PEM certificate in the file", path.display()),
        ));
    }
    Ok(roots)
}

/// Picks a listener's certificate by SNI: an exact name before a wildcard, the
/// first certificate naming it before later ones; no SNI or no match gives the
/// first certificate, or, on a strict listener, none (the handshake then sends
/// `unrecognized_name`). It tells the handshake what the ClientHello said through
/// [`HELLO`].
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `*.example.com` is kept as `example.com`.
    wildcard: HashMap<String, usize>,
    strict: bool,
}

/// What the certificate resolver saw in the last ClientHello on this thread.
struct Hello {
    /// The SNI, lower-case.
    sni: Option<Box<str>>,
    /// A strict listener has no certificate for it.
    refused: bool,
}

thread_local! {
    /// Set by [`SniResolver::resolve`], which rustls calls with each ClientHello in
    /// the middle of `process_tls_records`; the handshake takes it right after that
    /// call returns, on the same thread, before any other connection's handshake
    /// can run.
    static HELLO: RefCell<Option<Hello>> = const { RefCell::new(None) };
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("exact", &self.exact)
            .field("wildcard", &self.wildcard)
            .finish()
    }
}

impl SniResolver {
    fn new(keys: Vec<Arc<CertifiedKey>>, infos: &[CertInfo], strict: bool) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, info) in infos.iter().enumerate() {
            for name in &info.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        SniResolver {
            keys,
            exact,
            wildcard,
            strict,
        }
    }

    /// The certificate naming `sni`, if any.
    fn find(&self, sni: Option<&str>) -> Option<usize> {
        let name = sni?.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        // A wildcard covers exactly one label (RFC 6125 §6.4.3).
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(rest).copied()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        let found = self.find(sni);
        let refused = self.strict && found.is_none();
        HELLO.with(|h| {
            *h.borrow_mut() = Some(Hello {
                sni: sni.map(|n| n.to_ascii_lowercase().into()),
                refused,
            })
        });
        if refused {
            return None;
        }
        self.keys.get(found.unwrap_or(0)).cloned()
    }
}

/// Why a handshake failed (for the log and the error counter).
#[derive(Debug)]
pub enum HandshakeError {
    /// The client closed or reset the connection first.
    Closed,
    /// A strict listener had no certificate for the SNI (`unrecognized_name`).
    UnknownSni,
    /// rustls refused the client's messages (the alert was sent).
    Tls(rustls::Error),
    Io(io::Error),
}

impl HandshakeError {
    /// What it counts as in the metrics.
    pub fn kind(&self) -> TlsFailure {
        use rustls::Error as E;
        match self {
            HandshakeError::Closed | HandshakeError::Io(_) => TlsFailure::Closed,
            HandshakeError::UnknownSni => TlsFailure::UnknownSni,
            HandshakeError::Tls(E::InvalidMessage(_) | E::InappropriateMessage { .. })
            | HandshakeError::Tls(E::InappropriateHandshakeMessage { .. }) => {
                TlsFailure::BadMessage
            }
            HandshakeError::Tls(E::NoCertificatesPresented) => TlsFailure::NoClientCertificate,
            HandshakeError::Tls(E::InvalidCertificate(_)) => TlsFailure::BadClientCertificate,
            HandshakeError::Tls(E::PeerIncompatible(_) | E::NoApplicationProtocol) => {
                TlsFailure::Incompatible
            }
            HandshakeError::Tls(_) => TlsFailure::Other,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Closed => f.write_str("client closed during the handshake"),
            HandshakeError::UnknownSni => f.write_str("no certificate for the SNI (strict_sni)"),
            HandshakeError::Tls(e) => write!(f, "{e}"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for HandshakeError {
    /// A TLS error carried by an I/O error (see [`is_tls_error`]) stays a TLS one.
    fn from(e: io::Error) -> Self {
        if !is_tls_error(&e) {
            return HandshakeError::Io(e);
        }
        match e
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls)) => HandshakeError::Tls(*tls),
            Some(Err(other)) => {
                HandshakeError::Io(io::Error::new(io::ErrorKind::InvalidData, other))
            }
            None => HandshakeError::Io(io::ErrorKind::InvalidData.into()),
        }
    }
}

/// Whether an I/O error of a TLS stream is TLS's (an alert received, a record
/// that does not decrypt), not the socket's.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// The `unrecognized_name` fatal alert as a plaintext record (no keys yet).
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// `data[range]` for a socket write. A `SliceMut`, where the relay writes a
/// `Slice` of its buffer: with a buffer type of its own, TLS gets its own copy of
/// monoio's write, and the relay's copy keeps one caller and stays inlined into
/// `relay::write_range`. (Sharing one copy made LLVM keep it out of line, which
/// cost every plain request about 150 instructions by callgrind.)
fn wire(data: Vec<u8>, range: std::ops::Range<usize>) -> monoio::buf::SliceMut<Vec<u8>> {
    debug_assert!(range.end <= data.len());
    monoio::buf::IoBufMut::slice_mut(data, range)
}

/// Writes all of `data` to the socket.
async fn send_all(tcp: &mut TcpStream, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut out = data;
    let mut at = 0;
    while at < out.len() {
        let len = out.len();
        let (res, slice) = tcp.write(wire(out, at..len)).await;
        out = slice.into_inner();
        match res? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => at += n,
        }
    }
    Ok(out)
}

/// What the access log says about a TLS connection, made once after its handshake.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: &'static str,
    /// The IANA name of the cipher suite (`TLS13_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    pub sni: Option<Box<str>>,
    pub alpn: Option<Box<str>>,
    /// The subject of the client's certificate (mutual TLS).
    pub client_subject: Option<Box<str>>,
    /// The `x-forwarded-client-cert` line of the client's certificate (empty
    /// without one), sent when the listener has `forward_client_cert`.
    pub client_cert_line: Box<[u8]>,
}

impl TlsInfo {
    fn of(conn: &CommonState, sni: Option<Box<str>>) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            _ => "unknown",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let leaf = conn.peer_certificates().and_then(|certs| certs.first());
        let parsed = leaf.and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok());
        let client_subject = parsed
            .as_ref()
            .map(|(_, cert)| cert.subject().to_string().into());
        let client_cert_line = match (leaf, &parsed) {
            (Some(der), Some((_, cert))) => client_cert_line(der.as_ref(), cert).into(),
            _ => Box::default(),
        };
        TlsInfo {
            version,
            cipher,
            sni,
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned().into()),
            client_subject,
            client_cert_line,
        }
    }
}

/// `x-forwarded-client-cert: Hash=<hex SHA-256 of the DER>;Subject="...";DNS=a;DNS=b`
/// (Envoy's element names), CRLF-terminated; `"` and `\` in the subject escaped.
fn client_cert_line(der: &[u8], cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<u8> {
    let mut line = b"x-forwarded-client-cert: Hash=".to_vec();
    line.extend_from_slice(crate::exposition::sha256_hex(der).as_bytes());
    line.extend_from_slice(b";Subject=\"");
    for c in cert.subject().to_string().bytes() {
        match c {
            b'"' | b'\\' => line.extend_from_slice(&[b'\\', c]),
            // (A header value holds no control bytes.)
            0..=0x1f | 0x7f => line.push(b'?'),
            _ => line.push(c),
        }
    }
    line.push(b'"');
    for n in dns_names(cert) {
        if n.bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        {
            line.extend_from_slice(b";DNS=");
            line.extend_from_slice(n.as_bytes());
        }
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// rustls' side of a connection: a listener's or one to an upstream.
enum Side {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// What one turn of rustls' state machine did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Something was done (a message encoded, records read): turn again.
    Again,
    /// More ciphertext from the peer is needed.
    Input,
    /// The handshake is over and nothing is pending; nothing was offered to write.
    Ready,
    /// Encrypted this many bytes of the plaintext offered.
    Wrote(usize),
    /// The peer closed the session (`close_notify`; reported once).
    PeerClosed,
    /// Both sides closed the session.
    Closed,
}

/// A TLS connection over a TCP socket (rustls' unbuffered API, see the module
/// docs).
pub struct TlsStream {
    tcp: TcpStream,
    side: Side,
    info: TlsInfo,
    /// Ciphertext read from the socket; `start..` of it not yet processed by rustls
    /// (the processed front is dropped before each read).
    cipher_in: Vec<u8>,
    start: usize,
    /// Decrypted bytes the reader has not taken yet (`plain_at..`): what did not fit
    /// its buffer, or arrived with the handshake. Usually empty and unallocated.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext on its way to the socket: `..out_len` of it. Its length is the
    /// room initialised so far, which rustls writes records into.
    cipher_out: Vec<u8>,
    out_len: usize,
    /// The peer closed the session, or the socket reached EOF.
    eof: bool,
    /// rustls failed the session (and queued a fatal alert): no close_notify then.
    failed: bool,
    /// `close_notify` was sent (or tried) already ([`TlsStream::close_notify`]).
    notified: bool,
    /// A read or write of one of the buffers is (or was, when its future was
    /// dropped: a timeout) in flight: the buffer is the kernel's until it
    /// completes, and rustls' positions in the input may point past what is left.
    /// Nothing is given to rustls any more then.
    in_flight: bool,
    /// The unprocessed ciphertext's length when rustls last asked for more input
    /// (everything complete before it was processed); `None` since a turn that may
    /// have left complete records behind.
    waiting_at: Option<usize>,
}

impl Drop for TlsStream {
    /// Closes the TLS session properly before the socket closes: a `close_notify`
    /// alert (RFC 8446 §6.1), without which a client cannot tell a complete
    /// close-delimited body from a truncated one. Sent without waiting
    /// (`MSG_DONTWAIT`), with anything still queued before it: a client whose
    /// receive window is full is not reading and gets none.
    fn drop(&mut self) {
        self.close_notify();
    }
}

impl TlsStream {
    /// Sends `close_notify` now (once; see `Drop`), as when the stream is dropped:
    /// before the socket's writing side is shut down (a lingering close).
    pub fn close_notify(&mut self) {
        if self.failed || self.in_flight || self.notified {
            return;
        }
        self.notified = true;
        let TlsStream {
            side,
            cipher_in,
            start,
            cipher_out,
            out_len,
            ..
        } = self;
        // (Each turn may decrypt one record still unread; pipelined requests are
        // few, and a close_notify after more of them is not sent.)
        for _ in 0..32 {
            // (The unprocessed ciphertext again: see `turn`.)
            let incoming = &mut cipher_in[*start..];
            let (discard, done) = match side {
                Side::Server(c) => close_turn(c.process_tls_records(incoming), cipher_out, out_len),
                Side::Client(c) => close_turn(c.process_tls_records(incoming), cipher_out, out_len),
            };
            *start += discard;
            if done {
                break;
            }
        }
        if *out_len > 0 {
            use nix::sys::socket::{send, MsgFlags};
            use std::os::fd::AsRawFd;
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            let _ = send(
                self.tcp.as_raw_fd(),
                &self.cipher_out[..self.out_len],
                flags,
            );
        }
    }
}

/// One turn towards `close_notify` (see [`TlsStream`]'s `Drop`): the ciphertext to
/// discard, and `true` when done (queued, or nothing more can be sent). Records
/// read meanwhile are dropped.
fn close_turn<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    out: &mut Vec<u8>,
    out_len: &mut usize,
) -> (usize, bool) {
    let discard = status.discard;
    let done = match status.state {
        Ok(ConnectionState::ReadTraffic(mut r)) => {
            let mut extra = 0;
            while let Some(Ok(record)) = r.next_record() {
                extra += record.discard;
            }
            return (discard + extra, false);
        }
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            encode_into(out, out_len, |room| match e.encode(room) {
                Ok(n) => Ok(n),
                Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                Err(_) => Err(None),
            })
            .is_err()
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            false
        }
        // (Reported once; the next turn allows sending.)
        Ok(ConnectionState::PeerClosed) => false,
        Ok(ConnectionState::WriteTraffic(mut w)) => {
            let _ = encode_into(out, out_len, |room| match w.queue_close_notify(room) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                Err(_) => Err(None),
            });
            true
        }
        _ => true,
    };
    (discard, done)
}

/// Lets `f` write into the room after `out[..*len]`, growing it (zero-filled once,
/// then reused) when `f` says how much it needs (`Err(Some(size))`); `Err(None)`:
/// `f` failed.
fn encode_into(
    out: &mut Vec<u8>,
    len: &mut usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    loop {
        match f(&mut out[*len..]) {
            Ok(n) => {
                *len += n;
                return Ok(());
            }
            Err(Some(need)) if *len + need > out.len() => out.resize(*len + need, 0),
            Err(_) => return Err(()),
        }
    }
}

/// Takes a decrypted record's bytes: into `dst`'s spare capacity as far as they
/// fit (when nothing is pending before them), the rest into `rest`.
fn take_plain(payload: &[u8], dst: &mut Option<&mut Vec<u8>>, rest: &mut Vec<u8>) {
    let mut p = payload;
    if rest.is_empty() {
        if let Some(d) = dst {
            let n = p.len().min(d.capacity() - d.len());
            d.extend_from_slice(&p[..n]);
            p = &p[n..];
        }
    }
    rest.extend_from_slice(p);
}

/// Handles one state of rustls' state machine (generic over the two sides):
/// records read go to `dst`/`rest`, messages to send to `out`, and `write` (when
/// not empty) is encrypted once rustls allows it. Returns how much of the
/// incoming ciphertext to discard, and what happened.
fn turn_with<Data>(
    status: UnbufferedStatus<'_, '_, Data>,
    out: &mut Vec<u8>,
    out_len: &mut usize,
    mut dst: Option<&mut Vec<u8>>,
    rest: &mut Vec<u8>,
    write: &[u8],
) -> (usize, Result<Turn, rustls::Error>) {
    let mut discard = status.discard;
    let state = match status.state {
        Ok(state) => state,
        Err(e) => return (discard, Err(e)),
    };
    let turn = match state {
        ConnectionState::ReadTraffic(mut r) => {
            while let Some(record) = r.next_record() {
                match record {
                    Ok(record) => {
                        discard += record.discard;
                        take_plain(record.payload, &mut dst, rest);
                    }
                    Err(e) => return (discard, Err(e)),
                }
            }
            Ok(Turn::Again)
        }
        ConnectionState::EncodeTlsData(mut e) => {
            let encoded = encode_into(out, out_len, |room| match e.encode(room) {
                Ok(n) => Ok(n),
                Err(EncodeError::InsufficientSize(s)) => Err(Some(s.required_size)),
                Err(_) => Err(None),
            });
            match encoded {
                Ok(()) => Ok(Turn::Again),
                Err(()) => Err(rustls::Error::General("TLS message not encoded".into())),
            }
        }
        // Sent before the next wait for input (or at the end of the write).
        ConnectionState::TransmitTlsData(t) => {
            t.done();
            Ok(Turn::Again)
        }
        ConnectionState::BlockedHandshake => Ok(Turn::Input),
        ConnectionState::WriteTraffic(mut w) if !write.is_empty() => {
            let records = write.len().div_ceil(16 * 1024);
            let room = write.len() + records * RECORD_OVERHEAD;
            if out.len() < *out_len + room {
                out.resize(*out_len + room, 0);
            }
            let encrypted = encode_into(out, out_len, |room| match w.encrypt(write, room) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(s)) => Err(Some(s.required_size)),
                Err(_) => Err(None),
            });
            match encrypted {
                Ok(()) => Ok(Turn::Wrote(write.len())),
                Err(()) => Err(rustls::Error::EncryptError),
            }
        }
        ConnectionState::WriteTraffic(_) => Ok(Turn::Ready),
        ConnectionState::PeerClosed => Ok(Turn::PeerClosed),
        ConnectionState::Closed => Ok(Turn::Closed),
        // Early data is never accepted (no listener enables it).
        _ => Err(rustls::Error::General("unexpected TLS state".into())),
    };
    (discard, turn)
}

/// Performs the server handshake on `tcp` (the caller bounds it in time).
pub async fn accept(tcp: TcpStream, tls: &ServerTls) -> Result<TlsStream, HandshakeError> {
    let conn = UnbufferedServerConnection::new(tls.config.clone()).map_err(HandshakeError::Tls)?;
    let mut stream = TlsStream::new(tcp, Side::Server(conn));
    // (Nothing left over from a handshake that ended early on this thread.)
    HELLO.with(|h| h.borrow_mut().take());
    stream.handshake().await?;
    let sni = stream.info.sni.take();
    stream.info = TlsInfo::of(stream.common(), sni);
    Ok(stream)
}

/// Performs the client handshake with an upstream on `tcp`, for `name` (sent as
/// SNI, and verified against the certificate unless the cluster says not to).
pub async fn connect(
    tcp: TcpStream,
    tls: &UpstreamTls,
    name: ServerName<'static>,
) -> Result<TlsStream, HandshakeError> {
    let conn =
        UnbufferedClientConnection::new(tls.config.clone(), name).map_err(HandshakeError::Tls)?;
    let mut stream = TlsStream::new(tcp, Side::Client(conn));
    stream.handshake().await?;
    Ok(stream)
}

/// A TLS failure as an I/O error of the stream (see [`is_tls_error`]).
/// The session can no longer carry data (closed, or in a state without it).
fn cannot_send() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "TLS connection cannot send")
}

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    fn new(tcp: TcpStream, side: Side) -> TlsStream {
        TlsStream {
            tcp,
            side,
            info: TlsInfo::default(),
            cipher_in: Vec::new(),
            start: 0,
            plain: Vec::new(),
            plain_at: 0,
            cipher_out: Vec::new(),
            out_len: 0,
            eof: false,
            failed: false,
            notified: false,
            in_flight: false,
            waiting_at: None,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn common(&self) -> &CommonState {
        match &self.side {
            Side::Server(c) => c,
            Side::Client(c) => c,
        }
    }

    /// The negotiated protocol version (after the handshake).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.common().protocol_version()
    }

    /// One turn of rustls' state machine over the unprocessed ciphertext (always
    /// all of it: rustls' handshake deframer keeps positions in it between turns);
    /// decrypted bytes go to `dst` as far as they fit, else to `plain`.
    fn turn(&mut self, dst: Option<&mut Vec<u8>>, write: &[u8]) -> Result<Turn, rustls::Error> {
        let TlsStream {
            side,
            cipher_in,
            start,
            plain,
            cipher_out,
            out_len,
            ..
        } = self;
        let incoming = &mut cipher_in[*start..];
        let (discard, turn) = match side {
            Side::Server(c) => {
                let status = c.process_tls_records(incoming);
                turn_with(status, cipher_out, out_len, dst, plain, write)
            }
            Side::Client(c) => {
                let status = c.process_tls_records(incoming);
                turn_with(status, cipher_out, out_len, dst, plain, write)
            }
        };
        *start += discard;
        match turn {
            Err(_) => self.failed = true,
            Ok(Turn::Input | Turn::Ready) => self.waiting_at = Some(cipher_in.len() - *start),
            Ok(_) => self.waiting_at = None,
        }
        turn
    }

    /// Runs the handshake to its end, then sends what it left queued (TLS 1.3
    /// session tickets).
    async fn handshake(&mut self) -> Result<(), HandshakeError> {
        loop {
            let turn = self.turn(None, &[]);
            if let Some(hello) = HELLO.with(|h| h.borrow_mut().take()) {
                if hello.refused {
                    // rustls' own alert for it (access_denied) is not sent.
                    let _ = send_all(&mut self.tcp, UNRECOGNIZED_NAME.to_vec()).await;
                    return Err(HandshakeError::UnknownSni);
                }
                self.info.sni = hello.sni;
            }
            match turn {
                Ok(Turn::Again) => {}
                Ok(Turn::Ready) if !self.common().is_handshaking() => break,
                Ok(Turn::Ready | Turn::Input) => {
                    self.flush().await?;
                    if !self.fill().await? {
                        return Err(HandshakeError::Closed);
                    }
                }
                Ok(Turn::PeerClosed | Turn::Closed | Turn::Wrote(_)) => {
                    return Err(HandshakeError::Closed)
                }
                Err(e) => {
                    self.send_alert().await;
                    return Err(HandshakeError::Tls(e));
                }
            }
        }
        self.flush().await?;
        Ok(())
    }

    /// After a TLS error: sends the alert rustls queued for it (best effort: the
    /// connection closes after it anyway). Each turn while rustls has a message
    /// queued encodes that message and reads nothing (the failed input is never
    /// processed again).
    async fn send_alert(&mut self) {
        self.queue_alert();
        let _ = self.flush().await;
    }

    pub fn info(&self) -> &TlsInfo {
        &self.info
    }

    /// See [`TlsInfo::client_cert_line`].
    pub fn client_cert_line(&self) -> &[u8] {
        &self.info.client_cert_line
    }

    /// Whether bytes are already here: decrypted, or received and not yet
    /// processed (a wait for the socket's readability would miss them); not a
    /// record's first part that rustls already looked at (more must arrive).
    pub fn has_buffered(&mut self) -> bool {
        let unprocessed = self.cipher_in.len() - self.start;
        self.plain_at < self.plain.len()
            || match self.waiting_at {
                Some(seen) => unprocessed > seen,
                None => unprocessed > 0,
            }
    }

    /// Waits until something can be read: at once when bytes are already held.
    /// Consumes nothing: cancelling it loses nothing.
    pub async fn readable(&mut self) -> io::Result<()> {
        if self.has_buffered() {
            return Ok(());
        }
        self.tcp.readable(false).await
    }

    /// Frees the connection's buffers while it idles (those holding nothing); the
    /// next read or write takes new ones.
    pub fn release_buffers(&mut self) {
        if self.in_flight {
            return;
        }
        if self.start >= self.cipher_in.len() {
            self.cipher_in = Vec::new();
            self.start = 0;
        } else if self.cipher_in.capacity() > CIPHER_READ / 4 {
            // A record's first part, waiting for the rest: kept in a buffer its size.
            self.cipher_in.drain(..self.start);
            self.start = 0;
            self.cipher_in.shrink_to_fit();
        }
        if self.plain_at >= self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        if self.out_len == 0 {
            self.cipher_out = Vec::new();
        }
    }

    /// Reads ciphertext once, after what is still unprocessed. `Ok(false)` at EOF.
    /// Fails (a TLS error) when rustls holds more unprocessed input than any
    /// message needs: a peer sending a handshake message in tiny records.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.cipher_in.drain(..self.start);
            self.start = 0;
        }
        if self.cipher_in.len() > MAX_UNPROCESSED {
            self.failed = true;
            return Err(tls_io_error(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::MessageTooLarge,
            )));
        }
        if self.cipher_in.capacity() - self.cipher_in.len() < CIPHER_READ / 4 {
            self.cipher_in.reserve(CIPHER_READ);
        }
        let buf = std::mem::take(&mut self.cipher_in);
        let (len, cap) = (buf.len(), buf.capacity());
        self.in_flight = true;
        let (res, slice) = self
            .tcp
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..cap))
            .await;
        self.in_flight = false;
        self.cipher_in = slice.into_inner();
        Ok(res? > 0)
    }

    /// Sends everything encoded so far (handshake messages, records, alerts).
    async fn flush(&mut self) -> io::Result<()> {
        if self.out_len == 0 {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.cipher_out);
        let len = self.out_len;
        let mut at = 0;
        while at < len {
            self.in_flight = true;
            let (res, slice) = self.tcp.write(wire(out, at..len)).await;
            self.in_flight = false;
            out = slice.into_inner();
            match res {
                Ok(0) => {
                    self.cipher_out = out;
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => at += n,
                Err(e) => {
                    self.cipher_out = out;
                    return Err(e);
                }
            }
        }
        self.cipher_out = out;
        self.out_len = 0;
        Ok(())
    }

    /// An error once rustls failed the session, or an operation on the stream was
    /// abandoned half-way (it must not process anything more).
    fn usable(&self) -> io::Result<()> {
        match self.failed || self.in_flight {
            false => Ok(()),
            true => Err(tls_io_error(rustls::Error::General(
                "TLS session failed".into(),
            ))),
        }
    }

    /// Bytes already decrypted and not taken, into `buf` as far as they fit; `0`
    /// once the peer closed and nothing is left; `None` when neither.
    fn take_pending(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        if self.plain_at < self.plain.len() {
            let n = (self.plain.len() - self.plain_at).min(buf.capacity() - buf.len());
            buf.extend_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
            self.plain_at += n;
            if self.plain_at == self.plain.len() {
                self.plain.clear();
                self.plain_at = 0;
            }
            return Some(n);
        }
        self.eof.then_some(0)
    }

    /// What is already here, without waiting for the socket: decrypted bytes into
    /// `buf` (`Some(n)`; `Some(0)` when the peer closed), or `None` when rustls needs
    /// more input (anything rustls owes the peer, such as a key update, is sent
    /// first). Idle waits use it directly: the wait for the rest of a record is then
    /// a wait for readability, which a release or a drain may end, not a read that
    /// holds the buffers.
    pub async fn read_ready(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
        self.usable()?;
        if buf.len() == buf.capacity() {
            buf.reserve(crate::worker::BUF_SIZE);
        }
        loop {
            if let Some(n) = self.take_pending(buf) {
                return Ok(Some(n));
            }
            let before = buf.len();
            match self.turn(Some(buf), &[]) {
                Ok(Turn::Again) if buf.len() > before => return Ok(Some(buf.len() - before)),
                Ok(Turn::Again) => {}
                Ok(Turn::Input | Turn::Ready) => {
                    self.flush().await?;
                    return Ok(None);
                }
                Ok(Turn::PeerClosed | Turn::Closed | Turn::Wrote(_)) => self.eof = true,
                Err(e) => {
                    self.send_alert().await;
                    return Err(tls_io_error(e));
                }
            }
        }
    }

    /// Reads what the socket has (after a wait for its readability: at once), for
    /// [`TlsStream::read_ready`] to process. `Ok(false)` at EOF (marked: closed
    /// without close_notify is, for HTTP, the same as a close).
    pub async fn fill_ready(&mut self) -> io::Result<bool> {
        self.usable()?;
        let more = self.fill().await?;
        if !more {
            self.eof = true;
        }
        Ok(more)
    }

    /// Reads decrypted bytes into the spare capacity of `buf` (grown when full,
    /// as a plain read does), reading the socket as often as that needs; `Ok(0)`
    /// when the client closed.
    pub async fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            if let Some(n) = self.read_ready(buf).await? {
                return Ok(n);
            }
            self.fill_ready().await?;
        }
    }

    /// Reads ciphertext once without waiting (`MSG_DONTWAIT`), after what is still
    /// unprocessed: `Ok(false)` when the socket has nothing (wait for its
    /// readability); EOF is marked and counts as progress.
    fn try_fill(&mut self) -> io::Result<bool> {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        if self.start > 0 {
            self.cipher_in.drain(..self.start);
            self.start = 0;
        }
        if self.cipher_in.len() > MAX_UNPROCESSED {
            self.failed = true;
            return Err(tls_io_error(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::MessageTooLarge,
            )));
        }
        let len = self.cipher_in.len();
        self.cipher_in.resize(len + CIPHER_READ, 0);
        let got = recv(
            self.tcp.as_raw_fd(),
            &mut self.cipher_in[len..],
            MsgFlags::MSG_DONTWAIT,
        );
        self.cipher_in.truncate(len + *got.as_ref().unwrap_or(&0));
        match got {
            Ok(0) => {
                self.eof = true;
                Ok(true)
            }
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends what is encoded without waiting (`MSG_DONTWAIT`): `Ok(true)` once
    /// nothing is left queued, `Ok(false)` when the socket has no room (wait for
    /// its writability).
    pub fn try_flush(&mut self) -> io::Result<bool> {
        use nix::sys::socket::{send, MsgFlags};
        use std::os::fd::AsRawFd;
        if self.in_flight {
            // (An async write was abandoned: its buffer is gone.)
            return Err(cannot_send());
        }
        while self.out_len > 0 {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match send(
                self.tcp.as_raw_fd(),
                &self.cipher_out[..self.out_len],
                flags,
            ) {
                Ok(n) => {
                    self.cipher_out.copy_within(n..self.out_len, 0);
                    self.out_len -= n;
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Drops the ciphertext still queued for the peer: a write abandoned for good
    /// (the connection is not written to again). Reads then wait for nothing to
    /// go out first, and no close_notify follows a record cut short.
    pub fn abandon_output(&mut self) {
        self.out_len = 0;
        self.notified = true;
    }

    /// Decrypted bytes into `dst` without waiting, for adapters driven by readiness
    /// (HTTP/2): `Ok(None)` when nothing can be read before the socket is readable
    /// again; `Ok(Some(0))` once the peer closed.
    pub fn try_read(&mut self, dst: &mut [u8]) -> io::Result<Option<usize>> {
        self.usable()?;
        loop {
            if self.plain_at < self.plain.len() {
                let n = (self.plain.len() - self.plain_at).min(dst.len());
                dst[..n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
                self.plain_at += n;
                if self.plain_at == self.plain.len() {
                    self.plain.clear();
                    self.plain_at = 0;
                }
                return Ok(Some(n));
            }
            if self.eof {
                return Ok(Some(0));
            }
            match self.turn(None, &[]) {
                Ok(Turn::Again) => {}
                Ok(Turn::Input | Turn::Ready) => {
                    // (Anything rustls owes the peer goes first: a key update.)
                    self.try_flush()?;
                    if !self.try_fill()? {
                        return Ok(None);
                    }
                }
                Ok(Turn::PeerClosed | Turn::Closed | Turn::Wrote(_)) => self.eof = true,
                Err(e) => {
                    self.queue_alert();
                    let _ = self.try_flush();
                    return Err(tls_io_error(e));
                }
            }
        }
    }

    /// Encrypts a first part of `data` and sends what the socket takes without
    /// waiting: how much of `data` was taken, or `Ok(None)` while records from
    /// before are still queued (wait for writability; [`TlsStream::try_flush`]).
    pub fn try_write(&mut self, data: &[u8]) -> io::Result<Option<usize>> {
        self.usable()?;
        if !self.try_flush()? {
            return Ok(None);
        }
        let chunk = &data[..data.len().min(ENCRYPT_AT_ONCE)];
        loop {
            match self.turn(None, chunk) {
                Ok(Turn::Wrote(n)) => {
                    self.try_flush()?;
                    return Ok(Some(n));
                }
                Ok(Turn::Again) => {}
                Ok(Turn::PeerClosed) => self.eof = true,
                Ok(Turn::Input | Turn::Ready | Turn::Closed) => return Err(cannot_send()),
                Err(e) => {
                    self.queue_alert();
                    let _ = self.try_flush();
                    return Err(tls_io_error(e));
                }
            }
        }
    }

    /// Encodes the alert rustls queued after an error (see `send_alert`).
    fn queue_alert(&mut self) {
        while self.common().wants_write() {
            if self.turn(None, &[]) != Ok(Turn::Again) {
                break;
            }
        }
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.usable()?;
        while !data.is_empty() {
            let chunk = &data[..data.len().min(ENCRYPT_AT_ONCE)];
            match self.turn(None, chunk) {
                Ok(Turn::Wrote(n)) => {
                    data = &data[n..];
                    self.flush().await?;
                }
                Ok(Turn::Again) => {}
                // The peer's close_notify is reported once; sending may go on.
                Ok(Turn::PeerClosed) => self.eof = true,
                Ok(Turn::Input | Turn::Ready | Turn::Closed) => return Err(cannot_send()),
                Err(e) => {
                    self.send_alert().await;
                    return Err(tls_io_error(e));
                }
            }
        }
        self.flush().await
    }
}
