//! The client side of an exchange, as both halves of the proxy see it: the
//! connection ([`Conn`]), its state during a burst of requests ([`Downstream`]), and
//! what an exchange gives back to the connection ([`Next`], [`Failure`]).
//!
//! `conn` (the HTTP/1.1 server loop) and `upstream` (forwarding) both build on this
//! module and neither imports the other's internals: `conn` calls
//! `upstream::forward`, which reads the request from a `Downstream` and writes the
//! response to it.

use crate::access_log;
use crate::error::ProxyError;
use crate::http::parse::HeaderSpan;
use crate::http::rewrite::Peer;
use crate::outcome::Outcome;
use crate::relay::{Fail, RelayError, Timer};
use crate::snapshot::{ListenerRt, ListenerSettings};
use crate::stream::Stream;
use monoio::io::Canceller;
use std::net::SocketAddr;
use std::rc::Rc;

/// A connection between bursts: all it keeps while idle (see `conn`'s module docs).
pub struct Conn {
    pub stream: Stream,
    pub peer: SocketAddr,
    /// The listener that accepted it (its settings as of the last reload, and
    /// whether it is closing).
    pub listener: Rc<ListenerRt>,
    /// Timeouts of client-side operations.
    pub timer: Timer,
}

impl Conn {
    /// A just-accepted connection. Boxed: the connection's task then holds a
    /// pointer, not three copies of the state (async blocks keep their captures
    /// beside the futures they move them into).
    pub fn new(stream: Stream, peer: SocketAddr, listener: Rc<ListenerRt>) -> Box<Self> {
        listener.stats.connections_total.inc();
        listener.stats.connections_active.inc();
        Box::new(Conn {
            stream,
            peer,
            listener,
            timer: Timer::new(),
        })
    }

    /// Whether the connection closes once it is idle, and answers the request in
    /// flight with `Connection: close`: its listener is closing (a drain, or a
    /// reload that removed it).
    pub fn is_closing(&self) -> bool {
        self.listener.is_closing()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.listener.stats.connections_active.dec();
    }
}

/// A connection in a burst: the connection, and the buffer and scratch space of the
/// requests it serves (they live in the burst's future, not in the idle
/// connection); `conn` serves requests with it, `upstream::forward` reads the
/// request from it and writes the response to it.
pub struct Downstream<'c> {
    pub conn: &'c mut Conn,
    /// The listener's settings, taken anew for each request.
    pub settings: Rc<ListenerSettings>,
    /// The client's address, its text form for X-Forwarded-For made once a burst.
    pub peer: Peer,
    /// Bytes read from the client; the current request starts at 0.
    pub rbuf: Vec<u8>,
    /// End of what this request consumed of `rbuf` (head, then body).
    pub pos: usize,
    pub headers: Vec<HeaderSpan>,
    pub resp_headers: Vec<HeaderSpan>,
    /// Timeouts of operations on this connection's upstream connections.
    pub up_timer: Timer,
    /// Cancels the wait for the next request when the buffer is released.
    pub canceller: Option<Canceller>,
    /// The current request's figures (metrics and the access log read them).
    pub outcome: Outcome,
    /// The current request's fields for its access log line (with an access log).
    pub log: Option<access_log::Scratch>,
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

/// A request refused before anything was sent anywhere.
pub fn refused(error: ProxyError, request_consumed: bool) -> Failure {
    Failure {
        error,
        response_started: false,
        request_consumed,
    }
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
