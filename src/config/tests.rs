use super::*;

const BASE: &str =
    "[[listeners]]\nbind = \"127.0.0.1:0\"\n[clusters.web]\nendpoints = [\"127.0.0.1:9000\"]\n";

fn with(extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{BASE}{extra}"))
}

fn error(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(_) => panic!("must fail:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn example_files_load() {
    let example = Config::from_toml(include_str!("../../config/example.toml")).unwrap();
    assert_eq!(example.routes.len(), 7);
    let web = example.cluster("web").unwrap();
    assert_eq!(web.lb, LbPolicy::WeightedRoundRobin);
    assert_eq!(web.endpoints[0].weight, 3);
    assert_eq!(web.connect_timeout, Duration::from_secs(2));
    assert_eq!(web.pool_max_idle, 64);
    assert_eq!(example.listeners[0].header_timeout, Duration::from_secs(10));
    assert_eq!(example.forwarding.x_forwarded_for, XffMode::Overwrite);
    let grpc = Config::from_toml(include_str!("../../config/grpc.toml")).unwrap();
    assert_eq!(
        grpc.cluster("users").unwrap().protocol,
        UpstreamProtocol::H2c
    );
    assert!(grpc.listeners[0].http2);
    assert_eq!(grpc.listeners[0].h2.max_concurrent_streams, 200);
    let ws = Config::from_toml(include_str!("../../config/websocket.toml")).unwrap();
    assert!(ws.routes[0].websocket && !ws.routes[1].websocket);
    let default = Config::default_embedded();
    assert_eq!(default.listeners[0].bind, "127.0.0.1:8080".parse().unwrap());
    assert!(matches!(
        default.routes[0].action,
        ActionConfig::Respond { status: 200, .. }
    ));
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("[[routes]]\nmatch = {}\ncluster = \"api\"\n", "routes[0].cluster: unknown cluster \"api\""),
        ("[[routes]]\ncluster = \"web\"\n[[routes]]\ncluster = \"nope\"\n", "routes[1].cluster: unknown cluster"),
        ("[[routes]]\nmatch = { path_regex = \"(\" }\ncluster = \"web\"\n", "routes[0].match.path_regex: invalid regex"),
        ("[[routes]]\nmatch = { headers = [{ name = \"x\", regex = \"[\" }] }\ncluster = \"web\"\n", "routes[0].match.headers[0].regex"),
        ("[[routes]]\nmatch = { headers = [{ name = \"x\" }] }\ncluster = \"web\"\n", "routes[0].match.headers[0]: exactly one of"),
        ("[[routes]]\nmatch = { host = \"a b\" }\ncluster = \"web\"\n", "routes[0].match.host"),
        ("[[routes]]\nmatch = { path_prefix = \"x\" }\ncluster = \"web\"\n", "routes[0].match.path_prefix: \"x\" must start with '/'"),
        ("[[routes]]\nmatch = { path = \"/a\", path_prefix = \"/b\" }\ncluster = \"web\"\n", "routes[0].match: at most one of"),
        ("[[routes]]\nmatch = { listener = \"zz\" }\ncluster = \"web\"\n", "routes[0].match.listener: unknown listener \"zz\""),
        ("[[routes]]\ncluster = \"web\"\nrespond = { status = 200 }\n", "routes[0]: exactly one of"),
        ("[[routes]]\nrespond = { status = 99 }\n", "routes[0].respond.status: 99 is out of range"),
        ("[[routes]]\nredirect = { status = 305, location = \"/\" }\n", "routes[0].redirect.status: 305 is not a redirect"),
        ("[[routes]]\nname = \"a\"\ncluster = \"web\"\n[[routes]]\nname = \"a\"\ncluster = \"web\"\n", "routes[1].name: duplicate route name \"a\""),
        ("[[routes]]\ncluster = \"web\"\nrequest_headers = { add = { \"bad name\" = \"v\" } }\n", "routes[0].request_headers.add.bad name"),
        ("[[routes]]\ncluster = \"web\"\nrequest_headers = { set = { \"content-length\" = \"1\" } }\n", "managed by the proxy"),
        ("[[routes]]\ncluster = \"web\"\nresponse_headers = { add = { \"x\" = \"a\\nb\" } }\n", "routes[0].response_headers.add.x: contains control"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [\"nohost\"]\n", "clusters.bad.endpoints[0]: \"nohost\" is not an address"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n", "clusters.bad.endpoints[0].weight: 0 is out of range"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = []\n", "clusters.bad.endpoints: at least one"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [\"127.0.0.1:1\"]\nlb = \"random\"\n", "clusters.bad.lb: \"random\" is not one of"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [\"127.0.0.1:1\"]\nconnect_timeout = \"5\"\n", "clusters.bad.connect_timeout: \"5\" has no unit"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [\"127.0.0.1:1\"]\nresponse_timeout = \"5parsecs\"\n", "clusters.bad.response_timeout"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [\"127.0.0.1:1\"]\nprotocol = \"h3\"\n", "clusters.bad.protocol: \"h3\" is not"),
        ("[[routes]]\ncluster = \"web\"\n[clusters.bad]\nendpoints = [\"127.0.0.1:1\"]\nprotocol = \"h2\"\n", "clusters.bad.protocol: \"h2\" needs `tls`"),
        ("[[routes]]\ncluster = \"web\"\n[forwarding]\nx_forwarded_for = \"sometimes\"\n", "forwarding.x_forwarded_for"),
        ("[[routes]]\ncluster = \"web\"\n[forwarding]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "forwarding.trusted_proxies[0]"),
        ("[[routes]]\ncluster = \"web\"\n[runtime]\nworkers = -1\n", "runtime.workers: -1 is out of range"),
        ("[[routes]]\ncluster = \"web\"\n[runtime]\nio_uring_entries = 1000\n", "runtime.io_uring_entries: 1000 must be a power of two"),
        ("[[routes]]\ncluster = \"web\"\n[runtime]\nio_uring_entries = 65536\n", "runtime.io_uring_entries: 65536"),
        ("[[routes]]\ncluster = \"web\"\n[runtime]\nio_uring_flags = [\"sqpoll\"]\n", "runtime.io_uring_flags[0]: unknown flag \"sqpoll\""),
        ("[[routes]]\ncluster = \"web\"\n[runtime]\nio_uring_flags = [\"defer_taskrun\"]\n", "runtime.io_uring_flags: defer_taskrun needs single_issuer"),
    ];
    for (extra, want) in cases {
        let got = error(&format!("{BASE}{extra}"));
        assert!(
            got.contains(want),
            "for:\n{extra}\nwant {want:?}\ngot  {got:?}"
        );
    }
}

#[test]
fn listener_errors_name_the_field() {
    let routes = "[[routes]]\nrespond = { status = 200 }\n";
    assert!(error(routes).contains("listeners: at least one listener"));
    let e = error(&format!("[[listeners]]\nbind = \"localhost:80\"\n{routes}"));
    assert!(
        e.contains("listeners[0].bind: \"localhost:80\" is not an IP address with port"),
        "{e}"
    );
    for (h2, want) in [
        (
            "max_concurrent_streams = 0",
            "listeners[0].h2.max_concurrent_streams: 0 is out of range",
        ),
        (
            "max_frame_size = \"1KiB\"",
            "listeners[0].h2.max_frame_size",
        ),
        (
            "initial_stream_window = \"4GiB\"",
            "listeners[0].h2.initial_stream_window",
        ),
        ("push = true", "unknown field `push`"),
    ] {
        let e = error(&format!(
            "[[listeners]]\nbind = \"127.0.0.1:1\"\nh2 = {{ {h2} }}\n{routes}"
        ));
        assert!(e.contains(want), "{h2}: {e}");
    }
    let e = error(&format!("[[listeners]]\nname = \"x\"\nbind = \"127.0.0.1:1\"\n[[listeners]]\nname = \"x\"\nbind = \"127.0.0.1:2\"\n{routes}"));
    assert!(
        e.contains("listeners[1].name: duplicate listener name \"x\""),
        "{e}"
    );
    let e = error(&format!(
        "[[listeners]]\nbind = \"127.0.0.1:1\"\nmax_headers = 0\n{routes}"
    ));
    assert!(e.contains("listeners[0].max_headers"), "{e}");
    let e = error(&format!(
        "[[listeners]]\nbind = \"127.0.0.1:1\"\nmax_request_head_size = \"64 parsecs\"\n{routes}"
    ));
    assert!(e.contains("listeners[0].max_request_head_size"), "{e}");
    let e = error("[[listeners]]\nbind = \"127.0.0.1:1\"\n");
    assert!(e.contains("routes: at least one route"), "{e}");
}

#[test]
fn unknown_keys_and_syntax_errors_point_at_the_text() {
    let e = error(&format!(
        "{BASE}[[routes]]\ncluster = \"web\"\nclustr = \"x\"\n"
    ));
    assert!(e.contains("unknown field `clustr`"), "{e}");
    assert!(e.contains("line"), "{e}");
    let e = error(&format!(
        "{BASE}[[routes]]\nmatch = {{ hots = \"a\" }}\ncluster = \"web\"\n"
    ));
    assert!(e.contains("unknown field `hots`"), "{e}");
    let e = error("[runtime\n");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn sizes_durations_and_defaults() {
    let c = with("[[routes]]\ncluster = \"web\"\n").unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.limits, Limits::default());
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.runtime.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.runtime.io_uring_entries, 1024);
    let rt = with("[[routes]]\ncluster = \"web\"\n[runtime]\nio_uring_entries = 256\nio_uring_flags = [\"coop_taskrun\"]\n")
        .unwrap()
        .runtime;
    assert_eq!(rt.io_uring_entries, 256);
    assert_eq!(
        rt.io_uring_flags,
        RingFlags {
            single_issuer: false,
            defer_taskrun: false,
            coop_taskrun: true
        }
    );
    assert!(c.forwarding.request_id);
    let off = Config::from_toml(&format!(
        "{BASE}[[routes]]\ncluster = \"web\"\n[forwarding]\nx_forwarded_for = \"off\"\n"
    ));
    assert_eq!(off.unwrap().forwarding.x_forwarded_for, XffMode::Off);
    let c = Config::from_toml(
        "[[listeners]]\nbind = \"[::1]:0\"\nmax_request_head_size = \"32KiB\"\nmax_uri_size = 4096\n\
         max_body_size = \"10MB\"\nmax_headers = 50\n[[routes]]\nrespond = { status = 204 }\n",
    )
    .unwrap();
    let l = &c.listeners[0].limits;
    assert_eq!(
        (l.max_head_bytes, l.max_uri_bytes, l.max_headers),
        (32 * 1024, 4096, 50)
    );
    assert_eq!(l.max_body_bytes, Some(10_000_000));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("s").is_err());
}

#[test]
fn cidr_matching() {
    let c = Cidr {
        addr: "10.0.0.0".parse().unwrap(),
        prefix: 8,
    };
    assert!(c.contains("10.255.0.1".parse().unwrap()));
    assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    let all = Cidr {
        addr: "0.0.0.0".parse().unwrap(),
        prefix: 0,
    };
    assert!(all.contains("1.2.3.4".parse().unwrap()));
    let v6 = Cidr {
        addr: "fd00::".parse().unwrap(),
        prefix: 8,
    };
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(!v6.contains("fe80::1".parse().unwrap()));
}

/// `config/tls-two-domains.toml`, as written, with certificates generated where it
/// expects them (relative to the file): it loads, and SNI picks each domain's
/// certificate.
#[test]
fn tls_example_loads_with_its_certificates() {
    let dir = std::env::temp_dir().join(format!("ringway-tls-example-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let make = |names: &[&str], file: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join(format!("certs/{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("certs/{file}.key")), key.serialize_pem()).unwrap();
    };
    make(&["example.com", "www.example.com"], "example.com");
    make(&["*.example.net"], "star.example.net");
    let path = dir.join("tls.toml");
    std::fs::write(&path, include_str!("../../config/tls-two-domains.toml")).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.listeners[1]
        .tls
        .as_ref()
        .expect("https listener has TLS");
    assert_eq!(
        tls.certificates[0].names,
        ["example.com", "www.example.com"]
    );
    assert_eq!(tls.certificates[1].names, ["*.example.net"]);
    assert!(config.listeners[0].tls.is_none());
    // `ringway check` shows each certificate's file, subject, names and expiry.
    let summary = config.to_string();
    assert!(
        summary.contains("TLS certificate") && summary.contains("[*.example.net]"),
        "{summary}"
    );
    // The same file without its certificates fails on the first one, by field.
    std::fs::remove_file(dir.join("certs/example.com.pem")).unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.starts_with("listeners[1].tls.certificates[0].cert: cannot read"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn redirect_parts_are_checked() {
    let ok = with("[[routes]]\nredirect = { status = 301, scheme = \"https\" }\n").unwrap();
    match &ok.routes[0].action {
        ActionConfig::RedirectParts { status: 301, parts } => {
            assert_eq!(parts.scheme.as_deref(), Some("https"));
            assert_eq!(
                (parts.host.as_ref(), parts.port, parts.path.as_ref()),
                (None, None, None)
            );
        }
        other => panic!("{other:?}"),
    }
    let cases: &[(&str, &str)] = &[
        (
            "redirect = { scheme = \"ftp\" }",
            "routes[0].redirect.scheme: \"ftp\" is not",
        ),
        (
            "redirect = { port = 0 }",
            "routes[0].redirect.port: 0 is out of range",
        ),
        ("redirect = { host = \"a b\" }", "routes[0].redirect.host:"),
        ("redirect = { host = \"a:1\" }", "routes[0].redirect.host:"),
        ("redirect = { path = \"x\" }", "routes[0].redirect.path:"),
        ("redirect = { path = \"/x?y\" }", "routes[0].redirect.path:"),
        (
            "redirect = { location = \"/\", scheme = \"https\" }",
            "routes[0].redirect: either",
        ),
        (
            "redirect = { status = 301 }",
            "routes[0].redirect: `location`, or one of",
        ),
    ];
    for (route, want) in cases {
        let e = with(&format!("[[routes]]\n{route}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{route}: {e}");
    }
}
