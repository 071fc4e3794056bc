//! Sans-io body framing (RFC 9112 §6, §7.1): a strict chunked-coding scanner. It
//! tells the caller where the message ends and where the chunk data lies, so the
//! proxy can forward chunked bodies re-framed in place (chunk extensions and
//! whitespace dropped, trailer fields filtered: [`reframe_in_place`]) or, for an
//! HTTP/1.0 client, compact the data in place ([`dechunk_holding_trailers`]).
//! Content-Length framing is a plain counter kept by the caller. Nothing here does
//! I/O; only a trailer section, when one comes, is kept in a buffer of its own.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct BodyError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// Optional whitespace after the size, only before `;` (BWS, RFC 9112 §7.1.1).
    SizeWs,
    /// Inside chunk extensions, up to CR.
    Ext,
    /// CR of the chunk-size line seen, LF expected.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Limits of one chunked message's framing lines.
const MAX_CHUNK_LINE: u32 = 4096;

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    line_len: u32,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
    data_total: u64,
    /// Re-framing ([`reframe_in_place`]): the trailer fields kept so far, and the
    /// line being read (from `line_at`); `None` until a trailer field comes.
    trailers: Option<Vec<u8>>,
    line_at: usize,
}

/// The result of feeding a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of the input that belong to this message.
    pub consumed: usize,
    /// The message ended at `consumed`.
    pub done: bool,
}

impl ChunkedDecoder {
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line_len: 0,
            trailer_bytes: 0,
            max_trailer_bytes,
            data_total: 0,
            trailers: None,
            line_at: 0,
        }
    }

    /// Whether [`ChunkedDecoder::take_trailer_section`] has a section to give.
    pub fn has_trailer_section(&self) -> bool {
        self.state == State::Done && self.trailers.is_some()
    }

    /// After [`reframe_in_place`] ended a body that had trailer fields: the trailer
    /// section to send after the bytes it returned (the fields allowed in trailers,
    /// then the final CRLF). Once.
    pub fn take_trailer_section(&mut self) -> Option<Vec<u8>> {
        if self.state != State::Done {
            return None;
        }
        let mut section = self.trailers.take()?;
        section.truncate(self.line_at);
        section.extend_from_slice(b"\r\n");
        Some(section)
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Sum of chunk-data bytes seen so far (for body size limits).
    pub fn data_total(&self) -> u64 {
        self.data_total
    }

    /// Walks `input`, calling `on_data` with each range of chunk data in it.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(Range<usize>),
    ) -> Result<Scan, BodyError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let take = self.take_data(input.len() - i);
                on_data(i..i + take);
                i += take;
                continue;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(Scan {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// Takes up to `avail` bytes of the current chunk's data; returns how many.
    #[inline]
    fn take_data(&mut self, avail: usize) -> usize {
        let take = avail.min(usize::try_from(self.size).unwrap_or(usize::MAX));
        self.size -= take as u64;
        self.data_total += take as u64;
        if self.size == 0 {
            self.state = State::DataCr;
        }
        take
    }

    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        self.state = match self.state {
            State::Size { digits } => match (b, hex_value(b)) {
                (_, Some(v)) => {
                    if digits >= 16 {
                        return Err(BodyError("chunk size overflows"));
                    }
                    self.size = self.size << 4 | u64::from(v);
                    State::Size { digits: digits + 1 }
                }
                _ if digits == 0 => return Err(BodyError("chunk size expected")),
                (b'\r', _) => State::SizeLf,
                (b';', _) => State::Ext,
                (b' ' | b'\t', _) => State::SizeWs,
                _ => return Err(BodyError("invalid byte after chunk size")),
            },
            State::SizeWs => match b {
                b' ' | b'\t' => State::SizeWs,
                b';' => State::Ext,
                _ => return Err(BodyError("whitespace after chunk size")),
            },
            State::Ext => {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_LINE {
                    return Err(BodyError("chunk extensions too long"));
                }
                match b {
                    b'\r' => State::SizeLf,
                    b'\t' | b' '..=0x7e | 0x80..=0xff => State::Ext,
                    _ => return Err(BodyError("invalid byte in chunk extension")),
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(BodyError("bare CR in chunk-size line"));
                }
                self.line_len = 0;
                if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::Data => unreachable!("data is consumed in bulk by feed"),
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(BodyError("chunk data longer than its size")),
            },
            State::DataLf => match b {
                b'\n' => State::Size { digits: 0 },
                _ => return Err(BodyError("bare CR after chunk data")),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                _ if crate::config::is_tchar(b) => self.count_trailer(State::TrailerName)?,
                _ => return Err(BodyError("invalid trailer field")),
            },
            State::TrailerName => match b {
                b':' => self.count_trailer(State::TrailerValue)?,
                _ if crate::config::is_tchar(b) => self.count_trailer(State::TrailerName)?,
                _ => return Err(BodyError("invalid trailer field name")),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\t' | b' '..=0x7e | 0x80..=0xff => self.count_trailer(State::TrailerValue)?,
                _ => return Err(BodyError("invalid byte in trailer value")),
            },
            State::TrailerLf => match b {
                b'\n' => State::TrailerStart,
                _ => return Err(BodyError("bare CR in trailer")),
            },
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(BodyError("bare CR at end of chunked body")),
            },
            State::Done => State::Done,
        };
        Ok(())
    }

    fn count_trailer(&mut self, next: State) -> Result<State, BodyError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(BodyError("trailer section too large"));
        }
        Ok(next)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Re-frames in place what of a chunked body `buf` holds, for a recipient that
/// takes chunked bodies: keeps the chunk sizes, data and line ends, drops chunk
/// extensions and the whitespace before them (RFC 9112 §7.1.1: a recipient ignores
/// extensions it does not understand; a proxy does not pass on ones it was not
/// told to), and holds back a trailer section, keeping only fields allowed in
/// trailers ([`allowed_in_trailers`]), for
/// [`ChunkedDecoder::take_trailer_section`]. Returns how many bytes at the front of
/// `buf` to send (never more than were consumed: each byte kept is written at or
/// before its place), with the scan result. A body without extensions, whitespace
/// or trailer fields stays as it came, and nothing is moved.
pub fn reframe_in_place(
    decoder: &mut ChunkedDecoder,
    buf: &mut [u8],
) -> Result<(usize, Scan), BodyError> {
    reshape_in_place(decoder, buf, true)
}

/// De-chunks in place what of a chunked body `buf` holds (the chunk data moved to
/// the front), holding back its trailer fields as [`reframe_in_place`] does: for
/// a recipient that frames the body itself (HTTP/2 DATA frames and trailers, or
/// an HTTP/1.0 client, which gets no trailers).
pub fn dechunk_holding_trailers(
    decoder: &mut ChunkedDecoder,
    buf: &mut [u8],
) -> Result<(usize, Scan), BodyError> {
    reshape_in_place(decoder, buf, false)
}

/// [`reframe_in_place`] (`framing`: the chunk framing is kept) or
/// [`dechunk_holding_trailers`].
fn reshape_in_place(
    decoder: &mut ChunkedDecoder,
    buf: &mut [u8],
    framing: bool,
) -> Result<(usize, Scan), BodyError> {
    let mut out = 0;
    let mut i = 0;
    while i < buf.len() && decoder.state != State::Done {
        if decoder.state == State::Data {
            let take = decoder.take_data(buf.len() - i);
            if out != i {
                buf.copy_within(i..i + take, out);
            }
            out += take;
            i += take;
            continue;
        }
        let (before, b) = (decoder.state, buf[i]);
        decoder.step(b)?;
        i += 1;
        let keep = match before {
            // Size digits and the line's CR; not whitespace, `;` or extensions.
            State::Size { .. } => b != b';' && b != b' ' && b != b'\t',
            State::SizeWs => false,
            State::Ext => b == b'\r',
            State::SizeLf | State::DataCr | State::DataLf => true,
            // The final CRLF goes as it came unless trailer fields came before it
            // (then it ends the held section).
            State::TrailerStart if b == b'\r' => decoder.trailers.is_none(),
            State::EndLf => decoder.trailers.is_none(),
            State::TrailerStart | State::TrailerName | State::TrailerValue | State::TrailerLf => {
                let held = decoder.trailers.get_or_insert_with(Vec::new);
                held.push(b);
                if before == State::TrailerLf {
                    // A whole field line: kept or dropped by its name.
                    let line = &held[decoder.line_at..];
                    let name = &line[..line.iter().position(|&c| c == b':').unwrap_or(0)];
                    if allowed_in_trailers(name) {
                        decoder.line_at = held.len();
                    } else {
                        held.truncate(decoder.line_at);
                    }
                }
                false
            }
            State::Data | State::Done => unreachable!("not stepped"),
        };
        if keep && framing {
            buf[out] = b;
            out += 1;
        }
    }
    Ok((
        out,
        Scan {
            consumed: i,
            done: decoder.state == State::Done,
        },
    ))
}

/// Whether a field may be forwarded in a trailer section. Fields that frame,
/// route, authenticate or modify the message, or describe its content, must be in
/// the header section to mean anything (RFC 9110 §6.5.1); a recipient could
/// otherwise be made to act on a Content-Length or Host that comes after the body.
/// The list is RFC 7230 §4.1.2's (as Go's net/http keeps it), with Upgrade and the
/// other connection-specific fields.
pub fn allowed_in_trailers(name: &[u8]) -> bool {
    const NOT_ALLOWED: &[&[u8]] = &[
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-type",
        b"expect",
        b"host",
        b"keep-alive",
        b"max-forwards",
        b"pragma",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"range",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"www-authenticate",
    ];
    !NOT_ALLOWED.iter().any(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every point (and byte by byte), checking the same result.
    fn scan_all_splits(input: &[u8]) -> Result<(usize, Vec<u8>), BodyError> {
        let whole = run(&[input])?;
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(run(&[a, b])?, whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes)?, whole, "byte by byte");
        Ok(whole)
    }

    /// Returns (bytes consumed until done, data).
    fn run(parts: &[&[u8]]) -> Result<(usize, Vec<u8>), BodyError> {
        let mut d = ChunkedDecoder::new(1024);
        let mut data = Vec::new();
        let mut consumed = 0;
        for part in parts {
            if d.is_done() {
                break;
            }
            let scan = d.feed(part, |r| data.extend_from_slice(&part[r]))?;
            consumed += scan.consumed;
        }
        if !d.is_done() {
            return Err(BodyError("incomplete"));
        }
        Ok((consumed, data))
    }

    #[test]
    fn decodes_chunks_and_stops_at_message_end() {
        let msg = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (consumed, data) = scan_all_splits(msg).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(consumed, msg.len() - b"GET / HTTP/1.1\r\n".len());
    }

    #[test]
    fn trailers_and_extensions() {
        let msg = b"A ; name=\"v\"\r\n0123456789\r\n0\r\nx-checksum: abc\r\nx-b:\r\n\r\n";
        let (consumed, data) = scan_all_splits(msg).unwrap();
        assert_eq!(data, b"0123456789");
        assert_eq!(consumed, msg.len());
        let upper = b"00000a\r\n0123456789\r\n000\r\n\r\n";
        assert_eq!(scan_all_splits(upper).unwrap().1, b"0123456789");
    }

    #[test]
    fn rejects_malformed_framing() {
        let bad: &[&[u8]] = &[
            b"\r\n",                          // empty size
            b"x\r\n",                         // not hex
            b"0x5\r\nhello\r\n0\r\n\r\n",     // 0x prefix
            b"-1\r\n",                        // sign
            b"5 \r\nhello\r\n0\r\n\r\n",      // whitespace without extension
            b"5\nhello\r\n0\r\n\r\n",         // bare LF
            b"5\rhello\r\n0\r\n\r\n",         // bare CR
            b"5\r\nhelloX\r\n0\r\n\r\n",      // data longer than size
            b"5\r\nhello\n0\r\n\r\n",         // bare LF after data
            b"10000000000000000\r\n",         // 17 hex digits: overflow
            b"0\r\nbad header\r\n\r\n",       // space in trailer name
            b"0\r\nx: a\0b\r\n\r\n",          // NUL in trailer
            b"0\r\n\r\r",                     // bare CR at end
            b"5;a\x01\r\nhello\r\n0\r\n\r\n", // control byte in extension
        ];
        for (i, input) in bad.iter().enumerate() {
            assert!(
                run(&[input]).is_err(),
                "case {i} {:?} must fail",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_trailer_section() {
        let mut msg = b"0\r\nx: ".to_vec();
        msg.extend(std::iter::repeat_n(b'a', 2000));
        msg.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&[&msg]), Err(BodyError("trailer section too large")));
    }

    #[test]
    fn max_size_is_accepted_and_counted() {
        let mut d = ChunkedDecoder::new(64);
        let scan = d.feed(b"ffffffffffffffff\r\nab", |_| {}).unwrap();
        assert_eq!(scan.consumed, 20);
        assert_eq!(d.data_total(), 2);
    }

    /// Re-frames `msg` fed in two parts split at every point (and byte by byte):
    /// the bytes to send, then the trailer section.
    fn reframe_all_splits(msg: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let run = |parts: &[&[u8]]| {
            let mut d = ChunkedDecoder::new(1024);
            let mut out = Vec::new();
            let mut consumed = 0;
            for part in parts {
                let mut buf = part.to_vec();
                let (n, scan) = reframe_in_place(&mut d, &mut buf).unwrap();
                assert!(n <= scan.consumed);
                out.extend_from_slice(&buf[..n]);
                consumed += scan.consumed;
                if scan.done {
                    break;
                }
            }
            assert!(d.is_done());
            assert_eq!(consumed, msg.len());
            (out, d.take_trailer_section())
        };
        let whole = run(&[msg]);
        for split in 0..=msg.len() {
            let (a, b) = msg.split_at(split);
            assert_eq!(run(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn reframing_drops_extensions_and_trailer_fields_not_allowed() {
        // Without extensions or trailers: as it came.
        let plain = b"5\r\nhello\r\n006\r\n world\r\n0\r\n\r\n";
        assert_eq!(reframe_all_splits(plain), (plain.to_vec(), None));
        // Extensions and the whitespace before them go; sizes keep their digits.
        let ext = b"5 ;a=b\r\nhello\r\n6;x=\"y;z\"\r\n world\r\n0;last\r\n\r\n";
        assert_eq!(
            reframe_all_splits(ext),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(), None)
        );
        // Trailer fields: held back; those that frame, route or describe the
        // content dropped, the rest (gRPC's, a checksum) kept, in order.
        let trailers = b"2\r\nok\r\n0\r\nContent-Length: 99\r\ngrpc-status: 0\r\nHOST: evil\r\nx-sum:\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            reframe_all_splits(trailers),
            (
                b"2\r\nok\r\n0\r\n".to_vec(),
                Some(b"grpc-status: 0\r\nx-sum:\r\n\r\n".to_vec())
            )
        );
        // Only fields that are not allowed: an empty section.
        let none_left = b"0\r\ncontent-type: text/plain\r\n\r\n";
        assert_eq!(
            reframe_all_splits(none_left),
            (b"0\r\n".to_vec(), Some(b"\r\n".to_vec()))
        );
        // Bytes after the body stay where they were.
        let mut buf = b"1;e\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n".to_vec();
        let mut d = ChunkedDecoder::new(64);
        let (n, scan) = reframe_in_place(&mut d, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"1\r\na\r\n0\r\n\r\n");
        assert_eq!(&buf[scan.consumed..], b"GET / HTTP/1.1\r\n");
        // Malformed framing is refused as by `feed`.
        let mut bad = b"5 \r\nhello\r\n0\r\n\r\n".to_vec();
        assert!(reframe_in_place(&mut ChunkedDecoder::new(64), &mut bad).is_err());
    }

    #[test]
    fn trailer_names_allowed() {
        assert!(allowed_in_trailers(b"grpc-status"));
        assert!(allowed_in_trailers(b"x-checksum"));
        for name in [
            &b"Content-Length"[..],
            b"host",
            b"CONNECTION",
            b"te",
            b"Trailer",
        ] {
            assert!(
                !allowed_in_trailers(name),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn dechunks_in_place_across_splits() {
        let msg = b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
        for split in 0..=msg.len() {
            let mut d = ChunkedDecoder::new(64);
            let mut out = Vec::new();
            for part in [&msg[..split], &msg[split..]] {
                let mut buf = part.to_vec();
                let (n, _) = dechunk_holding_trailers(&mut d, &mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
            }
            assert!(d.is_done());
            assert_eq!(out, b"abcdefg", "split {split}");
        }
    }
}
