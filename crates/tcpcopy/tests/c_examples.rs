//! The C TCPCopy README's own examples, letter for letter (addresses and interface names aside),
//! run against our binaries in a lab: queue mode (the operator's NFQUEUE rule and a bare
//! `intercept` on the target, `tcpcopy -x` alone on the online host) and assistant mode (`intercept
//! -i eth0 -F 'tcp and src port 80' -d` on the assistant, `tcpcopy -x ... -s ... -c 62.135.200.x`
//! online). Every request must reach the target, and no target packet the client. Needs root.

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, Lab, LoadSpec};

/// 1,000 keep-alive requests (10 connections x 100) and 500 short connections.
fn load(prefix: &str) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 10,
        requests_per_connection: 100,
        short_connections: 500,
        short_concurrency: 8,
        rate_limit: None,
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(60),
    }
}

fn lab_without_programs(tag: &str, mode: Mode) -> Scenario {
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        start_intercept: false,
        ..ScenarioSpec::new(tag, mode, Servers::Nginx, bin_dir())
    };
    Scenario::start(&spec).expect("scenario starts")
}

fn args(line: &[&str]) -> Vec<String> {
    line.iter().map(|s| s.to_string()).collect()
}

/// Runs the load and checks that the target got every URI exactly once.
fn replicate_and_check(sc: &Scenario, prefix: &str) {
    let l = load(prefix);
    let report = sc.load(&l).expect("load");
    assert_eq!(report.ok, 1_500);
    let (keepalive, short) = loadgen::expected_uris(&l);
    let mut want: Vec<String> = keepalive.into_iter().flatten().chain(short).collect();
    let mut got = sc.wait_target(want.len(), Duration::from_secs(30)).unwrap();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "requests at the target");
    assert!(
        got == want,
        "the target got other requests than the client sent"
    );
}

/// C README (queue mode, kernel >= 3.5): on the target `iptables -I OUTPUT -p tcp --sport port -j
/// NFQUEUE` and `./intercept`; on the source host `./tcpcopy -x
/// localServerPort-targetServerIP:targetServerPort`.
#[test]
fn the_c_readme_queue_mode_example_replicates_every_request() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let mut sc = lab_without_programs("tcK", Mode::Queue);
    let port = Scenario::online_addr().port().to_string();
    sc.lab
        .sh(
            sc.lab.ns_target(),
            &[
                "iptables", "-I", "OUTPUT", "-p", "tcp", "--sport", &port, "-j", "NFQUEUE",
            ],
        )
        .expect("the operator's NFQUEUE rule");
    let log = sc.scratch.path().join("intercept.log");
    let intercept = sc
        .lab
        .spawn(sc.lab.ns_target(), &bin_dir().join("intercept"), &[], &log)
        .expect("intercept starts");
    sc.intercept = Some(intercept);
    wait_for(&log, "listening for tcpcopy", Duration::from_secs(10));
    let sniffer = sniff_client(&sc);
    let rule = format!("{port}-{}:{port}", Lab::TARGET_IP);
    sc.tcpcopy = Some(
        sc.lab
            .spawn(
                sc.lab.ns_online(),
                &bin_dir().join("tcpcopy"),
                &args(&["-x", &rule]),
                &sc.scratch.path().join("tcpcopy.log"),
            )
            .expect("tcpcopy starts"),
    );
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy finds intercept on the target by itself");
    replicate_and_check(&sc, "cq");
    let tlog = sc.stop_tcpcopy().unwrap();
    eprintln!("queue mode: {}", final_line(&tlog));
    let ilog = sc.stop_intercept().unwrap();
    assert!(
        ilog.contains("the queue is filled by your rule"),
        "intercept says whose rule it reads: {ilog}"
    );
    assert_client_isolated(sniffer);
}

/// C README (assistant mode): on the assistant `./intercept -i eth0 -F 'tcp and src port 80' -d`;
/// on the online host `./tcpcopy -x 80-61.135.233.160:80 -s 61.135.233.161 -c 62.135.200.x`.
#[test]
fn the_c_readme_assistant_mode_example_replicates_every_request() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let sc = lab_without_programs("tcE", Mode::Assistant);
    let port = Scenario::online_addr().port().to_string();
    let filter = format!("tcp and src port {port}");
    let default_log = Path::new("/var/log/intercept.log");
    let had_log = default_log.exists();
    // `-d`: the command returns once intercept runs in the background, and says where. As root:
    // without -l, its log goes to /var/log, which only root may write.
    let parent_log = sc.scratch.path().join("intercept-parent.log");
    let mut parent = sc
        .lab
        .spawn_as_root(
            sc.lab.ns_assistant(),
            &bin_dir().join("intercept"),
            &args(&["-i", Lab::IFACE, "-F", &filter, "-d"]),
            &parent_log,
        )
        .expect("intercept starts");
    let status = parent
        .wait_timeout(Duration::from_secs(15))
        .unwrap()
        .expect("the foreground intercept returns once the daemon is ready");
    let said = parent.log_text();
    assert!(status.success(), "{said}");
    let pid: i32 = said
        .split("as pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the pid in: {said}"));
    let daemon = KillOnDrop(pid);
    assert!(daemon.alive(), "the daemon runs on");

    let sniffer = sniff_client(&sc);
    let rule = format!("{port}-{}:{port}", Lab::TARGET_IP);
    let mut sc = sc;
    sc.tcpcopy = Some(
        sc.lab
            .spawn(
                sc.lab.ns_online(),
                &bin_dir().join("tcpcopy"),
                &args(&[
                    "-x",
                    &rule,
                    "-s",
                    &Lab::ASSISTANT_IP.to_string(),
                    "-c",
                    "198.19.0.x",
                ]),
                &sc.scratch.path().join("tcpcopy.log"),
            )
            .expect("tcpcopy starts"),
    );
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connects to the daemon");
    replicate_and_check(&sc, "ca");
    let tlog = sc.stop_tcpcopy().unwrap();
    eprintln!("assistant mode: {}", final_line(&tlog));
    drop(daemon);
    let log = std::fs::read_to_string(default_log).unwrap_or_default();
    assert!(
        log.contains("listening for tcpcopy"),
        "the daemon logs to /var/log/intercept.log without -l"
    );
    if !had_log {
        let _ = std::fs::remove_file(default_log);
    }
    assert_client_isolated(sniffer);
}

/// Waits until `needle` appears in the file at `path`.
#[track_caller]
fn wait_for(path: &Path, needle: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(start.elapsed() < timeout, "no '{needle}' in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process we did not start as a child (a daemon): SIGTERM on drop, then SIGKILL after 5 s.
struct KillOnDrop(i32);

impl KillOnDrop {
    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.0)).exists()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = self.0.to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let start = Instant::now();
        while self.alive() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.alive() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
    }
}
