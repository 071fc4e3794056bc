//! The upstream response head tokeniser `scan_response` and the parser on top of it,
//! `parse_response`, on arbitrary bytes. Beyond "no panic":
//! - scan_response gives what httparse's response parser (default configuration)
//!   gives, exactly as src/http/scan_tests.rs asserts for its generated heads: the
//!   same outcome (complete, incomplete, invalid, too many lines) and, for a complete
//!   head, the same length, version, status and header names and values (not the
//!   reason: httparse gives an empty one when it holds obs-text); each line is
//!   classified as `HeaderKind::of(name)`;
//! - the spans of a complete head lie inside it (the proxy slices the buffer with them);
//! - a proper prefix of a complete head is incomplete, never an error or another head
//!   (parse_tests.rs's `resp`): the proxy reads heads in pieces;
//! - parse_response reports the status line scan_response found, stays within its
//!   limit, and never keeps a connection alive after a close-delimited body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::config::MAX_HEADERS_CAP;
use ringway::http::parse::{parse_response, Framing, HeaderKind, HeaderSpan, Span, Version};
use ringway::http::scan::{scan_response, ScanError, StatusLine};
use std::mem::MaybeUninit;

fuzz_target!(|buf: &[u8]| {
    // 2 lines reach "too many"; 64 is the tests' other bound.
    for max_headers in [2, 64] {
        check_scan(buf, max_headers);
    }
    for (max_head, request_is_head) in [(65536, false), (200, true)] {
        check_parse(buf, max_head, request_is_head);
    }
});

fn check_scan(buf: &[u8], max_headers: usize) {
    let mut headers = Vec::new();
    let scanned = scan_response(buf, max_headers, &mut headers);
    assert_eq!(
        ours(buf, scanned, &headers),
        reference(buf, max_headers),
        "differs from httparse"
    );
    let Ok(Some(s)) = scanned else { return };
    assert!(headers.len() <= max_headers);
    check_spans(s.head_len, buf.len(), s.line, &headers);
    for cut in cuts(s.head_len) {
        assert_eq!(
            scan_response(&buf[..cut], max_headers, &mut headers),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }
}

fn check_parse(buf: &[u8], max_head: usize, request_is_head: bool) {
    let mut headers = Vec::new();
    let Ok(Some(r)) = parse_response(buf, max_head, request_is_head, &mut headers) else {
        return;
    };
    assert!(r.head_len <= max_head);
    check_spans(r.head_len, buf.len(), r.status_line, &headers);
    let s = scan_response(buf, MAX_HEADERS_CAP, &mut Vec::new())
        .expect("parsed, so scanned")
        .expect("parsed, so complete");
    assert_eq!(
        (r.head_len, r.version, r.status, r.status_line),
        (s.head_len, s.version, s.status, s.line)
    );
    assert!(!(r.keep_alive && r.framing == Framing::CloseDelimited));
    for cut in cuts(r.head_len) {
        let prefix = parse_response(&buf[..cut], max_head, request_is_head, &mut headers);
        assert!(
            matches!(prefix, Ok(None)),
            "prefix of {cut} bytes: {prefix:?}"
        );
    }
}

fn check_spans(head_len: usize, buf_len: usize, line: Span, headers: &[HeaderSpan]) {
    assert!(head_len <= buf_len);
    let spans = headers.iter().flat_map(|h| [h.name, h.value]);
    for s in std::iter::once(line).chain(spans) {
        assert!(
            s.start as usize + s.len as usize <= head_len,
            "{s:?} outside the head"
        );
    }
}

/// What a tokeniser made of a head (scan_tests.rs's `Outcome`).
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Partial,
    Invalid,
    TooManyHeaders,
    Complete {
        head_len: usize,
        http11: bool,
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

fn ours(
    buf: &[u8],
    scanned: Result<Option<StatusLine>, ScanError>,
    headers: &[HeaderSpan],
) -> Outcome {
    match scanned {
        Ok(None) => Outcome::Partial,
        Err(ScanError::Invalid) => Outcome::Invalid,
        Err(ScanError::TooManyHeaders) => Outcome::TooManyHeaders,
        Ok(Some(s)) => {
            for h in headers {
                assert_eq!(h.kind, HeaderKind::of(h.name.get(buf)));
            }
            Outcome::Complete {
                head_len: s.head_len,
                http11: s.version == Version::Http11,
                status: s.status,
                headers: headers
                    .iter()
                    .map(|h| (h.name.get(buf).to_vec(), h.value.get(buf).to_vec()))
                    .collect(),
            }
        }
    }
}

fn reference(buf: &[u8], max_headers: usize) -> Outcome {
    let mut slots = vec![MaybeUninit::<httparse::Header>::uninit(); max_headers];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Partial) => Outcome::Partial,
        Err(httparse::Error::TooManyHeaders) => Outcome::TooManyHeaders,
        Err(_) => Outcome::Invalid,
        Ok(httparse::Status::Complete(head_len)) => Outcome::Complete {
            head_len,
            http11: resp.version == Some(1),
            status: resp.code.unwrap(),
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                .collect(),
        },
    }
}

/// Every cut point below `end` for a short head; about 300 for a long one.
fn cuts(end: usize) -> impl Iterator<Item = usize> {
    let step = (end / 256).max(1);
    (0..end).step_by(step).chain(end.saturating_sub(32)..end)
}
