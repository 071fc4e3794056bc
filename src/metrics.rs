//! Per-core metrics: counters, gauges and histograms that one worker writes and the
//! admin thread reads when scraped (`admin`). Each cell has a single writer, its
//! core, so an increment is a relaxed load and a relaxed store: no lock, no atomic
//! read-modify-write and no cache line written by two cores on the request path.
//! A scrape sums the cores' cells, so counts are exact: after N requests a counter
//! says N.
//!
//! The request path holds `Arc`s of its series (a listener's, a route's, an
//! endpoint's), found once when a snapshot is built; the per-core [`Registry`] maps
//! names to those series for the scraper, and keeps a series for as long as the
//! configuration names it (so counters do not restart at a reload).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// A counter with one writer.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Single writer: a load and a store, not a `fetch_add` (no locked instruction).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge with one writer.
#[derive(Default, Debug)]
pub struct Gauge(AtomicI64);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.store(self.0.load(Relaxed) + 1, Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed) - 1, Relaxed);
    }

    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of the latency buckets, in nanoseconds: 0.5 ms to 10 s.
pub const BUCKETS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram with the fixed [`BUCKETS_NS`] (and +Inf). Buckets are kept
/// per bucket, not cumulative (one store per observation); the scrape accumulates.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [Counter; BUCKETS_NS.len() + 1],
    sum_ns: Counter,
}

impl Histogram {
    #[inline]
    pub fn observe_ns(&self, ns: u64) {
        // From the smallest bucket: most observations are in the first few.
        let mut bucket = 0;
        while bucket < BUCKETS_NS.len() && ns > BUCKETS_NS[bucket] {
            bucket += 1;
        }
        self.buckets[bucket].inc();
        self.sum_ns.add(ns);
    }

    /// Per-bucket counts (the last is over the largest bound) and the sum in ns.
    pub fn read(&self) -> ([u64; BUCKETS_NS.len() + 1], u64) {
        (self.buckets.each_ref().map(Counter::get), self.sum_ns.get())
    }
}

/// Distinct status codes a [`CodeCounts`] tells apart; later ones count as the last.
const CODE_SLOTS: usize = 16;

/// Counts by HTTP status code. Codes take slots in the order they first occur
/// (a route sees few distinct codes); a 17th distinct code is counted in the last
/// slot, which then reads as `code = "other"`.
#[derive(Default, Debug)]
pub struct CodeCounts {
    codes: [AtomicU16; CODE_SLOTS],
    counts: [Counter; CODE_SLOTS],
}

/// The code of the overflow slot.
pub const OTHER_CODE: u16 = u16::MAX;

impl CodeCounts {
    #[inline]
    pub fn inc(&self, code: u16) {
        for i in 0..CODE_SLOTS {
            let c = self.codes[i].load(Relaxed);
            if c == code {
                self.counts[i].inc();
                return;
            }
            if c == 0 {
                let code = if i == CODE_SLOTS - 1 {
                    OTHER_CODE
                } else {
                    code
                };
                self.codes[i].store(code, Relaxed);
                self.counts[i].inc();
                return;
            }
        }
        self.counts[CODE_SLOTS - 1].inc();
    }

    /// (code, count) of every code seen.
    pub fn read(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.codes
            .iter()
            .zip(&self.counts)
            .map(|(c, n)| (c.load(Relaxed), n.get()))
            .filter(|&(c, _)| c != 0)
    }
}

/// Why a request was refused before routing (`ringway_rejected_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    HeadTooLarge,
    UriTooLong,
    BodyTooLarge,
    HeaderTimeout,
    Malformed,
    BadBody,
    Version,
    UnsupportedCoding,
    MethodNotAllowed,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::HeadTooLarge,
        RejectReason::UriTooLong,
        RejectReason::BodyTooLarge,
        RejectReason::HeaderTimeout,
        RejectReason::Malformed,
        RejectReason::BadBody,
        RejectReason::Version,
        RejectReason::UnsupportedCoding,
        RejectReason::MethodNotAllowed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::HeadTooLarge => "head_too_large",
            RejectReason::UriTooLong => "uri_too_long",
            RejectReason::BodyTooLarge => "body_too_large",
            RejectReason::HeaderTimeout => "header_timeout",
            RejectReason::Malformed => "malformed",
            RejectReason::BadBody => "bad_body",
            RejectReason::Version => "version",
            RejectReason::UnsupportedCoding => "unsupported_coding",
            RejectReason::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// Which upstream wait ran out (`ringway_upstream_timeouts_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    /// The response head (`response_timeout` from the request sent).
    Response,
    /// A stall while a body was relayed.
    Body,
}

impl TimeoutKind {
    pub const ALL: [TimeoutKind; 3] = [
        TimeoutKind::Connect,
        TimeoutKind::Response,
        TimeoutKind::Body,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::Response => "response",
            TimeoutKind::Body => "body",
        }
    }
}

/// Why a TLS handshake failed (`ringway_tls_handshake_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The client closed or reset the connection first.
    Closed,
    /// No handshake within `handshake_timeout`.
    Timeout,
    /// A strict listener had no certificate for the SNI.
    UnknownSni,
    /// Not TLS, or malformed messages (a plaintext request, garbage).
    BadMessage,
    /// mTLS: no client certificate where one is required.
    NoClientCertificate,
    /// mTLS: the client certificate did not verify.
    BadClientCertificate,
    /// No protocol version, cipher suite, group or ALPN protocol in common.
    Incompatible,
    /// Any other TLS error.
    Other,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 8] = [
        TlsFailure::Closed,
        TlsFailure::Timeout,
        TlsFailure::UnknownSni,
        TlsFailure::BadMessage,
        TlsFailure::NoClientCertificate,
        TlsFailure::BadClientCertificate,
        TlsFailure::Incompatible,
        TlsFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TlsFailure::Closed => "closed",
            TlsFailure::Timeout => "timeout",
            TlsFailure::UnknownSni => "unknown_sni",
            TlsFailure::BadMessage => "bad_message",
            TlsFailure::NoClientCertificate => "no_client_certificate",
            TlsFailure::BadClientCertificate => "bad_client_certificate",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::Other => "other",
        }
    }
}

/// TLS versions counted in `ringway_tls_handshakes_total`.
pub const TLS_VERSIONS: [&str; 2] = ["1.2", "1.3"];

/// A listener's series on one core.
#[derive(Default, Debug)]
pub struct ListenerStats {
    pub connections_total: Counter,
    pub connections_active: Gauge,
    pub rejected: [Counter; RejectReason::ALL.len()],
    /// Requests answered without a route (refused before routing, or none matched).
    pub unrouted: CodeCounts,
    /// Completed TLS handshakes, by [`TLS_VERSIONS`].
    pub tls_handshakes: [Counter; TLS_VERSIONS.len()],
    /// Failed TLS handshakes, by [`TlsFailure`].
    pub tls_failures: [Counter; TlsFailure::ALL.len()],
}

/// A route's series on one core.
#[derive(Default, Debug)]
pub struct RouteStats {
    pub duration: Histogram,
    pub request_bytes: Counter,
    pub response_bytes: Counter,
    /// WebSocket tunnels open.
    pub websockets: Gauge,
}

/// A cluster's series on one core.
#[derive(Default, Debug)]
pub struct ClusterStats {
    pub response: Histogram,
    pub timeouts: [Counter; TimeoutKind::ALL.len()],
    pub retries: Counter,
}

/// An endpoint's series on one core.
#[derive(Default, Debug)]
pub struct EndpointStats {
    pub codes: CodeCounts,
    pub connect_failures: Counter,
    pub connections_active: Gauge,
    pub pool_idle: Gauge,
    pub in_flight: Gauge,
}

/// One worker's series, and the names they go by.
#[derive(Default, Debug)]
pub struct WorkerMetrics {
    pub connections_active: Gauge,
    pub requests: Counter,
    /// Access log lines dropped because the writer was behind.
    pub access_log_dropped: Counter,
    /// HTTP/2 GOAWAYs sent, by `h2::guard::GoawayReason`.
    pub h2_goaways: [Counter; crate::h2::guard::GoawayReason::ALL.len()],
    registry: Mutex<Registry>,
}

/// Series by name. Taken by the worker when it builds a snapshot and by the
/// scraper; never on the request path.
#[derive(Default, Debug)]
pub struct Registry {
    pub listeners: HashMap<String, Arc<ListenerStats>>,
    pub routes: HashMap<String, Arc<RouteStats>>,
    /// `ringway_requests_total` by (listener, route).
    pub requests: HashMap<(String, String), Arc<CodeCounts>>,
    pub clusters: HashMap<String, Arc<ClusterStats>>,
    pub endpoints: HashMap<(String, SocketAddr), Arc<EndpointStats>>,
}

fn series<K: Eq + std::hash::Hash, V: Default>(map: &mut HashMap<K, Arc<V>>, key: K) -> Arc<V> {
    map.entry(key).or_default().clone()
}

impl WorkerMetrics {
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // Counters stay meaningful whatever a panicking holder left: take them.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        series(&mut self.registry().routes, name.to_string())
    }

    pub fn requests(&self, listener: &str, route: &str) -> Arc<CodeCounts> {
        series(
            &mut self.registry().requests,
            (listener.to_string(), route.to_string()),
        )
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        series(&mut self.registry().clusters, name.to_string())
    }

    pub fn endpoint(&self, cluster: &str, addr: SocketAddr) -> Arc<EndpointStats> {
        series(&mut self.registry().endpoints, (cluster.to_string(), addr))
    }

    /// Forgets the series nothing on the core holds any more (their route, cluster,
    /// listener or endpoint left the configuration, and no request in flight
    /// still uses them).
    pub fn prune(&self) {
        let mut r = self.registry();
        r.listeners.retain(|_, s| Arc::strong_count(s) > 1);
        r.routes.retain(|_, s| Arc::strong_count(s) > 1);
        r.requests.retain(|_, s| Arc::strong_count(s) > 1);
        r.clusters.retain(|_, s| Arc::strong_count(s) > 1);
        r.endpoints.retain(|_, s| Arc::strong_count(s) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = Histogram::default();
        for us in [
            0,
            500,
            501,
            1_000,
            9_999_999,
            10_000_000,
            10_000_001,
            u64::MAX / 2,
        ] {
            h.observe_ns(us.saturating_mul(1000));
        }
        let (buckets, _) = h.read();
        assert_eq!(buckets[0], 2, "0 and 500 are <= 0.5 ms");
        assert_eq!(buckets[1], 2, "501 and 1000 are <= 1 ms");
        assert_eq!(buckets[13], 2, "<= 10 s");
        assert_eq!(buckets[14], 2, "over 10 s");
        assert_eq!(buckets.iter().sum::<u64>(), 8);
    }

    #[test]
    fn code_counts_are_exact_and_overflow_into_other() {
        let c = CodeCounts::default();
        for _ in 0..3 {
            c.inc(200);
        }
        c.inc(404);
        c.inc(200);
        let got: Vec<_> = c.read().collect();
        assert_eq!(got, [(200, 4), (404, 1)]);
        for code in 100..140 {
            c.inc(code);
        }
        let got: Vec<_> = c.read().collect();
        assert_eq!(got.len(), CODE_SLOTS);
        assert_eq!(got[CODE_SLOTS - 1].0, OTHER_CODE);
        assert_eq!(got.iter().map(|&(_, n)| n).sum::<u64>(), 45, "nothing lost");
    }

    #[test]
    fn registry_keeps_series_by_name_and_prunes_unused_ones() {
        let m = WorkerMetrics::default();
        let a = m.route("a");
        a.request_bytes.add(5);
        assert_eq!(m.route("a").request_bytes.get(), 5, "same series by name");
        drop(m.route("b"));
        m.prune();
        let r = m.registry();
        assert!(r.routes.contains_key("a") && !r.routes.contains_key("b"));
    }
}
