//! Per-core keep-alive pool of upstream connections, one LIFO stack per endpoint.
//! LIFO keeps the warmest connections in use and lets the cold ones age out.
//!
//! Liveness: a connection idle for [`PROBE_AFTER`] or more, or any connection for a
//! non-idempotent request, is only handed out after a non-blocking peek shows the
//! backend has not closed it (nor sent stray bytes). Connections used within the last
//! second skip the peek (a syscall per request otherwise): a backend closes an idle
//! connection after its own keep-alive timeout, and if one closed anyway, the
//! idempotent request is retried once on a fresh connection (`upstream::forward`).
//! A once-a-second sweep probes every idle connection and drops the expired and
//! closed ones, so their descriptors do not linger in CLOSE_WAIT.

use crate::clock::Moment;
use crate::metrics::EndpointStats;
use crate::stream::Stream;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

/// An open upstream connection, counted in its endpoint's
/// `ringway_upstream_connections_active` for as long as it lives.
pub struct UpstreamConn {
    pub stream: Stream,
    stats: Arc<EndpointStats>,
}

impl UpstreamConn {
    pub fn new(stream: Stream, stats: Arc<EndpointStats>) -> UpstreamConn {
        stats.connections_active.inc();
        UpstreamConn { stream, stats }
    }
}

impl Drop for UpstreamConn {
    fn drop(&mut self) {
        self.stats.connections_active.dec();
    }
}

/// Idle time from which a pooled connection is probed before reuse.
pub const PROBE_AFTER: Duration = Duration::from_secs(1);

struct Idle {
    conn: UpstreamConn,
    since: Moment,
}

/// The idle connections of one endpoint on one core. It belongs to the endpoint's
/// run-time state, which outlives configuration snapshots: a reload that keeps the
/// endpoint keeps its pool (and may change its limits).
pub struct Pool {
    idle: RefCell<Vec<Idle>>,
    /// `pool_idle` follows the length of `idle`.
    stats: Arc<EndpointStats>,
    max_idle: Cell<usize>,
    idle_timeout: Cell<Duration>,
    /// The endpoint left the configuration: nothing is pooled any more.
    retired: Cell<bool>,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration, stats: Arc<EndpointStats>) -> Pool {
        Pool {
            idle: RefCell::new(Vec::with_capacity(max_idle.min(64))),
            stats,
            max_idle: Cell::new(max_idle),
            idle_timeout: Cell::new(idle_timeout),
            retired: Cell::new(false),
        }
    }

    /// How long an idle connection is kept.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.get()
    }

    /// New limits from a reload; connections beyond the new cap are closed.
    pub fn configure(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.set(max_idle);
        self.idle_timeout.set(idle_timeout);
        self.retired.set(false);
        let mut idle = self.idle.borrow_mut();
        if idle.len() > max_idle {
            // The oldest are at the bottom of the stack.
            let surplus = idle.len() - max_idle;
            idle.drain(..surplus);
        }
        self.stats.pool_idle.set(idle.len() as i64);
    }

    /// Closes the idle connections, and those checked in from now on.
    pub fn retire(&self) {
        self.retired.set(true);
        self.clear();
    }

    /// The most recently used live connection, if any. `probe`: peek at it whatever
    /// its idle time (the request cannot be retried).
    pub fn checkout(&self, now: Moment, probe: bool) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let timeout = self.idle_timeout.get();
        let mut found = None;
        while let Some(pooled) = idle.pop() {
            let idle_for = now.saturating_duration_since(pooled.since);
            if idle_for < timeout
                && ((idle_for < PROBE_AFTER && !probe) || is_open_and_quiet(&pooled.conn.stream))
            {
                found = Some(pooled.conn);
                break;
            }
        }
        self.stats.pool_idle.set(idle.len() as i64);
        found
    }

    /// Returns a connection after a complete exchange; dropped (closed) if the pool
    /// is full or retired.
    pub fn checkin(&self, conn: UpstreamConn, now: Moment) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle.get() && !self.retired.get() {
            idle.push(Idle { conn, since: now });
            self.stats.pool_idle.set(idle.len() as i64);
        }
    }

    /// Drops expired connections and those the backend closed.
    pub fn sweep(&self, now: Moment) {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|pooled| {
            now.saturating_duration_since(pooled.since) < timeout
                && is_open_and_quiet(&pooled.conn.stream)
        });
        self.stats.pool_idle.set(idle.len() as i64);
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
        self.stats.pool_idle.set(0);
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// True when an idle connection has neither been closed by its peer nor received
/// unexpected bytes: `recv(MSG_PEEK | MSG_DONTWAIT)` must say "would block".
#[allow(unsafe_code)]
fn is_open_and_quiet(stream: &Stream) -> bool {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow; monoio
    // offers no `AsFd` for its sockets, only `AsRawFd`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(&fd)
        .recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        // 0: the peer closed; >0: bytes nobody asked for (a late or bogus response).
        Ok(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::net::TcpStream;
    use std::io::Write;
    use std::time::Instant;

    fn conn(stream: TcpStream) -> UpstreamConn {
        let stream = Stream::Plain(stream);
        UpstreamConn::new(stream, Default::default())
    }

    /// Runs `f` on a monoio runtime (legacy driver works everywhere tests run).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn hands_out_only_live_quiet_unexpired_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        block_on(async move {
            let pool = Pool::new(4, Duration::from_secs(30), Default::default());
            let now = Moment::now();
            // Three connections: one stays open, one is closed by the peer, one gets stray bytes.
            let mut peers = Vec::new();
            for _ in 0..3 {
                let c = conn(TcpStream::connect(addr).await.unwrap());
                let (p, _) = listener.accept().unwrap();
                peers.push(p);
                pool.checkin(c, now);
            }
            let mut peers = peers.into_iter();
            let _open = peers.next().unwrap();
            drop(peers.next().unwrap()); // closed
            peers.next().unwrap().write_all(b"junk").unwrap();
            // Let the FIN and the bytes arrive: poll the checkout until it settles.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = None;
            while Instant::now() < deadline {
                pool.sweep(Moment::now());
                if pool.idle_count() == 1 {
                    got = pool.checkout(Moment::now(), true);
                    break;
                }
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(got.is_some(), "the open connection is handed out");
            assert_eq!(pool.idle_count(), 0);
            assert!(pool.checkout(Moment::now(), true).is_none());
            // Expiry.
            pool.checkin(got.unwrap(), now);
            assert!(pool
                .checkout(now + Duration::from_secs(31), false)
                .is_none());
        });
    }

    /// A connection whose peer has closed, once the FIN is visible to a probe.
    async fn closed_by_peer(
        listener: &std::net::TcpListener,
        addr: std::net::SocketAddr,
    ) -> UpstreamConn {
        let c = conn(TcpStream::connect(addr).await.unwrap());
        drop(listener.accept().unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_open_and_quiet(&c.stream) {
            assert!(Instant::now() < deadline, "FIN never arrived");
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        c
    }

    #[test]
    fn probes_only_long_idle_connections_unless_asked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        block_on(async move {
            let pool = Pool::new(4, Duration::from_secs(30), Default::default());
            let c = closed_by_peer(&listener, addr).await;
            let now = Moment::now();
            pool.checkin(c, now);
            // Recently used, retryable request: handed out without a probe.
            let c = pool.checkout(now, false).expect("no probe");
            pool.checkin(c, now);
            // A non-idempotent request probes, and the closed connection is dropped.
            assert!(pool.checkout(now, true).is_none());
            // Idle past PROBE_AFTER: probed even for a retryable request.
            let c = closed_by_peer(&listener, addr).await;
            pool.checkin(c, now);
            assert!(pool.checkout(now + PROBE_AFTER, false).is_none());
        });
    }

    #[test]
    fn respects_max_idle() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        block_on(async move {
            let pool = Pool::new(1, Duration::from_secs(30), Default::default());
            let mut keep = Vec::new();
            for _ in 0..2 {
                let c = conn(TcpStream::connect(addr).await.unwrap());
                keep.push(listener.accept().unwrap());
                pool.checkin(c, Moment::now());
            }
            assert_eq!(pool.idle_count(), 1);
        });
    }
}

#[cfg(test)]
mod gauge_tests {
    use super::*;

    #[test]
    fn gauges_follow_connections_and_retire_closes_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(async move {
                let stats = Arc::new(EndpointStats::default());
                let pool = Pool::new(4, Duration::from_secs(30), stats.clone());
                let mut peers = Vec::new();
                for _ in 0..2 {
                    let s = monoio::net::TcpStream::connect(addr).await.unwrap();
                    peers.push(listener.accept().unwrap());
                    let s = Stream::Plain(s);
                    pool.checkin(UpstreamConn::new(s, stats.clone()), Moment::now());
                }
                assert_eq!(
                    (stats.connections_active.get(), stats.pool_idle.get()),
                    (2, 2)
                );
                let c = pool.checkout(Moment::now(), false).unwrap();
                assert_eq!(
                    (stats.connections_active.get(), stats.pool_idle.get()),
                    (2, 1)
                );
                pool.retire();
                assert_eq!(
                    (stats.connections_active.get(), stats.pool_idle.get()),
                    (1, 0)
                );
                pool.checkin(c, Moment::now());
                assert_eq!(
                    (stats.connections_active.get(), stats.pool_idle.get()),
                    (0, 0),
                    "a retired pool closes what comes back"
                );
            });
    }
}
