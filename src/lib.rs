//! Ringway: an HTTP/1.1 edge proxy and load balancer, thread-per-core on io_uring.
//!
//! ```text
//! main.rs    CLI, signals (SIGHUP reload, SIGTERM/SIGINT drain) -> control::Server
//! control    the control plane: bound listeners, the running config, reloads, drain
//! runtime    one pinned OS thread per core, each with its own monoio runtime
//! worker     per-core state: the current Snapshot, listeners, endpoints, lifecycle
//! snapshot   one core's replaceable compiled config (routes, clusters); listeners
//! upstream/endpoint  per-core endpoint state keyed by (cluster, address): pools
//! outcome    one request's figures (status, bytes, route, endpoint, timings, flags)
//! account    counts a finished request into the core's series (metrics)
//! metrics    single-writer per-core counters, gauges, histograms; their registry
//! admin      the admin HTTP listener (own thread); exposition renders /metrics
//! notify     sd_notify (READY, RELOADING, STOPPING) for systemd
//! listener   SO_REUSEPORT socket per core, accept loop
//! stream     a client or upstream connection, plain TCP or TLS (tls: rustls)
//! downstream the client side of an exchange (connection, burst state, outcome)
//! conn       THE HOT PATH, one loop per downstream connection:
//!              1. read + parse request head (http::parse, zero-copy)
//!              2. route lookup (route, pure) -> cluster | direct answer
//!              3. upstream::forward: pick endpoint, pooled connection, write head,
//!                 stream body (upstream::duplex: the response may start meanwhile),
//!                 read response head
//!              4. write response head, stream body, decide keep-alive
//!            any error before the response started -> answer[error.status()]
//! exchange   the protocol-neutral decision (limits, route) both servers call
//! h2         HTTP/2 clients: the h2 crate over a readiness adapter, a frame guard
//!            against floods, one task per stream presenting an HTTP/1.1 head
//!            (h2::upload: its body up to an HTTP/1.1 upstream, piece by piece)
//! ```
//!
//! Nothing is shared between cores on the request path: no locks, atomics or
//! cross-core queues. Only control messages (reload, drain, stop) cross threads.
#![deny(unsafe_code)]

pub mod access_log;
pub mod account;
pub mod admin;
pub mod buf;
pub mod clock;
pub mod config;
pub mod conn;
pub mod control;
pub mod downstream;
pub mod error;
pub mod exchange;
pub mod exposition;
pub mod h2;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod relay;
pub mod route;
pub mod runtime;
pub mod snapshot;
pub mod stream;
pub mod takeover;
pub mod tls;
pub mod upstream;
pub mod worker;

pub use config::Config;
pub use control::Server;
