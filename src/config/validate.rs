//! Raw file mirror -> typed [`Config`]. Every error names the field path
//! (`routes[3].cluster: unknown cluster "api"`). Nothing here does I/O except the
//! one-time resolution of endpoint host names and the reading of TLS certificate
//! and key files (on every load, so that a reload picks up rotated files).

use super::raw::*;
use super::*;
use std::collections::HashSet;
use std::net::ToSocketAddrs;

type Result<T> = std::result::Result<T, ConfigError>;

/// `base`: the directory relative file names in the configuration are relative to.
pub fn validate(raw: RawConfig, base: &Path) -> Result<Config> {
    let runtime = runtime(&raw.runtime)?;
    let listeners = listeners(&raw.listeners, base)?;
    let forwarding = forwarding(&raw.forwarding)?;
    let clusters = clusters(&raw.clusters, base)?;
    let mut names = HashSet::new();
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let route = route(i, r, &listeners, &clusters)?;
            if !names.insert(route.name.clone()) {
                return Err(ConfigError::new(
                    format!("routes[{i}].name"),
                    format!("duplicate route name {:?}", route.name),
                ));
            }
            Ok(route)
        })
        .collect::<Result<Vec<_>>>()?;
    if routes.is_empty() {
        return Err(ConfigError::new("routes", "at least one route is required"));
    }
    let admin = raw
        .admin
        .as_ref()
        .map(|a| admin(a, &listeners))
        .transpose()?;
    let access_log = raw.access_log.as_ref().map(access_log).transpose()?;
    Ok(Config {
        runtime,
        listeners,
        forwarding,
        routes,
        clusters,
        admin,
        access_log,
        source: Default::default(),
    })
}

fn access_log(raw: &RawAccessLog) -> Result<AccessLogConfig> {
    let path = match raw.path.as_deref() {
        None => {
            return Err(ConfigError::new(
                "access_log.path",
                "missing (\"stdout\" or a file path)",
            ))
        }
        Some("") => return Err(ConfigError::new("access_log.path", "empty")),
        Some("stdout") => LogPath::Stdout,
        Some(p) => LogPath::File(p.into()),
    };
    let format = match raw.format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("combined") => LogFormat::Combined,
        Some(other) => {
            return Err(ConfigError::new(
                "access_log.format",
                format!("{other:?} is not \"json\" or \"combined\""),
            ))
        }
    };
    Ok(AccessLogConfig { path, format })
}

fn admin(raw: &RawAdmin, listeners: &[ListenerConfig]) -> Result<AdminConfig> {
    let text = raw
        .bind
        .as_deref()
        .ok_or_else(|| ConfigError::new("admin.bind", "missing (e.g. \"127.0.0.1:9901\")"))?;
    let bind: SocketAddr = text.parse().map_err(|_| {
        ConfigError::new(
            "admin.bind",
            format!("{text:?} is not an IP address with port"),
        )
    })?;
    let allow_remote = raw.allow_remote.unwrap_or(false);
    if !bind.ip().is_loopback() && !allow_remote {
        return Err(ConfigError::new(
            "admin.bind",
            format!(
                "{bind} is not a loopback address: the admin API can reload and drain the \
                 proxy; set admin.allow_remote = true to expose it anyway"
            ),
        ));
    }
    if bind.port() != 0 && listeners.iter().any(|l| l.bind == bind) {
        return Err(ConfigError::new(
            "admin.bind",
            format!("{bind} is bound by a listener"),
        ));
    }
    Ok(AdminConfig { bind, allow_remote })
}

fn runtime(raw: &RawRuntime) -> Result<RuntimeConfig> {
    let workers = match raw.workers {
        None => 0,
        Some(n) if (0..=4096).contains(&n) => n as usize,
        Some(n) => {
            return Err(ConfigError::new(
                "runtime.workers",
                format!("{n} is out of range (0 = one per core, up to 4096)"),
            ))
        }
    };
    let io_uring_entries = match raw.io_uring_entries {
        None => 1024,
        Some(n) if (2..=32768).contains(&n) && (n as u32).is_power_of_two() => n as u32,
        Some(n) => {
            return Err(ConfigError::new(
                "runtime.io_uring_entries",
                format!("{n} must be a power of two from 2 to 32768"),
            ))
        }
    };
    let io_uring_flags = match &raw.io_uring_flags {
        None => RingFlags {
            single_issuer: true,
            defer_taskrun: true,
            coop_taskrun: true,
        },
        Some(names) => {
            let mut flags = RingFlags {
                single_issuer: false,
                defer_taskrun: false,
                coop_taskrun: false,
            };
            for (i, name) in names.iter().enumerate() {
                match name.as_str() {
                    "single_issuer" => flags.single_issuer = true,
                    "defer_taskrun" => flags.defer_taskrun = true,
                    "coop_taskrun" => flags.coop_taskrun = true,
                    other => {
                        return Err(ConfigError::new(
                            format!("runtime.io_uring_flags[{i}]"),
                            format!(
                            "unknown flag {other:?} (single_issuer, defer_taskrun, coop_taskrun)"
                        ),
                        ))
                    }
                }
            }
            if flags.defer_taskrun && !flags.single_issuer {
                return Err(ConfigError::new(
                    "runtime.io_uring_flags",
                    "defer_taskrun needs single_issuer",
                ));
            }
            flags
        }
    };
    Ok(RuntimeConfig {
        workers,
        require_io_uring: raw.require_io_uring.unwrap_or(false),
        drain_timeout: duration_or(&raw.drain_timeout, "runtime.drain_timeout", 10_000)?,
        pin_workers: raw.pin_workers.unwrap_or(true),
        io_uring_entries,
        io_uring_flags,
        control_socket: match raw.control_socket.as_deref() {
            None => None,
            Some("") => return Err(ConfigError::new("runtime.control_socket", "empty")),
            Some(p) => Some(p.into()),
        },
    })
}

fn listeners(raw: &[RawListener], base: &Path) -> Result<Vec<ListenerConfig>> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "listeners",
            "at least one listener is required",
        ));
    }
    let mut names = HashSet::new();
    let mut binds = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, l)| {
            let f = |name: &str| format!("listeners[{i}].{name}");
            let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(
                    f("name"),
                    format!("duplicate listener name {name:?}"),
                ));
            }
            let bind_text = l
                .bind
                .as_deref()
                .ok_or_else(|| ConfigError::new(f("bind"), "missing (e.g. \"0.0.0.0:80\")"))?;
            let bind: SocketAddr = bind_text.parse().map_err(|_| {
                ConfigError::new(
                    f("bind"),
                    format!("{bind_text:?} is not an IP address with port"),
                )
            })?;
            if bind.port() != 0 && !binds.insert(bind) {
                return Err(ConfigError::new(
                    f("bind"),
                    format!("{bind} is bound by another listener"),
                ));
            }
            let defaults = Limits::default();
            let max_headers = match l.max_headers {
                None => defaults.max_headers,
                Some(n) if (1..=MAX_HEADERS_CAP as i64).contains(&n) => n as usize,
                Some(n) => {
                    return Err(ConfigError::new(
                        f("max_headers"),
                        format!("{n} is out of range 1..={MAX_HEADERS_CAP}"),
                    ))
                }
            };
            let limits = Limits {
                max_head_bytes: size_or(
                    &l.max_request_head_size,
                    &f("max_request_head_size"),
                    defaults.max_head_bytes as u64,
                    1024,
                    16 << 20,
                )? as usize,
                max_headers,
                max_uri_bytes: size_or(
                    &l.max_uri_size,
                    &f("max_uri_size"),
                    defaults.max_uri_bytes as u64,
                    16,
                    16 << 20,
                )? as usize,
                max_body_bytes: match &l.max_body_size {
                    None => None,
                    Some(s) => Some(byte_size(s, &f("max_body_size"))?),
                },
            };
            if limits.max_uri_bytes > limits.max_head_bytes {
                return Err(ConfigError::new(
                    f("max_uri_size"),
                    "must not exceed max_request_head_size",
                ));
            }
            let backlog = match l.backlog {
                None => 4096,
                Some(n) if (1..=65535).contains(&n) => n as u32,
                Some(n) => {
                    return Err(ConfigError::new(
                        f("backlog"),
                        format!("{n} is out of range 1..=65535"),
                    ))
                }
            };
            Ok(ListenerConfig {
                name,
                bind,
                backlog,
                header_timeout: duration_or(&l.header_timeout, &f("header_timeout"), 10_000)?,
                idle_timeout: duration_or(&l.idle_timeout, &f("idle_timeout"), 60_000)?,
                release_buffers_after: duration_or(
                    &l.release_buffers_after,
                    &f("release_buffers_after"),
                    100,
                )?,
                limits,
                http2: l.http2.unwrap_or(false),
                h2: h2_settings(l.h2.as_ref(), &f("h2"))?,
                tls: match &l.tls {
                    None => None,
                    Some(t) => Some(std::sync::Arc::new(tls(t, &f("tls"), base)?)),
                },
            })
        })
        .collect()
}

fn h2_settings(raw: Option<&RawH2>, field: &str) -> Result<H2Settings> {
    let d = H2Settings::default();
    let Some(raw) = raw else { return Ok(d) };
    let f = |k: &str| format!("{field}.{k}");
    let max_concurrent_streams = match raw.max_concurrent_streams {
        None => d.max_concurrent_streams,
        Some(n) if (1..=10_000).contains(&n) => n as u32,
        Some(n) => {
            return Err(ConfigError::new(
                f("max_concurrent_streams"),
                format!("{n} is out of range 1..=10000"),
            ))
        }
    };
    // RFC 9113 §6.5.2: windows up to 2^31-1, frames 16 KiB to 16 MiB - 1.
    let window_max = (1u64 << 31) - 1;
    Ok(H2Settings {
        max_concurrent_streams,
        initial_stream_window: size_or(
            &raw.initial_stream_window,
            &f("initial_stream_window"),
            d.initial_stream_window as u64,
            65_535,
            window_max,
        )? as u32,
        initial_connection_window: size_or(
            &raw.initial_connection_window,
            &f("initial_connection_window"),
            d.initial_connection_window as u64,
            65_535,
            window_max,
        )? as u32,
        max_frame_size: size_or(
            &raw.max_frame_size,
            &f("max_frame_size"),
            d.max_frame_size as u64,
            16_384,
            (1 << 24) - 1,
        )? as u32,
    })
}

fn forwarding(raw: &RawForwarding) -> Result<ForwardingConfig> {
    let x_forwarded_for = match raw.x_forwarded_for.as_deref() {
        None | Some("overwrite") => XffMode::Overwrite,
        Some("append") => XffMode::Append,
        Some("off") => XffMode::Off,
        Some(other) => {
            return Err(ConfigError::new(
                "forwarding.x_forwarded_for",
                format!("{other:?} is not one of \"overwrite\", \"append\", \"off\""),
            ))
        }
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| cidr(s, &format!("forwarding.trusted_proxies[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let request_id_header = raw
        .request_id_header
        .clone()
        .unwrap_or_else(|| "x-request-id".into());
    header_name(&request_id_header, "forwarding.request_id_header")?;
    Ok(ForwardingConfig {
        x_forwarded_for,
        trusted_proxies,
        request_id: raw.request_id.unwrap_or(true),
        request_id_header: request_id_header.to_ascii_lowercase(),
    })
}

fn clusters(
    raw: &std::collections::BTreeMap<String, RawCluster>,
    base: &Path,
) -> Result<Vec<ClusterConfig>> {
    raw.iter()
        .map(|(name, c)| {
            let f = |field: &str| format!("clusters.{name}.{field}");
            if c.endpoints.is_empty() {
                return Err(ConfigError::new(
                    f("endpoints"),
                    "at least one endpoint is required",
                ));
            }
            let endpoints = c
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| endpoint(e, &f(&format!("endpoints[{i}]"))))
                .collect::<Result<Vec<_>>>()?;
            let lb = match c.lb.as_deref() {
                None | Some("round_robin") => LbPolicy::RoundRobin,
                Some("weighted_round_robin") => LbPolicy::WeightedRoundRobin,
                Some(other) => {
                    return Err(ConfigError::new(
                        f("lb"),
                        format!(
                            "{other:?} is not one of \"round_robin\", \"weighted_round_robin\""
                        ),
                    ))
                }
            };
            let pool_max_idle = match c.pool_max_idle {
                None => 64,
                Some(n) if (0..=100_000).contains(&n) => n as usize,
                Some(n) => {
                    return Err(ConfigError::new(
                        f("pool_max_idle"),
                        format!("{n} is out of range 0..=100000"),
                    ))
                }
            };
            let protocol = match c.protocol.as_deref() {
                None | Some("http1") => UpstreamProtocol::Http1,
                Some("h2") if c.tls.is_some() => UpstreamProtocol::H2,
                Some("h2") => {
                    return Err(ConfigError::new(
                        f("protocol"),
                        "\"h2\" needs `tls` (HTTP/2 over cleartext is \"h2c\")",
                    ))
                }
                Some("h2c") if c.tls.is_none() => UpstreamProtocol::H2c,
                Some("h2c") => {
                    return Err(ConfigError::new(
                        f("protocol"),
                        "\"h2c\" is HTTP/2 without TLS: with `tls`, use \"h2\"",
                    ))
                }
                Some(p) => {
                    return Err(ConfigError::new(
                        f("protocol"),
                        format!("{p:?} is not \"http1\", \"h2\" or \"h2c\""),
                    ))
                }
            };
            Ok(ClusterConfig {
                name: name.clone(),
                endpoints,
                lb,
                connect_timeout: duration_or(&c.connect_timeout, &f("connect_timeout"), 5_000)?,
                response_timeout: duration_or(&c.response_timeout, &f("response_timeout"), 60_000)?,
                pool_idle_timeout: duration_or(
                    &c.pool_idle_timeout,
                    &f("pool_idle_timeout"),
                    60_000,
                )?,
                pool_max_idle,
                protocol,
                tls: match &c.tls {
                    None => None,
                    Some(t) => Some(Arc::new(crate::tls::UpstreamTls::load(
                        crate::tls::UpstreamTlsSettings {
                            server_name: t.server_name.clone(),
                            ca: t.ca.as_deref().map(|p| base.join(p)),
                            cert: t.cert.as_deref().map(|p| base.join(p)),
                            key: t.key.as_deref().map(|p| base.join(p)),
                            verify: t.verify.unwrap_or(true),
                            h2: protocol == UpstreamProtocol::H2,
                        },
                        &f("tls"),
                    )?)),
                },
            })
        })
        .collect()
}

fn endpoint(raw: &RawEndpoint, field: &str) -> Result<EndpointConfig> {
    let (text, weight, addr_field) = match raw {
        RawEndpoint::Addr(a) => (a, None, field.to_string()),
        RawEndpoint::Weighted(w) => (&w.addr, w.weight, format!("{field}.addr")),
    };
    let weight = match weight {
        None => 1,
        Some(w) if (1..=10_000).contains(&w) => w as u32,
        Some(w) => {
            return Err(ConfigError::new(
                format!("{field}.weight"),
                format!("{w} is out of range 1..=10000"),
            ))
        }
    };
    // Host names are resolved once, here; the first address is used.
    let addr = match text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => text
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| {
                ConfigError::new(
                    &addr_field,
                    format!("{text:?} is not an address with port (\"10.0.0.1:8080\", \"backend:8080\")"),
                )
            })?,
    };
    if addr.port() == 0 {
        return Err(ConfigError::new(
            addr_field,
            "port 0 is not a valid endpoint",
        ));
    }
    Ok(EndpointConfig {
        name: text.clone(),
        addr,
        weight,
    })
}

fn route(
    i: usize,
    r: &RawRoute,
    listeners: &[ListenerConfig],
    clusters: &[ClusterConfig],
) -> Result<RouteConfig> {
    let f = |field: &str| format!("routes[{i}].{field}");
    let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
    let matcher = matcher(&r.matches, &f("match"), listeners)?;
    let actions = [
        r.cluster.is_some(),
        r.respond.is_some(),
        r.redirect.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        return Err(ConfigError::new(
            format!("routes[{i}]"),
            "exactly one of `cluster`, `respond`, `redirect` is required",
        ));
    }
    let action =
        if let Some(c) = &r.cluster {
            let idx = clusters
                .iter()
                .position(|k| &k.name == c)
                .ok_or_else(|| ConfigError::new(f("cluster"), format!("unknown cluster {c:?}")))?;
            ActionConfig::Forward(idx)
        } else if let Some(resp) = &r.respond {
            let status = status(resp.status, &f("respond.status"), 200..=599)?;
            let content_type = resp
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into());
            header_value(&content_type, &f("respond.content_type"))?;
            ActionConfig::Respond {
                status,
                body: resp.body.clone(),
                content_type,
            }
        } else {
            let redirect = r.redirect.as_ref().expect("one action is set");
            let status = status(
                redirect.status.unwrap_or(302),
                &f("redirect.status"),
                300..=399,
            )?;
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(ConfigError::new(
                    f("redirect.status"),
                    format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
                ));
            }
            let parts = redirect.scheme.is_some()
                || redirect.host.is_some()
                || redirect.port.is_some()
                || redirect.path.is_some();
            match &redirect.location {
                Some(_) if parts => return Err(ConfigError::new(
                    f("redirect"),
                    "either `location` or URL parts (`scheme`, `host`, `port`, `path`), not both",
                )),
                None if !parts => {
                    return Err(ConfigError::new(
                        f("redirect"),
                        "`location`, or one of `scheme`, `host`, `port`, `path`, is required",
                    ))
                }
                Some(location) => {
                    if location.is_empty() {
                        return Err(ConfigError::new(
                            f("redirect.location"),
                            "must not be empty",
                        ));
                    }
                    header_value(location, &f("redirect.location"))?;
                    ActionConfig::Redirect {
                        status,
                        location: location.clone(),
                    }
                }
                None => ActionConfig::RedirectParts {
                    status,
                    parts: redirect_parts(redirect, &f("redirect"))?,
                },
            }
        };
    if let Some(h) = &r.host_rewrite {
        if h.is_empty() || !h.bytes().all(is_host_byte) {
            return Err(ConfigError::new(
                f("host_rewrite"),
                format!("{h:?} is not a valid host"),
            ));
        }
    }
    let mut websocket = r.upgrades.is_none();
    for token in r.upgrades.iter().flatten() {
        if !token.eq_ignore_ascii_case("websocket") {
            return Err(ConfigError::new(
                f("upgrades"),
                format!("{token:?} is not an upgrade Ringway forwards (only \"websocket\")"),
            ));
        }
        websocket = true;
    }
    Ok(RouteConfig {
        name,
        matcher,
        action,
        host_rewrite: r.host_rewrite.clone(),
        request_headers: header_edit(r.request_headers.as_ref(), &f("request_headers"))?,
        response_headers: header_edit(r.response_headers.as_ref(), &f("response_headers"))?,
        websocket,
    })
}

fn matcher(m: &RawMatch, field: &str, listeners: &[ListenerConfig]) -> Result<MatchConfig> {
    let f = |name: &str| format!("{field}.{name}");
    let host = match &m.host {
        None => None,
        Some(h) => Some(host_pattern(h, &f("host"))?),
    };
    let paths = [&m.path, &m.path_prefix, &m.path_regex];
    if paths.iter().filter(|p| p.is_some()).count() > 1 {
        return Err(ConfigError::new(
            field,
            "at most one of `path`, `path_prefix`, `path_regex` may be given",
        ));
    }
    let path = if let Some(p) = &m.path {
        path_text(p, &f("path"))?;
        Some(PathPattern::Exact(p.clone()))
    } else if let Some(p) = &m.path_prefix {
        path_text(p, &f("path_prefix"))?;
        Some(PathPattern::Prefix(p.clone()))
    } else if let Some(p) = &m.path_regex {
        regex_text(p, &f("path_regex"))?;
        Some(PathPattern::Regex(p.clone()))
    } else {
        None
    };
    let methods = m
        .methods
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, meth)| {
            if meth.is_empty() || !meth.bytes().all(is_tchar) {
                return Err(ConfigError::new(
                    f(&format!("methods[{i}]")),
                    format!("{meth:?} is not a method token"),
                ));
            }
            Ok(meth.to_ascii_uppercase())
        })
        .collect::<Result<Vec<_>>>()?;
    let headers = m
        .headers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| header_match(h, &f(&format!("headers[{i}]"))))
        .collect::<Result<Vec<_>>>()?;
    let cookies = value_matches(m.cookies.as_deref(), &f("cookies"))?;
    let query = value_matches(m.query.as_deref(), &f("query"))?;
    let listener =
        match &m.listener {
            None => None,
            Some(name) => Some(listeners.iter().position(|l| &l.name == name).ok_or_else(
                || ConfigError::new(f("listener"), format!("unknown listener {name:?}")),
            )?),
        };
    Ok(MatchConfig {
        host,
        path,
        methods,
        headers,
        cookies,
        query,
        listener,
        sni: match &m.sni {
            Some(h) => Some(host_pattern(h, &f("sni"))?),
            None => None,
        },
        grpc: m.grpc,
    })
}

fn host_pattern(h: &str, field: &str) -> Result<HostPattern> {
    let lower = h.to_ascii_lowercase();
    let bad = || {
        ConfigError::new(
            field,
            format!("{h:?} is not a host name or `*.suffix` wildcard"),
        )
    };
    if let Some(suffix) = lower.strip_prefix("*.") {
        if suffix.is_empty() || !suffix.bytes().all(is_host_byte) || suffix.contains(':') {
            return Err(bad());
        }
        return Ok(HostPattern::Suffix(format!(".{suffix}")));
    }
    if lower.is_empty() || !lower.bytes().all(is_host_byte) || lower.contains('*') {
        return Err(bad());
    }
    Ok(HostPattern::Exact(lower))
}

fn header_match(h: &RawHeaderMatch, field: &str) -> Result<HeaderMatchConfig> {
    header_name(&h.name, &format!("{field}.name"))?;
    let kinds = [
        h.exact.is_some(),
        h.prefix.is_some(),
        h.regex.is_some(),
        h.present.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(ConfigError::new(
            field,
            "exactly one of `exact`, `prefix`, `regex`, `present` is required",
        ));
    }
    let kind = if let Some(v) = &h.exact {
        HeaderMatchKind::Exact(v.clone())
    } else if let Some(v) = &h.prefix {
        HeaderMatchKind::Prefix(v.clone())
    } else if let Some(v) = &h.regex {
        regex_text(v, &format!("{field}.regex"))?;
        HeaderMatchKind::Regex(v.clone())
    } else {
        HeaderMatchKind::Present(h.present.unwrap_or(true))
    };
    Ok(HeaderMatchConfig {
        name: h.name.to_ascii_lowercase(),
        kind,
    })
}

fn value_matches(raw: Option<&[RawValueMatch]>, field: &str) -> Result<Vec<ValueMatchConfig>> {
    raw.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let f = format!("{field}[{i}]");
            if v.name.is_empty() {
                return Err(ConfigError::new(format!("{f}.name"), "must not be empty"));
            }
            let kind = match (&v.exact, v.present) {
                (Some(e), None) => ValueMatchKind::Exact(e.clone()),
                (None, Some(p)) => ValueMatchKind::Present(p),
                _ => {
                    return Err(ConfigError::new(
                        f,
                        "exactly one of `exact`, `present` is required",
                    ))
                }
            };
            Ok(ValueMatchConfig {
                name: v.name.clone(),
                kind,
            })
        })
        .collect()
}

fn header_edit(raw: Option<&RawHeaderEdit>, field: &str) -> Result<HeaderEdit> {
    let Some(raw) = raw else {
        return Ok(HeaderEdit::default());
    };
    let pairs = |map: &std::collections::BTreeMap<String, String>, kind: &str| {
        map.iter()
            .map(|(n, v)| {
                let f = format!("{field}.{kind}.{n}");
                header_name(n, &f)?;
                if is_framing_header(n) {
                    return Err(ConfigError::new(
                        f,
                        "framing and hop-by-hop headers are managed by the proxy",
                    ));
                }
                header_value(v, &f)?;
                Ok((n.to_ascii_lowercase(), v.clone()))
            })
            .collect::<Result<Vec<_>>>()
    };
    let remove = raw
        .remove
        .iter()
        .enumerate()
        .map(|(i, n)| {
            header_name(n, &format!("{field}.remove[{i}]"))?;
            Ok(n.to_ascii_lowercase())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(HeaderEdit {
        add: pairs(&raw.add, "add")?,
        set: pairs(&raw.set, "set")?,
        remove,
    })
}

fn is_framing_header(name: &str) -> bool {
    const MANAGED: [&str; 9] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "host",
    ];
    MANAGED.iter().any(|m| m.eq_ignore_ascii_case(name))
}

fn status(n: i64, field: &str, range: std::ops::RangeInclusive<i64>) -> Result<u16> {
    if range.contains(&n) {
        Ok(n as u16)
    } else {
        Err(ConfigError::new(
            field,
            format!("{n} is out of range {}..={}", range.start(), range.end()),
        ))
    }
}

fn header_name(n: &str, field: &str) -> Result<()> {
    if n.is_empty() || !n.bytes().all(is_tchar) {
        return Err(ConfigError::new(
            field,
            format!("{n:?} is not a valid header name"),
        ));
    }
    Ok(())
}

fn header_value(v: &str, field: &str) -> Result<()> {
    // RFC 9110 §5.5: field-vchar / SP / HTAB; no CR, LF or NUL.
    if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ConfigError::new(
            field,
            "contains control characters (CR, LF, NUL ...)",
        ));
    }
    Ok(())
}

fn path_text(p: &str, field: &str) -> Result<()> {
    if !p.starts_with('/') {
        return Err(ConfigError::new(
            field,
            format!("{p:?} must start with '/'"),
        ));
    }
    if p.bytes()
        .any(|b| b <= 0x20 || b == 0x7f || b == b'?' || b == b'#')
    {
        return Err(ConfigError::new(
            field,
            format!("{p:?} contains spaces, controls, '?' or '#'"),
        ));
    }
    Ok(())
}

fn regex_text(r: &str, field: &str) -> Result<()> {
    regex::bytes::Regex::new(&format!("^(?:{r})$"))
        .map(|_| ())
        .map_err(|e| ConfigError::new(field, format!("invalid regex: {e}")))
}

fn cidr(s: &str, field: &str) -> Result<Cidr> {
    let bad = || {
        ConfigError::new(
            field,
            format!("{s:?} is not an IP network (\"10.0.0.0/8\")"),
        )
    };
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
    };
    Ok(Cidr { addr, prefix })
}

/// RFC 9110 §5.6.2 token characters.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b)
}

fn redirect_parts(r: &RawRedirect, field: &str) -> Result<RedirectParts> {
    let f = |name: &str| format!("{field}.{name}");
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(s.to_string()),
        Some(s) => {
            return Err(ConfigError::new(
                f("scheme"),
                format!("{s:?} is not \"http\" or \"https\""),
            ))
        }
    };
    let host = match &r.host {
        None => None,
        Some(h) if !h.is_empty() && h.bytes().all(is_host_byte) && !h.contains(':') => {
            Some(h.to_ascii_lowercase())
        }
        Some(h) => {
            return Err(ConfigError::new(
                f("host"),
                format!("{h:?} is not a host name or IPv4 address (the port is `port`)"),
            ))
        }
    };
    let port = match r.port {
        None => None,
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => {
            return Err(ConfigError::new(
                f("port"),
                format!("{p} is out of range 1..=65535"),
            ))
        }
    };
    let path = match &r.path {
        None => None,
        Some(p) if p.starts_with('/') && !p.contains('?') && !p.contains('#') => {
            header_value(p, &f("path"))?;
            Some(p.clone())
        }
        Some(p) => {
            return Err(ConfigError::new(
                f("path"),
                format!("{p:?} must start with `/` and hold no query or fragment"),
            ))
        }
    };
    Ok(RedirectParts {
        scheme,
        host,
        port,
        path,
    })
}

/// `[listeners.tls]`: settings checked, then every file loaded and checked.
fn tls(raw: &RawTls, field: &str, base: &Path) -> Result<crate::tls::ServerTls> {
    use crate::tls::{ClientAuth, ServerTls, TlsSettings};
    let f = |name: &str| format!("{field}.{name}");
    let path = |p: &str| base.join(p);
    let list = raw.certificates.as_ref().ok_or_else(|| {
        ConfigError::new(
            f("certificates"),
            "missing (a list of { cert = \"...\", key = \"...\" })",
        )
    })?;
    let mut certificates = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let cf = |name: &str| format!("{field}.certificates[{i}].{name}");
        let cert = c.cert.as_deref().ok_or_else(|| {
            ConfigError::new(cf("cert"), "missing (a PEM certificate chain file)")
        })?;
        let key = c
            .key
            .as_deref()
            .ok_or_else(|| ConfigError::new(cf("key"), "missing (a PEM private key file)"))?;
        certificates.push((path(cert), path(key)));
    }
    let min_tls13 = match raw.min_version.as_deref() {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(v) => {
            return Err(ConfigError::new(
                f("min_version"),
                format!("{v:?} is not \"1.2\" or \"1.3\""),
            ))
        }
    };
    let alpn = match &raw.alpn {
        None => vec!["h2".to_string(), "http/1.1".to_string()],
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                if !matches!(p.as_str(), "h2" | "http/1.1" | "http/1.0") {
                    return Err(ConfigError::new(
                        format!("{field}.alpn[{i}]"),
                        format!("{p:?} is not a protocol this listener speaks (\"h2\", \"http/1.1\", \"http/1.0\")"),
                    ));
                }
            }
            list.clone()
        }
    };
    let client_auth = match raw.client_auth.as_deref() {
        None | Some("none") => ClientAuth::None,
        Some("optional") => ClientAuth::Optional,
        Some("required") => ClientAuth::Required,
        Some(v) => {
            return Err(ConfigError::new(
                f("client_auth"),
                format!("{v:?} is not \"none\", \"optional\" or \"required\""),
            ))
        }
    };
    let settings = TlsSettings {
        certificates,
        min_tls13,
        alpn,
        handshake_timeout: duration_or(&raw.handshake_timeout, &f("handshake_timeout"), 10_000)?,
        strict_sni: raw.strict_sni.unwrap_or(false),
        client_auth,
        client_ca: raw.client_ca.as_deref().map(path),
        forward_client_cert: raw.forward_client_cert.unwrap_or(false),
    };
    ServerTls::load(settings, field)
}

fn duration_or(raw: &Option<String>, field: &str, default_ms: u64) -> Result<Duration> {
    match raw {
        None => Ok(Duration::from_millis(default_ms)),
        Some(text) => parse_duration(text).map_err(|reason| ConfigError::new(field, reason)),
    }
}

/// Parses "250ms", "5s", "1.5s", "2m", "1h". Zero is refused: every timeout here is
/// a protection, and 0 would disable or break it.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m or h)"))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"250ms\" or \"5s\""))?;
    let ms = match unit {
        "ms" => value,
        "s" => value * 1e3,
        "m" => value * 60e3,
        "h" => value * 3600e3,
        _ => return Err(format!("{text:?} has an unknown unit (use ms, s, m or h)")),
    };
    if !(1.0..=86_400_000.0 * 7.0).contains(&ms) {
        return Err(format!("{text:?} is out of range 1ms..=7d"));
    }
    Ok(Duration::from_micros((ms * 1e3) as u64))
}

fn size_or(raw: &Option<ByteSize>, field: &str, default: u64, min: u64, max: u64) -> Result<u64> {
    let n = match raw {
        None => return Ok(default),
        Some(s) => byte_size(s, field)?,
    };
    if !(min..=max).contains(&n) {
        return Err(ConfigError::new(
            field,
            format!("{n} bytes is out of range {min}..={max}"),
        ));
    }
    Ok(n)
}

/// Integer bytes, or "512", "64KiB", "1MiB", "10MB", "1GiB".
fn byte_size(raw: &ByteSize, field: &str) -> Result<u64> {
    let bad = |t: &str| {
        ConfigError::new(
            field,
            format!("{t:?} is not a size like 65536 or \"64KiB\""),
        )
    };
    match raw {
        ByteSize::Number(n) if *n >= 0 => Ok(*n as u64),
        ByteSize::Number(n) => Err(bad(&n.to_string())),
        ByteSize::Text(t) => {
            let s = t.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad(t))?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" | "kB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return Err(bad(t)),
            };
            n.checked_mul(mult).ok_or_else(|| bad(t))
        }
    }
}
