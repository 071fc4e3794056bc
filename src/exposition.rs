//! What the admin listener shows: the Prometheus text exposition (format 0.0.4)
//! of every core's series summed, the process metrics, and the clusters as JSON.
//! Runs on the admin thread; the workers' cells are only read.

use crate::control::ControlPlane;
use crate::metrics::{
    CodeCounts, Histogram, RejectReason, TimeoutKind, TlsFailure, WorkerMetrics, BUCKETS_NS,
    OTHER_CODE, TLS_VERSIONS,
};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;

/// One family of samples: labels (already rendered) to value.
type Family = BTreeMap<String, f64>;

/// Summed histograms by label set: bucket counts and sum in ns.
type Histograms = BTreeMap<String, ([u64; BUCKETS_NS.len() + 1], u64)>;

/// `name="value"` pairs, values escaped as the exposition format wants.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn code_label(code: u16) -> String {
    if code == OTHER_CODE {
        "other".to_string()
    } else {
        code.to_string()
    }
}

fn add_codes(family: &mut Family, base: &[(&str, &str)], codes: &CodeCounts) {
    for (code, n) in codes.read() {
        let code = code_label(code);
        let mut pairs = base.to_vec();
        pairs.push(("code", &code));
        *family.entry(labels(&pairs)).or_default() += n as f64;
    }
}

fn add_histogram(family: &mut Histograms, key: String, h: &Histogram) {
    let (buckets, sum) = h.read();
    let entry = family.entry(key).or_insert(([0; BUCKETS_NS.len() + 1], 0));
    for (total, n) in entry.0.iter_mut().zip(buckets) {
        *total += n;
    }
    entry.1 += sum;
}

/// Every sample family of the scrape, summed over the cores.
#[derive(Default)]
struct Scrape {
    counters: BTreeMap<&'static str, Family>,
    gauges: BTreeMap<&'static str, Family>,
    histograms: BTreeMap<&'static str, Histograms>,
}

impl Scrape {
    fn counter(&mut self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        *self
            .counters
            .entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_default() += v;
    }

    fn gauge(&mut self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        *self
            .gauges
            .entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_default() += v;
    }

    fn worker(&mut self, id: usize, w: &WorkerMetrics) {
        let worker = id.to_string();
        self.gauge(
            "ringway_worker_connections_active",
            &[("worker", &worker)],
            w.connections_active.get() as f64,
        );
        self.counter(
            "ringway_worker_requests_total",
            &[("worker", &worker)],
            w.requests.get() as f64,
        );
        let r = w.registry();
        for (name, s) in &r.listeners {
            let l = [("listener", name.as_str())];
            self.counter(
                "ringway_downstream_connections_total",
                &l,
                s.connections_total.get() as f64,
            );
            self.gauge(
                "ringway_downstream_connections_active",
                &l,
                s.connections_active.get() as f64,
            );
            for reason in RejectReason::ALL {
                let n = s.rejected[reason as usize].get();
                self.counter(
                    "ringway_rejected_requests_total",
                    &[("listener", name), ("reason", reason.label())],
                    n as f64,
                );
            }
            let family = self.counters.entry("ringway_requests_total").or_default();
            add_codes(family, &[("listener", name), ("route", "")], &s.unrouted);
            // (TLS series only once a handshake happened: none on plain listeners.)
            for (i, version) in TLS_VERSIONS.iter().enumerate() {
                let n = s.tls_handshakes[i].get();
                if n > 0 {
                    self.counter(
                        "ringway_tls_handshakes_total",
                        &[("listener", name), ("version", version)],
                        n as f64,
                    );
                }
            }
            for reason in TlsFailure::ALL {
                let n = s.tls_failures[reason as usize].get();
                if n > 0 {
                    self.counter(
                        "ringway_tls_handshake_errors_total",
                        &[("listener", name), ("reason", reason.label())],
                        n as f64,
                    );
                }
            }
        }
        for ((listener, route), codes) in &r.requests {
            let family = self.counters.entry("ringway_requests_total").or_default();
            add_codes(family, &[("listener", listener), ("route", route)], codes);
        }
        for (name, s) in &r.routes {
            let l = [("route", name.as_str())];
            self.counter(
                "ringway_request_bytes_total",
                &l,
                s.request_bytes.get() as f64,
            );
            self.counter(
                "ringway_response_bytes_total",
                &l,
                s.response_bytes.get() as f64,
            );
            let family = self
                .histograms
                .entry("ringway_request_duration_seconds")
                .or_default();
            add_histogram(family, labels(&l), &s.duration);
            self.gauge("ringway_websocket_active", &l, s.websockets.get() as f64);
        }
        for (name, s) in &r.clusters {
            let l = [("cluster", name.as_str())];
            self.counter("ringway_upstream_retries_total", &l, s.retries.get() as f64);
            for kind in TimeoutKind::ALL {
                self.counter(
                    "ringway_upstream_timeouts_total",
                    &[("cluster", name), ("kind", kind.label())],
                    s.timeouts[kind as usize].get() as f64,
                );
            }
            let family = self
                .histograms
                .entry("ringway_upstream_response_seconds")
                .or_default();
            add_histogram(family, labels(&l), &s.response);
        }
        for ((cluster, addr), s) in &r.endpoints {
            let addr = addr.to_string();
            let l = [("cluster", cluster.as_str()), ("endpoint", addr.as_str())];
            let family = self
                .counters
                .entry("ringway_upstream_requests_total")
                .or_default();
            add_codes(family, &l, &s.codes);
            self.counter(
                "ringway_upstream_connect_failures_total",
                &l,
                s.connect_failures.get() as f64,
            );
            self.gauge(
                "ringway_upstream_connections_active",
                &l,
                s.connections_active.get() as f64,
            );
            self.gauge("ringway_upstream_pool_idle", &l, s.pool_idle.get() as f64);
            self.gauge(
                "ringway_upstream_requests_active",
                &l,
                s.in_flight.get() as f64,
            );
        }
    }
}

const HELP: &[(&str, &str)] = &[
    ("ringway_build_info", "Ringway's version (value 1)."),
    (
        "ringway_access_log_dropped_total",
        "Access log lines dropped because the disk could not keep up (or a write failed).",
    ),
    ("ringway_config_reloads_total", "Configuration reloads by result."),
    (
        "ringway_h2_goaway_total",
        "HTTP/2 GOAWAY frames sent to clients, by reason (shutdown: drain, reload, idle; the others: floods and protocol errors).",
    ),
    (
        "ringway_config_last_reload_success_timestamp_seconds",
        "When the configuration was last loaded successfully (start or reload), Unix time.",
    ),
    ("ringway_downstream_connections_total", "Client connections accepted."),
    ("ringway_downstream_connections_active", "Client connections open."),
    (
        "ringway_requests_total",
        "Requests answered, by listener, route (empty: none) and status code (499: no response sent).",
    ),
    (
        "ringway_request_duration_seconds",
        "From the request's first byte to the response's last byte.",
    ),
    ("ringway_request_bytes_total", "Request bytes received (head and body), by route."),
    ("ringway_response_bytes_total", "Response bytes sent (head and body), by route."),
    ("ringway_websocket_active", "WebSocket tunnels open, by route."),
    (
        "ringway_rejected_requests_total",
        "Requests refused before routing, by reason.",
    ),
    (
        "ringway_upstream_requests_total",
        "Upstream responses, by cluster, endpoint and status code.",
    ),
    (
        "ringway_upstream_response_seconds",
        "From the request sent upstream to the response head received.",
    ),
    (
        "ringway_upstream_connect_failures_total",
        "Upstream connection attempts that failed (refused, unreachable, timed out).",
    ),
    ("ringway_upstream_timeouts_total", "Upstream timeouts, by kind."),
    (
        "ringway_upstream_retries_total",
        "Requests retried on a fresh upstream connection.",
    ),
    ("ringway_upstream_connections_active", "Upstream connections open."),
    ("ringway_upstream_pool_idle", "Idle upstream connections in the pools."),
    ("ringway_upstream_requests_active", "Requests in flight to each endpoint."),
    ("ringway_worker_connections_active", "Client connections open on each worker."),
    (
        "ringway_tls_handshakes_total",
        "Completed TLS handshakes, by listener and protocol version.",
    ),
    (
        "ringway_tls_handshake_errors_total",
        "Failed TLS handshakes, by listener and reason.",
    ),
    (
        "ringway_tls_certificate_expiry_timestamp_seconds",
        "When each loaded listener certificate expires (notAfter), Unix time.",
    ),
    ("ringway_worker_requests_total", "Requests answered by each worker."),
    (
        "ringway_worker_io_driver_info",
        "The I/O driver each worker runs (value 1).",
    ),
    ("process_resident_memory_bytes", "Resident memory size in bytes."),
    ("process_virtual_memory_bytes", "Virtual memory size in bytes."),
    ("process_open_fds", "Open file descriptors."),
    ("process_max_fds", "Maximum number of open file descriptors."),
    ("process_cpu_seconds_total", "User and system CPU time spent, in seconds."),
    ("process_start_time_seconds", "Start time of the process, Unix time in seconds."),
];

fn help(name: &str) -> &'static str {
    HELP.iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, h)| *h)
}

fn write_family(out: &mut String, name: &str, kind: &str, family: &Family) {
    let _ = writeln!(out, "# HELP {name} {}", help(name));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in family {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn write_histograms(out: &mut String, name: &str, family: &Histograms) {
    let _ = writeln!(out, "# HELP {name} {}", help(name));
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, (buckets, sum_ns)) in family {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let le = match BUCKETS_NS.get(i) {
                Some(ns) => format!("{}", *ns as f64 / 1e9),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", *sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The whole `/metrics` page.
pub fn render(plane: &ControlPlane) -> String {
    let mut scrape = Scrape::default();
    for (id, w) in plane.worker_metrics().iter().enumerate() {
        scrape.worker(id, w);
    }
    for (id, driver) in plane.drivers().iter().enumerate() {
        let worker = id.to_string();
        let driver = match driver {
            crate::runtime::Driver::IoUring => "io_uring",
            crate::runtime::Driver::Legacy => "epoll",
        };
        scrape.gauge(
            "ringway_worker_io_driver_info",
            &[("worker", &worker), ("driver", driver)],
            1.0,
        );
    }
    scrape.gauge(
        "ringway_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let dropped: u64 = plane
        .worker_metrics()
        .iter()
        .map(|w| w.access_log_dropped.get())
        .sum::<u64>()
        + plane.access_log_failed();
    scrape.counter("ringway_access_log_dropped_total", &[], dropped as f64);
    for reason in crate::h2::guard::GoawayReason::ALL {
        let sent: u64 = plane
            .worker_metrics()
            .iter()
            .map(|w| w.h2_goaways[reason as usize].get())
            .sum();
        scrape.counter(
            "ringway_h2_goaway_total",
            &[("reason", reason.label())],
            sent as f64,
        );
    }
    let reloads = plane.reload_counts();
    scrape.counter(
        "ringway_config_reloads_total",
        &[("result", "success")],
        reloads.success as f64,
    );
    scrape.counter(
        "ringway_config_reloads_total",
        &[("result", "failure")],
        reloads.failure as f64,
    );
    scrape.gauge(
        "ringway_config_last_reload_success_timestamp_seconds",
        &[],
        reloads.last_success,
    );
    for l in &plane.config().listeners {
        let Some(tls) = &l.tls else { continue };
        for (cert, (file, _)) in tls.certificates.iter().zip(&tls.settings.certificates) {
            // (`file` keeps two certificates with one subject apart: an RSA and an
            // ECDSA one, say. Set, not added: a file listed twice is one series.)
            let file = file.display().to_string();
            let labels = labels(&[
                ("listener", &l.name),
                ("subject", &cert.subject),
                ("file", &file),
            ]);
            scrape
                .gauges
                .entry("ringway_tls_certificate_expiry_timestamp_seconds")
                .or_default()
                .insert(labels, cert.not_after as f64);
        }
    }
    process_metrics(&mut scrape, plane.start_time());
    let mut out = String::with_capacity(16 * 1024);
    for (name, family) in &scrape.counters {
        write_family(&mut out, name, "counter", family);
    }
    for (name, family) in &scrape.gauges {
        write_family(&mut out, name, "gauge", family);
    }
    for (name, family) in &scrape.histograms {
        write_histograms(&mut out, name, family);
    }
    out
}

/// The standard `process_*` metrics, from /proc (Linux).
fn process_metrics(scrape: &mut Scrape, start_time: f64) {
    // /proc reports times in USER_HZ, 100 on every Linux ABI.
    const USER_HZ: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            // rest[0] is field 3 (state): utime 14, stime 15, vsize 23, rss 24.
            if let (Some(utime), Some(stime)) = (num(11), num(12)) {
                scrape.counter("process_cpu_seconds_total", &[], (utime + stime) / USER_HZ);
            }
            if let Some(vsize) = num(20) {
                scrape.gauge("process_virtual_memory_bytes", &[], vsize);
            }
            if let Some(rss) = num(21) {
                scrape.gauge("process_resident_memory_bytes", &[], rss * PAGE);
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        scrape.gauge("process_open_fds", &[], fds.count() as f64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
        let max = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(max) = max {
            scrape.gauge("process_max_fds", &[], max);
        }
    }
    scrape.gauge("process_start_time_seconds", &[], start_time);
}

/// `GET /clusters`: every cluster of the running configuration, its endpoints with
/// their weights and their load summed over the cores.
pub fn clusters_json(plane: &ControlPlane) -> String {
    #[derive(Default)]
    struct Load {
        in_flight: i64,
        idle: i64,
        active: i64,
    }
    let mut load: BTreeMap<(String, SocketAddr), Load> = BTreeMap::new();
    for w in plane.worker_metrics() {
        for ((cluster, addr), s) in &w.registry().endpoints {
            let l = load.entry((cluster.clone(), *addr)).or_default();
            l.in_flight += s.in_flight.get();
            l.idle += s.pool_idle.get();
            l.active += s.connections_active.get();
        }
    }
    let config = plane.config();
    let clusters: Vec<serde_json::Value> = config
        .clusters
        .iter()
        .map(|c| {
            let endpoints: Vec<serde_json::Value> = c
                .endpoints
                .iter()
                .map(|e| {
                    let l = load.get(&(c.name.clone(), e.addr));
                    serde_json::json!({
                        "name": e.name,
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "requests_in_flight": l.map_or(0, |l| l.in_flight),
                        "pool_idle": l.map_or(0, |l| l.idle),
                        "connections_active": l.map_or(0, |l| l.active),
                    })
                })
                .collect();
            serde_json::json!({
                "name": c.name,
                "lb": format!("{:?}", c.lb),
                "endpoints": endpoints,
            })
        })
        .collect();
    let mut text = serde_json::json!({ "clusters": clusters }).to_string();
    text.push('\n');
    text
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\nw"), ("b", "")]),
            r#"a="x\"y\\z\nw",b="""#
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        h.observe_ns(300_000);
        h.observe_ns(20_000_000);
        let mut family = Histograms::new();
        add_histogram(&mut family, labels(&[("route", "r")]), &h);
        let mut out = String::new();
        write_histograms(&mut out, "t_seconds", &family);
        assert!(
            out.contains("t_seconds_bucket{route=\"r\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{route=\"r\",le=\"0.01\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{route=\"r\",le=\"0.025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_seconds_bucket{route=\"r\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("t_seconds_sum{route=\"r\"} 0.0203\n"), "{out}");
        assert!(out.contains("t_seconds_count{route=\"r\"} 2\n"), "{out}");
    }

    #[test]
    fn sha256_of_a_known_text() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
