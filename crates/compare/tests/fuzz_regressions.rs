//! Inputs the `http` fuzz target (fuzz/fuzz_targets/http.rs) crashed on, handed to the parsers
//! again on stable, each with a test of the bug in plain terms beside it.

use compare::http::{parse_response, Response};

/// The target's input: `[length of a: u16 BE][a][b]`, two answers.
fn answers(input: &[u8]) -> [&[u8]; 2] {
    let (split, rest) = input.split_first_chunk::<2>().expect("a length");
    let (a, b) = rest.split_at(usize::from(u16::from_be_bytes(*split)).min(rest.len()));
    [a, b]
}

fn headers(bytes: &[u8]) -> Vec<(String, String)> {
    match parse_response(bytes) {
        Response::Complete(head) => head.headers,
        other => panic!("not a complete head: {other:?}"),
    }
}

/// A folded line of spaces only after an empty header value made the value `" "`: header values
/// are documented trimmed.
#[test]
fn folded_header_value_keeps_no_edge_spaces() {
    let input =
        include_bytes!("../../../fuzz/regressions/http/folded-header-value-keeps-no-edge-spaces");
    for answer in answers(input) {
        if let Response::Complete(head) = parse_response(answer) {
            for (name, value) in &head.headers {
                assert_eq!(value.trim(), value, "header {name:?}");
            }
        }
    }
}

#[test]
fn a_folded_header_value_joins_its_parts_with_one_space() {
    let got =
        headers(b"HTTP/1.1 200 OK\r\nX-A:\r\n  folded \r\nX-B: b\r\n \r\nX-C: c\r\n\td\r\n\r\n");
    let want = [("x-a", "folded"), ("x-b", "b"), ("x-c", "c d")];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
}
