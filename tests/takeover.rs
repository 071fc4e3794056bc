//! Binary upgrade: a second server takes the listening sockets over from a running
//! one through its control socket, under load, and no request fails.

mod common;
use common::*;

fn config(tag: &str, socket: &std::path::Path, up: std::net::SocketAddr) -> ringway::Config {
    let text = config_text(
        &format!(
            "workers = 2\ndrain_timeout = \"10s\"\ncontrol_socket = \"{}\"",
            socket.display()
        ),
        "",
        &format!(
            "[[routes]]\nname = \"all\"\ncluster = \"web\"\n\
             request_headers = {{ set = {{ \"x-config\" = \"{tag}\" }} }}\n\
             [clusters.web]\nendpoints = [\"{up}\"]\n"
        ),
        &[],
    );
    ringway::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn takeover_under_load_fails_no_request() {
    let dir = std::env::temp_dir().join(format!("ringway-takeover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");
    let up = Mock::fixed(200, "ok");
    let old = ringway::Server::start(config("old", &socket, up.addr)).unwrap();
    let addr = old.local_addr("edge").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the control socket is the owner's only"
        );
    }
    // A second server without --takeover refuses the control socket in use.
    let err = ringway::Server::start(config("x", &dir.join("other.sock"), up.addr))
        .map(drop)
        .and_then(|()| {
            let mut c = config("x", &socket, up.addr);
            c.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
            ringway::Server::start(c).map(drop)
        });
    assert!(
        err.as_ref()
            .is_err_and(|e| e.to_string().contains("--takeover")),
        "{:?}",
        err.map_err(|e| e.to_string())
    );

    let load = Load::start(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 6);
    load.flows(200);
    let inherited = ringway::takeover::fetch(&socket).expect("the old server hands over");
    let new = ringway::Server::start_with(config("new", &socket, up.addr), Some(inherited))
        .expect("the new server starts on the handed sockets");
    assert_eq!(new.local_addr("edge"), Some(addr), "the same port");
    assert!(
        old.is_draining(),
        "the old server drains once the new one serves"
    );
    old.join(); // every old worker has finished its connections
    load.flows(200);
    assert_eq!(up.last().header("x-config").as_deref(), Some("new"));
    load.finish().expect("no request fails");
    drop(old);
    // The control socket is the new server's now: it hands over in its turn.
    assert!(socket.exists());
    let again = ringway::takeover::fetch(&socket).expect("the new server answers");
    assert_eq!(again.listeners.len(), 1);
    assert_eq!(again.listeners[0].addr, addr);
    drop(again); // went away without DRAIN: the new server serves on
    assert_eq!(get(addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    assert!(!new.is_draining());
    drop(new);
    assert!(!socket.exists(), "removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new process with more workers binds more sockets beside the handed ones; one
/// with fewer accepts on several per worker. Both serve, with no failed request.
#[test]
fn takeovers_between_different_worker_counts() {
    let dir = std::env::temp_dir().join(format!("ringway-takeover-n-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");
    let up = Mock::fixed(200, "ok");
    let with_workers = |n: usize, tag: &str| {
        let mut c = config(tag, &socket, up.addr);
        c.runtime.workers = n;
        c
    };
    let first = ringway::Server::start(with_workers(2, "two")).unwrap();
    let addr = first.local_addr("edge").unwrap();
    let load = Load::start(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 4);
    load.flows(100);
    let handed = ringway::takeover::fetch(&socket).unwrap();
    assert_eq!(
        handed.listeners[0].sockets.len(),
        2,
        "one socket per worker"
    );
    let second = ringway::Server::start_with(with_workers(3, "three"), Some(handed)).unwrap();
    first.join();
    load.flows(100);
    let handed = ringway::takeover::fetch(&socket).unwrap();
    assert_eq!(
        handed.listeners[0].sockets.len(),
        3,
        "two handed, one bound beside"
    );
    let third = ringway::Server::start_with(with_workers(1, "one"), Some(handed)).unwrap();
    second.join();
    load.flows(100);
    assert_eq!(up.last().header("x-config").as_deref(), Some("one"));
    load.finish().expect("no request fails");
    drop((first, second, third));
    let _ = std::fs::remove_dir_all(&dir);
}
