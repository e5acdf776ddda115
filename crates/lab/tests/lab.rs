//! End-to-end checks of the lab itself: topology, cleanup, the embedded server, the load generator and
//! nginx, all inside namespaces this test creates. Needs root; skipped (with a note) otherwise. Each
//! test has its own prefix, so they may run concurrently.

use lab::loadgen::{self, expected_uris, LoadSpec};
use lab::netlab::{cleanup_orphans, cleanup_stale, is_root, run_in_ns};
use lab::nginx::nginx_binary;
use lab::{HttpServer, Lab, LabSpec, Nginx, ScratchDir};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lab(tag: &str, offload: bool) -> Option<Lab> {
    if !is_root() {
        eprintln!("SKIPPED: lab tests need root to create network namespaces");
        return None;
    }
    // Labs of earlier runs of this test that were killed before their Drop ran.
    cleanup_orphans(tag);
    let spec = LabSpec {
        offload,
        ..LabSpec::unique(tag)
    };
    Some(Lab::create(&spec).expect("create lab"))
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn spec(target: SocketAddr, keepalive: usize, per_conn: usize, short: usize) -> LoadSpec {
    LoadSpec {
        target,
        keepalive_connections: keepalive,
        requests_per_connection: per_conn,
        short_connections: short,
        short_concurrency: 10,
        rate_limit: None,
        uri_prefix: "lab".into(),
        deadline: Duration::from_secs(60),
    }
}

#[test]
fn embedded_server_sees_every_uri_in_connection_order() {
    let Some(lab) = lab("tla", false) else { return };
    let bind: SocketAddr = (Lab::ONLINE_IP, 80).into();
    let server = lab
        .run_in(lab.ns_online(), || HttpServer::start(bind))
        .expect("start httpd in online ns");
    let spec = spec(bind, 5, 200, 100);
    let report = lab
        .run_in(lab.ns_client(), || loadgen::run(&spec))
        .expect("loadgen");
    assert_eq!((report.sent, report.ok, report.errors), (1100, 1100, 0));
    assert_eq!(report.latencies_us.len(), 1100);
    assert!(report.percentile(50.0) <= report.percentile(99.0));

    let log = server.log();
    assert_eq!(log.len(), 1100);
    assert_eq!(server.requests(), 1100);
    let (keepalive, short) = expected_uris(&spec);
    let mut want: Vec<Vec<String>> = keepalive
        .into_iter()
        .chain(short.into_iter().map(|u| vec![u]))
        .collect();
    let mut got = log.by_connection();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn nginx_in_target_logs_every_uri() {
    let Some(binary) = nginx_binary() else {
        eprintln!("SKIPPED: nginx not installed");
        return;
    };
    assert!(binary.is_file());
    let Some(lab) = lab("tlb", false) else { return };
    let dir = ScratchDir::new("nginx").expect("scratch dir");
    let listen = SocketAddrV4::new(Lab::TARGET_IP, 80);
    let mut nginx = Nginx::start(&lab, lab.ns_target(), listen, dir.path()).expect("nginx");
    // Client and target share the bridge: this goes straight to the target.
    let spec = spec(listen.into(), 3, 100, 30);
    let report = lab
        .run_in(lab.ns_client(), || loadgen::run(&spec))
        .expect("loadgen");
    assert_eq!((report.sent, report.ok, report.errors), (330, 330, 0));

    let lines = nginx
        .wait_access_log(330, Duration::from_secs(5))
        .expect("access log");
    let (keepalive, short) = expected_uris(&spec);
    let mut want: Vec<String> = keepalive.iter().flatten().cloned().chain(short).collect();
    let mut got = lines.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    // Requests of one keep-alive connection are sequential, so the log keeps their order.
    let position: HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, u)| (u.as_str(), i))
        .collect();
    for conn in &keepalive {
        let order: Vec<usize> = conn.iter().map(|u| position[u.as_str()]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "out of order: {conn:?}"
        );
    }
    let status = nginx.stop().expect("nginx stops on SIGTERM");
    assert!(status.success(), "nginx exit: {status}");
}

#[test]
fn topology_sysctls_and_cleanup() {
    let Some(lab) = lab("tlc", false) else { return };
    let prefix = format!("{}-", lab.prefix());
    assert_eq!(namespaces_with(&prefix).len(), 5);
    assert_eq!(lab.ns_client(), format!("{}-cli", lab.prefix()));

    let ast = lab.ns_assistant();
    assert_eq!(lab.sysctl(ast, "net.ipv4.ip_forward").expect("read"), "0");
    assert_eq!(
        lab.sh(ast, &["cat", "/proc/sys/net/ipv4/ip_forward"])
            .expect("cat")
            .trim(),
        "0"
    );
    for ns in [lab.ns_client(), lab.ns_online(), lab.ns_target(), ast] {
        for conf in ["all", "default", Lab::IFACE] {
            let key = format!("net.ipv4.conf.{conf}.rp_filter");
            assert_eq!(lab.sysctl(ns, &key).expect("read"), "0", "{ns} {key}");
        }
    }
    // A sysctl written from a namespace thread lands in that namespace, and only there.
    lab.set_sysctl(lab.ns_online(), "net.ipv4.ip_forward", "1")
        .expect("write");
    let seen = lab.sh(lab.ns_online(), &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(seen.expect("cat").trim(), "1");
    assert_eq!(lab.sysctl(ast, "net.ipv4.ip_forward").expect("read"), "0");

    let route = lab
        .sh(lab.ns_target(), &["ip", "route", "get", "198.19.0.7"])
        .expect("route get");
    assert!(route.contains("via 198.18.0.40"), "{route}");
    if lab.has_ipv6() {
        let route6 = lab
            .sh(
                lab.ns_target(),
                &["ip", "-6", "route", "get", "2001:2:0:1::7"],
            )
            .expect("route get");
        assert!(route6.contains("via 2001:2::40"), "{route6}");
    }

    // A spawned process is ours to stop; one started behind the lab's back dies with the lab.
    let dir = ScratchDir::new("topo").expect("scratch dir");
    let mut sleeper = lab
        .spawn(
            lab.ns_online(),
            Path::new("/bin/sleep"),
            &["1000".to_string()],
            &dir.path().join("sleep.log"),
        )
        .expect("spawn");
    assert!(sleeper.is_running());
    let status = sleeper.stop().expect("stop");
    assert!(!status.success());
    assert!(!sleeper.is_running());
    let mut stray = Command::new("ip")
        .args(["netns", "exec", lab.ns_target(), "sleep", "1000"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn stray");

    drop(lab);
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    let end = Instant::now() + Duration::from_secs(5);
    while stray.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < end, "stray process survived the lab");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lab_is_removed_when_a_test_panics() {
    if !is_root() {
        return;
    }
    let spec = LabSpec::unique("tld");
    let prefix = format!("{}-", spec.prefix);
    let result = std::panic::catch_unwind(|| {
        let _lab = Lab::create(&spec).expect("create lab");
        panic!("deliberate");
    });
    assert!(result.is_err());
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
}

#[test]
fn stale_namespaces_are_replaced_and_cleaned() {
    if !is_root() {
        return;
    }
    let spec = LabSpec::unique("tle");
    let stale = format!("{}-cli", spec.prefix);
    let extra = format!("{}-old", spec.prefix);
    for ns in [&stale, &extra] {
        let ok = Command::new("ip").args(["netns", "add", ns]).status();
        assert!(ok.expect("ip").success());
    }
    // Creation removes leftovers of a crashed run with the same prefix.
    let lab = Lab::create(&spec).expect("create over stale namespaces");
    assert!(!namespaces_with(&extra).contains(&extra));
    drop(lab);
    let ok = Command::new("ip").args(["netns", "add", &extra]).status();
    assert!(ok.expect("ip").success());
    assert_eq!(
        cleanup_stale(&format!("{}-", spec.prefix)),
        vec![extra.clone()]
    );
    assert!(namespaces_with(&extra).is_empty());
    assert!(cleanup_stale("").is_empty());
}

#[test]
fn run_in_enters_the_namespace() {
    let Some(lab) = lab("tlf", false) else { return };
    let own = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let inside = lab.run_in(lab.ns_client(), || {
        std::fs::read_link("/proc/thread-self/ns/net").expect("netns link")
    });
    assert_ne!(own, inside);
    // Threads spawned inside inherit the namespace.
    let nested = lab.run_in(lab.ns_client(), || {
        std::thread::spawn(|| std::fs::read_link("/proc/thread-self/ns/net").expect("link"))
            .join()
            .expect("join")
    });
    assert_eq!(nested, inside);
    let missing = std::panic::catch_unwind(|| run_in_ns("tcpcopy-lab-no-such-ns", || ()));
    assert!(missing.is_err());
}

/// Sends `bytes` from client to online over TCP and returns how many packets the online side's
/// interface received.
fn packets_for_transfer(lab: &Lab, bytes: usize) -> u64 {
    let rx_packets = || -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", Lab::IFACE);
        lab.sh(lab.ns_online(), &["cat", &path])
            .expect("read counter")
            .trim()
            .parse()
            .expect("number")
    };
    let bind: SocketAddr = (Lab::ONLINE_IP, 9000).into();
    let listener = lab
        .run_in(lab.ns_online(), || TcpListener::bind(bind))
        .expect("bind");
    let before = rx_packets();
    std::thread::scope(|s| {
        let sink = s.spawn(|| {
            let (mut c, _) = listener.accept().expect("accept");
            let mut n = 0;
            let mut buf = vec![0; 1 << 16];
            loop {
                match c.read(&mut buf).expect("read") {
                    0 => break n,
                    k => n += k,
                }
            }
        });
        lab.run_in(lab.ns_client(), || {
            let mut c = TcpStream::connect(bind).expect("connect");
            c.write_all(&vec![7u8; bytes]).expect("write");
        });
        assert_eq!(sink.join().expect("sink"), bytes);
    });
    rx_packets() - before
}

#[test]
fn offloads_off_gives_mss_sized_segments() {
    let Some(lab) = lab("tlg", false) else { return };
    let bytes = 2 << 20;
    let packets = packets_for_transfer(&lab, bytes) as usize;
    // At most 1448 payload bytes per segment (plus a few control packets).
    assert!(
        packets >= bytes / 1448,
        "{packets} packets: segments larger than the MSS"
    );
}

#[test]
fn offloads_on_gives_large_segments() {
    let Some(lab) = lab("tlh", true) else { return };
    let bytes = 2 << 20;
    let packets = packets_for_transfer(&lab, bytes) as usize;
    assert!(
        packets < bytes / 1448 / 2,
        "{packets} packets: expected TSO/GSO"
    );
}

#[test]
fn loadgen_guard_allows_lab_routes_only_inside_the_lab() {
    let Some(lab) = lab("tli", false) else { return };
    // Inside the client namespace the lab and fake ranges are routable (the fake range only via the
    // target's route, so from the client it is refused like from the root namespace).
    let bind: SocketAddr = (Lab::ONLINE_IP, 81).into();
    let _server = lab
        .run_in(lab.ns_online(), || HttpServer::start(bind))
        .expect("httpd");
    let report = lab
        .run_in(lab.ns_client(), || loadgen::run(&spec(bind, 1, 3, 0)))
        .expect("loadgen inside the lab");
    assert_eq!(report.ok, 3);
    if lab.has_ipv6() {
        let bind6: SocketAddr = (Lab::ip6_of(Lab::ONLINE_IP), 82).into();
        let _server6 = lab
            .run_in(lab.ns_online(), || HttpServer::start(bind6))
            .expect("httpd v6");
        let report = lab
            .run_in(lab.ns_client(), || loadgen::run(&spec(bind6, 1, 3, 1)))
            .expect("loadgen over IPv6");
        assert_eq!(report.ok, 4);
    }
    let fake: SocketAddr = (std::net::Ipv4Addr::new(198, 19, 0, 1), 80).into();
    let refused = lab.run_in(lab.ns_client(), || loadgen::run(&spec(fake, 1, 1, 0)));
    assert!(refused.is_err());
}

#[test]
fn orphans_of_dead_processes_are_removed() {
    if !is_root() {
        return;
    }
    // pid 4194304 is above PID_MAX_LIMIT, so it can never be alive.
    let dead = "tlj4194304-cli".to_string();
    let live = format!("tlj{}-cli", std::process::id());
    for ns in [&dead, &live] {
        let ok = Command::new("ip").args(["netns", "add", ns]).status();
        assert!(ok.expect("ip").success());
    }
    assert_eq!(cleanup_orphans("tlj"), vec![dead.clone()]);
    assert_eq!(namespaces_with("tlj"), vec![live.clone()]);
    assert_eq!(cleanup_stale(&live), vec![live]);
}
