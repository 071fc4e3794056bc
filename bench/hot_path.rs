//! Micro-benchmarks of the per-request work that does not touch a socket: head
//! parsing, chunked decoding, route lookup, balancer picks and head rewriting.
//! `cargo bench` runs them; `cargo bench -- parse` runs a subset. End-to-end figures
//! (syscalls, instructions and CPU per request against nginx and HAProxy) come from
//! `loadtest/compare.sh`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringway::config::{Config, Limits};
use ringway::http::answer::ConnHeader;
use ringway::http::body::{dechunk_holding_trailers, ChunkedDecoder};
use ringway::http::parse::{parse_request, parse_response, HeaderSpan};
use ringway::http::rewrite::{
    port_line, proto_line, write_request_head, write_response_head, ClientFraming, Peer,
    RequestRewrite, ResponseRewrite,
};
use ringway::route::{RequestView, RouteTable};
use ringway::upstream::balance::Balancer;
use std::hint::black_box;

/// What h2load and wrk send.
const SMALL_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: h2load nghttp2/1.52.0\r\nAccept: */*\r\n\r\n";

/// A browser's request: 13 headers, a cookie, about 700 bytes.
const BROWSER_GET: &[u8] = b"GET /api/v2/orders?page=3&sort=desc HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/api/v2/orders?page=2\r\n\
Connection: keep-alive\r\n\
Cookie: session=5f2b8c7e9a1d4e6f8b0c2d4e6f8a0b1c; cohort=beta; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\
Priority: u=0, i\r\n\r\n";

/// nginx's answer to the small GET.
const NGINX_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 19:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";

const DATE: &[u8] = b"Sun, 22 Nov 2026 19:00:00 GMT";

fn config(extra: &str) -> Config {
    let text = format!(
        "[[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\n\
         [clusters.web]\nendpoints = [{{ addr = \"127.0.0.1:9001\", weight = 3 }}, \"127.0.0.1:9002\", \"127.0.0.1:9003\"]\n\
         lb = \"weighted_round_robin\"\n\
         [clusters.rr]\nendpoints = [\"127.0.0.1:9001\", \"127.0.0.1:9002\", \"127.0.0.1:9003\"]\n{extra}"
    );
    Config::from_toml(&text).expect("bench config")
}

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    for (name, req) in [("small_get", SMALL_GET), ("browser_get", BROWSER_GET)] {
        let mut headers: Vec<HeaderSpan> = Vec::new();
        g.throughput(Throughput::Bytes(req.len() as u64));
        g.bench_function(format!("request/{name}"), |b| {
            b.iter(|| parse_request(black_box(req), &limits, &mut headers).unwrap())
        });
    }
    let mut headers: Vec<HeaderSpan> = Vec::new();
    g.throughput(Throughput::Bytes(NGINX_RESPONSE.len() as u64));
    g.bench_function("response/nginx", |b| {
        b.iter(|| {
            parse_response(black_box(NGINX_RESPONSE), 64 * 1024, false, &mut headers).unwrap()
        })
    });
    g.finish();
}

/// 64 KiB of body in 4 KiB chunks, with extensions and a trailer.
fn chunked_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..16 {
        body.extend_from_slice(format!("1000;ext={i}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'x', 4096));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\nx-checksum: 1234\r\n\r\n");
    body
}

fn chunked(c: &mut Criterion) {
    let body = chunked_body();
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("scan/64KiB_in_4KiB_chunks", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new(64 * 1024);
            let scan = d.feed(black_box(&body), |_| {}).unwrap();
            assert!(d.is_done());
            scan
        })
    });
    // The same body arriving in 1,500-byte reads (chunk headers split across reads).
    g.bench_function("scan/64KiB_in_1500B_reads", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new(64 * 1024);
            for piece in black_box(&body).chunks(1500) {
                let mut at = 0;
                while at < piece.len() {
                    at += d.feed(&piece[at..], |_| {}).unwrap().consumed;
                    if d.is_done() {
                        break;
                    }
                }
            }
            assert!(d.is_done());
        })
    });
    g.bench_function("dechunk_holding_trailers/64KiB", |b| {
        b.iter_batched_ref(
            || body.clone(),
            |buf| {
                let mut d = ChunkedDecoder::new(64 * 1024);
                dechunk_holding_trailers(&mut d, buf).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let ten_routes = config(
        r#"
[[routes]]
name = "api-v2"
match = { host = "api.example.com", path_prefix = "/v2/" }
cluster = "web"
[[routes]]
name = "canary"
match = { headers = [{ name = "x-canary", exact = "true" }] }
cluster = "web"
[[routes]]
name = "beta"
match = { cookies = [{ name = "cohort", exact = "beta" }] }
cluster = "web"
[[routes]]
name = "writes"
match = { path_prefix = "/orders", methods = ["POST", "PUT", "PATCH", "DELETE"] }
cluster = "web"
[[routes]]
name = "health"
match = { path = "/healthz" }
respond = { status = 200, body = "ok" }
[[routes]]
name = "docs"
match = { path_prefix = "/docs-old/" }
redirect = { status = 301, location = "https://docs.example.com/" }
[[routes]]
name = "search"
match = { path_regex = "/search/[a-z]+", query = [{ name = "q", present = true }] }
cluster = "web"
[[routes]]
name = "static"
match = { host = "*.cdn.example.com" }
cluster = "web"
[[routes]]
name = "admin"
match = { path_prefix = "/admin", headers = [{ name = "x-admin", present = true }] }
cluster = "web"
[[routes]]
name = "default"
match = { path_prefix = "/" }
cluster = "web"
"#,
    );
    let mut many = String::new();
    for i in 0..10_000 {
        many.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nmatch = {{ host = \"h{i}.example.com\" }}\ncluster = \"web\"\n"
        ));
    }
    let ten_thousand = config(&many);
    let tables = [
        (
            "10_routes/browser_get_to_default",
            RouteTable::build(&ten_routes),
            BROWSER_GET.to_vec(),
        ),
        (
            "10000_hosts/last_host",
            RouteTable::build(&ten_thousand),
            b"GET / HTTP/1.1\r\nHost: h9999.example.com\r\n\r\n".to_vec(),
        ),
    ];
    let mut g = c.benchmark_group("route");
    for (name, table, req) in &tables {
        let mut headers = Vec::new();
        let head = parse_request(req, &Limits::default(), &mut headers)
            .unwrap()
            .unwrap();
        let view = RequestView {
            buf: req,
            method: head.method_span.get(req),
            host: head.host().map(|h| h.get(req)),
            path: head.path.get(req),
            query: head.query.map(|q| q.get(req)),
            headers: &headers,
            listener: 0,
            sni: None,
        };
        assert!(table.lookup(&view).is_some());
        g.bench_function(*name, |b| b.iter(|| table.lookup(black_box(&view))));
    }
    g.finish();
}

fn balance(c: &mut Criterion) {
    let cfg = config("[[routes]]\ncluster = \"web\"\n");
    let mut g = c.benchmark_group("balance");
    for cluster in &cfg.clusters {
        let lb = Balancer::new(cluster, 0);
        g.bench_function(format!("pick/{}", cluster.name), |b| {
            b.iter(|| lb.pick(|i| black_box(i) != usize::MAX))
        });
    }
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let cfg = config(
        r#"
[[routes]]
name = "default"
cluster = "web"
request_headers = { add = { "x-edge" = "ringway" }, remove = ["x-internal-token"] }
response_headers = { add = { "strict-transport-security" = "max-age=31536000" }, remove = ["x-backend-version"] }
"#,
    );
    let table = RouteTable::build(&cfg);
    let route = table.route(0);
    let peer = Peer::of("192.0.2.33:40000".parse().unwrap());
    let mut g = c.benchmark_group("rewrite");
    for (name, req) in [("small_get", SMALL_GET), ("browser_get", BROWSER_GET)] {
        let mut headers = Vec::new();
        let head = parse_request(req, &Limits::default(), &mut headers)
            .unwrap()
            .unwrap();
        let rw = RequestRewrite {
            peer: &peer,
            port_line: &port_line(443),
            proto_line: proto_line(false),
            client_cert: None,
            forwarding: &cfg.forwarding,
            edits: &route.request_headers,
            host_rewrite: None,
            fallback_host: b"127.0.0.1:9001",
        };
        let mut out = Vec::with_capacity(4096);
        g.bench_function(format!("request_head/{name}"), |b| {
            b.iter(|| {
                out.clear();
                write_request_head(&mut out, req, &head, &headers, &rw, |o| {
                    o.extend_from_slice(b"0b5d0c9e-8f1a-4b7c-9d2e-3f4a5b6c7d8e")
                });
                out.len()
            })
        });
    }
    let mut headers = Vec::new();
    let resp = parse_response(NGINX_RESPONSE, 64 * 1024, false, &mut headers)
        .unwrap()
        .unwrap();
    let rw = ResponseRewrite {
        edits: &route.response_headers,
        framing: ClientFraming::Length(5),
        conn: ConnHeader::None,
        date: DATE,
    };
    let mut out = Vec::with_capacity(4096);
    g.bench_function("response_head/nginx", |b| {
        b.iter(|| {
            out.clear();
            write_response_head(&mut out, NGINX_RESPONSE, &resp, &headers, &rw);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, parse, chunked, lookup, balance, rewrite);
criterion_main!(benches);
