//! Configuration in three layers: `raw` (the file's serde mirror), `validate` (raw ->
//! the typed [`Config`] below, every error naming its field), and the per-core compile
//! step that lives with its consumer (`route::RouteTable::build`, `worker`).
//! Nothing on the request path reads strings from the file.

mod raw;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use validate::is_tchar;
pub use validate::parse_duration;

/// The configuration used when `ringway` is started without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// A configuration error: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub listeners: Vec<ListenerConfig>,
    pub forwarding: ForwardingConfig,
    pub routes: Vec<RouteConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// The admin listener; none when the file has no `[admin]`.
    pub admin: Option<AdminConfig>,
    /// None when the file has no `[access_log]`.
    pub access_log: Option<AccessLogConfig>,
    /// The text this configuration was read from (`GET /config` shows it).
    pub source: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub path: LogPath,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPath {
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Apache/nginx "combined".
    Combined,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// A non-loopback `bind` is refused unless this is set.
    pub allow_remote: bool,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    pub require_io_uring: bool,
    pub drain_timeout: Duration,
    pub pin_workers: bool,
    /// Submission queue entries of each worker's ring.
    pub io_uring_entries: u32,
    pub io_uring_flags: RingFlags,
    /// The Unix socket a new process takes the listening sockets over from.
    pub control_socket: Option<std::path::PathBuf>,
}

/// io_uring setup flags (see tuning.md for their measured effect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFlags {
    /// IORING_SETUP_SINGLE_ISSUER: only the worker thread submits.
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN: completions run when the worker waits, not on an
    /// interrupt (needs single_issuer).
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN: no interrupting the worker to run completions.
    pub coop_taskrun: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub backlog: u32,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// A keep-alive connection with no request for this long hands its read buffer
    /// back to the core's pool and waits for readability without one.
    pub release_buffers_after: Duration,
    pub limits: Limits,
    /// HTTP/2 with prior knowledge on a cleartext listener (h2c): a connection whose
    /// first bytes are the HTTP/2 preface is served as HTTP/2. (TLS listeners
    /// negotiate it by ALPN.)
    pub http2: bool,
    pub h2: H2Settings,
    /// TLS termination (certificates loaded and checked).
    pub tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
}

/// A listener's HTTP/2 settings (RFC 9113 §6.5.2); the header list limit is the
/// listener's `max_request_head_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Settings {
    /// Streams a client may have open at once (REFUSED_STREAM beyond).
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream: what a client may send on one stream
    /// before the proxy has passed it on.
    pub initial_stream_window: u32,
    /// Flow-control window of the connection: bounds the request bodies held per
    /// connection.
    pub initial_connection_window: u32,
    /// Largest frame payload the proxy accepts.
    pub max_frame_size: u32,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            max_concurrent_streams: 100,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 8 << 20,
            max_frame_size: 16 * 1024,
        }
    }
}

/// Per-listener request limits (RFC 9110 §15.5.14, §15.5.15, RFC 6585 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header section, in bytes (431 beyond).
    pub max_head_bytes: usize,
    /// Header field lines (431 beyond).
    pub max_headers: usize,
    /// Request-target length in bytes (414 beyond).
    pub max_uri_bytes: usize,
    /// Request body in bytes (413 beyond); `None` is unlimited.
    pub max_body_bytes: Option<u64>,
}

/// The most header lines a listener may allow; bounds the parser's stack array.
pub const MAX_HEADERS_CAP: usize = 512;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XffMode {
    Overwrite,
    Append,
    /// X-Forwarded-* are neither added nor changed: what the client sent passes
    /// through as received (nginx's and HAProxy's behaviour unless configured).
    Off,
}

#[derive(Debug, Clone)]
pub struct ForwardingConfig {
    pub x_forwarded_for: XffMode,
    pub trusted_proxies: Vec<Cidr>,
    pub request_id: bool,
    /// Lower-case header name used for the request id.
    pub request_id_header: String,
}

/// An IP network, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: MatchConfig,
    pub action: ActionConfig,
    /// Replaces the Host header sent upstream.
    pub host_rewrite: Option<String>,
    pub request_headers: HeaderEdit,
    pub response_headers: HeaderEdit,
    /// WebSocket upgrades are forwarded (`upgrades = ["websocket"]`, the default);
    /// `upgrades = []` refuses them with 403.
    pub websocket: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MatchConfig {
    pub host: Option<HostPattern>,
    pub path: Option<PathPattern>,
    /// Upper-case method tokens.
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatchConfig>,
    pub cookies: Vec<ValueMatchConfig>,
    pub query: Vec<ValueMatchConfig>,
    /// Index into `Config::listeners`.
    pub listener: Option<usize>,
    /// The TLS client's SNI (a plain connection has none and never matches).
    pub sni: Option<HostPattern>,
    /// A gRPC request (`content-type: application/grpc*`) or not.
    pub grpc: Option<bool>,
}

/// Host patterns are stored lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: any name ending in it.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
    /// Validated regex source; matched against the whole path.
    Regex(String),
}

#[derive(Debug, Clone)]
pub struct HeaderMatchConfig {
    /// Lower-case header name.
    pub name: String,
    pub kind: HeaderMatchKind,
}

#[derive(Debug, Clone)]
pub enum HeaderMatchKind {
    Exact(String),
    Prefix(String),
    Regex(String),
    Present(bool),
}

#[derive(Debug, Clone)]
pub struct ValueMatchConfig {
    pub name: String,
    pub kind: ValueMatchKind,
}

#[derive(Debug, Clone)]
pub enum ValueMatchKind {
    Exact(String),
    Present(bool),
}

#[derive(Debug, Clone)]
pub enum ActionConfig {
    /// Index into `Config::clusters`.
    Forward(usize),
    Respond {
        status: u16,
        body: String,
        content_type: String,
    },
    Redirect {
        status: u16,
        location: String,
    },
    /// A redirect to the request's own URL with some parts replaced.
    RedirectParts {
        status: u16,
        parts: RedirectParts,
    },
}

/// The parts of the request's URL a redirect replaces (`None`: kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectParts {
    /// `http` or `https`.
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Starts with `/`; the query is kept.
    pub path: Option<String>,
}

/// Header edits; names are lower-case. `set` replaces, `add` appends, `remove` drops.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdit {
    pub add: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdit {
    /// True when some header line may be dropped ([`HeaderEdit::drops`]): head
    /// writers ask once per head, not once per line, since most routes edit nothing.
    pub fn drops_any(&self) -> bool {
        !self.remove.is_empty() || !self.set.is_empty()
    }

    /// True when a header of this (lower-case) name must not be passed through.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.remove
            .iter()
            .chain(self.set.iter().map(|(n, _)| n))
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    WeightedRoundRobin,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub endpoints: Vec<EndpointConfig>,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints (files loaded and checked).
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
}

/// What a cluster speaks to its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 over cleartext, with prior knowledge.
    H2c,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// As written in the file (for logs and `check`).
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

impl Config {
    /// Parses and validates a configuration text. `origin` names it in errors.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_at(text, Path::new("."))
    }

    /// As [`Config::from_toml`], relative file names (TLS certificates and keys)
    /// being relative to `base`.
    pub fn from_toml_at(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_string();
            let field = e
                .span()
                .map(|s| describe_span(text, s))
                .unwrap_or_else(|| "config".to_string());
            ConfigError::new(field, reason)
        })?;
        let mut config = validate::validate(raw, base)?;
        config.source = text.into();
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        // Relative file names are relative to the configuration file's directory.
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_at(&text, base)
    }

    pub fn default_embedded() -> Config {
        Config::from_toml(DEFAULT_CONFIG).expect("embedded default config is valid")
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// Names the place of a TOML syntax or shape error: line, column and the text there.
fn describe_span(text: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let snippet: String = text[start..span.end.min(text.len())]
        .chars()
        .take(40)
        .collect();
    format!(
        "line {line}, column {} (`{}`)",
        start - line_start + 1,
        snippet.trim()
    )
}

/// A human summary for `ringway check`.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let workers = if self.runtime.workers == 0 {
            "one per core".to_string()
        } else {
            self.runtime.workers.to_string()
        };
        writeln!(
            f,
            "runtime: workers {workers}, require_io_uring {}, drain_timeout {:?}",
            self.runtime.require_io_uring, self.runtime.drain_timeout
        )?;
        writeln!(f, "listeners ({}):", self.listeners.len())?;
        for l in &self.listeners {
            writeln!(
                f,
                "  {} on {} (header_timeout {:?}, idle_timeout {:?})",
                l.name, l.bind, l.header_timeout, l.idle_timeout
            )?;
            if let Some(tls) = &l.tls {
                for (cert, (file, _)) in tls.certificates.iter().zip(&tls.settings.certificates) {
                    writeln!(
                        f,
                        "    TLS certificate {}: {} [{}], expires at {} (Unix time)",
                        file.display(),
                        cert.subject,
                        cert.names.join(", "),
                        cert.not_after
                    )?;
                }
            }
        }
        writeln!(f, "routes ({}):", self.routes.len())?;
        for r in &self.routes {
            let action = match &r.action {
                ActionConfig::Forward(c) => format!("-> cluster {}", self.clusters[*c].name),
                ActionConfig::Respond { status, .. } => format!("-> respond {status}"),
                ActionConfig::Redirect { status, location } => {
                    format!("-> redirect {status} {location}")
                }
                ActionConfig::RedirectParts { status, parts } => {
                    format!("-> redirect {status} {parts:?}")
                }
            };
            writeln!(f, "  {} {action}", r.name)?;
        }
        writeln!(f, "clusters ({}):", self.clusters.len())?;
        for c in &self.clusters {
            let eps: Vec<String> = c
                .endpoints
                .iter()
                .map(|e| format!("{} (weight {})", e.addr, e.weight))
                .collect();
            writeln!(f, "  {} [{:?}]: {}", c.name, c.lb, eps.join(", "))?;
            if let Some(tls) = &c.tls {
                let s = &tls.settings;
                writeln!(
                    f,
                    "    TLS to the endpoints: server_name {}, verify {}, ca {}, client certificate {}",
                    s.server_name.as_deref().unwrap_or("(each endpoint's host)"),
                    s.verify,
                    s.ca.as_ref().map_or("(system trust store)".into(), |p| p.display().to_string()),
                    s.cert.as_ref().map_or("none".into(), |p| p.display().to_string()),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
