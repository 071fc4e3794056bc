//! The systemd readiness protocol, sd_notify(3), without libsystemd: a state such as
//! `READY=1`, `RELOADING=1`, `STOPPING=1` or `STATUS=...` goes as one datagram to the
//! Unix socket named by `NOTIFY_SOCKET`, which the service manager sets for units of
//! `Type=notify` (deploy/ringway.service). Outside systemd the variable is unset and
//! every call does nothing.
//!
//! The socket name is a filesystem path, or an abstract name when it starts with '@'
//! (sd_notify(3), "NOTES"). Notifications are advisory: a failure is logged, never
//! fatal, since the proxy serves the same either way.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` to the service manager, if there is one (`NOTIFY_SOCKET` set and not
/// empty). Lines of a multi-field state are separated by '\n', as in
/// `"RELOADING=1\nMONOTONIC_USEC=123"`. Never panics; a failure is a warning.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if socket.is_empty() {
        return;
    }
    let Some(socket) = socket.to_str() else {
        tracing::warn!(socket = ?socket, "NOTIFY_SOCKET is not UTF-8: cannot notify systemd");
        return;
    };
    if let Err(e) = notify_to(socket, state) {
        tracing::warn!(socket, state, error = %e, "cannot notify systemd");
    }
}

/// Sends `state` as one datagram to the Unix socket `socket`: an absolute path, or
/// '@' and an abstract name.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    // A datagram is sent whole or not at all; checked so a truncated state can never
    // pass for a delivered one.
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

/// The address of `socket`. Only the two forms sd_notify(3) gives for AF_UNIX are
/// accepted: a relative path would depend on our working directory, not systemd's,
/// and systemd's other forms (`vsock:...`) are for virtual machines.
fn socket_addr(socket: &str) -> io::Result<SocketAddr> {
    if let Some(name) = socket.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket)
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("notify socket {socket:?}: neither an absolute path nor '@' and a name"),
        ))
    }
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd reads `MONOTONIC_USEC` on
/// (sent with `RELOADING=1`, which `Type=notify-reload` requires since systemd 253).
/// `Instant` is the same clock but hides its value, hence the direct call.
#[allow(unsafe_code)]
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    // CLOCK_MONOTONIC exists on every Linux; were the call to fail, `ts` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A path in the temp directory unique to this test and process.
    fn temp_socket_path(test: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ringway-notify-{}-{test}.sock", std::process::id()))
    }

    /// Receives one datagram, or fails the test after a second instead of hanging.
    fn recv(sock: &UnixDatagram) -> Vec<u8> {
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("set_read_timeout");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("no datagram arrived");
        buf[..n].to_vec()
    }

    #[test]
    fn sends_to_a_filesystem_socket() {
        let path = temp_socket_path("path");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        let socket = path.to_str().expect("temp path is UTF-8");
        notify_to(socket, "READY=1").expect("notify_to");
        assert_eq!(recv(&listener), b"READY=1");
        notify_to(socket, "RELOADING=1\nMONOTONIC_USEC=123").expect("notify_to");
        assert_eq!(recv(&listener), b"RELOADING=1\nMONOTONIC_USEC=123");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("ringway-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        notify_to(&format!("@{name}"), "STOPPING=1").expect("notify_to");
        assert_eq!(recv(&listener), b"STOPPING=1");
        notify_to(&format!("@{name}"), "STATUS=draining, 3 connections").expect("notify_to");
        assert_eq!(recv(&listener), b"STATUS=draining, 3 connections");
    }

    #[test]
    fn refuses_other_socket_names() {
        for socket in ["", "relative.sock", "vsock:2:1234"] {
            let err = notify_to(socket, "READY=1").expect_err(socket);
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{socket:?}");
        }
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let path = temp_socket_path("missing");
        let _ = std::fs::remove_file(&path);
        assert!(notify_to(path.to_str().expect("UTF-8"), "READY=1").is_err());
    }

    #[test]
    fn monotonic_usec_reads_and_advances() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0, "the clock read failed");
        assert!(b >= a + 2_000, "{a} -> {b}");
    }
}
