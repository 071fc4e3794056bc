//! HTTP/2 to upstreams (clusters with `protocol = "h2"` or `"h2c"`): per core and
//! endpoint, connections multiplexed up to the peer's `MAX_CONCURRENT_STREAMS`; a
//! new connection opens when all are full. A connection is driven by a task of its
//! own over [`H2Io`]; one that the peer closes or sends GOAWAY is dropped from the
//! pool (streams it never processed fail with a retryable error and go to another
//! connection). Idle connections close after the cluster's `pool_idle_timeout`.

use super::guard::Guard;
use super::io::{H2Io, Transport};
use crate::clock::Moment;
use crate::error::ProxyError;
use crate::relay::Timer;
use crate::snapshot::ClusterRt;
use crate::upstream::endpoint::Endpoint;
use crate::upstream::pool::UpstreamConn;
use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Duration;

/// One upstream HTTP/2 connection.
struct Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it (held by [`Lease`]s).
    open: Cell<usize>,
    /// Its driver ended (closed, GOAWAY, error). (Shared with the driver, which
    /// holds nothing else: the connection closes once its `SendRequest`s are
    /// dropped with it, and no stream is open.)
    closed: Rc<Cell<bool>>,
    /// When it last had no stream open.
    idle_since: Cell<Moment>,
}

/// An endpoint's HTTP/2 connections on this core.
#[derive(Default)]
pub struct H2Pool {
    conns: RefCell<Vec<Rc<Conn>>>,
}

/// A stream's claim on its connection (released when dropped).
pub struct Lease(Rc<Conn>);

impl Drop for Lease {
    fn drop(&mut self) {
        let open = self.0.open.get() - 1;
        self.0.open.set(open);
        if open == 0 {
            self.0.idle_since.set(Moment::now());
        }
    }
}

impl H2Pool {
    /// A connection with room for another stream.
    fn pick(&self) -> Option<Rc<Conn>> {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| !c.closed.get());
        conns
            .iter()
            .find(|c| c.open.get() < c.send.current_max_send_streams().max(1))
            .cloned()
    }

    /// Closes connections with no stream open for `idle_timeout` (and all, when
    /// `idle_timeout` is zero: retirement).
    pub fn sweep(&self, now: Moment, idle_timeout: Duration) {
        self.conns.borrow_mut().retain(|c| {
            !c.closed.get()
                && (c.open.get() > 0
                    || now.saturating_duration_since(c.idle_since.get()) < idle_timeout)
        });
    }

    pub fn clear(&self) {
        self.conns.borrow_mut().clear();
    }
}

/// Connects to `ep` and makes an HTTP/2 connection there (ALPN `h2` over TLS,
/// prior knowledge over cleartext), within the cluster's `connect_timeout`.
async fn connect(
    cluster: &ClusterRt,
    index: usize,
    ep: &Endpoint,
    timer: &mut Timer,
) -> Result<Rc<Conn>, ProxyError> {
    let endpoint = &cluster.config.endpoints[index];
    let stream = crate::upstream::connect(endpoint, cluster, timer).await?;
    if let crate::stream::Stream::Tls(tls) = &stream {
        if tls.info().alpn.as_deref() != Some("h2") {
            return Err(ProxyError::UpstreamTls {
                addr: endpoint.addr,
                reason: "the upstream did not agree to HTTP/2 (ALPN h2)".into(),
            });
        }
    }
    let io = H2Io::new(
        Transport::Upstream(UpstreamConn::new(stream, ep.stats.clone())),
        Vec::new(),
        Guard::upstream(),
    );
    let mut builder = h2::client::Builder::new();
    // (The connection window holds 128 streams' windows: streams whose clients
    // stop reading hold theirs, and must not stall the others on the connection.)
    builder
        .initial_window_size(256 << 10)
        .initial_connection_window_size(32 << 20)
        .max_header_list_size(256 << 10);
    let handshake = builder.handshake::<_, Bytes>(io);
    let (send, connection) = match timer.run(cluster.config.connect_timeout, handshake).await {
        Some(Ok(pair)) => pair,
        Some(Err(e)) => {
            return Err(ProxyError::Upstream {
                op: "HTTP/2 handshake",
                source: std::io::Error::other(e),
            })
        }
        None => {
            return Err(ProxyError::ConnectTimeout {
                addr: endpoint.addr,
            })
        }
    };
    let conn = Rc::new(Conn {
        send,
        open: Cell::new(0),
        closed: Rc::new(Cell::new(false)),
        idle_since: Cell::new(Moment::now()),
    });
    let closed = Rc::clone(&conn.closed);
    monoio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
        closed.set(true);
    });
    ep.h2.conns.borrow_mut().push(Rc::clone(&conn));
    Ok(conn)
}

/// A stream opened to an upstream.
pub struct Opened {
    pub response: ResponseFuture,
    pub send: SendStream<Bytes>,
    pub lease: Lease,
}

/// Opens a stream for `req` on endpoint `index` of `cluster`: on a pooled
/// connection with room, else on a new one. `fresh`: a new one in any case.
pub async fn open(
    cluster: &ClusterRt,
    index: usize,
    req: http::Request<()>,
    end_stream: bool,
    fresh: bool,
    timer: &mut Timer,
) -> Result<Opened, (ProxyError, bool)> {
    let ep = &cluster.endpoints[index];
    let pooled = if fresh { None } else { ep.h2.pick() };
    let reused = pooled.is_some();
    let conn = match pooled {
        Some(c) => c,
        None => connect(cluster, index, ep, timer)
            .await
            .map_err(|e| (e, false))?,
    };
    conn.open.set(conn.open.get() + 1);
    let lease = Lease(Rc::clone(&conn));
    let mut send = conn.send.clone();
    let failed = |e: h2::Error| {
        conn.closed.set(true);
        let error = ProxyError::Upstream {
            op: "open HTTP/2 stream",
            source: std::io::Error::other(e),
        };
        // (A connection that went away before it took the stream: another may.)
        (error, reused)
    };
    match timer
        .run(
            cluster.config.connect_timeout,
            poll_fn(|c| send.poll_ready(c)),
        )
        .await
    {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(failed(e)),
        None => {
            return Err((
                ProxyError::ConnectTimeout {
                    addr: cluster.config.endpoints[index].addr,
                },
                false,
            ))
        }
    }
    let (response, send) = send.send_request(req, end_stream).map_err(failed)?;
    Ok(Opened {
        response,
        send,
        lease,
    })
}

/// Opens a stream for `req` on an endpoint of `cluster` the balancer picks (each
/// further attempt with a request from `remake`: h2 takes a request it sends, and
/// a copy made for every attempt would cost its allocations every time):
/// when a pooled connection went away before it took the stream, on a fresh
/// connection to the same endpoint; when an endpoint fails, on the next.
/// Attempts, the endpoint and flags go to `outcome`.
pub async fn open_any(
    cluster: &ClusterRt,
    mut req: http::Request<()>,
    remake: &dyn Fn() -> Result<http::Request<()>, ProxyError>,
    end_stream: bool,
    timer: &mut Timer,
    outcome: &mut crate::outcome::Outcome,
) -> Result<(usize, Opened), ProxyError> {
    use crate::outcome::Flags;
    let mut tried: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
    let mut last_error = None;
    loop {
        let Some(ep) = cluster.balancer.pick(|i| !tried.contains(&i)) else {
            return Err(last_error.expect("a cluster has at least one endpoint"));
        };
        outcome.attempts = outcome.attempts.saturating_add(1);
        outcome.endpoint = Some(ep as u32);
        let mut result = open(cluster, ep, req, end_stream, false, timer).await;
        if let Err((e, true)) = &result {
            tracing::debug!(error = %e, "pooled HTTP/2 connection gone, opening a new one");
            cluster.stats.retries.inc();
            outcome.flags.set(Flags::RETRIED);
            result = open(cluster, ep, remake()?, end_stream, true, timer).await;
        }
        match result {
            Ok(opened) => return Ok((ep, opened)),
            Err((e, _)) => {
                let state = &cluster.endpoints[ep];
                tracing::debug!(endpoint = %state.addr, error = %e, "HTTP/2 upstream failed");
                state.stats.connect_failures.inc();
                outcome.flags.set(Flags::of(&e));
                if let ProxyError::ConnectTimeout { .. } = e {
                    cluster.stats.timeouts[crate::metrics::TimeoutKind::Connect as usize].inc();
                }
                tried.push(ep);
                last_error = Some(e);
                req = remake()?;
            }
        }
    }
}
