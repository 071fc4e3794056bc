//! One HTTP/2 stream, proxied: its header list is written out as an HTTP/1.1 head
//! (`:authority` as Host, cookies joined, a body without Content-Length framed as
//! chunked) and parsed by the same parser as an HTTP/1.1 request, with the same
//! limits; the shared decision (`exchange::decide`) routes it; it is answered
//! directly or forwarded. To an HTTP/2 upstream, the client's header list is
//! rewritten as a list (`translate::client_fields`) and so is the upstream's
//! response; to an HTTP/1.1 upstream, the head is rewritten as text and the
//! response goes back as HTTP/2 (connection-specific fields dropped, a chunked
//! body de-chunked, its trailers sent as trailers). Metrics and the access log (`protocol`
//! `HTTP/2.0`) are the same as for HTTP/1.1.
//!
//! Flow control gives back-pressure per stream: request data is released to the
//! client only once written upstream, and response data is sent only as the
//! client's window allows (what is not sent waits in the upstream socket). A
//! stream the client resets stops its upstream work at once.

use super::server::ConnCtx;
use super::translate::{
    add_fields, client_fields, downstream_response, response_of, upstream_request, write_head,
};
use super::upload::{Event as UploadEvent, Upload};
use crate::clock::{Moment, Stamp};
use crate::config::UpstreamProtocol;
use crate::downstream::{refused, Failure};
use crate::error::ProxyError;
use crate::exchange::{self, Act};
use crate::http::answer::{Answer, ConnHeader};
use crate::http::parse::{parse_request, parse_response, Framing, HeaderSpan, Method, RequestHead};
use crate::http::rewrite::{
    proto_line, write_request_head, write_request_tail, write_response_head, ClientFraming,
    RequestFields, RequestRewrite, ResponseRewrite,
};
use crate::outcome::{timeout_kind, Flags, Outcome};
use crate::relay::{self, Body, Fail, Io, RelayError, Timer};
use crate::route::Route;
use crate::snapshot::{ListenerSettings, Snapshot};
use crate::stream::Stream;
use crate::upstream::duplex::UpWatch;
use crate::upstream::pool::UpstreamConn;
use crate::upstream::{connect, upstream_error, InFlight, MAX_RESPONSE_HEAD};
use crate::worker::Worker;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

/// Counts a stream's task as running while it lives.
struct Open<'a>(&'a ConnCtx);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let open = self.0.open.get() - 1;
        self.0.open.set(open);
        if open == 0 {
            if let Some(w) = self.0.waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// A stream's state while it is served.
struct Exchange<'a> {
    w: &'a Worker,
    cx: &'a ConnCtx,
    settings: Rc<ListenerSettings>,
    /// The request as an HTTP/1.1 head.
    rbuf: Vec<u8>,
    headers: Vec<HeaderSpan>,
    outcome: Outcome,
    log: Option<crate::access_log::Scratch>,
    timer: Timer,
}

/// Serves one stream (spawned by the connection's task).
pub async fn stream(
    w: Rc<Worker>,
    cx: Rc<ConnCtx>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let _open = Open(&cx);
    let (parts, mut body) = req.into_parts();
    let mut x = Exchange {
        w: &w,
        cx: &cx,
        settings: cx.listener.settings(),
        rbuf: w.bufs.take(),
        // (Room for the fields of most requests: growing it cost a realloc a time.)
        headers: Vec::with_capacity(16),
        outcome: Outcome::new(Stamp::now()),
        log: None,
        timer: Timer::new(),
    };
    let snapshot = w.snapshot();
    // An extended CONNECT (RFC 8441) goes upstream as a WebSocket handshake, with
    // a nonce of the proxy's.
    let ws_key = parts
        .extensions
        .get::<h2::ext::Protocol>()
        .map(|_| w.websocket_key());
    let end_stream = body.is_end_stream();
    let head = write_head(&parts, end_stream, ws_key.as_ref(), &mut x.rbuf).and_then(|()| {
        match parse_request(&x.rbuf, &x.settings.config.limits, &mut x.headers) {
            Ok(Some(head)) => Ok(head),
            Ok(None) => Err(ProxyError::BadRequest(
                crate::http::parse::ParseError::Malformed("incomplete head"),
            )),
            Err(e) => Err(e.into()),
        }
    });
    let routed = match head {
        Ok(head) => {
            x.outcome.request_bytes = head.head_len as u64;
            if w.logs_requests() {
                let id_header = &snapshot.forwarding.request_id_header;
                let fields = x.log.get_or_insert_with(Default::default);
                fields.capture(&x.rbuf, &head, &x.headers, id_header);
                fields.set_protocol("HTTP/2.0");
            }
            Some(head)
        }
        Err(e) => {
            tracing::debug!(peer = %cx.peer.ip, error = %e, "bad HTTP/2 request");
            x.outcome.failed(&e);
            if let Some(status) = e.status() {
                x.answer(&mut respond, w.errors.get(status), false).await;
            }
            None
        }
    };
    if let Some(head) = &routed {
        let local = cx.local;
        let client = exchange::Client {
            listener: cx.listener.id,
            sni: cx
                .tls
                .as_ref()
                .and_then(|t| t.sni.as_deref())
                .map(str::as_bytes),
            tls: cx.tls.is_some(),
            local_addr: &|| local,
            settings: &x.settings,
        };
        let decided = exchange::decide(
            &snapshot,
            head,
            &x.rbuf,
            &x.headers,
            &client,
            &mut x.outcome,
        );
        let is_head = head.method == Method::Head;
        if head.expect_continue && matches!(decided, Ok(Act::Forward(..))) {
            // The proxy answers the expectation itself when it forwards the
            // request (RFC 9110 §10.1.1), as for HTTP/1.1; a refusal is answered
            // before the body instead.
            let mut cont = Response::new(());
            *cont.status_mut() = http::StatusCode::CONTINUE;
            let _ = respond.send_informational(cont);
        }
        let result = match decided {
            Ok(Act::Forward(route, cluster))
                if snapshot.clusters[cluster].config.protocol != UpstreamProtocol::Http1 =>
            {
                x.forward_h2(
                    &snapshot,
                    &parts,
                    head,
                    route,
                    cluster,
                    &mut body,
                    &mut respond,
                    is_head,
                )
                .await
            }
            Ok(Act::Forward(route, cluster)) => {
                // Until the response starts, a reset by the client stops the work.
                let work = x.forward(&snapshot, head, route, cluster, &mut body);
                let reset = super::unless_reset(work, |c| respond.poll_reset(c)).await;
                match reset {
                    None => {
                        x.outcome
                            .flags
                            .set(Flags::DOWNSTREAM_CONNECTION_TERMINATION);
                        Ok(())
                    }
                    Some(Ok(up)) if up.head.status == 101 => {
                        x.tunnel(&snapshot, &mut respond, up, &mut body).await
                    }
                    // A 2xx would tell an extended CONNECT's client that its
                    // WebSocket is open (RFC 8441 §5).
                    Some(Ok(up)) if head.websocket && (200..300).contains(&up.head.status) => {
                        x.w.bufs.give(up.buf);
                        let e = "a 2xx, not a 101, to a WebSocket handshake";
                        Err(refused(
                            ProxyError::BadResponse(crate::http::parse::ParseError::Malformed(e)),
                            false,
                        ))
                    }
                    Some(Ok(up)) => x.respond(&mut respond, up, route, is_head, &mut body).await,
                    Some(Err(f)) => Err(f),
                }
            }
            // (Likewise for the route's own answer.)
            Ok(Act::Answer(answer)) if head.websocket && (200..300).contains(&answer.status()) => {
                Err(refused(ProxyError::UpgradeRefused, false))
            }
            Ok(Act::Answer(answer)) => {
                x.answer(&mut respond, &answer, is_head).await;
                Ok(())
            }
            Ok(Act::NoRoute) => Err(refused(ProxyError::NoRoute, true)),
            Err(f) => Err(f),
        };
        if let Err(f) = result {
            x.outcome.failed(&f.error);
            match f.error.status() {
                Some(status) if !f.response_started => {
                    if !f.error.is_downstream() {
                        tracing::warn!(peer = %cx.peer.ip, error = %f.error, status, "upstream failure");
                    }
                    if is_grpc(&parts.headers) {
                        x.grpc_answer(&mut respond, &f.error, status);
                    } else {
                        x.answer(&mut respond, w.errors.get(status), is_head).await;
                    }
                }
                _ => {
                    tracing::debug!(peer = %cx.peer.ip, error = %f.error, "HTTP/2 stream failed");
                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                }
            }
        }
    }
    let snap = routed.as_ref().map(|_| &*snapshot);
    let duration = crate::account::request(&w, snap, &cx.listener, &x.outcome);
    if let Some(fields) = &x.log {
        let req = fields.fields(&x.rbuf);
        let client = crate::account::LogClient {
            peer: &cx.peer,
            listener: &x.settings.log_name,
            tls: cx.tls.as_ref(),
        };
        crate::account::log(&w, snap, &x.outcome, req, &client, duration);
    }
    w.bufs.give(std::mem::take(&mut x.rbuf));
}

/// A gRPC request (RFC: gRPC over HTTP/2, `content-type: application/grpc*`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for a request the proxy itself failed with HTTP `status` (as
/// Envoy maps them): its code and message.
pub fn grpc_status(error: &ProxyError, status: u16) -> (u8, &'static str) {
    match (error, status) {
        (ProxyError::NoRoute, _) | (_, 404) => (12, "no route (UNIMPLEMENTED)"),
        (ProxyError::ResponseTimeout | ProxyError::UpstreamTimeout { .. }, _) | (_, 504) => {
            (4, "upstream timeout (DEADLINE_EXCEEDED)")
        }
        (_, 502 | 503) => (14, "upstream unavailable (UNAVAILABLE)"),
        (_, 429) => (14, "too many requests (UNAVAILABLE)"),
        (_, 401) => (16, "UNAUTHENTICATED"),
        (_, 403) => (7, "PERMISSION_DENIED"),
        (_, 413 | 431) => (8, "request too large (RESOURCE_EXHAUSTED)"),
        (_, 400) => (13, "bad request (INTERNAL)"),
        _ => (2, "UNKNOWN"),
    }
}

/// The `grpc-timeout` of a request (gRPC over HTTP/2: up to 8 digits and a unit).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        b"H" => Duration::from_secs(n.saturating_mul(3600)),
        b"M" => Duration::from_secs(n.saturating_mul(60)),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// An upstream response whose head was read: the connection, its buffer and
/// where the body starts.
struct Upstream {
    conn: UpstreamConn,
    buf: Vec<u8>,
    head: crate::http::parse::ResponseHead,
    resp_headers: Vec<HeaderSpan>,
    /// The endpoint it came from (its pool takes the connection back).
    endpoint: Rc<crate::upstream::endpoint::Endpoint>,
    /// The cluster's `response_timeout` (reads of the body).
    up_timeout: std::time::Duration,
    /// The request body, which may still go up while the response comes back
    /// (unless it is done, the connection is out of step afterwards).
    upload: Upload,
    /// The wait for the upstream's socket while the body goes up.
    watch: UpWatch,
}

impl Exchange<'_> {
    /// Fails a gRPC request the way gRPC clients understand: HTTP 200 with the
    /// status in a trailers-only response.
    fn grpc_answer(&mut self, respond: &mut SendResponse<Bytes>, error: &ProxyError, status: u16) {
        let (code, message) = grpc_status(error, status);
        let mut r = Response::new(());
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(code as u16));
        h.insert("grpc-message", HeaderValue::from_static(message));
        if respond.send_response(r, true).is_ok() {
            self.outcome.status = 200;
        }
    }

    /// Sends a pre-rendered answer (its body unless `is_head`).
    async fn answer(&mut self, respond: &mut SendResponse<Bytes>, answer: &Answer, is_head: bool) {
        let mut out = self.w.bufs.take();
        self.w
            .date
            .with(|date| answer.render_into(&mut out, date, ConnHeader::None, true));
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |i| i + 4);
        let response = response_of(&out[..split], answer.status());
        let body = Bytes::copy_from_slice(&out[split..]);
        self.w.bufs.give(out);
        let end = is_head || body.is_empty();
        match respond.send_response(response, end) {
            Ok(mut send) => {
                self.outcome.status = answer.status();
                if !end {
                    let n = body.len() as u64;
                    if self.send_all(&mut send, body, true).await.is_ok() {
                        self.outcome.response_bytes += n;
                    }
                }
            }
            Err(_) => self
                .outcome
                .flags
                .set(Flags::DOWNSTREAM_CONNECTION_TERMINATION),
        }
    }

    /// Sends `data` on the stream as the client's window allows (`end`: and ends
    /// the stream).
    async fn send_all(
        &mut self,
        send: &mut SendStream<Bytes>,
        data: Bytes,
        end: bool,
    ) -> Result<(), ProxyError> {
        let timeout = self.settings.config.idle_timeout;
        let op = "write response";
        super::send_data(send, data, end, &mut self.timer, timeout)
            .await
            .map_err(|f| match f {
                super::SendFail::Closed => ProxyError::ClientClosed { op },
                super::SendFail::Timeout => ProxyError::ClientTimeout { op },
            })
    }

    /// The request head for the upstream: rewritten as for an HTTP/1.1 client
    /// (X-Forwarded-*, request id, the route's edits).
    fn upstream_head(
        &mut self,
        snapshot: &Snapshot,
        head: &RequestHead,
        route: &Route,
        cluster: &crate::snapshot::ClusterRt,
    ) -> Vec<u8> {
        let w = self.w;
        let mut hbuf = w.bufs.take();
        let rewrite = rewrite_of(self.cx, &self.settings, snapshot, route, cluster);
        let log = &mut self.log;
        write_request_head(
            &mut hbuf,
            &self.rbuf,
            head,
            &self.headers,
            &rewrite,
            |out| {
                let at = out.len();
                w.write_request_id(out);
                if let (Some(fields), Ok(id)) = (log, <&[u8; 36]>::try_from(&out[at..])) {
                    fields.set_request_id(id);
                }
            },
        );
        hbuf
    }

    /// The fields the proxy adds to the request (X-Forwarded-*, request id, the
    /// route's), written into `tail` as lines, for `fields` noted from the
    /// client's.
    fn request_tail(
        &mut self,
        head: &RequestHead,
        rewrite: &RequestRewrite,
        fields: &RequestFields,
        tail: &mut Vec<u8>,
    ) {
        let (w, log) = (self.w, &mut self.log);
        write_request_tail(
            tail,
            &self.rbuf,
            head,
            &self.headers,
            rewrite,
            fields,
            |out| {
                let at = out.len();
                w.write_request_id(out);
                if let (Some(fields), Ok(id)) = (log, <&[u8; 36]>::try_from(&out[at..])) {
                    fields.set_request_id(id);
                }
            },
        );
    }

    /// Forwards the request to `cluster` (HTTP/1.1) up to the upstream's response
    /// head.
    async fn forward(
        &mut self,
        snapshot: &Snapshot,
        head: &RequestHead,
        route: &Route,
        cluster_index: usize,
        body: &mut RecvStream,
    ) -> Result<Upstream, Failure> {
        let cluster = &snapshot.clusters[cluster_index];
        let mut hbuf = self.upstream_head(snapshot, head, route, cluster);
        let result = self.attempts(head, cluster, &mut hbuf, body).await;
        self.w.bufs.give(hbuf);
        result
    }

    async fn attempts(
        &mut self,
        head: &RequestHead,
        cluster: &crate::snapshot::ClusterRt,
        hbuf: &mut Vec<u8>,
        body: &mut RecvStream,
    ) -> Result<Upstream, Failure> {
        let mut tried: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
        let mut last_error = None;
        let mut fresh_for = None;
        let fail = |error, consumed| Failure {
            error,
            response_started: false,
            request_consumed: consumed,
        };
        loop {
            let (ep, fresh) = match fresh_for.take() {
                Some(ep) => (ep, true),
                None => match cluster.balancer.pick(|i| !tried.contains(&i)) {
                    Some(ep) => (ep, false),
                    None => {
                        return Err(fail(
                            last_error.expect("a cluster has at least one endpoint"),
                            false,
                        ))
                    }
                },
            };
            let endpoint = &cluster.config.endpoints[ep];
            let state = &cluster.endpoints[ep];
            self.outcome.attempts = self.outcome.attempts.saturating_add(1);
            self.outcome.endpoint = Some(ep as u32);
            let pooled = match fresh {
                true => None,
                false => state
                    .pool
                    .checkout(Moment::now(), !head.method.is_idempotent()),
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(c) => c,
                None => match connect(endpoint, cluster, &mut self.timer).await {
                    Ok(s) => UpstreamConn::new(s, state.stats.clone()),
                    Err(e) => {
                        tracing::debug!(endpoint = %endpoint.addr, error = %e, "connect failed");
                        state.stats.connect_failures.inc();
                        self.outcome.flags.set(Flags::of(&e));
                        if let ProxyError::ConnectTimeout { .. } = e {
                            cluster.stats.timeouts[crate::metrics::TimeoutKind::Connect as usize]
                                .inc();
                        }
                        tried.push(ep);
                        last_error = Some(e);
                        continue;
                    }
                },
            };
            let _in_flight = InFlight::of(&state.stats.in_flight);
            let up_timeout = cluster.config.response_timeout;
            let len = hbuf.len();
            let mut io = Io::new(&mut up.stream, &mut self.timer, up_timeout);
            let sent = relay::write_range(&mut io, hbuf, 0..len).await;
            let sent_at = Stamp::now();
            // The body goes up while the response may come back (an upstream that
            // answers with an error before the body ends stops the upload, as for
            // HTTP/1.1 clients; its connection is not pooled).
            let mut upload = Upload::new(head, self.settings.config.limits.max_body_bytes);
            let mut watch = UpWatch::new();
            let got = match sent {
                Err((f, _)) => Err((upstream_error(f, "write request head"), false)),
                Ok(()) => {
                    let got = self.response_head(
                        head,
                        &mut up,
                        body,
                        &mut upload,
                        &mut watch,
                        up_timeout,
                    );
                    got.await
                }
            };
            match got {
                Ok((buf, resp, resp_headers)) => {
                    let sent_at = upload.done_at.unwrap_or(sent_at);
                    self.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
                    self.outcome.upstream_status = resp.status;
                    return Ok(Upstream {
                        conn: up,
                        buf,
                        head: resp,
                        resp_headers,
                        endpoint: Rc::clone(state),
                        up_timeout,
                        upload,
                        watch,
                    });
                }
                // A stale pooled connection, before any response byte, for a
                // request nothing of whose body was taken from the client: once
                // more on a fresh one.
                Err((e, false))
                    if reused
                        && upload.untouched()
                        && matches!(
                            e,
                            ProxyError::Upstream { .. } | ProxyError::UpstreamClosed { .. }
                        ) =>
                {
                    tracing::debug!(endpoint = %endpoint.addr, error = %e, "stale pooled connection, retrying on a fresh one");
                    cluster.stats.retries.inc();
                    self.outcome.flags.set(Flags::RETRIED);
                    fresh_for = Some(ep);
                }
                Err((e, _)) => {
                    self.outcome.request_bytes += upload.sent;
                    if let Some(kind) = timeout_kind(&e) {
                        cluster.stats.timeouts[kind as usize].inc();
                    }
                    return Err(fail(e, true));
                }
            }
        }
    }

    /// Reads the upstream's response head, after any interim responses (not passed
    /// on), while the request body goes up (`upload`): the body's pieces are
    /// written as they come until the response starts (an error response stops
    /// the upload; another one lets it go on while the response is relayed). The
    /// error says whether any response byte came.
    #[allow(clippy::too_many_arguments)]
    async fn response_head(
        &mut self,
        head: &RequestHead,
        up: &mut UpstreamConn,
        body: &mut RecvStream,
        upload: &mut Upload,
        watch: &mut UpWatch,
        up_timeout: std::time::Duration,
    ) -> Result<(Vec<u8>, crate::http::parse::ResponseHead, Vec<HeaderSpan>), (ProxyError, bool)>
    {
        let mut buf = self.w.bufs.take();
        let mut resp_headers = Vec::with_capacity(16);
        let is_head = head.method == Method::Head;
        let mut deadline: Option<Moment> = None;
        let mut got = false;
        loop {
            if !buf.is_empty() {
                match parse_response(&buf, MAX_RESPONSE_HEAD, is_head, &mut resp_headers) {
                    Ok(None) => {}
                    Ok(Some(r)) if r.status == 101 => {
                        if head.websocket && self.accepts_websocket(&buf, &resp_headers) {
                            return Ok((buf, r, resp_headers));
                        }
                        self.w.bufs.give(buf);
                        return Err((ProxyError::UnexpectedUpgrade, true));
                    }
                    Ok(Some(r)) if r.status < 200 => {
                        buf.drain(..r.head_len);
                        continue;
                    }
                    Ok(Some(r)) => {
                        if r.status >= 400 {
                            // (An early 401, 413: the rest of the body is not sent.)
                            upload.stop();
                        }
                        return Ok((buf, r, resp_headers));
                    }
                    Err(e) => {
                        self.w.bufs.give(buf);
                        return Err((ProxyError::BadResponse(e), true));
                    }
                }
            }
            if upload.is_going() {
                // The next piece of the body, or the response, whichever comes
                // first (the wait is the client's: the upstream is not expected
                // to say anything yet).
                watch.arm(&mut up.stream);
                let timeout = self.settings.config.idle_timeout;
                let next = self.timer.run(timeout, upload.next(body, watch)).await;
                let mut io = Io::new(&mut up.stream, &mut self.timer, up_timeout);
                let e = match next {
                    None => ProxyError::ClientTimeout {
                        op: "read request body",
                    },
                    Some(UploadEvent::Piece(Err(e))) => e,
                    Some(UploadEvent::Piece(Ok(()))) => {
                        let had = buf.len();
                        let written = upload.write(&mut io, body, Some((watch, &mut buf)));
                        let written = written.await;
                        got |= buf.len() > had;
                        match written {
                            Ok(()) => continue,
                            Err(e) => e,
                        }
                    }
                    Some(UploadEvent::Upstream) => {
                        watch.consumed();
                        match relay::read_ready(&mut io, &mut buf).await {
                            Ok(None) => continue,
                            Ok(Some(0)) | Err(Fail::Closed) => ProxyError::UpstreamClosed {
                                op: "read response head",
                            },
                            Ok(Some(_)) => {
                                got = true;
                                continue;
                            }
                            Err(Fail::Timeout) => ProxyError::ResponseTimeout,
                            Err(f) => upstream_error(f, "read response head"),
                        }
                    }
                };
                self.w.bufs.give(buf);
                return Err((e, got));
            }
            let left = match deadline {
                None => up_timeout,
                Some(at) => at.saturating_duration_since(Moment::now()),
            };
            let mut io = Io::new(&mut up.stream, &mut self.timer, left);
            let read = relay::read_into(&mut io, &mut buf).await;
            let e = match read {
                Ok(0) | Err(Fail::Closed) => ProxyError::UpstreamClosed {
                    op: "read response head",
                },
                Ok(_) => {
                    got = true;
                    deadline = deadline.or(self.timer.last_deadline());
                    continue;
                }
                Err(Fail::Timeout) => ProxyError::ResponseTimeout,
                Err(f) => upstream_error(f, "read response head"),
            };
            self.w.bufs.give(buf);
            return Err((e, got));
        }
    }

    /// Whether a `101` accepts the WebSocket handshake this stream sent: it
    /// upgrades to `websocket` with the `Sec-WebSocket-Accept` of the key sent (RFC
    /// 6455 §4.1: otherwise the client fails the connection).
    fn accepts_websocket(&self, resp: &[u8], resp_headers: &[HeaderSpan]) -> bool {
        use crate::upstream::tunnel::{upgrades_to_websocket, websocket_accept};
        let field = |buf: &'_ [u8], headers: &[HeaderSpan], name: &[u8]| {
            headers
                .iter()
                .find(|h| h.name.get(buf).eq_ignore_ascii_case(name))
                .map(|h| h.value.get(buf).to_vec())
        };
        let key = field(&self.rbuf, &self.headers, b"sec-websocket-key");
        let accept = field(resp, resp_headers, b"sec-websocket-accept");
        upgrades_to_websocket(resp, resp_headers)
            && matches!((key, accept), (Some(k), Some(a)) if a == websocket_accept(&k))
    }

    /// An accepted WebSocket handshake: the stream becomes a tunnel to the
    /// upstream connection (`super::tunnel`), which is not pooled again.
    async fn tunnel(
        &mut self,
        snapshot: &Snapshot,
        respond: &mut SendResponse<Bytes>,
        up: Upstream,
        body: &mut RecvStream,
    ) -> Result<(), Failure> {
        let Upstream {
            mut conn,
            buf,
            head,
            resp_headers,
            ..
        } = up;
        let open = self
            .outcome
            .route
            .and_then(|r| snapshot.route_stats.get(r as usize))
            .map(|s| &s.websockets);
        let accepted = super::tunnel::Accepted {
            up: &mut conn.stream,
            buf,
            resp: &head,
            resp_headers: &resp_headers,
        };
        let idle = self.settings.config.idle_timeout;
        super::tunnel::websocket(
            self.w,
            respond,
            body,
            accepted,
            idle,
            &mut self.outcome,
            open,
        )
        .await
        .map_err(|error| Failure {
            error,
            response_started: true,
            request_consumed: true,
        })
    }

    /// Sends the upstream's response to the client: its head, then its body as DATA
    /// frames (de-chunked), then its trailers; returns the upstream connection to
    /// its pool when it is in sync.
    async fn respond(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        up: Upstream,
        route: &Route,
        is_head: bool,
        request_body: &mut RecvStream,
    ) -> Result<(), Failure> {
        let Upstream {
            conn: mut up_conn,
            mut buf,
            head: resp,
            resp_headers,
            endpoint,
            up_timeout,
            mut upload,
            mut watch,
        } = up;
        let started = |error| Failure {
            error,
            response_started: true,
            request_consumed: true,
        };
        let framing = match resp.framing {
            Framing::None => ClientFraming::None {
                keep_length: is_head || resp.status == 304,
            },
            Framing::Length(n) => ClientFraming::Length(n),
            Framing::Chunked | Framing::CloseDelimited => {
                ClientFraming::None { keep_length: false }
            }
        };
        let mut out = self.w.bufs.take();
        self.w.date.with(|date| {
            let rw = ResponseRewrite {
                edits: &route.response_headers,
                framing,
                conn: ConnHeader::None,
                date,
            };
            write_response_head(&mut out, &buf, &resp, &resp_headers, &rw)
        });
        let response = response_of(&out, resp.status);
        self.outcome.response_bytes = out.len() as u64;
        self.w.bufs.give(out);
        let bodiless = matches!(resp.framing, Framing::None | Framing::Length(0));
        let mut send = match respond.send_response(response, bodiless) {
            Ok(send) => send,
            Err(_) => {
                self.w.bufs.give(buf);
                return Err(started(ProxyError::ClientClosed {
                    op: "write response",
                }));
            }
        };
        self.outcome.status = resp.status;
        let mut pos = resp.head_len;
        let mut in_sync = true;
        let result = if bodiless {
            Ok(())
        } else {
            let mut body = Body::new(resp.framing, None, MAX_RESPONSE_HEAD, true);
            loop {
                let range = match body.consume(&mut buf, &mut pos) {
                    Ok(r) => r,
                    Err(e) => break Err(relay_error(e)),
                };
                let done = body.is_done();
                if !range.is_empty() {
                    let data = Bytes::copy_from_slice(&buf[range.clone()]);
                    let end = done && !body.has_trailer_section();
                    if let Err(e) = self.send_all(&mut send, data, end).await {
                        break Err(e);
                    }
                    self.outcome.response_bytes += range.len() as u64;
                    if end {
                        break Ok(());
                    }
                }
                if done {
                    match body.take_trailer_section() {
                        Some(section) => {
                            let mut map = HeaderMap::new();
                            add_fields(&mut map, &section);
                            let _ = send.send_trailers(map);
                        }
                        None => {
                            let _ = send.send_data(Bytes::new(), true);
                        }
                    }
                    break Ok(());
                }
                buf.clear();
                pos = 0;
                let read = match upload.is_going() {
                    false => {
                        let mut io = Io::new(&mut up_conn.stream, &mut self.timer, up_timeout);
                        let read = relay::read_into(&mut io, &mut buf);
                        super::unless_reset(read, |c| send.poll_reset(c)).await
                    }
                    true => {
                        let up = Uploading {
                            up: &mut up_conn.stream,
                            body: &mut *request_body,
                            upload: &mut upload,
                            watch: &mut watch,
                        };
                        match self
                            .read_uploading(up, &mut buf, &mut send, up_timeout)
                            .await
                        {
                            Ok(read) => read,
                            Err(e) => break Err(e),
                        }
                    }
                };
                match read {
                    None => {
                        in_sync = false;
                        break Err(ProxyError::ClientClosed {
                            op: "write response",
                        });
                    }
                    Some(Ok(0)) if matches!(resp.framing, Framing::CloseDelimited) => {
                        in_sync = false;
                        let _ = send.send_data(Bytes::new(), true);
                        break Ok(());
                    }
                    Some(Ok(0)) => break Err(upstream_error(Fail::Closed, "read response body")),
                    Some(Ok(_)) => {}
                    Some(Err(f)) => break Err(upstream_error(f, "read response body")),
                }
            }
        };
        self.outcome.request_bytes += upload.sent;
        let complete = upload.is_done();
        if result.is_ok() && in_sync && complete && resp.keep_alive && pos == buf.len() {
            endpoint.pool.checkin(up_conn, Moment::now());
        }
        self.w.bufs.give(buf);
        result.map_err(started)
    }
}

impl Exchange<'_> {
    /// Forwards the stream to an HTTP/2 cluster and relays the response, the two
    /// bodies at once (full duplex: gRPC streams both ways). The request goes on a
    /// pooled connection with room, else a new one; a connection that went away
    /// before it took the stream is replaced by a fresh one, and an endpoint that
    /// refuses connections by the next; a stream the upstream did not process is
    /// sent again.
    #[allow(clippy::too_many_arguments)]
    async fn forward_h2(
        &mut self,
        snapshot: &Snapshot,
        parts: &http::request::Parts,
        head: &RequestHead,
        route: &Route,
        cluster_index: usize,
        body: &mut RecvStream,
        respond: &mut SendResponse<Bytes>,
        is_head: bool,
    ) -> Result<(), Failure> {
        let cluster = &snapshot.clusters[cluster_index];
        let scheme = match cluster.config.protocol {
            UpstreamProtocol::H2 => "https",
            _ => "http",
        };
        if head.connection_names_headers {
            // (HTTP/2 has no Connection field; the h2 crate refuses one. Kept as
            // the general path: through the HTTP/1.1 rewrite and back.)
            let hbuf = self.upstream_head(snapshot, head, route, cluster);
            let remake = || super::translate::request_of(&hbuf, scheme);
            let result = self
                .attempts_h2(cluster, head, route, body, respond, is_head, &remake)
                .await;
            self.w.bufs.give(hbuf);
            return result;
        }
        // The client's header list, rewritten as a list: no HTTP/1.1 head between.
        let settings = self.settings.clone();
        let rewrite = rewrite_of(self.cx, &settings, snapshot, route, cluster);
        let mut fields = RequestFields::new(head, &rewrite);
        let first = client_fields(&parts.headers, head, &rewrite, &mut fields);
        let mut tail = self.w.bufs.take();
        self.request_tail(head, &rewrite, &fields, &mut tail);
        let host = rewrite.host(head, &self.rbuf);
        let target = super::translate::authority_of(parts, host)
            .and_then(|a| Ok((a, super::translate::path_of(parts, head, &self.rbuf)?)));
        let (authority, path) = match target {
            Ok(target) => target,
            Err(e) => {
                self.w.bufs.give(tail);
                return Err(refused(e, false));
            }
        };
        let id = snapshot.forwarding.request_id_header.as_bytes();
        let first = std::cell::Cell::new(Some(first));
        let remake = || {
            let fields = first.take().unwrap_or_else(|| {
                let mut f = RequestFields::new(head, &rewrite);
                client_fields(&parts.headers, head, &rewrite, &mut f)
            });
            Ok(upstream_request(
                parts,
                fields,
                &tail,
                id,
                authority.clone(),
                path.clone(),
                scheme,
            ))
        };
        let result = self
            .attempts_h2(cluster, head, route, body, respond, is_head, &remake)
            .await;
        self.w.bufs.give(tail);
        result
    }

    /// The attempts of [`Self::forward_h2`]: requests made by `remake` from the
    /// rewritten head.
    #[allow(clippy::too_many_arguments)]
    async fn attempts_h2(
        &mut self,
        cluster: &crate::snapshot::ClusterRt,
        head: &RequestHead,
        route: &Route,
        body: &mut RecvStream,
        respond: &mut SendResponse<Bytes>,
        is_head: bool,
        remake: &dyn Fn() -> Result<http::Request<()>, ProxyError>,
    ) -> Result<(), Failure> {
        let req = remake().map_err(|e| refused(e, false))?;
        let grpc_timeout = grpc_timeout(req.headers());
        let end_stream = !head.has_body();
        // A gRPC call's deadline bounds the whole exchange (retries included).
        let deadline = grpc_timeout.map(|t| Moment::now() + t);
        let mut retries = 0;
        let mut first = Some(req);
        loop {
            let req = match first.take() {
                Some(req) => req,
                None => remake().map_err(|e| refused(e, false))?,
            };
            let (ep, opened) = super::upstream::open_any(
                cluster,
                req,
                remake,
                end_stream,
                &mut self.timer,
                &mut self.outcome,
            )
            .await
            .map_err(|e| refused(e, false))?;
            let state = &cluster.endpoints[ep];
            let _in_flight = InFlight::of(&state.stats.in_flight);
            let tried = self
                .exchange_h2(
                    opened, cluster, route, body, respond, is_head, end_stream, deadline,
                )
                .await;
            let (error, started, took_body) = match tried {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // A stream the upstream refused (REFUSED_STREAM) or left above its
            // GOAWAY's last stream id was not processed (RFC 9113 §8.7): it is sent
            // again while nothing of the request or response has moved.
            if !started
                && !took_body
                && retries < super::UNPROCESSED_RETRIES
                && super::unprocessed(&error)
            {
                tracing::debug!(error = %error, "upstream did not process the stream, retrying");
                retries += 1;
                cluster.stats.retries.inc();
                self.outcome.flags.set(Flags::RETRIED);
                continue;
            }
            if let Some(kind) = timeout_kind(&error) {
                cluster.stats.timeouts[kind as usize].inc();
            }
            return Err(Failure {
                error,
                response_started: started,
                request_consumed: true,
            });
        }
    }

    /// One attempt of [`Self::forward_h2`] on an opened stream: the request body
    /// pumped beside the response. The error says whether the response started
    /// and whether any of the request body was taken from the client.
    #[allow(clippy::too_many_arguments)]
    async fn exchange_h2(
        &mut self,
        opened: super::upstream::Opened,
        cluster: &crate::snapshot::ClusterRt,
        route: &Route,
        body: &mut RecvStream,
        respond: &mut SendResponse<Bytes>,
        is_head: bool,
        end_stream: bool,
        deadline: Option<Moment>,
    ) -> Result<(), (ProxyError, bool, bool)> {
        let super::upstream::Opened {
            response,
            send: mut up_send,
            lease: _lease,
        } = opened;
        let sent_at = Stamp::now();
        let up_timeout = cluster.config.response_timeout;
        let client_timeout = self.settings.config.idle_timeout;
        let limit = self.settings.config.limits.max_body_bytes;

        // The request body, beside the response.
        let mut pump_timer = Timer::new();
        let took = std::cell::Cell::new(false);
        let mut pump = (!end_stream).then(|| {
            Box::pin(pump_request(
                body,
                &mut up_send,
                &mut pump_timer,
                client_timeout,
                limit,
                &took,
            ))
        });
        let mut request_bytes = 0;
        let mut pumped = false;
        let result = {
            let mut answer =
                pin!(self
                    .answer_h2(respond, response, route, is_head, up_timeout, deadline, sent_at));
            poll_fn(|c| {
                if let Some(p) = pump.as_mut() {
                    if let Poll::Ready(r) = p.as_mut().poll(c) {
                        pump = None;
                        pumped = true;
                        match r {
                            Ok(n) => request_bytes = n,
                            // The upstream stopped taking the body (it may have
                            // answered early: a gRPC server ending a call): the
                            // response goes on.
                            Err((e, n)) if !e.is_downstream() => {
                                tracing::debug!(error = %e, "request body not taken whole");
                                request_bytes = n;
                            }
                            // (Whether the response started is known below.)
                            Err((e, n)) => {
                                request_bytes = n;
                                return Poll::Ready(Err((e, None)));
                            }
                        }
                    }
                }
                answer
                    .as_mut()
                    .poll(c)
                    .map_err(|(e, started)| (e, Some(started)))
            })
            .await
        };
        drop(pump);
        self.outcome.request_bytes += request_bytes;
        result.map_err(|(error, started)| {
            let started = started.unwrap_or(self.outcome.status != 0);
            up_send.send_reset(h2::Reason::CANCEL);
            (error, started, pumped || took.get())
        })
    }
}

impl Exchange<'_> {
    /// The response from an HTTP/2 upstream to the client: its head (rewritten as
    /// an HTTP/1.1 response head would be), DATA as the client's window allows,
    /// trailers. The error says whether the response had started.
    #[allow(clippy::too_many_arguments)]
    async fn answer_h2(
        &mut self,
        respond: &mut SendResponse<Bytes>,
        response: h2::client::ResponseFuture,
        route: &Route,
        is_head: bool,
        up_timeout: std::time::Duration,
        deadline: Option<Moment>,
        sent_at: Stamp,
    ) -> Result<(), (ProxyError, bool)> {
        // Each wait: the cluster's timeout, within the call's deadline.
        let wait = || match deadline {
            Some(at) => up_timeout.min(at.saturating_duration_since(Moment::now())),
            None => up_timeout,
        };
        let mut response = pin!(response);
        let got = self
            .timer
            .run(
                wait(),
                super::unless_reset(response.as_mut(), |c| respond.poll_reset(c)),
            )
            .await;
        let resp = match got {
            Some(Some(Ok(resp))) => resp,
            Some(Some(Err(e))) => {
                let op = "read response head";
                return Err((
                    ProxyError::Upstream {
                        op,
                        source: std::io::Error::other(e),
                    },
                    false,
                ));
            }
            Some(None) => {
                return Err((
                    ProxyError::ClientClosed {
                        op: "read response head",
                    },
                    false,
                ))
            }
            None => return Err((ProxyError::ResponseTimeout, false)),
        };
        self.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
        let (parts, mut up_body) = resp.into_parts();
        self.outcome.upstream_status = parts.status.as_u16();
        // The head by the rules of the HTTP/1.1 response rewrite (the route's
        // edits, Date), as a list.
        let status = parts.status.as_u16();
        let edits = &route.response_headers;
        let (response, head_len) = self
            .w
            .date
            .with(|date| downstream_response(parts, is_head, edits, date))
            .map_err(|e| (e, false))?;
        self.outcome.response_bytes = head_len;
        let end = is_head || up_body.is_end_stream();
        let mut client = respond.send_response(response, end).map_err(|_| {
            (
                ProxyError::ClientClosed {
                    op: "write response",
                },
                false,
            )
        })?;
        self.outcome.status = status;
        if end {
            return Ok(());
        }
        let started = |e| (e, true);
        loop {
            let next = self
                .timer
                .run(
                    wait(),
                    super::unless_reset(poll_fn(|c| up_body.poll_data(c)), |c| {
                        client.poll_reset(c)
                    }),
                )
                .await;
            match next {
                Some(Some(Some(Ok(data)))) => {
                    let n = data.len();
                    self.send_all(&mut client, data, false)
                        .await
                        .map_err(started)?;
                    self.outcome.response_bytes += n as u64;
                    let _ = up_body.flow_control().release_capacity(n);
                }
                Some(Some(None)) => break,
                Some(Some(Some(Err(e)))) => {
                    let op = "read response body";
                    return Err(started(ProxyError::Upstream {
                        op,
                        source: std::io::Error::other(e),
                    }));
                }
                Some(None) => {
                    return Err(started(ProxyError::ClientClosed {
                        op: "write response",
                    }))
                }
                None => {
                    return Err(started(ProxyError::UpstreamTimeout {
                        op: "read response body",
                    }))
                }
            }
        }
        let trailers = self.timer.run(wait(), up_body.trailers()).await;
        match trailers {
            Some(Ok(Some(map))) => {
                let _ = client.send_trailers(map);
            }
            Some(Ok(None)) => {
                let _ = client.send_data(Bytes::new(), true);
            }
            Some(Err(e)) => {
                let op = "read response trailers";
                return Err(started(ProxyError::Upstream {
                    op,
                    source: std::io::Error::other(e),
                }));
            }
            None => {
                return Err(started(ProxyError::UpstreamTimeout {
                    op: "read response body",
                }))
            }
        }
        Ok(())
    }
}

/// An HTTP/1.1 upstream whose request body still goes up while its response is
/// relayed.
struct Uploading<'a> {
    up: &'a mut Stream,
    body: &'a mut RecvStream,
    upload: &'a mut Upload,
    watch: &'a mut UpWatch,
}

impl Exchange<'_> {
    /// The next read of the response (as `relay::read_into` under
    /// `unless_reset`: `None` when the client reset the stream), the body's pieces
    /// written upstream meanwhile as they come. An error of the client's body
    /// (too large, a reset) ends the exchange.
    async fn read_uploading(
        &mut self,
        u: Uploading<'_>,
        buf: &mut Vec<u8>,
        send: &mut SendStream<Bytes>,
        up_timeout: std::time::Duration,
    ) -> Result<Option<Result<usize, Fail>>, ProxyError> {
        loop {
            let mut io = Io::new(u.up, &mut self.timer, up_timeout);
            if !u.upload.is_going() {
                let read = relay::read_into(&mut io, buf);
                return Ok(super::unless_reset(read, |c| send.poll_reset(c)).await);
            }
            u.watch.arm(io.stream);
            let next = u.upload.next(u.body, u.watch);
            let next = super::unless_reset(next, |c| send.poll_reset(c));
            let event = match io.timer.run(up_timeout, next).await {
                None => return Ok(Some(Err(Fail::Timeout))),
                Some(None) => return Ok(None),
                Some(Some(event)) => event,
            };
            match event {
                UploadEvent::Piece(Err(e)) => return Err(e),
                // (A failed write stops the upload: the response goes on.)
                UploadEvent::Piece(Ok(())) => {
                    let write = u.upload.write(&mut io, u.body, None);
                    match super::unless_reset(write, |c| send.poll_reset(c)).await {
                        None => return Ok(None),
                        Some(written) => written?,
                    }
                }
                UploadEvent::Upstream => {
                    u.watch.consumed();
                    match relay::read_ready(&mut io, buf).await {
                        Ok(None) => {}
                        Ok(Some(n)) => return Ok(Some(Ok(n))),
                        Err(f) => return Ok(Some(Err(f))),
                    }
                }
            }
        }
    }
}

/// Streams a request body from the client's stream to the upstream's, releasing
/// the client's window as data is passed on (as the upstream's window allows);
/// then its trailers. Returns the body's length (also with an error); `took` is
/// set once anything of the body was taken from the client.
///
/// A wait for the client's next data has no timeout of its own: the exchange is
/// bounded by the response's waits (a long-lived gRPC stream may be quiet one way
/// while the other flows). A wait for the upstream's window has `client_timeout`.
async fn pump_request(
    body: &mut RecvStream,
    up: &mut SendStream<Bytes>,
    timer: &mut Timer,
    client_timeout: std::time::Duration,
    limit: Option<u64>,
    took: &std::cell::Cell<bool>,
) -> Result<u64, (ProxyError, u64)> {
    let mut total = 0u64;
    let r = pump_body(body, up, timer, client_timeout, limit, &mut total, took).await;
    r.map(|()| total).map_err(|e| (e, total))
}

async fn pump_body(
    body: &mut RecvStream,
    up: &mut SendStream<Bytes>,
    timer: &mut Timer,
    client_timeout: std::time::Duration,
    limit: Option<u64>,
    total: &mut u64,
    took: &std::cell::Cell<bool>,
) -> Result<(), ProxyError> {
    let client_closed = || ProxyError::ClientClosed {
        op: "read request body",
    };
    let up_closed = || ProxyError::UpstreamClosed {
        op: "write request body",
    };
    while let Some(data) = body.data().await {
        took.set(true);
        let data = data.map_err(|_| client_closed())?;
        let n = data.len();
        *total += n as u64;
        if limit.is_some_and(|l| *total > l) {
            return Err(ProxyError::BodyTooLarge);
        }
        super::send_data(up, data, false, timer, client_timeout)
            .await
            .map_err(upstream_send_error)?;
        let _ = body.flow_control().release_capacity(n);
    }
    took.set(true);
    let sent = match body.trailers().await.map_err(|_| client_closed())? {
        Some(map) => up.send_trailers(map),
        None => up.send_data(Bytes::new(), true),
    };
    sent.map_err(|_| up_closed())
}

/// A failed send of request data to an upstream stream.
pub fn upstream_send_error(f: super::SendFail) -> ProxyError {
    let op = "write request body";
    match f {
        super::SendFail::Closed => ProxyError::UpstreamClosed { op },
        super::SendFail::Timeout => ProxyError::UpstreamTimeout { op },
    }
}

fn relay_error(e: RelayError) -> ProxyError {
    match e {
        RelayError::Read(f) => upstream_error(f, "read response body"),
        RelayError::Framing(b) => ProxyError::BadResponseBody(b),
        RelayError::Write(_) | RelayError::TooLarge => ProxyError::ClientClosed {
            op: "write response",
        },
    }
}

/// The request rewrite of a stream forwarded on `route` to `cluster`.
fn rewrite_of<'a>(
    cx: &'a ConnCtx,
    settings: &'a ListenerSettings,
    snapshot: &'a Snapshot,
    route: &'a Route,
    cluster: &'a crate::snapshot::ClusterRt,
) -> RequestRewrite<'a> {
    let tls = cx.tls.as_ref();
    RequestRewrite {
        peer: &cx.peer,
        port_line: &settings.port_line,
        proto_line: proto_line(tls.is_some()),
        client_cert: match tls {
            _ if !settings.forward_client_cert => None,
            Some(t) => Some(&t.client_cert_line),
            None => Some(b""),
        },
        forwarding: &snapshot.forwarding,
        edits: &route.request_headers,
        host_rewrite: route.host_rewrite.as_deref(),
        fallback_host: cluster.config.endpoints[0].name.as_bytes(),
    }
}
