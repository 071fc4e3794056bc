//! Listening sockets: one SO_REUSEPORT socket per listener per core (bound on the
//! control path, so port 0 resolves once and every core shares the port), and the
//! per-core accept loop that spawns a connection task per client.

use crate::config::ListenerConfig;
use crate::worker::Worker;
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

/// Accepts until the core starts draining; the socket closes when this returns.
pub async fn accept_loop(
    worker: Rc<Worker>,
    index: usize,
    listener: monoio::net::TcpListener,
    port: u16,
) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = worker.lifecycle.draining() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let worker = worker.clone();
                monoio::spawn(async move {
                    // A stop drops the connection's future, closing its sockets.
                    monoio::select! {
                        _ = crate::conn::serve(&worker, index, stream, peer, port) => {}
                        _ = worker.lifecycle.stopped() => {}
                    }
                });
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
