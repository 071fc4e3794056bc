use super::*;
use std::mem::MaybeUninit;

/// What a tokeniser made of a head, in terms both can be compared in. (The reason is
/// left out: httparse gives an empty one when it holds obs-text.)
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

fn ours(buf: &[u8], max_headers: usize) -> Outcome {
    let mut headers = Vec::new();
    match scan_response(buf, max_headers, &mut headers) {
        Ok(None) => Outcome::Partial,
        Err(ScanError::Invalid) => Outcome::Invalid,
        Err(ScanError::TooManyHeaders) => Outcome::TooManyHeaders,
        Ok(Some(s)) => {
            for h in &headers {
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

fn check(buf: &[u8], max_headers: usize) {
    assert_eq!(
        ours(buf, max_headers),
        reference(buf, max_headers),
        "head {:?}",
        String::from_utf8_lossy(buf)
    );
}

const SEEDS: [&[u8]; 8] = [
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\n\
      Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    b"HTTP/1.0 404 Not Found\nX-A:b\nx-b:\n\n",
    b"\r\n\nHTTP/1.1 204\r\nA:\r\nB: \t x \t\r\nC:\t\t\r\n\r\n",
    b"HTTP/1.1 302 Fo\xe9und \t\r\nLocation: /caf\xc3\xa9?q=\"a\tb\"\r\nSet-Cookie: a=b; Path=/; \
      HttpOnly; Secure; SameSite=Lax; Max-Age=3600\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: 0123456789abcdef0123456789abcdef0123456789abcdef\t0123\r\n\
      !#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
    b"HTTP/1.1 200 \r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 0\r\n\r\n",
];

#[test]
fn seeds_and_every_prefix_match_httparse() {
    for seed in SEEDS {
        for end in 0..=seed.len() {
            check(&seed[..end], 64);
            check(&seed[..end], 2);
        }
    }
}

#[test]
fn known_heads() {
    let buf = b"\r\nHTTP/1.1 404 Not Found \r\nA:  x y  \r\nB:\r\n\r\nbody";
    let mut headers = Vec::new();
    let s = scan_response(buf, 8, &mut headers).unwrap().unwrap();
    assert_eq!(s.head_len, buf.len() - 4);
    assert_eq!((s.version, s.status), (Version::Http11, 404));
    assert_eq!(s.line.get(buf), b"404 Not Found ");
    assert_eq!(headers[0].value.get(buf), b"x y");
    assert_eq!(headers[1].value.get(buf), b"");
    let buf = b"HTTP/1.0 200\nContent-Length: 3\n\n";
    let s = scan_response(buf, 8, &mut headers).unwrap().unwrap();
    assert_eq!(s.line.get(buf), b"200");
    assert_eq!(headers[0].kind, HeaderKind::ContentLength);
    for bad in [
        &b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\n b: c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: \x7f\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: \x00\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\r\n",
        b"\r\rHTTP/1.1 200 OK\r\n\r\n",
    ] {
        assert_eq!(
            scan_response(bad, 8, &mut headers),
            Err(ScanError::Invalid),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for partial in [
        &b""[..],
        b"\r",
        b"HTTP/1",
        b"HTTP/1.1",
        b"HTTP/1.1 2",
        b"HTTP/1.1 200 OK\r",
    ] {
        assert_eq!(scan_response(partial, 8, &mut headers), Ok(None));
    }
    let many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(
        scan_response(many, 2, &mut headers),
        Err(ScanError::TooManyHeaders)
    );
    assert!(scan_response(many, 3, &mut headers).unwrap().is_some());
}

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_heads_match_httparse() {
    // Bytes that sit on the grammar's edges.
    const EDGE: &[u8] = b"\r\n \t:\x00\x01\x1f\x7f\x80\xff aZ09/.H(\",;=";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut buf = SEEDS[rng.below(SEEDS.len())].to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(buf.len() + 1);
            let byte = if rng.below(4) == 0 {
                rng.next() as u8
            } else {
                EDGE[rng.below(EDGE.len())]
            };
            match rng.below(3) {
                0 if at < buf.len() => buf[at] = byte,
                1 if at < buf.len() => {
                    buf.remove(at);
                }
                _ => buf.insert(at, byte),
            }
        }
        let max_headers = 1 + rng.below(8);
        check(&buf, max_headers);
        let cut = rng.below(buf.len() + 1);
        check(&buf[..cut], max_headers);
    }
}

/// A word-at-a-time scan (`scan(buf, start)`: the first stop byte at or after
/// `start`, or the end) against a byte-by-byte search with `stops`: every byte value
/// at every place of a 19-byte buffer of each filler, from starts inside and across
/// the first and second words.
fn check_scan_against_table(
    scan: fn(&[u8], usize) -> usize,
    stops: impl Fn(u8) -> bool,
    fillers: &[u8],
) {
    for &filler in fillers {
        for b in 0..=255u8 {
            for at in 0..17 {
                let mut buf = vec![filler; 19];
                buf[at] = b;
                for start in [0, 1, 7, 12] {
                    let want = (start..buf.len())
                        .find(|&j| stops(buf[j]))
                        .unwrap_or(buf.len());
                    assert_eq!(
                        scan(&buf, start),
                        want,
                        "filler {filler:#x}, byte {b:#x} at {at}, from {start}"
                    );
                }
            }
        }
    }
}

#[test]
fn value_scan_agrees_with_a_byte_table_for_every_byte_anywhere() {
    let value_byte = |b: u8| (b >= 0x20 || b == b'\t') && b != 0x7f;
    check_scan_against_table(
        field_end,
        |b| !value_byte(b),
        &[b'a', b' ', b'\t', b'~', 0x80, 0xff],
    );
}

#[test]
fn name_scan_agrees_with_a_byte_table_for_every_byte_anywhere() {
    check_scan_against_table(
        name_end,
        |b| b == b':' || b < 0x20,
        &[b'a', b'-', b' ', 0x7f, 0x80, 0xff],
    );
}

/// Names the proxy classifies are checked by the match itself, not the token table
/// (see `scan_response`): every byte at every place of each, in either case, against
/// httparse.
#[test]
fn every_byte_in_known_names_matches_httparse() {
    let names: [&[u8]; 17] = [
        b"te",
        b"host",
        b"date",
        b"cookie",
        b"expect",
        b"trailer",
        b"upgrade",
        b"connection",
        b"keep-alive",
        b"content-length",
        b"x-forwarded-for",
        b"proxy-connection",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"transfer-encoding",
        b"x-forwarded-proto",
        b"Content-Length",
    ];
    for name in names {
        for at in 0..name.len() {
            for b in 0..=255u8 {
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                let mut name = name.to_vec();
                name[at] = b;
                head.extend_from_slice(&name);
                head.extend_from_slice(b": 1\r\nContent-Type: text/plain\r\n\r\nbody");
                check(&head, 8);
            }
        }
    }
}
