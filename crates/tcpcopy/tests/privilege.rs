//! Least privilege: both programs run as `nobody` holding only CAP_NET_RAW and CAP_NET_ADMIN (file
//! capabilities), replicate every request, and once set up no thread of theirs keeps a capability,
//! except what queue mode needs (NFQUEUE verdicts; iptables to remove its rule at exit). Without
//! the capabilities, each says in one line which one it lacks. Needs root (to make the user
//! switch and the lab).

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::LoadSpec;

const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

/// One thread's name, uid and effective and permitted capability masks, from /proc.
#[derive(Debug)]
struct ThreadCaps {
    name: String,
    uid: u32,
    effective: u64,
    permitted: u64,
}

fn threads(pid: u32) -> Vec<ThreadCaps> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let status = std::fs::read_to_string(entry.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let hex = |name| u64::from_str_radix(&field(name), 16).unwrap();
        out.push(ThreadCaps {
            name: field("Name:"),
            uid: field("Uid:")
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap(),
            effective: hex("CapEff:"),
            permitted: hex("CapPrm:"),
        });
    }
    out
}

fn replicate_as_nobody(tag: &str, mode: Mode) {
    let _guard = sequential();
    let spec = ScenarioSpec {
        run_as: Some("nobody".into()),
        ..ScenarioSpec::new(tag, mode, Servers::Nginx, bin_dir())
    };
    let sc = Scenario::start(&spec).expect("scenario starts as nobody");
    let load = LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 5,
        requests_per_connection: 100,
        short_connections: 200,
        short_concurrency: 8,
        rate_limit: None,
        uri_prefix: format!("p{tag}"),
        deadline: Duration::from_secs(60),
    };
    assert_eq!(sc.load(&load).expect("load").ok, 700);
    let got = sc.wait_target(700, Duration::from_secs(30)).unwrap();
    assert_eq!(got.len(), 700, "every request replicated");

    let tcpcopy = threads(sc.tcpcopy.as_ref().unwrap().pid());
    let intercept = threads(sc.intercept.as_ref().unwrap().pid());
    for t in tcpcopy.iter().chain(&intercept) {
        assert_eq!(t.uid, 65534, "runs as nobody: {t:?}");
    }
    assert!(tcpcopy.len() >= 2, "{tcpcopy:?}");
    for t in &tcpcopy {
        assert_eq!(
            (t.effective, t.permitted),
            (0, 0),
            "tcpcopy thread kept a capability: {t:?}"
        );
    }
    let main = intercept
        .iter()
        .find(|t| t.name == "intercept")
        .expect("intercept's main thread");
    for t in &intercept {
        let allowed = match mode {
            Mode::Assistant => 0,
            // Verdicts need CAP_NET_ADMIN; the main thread runs iptables at exit.
            Mode::Queue if t.name == "nfqueue" => CAP_NET_ADMIN,
            Mode::Queue if std::ptr::eq(t, main) => CAP_NET_ADMIN | CAP_NET_RAW,
            // No intercept in stream mode.
            Mode::Queue | Mode::Stream => 0,
        };
        assert_eq!(
            t.permitted & !allowed,
            0,
            "intercept thread kept more than it needs: {t:?}"
        );
        assert_eq!(t.effective & !allowed, 0, "{t:?}");
    }
    if mode == Mode::Queue {
        assert_eq!(main.permitted, CAP_NET_ADMIN | CAP_NET_RAW, "{main:?}");
    }
    let mut sc = sc;
    let log = sc.stop_intercept().unwrap();
    if mode == Mode::Queue {
        assert!(
            log.contains("removed: iptables -D OUTPUT"),
            "the rule is removed at exit without root: {log}"
        );
        let rules = sc
            .lab
            .sh(sc.lab.ns_target(), &["iptables", "-S", "OUTPUT"])
            .unwrap();
        assert!(!rules.contains("NFQUEUE"), "no rule left: {rules}");
    }
}

#[test]
fn assistant_mode_as_nobody_with_two_capabilities_dropped_after_setup() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    replicate_as_nobody("tcN", Mode::Assistant);
}

#[test]
fn queue_mode_as_nobody_keeps_only_what_its_queue_and_rule_need() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    replicate_as_nobody("tcU", Mode::Queue);
}

/// Runs a binary as nobody with no capability; (exit status, stderr).
fn as_nobody(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin])
        .args(args)
        .output()
        .expect("setpriv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_capability_is_one_line_naming_it() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let cases: [(&str, &[&str], &str); 3] = [
        (
            env!("CARGO_BIN_EXE_tcpcopy"),
            &["-x", "80-198.18.0.30:80", "-s", "127.0.0.1:9"],
            "CAP_NET_RAW",
        ),
        (
            env!("CARGO_BIN_EXE_intercept"),
            &["-i", "lo", "-p", "36599"],
            "CAP_NET_RAW",
        ),
        (
            env!("CARGO_BIN_EXE_intercept"),
            &["--port", "80", "-p", "36598"],
            "CAP_NET_ADMIN",
        ),
    ];
    for (bin, args, cap) in cases {
        let (code, err) = as_nobody(bin, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {err}");
        assert!(
            lines[0].contains(cap) && lines[0].contains("setcap"),
            "{args:?}: {err}"
        );
    }
}
