//! The protocol-neutral decision about a request, shared by the HTTP/1.1
//! (`conn`) and HTTP/2 (`h2::server`) servers: the listener's checks, then the route
//! table, giving what to do (forward, answer, or no route). Both servers present the
//! request as an HTTP/1.1 head in a buffer (HTTP/2 writes one from its header
//! list), so routing, header rewriting, request ids and access log fields read one
//! representation.

use crate::downstream::{refused, Failure};
use crate::error::ProxyError;
use crate::http::answer::Answer;
use crate::http::parse::{Framing, HeaderSpan, Method, RequestHead};
use crate::outcome::Outcome;
use crate::route::{Action, RequestView, Route};
use crate::snapshot::{ListenerSettings, Snapshot};

/// What routing decided for a request.
pub enum Act<'s> {
    Forward(&'s Route, usize),
    /// A route's pre-rendered answer, or a redirect made for this request.
    Answer(std::borrow::Cow<'s, Answer>),
    NoRoute,
}

/// The connection a request came on, as the decision sees it.
pub struct Client<'a> {
    /// Its listener's index (route `listener` matches).
    pub listener: u32,
    /// The TLS client's SNI.
    pub sni: Option<&'a [u8]>,
    /// The connection is TLS (redirects keep the scheme).
    pub tls: bool,
    /// For a redirect of a request without Host: the address connected to.
    pub local_addr: &'a dyn Fn() -> Option<std::net::SocketAddr>,
    pub settings: &'a ListenerSettings,
}

/// What to do with a request: the listener's checks, then the route table. Notes
/// the route and cluster in `outcome`.
#[inline(always)]
pub fn decide<'s>(
    snapshot: &'s Snapshot,
    head: &RequestHead,
    buf: &[u8],
    headers: &[HeaderSpan],
    client: &Client<'_>,
    outcome: &mut Outcome,
) -> Result<Act<'s>, Failure> {
    if head.method == Method::Connect {
        return Err(refused(ProxyError::MethodNotAllowed, !head.has_body()));
    }
    let limits = &client.settings.config.limits;
    if let (Framing::Length(n), Some(max)) = (head.framing, limits.max_body_bytes) {
        if n > max {
            return Err(refused(ProxyError::BodyTooLarge, false));
        }
    }
    let view = RequestView {
        buf,
        method: head.method_span.get(buf),
        host: head.host().map(|h| h.get(buf)),
        path: head.path.get(buf),
        query: head.query.map(|q| q.get(buf)),
        headers,
        listener: client.listener,
        sni: client.sni,
    };
    let Some(index) = snapshot.routes.lookup(&view) else {
        return Ok(Act::NoRoute);
    };
    let route = snapshot.routes.route(index);
    outcome.route = Some(index as u32);
    if head.websocket && !route.websocket {
        return Err(refused(ProxyError::UpgradeRefused, !head.has_body()));
    }
    Ok(match &route.action {
        Action::Forward(cluster) => {
            outcome.cluster = Some(*cluster as u32);
            // A WebSocket is forwarded to HTTP/1.1 upstreams only (it is not spoken
            // to HTTP/2 ones as RFC 8441's extended CONNECT).
            if head.websocket
                && snapshot.clusters[*cluster].config.protocol
                    != crate::config::UpstreamProtocol::Http1
            {
                return Err(refused(ProxyError::UpgradeRefused, !head.has_body()));
            }
            Act::Forward(route, *cluster)
        }
        Action::Answer(answer) => Act::Answer(std::borrow::Cow::Borrowed(answer)),
        Action::Redirect {
            status,
            parts,
            edits,
        } => {
            // Without a Host (HTTP/1.0): the address the client connected to.
            let local;
            let host = match view.host {
                Some(h) => h,
                None => {
                    local = (client.local_addr)()
                        .unwrap_or(client.settings.config.bind)
                        .to_string();
                    local.as_bytes()
                }
            };
            let location = crate::http::answer::redirect_location(
                parts, client.tls, host, view.path, view.query,
            );
            Act::Answer(std::borrow::Cow::Owned(Answer::redirect(
                *status, &location, edits,
            )))
        }
    })
}
