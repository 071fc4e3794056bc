//! HTTP/2 (RFC 9113) on the client side, over the `h2` crate: the I/O adapter
//! (`io`), the frame guard against floods (`guard`), and the server (`server`),
//! which presents each stream's request to the shared decision (`exchange`) as an
//! HTTP/1.1 head and forwards it (`proxy`).

pub mod from_h1;
pub mod guard;
pub mod io;
pub mod proxy;
pub mod server;
pub mod translate;
mod tunnel;
mod upload;
pub mod upstream;

use bytes::Bytes;
use std::future::{poll_fn, Future};
use std::task::{Context, Poll};

/// Why data could not be sent on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFail {
    /// The stream or its connection is gone (reset, GOAWAY, closed).
    Closed,
    /// The peer gave no window for `timeout`.
    Timeout,
}

/// Sends `data` on a stream as the peer's window allows (`end`: its last piece
/// ends the stream), waiting at most `timeout` for each grant: h2 itself would
/// buffer without limit.
pub async fn send_data(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    timer: &mut crate::relay::Timer,
    timeout: std::time::Duration,
) -> Result<(), SendFail> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let n = match timer.run(timeout, poll_fn(|c| send.poll_capacity(c))).await {
            Some(Some(Ok(n))) => n,
            Some(_) => return Err(SendFail::Closed),
            None => return Err(SendFail::Timeout),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n.min(data.len()));
        let last = end && data.is_empty();
        send.send_data(chunk, last).map_err(|_| SendFail::Closed)?;
    }
    Ok(())
}

/// `op`, unless `reset` (a stream's `poll_reset`) reports the stream reset or
/// gone first: then `None`, and `op` is dropped.
pub async fn unless_reset<F: Future, E>(
    op: F,
    mut reset: impl FnMut(&mut Context<'_>) -> Poll<E>,
) -> Option<F::Output> {
    let mut op = std::pin::pin!(op);
    poll_fn(|c| match reset(c) {
        Poll::Ready(_) => Poll::Ready(None),
        Poll::Pending => op.as_mut().poll(c).map(Some),
    })
    .await
}

/// How many times a stream the upstream did not process is sent again.
pub const UNPROCESSED_RETRIES: u32 = 2;

/// Whether an upstream stream failed without being processed: reset with
/// REFUSED_STREAM, or above the last stream id of a GOAWAY (h2 fails exactly
/// those streams with the GOAWAY's error; RFC 9113 §8.7).
pub fn unprocessed(error: &crate::error::ProxyError) -> bool {
    let crate::error::ProxyError::Upstream { source, .. } = error else {
        return false;
    };
    let Some(e) = source.get_ref().and_then(|e| e.downcast_ref::<h2::Error>()) else {
        return false;
    };
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}
