//! The access log: exactly one well-formed line per request, escaped values,
//! reopening for logrotate, and a reload that moves it.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn routes(log: &Path, format: &str) -> String {
    format!(
        r#"
[[routes]]
name = "api"
match = {{ path_prefix = "/api" }}
cluster = "web"
[[routes]]
name = "direct"
match = {{ path = "/direct" }}
respond = {{ status = 204 }}
[clusters.web]
endpoints = ["{{up}}"]
[access_log]
path = "{}"
format = "{format}"
"#,
        log.display()
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_request_gives_exactly_one_json_line() {
    let dir = temp_dir("access-json");
    let log = dir.join("access.log");
    let up = Mock::fixed(200, "ok");
    let p = proxy("", &routes(&log, "json"), &[("up", up.addr)]);
    let mut c = Client::connect(p.addr);
    for i in 0..25 {
        let r = c.request(&format!(
            "GET /api/{i}?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test/1\r\n\
             traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
        ));
        assert_eq!(r.status, 200);
    }
    // A user agent with quotes and backslashes; obs-text bytes (over 0x7f).
    let mut raw = b"GET /api/x HTTP/1.1\r\nHost: h\r\nUser-Agent: a \"quoted\" \\ back".to_vec();
    raw.extend_from_slice(b" \xc3\xa9\xff\r\nX-Request-Id: given-id\r\n\r\n");
    c.send(&raw);
    assert_eq!(c.read().status, 200);
    assert_eq!(
        c.request("GET /direct HTTP/1.1\r\nHost: h\r\n\r\n").status,
        204
    );
    assert_eq!(
        c.request("GET /nope HTTP/1.1\r\nHost: h\r\n\r\n").status,
        404
    );
    // A body relayed through the read buffer: the line keeps what the head said.
    let post =
        c.request("POST /api/post HTTP/1.1\r\nHost: p.example\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(post.status, 200);
    // Refused before routing.
    let bad = get(
        p.addr,
        "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(bad.status, 400);
    // CONNECT is refused; an authority that is no host is refused before routing
    // and never reaches the line as it was sent.
    let connect = get(
        p.addr,
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    );
    assert_eq!(connect.status, 405);
    let forged = get(
        p.addr,
        "CONNECT a\",\"route\":\"x HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(forged.status, 400);
    drop(c);
    p.server.drain();
    p.server.join(); // flushes every core's buffer and the writer
    let got = lines(&log);
    assert_eq!(got.len(), 32, "one line per request:\n{}", got.join("\n"));
    let parsed: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let first = &parsed[0];
    assert_eq!(first["route"], "api");
    assert_eq!(first["cluster"], "web");
    assert_eq!(first["endpoint"], up.addr.to_string());
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "example.com");
    assert_eq!(first["path"], "/api/0?q=1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["flags"], "-");
    assert_eq!(first["user_agent"], "test/1");
    assert_eq!(first["listener"], "edge");
    assert_eq!(
        first["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert!(first["response_bytes"].as_u64().unwrap() > 2);
    // The generated request id is the one the upstream got.
    let sent: Vec<String> = up
        .requests()
        .iter()
        .filter_map(|r| r.header("x-request-id"))
        .collect();
    assert_eq!(first["request_id"], sent[0]);
    let odd = &parsed[25];
    assert_eq!(odd["user_agent"], "a \"quoted\" \\ back \u{c3}\u{a9}\u{ff}");
    assert_eq!(odd["request_id"], "given-id");
    assert_eq!(
        (parsed[26]["route"].as_str(), parsed[26]["status"].as_u64()),
        (Some("direct"), Some(204))
    );
    assert_eq!(parsed[26]["cluster"], serde_json::Value::Null);
    assert_eq!(
        (parsed[27]["status"].as_u64(), parsed[27]["flags"].as_str()),
        (Some(404), Some("NR"))
    );
    let post = &parsed[28];
    assert_eq!(
        (post["method"].as_str(), post["path"].as_str()),
        (Some("POST"), Some("/api/post"))
    );
    assert_eq!(post["host"], "p.example");
    assert_eq!(parsed[29]["status"], 400);
    assert_eq!(parsed[29]["flags"], "DPE");
    assert_eq!(parsed[29]["method"], serde_json::Value::Null);
    assert_eq!(
        (parsed[30]["status"].as_u64(), parsed[30]["host"].as_str()),
        (Some(405), Some("a.example:443"))
    );
    assert_eq!(
        (parsed[31]["status"].as_u64(), &parsed[31]["host"]),
        (Some(400), &serde_json::Value::Null)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn combined_format_for_existing_tooling() {
    let dir = temp_dir("access-combined");
    let log = dir.join("access.log");
    let up = Mock::fixed(200, "ok");
    let p = proxy("", &routes(&log, "combined"), &[("up", up.addr)]);
    let r = get(
        p.addr,
        "GET /api/x?y=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8\r\nReferer: http://r/\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    p.server.drain();
    p.server.join();
    let got = lines(&log);
    assert_eq!(got.len(), 1);
    let line = &got[0];
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("] \"GET /api/x?y=1 HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(line.ends_with(" \"http://r/\" \"curl/8\""), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reopen_after_a_rotation_and_a_reload_that_moves_the_log() {
    let dir = temp_dir("access-rotate");
    let log = dir.join("access.log");
    let up = Mock::fixed(200, "ok");
    let text = config_text(
        "drain_timeout = \"5s\"",
        "",
        &routes(&log, "json"),
        &[("up", up.addr)],
    );
    let server = ringway::Server::start(ringway::Config::from_toml(&text).unwrap()).unwrap();
    let addr = server.local_addr("edge").unwrap();
    for _ in 0..3 {
        assert_eq!(
            get(addr, "GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status,
            200
        );
    }
    // Lines reach the file within a second or so (each core flushes once a second).
    eventually("three lines written", || lines(&log).len() == 3);
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.reopen_logs();
    eventually("the log reopened", || log.exists());
    for _ in 0..2 {
        assert_eq!(
            get(addr, "GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status,
            200
        );
    }
    // A reload that moves the log: what was buffered goes to the old file first.
    let moved = dir.join("moved.log");
    let text2 = text.replace(&log.display().to_string(), &moved.display().to_string());
    server
        .reload(ringway::Config::from_toml(&text2).unwrap())
        .unwrap();
    assert_eq!(
        get(addr, "GET /api HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    server.drain();
    server.join();
    assert_eq!(lines(&rotated).len(), 3);
    // (The replaced writer finishes on its own, not waited for by the reload.)
    eventually("lines after the reopen go to the new file", || {
        lines(&log).len() == 2
    });
    assert_eq!(lines(&moved).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_log_path_is_a_config_error() {
    let up = Mock::fixed(200, "ok");
    let text = config_text(
        "",
        "",
        &routes(Path::new("/nonexistent-dir/access.log"), "json"),
        &[("up", up.addr)],
    );
    let err = ringway::Server::start(ringway::Config::from_toml(&text).unwrap())
        .err()
        .expect("start fails");
    assert!(
        err.to_string().starts_with("access_log.path: cannot open"),
        "{err}"
    );
    let bad = ringway::Config::from_toml(&text.replace("\"json\"", "\"xml\"")).unwrap_err();
    assert_eq!(bad.field, "access_log.format");
}
