//! What became of one request: the figures the connection and `upstream::forward`
//! note as the request goes, which metrics (and the access log) read once it ends.
//! Filled in place in the connection's burst state: nothing is allocated per
//! request.

use crate::clock::Stamp;
use crate::error::ProxyError;
use crate::http::parse::ParseError;
use crate::metrics::{RejectReason, TimeoutKind};

/// Why a request ended as it did, in the manner of Envoy's response flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u16);

impl Flags {
    /// No route matched (`NR`).
    pub const NO_ROUTE: Flags = Flags(1);
    /// An upstream connection could not be made (`UF`).
    pub const UPSTREAM_CONNECT_FAILURE: Flags = Flags(1 << 1);
    /// An upstream timeout: connect, response head or body stall (`UT`).
    pub const UPSTREAM_TIMEOUT: Flags = Flags(1 << 2);
    /// The upstream closed or reset the connection (`UC`).
    pub const UPSTREAM_CONNECTION_TERMINATION: Flags = Flags(1 << 3);
    /// The upstream's response was malformed (`UPE`).
    pub const UPSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 4);
    /// The client closed or reset the connection before the response ended (`DC`).
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Flags = Flags(1 << 5);
    /// The request was malformed or over a limit (`DPE`).
    pub const DOWNSTREAM_PROTOCOL_ERROR: Flags = Flags(1 << 6);
    /// The client was too slow (`DT`).
    pub const DOWNSTREAM_TIMEOUT: Flags = Flags(1 << 7);
    /// The request was retried on a fresh connection (`URX`-like: `RR`).
    pub const RETRIED: Flags = Flags(1 << 8);
    /// The TLS handshake with the upstream failed: its certificate did not verify,
    /// or no protocol in common (`UTLS`, with `UF`).
    pub const UPSTREAM_TLS_FAILURE: Flags = Flags(1 << 9);

    pub(crate) const NAMES: [(Flags, &'static str); 10] = [
        (Flags::NO_ROUTE, "NR"),
        (Flags::UPSTREAM_CONNECT_FAILURE, "UF"),
        (Flags::UPSTREAM_TIMEOUT, "UT"),
        (Flags::UPSTREAM_CONNECTION_TERMINATION, "UC"),
        (Flags::UPSTREAM_PROTOCOL_ERROR, "UPE"),
        (Flags::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (Flags::DOWNSTREAM_PROTOCOL_ERROR, "DPE"),
        (Flags::DOWNSTREAM_TIMEOUT, "DT"),
        (Flags::RETRIED, "RR"),
        (Flags::UPSTREAM_TLS_FAILURE, "UTLS"),
    ];

    pub fn set(&mut self, f: Flags) {
        self.0 |= f.0;
    }

    pub fn contains(self, f: Flags) -> bool {
        self.0 & f.0 == f.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The short names of the flags set, e.g. `["UF", "RR"]`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Flags::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }

    /// The flag that `error` calls for.
    pub fn of(error: &ProxyError) -> Flags {
        use ProxyError::*;
        match error {
            BadRequest(_) | BadRequestBody(_) | BodyTooLarge | MethodNotAllowed
            | UpgradeRefused => Flags::DOWNSTREAM_PROTOCOL_ERROR,
            HeadTimeout | ClientTimeout { .. } => Flags::DOWNSTREAM_TIMEOUT,
            NoRoute => Flags::NO_ROUTE,
            Client { .. } | ClientClosed { .. } => Flags::DOWNSTREAM_CONNECTION_TERMINATION,
            Connect { .. } => Flags::UPSTREAM_CONNECT_FAILURE,
            UpstreamTls { .. } | UpstreamTlsRecord { .. } => {
                Flags(Flags::UPSTREAM_CONNECT_FAILURE.0 | Flags::UPSTREAM_TLS_FAILURE.0)
            }
            ConnectTimeout { .. } => {
                Flags(Flags::UPSTREAM_CONNECT_FAILURE.0 | Flags::UPSTREAM_TIMEOUT.0)
            }
            ResponseTimeout | UpstreamTimeout { .. } => Flags::UPSTREAM_TIMEOUT,
            Upstream { .. } | UpstreamClosed { .. } => Flags::UPSTREAM_CONNECTION_TERMINATION,
            BadResponse(_) | BadResponseBody(_) | UnexpectedUpgrade => {
                Flags::UPSTREAM_PROTOCOL_ERROR
            }
        }
    }
}

/// The reason a request refused before routing is counted under.
pub fn reject_reason(error: &ProxyError) -> Option<RejectReason> {
    use ProxyError::*;
    Some(match error {
        BadRequest(ParseError::HeadTooLarge | ParseError::TooManyHeaders) => {
            RejectReason::HeadTooLarge
        }
        BadRequest(ParseError::UriTooLong) => RejectReason::UriTooLong,
        BadRequest(ParseError::Malformed(_)) => RejectReason::Malformed,
        BadRequest(ParseError::Version) => RejectReason::Version,
        BadRequest(ParseError::UnsupportedCoding) => RejectReason::UnsupportedCoding,
        BadRequestBody(_) => RejectReason::BadBody,
        HeadTimeout => RejectReason::HeaderTimeout,
        BodyTooLarge => RejectReason::BodyTooLarge,
        MethodNotAllowed => RejectReason::MethodNotAllowed,
        _ => return None,
    })
}

/// Which upstream timeout `error` is, if one.
pub fn timeout_kind(error: &ProxyError) -> Option<TimeoutKind> {
    match error {
        ProxyError::ConnectTimeout { .. } => Some(TimeoutKind::Connect),
        ProxyError::ResponseTimeout => Some(TimeoutKind::Response),
        ProxyError::UpstreamTimeout { .. } => Some(TimeoutKind::Body),
        _ => None,
    }
}

/// The figures of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When its first byte was read (or, for a pipelined request, when the one
    /// before it ended).
    pub start: Stamp,
    /// The status sent to the client; 0 while none was.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Index of the route in the request's snapshot.
    pub route: Option<u32>,
    /// Index of the cluster in the request's snapshot.
    pub cluster: Option<u32>,
    /// Index of the (last tried) endpoint in its cluster.
    pub endpoint: Option<u32>,
    /// The upstream's status, 0 without one.
    pub upstream_status: u16,
    /// Nanoseconds from the request sent upstream to the response head received.
    pub upstream_ns: Option<u64>,
    /// Upstream attempts (connections tried, retries included).
    pub attempts: u8,
    pub flags: Flags,
    pub rejected: Option<RejectReason>,
    pub timeout: Option<TimeoutKind>,
}

impl Outcome {
    pub fn new(start: Stamp) -> Outcome {
        Outcome {
            start,
            status: 0,
            request_bytes: 0,
            response_bytes: 0,
            route: None,
            cluster: None,
            endpoint: None,
            upstream_status: 0,
            upstream_ns: None,
            attempts: 0,
            flags: Flags::default(),
            rejected: None,
            timeout: None,
        }
    }

    /// Notes a failure: its flags, and what metrics count it under.
    pub fn failed(&mut self, error: &ProxyError) {
        self.flags.set(Flags::of(error));
        self.rejected = self.rejected.or(reject_reason(error));
        self.timeout = self.timeout.or(timeout_kind(error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_what_is_set() {
        let mut f = Flags::default();
        assert!(f.is_empty());
        f.set(Flags::UPSTREAM_CONNECT_FAILURE);
        f.set(Flags::RETRIED);
        assert_eq!(f.names().collect::<Vec<_>>(), ["UF", "RR"]);
        let addr = "127.0.0.1:1".parse().unwrap();
        let t = Flags::of(&ProxyError::ConnectTimeout { addr });
        assert_eq!(t.names().collect::<Vec<_>>(), ["UF", "UT"]);
    }

    #[test]
    fn refusals_and_timeouts_are_classified() {
        let mut o = Outcome::new(Stamp::now());
        o.failed(&ProxyError::BadRequest(ParseError::UriTooLong));
        assert_eq!(o.rejected, Some(RejectReason::UriTooLong));
        assert!(o.flags.contains(Flags::DOWNSTREAM_PROTOCOL_ERROR));
        let mut o = Outcome::new(Stamp::now());
        o.failed(&ProxyError::ResponseTimeout);
        assert_eq!((o.rejected, o.timeout), (None, Some(TimeoutKind::Response)));
    }
}
