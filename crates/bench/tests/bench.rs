//! The load harness itself, end to end: `tcpcopy-bench` with wrk against nginx in the lab, and
//! `tcpcopy-bench --pps`. Short runs: these check that the harness measures, that replication
//! under wrk's load loses and duplicates nothing, and that no target packet reaches the client,
//! not how fast anything is. Needs root, nginx and wrk.
//!
//! The harness runs the `tcpcopy` and `intercept` binaries next to its own; the tests build them
//! first (they belong to another package, which `cargo test -p tcpcopy-bench` does not build).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lab::scenario::sequential;

/// `tcpcopy-bench`, with `tcpcopy` and `intercept` freshly built beside it (same profile and
/// target directory).
fn harness() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_tcpcopy-bench"));
        let profile_dir = exe.parent().expect("the harness's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tcpcopy/Cargo.toml");
        let mut build = Command::new(cargo);
        build
            .args(["build", "--bins", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for tcpcopy");
        assert!(status.success(), "building tcpcopy and intercept failed");
        for name in ["tcpcopy", "intercept"] {
            assert!(
                profile_dir.join(name).is_file(),
                "{name} built beside the harness"
            );
        }
        exe
    })
}

fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(harness())
        .args(args)
        .output()
        .expect("running tcpcopy-bench");
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

/// The numbers in the line that starts with `label`, in order.
fn numbers(text: &str, label: &str) -> Vec<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{text}"));
    line[label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The harness's client capture: (target packets that reached the client, online packets seen
/// there).
fn client_isolation(text: &str) -> (u64, u64) {
    let n = numbers(text, "client isolation:");
    (n[0], n.get(1).copied().unwrap_or(0))
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
    let (leaked, control) = client_isolation(&text);
    assert!(
        control > 6_000,
        "the client capture saw the online server: {text}"
    );
    assert_eq!(leaked, 0, "target packets reached the client:\n{text}");
}

/// The verdict comes from the target's side: the packets its link's queue took, as the kernel
/// counted them, against the packets the pipeline captured.
#[test]
fn pps_benchmark_carries_every_captured_packet_to_the_target_link() {
    let _guard = sequential();
    let (ok, text) = bench(&["--pps", "--seconds", "2"]);
    assert!(ok, "bench --pps failed:\n{text}");
    let core = text
        .lines()
        .find(|l| l.starts_with("core "))
        .unwrap_or_else(|| panic!("no core statistics in:\n{text}"));
    let stats: session::Stats = core.parse().expect("the core's statistics line");
    let captured = stats.captured_packets as f64;
    let at_target = numbers(&text, "at target")[1] as f64;
    assert!(captured > 10_000.0, "{text}");
    // Every captured segment reaches the target (plus a handshake ACK per session, and the odd
    // retransmission: the made-up target acknowledges once per round, against a 20 ms RTO).
    assert!(at_target >= captured * 0.99, "{text}");
    assert!(at_target <= captured * 1.03, "{text}");
    assert!(text.contains("send failures 0"), "{text}");
    assert_eq!(
        client_isolation(&text).0,
        0,
        "target packets reached the client:\n{text}"
    );
}
