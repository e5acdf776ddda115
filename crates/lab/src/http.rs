//! Sans-IO HTTP/1.x message heads, shared by the embedded server ([`crate::httpd`]) and the load
//! generator ([`crate::loadgen`]).
//!
//! Only what the lab needs: request and response heads, `Content-Length` bodies, `Connection`
//! semantics. No sockets and no clock here; malformed input is an error value, never a panic.
//! Chunked transfer coding is refused ([`ParseError::UnsupportedTransferEncoding`]).

use std::fmt;

/// Largest head (start line plus headers) accepted before [`ParseError::HeadTooLarge`].
pub const MAX_HEAD: usize = 64 * 1024;

/// Why a message head was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// No blank line within [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// The request or status line is not `METHOD TARGET HTTP/1.x` / `HTTP/1.x CODE [REASON]`.
    BadStartLine(String),
    /// A header line without a `name:` or with a folded continuation.
    BadHeader(String),
    /// `Content-Length` is not a number, or several disagree.
    BadContentLength(String),
    /// `Transfer-Encoding` other than `identity`.
    UnsupportedTransferEncoding(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::HeadTooLarge => write!(f, "message head exceeds {MAX_HEAD} bytes"),
            ParseError::BadStartLine(l) => write!(f, "malformed start line {l:?}"),
            ParseError::BadHeader(l) => write!(f, "malformed header line {l:?}"),
            ParseError::BadContentLength(v) => write!(f, "bad Content-Length {v:?}"),
            ParseError::UnsupportedTransferEncoding(v) => {
                write!(f, "unsupported Transfer-Encoding {v:?}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed message head: the start line split in three, and the header fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Values of every header named `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header such as `Connection` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The body length declared by `Content-Length`, refusing transfer codings we cannot frame.
    pub fn content_length(&self) -> Result<Option<u64>, ParseError> {
        if let Some(te) = self
            .values("transfer-encoding")
            .find(|v| !v.trim().eq_ignore_ascii_case("identity"))
        {
            return Err(ParseError::UnsupportedTransferEncoding(te.to_string()));
        }
        let mut length = None;
        for v in self.values("content-length") {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| ParseError::BadContentLength(v.to_string()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::BadContentLength(v.to_string()));
            }
            length = Some(n);
        }
        Ok(length)
    }
}

/// Parses one head from the start of `buf`. `Ok(None)` means "need more bytes"; on success returns the
/// head and how many bytes it used. Empty lines before the start line are skipped (RFC 9112 §2.2),
/// and bare `\n` line ends are accepted.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ParseError> {
    let mut pos = 0;
    let mut lines: Vec<String> = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_HEAD {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(None)
            };
        };
        let raw = &buf[pos..pos + nl];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += nl + 1;
        if pos > MAX_HEAD {
            return Err(ParseError::HeadTooLarge);
        }
        if raw.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(String::from_utf8_lossy(raw).into_owned());
    }
    let mut lines = lines.into_iter();
    // The loop above only breaks after pushing at least one line.
    let start_line = lines.next().unwrap_or_default();
    let mut parts = start_line.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    ];
    if start[0].is_empty() || start[1].is_empty() {
        return Err(ParseError::BadStartLine(start_line));
    }
    let mut headers = Vec::new();
    for line in lines {
        let bad = || ParseError::BadHeader(line.clone());
        if line.starts_with([' ', '\t']) {
            return Err(bad()); // obsolete line folding
        }
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(bad());
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some((Head { start, headers }, pos)))
}

fn minor_version(v: &str) -> Option<u8> {
    match v {
        "HTTP/1.1" => Some(1),
        "HTTP/1.0" => Some(0),
        _ => None,
    }
}

/// Whether the connection stays open after this message, per HTTP/1.0 and 1.1 defaults.
fn keep_alive(head: &Head, minor: u8) -> bool {
    if head.has_token("connection", "close") {
        false
    } else {
        minor >= 1 || head.has_token("connection", "keep-alive")
    }
}

/// A request head as the server needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub keep_alive: bool,
    pub body_len: u64,
}

impl Request {
    pub fn from_head(head: &Head) -> Result<Request, ParseError> {
        let [method, uri, version] = &head.start;
        let minor =
            minor_version(version).ok_or_else(|| ParseError::BadStartLine(head.start.join(" ")))?;
        Ok(Request {
            method: method.clone(),
            uri: uri.clone(),
            keep_alive: keep_alive(head, minor),
            body_len: head.content_length()?.unwrap_or(0),
        })
    }
}

/// A response head as the load generator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub keep_alive: bool,
    /// `None`: the body runs until the server closes.
    pub content_length: Option<u64>,
}

impl Response {
    pub fn from_head(head: &Head) -> Result<Response, ParseError> {
        let bad = || ParseError::BadStartLine(head.start.join(" "));
        let minor = minor_version(&head.start[0]).ok_or_else(bad)?;
        let status: u16 = head.start[1].parse().map_err(|_| bad())?;
        // 1xx, 204 and 304 never carry a body.
        let bodiless = status < 200 || status == 204 || status == 304;
        Ok(Response {
            status,
            keep_alive: keep_alive(head, minor),
            content_length: if bodiless {
                Some(0)
            } else {
                head.content_length()?
            },
        })
    }
}

/// Incremental request parser for one connection: feed bytes as they arrive, then take every complete
/// request. Request bodies are skipped, also when they span many reads. Pipelining-safe: bytes after
/// one request stay buffered for the next.
#[derive(Debug, Default)]
pub struct RequestParser {
    buf: Vec<u8>,
    /// Body bytes of the last request not yet received.
    skip: u64,
}

impl RequestParser {
    pub fn feed(&mut self, data: &[u8]) {
        // Drop body bytes before buffering, so a large upload never accumulates.
        let n = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
        self.skip -= n as u64;
        self.buf.extend_from_slice(&data[n..]);
    }

    /// The next complete request, `Ok(None)` if more bytes are needed. After an error the connection
    /// must be closed: the stream position is lost.
    pub fn next_request(&mut self) -> Result<Option<Request>, ParseError> {
        if self.skip > 0 {
            return Ok(None);
        }
        let Some((head, used)) = parse_head(&self.buf)? else {
            return Ok(None);
        };
        let request = Request::from_head(&head)?;
        let body_here = usize::try_from(request.body_len)
            .map_or(self.buf.len() - used, |b| b.min(self.buf.len() - used));
        self.buf.drain(..used + body_here);
        self.skip = request.body_len - body_here as u64;
        Ok(Some(request))
    }

    /// Bytes buffered but not yet part of a returned request.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(p: &mut RequestParser) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(r) = p.next_request().expect("valid input") {
            out.push(r);
        }
        out
    }

    fn uris(rs: &[Request]) -> Vec<&str> {
        rs.iter().map(|r| r.uri.as_str()).collect()
    }

    const PIPELINED: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET /nope\r\n\
        GET /c HTTP/1.1\r\nConnection: close\r\n\r\n";

    #[test]
    fn pipelined_requests_in_one_read() {
        let mut p = RequestParser::default();
        p.feed(PIPELINED);
        let rs = drain(&mut p);
        assert_eq!(uris(&rs), ["/a", "/b", "/c"]);
        assert_eq!(rs[1].body_len, 11);
        assert!(rs[0].keep_alive && rs[1].keep_alive && !rs[2].keep_alive);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn requests_split_at_every_byte() {
        let mut p = RequestParser::default();
        let mut rs = Vec::new();
        for b in PIPELINED {
            p.feed(std::slice::from_ref(b));
            rs.extend(drain(&mut p));
        }
        assert_eq!(uris(&rs), ["/a", "/b", "/c"]);
    }

    #[test]
    fn content_length_body_spanning_reads_is_skipped() {
        // The 10-byte body looks like a request; it must be skipped, not parsed.
        let mut p = RequestParser::default();
        p.feed(b"PUT /up HTTP/1.1\r\nContent-Length: 10\r\n\r\nGET /");
        assert_eq!(uris(&drain(&mut p)), ["/up"]);
        p.feed(b"x H");
        assert!(drain(&mut p).is_empty());
        p.feed(b"\r\nGET /after HTTP/1.1\r\n\r\n");
        assert_eq!(uris(&drain(&mut p)), ["/after"]);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn content_length_body_then_next_request() {
        let mut p = RequestParser::default();
        p.feed(b"POST /p HTTP/1.1\r\nContent-Length: 6\r\n\r\nab");
        assert_eq!(uris(&drain(&mut p)), ["/p"]);
        p.feed(b"cd");
        p.feed(b"efGET /q HTTP/1.1\r\n\r\n");
        assert_eq!(uris(&drain(&mut p)), ["/q"]);
    }

    #[test]
    fn http10_defaults_to_close() {
        let mut p = RequestParser::default();
        p.feed(b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        let rs = drain(&mut p);
        assert!(!rs[0].keep_alive && rs[1].keep_alive);
    }

    #[test]
    fn leading_blank_lines_and_bare_lf() {
        let mut p = RequestParser::default();
        p.feed(b"\r\n\nGET /lf HTTP/1.1\nHost: y\n\n");
        assert_eq!(uris(&drain(&mut p)), ["/lf"]);
    }

    #[test]
    fn malformed_heads_are_errors() {
        use ParseError::*;
        let cases: &[(&[u8], ParseError)] = &[
            (b"GET\r\n\r\n", BadStartLine("GET".into())),
            (b"GET / HTTP/2\r\n\r\n", BadStartLine("GET / HTTP/2".into())),
            (
                b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
                BadHeader("nocolon".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                BadHeader(" c".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                BadContentLength("x".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                BadContentLength("2".into()),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                UnsupportedTransferEncoding("chunked".into()),
            ),
        ];
        for (input, want) in cases {
            let mut p = RequestParser::default();
            p.feed(input);
            assert_eq!(
                p.next_request().as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut p = RequestParser::default();
        p.feed(b"GET / HTTP/1.1\r\n");
        p.feed(&vec![b'a'; MAX_HEAD]);
        assert_eq!(p.next_request(), Err(ParseError::HeadTooLarge));
    }

    #[test]
    fn response_heads() {
        let (h, used) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(used, 38);
        let r = Response::from_head(&h).expect("valid");
        assert_eq!(
            (r.status, r.keep_alive, r.content_length),
            (200, true, Some(3))
        );
        let (h, _) = parse_head(b"HTTP/1.0 204 No Content\r\n\r\n")
            .expect("valid")
            .expect("complete");
        let r = Response::from_head(&h).expect("valid");
        assert_eq!(
            (r.status, r.keep_alive, r.content_length),
            (204, false, Some(0))
        );
        let (h, _) = parse_head(b"HTTP/1.1 500\r\nConnection: close\r\n\r\n")
            .expect("valid")
            .expect("complete");
        let r = Response::from_head(&h).expect("valid");
        assert_eq!(
            (r.status, r.keep_alive, r.content_length),
            (500, false, None)
        );
    }
}
