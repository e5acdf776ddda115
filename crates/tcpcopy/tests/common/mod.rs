//! Helpers the end-to-end test binaries share.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use lab::scenario::{Scenario, Sniffer};

pub mod fidelity;

pub use lab::scenario::sequential;

pub mod checks;
#[allow(unused_imports)] // each test binary uses its own subset
pub use checks::*;

/// Where cargo put the `tcpcopy` and `intercept` binaries.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tcpcopy"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// tcpcopy's final statistics line.
pub fn final_line(log: &str) -> &str {
    lab::scenario::final_line(log).unwrap_or("(no final line)")
}

/// Packets tcpcopy sent to the target at the link layer and routed, summed over its capture
/// threads (the lines it logs at exit).
pub fn send_paths(log: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for line in log.lines().filter(|l| l.contains("packets to the target")) {
        let (_, counts) = line.rsplit_once(": ").expect("counts after a colon");
        let mut words = counts.split_whitespace();
        let link: u64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .expect("link count");
        let routed: u64 = words
            .nth(4)
            .and_then(|w| w.parse().ok())
            .expect("routed count");
        sum.0 += link;
        sum.1 += routed;
    }
    sum
}

/// tcpcopy's final statistics, read back from its final line.
pub fn final_stats(log: &str) -> session::Stats {
    let line = final_line(log);
    line.parse()
        .unwrap_or_else(|e| panic!("unreadable final statistics ({e}): {line}"))
}

/// Starts the capture in the client namespace that every replicating test ends with
/// [`assert_client_isolated`].
pub fn sniff_client(sc: &Scenario) -> Sniffer {
    sc.sniff_client().expect("client capture")
}

/// What must never happen when tcpcopy replicates: a packet from the target reaching the client
/// namespace. The capture must have seen the online server's packets, or it proved nothing.
#[track_caller]
pub fn assert_client_isolated(sniffer: Sniffer) {
    let (from_target, from_online) = sniffer.finish().expect("sniffer");
    assert!(
        from_online > 0,
        "the client-side capture saw the online server's packets"
    );
    assert_eq!(
        from_target, 0,
        "packets from the target reached the client namespace"
    );
}
