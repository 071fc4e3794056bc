//! The request body of an HTTP/2 stream going up to an HTTP/1.1 upstream, one
//! piece at a time, so that the stream's task can relay the response while the
//! body still goes up (full duplex, as between HTTP/1.1 peers:
//! `crate::upstream::duplex`). A piece is one DATA frame's bytes (chunk-framed
//! when the body has no Content-Length), or the last chunk with the client's
//! trailer fields; the client's window for it is released once it is written
//! upstream, so flow control stays end to end.

use super::translate::{write_chunk, write_last_chunk};
use crate::clock::Stamp;
use crate::error::ProxyError;
use crate::http::parse::{Framing, RequestHead};
use crate::relay::{self, Io};
use crate::upstream::duplex::{write_watched, UpWatch};
use crate::upstream::upstream_error;
use h2::RecvStream;
use std::task::{Context, Poll};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// DATA frames still come.
    Data,
    /// The DATA frames ended; the trailers (or their absence) come next.
    Trailers,
    Done,
    /// The upstream answered (or stopped taking it) before the body ended.
    Stopped,
}

pub(super) struct Upload {
    chunked: bool,
    /// The Content-Length, when the body has one.
    length: Option<u64>,
    limit: Option<u64>,
    /// Body bytes taken from the client.
    seen: u64,
    /// Something of the body (data, its end, an error) was taken from the client.
    took: bool,
    state: State,
    /// The piece to write upstream.
    out: Vec<u8>,
    /// The client's window to release once `out` is written.
    release: usize,
    /// `out` ends the body.
    last: bool,
    /// Bytes written upstream (framing included).
    pub(super) sent: u64,
    /// When the body was all up (for the upstream's time).
    pub(super) done_at: Option<Stamp>,
}

/// What the wait of an upload saw first.
pub(super) enum Event {
    /// A piece to write (`Upload::write`), or an error of the client's body.
    Piece(Result<(), ProxyError>),
    /// The upstream's socket is readable.
    Upstream,
}

impl Upload {
    pub(super) fn new(head: &RequestHead, limit: Option<u64>) -> Upload {
        Upload {
            chunked: head.framing == Framing::Chunked,
            length: match head.framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            limit,
            seen: 0,
            took: false,
            state: match head.has_body() {
                true => State::Data,
                false => State::Done,
            },
            out: Vec::new(),
            release: 0,
            last: false,
            sent: 0,
            done_at: None,
        }
    }

    /// The body still goes up.
    pub(super) fn is_going(&self) -> bool {
        matches!(self.state, State::Data | State::Trailers)
    }

    /// Nothing of the body was taken from the client yet: a failed attempt may be
    /// made again with all of it.
    pub(super) fn untouched(&self) -> bool {
        !self.took
    }

    /// The whole body went up (or there was none).
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The upload ends here (an answer came first): the rest of the body is not
    /// passed on.
    pub(super) fn stop(&mut self) {
        if self.is_going() {
            self.state = State::Stopped;
        }
    }

    /// Polls the client's body for its next piece, framed for the upstream.
    fn poll_piece(
        &mut self,
        body: &mut RecvStream,
        c: &mut Context<'_>,
    ) -> Poll<Result<(), ProxyError>> {
        let closed = || ProxyError::ClientClosed {
            op: "read request body",
        };
        self.out.clear();
        if self.state == State::Data {
            match body.poll_data(c) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(closed())),
                Poll::Ready(Some(Ok(data))) => {
                    let n = data.len();
                    self.seen += n as u64;
                    if self.limit.is_some_and(|l| self.seen > l) {
                        return Poll::Ready(Err(ProxyError::BodyTooLarge));
                    }
                    // (An empty DATA frame, the END_STREAM one, is no chunk: a
                    // zero-size chunk would end a chunked body early.)
                    match (self.chunked, n) {
                        (_, 0) => {}
                        (true, _) => write_chunk(&mut self.out, &data),
                        (false, _) => self.out.extend_from_slice(&data),
                    }
                    self.release = n;
                    // The body's end, known with its last bytes (a Content-Length
                    // body all there, h2 having checked it; an END_STREAM frame
                    // without trailers), goes in the same write: the upstream's
                    // answer to a whole body then finds the upload done.
                    let ended = body.is_end_stream();
                    if ended || self.length.is_some_and(|l| self.seen >= l) {
                        if self.chunked {
                            write_last_chunk(&mut self.out, None);
                        }
                        self.last = true;
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(None) if self.chunked => self.state = State::Trailers,
                Poll::Ready(None) => {
                    self.last = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
        // (A client that fails before its trailers does not get its body ended
        // upstream as if it were whole.)
        match body.poll_trailers(c) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(closed())),
            Poll::Ready(Ok(trailers)) => {
                write_last_chunk(&mut self.out, trailers.as_ref());
                self.last = true;
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Waits for the next piece of the body or for the upstream's socket to be
    /// readable (`watch`, armed by the caller), whichever comes first.
    pub(super) async fn next(&mut self, body: &mut RecvStream, watch: &mut UpWatch) -> Event {
        std::future::poll_fn(|c| {
            if watch.poll(c).is_ready() {
                return Poll::Ready(Event::Upstream);
            }
            let piece = self.poll_piece(body, c);
            self.took |= piece.is_ready();
            piece.map(Event::Piece)
        })
        .await
    }

    /// Writes the piece upstream, releases its window to the client, and ends the
    /// upload after its last piece. While no response has started (`watch`), the
    /// upstream is watched: an error response that starts meanwhile, or a failed
    /// write with a response waiting (cleartext), stops the upload (`Ok`: the
    /// response is read next). Once a response has started, a failed write stops
    /// the upload too, and the response goes on. (Over TLS, response bytes read
    /// meanwhile are added to the response buffer given with `watch`.)
    pub(super) async fn write(
        &mut self,
        up: &mut Io<'_>,
        body: &mut RecvStream,
        watch: Option<(&mut UpWatch, &mut Vec<u8>)>,
    ) -> Result<(), ProxyError> {
        let range = 0..self.out.len();
        let answered = watch.is_none();
        let written = match watch {
            _ if range.is_empty() => Some(Ok(())),
            Some((watch, resp)) if !self.last && !watch.ready => {
                write_watched(up, &mut self.out, range, watch, resp, 0).await
            }
            _ => Some(relay::write_range(up, &mut self.out, range).await),
        };
        match written {
            Some(Ok(())) => {
                self.sent += self.out.len() as u64;
                let _ = body.flow_control().release_capacity(self.release);
                self.release = 0;
                if self.last {
                    self.state = State::Done;
                    self.done_at = Some(Stamp::now());
                }
                Ok(())
            }
            // An error response started: the upload is over.
            None => {
                self.stop();
                Ok(())
            }
            Some(Err((f, _))) => {
                self.stop();
                match answered || answer_waiting(up) {
                    true => Ok(()),
                    false => Err(upstream_error(f, "write request body")),
                }
            }
        }
    }
}

/// After a failed write of the body: whether a final response waits in a
/// cleartext upstream's socket (one that answered and closed has its answer
/// relayed).
fn answer_waiting(up: &Io<'_>) -> bool {
    use std::os::fd::AsRawFd;
    !up.stream.is_tls()
        && crate::upstream::waiting_status(up.stream.as_raw_fd()).is_some_and(|s| s != b'1')
}
