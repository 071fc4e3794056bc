//! `parse_request` on arbitrary bytes, once with the default limits and once with
//! small ones (so short inputs reach the 414 and 431 paths). Beyond "no panic":
//! - an accepted head lies inside the buffer, and every span in it and in its header
//!   lines lies inside the head: the proxy slices the buffer with them, and rewrites
//!   the request from them;
//! - an accepted head is within the limits (header lines, head and target length);
//! - parsing is deterministic, also into a header vector a previous parse filled;
//! - what is refused in pieces is refused whole (parse_tests.rs's `parse_all_splits`,
//!   weakened): a prefix of the input is incomplete, or fails and the whole fails too.
//!   Not asserted: that it fails with the same error (`GET / HTTP/2` is a version we
//!   do not speak, 505, and `GET / HTTP/2x` a malformed line, 400).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::config::Limits;
use ringway::http::parse::{parse_request, HeaderSpan, RequestHead, Span};

fuzz_target!(|buf: &[u8]| {
    let small = Limits {
        max_head_bytes: 256,
        max_headers: 4,
        max_uri_bytes: 32,
        max_body_bytes: None,
    };
    check(buf, &Limits::default());
    check(buf, &small);
});

fn check(buf: &[u8], limits: &Limits) {
    let mut headers = Vec::new();
    let whole = parse_request(buf, limits, &mut headers);
    let whole_headers = headers.clone();
    if let Ok(Some(head)) = &whole {
        check_head(head, &headers, buf.len(), limits);
    }

    // The same input again, into the vector the first parse filled.
    let again = parse_request(buf, limits, &mut headers);
    assert_eq!(
        format!("{again:?}"),
        format!("{whole:?}"),
        "not deterministic"
    );
    if let Ok(Some(_)) = &again {
        assert_eq!(format!("{headers:?}"), format!("{whole_headers:?}"));
    }

    // Every prefix: up to the end of the head, or of the input when there is none.
    let end = match &whole {
        Ok(Some(head)) => head.head_len,
        _ => buf.len(),
    };
    for cut in cuts(end) {
        match parse_request(&buf[..cut], limits, &mut headers) {
            Ok(None) => {}
            Ok(Some(_)) => panic!("prefix of {cut} bytes parsed as complete"),
            Err(e) => assert!(
                whole.is_err(),
                "prefix {cut} fails ({e:?}), the whole does not: {whole:?}"
            ),
        }
    }
}

fn check_head(head: &RequestHead, headers: &[HeaderSpan], buf_len: usize, limits: &Limits) {
    assert!(
        head.head_len <= buf_len,
        "head_len {} > {buf_len}",
        head.head_len
    );
    assert!(head.head_len <= limits.max_head_bytes);
    assert!(headers.len() <= limits.max_headers);
    assert!(head.target.len as usize <= limits.max_uri_bytes);
    let inside = |s: Span, outer: Span, what: &str| {
        let (start, end) = (s.start as usize, s.start as usize + s.len as usize);
        let (outer_start, outer_end) = (
            outer.start as usize,
            outer.start as usize + outer.len as usize,
        );
        assert!(
            outer_start <= start && end <= outer_end,
            "{what} {s:?} outside {outer:?}"
        );
    };
    let whole_head = Span {
        start: 0,
        len: head.head_len as u32,
    };
    inside(head.method_span, whole_head, "method");
    inside(head.target, whole_head, "target");
    inside(head.path, head.target, "path");
    for (span, what) in [(head.query, "query"), (head.authority, "authority")] {
        if let Some(span) = span {
            inside(span, head.target, what);
        }
    }
    if let Some(host) = head.host_header {
        inside(host, whole_head, "Host");
    }
    for h in headers {
        inside(h.name, whole_head, "header name");
        inside(h.value, whole_head, "header value");
    }
}

/// Every cut point below `end` for a short head; about 300 for a long one (each cut
/// is a parse of up to `end` bytes).
fn cuts(end: usize) -> impl Iterator<Item = usize> {
    let step = (end / 256).max(1);
    (0..end).step_by(step).chain(end.saturating_sub(32)..end)
}
