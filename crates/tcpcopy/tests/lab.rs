//! End-to-end replication in network namespaces with real nginx servers (needs root and nginx).
//! Each test builds and removes its own lab; a mutex keeps them sequential.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lab::loadgen;
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};

fn spec(tag: &str, mode: Mode) -> ScenarioSpec {
    ScenarioSpec::new(tag, mode, Servers::Nginx, bin_dir())
}

/// The done-when bar of live replication: 20,000 keep-alive requests over 50 connections and 5,000
/// short connections, every URI at the target, per-connection order kept, and no target packet
/// ever reaching the client namespace. With `loss_percent`, the target host drops that share of
/// the service's packets in both directions.
fn full_replication(mode: Mode, tag: &str, loss_percent: Option<f64>) {
    full_replication_with(spec(tag, mode), loss_percent);
}

fn full_replication_with(scenario: ScenarioSpec, loss_percent: Option<f64>) -> String {
    let _guard = common::sequential();
    let (mode, tag) = (scenario.mode, scenario.tag.clone());
    let link_layer = scenario
        .extra_tcpcopy_args
        .windows(2)
        .any(|w| w[0] == "--send-layer" && w[1] == "link");
    let tag = tag.as_str();
    let mut sc = Scenario::start(&scenario).expect("scenario starts");
    if let Some(p) = loss_percent {
        sc.inject_target_loss(p).expect("loss rules");
    }
    let sniffer = sc.sniff_client().expect("client capture");
    let spec = load(tag, 50, 400, 5_000);
    let report = sc.load(&spec).expect("load runs");
    assert_eq!(
        report.ok, 25_000,
        "the online server answered every request: {report:?}"
    );

    let target = sc
        .wait_target(25_000, Duration::from_secs(90))
        .expect("target log");
    if loss_percent.is_some() {
        let (input, output) = sc.injected_drops().expect("drop counters");
        assert!(
            input > 100 && output > 100,
            "the loss rules dropped packets both ways ({input} in, {output} out)"
        );
        eprintln!("injected loss: {input} packets dropped towards the target, {output} from it");
    }
    let log = sc.stop_tcpcopy().expect("tcpcopy stops cleanly");
    let final_line = final_line(&log);
    // At the link layer, a few packets are routed: while the kernel resolves the next hop, and
    // retransmissions the device refused. By default the kernel routes them all.
    let (link, routed) = send_paths(&log);
    if link_layer {
        assert!(
            link >= 25_000 && link > 50 * routed,
            "sent at the link layer {link}, routed {routed}"
        );
        eprintln!("to the target: {link} packets at the link layer, {routed} routed");
    } else {
        assert_eq!(
            (link, routed),
            (0, 0),
            "routed by the kernel: no link-layer counts"
        );
    }
    assert_every_request_once_in_order(
        &spec,
        &target,
        &format!("{final_line}\nintercept: {}", sc.intercept_log()),
    );

    let (from_target, from_online) = sniffer.finish().expect("sniffer");
    assert!(
        from_online > 25_000,
        "the client-side capture saw the online server's packets ({from_online})"
    );
    assert_eq!(
        from_target, 0,
        "packets from the target reached the client namespace"
    );
    sc.stop_intercept().expect("intercept stops cleanly");
    if mode == Mode::Queue {
        let rules = sc
            .lab
            .sh(sc.lab.ns_target(), &["iptables", "-S", "OUTPUT"])
            .unwrap();
        assert!(
            !rules.contains("NFQUEUE"),
            "intercept removed its rule on SIGTERM:\n{rules}"
        );
    }
    eprintln!("{final_line}");
    log
}

#[test]
fn assistant_mode_replicates_every_request_in_order() {
    full_replication(Mode::Assistant, "tcA", None);
}

/// With 2% of the service's packets dropped at random on the target host, both ways,
/// every request still arrives, exactly once and in order. tcpcopy sends at the link layer here.
#[test]
fn two_percent_loss_at_the_target_loses_no_request() {
    let mut s = spec("tcL", Mode::Assistant);
    s.extra_tcpcopy_args = vec!["--send-layer".into(), "link".into()];
    full_replication_with(s, Some(2.0));
}

/// Two capture threads in tcpcopy (PACKET_FANOUT, each with its own sessions, fake
/// addresses and intercept connections) and two in intercept replicate the same load exactly,
/// sending at the link layer.
#[test]
fn two_capture_threads_on_both_sides_replicate_every_request_in_order() {
    let mut s = spec("tcT", Mode::Assistant);
    s.extra_tcpcopy_args = ["--threads", "2", "--send-layer", "link"]
        .map(String::from)
        .to_vec();
    s.extra_intercept_args = vec!["--threads".into(), "2".into()];
    let log = full_replication_with(s, None);
    // Both threads had sessions of their own: the kernel spread the connections.
    for t in 0..2 {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("capture thread {t}:")))
            .unwrap_or_else(|| panic!("no summary of capture thread {t}:\n{log}"));
        let sessions: u64 = line
            .split("sessions ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            sessions > 100,
            "capture thread {t} replicated little: {line}"
        );
    }
}

#[test]
fn queue_mode_keeps_client_addresses_and_replicates_every_request() {
    full_replication(Mode::Queue, "tcQ", None);
}

/// tcpcopy started before intercept keeps retrying; killing intercept mid-run and starting it again
/// resumes replication without restarting tcpcopy.
#[test]
fn intercept_unreachable_then_restarted_mid_run() {
    let _guard = common::sequential();
    let mut s = spec("tcR", Mode::Assistant);
    s.start_intercept = false;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    sc.wait_tcpcopy_log("cannot reach intercept", 1, Duration::from_secs(10))
        .expect("tcpcopy reports the failure");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        sc.tcpcopy.as_mut().unwrap().is_running(),
        "tcpcopy keeps running without intercept"
    );

    sc.start_intercept().expect("intercept starts");
    sc.wait_connected(Duration::from_secs(10))
        .expect("tcpcopy connects once intercept is up");
    let first = load("r1", 5, 50, 50);
    assert_eq!(sc.load(&first).unwrap().ok, 300);
    let got = sc.wait_target(300, Duration::from_secs(30)).unwrap();
    assert_eq!(got.len(), 300, "first phase fully replicated");

    // Kill intercept hard (no goodbye), then bring it back.
    let mut old = sc.intercept.take().unwrap();
    old.signal("KILL").unwrap();
    old.wait_timeout(Duration::from_secs(5)).unwrap();
    sc.wait_tcpcopy_log("lost intercept", 1, Duration::from_secs(10))
        .expect("tcpcopy notices");
    // From the end of the stream, not from 5 s of silence. (A kill usually leaves a bare FIN;
    // the unit test a_close_that_came_with_the_last_bytes_is_read_at_once covers data and the
    // close arriving together.)
    let log = sc.tcpcopy_log();
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lost intercept"))
        .collect();
    assert!(
        lost.iter().all(|l| !l.contains("silent")),
        "the closed connection was noticed only by its silence: {lost:?}"
    );
    sc.start_intercept().expect("intercept restarts");
    sc.wait_tcpcopy_log("connected to intercept", 4, Duration::from_secs(15))
        .expect("tcpcopy reconnects");
    let second = load("r2", 5, 50, 50);
    assert_eq!(sc.load(&second).unwrap().ok, 300);
    let got = sc.wait_target(600, Duration::from_secs(30)).unwrap();
    let after: Vec<&String> = got.iter().filter(|u| u.starts_with("/r2/")).collect();
    assert_eq!(
        after.len(),
        300,
        "replication resumed after the intercept restart"
    );
    assert!(
        sc.tcpcopy.as_mut().unwrap().is_running(),
        "tcpcopy was never restarted"
    );
    sc.stop_tcpcopy().unwrap();
    assert_client_isolated(sniffer);
}

/// `-n 3` makes three complete sessions at the target of every online session.
#[test]
fn three_copies_of_every_session_reach_the_target() {
    let _guard = common::sequential();
    let mut s = spec("tcN", Mode::Assistant);
    s.extra_tcpcopy_args = vec!["-n".into(), "3".into()];
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let spec = load("n3", 20, 100, 1_000);
    assert_eq!(sc.load(&spec).unwrap().ok, 3_000);
    let target = sc.wait_target(9_000, Duration::from_secs(60)).unwrap();
    let log = sc.stop_tcpcopy().unwrap();
    let final_line = final_line(&log);
    let mut count: HashMap<&String, usize> = HashMap::new();
    for u in &target {
        *count.entry(u).or_default() += 1;
    }
    let (keepalive, short) = loadgen::expected_uris(&spec);
    let wrong: Vec<(&String, usize)> = keepalive
        .iter()
        .flatten()
        .chain(short.iter())
        .map(|u| (u, count.get(u).copied().unwrap_or(0)))
        .filter(|&(_, n)| n != 3)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} URIs not exactly 3 times at the target (first: {:?})\n{final_line}",
        wrong.len(),
        wrong.first()
    );
    assert_eq!(target.len(), 9_000, "nothing else arrived\n{final_line}");
    assert_client_isolated(sniffer);
}

/// `-r 30` replicates 30% ± 3% of the connections, each one complete.
#[test]
fn thirty_percent_of_sessions_arrive_each_complete() {
    let _guard = common::sequential();
    let mut s = spec("tcP", Mode::Assistant);
    s.extra_tcpcopy_args = vec!["-r".into(), "30".into()];
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let spec = load("r30", 100, 20, 5_000);
    assert_eq!(sc.load(&spec).unwrap().ok, 7_000);
    let target = settled_target(&sc, Duration::from_secs(60));
    let log = sc.stop_tcpcopy().unwrap();
    let final_line = final_line(&log);
    let got: HashSet<&String> = target.iter().collect();
    assert_eq!(got.len(), target.len(), "no request arrived twice");
    let (keepalive, short) = loadgen::expected_uris(&spec);
    // A keep-alive connection arrives whole or not at all.
    let mut sessions = 0;
    for (c, uris) in keepalive.iter().enumerate() {
        let present = uris.iter().filter(|u| got.contains(u)).count();
        assert!(
            present == 0 || present == uris.len(),
            "connection {c}: {present} of {} requests arrived\n{final_line}",
            uris.len()
        );
        sessions += usize::from(present > 0);
    }
    sessions += short.iter().filter(|u| got.contains(u)).count();
    let total = keepalive.len() + short.len();
    let share = sessions as f64 * 100.0 / total as f64;
    eprintln!("-r 30: {sessions} of {total} connections replicated ({share:.1}%)\n{final_line}");
    assert!(
        (27.0..=33.0).contains(&share),
        "{share:.1}% of connections arrived, 30 ± 3 expected\n{final_line}"
    );
    assert_client_isolated(sniffer);
}

/// Two online hosts, each with its own tcpcopy, into one target and one intercept; the
/// target sees the sum, none lost.
#[test]
fn two_online_hosts_feed_one_target_and_one_intercept() {
    let _guard = common::sequential();
    let mut sc = Scenario::start(&spec("tc2", Mode::Assistant)).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let second = sc
        .add_online_host(
            "onl2",
            std::net::Ipv4Addr::new(198, 18, 0, 21),
            "198.19.1.0/24",
        )
        .expect("second online host");
    let addr2 = sc.extra_online(second).addr;
    sc.wait_extra_connected(second, Duration::from_secs(10))
        .unwrap();
    let first = load("h1", 20, 100, 1_000);
    let mut other = load("h2", 20, 100, 1_000);
    other.target = addr2;
    // Both hosts loaded at the same time.
    let (a, b) = sc.lab.run_in(sc.lab.ns_client(), || {
        std::thread::scope(|s| {
            let a = s.spawn(|| loadgen::run(&first));
            let b = s.spawn(|| loadgen::run(&other));
            (a.join().unwrap(), b.join().unwrap())
        })
    });
    assert_eq!((a.unwrap().ok, b.unwrap().ok), (3_000, 3_000));
    let target = sc.wait_target(6_000, Duration::from_secs(60)).unwrap();
    let log1 = sc.stop_tcpcopy().unwrap();
    let log2 = sc.stop_extra_tcpcopy(second).unwrap();
    for spec in [&first, &other] {
        assert_eq!(
            missing_uris(spec, &target).len(),
            0,
            "{}: requests missing at the target\n{log1}\n{log2}",
            spec.uri_prefix
        );
    }
    assert_eq!(target.len(), 6_000, "the sum, each request once");
    assert_client_isolated(sniffer);
}

/// IPv6 end to end. Clients reach the online server at its IPv6 address, tcpcopy sends
/// to the target's IPv6 address (fake IPv6 clients in assistant mode, the real client's in queue
/// mode); every request arrives once, and no target packet reaches the client.
fn ipv6_replication(mode: Mode, tag: &str) {
    let _guard = common::sequential();
    let mut s = spec(tag, mode);
    s.ipv6 = true;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    assert!(sc.lab.has_ipv6(), "the lab has IPv6 addresses");
    let sniffer = sc.sniff_client().expect("client capture");
    let mut l = load(tag, 20, 100, 1_000);
    l.target = sc.online_service();
    assert!(l.target.is_ipv6());
    assert_eq!(sc.load(&l).unwrap().ok, 3_000);
    let target = sc.wait_target(3_000, Duration::from_secs(60)).unwrap();
    let log = sc.stop_tcpcopy().unwrap();
    let final_line = final_line(&log);
    assert_eq!(
        missing_uris(&l, &target).len(),
        0,
        "requests missing at the target\n{final_line}\n{log}"
    );
    assert_eq!(target.len(), 3_000, "each request once\n{final_line}");
    let (from_target, from_online) = sniffer.finish().unwrap();
    assert!(
        from_online > 3_000,
        "the client capture saw the online server: {from_online}"
    );
    assert_eq!(
        from_target, 0,
        "target packets reached the client namespace"
    );
    let intercept_log = sc.stop_intercept().unwrap();
    if mode == Mode::Queue {
        assert!(
            intercept_log.contains("installed: ip6tables"),
            "queue mode diverted IPv6 responses:\n{intercept_log}"
        );
        let rules = sc
            .lab
            .sh(sc.lab.ns_target(), &["ip6tables", "-S", "OUTPUT"])
            .unwrap();
        assert!(
            !rules.contains("NFQUEUE"),
            "ip6tables rule removed:\n{rules}"
        );
    }
}

#[test]
fn ipv6_assistant_mode_replicates_every_request() {
    ipv6_replication(Mode::Assistant, "tc6A");
}

#[test]
fn ipv6_queue_mode_replicates_every_request() {
    ipv6_replication(Mode::Queue, "tc6Q");
}

/// `tcpcopy demo --seconds 5`, the user's first command, builds its lab, replicates without loss
/// or leak, reports and removes the lab.
#[cfg(feature = "demo")]
#[test]
fn demo_replicates_cleanly_and_reports() {
    let _guard = common::sequential();
    let out = std::process::Command::new(bin_dir().join("tcpcopy"))
        .args(["demo", "--seconds", "5"])
        .output()
        .expect("tcpcopy demo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the demo failed:\n{text}");
    for line in [
        "== tcpcopy demo report ==",
        "(0 lost)",
        "client isolation    0 target packets reached the client",
        "lab removed.",
    ] {
        assert!(text.contains(line), "{line:?} in the report:\n{text}");
    }
}
