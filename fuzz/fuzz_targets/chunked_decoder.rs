//! `ChunkedDecoder` on arbitrary bytes fed in arbitrary pieces. The first three
//! bytes of the input choose the trailer limit and the pieces; the rest is the body:
//!   [0] max_trailer_bytes = 4 * byte (0 to 1020; the unit tests use 64 and 1024)
//!   [1] length of the first piece
//!   [2] length of each later piece (0: the rest in one piece)
//! Beyond "no panic":
//! - each data range lies inside the piece it is reported for, before `consumed`,
//!   after the previous range (the proxy slices and compacts with them);
//! - a piece is consumed whole unless the message ends in it;
//! - the outcome (the error, or the bytes consumed until the end, the data and whether
//!   it ended) is the one of feeding the body whole (body.rs's `scan_all_splits`,
//!   which checks this for complete messages; a byte-at-a-time state machine gives
//!   the same error too);
//! - `dechunk_holding_trailers` leaves the same data at the front of the pieces;
//! - `reframe_in_place` (what the proxy forwards) has the same outcome, never sends
//!   more of a piece than it consumed (it writes in place), and what it sends, with
//!   the trailer section after, is a complete chunked body with the same data, no
//!   chunk extensions, only trailer fields allowed in trailers, and re-framed again
//!   unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::http::body::{
    allowed_in_trailers, dechunk_holding_trailers, reframe_in_place, BodyError, ChunkedDecoder,
};

fuzz_target!(|input: &[u8]| {
    let [trailer, first, later, ref body @ ..] = *input else {
        return;
    };
    let max_trailer = 4 * usize::from(trailer);
    let (head, tail) = body.split_at(usize::from(first).min(body.len()));
    let mut pieces = vec![head];
    match usize::from(later) {
        0 => pieces.push(tail),
        n => pieces.extend(tail.chunks(n)),
    }

    let whole = feed(&[body], max_trailer);
    assert_eq!(
        feed(&pieces, max_trailer),
        whole,
        "pieces {:?}",
        lens(&pieces)
    );
    assert_eq!(
        dechunk(&pieces, max_trailer),
        whole,
        "in place, pieces {:?}",
        lens(&pieces)
    );
    let (fed, sent) = reframe(&pieces, max_trailer);
    assert_eq!(fed, whole, "re-framed, pieces {:?}", lens(&pieces));
    if let Ok(Fed {
        data, done: true, ..
    }) = &whole
    {
        // What goes on: a chunked body of its own, with the same data.
        let again = feed(&[&sent], usize::MAX).expect("re-framed body decodes");
        assert!(
            again.done && again.consumed == sent.len(),
            "{again:?} of {}",
            sent.len()
        );
        assert_eq!(&again.data, data);
        let (refed, resent) = reframe(&[&sent], usize::MAX);
        assert!(refed.is_ok());
        assert_eq!(resent, sent, "re-framing is not idempotent");
        check_lines(&sent);
    }
});

/// Re-frames the pieces as the proxy does; returns the outcome and what it sends
/// (each piece's kept bytes, then the trailer section).
fn reframe(pieces: &[&[u8]], max_trailer: usize) -> (Result<Fed, BodyError>, Vec<u8>) {
    let mut d = ChunkedDecoder::new(max_trailer);
    let mut fed = Fed::default();
    let mut sent = Vec::new();
    for &piece in pieces {
        if d.is_done() {
            break;
        }
        let mut buf = piece.to_vec();
        let (n, scan) = match reframe_in_place(&mut d, &mut buf) {
            Ok(r) => r,
            Err(e) => return (Err(e), sent),
        };
        assert!(
            n <= scan.consumed,
            "sends {n} of {} consumed",
            scan.consumed
        );
        // Bytes after the body are left as they were.
        assert_eq!(&buf[scan.consumed..], &piece[scan.consumed..]);
        sent.extend_from_slice(&buf[..n]);
        fed.consumed += scan.consumed;
    }
    fed.done = d.is_done();
    if let Some(section) = d.take_trailer_section() {
        sent.extend_from_slice(&section);
    }
    let decoded = feed(&[&sent], usize::MAX)
        .map(|f| f.data)
        .unwrap_or_default();
    fed.data = decoded;
    (Ok(fed), sent)
}

/// No chunk-size line has an extension; every trailer field is allowed.
fn check_lines(body: &[u8]) {
    let mut in_trailers = false;
    let mut rest = body;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end];
        if in_trailers {
            if line.is_empty() {
                return;
            }
            let name = &line[..line.iter().position(|&b| b == b':').expect("a field")];
            assert!(
                allowed_in_trailers(name),
                "trailer {:?}",
                String::from_utf8_lossy(name)
            );
            rest = &rest[end + 2..];
            continue;
        }
        assert!(line.iter().all(u8::is_ascii_hexdigit), "size line {line:?}");
        let size = u64::from_str_radix(
            std::str::from_utf8(line)
                .unwrap()
                .trim_start_matches('0')
                .max("0"),
            16,
        )
        .unwrap_or(u64::MAX);
        if size == 0 {
            in_trailers = true;
            rest = &rest[end + 2..];
            continue;
        }
        let skip = end + 2 + usize::try_from(size).unwrap() + 2;
        rest = &rest[skip..];
    }
}

/// What feeding a body gave: bytes consumed until the message ended (all, when it did
/// not), the chunk data, and whether it ended.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fed {
    consumed: usize,
    data: Vec<u8>,
    done: bool,
}

fn feed(pieces: &[&[u8]], max_trailer: usize) -> Result<Fed, BodyError> {
    let mut d = ChunkedDecoder::new(max_trailer);
    let mut fed = Fed::default();
    for &piece in pieces {
        if d.is_done() {
            break;
        }
        let mut data_end = 0;
        let scan = d.feed(piece, |r| {
            assert!(
                data_end <= r.start && r.start <= r.end && r.end <= piece.len(),
                "range {r:?} after {data_end} in a piece of {}",
                piece.len()
            );
            data_end = r.end;
            fed.data.extend_from_slice(&piece[r]);
        })?;
        assert!(data_end <= scan.consumed && scan.consumed <= piece.len());
        assert!(
            scan.done || scan.consumed == piece.len(),
            "{scan:?} of {}",
            piece.len()
        );
        assert_eq!(scan.done, d.is_done());
        fed.consumed += scan.consumed;
    }
    assert_eq!(d.data_total(), fed.data.len() as u64);
    fed.done = d.is_done();
    Ok(fed)
}

fn dechunk(pieces: &[&[u8]], max_trailer: usize) -> Result<Fed, BodyError> {
    let mut d = ChunkedDecoder::new(max_trailer);
    let mut fed = Fed::default();
    for &piece in pieces {
        if d.is_done() {
            break;
        }
        let mut buf = piece.to_vec();
        let (n, scan) = dechunk_holding_trailers(&mut d, &mut buf)?;
        fed.data.extend_from_slice(&buf[..n]);
        fed.consumed += scan.consumed;
    }
    fed.done = d.is_done();
    Ok(fed)
}

fn lens(pieces: &[&[u8]]) -> Vec<usize> {
    pieces.iter().map(|p| p.len()).collect()
}
