//! Bad options: one line naming the option, exit status 2, for both programs. No root needed.

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_usage_error(bin: &str, args: &[&str], names: &str) {
    let (code, err) = run(bin, args);
    assert_eq!(code, 2, "{args:?}: exit status 2 expected, stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line expected, got:\n{err}"
    );
    assert!(
        err.contains(names),
        "{args:?}: the message should name {names}: {err}"
    );
}

#[test]
fn tcpcopy_rejects_bad_options_in_one_line() {
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    assert_usage_error(t, &["-x", "80", "-s", "198.18.0.40"], "--transfer");
    assert_usage_error(
        t,
        &["-x", "80-198.18.0.30:99999", "-s", "198.18.0.40"],
        "--transfer",
    );
    assert_usage_error(
        t,
        &["-x", "80-198.18.0.30:80", "-s", "not-an-ip"],
        "--intercept",
    );
    assert_usage_error(
        t,
        &[
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
            "-c",
            "198.19.0.0/4",
        ],
        "--fake-client",
    );
    assert_usage_error(
        t,
        &["-x", "80-198.18.0.30:80", "-s", "198.18.0.40", "-t", "0"],
        "--session-timeout",
    );
    let rule = ["-x", "80-198.18.0.30:80", "-s", "198.18.0.40"];
    let with = |extra: &[&'static str]| [&rule[..], extra].concat();
    assert_usage_error(
        t,
        &with(&["--send-layer", "ip", "-o", "eth0"]),
        "--output-device",
    );
    assert_usage_error(t, &with(&["--send-layer", "mac"]), "--send-layer");
    assert_usage_error(
        t,
        &["-x", "80-198.18.0.30:80", "-s", "198.18.0.40", "-n", "0"],
        "--copies",
    );
    assert_usage_error(
        t,
        &["-x", "80-198.18.0.30:80", "-s", "198.18.0.40", "-r", "101"],
        "--percent",
    );
    assert_usage_error(
        t,
        &[
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
            "--port-shift",
            "0",
        ],
        "--port-shift",
    );
    assert_usage_error(
        t,
        &["-x", "80-198.18.0.30:80", "-s", "198.18.0.40", "--bogus"],
        "--bogus",
    );
    assert_usage_error(
        t,
        &[
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
            "-c",
            "198.19.0.1,198.19.0.2",
            "--threads",
            "4",
        ],
        "--threads",
    );
    assert_usage_error(
        t,
        &[
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
            "--threads",
            "0",
        ],
        "--threads",
    );
    for wait in ["0", "51"] {
        assert_usage_error(
            t,
            &[
                "-x",
                "80-198.18.0.30:80",
                "-s",
                "198.18.0.40",
                "--capture-wait",
                wait,
            ],
            "--capture-wait",
        );
    }
    assert_usage_error(t, &["-s", "198.18.0.40"], "-x/--transfer");
    assert_usage_error(
        t,
        &[
            "-x",
            "80-[2001:2::30]:80",
            "-s",
            "198.18.0.40",
            "-c",
            "198.19.0.1",
        ],
        "-c",
    );
}

#[test]
fn intercept_rejects_bad_options_in_one_line() {
    let i = env!("CARGO_BIN_EXE_intercept");
    assert_usage_error(i, &["-q", "0"], "--queue-length");
    assert_usage_error(i, &["--queue", "--port", "http"], "--port");
    assert_usage_error(i, &["--allow", "1.2.3"], "--allow");
    assert_usage_error(i, &["-x", "1.2.3"], "--pass");
    assert_usage_error(i, &["-n", "0"], "--batch");
    assert_usage_error(
        i,
        &["--queue", "--port", "80", "-i", "eth0"],
        "-i/--interface",
    );
    assert_usage_error(i, &["--port", "80", "--threads", "2"], "--threads");
    assert_usage_error(i, &["--threads", "0"], "--threads");
}

/// `demo` counts only as the first word: after options it is a one-line usage error (a stray word
/// never starts a lab), and as the first word it takes the demo's own options.
#[test]
fn demo_is_a_command_only_as_the_first_word() {
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    assert_usage_error(
        t,
        &["-x", "80-1.2.3.4:80", "demo"],
        "'demo' must be the first word",
    );
    assert_usage_error(
        t,
        &[
            "-x",
            "80-1.2.3.4:80",
            "-s",
            "1.2.3.5",
            "demo",
            "--seconds",
            "5",
        ],
        "'demo' must be the first word",
    );
    #[cfg(feature = "demo")]
    {
        assert_usage_error(t, &["demo", "--seconds", "soon"], "--seconds");
        assert_usage_error(t, &["demo", "-x", "80-1.2.3.4:80"], "-x");
        let out = Command::new(t).args(["demo", "--help"]).output().unwrap();
        assert!(out.status.success(), "tcpcopy demo --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("--seconds"));
    }
    #[cfg(not(feature = "demo"))]
    assert_usage_error(t, &["demo", "--seconds", "5"], "this build has no demo");
}

#[test]
fn help_and_version_exit_zero() {
    for bin in [
        env!("CARGO_BIN_EXE_tcpcopy"),
        env!("CARGO_BIN_EXE_intercept"),
    ] {
        let (code, _) = run(bin, &["--version"]);
        assert_eq!(code, 0);
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

/// A file tcpcopy cannot replay fails at once, before any privilege is needed: one line naming
/// the file and the reason, exit status 1, no panic.
#[test]
fn unreadable_replay_files_fail_with_one_exact_line() {
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    let dir = std::env::temp_dir().join(format!("tcpcopy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pcap");
    std::fs::write(
        &garbage,
        b"this is not a capture file at all, just some text\n",
    )
    .unwrap();
    // A classic pcap header for link type 105 (IEEE 802.11), then one 4-byte record.
    let wifi = dir.join("wifi.pcap");
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&105u32.to_le_bytes());
    for v in [1u32, 0, 4, 4] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&[0; 4]);
    std::fs::write(&wifi, &f).unwrap();
    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let cases = [
        (&garbage, "not a pcap or pcapng file".to_string()),
        (&empty, "not a pcap or pcapng file".to_string()),
        (
            &wifi,
            "link type 105 is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)"
                .to_string(),
        ),
    ];
    for (file, reason) in cases {
        let path = file.display().to_string();
        let (code, err) = run(
            t,
            &["-x", "80-198.18.0.30:80", "-s", "198.18.0.40", "-i", &path],
        );
        assert_eq!(code, 1, "{path}: exit status 1 expected, stderr: {err}");
        assert_eq!(
            err.trim_end(),
            format!("tcpcopy: {path}: {reason}"),
            "exact one-line error"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn comparison_options_are_checked_before_anything_runs() {
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    let base = ["-x", "80-198.18.0.30:80", "-s", "198.18.0.40"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    assert_usage_error(t, &with(&["--baseline", "198.18.0.31:80"]), "--baseline");
    assert_usage_error(t, &with(&["--ignore-header", "Vary"]), "--ignore-header");
    assert_usage_error(t, &with(&["--fail-on-diff", "1"]), "--fail-on-diff");
    assert_usage_error(
        t,
        &with(&["--compare", "--fail-on-loss", "150"]),
        "--fail-on-loss",
    );
    assert_usage_error(
        t,
        &with(&["--compare", "--compare-bytes", "8"]),
        "--compare-bytes",
    );
    assert_usage_error(
        t,
        &with(&["--compare", "--baseline", "198.18.0.30:80"]),
        "--baseline",
    );
    assert_usage_error(
        t,
        &with(&["--compare", "--ignore-header", "Bad:Name"]),
        "--ignore-header",
    );
    // A report that cannot be written fails at once, in one line, before any capture.
    let (code, err) = run(
        t,
        &with(&["--compare", "--report", "/nonexistent-dir/run.json"]),
    );
    assert_eq!(code, 1, "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tcpcopy: --report /nonexistent-dir/run.json: "),
        "{err}"
    );
    // `report merge` refuses what is not a report, in one line.
    let dir = std::env::temp_dir().join(format!("tcpcopy-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.json");
    std::fs::write(&junk, b"{\"not\": \"a report\"}").unwrap();
    let junk = junk.display().to_string();
    let out = dir.join("out.json").display().to_string();
    let (code, err) = run(t, &["report", "merge", &junk, "-o", &out]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(
        err.starts_with(&format!("tcpcopy: {junk}: not a tcpcopy JSON report")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rough_edges_of_the_command_line_get_clear_lines() {
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    let base = ["-x", "80-198.18.0.30:80", "-s", "198.18.0.40"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().chain(extra).copied().collect()
    };
    assert_usage_error(t, &with(&["-m", "0"]), "0 is not in 1..=1048576");
    assert_usage_error(t, &with(&["-p", "0"]), "--port");
    assert_usage_error(
        t,
        &with(&["-a", "2"]),
        "-a/--accelerate: only with a replayed file",
    );
    assert_usage_error(
        t,
        &with(&["--max-gap", "5"]),
        "--max-gap: only with a replayed file",
    );
    // clap's suggestion stays on the one line.
    assert_usage_error(t, &with(&["--memry", "5"]), "(did you mean --memory?)");
    let i = env!("CARGO_BIN_EXE_intercept");
    assert_usage_error(i, &["-i", "lo", "-p", "0"], "--listen-port");
}

/// A run whose output nobody reads any more (`tcpcopy ... | head`) ends normally, honours
/// RUST_LOG, writes no colour codes into a pipe, and removes its pid file. Needs root (the raw
/// socket to the target).
#[test]
fn a_closed_stdout_a_pipe_and_the_pid_file_are_handled_at_exit() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    let dir = std::env::temp_dir().join(format!("tcpcopy-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One packet, which waits for the (unreachable) intercept: --duration ends the run first.
    let file = dir.join("one.pcap");
    std::fs::write(&file, raw_ip_pcap(&[&tcp_to_port_80()], &[])).unwrap();
    let pid = dir.join("tcpcopy.pid");
    let mut child = std::process::Command::new(t)
        .args([
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "127.0.0.1:9",
            "--duration",
            "1",
        ])
        .arg("-i")
        .arg(&file)
        .arg("-P")
        .arg(&pid)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpcopy starts");
    // Nobody reads stdout: its reader is gone before tcpcopy writes its final lines.
    drop(child.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !pid.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(pid.exists(), "the pid file is written while running");
    let out = child.wait_with_output().expect("tcpcopy ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no panic on a closed stdout:\n{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes into a pipe:\n{err}"
    );
    // RUST_LOG is the filter: warnings (the unreachable intercept) and nothing below them.
    assert!(err.contains("WARN"), "{err}");
    assert!(
        !err.contains("INFO"),
        "RUST_LOG=warn leaves info out:\n{err}"
    );
    assert!(!pid.exists(), "the pid file is removed at exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file damaged before its first packet says so at once, not after the wait for an intercept
/// (unreachable here). Needs root (the raw socket to the target).
#[test]
fn a_file_damaged_from_its_start_fails_without_waiting_for_an_intercept() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    let dir = std::env::temp_dir().join(format!("tcpcopy-early-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cut.pcap");
    // Half a record header.
    std::fs::write(&file, raw_ip_pcap(&[], &[1, 0, 0, 0, 0, 0, 0, 0])).unwrap();
    let path = file.display().to_string();
    let started = std::time::Instant::now();
    let (code, err) = run(
        t,
        &["-x", "80-198.18.0.30:80", "-s", "127.0.0.1:9", "-i", &path],
    );
    let took = started.elapsed();
    assert_eq!(code, 1, "{err}");
    // The one error line (the log's lines from other threads may come after it).
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("tcpcopy: ")).collect();
    assert_eq!(
        errors,
        [format!("tcpcopy: {path}: truncated after 0 packets").as_str()],
        "{err}"
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "said so after {took:?}, not at once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// logrotate's way: the log file is moved away, then SIGHUP; the next lines go to a new file at
/// the path. Needs root (the raw socket to the target).
#[test]
fn sighup_reopens_the_log_file() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = env!("CARGO_BIN_EXE_tcpcopy");
    let dir = std::env::temp_dir().join(format!("tcpcopy-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One raw-IP packet, which waits for the (unreachable) intercept until --duration ends.
    let file = dir.join("one.pcap");
    std::fs::write(&file, raw_ip_pcap(&[&tcp_to_port_80()], &[])).unwrap();
    let log = dir.join("tcpcopy.log");
    let moved = dir.join("tcpcopy.log.1");
    let child = std::process::Command::new(t)
        .args([
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "127.0.0.1:9",
            "--duration",
            "2",
        ])
        .arg("-i")
        .arg(&file)
        .arg("-l")
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpcopy starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("replaying"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::rename(&log, &moved).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let out = child.wait_with_output().expect("tcpcopy ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let before = std::fs::read_to_string(&moved).unwrap();
    let after = std::fs::read_to_string(&log).expect("a new log file after SIGHUP");
    assert!(before.contains("replaying"), "{before}");
    assert!(
        after.contains("final:"),
        "the end of the run in the new file:\n{after}"
    );
    assert!(!before.contains("final:"), "{before}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under systemd (`Type=notify`) both programs say `READY=1` on `$NOTIFY_SOCKET` once they are
/// up. Needs root (capture, raw socket).
#[test]
fn both_programs_tell_systemd_they_are_ready() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tcpcopy-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(8)))
        .unwrap();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let intercept = std::process::Command::new(env!("CARGO_BIN_EXE_intercept"))
        .args([
            "-i",
            "lo",
            "--port",
            "80",
            "-b",
            "127.0.0.1",
            "-p",
            &free_port,
        ])
        .env("NOTIFY_SOCKET", &socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("intercept starts");
    let mut buf = [0u8; 64];
    let got = listener.recv(&mut buf);
    let _ = std::process::Command::new("kill")
        .arg(intercept.id().to_string())
        .status();
    let status = { intercept }.wait().unwrap();
    assert_eq!(
        got.ok().map(|n| &buf[..n]),
        Some(&b"READY=1\n"[..]),
        "intercept"
    );
    assert!(
        status.success(),
        "intercept ends cleanly on SIGTERM: {status:?}"
    );
    // tcpcopy, replaying an empty file against an unreachable intercept, is up too.
    let file = dir.join("empty.pcap");
    std::fs::write(&file, raw_ip_pcap(&[], &[])).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tcpcopy"))
        .args([
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "127.0.0.1:9",
            "--duration",
            "1",
        ])
        .arg("-i")
        .arg(&file)
        .env("NOTIFY_SOCKET", &socket)
        .output()
        .expect("tcpcopy runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = listener.recv(&mut buf).expect("tcpcopy's notification");
    assert_eq!(&buf[..n], b"READY=1\n", "tcpcopy");
    let _ = std::fs::remove_dir_all(&dir);
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A classic pcap file of raw IP packets (link type 101), each recorded at 1 s, then `tail`.
fn raw_ip_pcap(packets: &[&[u8]], tail: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for p in packets {
        for v in [1u32, 0, p.len() as u32, p.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(p);
    }
    f.extend_from_slice(tail);
    f
}

/// An IPv4 TCP header pair, 198.18.0.10 to 198.18.0.20 port 80 (never sent by these tests: the
/// replay waits for an intercept that is not there).
fn tcp_to_port_80() -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[..4].copy_from_slice(&[0x45, 0, 0, 40]);
    packet[8..10].copy_from_slice(&[64, 6]);
    packet[12..20].copy_from_slice(&[198, 18, 0, 10, 198, 18, 0, 20]);
    packet[22..24].copy_from_slice(&80u16.to_be_bytes());
    packet[32] = 5 << 4;
    packet
}
