//! Responses the proxy writes itself, pre-rendered once per core: direct responses
//! and redirects from routes, and the short error pages (400, 404, 408, 413, 414,
//! 431, 501, 502, 503, 504, 505). Only the Date and Connection lines are added per
//! request, by [`Answer::render_into`].

use crate::config::{HeaderEdit, RedirectParts};

/// The Location of a redirect to the request's own URL with `parts` replaced:
/// `tls` says the request's scheme, `host` is its Host (with any port), `path` and
/// `query` its request-target's. When the scheme changes and no port is set, a
/// port that was the old scheme's default is dropped (as Envoy does); a port that
/// is the new scheme's default is never written. (Without a Host, HTTP/1.0, the
/// caller passes the address the connection came to, `ip:port` or `[ip]:port`.)
pub fn redirect_location(
    parts: &RedirectParts,
    tls: bool,
    host: &[u8],
    path: &[u8],
    query: Option<&[u8]>,
) -> String {
    let default_port = |scheme: &str| if scheme == "https" { 443 } else { 80 };
    let scheme_in = if tls { "https" } else { "http" };
    let scheme = parts.scheme.as_deref().unwrap_or(scheme_in);
    let host_in = String::from_utf8_lossy(host);
    // "name:port", "[v6]:port", "name", "[v6]"
    let (name_in, port_in) = match host_in.rfind(':') {
        Some(i) if !host_in[i..].contains(']') => {
            (&host_in[..i], host_in[i + 1..].parse::<u16>().ok())
        }
        _ => (&host_in[..], None),
    };
    let name = parts.host.as_deref().unwrap_or(name_in);
    let port = match parts.port {
        Some(p) => Some(p),
        None if scheme != scheme_in && port_in == Some(default_port(scheme_in)) => None,
        None => port_in,
    };
    let mut location = format!("{scheme}://{name}");
    if let Some(p) = port.filter(|&p| p != default_port(scheme)) {
        location.push_str(&format!(":{p}"));
    }
    match &parts.path {
        Some(p) => location.push_str(p),
        None if path.is_empty() => location.push('/'),
        None => location.push_str(&String::from_utf8_lossy(path)),
    }
    if let Some(q) = query {
        location.push('?');
        location.push_str(&String::from_utf8_lossy(q));
    }
    location
}

/// A complete response minus its Date and Connection lines.
#[derive(Debug, Clone)]
pub struct Answer {
    status: u16,
    /// Status line and fixed header lines, each ending in CRLF, no final CRLF.
    head: Box<[u8]>,
    body: Box<[u8]>,
}

impl Answer {
    pub fn direct(status: u16, content_type: &str, body: &[u8], edits: &HeaderEdit) -> Answer {
        Answer::build(status, Some(content_type), None, body, edits)
    }

    pub fn redirect(status: u16, location: &str, edits: &HeaderEdit) -> Answer {
        let body = format!("{} {}\n", status, reason(status));
        Answer::build(
            status,
            Some("text/plain"),
            Some(location),
            body.as_bytes(),
            edits,
        )
    }

    /// The proxy's own error page for `status`.
    pub fn error(status: u16) -> Answer {
        let body = format!("{} {}\n", status, reason(status));
        Answer::build(
            status,
            Some("text/plain"),
            None,
            body.as_bytes(),
            &HeaderEdit::default(),
        )
    }

    fn build(
        status: u16,
        content_type: Option<&str>,
        location: Option<&str>,
        body: &[u8],
        edits: &HeaderEdit,
    ) -> Answer {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nserver: ringway\r\n",
            status,
            reason(status)
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("content-type: {ct}\r\n"));
        }
        if let Some(loc) = location {
            head.push_str(&format!("location: {loc}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n", body.len()));
        for (name, value) in edits.set.iter().chain(&edits.add) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        Answer {
            status,
            head: head.into_bytes().into(),
            body: body.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// Appends the response to `out`. `date` is an IMF-fixdate; `close` adds
    /// `Connection: close`, `keep_alive_10` adds `Connection: keep-alive` for an
    /// HTTP/1.0 client; `with_body` is false for HEAD (RFC 9110 §9.3.2).
    pub fn render_into(&self, out: &mut Vec<u8>, date: &[u8], conn: ConnHeader, with_body: bool) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(conn.line());
        out.extend_from_slice(b"\r\n");
        if with_body {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The Connection line a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnHeader {
    /// HTTP/1.1 persistent: no line needed.
    None,
    Close,
    /// HTTP/1.0 client that asked for keep-alive.
    KeepAlive,
}

impl ConnHeader {
    pub fn line(self) -> &'static [u8] {
        match self {
            ConnHeader::None => b"",
            ConnHeader::Close => b"connection: close\r\n",
            ConnHeader::KeepAlive => b"connection: keep-alive\r\n",
        }
    }
}

/// Per-core table of the proxy's error pages.
pub struct ErrorAnswers {
    answers: Vec<Answer>,
}

/// Statuses the proxy can produce on its own.
const ERROR_STATUSES: [u16; 14] = [
    400, 403, 404, 405, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505,
];

impl ErrorAnswers {
    pub fn new() -> ErrorAnswers {
        ErrorAnswers {
            answers: ERROR_STATUSES.iter().map(|&s| Answer::error(s)).collect(),
        }
    }

    pub fn get(&self, status: u16) -> &Answer {
        let i = ERROR_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or_else(|| panic!("no pre-rendered answer for {status}"));
        &self.answers[i]
    }
}

impl Default for ErrorAnswers {
    fn default() -> Self {
        ErrorAnswers::new()
    }
}

/// RFC 9110 §15 reason phrases.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        path: Option<&str>,
    ) -> RedirectParts {
        RedirectParts {
            scheme: scheme.map(Into::into),
            host: host.map(Into::into),
            port,
            path: path.map(Into::into),
        }
    }

    #[test]
    fn redirect_parts_replace_only_their_part() {
        let https = parts(Some("https"), None, None, None);
        let loc = |p: &RedirectParts, tls, host: Option<&str>, path: &str, query: Option<&str>| {
            let fallback = "192.0.2.1:8080";
            redirect_location(
                p,
                tls,
                host.unwrap_or(fallback).as_bytes(),
                path.as_bytes(),
                query.map(str::as_bytes),
            )
        };
        // The example.
        assert_eq!(
            loc(&https, false, Some("a.example"), "/x", Some("y")),
            "https://a.example/x?y"
        );
        // The old scheme's default port goes; another port stays.
        assert_eq!(
            loc(&https, false, Some("a.example:80"), "/", None),
            "https://a.example/"
        );
        assert_eq!(
            loc(&https, false, Some("a.example:8080"), "/", None),
            "https://a.example:8080/"
        );
        // An explicit port, written unless it is the scheme's default.
        let p = parts(Some("https"), None, Some(8443), None);
        assert_eq!(
            loc(&p, false, Some("a.example:80"), "/z", None),
            "https://a.example:8443/z"
        );
        let p = parts(Some("https"), None, Some(443), None);
        assert_eq!(
            loc(&p, false, Some("a.example:8080"), "/z", None),
            "https://a.example/z"
        );
        // Host and path replaced, the query kept; the scheme kept (TLS).
        let p = parts(None, Some("b.example"), None, Some("/new"));
        assert_eq!(
            loc(&p, true, Some("a.example"), "/old", Some("q=1")),
            "https://b.example/new?q=1"
        );
        // IPv6 literal hosts keep their brackets; no Host: the fallback.
        assert_eq!(
            loc(&https, false, Some("[::1]:80"), "/", None),
            "https://[::1]/"
        );
        assert_eq!(
            loc(&https, false, Some("[::1]"), "/", None),
            "https://[::1]/"
        );
        assert_eq!(
            loc(&https, false, None, "/", None),
            "https://192.0.2.1:8080/"
        );
        assert_eq!(
            loc(&https, false, Some("[2001:db8::1]:80"), "/", None),
            "https://[2001:db8::1]/"
        );
        // Plain to plain on another port.
        let p = parts(None, None, Some(8080), None);
        assert_eq!(
            loc(&p, false, Some("a.example"), "/", None),
            "http://a.example:8080/"
        );
    }

    #[test]
    fn renders_exact_bytes() {
        let a = Answer::direct(200, "text/plain", b"ok\n", &HeaderEdit::default());
        let mut out = Vec::new();
        a.render_into(
            &mut out,
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            ConnHeader::Close,
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nserver: ringway\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\
             date: Sun, 06 Nov 1994 08:49:37 GMT\r\nconnection: close\r\n\r\nok\n"
        );
    }

    #[test]
    fn head_answer_keeps_length_but_not_body() {
        let a = Answer::redirect(301, "https://x.example/", &HeaderEdit::default());
        let mut out = Vec::new();
        a.render_into(&mut out, b"D", ConnHeader::None, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 301 Moved Permanently\r\n"));
        assert!(text.contains("location: https://x.example/\r\n"));
        assert!(text.contains("content-length: 22\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn every_error_status_is_rendered() {
        let t = ErrorAnswers::new();
        for s in ERROR_STATUSES {
            assert_eq!(t.get(s).status(), s);
            assert_ne!(reason(s), "Status");
        }
    }
}
