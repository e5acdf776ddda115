//! The load harness itself, end to end (issue 6): `tcpcopy bench` with wrk against nginx in the
//! lab, and `tcpcopy bench --pps`. Short runs: these check that the harness measures and that
//! replication under wrk's load loses and duplicates nothing, not how fast anything is.
//! Needs root, nginx and wrk.

mod common;
use common::*;

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join("tcpcopy"))
        .arg("bench")
        .args(args)
        .output()
        .expect("running tcpcopy bench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The numbers of the row named `name`: online/s, online, target, lost, dups, ...
fn row(text: &str, name: &str) -> Vec<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{text}"));
    line[name.len()..]
        .split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|_| panic!("{w:?} in {line:?}")))
        .collect()
}

#[test]
fn wrk_rows_replicate_every_request_exactly_once() {
    let _guard = sequential();
    let (ok, text) = bench(&["--seconds", "3", "--rows", "1,3"]);
    assert!(ok, "bench failed:\n{text}");
    for name in ["keep-alive ~10k/s", "short ~9k/s"] {
        let r = row(&text, name);
        let (online, target, lost, dups) = (r[1], r[2], r[3], r[4]);
        assert!(online > 3_000.0, "{name}: too little load: {text}");
        assert_eq!((target, lost, dups), (online, 0.0, 0.0), "{name}:\n{text}");
        assert!(
            r[5] > 0.0 && r[8] > 0.0,
            "{name}: CPU of both programs read: {text}"
        );
    }
}

#[test]
fn pps_benchmark_carries_every_captured_packet_to_the_target_link() {
    let _guard = sequential();
    let (ok, text) = bench(&["--pps", "--seconds", "2"]);
    assert!(ok, "bench --pps failed:\n{text}");
    let number = |label: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(label)).unwrap();
        line[label.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (captured, sent) = (number("captured"), number("sent"));
    assert!(captured > 10_000.0, "{text}");
    // Every captured segment goes out (plus a handshake ACK per session, and the odd
    // retransmission: the made-up target acknowledges once per round, against a 20 ms RTO).
    assert!(sent >= captured * 0.99, "{text}");
    assert!(sent <= captured * 1.03, "{text}");
    assert!(text.contains("send failures 0"), "{text}");
}
