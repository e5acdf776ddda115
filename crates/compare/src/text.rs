//! Bytes shown to a person: printable escaping and request labels (the group names).

use crate::http;

/// Request bytes a non-HTTP label is made of, at most.
pub const LABEL_BYTES: usize = 48;

/// `bytes` (at most `max` of them) as printable ASCII: `\r`, `\n`, `\t`, `\\` and `\xNN` for the
/// rest; `…` appended when cut.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max) + 8);
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        out.push('…');
    }
    out
}

/// The group name of a request: `METHOD /path` for HTTP; the command and arguments of a RESP
/// (redis) array, space-separated (`GET key:17`); otherwise its first bytes, printable.
pub fn label(request: &[u8]) -> String {
    if let Some(line) = http::request_line(request) {
        return line.label();
    }
    if let Some(words) = resp_words(request) {
        return words;
    }
    printable(request, LABEL_BYTES)
}

/// `*N\r\n$len\r\narg\r\n...`: the arguments as far as the first [`LABEL_BYTES`] bytes go.
fn resp_words(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"*")?;
    let (count, mut rest) = number_line(rest)?;
    let mut out = String::new();
    for _ in 0..count.min(8) {
        let (len, after) = number_line(rest.strip_prefix(b"$")?)?;
        let arg = after.get(..len).unwrap_or(after);
        if !out.is_empty() {
            out.push(' ');
        }
        let room = LABEL_BYTES.saturating_sub(out.len());
        out.push_str(&printable(arg, room));
        if out.len() >= LABEL_BYTES || arg.len() < len {
            break;
        }
        rest = after.get(len..)?.strip_prefix(b"\r\n")?;
        if rest.is_empty() {
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A decimal number ending with CRLF, and what follows.
fn number_line(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\r')?;
    let digits = std::str::from_utf8(&bytes[..end]).ok()?;
    let n = digits.parse::<usize>().ok()?;
    Some((n, bytes[end..].strip_prefix(b"\r\n")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(
            printable(b"a\r\n\t\\\x00\xffz", 100),
            "a\\r\\n\\t\\\\\\x00\\xffz"
        );
        assert_eq!(printable(b"abcdef", 3), "abc…");
    }

    #[test]
    fn labels_name_http_redis_and_other_requests() {
        assert_eq!(label(b"GET /a/b?x HTTP/1.1\r\nHost: h\r\n\r\n"), "GET /a/b");
        assert_eq!(label(b"*2\r\n$3\r\nGET\r\n$6\r\nkey:17\r\n"), "GET key:17");
        assert_eq!(
            label(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n"),
            "SET k value"
        );
        assert_eq!(label(b"PING\r\n"), "PING\\r\\n");
        // A cut RESP request still names what it has.
        assert_eq!(label(b"*2\r\n$3\r\nGET\r\n$10\r\nkey"), "GET key");
        let long = vec![b'x'; 100];
        assert_eq!(label(&long), format!("{}…", "x".repeat(LABEL_BYTES)));
    }
}
