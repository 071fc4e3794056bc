//! The data plane's one connection type, whatever the transport: a plain TCP
//! socket or TLS over one. `conn`, the relay and the pool are written once against
//! it; the relay's functions (`relay::read_into`, `write_range`, ...) branch on it
//! once per operation, the plain arm being the plain socket's own operation, so
//! cleartext traffic pays a match and no extra future.

use crate::tls::TlsStream;
use monoio::net::TcpStream;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Waits until something can be read (for TLS: at once when decrypted or
    /// unread bytes are already held).
    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.readable(false).await,
            Stream::Tls(tls) => tls.readable().await,
        }
    }

    /// The address the client connected to.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(tcp) => tcp.local_addr(),
            Stream::Tls(tls) => tls.tcp().local_addr(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(tcp) => tcp.as_raw_fd(),
            Stream::Tls(tls) => tls.tcp().as_raw_fd(),
        }
    }
}
