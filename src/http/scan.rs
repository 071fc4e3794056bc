//! The tokeniser of upstream response heads: status line and header lines into
//! offsets, with the same grammar and the same outcomes (complete, incomplete,
//! invalid, too many lines) as httparse's response parser with its default
//! configuration, which the tests check on generated heads. `parse::parse_response`
//! then classifies the lines and decides framing.
//!
//! Why not httparse here: it reads every header byte through a bounds-checked
//! cursor, and for the 150-byte head of a small response that cost about 1,360
//! instructions, a tenth of a whole proxied request. Here field values (the bulk of
//! a head) are checked eight bytes at a time and the line structure needs no second
//! pass. Request heads, the hostile side, stay with httparse.

use super::parse::{alnum_and, HeaderKind, HeaderSpan, Span, Version};

/// A tokenised status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine {
    pub version: Version,
    pub status: u16,
    /// "200 OK": from the status code to the end of the reason, as received.
    pub line: Span,
    /// Bytes up to and including the blank line that ends the head.
    pub head_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Not an HTTP/1.x response head.
    Invalid,
    /// More header lines than `max_headers`.
    TooManyHeaders,
}

/// Tokenises the response head at the start of `buf` into `headers` (cleared first;
/// each line classified). `Ok(None)`: incomplete, read more.
pub fn scan_response(
    buf: &[u8],
    max_headers: usize,
    headers: &mut Vec<HeaderSpan>,
) -> Result<Option<StatusLine>, ScanError> {
    use ScanError::Invalid;
    headers.clear();
    let n = buf.len();
    // Empty lines before the status line are skipped (RFC 9112 §2.2).
    let mut i = 0;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(b'\r' | b'\n') => match line_break(buf, i)? {
                Some(next) => i = next,
                None => return Ok(None),
            },
            Some(_) => break,
        }
    }
    // HTTP-version SP status-code (RFC 9112 §4).
    let version = match buf.get(i..i + 8) {
        Some(b"HTTP/1.1") => Version::Http11,
        Some(b"HTTP/1.0") => Version::Http10,
        Some(_) => return Err(Invalid),
        None if b"HTTP/1.".starts_with(&buf[i..]) => return Ok(None),
        None => return Err(Invalid),
    };
    i += 8;
    let code_start = i + 1;
    match buf.get(i..code_start + 3) {
        Some([b' ', digits @ ..]) if digits.iter().all(u8::is_ascii_digit) => {}
        Some(_) => return Err(Invalid),
        None => {
            // Incomplete: invalid already if what is there cannot start one.
            let part = &buf[i..];
            let ok = part.first().is_none_or(|&b| b == b' ')
                && part.iter().skip(1).all(u8::is_ascii_digit);
            return if ok { Ok(None) } else { Err(Invalid) };
        }
    }
    let status = buf[code_start..code_start + 3]
        .iter()
        .fold(0u16, |s, &d| s * 10 + u16::from(d - b'0'));
    i = code_start + 3;
    // [ SP reason-phrase ] CRLF; the reason may hold HTAB, SP, VCHAR and obs-text.
    let line_end = match buf.get(i) {
        None => return Ok(None),
        Some(b' ') => field_end(buf, i + 1),
        Some(_) => i,
    };
    let Some(next) = line_break(buf, line_end)? else {
        return Ok(None);
    };
    let line = span(code_start, line_end);
    i = next;

    loop {
        // A header line, or the blank line that ends the head.
        let name_start = i;
        if let Some(b'\r' | b'\n') = buf.get(i) {
            let Some(end) = line_break(buf, i)? else {
                return Ok(None);
            };
            return Ok(Some(StatusLine {
                version,
                status,
                line,
                head_len: end,
            }));
        }
        // field-name ":" OWS field-value OWS (RFC 9112 §5): the name runs to the
        // colon (no space before it) and is a token. Found as the first colon or
        // control byte, a word at a time; the bytes before it are checked after.
        i = name_end(buf, i);
        if i == n {
            // Incomplete; invalid already if what is there cannot be a name.
            return if buf[name_start..].iter().all(|&b| is_token(b)) {
                Ok(None)
            } else {
                Err(Invalid)
            };
        }
        let name = &buf[name_start..i];
        if buf[i] != b':' || name.is_empty() {
            return Err(Invalid);
        }
        // A name the proxy knows is matched whole, which checks its bytes too: only
        // a letter or its capital folds to a lower-case letter, and only '-' or CR
        // (a control, not in `name`) to '-'. Others are checked here.
        let kind = HeaderKind::of(name);
        if kind == HeaderKind::Other && !all_tokens(name) {
            return Err(Invalid);
        }
        let name_end = i;
        i += 1;
        // Usually one space.
        i += usize::from(buf.get(i) == Some(&b' '));
        while i < n && matches!(buf[i], b' ' | b'\t') {
            i += 1;
        }
        let value_start = i;
        let mut value_end = field_end(buf, i);
        let Some(next) = line_break(buf, value_end)? else {
            return Ok(None);
        };
        while value_end > value_start && matches!(buf[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        if headers.len() == max_headers {
            return Err(ScanError::TooManyHeaders);
        }
        headers.push(HeaderSpan {
            name: span(name_start, name_end),
            value: span(value_start, value_end),
            kind,
        });
        i = next;
    }
}

fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        len: (end - start) as u32,
    }
}

/// Where the line break at `at` ends: CRLF or a bare LF (RFC 9112 §2.2). `None`:
/// not all of it is buffered yet. Any other byte there is invalid.
fn line_break(buf: &[u8], at: usize) -> Result<Option<usize>, ScanError> {
    match buf.get(at) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(at + 1)),
        Some(b'\r') => match buf.get(at + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(at + 2)),
            Some(_) => Err(ScanError::Invalid),
        },
        Some(_) => Err(ScanError::Invalid),
    }
}

/// tchar (RFC 9110 §5.6.2).
fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

static TOKEN: [bool; 256] = alnum_and(b"!#$%&'*+-.^_`|~");

/// Whether every byte of `s` is a tchar: the table's answers and-ed together, with
/// no branch per byte.
fn all_tokens(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & is_token(b))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The first ':' or control byte (below 0x20: CR and LF among them) at or after
/// `i`, or `buf.len()`. Eight bytes at a time, like [`field_end`]: the lowest
/// flagged byte of each test is exact, and so is the lowest of either.
#[inline(always)]
fn name_end(buf: &[u8], mut i: usize) -> usize {
    while let Some(word) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let colon = x ^ (ONES * u64::from(b':'));
        let is_colon = colon.wrapping_sub(ONES) & !colon;
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let hits = (is_colon | below_space) & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < buf.len() && buf[i] != b':' && buf[i] >= 0x20 {
        i += 1;
    }
    i
}

/// The first byte at or after `i` that cannot be in a field value or reason phrase
/// (a control other than HTAB, or DEL: RFC 9110 §5.5, obs-text allowed), or
/// `buf.len()`. Eight bytes at a time: a word has such a byte when one of its bytes
/// is below 0x20 or equals 0x7F; the lowest flagged byte of each test is exact
/// (borrows only flag bytes above a true hit), and a flagged HTAB is stepped over.
#[inline(always)]
fn field_end(buf: &[u8], mut i: usize) -> usize {
    while let Some(word) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let del = x ^ (ONES * 0x7f);
        let is_del = del.wrapping_sub(ONES) & !del;
        let hits = (below_space | is_del) & HIGH;
        if hits == 0 {
            i += 8;
            continue;
        }
        let at = i + (hits.trailing_zeros() / 8) as usize;
        if buf[at] != b'\t' {
            return at;
        }
        i = at + 1;
    }
    while i < buf.len() && (buf[i] >= 0x20 || buf[i] == b'\t') && buf[i] != 0x7f {
        i += 1;
    }
    i
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
