//! Mirrored input: the online host's traffic mirrored VXLAN-encapsulated to a collector host (as
//! AWS VPC Traffic Mirroring sends it: here `tc ... action mirred` into a vxlan device), where
//! `tcpcopy --input vxlan` replicates it to the target in packet mode. Every request must reach
//! the target; a wrong `--mirror-id` replicates nothing. Needs root.

mod common;
use common::*;

use std::time::Duration;

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{Lab, LoadSpec};

const COLLECTOR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 50);

/// Mirrors every TCP packet in and out of the online host's interface to the collector, VXLAN
/// (VNI 42) on UDP 4789, by the kernel.
fn mirror_online_to_collector(sc: &Scenario) {
    lab::mirror::kernel_vxlan(&sc.lab, 42, COLLECTOR).expect("kernel VXLAN mirror");
}

fn run_collector(sc: &mut Scenario, ns: &str, extra: &[&str]) -> lab::Child {
    let port = Scenario::online_addr().port();
    let mut args: Vec<String> = [
        "--input",
        "vxlan",
        "-x",
        &format!("{port}-{}:{port}", Lab::TARGET_IP),
        "-s",
        &Lab::ASSISTANT_IP.to_string(),
        "-c",
        "198.19.0.0/24",
        "--stats-interval",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let n = std::fs::read_dir(sc.scratch.path()).unwrap().count();
    let log = sc.scratch.path().join(format!("collector-{n}.log"));
    sc.lab
        .spawn(ns, &bin_dir().join("tcpcopy"), &args, &log)
        .expect("tcpcopy on the collector")
}

fn load(prefix: &str) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 10,
        requests_per_connection: 100,
        short_connections: 1_000,
        short_concurrency: 8,
        rate_limit: Some(2_000),
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(60),
    }
}

#[test]
fn vxlan_mirrored_traffic_is_replicated_from_a_collector() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tcV", Mode::Assistant, Servers::Nginx, bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let collector = sc.lab.add_host("col", COLLECTOR).expect("collector host");
    mirror_online_to_collector(&sc);
    let sniffer = sniff_client(&sc);

    // A mirror session of another VNI: nothing replicated.
    let mut wrong = run_collector(&mut sc, &collector, &["--mirror-id", "7"]);
    std::thread::sleep(Duration::from_millis(1500));
    let l = LoadSpec {
        keepalive_connections: 2,
        short_connections: 50,
        ..load("w")
    };
    assert_eq!(sc.load(&l).unwrap().ok, 250);
    std::thread::sleep(Duration::from_secs(2));
    wrong.signal("INT").unwrap();
    wrong.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(sc.target_uris().unwrap().is_empty(), "VNI 42 is not 7");
    assert!(
        wrong.log_text().contains("other id"),
        "{}",
        wrong.log_text()
    );

    let mut tcpcopy = run_collector(&mut sc, &collector, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    let l = load("m");
    assert_eq!(sc.load(&l).unwrap().ok, 2_000);
    let got = sc.wait_target(2_000, Duration::from_secs(30)).unwrap();
    tcpcopy.signal("INT").unwrap();
    tcpcopy.wait_timeout(Duration::from_secs(10)).unwrap();
    let log = tcpcopy.log_text();
    eprintln!("{}", final_line(&log));
    let (keepalive, short) = lab::loadgen::expected_uris(&l);
    let mut want: Vec<String> = keepalive.into_iter().flatten().chain(short).collect();
    let mut got = got;
    want.sort();
    got.sort();
    assert!(
        got == want,
        "{} of 2000 requests at the target\n{}",
        got.len(),
        final_line(&log)
    );
    assert_client_isolated(sniffer);
}
