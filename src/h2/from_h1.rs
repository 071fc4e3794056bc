//! An HTTP/1.1 client's request to an HTTP/2 cluster (`protocol = "h2"` or
//! `"h2c"`): the rewritten head becomes an HTTP/2 request (`h2::translate`), the
//! body (de-chunked, its trailer fields as trailers) goes out as DATA frames as the
//! upstream's window allows, and the response comes back as HTTP/1.1: with its
//! Content-Length when it has one, else chunked (close-delimited for an HTTP/1.0
//! client), its trailers as a chunked trailer section.
//!
//! A request with a body is full duplex ([`duplex`]): the body goes up while the
//! response head and body come back, one task doing whichever is ready (as the
//! WebSocket tunnel does), so an upstream that answers early, or streams its
//! answer while it reads, is relayed as it goes.

use super::translate::{add_fields, h1_head_of, request_of, write_chunk, write_last_chunk};
use super::upstream::{open_any, Opened};
use crate::clock::Stamp;
use crate::config::UpstreamProtocol;
use crate::downstream::{request_body_error, Downstream, Failure, Next};
use crate::error::ProxyError;
use crate::http::answer::ConnHeader;
use crate::http::parse::{parse_response, Framing, Method, RequestHead, Version};
use crate::http::rewrite::{write_response_head, ClientFraming, ResponseRewrite};
use crate::outcome::timeout_kind;
use crate::relay::{self, Body, Fail, Io, RelayError};
use crate::route::Route;
use crate::snapshot::{ClusterRt, Snapshot};
use crate::upstream::{client_write_error, write_upstream_head, InFlight};
use crate::worker::Worker;
use bytes::Bytes;
use h2::SendStream;
use http::HeaderMap;
use std::future::Future;

pub async fn forward(
    d: &mut Downstream<'_>,
    w: &Worker,
    snapshot: &Snapshot,
    head: &RequestHead,
    route: &Route,
    cluster: &ClusterRt,
) -> Result<Next, Failure> {
    let fail = |error, started: bool, consumed: bool| Failure {
        error,
        response_started: started,
        request_consumed: consumed,
    };
    let mut buf = w.bufs.take();
    write_upstream_head(d, w, snapshot, head, route, cluster, &mut buf);
    let scheme = match cluster.config.protocol {
        UpstreamProtocol::H2 => "https",
        _ => "http",
    };
    let req = request_of(&buf, scheme);
    let result = match req {
        Err(e) => Err(fail(e, false, !head.has_body())),
        Ok(req) => exchange(d, w, head, route, cluster, req, scheme, &mut buf).await,
    };
    w.bufs.give(buf);
    if let Err(f) = &result {
        if let Some(kind) = timeout_kind(&f.error) {
            cluster.stats.timeouts[kind as usize].inc();
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn exchange(
    d: &mut Downstream<'_>,
    w: &Worker,
    head: &RequestHead,
    route: &Route,
    cluster: &ClusterRt,
    req: http::Request<()>,
    scheme: &'static str,
    buf: &mut Vec<u8>,
) -> Result<Next, Failure> {
    let fail = |error, started: bool, consumed: bool| Failure {
        error,
        response_started: started,
        request_consumed: consumed,
    };
    let end_stream = !head.has_body();
    let up_timeout = cluster.config.response_timeout;
    let mut retries = 0;
    let mut first = Some(req);
    let head_text = &*buf;
    let remake = || request_of(head_text, scheme);
    // (The stream's lease and in-flight count last as long as its response.)
    let (resp, _lease, _in_flight, sent_at) = loop {
        let req = match first.take() {
            Some(req) => req,
            None => remake().map_err(|e| fail(e, false, end_stream))?,
        };
        let opened = open_any(
            cluster,
            req,
            &remake,
            end_stream,
            &mut d.up_timer,
            &mut d.outcome,
        );
        let (ep, opened) = opened.await.map_err(|e| fail(e, false, end_stream))?;
        let in_flight = InFlight::of(&cluster.endpoints[ep].stats.in_flight);
        let Opened {
            response,
            send: mut up,
            lease,
        } = opened;
        if !end_stream {
            let sent_at = Stamp::now();
            let result = duplex(d, w, head, route, &mut up, response, sent_at, up_timeout).await;
            drop((lease, in_flight));
            return result;
        }
        let sent_at = Stamp::now();
        match d.up_timer.run(up_timeout, response).await {
            Some(Ok(resp)) => break (resp, lease, in_flight, sent_at),
            Some(Err(e)) => {
                let op = "read response head";
                let source = std::io::Error::other(e);
                let error = ProxyError::Upstream { op, source };
                // A stream the upstream did not process (RFC 9113 §8.7) is sent
                // again when it had no body (a body was read from the client).
                if end_stream && retries < super::UNPROCESSED_RETRIES && super::unprocessed(&error)
                {
                    tracing::debug!(error = %error, "upstream did not process the stream, retrying");
                    retries += 1;
                    cluster.stats.retries.inc();
                    d.outcome.flags.set(crate::outcome::Flags::RETRIED);
                    continue;
                }
                return Err(fail(error, false, true));
            }
            None => return Err(fail(ProxyError::ResponseTimeout, false, true)),
        }
    };
    d.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
    let (parts, mut up_body) = resp.into_parts();
    let is_head = head.method == Method::Head;
    let mut out = w.bufs.take();
    let ended = up_body.is_end_stream();
    let framed = response_head(d, w, head, route, &parts, ended, false, buf, &mut out);
    let result = match framed {
        Ok((framing, close)) => {
            relay_response(d, &mut out, &mut up_body, framing, is_head, up_timeout)
                .await
                .map(|()| if close { Next::Close } else { Next::KeepAlive })
        }
        Err(e) => Err(fail(e, false, true)),
    };
    w.bufs.give(out);
    result
}

/// Writes the client's response head for the upstream's into `out` (through the
/// HTTP/1.1 response rewrite, `buf` its scratch space): how its body is framed,
/// and whether the connection closes after it (`upload_pending`: the request
/// body is not all sent yet, so the connection may not be in step after it).
#[allow(clippy::too_many_arguments)]
fn response_head(
    d: &mut Downstream<'_>,
    w: &Worker,
    head: &RequestHead,
    route: &Route,
    parts: &http::response::Parts,
    body_ended: bool,
    upload_pending: bool,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(ClientFraming, bool), ProxyError> {
    let status = parts.status.as_u16();
    d.outcome.upstream_status = status;
    let is_head = head.method == Method::Head;
    buf.clear();
    h1_head_of(parts, buf);
    let rh = match parse_response(buf, usize::MAX, is_head, &mut d.resp_headers) {
        Ok(Some(rh)) => rh,
        _ => {
            let e = crate::http::parse::ParseError::Malformed("HTTP/2 response head");
            return Err(ProxyError::BadResponse(e));
        }
    };
    let client_http10 = head.version == Version::Http10;
    let framing = match rh.framing {
        Framing::Length(n) => ClientFraming::Length(n),
        Framing::None => ClientFraming::None {
            keep_length: is_head || status == 304,
        },
        _ if body_ended => ClientFraming::Length(0),
        _ if client_http10 => ClientFraming::CloseDelimited,
        _ => ClientFraming::Chunked,
    };
    let close = !head.keep_alive
        || d.conn.is_closing()
        || framing == ClientFraming::CloseDelimited
        || upload_pending;
    let conn = match (close, client_http10) {
        (true, _) => ConnHeader::Close,
        (false, true) => ConnHeader::KeepAlive,
        (false, false) => ConnHeader::None,
    };
    w.date.with(|date| {
        let rw = ResponseRewrite {
            edits: &route.response_headers,
            framing,
            conn,
            date,
        };
        write_response_head(out, buf, &rh, &d.resp_headers, &rw)
    });
    Ok((framing, close))
}

/// Writes the response head in `out` to the client, then the body and trailers.
async fn relay_response(
    d: &mut Downstream<'_>,
    out: &mut Vec<u8>,
    up_body: &mut h2::RecvStream,
    framing: ClientFraming,
    is_head: bool,
    up_timeout: std::time::Duration,
) -> Result<(), Failure> {
    let started = |error| Failure {
        error,
        response_started: true,
        request_consumed: true,
    };
    let client_timeout = d.client_timeout();
    let len = out.len();
    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
    relay::write_range(&mut client, out, 0..len)
        .await
        .map_err(|(f, _)| Failure {
            error: client_write_error(f),
            response_started: false,
            request_consumed: true,
        })?;
    d.outcome.status = d.outcome.upstream_status;
    d.outcome.response_bytes = len as u64;
    if is_head || matches!(framing, ClientFraming::None { .. }) {
        return Ok(());
    }
    let chunked = framing == ClientFraming::Chunked;
    loop {
        let next = d.up_timer.run(up_timeout, up_body.data()).await;
        let data = match next {
            Some(Some(Ok(data))) => data,
            Some(None) => break,
            Some(Some(Err(e))) => {
                let op = "read response body";
                let source = std::io::Error::other(e);
                return Err(started(ProxyError::Upstream { op, source }));
            }
            None => {
                return Err(started(ProxyError::UpstreamTimeout {
                    op: "read response body",
                }))
            }
        };
        let n = data.len();
        if n == 0 {
            continue;
        }
        out.clear();
        if chunked {
            write_chunk(out, &data);
        } else {
            out.extend_from_slice(&data);
        }
        let len = out.len();
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
        relay::write_range(&mut client, out, 0..len)
            .await
            .map_err(|(f, _)| started(client_write_error(f)))?;
        d.outcome.response_bytes += len as u64;
        let _ = up_body.flow_control().release_capacity(n);
    }
    if chunked {
        let trailers = match d.up_timer.run(up_timeout, up_body.trailers()).await {
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                let op = "read response trailers";
                let source = std::io::Error::other(e);
                return Err(started(ProxyError::Upstream { op, source }));
            }
            None => {
                return Err(started(ProxyError::UpstreamTimeout {
                    op: "read response body",
                }))
            }
        };
        out.clear();
        write_last_chunk(out, trailers.as_ref());
        let len = out.len();
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
        relay::write_range(&mut client, out, 0..len)
            .await
            .map_err(|(f, _)| started(client_write_error(f)))?;
        d.outcome.response_bytes += len as u64;
    }
    Ok(())
}

/// What [`duplex`] waited for.
enum Event {
    Head(Result<http::Response<h2::RecvStream>, h2::Error>),
    Data(Option<Result<Bytes, h2::Error>>),
    Trailers(Result<Option<HeaderMap>, h2::Error>),
    /// Room in the upstream's window for the piece of body in hand (`None`: the
    /// stream no longer takes data).
    Room(Option<Result<usize, h2::Error>>),
    /// The client's socket became readable (`None`: not within the listener's
    /// `idle_timeout`).
    ClientReadable(Option<std::io::Result<()>>),
}

/// Where the request body is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upload {
    Sending,
    /// Sent whole, with its end.
    Done,
    /// The upstream stopped taking it (it reset its side after an early answer).
    Stopped,
}

/// The response's progress.
enum Down {
    WaitingHead,
    /// Its head went to the client; its body is relayed (`chunked`: as chunks,
    /// then its trailers).
    Body {
        up_body: h2::RecvStream,
        chunked: bool,
        close: bool,
        trailers: bool,
    },
    Done {
        close: bool,
    },
}

/// The request body and the response at once. Each turn does what is ready: a
/// piece of the client's body goes up as the upstream's window allows, the
/// response head or a piece of its body goes to the client. Nothing is cancelled
/// halfway: the waits are for readiness (the client's socket, the window, the
/// response), and the reads and writes they lead to are done whole.
///
/// A response that starts before the whole body went up says `Connection: close`
/// (the connection may not be in step after it); one that ends before the body
/// did ends the upload (the stream is reset); an upstream that stops taking the body (a reset after
/// an early answer) stops the upload, and its response still comes through. Waits
/// are bounded by the cluster's `response_timeout` while the response is not
/// over (a long-lived upload may be quiet one way while the other flows), and
/// a wait for more of the body, and the writes to the client, by the
/// listener's `idle_timeout` too. (A client that sends its whole body before it
/// reads, to an upstream that answers at length while it reads, is stalled as it
/// would be talking to that upstream directly: the proxy waits on its writes.)
#[allow(clippy::too_many_arguments)]
async fn duplex(
    d: &mut Downstream<'_>,
    w: &Worker,
    head: &RequestHead,
    route: &Route,
    up: &mut SendStream<Bytes>,
    response: h2::client::ResponseFuture,
    mut sent_at: Stamp,
    up_timeout: std::time::Duration,
) -> Result<Next, Failure> {
    let client_timeout = d.client_timeout();
    let is_head = head.method == Method::Head;
    let limits = &d.settings.config.limits;
    let mut body = Body::new(
        head.framing,
        limits.max_body_bytes,
        limits.max_head_bytes,
        true,
    );
    let mut out = w.bufs.take();
    let mut scratch = w.bufs.take();
    let mut response = std::pin::pin!(response);
    let mut upload = Upload::Sending;
    let mut piece: Option<Bytes> = None;
    let mut down = Down::WaitingHead;
    let result: Result<bool, (ProxyError, bool)> = 'exchange: {
        if head.expect_continue && d.pos == d.rbuf.len() {
            let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
            if let Err(f) = relay::write_static(&mut client, b"HTTP/1.1 100 Continue\r\n\r\n").await
            {
                break 'exchange Err((client_write_error(f), false));
            }
        }
        loop {
            let started = !matches!(down, Down::WaitingHead);
            // What the client's bytes in hand hold of the body, and its end.
            if upload == Upload::Sending && piece.is_none() && d.pos < d.rbuf.len() {
                match body.consume(&mut d.rbuf, &mut d.pos) {
                    Ok(r) if !r.is_empty() => piece = Some(Bytes::copy_from_slice(&d.rbuf[r])),
                    Ok(_) => {}
                    Err(e) => break 'exchange Err((request_body_error(e), started)),
                }
            }
            if upload == Upload::Sending && piece.is_none() && body.is_done() {
                let sent = match body.take_trailer_section() {
                    Some(section) => {
                        let mut map = HeaderMap::new();
                        add_fields(&mut map, &section);
                        up.send_trailers(map)
                    }
                    None => up.send_data(Bytes::new(), true),
                };
                upload = if sent.is_ok() {
                    Upload::Done
                } else {
                    Upload::Stopped
                };
                // (The upstream's time counts from the request sent, as for
                // HTTP/1.1 upstreams.)
                if matches!(down, Down::WaitingHead) {
                    sent_at = Stamp::now();
                }
            }
            if let Down::Done { close } = down {
                break 'exchange Ok(close || upload != Upload::Done);
            }
            let wants_client = upload == Upload::Sending && piece.is_none();
            if wants_client && d.pos == d.rbuf.len() {
                d.rbuf.clear();
                d.pos = 0;
            }
            if let Some(p) = &piece {
                up.reserve_capacity(p.len());
            }
            // Wait for whatever comes first.
            let event = {
                let conn = &mut *d.conn;
                let (stream, timer) = (&mut conn.stream, &mut conn.timer);
                let mut readable = std::pin::pin!(
                    wants_client.then(|| timer.run(client_timeout, stream.readable()))
                );
                let has_piece = piece.is_some();
                let wait = std::future::poll_fn(|c| {
                    use std::task::Poll;
                    let got = match &mut down {
                        Down::WaitingHead => response.as_mut().poll(c).map(Event::Head),
                        Down::Body {
                            trailers: false,
                            up_body,
                            ..
                        } => up_body.poll_data(c).map(Event::Data),
                        Down::Body { up_body, .. } => up_body.poll_trailers(c).map(Event::Trailers),
                        Down::Done { .. } => Poll::Pending,
                    };
                    if got.is_ready() {
                        return got;
                    }
                    if has_piece {
                        if let Poll::Ready(r) = up.poll_capacity(c) {
                            return Poll::Ready(Event::Room(r));
                        }
                    }
                    if let Some(r) = readable.as_mut().as_pin_mut() {
                        return r.poll(c).map(Event::ClientReadable);
                    }
                    Poll::Pending
                });
                d.up_timer.run(up_timeout, wait).await
            };
            let Some(event) = event else {
                break 'exchange Err(match down {
                    Down::WaitingHead => (ProxyError::ResponseTimeout, false),
                    _ => (
                        ProxyError::UpstreamTimeout {
                            op: "read response body",
                        },
                        true,
                    ),
                });
            };
            match event {
                Event::Room(Some(Ok(0))) => {}
                Event::Room(Some(Ok(n))) => {
                    let Some(p) = piece.as_mut() else { continue };
                    let chunk = p.split_to(n.min(p.len()));
                    if up.send_data(chunk, false).is_err() {
                        (upload, piece) = (Upload::Stopped, None);
                    } else if p.is_empty() {
                        piece = None;
                    }
                }
                // The upstream stopped taking the body: its response (an early
                // answer) still comes.
                Event::Room(_) => (upload, piece) = (Upload::Stopped, None),
                Event::ClientReadable(None) => {
                    let e = request_body_error(RelayError::Read(Fail::Timeout));
                    break 'exchange Err((e, started));
                }
                Event::ClientReadable(Some(Err(e))) => {
                    let e = request_body_error(RelayError::Read(Fail::Io(e)));
                    break 'exchange Err((e, started));
                }
                Event::ClientReadable(Some(Ok(()))) => {
                    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
                    let e = match relay::read_into(&mut client, &mut d.rbuf).await {
                        Ok(0) => RelayError::Read(Fail::Closed),
                        Ok(_) => continue,
                        Err(f) => RelayError::Read(f),
                    };
                    break 'exchange Err((request_body_error(e), started));
                }
                Event::Head(Err(e)) => {
                    let op = "read response head";
                    let source = std::io::Error::other(e);
                    break 'exchange Err((ProxyError::Upstream { op, source }, false));
                }
                Event::Head(Ok(resp)) => {
                    d.outcome.upstream_ns = Some(Stamp::now().nanos_since(sent_at));
                    let (parts, up_body) = resp.into_parts();
                    out.clear();
                    let ended = up_body.is_end_stream();
                    let pending = upload != Upload::Done;
                    let framed = response_head(
                        d,
                        w,
                        head,
                        route,
                        &parts,
                        ended,
                        pending,
                        &mut scratch,
                        &mut out,
                    );
                    let (framing, close) = match framed {
                        Ok(f) => f,
                        Err(e) => break 'exchange Err((e, false)),
                    };
                    let len = out.len();
                    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
                    if let Err((f, _)) = relay::write_range(&mut client, &mut out, 0..len).await {
                        break 'exchange Err((client_write_error(f), false));
                    }
                    d.outcome.status = d.outcome.upstream_status;
                    d.outcome.response_bytes = len as u64;
                    down = if is_head || matches!(framing, ClientFraming::None { .. }) {
                        Down::Done { close }
                    } else {
                        Down::Body {
                            up_body,
                            chunked: framing == ClientFraming::Chunked,
                            close,
                            trailers: false,
                        }
                    };
                }
                Event::Data(Some(Ok(data))) => {
                    let Down::Body {
                        up_body, chunked, ..
                    } = &mut down
                    else {
                        continue;
                    };
                    let n = data.len();
                    if n == 0 {
                        continue;
                    }
                    out.clear();
                    if *chunked {
                        write_chunk(&mut out, &data);
                    } else {
                        out.extend_from_slice(&data);
                    }
                    let len = out.len();
                    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
                    if let Err((f, _)) = relay::write_range(&mut client, &mut out, 0..len).await {
                        break 'exchange Err((client_write_error(f), true));
                    }
                    d.outcome.response_bytes += len as u64;
                    let _ = up_body.flow_control().release_capacity(n);
                }
                Event::Data(Some(Err(e))) => {
                    let op = "read response body";
                    let source = std::io::Error::other(e);
                    break 'exchange Err((ProxyError::Upstream { op, source }, true));
                }
                Event::Data(None) => match &mut down {
                    Down::Body {
                        chunked: true,
                        trailers,
                        ..
                    } => *trailers = true,
                    Down::Body { close, .. } => down = Down::Done { close: *close },
                    _ => {}
                },
                Event::Trailers(Err(e)) => {
                    let op = "read response trailers";
                    let source = std::io::Error::other(e);
                    break 'exchange Err((ProxyError::Upstream { op, source }, true));
                }
                Event::Trailers(Ok(trailers)) => {
                    let close = matches!(down, Down::Body { close: true, .. });
                    out.clear();
                    write_last_chunk(&mut out, trailers.as_ref());
                    let len = out.len();
                    let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
                    if let Err((f, _)) = relay::write_range(&mut client, &mut out, 0..len).await {
                        break 'exchange Err((client_write_error(f), true));
                    }
                    d.outcome.response_bytes += len as u64;
                    down = Down::Done { close };
                }
            }
        }
    };
    w.bufs.give(out);
    w.bufs.give(scratch);
    d.outcome.request_bytes += body.out_bytes();
    if upload == Upload::Sending {
        // (The response ended first, or the exchange failed: the upstream gets no
        // more of this request.)
        up.send_reset(h2::Reason::CANCEL);
    }
    match result {
        Ok(close) => Ok(if close { Next::Close } else { Next::KeepAlive }),
        Err((error, response_started)) => Err(Failure {
            error,
            response_started,
            request_consumed: upload == Upload::Done,
        }),
    }
}
