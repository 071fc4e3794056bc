//! The admin listener: health, configuration, clusters, reload and drain over
//! HTTP, and Prometheus metrics whose counts are exact.

mod common;
use common::*;
use std::net::SocketAddr;

const ROUTES: &str = r#"
[[routes]]
name = "api"
match = { path_prefix = "/api" }
cluster = "web"
[[routes]]
name = "direct"
match = { path = "/direct" }
respond = { status = 200, body = "hi" }
[[routes]]
name = "dead"
match = { path = "/dead" }
cluster = "dead"
[clusters.web]
endpoints = [{ addr = "{up}", weight = 3 }]
[clusters.dead]
endpoints = ["{dead}"]
connect_timeout = "2s"
[admin]
bind = "127.0.0.1:0"
"#;

fn start(up: SocketAddr) -> (Proxy, SocketAddr) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead); // nothing listens there: connections are refused
    let p = proxy("", ROUTES, &[("up", up), ("dead", dead_addr)]);
    let admin = p.server.admin_addr().expect("an admin listener");
    (p, admin)
}

fn admin(addr: SocketAddr, method: &str, path: &str) -> Message {
    get(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n"),
    )
}

/// The value of the sample `name{labels}` in a scrape, if present.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `series` reads `want` (the worker counts a request just after
/// its response is written), then returns the scrape.
fn scrape_until(admin_addr: SocketAddr, series: &str, want: f64) -> String {
    let mut last = String::new();
    let mut seen = None;
    let ok = (0..2000).any(|_| {
        last = admin(admin_addr, "GET", "/metrics").body_str();
        seen = sample(&last, series);
        seen == Some(want) || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            false
        }
    });
    assert!(ok, "{series}: {seen:?}, want {want}\n{last}");
    last
}

#[test]
fn metrics_count_every_request_exactly() {
    let up = Mock::fixed(200, "ok");
    let (p, admin_addr) = start(up.addr);
    let mut c = Client::connect(p.addr);
    for _ in 0..37 {
        assert_eq!(
            c.request("GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n").status,
            200
        );
    }
    for _ in 0..5 {
        assert_eq!(
            c.request("GET /direct HTTP/1.1\r\nHost: h\r\n\r\n").status,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            c.request("GET /nope HTTP/1.1\r\nHost: h\r\n\r\n").status,
            404
        );
    }
    assert_eq!(
        c.request("GET /dead HTTP/1.1\r\nHost: h\r\n\r\n").status,
        502
    );
    for _ in 0..2 {
        // Content-Length and Transfer-Encoding together: refused before routing.
        let r = get(
            p.addr,
            "POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(r.status, 400);
    }
    let up_addr = up.addr.to_string();
    let driver = |m: &str| {
        m.lines().any(|l| {
            l.starts_with("ringway_worker_io_driver_info{worker=\"0\",driver=\"")
                && l.ends_with("\"} 1")
        })
    };
    let m = scrape_until(
        admin_addr,
        "ringway_requests_total{listener=\"edge\",route=\"\",code=\"400\"}",
        2.0,
    );
    let m = scrape_until(
        admin_addr,
        "ringway_requests_total{listener=\"edge\",route=\"dead\",code=\"502\"}",
        1.0,
    ) + &m;
    let want = [
        (
            "ringway_requests_total{listener=\"edge\",route=\"api\",code=\"200\"}",
            37.0,
        ),
        (
            "ringway_requests_total{listener=\"edge\",route=\"direct\",code=\"200\"}",
            5.0,
        ),
        (
            "ringway_requests_total{listener=\"edge\",route=\"\",code=\"404\"}",
            3.0,
        ),
        (
            "ringway_rejected_requests_total{listener=\"edge\",reason=\"malformed\"}",
            2.0,
        ),
        (
            "ringway_request_duration_seconds_count{route=\"api\"}",
            37.0,
        ),
        (
            "ringway_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"}",
            37.0,
        ),
        (
            "ringway_upstream_response_seconds_count{cluster=\"web\"}",
            37.0,
        ),
        ("ringway_worker_requests_total{worker=\"0\"}", 48.0),
        (
            "ringway_downstream_connections_total{listener=\"edge\"}",
            3.0,
        ),
        ("ringway_config_reloads_total{result=\"failure\"}", 0.0),
        ("ringway_build_info{version=\"0.1.0\"}", 1.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&m, series), Some(value), "{series}\n{m}");
    }
    assert!(driver(&m), "{m}");
    let ep = |name: &str, labels: &str| {
        format!("{name}{{cluster=\"web\",endpoint=\"{up_addr}\"{labels}}}")
    };
    assert_eq!(
        sample(&m, &ep("ringway_upstream_requests_total", ",code=\"200\"")),
        Some(37.0)
    );
    assert_eq!(sample(&m, &ep("ringway_upstream_pool_idle", "")), Some(1.0));
    assert_eq!(
        sample(&m, &ep("ringway_upstream_connections_active", "")),
        Some(1.0)
    );
    let dead = m
        .lines()
        .find(|l| l.starts_with("ringway_upstream_connect_failures_total{cluster=\"dead\""))
        .unwrap_or_else(|| panic!("connect failures of dead\n{m}"));
    assert!(dead.ends_with(" 1"), "{dead}");
    // Bytes: 37 requests of `GET /api/x` and their 2-byte bodies, at least.
    let bytes = sample(&m, "ringway_response_bytes_total{route=\"api\"}").unwrap();
    assert!(bytes >= 37.0 * 40.0, "{bytes}");
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
        "ringway_config_last_reload_success_timestamp_seconds",
    ] {
        assert!(
            m.lines()
                .any(|l| l.starts_with(family) && !l.starts_with('#')),
            "{family}\n{m}"
        );
    }
    // Every sample line has a # TYPE above it.
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| m.contains(&format!("# TYPE {b} histogram")))
            .unwrap_or(name);
        assert!(m.contains(&format!("# TYPE {base} ")), "no TYPE for {l}");
    }
    // Connections close: the gauges go back to zero.
    drop(c);
    scrape_until(
        admin_addr,
        "ringway_downstream_connections_active{listener=\"edge\"}",
        0.0,
    );
}

#[test]
fn health_config_clusters_and_methods() {
    let up = Mock::fixed(200, "ok");
    let (p, a) = start(up.addr);
    let live = admin(a, "GET", "/live");
    assert_eq!(
        (live.status, live.header("connection").as_deref()),
        (200, Some("close"))
    );
    assert_eq!(admin(a, "GET", "/ready").status, 200);
    let mut head = Client::connect(a);
    head.send(b"HEAD /ready HTTP/1.1\r\nHost: admin\r\n\r\n");
    let r = head.read_as(true);
    assert_eq!((r.status, r.body.len()), (200, 0));
    head.expect_closed();
    let config = admin(a, "GET", "/config");
    assert_eq!(config.status, 200);
    let sha = config.header("x-config-sha256").unwrap();
    let text = p.server.config().source.to_string();
    assert_eq!(sha, ringway::exposition::sha256_hex(text.as_bytes()));
    assert!(config.body_str().starts_with(&format!("# sha256: {sha}\n")));
    assert!(config.body_str().ends_with(&text));
    let clusters = admin(a, "GET", "/clusters");
    let json: serde_json::Value = serde_json::from_str(&clusters.body_str()).unwrap();
    let web = json["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .expect("cluster web");
    assert_eq!(web["endpoints"][0]["address"], up.addr.to_string());
    assert_eq!(web["endpoints"][0]["weight"], 3);
    assert_eq!(web["endpoints"][0]["pool_idle"], 0);
    assert_eq!(admin(a, "GET", "/reload").status, 405);
    assert_eq!(admin(a, "GET", "/drain").status, 405);
    assert_eq!(admin(a, "POST", "/metrics").status, 405);
    assert_eq!(admin(a, "GET", "/nope").status, 404);
    // POST /drain: the proxy drains, /ready says so, the listener closes.
    assert_eq!(admin(a, "POST", "/drain").status, 200);
    assert_eq!(admin(a, "GET", "/ready").status, 503);
    assert_eq!(admin(a, "GET", "/live").status, 200);
    eventually("the listener closed", || {
        std::net::TcpStream::connect(p.addr).is_err()
    });
    p.server.join();
}

#[test]
fn post_reload_answers_400_with_the_error_and_counts_it() {
    let up = Mock::fixed(200, "ok");
    let dir = std::env::temp_dir().join(format!("ringway-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringway.toml");
    let good = config_text("", "", ROUTES, &[("up", up.addr), ("dead", up.addr)]);
    std::fs::write(&path, &good).unwrap();
    let server = ringway::Server::start(ringway::Config::load(&path).unwrap()).unwrap();
    server.set_config_path(Some(path.clone()));
    let a = server.admin_addr().unwrap();
    std::fs::write(
        &path,
        good.replace("cluster = \"web\"", "cluster = \"nope\""),
    )
    .unwrap();
    let r = admin(a, "POST", "/reload");
    assert_eq!(r.status, 400);
    assert!(
        r.body_str()
            .starts_with("routes[0].cluster: unknown cluster \"nope\""),
        "{}",
        r.body_str()
    );
    std::fs::write(&path, &good).unwrap();
    assert_eq!(admin(a, "POST", "/reload").status, 200);
    let m = admin(a, "GET", "/metrics").body_str();
    assert_eq!(
        sample(&m, "ringway_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "ringway_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    // A reload that moves the admin listener: the new address answers, the old
    // one is closed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let moved = free.local_addr().unwrap();
    drop(free);
    let text = good.replace("bind = \"127.0.0.1:0\"\n\"#", "").replace(
        "[admin]\nbind = \"127.0.0.1:0\"",
        &format!("[admin]\nbind = \"{moved}\""),
    );
    std::fs::write(&path, &text).unwrap();
    assert_eq!(admin(a, "POST", "/reload").status, 200);
    assert_eq!(server.admin_addr(), Some(moved));
    assert_eq!(admin(moved, "GET", "/live").status, 200);
    eventually("the old admin address closed", || {
        std::net::TcpStream::connect(a).is_err()
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_remote_admin_bind_needs_allow_remote() {
    let base = "[[listeners]]\nbind = \"127.0.0.1:0\"\n[[routes]]\nrespond = { status = 200 }\n";
    let err = ringway::Config::from_toml(&format!("{base}[admin]\nbind = \"0.0.0.0:9901\"\n"))
        .unwrap_err();
    assert_eq!(err.field, "admin.bind");
    assert!(err.reason.contains("allow_remote"), "{err}");
    let ok = ringway::Config::from_toml(&format!(
        "{base}[admin]\nbind = \"0.0.0.0:9901\"\nallow_remote = true\n"
    ))
    .unwrap();
    assert!(ok.admin.unwrap().allow_remote);
    assert!(ringway::Config::from_toml(base).unwrap().admin.is_none());
}

#[test]
fn a_reload_that_swaps_listener_names_moves_their_series() {
    let text = |first: &str, second: &str, binds: (&str, &str)| {
        format!(
            "[runtime]\nworkers = 1\npin_workers = false\n\
             [[listeners]]\nname = \"{first}\"\nbind = \"{}\"\n\
             [[listeners]]\nname = \"{second}\"\nbind = \"{}\"\n\
             [[routes]]\nname = \"r\"\nrespond = {{ status = 200 }}\n\
             [admin]\nbind = \"127.0.0.1:0\"\n",
            binds.0, binds.1
        )
    };
    let any = ("127.0.0.1:0", "127.0.0.1:0");
    let server =
        ringway::Server::start(ringway::Config::from_toml(&text("a", "b", any)).unwrap()).unwrap();
    let (a, b) = (
        server.local_addr("a").unwrap(),
        server.local_addr("b").unwrap(),
    );
    for _ in 0..3 {
        get(a, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }
    get(b, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let admin_addr = server.admin_addr().unwrap();
    scrape_until(
        admin_addr,
        "ringway_downstream_connections_total{listener=\"a\"}",
        3.0,
    );
    // The socket that was "a" is called "b" now, and the other way round.
    let (a_text, b_text) = (a.to_string(), b.to_string());
    let swapped = text("b", "a", (&a_text, &b_text));
    server
        .reload(ringway::Config::from_toml(&swapped).unwrap())
        .unwrap();
    let admin_addr = server.admin_addr().unwrap();
    let m = admin(admin_addr, "GET", "/metrics").body_str();
    assert_eq!(
        sample(&m, "ringway_downstream_connections_total{listener=\"b\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "ringway_downstream_connections_total{listener=\"a\"}"),
        Some(1.0),
        "{m}"
    );
}
