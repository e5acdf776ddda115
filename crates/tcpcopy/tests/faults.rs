//! Faults around replication, each asserted on what the target and the clients received: the
//! target's server restarted mid-run, intercept SIGKILLed in queue mode, tcpcopy SIGKILLed.
//! Needs root and nginx; each test builds and removes its own lab.
//!
//! What the target's port does while intercept is dead in queue mode: intercept's NFQUEUE rule
//! (`OUTPUT -p tcp --sport 80 -j NFQUEUE`) stays in the target's OUTPUT chain, and without a
//! reader on the queue the kernel drops every packet it would queue: the target's SYN-ACKs and
//! answers to the replicated sessions never leave the host. Those sessions stall (tcpcopy's SYNs
//! are retransmitted, then given up), the target's server sees their handshakes half done, and
//! nothing reaches a real client. A restarted intercept replaces the stale rule and replication
//! resumes.

mod common;
use common::*;

use std::collections::HashSet;
use std::time::Duration;

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, LoadReport, LoadSpec};

fn load(prefix: &str, conns: usize, per_conn: usize, short: usize, rate: Option<u64>) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: conns,
        requests_per_connection: per_conn,
        short_connections: short,
        short_concurrency: 4,
        rate_limit: rate,
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(90),
    }
}

fn expected(spec: &LoadSpec) -> Vec<String> {
    let (keepalive, short) = loadgen::expected_uris(spec);
    keepalive.into_iter().flatten().chain(short).collect()
}

/// `spec`'s URIs that `got` holds.
fn received(spec: &LoadSpec, got: &[String]) -> usize {
    let got: HashSet<&String> = got.iter().collect();
    expected(spec).iter().filter(|u| got.contains(u)).count()
}

/// Runs `spec` in the client namespace on a thread of its own (the scenario stays free for the
/// fault).
fn load_in_background(
    sc: &Scenario,
    spec: &LoadSpec,
) -> std::thread::JoinHandle<anyhow::Result<LoadReport>> {
    let ns = sc.lab.ns_client().to_string();
    let spec = spec.clone();
    std::thread::spawn(move || lab::run_in_ns(&ns, || loadgen::run(&spec)))
}

fn skip_unless_root() -> bool {
    if lab::netlab::is_root() {
        return false;
    }
    eprintln!("skipped: needs root");
    true
}

#[test]
fn the_target_server_restarted_mid_run_resets_its_sessions_and_new_ones_replicate() {
    if skip_unless_root() {
        return;
    }
    let _guard = sequential();
    let spec = ScenarioSpec::new("fRs", Mode::Assistant, Servers::Nginx, bin_dir());
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);

    // Kept-alive clients across the restart: 10 connections, 100 requests each, over 5 s.
    let across = load("across", 10, 100, 0, Some(200));
    let running = load_in_background(&sc, &across);
    std::thread::sleep(Duration::from_secs(2));
    sc.restart_target_server()
        .expect("the target's nginx restarts");
    let report = running.join().expect("load thread").expect("load runs");
    assert_eq!(
        (report.ok, report.errors),
        (1_000, 0),
        "the clients never noticed the target's restart"
    );
    // Sessions started after the restart.
    let after = load("after", 5, 50, 200, None);
    assert_eq!(sc.load(&after).expect("load runs").ok, 450);
    let got = sc.wait_target(450, Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let got = sc.target_uris().unwrap_or(got);
    let log = sc.stop_tcpcopy().expect("tcpcopy stops cleanly");
    let stats = final_stats(&log);
    eprintln!(
        "across the restart: {} of 1000 at the target; after: {} of 450\n{}",
        received(&across, &got),
        received(&after, &got),
        final_line(&log)
    );
    assert_eq!(
        received(&after, &got),
        450,
        "every request after the restart reached the target"
    );
    assert!(
        received(&across, &got) > 0,
        "the requests before the restart reached the target"
    );
    assert!(
        stats.sessions_reset_by_target >= 1,
        "the sessions the restart closed ended as reset by the target: {stats}"
    );
    let lost = stats.requests_online - stats.requests_target;
    assert_eq!(
        lost,
        stats.lost.total(),
        "every request the target missed is accounted for by a cause: {stats}"
    );
    assert_client_isolated(sniffer);
}

/// The NFQUEUE rules in the target's OUTPUT chain.
fn queue_rules(sc: &Scenario) -> Vec<String> {
    let rules = sc
        .lab
        .sh(sc.lab.ns_target(), &["iptables", "-S", "OUTPUT"])
        .expect("iptables");
    rules
        .lines()
        .filter(|l| l.contains("NFQUEUE"))
        .map(str::to_string)
        .collect()
}

#[test]
fn intercept_killed_in_queue_mode_stalls_the_target_s_sessions_and_leaks_nothing() {
    if skip_unless_root() {
        return;
    }
    let _guard = sequential();
    let spec = ScenarioSpec::new("fKq", Mode::Queue, Servers::Nginx, bin_dir());
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let before = load("before", 5, 50, 50, None);
    assert_eq!(sc.load(&before).unwrap().ok, 300);
    let got = sc.wait_target(300, Duration::from_secs(30)).unwrap();
    assert_eq!(received(&before, &got), 300, "replicating before the kill");
    let rules = queue_rules(&sc);
    assert_eq!(rules.len(), 1, "intercept's rule: {rules:?}");

    let mut old = sc.intercept.take().expect("intercept runs");
    old.signal("KILL").unwrap();
    old.wait_timeout(Duration::from_secs(5)).unwrap();
    sc.wait_tcpcopy_log("lost intercept", 1, Duration::from_secs(10))
        .expect("tcpcopy notices");
    assert_eq!(
        queue_rules(&sc),
        rules,
        "the rule stays without its reader: the kernel drops what it queues"
    );
    // Clients keep being served while the target's answers go nowhere.
    let during = load("during", 5, 50, 50, None);
    assert_eq!(
        sc.load(&during).unwrap().ok,
        300,
        "the online service is untouched"
    );
    std::thread::sleep(Duration::from_secs(3));
    let got = sc.target_uris().unwrap();
    assert_eq!(
        received(&during, &got),
        0,
        "the replicated sessions stall: the target's SYN-ACKs are dropped in its queue"
    );

    sc.start_intercept().expect("intercept restarts");
    sc.wait_tcpcopy_log("connected to intercept", 2, Duration::from_secs(15))
        .expect("tcpcopy reconnects");
    assert_eq!(
        queue_rules(&sc).len(),
        1,
        "the restarted intercept replaced the stale rule"
    );
    let resumed = load("resumed", 5, 50, 50, None);
    assert_eq!(sc.load(&resumed).unwrap().ok, 300);
    sc.wait_target(600, Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let got = sc.target_uris().unwrap();
    eprintln!(
        "at the target: before {} during {} resumed {}",
        received(&before, &got),
        received(&during, &got),
        received(&resumed, &got)
    );
    assert_eq!(
        received(&resumed, &got),
        300,
        "replication resumed after the restart"
    );
    sc.stop_tcpcopy().expect("tcpcopy stops");
    sc.stop_intercept().expect("intercept stops");
    // Through the outage too: no target packet ever reached the client namespace.
    assert_client_isolated(sniffer);
}

#[test]
fn tcpcopy_killed_mid_run_goes_unnoticed_by_the_online_service_and_its_clients() {
    if skip_unless_root() {
        return;
    }
    let _guard = sequential();
    let spec = ScenarioSpec::new("fKt", Mode::Assistant, Servers::Nginx, bin_dir());
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let online_pid = sc.online_server_pid().expect("online nginx");

    // 2,000 requests over about 5 s (kept-alive and short connections); tcpcopy dies at 2 s.
    let across = load("kill", 10, 100, 1_000, Some(400));
    let running = load_in_background(&sc, &across);
    std::thread::sleep(Duration::from_secs(2));
    let mut tcpcopy = sc.tcpcopy.take().expect("tcpcopy runs");
    tcpcopy.signal("KILL").unwrap();
    let status = tcpcopy.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(status.is_some(), "tcpcopy is gone");
    let report = running.join().expect("load thread").expect("load runs");
    assert_eq!(
        (report.ok, report.errors),
        (2_000, 0),
        "every request answered, across the kill"
    );
    // The answers were the online server's: it logged every request.
    let online = sc.online_uris().unwrap();
    assert_eq!(
        received(&across, &online),
        2_000,
        "the online server served them all"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{online_pid}")).exists(),
        "the online server still runs"
    );
    let got = sc.target_uris().unwrap();
    let at_target = received(&across, &got);
    eprintln!("at the target before the kill: {at_target} of 2000");
    assert!(
        at_target > 0 && at_target < 2_000,
        "replication ran until the kill, and stopped with it ({at_target})"
    );
    assert_client_isolated(sniffer);
}
