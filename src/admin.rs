//! The admin listener: a small HTTP/1.1 server on its own thread, off the workers'
//! request path, for operators and their tools (Prometheus, an outer load
//! balancer's health check, deploy scripts). One request per connection
//! (`Connection: close`), answered in turn; reads and writes are bounded by a
//! timeout, so a stalled client holds it up for seconds at most.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text exposition format 0.0.4 (`exposition`) |
//! | `GET /ready` | 200 while serving, 503 while draining |
//! | `GET /live` | 200 while the process runs |
//! | `GET /config` | the running configuration (TOML) and its SHA-256 |
//! | `GET /clusters` | clusters and endpoints with their load (JSON) |
//! | `POST /reload`, `POST /drain` | as SIGHUP and SIGTERM |

use crate::config::AdminConfig;
use crate::control::ControlPlane;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one admin client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and ignored: no endpoint takes one).
const MAX_BODY: usize = 64 * 1024;

/// A running admin listener.
pub struct Admin {
    pub config: AdminConfig,
    /// As bound (the real port when the configuration says 0).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `config.bind` and serves on a thread of its own. The socket is
    /// SO_REUSEPORT, so that a new process taking over (`takeover`) binds the same
    /// address while this one drains.
    pub fn start(config: &AdminConfig, plane: Weak<ControlPlane>) -> io::Result<Admin> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(config.bind),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&config.bind.into())?;
        socket.listen(64)?;
        // Polled with a timeout (`serve`), so that stopping needs no wake-up
        // connection, which a sibling socket of the port could take.
        socket.set_nonblocking(true)?;
        let listener: TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringway-admin".into())
            .spawn(move || serve(listener, &plane, &flag))?;
        Ok(Admin {
            config: config.clone(),
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the request being answered, if any (unless
    /// called from that request: a reload that moves the admin listener).
    pub fn stop(self) {
        drop(self);
    }
}

/// Dropped (also when a reload that started it fails), it stops.
impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// How often a control-path thread (admin, control socket) looks at its stop flag
/// while idle, in ms.
const STOP_CHECK: u16 = 100;

/// Waits until `listener` has a connection to accept (true) or `stop` is set
/// (false): a listening thread that stops without a wake-up connection, which on
/// a socket shared with another process could reach the wrong one.
pub(crate) fn until_acceptable(listener: std::os::fd::BorrowedFd<'_>, stop: &AtomicBool) -> bool {
    use nix::poll::{poll, PollFd, PollFlags};
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
        if matches!(poll(&mut fds, STOP_CHECK), Ok(n) if n > 0) {
            return true;
        }
    }
    false
}

fn serve(listener: TcpListener, plane: &Weak<ControlPlane>, stop: &AtomicBool) {
    use std::os::fd::AsFd;
    while until_acceptable(listener.as_fd(), stop) {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        // Accepted sockets do not inherit O_NONBLOCK on Linux; be sure.
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let Some(plane) = plane.upgrade() else { return };
        if let Err(e) = answer(stream, &plane) {
            tracing::debug!(error = %e, "admin request failed");
        }
    }
}

/// A response: status, content type, extra header lines, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into().into_bytes(),
        }
    }
}

fn answer(mut stream: TcpStream, plane: &ControlPlane) -> io::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // The whole request within IO_TIMEOUT, not each read: a client trickling bytes
    // must not hold the (single) admin thread.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let read = |stream: &mut TcpStream, chunk: &mut [u8]| -> io::Result<usize> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        stream.read(chunk)
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (method, path, head_len, body_len) = loop {
        let n = read(&mut stream, &mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let body_len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                break (method, path, len, body_len);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return write_reply(&mut stream, "GET", &Reply::text(400, "bad request\n")),
        }
    };
    if body_len > MAX_BODY {
        return write_reply(&mut stream, &method, &Reply::text(413, "body too large\n"));
    }
    // Read (and drop) a body, so that the close does not reset the answer.
    let mut left = body_len.saturating_sub(buf.len() - head_len);
    while left > 0 {
        let n = read(&mut stream, &mut chunk)?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n);
    }
    let path = path.split('?').next().unwrap_or("");
    let reply = route(plane, &method, path);
    write_reply(&mut stream, &method, &reply)
}

/// The endpoint table: mutating endpoints are POST only.
fn route(plane: &ControlPlane, method: &str, path: &str) -> Reply {
    let read_only = matches!(method, "GET" | "HEAD");
    match (path, read_only, method) {
        ("/live", true, _) => Reply::text(200, "live\n"),
        ("/ready", true, _) if plane.is_draining() => Reply::text(503, "draining\n"),
        ("/ready", true, _) => Reply::text(200, "ready\n"),
        ("/metrics", true, _) => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: crate::exposition::render(plane).into_bytes(),
        },
        ("/config", true, _) => {
            let config = plane.config();
            let sha = crate::exposition::sha256_hex(config.source.as_bytes());
            let mut body = format!("# sha256: {sha}\n").into_bytes();
            body.extend_from_slice(config.source.as_bytes());
            Reply {
                status: 200,
                content_type: "application/toml; charset=utf-8",
                headers: vec![("x-config-sha256", sha)],
                body,
            }
        }
        ("/clusters", true, _) => Reply {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: crate::exposition::clusters_json(plane).into_bytes(),
        },
        ("/reload", _, "POST") => match plane.reload_config_file() {
            Ok(()) => Reply::text(200, "reloaded\n"),
            Err(e) => Reply::text(400, format!("{e}\n")),
        },
        ("/drain", _, "POST") => {
            plane.drain();
            Reply::text(200, "draining\n")
        }
        ("/reload" | "/drain", _, _) => {
            let mut r = Reply::text(405, "use POST\n");
            r.headers.push(("allow", "POST".into()));
            r
        }
        ("/live" | "/ready" | "/metrics" | "/config" | "/clusters", _, _) => {
            let mut r = Reply::text(405, "use GET\n");
            r.headers.push(("allow", "GET, HEAD".into()));
            r
        }
        _ => Reply::text(404, "not found\n"),
    }
}

fn write_reply(stream: &mut TcpStream, method: &str, reply: &Reply) -> io::Result<()> {
    let reason = crate::http::answer::reason(reply.status);
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(&reply.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}
