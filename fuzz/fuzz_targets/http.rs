//! The response parsers added for comparison, on arbitrary bytes: `compare::http` (request
//! line, response head, the answer summary and the differences of two answers), the labels and
//! escaping of `compare::text`, `compare::Digest`'s composition, and where intercept cuts an
//! answer's head (`protocol::heads::http_cut`, `heads::head`).
//!
//! Input: `[split: u16 BE][a][b]`, two answers (or requests) `a` and `b`.
#![no_main]

use compare::http::{self, Answer, Response};
use compare::{text, Digest};
use libfuzzer_sys::fuzz_target;
use protocol::heads;

fuzz_target!(|data: &[u8]| {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_be_bytes(*split)).min(rest.len());
    let (a, b) = rest.split_at(split);
    for bytes in [a, b] {
        response_head(bytes);
        request(bytes);
        printable(bytes);
        cut(bytes);
    }
    digests(a, b);
    answers(a, b);
});

fn response_head(bytes: &[u8]) {
    match http::parse_response(bytes) {
        Response::NotHttp => {}
        Response::Partial { status } => {
            assert!(http::is_response(bytes));
            assert!(status.is_none_or(|s| s <= 999));
        }
        Response::Complete(h) => {
            assert!(http::is_response(bytes));
            assert!(h.status <= 999);
            assert!(h.body_start <= bytes.len(), "body starts past the bytes");
            for (name, value) in &h.headers {
                assert_eq!(name, &name.to_ascii_lowercase(), "header names are lower case");
                assert_eq!(name.trim(), name);
                assert_eq!(value.trim(), value);
            }
        }
    }
}

fn request(bytes: &[u8]) {
    if let Some(line) = http::request_line(bytes) {
        assert!(!line.method.is_empty() && line.method.len() <= 16);
        assert!(bytes.starts_with(line.method.as_bytes()));
        assert!(!line.path.contains(['?', '#']), "{:?}", line.path);
        assert_eq!(text::label(bytes), line.label());
    } else {
        let label = text::label(bytes);
        assert!(
            label.chars().count() <= 4 * 48 + 16,
            "label of {} chars",
            label.len()
        );
    }
}

fn printable(bytes: &[u8]) {
    for max in [0, 1, 7, 64] {
        let s = text::printable(bytes, max);
        let body = s.strip_suffix('…').unwrap_or(&s);
        assert!(body.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{s:?}");
        assert!(body.len() <= 4 * max);
        assert_eq!(s.ends_with('…'), bytes.len() > max);
    }
}

fn cut(bytes: &[u8]) {
    for limit in [0u16, 12, 1024, u16::MAX] {
        let cut = heads::http_cut(bytes, limit);
        if let Some(c) = cut {
            assert!(http::is_response(bytes));
            assert!(c >= heads::BODY_SAMPLE + 4);
            assert!(c <= u64::from(limit) + heads::BODY_SAMPLE);
        }
        for offset in [None, Some(0), Some(5), Some(u64::MAX)] {
            let head = heads::head(bytes, offset, limit, cut);
            assert!(bytes.starts_with(head));
            let room = match offset {
                Some(off) => u64::from(limit).saturating_sub(off),
                None => 0,
            };
            assert!(
                head.len() as u64 <= room,
                "{} bytes, room for {room}",
                head.len()
            );
        }
    }
}

/// The digest composes: of(a ++ b) = of(a).then(of(b)), and stripping `a` gives of(b).
fn digests(a: &[u8], b: &[u8]) {
    let whole: Vec<u8> = [a, b].concat();
    let d = Digest::of(&whole);
    assert_eq!(Digest::of(a).then(Digest::of(b)), d);
    assert_eq!(d.strip_prefix(a), Some(Digest::of(b)));
    assert_eq!(d.len, whole.len() as u64);
    if !b.is_empty() {
        assert_eq!(Digest::of(a).strip_prefix(&whole), None);
    }
}

/// Two answers whose heads are their first bytes: an answer equals itself, differences are
/// sorted field names, and the same bytes as heads of a longer answer never panic either.
fn answers(a: &[u8], b: &[u8]) {
    let ignore: Vec<String> = http::DEFAULT_IGNORED
        .iter()
        .map(|s| s.to_string())
        .collect();
    let x = Answer::new(Digest::of(a), a, &ignore);
    let y = Answer::new(Digest::of(b), b, &ignore);
    assert!(
        http::differences(&x, &x).is_empty(),
        "an answer differs from itself"
    );
    assert!(!x.is_http() || http::is_response(a));
    let fields = http::differences(&x, &y);
    if a == b {
        assert!(fields.is_empty());
    }
    for f in &fields {
        assert!(
            matches!(f.as_str(), "status" | "body" | "length") || f.starts_with("header:"),
            "field {f:?}"
        );
        let class = http::noise_class(f);
        assert!(class == f || class == "body");
    }
    // The same bytes as the first bytes of answers that go on.
    let whole: Vec<u8> = [a, b].concat();
    let longer = Answer::new(Digest::of(&whole), a, &ignore);
    let _ = http::differences(&longer, &y);
    let _ = http::differences(&y, &longer);
    let _ = (longer.status(), x.status(), y.status());
}
