//! The request body of an HTTP/1.1 client going up to an HTTP/1.1 upstream while
//! the response may already come back: full duplex, for an upstream that echoes or
//! streams while it reads, and for one that answers early (an `401`, `413`).
//!
//! One task does whichever side is ready, as the WebSocket tunnel does: it waits
//! for readiness (the client's socket for more of the body, the upstream's for the
//! response), a wait that holds no buffer and consumes nothing, on TLS too, and the
//! reads and writes that follow are done whole. Nothing is cut halfway, except a
//! write of the body that an early error answer interrupts: that upload is over and
//! its connection is not kept.
//!
//! - The body in hand goes up first; a body that was all in hand (the common case)
//!   goes up without any wait, as before.
//! - While the body goes up, the upstream's socket is watched, during the writes
//!   too: an error response (`4xx`, `5xx`) that starts meanwhile stops the upload,
//!   and is then read and relayed as any response ([`Sent::Stopped`]). A cleartext
//!   socket is peeked at during a write; a TLS stream's write is done without
//!   waiting (`TlsStream::try_write`), so that the response can be read while it
//!   waits for room ([`write_watched`]).
//! - A response that starts with another status before the body is all up (a
//!   `2xx` streamed while the upstream reads) goes to the client at once, with
//!   `Connection: close`, and its body is relayed as it comes while the rest of the
//!   request body goes up. A response that ends first ends the upload.
//! - Waits: for more of the body, the listener's `idle_timeout` (a `408`); for more
//!   of a started response, the cluster's `response_timeout`. A side that waits on
//!   a write (a receiver that does not read) holds the other one back, as in the
//!   tunnel: its TCP window would hold back a direct peer the same way.

use super::{
    client_write_error, upstream_error, waiting_status, Bufs, Exchange, ExchangeError, Progress,
    HEADROOM,
};
use crate::clock::Stamp;
use crate::downstream::{request_body_error, Downstream, Next};
use crate::error::ProxyError;
use crate::http::parse::ResponseHead;
use crate::relay::{self, Body, Fail, Io, RelayError};
use crate::stream::Stream;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::task::Poll;

/// How the upload ended.
pub(super) enum Sent {
    /// The body went up whole before any final response: the exchange goes on
    /// (what came of the response is in `bufs.resp`, after `HEADROOM`).
    Whole,
    /// The upstream answered with an error before the body ended (or with an
    /// upgrade): the upload stopped, and the response, in `bufs.resp` or still to
    /// come, is read next.
    Stopped,
    /// The response went to the client while the body went up, and is over.
    /// `reusable`: the upstream connection is in sync (both messages whole).
    Answered { next: Next, reusable: bool },
}

/// A response whose head went to the client during the upload.
struct Answer {
    body: Body,
    /// Where the next response bytes start in `bufs.resp`.
    pos: usize,
    keep_alive: bool,
    close: bool,
}

/// What woke the wait.
enum Event {
    /// The client's socket is readable (`None`: its `idle_timeout` passed).
    Client(Option<std::io::Result<()>>),
    /// The upstream's socket is readable (`None`: its `response_timeout` passed).
    Upstream(Option<std::io::Result<()>>),
}

/// A wait until `s` can be read that does not borrow it (`None`: it can be read
/// at once, a TLS stream holding bytes).
fn readiness(s: &mut Stream) -> Option<impl Future<Output = std::io::Result<()>> + 'static> {
    match s {
        Stream::Plain(tcp) => Some(tcp.readiness(true)),
        Stream::Tls(tls) => match tls.has_buffered() {
            true => None,
            false => Some(tls.tcp().readiness(true)),
        },
    }
}

/// A wait for an upstream socket's readability kept across the reads and writes
/// of an upload (one `PollAdd`, armed when first needed), and whether it fired.
pub(crate) struct UpWatch {
    wait: Option<Pin<Box<dyn Future<Output = std::io::Result<()>>>>>,
    /// The wait fired (or a TLS stream holds bytes): the response can be read.
    pub(crate) ready: bool,
}

impl UpWatch {
    pub(crate) fn new() -> UpWatch {
        UpWatch {
            wait: None,
            ready: false,
        }
    }

    /// Arms the wait, unless it is armed or fired.
    pub(crate) fn arm(&mut self, up: &mut Stream) {
        if !self.ready && self.wait.is_none() {
            match readiness(up) {
                Some(wait) => self.wait = Some(Box::pin(wait)),
                None => self.ready = true,
            }
        }
    }

    /// Polls the armed wait: ready once it fired (a failed wait counts as fired:
    /// the read that follows reports the error).
    pub(crate) fn poll(&mut self, c: &mut std::task::Context<'_>) -> Poll<()> {
        if !self.ready {
            match self.wait.as_mut().map(|w| w.as_mut().poll(c)) {
                Some(Poll::Ready(_)) => {
                    self.wait = None;
                    self.ready = true;
                }
                _ => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// Whether it fired, without waiting (the task is woken when it does).
    pub(crate) async fn look(&mut self) -> bool {
        std::future::poll_fn(|c| Poll::Ready(self.poll(c).is_ready())).await
    }

    /// What it saw was read: it is to be armed again.
    pub(crate) fn consumed(&mut self) {
        self.ready = false;
    }
}

/// Writes `range` of `buf` to the upstream whole, while `watch` (armed here)
/// watches its socket: `None` when an error response (`4xx`, `5xx`) starts
/// meanwhile (the write is then dropped: the upload is over). A cleartext
/// socket is peeked at; from a TLS one, what can be read is read into `resp`
/// (from `resp_start` on, the response so far), the write resumed unless the
/// response's status is an error.
pub(crate) async fn write_watched(
    io: &mut Io<'_>,
    buf: &mut Vec<u8>,
    range: std::ops::Range<usize>,
    watch: &mut UpWatch,
    resp: &mut Vec<u8>,
    resp_start: usize,
) -> Option<Result<(), (Fail, usize)>> {
    if io.stream.is_tls() {
        return Box::pin(write_watched_tls(io, buf, range, watch, resp, resp_start)).await;
    }
    watch.arm(io.stream);
    let fd = io.stream.as_raw_fd();
    let mut write = pin!(relay::write_range(io, buf, range));
    let mut looked = false;
    std::future::poll_fn(|c| {
        if let Poll::Ready(r) = write.as_mut().poll(c) {
            return Poll::Ready(Some(r));
        }
        if !looked && watch.poll(c).is_ready() {
            looked = true;
            if matches!(waiting_status(fd), Some(b'4' | b'5')) {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
}

/// [`write_watched`] over TLS: records are encrypted and sent without waiting
/// (`TlsStream::try_write`), so that the stream stays usable while the write
/// waits for room, and the response can be read meanwhile.
async fn write_watched_tls(
    io: &mut Io<'_>,
    buf: &[u8],
    range: std::ops::Range<usize>,
    watch: &mut UpWatch,
    resp: &mut Vec<u8>,
    resp_start: usize,
) -> Option<Result<(), (Fail, usize)>> {
    let mut at = range.start;
    let sent = |at: usize| at - range.start;
    // The response's status is known (not an error): the write goes on unwatched.
    let mut looked = false;
    loop {
        let Stream::Tls(tls) = &mut *io.stream else {
            return Some(Err((Fail::Closed, 0)));
        };
        // What the socket takes now.
        let flushed = loop {
            if at < range.end {
                match tls.try_write(&buf[at..range.end]) {
                    Ok(Some(n)) if n > 0 => {
                        at += n;
                        continue;
                    }
                    // (Records from before still queued: wait for room.)
                    Ok(_) => break false,
                    Err(e) => return Some(Err((Fail::Io(e), sent(at)))),
                }
            }
            match tls.try_flush() {
                Ok(done) => break done,
                Err(e) => return Some(Err((Fail::Io(e), sent(at)))),
            }
        };
        if flushed {
            return Some(Ok(()));
        }
        // Wait for room, or for the upstream to say something.
        let writable = tls.tcp().readiness(false);
        if !looked {
            watch.arm(io.stream);
        }
        let mut writable = pin!(writable);
        let event = io.timer.run(
            io.timeout,
            std::future::poll_fn(|c| {
                if !looked && watch.poll(c).is_ready() {
                    return Poll::Ready(true);
                }
                writable.as_mut().poll(c).map(|_| false)
            }),
        );
        match event.await {
            None => return Some(Err((Fail::Timeout, sent(at)))),
            Some(false) => {}
            Some(true) => {
                watch.consumed();
                let Stream::Tls(tls) = &mut *io.stream else {
                    return Some(Err((Fail::Closed, 0)));
                };
                // (Without waiting: a read that would first send what is queued
                // could wait on the upstream that does not read.)
                let from = resp.len();
                resp.resize(from + crate::worker::BUF_SIZE, 0);
                let read = tls.try_read(&mut resp[from..]);
                resp.truncate(from + read.as_ref().map_or(0, |n| n.unwrap_or(0)));
                match read {
                    // (A session message, or part of a record.)
                    Ok(None) => {}
                    Ok(Some(0)) => return Some(Err((Fail::Closed, sent(at)))),
                    Ok(Some(_)) => match final_status(&resp[resp_start..]) {
                        Some(b'4' | b'5') => {
                            // The upload is over: what is queued never goes out.
                            tls.abandon_output();
                            return None;
                        }
                        Some(_) => looked = true,
                        // (Not all of it yet; one too large is not waited on.)
                        None => looked = resp.len() - resp_start >= super::MAX_RESPONSE_HEAD,
                    },
                    Err(e) => return Some(Err((Fail::Io(e), sent(at)))),
                }
            }
        }
    }
}

/// The first digit of the status of the first final response in `resp` (the
/// response bytes so far, interim `1xx` ones skipped), once its status line has
/// begun to arrive; `b'?'` for bytes that are no status line.
pub(crate) fn final_status(mut resp: &[u8]) -> Option<u8> {
    loop {
        let start = resp.get(..10)?;
        if !start.starts_with(b"HTTP/1.") {
            return Some(b'?');
        }
        if start[9] != b'1' {
            return Some(start[9]);
        }
        let end = memchr::memmem::find(resp, b"\r\n\r\n")?;
        resp = &resp[end + 4..];
    }
}

/// Sends the request body (the head went up already) and whatever of the response
/// comes meanwhile; see the module's documentation. `sent_at` is when the request
/// went up, for the upstream's time.
pub(super) async fn send_body(
    ex: &mut Exchange<'_>,
    d: &mut Downstream<'_>,
    up: &mut Stream,
    bufs: &mut Bufs,
    p: &mut Progress,
    sent_at: Stamp,
) -> Result<Sent, ExchangeError> {
    debug_assert!(ex.head.has_body());
    let client_timeout = d.client_timeout();
    let up_timeout = ex.cluster.config.response_timeout;
    if ex.head.expect_continue && !*ex.sent_continue && d.pos == d.rbuf.len() {
        // The proxy answers the expectation itself and strips Expect upstream
        // (RFC 9110 §10.1.1), like nginx.
        *ex.sent_continue = true;
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
        if let Err(f) = relay::write_static(&mut client, b"HTTP/1.1 100 Continue\r\n\r\n").await {
            p.read_client = true;
            return Err(p.fail(client_write_error(f)));
        }
    }
    let limits = &d.settings.config.limits;
    let mut body = Body::new(
        ex.head.framing,
        limits.max_body_bytes,
        limits.max_head_bytes,
        false,
    );
    // (A cleartext upstream's socket can be peeked at for an early answer.)
    let fd = match &*up {
        Stream::Plain(tcp) => Some(tcp.as_raw_fd()),
        Stream::Tls(_) => None,
    };
    let mut watch = UpWatch::new();
    let mut client_wait = pin!(None);
    let mut answer: Option<Answer> = None;
    // Which side the wait looks at first (each in turn, so that neither starves).
    let mut client_first = true;
    // Response bytes came that were not looked at yet.
    let mut fresh = false;
    let result = 'upload: loop {
        // 1. The body bytes in hand go up.
        if d.pos < d.rbuf.len() {
            let out = match body.consume(&mut d.rbuf, &mut d.pos) {
                Ok(out) => out,
                Err(e) => {
                    p.read_client = true;
                    break Err(p.fail(request_body_error(e)));
                }
            };
            p.read_client |= body.reframed();
            if !out.is_empty() {
                // While no response has started, the upstream is watched (not for
                // the body's last bytes: its response is read next).
                let watched = answer.is_none() && !watch.ready && !body.is_done();
                let mut up_io = Io::new(up, &mut d.up_timer, up_timeout);
                let had = bufs.resp.len();
                let written = match watched {
                    true => {
                        let resp = &mut bufs.resp;
                        let rbuf = &mut d.rbuf;
                        write_watched(&mut up_io, rbuf, out, &mut watch, resp, HEADROOM).await
                    }
                    false => Some(relay::write_range(&mut up_io, &mut d.rbuf, out).await),
                };
                // (Response bytes read meanwhile, from a TLS upstream: looked at
                // next, before any wait.)
                if bufs.resp.len() > had {
                    p.got_response = true;
                    fresh = true;
                }
                match written {
                    Some(Ok(())) => {}
                    None => break Ok(Sent::Stopped),
                    Some(Err((f, _))) => {
                        if answer.is_some() {
                            // The upstream stopped taking the body while it answers:
                            // its answer goes on.
                            break 'upload Ok(Sent::Whole);
                        }
                        // One that answered and closed has its answer relayed.
                        let read = final_status(&bufs.resp[HEADROOM..]);
                        let waiting = fd.and_then(waiting_status).or(read);
                        if waiting.is_some_and(|s| s != b'1') {
                            break Ok(Sent::Stopped);
                        }
                        break Err(p.fail(upstream_error(f, "write request body")));
                    }
                }
            }
        }
        if body.is_done() {
            // (Its trailer fields, those that may be trailers.)
            if let Some(mut section) = body.take_trailer_section() {
                let len = section.len();
                let mut up_io = Io::new(up, &mut d.up_timer, up_timeout);
                if let Err((f, _)) = relay::write_range(&mut up_io, &mut section, 0..len).await {
                    if answer.is_none() {
                        break Err(p.fail(upstream_error(f, "write request body")));
                    }
                    break Ok(Sent::Whole);
                }
            }
            p.request_consumed = true;
            break Ok(Sent::Whole);
        }

        // 2. Wait for more of the body or for the response, whichever comes first
        // (unless response bytes came with the last write).
        if !std::mem::take(&mut fresh) {
            // (What the buffer held of the body is gone from it: no replay.)
            p.read_client = true;
            body.empty_for_read(&mut d.rbuf, &mut d.pos);
            // (A look, not a wait, at an upstream already watched: the response first.)
            let up_ready = watch.look().await;
            if let (Stream::Plain(tcp), false) = (&d.conn.stream, up_ready) {
                // More of the body already there is read at once, without a wait
                // (which a readiness wait kept from before would then not know).
                match relay::try_recv(tcp, &mut d.rbuf) {
                    Ok(None) => {}
                    Ok(Some(n)) if n > 0 => {
                        client_wait.set(None);
                        continue;
                    }
                    r => break Err(p.fail(client_read_error(r))),
                }
            }
            let client_ready = match &mut d.conn.stream {
                Stream::Tls(tls) => tls.has_buffered(),
                Stream::Plain(_) => false,
            };
            if !client_ready && client_wait.is_none() {
                client_wait.set(readiness(&mut d.conn.stream));
            }
            watch.arm(up);
            let event = if client_ready {
                Event::Client(Some(Ok(())))
            } else if watch.ready {
                Event::Upstream(Some(Ok(())))
            } else {
                let for_client = d.conn.timer.run(
                    client_timeout,
                    std::future::poll_fn(|c| match client_wait.as_mut().as_pin_mut() {
                        Some(w) => w.poll(c),
                        None => Poll::Pending,
                    }),
                );
                let mut for_client = pin!(for_client);
                // (Until the response starts, the upstream has nothing to say yet: the
                // wait is the client's, and ends as the client's does.)
                let upstream_timeout = match answer {
                    Some(_) => up_timeout,
                    None => client_timeout,
                };
                let for_upstream = d.up_timer.run(
                    upstream_timeout,
                    std::future::poll_fn(|c| watch.poll(c).map(Ok)),
                );
                let mut for_upstream = pin!(for_upstream);
                client_first = !client_first;
                std::future::poll_fn(|c| {
                    if client_first {
                        if let Poll::Ready(r) = for_client.as_mut().poll(c) {
                            return Poll::Ready(Event::Client(r));
                        }
                    }
                    if let Poll::Ready(r) = for_upstream.as_mut().poll(c) {
                        return Poll::Ready(Event::Upstream(r));
                    }
                    if let Poll::Ready(r) = for_client.as_mut().poll(c) {
                        return Poll::Ready(Event::Client(r));
                    }
                    Poll::Pending
                })
                .await
            };

            match event {
                Event::Upstream(None) if answer.is_some() => {
                    let op = "read response body";
                    break Err(p.fail(ProxyError::UpstreamTimeout { op }));
                }
                Event::Client(None) | Event::Upstream(None) => {
                    p.read_client = true;
                    let e = request_body_error(RelayError::Read(Fail::Timeout));
                    break Err(p.fail(e));
                }
                Event::Client(Some(ready)) => {
                    client_wait.set(None);
                    let read = match (ready, d.conn.stream.is_tls()) {
                        (Err(e), _) => Err(e),
                        // (Readable, but another read may have taken what made it so:
                        // nothing there is a wait again, not a blocking read.)
                        (Ok(()), false) => match &d.conn.stream {
                            Stream::Plain(tcp) => relay::try_recv(tcp, &mut d.rbuf),
                            Stream::Tls(_) => Ok(None),
                        },
                        (Ok(()), true) => {
                            let mut client =
                                Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
                            match relay::read_ready(&mut client, &mut d.rbuf).await {
                                Ok(r) => Ok(r),
                                Err(Fail::Io(e)) => Err(e),
                                Err(f) => {
                                    break Err(p.fail(request_body_error(RelayError::Read(f))))
                                }
                            }
                        }
                    };
                    match read {
                        Ok(None) => continue,
                        Ok(Some(n)) if n > 0 => continue,
                        r => break Err(p.fail(client_read_error(r))),
                    }
                }
                Event::Upstream(Some(ready)) => {
                    watch.consumed();
                    let op = match answer {
                        None => "read response head",
                        Some(_) => "read response body",
                    };
                    if let Err(e) = ready {
                        break Err(p.fail(upstream_error(Fail::Io(e), op)));
                    }
                    if let Some(a) = &mut answer {
                        if a.pos == bufs.resp.len() {
                            a.body.empty_for_read(&mut bufs.resp, &mut a.pos);
                        }
                    }
                    let mut up_io = Io::new(up, &mut d.up_timer, up_timeout);
                    match relay::read_ready(&mut up_io, &mut bufs.resp).await {
                        // (Nothing of the response yet: a TLS session message.)
                        Ok(None) => continue,
                        Ok(Some(0)) | Err(Fail::Closed) => match &answer {
                            Some(a) if a.body.is_close_delimited() => {
                                break Ok(Sent::Answered {
                                    next: Next::Close,
                                    reusable: false,
                                });
                            }
                            _ => break Err(p.fail(ProxyError::UpstreamClosed { op })),
                        },
                        Ok(Some(_)) => p.got_response = true,
                        Err(f) => break Err(p.fail(upstream_error(f, op))),
                    }
                }
            }
        }

        // 3. Response bytes came: the head, then the body, as far as they go.
        if answer.is_none() {
            let resp = loop {
                match ex.parse_response_head(d, bufs, p) {
                    Ok(None) => continue 'upload,
                    Ok(Some(r)) if r.status == 101 => break 'upload Ok(Sent::Stopped),
                    Ok(Some(r)) if r.status < 200 => {
                        if let Err(e) = ex.forward_interim(d, bufs, &r, p).await {
                            break 'upload Err(e);
                        }
                    }
                    Ok(Some(r)) if r.status >= 400 => break 'upload Ok(Sent::Stopped),
                    Ok(Some(r)) => break r,
                    Err(e) => break 'upload Err(e),
                }
            };
            d.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
            d.outcome.upstream_status = resp.status;
            match start_answer(ex, d, bufs, &resp, p).await {
                Ok(a) => answer = Some(a),
                Err(e) => break Err(e),
            }
        } else if let Some(a) = &mut answer {
            let out = match a.body.consume(&mut bufs.resp, &mut a.pos) {
                Ok(out) => out,
                Err(e) => break Err(p.fail(response_body_error(e))),
            };
            let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
            if let Err((f, _)) = relay::write_range(&mut client, &mut bufs.resp, out).await {
                break Err(p.fail(client_write_error(f)));
            }
        }
        if let Some(a) = &mut answer {
            if a.body.is_done() {
                if let Err(e) = end_answer(d, a, client_timeout).await {
                    break Err(p.fail(e));
                }
                // The response ended first: the upload ends with it.
                break Ok(Sent::Answered {
                    next: Next::Close,
                    reusable: false,
                });
            }
        }
    };
    d.outcome.request_bytes += body.out_bytes();
    let Some(mut a) = answer else {
        return result;
    };
    // The upload is over (whole, or the upstream stopped taking it) while the
    // response goes on: the rest of it.
    let result = match result {
        Ok(Sent::Whole) => {
            let mut up_io = Io::new(up, &mut d.up_timer, up_timeout);
            let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
            let relayed = a
                .body
                .relay(&mut up_io, Some(&mut client), &mut bufs.resp, &mut a.pos)
                .await;
            match relayed {
                Ok(_) => Ok(Sent::Answered {
                    next: if a.close {
                        Next::Close
                    } else {
                        Next::KeepAlive
                    },
                    reusable: a.keep_alive && a.pos == bufs.resp.len() && p.request_consumed,
                }),
                Err(e) => Err(p.fail(response_body_error(e))),
            }
        }
        r => r,
    };
    d.outcome.response_bytes += a.body.out_bytes();
    result
}

/// Sends the client the head of a response that started during the upload, with
/// the body bytes that came with it.
async fn start_answer(
    ex: &Exchange<'_>,
    d: &mut Downstream<'_>,
    bufs: &mut Bufs,
    resp: &ResponseHead,
    p: &mut Progress,
) -> Result<Answer, ExchangeError> {
    // (The request is not all read: the head says `Connection: close`.)
    let (close, client_http10) = ex.client_head(d, bufs, resp, p);
    p.response_started = true;
    let mut pos = HEADROOM + resp.head_len;
    let mut body = Body::new(resp.framing, None, super::MAX_RESPONSE_HEAD, client_http10);
    let first = body
        .consume(&mut bufs.resp, &mut pos)
        .map_err(|e| p.fail(response_body_error(e)))?;
    let head_len = bufs.head.len();
    let timeout = d.client_timeout();
    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, timeout);
    let mut sent = relay::write_range(&mut client, &mut bufs.head, 0..head_len).await;
    if sent.is_ok() && !first.is_empty() {
        sent = relay::write_range(&mut client, &mut bufs.resp, first).await;
    }
    if let Err((f, _)) = sent {
        return Err(p.fail(client_write_error(f)));
    }
    d.outcome.status = resp.status;
    d.outcome.response_bytes = head_len as u64;
    Ok(Answer {
        body,
        pos,
        keep_alive: resp.keep_alive,
        close,
    })
}

/// Writes what a response that ended holds back to its end (a chunked body's
/// trailer section).
async fn end_answer(
    d: &mut Downstream<'_>,
    a: &mut Answer,
    timeout: std::time::Duration,
) -> Result<(), ProxyError> {
    if let Some(mut section) = a.body.trailer_section_to_relay() {
        let len = section.len();
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, timeout);
        if let Err((f, _)) = relay::write_range(&mut client, &mut section, 0..len).await {
            return Err(client_write_error(f));
        }
    }
    Ok(())
}

/// A read of the client's body that gave nothing (`Ok(Some(0))`: it closed) or
/// failed.
fn client_read_error(r: std::io::Result<Option<usize>>) -> ProxyError {
    let f = match r {
        Err(e) => Fail::Io(e),
        Ok(_) => Fail::Closed,
    };
    request_body_error(RelayError::Read(f))
}

fn response_body_error(e: RelayError) -> ProxyError {
    match e {
        RelayError::Write(f) => client_write_error(f),
        RelayError::Read(f) => upstream_error(f, "read response body"),
        RelayError::Framing(b) => ProxyError::BadResponseBody(b),
        // (Response bodies have no limit.)
        RelayError::TooLarge => {
            ProxyError::BadResponseBody(crate::http::body::BodyError("too large"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::final_status;

    #[test]
    fn the_final_status_skips_interim_responses() {
        assert_eq!(
            final_status(b"HTTP/1.1 413 Payload Too Large\r\n"),
            Some(b'4')
        );
        assert_eq!(final_status(b"HTTP/1.1 2"), Some(b'2'));
        assert_eq!(final_status(b"HTTP/1.1 "), None);
        let interim = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 500 x\r\n";
        assert_eq!(final_status(interim), Some(b'5'));
        assert_eq!(final_status(&interim[..30]), None);
        assert_eq!(final_status(&interim[..45]), None);
        assert_eq!(final_status(b"garbage!!!"), Some(b'?'));
    }
}
