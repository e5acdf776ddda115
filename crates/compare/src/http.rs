//! Just enough HTTP/1.x to compare answers: the request line, the status and headers of a
//! response, where its body starts; and the comparison of two answers, HTTP or not.
//!
//! Everything here reads bytes that came from the network: nothing panics on any input, and
//! anything unexpected makes an answer "not HTTP" (compared as bytes) or its head "partial"
//! (compared by whole digests).

use std::collections::BTreeMap;

use crate::Digest;

/// Headers left out of a comparison unless the user says otherwise: they differ between any two
/// servers or any two moments.
pub const DEFAULT_IGNORED: &[&str] = &[
    "date",
    "server",
    "age",
    "expires",
    "last-modified",
    "etag",
    "set-cookie",
    "x-request-id",
    "keep-alive",
    "connection",
];

/// Longest method token taken for a request line.
const MAX_METHOD: usize = 16;

/// The request line's method and path (without query string or fragment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

impl RequestLine<'_> {
    /// `METHOD /path`, the group name of a request.
    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The method and path of an HTTP/1.x request head, or `None` when `head` does not start like
/// one. A request line cut by the end of `head` (a very long URL) still gives its method and
/// the path as far as it goes.
pub fn request_line(head: &[u8]) -> Option<RequestLine<'_>> {
    let line_end = head.iter().position(|&b| b == b'\n');
    let line = trim_cr(&head[..line_end.unwrap_or(head.len())]);
    let sp = line.iter().position(|&b| b == b' ')?;
    let method = &line[..sp];
    if method.is_empty()
        || method.len() > MAX_METHOD
        || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-')
    {
        return None;
    }
    let rest = &line[sp + 1..];
    let (target, version) = match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    // A complete line must carry the version; a cut one may end before it or inside it.
    let cut = line_end.is_none();
    match version {
        Some(v) if v.starts_with(b"HTTP/1.") || (cut && b"HTTP/1.".starts_with(v)) => {}
        None if cut => {}
        _ => return None,
    }
    let target = std::str::from_utf8(target).ok()?;
    let path = origin_path(target)?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Some(RequestLine {
        method: std::str::from_utf8(method).ok()?,
        path,
    })
}

/// The path of a request target: origin form as is, absolute form without scheme and host.
fn origin_path(target: &str) -> Option<&str> {
    if target.starts_with('/') || target == "*" {
        return Some(target);
    }
    let after_scheme = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(after_scheme.find('/').map_or("/", |i| &after_scheme[i..]))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether an answer starts like an HTTP/1.x response.
pub fn is_response(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.")
}

/// A response head parsed in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Headers in order, names lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Offset of the body: the bytes after the empty line.
    pub body_start: usize,
}

/// What the first bytes of an answer say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Not an HTTP/1.x response.
    NotHttp,
    /// An HTTP/1.x response whose head does not end within the bytes given; its status when
    /// the status line did.
    Partial {
        status: Option<u16>,
    },
    Complete(ResponseHead),
}

/// Parses the head of a response from its first bytes.
pub fn parse_response(bytes: &[u8]) -> Response {
    if !is_response(bytes) {
        return Response::NotHttp;
    }
    let status = status_of(bytes);
    let Some(body_start) = head_end(bytes) else {
        return Response::Partial { status };
    };
    let Some(status) = status else {
        return Response::NotHttp;
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for raw in bytes[..body_start].split(|&b| b == b'\n').skip(1) {
        let line = trim_cr(raw);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Obsolete line folding: the value goes on (one space between the parts, none at
            // either end, as the values are trimmed).
            let more = String::from_utf8_lossy(line);
            let more = more.trim();
            if let Some((_, value)) = headers.last_mut().filter(|_| !more.is_empty()) {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        headers.push((name, value));
    }
    Response::Complete(ResponseHead {
        status,
        headers,
        body_start,
    })
}

/// The status code of a status line `HTTP/1.x SSS ...`, if the line goes that far.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let code = bytes.get(9..12)?;
    if bytes[8] != b' ' || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes
        .get(12)
        .is_some_and(|&b| b != b' ' && b != b'\r' && b != b'\n')
    {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Where the body starts: after the first empty line (CRLF CRLF, or bare LF LF).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let next = &bytes[nl + 1..];
        if next.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if next.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

/// One side's answer, summarised for comparison: parsed once, compared with several sides.
#[derive(Clone, Debug)]
pub struct Answer<'a> {
    /// Digest (and length) of the whole answer.
    pub digest: Digest,
    /// Its first bytes, contiguous.
    pub head: &'a [u8],
    pub response: Response,
    /// HTTP only: the compared headers (not ignored), values sorted per name.
    headers: BTreeMap<String, Vec<String>>,
    /// HTTP only, complete head: the body's digest.
    body: Option<Digest>,
}

impl<'a> Answer<'a> {
    /// `ignore`: header names, lower case, left out.
    pub fn new(digest: Digest, head: &'a [u8], ignore: &[String]) -> Answer<'a> {
        let response = parse_response(head);
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut body = None;
        if let Response::Complete(h) = &response {
            for (name, value) in &h.headers {
                if !ignore.iter().any(|i| i == name) {
                    headers.entry(name.clone()).or_default().push(value.clone());
                }
            }
            headers.values_mut().for_each(|v| v.sort_unstable());
            body = digest.strip_prefix(&head[..h.body_start]);
        }
        Answer {
            digest,
            head,
            response,
            headers,
            body,
        }
    }

    /// The HTTP status, when known.
    pub fn status(&self) -> Option<u16> {
        match &self.response {
            Response::NotHttp => None,
            Response::Partial { status } => *status,
            Response::Complete(h) => Some(h.status),
        }
    }

    pub fn is_http(&self) -> bool {
        !matches!(self.response, Response::NotHttp)
    }

    /// Whether its kept bytes end before they could show a status line (`HTTP/1.1 200`) that
    /// the rest of the answer may hold: only its digest can judge it.
    fn cut_before_status(&self) -> bool {
        const STATUS_LINE: &[u8] = b"HTTP/1.x 200";
        let kept = self.head.len();
        kept < STATUS_LINE.len()
            && (kept as u64) < self.digest.len
            && b"HTTP/1."[..kept.min(7)] == self.head[..kept.min(7)]
    }
}

/// The fields in which `other` differs from `online`, sorted: `status`, `header:<name>`,
/// `body`, `length`. Empty when they are equal.
///
/// An HTTP online answer is compared field by field when both heads are complete (`length` is
/// then the body's length); when either head is partial, by status and whole digests (`body`
/// then covers the whole answer). Any other answer is compared as bytes: `body` when the
/// digests differ, `length` when the lengths do too.
pub fn differences(online: &Answer<'_>, other: &Answer<'_>) -> Vec<String> {
    let mut fields = Vec::new();
    if !online.is_http() {
        if online.digest != other.digest {
            fields.push("body".to_string());
        }
        if online.digest.len != other.digest.len {
            fields.push("length".to_string());
        }
        return fields;
    }
    let unreadable = other.cut_before_status() || online.cut_before_status();
    if !unreadable && (online.status() != other.status() || !other.is_http()) {
        fields.push("status".to_string());
    }
    let bodies = if unreadable {
        (None, None)
    } else {
        (online.body, other.body)
    };
    let (Some(a), Some(b)) = bodies else {
        if online.digest != other.digest {
            fields.push("body".to_string());
        }
        if online.digest.len != other.digest.len {
            fields.push("length".to_string());
        }
        return fields;
    };
    let names: std::collections::BTreeSet<&String> =
        online.headers.keys().chain(other.headers.keys()).collect();
    for name in names {
        if online.headers.get(name) != other.headers.get(name) {
            fields.push(format!("header:{name}"));
        }
    }
    if a != b {
        fields.push("body".to_string());
    }
    if a.len != b.len {
        fields.push("length".to_string());
    }
    fields
}

/// The field a difference counts as when deciding whether a baseline showed it too: a body's
/// length and its framing headers go with the body (a random value of varying width changes
/// all three).
pub fn noise_class(field: &str) -> &str {
    match field {
        "length" | "header:content-length" | "header:transfer-encoding" => "body",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore() -> Vec<String> {
        DEFAULT_IGNORED.iter().map(|s| s.to_string()).collect()
    }

    fn diff(a: &[u8], b: &[u8]) -> Vec<String> {
        let ig = ignore();
        differences(
            &Answer::new(Digest::of(a), a, &ig),
            &Answer::new(Digest::of(b), b, &ig),
        )
    }

    #[test]
    fn a_head_cut_before_its_status_line_is_judged_by_digest() {
        let ig = ignore();
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
        let online = Answer::new(Digest::of(whole), whole, &ig);
        let cut = Answer::new(Digest::of(whole), &whole[..5], &ig);
        assert!(differences(&online, &cut).is_empty());
        let other = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny";
        let cut_other = Answer::new(Digest::of(other), &other[..5], &ig);
        assert_eq!(differences(&online, &cut_other), vec!["body"]);
        // A whole answer of a few bytes that is no HTTP is still another status.
        let short = Answer::new(Digest::of(b"HTTP"), b"HTTP", &ig);
        assert_eq!(
            differences(&online, &short),
            vec!["status", "body", "length"]
        );
    }

    #[test]
    fn request_lines_give_method_and_path_without_query() {
        type Case<'a> = (&'a [u8], Option<(&'a str, &'a str)>);
        let cases: &[Case<'_>] = &[
            (
                b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n",
                Some(("GET", "/a/b")),
            ),
            (b"POST /p#frag HTTP/1.0\n\n", Some(("POST", "/p"))),
            (
                b"GET http://h.example/x/y?q HTTP/1.1\r\n",
                Some(("GET", "/x/y")),
            ),
            (b"GET http://h.example HTTP/1.1\r\n", Some(("GET", "/"))),
            (b"OPTIONS * HTTP/1.1\r\n", Some(("OPTIONS", "*"))),
            (
                b"GET /very/long/url/cut/by/the/he",
                Some(("GET", "/very/long/url/cut/by/the/he")),
            ),
            (b"GET /x FTP/1.0\r\n", None),
            (b"GET /x?y HTTP/1", Some(("GET", "/x"))),
            (b"GET /x HTTP/2", None),
            (b"GET /x\r\n", None),
            (b"get /x HTTP/1.1\r\n", None),
            (b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", None),
            (b"", None),
            (b"\xff\xfe /x HTTP/1.1\r\n", None),
        ];
        for (head, want) in cases {
            let got = request_line(head).map(|r| (r.method, r.path));
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(
            request_line(b"GET /a?b HTTP/1.1\r\n").unwrap().label(),
            "GET /a"
        );
    }

    #[test]
    fn response_heads_parse_status_headers_and_body_start() {
        let r = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A:  v \r\n\r\nabc";
        let Response::Complete(h) = parse_response(r) else {
            panic!("not complete");
        };
        assert_eq!(h.status, 404);
        assert_eq!(
            h.headers,
            vec![
                ("content-length".to_string(), "3".to_string()),
                ("x-a".to_string(), "v".to_string())
            ]
        );
        assert_eq!(&r[h.body_start..], b"abc");
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Response::Partial { status: Some(200) }
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 2"),
            Response::Partial { status: None }
        );
        assert_eq!(parse_response(b"+OK\r\n"), Response::NotHttp);
        assert_eq!(
            parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Response::NotHttp
        );
        let Response::Complete(h) = parse_response(b"HTTP/1.0 200 OK\n\nbody") else {
            panic!("bare LF");
        };
        assert_eq!(h.body_start, 17);
    }

    #[test]
    fn ignored_headers_do_not_count_and_others_compare_as_multisets() {
        let a = b"HTTP/1.1 200 OK\r\nDate: Mon\r\nVary: a\r\nVary: b\r\n\r\nbody";
        let b = b"HTTP/1.1 200 OK\r\nVary: b\r\nDate: Tue\r\nVary: a\r\n\r\nbody";
        assert!(diff(a, b).is_empty());
        let c = b"HTTP/1.1 200 OK\r\nVary: b\r\n\r\nbody";
        assert_eq!(diff(a, c), vec!["header:vary"]);
    }

    #[test]
    fn status_body_and_length_differences_are_named() {
        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody";
        let b = b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(diff(a, b), vec!["status"]);
        let c = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nBODY";
        assert_eq!(diff(a, c), vec!["body"]);
        let d = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbody!";
        assert_eq!(diff(a, d), vec!["header:content-length", "body", "length"]);
        assert_eq!(diff(a, b"garbage"), vec!["status", "body", "length"]);
    }

    #[test]
    fn partial_heads_fall_back_to_whole_digests() {
        let ig = ignore();
        let a = b"HTTP/1.1 200 OK\r\nDate: Mon\r\n\r\nbody";
        let b = b"HTTP/1.1 200 OK\r\nDate: Tue\r\n\r\nbody";
        // Only the first 20 bytes kept: the heads are partial, the Date makes the digests differ.
        let fa = Answer::new(Digest::of(a), &a[..20], &ig);
        let fb = Answer::new(Digest::of(b), &b[..20], &ig);
        assert_eq!(differences(&fa, &fb), vec!["body"]);
        let fa2 = Answer::new(Digest::of(a), &a[..20], &ig);
        assert!(differences(&fa, &fa2).is_empty());
    }

    #[test]
    fn other_protocols_compare_by_digest_and_length() {
        assert!(diff(b"$3\r\nabc\r\n", b"$3\r\nabc\r\n").is_empty());
        assert_eq!(diff(b"$3\r\nabc\r\n", b"$3\r\nabd\r\n"), vec!["body"]);
        assert_eq!(diff(b"$3\r\nabc\r\n", b"$-1\r\n"), vec!["body", "length"]);
    }

    proptest::proptest! {
        /// Any bytes parse without panicking, and an answer equals itself however much of it is
        /// kept.
        #[test]
        fn any_answer_equals_itself(
            tail in proptest::collection::vec(
                proptest::sample::select(b"HTP/1. 20\r\n:aGx".to_vec()), 0..80),
            http: bool,
            cut in 0usize..100,
        ) {
            let mut v = if http { b"HTTP/1.1 200 ".to_vec() } else { Vec::new() };
            v.extend_from_slice(&tail);
            let _ = request_line(&v);
            let ig = ignore();
            let head = &v[..cut.min(v.len())];
            let a = Answer::new(Digest::of(&v), head, &ig);
            let b = Answer::new(Digest::of(&v), &v, &ig);
            proptest::prop_assert!(differences(&a, &a).is_empty());
            proptest::prop_assert!(differences(&b, &b).is_empty());
        }
    }
}
