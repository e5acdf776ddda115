//! Mirrored cloud traffic end to end: the client's traffic to the online host is mirrored to a
//! collector host, VXLAN-encapsulated by the kernel (`tc ... action mirred` into a vxlan device,
//! as AWS VPC Traffic Mirroring sends it), Geneve or ERSPAN by a user-space mirror
//! ([`lab::mirror`]: the kernel here has no such devices), and tcpcopy there (`--input ...`)
//! replicates the 25,000-request load of the lab tests.
//!
//! In stream mode the collector sits behind a NAT that drops forged sources, as in a cloud VPC
//! ([`lab::nat`]): only stream mode gets through. In packet mode the collector is on the lab's
//! network with an intercept (as `tests/mirror.rs`). A mirror that loses 2% of the packets
//! hurts some sessions (the client never resends what the online server received): they are
//! counted, and every other one arrives complete. Needs root.

mod common;
use common::*;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::mirror::{Encap, MirrorReport, MirrorSpec, UserMirror};
use lab::nat::NatCollector;
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, Lab, LoadSpec};

/// The mirror sessions' VNI (and ERSPAN session ID).
const VNI: u32 = 42;
/// The collector on the lab's network (packet mode).
const COLLECTOR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);

/// How the online host's traffic reaches the collector.
#[derive(Clone, Copy, Debug)]
enum Mirroring {
    /// The kernel: tc mirred into a vxlan device.
    KernelVxlan,
    /// The user-space mirror, losing `drop` of the packets.
    User(Encap, f64),
}

impl Mirroring {
    /// tcpcopy's `--input` for it.
    fn input(self) -> &'static str {
        match self {
            Mirroring::KernelVxlan | Mirroring::User(Encap::Vxlan(_), _) => "vxlan",
            Mirroring::User(Encap::Geneve(_), _) => "geneve",
            Mirroring::User(Encap::ErspanII(_) | Encap::ErspanIII(_), _) => "erspan",
        }
    }

    fn udp_port(self) -> u16 {
        match self {
            Mirroring::User(Encap::Geneve(_), _) => wire::tunnel::GENEVE_PORT,
            _ => wire::tunnel::VXLAN_PORT,
        }
    }
}

/// A lab with a collector host and the mirroring on.
struct Cloud {
    sc: Scenario,
    collector_ns: String,
    nat: Option<NatCollector>,
    mirror: Option<UserMirror>,
}

impl Cloud {
    /// Packet mode: the collector on the lab's network, an intercept on the assistant.
    fn packet(tag: &str, mirroring: Mirroring) -> Cloud {
        let spec = ScenarioSpec {
            start_tcpcopy: false,
            ..ScenarioSpec::new(tag, Mode::Assistant, Servers::Nginx, bin_dir())
        };
        let mut sc = Scenario::start(&spec).expect("scenario starts");
        let collector_ns = sc.lab.add_host("col", COLLECTOR).expect("collector host");
        let mirror = mirror(&sc, mirroring, COLLECTOR);
        Cloud {
            sc,
            collector_ns,
            nat: None,
            mirror,
        }
    }

    /// The collector behind a NAT that drops forged sources: in stream mode, no intercept.
    fn behind_nat(tag: &str, mirroring: Mirroring, mode: Mode) -> Cloud {
        let spec = ScenarioSpec {
            start_tcpcopy: false,
            start_intercept: mode != Mode::Stream,
            ..ScenarioSpec::new(tag, mode, Servers::Nginx, bin_dir())
        };
        let mut sc = Scenario::start(&spec).expect("scenario starts");
        let nat = NatCollector::create(&mut sc.lab).expect("collector behind a NAT");
        let mirror = mirror(&sc, mirroring, lab::nat::COLLECTOR_IP);
        Cloud {
            sc,
            collector_ns: nat.collector_ns.clone(),
            nat: Some(nat),
            mirror,
        }
    }

    /// Starts tcpcopy on the collector with `--input`, the rule to the target, a JSON report
    /// and `extra`.
    fn start_tcpcopy(&mut self, mirroring: Mirroring, extra: &[&str]) -> lab::Child {
        let port = Scenario::online_addr().port();
        lab::unprivileged::share_dir(self.sc.scratch.path()).expect("scratch shared");
        let report = self.sc.scratch.path().join("cloud.json");
        let input = match mirroring.input() {
            "erspan" => "erspan".to_string(),
            other => format!("{other}:{}", mirroring.udp_port()),
        };
        let mut args: Vec<String> = vec![
            "--input".into(),
            input,
            "--mirror-id".into(),
            VNI.to_string(),
            "-x".into(),
            format!("{port}-{}:{port}", Lab::TARGET_IP),
            "--stats-interval".into(),
            "2".into(),
            "--report".into(),
            report.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.sc.scratch.path().join("collector.log");
        let child = self
            .sc
            .lab
            .spawn(&self.collector_ns, &bin_dir().join("tcpcopy"), &args, &log)
            .expect("tcpcopy on the collector");
        // Its socket open before the first mirrored packet.
        std::thread::sleep(Duration::from_millis(1500));
        child
    }
}

/// Starts the mirroring from the online host to `collector`.
fn mirror(sc: &Scenario, mirroring: Mirroring, collector: Ipv4Addr) -> Option<UserMirror> {
    match mirroring {
        Mirroring::KernelVxlan => {
            lab::mirror::kernel_vxlan(&sc.lab, VNI, collector).expect("kernel VXLAN mirror");
            None
        }
        Mirroring::User(encap, drop) => {
            let spec = MirrorSpec {
                encap,
                interface: Lab::IFACE.into(),
                collector,
                port: mirroring.udp_port(),
                drop,
                seed: 18,
            };
            let port = Scenario::online_addr().port();
            Some(UserMirror::start(sc.lab.ns_online(), &spec, port).expect("user-space mirror"))
        }
    }
}

/// CPU seconds process `pid` used so far (user and system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime and stime 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.iter().sum::<u64>() as f64 / 100.0
}

/// Datagrams the collector's kernel dropped for a full receive buffer (`Udp: RcvbufErrors`).
fn udp_receive_drops(sc: &Scenario, ns: &str) -> u64 {
    let snmp = sc
        .lab
        .sh(ns, &["cat", "/proc/net/snmp"])
        .unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// What one run of the load through a mirror gave.
struct Run {
    spec: LoadSpec,
    target: Vec<String>,
    log: String,
    mirror: Option<MirrorReport>,
    report: compare::Report,
}

/// Runs the 25,000-request load, waits for the target (all of it, or until it settles when the
/// mirror loses packets), stops tcpcopy and the mirror; prints the measurements.
fn run_load(cloud: &mut Cloud, mut tcpcopy: lab::Child, tag: &str, lossy: bool) -> Run {
    let spec = load(tag, 50, 400, 5_000);
    let (cpu_before, started) = (cpu_seconds(tcpcopy.pid()), Instant::now());
    let report = cloud.sc.load(&spec).expect("load runs");
    assert_eq!(
        report.ok, 25_000,
        "the online server answered every request"
    );
    let target = if lossy {
        settled_target(&cloud.sc, Duration::from_secs(120))
    } else {
        cloud
            .sc
            .wait_target(25_000, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", final_line(&tcpcopy.log_text())))
    };
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(tcpcopy.pid()) - cpu_before;
    tcpcopy.signal("INT").unwrap();
    // Its report is written on the way out (the comparison settles first).
    tcpcopy
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "tcpcopy did not exit within 30 s of SIGINT\n{}",
                final_line(&tcpcopy.log_text())
            )
        });
    let log = tcpcopy.log_text();
    let mirror = cloud
        .mirror
        .take()
        .map(|m| m.finish().expect("mirror report"));
    if let Some(m) = &mirror {
        eprintln!(
            "{tag}: user-space mirror sent {} packets ({:.0}/s over the run), dropped {}, oversize {}, send failed {}, capture lost {}",
            m.sent,
            m.pps(),
            m.dropped,
            m.oversize,
            m.send_failed,
            m.capture_drops
        );
    }
    eprintln!(
        "{tag}: 25,000 requests through the mirror in {:.1} s; tcpcopy on the collector used {cpu:.2} s of CPU; UDP receive drops {}\n{}",
        elapsed.as_secs_f64(),
        udp_receive_drops(&cloud.sc, &cloud.collector_ns),
        final_line(&log)
    );
    let report = cloud
        .sc
        .read_report("cloud.json")
        .expect("tcpcopy's report");
    Run {
        spec,
        target,
        log,
        mirror,
        report,
    }
}

/// 25,000 requests, every one at the target once, in order.
fn lossless(cloud: &mut Cloud, tcpcopy: lab::Child, tag: &str) {
    let sniffer = sniff_client(&cloud.sc);
    let run = run_load(cloud, tcpcopy, tag, false);
    assert_every_request_once_in_order(&run.spec, &run.target, final_line(&run.log));
    let stats = final_stats(&run.log);
    assert_eq!(stats.sessions_hurt, 0, "{}", final_line(&run.log));
    assert_client_isolated(sniffer);
}

/// A mirror losing 2% of the packets: the sessions hurt are counted (in the final line and the
/// report), every connection the mirror did not hurt arrives complete, nothing twice, each
/// connection's requests in order.
fn lossy(cloud: &mut Cloud, tcpcopy: lab::Child, tag: &str) {
    let run = run_load(cloud, tcpcopy, tag, true);
    let m = run.mirror.expect("a user-space mirror");
    let stats = final_stats(&run.log);
    let line = final_line(&run.log);
    assert!(m.dropped > 500, "the mirror dropped {} packets", m.dropped);
    let hurt = m.hurt();
    eprintln!(
        "{tag}: the mirror hurt {hurt} of {} connections; tcpcopy counted {} sessions hurt, {} holes skipped",
        m.connections.len(),
        stats.sessions_hurt,
        stats.holes_skipped
    );
    assert!(
        stats.sessions_hurt > 0 && stats.sessions_hurt as usize <= hurt,
        "sessions hurt: {} counted, {hurt} hurt by the mirror\n{line}",
        stats.sessions_hurt
    );
    assert_eq!(run.report.sessions.hurt, stats.sessions_hurt, "the report");
    let got: HashSet<&String> = run.target.iter().collect();
    assert_eq!(
        got.len(),
        run.target.len(),
        "no request arrived twice\n{line}"
    );
    let incomplete: Vec<_> = m
        .connections
        .iter()
        .filter(|c| !c.hurt && c.uris.iter().any(|u| !got.contains(u)))
        .collect();
    assert!(
        incomplete.is_empty(),
        "{} connections the mirror did not hurt arrived incomplete (first: {:?})\n{line}",
        incomplete.len(),
        incomplete.first()
    );
    assert_eq!(
        m.connections.len(),
        5_050,
        "the mirror saw every connection (its capture lost {} packets)",
        m.capture_drops
    );
    let whole = m.connections.len() - hurt;
    assert!(whole > 4_000, "most connections were not hurt ({whole})");
    let (keepalive, _) = loadgen::expected_uris(&run.spec);
    assert_connections_in_order(&keepalive, &run.target);
}

// --- Packet mode: the collector on the lab's network, an intercept on the assistant. ---

#[test]
fn vxlan_mirrored_by_the_kernel_25k_requests_replicated_in_packet_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let m = Mirroring::KernelVxlan;
    let mut cloud = Cloud::packet("tcVp", m);
    let t = cloud.start_tcpcopy(
        m,
        &[
            "-s",
            &Lab::ASSISTANT_IP.to_string(),
            "-c",
            Lab::FAKE_CLIENT_NET,
        ],
    );
    lossless(&mut cloud, t, "vp");
}

#[test]
fn geneve_mirrored_25k_requests_replicated_in_packet_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let m = Mirroring::User(Encap::Geneve(VNI), 0.0);
    let mut cloud = Cloud::packet("tcGp", m);
    let t = cloud.start_tcpcopy(
        m,
        &[
            "-s",
            &Lab::ASSISTANT_IP.to_string(),
            "-c",
            Lab::FAKE_CLIENT_NET,
        ],
    );
    lossless(&mut cloud, t, "gp");
}

#[test]
fn erspan_mirrored_25k_requests_replicated_in_packet_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let m = Mirroring::User(Encap::ErspanIII(VNI as u16), 0.0);
    let mut cloud = Cloud::packet("tcEp", m);
    let t = cloud.start_tcpcopy(
        m,
        &[
            "-s",
            &Lab::ASSISTANT_IP.to_string(),
            "-c",
            Lab::FAKE_CLIENT_NET,
        ],
    );
    lossless(&mut cloud, t, "ep");
}

#[test]
fn vxlan_mirror_losing_two_percent_counts_hurt_sessions_in_packet_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let m = Mirroring::User(Encap::Vxlan(VNI), 0.02);
    let mut cloud = Cloud::packet("tcLp", m);
    let t = cloud.start_tcpcopy(
        m,
        &[
            "-s",
            &Lab::ASSISTANT_IP.to_string(),
            "-c",
            Lab::FAKE_CLIENT_NET,
        ],
    );
    lossy(&mut cloud, t, "lp");
}

// --- Stream mode: the collector behind a NAT that drops forged sources. ---

/// Stream mode through the NAT: no forged source left the collector (the NAT dropped none).
fn through_nat(m: Mirroring, tag: &str, lossy_mirror: bool) {
    let _guard = sequential();
    let mut cloud = Cloud::behind_nat(tag, m, Mode::Stream);
    let t = cloud.start_tcpcopy(m, &["--mode", "stream"]);
    if lossy_mirror {
        lossy(&mut cloud, t, tag);
    } else {
        lossless(&mut cloud, t, tag);
    }
    let nat = cloud.nat.as_ref().expect("behind a NAT");
    eprintln!(
        "{tag}: the NAT dropped {} packets as INVALID",
        nat.invalid_drops(&cloud.sc.lab).unwrap()
    );
    assert_eq!(
        nat.forged_drops(&cloud.sc.lab).unwrap(),
        0,
        "stream mode forges nothing"
    );
}

#[test]
fn vxlan_mirrored_25k_requests_reach_a_target_behind_nat_in_stream_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    through_nat(Mirroring::KernelVxlan, "tcVs", false);
}

#[test]
fn geneve_mirrored_25k_requests_reach_a_target_behind_nat_in_stream_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    through_nat(Mirroring::User(Encap::Geneve(VNI), 0.0), "tcGs", false);
}

#[test]
fn erspan_mirrored_25k_requests_reach_a_target_behind_nat_in_stream_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    through_nat(
        Mirroring::User(Encap::ErspanII(VNI as u16), 0.0),
        "tcEs",
        false,
    );
}

#[test]
fn vxlan_mirror_losing_two_percent_behind_nat_in_stream_mode() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    through_nat(Mirroring::User(Encap::Vxlan(VNI), 0.02), "tcLs", true);
}

/// The NAT is what a cloud network is: packet mode's forged sources from the collector never
/// reach the target (the NAT drops them), while the collector's own connections pass.
#[test]
fn the_nat_drops_forged_sources_from_the_collector() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let m = Mirroring::KernelVxlan;
    let mut cloud = Cloud::behind_nat("tcNp", m, Mode::Assistant);
    let mut t = cloud.start_tcpcopy(
        m,
        &[
            "-s",
            &Lab::ASSISTANT_IP.to_string(),
            "-c",
            Lab::FAKE_CLIENT_NET,
        ],
    );
    let spec = LoadSpec {
        keepalive_connections: 2,
        requests_per_connection: 20,
        short_connections: 20,
        ..load("np", 0, 0, 0)
    };
    assert_eq!(cloud.sc.load(&spec).unwrap().ok, 60);
    std::thread::sleep(Duration::from_secs(3));
    t.signal("INT").unwrap();
    t.wait_timeout(Duration::from_secs(15)).unwrap();
    let nat = cloud.nat.as_ref().unwrap();
    let drops = nat.forged_drops(&cloud.sc.lab).unwrap();
    assert!(drops > 0, "the NAT dropped the forged packets ({drops})");
    assert!(
        cloud.sc.target_uris().unwrap().is_empty(),
        "nothing forged reached the target"
    );
    // The collector's own connection does pass, masqueraded.
    let target = cloud.sc.target_service();
    let ok = cloud.sc.lab.run_in(&cloud.collector_ns, || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3)).is_ok()
    });
    assert!(ok, "the collector reaches the target through the NAT");
}
