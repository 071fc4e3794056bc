//! Moving bytes between sockets: timed reads into a buffer's spare capacity, timed
//! writes of a buffer range, and the body relay used in both directions. A body is
//! relayed in place through one buffer (read, then write the same bytes), so memory
//! stays bounded whatever its size and a slow reader slows the writer (back-pressure).
//!
//! Timeouts: every socket has one [`Timer`], a timer-wheel entry made once and moved
//! forward for each operation (moving a deadline later costs a store; the wheel
//! re-files the entry only when it fires early). A fresh `monoio::time::timeout` per
//! operation would insert and remove a wheel entry, and move the whole future, for
//! every read and write.
//!
//! monoio ops own their buffer while in flight. A timed-out op is dropped (monoio
//! cancels it) and its buffer is lost with it: after any timeout here the caller
//! must close the connection, which it does.

use crate::http::body::{dechunk_in_place, BodyError, ChunkedDecoder};
use crate::http::parse::Framing;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::time::{Instant, Sleep};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// Why a socket operation did not complete.
#[derive(Debug)]
pub enum Fail {
    Timeout,
    /// The peer closed (EOF on read, zero-length write).
    Closed,
    Io(io::Error),
}

/// A reusable timeout for the operations of one socket (see the module docs).
pub struct Timer(Pin<Box<Sleep>>);

impl Timer {
    /// Must be called on a worker (a monoio runtime with its timer enabled).
    pub fn new() -> Timer {
        // Registered in the wheel on first use, with that use's deadline.
        let far = Instant::now() + Duration::from_secs(365 * 86_400);
        Timer(Box::pin(monoio::time::sleep_until(far)))
    }

    /// Runs `op` until it completes (`Some`) or `timeout` passes (`None`; `op` is
    /// dropped, which cancels it).
    pub async fn run<F: Future>(&mut self, timeout: Duration, op: F) -> Option<F::Output> {
        let mut sleep = self.0.as_mut();
        sleep.as_mut().reset(Instant::now() + timeout);
        let mut op = std::pin::pin!(op);
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(out) = op.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

impl Default for Timer {
    fn default() -> Timer {
        Timer::new()
    }
}

/// One side of an exchange: a socket, its timer and its I/O timeout.
pub struct Io<'a> {
    pub stream: &'a mut TcpStream,
    pub timer: &'a mut Timer,
    pub timeout: Duration,
}

impl<'a> Io<'a> {
    pub fn new(stream: &'a mut TcpStream, timer: &'a mut Timer, timeout: Duration) -> Io<'a> {
        Io {
            stream,
            timer,
            timeout,
        }
    }
}

/// Reads once into the spare capacity of `buf`; returns the byte count (0 = EOF).
pub async fn read_into(io: &mut Io<'_>, buf: &mut Vec<u8>) -> Result<usize, Fail> {
    if buf.len() == buf.capacity() {
        buf.reserve(crate::worker::BUF_SIZE);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let read = io.stream.read(owned.slice_mut(len..cap));
    match io.timer.run(io.timeout, read).await {
        Some((res, slice)) => {
            *buf = slice.into_inner();
            res.map_err(Fail::Io)
        }
        None => Err(Fail::Timeout),
    }
}

/// Writes `buf[range]` completely. On failure, also says how many bytes went out.
pub async fn write_range(
    io: &mut Io<'_>,
    buf: &mut Vec<u8>,
    mut range: std::ops::Range<usize>,
) -> Result<(), (Fail, usize)> {
    let mut written = 0;
    while !range.is_empty() {
        let owned = std::mem::take(buf);
        let write = io.stream.write(owned.slice(range.clone()));
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
    let mut sent = 0;
    while sent < msg.len() {
        match io
            .timer
            .run(io.timeout, io.stream.write(&msg[sent..]))
            .await
        {
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
    limit: Option<u64>,
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
    /// At least one read from the source socket happened (the buffered head bytes
    /// were not enough), so the body cannot be replayed from the buffer.
    pub read_from_source: bool,
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
            limit,
        }
    }

    fn is_done(&self) -> bool {
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
                let scan = decoder
                    .feed(&buf[start..], |_| {})
                    .map_err(RelayError::Framing)?;
                self.seen = decoder.data_total();
                (scan.consumed, scan.consumed)
            }
            Kind::Chunked {
                decoder,
                dechunk: true,
            } => {
                let (out, scan) =
                    dechunk_in_place(decoder, &mut buf[start..]).map_err(RelayError::Framing)?;
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
        Ok(start..start + out_len)
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
                if let Some(dst) = dst.as_deref_mut() {
                    if !out.is_empty() {
                        write_range(dst, buf, out)
                            .await
                            .map_err(|(f, _)| RelayError::Write(f))?;
                    }
                }
            }
            if self.is_done() {
                return Ok(relayed);
            }
            // Everything buffered was body: reuse the whole buffer for the next read.
            debug_assert_eq!(*pos, buf.len());
            buf.clear();
            *pos = 0;
            relayed.read_from_source = true;
            match read_into(src, buf).await {
                Ok(0) if matches!(self.kind, Kind::CloseDelimited) => return Ok(relayed),
                Ok(0) => return Err(RelayError::Read(Fail::Closed)),
                Ok(_) => {}
                Err(f) => return Err(RelayError::Read(f)),
            }
        }
    }
}
