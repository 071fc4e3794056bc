//! The serde mirror of the configuration file: field names and shapes exactly as a
//! user writes them, nothing interpreted yet. Unknown keys are rejected here
//! (`deny_unknown_fields`); meaning and cross-references are checked in `validate`.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub forwarding: RawForwarding,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub clusters: BTreeMap<String, RawCluster>,
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<i64>,
    pub require_io_uring: Option<bool>,
    pub drain_timeout: Option<String>,
    pub pin_workers: Option<bool>,
    pub io_uring_entries: Option<i64>,
    pub io_uring_flags: Option<Vec<String>>,
    pub control_socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Option<String>,
    pub backlog: Option<i64>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub release_buffers_after: Option<String>,
    pub max_request_head_size: Option<ByteSize>,
    pub max_headers: Option<i64>,
    pub max_uri_size: Option<ByteSize>,
    pub max_body_size: Option<ByteSize>,
    pub http2: Option<bool>,
    pub h2: Option<RawH2>,
    pub tls: Option<RawTls>,
}

/// `[listeners.h2]`: HTTP/2 settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawH2 {
    pub max_concurrent_streams: Option<i64>,
    pub initial_stream_window: Option<ByteSize>,
    pub initial_connection_window: Option<ByteSize>,
    pub max_frame_size: Option<ByteSize>,
}

/// `[listeners.tls]`: TLS termination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub min_version: Option<String>,
    pub alpn: Option<Vec<String>>,
    pub handshake_timeout: Option<String>,
    pub strict_sni: Option<bool>,
    pub client_auth: Option<String>,
    pub client_ca: Option<String>,
    pub forward_client_cert: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A byte count written either as an integer or as a string with a unit ("64KiB").
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum ByteSize {
    Number(i64),
    Text(String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawForwarding {
    pub x_forwarded_for: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub request_id: Option<bool>,
    pub request_id_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matches: RawMatch,
    pub cluster: Option<String>,
    pub respond: Option<RawRespond>,
    pub redirect: Option<RawRedirect>,
    pub host_rewrite: Option<String>,
    pub request_headers: Option<RawHeaderEdit>,
    pub response_headers: Option<RawHeaderEdit>,
    pub upgrades: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<RawHeaderMatch>>,
    pub cookies: Option<Vec<RawValueMatch>>,
    pub query: Option<Vec<RawValueMatch>>,
    pub listener: Option<String>,
    pub sni: Option<String>,
    pub grpc: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: String,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
    pub present: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValueMatch {
    pub name: String,
    pub exact: Option<String>,
    pub present: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: i64,
    #[serde(default)]
    pub body: String,
    pub content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub status: Option<i64>,
    pub location: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderEdit {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub endpoints: Vec<RawEndpoint>,
    pub lb: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle: Option<i64>,
    pub protocol: Option<String>,
    pub tls: Option<RawUpstreamTls>,
}

/// A cluster's `tls`: TLS to its endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub server_name: Option<String>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEndpoint {
    Addr(String),
    Weighted(RawWeightedEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedEndpoint {
    pub addr: String,
    pub weight: Option<i64>,
}
