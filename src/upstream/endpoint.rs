//! Per-core run-time state of upstream endpoints (the connection pool today; health,
//! ejection and load figures as they come), keyed by identity: cluster name and
//! endpoint address, never a position in the configuration. A reload that keeps an
//! endpoint keeps its state, however the clusters around it were reordered; an
//! endpoint that leaves the configuration is retired (its idle connections closed,
//! and those still busy closed when their exchange ends).

use crate::clock::Moment;
use crate::config::ClusterConfig;
use crate::metrics::{EndpointStats, WorkerMetrics};
use crate::upstream::pool::Pool;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

pub struct Endpoint {
    pub cluster: Box<str>,
    pub addr: SocketAddr,
    /// `addr` as a JSON string, made once (for log lines).
    pub log_text: Box<[u8]>,
    pub pool: Pool,
    /// HTTP/2 connections (clusters with `protocol = "h2"` or `"h2c"`).
    pub h2: crate::h2::upstream::H2Pool,
    pub stats: Arc<EndpointStats>,
}

/// (cluster, address, TLS identity: 0 without TLS, else `UpstreamTls::id`). Pooled
/// TLS connections are reused only under the settings they were made with.
type Key = (Box<str>, SocketAddr, u64);

/// The endpoints of one core's current configuration.
#[derive(Default)]
pub struct Endpoints {
    live: RefCell<HashMap<Key, Rc<Endpoint>, ahash::RandomState>>,
}

impl Endpoints {
    /// The endpoints of each of `clusters`, in configuration order: the state of
    /// those already known is reused (with the new pool limits), new ones start
    /// empty, and those no cluster names any more are retired.
    pub fn update(
        &self,
        clusters: &[ClusterConfig],
        metrics: &WorkerMetrics,
    ) -> Vec<Vec<Rc<Endpoint>>> {
        let mut old = std::mem::take(&mut *self.live.borrow_mut());
        let mut live = HashMap::with_capacity_and_hasher(old.len(), Default::default());
        let per_cluster = clusters
            .iter()
            .map(|c| {
                c.endpoints
                    .iter()
                    .map(|e| {
                        let tls = c.tls.as_ref().map_or(0, |t| t.id);
                        let key: Key = (c.name.as_str().into(), e.addr, tls);
                        if let Some(ep) = live.get(&key) {
                            return Rc::clone(ep);
                        }
                        let ep = match old.remove(&key) {
                            Some(ep) => {
                                ep.pool.configure(c.pool_max_idle, c.pool_idle_timeout);
                                ep
                            }
                            None => {
                                let stats = metrics.endpoint(&c.name, e.addr);
                                Rc::new(Endpoint {
                                    cluster: c.name.as_str().into(),
                                    addr: e.addr,
                                    log_text: crate::access_log::json_string(&e.addr.to_string()),
                                    pool: Pool::new(
                                        c.pool_max_idle,
                                        c.pool_idle_timeout,
                                        stats.clone(),
                                    ),
                                    h2: Default::default(),
                                    stats,
                                })
                            }
                        };
                        live.insert(key, Rc::clone(&ep));
                        ep
                    })
                    .collect()
            })
            .collect();
        for ep in old.values() {
            ep.pool.retire();
            ep.h2.clear();
        }
        *self.live.borrow_mut() = live;
        per_cluster
    }

    /// Drops expired and closed pooled connections of every endpoint.
    pub fn sweep(&self, now: Moment) {
        for ep in self.live.borrow().values() {
            ep.pool.sweep(now);
            ep.h2.sweep(now, ep.pool.idle_timeout());
        }
    }

    /// Closes every pooled connection (shutdown).
    pub fn clear(&self) {
        for ep in self.live.borrow().values() {
            ep.pool.clear();
            ep.h2.clear();
        }
    }
}
