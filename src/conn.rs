//! THE HOT PATH: one downstream HTTP/1.1 connection, read top to bottom.
//!
//! 1. read and parse the request head (`http::parse`, in place in `rbuf`);
//! 2. route it (`route`), enforcing the listener's limits;
//! 3. answer directly, or `upstream::forward` it;
//! 4. decide keep-alive, then loop for the next (possibly pipelined) request.
//!
//! Any error before a response byte was written becomes the pre-rendered answer for
//! `ProxyError::status()`; after that, the connection is closed.
//!
//! Idle connections are cheap: a connection owns no read buffer while nothing is
//! there to read. It waits for readability (one poll op, no buffer), then takes a
//! buffer from the core's pool and serves requests in a *burst*: a heap-allocated
//! future (most of the per-connection state machine lives there, not in the task)
//! that keeps the buffer while requests keep coming. When no request arrives for
//! `release_buffers_after`, the pending read is cancelled, the buffer goes back to the
//! pool, the burst future is freed and the connection waits for readability again.
//! An idle keep-alive connection then costs its task (a few hundred bytes), not a
//! 16 KiB buffer and a 2 KB future. A busy connection stays in one burst: no
//! allocation per request.

use crate::clock::{Moment, Stamp};
use crate::downstream::{refused, Conn, Downstream, Failure, Next};
use crate::error::ProxyError;
use crate::exchange::{self, Act};
use crate::http::answer::{Answer, ConnHeader};
use crate::http::parse::{parse_request, Framing, Method, RequestHead, Version};
use crate::http::rewrite::Peer;
use crate::metrics::TlsFailure;
use crate::outcome::{Flags, Outcome};
use crate::relay::{self, Body, Fail, Io, Timer, Waited};
use crate::snapshot::{ListenerRt, Snapshot};
use crate::stream::Stream;
use crate::upstream;
use crate::worker::Worker;
use monoio::io::Canceller;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// When its listener closes (a drain, a reload that removed it), a connection that
/// served a request less than this ago, or was just accepted, may still send one
/// (answered with `Connection: close`): its client may have sent it already, and
/// closing under it would fail it. Connections idle for longer close at once.
const DRAIN_GRACE: Duration = Duration::from_millis(100);

/// Request bodies up to this size are read and discarded before a direct answer,
/// so the connection can stay open; larger ones close it instead.
const MAX_DISCARD: u64 = 64 * 1024;

/// A connection closed while its client may still be sending (the rest of a
/// body the proxy did not read, after an early answer or a refusal) is not reset
/// under it: its writing side closes first (a FIN after the response), then what
/// the client still sends is read and dropped until it closes, waiting at most
/// `LINGER_READ` for each piece and `LINGER_TOTAL` in all, as nginx's
/// `lingering_close` does. Closing a socket with unread bytes sends an RST, and a
/// client that gets one before it read the response loses the response (RFC 9112
/// §9.6).
const LINGER_READ: Duration = Duration::from_secs(2);
const LINGER_TOTAL: Duration = Duration::from_secs(10);

/// How a burst ended.
enum Burst {
    Close,
    /// Close, lingering: the client may still be sending ([`LINGER_TOTAL`]).
    Linger,
    /// No request for `release_buffers_after`, with nothing buffered; the
    /// connection has been idle since then.
    Idle(Moment),
}

/// What waiting for a request head gave.
enum Head {
    Ready(RequestHead),
    /// Close quietly (client gone, idle timeout).
    Closed,
    /// Nothing arrived within the hold time (see [`Burst::Idle`]).
    Idle(Moment),
}

/// Serves a just-accepted connection of a TLS listener: the handshake, bounded by
/// the listener's `handshake_timeout` (a client that stalls or sends garbage costs
/// its read buffer and rustls' state until then), then [`serve`]. A failed
/// handshake closes the connection; the connection counts as accepted once the
/// handshake succeeded.
///
/// The handshake runs in a future of its own, boxed and freed once it is done: its
/// state (rustls' acceptor, the half-built stream) is much larger than an idle
/// connection's, and would otherwise stay in the connection's task for its whole
/// life (an async fn keeps room for every local in scope at an await, moved or not).
pub async fn serve_tls(
    worker: Rc<Worker>,
    tcp: monoio::net::TcpStream,
    peer: SocketAddr,
    listener: Rc<ListenerRt>,
) {
    if let Some(conn) = Box::pin(handshake(tcp, peer, listener)).await {
        let h2 = match &conn.stream {
            Stream::Tls(tls) => tls.info().alpn.as_deref() == Some("h2"),
            Stream::Plain(_) => false,
        };
        if h2 {
            return Box::pin(crate::h2::server::serve(worker, conn, Vec::new())).await;
        }
        serve(worker, conn).await
    }
}

/// The handshake of [`serve_tls`]: the connection, or `None` when it failed (counted
/// and logged here).
async fn handshake(
    tcp: monoio::net::TcpStream,
    peer: SocketAddr,
    listener: Rc<ListenerRt>,
) -> Option<Box<Conn>> {
    let tls = listener.settings().config.tls.clone()?;
    let mut timer = Timer::new();
    let stats = &listener.stats;
    let stream = match timer
        .run(
            tls.settings.handshake_timeout,
            crate::tls::accept(tcp, &tls),
        )
        .await
    {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => {
            let kind = e.kind();
            tracing::debug!(%peer, error = %e, reason = kind.label(), "TLS handshake failed");
            stats.tls_failures[kind as usize].inc();
            return None;
        }
        None => {
            tracing::debug!(%peer, "TLS handshake timed out");
            stats.tls_failures[TlsFailure::Timeout as usize].inc();
            return None;
        }
    };
    let version = match stream.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_2) => 0,
        _ => 1,
    };
    stats.tls_handshakes[version].inc();
    let mut conn = Conn::new(Stream::Tls(Box::new(stream)), peer, listener);
    conn.timer = timer;
    Some(conn)
}

/// Serves a just-accepted connection until it closes. Not an `async fn`: that would
/// keep its arguments twice in the connection's future, as captures and again as
/// locals. Only what the idle wait needs lives across it (the future of an idle
/// connection is the bulk of its memory); a burst's state is boxed apart.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub fn serve(worker: Rc<Worker>, mut c: Box<Conn>) -> impl Future<Output = ()> {
    async move {
        // The first request must start within header_timeout of the accept (this
        // task starts as the connection is accepted), later ones within
        // idle_timeout of going idle. (Nothing carried from one wait to the next
        // is kept across the burst: the idle future stays small.)
        // Idle waits end early when the listener closes (drain or reload): `until`.
        let header_timeout = c.listener.settings().config.header_timeout;
        let listener = &*c.listener;
        let readable = relay::until(c.stream.readable(), || listener.is_closing());
        match c.timer.run(header_timeout, readable).await {
            Some(Some(Ok(()))) => {}
            // Closing: a last short wait for a request already on its way.
            Some(None) => match c.timer.run(DRAIN_GRACE, c.stream.readable()).await {
                Some(Ok(())) => {}
                _ => return,
            },
            _ => return,
        }
        if c.listener.settings().config.http2 && starts_with_preface(&c.stream) {
            return Box::pin(crate::h2::server::serve(worker, c, Vec::new())).await;
        }
        let mut first = true;
        loop {
            // The first head must be complete by the first wait's deadline.
            let head_deadline = if first { c.timer.last_deadline() } else { None };
            let at = match Box::pin(burst(&worker, &mut c, head_deadline)).await {
                Burst::Idle(at) => at,
                Burst::Close => return,
                Burst::Linger => return Box::pin(linger(&mut c)).await,
            };
            first = false;
            // (Blocks: `wait` must not outlive the call, or the future keeps it, and
            // the wait's borrow of the stream ends with it.)
            let closing = {
                let readable = {
                    let idle_timeout = c.listener.settings().config.idle_timeout;
                    let wait = (at + idle_timeout).saturating_duration_since(Moment::now());
                    let listener = &*c.listener;
                    if wait.is_zero() || listener.is_closing() {
                        None
                    } else {
                        let readable = relay::until(c.stream.readable(), || listener.is_closing());
                        Some(c.timer.run(wait, readable))
                    }
                };
                match readable {
                    None => true,
                    Some(readable) => match readable.await {
                        Some(Some(Ok(()))) => false,
                        Some(None) => true,
                        _ => return,
                    },
                }
            };
            if closing {
                // Idle for less than the grace (a short release_buffers_after): a
                // request may be on its way.
                let grace = (at + DRAIN_GRACE).saturating_duration_since(Moment::now());
                if grace.is_zero() || !c.is_closing() {
                    return;
                }
                match c.timer.run(grace, c.stream.readable()).await {
                    Some(Ok(())) => {}
                    _ => return,
                }
            }
        }
    }
}

/// Closes the connection lingering ([`LINGER_TOTAL`]): the writing side first,
/// then the client's bytes dropped (not read into any buffer) until it closes,
/// the time is up, or the listener closes.
async fn linger(c: &mut Conn) {
    use std::os::fd::AsRawFd;
    if let Stream::Tls(tls) = &mut c.stream {
        // (Its close first: after the shutdown it could not be sent.)
        tls.close_notify();
    }
    let fd = c.stream.as_raw_fd();
    if nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write).is_err() {
        return;
    }
    let tcp = match &c.stream {
        Stream::Plain(tcp) => tcp,
        Stream::Tls(tls) => tls.tcp(),
    };
    let end = Moment::now() + LINGER_TOTAL;
    let mut timer = Timer::new();
    loop {
        // (At most 8 MiB a turn: a client sending as fast as this drops goes
        // through the readiness wait, the clock and the listener's state.)
        for _ in 0..8 {
            match drop_received(fd) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        let left = end.saturating_duration_since(Moment::now());
        if left.is_zero() || c.listener.is_closing() {
            return;
        }
        let listener = &*c.listener;
        let readable = relay::until(tcp.readable(false), || listener.is_closing());
        match timer.run(LINGER_READ.min(left), readable).await {
            Some(Some(Ok(()))) => {}
            _ => return,
        }
    }
}

/// Drops what the socket `fd` received, up to 1 MiB, without copying it
/// (`MSG_TRUNC` on TCP: tcp(7)): how much, 0 when the peer closed.
#[allow(unsafe_code)]
fn drop_received(fd: std::os::fd::RawFd) -> std::io::Result<usize> {
    let flags = libc::MSG_TRUNC | libc::MSG_DONTWAIT;
    // SAFETY: with MSG_TRUNC, TCP discards the bytes and writes nothing to the
    // (null) buffer.
    let n = unsafe { libc::recv(fd, std::ptr::null_mut(), 1 << 20, flags) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One burst: takes a buffer and scratch space, serves requests while they keep
/// coming (see the module docs), and gives the buffer back. `head_deadline`: when
/// the first head must be complete (a new connection's). The request loop is not an
/// `async fn` of its own: every completion of every request would poll one more
/// nested future, nor is the handling of one request (routing, forwarding).
async fn burst(w: &Worker, conn: &mut Conn, mut head_deadline: Option<Moment>) -> Burst {
    let mut d = Downstream {
        peer: Peer::of(conn.peer),
        settings: conn.listener.settings(),
        conn,
        rbuf: w.bufs.take(),
        pos: 0,
        headers: Vec::new(),
        resp_headers: Vec::new(),
        up_timer: Timer::new(),
        canceller: None,
        // (Set anew when each request's head arrives.)
        outcome: Outcome::new(Stamp::ZERO),
        log: None,
    };
    let end = loop {
        // Read until a complete request head is buffered, by `head_deadline` when
        // given (a new connection's first head), else within `header_timeout` of
        // its first byte. (Not an `async fn` of its own either.)
        let mut deadline = head_deadline.take();
        // When the request's first byte was read (for its duration).
        let mut first_byte = None;
        let got: Result<Head, ProxyError> = 'read: {
            // Move a pipelined request's bytes to the front.
            if d.pos > 0 {
                d.rbuf.copy_within(d.pos.., 0);
                d.rbuf.truncate(d.rbuf.len() - d.pos);
                d.pos = 0;
            }
            d.settings = d.conn.listener.settings();
            let cfg = &d.settings.config;
            loop {
                // A timed-out read takes the buffer with it: note first whether the
                // request had started.
                let started = !d.rbuf.is_empty();
                if started {
                    match parse_request(&d.rbuf, &cfg.limits, &mut d.headers) {
                        Ok(Some(head)) => break 'read Ok(Head::Ready(head)),
                        Ok(None) => {}
                        Err(e) => break 'read Err(e.into()),
                    }
                    deadline.get_or_insert_with(|| Moment::now() + cfg.header_timeout);
                }
                let read = match deadline {
                    None => {
                        // Nothing of the next request yet: an idle wait, which a
                        // closing listener (drain, reload) ends.
                        let mut io =
                            Io::new(&mut d.conn.stream, &mut d.conn.timer, cfg.idle_timeout);
                        let hold = cfg.release_buffers_after;
                        let canceller = d.canceller.get_or_insert_with(Canceller::new);
                        let listener = &*d.conn.listener;
                        let quit = || listener.is_closing();
                        let read = relay::read_or_release(
                            &mut io,
                            &mut d.rbuf,
                            hold,
                            canceller,
                            quit,
                            DRAIN_GRACE,
                        );
                        match read.await {
                            Ok(Waited::Read(n)) => Ok(n),
                            // Idle since the wait began, `hold` ago (no clock read per
                            // request for the rare case).
                            Ok(Waited::Released) => {
                                let now = Moment::now();
                                break 'read Ok(Head::Idle(now.checked_sub(hold).unwrap_or(now)));
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Moment::now());
                        if left.is_zero() {
                            break 'read Err(ProxyError::HeadTimeout);
                        }
                        let mut io = Io::new(&mut d.conn.stream, &mut d.conn.timer, left);
                        relay::read_into(&mut io, &mut d.rbuf).await
                    }
                };
                match read {
                    Ok(0) | Err(Fail::Closed) => break 'read Ok(Head::Closed),
                    Ok(_) if !started => first_byte = Some(Stamp::now()),
                    Ok(_) => {}
                    // A first request that has not started is dropped quietly, like an
                    // idle connection.
                    Err(Fail::Timeout) if started => break 'read Err(ProxyError::HeadTimeout),
                    Err(Fail::Timeout) | Err(Fail::Io(_)) => break 'read Ok(Head::Closed),
                }
            }
        };
        let head = match got {
            Ok(Head::Ready(head)) => head,
            Ok(Head::Closed) => break Burst::Close,
            Ok(Head::Idle(at)) => break Burst::Idle(at),
            Err(e) => {
                tracing::debug!(peer = %d.peer, error = %e, "bad request head");
                d.outcome = Outcome::new(first_byte.unwrap_or_else(Stamp::now));
                d.outcome.request_bytes = d.rbuf.len() as u64;
                d.outcome.failed(&e);
                if let Some(status) = e.status() {
                    let answer = w.errors.get(status);
                    let _ = d.answer(w, answer, None, Next::Close).await;
                }
                let duration = crate::account::request(w, None, &d.conn.listener, &d.outcome);
                if w.logs_requests() {
                    d.log.get_or_insert_with(Default::default).clear();
                    d.log_request(w, None, duration);
                }
                // (What follows a bad head is not read; a head too slow to come
                // gets no more time.)
                break match e {
                    ProxyError::HeadTimeout => Burst::Close,
                    _ => Burst::Linger,
                };
            }
        };
        d.pos = head.head_len;
        d.outcome = Outcome::new(first_byte.unwrap_or_else(Stamp::now));
        d.outcome.request_bytes = head.head_len as u64;
        // The configuration this request is served with, whatever reloads happen
        // meanwhile.
        let snapshot = w.snapshot();
        // (Asked per request: a reload may start or stop the access log.)
        let logging = w.logs_requests();
        if logging {
            let id_header = &snapshot.forwarding.request_id_header;
            let fields = d.log.get_or_insert_with(Default::default);
            fields.capture(&d.rbuf, &head, &d.headers, id_header);
        } else if d.log.is_some() {
            d.log = None;
        }
        let result = match d.route(&snapshot, &head) {
            Ok(Act::Forward(route, cluster)) => {
                upstream::forward(&mut d, w, &snapshot, &head, route, cluster).await
            }
            Ok(Act::Answer(answer)) => {
                let next = if d.discard_body(&head).await {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
                Ok(d.answer(w, &answer, Some(&head), next).await)
            }
            Ok(Act::NoRoute) => {
                let consumed = d.discard_body(&head).await;
                Err(refused(ProxyError::NoRoute, consumed))
            }
            Err(f) => Err(f),
        };
        let next = match result {
            Ok(next) => next,
            Err(f) => d.failed(w, &head, f).await,
        };
        let duration = crate::account::request(w, Some(&snapshot), &d.conn.listener, &d.outcome);
        if logging {
            d.log_request(w, Some(&snapshot), duration);
        }
        if next == Next::Close {
            // (A body may not have been read whole.)
            break if head.has_body() {
                Burst::Linger
            } else {
                Burst::Close
            };
        }
    };
    w.bufs.give(std::mem::take(&mut d.rbuf));
    end
}

impl Downstream<'_> {
    /// Answers a failed request when the client has seen nothing of a response yet.
    async fn failed(&mut self, w: &Worker, head: &RequestHead, f: Failure) -> Next {
        self.outcome.failed(&f.error);
        let status = f.error.status();
        if f.error.is_downstream() {
            tracing::debug!(peer = %self.peer, error = %f.error, "request failed");
        } else {
            tracing::warn!(peer = %self.peer, error = %f.error, status, "upstream failure");
        }
        match status {
            Some(status) if !f.response_started => {
                // answer() also closes for non-persistent requests and drains.
                let next = if f.request_consumed && !is_fatal_status(status) {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
                self.answer(w, w.errors.get(status), Some(head), next).await
            }
            _ => Next::Close,
        }
    }

    /// Writes the access log line of the request that just ended.
    fn log_request(&self, w: &Worker, snapshot: Option<&Snapshot>, duration_ns: u64) {
        let Some(fields) = &self.log else { return };
        let tls = match &self.conn.stream {
            Stream::Tls(tls) => Some(tls.info()),
            Stream::Plain(_) => None,
        };
        let req = fields.fields(&self.rbuf);
        let client = crate::account::LogClient {
            peer: &self.peer,
            listener: &self.settings.log_name,
            tls,
        };
        crate::account::log(w, snapshot, &self.outcome, req, &client, duration_ns);
    }

    /// What to do with a request (`exchange::decide`).
    #[inline(always)]
    fn route<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        head: &RequestHead,
    ) -> Result<Act<'s>, Failure> {
        let stream = &self.conn.stream;
        let client = exchange::Client {
            listener: self.conn.listener.id,
            sni: match stream {
                Stream::Tls(tls) => tls.info().sni.as_deref().map(str::as_bytes),
                Stream::Plain(_) => None,
            },
            tls: stream.is_tls(),
            local_addr: &|| stream.local_addr().ok(),
            settings: &self.settings,
        };
        exchange::decide(
            snapshot,
            head,
            &self.rbuf,
            &self.headers,
            &client,
            &mut self.outcome,
        )
    }

    /// Reads and drops a small request body so the connection stays usable; false
    /// when the body is too large, awaited behind `Expect: 100-continue`, or broken.
    async fn discard_body(&mut self, head: &RequestHead) -> bool {
        match head.framing {
            _ if !head.has_body() => return true,
            // The client waits for 100 Continue: answer without it, then close
            // (RFC 9110 §10.1.1).
            _ if head.expect_continue && self.rbuf.len() == self.pos => return false,
            Framing::Length(n) if n > MAX_DISCARD => return false,
            _ => {}
        }
        let cfg = &self.settings.config;
        let mut body = Body::new(
            head.framing,
            Some(MAX_DISCARD),
            cfg.limits.max_head_bytes,
            false,
        );
        let mut io = Io::new(
            &mut self.conn.stream,
            &mut self.conn.timer,
            cfg.idle_timeout,
        );
        body.relay(&mut io, None, &mut self.rbuf, &mut self.pos)
            .await
            .is_ok()
    }

    /// Writes a pre-rendered answer. `head` is the request it answers (None when the
    /// head could not be parsed).
    async fn answer(
        &mut self,
        w: &Worker,
        answer: &Answer,
        head: Option<&RequestHead>,
        next: Next,
    ) -> Next {
        let next = match head {
            Some(h) if h.keep_alive && !self.conn.is_closing() => next,
            _ => Next::Close,
        };
        let conn = match (next, head.map(|h| h.version)) {
            (Next::Close, _) => ConnHeader::Close,
            (Next::KeepAlive, Some(Version::Http10)) => ConnHeader::KeepAlive,
            (Next::KeepAlive, _) => ConnHeader::None,
        };
        let with_body = head.is_none_or(|h| h.method != Method::Head);
        let mut out = w.bufs.take();
        w.date
            .with(|date| answer.render_into(&mut out, date, conn, with_body));
        let timeout = self.settings.config.idle_timeout;
        let len = out.len();
        let mut io = Io::new(&mut self.conn.stream, &mut self.conn.timer, timeout);
        let ok = relay::write_range(&mut io, &mut out, 0..len).await.is_ok();
        w.bufs.give(out);
        if ok {
            self.outcome.status = answer.status();
            self.outcome.response_bytes += len as u64;
            next
        } else {
            self.outcome
                .flags
                .set(Flags::DOWNSTREAM_CONNECTION_TERMINATION);
            Next::Close
        }
    }

    /// Client-side I/O timeout (body reads, response writes).
    pub fn client_timeout(&self) -> Duration {
        self.settings.config.idle_timeout
    }
}

/// Whether a cleartext connection's first bytes (peeked, not read) are the HTTP/2
/// client preface, or its start (at least "PRI", which no HTTP/1.1 method the
/// parser accepts begins a request with and a version): HTTP/2 with prior
/// knowledge (RFC 9113 §3.3).
fn starts_with_preface(stream: &Stream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let Stream::Plain(tcp) = stream else {
        return false;
    };
    let mut first = [0u8; 24];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match recv(tcp.as_raw_fd(), &mut first, flags) {
        Ok(n) if n >= 3 => first[..n] == crate::h2::guard::PREFACE[..n],
        _ => false,
    }
}

/// Answers after which the connection's framing cannot be trusted.
fn is_fatal_status(status: u16) -> bool {
    matches!(status, 400 | 405 | 408 | 413 | 414 | 431 | 501 | 505)
}
