//! An HTTP/1.1 client's request to an HTTP/2 cluster (`protocol = "h2"` or
//! `"h2c"`): the rewritten head becomes an HTTP/2 request (`h2::translate`), the
//! body (de-chunked, its trailer fields as trailers) goes out as DATA frames as the
//! upstream's window allows, and the response comes back as HTTP/1.1: with its
//! Content-Length when it has one, else chunked (close-delimited for an HTTP/1.0
//! client), its trailers as a chunked trailer section.
//!
//! The request body is sent before the response is read (as for HTTP/1.1
//! upstreams); full duplex is the HTTP/2 client's path (`h2::proxy`).

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
            send_body(d, head, &mut up)
                .await
                .map_err(|e| fail(e, false, false))?;
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
    let status = parts.status.as_u16();
    d.outcome.upstream_status = status;

    // The head, through the HTTP/1.1 response rewrite.
    let is_head = head.method == Method::Head;
    buf.clear();
    h1_head_of(&parts, buf);
    let rh = match parse_response(buf, usize::MAX, is_head, &mut d.resp_headers) {
        Ok(Some(rh)) => rh,
        _ => {
            let e = crate::http::parse::ParseError::Malformed("HTTP/2 response head");
            return Err(fail(ProxyError::BadResponse(e), false, true));
        }
    };
    let client_http10 = head.version == Version::Http10;
    let framing = match rh.framing {
        Framing::Length(n) => ClientFraming::Length(n),
        Framing::None => ClientFraming::None {
            keep_length: is_head || status == 304,
        },
        _ if up_body.is_end_stream() => ClientFraming::Length(0),
        _ if client_http10 => ClientFraming::CloseDelimited,
        _ => ClientFraming::Chunked,
    };
    let close = !head.keep_alive || d.conn.is_closing() || framing == ClientFraming::CloseDelimited;
    let conn = match (close, client_http10) {
        (true, _) => ConnHeader::Close,
        (false, true) => ConnHeader::KeepAlive,
        (false, false) => ConnHeader::None,
    };
    let mut out = w.bufs.take();
    w.date.with(|date| {
        let rw = ResponseRewrite {
            edits: &route.response_headers,
            framing,
            conn,
            date,
        };
        write_response_head(&mut out, buf, &rh, &d.resp_headers, &rw)
    });
    let result = relay_response(d, &mut out, &mut up_body, framing, is_head, up_timeout).await;
    w.bufs.give(out);
    result.map(|()| if close { Next::Close } else { Next::KeepAlive })
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

/// Streams the client's request body (de-chunked; a chunked body's trailer fields
/// as trailers) to the upstream stream as its window allows.
async fn send_body(
    d: &mut Downstream<'_>,
    head: &RequestHead,
    up: &mut SendStream<Bytes>,
) -> Result<(), ProxyError> {
    let client_timeout = d.client_timeout();
    if head.expect_continue && d.pos == d.rbuf.len() {
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
        relay::write_static(&mut client, b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(client_write_error)?;
    }
    let limits = &d.settings.config.limits;
    let mut body = Body::new(
        head.framing,
        limits.max_body_bytes,
        limits.max_head_bytes,
        true,
    );
    let closed = || ProxyError::UpstreamClosed {
        op: "write request body",
    };
    let result = loop {
        if d.pos < d.rbuf.len() {
            let range = match body.consume(&mut d.rbuf, &mut d.pos) {
                Ok(r) => r,
                Err(e) => break Err(request_body_error(e)),
            };
            let data = Bytes::copy_from_slice(&d.rbuf[range]);
            let sent = super::send_data(up, data, false, &mut d.up_timer, client_timeout).await;
            if let Err(f) = sent {
                break Err(super::proxy::upstream_send_error(f));
            }
        }
        if body.is_done() {
            let sent = match body.take_trailer_section() {
                Some(section) => {
                    let mut map = HeaderMap::new();
                    add_fields(&mut map, &section);
                    up.send_trailers(map)
                }
                None => up.send_data(Bytes::new(), true),
            };
            break sent.map_err(|_| closed());
        }
        d.rbuf.clear();
        d.pos = 0;
        let mut client = Io::new(&mut d.conn.stream, &mut d.conn.timer, client_timeout);
        match relay::read_into(&mut client, &mut d.rbuf).await {
            Ok(0) => break Err(request_body_error(RelayError::Read(Fail::Closed))),
            Ok(_) => {}
            Err(f) => break Err(request_body_error(RelayError::Read(f))),
        }
    };
    d.outcome.request_bytes += body.out_bytes();
    result
}
