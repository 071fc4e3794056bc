//! Moving bytes between sockets: timed reads into a buffer's spare capacity, timed
//! writes of a buffer range, and the body relay used in both directions. A body is
//! relayed in place through one buffer (read, then write the same bytes), so memory
//! stays bounded whatever its size and a slow reader slows the writer (back-pressure).
//!
//! Timeouts: every socket has one [`Timer`], a slot in the core's
//! [`Deadlines`](crate::clock::Deadlines) made once and moved forward for each
//! operation (moving a deadline later costs a store). One monoio `Sleep` per core
//! sleeps until the earliest deadline. A fresh `monoio::time::timeout` per operation
//! would insert and remove a wheel entry, and move the whole future, for every read
//! and write; a `Sleep` per socket would cost 640 bytes per idle connection.
//!
//! monoio ops own their buffer while in flight. A timed-out op is dropped (monoio
//! cancels it) and its buffer is lost with it: after any timeout here the caller
//! must close the connection, which it does.

use crate::clock::{Deadlines, Moment};
use crate::http::body::{dechunk_holding_trailers, reframe_in_place, BodyError, ChunkedDecoder};
use crate::http::parse::Framing;
use crate::stream::Stream;
use crate::tls::TlsStream;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, Canceller};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Buffer size for relaying a body that does not fit in the first buffer.
pub const RELAY_BUF: usize = 64 * 1024;

/// Why a socket operation did not complete.
#[derive(Debug)]
pub enum Fail {
    Timeout,
    /// The peer closed (EOF on read, zero-length write).
    Closed,
    Io(io::Error),
}

/// The core's deadlines and the task that sleeps until the earliest one.
#[derive(Default)]
struct Clock {
    deadlines: RefCell<Deadlines>,
    /// The driver task's waker, and the time it sleeps until (None: no deadline).
    driver: RefCell<Option<Waker>>,
    sleeps_until: Cell<Option<Moment>>,
    running: Cell<bool>,
}

thread_local! {
    static CLOCK: Rc<Clock> = Rc::default();
}

impl Clock {
    /// Starts the driver task on this thread's runtime unless it runs.
    fn ensure_driver(self: &Rc<Clock>) {
        if !self.running.replace(true) {
            monoio::spawn(drive(self.clone()));
        }
    }
}

/// Sleeps until the earliest deadline and fires what is due; woken early when an
/// earlier deadline is armed.
async fn drive(clock: Rc<Clock>) {
    struct Running(Rc<Clock>);
    impl Drop for Running {
        fn drop(&mut self) {
            // The runtime is going away; a later one on this thread starts another.
            self.0.running.set(false);
            self.0.sleeps_until.set(None);
            self.0.driver.borrow_mut().take();
        }
    }
    let _running = Running(clock.clone());
    let mut sleep = Box::pin(monoio::time::sleep(Duration::from_secs(3600)));
    // The deadline the sleep last fired for: everything up to it is due even if
    // the wheel (1 ms ticks) woke us a little early.
    let mut fired_for: Option<Moment> = None;
    // The deadline the sleep is set for (its wheel time is derived from it).
    let mut sleeping_for: Option<Moment> = None;
    std::future::poll_fn(move |cx| loop {
        let mut now = Moment::now();
        if let Some(at) = fired_for.take() {
            now = now.max(at);
        }
        let next = {
            let mut d = clock.deadlines.borrow_mut();
            d.expire(now, Waker::wake);
            d.earliest()
        };
        {
            let mut driver = clock.driver.borrow_mut();
            match &*driver {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *driver = Some(cx.waker().clone()),
            }
        }
        clock.sleeps_until.set(next);
        let Some(at) = next else {
            return Poll::<()>::Pending;
        };
        if sleeping_for != Some(at) {
            sleeping_for = Some(at);
            sleep
                .as_mut()
                .reset(monoio::time::Instant::from_std(at.to_instant()));
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        fired_for = Some(at);
    })
    .await
}

/// A reusable timeout for the operations of one socket (see the module docs).
pub struct Timer {
    clock: Rc<Clock>,
    slot: u32,
}

impl Timer {
    /// Must be called on a worker (a monoio runtime with its timer enabled).
    pub fn new() -> Timer {
        let clock = CLOCK.with(Rc::clone);
        clock.ensure_driver();
        let slot = clock.deadlines.borrow_mut().add();
        Timer { clock, slot }
    }

    /// Runs `op` until it completes (`Some`) or `timeout` passes (`None`; `op` is
    /// dropped, which cancels it). A named future rather than an `async fn`: `op` is
    /// stored once, in place, instead of once as an argument and again pinned, which
    /// keeps the futures of idle connections and each operation's moves smaller. The
    /// deadline is armed here, when `run` is called: await the result at once.
    pub fn run<F: Future>(&mut self, timeout: Duration, op: F) -> Timed<'_, F> {
        let deadline = Moment::now() + timeout;
        let clock = &*self.clock;
        if clock.deadlines.borrow_mut().arm(self.slot, deadline)
            && clock.sleeps_until.get().is_none_or(|t| deadline < t)
        {
            if let Some(w) = clock.driver.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
        Timed { timer: self, op }
    }

    /// When the last operation run under this timer would have timed out.
    pub fn last_deadline(&self) -> Option<Moment> {
        self.clock.deadlines.borrow().last(self.slot)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.clock.deadlines.borrow_mut().remove(self.slot);
    }
}

impl Default for Timer {
    fn default() -> Timer {
        Timer::new()
    }
}

pin_project_lite::pin_project! {
    /// An operation under a [`Timer`]: see [`Timer::run`].
    pub struct Timed<'a, F> {
        timer: &'a mut Timer,
        #[pin]
        op: F,
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let timer = &**this.timer;
        let out = match this.op.poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending
                if timer
                    .clock
                    .deadlines
                    .borrow_mut()
                    .check(timer.slot, cx.waker()) =>
            {
                None
            }
            Poll::Pending => return Poll::Pending,
        };
        timer.clock.deadlines.borrow_mut().disarm(timer.slot);
        Poll::Ready(out)
    }
}

/// One side of an exchange: a socket, its timer and its I/O timeout.
pub struct Io<'a> {
    pub stream: &'a mut Stream,
    pub timer: &'a mut Timer,
    pub timeout: Duration,
}

impl<'a> Io<'a> {
    pub fn new(stream: &'a mut Stream, timer: &'a mut Timer, timeout: Duration) -> Io<'a> {
        Io {
            stream,
            timer,
            timeout,
        }
    }
}

/// [`read_or_release`] for TLS: a read that is cut short would lose bytes rustls
/// needs in order, so the wait is for readability (which consumes nothing, and is
/// at once when rustls already holds bytes), then a read of what is there; while
/// only part of a record has come, the wait for the rest is a wait for
/// readability again. When nothing decryptable comes within `hold` (or `quit` and
/// then `grace`), the connection's buffers are freed (a record's first part kept
/// in one its size) and `Released` returned, as for a plain connection; nothing
/// within the timeout is `Timeout`.
#[inline(never)]
fn tls_wait<'a, Q: Fn() -> bool + 'a>(
    io: &'a mut Io<'_>,
    buf: &'a mut Vec<u8>,
    hold: Duration,
    quit: Q,
    grace: Duration,
) -> Pin<Box<dyn Future<Output = Result<Waited, Fail>> + 'a>> {
    Box::pin(async move {
        let Stream::Tls(tls) = &mut *io.stream else {
            return Err(Fail::Closed);
        };
        let deadline = Moment::now() + io.timeout;
        loop {
            if !tls.has_buffered() {
                let left = deadline.saturating_duration_since(Moment::now());
                let wait = hold.min(left);
                let ready = match io.timer.run(wait, until(tls.readable(), &quit)).await {
                    Some(Some(ready)) => Some(ready),
                    Some(None) => io.timer.run(grace.min(wait), tls.readable()).await,
                    None => None,
                };
                match ready {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(Fail::Io(e)),
                    None if hold < left => {
                        tls.release_buffers();
                        return Ok(Waited::Released);
                    }
                    None => return Err(Fail::Timeout),
                }
                // Readable: the read completes at once.
                match io.timer.run(io.timeout, tls.fill_ready()).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(Fail::Io(e)),
                    None => return Err(Fail::Timeout),
                }
            }
            match io.timer.run(io.timeout, tls.read_ready(buf)).await {
                Some(Ok(Some(n))) => return Ok(Waited::Read(n)),
                Some(Ok(None)) => {}
                Some(Err(e)) => return Err(Fail::Io(e)),
                None => return Err(Fail::Timeout),
            }
        }
    })
}

/// A timed TLS read, boxed and out of line: the plain operations' futures and code
/// stay as they were without TLS (inline, the TLS state and code made every plain
/// read and write larger and un-inlined monoio's operations, about 200
/// instructions per plain request by callgrind).
#[inline(never)]
fn tls_read<'a>(
    tls: &'a mut TlsStream,
    timer: &'a mut Timer,
    timeout: Duration,
    buf: &'a mut Vec<u8>,
) -> Pin<Box<dyn Future<Output = Result<usize, Fail>> + 'a>> {
    Box::pin(async move {
        match timer.run(timeout, tls.read_into(buf)).await {
            Some(res) => res.map_err(Fail::Io),
            None => Err(Fail::Timeout),
        }
    })
}

/// A timed TLS write of all of `data` (see [`tls_read`]).
#[inline(never)]
fn tls_write<'a>(
    tls: &'a mut TlsStream,
    timer: &'a mut Timer,
    timeout: Duration,
    data: &'a [u8],
) -> Pin<Box<dyn Future<Output = Result<(), Fail>> + 'a>> {
    Box::pin(async move {
        match timer.run(timeout, tls.write_all(data)).await {
            Some(res) => res.map_err(Fail::Io),
            None => Err(Fail::Timeout),
        }
    })
}

/// One non-blocking `recv` from a plain socket into the spare capacity of `buf`
/// (grown when full, as [`read_into`] does), which it need not zero first:
/// `Ok(None)` when nothing is there yet. A loop that would otherwise wait for
/// readability before each read (to stay free to serve another socket) reads at
/// once this way when bytes are there, the common case of a body in full flow.
#[allow(unsafe_code)]
pub fn try_recv(tcp: &monoio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    if buf.len() == buf.capacity() {
        buf.reserve(crate::worker::BUF_SIZE);
    }
    let room = buf.spare_capacity_mut();
    // SAFETY: `recv` only writes into the room it is given (never reads it), and
    // only the bytes it says it wrote are marked initialized.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            room.as_mut_ptr().cast(),
            room.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(None),
            std::io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let n = n as usize;
    // SAFETY: the first `n` bytes of the spare capacity were written by `recv`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(Some(n))
}

/// After a wait for readability ([`Stream::readable`], or a readiness wait that
/// fired): reads what is there into the spare capacity of `buf`, without waiting
/// for more. `Ok(None)` when that gave nothing to the caller yet (part of a TLS
/// record, or a session message such as a ticket): wait for readability again.
/// (A plain [`read_into`] could wait on a TLS peer that sent only a ticket.)
pub async fn read_ready(io: &mut Io<'_>, buf: &mut Vec<u8>) -> Result<Option<usize>, Fail> {
    let Stream::Tls(tls) = &mut *io.stream else {
        return read_into(io, buf).await.map(Some);
    };
    if !tls.has_buffered() {
        match io.timer.run(io.timeout, tls.fill_ready()).await {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Fail::Io(e)),
            None => return Err(Fail::Timeout),
        }
    }
    match io.timer.run(io.timeout, tls.read_ready(buf)).await {
        Some(r) => r.map_err(Fail::Io),
        None => Err(Fail::Timeout),
    }
}

/// Reads once into the spare capacity of `buf`; returns the byte count (0 = EOF).
pub async fn read_into(io: &mut Io<'_>, buf: &mut Vec<u8>) -> Result<usize, Fail> {
    let tcp = match io.stream {
        Stream::Plain(tcp) => tcp,
        Stream::Tls(tls) => return tls_read(tls, io.timer, io.timeout, buf).await,
    };
    if buf.len() == buf.capacity() {
        buf.reserve(crate::worker::BUF_SIZE);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let read = tcp.read(owned.slice_mut(len..cap));
    match io.timer.run(io.timeout, read).await {
        Some((res, slice)) => {
            *buf = slice.into_inner();
            res.map_err(Fail::Io)
        }
        None => Err(Fail::Timeout),
    }
}

/// What [`read_or_release`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// Bytes read (0 = EOF).
    Read(usize),
    /// Nothing arrived within the hold time; the read was cancelled and `buf` is back.
    Released,
}

/// Reads like [`read_into`], but when nothing arrives within `hold` the read is
/// cancelled and `Released` returned, so that the caller can free the buffer while
/// the connection idles. When `quit` comes to hold (the connection should close
/// while idle: see [`Until`]), the read waits `grace` more at most (a request
/// already on its way is still served) and then ends the same way. The cancelled
/// read is still awaited to its end: bytes that raced the cancellation are kept
/// (`Read`), never lost with a dropped op.
pub async fn read_or_release(
    io: &mut Io<'_>,
    buf: &mut Vec<u8>,
    hold: Duration,
    canceller: &mut Canceller,
    quit: impl Fn() -> bool,
    grace: Duration,
) -> Result<Waited, Fail> {
    // A hold as long as the timeout: nothing to release before it. On `quit` the
    // read is dropped with whatever it held (the connection closes).
    let tcp = match &mut *io.stream {
        Stream::Plain(tcp) if hold < io.timeout => tcp,
        Stream::Plain(_) => {
            return match until(read_into(io, buf), quit).await {
                Some(read) => read.map(Waited::Read),
                None => Ok(Waited::Released),
            };
        }
        Stream::Tls(_) => return tls_wait(io, buf, hold, quit, grace).await,
    };
    if buf.len() == buf.capacity() {
        buf.reserve(crate::worker::BUF_SIZE);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let mut read =
        std::pin::pin!(tcp.cancelable_read(owned.slice_mut(len..cap), canceller.handle()));
    let mut cancelled = false;
    let (res, slice) = match io.timer.run(hold, until(read.as_mut(), quit)).await {
        Some(Some(done)) => done,
        first => {
            let late = match first {
                Some(None) => io.timer.run(grace.min(hold), read.as_mut()).await,
                _ => None,
            };
            match late {
                Some(done) => done,
                None => {
                    cancelled = true;
                    *canceller = std::mem::take(canceller).cancel();
                    read.await
                }
            }
        }
    };
    *buf = slice.into_inner();
    match res {
        Ok(n) => Ok(Waited::Read(n)),
        Err(e) if cancelled && matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::EINTR)) => {
            Ok(Waited::Released)
        }
        Err(e) => Err(Fail::Io(e)),
    }
}

pin_project_lite::pin_project! {
    /// An operation that gives up (`None`) when `quit` holds at a poll. Nothing
    /// wakes it for that but its task: a connection's task is woken by every drain
    /// and every nudge of its core (`worker::ConnTask`), which is when `quit` can
    /// change.
    pub struct Until<F, Q> {
        #[pin]
        op: F,
        quit: Q,
    }
}

/// See [`Until`].
pub fn until<F: Future, Q: Fn() -> bool>(op: F, quit: Q) -> Until<F, Q> {
    Until { op, quit }
}

impl<F: Future, Q: Fn() -> bool> Future for Until<F, Q> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.op.poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if (this.quit)() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes `buf[range]` completely. On failure, also says how many bytes went out.
pub async fn write_range(
    io: &mut Io<'_>,
    buf: &mut Vec<u8>,
    mut range: std::ops::Range<usize>,
) -> Result<(), (Fail, usize)> {
    let tcp = match io.stream {
        Stream::Plain(tcp) => tcp,
        Stream::Tls(tls) => {
            // (What a failed write handed to the socket is unknown: all of it, for
            // callers deciding whether a request may be retried.)
            let len = range.len();
            return tls_write(tls, io.timer, io.timeout, &buf[range])
                .await
                .map_err(|f| (f, len));
        }
    };
    let mut written = 0;
    while !range.is_empty() {
        let owned = std::mem::take(buf);
        let write = tcp.write(owned.slice(range.clone()));
        match io.timer.run(io.timeout, write).await {
            Some((res, slice)) => {
                *buf = slice.into_inner();
                match res {
                    Ok(0) => return Err((Fail::Closed, written)),
                    Ok(n) => {
                        written += n;
                        range.start += n;
                    }
                    Err(e) => return Err((Fail::Io(e), written)),
                }
            }
            None => return Err((Fail::Timeout, written)),
        }
    }
    Ok(())
}

/// Writes a static message (e.g. "100 Continue") completely.
pub async fn write_static(io: &mut Io<'_>, msg: &'static [u8]) -> Result<(), Fail> {
    let tcp = match io.stream {
        Stream::Plain(tcp) => tcp,
        Stream::Tls(tls) => return tls_write(tls, io.timer, io.timeout, msg).await,
    };
    let mut sent = 0;
    while sent < msg.len() {
        match io.timer.run(io.timeout, tcp.write(&msg[sent..])).await {
            Some((Ok(0), _)) => return Err(Fail::Closed),
            Some((Ok(n), _)) => sent += n,
            Some((Err(e), _)) => return Err(Fail::Io(e)),
            None => return Err(Fail::Timeout),
        }
    }
    Ok(())
}

/// A body being relayed: how it is delimited and what is left of it.
pub struct Body {
    kind: Kind,
    /// Body bytes (chunk data for chunked) seen so far, for limits.
    seen: u64,
    /// Bytes handed out to be written (framing included, as sent).
    out: u64,
    limit: Option<u64>,
    /// Bytes in the buffer were changed in place (a chunked body re-framed).
    changed: bool,
}

enum Kind {
    Length(u64),
    Chunked {
        decoder: ChunkedDecoder,
        dechunk: bool,
    },
    CloseDelimited,
}

/// Why a relay stopped early.
#[derive(Debug)]
pub enum RelayError {
    Read(Fail),
    Write(Fail),
    Framing(BodyError),
    TooLarge,
}

/// Outcome of a completed relay.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relayed {
    /// The body is no longer in the buffer as it came, so it cannot be replayed
    /// from there: more was read from the source socket (the buffered bytes were
    /// not all of it), or it was re-framed in place.
    pub spent: bool,
}

impl Body {
    /// `dechunk`: strip chunked framing (for an HTTP/1.0 recipient).
    pub fn new(framing: Framing, limit: Option<u64>, max_trailer: usize, dechunk: bool) -> Body {
        let kind = match framing {
            Framing::None => Kind::Length(0),
            Framing::Length(n) => Kind::Length(n),
            Framing::Chunked => Kind::Chunked {
                decoder: ChunkedDecoder::new(max_trailer),
                dechunk,
            },
            Framing::CloseDelimited => Kind::CloseDelimited,
        };
        Body {
            kind,
            seen: 0,
            out: 0,
            limit,
            changed: false,
        }
    }

    /// Whether a trailer section waits to be written ([`Body::take_trailer_section`]).
    #[inline]
    pub fn has_trailer_section(&self) -> bool {
        matches!(&self.kind, Kind::Chunked { decoder, .. } if decoder.has_trailer_section())
    }

    /// The trailer section to write after the body's last bytes, when a chunked
    /// body had trailer fields (those allowed in trailers; see
    /// [`crate::http::body::reframe_in_place`]). Counted in [`Body::out_bytes`].
    pub fn take_trailer_section(&mut self) -> Option<Vec<u8>> {
        let Kind::Chunked { decoder, .. } = &mut self.kind else {
            return None;
        };
        let section = decoder.take_trailer_section()?;
        self.out += section.len() as u64;
        Some(section)
    }

    /// The trailer section to write after the body's last bytes to an HTTP/1.1
    /// recipient: [`Body::take_trailer_section`], or none for a de-chunked body
    /// (whose recipient takes no trailers: they are dropped).
    pub fn trailer_section_to_relay(&mut self) -> Option<Vec<u8>> {
        if let Kind::Chunked {
            decoder,
            dechunk: true,
        } = &mut self.kind
        {
            decoder.take_trailer_section();
        }
        self.take_trailer_section()
    }

    /// The bytes of the body consumed so far, as written on (with their framing).
    pub fn out_bytes(&self) -> u64 {
        self.out
    }

    /// Whether more than `n` body bytes may still come.
    fn expects_more_than(&self, n: usize) -> bool {
        match &self.kind {
            Kind::Length(rest) => *rest > n as u64,
            Kind::Chunked { .. } | Kind::CloseDelimited => true,
        }
    }

    /// The whole body has been consumed.
    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Length(rest) => *rest == 0,
            Kind::Chunked { decoder, .. } => decoder.is_done(),
            Kind::CloseDelimited => false,
        }
    }

    /// Consumes body bytes at the start of `buf[*pos..]`; returns the range to write.
    pub fn consume(
        &mut self,
        buf: &mut [u8],
        pos: &mut usize,
    ) -> Result<std::ops::Range<usize>, RelayError> {
        let start = *pos;
        let avail = buf.len() - start;
        let (take, out_len) = match &mut self.kind {
            Kind::Length(rest) => {
                let take = avail.min(usize::try_from(*rest).unwrap_or(usize::MAX));
                *rest -= take as u64;
                self.seen += take as u64;
                (take, take)
            }
            Kind::Chunked {
                decoder,
                dechunk: false,
            } => {
                let (out, scan) =
                    reframe_in_place(decoder, &mut buf[start..]).map_err(RelayError::Framing)?;
                self.seen = decoder.data_total();
                self.changed |= out != scan.consumed;
                (scan.consumed, out)
            }
            Kind::Chunked {
                decoder,
                dechunk: true,
            } => {
                let (out, scan) = dechunk_holding_trailers(decoder, &mut buf[start..])
                    .map_err(RelayError::Framing)?;
                self.seen = decoder.data_total();
                (scan.consumed, out)
            }
            Kind::CloseDelimited => {
                self.seen += avail as u64;
                (avail, avail)
            }
        };
        if self.limit.is_some_and(|l| self.seen > l) {
            return Err(RelayError::TooLarge);
        }
        *pos = start + take;
        self.out += out_len as u64;
        Ok(start..start + out_len)
    }

    /// Whether the body ends when its sender closes the connection.
    pub fn is_close_delimited(&self) -> bool {
        matches!(self.kind, Kind::CloseDelimited)
    }

    /// Whether the body's bytes in the buffer were changed in place (a chunked
    /// body re-framed): they can no longer be sent again as they came.
    pub fn reframed(&self) -> bool {
        self.changed
    }

    /// Empties `buf`, all of it consumed as body, for the next read of the body.
    #[inline]
    pub fn empty_for_read(&self, buf: &mut Vec<u8>, pos: &mut usize) {
        // Everything buffered was body: reuse the whole buffer for the next read.
        debug_assert_eq!(*pos, buf.len());
        buf.clear();
        *pos = 0;
        if buf.capacity() < RELAY_BUF && self.expects_more_than(buf.capacity()) {
            // A large body moves in 64 KiB steps instead of 16 KiB ones: a
            // quarter of the reads and writes. The buffer is empty here, so
            // nothing is copied; the pool keeps the larger one afterwards.
            *buf = Vec::with_capacity(RELAY_BUF);
        }
    }

    /// Relays the body from `src` to `dst` (or discards it when `dst` is `None`).
    /// `buf[*pos..]` holds bytes already read from `src`; on return `*pos` is just past
    /// the body, and bytes after it (a pipelined request, say) stay in `buf`.
    pub async fn relay(
        &mut self,
        src: &mut Io<'_>,
        mut dst: Option<&mut Io<'_>>,
        buf: &mut Vec<u8>,
        pos: &mut usize,
    ) -> Result<Relayed, RelayError> {
        let mut relayed = Relayed::default();
        loop {
            if *pos < buf.len() {
                let out = self.consume(buf, pos)?;
                relayed.spent |= self.changed;
                if let Some(dst) = dst.as_deref_mut() {
                    if !out.is_empty() {
                        write_range(dst, buf, out)
                            .await
                            .map_err(|(f, _)| RelayError::Write(f))?;
                    }
                }
            }
            if self.is_done() {
                if let Some(mut section) = self.trailer_section_to_relay() {
                    if let Some(dst) = dst.as_deref_mut() {
                        let len = section.len();
                        write_range(dst, &mut section, 0..len)
                            .await
                            .map_err(|(f, _)| RelayError::Write(f))?;
                    }
                }
                return Ok(relayed);
            }
            self.empty_for_read(buf, pos);
            relayed.spent = true;
            match read_into(src, buf).await {
                Ok(0) if matches!(self.kind, Kind::CloseDelimited) => return Ok(relayed),
                Ok(0) => return Err(RelayError::Read(Fail::Closed)),
                Ok(_) => {}
                Err(f) => return Err(RelayError::Read(f)),
            }
        }
    }
}
