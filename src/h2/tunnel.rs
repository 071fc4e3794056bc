//! WebSocket over HTTP/2 (RFC 8441). The client's extended CONNECT (`:protocol`
//! `websocket`) went upstream as an HTTP/1.1 opening handshake
//! (`translate::write_head`); once the upstream has accepted it (`101` with the
//! right `Sec-WebSocket-Accept`, checked by `proxy`), the client gets `200` and the
//! stream's DATA and the upstream connection's bytes are relayed both ways at once
//! until:
//! - the upstream closes: the stream ends (END_STREAM) after its last bytes. The
//!   client's END_STREAM is passed on as the end of the upstream connection's
//!   sending side (a FIN, RFC 9113 §8.5), and what the upstream still sends comes
//!   through until it closes;
//! - the client resets the stream;
//! - the upstream connection fails: RST_STREAM `CONNECT_ERROR` (RFC 9113 §8.5);
//! - nothing moves either way for the listener's `idle_timeout`: RST_STREAM
//!   `CANCEL`, as an HTTP/1.1 tunnel's connection is closed then.
//!
//! One wait serves both directions, as for HTTP/1.1 (`upstream::tunnel`): the
//! client's next DATA or the upstream socket becoming readable, each looked at
//! first in turn. A receiver that stops reading slows both (the write to it waits
//! for its window). Tunnels are
//! counted in `ringway_websocket_active{route}`; like every stream they end with
//! the process at `drain_timeout`.

use crate::error::ProxyError;
use crate::http::parse::{HeaderSpan, ResponseHead};
use crate::http::rewrite::write_interim_head;
use crate::metrics::Gauge;
use crate::outcome::Outcome;
use crate::relay::{self, Fail, Io, Timer};
use crate::stream::Stream;
use crate::worker::Worker;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// What ended a wait.
enum Event {
    Client(Option<Result<Bytes, h2::Error>>),
    Upstream(std::io::Result<()>),
    Reset,
}

/// How the tunnel ended.
enum End {
    /// One side ended its stream of bytes.
    Closed,
    /// The client reset the stream or went away.
    Reset,
    UpstreamFailed,
    Idle,
}

/// The upstream's accepted handshake, as the tunnel takes it over.
pub(super) struct Accepted<'a> {
    pub up: &'a mut Stream,
    /// The `101` head and whatever the upstream sent behind it.
    pub buf: Vec<u8>,
    pub resp: &'a ResponseHead,
    pub resp_headers: &'a [HeaderSpan],
}

/// Answers the stream `200` (the `101`'s end-to-end fields, less
/// `Sec-WebSocket-Accept`), then relays bytes both ways until the tunnel ends.
/// Counts the bytes into `outcome`. An error is returned only when the `200`
/// could not be sent.
pub(super) async fn websocket(
    w: &Worker,
    respond: &mut SendResponse<Bytes>,
    body: &mut RecvStream,
    accepted: Accepted<'_>,
    idle: Duration,
    outcome: &mut Outcome,
    open: Option<&Gauge>,
) -> Result<(), ProxyError> {
    let Accepted {
        up,
        mut buf,
        resp,
        resp_headers,
    } = accepted;
    let mut head = w.bufs.take();
    write_interim_head(&mut head, &buf, resp, resp_headers);
    let mut response = super::translate::response_of(&head, 200);
    outcome.response_bytes = head.len() as u64;
    w.bufs.give(head);
    response
        .headers_mut()
        .remove(http::header::SEC_WEBSOCKET_ACCEPT);
    let mut send = match respond.send_response(response, false) {
        Ok(send) => send,
        Err(_) => {
            w.bufs.give(buf);
            return Err(ProxyError::ClientClosed {
                op: "write response",
            });
        }
    };
    outcome.status = 200;
    let _open = crate::upstream::tunnel::Open::of(open);
    let mut timer = Timer::new();

    // What the upstream sent behind its head, before the switch was seen.
    let early = resp.head_len;
    let mut end = None;
    if buf.len() > early {
        let data = Bytes::copy_from_slice(&buf[early..]);
        let n = data.len() as u64;
        match super::send_data(&mut send, data, false, &mut timer, idle).await {
            Ok(()) => outcome.response_bytes += n,
            Err(_) => end = Some(End::Reset),
        }
    }
    let end = match end {
        Some(end) => end,
        None => relay_both(body, &mut send, up, &mut buf, &mut timer, idle, outcome).await,
    };
    match end {
        End::Closed => {
            let _ = send.send_data(Bytes::new(), true);
        }
        End::UpstreamFailed => send.send_reset(h2::Reason::CONNECT_ERROR),
        End::Idle => send.send_reset(h2::Reason::CANCEL),
        End::Reset => {}
    }
    w.bufs.give(buf);
    Ok(())
}

/// Relays the stream's DATA to the upstream and the upstream's bytes to the
/// stream until one of them ends, fails or idles.
async fn relay_both(
    body: &mut RecvStream,
    send: &mut h2::SendStream<Bytes>,
    up: &mut Stream,
    buf: &mut Vec<u8>,
    timer: &mut Timer,
    idle: Duration,
    outcome: &mut Outcome,
) -> End {
    // The client ended its side; which side is looked at first.
    let (mut client_done, mut client_first) = (false, true);
    loop {
        client_first = !client_first;
        let event = {
            let mut readable = pin!(up.readable());
            let wait = poll_fn(|c| {
                let mut client = |c: &mut std::task::Context<'_>| match client_done {
                    true => Poll::Pending,
                    false => body.poll_data(c).map(Event::Client),
                };
                if client_first {
                    if let Poll::Ready(e) = client(c) {
                        return Poll::Ready(e);
                    }
                }
                if let Poll::Ready(r) = readable.as_mut().poll(c) {
                    return Poll::Ready(Event::Upstream(r));
                }
                if !client_first {
                    if let Poll::Ready(e) = client(c) {
                        return Poll::Ready(e);
                    }
                }
                if send.poll_reset(c).is_ready() {
                    return Poll::Ready(Event::Reset);
                }
                Poll::Pending
            });
            timer.run(idle, wait).await
        };
        match event {
            None => return End::Idle,
            Some(Event::Reset | Event::Client(Some(Err(_)))) => return End::Reset,
            Some(Event::Client(None)) => {
                // The upstream reads the end; its answer still comes back.
                use std::os::fd::AsRawFd;
                let fd = up.as_raw_fd();
                if nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write).is_err() {
                    return End::Closed;
                }
                client_done = true;
            }
            Some(Event::Client(Some(Ok(data)))) => {
                let n = data.len();
                if n == 0 {
                    continue;
                }
                buf.clear();
                buf.extend_from_slice(&data);
                let mut io = Io::new(up, timer, idle);
                if relay::write_range(&mut io, buf, 0..n).await.is_err() {
                    return End::UpstreamFailed;
                }
                let _ = body.flow_control().release_capacity(n);
                outcome.request_bytes += n as u64;
            }
            Some(Event::Upstream(Err(_))) => return End::UpstreamFailed,
            Some(Event::Upstream(Ok(()))) => {
                buf.clear();
                let mut io = Io::new(up, timer, idle);
                let n = match relay::read_into(&mut io, buf).await {
                    Ok(0) | Err(Fail::Closed) => return End::Closed,
                    Ok(n) => n,
                    Err(_) => return End::UpstreamFailed,
                };
                let data = Bytes::copy_from_slice(&buf[..n]);
                if super::send_data(send, data, false, timer, idle)
                    .await
                    .is_err()
                {
                    return End::Reset;
                }
                outcome.response_bytes += n as u64;
            }
        }
    }
}
