//! The compiled routing table, one replica per core, and its pure lookup. Routes are
//! tried in file order and the first match wins; host predicates are indexed (exact
//! names in one hash map, `*.suffix` wildcards in another, probed once per label) so
//! a table with thousands of hosts is not scanned linearly. No I/O, no allocation
//! per lookup.

use crate::config::{
    ActionConfig, Config, HeaderEdit, HeaderMatchKind, HostPattern, PathPattern, RedirectParts,
    ValueMatchKind,
};
use crate::http::answer::Answer;
use crate::http::parse::{HeaderKind, HeaderSpan};
use regex::bytes::Regex;
use std::collections::HashMap;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// What the table knows of a request: borrowed views into the connection's buffer.
pub struct RequestView<'a> {
    pub buf: &'a [u8],
    pub method: &'a [u8],
    /// Host as received (any case, maybe with port).
    pub host: Option<&'a [u8]>,
    pub path: &'a [u8],
    pub query: Option<&'a [u8]>,
    pub headers: &'a [HeaderSpan],
    /// The id of the listener the request came in on (see [`RouteTable::build_for`]).
    pub listener: u32,
    /// The TLS client's SNI, lower-case; `None` on plain connections.
    pub sni: Option<&'a [u8]>,
}

pub enum Action {
    Forward(usize),
    /// A pre-rendered direct response or redirect.
    Answer(Answer),
    /// A redirect to the request's URL with parts replaced (made per request).
    Redirect {
        status: u16,
        parts: RedirectParts,
        edits: HeaderEdit,
    },
}

pub struct Route {
    pub name: Box<str>,
    /// `,"route":"name"`, for access log lines.
    pub log_field: Box<[u8]>,
    matcher: Matcher,
    pub action: Action,
    pub host_rewrite: Option<Box<[u8]>>,
    pub request_headers: HeaderEdit,
    pub response_headers: HeaderEdit,
    /// WebSocket upgrades are forwarded (else refused: 403).
    pub websocket: bool,
}

struct Matcher {
    path: Option<PathMatch>,
    methods: Vec<Box<[u8]>>,
    headers: Vec<(Box<[u8]>, ValueTest)>,
    cookies: Vec<(Box<[u8]>, ValueTest)>,
    query: Vec<(Box<[u8]>, ValueTest)>,
    /// A listener id.
    listener: Option<u32>,
    sni: Option<HostPattern>,
    /// The request is gRPC (`content-type: application/grpc*`), or is not.
    grpc: Option<bool>,
}

enum PathMatch {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
}

enum ValueTest {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(Regex),
    Present(bool),
}

impl ValueTest {
    fn matches(&self, v: &[u8]) -> bool {
        match self {
            ValueTest::Exact(e) => v == &**e,
            ValueTest::Prefix(p) => v.starts_with(p),
            ValueTest::Regex(r) => r.is_match(v),
            ValueTest::Present(_) => true,
        }
    }

    /// Over all occurrences: any must match; `present = false` wants none.
    fn matches_any<'a>(&self, mut values: impl Iterator<Item = &'a [u8]>) -> bool {
        match self {
            ValueTest::Present(want) => values.next().is_some() == *want,
            _ => values.any(|v| self.matches(v)),
        }
    }
}

pub struct RouteTable {
    routes: Vec<Route>,
    exact_hosts: Map<Box<[u8]>, Vec<u32>>,
    suffix_hosts: Map<Box<[u8]>, Vec<u32>>,
    any_host: Vec<u32>,
}

/// Longest host name considered for host matching (RFC 1035 names are <= 253).
const MAX_HOST: usize = 255;

impl RouteTable {
    /// The table of `config`, its listeners identified by their index.
    pub fn build(config: &Config) -> RouteTable {
        let ids: Vec<u32> = (0..config.listeners.len() as u32).collect();
        RouteTable::build_for(config, &ids)
    }

    /// The table of `config`, whose listener `i` has the id `listener_ids[i]`.
    pub fn build_for(config: &Config, listener_ids: &[u32]) -> RouteTable {
        let mut table = RouteTable {
            routes: Vec::with_capacity(config.routes.len()),
            exact_hosts: Map::default(),
            suffix_hosts: Map::default(),
            any_host: Vec::new(),
        };
        for (i, r) in config.routes.iter().enumerate() {
            let i = i as u32;
            match &r.matcher.host {
                Some(HostPattern::Exact(h)) => table
                    .exact_hosts
                    .entry(h.as_bytes().into())
                    .or_default()
                    .push(i),
                Some(HostPattern::Suffix(s)) => table
                    .suffix_hosts
                    .entry(s.as_bytes().into())
                    .or_default()
                    .push(i),
                None => table.any_host.push(i),
            }
            let action = match &r.action {
                ActionConfig::Forward(c) => Action::Forward(*c),
                ActionConfig::Respond {
                    status,
                    body,
                    content_type,
                } => Action::Answer(Answer::direct(
                    *status,
                    content_type,
                    body.as_bytes(),
                    &r.response_headers,
                )),
                ActionConfig::Redirect { status, location } => {
                    Action::Answer(Answer::redirect(*status, location, &r.response_headers))
                }
                ActionConfig::RedirectParts { status, parts } => Action::Redirect {
                    status: *status,
                    parts: parts.clone(),
                    edits: r.response_headers.clone(),
                },
            };
            table.routes.push(Route {
                name: r.name.as_str().into(),
                log_field: crate::access_log::json_field("route", &r.name),
                matcher: Matcher::compile(&r.matcher, listener_ids),
                action,
                host_rewrite: r.host_rewrite.as_deref().map(|h| h.as_bytes().into()),
                request_headers: r.request_headers.clone(),
                response_headers: r.response_headers.clone(),
                websocket: r.websocket,
            });
        }
        table
    }

    pub fn route(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// Index of the first route (in file order) matching the request.
    pub fn lookup(&self, req: &RequestView) -> Option<usize> {
        let mut best = u32::MAX;
        let mut consider = |list: &[u32]| {
            for &i in list {
                if i >= best {
                    break;
                }
                if self.routes[i as usize].matcher.matches(req) {
                    best = i;
                    break;
                }
            }
        };
        // Without host-specific routes the host is not normalised at all.
        if !self.exact_hosts.is_empty() || !self.suffix_hosts.is_empty() {
            let mut host_buf = [0u8; MAX_HOST];
            if let Some(host) = req.host.and_then(|h| normalize_host(h, &mut host_buf)) {
                if let Some(list) = self.exact_hosts.get(host) {
                    consider(list);
                }
                if !self.suffix_hosts.is_empty() {
                    // ".b.example.com", ".example.com", ".com" for "a.b.example.com".
                    for (pos, _) in host.iter().enumerate().filter(|(_, &b)| b == b'.') {
                        if let Some(list) = self.suffix_hosts.get(&host[pos..]) {
                            consider(list);
                        }
                    }
                }
            }
        }
        consider(&self.any_host);
        (best != u32::MAX).then_some(best as usize)
    }
}

/// Lower-cases the host into `out`, dropping the port and a trailing dot.
fn normalize_host<'a>(raw: &[u8], out: &'a mut [u8; MAX_HOST]) -> Option<&'a [u8]> {
    let name = if raw.first() == Some(&b'[') {
        // IP literal: keep through ']'.
        let end = memchr::memchr(b']', raw)?;
        &raw[..=end]
    } else {
        match memchr::memrchr(b':', raw) {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.len() > MAX_HOST {
        return None;
    }
    let out = &mut out[..name.len()];
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

impl Matcher {
    fn compile(m: &crate::config::MatchConfig, listener_ids: &[u32]) -> Matcher {
        let anchored = |r: &str| {
            Regex::new(&format!("^(?:{r})$")).expect("regex was validated with the config")
        };
        let bytes = |s: &str| -> Box<[u8]> { s.as_bytes().into() };
        Matcher {
            path: m.path.as_ref().map(|p| match p {
                PathPattern::Exact(s) => PathMatch::Exact(bytes(s)),
                PathPattern::Prefix(s) => PathMatch::Prefix(bytes(s)),
                PathPattern::Regex(r) => PathMatch::Regex(anchored(r)),
            }),
            methods: m.methods.iter().map(|s| bytes(s)).collect(),
            headers: m
                .headers
                .iter()
                .map(|h| {
                    let test = match &h.kind {
                        HeaderMatchKind::Exact(v) => ValueTest::Exact(bytes(v)),
                        HeaderMatchKind::Prefix(v) => ValueTest::Prefix(bytes(v)),
                        HeaderMatchKind::Regex(r) => ValueTest::Regex(anchored(r)),
                        HeaderMatchKind::Present(p) => ValueTest::Present(*p),
                    };
                    (bytes(&h.name), test)
                })
                .collect(),
            cookies: value_tests(&m.cookies),
            query: value_tests(&m.query),
            listener: m.listener.map(|i| listener_ids[i]),
            sni: m.sni.clone(),
            grpc: m.grpc,
        }
    }

    fn matches(&self, req: &RequestView) -> bool {
        if self.listener.is_some_and(|l| l != req.listener) {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| **m == *req.method) {
            return false;
        }
        if let Some(want) = self.grpc {
            let grpc = req.headers.iter().any(|h| {
                h.name.get(req.buf).eq_ignore_ascii_case(b"content-type")
                    && h.value.get(req.buf).starts_with(b"application/grpc")
            });
            if grpc != want {
                return false;
            }
        }
        if let Some(want) = &self.sni {
            let Some(sni) = req.sni else { return false };
            let ok = match want {
                HostPattern::Exact(name) => sni == name.as_bytes(),
                HostPattern::Suffix(suffix) => sni.ends_with(suffix.as_bytes()),
            };
            if !ok {
                return false;
            }
        }
        let path_ok = match &self.path {
            None => true,
            Some(PathMatch::Exact(p)) => **p == *req.path,
            Some(PathMatch::Prefix(p)) => req.path.starts_with(p),
            Some(PathMatch::Regex(r)) => r.is_match(req.path),
        };
        path_ok
            && self.headers.iter().all(|(name, test)| {
                test.matches_any(
                    req.headers
                        .iter()
                        .filter(|h| h.name.get(req.buf).eq_ignore_ascii_case(name))
                        .map(|h| h.value.get(req.buf)),
                )
            })
            && self
                .cookies
                .iter()
                .all(|(name, test)| test.matches_any(cookie_values(req, name)))
            && self.query.iter().all(|(name, test)| {
                test.matches_any(query_values(req.query.unwrap_or_default(), name))
            })
    }
}

fn value_tests(list: &[crate::config::ValueMatchConfig]) -> Vec<(Box<[u8]>, ValueTest)> {
    list.iter()
        .map(|v| {
            let test = match &v.kind {
                ValueMatchKind::Exact(e) => ValueTest::Exact(e.as_bytes().into()),
                ValueMatchKind::Present(p) => ValueTest::Present(*p),
            };
            (v.name.as_bytes().into(), test)
        })
        .collect()
}

/// Values of cookie `name` in every Cookie header (RFC 6265 §5.4: "a=b; c=d").
fn cookie_values<'a>(req: &'a RequestView, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    req.headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Cookie)
        .flat_map(|h| h.value.get(req.buf).split(|&b| b == b';'))
        .filter_map(move |pair| {
            let pair = trim_ows(pair);
            let eq = memchr::memchr(b'=', pair)?;
            (trim_ows(&pair[..eq]) == name).then(|| trim_ows(&pair[eq + 1..]))
        })
}

/// Values of query parameter `name` ("a=1&b&c=3"; raw, not percent-decoded).
fn query_values<'a>(query: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    query
        .split(|&b| b == b'&')
        .filter_map(move |pair| match memchr::memchr(b'=', pair) {
            Some(eq) => (&pair[..eq] == name).then(|| &pair[eq + 1..]),
            None => (pair == name && !pair.is_empty()).then_some(&pair[pair.len()..]),
        })
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
