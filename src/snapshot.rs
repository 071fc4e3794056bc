//! One core's replaceable view of the configuration. A [`Snapshot`] (routing table,
//! clusters with their balancers, forwarding settings) is immutable once built; a
//! reload builds a new one and swaps it in (`Worker::snapshot`). A request takes the
//! current one once, when its head has arrived, and finishes on it, so a request in
//! flight never sees half of two configurations; the next request, even on the same
//! keep-alive connection, takes the new one.
//!
//! What must outlive a snapshot is kept beside it and found by identity: listeners
//! by their bind address ([`ListenerRt`], whose sockets a reload keeps when the bind
//! is unchanged), endpoints by cluster name and address
//! ([`Endpoints`](crate::upstream::endpoint::Endpoints), whose pools a reload keeps).

use crate::config::{ClusterConfig, Config, ForwardingConfig, ListenerConfig};
use crate::http::rewrite::port_line;
use crate::metrics::{ClusterStats, CodeCounts, ListenerStats, RouteStats, WorkerMetrics};
use crate::route::RouteTable;
use crate::upstream::balance::Balancer;
use crate::upstream::endpoint::{Endpoint, Endpoints};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

pub struct Snapshot {
    pub routes: RouteTable,
    /// In configuration order (route actions name clusters by this index).
    pub clusters: Vec<ClusterRt>,
    pub forwarding: ForwardingConfig,
    /// Each route's series, index for index.
    pub route_stats: Vec<Arc<RouteStats>>,
    /// The ids of the configuration's listeners, in order (see `requests`).
    listener_ids: Vec<u32>,
    /// `ringway_requests_total` of (route r, listener l) at `r * listeners + l`.
    requests: Vec<Arc<CodeCounts>>,
}

pub struct ClusterRt {
    pub config: ClusterConfig,
    pub balancer: Balancer,
    /// Run-time state of `config.endpoints`, index for index.
    pub endpoints: Vec<Rc<Endpoint>>,
    pub stats: Arc<ClusterStats>,
    /// `,"cluster":"name"`, for access log lines.
    pub log_field: Box<[u8]>,
}

impl Snapshot {
    /// Compiles `config` for one core. `listener_ids`: the stable id of each of
    /// `config.listeners` (route predicates on listeners compare ids);
    /// `seed` staggers the balancers per core; endpoint state comes from (and is
    /// updated in) `endpoints`.
    pub fn build(
        config: &Config,
        listener_ids: &[u32],
        seed: usize,
        endpoints: &Endpoints,
        metrics: &WorkerMetrics,
    ) -> Snapshot {
        let states = endpoints.update(&config.clusters, metrics);
        let clusters = config
            .clusters
            .iter()
            .zip(states)
            .map(|(c, endpoints)| ClusterRt {
                config: c.clone(),
                balancer: Balancer::new(c, seed),
                endpoints,
                stats: metrics.cluster(&c.name),
                log_field: crate::access_log::json_field("cluster", &c.name),
            })
            .collect();
        let requests = config
            .routes
            .iter()
            .flat_map(|r| {
                config
                    .listeners
                    .iter()
                    .map(|l| metrics.requests(&l.name, &r.name))
            })
            .collect();
        Snapshot {
            routes: RouteTable::build_for(config, listener_ids),
            clusters,
            forwarding: config.forwarding.clone(),
            route_stats: config
                .routes
                .iter()
                .map(|r| metrics.route(&r.name))
                .collect(),
            listener_ids: listener_ids.to_vec(),
            requests,
        }
    }

    /// The `ringway_requests_total` series of `route` on the listener with this
    /// id; `None` for a listener this configuration does not have (a connection of
    /// a listener removed by the reload, finishing its last request).
    #[inline]
    pub fn requests(&self, route: usize, listener: u32) -> Option<&CodeCounts> {
        let pos = self.listener_ids.iter().position(|&id| id == listener)?;
        self.requests
            .get(route * self.listener_ids.len() + pos)
            .map(|s| &**s)
    }
}

/// One listener on one core, for as long as its bind address stays in the
/// configuration. Connections keep an `Rc` of the listener that accepted them.
pub struct ListenerRt {
    /// Stable across reloads, unique in the process (route predicates use it).
    pub id: u32,
    /// Its series, kept for its whole life (a rename renames them).
    pub stats: Arc<ListenerStats>,
    settings: RefCell<Rc<ListenerSettings>>,
    /// Set when the core drains or a reload removes the listener: its accept loop
    /// ends, its idle connections close, and in-flight requests are answered with
    /// `Connection: close`.
    closing: Cell<bool>,
}

/// Registers the series of `live` listeners by their current names, and of
/// `draining` ones (removed by a reload, their connections finishing) by theirs
/// unless a live one took the name: the map is made anew, so renames, swaps of
/// names included, move series with their listeners.
pub fn register_listeners(
    metrics: &WorkerMetrics,
    live: &[Rc<ListenerRt>],
    draining: &[Rc<ListenerRt>],
) {
    let mut names: HashMap<String, Arc<ListenerStats>> = HashMap::new();
    for l in draining.iter().chain(live) {
        names.insert(l.settings().config.name.clone(), l.stats.clone());
    }
    metrics.registry().listeners = names;
}

/// A listener's settings as of the last reload.
pub struct ListenerSettings {
    pub config: ListenerConfig,
    /// The X-Forwarded-Port line for its port.
    pub port_line: Box<[u8]>,
    /// The name as a JSON string, for access log lines.
    pub log_name: Box<[u8]>,
    /// Whether the listener forwards client certificates
    /// (`tls.forward_client_cert`).
    pub forward_client_cert: bool,
}

fn forwards_client_cert(config: &ListenerConfig) -> bool {
    config
        .tls
        .as_ref()
        .is_some_and(|t| t.settings.forward_client_cert)
}

impl ListenerRt {
    /// (Its series are registered under its name by the worker: `Worker::apply`.)
    pub fn new(id: u32, config: ListenerConfig, port: u16) -> ListenerRt {
        ListenerRt {
            id,
            stats: Arc::default(),
            settings: RefCell::new(Rc::new(ListenerSettings {
                log_name: crate::access_log::json_string(&config.name),
                forward_client_cert: forwards_client_cert(&config),
                config,
                port_line: port_line(port),
            })),
            closing: Cell::new(false),
        }
    }

    /// The current settings (a request takes them once).
    pub fn settings(&self) -> Rc<ListenerSettings> {
        Rc::clone(&self.settings.borrow())
    }

    /// New settings from a reload (same bind address, so same port; a new name
    /// keeps the listener's series).
    pub fn configure(&self, config: ListenerConfig) {
        let port_line = self.settings.borrow().port_line.clone();
        *self.settings.borrow_mut() = Rc::new(ListenerSettings {
            log_name: crate::access_log::json_string(&config.name),
            forward_client_cert: forwards_client_cert(&config),
            config,
            port_line,
        });
    }

    /// Whether the listener terminates TLS (as of the last reload).
    pub fn terminates_tls(&self) -> bool {
        self.settings.borrow().config.tls.is_some()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// See `closing`. The caller wakes the core's tasks (`Lifecycle`) so that idle
    /// connections notice.
    pub fn close(&self) {
        self.closing.set(true);
    }
}
