//! The proxy's error model: which side failed and how, and the one place that maps
//! an error to the HTTP status the client sees (or to a silent close).

use crate::http::body::BodyError;
use crate::http::parse::ParseError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // --- downstream (client) side ---
    #[error("bad request: {0}")]
    BadRequest(#[from] ParseError),
    #[error("bad request body: {0}")]
    BadRequestBody(BodyError),
    #[error("request head not received in time")]
    HeadTimeout,
    #[error("request body exceeds the limit")]
    BodyTooLarge,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the route does not allow WebSocket upgrades")]
    UpgradeRefused,
    #[error("no route matches")]
    NoRoute,
    #[error("client {op}: {source}")]
    Client { op: &'static str, source: io::Error },
    #[error("client {op} timed out")]
    ClientTimeout { op: &'static str },
    #[error("client closed the connection during {op}")]
    ClientClosed { op: &'static str },

    // --- upstream side ---
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: std::net::SocketAddr },
    #[error("TLS with {addr}: {reason}")]
    UpstreamTls {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// A TLS error after the handshake: an alert from the upstream (a TLS 1.3
    /// upstream refuses a client certificate with the first record it sends
    /// after the handshake), or a record that does not decrypt.
    #[error("upstream TLS during {op}: {source}")]
    UpstreamTlsRecord { op: &'static str, source: io::Error },
    #[error("upstream {op}: {source}")]
    Upstream { op: &'static str, source: io::Error },
    #[error("upstream closed the connection during {op}")]
    UpstreamClosed { op: &'static str },
    #[error("upstream response head not received in time")]
    ResponseTimeout,
    #[error("upstream {op} timed out")]
    UpstreamTimeout { op: &'static str },
    #[error("bad upstream response: {0}")]
    BadResponse(ParseError),
    #[error("bad upstream response body: {0}")]
    BadResponseBody(BodyError),
    #[error("upstream answered 101 Switching Protocols, which is not enabled")]
    UnexpectedUpgrade,
}

impl ProxyError {
    /// The status to answer with if no response byte was sent yet; `None` means the
    /// connection is closed without an answer (the client is gone or misbehaving at
    /// the transport level).
    pub fn status(&self) -> Option<u16> {
        use ProxyError::*;
        match self {
            BadRequest(ParseError::HeadTooLarge | ParseError::TooManyHeaders) => Some(431),
            BadRequest(ParseError::UriTooLong) => Some(414),
            BadRequest(ParseError::Version) => Some(505),
            BadRequest(ParseError::UnsupportedCoding) => Some(501),
            BadRequest(ParseError::Malformed(_)) | BadRequestBody(_) => Some(400),
            HeadTimeout => Some(408),
            BodyTooLarge => Some(413),
            MethodNotAllowed => Some(405),
            UpgradeRefused => Some(403),
            NoRoute => Some(404),
            Client { .. } | ClientTimeout { .. } | ClientClosed { .. } => None,
            Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused => {
                Some(502)
            }
            Connect { .. } | UpstreamTls { .. } | UpstreamTlsRecord { .. } => Some(502),
            ConnectTimeout { .. } => Some(503),
            Upstream { .. } | UpstreamClosed { .. } | BadResponse(_) | BadResponseBody(_) => {
                Some(502)
            }
            UnexpectedUpgrade => Some(502),
            ResponseTimeout | UpstreamTimeout { .. } => Some(504),
        }
    }

    /// Errors caused by the client; logged at debug, not as proxy failures.
    pub fn is_downstream(&self) -> bool {
        use ProxyError::*;
        matches!(
            self,
            BadRequest(_)
                | BadRequestBody(_)
                | HeadTimeout
                | BodyTooLarge
                | MethodNotAllowed
                | UpgradeRefused
                | NoRoute
                | Client { .. }
                | ClientTimeout { .. }
                | ClientClosed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_in_one_place() {
        let io = |k| io::Error::from(k);
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases: Vec<(ProxyError, Option<u16>)> = vec![
            (ProxyError::BadRequest(ParseError::HeadTooLarge), Some(431)),
            (
                ProxyError::BadRequest(ParseError::TooManyHeaders),
                Some(431),
            ),
            (ProxyError::BadRequest(ParseError::UriTooLong), Some(414)),
            (
                ProxyError::BadRequest(ParseError::Malformed("x")),
                Some(400),
            ),
            (ProxyError::BadRequest(ParseError::Version), Some(505)),
            (
                ProxyError::BadRequest(ParseError::UnsupportedCoding),
                Some(501),
            ),
            (ProxyError::BadRequestBody(BodyError("x")), Some(400)),
            (ProxyError::HeadTimeout, Some(408)),
            (ProxyError::BodyTooLarge, Some(413)),
            (ProxyError::NoRoute, Some(404)),
            (ProxyError::ClientClosed { op: "read" }, None),
            (
                ProxyError::Connect {
                    addr,
                    source: io(io::ErrorKind::ConnectionRefused),
                },
                Some(502),
            ),
            (ProxyError::ConnectTimeout { addr }, Some(503)),
            (ProxyError::ResponseTimeout, Some(504)),
            (
                ProxyError::UpstreamClosed {
                    op: "read response head",
                },
                Some(502),
            ),
            (
                ProxyError::BadResponse(ParseError::Malformed("x")),
                Some(502),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.status(), want, "{e}");
        }
    }
}
