//! Binary upgrade without dropping a connection, as HAProxy (`-x`) and Envoy (hot
//! restart) do. A running proxy with `runtime.control_socket` set serves that Unix
//! socket (mode 0600); a new `ringway --config F --takeover` started beside it:
//!
//! 1. connects and sends `TAKEOVER`;
//! 2. receives every listening socket (each worker's) as descriptors
//!    (SCM_RIGHTS), with their names and addresses (the admin listener is
//!    SO_REUSEPORT: the new process binds it beside the old one's);
//! 3. starts its workers on them: the sockets are the same kernel objects, so
//!    nothing is closed or re-bound and no connection waiting in an accept queue
//!    is lost (closing a SO_REUSEPORT socket would reset those);
//! 4. sends `DRAIN`: the old process stops accepting, finishes its requests and
//!    exits, and the new one takes the control socket's path.
//!
//! If the new process fails before step 4 it exits, and the old one serves on as
//! if nothing happened. Messages are SOCK_SEQPACKET datagrams: JSON text, with the
//! descriptors attached.

use crate::control::ControlPlane;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest message (JSON text).
const MAX_MESSAGE: usize = 64 * 1024;
/// Descriptors per message (the kernel's SCM_MAX_FD).
const MAX_FDS: usize = 253;
/// How long either side waits for the other's next message.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("control socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("takeover over {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
}

/// What a listener's message says.
#[derive(Debug, Serialize, Deserialize)]
struct ListenerMessage {
    name: String,
    /// As configured (port 0 stays 0).
    bind: SocketAddr,
    /// As bound.
    addr: SocketAddr,
}

/// A listener's sockets as the old process hands them over.
#[derive(Debug)]
pub struct Handed {
    pub name: String,
    pub bind: SocketAddr,
    pub addr: SocketAddr,
    pub sockets: Vec<TcpListener>,
}

/// What a new process received, and the line to tell the old one to drain.
pub struct Inherited {
    pub listeners: Vec<Handed>,
    line: Socket,
    path: PathBuf,
}

fn send(sock: &Socket, text: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(text)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map(|_| ())
        .map_err(io::Error::from)
}

fn recv(sock: &Socket) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let len = msg.bytes;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: descriptors received with SCM_RIGHTS are new entries in
                // this process's table that nothing else owns; each is wrapped once.
                #[allow(unsafe_code)]
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    buf.truncate(len);
    Ok((buf, fds))
}

fn protocol(path: &Path, reason: impl Into<String>) -> TakeoverError {
    TakeoverError::Protocol {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The new process's side: takes the running proxy's listening sockets.
pub fn fetch(path: &Path) -> Result<Inherited, TakeoverError> {
    let connect_error = |source| TakeoverError::Connect {
        path: path.to_path_buf(),
        source,
    };
    let line = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(connect_error)?;
    let addr = SockAddr::unix(path).map_err(connect_error)?;
    line.connect(&addr).map_err(connect_error)?;
    line.set_read_timeout(Some(PATIENCE))
        .map_err(connect_error)?;
    line.set_write_timeout(Some(PATIENCE))
        .map_err(connect_error)?;
    let io_error = |e: io::Error| protocol(path, e.to_string());
    send(&line, b"TAKEOVER", &[]).map_err(io_error)?;
    let mut listeners: Vec<Handed> = Vec::new();
    loop {
        let (text, fds) = recv(&line).map_err(io_error)?;
        if text == b"END" {
            break;
        }
        if text.is_empty() {
            return Err(protocol(
                path,
                "the running proxy closed the control socket",
            ));
        }
        let m: ListenerMessage = serde_json::from_slice(&text)
            .map_err(|e| protocol(path, format!("bad listener message: {e}")))?;
        let sockets = fds.into_iter().map(TcpListener::from);
        // A listener with more sockets than one message holds comes in several.
        match listeners.iter_mut().find(|h| h.name == m.name) {
            Some(h) => h.sockets.extend(sockets),
            None => listeners.push(Handed {
                name: m.name,
                bind: m.bind,
                addr: m.addr,
                sockets: sockets.collect(),
            }),
        }
    }
    Ok(Inherited {
        listeners,
        line,
        path: path.to_path_buf(),
    })
}

impl Inherited {
    /// The control socket they came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells the old process to drain (the new one serves) and waits for its yes.
    pub fn finish(self) -> Result<(), TakeoverError> {
        let io_error = |e: io::Error| protocol(&self.path, e.to_string());
        send(&self.line, b"DRAIN", &[]).map_err(io_error)?;
        let (text, _) = recv(&self.line).map_err(io_error)?;
        if text != b"OK" {
            return Err(protocol(
                &self.path,
                "the running proxy did not confirm the drain",
            ));
        }
        Ok(())
    }
}

/// The running proxy's side: the control socket and its thread.
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Set once a new process took over: the path is its now.
    handed_over: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlSocket {
    /// Binds `path` (mode 0600). Refused when another process answers there,
    /// unless `replace` (this process took over from it).
    pub fn start(
        path: &Path,
        replace: bool,
        plane: Weak<ControlPlane>,
    ) -> io::Result<ControlSocket> {
        let addr = SockAddr::unix(path)?;
        // Only a socket file is ever replaced (a typo must not delete a config).
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            let probe = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
            if !replace && probe.connect(&addr).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is served by a running proxy: start with --takeover to replace it",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        socket.bind(&addr)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        socket.listen(4)?;
        // Polled with a timeout (`serve`): stopping needs no wake-up connection,
        // which could not reach it once another process holds the path.
        socket.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let handed_over = Arc::new(AtomicBool::new(false));
        let (flag, handed) = (stop.clone(), handed_over.clone());
        let thread = std::thread::Builder::new()
            .name("ringway-control".into())
            .spawn(move || serve(socket, &plane, &flag, &handed))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            stop,
            handed_over,
            thread: Some(thread),
        })
    }

    /// Stops serving; removes the path unless a new process took it over.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let handed_over = self.handed_over.load(Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        if !handed_over {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn serve(socket: Socket, plane: &Weak<ControlPlane>, stop: &AtomicBool, handed: &AtomicBool) {
    use std::os::fd::AsFd;
    while crate::admin::until_acceptable(socket.as_fd(), stop) {
        let Ok((line, _)) = socket.accept() else {
            continue;
        };
        let Some(plane) = plane.upgrade() else { return };
        if line.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = line.set_read_timeout(Some(PATIENCE));
        let _ = line.set_write_timeout(Some(PATIENCE));
        match hand_over(&line, &plane) {
            Ok(true) => {
                handed.store(true, Ordering::SeqCst);
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "takeover attempt failed; serving on"),
        }
    }
}

/// Serves one takeover attempt; true when the new process took over (this one
/// then drains).
fn hand_over(line: &Socket, plane: &ControlPlane) -> io::Result<bool> {
    let (text, _) = recv(line)?;
    if text != b"TAKEOVER" {
        return Ok(false);
    }
    if plane.is_draining() {
        return Ok(false);
    }
    tracing::info!("a new process is taking over the listening sockets");
    let listeners = plane.handover()?;
    for h in &listeners {
        let text = serde_json::to_vec(&ListenerMessage {
            name: h.name.clone(),
            bind: h.bind,
            addr: h.addr,
        })
        .map_err(io::Error::other)?;
        let fds: Vec<RawFd> = h.sockets.iter().map(AsRawFd::as_raw_fd).collect();
        for chunk in fds.chunks(MAX_FDS) {
            send(line, &text, chunk)?;
        }
    }
    send(line, b"END", &[])?;
    // The new process starts its workers, then says DRAIN (or goes away).
    let (text, _) = recv(line)?;
    if text != b"DRAIN" {
        tracing::warn!("the new process did not take over; serving on");
        return Ok(false);
    }
    tracing::info!("taken over: draining");
    // Under systemd the new process becomes the service's main one before this one
    // drains away (an exit of the main process would end the service). Said by
    // this, the main process, so it holds whatever NotifyAccess says.
    match nix::sys::socket::getsockopt(line, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(peer) => crate::notify::notify(&format!("MAINPID={}", peer.pid())),
        Err(e) => tracing::warn!(error = %e, "takeover: the new process's pid is unknown"),
    }
    plane.drain_handed_over();
    send(line, b"OK", &[])?;
    Ok(true)
}
