//! Test harness: the proxy in-process on 127.0.0.1:0, in-process mock upstreams on
//! std threads, and a client that reads complete messages under a deadline.
#![allow(dead_code)]

pub mod certs;

use ringway::{Config, Server};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for any single wait in a test: a deadline, not a sleep.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Proxy {
    pub server: Server,
    pub addr: SocketAddr,
}

/// Starts the proxy with `routes_and_clusters` appended to a one-listener config.
/// `{name}` placeholders are replaced by the addresses in `vars`.
pub fn proxy(listener_extra: &str, rest: &str, vars: &[(&str, SocketAddr)]) -> Proxy {
    proxy_with("drain_timeout = \"5s\"", listener_extra, rest, vars)
}

/// [`proxy`] with `runtime` as the `[runtime]` settings besides one unpinned worker.
pub fn proxy_with(
    runtime: &str,
    listener_extra: &str,
    rest: &str,
    vars: &[(&str, SocketAddr)],
) -> Proxy {
    let text = config_text(runtime, listener_extra, rest, vars);
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = Server::start(config).expect("proxy starts");
    let addr = server.local_addr("edge").unwrap();
    Proxy { server, addr }
}

/// The configuration text of [`proxy_with`].
pub fn config_text(
    runtime: &str,
    listener_extra: &str,
    rest: &str,
    vars: &[(&str, SocketAddr)],
) -> String {
    // One worker unless `runtime` says how many.
    let workers = if runtime.contains("workers") {
        ""
    } else {
        "workers = 1"
    };
    let mut text = format!(
        "[runtime]\n{workers}\npin_workers = false\n{runtime}\n\
         [[listeners]]\nname = \"edge\"\nbind = \"127.0.0.1:0\"\n{listener_extra}\n{rest}"
    );
    for (name, addr) in vars {
        text = text.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    text
}

/// A request as a mock upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
    /// Index of the upstream connection it arrived on (0, 1, ...).
    pub conn: usize,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }
    pub fn headers(&self, name: &str) -> Vec<String> {
        headers_of(&self.head, name)
    }
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }
}

/// What a mock does with each request it reads: returns raw response bytes and
/// whether to close afterwards. `None` means: close without answering.
pub type Handler = dyn Fn(&Received, usize) -> Option<(Vec<u8>, bool)> + Send + Sync;

pub struct Mock {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicUsize>,
    /// Connections that have ended (closed by either side).
    pub closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Mock {
    /// A mock upstream; `handler(request, n-th request on this connection)`.
    pub fn start(
        handler: impl Fn(&Received, usize) -> Option<(Vec<u8>, bool)> + Send + Sync + 'static,
    ) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r, c, s, e) = (
            received.clone(),
            connections.clone(),
            stop.clone(),
            closed.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let conn = c.fetch_add(1, Ordering::SeqCst);
                let (r, h, e) = (r.clone(), handler.clone(), e.clone());
                std::thread::spawn(move || {
                    serve_mock(stream, conn, &r, &*h);
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Mock {
            addr,
            received,
            connections,
            closed,
            stop,
        }
    }

    /// Answers every request with `status` and `body`, keeping the connection.
    pub fn fixed(status: u16, body: &'static str) -> Mock {
        Mock::start(move |_, _| Some((response(status, &[], body.as_bytes()), false)))
    }

    /// Echoes the request body, and the request head in `x-echo-head` lines... as body.
    pub fn echo() -> Mock {
        Mock::start(|req, _| Some((response(200, &[], &req.body), false)))
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.requests().pop().expect("the mock received a request")
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

fn serve_mock(
    mut stream: TcpStream,
    conn: usize,
    received: &Mutex<Vec<Received>>,
    handler: &Handler,
) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = MessageReader::default();
    for n in 0.. {
        let Ok(Some(msg)) = reader.read(&mut stream, Kind::Request) else {
            return;
        };
        let req = Received {
            head: msg.head,
            body: msg.body,
            conn,
        };
        received.lock().unwrap().push(req.clone());
        match handler(&req, n) {
            None => return,
            Some((bytes, close)) => {
                if stream.write_all(&bytes).is_err() || close {
                    return;
                }
            }
        }
    }
}

/// A raw HTTP/1.1 response with Content-Length.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len()).into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

pub fn header_of(head: &str, name: &str) -> Option<String> {
    headers_of(head, name).into_iter().next()
}

pub fn headers_of(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    /// A response; `head_request` when it answers a HEAD.
    Response {
        head_request: bool,
    },
}

/// A complete message read off a socket.
#[derive(Debug, Clone)]
pub struct Message {
    pub head: String,
    pub status: u16,
    pub body: Vec<u8>,
    /// The body ran until the peer closed.
    pub close_delimited: bool,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads whole messages from a stream, keeping bytes that belong to the next one.
#[derive(Default)]
pub struct MessageReader {
    buf: Vec<u8>,
}

impl MessageReader {
    fn fill(&mut self, s: &mut TcpStream) -> io::Result<usize> {
        let mut tmp = [0u8; 65536];
        let n = s.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// `Ok(None)`: the peer closed before any byte of a message.
    pub fn read(&mut self, s: &mut TcpStream, kind: Kind) -> io::Result<Option<Message>> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill(s)? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a head",
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        self.buf.drain(..head_end);
        let status = match kind {
            Kind::Request => 0,
            Kind::Response { .. } => head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        };
        let no_body = match kind {
            Kind::Request => false,
            Kind::Response { head_request } => {
                head_request || (100..200).contains(&status) || status == 204 || status == 304
            }
        };
        let chunked = header_of(&head, "transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let length = header_of(&head, "content-length")
            .map(|v| v.parse::<usize>().expect("numeric content-length"));
        let mut close_delimited = false;
        let body = if no_body {
            Vec::new()
        } else if chunked {
            self.read_chunked(s)?
        } else if let Some(n) = length {
            while self.buf.len() < n {
                if self.fill(s)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a body",
                    ));
                }
            }
            self.buf.drain(..n).collect()
        } else if kind == Kind::Request {
            Vec::new()
        } else {
            close_delimited = true;
            while self.fill(s)? > 0 {}
            std::mem::take(&mut self.buf)
        };
        Ok(Some(Message {
            head,
            status,
            body,
            close_delimited,
        }))
    }

    fn read_chunked(&mut self, s: &mut TcpStream) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.fill(s)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF in chunk size",
                    ));
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).map_err(
                |_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                },
            )?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(body);
                        }
                    } else if self.fill(s)? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "EOF in trailers",
                        ));
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill(s)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk"));
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A client connection to the proxy.
pub struct Client {
    pub stream: TcpStream,
    reader: MessageReader,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            reader: MessageReader::default(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    pub fn read(&mut self) -> Message {
        self.read_as(false)
    }

    /// Reads a response; `head_request` when it answers a HEAD.
    pub fn read_as(&mut self, head_request: bool) -> Message {
        self.reader
            .read(&mut self.stream, Kind::Response { head_request })
            .expect("a complete response")
            .expect("a response, not a close")
    }

    pub fn request(&mut self, raw: &str) -> Message {
        self.send(raw.as_bytes());
        self.read()
    }

    /// Waits (up to the deadline) for the proxy to close the connection without
    /// sending anything more.
    pub fn expect_closed(&mut self) {
        assert!(
            self.reader.pending().is_empty(),
            "unread bytes: {:?}",
            String::from_utf8_lossy(self.reader.pending())
        );
        let mut b = [0u8; 1024];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Ok(n) => panic!("expected close, got {:?}", String::from_utf8_lossy(&b[..n])),
            Err(e) => panic!("expected close, got {e}"),
        }
    }

    /// Everything the proxy sends until it closes (or resets) the connection.
    pub fn read_until_close(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.reader.buf);
        let _ = self.stream.read_to_end(&mut all);
        all
    }

    /// Reads a response if one comes, or `None` on a close without one.
    pub fn try_read(&mut self) -> Option<Message> {
        match self.reader.read(
            &mut self.stream,
            Kind::Response {
                head_request: false,
            },
        ) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

/// One request on a new connection.
pub fn get(addr: SocketAddr, raw: &str) -> Message {
    Client::connect(addr).request(raw)
}

/// Polls `cond` until it holds or the deadline passes.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out waiting for: {what}");
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// An address on which connects hang: a listener whose accept queue is full.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub fn new() -> Blackhole {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue (backlog 0 holds one); later SYNs are dropped.
        let mut fillers = Vec::new();
        for _ in 0..2 {
            if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                fillers.push(c);
            }
        }
        Blackhole {
            addr,
            _listener: s,
            _fillers: fillers,
        }
    }
}

/// Number of IPv4 sockets in CLOSE_WAIT whose peer is 127.0.0.1:`port` (/proc/net/tcp).
pub fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == remote && f[3] == "08"
        })
        .count()
}

/// Continuous load from client threads until `finish`: half keep their connection
/// (reconnecting after a `Connection: close`), half open one per request. Any
/// non-200 answer, or a connection that closes without one, is a failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    clients: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, request: &'static [u8], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|i| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || -> Result<(), String> {
                    let keep = i % 2 == 0;
                    let mut c = Client::connect(addr);
                    while !stop.load(Ordering::SeqCst) {
                        c.send(request);
                        let r = c.try_read().ok_or("connection closed without a response")?;
                        if r.status != 200 {
                            return Err(format!("status {}", r.status));
                        }
                        ok.fetch_add(1, Ordering::SeqCst);
                        if !keep || r.header("connection").as_deref() == Some("close") {
                            c = Client::connect(addr);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        Load { stop, ok, clients }
    }

    /// Responses received so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits (a count, not a time) until `more` responses came after this call.
    pub fn flows(&self, more: usize) {
        let seen = self.ok();
        eventually("requests flow", || self.ok() > seen + more);
    }

    /// Stops the clients; the first failure of any of them, if one failed.
    pub fn finish(self) -> Result<usize, String> {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.join()
                .map_err(|_| "a client thread panicked".to_string())??;
        }
        Ok(self.ok.load(Ordering::SeqCst))
    }
}

/// An upstream that reads a request head and answers at once, before the body:
/// `/close` then closes (its unread body makes that a reset), `/hold` keeps the
/// connection open without reading more, until the test ends. `/stream` answers
/// `200` at once and goes on reading the body (its Content-Length), then ends the
/// response with `got N`.
pub fn early_upstream() -> (std::net::SocketAddr, std::sync::mpsc::Sender<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let wait = wait.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut chunk = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                }
                if got.starts_with(b"POST /stream ") {
                    // A 200 at once, then the whole body read, then its size.
                    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let want: usize = head
                        .split("content-length: ")
                        .nth(1)
                        .and_then(|v| v.split("\r\n").next()?.parse().ok())
                        .unwrap_or(0);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let mut n = got.len() - end;
                    let mut big = vec![0u8; 65536];
                    while n < want {
                        match s.read(&mut big) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                    }
                    let line = format!("got {n}");
                    let _ =
                        s.write_all(format!("{:x}\r\n{line}\r\n0\r\n\r\n", line.len()).as_bytes());
                    return;
                }
                let hold = got.starts_with(b"POST /hold ");
                let status = if hold { 401 } else { 413 };
                let _ = s.write_all(&response(status, &[], b"not this"));
                if hold {
                    let _ = wait.lock().unwrap().recv_timeout(DEADLINE);
                }
            });
        }
    });
    (addr, done)
}

/// Reads a request head byte by byte (nothing of the body with it); `None` at the
/// end of the connection.
pub fn read_head(s: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Serves the requests of one connection (plain or TLS) as a streaming upstream:
/// - `POST /echo`: `200` (chunked) at once, then each piece of the body as it comes
///   back as a chunk of the response, framing included (the chunked body's own
///   chunk lines, or the bytes of a Content-Length one), then the last chunk once
///   the body ended; the connection is kept.
/// - `POST /early`: `413` with the body `not this` at once, then whatever still
///   comes read and dropped until the peer closes (as a server that lingers).
/// - `POST /hold`: `413` with the body `not this` at once, then nothing read: the
///   connection is held open for at most [`DEADLINE`] (an upstream that stopped
///   reading), then closed.
/// - `POST /short`: `200` with the body `done` at once, the connection kept open
///   and read from until the peer closes.
/// - `POST /sink`: the whole (Content-Length) body read, then `200` with its
///   length as the body; the connection is kept.
pub fn serve_streaming(s: &mut (impl Read + Write)) {
    while let Some(head) = read_head(s) {
        let lower = head.to_ascii_lowercase();
        let length: Option<usize> = lower
            .split("\r\ncontent-length: ")
            .nth(1)
            .and_then(|v| v.split("\r\n").next()?.trim().parse().ok());
        if head.starts_with("POST /sink ") {
            let mut body = vec![0u8; length.unwrap_or(0)];
            if s.read_exact(&mut body).is_err() {
                return;
            }
            let answer = response(200, &[], body.len().to_string().as_bytes());
            if s.write_all(&answer).and_then(|()| s.flush()).is_err() {
                return;
            }
            continue;
        }
        if !head.starts_with("POST /echo ") {
            let early = head.starts_with("POST /early ") || head.starts_with("POST /hold ");
            let (status, body) = match early {
                true => (413, &b"not this"[..]),
                false => (200, &b"done"[..]),
            };
            let _ = s.write_all(&response(status, &[], body));
            let _ = s.flush();
            if head.starts_with("POST /hold ") {
                // (Holding the connection, not a wait for anything.)
                let until = Instant::now() + DEADLINE;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    std::thread::park_timeout(left);
                }
                return;
            }
            let mut sink = [0u8; 65536];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .and_then(|()| s.flush())
            .is_err()
        {
            return;
        }
        let mut seen = Vec::new();
        let mut piece = [0u8; 65536];
        loop {
            let want = match length {
                Some(n) if seen.len() >= n => break,
                Some(n) => (n - seen.len()).min(piece.len()),
                None if seen.ends_with(b"\r\n0\r\n\r\n") || seen == b"0\r\n\r\n" => break,
                None => piece.len(),
            };
            let n = match s.read(&mut piece[..want]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&piece[..n]);
            let mut chunk = format!("{n:x}\r\n").into_bytes();
            chunk.extend_from_slice(&piece[..n]);
            chunk.extend_from_slice(b"\r\n");
            if s.write_all(&chunk).and_then(|()| s.flush()).is_err() {
                return;
            }
        }
        if s.write_all(b"0\r\n\r\n").and_then(|()| s.flush()).is_err() {
            return;
        }
    }
}

/// A cleartext upstream serving [`serve_streaming`], one thread per connection.
pub fn streaming_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(DEADLINE));
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || serve_streaming(&mut s));
        }
    });
    addr
}

/// Sends `head` (a POST to `/echo` of [`serve_streaming`]), then each of `pieces`
/// only once the one before came back in the response: an exchange that half
/// duplex (the whole body up before the response is read) would never finish.
/// Returns the response, lowercased, up to its last chunk.
pub fn echo_piece_by_piece(s: &mut TcpStream, head: &str, pieces: &[&str]) -> String {
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    for piece in pieces {
        s.write_all(piece.as_bytes()).unwrap();
        read_until(s, &mut got, |t| t.contains(&format!("{piece}\r\n")));
    }
    read_until(s, &mut got, |t| t.ends_with("\r\n0\r\n\r\n"));
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}

/// Reads from `s` into `got` until `done` holds for what came (as text), under the
/// stream's read timeout.
pub fn read_until(s: &mut impl Read, got: &mut Vec<u8>, done: impl Fn(&str) -> bool) {
    let mut tmp = [0u8; 4096];
    while !done(&String::from_utf8_lossy(got)) {
        let n = s.read(&mut tmp).expect("read within the deadline");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(got));
        got.extend_from_slice(&tmp[..n]);
    }
}
