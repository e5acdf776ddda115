//! A SYN flood at the online port while real clients are served: 1,000,000 spoofed SYNs from
//! random sources (198.18.128.0/17, a benchmark range the lab does not use) with `tcpcopy -m 64`,
//! in queue mode, so the target sees client addresses and a flood SYN there would be known by
//! its source. tcpcopy holds a client's SYN until its handshake completes online: no flood SYN
//! reaches the target, the half-open sessions are shed within the budget, and every real request
//! is answered online and replicated. Needs root and nginx.

mod common;
use common::*;

use std::net::Ipv4Addr;
use std::time::Duration;

use lab::flood::{syn_flood, FloodSpec, SynCounter};
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, LoadSpec};

const FLOOD_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 0);
const FLOOD_PREFIX: u8 = 17;
const FLOOD_SYNS: u64 = 1_000_000;

/// A field of tcpcopy's /proc status in KiB (`VmHWM`: its peak resident size).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("tcpcopy's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// tcpcopy's resident memory by kind, for the log.
fn memory_line(pid: u32) -> String {
    ["VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"]
        .iter()
        .map(|f| format!("{f} {} MiB", status_kib(pid, f) / 1024))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn a_syn_flood_stays_within_the_memory_cap_and_never_reaches_the_target() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let mut spec = ScenarioSpec::new("tcF", Mode::Queue, Servers::Nginx, bin_dir());
    // The budget: 64 MiB for client bytes and sessions; the capture ring at its default 64 MiB.
    spec.extra_tcpcopy_args = vec!["-m".into(), "64".into()];
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let pid = sc.tcpcopy.as_ref().expect("tcpcopy runs").pid();
    let sniffer = sniff_client(&sc);
    eprintln!("tcpcopy at start: {}", memory_line(pid));
    let syns = SynCounter::start(sc.lab.ns_target(), 80, FLOOD_NET, FLOOD_PREFIX)
        .expect("SYN counter at the target");

    // Real clients across the flood: paced, so that they run for its whole length.
    let real = LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 10,
        requests_per_connection: 200,
        short_connections: 2_000,
        short_concurrency: 4,
        rate_limit: Some(250),
        uri_prefix: "real".into(),
        deadline: Duration::from_secs(120),
    };
    let flood = FloodSpec {
        target: Scenario::online_addr(),
        source_net: FLOOD_NET,
        source_prefix: FLOOD_PREFIX,
        count: FLOOD_SYNS,
        rate: 60_000,
        deadline: Duration::from_secs(60),
        seed: 19,
    };
    let (flooded, load) = std::thread::scope(|s| {
        let lab = &sc.lab;
        let flooder = s.spawn(|| lab.run_in(lab.ns_client(), || syn_flood(&flood)));
        std::thread::sleep(Duration::from_millis(500));
        let load = sc.load(&real).expect("load runs");
        (flooder.join().expect("flood thread"), load)
    });
    let flooded = flooded.expect("flood runs");
    eprintln!(
        "flood: {} SYNs sent ({} refused) in {:.1} s; real load: {} of {} in {:.1} s",
        flooded.sent,
        flooded.failed,
        flooded.elapsed.as_secs_f64(),
        load.ok,
        load.sent,
        load.elapsed.as_secs_f64()
    );
    assert!(
        flooded.sent >= FLOOD_SYNS * 99 / 100,
        "the flood went out: {flooded:?}"
    );
    let total = 4_000;
    assert_eq!(
        (load.ok, load.errors),
        (total, 0),
        "every real request answered online"
    );

    let target = sc
        .wait_target(total as usize, Duration::from_secs(60))
        .expect("target log");
    let peak = status_kib(pid, "VmHWM");
    eprintln!("tcpcopy after the flood: {}", memory_line(pid));
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    let stats = final_stats(&log);
    let (flood_at_target, syns_at_target) = syns.finish().expect("SYN counter");
    eprintln!(
        "tcpcopy peak RSS {} MiB; flood SYNs at the target {flood_at_target} (of {syns_at_target} \
         SYNs there)\n{}",
        peak / 1024,
        final_line(&log)
    );
    let missing = missing(&real, &target);
    assert!(
        missing.is_empty(),
        "{} real requests never reached the target (first {:?})\n{}",
        missing.len(),
        missing.first(),
        final_line(&log)
    );
    let real_at_target = target.iter().filter(|u| u.starts_with("/real/")).count();
    assert_eq!(real_at_target, total as usize, "each real request once");
    // Under `-m 64` plus the 64 MiB ring (which the flood touches in full).
    assert!(
        peak < (64 + 64) * 1024,
        "tcpcopy peaked at {} MiB",
        peak / 1024
    );
    assert_eq!(
        flood_at_target, 0,
        "a flood SYN never completes its handshake online, so none reaches the target"
    );
    assert!(
        stats.sessions_half_open_shed > FLOOD_SYNS / 2,
        "the half-open sessions were shed within the budget: {stats}"
    );
    assert_eq!(
        stats.sessions_overflowed, 0,
        "no real session dropped: {stats}"
    );
    sc.stop_intercept().expect("intercept stops");
    assert_client_isolated(sniffer);
}

/// The URIs of `spec` missing at the target.
fn missing(spec: &LoadSpec, target: &[String]) -> Vec<String> {
    let got: std::collections::HashSet<&String> = target.iter().collect();
    let (keepalive, short) = loadgen::expected_uris(spec);
    keepalive
        .into_iter()
        .flatten()
        .chain(short)
        .filter(|u| !got.contains(u))
        .collect()
}
