//! An HTTP/2 client connection (RFC 9113): the `h2` crate's server over
//! [`H2Io`], one task per stream ([`super::proxy::stream`]).
//!
//! The connection's own task (the one that accepted it) drives the connection: it
//! accepts streams and spawns a task for each, and keeps polling the connection,
//! which moves every stream's frames. It sends GOAWAY:
//! - gracefully (RFC 9113 §6.8: first with the last stream id at its maximum, then
//!   after a PING round trip the real one; h2 does both) when the listener closes
//!   (drain, reload) or the connection has had no open stream for `idle_timeout`;
//!   open streams finish;
//! - with `ENHANCE_YOUR_CALM` at once when the frame guard finds a flood.
//!
//! A connection that has not completed its preface and SETTINGS within
//! `header_timeout` is closed.

use super::guard::{GoawayReason, Guard, GuardState};
use super::io::H2Io;
use crate::downstream::Conn;
use crate::http::rewrite::Peer;
use crate::relay::Timer;
use crate::snapshot::ListenerRt;
use crate::stream::Stream;
use crate::tls::TlsInfo;
use crate::worker::Worker;
use bytes::Bytes;
use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// What the streams of one connection share.
pub struct ConnCtx {
    pub listener: Rc<ListenerRt>,
    pub peer: Peer,
    /// The TLS session's details (a copy: the stream is the connection's).
    pub tls: Option<TlsInfo>,
    /// The address the client connected to (redirects of requests without an
    /// authority).
    pub local: Option<SocketAddr>,
    /// Streams whose task is running.
    pub open: Cell<usize>,
    /// The connection's task, woken when the last stream ends.
    pub waker: std::cell::RefCell<Option<std::task::Waker>>,
}

/// What ended a wait of the connection's task. (Not boxed: one lives at a time.)
#[allow(clippy::large_enum_variant)]
enum Event {
    Stream(
        Result<
            (
                http::Request<h2::RecvStream>,
                h2::server::SendResponse<Bytes>,
            ),
            h2::Error,
        >,
    ),
    /// The connection closed (after a GOAWAY, or the client left).
    Done,
    /// The last open stream ended.
    Quiet,
    Breach(GoawayReason),
    Closing,
}

/// How often the connection's task looks again while streams are open (it is
/// woken by their frames and when the last one ends; this only bounds a wait).
const FINISH: Duration = Duration::from_secs(30);

/// Serves an HTTP/2 connection: `pre` holds bytes already read from it (the
/// preface, on a cleartext listener).
pub async fn serve(worker: Rc<Worker>, conn: Box<Conn>, pre: Vec<u8>) {
    let settings = conn.listener.settings();
    let cfg = &settings.config;
    let ctx = Rc::new(ConnCtx {
        listener: conn.listener.clone(),
        peer: Peer::of(conn.peer),
        tls: match &conn.stream {
            Stream::Tls(tls) => Some(tls.info().clone()),
            Stream::Plain(_) => None,
        },
        local: conn.stream.local_addr().ok(),
        open: Cell::new(0),
        waker: Default::default(),
    });
    let guard = Guard::server();
    let state = guard.state.clone();
    let io = H2Io::new(super::io::Transport::Client(conn), pre, guard);
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.h2.max_concurrent_streams)
        .initial_window_size(cfg.h2.initial_stream_window)
        .initial_connection_window_size(cfg.h2.initial_connection_window)
        .max_frame_size(cfg.h2.max_frame_size)
        .max_header_list_size(cfg.limits.max_head_bytes as u32)
        .max_send_buffer_size(cfg.h2.initial_stream_window as usize)
        // WebSocket over HTTP/2 (RFC 8441); routes decide whether it is forwarded.
        .enable_connect_protocol();
    let mut timer = Timer::new();
    let mut h2c = match timer
        .run(cfg.header_timeout, builder.handshake::<_, Bytes>(io))
        .await
    {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::debug!(peer = %ctx.peer.ip, error = %e, "HTTP/2 handshake failed");
            count_goaway(&worker, &state, None);
            return;
        }
        None => {
            tracing::debug!(peer = %ctx.peer.ip, "HTTP/2 handshake timed out");
            return;
        }
    };
    drop(settings);
    let mut shut = false;
    let mut breached = false;
    loop {
        // With no stream open, the connection is idle: `idle_timeout` counts from
        // when the last one ended (its task wakes this one: `Event::Quiet`).
        // With streams open, it is polled on for them as long as they last.
        let busy = ctx.open.get() > 0;
        let wait = match (busy, shut) {
            (false, false) => ctx.listener.settings().config.idle_timeout,
            (true, _) => FINISH,
            // A GOAWAY was sent and nothing is open: a last short wait.
            (false, true) => Duration::from_secs(1),
        };
        let next = poll_fn(|cx| {
            *ctx.waker.borrow_mut() = Some(cx.waker().clone());
            if busy && ctx.open.get() == 0 {
                return Poll::Ready(Event::Quiet);
            }
            if !breached {
                if let Some(reason) = state.breach.get() {
                    return Poll::Ready(Event::Breach(reason));
                }
            }
            if !shut && ctx.listener.is_closing() {
                return Poll::Ready(Event::Closing);
            }
            match h2c.poll_accept(cx) {
                Poll::Ready(Some(s)) => Poll::Ready(Event::Stream(s)),
                Poll::Ready(None) => Poll::Ready(Event::Done),
                Poll::Pending => Poll::Pending,
            }
        });
        match timer.run(wait, next).await {
            Some(Event::Stream(Ok((req, respond)))) => {
                ctx.open.set(ctx.open.get() + 1);
                monoio::spawn(super::proxy::stream(
                    worker.clone(),
                    ctx.clone(),
                    req,
                    respond,
                ));
            }
            Some(Event::Stream(Err(e))) => {
                tracing::debug!(peer = %ctx.peer.ip, error = %e, "HTTP/2 connection error");
                break;
            }
            Some(Event::Done) => break,
            Some(Event::Quiet) => {}
            Some(Event::Breach(reason)) => {
                tracing::info!(peer = %ctx.peer.ip, reason = reason.label(),
                    "HTTP/2 guard: GOAWAY {:?}", reason.code());
                breached = true;
                shut = true;
                worker.metrics.h2_goaways[reason as usize].inc();
                h2c.abrupt_shutdown(reason.code());
            }
            Some(Event::Closing) => {
                shut = true;
                h2c.graceful_shutdown();
            }
            // Streams open: only their own timeouts end them (and a drain's
            // deadline).
            None if busy => {}
            // Idle: no stream for idle_timeout.
            None if !shut => {
                shut = true;
                h2c.graceful_shutdown();
            }
            // GOAWAY sent, nothing open, and the client has not closed.
            None => break,
        }
    }
    // Flush what is queued (a GOAWAY), briefly.
    let _ = timer
        .run(Duration::from_secs(1), poll_fn(|cx| h2c.poll_closed(cx)))
        .await;
    if !breached {
        count_goaway(&worker, &state, Some(shut));
    }
}

/// Counts the GOAWAY the connection was sent, if any: the one h2 sent by itself
/// (read by the guard), else a graceful one (`shut`).
fn count_goaway(w: &Worker, state: &GuardState, shut: Option<bool>) {
    let reason = match (state.goaway_sent.get(), shut) {
        (Some(reason), _) => reason,
        (None, Some(true)) => GoawayReason::Shutdown,
        _ => return,
    };
    w.metrics.h2_goaways[reason as usize].inc();
}
