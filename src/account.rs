//! Counting a finished request into its core's series (`metrics`), from the
//! figures its connection noted (`outcome`). Called once per request, on the
//! request path: a few single-writer stores and one clock read.

use crate::access_log;
use crate::clock::Stamp;
use crate::outcome::Outcome;
use crate::snapshot::{ListenerRt, Snapshot};
use crate::worker::Worker;

/// The code counted for a request that got no response at all (the client went
/// away first, or the connection failed): nginx's 499.
pub const NO_RESPONSE: u16 = 499;

/// Counts the request `o` that came in on `listener` and was served with
/// `snapshot` (`None`: refused before routing). Returns its duration in ns.
pub fn request(w: &Worker, snapshot: Option<&Snapshot>, listener: &ListenerRt, o: &Outcome) -> u64 {
    let duration = Stamp::now().nanos_since(o.start);
    w.metrics.requests.inc();
    let status = match o.status {
        0 => NO_RESPONSE,
        s => s,
    };
    if let Some(reason) = o.rejected {
        listener.stats.rejected[reason as usize].inc();
    }
    let Some(snapshot) = snapshot else {
        listener.stats.unrouted.inc(status);
        return duration;
    };
    let Some(route) = o.route.map(|r| r as usize) else {
        listener.stats.unrouted.inc(status);
        return duration;
    };
    match snapshot.requests(route, listener.id) {
        Some(codes) => codes.inc(status),
        // The last request of a connection whose listener the reload removed.
        None => w
            .metrics
            .requests(
                &listener.settings().config.name,
                &snapshot.routes.route(route).name,
            )
            .inc(status),
    }
    let stats = &snapshot.route_stats[route];
    stats.duration.observe_ns(duration);
    stats.request_bytes.add(o.request_bytes);
    stats.response_bytes.add(o.response_bytes);
    if let Some(cluster) = o.cluster.and_then(|c| snapshot.clusters.get(c as usize)) {
        if let Some(ns) = o.upstream_ns {
            cluster.stats.response.observe_ns(ns);
        }
        if let (Some(e), 1..) = (o.endpoint, o.upstream_status) {
            if let Some(ep) = cluster.endpoints.get(e as usize) {
                ep.stats.codes.inc(o.upstream_status);
            }
        }
    }
    duration
}

/// The client side of a request, for its access log line.
pub struct LogClient<'a> {
    pub peer: &'a crate::http::rewrite::Peer,
    /// The listener's name as a log field.
    pub listener: &'a [u8],
    pub tls: Option<&'a crate::tls::TlsInfo>,
}

/// Writes the access log line of a request that just ended (both servers).
#[inline(always)]
pub fn log(
    w: &Worker,
    snapshot: Option<&Snapshot>,
    o: &Outcome,
    req: access_log::Fields<'_>,
    client: &LogClient<'_>,
    duration_ns: u64,
) {
    let route = snapshot.zip(o.route);
    let cluster = snapshot
        .zip(o.cluster)
        .and_then(|(s, c)| s.clusters.get(c as usize));
    let record = access_log::Record {
        req,
        client_ip: client.peer.text(),
        client: client.peer.addr_text(),
        listener: client.listener,
        route: route.map_or(access_log::NO_ROUTE, |(s, r)| {
            &s.routes.route(r as usize).log_field
        }),
        cluster: cluster.map_or(access_log::NO_CLUSTER, |c| &c.log_field),
        endpoint: cluster
            .zip(o.endpoint)
            .and_then(|(c, e)| c.endpoints.get(e as usize))
            .map_or(b"null", |e| &e.log_text),
        status: o.status,
        request_bytes: o.request_bytes,
        response_bytes: o.response_bytes,
        duration_ns,
        upstream_ns: o.upstream_ns,
        attempts: o.attempts,
        flags: o.flags,
        tls: client.tls,
        end: o.start.plus(duration_ns),
    };
    w.log_request(&record);
}
