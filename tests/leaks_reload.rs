//! Descriptors return to baseline across reloads (listeners added and removed,
//! endpoints replaced, the access log moved) and across a takeover. One test in its
//! own binary, so no other test opens descriptors meanwhile.

mod common;
use common::*;
use std::net::SocketAddr;
use std::path::Path;

fn config(dir: &Path, up: SocketAddr, extra_listener: bool, log: &str) -> ringway::Config {
    let extra = if extra_listener {
        "[[listeners]]\nname = \"extra\"\nbind = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let text = config_text(
        &format!(
            "workers = 2\ncontrol_socket = \"{}\"",
            dir.join("control.sock").display()
        ),
        "",
        &format!(
            "{extra}[[routes]]\nname = \"all\"\ncluster = \"web\"\n\
             [clusters.web]\nendpoints = [\"{up}\"]\n\
             [admin]\nbind = \"127.0.0.1:0\"\n\
             [access_log]\npath = \"{}\"\n",
            dir.join(log).display()
        ),
        &[],
    );
    ringway::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn requests(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    for _ in 0..4 {
        assert_eq!(c.request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
}

#[test]
fn reloads_and_a_takeover_leave_no_descriptor_behind() {
    let dir = std::env::temp_dir().join(format!("ringway-leaks-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (one, two) = (Mock::fixed(200, "1"), Mock::fixed(200, "2"));
    let before_proxy = open_fds();
    let server = ringway::Server::start(config(&dir, one.addr, false, "a.log")).unwrap();
    let addr = server.local_addr("edge").unwrap();
    requests(addr);
    // Settled: the pooled upstream connections of both workers are open.
    let settle = || {
        eventually("one pooled connection per worker that served", || {
            one.connections.load(std::sync::atomic::Ordering::SeqCst)
                - one.closed.load(std::sync::atomic::Ordering::SeqCst)
                <= 2
        })
    };
    settle();
    let baseline = open_fds();
    for i in 0..20 {
        // Odd rounds: another listener, the other endpoint, the other log file.
        let odd = i % 2 == 0;
        let (up, log) = if odd {
            (two.addr, "b.log")
        } else {
            (one.addr, "a.log")
        };
        server.reload(config(&dir, up, odd, log)).unwrap();
        requests(addr);
        if odd {
            requests(server.local_addr("extra").unwrap());
        }
    }
    // Back at the first configuration: the other endpoint's pooled connections
    // were closed with it, the extra listener's sockets and the other log file too.
    eventually("descriptors back to baseline after 20 reloads", || {
        open_fds() <= baseline
    });

    let inherited = ringway::takeover::fetch(&dir.join("control.sock")).unwrap();
    let new = ringway::Server::start_with(config(&dir, one.addr, false, "a.log"), Some(inherited))
        .unwrap();
    server.join();
    drop(server);
    requests(addr);
    drop(new);
    eventually(
        "descriptors back to the count before the proxy started",
        || open_fds() <= before_proxy,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
