//! Listening sockets: one SO_REUSEPORT socket per listener per core (bound on the
//! control path, so port 0 resolves once and every core shares the port), and the
//! per-core accept loop that spawns a connection task per client.

use crate::config::ListenerConfig;
use crate::snapshot::ListenerRt;
use crate::worker::Worker;
use monoio::io::Canceller;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// Binds `count` sockets for `cfg` sharing one address. Returns them and the bound
/// address (with the real port when the config says 0).
pub fn bind(
    cfg: &ListenerConfig,
    count: usize,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut addr = cfg.bind;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Inherited by accepted sockets on Linux: no setsockopt per connection.
        socket.set_nodelay(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(cfg.backlog as i32)?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        }
        sockets.push(socket.into());
    }
    Ok((sockets, addr))
}

/// Accepts until the listener closes (the core drains, or a reload removed it); the
/// socket closes when this returns.
pub async fn accept_loop(
    worker: Rc<Worker>,
    listener: Rc<ListenerRt>,
    socket: monoio::net::TcpListener,
) {
    let mut canceller = Canceller::new();
    loop {
        let (accepted, last) = {
            let mut accept = std::pin::pin!(socket.cancelable_accept(canceller.handle()));
            monoio::select! {
                r = &mut accept => (r, false),
                _ = worker.lifecycle.wait(|| listener.is_closing()) => {
                    // Cancelled, and awaited to its end: a connection the kernel
                    // handed to this accept as it was cancelled is served, not lost
                    // (monoio 0.2.4 drops the descriptor of an accept dropped in
                    // flight, leaving its client hanging; at a takeover the socket
                    // lives on in the new process, busy).
                    canceller = std::mem::take(&mut canceller).cancel();
                    (accept.await, true)
                }
            }
        };
        match accepted {
            Ok((stream, peer)) if listener.terminates_tls() => {
                let serving =
                    crate::conn::serve_tls(worker.clone(), stream, peer, listener.clone());
                monoio::spawn(crate::worker::conn_task(worker.clone(), serving));
            }
            Ok((stream, peer)) => {
                let worker = worker.clone();
                let conn = crate::downstream::Conn::new(
                    crate::stream::Stream::Plain(stream),
                    peer,
                    listener.clone(),
                );
                let serving = crate::conn::serve(worker.clone(), conn);
                monoio::spawn(crate::worker::conn_task(worker.clone(), serving));
            }
            Err(_) if last => {}
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bind: &str) -> ListenerConfig {
        ListenerConfig {
            name: "t".into(),
            bind: bind.parse().unwrap(),
            backlog: 16,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            release_buffers_after: Duration::from_millis(100),
            limits: Default::default(),
            http2: false,
            h2: Default::default(),
            tls: None,
        }
    }

    #[test]
    fn sockets_share_one_port_and_accepted_sockets_inherit_nodelay() {
        let (sockets, addr) = bind(&config("127.0.0.1:0"), 3).unwrap();
        assert_eq!(sockets.len(), 3);
        assert_ne!(addr.port(), 0);
        for s in &sockets {
            assert_eq!(
                s.local_addr().unwrap(),
                addr,
                "every core listens on the same port"
            );
            s.set_nonblocking(true).unwrap();
        }
        // Connections spread over the sockets; whichever takes one, the accepted
        // socket has TCP_NODELAY without a setsockopt of its own.
        let clients: Vec<_> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while accepted < clients.len() && std::time::Instant::now() < deadline {
            for s in &sockets {
                if let Ok((conn, _)) = s.accept() {
                    assert!(conn.nodelay().unwrap());
                    accepted += 1;
                }
            }
        }
        assert_eq!(accepted, clients.len());
    }

    #[test]
    fn bind_errors_are_reported() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        // Not SO_REUSEPORT: the port is really taken.
        assert!(bind(&config(&addr), 1).is_err());
    }
}
