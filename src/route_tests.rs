use super::*;
use crate::http::parse::parse_request;

fn table(toml_routes: &str) -> RouteTable {
    let text = format!(
        "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\n[[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n{toml_routes}"
    );
    RouteTable::build(&Config::from_toml(&text).unwrap())
}

/// Routes the raw request head through the table; returns the route's name.
fn lookup(t: &RouteTable, req: &str, listener: u32) -> Option<String> {
    lookup_sni(t, req, listener, None)
}

fn lookup_sni(t: &RouteTable, req: &str, listener: u32, sni: Option<&str>) -> Option<String> {
    let mut headers = Vec::new();
    let buf = req.as_bytes();
    let head = parse_request(buf, &Default::default(), &mut headers)
        .unwrap()
        .unwrap();
    let view = RequestView {
        buf,
        method: head.method_span.get(buf),
        host: head.host().map(|h| h.get(buf)),
        path: head.path.get(buf),
        query: head.query.map(|q| q.get(buf)),
        headers: &headers,
        listener,
        sni: sni.map(str::as_bytes),
    };
    t.lookup(&view).map(|i| t.route(i).name.to_string())
}

fn get(t: &RouteTable, host: &str, target: &str, extra: &str) -> Option<String> {
    lookup(
        t,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"),
        0,
    )
}

#[test]
fn first_match_wins_in_file_order_across_host_indexes() {
    let t = table(
        r#"
[[routes]]
name = "wild-first"
match = { host = "*.example.com", path_prefix = "/w" }
cluster = "c"
[[routes]]
name = "exact"
match = { host = "api.example.com" }
cluster = "c"
[[routes]]
name = "wild"
match = { host = "*.example.com" }
cluster = "c"
[[routes]]
name = "any"
match = { path_prefix = "/" }
cluster = "c"
"#,
    );
    assert_eq!(
        get(&t, "api.example.com", "/w/x", "").as_deref(),
        Some("wild-first")
    );
    assert_eq!(
        get(&t, "API.Example.COM:8443", "/x", "").as_deref(),
        Some("exact")
    );
    assert_eq!(
        get(&t, "api.example.com.", "/x", "").as_deref(),
        Some("exact"),
        "trailing dot"
    );
    assert_eq!(
        get(&t, "a.b.example.com", "/x", "").as_deref(),
        Some("wild"),
        "any depth"
    );
    assert_eq!(
        get(&t, "example.com", "/x", "").as_deref(),
        Some("any"),
        "wildcard needs a label"
    );
    assert_eq!(get(&t, "other.org", "/x", "").as_deref(), Some("any"));
}

#[test]
fn path_method_header_cookie_query_listener() {
    let t = table(
        r#"
[[routes]]
name = "exact"
match = { path = "/healthz" }
respond = { status = 200 }
[[routes]]
name = "regex"
match = { path_regex = "/items/[0-9]+" }
cluster = "c"
[[routes]]
name = "writes"
match = { path_prefix = "/orders", methods = ["POST", "delete"] }
cluster = "c"
[[routes]]
name = "hdr"
match = { headers = [{ name = "X-Canary", exact = "true" }, { name = "x-debug", present = false }] }
cluster = "c"
[[routes]]
name = "hdr-prefix"
match = { headers = [{ name = "user-agent", prefix = "curl/" }] }
cluster = "c"
[[routes]]
name = "hdr-regex"
match = { headers = [{ name = "x-v", regex = "v[0-9]" }] }
cluster = "c"
[[routes]]
name = "cookie"
match = { cookies = [{ name = "cohort", exact = "beta" }] }
cluster = "c"
[[routes]]
name = "query"
match = { query = [{ name = "debug", present = true }, { name = "mode", exact = "x" }] }
cluster = "c"
[[routes]]
name = "on-b"
match = { listener = "b" }
cluster = "c"
"#,
    );
    assert_eq!(get(&t, "h", "/healthz", "").as_deref(), Some("exact"));
    assert_eq!(get(&t, "h", "/healthz/", ""), None);
    assert_eq!(get(&t, "h", "/items/42", "").as_deref(), Some("regex"));
    assert_eq!(
        get(&t, "h", "/items/42x", ""),
        None,
        "regex is a full match"
    );
    assert_eq!(
        lookup(
            &t,
            "POST /orders/1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            0
        )
        .as_deref(),
        Some("writes")
    );
    assert_eq!(
        lookup(&t, "DELETE /orders HTTP/1.1\r\nHost: h\r\n\r\n", 0).as_deref(),
        Some("writes")
    );
    assert_eq!(get(&t, "h", "/orders", ""), None, "GET is not a write");
    assert_eq!(
        get(&t, "h", "/", "x-canary: true\r\n").as_deref(),
        Some("hdr")
    );
    assert_eq!(
        get(&t, "h", "/", "x-canary: true\r\nx-debug: 1\r\n"),
        None,
        "present = false"
    );
    assert_eq!(
        get(&t, "h", "/", "x-canary: TRUE\r\n"),
        None,
        "values are case-sensitive"
    );
    assert_eq!(
        get(&t, "h", "/", "User-Agent: curl/8\r\n").as_deref(),
        Some("hdr-prefix")
    );
    assert_eq!(
        get(&t, "h", "/", "x-v: v1\r\n").as_deref(),
        Some("hdr-regex")
    );
    assert_eq!(get(&t, "h", "/", "x-v: v12\r\n"), None);
    assert_eq!(
        get(&t, "h", "/", "Cookie: a=1; cohort=beta\r\n").as_deref(),
        Some("cookie")
    );
    assert_eq!(
        get(&t, "h", "/", "Cookie: a=1\r\nCookie: cohort = beta\r\n").as_deref(),
        Some("cookie")
    );
    assert_eq!(get(&t, "h", "/", "Cookie: xcohort=beta\r\n"), None);
    assert_eq!(get(&t, "h", "/?debug&mode=x", "").as_deref(), Some("query"));
    assert_eq!(get(&t, "h", "/?debug=1&mode=y", ""), None);
    assert_eq!(get(&t, "h", "/?debugx&mode=x", ""), None);
    assert_eq!(
        lookup(&t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1).as_deref(),
        Some("on-b")
    );
    assert_eq!(lookup(&t, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0), None);
}

#[test]
fn ten_thousand_hosts_resolve_by_index() {
    let mut routes = String::new();
    for i in 0..10_000 {
        routes.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nmatch = {{ host = \"h{i}.example.com\" }}\ncluster = \"c\"\n"
        ));
    }
    routes.push_str(
        "[[routes]]\nname = \"wild\"\nmatch = { host = \"*.example.com\" }\ncluster = \"c\"\n",
    );
    let t = table(&routes);
    assert_eq!(t.exact_hosts.len(), 10_000);
    assert_eq!(
        get(&t, "h9999.example.com", "/", "").as_deref(),
        Some("r9999")
    );
    assert_eq!(get(&t, "h0.example.com", "/", "").as_deref(), Some("r0"));
    assert_eq!(get(&t, "zz.example.com", "/", "").as_deref(), Some("wild"));
    assert_eq!(get(&t, "h1.example.org", "/", ""), None);
}

#[test]
fn http10_without_host_matches_only_hostless_routes() {
    let t = table(
        r#"
[[routes]]
name = "host"
match = { host = "a" }
cluster = "c"
[[routes]]
name = "any"
cluster = "c"
"#,
    );
    assert_eq!(
        lookup(&t, "GET / HTTP/1.0\r\n\r\n", 0).as_deref(),
        Some("any")
    );
}

#[test]
fn listener_predicates_compare_stable_ids() {
    let text = "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\n[[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n\
                [[routes]]\nname = \"on-b\"\nmatch = { listener = \"b\" }\nrespond = { status = 200 }\n";
    // After reloads, listener "b" (the second in the file) may have any id.
    let t = RouteTable::build_for(&Config::from_toml(text).unwrap(), &[7, 3]);
    let req = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(lookup(&t, req, 3).as_deref(), Some("on-b"));
    assert_eq!(lookup(&t, req, 1), None, "index 1 is not the id of b");
    assert_eq!(lookup(&t, req, 7), None);
}

#[test]
fn sni_matches_like_host_and_never_on_plain_connections() {
    let config = crate::config::Config::from_toml(
        r#"
[[listeners]]
bind = "127.0.0.1:0"
[[routes]]
name = "exact"
match = { sni = "API.example.com" }
respond = { status = 200 }
[[routes]]
name = "wild"
match = { sni = "*.example.net", path_prefix = "/w" }
respond = { status = 200 }
[[routes]]
name = "rest"
respond = { status = 404 }
"#,
    )
    .unwrap();
    let t = RouteTable::build(&config);
    let req = |path: &str, sni: Option<&str>| {
        lookup_sni(
            &t,
            &format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"),
            0,
            sni,
        )
    };
    assert_eq!(req("/", Some("api.example.com")).as_deref(), Some("exact"));
    assert_eq!(req("/", Some("other.example.com")).as_deref(), Some("rest"));
    assert_eq!(req("/w", Some("a.b.example.net")).as_deref(), Some("wild"));
    assert_eq!(req("/x", Some("a.example.net")).as_deref(), Some("rest"));
    assert_eq!(req("/w", Some("example.net")).as_deref(), Some("rest"));
    assert_eq!(req("/", None).as_deref(), Some("rest"));
}

#[test]
fn grpc_matches_on_the_content_type() {
    let t = table(
        r#"
[[routes]]
name = "grpc"
match = { grpc = true }
cluster = "c"
[[routes]]
name = "web"
match = { grpc = false, path_prefix = "/" }
cluster = "c"
"#,
    );
    for ct in [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web",
    ] {
        let extra = format!("Content-Type: {ct}\r\n");
        assert_eq!(
            get(&t, "a", "/svc/M", &extra).as_deref(),
            Some("grpc"),
            "{ct}"
        );
    }
    assert_eq!(get(&t, "a", "/svc/M", "").as_deref(), Some("web"));
    let json = "Content-Type: application/json\r\n";
    assert_eq!(get(&t, "a", "/svc/M", json).as_deref(), Some("web"));
}
