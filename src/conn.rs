//! THE HOT PATH: one downstream HTTP/1.1 connection, read top to bottom.
//!
//! 1. read and parse the request head (`http::parse`, in place in `rbuf`);
//! 2. route it (`route`), enforcing the listener's limits;
//! 3. answer directly, or `upstream::forward` it;
//! 4. decide keep-alive, then loop for the next (possibly pipelined) request.
//!
//! Any error before a response byte was written becomes the pre-rendered answer for
//! `ProxyError::status()`; after that, the connection is closed.

use crate::error::ProxyError;
use crate::http::answer::{Answer, ConnHeader};
use crate::http::parse::{parse_request, Framing, HeaderSpan, Method, RequestHead, Version};
use crate::http::rewrite::Peer;
use crate::relay::{self, Body, Fail, Io, RelayError, Timer};
use crate::route::{Action, RequestView};
use crate::upstream;
use crate::worker::Worker;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Initial read buffer of a connection; grows up to the head limit when needed.
const READ_BUF: usize = 16 * 1024;
/// Request bodies up to this size are read and discarded before a direct answer,
/// so the connection can stay open; larger ones close it instead.
const MAX_DISCARD: u64 = 64 * 1024;

/// The downstream connection's state, shared with `upstream::forward`.
pub struct Downstream {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The peer's address as X-Forwarded-For writes it.
    pub peer_ip: Peer,
    pub local_port: u16,
    pub listener: usize,
    /// Bytes read from the client; the current request starts at 0.
    pub rbuf: Vec<u8>,
    /// End of what this request consumed of `rbuf` (head, then body).
    pub pos: usize,
    pub headers: Vec<HeaderSpan>,
    pub resp_headers: Vec<HeaderSpan>,
    /// Timeouts of client-side operations.
    pub timer: Timer,
    /// Timeouts of operations on this connection's upstream connections.
    pub up_timer: Timer,
}

/// What to do with the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// A failed exchange: the error, and whether the client already saw response bytes.
#[derive(Debug)]
pub struct Failure {
    pub error: ProxyError,
    pub response_started: bool,
    /// The request body was fully read from the client (the connection is in sync).
    pub request_consumed: bool,
}

pub async fn serve(
    worker: &Worker,
    listener: usize,
    stream: TcpStream,
    peer: SocketAddr,
    local_port: u16,
) {
    let _guard = worker.lifecycle.track();
    let mut d = Downstream {
        stream,
        peer,
        peer_ip: Peer::new(peer.ip()),
        local_port,
        listener,
        rbuf: Vec::with_capacity(READ_BUF),
        pos: 0,
        headers: Vec::new(),
        resp_headers: Vec::new(),
        timer: Timer::new(),
        up_timer: Timer::new(),
    };
    let mut first = true;
    loop {
        let head = match d.read_head(worker, first).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(peer = %d.peer, error = %e, "bad request head");
                if let Some(status) = e.status() {
                    let _ = d
                        .answer(
                            worker,
                            worker.snapshot.errors.get(status),
                            None,
                            Next::Close,
                        )
                        .await;
                }
                return;
            }
        };
        first = false;
        match d.handle(worker, &head).await {
            Next::KeepAlive => {}
            Next::Close => return,
        }
    }
}

impl Downstream {
    /// Reads until a complete request head is buffered. `Ok(None)`: close quietly
    /// (client gone, idle timeout, or draining while idle).
    async fn read_head(
        &mut self,
        w: &Worker,
        first: bool,
    ) -> Result<Option<RequestHead>, ProxyError> {
        // Move a pipelined request's bytes to the front.
        if self.pos > 0 {
            self.rbuf.copy_within(self.pos.., 0);
            self.rbuf.truncate(self.rbuf.len() - self.pos);
            self.pos = 0;
        }
        let cfg = &w.snapshot.listeners[self.listener];
        // A new connection's first head must be complete `header_timeout` after
        // accept; later heads, `header_timeout` after their first byte.
        let accepted = first.then(Instant::now);
        let mut deadline = None;
        loop {
            if !self.rbuf.is_empty() {
                if let Some(head) = parse_request(&self.rbuf, &cfg.limits, &mut self.headers)? {
                    return Ok(Some(head));
                }
                deadline.get_or_insert_with(|| {
                    accepted.unwrap_or_else(Instant::now) + cfg.header_timeout
                });
            }
            let read = match deadline {
                None => {
                    // Nothing of the next request yet. While draining, idle
                    // connections stay open: a further request is still served,
                    // with `Connection: close` (the drain deadline ends the rest).
                    let wait = if first {
                        cfg.header_timeout
                    } else {
                        cfg.idle_timeout
                    };
                    let mut io = Io::new(&mut self.stream, &mut self.timer, wait);
                    relay::read_into(&mut io, &mut self.rbuf).await
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ProxyError::HeadTimeout);
                    }
                    let mut io = Io::new(&mut self.stream, &mut self.timer, left);
                    relay::read_into(&mut io, &mut self.rbuf).await
                }
            };
            match read {
                Ok(0) | Err(Fail::Closed) => return Ok(None),
                Ok(_) => {}
                Err(Fail::Timeout) if deadline.is_some() => return Err(ProxyError::HeadTimeout),
                Err(Fail::Timeout) => return Ok(None),
                Err(Fail::Io(_)) => return Ok(None),
            }
        }
    }

    async fn handle(&mut self, w: &Worker, head: &RequestHead) -> Next {
        self.pos = head.head_len;
        match self.route_and_act(w, head).await {
            Ok(next) => next,
            Err(f) => {
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
                        self.answer(w, w.snapshot.errors.get(status), Some(head), next)
                            .await
                    }
                    _ => Next::Close,
                }
            }
        }
    }

    async fn route_and_act(&mut self, w: &Worker, head: &RequestHead) -> Result<Next, Failure> {
        let fail = |error, request_consumed| Failure {
            error,
            response_started: false,
            request_consumed,
        };
        if head.method == Method::Connect {
            return Err(fail(ProxyError::MethodNotAllowed, !head.has_body()));
        }
        let limits = &w.snapshot.listeners[self.listener].limits;
        if let (Framing::Length(n), Some(max)) = (head.framing, limits.max_body_bytes) {
            if n > max {
                return Err(fail(ProxyError::BodyTooLarge, false));
            }
        }
        let view = RequestView {
            buf: &self.rbuf,
            method: head.method_span.get(&self.rbuf),
            host: head.host().map(|h| h.get(&self.rbuf)),
            path: head.path.get(&self.rbuf),
            query: head.query.map(|q| q.get(&self.rbuf)),
            headers: &self.headers,
            listener: self.listener,
        };
        let Some(index) = w.snapshot.routes.lookup(&view) else {
            let consumed = self.discard_body(w, head).await;
            return Err(fail(ProxyError::NoRoute, consumed));
        };
        let route = w.snapshot.routes.route(index);
        match &route.action {
            Action::Forward(cluster) => upstream::forward(self, w, head, route, *cluster).await,
            Action::Answer(answer) => {
                let next = if self.discard_body(w, head).await {
                    Next::KeepAlive
                } else {
                    Next::Close
                };
                Ok(self.answer(w, answer, Some(head), next).await)
            }
        }
    }

    /// Reads and drops a small request body so the connection stays usable; false
    /// when the body is too large, awaited behind `Expect: 100-continue`, or broken.
    async fn discard_body(&mut self, w: &Worker, head: &RequestHead) -> bool {
        match head.framing {
            _ if !head.has_body() => return true,
            // The client waits for 100 Continue: answer without it, then close
            // (RFC 9110 §10.1.1).
            _ if head.expect_continue && self.rbuf.len() == self.pos => return false,
            Framing::Length(n) if n > MAX_DISCARD => return false,
            _ => {}
        }
        let cfg = &w.snapshot.listeners[self.listener];
        let mut body = Body::new(
            head.framing,
            Some(MAX_DISCARD),
            cfg.limits.max_head_bytes,
            false,
        );
        let mut io = Io::new(&mut self.stream, &mut self.timer, cfg.idle_timeout);
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
            Some(h) if h.keep_alive && !w.lifecycle.is_draining() => next,
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
        let timeout = w.snapshot.listeners[self.listener].idle_timeout;
        let len = out.len();
        let mut io = Io::new(&mut self.stream, &mut self.timer, timeout);
        let ok = relay::write_range(&mut io, &mut out, 0..len).await.is_ok();
        w.bufs.give(out);
        if ok {
            next
        } else {
            Next::Close
        }
    }

    /// Client-side I/O timeout (body reads, response writes).
    pub fn client_timeout(&self, w: &Worker) -> Duration {
        w.snapshot.listeners[self.listener].idle_timeout
    }
}

/// Answers after which the connection's framing cannot be trusted.
fn is_fatal_status(status: u16) -> bool {
    matches!(status, 400 | 405 | 408 | 413 | 414 | 431 | 501 | 505)
}

/// Maps a relay failure on the client side of a request body.
pub fn request_body_error(e: RelayError) -> ProxyError {
    match e {
        RelayError::Framing(b) => ProxyError::BadRequestBody(b),
        RelayError::TooLarge => ProxyError::BodyTooLarge,
        RelayError::Read(Fail::Timeout) => ProxyError::ClientTimeout {
            op: "read request body",
        },
        RelayError::Read(Fail::Closed) => ProxyError::ClientClosed {
            op: "read request body",
        },
        RelayError::Read(Fail::Io(source)) => ProxyError::Client {
            op: "read request body",
            source,
        },
        RelayError::Write(Fail::Timeout) => ProxyError::UpstreamTimeout {
            op: "write request body",
        },
        RelayError::Write(Fail::Closed) => ProxyError::UpstreamClosed {
            op: "write request body",
        },
        RelayError::Write(Fail::Io(source)) => ProxyError::Upstream {
            op: "write request body",
            source,
        },
    }
}
