//! The HTTP/1.1 heads of the opening handshake: our small `Request`/`Response` types, and a
//! bounded, incremental reader built on `httparse`.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::HandshakeError;

/// HTTP header fields in order, with case-insensitive lookup.
///
/// ```
/// use wsline::proto::Headers;
/// let mut headers = Headers::new();
/// headers.append("Connection", "keep-alive, Upgrade");
/// assert_eq!(headers.get("connection"), Some("keep-alive, Upgrade"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the first field named `name`, ignoring case.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The values of every field named `name`, ignoring case, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether a field named `name` is present.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Adds a field, keeping any others of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Sets a field, replacing every other of the same name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.remove(&name);
        self.0.push((name, value.into()));
    }

    /// Removes every field named `name`.
    pub fn remove(&mut self, name: &str) {
        self.0
            .retain(|(field, _)| !field.eq_ignore_ascii_case(name));
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no field.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn from_parsed(parsed: &[httparse::Header<'_>]) -> Self {
        Self(
            parsed
                .iter()
                .map(|header| {
                    let value = String::from_utf8_lossy(header.value).into_owned();
                    (header.name.to_owned(), value)
                })
                .collect(),
        )
    }

    fn write_to(&self, head: &mut String) {
        for (name, value) in &self.0 {
            let _ = write!(head, "{name}: {value}\r\n");
        }
    }
}

/// An HTTP/1.1 request: the opening handshake a client sends (RFC 6455 §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method; a WebSocket handshake uses `GET`.
    pub method: String,
    /// The request target: path and query, such as `/chat?room=1`.
    pub path: String,
    /// The `:protocol` pseudo-header of an HTTP/2 extended CONNECT (RFC 8441 §4), such as
    /// `websocket`; `None` for an HTTP/1.1 request.
    pub protocol: Option<String>,
    /// The header fields.
    pub headers: Headers,
}

impl Request {
    /// Serializes the request head.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        self.headers.write_to(&mut head);
        head.push_str("\r\n");
        Bytes::from(head)
    }
}

/// An HTTP/1.1 response: the server's answer to the opening handshake (RFC 6455 §4.2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code; 101 accepts the handshake.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header fields.
    pub headers: Headers,
    /// The body (empty for 101).
    pub body: Bytes,
}

impl Response {
    /// A response with this status, its standard reason phrase, and no header or body.
    #[must_use]
    pub fn new(status: u16) -> Self {
        Self {
            status,
            reason: reason_phrase(status).to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// An error response with a plain-text body that closes the connection, such as a
    /// handshake refused for lack of credentials.
    ///
    /// ```
    /// let response = wsline::proto::Response::text(403, "Forbidden origin");
    /// assert_eq!(response.headers.get("Content-Length"), Some("17"));
    /// ```
    #[must_use]
    pub fn text(status: u16, text: &str) -> Self {
        let mut response = Self::new(status);
        let body = format!("{text}\n");
        let headers = &mut response.headers;
        headers.append("Connection", "close");
        headers.append("Content-Type", "text/plain; charset=utf-8");
        headers.append("Content-Length", body.len().to_string());
        response.body = body.into();
        response
    }

    /// Serializes the response: head, then body.
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        self.headers.write_to(&mut head);
        head.push_str("\r\n");
        let mut out = BytesMut::with_capacity(head.len() + self.body.len());
        out.put_slice(head.as_bytes());
        out.put_slice(&self.body);
        out.freeze()
    }
}

/// The standard reason phrase of the statuses a handshake uses.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Size limits of an HTTP head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLimits {
    pub max_line_len: usize,
    pub max_headers: usize,
    pub max_head_size: usize,
}

/// Finds the end of an HTTP head in bytes that arrive in pieces, enforcing the line and size
/// limits as it scans so that nothing past them is ever buffered.
#[derive(Debug, Default)]
pub(crate) struct HeadScanner {
    /// Bytes already scanned.
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    /// Whether the current line is the first (request or status) line.
    past_first_line: bool,
}

impl HeadScanner {
    /// Scans the new bytes of `buf`; returns the length of the head once its empty line ends.
    pub fn scan(
        &mut self,
        buf: &[u8],
        limits: HeadLimits,
    ) -> Result<Option<usize>, HandshakeError> {
        if !self.past_first_line {
            // The first line holds no control characters but HTAB (a reason phrase may have
            // one) and the CR before its LF (RFC 9112 §3, §4): bytes that do are not HTTP
            // (a TLS ClientHello sent to a plain server), and fail at once rather than at
            // the open timeout.
            let new = &buf[self.scanned..];
            let line = new
                .iter()
                .position(|&b| b == b'\n')
                .map_or(new, |end| &new[..end]);
            let is_control = |&b: &u8| (b < 0x20 && b != b'\r' && b != b'\t') || b == 0x7f;
            if line.iter().any(is_control) {
                return Err(HandshakeError::InvalidHttp(
                    "control character in the first line: not HTTP".into(),
                ));
            }
        }
        while let Some(offset) = buf[self.scanned..].iter().position(|&b| b == b'\n') {
            let line_end = self.scanned + offset;
            self.check_line(line_end - self.line_start, limits)?;
            let line = &buf[self.line_start..line_end];
            self.scanned = line_end + 1;
            self.line_start = self.scanned;
            if self.past_first_line && (line.is_empty() || line == b"\r") {
                return Ok(Some(self.scanned));
            }
            self.past_first_line = true;
        }
        self.scanned = buf.len();
        self.check_line(buf.len() - self.line_start, limits)?;
        if buf.len() >= limits.max_head_size {
            return Err(HandshakeError::HeadTooLarge {
                limit: limits.max_head_size,
            });
        }
        Ok(None)
    }

    fn check_line(&self, len: usize, limits: HeadLimits) -> Result<(), HandshakeError> {
        // The CR that ends a line is not part of it.
        if len <= limits.max_line_len + 1 {
            return Ok(());
        }
        let limit = limits.max_line_len;
        Err(if self.past_first_line {
            HandshakeError::HeaderLineTooLong { limit }
        } else {
            HandshakeError::RequestLineTooLong { limit }
        })
    }
}

/// The handshake error for an `httparse` error on `head`: a version that is HTTP but not
/// 1.x is unsupported (505); anything else that is not a version is malformed (400).
fn parse_error(error: httparse::Error, head: &[u8], max_headers: usize) -> HandshakeError {
    match error {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders { limit: max_headers },
        httparse::Error::Version if names_an_http_version(head) => {
            HandshakeError::UnsupportedHttpVersion
        }
        other => HandshakeError::InvalidHttp(other.to_string()),
    }
}

/// Whether the first line of `head` has an `HTTP/` version (a request line ends with it, a
/// status line starts with it).
fn names_an_http_version(head: &[u8]) -> bool {
    let line = head.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let last = line.rsplit(|&byte| byte == b' ').next().unwrap_or_default();
    line.starts_with(b"HTTP/") || last.starts_with(b"HTTP/")
}

/// Parses a whole request head, as delimited by [`HeadScanner`].
pub(crate) fn parse_request(head: &[u8], max_headers: usize) -> Result<Request, HandshakeError> {
    let mut fields = vec![httparse::EMPTY_HEADER; max_headers];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HandshakeError::InvalidHttp("incomplete head".into()))
        }
        Err(error) => return Err(parse_error(error, head, max_headers)),
    }
    // RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP version MUST be at
    // least 1.1." httparse knows 1.0 and 1.1 only.
    if request.version != Some(1) {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    Ok(Request {
        method: request.method.unwrap_or_default().to_owned(),
        path: request.path.unwrap_or_default().to_owned(),
        protocol: None,
        headers: Headers::from_parsed(request.headers),
    })
}

/// Parses a whole response head, as delimited by [`HeadScanner`]; the body is left empty.
pub(crate) fn parse_response(head: &[u8], max_headers: usize) -> Result<Response, HandshakeError> {
    let mut fields = vec![httparse::EMPTY_HEADER; max_headers];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HandshakeError::InvalidHttp("incomplete head".into()))
        }
        Err(error) => return Err(parse_error(error, head, max_headers)),
    }
    if response.version != Some(1) {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    Ok(Response {
        status: response.code.unwrap_or_default(),
        reason: response.reason.unwrap_or_default().to_owned(),
        headers: Headers::from_parsed(response.headers),
        body: Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_the_first_line_fail_before_the_head_ends() {
        let limits = HeadLimits {
            max_line_len: 8192,
            max_headers: 128,
            max_head_size: 16384,
        };
        // The start of a TLS ClientHello.
        let error = HeadScanner::default()
            .scan(b"\x16\x03\x01\x02\x00\x01", limits)
            .unwrap_err();
        assert!(matches!(error, HandshakeError::InvalidHttp(_)), "{error:?}");
        // Split across reads.
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(b"GET /", limits).unwrap(), None);
        assert!(scanner.scan(b"GET /\x00", limits).is_err());
        // A tab in a reason phrase is fine; control characters after the first line are
        // left to the parser.
        let status = b"HTTP/1.1 503 Service\tUnavailable\r\n\r\n";
        assert_eq!(
            HeadScanner::default().scan(status, limits).unwrap(),
            Some(status.len())
        );
        let head = b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n";
        assert_eq!(
            HeadScanner::default().scan(head, limits).unwrap(),
            Some(head.len())
        );
    }

    const LIMITS: HeadLimits = HeadLimits {
        max_line_len: 64,
        max_headers: 4,
        max_head_size: 256,
    };

    fn scan_all(input: &[u8]) -> Result<Option<usize>, HandshakeError> {
        HeadScanner::default().scan(input, LIMITS)
    }

    #[test]
    fn finds_the_end_of_the_head_across_pieces() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nTRAILING";
        let mut scanner = HeadScanner::default();
        for end in 1..27 {
            assert_eq!(
                scanner.scan(&head[..end], LIMITS).unwrap(),
                None,
                "end {end}"
            );
        }
        assert_eq!(scanner.scan(&head[..], LIMITS).unwrap(), Some(27));
    }

    #[test]
    fn long_request_line_is_414_and_long_header_line_is_431() {
        let long_path = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            scan_all(long_path.as_bytes()),
            Err(HandshakeError::RequestLineTooLong { limit: 64 })
        );
        let long_header = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(100));
        assert_eq!(
            scan_all(long_header.as_bytes()),
            Err(HandshakeError::HeaderLineTooLong { limit: 64 })
        );
    }

    #[test]
    fn head_larger_than_the_limit_is_431() {
        let many = "GET / HTTP/1.1\r\n".to_owned() + &"X: y\r\n".repeat(60);
        assert_eq!(
            scan_all(many.as_bytes()),
            Err(HandshakeError::HeadTooLarge { limit: 256 })
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let head = "GET / HTTP/1.1\r\n".to_owned() + &"X: y\r\n".repeat(5) + "\r\n";
        assert_eq!(
            parse_request(head.as_bytes(), 4),
            Err(HandshakeError::TooManyHeaders { limit: 4 })
        );
    }

    #[test]
    fn http_1_0_is_505() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.0\r\n\r\n", 4),
            Err(HandshakeError::UnsupportedHttpVersion)
        );
    }

    #[test]
    fn a_version_that_is_not_http_is_400_not_505() {
        let error = parse_request(b"GET / FOO\r\n\r\n", 4).unwrap_err();
        assert_eq!(error.status(), Some(400));
        assert_eq!(
            parse_request(b"GET / HTTP/2.0\r\n\r\n", 4),
            Err(HandshakeError::UnsupportedHttpVersion)
        );
    }

    #[test]
    fn garbage_is_400() {
        let error = parse_request(b"\x00\x01garbage\r\n\r\n", 4).unwrap_err();
        assert_eq!(error.status(), Some(400));
    }

    #[test]
    fn response_serializes_with_its_body() {
        let mut response = Response::new(400);
        response.headers.append("Content-Length", "3");
        response.body = Bytes::from_static(b"bad");
        assert_eq!(
            &response.to_bytes()[..],
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"
        );
    }
}
