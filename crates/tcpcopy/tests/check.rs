//! `tcpcopy check` in the lab: a correct assistant-mode setup (and a correct queue-mode one) is
//! "ready" with exit status 0; each deliberately broken setup is named with its fix and exits
//! non-zero: intercept not running, something else on intercept's port, the target's route for
//! the fake range removed, ip_forward on the assistant, strict rp_filter on a target whose route
//! for the fake range leaves by another interface, forged sources dropped by the switch, and a
//! lower MTU on the online host. Needs root (skips otherwise).

mod common;
use common::*;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::Lab;

fn is_root() -> bool {
    lab::netlab::is_root()
}

/// A lab with the target's server and, unless `intercept` is false, intercept; no tcpcopy.
fn scenario(tag: &str, mode: Mode, intercept: bool) -> Scenario {
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        start_intercept: intercept,
        ..ScenarioSpec::new(tag, mode, Servers::Embedded, bin_dir())
    };
    Scenario::start(&spec).expect("scenario starts")
}

/// Runs `tcpcopy check` on the online host with the options a run of this mode takes; its exit
/// status (true: 0) and output.
fn check(sc: &Scenario, mode: Mode) -> (bool, String) {
    let intercept = match mode {
        Mode::Assistant => Lab::ASSISTANT_IP,
        Mode::Queue => Lab::TARGET_IP,
        Mode::Stream => {
            let rule = format!("80-{}:80", Lab::TARGET_IP);
            return run_check(sc, &["check", "--mode", "stream", "-x", &rule]);
        }
    };
    let rule = format!("80-{}:80", Lab::TARGET_IP);
    let intercept = intercept.to_string();
    run_check(
        sc,
        &[
            "check",
            "-x",
            &rule,
            "-s",
            &intercept,
            "-c",
            Lab::FAKE_CLIENT_NET,
        ],
    )
}

/// Runs `tcpcopy ARGS` on the online host; its exit status (true: 0) and output.
fn run_check(sc: &Scenario, args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let n = std::fs::read_dir(sc.scratch.path()).unwrap().count();
    let log = sc.scratch.path().join(format!("check-{n}.log"));
    let mut child = sc
        .lab
        .spawn(sc.lab.ns_online(), &bin_dir().join("tcpcopy"), &args, &log)
        .expect("spawn tcpcopy check");
    let status = child
        .wait_timeout(Duration::from_secs(60))
        .expect("wait")
        .unwrap_or_else(|| panic!("tcpcopy check did not finish:\n{}", child.log_text()));
    (status.success(), child.log_text())
}

/// The check says "ready" and exits 0.
#[track_caller]
fn assert_ready(sc: &Scenario, mode: Mode) {
    let (ok, out) = check(sc, mode);
    assert!(ok, "not ready:\n{out}");
    assert!(out.lines().any(|l| l == "ready"), "{out}");
    assert!(!out.contains("problem:"), "{out}");
}

/// The check names exactly one problem, containing `what`, with a fix containing `fix`, and
/// exits non-zero.
#[track_caller]
fn assert_named(sc: &Scenario, mode: Mode, what: &str, fix: &str) {
    let (ok, out) = check(sc, mode);
    assert!(!ok, "exit status 0 for a broken setup:\n{out}");
    assert!(out.contains("not ready: 1 problem\n"), "{out}");
    let problem = out
        .lines()
        .position(|l| l.starts_with("problem: "))
        .unwrap_or_else(|| panic!("no problem named:\n{out}"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[problem].contains(what), "expected {what:?}:\n{out}");
    let fix_line = lines[problem + 1];
    assert!(
        fix_line.starts_with("  fix: ") && fix_line.contains(fix),
        "expected fix {fix:?}:\n{out}"
    );
}

#[test]
fn a_correct_assistant_setup_is_ready_and_each_broken_one_is_named() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    let _guard = sequential();
    let sc = scenario("chk", Mode::Assistant, true);
    assert_ready(&sc, Mode::Assistant);

    // ip_forward on the assistant.
    sc.lab
        .set_sysctl(sc.lab.ns_assistant(), "net.ipv4.ip_forward", "1")
        .unwrap();
    assert_named(
        &sc,
        Mode::Assistant,
        "ip_forward is on",
        "sysctl -w net.ipv4.ip_forward=0",
    );
    sc.lab
        .set_sysctl(sc.lab.ns_assistant(), "net.ipv4.ip_forward", "0")
        .unwrap();

    // Something on the way drops what the online host sends from fake client addresses (as a
    // cloud's anti-spoofing does): here a filter at the target's door that knows the online
    // host's hardware address. The assistant's own probe still gets through.
    let mac = sc
        .lab
        .sh(sc.lab.ns_online(), &["cat", "/sys/class/net/eth0/address"])
        .unwrap();
    let rule = [
        "INPUT",
        "-s",
        Lab::FAKE_ROUTE,
        "-m",
        "mac",
        "--mac-source",
        mac.trim(),
        "-j",
        "DROP",
    ];
    let tgt = sc.lab.ns_target();
    let iptables = |op: &str| {
        let mut cmd = vec!["iptables", op];
        cmd.extend(rule);
        sc.lab.sh(tgt, &cmd).unwrap();
    };
    iptables("-I");
    assert_named(
        &sc,
        Mode::Assistant,
        "the network drops forged source addresses",
        "--mode stream",
    );
    iptables("-D");

    // The target's route for the fake range removed.
    sc.lab
        .sh(tgt, &["ip", "route", "del", Lab::FAKE_ROUTE])
        .unwrap();
    assert_named(
        &sc,
        Mode::Assistant,
        "does not send its answers to fake clients",
        &format!(
            "ip route add {} via {}",
            Lab::FAKE_CLIENT_NET,
            Lab::ASSISTANT_IP
        ),
    );
    let via = Lab::ASSISTANT_IP.to_string();
    sc.lab
        .sh(tgt, &["ip", "route", "add", Lab::FAKE_ROUTE, "via", &via])
        .unwrap();

    // A lower MTU on the online host's interface than --mtu.
    let onl = sc.lab.ns_online();
    sc.lab
        .sh(onl, &["ip", "link", "set", Lab::IFACE, "mtu", "1400"])
        .unwrap();
    assert_named(
        &sc,
        Mode::Assistant,
        "whose MTU is 1400, below --mtu 1500",
        "--mtu 1400",
    );
    sc.lab
        .sh(onl, &["ip", "link", "set", Lab::IFACE, "mtu", "1500"])
        .unwrap();

    // Repaired: ready again.
    assert_ready(&sc, Mode::Assistant);
}

#[test]
fn intercept_missing_or_another_service_on_its_port_is_named() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    let _guard = sequential();
    let sc = scenario("chn", Mode::Assistant, false);
    assert_named(
        &sc,
        Mode::Assistant,
        "is unreachable: connection refused",
        "start intercept on 198.18.0.40",
    );

    // Something else (it greets as an SSH server does) on intercept's port.
    let addr = SocketAddr::from((Lab::ASSISTANT_IP, protocol::DEFAULT_PORT));
    let listener = sc
        .lab
        .run_in(sc.lab.ns_assistant(), || TcpListener::bind(addr))
        .unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert_named(
        &sc,
        Mode::Assistant,
        "is not an intercept",
        "point -s at intercept's listen port",
    );
    server.join().unwrap();
}

#[test]
fn strict_rp_filter_on_a_multihomed_target_is_named_in_queue_mode() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    let _guard = sequential();
    let sc = scenario("chq", Mode::Queue, true);
    // The target's route for the fake range leaves by another interface than the one tcpcopy's
    // packets arrive on: fine for queue mode (intercept catches the answers before they leave)
    // until strict rp_filter drops what arrives.
    let tgt = sc.lab.ns_target();
    for cmd in [
        &[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ][..],
        &["ip", "link", "set", "d0", "up"],
        &["ip", "link", "set", "d1", "up"],
        &["ip", "route", "replace", Lab::FAKE_ROUTE, "dev", "d0"],
    ] {
        sc.lab.sh(tgt, cmd).unwrap();
    }
    assert_ready(&sc, Mode::Queue);
    sc.lab
        .set_sysctl(tgt, "net.ipv4.conf.all.rp_filter", "1")
        .unwrap();
    assert_named(
        &sc,
        Mode::Queue,
        "the target's rp_filter (1) drops packets from 198.19.0.1",
        "rp_filter=0",
    );
    sc.lab
        .set_sysctl(tgt, "net.ipv4.conf.all.rp_filter", "0")
        .unwrap();
    assert_ready(&sc, Mode::Queue);
}

/// Stream mode needs only a connection to the target: ready when it takes one (no intercept
/// runs), and a target that refuses (here: its server stopped by dropping the port at its door)
/// is named with its fix.
#[test]
fn stream_mode_checks_the_connection_to_the_target() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    let _guard = sequential();
    let sc = scenario("chS", Mode::Stream, false);
    assert_ready(&sc, Mode::Stream);
    let reject = [
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    let tgt = sc.lab.ns_target();
    let mut add = vec!["iptables", "-I"];
    add.extend(reject);
    sc.lab.sh(tgt, &add).unwrap();
    assert_named(
        &sc,
        Mode::Stream,
        "does not take connections from this host",
        "correct -x",
    );
    let rule = format!("80-{}:80", Lab::TARGET_IP);
    let (ok, out) = run_check(
        &sc,
        &[
            "check",
            "--mode",
            "stream",
            "-x",
            &rule,
            "-s",
            "198.18.0.40",
        ],
    );
    assert!(!ok && out.contains("-s/--intercept"), "{out}");
    let mut del = vec!["iptables", "-D"];
    del.extend(reject);
    sc.lab.sh(tgt, &del).unwrap();
    assert_ready(&sc, Mode::Stream);
}
