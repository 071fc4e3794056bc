//! Forwarding a request to a cluster: pick an endpoint (skipping ones that refused a
//! connection), take a pooled connection or connect, send the rewritten head and
//! stream the body, read the response head, stream the response back, and return
//! the connection to the pool when it is still in sync.
//!
//! Retry policy: a request that fails on a *reused* pooled connection before any
//! response byte arrived is retried once on a fresh connection, when it is
//! idempotent (RFC 9110 §9.2.2) or no request byte was written, and only if its body
//! can be replayed from the buffer (it was never read from the client socket).
//!
//! `forward` holds the attempts and the exchange in one `async fn`, and checks
//! before each awaited helper whether it has anything to do: each nested future is
//! polled again on every completion of an operation below it (about 35
//! instructions a level per completion, `tuning.md` §7).

pub mod balance;
pub(crate) mod duplex;
pub mod endpoint;
pub mod pool;
pub(crate) mod tunnel;

use crate::clock::{Moment, Stamp};
use crate::config::{EndpointConfig, UpstreamProtocol};
use crate::downstream::{Downstream, Failure, Next};
use crate::error::ProxyError;
use crate::http::answer::ConnHeader;
use crate::http::parse::{parse_response, Framing, Method, RequestHead, ResponseHead, Version};
use crate::http::rewrite::{
    proto_line, write_interim_head, write_request_head, write_response_head, ClientFraming,
    RequestRewrite, ResponseRewrite,
};
use crate::metrics::TimeoutKind;
use crate::outcome::{timeout_kind, Flags};
use crate::relay::{self, Body, Fail, Io, RelayError, Timer};
use crate::route::Route;
use crate::snapshot::{ClusterRt, Snapshot};
use crate::stream::Stream;
use crate::worker::Worker;
use monoio::net::TcpStream;
use pool::UpstreamConn;

/// Largest upstream response head accepted (502 beyond).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Room kept free in front of the upstream response in its buffer, so that the
/// rewritten response head can be placed right before the body bytes that arrived
/// with it and both go to the client in one write (one packet for a small response).
pub(crate) const HEADROOM: usize = 512;

/// A request body of at most this many bytes, already read with the head, goes
/// upstream in the head's write: one send instead of two (and one TCP segment, so
/// the backend is not woken for a head without its body), for a copy of the body
/// into the head buffer's spare room (no allocation: the buffer is a 16 KiB one).
const INLINE_BODY: usize = 4096;

pub async fn forward(
    d: &mut Downstream<'_>,
    w: &Worker,
    snapshot: &Snapshot,
    head: &RequestHead,
    route: &Route,
    cluster: usize,
) -> Result<Next, Failure> {
    let cluster = &snapshot.clusters[cluster];
    if cluster.config.protocol != UpstreamProtocol::Http1 {
        // (Boxed: the HTTP/2 exchange's state stays out of this future.)
        return Box::pin(crate::h2::from_h1::forward(
            d, w, snapshot, head, route, cluster,
        ))
        .await;
    }
    let mut bufs = Bufs {
        head: w.bufs.take(),
        resp: w.bufs.take(),
    };
    write_upstream_head(d, w, snapshot, head, route, cluster, &mut bufs.head);
    let inline_body = match head.framing {
        Framing::Length(n) if n <= INLINE_BODY as u64 => d
            .rbuf
            .get(d.pos..d.pos + n as usize)
            .filter(|body| body.len() <= bufs.head.capacity() - bufs.head.len())
            .map(|body| {
                bufs.head.extend_from_slice(body);
                body.len()
            }),
        _ => None,
    };
    // (The attempts are not an `async fn` of their own: each completion of the
    // exchange would poll one more nested future.)
    let result = 'attempts: {
        let body_start = d.pos;
        let mut tried: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
        let mut retry_on = None;
        let mut retried = false;
        let mut sent_continue = false;
        let mut last_error = None;
        loop {
            let (ep, fresh) = match retry_on.take() {
                Some(ep) => (ep, true),
                None => match cluster.balancer.pick(|i| !tried.contains(&i)) {
                    Some(ep) => (ep, false),
                    None => {
                        break 'attempts Err(Failure {
                            error: last_error.expect("a cluster has at least one endpoint"),
                            response_started: false,
                            // A body may have been partly sent on an earlier attempt.
                            request_consumed: !head.has_body(),
                        });
                    }
                },
            };
            let endpoint = &cluster.config.endpoints[ep];
            let state = &cluster.endpoints[ep];
            d.outcome.attempts = d.outcome.attempts.saturating_add(1);
            d.outcome.endpoint = Some(ep as u32);
            let pooled = if fresh {
                None
            } else {
                state
                    .pool
                    .checkout(Moment::now(), !head.method.is_idempotent())
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(s) => s,
                None => match connect(endpoint, cluster, &mut d.up_timer).await {
                    Ok(s) => UpstreamConn::new(s, state.stats.clone()),
                    Err(e) => {
                        // (A request that fails for it logs it at warn; the
                        // access log's flags show every attempt's, UTLS included.)
                        tracing::debug!(endpoint = %endpoint.addr, error = %e, "connect failed");
                        state.stats.connect_failures.inc();
                        d.outcome.flags.set(Flags::of(&e));
                        if let ProxyError::ConnectTimeout { .. } = e {
                            cluster.stats.timeouts[TimeoutKind::Connect as usize].inc();
                        }
                        tried.push(ep);
                        last_error = Some(e);
                        continue;
                    }
                },
            };
            d.pos = body_start;
            let in_flight = InFlight::of(&state.stats.in_flight);
            let mut ex = Exchange {
                w,
                head,
                route,
                cluster,
                sent_continue: &mut sent_continue,
            };
            // The exchange, not an `async fn` of its own either (see above).
            let outcome: Result<Next, ExchangeError> = 'exchange: {
                let mut p = Progress::default();
                let up_timeout = cluster.config.response_timeout;
                let client_timeout = d.client_timeout();
                bufs.resp.clear();
                bufs.resp.resize(HEADROOM, 0);

                // 1. Request head, then body (or both in one write).
                let len = bufs.head.len();
                let mut up_io = Io::new(&mut up.stream, &mut d.up_timer, up_timeout);
                if let Err((f, written)) =
                    relay::write_range(&mut up_io, &mut bufs.head, 0..len).await
                {
                    p.wrote_request = written > 0;
                    break 'exchange Err(p.fail(upstream_error(f, "write request head")));
                }
                p.wrote_request = true;
                // (Checked here: a call would create and poll one more future.)
                // The request counts as sent from its head's arrival when it goes
                // out at once on a pooled connection (no clock read for the common
                // case); after a connect, a retry, or a relayed body, from then.
                let mut sent_at = if reused && d.outcome.attempts == 1 {
                    d.outcome.start
                } else {
                    Stamp::now()
                };
                if let Some(n) = inline_body {
                    d.pos = body_start + n;
                    p.request_consumed = true;
                    d.outcome.request_bytes = head.head_len as u64 + n as u64;
                } else if !head.has_body() {
                    p.request_consumed = true;
                } else {
                    // The body goes up while the response may come back (out of
                    // line, boxed: the exchange's future stays its size). An upstream
                    // that answers with an error before the body ends (an early 401,
                    // 413) stops the upload: the response goes to the client, and both
                    // connections close after it.
                    let sent =
                        duplex::send_body(&mut ex, d, &mut up.stream, &mut bufs, &mut p, sent_at);
                    match Box::pin(sent).await {
                        Ok(duplex::Sent::Whole) => {}
                        Ok(duplex::Sent::Stopped) => {
                            tracing::debug!(endpoint = %endpoint.addr, "upstream answered before the request body ended");
                            p.read_client = true;
                            d.rbuf.clear();
                            d.pos = 0;
                        }
                        Ok(duplex::Sent::Answered { next, reusable }) => {
                            if reusable {
                                state.pool.checkin(up, Moment::now());
                            }
                            break 'exchange Ok(next);
                        }
                        Err(e) => break 'exchange Err(e),
                    }
                    sent_at = Stamp::now();
                }

                // 2. Response head (after any interim 1xx responses). The first read's
                // deadline counts from the request sent (its timer's, no clock read
                // of its own); later reads of a head in pieces get what is left.
                // (Not an `async fn` of its own either.)
                let mut deadline: Option<Moment> = None;
                let resp = loop {
                    if bufs.resp.len() > HEADROOM {
                        match ex.parse_response_head(d, &bufs, &p) {
                            Ok(None) => {}
                            // (Only as the answer to a WebSocket handshake.)
                            Ok(Some(r)) if r.status == 101 => {
                                d.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
                                d.outcome.upstream_status = r.status;
                                break r;
                            }
                            Ok(Some(r)) if r.status < 200 => {
                                match ex.forward_interim(d, &mut bufs, &r, &mut p).await {
                                    Ok(()) => continue,
                                    Err(e) => break 'exchange Err(e),
                                }
                            }
                            Ok(Some(r)) => {
                                d.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
                                d.outcome.upstream_status = r.status;
                                if let Some(end) = small_body_end(&bufs, &r) {
                                    if bufs.resp.len() < end {
                                        let read = ex.read_small_body(
                                            d,
                                            &mut up.stream,
                                            &mut bufs,
                                            end,
                                            &mut p,
                                        );
                                        if let Err(e) = read.await {
                                            break 'exchange Err(e);
                                        }
                                    }
                                }
                                break r;
                            }
                            Err(e) => break 'exchange Err(e),
                        }
                    }
                    let left = match deadline {
                        None => up_timeout,
                        Some(at) => at.saturating_duration_since(Moment::now()),
                    };
                    let mut up_io = Io::new(&mut up.stream, &mut d.up_timer, left);
                    match relay::read_into(&mut up_io, &mut bufs.resp).await {
                        Ok(0) | Err(Fail::Closed) => {
                            let op = "read response head";
                            break 'exchange Err(p.fail(ProxyError::UpstreamClosed { op }));
                        }
                        Ok(_) => {
                            p.got_response = true;
                            deadline = deadline.or(d.up_timer.last_deadline());
                        }
                        Err(Fail::Timeout) => {
                            break 'exchange Err(p.fail(ProxyError::ResponseTimeout))
                        }
                        Err(f @ Fail::Io(_)) => {
                            let op = "read response head";
                            break 'exchange Err(p.fail(upstream_error(f, op)));
                        }
                    }
                };

                if resp.status == 101 {
                    // A WebSocket: the connections become a tunnel (out of line, boxed:
                    // the exchange's future stays its size).
                    let open = d
                        .outcome
                        .route
                        .and_then(|r| snapshot.route_stats.get(r as usize));
                    let open = open.map(|s| &s.websockets);
                    let tunnel = tunnel::websocket(d, &mut up.stream, &mut bufs, &resp, open);
                    break 'exchange match Box::pin(tunnel).await {
                        Ok(()) => Ok(Next::Close),
                        Err(e) => Err(p.fail(e)),
                    };
                }

                // 3. Response head and body to the client.
                let (close, client_http10) = ex.client_head(d, &mut bufs, &resp, &p);
                p.response_started = true;
                let body_error = |e| match e {
                    RelayError::Write(f) => client_write_error(f),
                    RelayError::Read(f) => upstream_error(f, "read response body"),
                    RelayError::Framing(b) => ProxyError::BadResponseBody(b),
                    RelayError::TooLarge => unreachable!("response bodies have no limit"),
                };
                let mut pos = HEADROOM + resp.head_len;
                let mut body = Body::new(resp.framing, None, MAX_RESPONSE_HEAD, client_http10);
                // The body bytes that came with the head go out in the same write, the head
                // copied into the room before them.
                let first = match body.consume(&mut bufs.resp, &mut pos) {
                    Ok(first) => first,
                    Err(e) => break 'exchange Err(p.fail(body_error(e))),
                };
                let head_len = bufs.head.len();
                let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
                let sent = if head_len <= first.start {
                    let start = first.start - head_len;
                    bufs.resp[start..first.start].copy_from_slice(&bufs.head);
                    relay::write_range(&mut client, &mut bufs.resp, start..first.end).await
                } else {
                    match relay::write_range(&mut client, &mut bufs.head, 0..head_len).await {
                        Ok(()) => relay::write_range(&mut client, &mut bufs.resp, first).await,
                        Err(e) => Err(e),
                    }
                };
                if let Err((f, _)) = sent {
                    break 'exchange Err(p.fail(client_write_error(f)));
                }
                d.outcome.status = resp.status;
                d.outcome.response_bytes = head_len as u64;
                let mut up_io = Io::new(&mut up.stream, &mut d.up_timer, up_timeout);
                // (The rest of the body, if any, or the trailer section of a chunked
                // one that ended in that first part: a call would create and poll one
                // more future.)
                if !body.is_done() || body.has_trailer_section() {
                    let relayed = body
                        .relay(&mut up_io, Some(&mut client), &mut bufs.resp, &mut pos)
                        .await;
                    d.outcome.response_bytes += body.out_bytes();
                    if let Err(e) = relayed {
                        break 'exchange Err(p.fail(body_error(e)));
                    }
                } else {
                    d.outcome.response_bytes += body.out_bytes();
                }

                // 4. Keep the upstream connection if it is in sync: whole response read and
                // nothing after it.
                if resp.keep_alive && pos == bufs.resp.len() && p.request_consumed {
                    state.pool.checkin(up, Moment::now());
                }
                Ok(if close { Next::Close } else { Next::KeepAlive })
            };
            drop(in_flight);
            match outcome {
                Ok(next) => break 'attempts Ok(next),
                Err(x) if reused && !retried && x.is_replayable(head.method) => {
                    tracing::debug!(endpoint = %endpoint.addr, error = %x.failure.error,
                    "stale pooled connection, retrying on a fresh one");
                    retried = true;
                    retry_on = Some(ep);
                    cluster.stats.retries.inc();
                    d.outcome.flags.set(Flags::RETRIED);
                }
                Err(x) => {
                    if let Some(kind) = timeout_kind(&x.failure.error) {
                        cluster.stats.timeouts[kind as usize].inc();
                    }
                    break 'attempts Err(x.failure);
                }
            }
        }
    };
    w.bufs.give(bufs.head);
    w.bufs.give(bufs.resp);
    result
}

/// The first digit of the status of the response waiting in an upstream socket
/// (peeked, not read), once its status line has begun to arrive.
pub(crate) fn waiting_status(fd: std::os::fd::RawFd) -> Option<u8> {
    use nix::sys::socket::{recv, MsgFlags};
    let mut start = [0u8; 10];
    match recv(fd, &mut start, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        // "HTTP/1.1 2"
        Ok(10) if start.starts_with(b"HTTP/1.") => Some(start[9]),
        _ => None,
    }
}

/// Writes the request head for the upstream into `out`: the client's head
/// rewritten (X-Forwarded-*, request id noted for the log, the route's edits).
#[inline(always)]
pub(crate) fn write_upstream_head(
    d: &mut Downstream<'_>,
    w: &Worker,
    snapshot: &Snapshot,
    head: &RequestHead,
    route: &Route,
    cluster: &ClusterRt,
    out: &mut Vec<u8>,
) {
    let rewrite = RequestRewrite {
        peer: &d.peer,
        port_line: &d.settings.port_line,
        // (The connection's scheme, not the listener's: a reload may have added
        // or removed TLS since it was accepted.)
        proto_line: proto_line(d.conn.stream.is_tls()),
        // Decided by the current settings, so that a reload turning it on drops
        // a client's own header on connections accepted before.
        client_cert: match &d.conn.stream {
            _ if !d.settings.forward_client_cert => None,
            Stream::Tls(tls) => Some(tls.client_cert_line()),
            Stream::Plain(_) => Some(b""),
        },
        forwarding: &snapshot.forwarding,
        edits: &route.request_headers,
        host_rewrite: route.host_rewrite.as_deref(),
        fallback_host: cluster.config.endpoints[0].name.as_bytes(),
    };
    let log = &mut d.log;
    write_request_head(out, &d.rbuf, head, &d.headers, &rewrite, |out| {
        let at = out.len();
        w.write_request_id(out);
        if let (Some(fields), Ok(id)) = (log, <&[u8; 36]>::try_from(&out[at..])) {
            fields.set_request_id(id);
        }
    });
}

/// Counts a request in its endpoint's `in_flight` gauge while it lives (also when
/// the exchange's future is dropped: a stop).
pub(crate) struct InFlight<'a>(&'a crate::metrics::Gauge);

impl<'a> InFlight<'a> {
    pub(crate) fn of(gauge: &'a crate::metrics::Gauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Bufs {
    /// The rewritten request head, later the response head.
    head: Vec<u8>,
    /// Bytes read from the upstream.
    resp: Vec<u8>,
}

/// Connects under the connection's upstream timer (a monoio `timeout` would put a
/// 640-byte, 128-byte-aligned `Sleep` in every burst's future).
/// With TLS, the handshake follows, under `connect_timeout` of its own.
pub(crate) async fn connect(
    endpoint: &EndpointConfig,
    cluster: &ClusterRt,
    timer: &mut Timer,
) -> Result<Stream, ProxyError> {
    let (addr, timeout) = (endpoint.addr, cluster.config.connect_timeout);
    let tcp = match timer.run(timeout, TcpStream::connect_addr(addr)).await {
        Some(Ok(s)) => {
            let _ = s.set_nodelay(true);
            s
        }
        Some(Err(source)) => return Err(ProxyError::Connect { addr, source }),
        None => return Err(ProxyError::ConnectTimeout { addr }),
    };
    let Some(tls) = &cluster.config.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let Some(name) = tls.server_name(&endpoint.name) else {
        return Err(ProxyError::UpstreamTls {
            addr,
            reason: format!(
                "no server name for {:?}: set tls.server_name",
                endpoint.name
            ),
        });
    };
    // (Boxed: the handshake's state would otherwise sit in every request's future.)
    match timer
        .run(timeout, Box::pin(crate::tls::connect(tcp, tls, name)))
        .await
    {
        Some(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
        Some(Err(e)) => Err(ProxyError::UpstreamTls {
            addr,
            reason: e.to_string(),
        }),
        None => Err(ProxyError::ConnectTimeout { addr }),
    }
}

/// A failed exchange with what the retry decision needs to know.
struct ExchangeError {
    failure: Failure,
    wrote_request: bool,
    got_response: bool,
    read_client: bool,
}

impl ExchangeError {
    fn is_replayable(&self, method: Method) -> bool {
        let transport = matches!(
            self.failure.error,
            ProxyError::Upstream { .. } | ProxyError::UpstreamClosed { .. }
        );
        transport
            && !self.got_response
            && !self.read_client
            && !self.failure.response_started
            && (method.is_idempotent() || !self.wrote_request)
    }
}

/// One attempt's fixed parts, for the helpers of the exchange.
struct Exchange<'a> {
    w: &'a Worker,
    head: &'a RequestHead,
    route: &'a Route,
    cluster: &'a ClusterRt,
    sent_continue: &'a mut bool,
}

/// Progress of one exchange, for error reporting.
#[derive(Default)]
struct Progress {
    wrote_request: bool,
    got_response: bool,
    read_client: bool,
    request_consumed: bool,
    response_started: bool,
}

impl Progress {
    fn fail(&self, error: ProxyError) -> ExchangeError {
        ExchangeError {
            failure: Failure {
                error,
                response_started: self.response_started,
                request_consumed: self.request_consumed,
            },
            wrote_request: self.wrote_request,
            got_response: self.got_response,
            read_client: self.read_client,
        }
    }
}

impl Exchange<'_> {
    /// Writes the client's response head into `bufs.head`; returns whether the
    /// client connection closes after this response, and whether it is HTTP/1.0.
    /// (Inlined: it runs once per response, in the middle of the exchange.)
    #[inline(always)]
    fn client_head(
        &self,
        d: &Downstream<'_>,
        bufs: &mut Bufs,
        resp: &ResponseHead,
        p: &Progress,
    ) -> (bool, bool) {
        let client_http10 = self.head.version == Version::Http10;
        let framing = match resp.framing {
            Framing::None => ClientFraming::None {
                keep_length: self.head.method == Method::Head || resp.status == 304,
            },
            Framing::Length(n) => ClientFraming::Length(n),
            Framing::Chunked if client_http10 => ClientFraming::CloseDelimited,
            Framing::Chunked => ClientFraming::Chunked,
            Framing::CloseDelimited => ClientFraming::CloseDelimited,
        };
        // (An answer before the whole request body: the rest is never read.)
        let close = !self.head.keep_alive
            || !p.request_consumed
            || d.conn.is_closing()
            || framing == ClientFraming::CloseDelimited;
        let conn = match (close, client_http10) {
            (true, _) => ConnHeader::Close,
            (false, true) => ConnHeader::KeepAlive,
            (false, false) => ConnHeader::None,
        };
        bufs.head.clear();
        self.w.date.with(|date| {
            let rw = ResponseRewrite {
                edits: &self.route.response_headers,
                framing,
                conn,
                date,
            };
            let upstream_head = &bufs.resp[HEADROOM..];
            write_response_head(&mut bufs.head, upstream_head, resp, &d.resp_headers, &rw)
        });
        (close, client_http10)
    }

    /// Parses the upstream response head buffered after `HEADROOM` in `bufs.resp`:
    /// `Ok(None)` while incomplete; an upgrade or a malformed head is an error.
    fn parse_response_head(
        &self,
        d: &mut Downstream<'_>,
        bufs: &Bufs,
        p: &Progress,
    ) -> Result<Option<ResponseHead>, ExchangeError> {
        let is_head = self.head.method == Method::Head;
        let upstream_head = &bufs.resp[HEADROOM..];
        match parse_response(
            upstream_head,
            MAX_RESPONSE_HEAD,
            is_head,
            &mut d.resp_headers,
        ) {
            Ok(Some(r)) if r.status == 101 => {
                if self.head.websocket
                    && tunnel::upgrades_to_websocket(upstream_head, &d.resp_headers)
                {
                    Ok(Some(r))
                } else {
                    Err(p.fail(ProxyError::UnexpectedUpgrade))
                }
            }
            Ok(r) => Ok(r),
            Err(e) => Err(p.fail(ProxyError::BadResponse(e))),
        }
    }

    /// Reads the rest of a small body (see [`small_body_end`]) up to `end` in
    /// `bufs.resp`.
    async fn read_small_body(
        &self,
        d: &mut Downstream<'_>,
        up: &mut Stream,
        bufs: &mut Bufs,
        end: usize,
        p: &mut Progress,
    ) -> Result<(), ExchangeError> {
        let timeout = self.cluster.config.response_timeout;
        while bufs.resp.len() < end {
            let mut up_io = Io::new(up, &mut d.up_timer, timeout);
            match relay::read_into(&mut up_io, &mut bufs.resp).await {
                Ok(0) => return Err(p.fail(upstream_error(Fail::Closed, "read response body"))),
                Ok(_) => {}
                Err(f) => return Err(p.fail(upstream_error(f, "read response body"))),
            }
        }
        Ok(())
    }

    /// Passes an interim response (100, 103 ...) to an HTTP/1.1 client and drops it
    /// from the buffer (RFC 9110 §15.2).
    async fn forward_interim(
        &self,
        d: &mut Downstream<'_>,
        bufs: &mut Bufs,
        r: &ResponseHead,
        p: &mut Progress,
    ) -> Result<(), ExchangeError> {
        if self.head.version == Version::Http11 && !(r.status == 100 && *self.sent_continue) {
            bufs.head.clear();
            write_interim_head(&mut bufs.head, &bufs.resp[HEADROOM..], r, &d.resp_headers);
            let len = bufs.head.len();
            let timeout = d.client_timeout();
            let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, timeout);
            if let Err((f, _)) = relay::write_range(&mut client, &mut bufs.head, 0..len).await {
                return Err(p.fail(client_write_error(f)));
            }
        }
        bufs.resp.drain(HEADROOM..HEADROOM + r.head_len);
        Ok(())
    }
}

/// A Content-Length body that fits in a 16 KiB buffer behind its head is read whole
/// before anything goes to the client, so head and body leave in one write
/// (backends often send them in separate segments: nginx's sendfile does). Costs
/// no extra read: the relay would make the same ones after the first write. If
/// the upstream fails meanwhile, the client gets a clean 502 instead of a
/// truncated response. Returns where such a body ends in `bufs.resp`.
fn small_body_end(bufs: &Bufs, r: &ResponseHead) -> Option<usize> {
    let Framing::Length(n) = r.framing else {
        return None;
    };
    let start = HEADROOM + r.head_len;
    // A fixed bound, whatever the pooled buffer's capacity (16 or 64 KiB): larger
    // bodies are streamed from their first bytes.
    let room = crate::worker::BUF_SIZE.min(bufs.resp.capacity());
    usize::try_from(n)
        .ok()
        .and_then(|n| start.checked_add(n))
        .filter(|&end| end <= room)
}

pub(crate) fn upstream_error(f: Fail, op: &'static str) -> ProxyError {
    match f {
        Fail::Timeout => ProxyError::UpstreamTimeout { op },
        Fail::Closed => ProxyError::UpstreamClosed { op },
        Fail::Io(source) if crate::tls::is_tls_error(&source) => {
            ProxyError::UpstreamTlsRecord { op, source }
        }
        Fail::Io(source) => ProxyError::Upstream { op, source },
    }
}

pub(crate) fn client_write_error(f: Fail) -> ProxyError {
    let op = "write response";
    match f {
        Fail::Timeout => ProxyError::ClientTimeout { op },
        Fail::Closed => ProxyError::ClientClosed { op },
        Fail::Io(source) => ProxyError::Client { op, source },
    }
}
