//! The byte stream the `h2` crate reads and writes: tokio's `AsyncRead` and
//! `AsyncWrite` over a downstream connection ([`Conn`]: plain TCP or TLS), driven by
//! readiness, not by owned-buffer operations.
//!
//! A read is a non-blocking `recv` straight into h2's buffer (for TLS: the
//! ciphertext into the stream's own buffer, then rustls decrypts into h2's); a
//! write is a non-blocking `sendmsg` of h2's buffers (for TLS: encrypted, then
//! sent). When the socket has nothing to read or no room, the adapter keeps one
//! readiness wait (an io_uring `PollAdd`, which holds no buffer) and returns
//! `Pending`; the wait's completion wakes the connection's task. So nothing is
//! copied for cleartext, an idle HTTP/2 connection holds no I/O buffer here, and
//! dropping the connection loses nothing in flight. Bytes read before the protocol
//! was known (the client preface on a cleartext listener) are handed out first.
//!
//! Every frame header that passes is also shown to the connection's
//! [`Guard`](super::guard::Guard) (flood budgets, the GOAWAYs sent).

use crate::downstream::Conn;
use crate::stream::Stream;
use nix::sys::socket::{sendmsg, MsgFlags};
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Wait = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// What an adapter carries: a client connection (its `Drop` counts it closed), or
/// an upstream one (its `Drop` counts it closed in the endpoint's figures).
pub enum Transport {
    Client(Box<Conn>),
    Upstream(crate::upstream::pool::UpstreamConn),
}

impl Transport {
    fn stream(&self) -> &Stream {
        match self {
            Transport::Client(c) => &c.stream,
            Transport::Upstream(u) => &u.stream,
        }
    }

    fn stream_mut(&mut self) -> &mut Stream {
        match self {
            Transport::Client(c) => &mut c.stream,
            Transport::Upstream(u) => &mut u.stream,
        }
    }
}

pub struct H2Io {
    conn: Transport,
    /// Bytes read before the protocol was known: `pre[pre_at..]` goes first.
    pre: Vec<u8>,
    pre_at: usize,
    read_wait: Option<Wait>,
    write_wait: Option<Wait>,
    /// The guard stopped a frame: nothing more is read.
    held: bool,
    /// Sees the frames both ways.
    pub guard: super::guard::Guard,
}

impl H2Io {
    pub fn new(conn: Transport, pre: Vec<u8>, guard: super::guard::Guard) -> H2Io {
        H2Io {
            conn,
            pre,
            pre_at: 0,
            read_wait: None,
            write_wait: None,
            held: false,
            guard,
        }
    }

    /// Polls the readiness wait for reading (`read`) or writing, made when there is
    /// none, until the socket is ready.
    fn poll_ready(&mut self, cx: &mut Context<'_>, read: bool) -> Poll<io::Result<()>> {
        let wait = match if read {
            &mut self.read_wait
        } else {
            &mut self.write_wait
        } {
            Some(w) => w,
            slot => slot.insert(match self.conn.stream() {
                Stream::Plain(tcp) => Box::pin(tcp.readiness(read)),
                Stream::Tls(tls) => Box::pin(tls.tcp().readiness(read)),
            }),
        };
        let done = ready!(wait.as_mut().poll(cx));
        if read {
            self.read_wait = None;
        } else {
            self.write_wait = None;
        }
        Poll::Ready(done)
    }

    /// One non-blocking write of `bufs`: `None` when the socket has no room.
    fn try_write(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(Some(0));
        }
        match self.conn.stream_mut() {
            Stream::Plain(tcp) => {
                let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                match sendmsg::<()>(tcp.as_raw_fd(), bufs, &[], flags, None) {
                    Ok(n) => Ok(Some(n)),
                    Err(nix::errno::Errno::EAGAIN) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Stream::Tls(tls) => {
                // Each buffer its own records, as far as the socket takes them.
                let mut total = 0;
                for b in bufs.iter().filter(|b| !b.is_empty()) {
                    match tls.try_write(b)? {
                        Some(n) => {
                            total += n;
                            if n < b.len() {
                                break;
                            }
                        }
                        None => break,
                    }
                }
                Ok((total > 0).then_some(total))
            }
        }
    }
}

/// One non-blocking `recv` into the unfilled part of `buf`, which it need not
/// zero first; the bytes received are marked initialized (not filled).
#[allow(unsafe_code)]
fn recv_into(fd: std::os::fd::RawFd, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: `recv` only writes into the room it is given (never reads it), and
    // only the bytes it says it wrote are marked initialized.
    let room = unsafe { buf.unfilled_mut() };
    let n = unsafe { libc::recv(fd, room.as_mut_ptr().cast(), room.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { buf.assume_init(n as usize) };
    Ok(n as usize)
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held {
            // (A frame the guard stopped: the connection is being answered with
            // GOAWAY, and reads nothing more.)
            return Poll::Pending;
        }
        if this.pre_at < this.pre.len() {
            let n = (this.pre.len() - this.pre_at).min(buf.remaining());
            let bytes = &this.pre[this.pre_at..this.pre_at + n];
            let n = match this.guard.saw_incoming(bytes) {
                Some(cut) => {
                    this.held = true;
                    cx.waker().wake_by_ref();
                    if cut == 0 {
                        return Poll::Pending;
                    }
                    cut
                }
                None => n,
            };
            buf.put_slice(&bytes[..n]);
            this.pre_at += n;
            if this.pre_at == this.pre.len() {
                this.pre = Vec::new();
                this.pre_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_wait.is_some() {
                ready!(this.poll_ready(cx, true))?;
            }
            let read = match this.conn.stream_mut() {
                // Into the spare room as it is (zeroing 8 KiB first for each read
                // cost about 1,000 instructions a request).
                Stream::Plain(tcp) => match recv_into(tcp.as_raw_fd(), buf) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
                Stream::Tls(tls) => tls.try_read(buf.initialize_unfilled())?,
            };
            match read {
                Some(n) => {
                    let start = buf.filled().len();
                    let dst = &buf.initialized()[start..start + n];
                    let n = match this.guard.saw_incoming(dst) {
                        Some(cut) => {
                            // The connection's task answers it (see `guard`).
                            this.held = true;
                            cx.waker().wake_by_ref();
                            if cut == 0 {
                                return Poll::Pending;
                            }
                            cut
                        }
                        None => n,
                    };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                None => {
                    ready!(this.poll_ready(cx, true))?;
                }
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.write_wait.is_some() {
                ready!(this.poll_ready(cx, false))?;
            }
            if let Some(n) = this.try_write(bufs)? {
                this.guard.saw_outgoing(bufs, n);
                return Poll::Ready(Ok(n));
            }
            ready!(this.poll_ready(cx, false))?;
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let Stream::Tls(tls) = this.conn.stream_mut() else {
                return Poll::Ready(Ok(()));
            };
            if tls.try_flush()? {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_ready(cx, false))?;
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
