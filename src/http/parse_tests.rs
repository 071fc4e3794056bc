use super::*;

fn limits() -> Limits {
    Limits::default()
}

/// Parses `input` whole, and checks that every proper prefix is "incomplete" and
/// that the result does not depend on where the bytes were split.
fn parse_all_splits(input: &[u8]) -> Result<(RequestHead, Vec<HeaderSpan>), ParseError> {
    let mut headers = Vec::new();
    let whole = parse_request(input, &limits(), &mut headers);
    let head_len = match &whole {
        Ok(Some(h)) => h.head_len,
        _ => input.len(),
    };
    for cut in 0..head_len {
        let mut hs = Vec::new();
        match parse_request(&input[..cut], &limits(), &mut hs) {
            Ok(None) => {}
            // An error may show up before the end, but then it must be the same error.
            Err(e) => {
                assert_eq!(
                    whole.as_ref().err(),
                    Some(&e),
                    "prefix {cut} fails differently"
                );
                return Err(e);
            }
            Ok(Some(_)) => panic!("prefix of {cut} bytes parsed as complete"),
        }
    }
    match whole {
        Ok(Some(h)) => Ok((h, headers)),
        Ok(None) => panic!("complete input parsed as incomplete"),
        Err(e) => Err(e),
    }
}

fn ok(input: &str) -> (RequestHead, Vec<HeaderSpan>) {
    parse_all_splits(input.as_bytes()).unwrap_or_else(|e| panic!("{input:?}: {e}"))
}

fn err(input: &str) -> ParseError {
    match parse_all_splits(input.as_bytes()) {
        Err(e) => e,
        Ok(_) => panic!("{input:?} must be rejected"),
    }
}

#[test]
fn simple_get_is_zero_copy_offsets() {
    let input = "GET /a/b?x=1&y HTTP/1.1\r\nHost: Example.com:8080\r\nX-A: 1\r\n\r\nrest";
    let (h, headers) = ok(input);
    let b = input.as_bytes();
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.path.get(b), b"/a/b");
    assert_eq!(h.query.unwrap().get(b), b"x=1&y");
    assert_eq!(h.host().unwrap().get(b), b"Example.com:8080");
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.framing, Framing::None);
    assert!(h.keep_alive);
    assert_eq!(h.head_len, input.len() - 4);
    assert_eq!(headers.len(), 2);
    assert_eq!(headers[1].name.get(b), b"X-A");
    assert_eq!(headers[1].kind, HeaderKind::Other);
}

#[test]
fn framing_and_connection_semantics() {
    let (h, _) = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(5));
    let (h, _) = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(0));
    let (h, _) =
        ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n");
    assert_eq!(
        h.framing,
        Framing::Length(7),
        "identical values are one value"
    );
    let (h, _) = ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    let (h, _) = ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(!h.keep_alive);
    let (h, _) = ok("GET / HTTP/1.0\r\n\r\n");
    assert!(!h.keep_alive, "HTTP/1.0 closes by default");
    assert!(h.host().is_none(), "HTTP/1.0 may omit Host");
    let (h, _) = ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive);
    let (h, _) =
        ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\n\r\n");
    assert!(h.connection_names_headers);
    let (h, _) =
        ok("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(h.expect_continue);
}

#[test]
fn target_forms() {
    let input = "GET http://Api.Example.com:81/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n";
    let (h, _) = ok(input);
    let b = input.as_bytes();
    assert_eq!(h.authority.unwrap().get(b), b"Api.Example.com:81");
    assert_eq!(
        h.host().unwrap().get(b),
        b"Api.Example.com:81",
        "absolute-form wins over Host"
    );
    assert_eq!(h.path.get(b), b"/p");
    let input = "GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n";
    let (h, _) = ok(input);
    assert_eq!(h.path.get(input.as_bytes()), b"");
    let (h, _) = ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.method, Method::Options);
    // CONNECT's authority-form target is a host like any other: `host()` returns
    // host bytes only (the access log writes it as it is).
    let input = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n";
    let (h, _) = ok(input);
    assert_eq!(h.host().unwrap().get(input.as_bytes()), b"a.example:443");
    for target in ["a\",\"route\":\"x", "a\\b:1", "a\"b"] {
        let input = format!("CONNECT {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(err(&input), ParseError::Malformed(_)), "{target}");
    }
    assert!(matches!(
        err("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ParseError::Malformed(_)
    ));
    assert!(matches!(
        err("GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ParseError::Malformed(_)
    ));
    assert!(matches!(
        err("GET http://u@x/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ParseError::Malformed(_)
    ));
    assert!(matches!(
        err("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"),
        ParseError::Malformed(_)
    ));
}

#[test]
fn smuggling_defences() {
    let cases = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Space : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for c in cases {
        let e = err(c);
        assert!(
            matches!(e, ParseError::Malformed(_) | ParseError::UnsupportedCoding),
            "{c:?} gave {e:?}"
        );
    }
    assert_eq!(
        err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        ParseError::UnsupportedCoding
    );
}

#[test]
fn versions() {
    assert_eq!(
        err("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        ParseError::Version
    );
    assert_eq!(
        err("GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        ParseError::Version
    );
    assert!(matches!(
        err("GET / HTTX/1.1\r\nHost: a\r\n\r\n"),
        ParseError::Malformed(_)
    ));
}

#[test]
fn limits_are_enforced() {
    let l = Limits {
        max_head_bytes: 1024,
        max_headers: 4,
        max_uri_bytes: 64,
        max_body_bytes: None,
    };
    let mut hs = Vec::new();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
    assert_eq!(
        parse_request(long_uri.as_bytes(), &l, &mut hs).unwrap_err(),
        ParseError::UriTooLong
    );
    // Still incomplete, but the request line is already too long.
    let partial = format!("GET /{}", "a".repeat(200));
    assert_eq!(
        parse_request(partial.as_bytes(), &l, &mut hs).unwrap_err(),
        ParseError::UriTooLong
    );
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    assert_eq!(
        parse_request(many.as_bytes(), &l, &mut hs).unwrap_err(),
        ParseError::TooManyHeaders
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nA: {}\r\n\r\n",
        "v".repeat(1100)
    );
    assert_eq!(
        parse_request(big.as_bytes(), &l, &mut hs).unwrap_err(),
        ParseError::HeadTooLarge
    );
    let big_partial = format!("GET / HTTP/1.1\r\nHost: a\r\nA: {}", "v".repeat(1100));
    assert_eq!(
        parse_request(big_partial.as_bytes(), &l, &mut hs).unwrap_err(),
        ParseError::HeadTooLarge
    );
}

/// Found by the `request_parser` fuzz target: a request's fate may not depend on how
/// its bytes were split into reads (every prefix is incomplete or fails, and fails
/// as the whole does).
#[test]
fn the_outcome_does_not_depend_on_the_reads() {
    let l = Limits {
        max_head_bytes: 256,
        max_headers: 4,
        max_uri_bytes: 32,
        max_body_bytes: None,
    };
    let all_splits = |input: &[u8]| {
        let mut hs = Vec::new();
        let whole = parse_request(input, &l, &mut hs);
        let end = match &whole {
            Ok(Some(h)) => h.head_len,
            _ => input.len(),
        };
        for cut in 0..end {
            match parse_request(&input[..cut], &l, &mut hs) {
                Ok(None) => {}
                Ok(Some(_)) => panic!("prefix {cut} complete"),
                Err(e) => assert_eq!(whole.as_ref().err(), Some(&e), "prefix {cut} of {input:?}"),
            }
        }
        whole.map(|h| h.is_some())
    };
    // A long method before a short target: accepted, whole or in pieces (a prefix
    // without its line end was a 414).
    let long_method = format!("{} / HTTP/1.1\r\nHost: a\r\n\r\n", "A".repeat(56));
    assert_eq!(all_splits(long_method.as_bytes()), Ok(true));
    // A long target: 414 as soon as it passes the limit.
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(40));
    assert_eq!(
        all_splits(long_target.as_bytes()),
        Err(ParseError::UriTooLong)
    );
    // Also while the rest of the head is still coming (the fuzzer's second case: a
    // prefix refused, the longer head still waiting for its end).
    let mut hs = Vec::new();
    let head_so_far = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "a".repeat(40));
    assert_eq!(
        parse_request(head_so_far.as_bytes(), &l, &mut hs).unwrap_err(),
        ParseError::UriTooLong
    );
    // Something wrong within the size limit is a 400 however much came after it...
    let early = format!("G(T{}", "a".repeat(300));
    assert_eq!(
        all_splits(early.as_bytes()),
        Err(ParseError::Malformed("invalid token"))
    );
    // ...and past it, a 431 (the head was already too large).
    let late = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\0\r\n\r\n",
        "v".repeat(250)
    );
    assert_eq!(all_splits(late.as_bytes()), Err(ParseError::HeadTooLarge));
    // Two spaces before the version: a malformed line (400), not a version we do not
    // speak (505).
    let mut hs = Vec::new();
    let two_spaces = b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n";
    assert!(matches!(
        parse_request(two_spaces, &l, &mut hs),
        Err(ParseError::Malformed(_))
    ));
    // A version after empty lines is still one.
    assert_eq!(
        parse_request(b"\r\nGET / HTTP/2.0\r\n\r\n", &l, &mut hs).unwrap_err(),
        ParseError::Version
    );
}

fn resp(input: &str, is_head: bool) -> Result<ResponseHead, ParseError> {
    let mut hs = Vec::new();
    let b = input.as_bytes();
    let whole = parse_response(b, 65536, is_head, &mut hs)?;
    let head = whole.expect("complete");
    for cut in 0..head.head_len {
        assert!(parse_response(&b[..cut], 65536, is_head, &mut hs)
            .unwrap()
            .is_none());
    }
    Ok(head)
}

#[test]
fn response_framing() {
    let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
    assert_eq!(
        (r.status, r.framing, r.keep_alive),
        (200, Framing::Length(5), true)
    );
    let r = resp(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(r.framing, Framing::Chunked);
    let r = resp("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(r.framing, Framing::CloseDelimited);
    assert!(
        !r.keep_alive,
        "a close-delimited response ends the connection"
    );
    let r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
    assert_eq!(r.framing, Framing::CloseDelimited);
    for s in [
        "204 No Content",
        "304 Not Modified",
        "100 Continue",
        "103 Early Hints",
    ] {
        let r = resp(
            &format!("HTTP/1.1 {s}\r\nContent-Length: 10\r\n\r\n"),
            false,
        )
        .unwrap();
        assert_eq!(r.framing, Framing::None, "{s}");
    }
    let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true).unwrap();
    assert_eq!(r.framing, Framing::None, "response to HEAD");
    let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).unwrap();
    assert!(!r.keep_alive);
    let r = resp(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(r.keep_alive);
    let r = resp(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!r.keep_alive);
    let input = "HTTP/1.1 404 Not Found\r\nDate: x\r\nContent-Length: 0\r\n\r\n";
    let r = resp(input, false).unwrap();
    assert_eq!(r.status_line.get(input.as_bytes()), b"404 Not Found");
    assert!(r.has_date);
    let input = "\n\r\nHTTP/1.1 200\r\n\r\n";
    let r = resp(input, false).unwrap();
    assert_eq!(r.status_line.get(input.as_bytes()), b"200");
}

#[test]
fn single_valued_fields_read_like_lists() {
    // The one-value fast paths give what the list parsing gives.
    let cases = [
        ("Content-Length: 42", Ok(Framing::Length(42))),
        ("Content-Length: 42, 42", Ok(Framing::Length(42))),
        ("Content-Length: 042", Ok(Framing::Length(42))),
        (
            "Content-Length: 9999999999999999999",
            Ok(Framing::Length(9_999_999_999_999_999_999)),
        ),
        ("Content-Length: 10000000000000000000", Err(())),
        ("Content-Length: 4 2", Err(())),
        ("Content-Length: +42", Err(())),
        ("Content-Length: 42\r\nContent-Length: 43", Err(())),
        (
            "Content-Length: 42\r\nContent-Length: 42",
            Ok(Framing::Length(42)),
        ),
    ];
    for (field, want) in cases {
        let input = format!("HTTP/1.1 200 OK\r\n{field}\r\n\r\n");
        let got = resp(&input, false).map(|r| r.framing).map_err(|_| ());
        assert_eq!(got, want, "{field}");
    }
    let cases = [
        ("Connection: close", false, false),
        ("Connection: CLOSE", false, false),
        ("Connection: Keep-Alive", true, false),
        ("Connection: keep-alivf", false, true),
        ("Connection: closer", false, true),
        ("Connection: close, x-a", false, true),
    ];
    for (field, keep_alive, names) in cases {
        let input = format!("HTTP/1.0 200 OK\r\n{field}\r\nContent-Length: 0\r\n\r\n");
        let r = resp(&input, false).unwrap();
        assert_eq!(
            (r.keep_alive, r.connection_names_headers),
            (keep_alive, names),
            "{field}"
        );
    }
}

#[test]
fn response_smuggling_defences() {
    let bad = [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        // Codes outside 100-599: not interim, not final.
        "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 000 Zero\r\n\r\n",
        "HTTP/1.1 600 Big\r\nContent-Length: 0\r\n\r\n",
        // Transfer-Encoding from an HTTP/1.0 server: faulty framing, with or
        // without Content-Length.
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
    ];
    // Without a body, an HTTP/1.0 response's Transfer-Encoding frames nothing: it is
    // taken, and the connection closed after it (RFC 9112 §6.1).
    let no_body =
        "HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
    let r = parse_response(no_body.as_bytes(), 65536, false, &mut Vec::new())
        .unwrap()
        .unwrap();
    assert!(!r.keep_alive);
    // The edges of the range are codes.
    for ok in [
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n",
    ] {
        assert!(
            parse_response(ok.as_bytes(), 65536, false, &mut Vec::new()).is_ok(),
            "{ok:?}"
        );
    }
    let mut hs = Vec::new();
    for b in bad {
        assert!(
            parse_response(b.as_bytes(), 65536, false, &mut hs).is_err(),
            "{b:?}"
        );
    }
    let big = format!("HTTP/1.1 200 OK\r\nA: {}", "v".repeat(2000));
    assert_eq!(
        parse_response(big.as_bytes(), 1024, false, &mut hs).unwrap_err(),
        ParseError::HeadTooLarge
    );
}

#[test]
fn connection_named_headers() {
    let input = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n\r\n";
    let (_, headers) = ok(input);
    let b = input.as_bytes();
    assert!(is_named_by_connection(b, &headers, b"x-secret"));
    assert!(!is_named_by_connection(b, &headers, b"host"));
}

#[test]
fn host_byte_table_matches_rfc3986_reg_name_and_ip_literal_bytes() {
    for b in 0..=255u8 {
        let want = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
        assert_eq!(is_valid_host(&[b]), want, "byte {b:#04x}");
    }
    assert!(is_valid_host(b"[::1]:8080"));
    assert!(!is_valid_host(b""));
    assert!(!is_valid_host(&[b'a'; 1025]));
    assert!(!is_valid_host(b"a b"));
}

/// The word-compare classifier agrees with a plain case-insensitive compare for every
/// name the proxy acts on, in every case mix, and for every one-byte change of them
/// that is still a token (httparse passes no other names).
#[test]
fn header_kind_matches_a_plain_case_insensitive_compare() {
    const NAMES: [(&str, HeaderKind); 16] = [
        ("te", HeaderKind::Te),
        ("host", HeaderKind::Host),
        ("date", HeaderKind::Date),
        ("cookie", HeaderKind::Cookie),
        ("expect", HeaderKind::Expect),
        ("trailer", HeaderKind::Trailer),
        ("upgrade", HeaderKind::Upgrade),
        ("connection", HeaderKind::Connection),
        ("keep-alive", HeaderKind::KeepAlive),
        ("content-length", HeaderKind::ContentLength),
        ("x-forwarded-for", HeaderKind::XForwardedFor),
        ("proxy-connection", HeaderKind::ProxyConnection),
        ("x-forwarded-host", HeaderKind::XForwardedHost),
        ("x-forwarded-port", HeaderKind::XForwardedPort),
        ("transfer-encoding", HeaderKind::TransferEncoding),
        ("x-forwarded-proto", HeaderKind::XForwardedProto),
    ];
    let reference = |name: &[u8]| {
        NAMES
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map_or(HeaderKind::Other, |(_, k)| *k)
    };
    for (name, kind) in NAMES {
        let name = name.as_bytes();
        assert_eq!(HeaderKind::of(name), kind);
        assert_eq!(HeaderKind::of(&name.to_ascii_uppercase()), kind);
        for i in 0..name.len() {
            let mut v = name.to_vec();
            v[i] = v[i].to_ascii_uppercase();
            assert_eq!(HeaderKind::of(&v), kind);
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            for b in (0..=255u8).filter(|&b| tchar(b)) {
                v[i] = b;
                assert_eq!(HeaderKind::of(&v), reference(&v), "{:?}", v);
            }
        }
        assert_eq!(HeaderKind::of(&name[1..]), reference(&name[1..]));
        assert_eq!(HeaderKind::of(&[name, b"x"].concat()), HeaderKind::Other);
    }
    for other in [
        "",
        "a",
        "accept",
        "user-agent",
        "content-type",
        "x-forwarded-xxxx",
    ] {
        assert_eq!(
            HeaderKind::of(other.as_bytes()),
            HeaderKind::Other,
            "{other}"
        );
    }
}
