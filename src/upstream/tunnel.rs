//! A WebSocket connection through the proxy (RFC 6455 over HTTP/1.1): once the
//! upstream has answered the opening handshake with `101 Switching Protocols`, the
//! two connections become one byte tunnel, in both directions at once, until either
//! side closes or nothing moves for the listener's `idle_timeout`.
//!
//! One task serves both directions: it waits until either side is readable (a wait
//! that holds no buffer and consumes nothing, on TLS too), reads what is there and
//! writes it to the other side. Bytes flow as they come each way, so a long stream
//! in one direction does not hold the other back; a receiver that stops reading
//! slows both (the write to it waits), as its TCP window would.

use super::{client_write_error, Bufs, HEADROOM};
use crate::downstream::Downstream;
use crate::error::ProxyError;
use crate::http::parse::{HeaderKind, HeaderSpan, ResponseHead};
use crate::http::rewrite::write_interim_head;
use crate::metrics::Gauge;
use crate::relay::{self, Io};
use crate::stream::Stream;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Whether a `101` answers a WebSocket handshake: its Upgrade lists `websocket`.
pub(crate) fn upgrades_to_websocket(head: &[u8], headers: &[HeaderSpan]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Upgrade)
        .flat_map(|h| h.value.get(head).split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2): base64 of the
/// SHA-1 of the key and the protocol's GUID.
pub fn websocket_accept(key: &[u8]) -> [u8; 28] {
    use base64::Engine;
    use sha1::Digest;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let mut out = [0u8; 28];
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(sha.finalize(), &mut out);
    out
}

/// Which side became readable first.
enum Ready<T> {
    Client(T),
    Upstream(T),
}

/// Waits for the first of two futures (the client's first when both are ready).
async fn first<A, B, T>(a: A, b: B) -> Ready<T>
where
    A: Future<Output = T>,
    B: Future<Output = T>,
{
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Ready::Client(x));
        }
        if let Poll::Ready(x) = b.as_mut().poll(cx) {
            return Poll::Ready(Ready::Upstream(x));
        }
        Poll::Pending
    })
    .await
}

/// Keeps a gauge raised while a tunnel is open.
pub(crate) struct Open<'a>(Option<&'a Gauge>);

impl<'a> Open<'a> {
    pub(crate) fn of(gauge: Option<&'a Gauge>) -> Open<'a> {
        if let Some(g) = gauge {
            g.inc();
        }
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.dec();
        }
    }
}

/// Sends the client the upstream's `101` (its end-to-end headers, with
/// `Connection: upgrade` and `Upgrade: websocket`), then relays bytes both ways
/// until one side closes, an I/O fails or the tunnel idles for the listener's
/// `idle_timeout`. Counts the bytes into the request's outcome, and the tunnel in
/// `open` while it is open. An error is returned only when the `101` could not be
/// sent; a tunnel's end is its normal end.
pub(super) async fn websocket(
    d: &mut Downstream<'_>,
    up: &mut Stream,
    bufs: &mut Bufs,
    resp: &ResponseHead,
    open: Option<&Gauge>,
) -> Result<(), ProxyError> {
    let idle = d.client_timeout();
    bufs.head.clear();
    write_interim_head(
        &mut bufs.head,
        &bufs.resp[HEADROOM..],
        resp,
        &d.resp_headers,
    );
    bufs.head.truncate(bufs.head.len() - 2);
    bufs.head
        .extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n\r\n");
    let len = bufs.head.len();
    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, idle);
    if let Err((f, _)) = relay::write_range(&mut client, &mut bufs.head, 0..len).await {
        return Err(client_write_error(f));
    }
    d.outcome.status = 101;
    d.outcome.response_bytes = len as u64;
    let _open = Open::of(open);

    // What either side sent behind its head, before the switch was seen.
    let early = HEADROOM + resp.head_len;
    if bufs.resp.len() > early {
        let end = bufs.resp.len();
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, idle);
        if relay::write_range(&mut client, &mut bufs.resp, early..end)
            .await
            .is_err()
        {
            return Ok(());
        }
        d.outcome.response_bytes += (end - early) as u64;
    }
    if d.rbuf.len() > d.pos {
        let (start, end) = (d.pos, d.rbuf.len());
        let mut upstream = Io::new(up, &mut d.up_timer, idle);
        if relay::write_range(&mut upstream, &mut d.rbuf, start..end)
            .await
            .is_err()
        {
            return Ok(());
        }
        d.outcome.request_bytes += (end - start) as u64;
    }
    d.rbuf.clear();
    d.pos = 0;

    loop {
        let ready = {
            let conn = &mut *d.conn;
            let either = first(conn.stream.readable(), up.readable());
            conn.timer.run(idle, either).await
        };
        let (from_client, ready) = match ready {
            None => return Ok(()), // idle
            Some(Ready::Client(r)) => (true, r),
            Some(Ready::Upstream(r)) => (false, r),
        };
        if ready.is_err() {
            return Ok(());
        }
        // Readable: the read completes at once (for TLS, once a whole record is in).
        let moved = if from_client {
            d.rbuf.clear();
            let mut src = Io::new(&mut d.conn.stream, &mut d.conn.timer, idle);
            let n = match relay::read_into(&mut src, &mut d.rbuf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            let mut dst = Io::new(up, &mut d.up_timer, idle);
            relay::write_range(&mut dst, &mut d.rbuf, 0..n)
                .await
                .map(|()| n)
        } else {
            bufs.resp.clear();
            let mut src = Io::new(up, &mut d.up_timer, idle);
            let n = match relay::read_into(&mut src, &mut bufs.resp).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            let mut dst = Io::new(&mut d.conn.stream, &mut d.conn.timer, idle);
            relay::write_range(&mut dst, &mut bufs.resp, 0..n)
                .await
                .map(|()| n)
        };
        match moved {
            Ok(n) if from_client => d.outcome.request_bytes += n as u64,
            Ok(n) => d.outcome.response_bytes += n as u64,
            Err(_) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_accept_of_rfc_6455s_example_key() {
        let accept = super::websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(&accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
