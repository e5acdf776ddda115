//! Every option letter of C TCPCopy 1.3's `tcpcopy` and C intercept 1.0 either does here what it
//! does there (checked on the configuration it gives) or is refused with one line that says what
//! to use instead (checked on the binary). The letter lists are the C programs' own; a letter
//! missing from the tables below fails the test.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tcpcopy::cli::{InterceptCli, TcpcopyCli};
use tcpcopy::config::{Input, InterceptConfig, LiveConfig, ResponseSource, SendVia};

/// C TCPCopy 1.3's option letters (`tcpcopy -h`).
const TCPCOPY_LETTERS: &str = "xsciaITnfrtkmMDRUCWLOglPpdHoFBSvh";
/// C intercept 1.0's option letters (`intercept -h`).
const INTERCEPT_LETTERS: &str = "iFpbxsnDtlPdqvh";

const RULE: [&str; 2] = ["-x", "80-198.18.0.30:8080"];

fn tcpcopy(extra: &[&str]) -> Result<(TcpcopyCli, LiveConfig), String> {
    let args = ["tcpcopy"].iter().chain(&RULE).chain(extra);
    let cli = TcpcopyCli::try_parse_from(args).map_err(|e| e.to_string())?;
    let cfg = LiveConfig::from_opts(&cli.opts)?;
    Ok((cli, cfg))
}

fn live(extra: &[&str]) -> LiveConfig {
    tcpcopy(extra)
        .unwrap_or_else(|e| panic!("{extra:?}: {e}"))
        .1
}

fn intercept(args: &[&str]) -> (InterceptCli, InterceptConfig) {
    let cli = InterceptCli::try_parse_from(["intercept"].iter().chain(args))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let cfg = InterceptConfig::from_cli(&cli).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    (cli, cfg)
}

/// Runs a binary; (exit status, stdout, stderr).
fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A refused letter: exit 2 and one line naming the letter and what to do instead.
#[track_caller]
fn refused(bin: &str, args: &[&str], letter: &str, instead: &str) {
    let (code, _, err) = run(bin, args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.contains(letter) && err.contains(instead),
        "{args:?}: {err}"
    );
}

fn replay_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("c-options-{}.pcap", std::process::id()));
    // A pcap header alone: an existing file, which is all -i FILE needs to mean a replay.
    let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    header.extend([0; 8]);
    header.extend(65535u32.to_le_bytes());
    header.extend(101u32.to_le_bytes());
    std::fs::write(&path, header).unwrap();
    path
}

#[test]
fn every_tcpcopy_letter_of_c_tcpcopy_does_the_same_or_is_refused() {
    let bin = env!("CARGO_BIN_EXE_tcpcopy");
    let file = replay_file();
    let file = file.to_str().unwrap();
    let mut checked = String::new();
    let mut check = |letter: char| checked.push(letter);

    check('x');
    let c = live(&[]);
    assert_eq!(c.core.rules[0].target, "198.18.0.30:8080".parse().unwrap());
    assert_eq!(c.core.rules[0].online_port, 80);
    check('s');
    let c = live(&["-s", "198.18.0.40,198.18.0.41:9000"]);
    assert_eq!(
        c.intercepts,
        ["198.18.0.40:36524", "198.18.0.41:9000"].map(|a| a.parse::<SocketAddr>().unwrap())
    );
    // Without -s, intercept is looked for on the target (the first C TCPCopy's queue mode).
    assert_eq!(live(&[]).intercepts, ["198.18.0.30:36524".parse().unwrap()]);
    check('c');
    assert_eq!(live(&["-c", "62.135.200.x"]).core.fake_clients.len(), 254);
    check('i');
    assert_eq!(
        live(&["-i", "eth0"]).input,
        Input::Capture {
            interface: Some("eth0".into())
        }
    );
    assert!(matches!(live(&["-i", file]).input, Input::File { .. }));
    check('a');
    check('I');
    check('T');
    let Input::File { pace, .. } = live(&["-i", file, "-a", "2", "-I", "500", "-T", "3"]).input
    else {
        panic!("a replay")
    };
    assert_eq!(pace.accelerate, 2.0);
    assert_eq!(pace.skip_gaps, Some(Duration::from_millis(500)));
    assert_eq!(pace.loops, 3);
    check('n');
    assert_eq!(live(&["-n", "1023"]).core.copies, 1023);
    check('f');
    assert_eq!(live(&["-f", "3"]).core.port_offset, 3 * 2048);
    assert_eq!(live(&[]).core.port_offset, 0);
    check('r');
    assert_eq!(live(&["-r", "30"]).core.sample_percent, 30);
    check('t');
    assert_eq!(
        live(&["-t", "120"]).core.session_timeout,
        Duration::from_secs(120)
    );
    check('k');
    assert_eq!(
        live(&["-k", "30"]).core.idle_timeout,
        Some(Duration::from_secs(30))
    );
    check('m');
    assert_eq!(live(&["-m", "256"]).core.max_buffered_bytes, 256 << 20);
    check('M');
    assert_eq!(live(&["-M", "1400"]).core.mtu, 1400);
    check('D');
    assert_eq!(live(&["-D", "1200"]).core.mss, 1200);
    check('R');
    assert_eq!(
        live(&["-R", "50"]).core.initial_rto,
        Duration::from_millis(50)
    );
    check('U');
    assert!(live(&["-U", "8"]).notes[0].starts_with("-U: ignored"));
    check('C');
    assert_eq!(live(&["-C", "4"]).connections, 4);
    check('W');
    assert!(live(&["-W"]).core.no_wait);
    check('L');
    assert!(live(&["-L"]).notes[0].starts_with("-L:"));
    check('O');
    assert!(!live(&["-O"]).core.join_open_sessions);
    assert!(live(&[]).core.join_open_sessions);
    check('g');
    assert!(live(&["-g"]).core.sample_ramp);
    check('l');
    check('P');
    check('d');
    let (cli, _) = tcpcopy(&["-l", "/tmp/t.log", "-P", "/tmp/t.pid", "-d"]).unwrap();
    assert_eq!(cli.opts.common.log, Some(PathBuf::from("/tmp/t.log")));
    assert_eq!(cli.opts.common.pid_file, Some(PathBuf::from("/tmp/t.pid")));
    assert!(cli.opts.common.daemon);
    check('p');
    assert_eq!(
        live(&["-s", "198.18.0.40", "-p", "9000"]).intercepts,
        ["198.18.0.40:9000".parse().unwrap()]
    );
    check('H');
    assert_eq!(
        live(&["-H", "198.18.0.9"]).core.localhost_as,
        Some(IpAddr::from([198, 18, 0, 9]))
    );
    check('o');
    assert_eq!(
        live(&["-o", "eth1"]).send,
        SendVia::LinkLayer {
            device: Some("eth1".into())
        }
    );
    check('F');
    assert_eq!(
        live(&["-F", "tcp and not host 198.18.0.7"])
            .filter
            .as_deref(),
        Some("tcp and not host 198.18.0.7")
    );
    check('B');
    assert_eq!(live(&["-B", "32"]).capture_buffer, Some(32 << 20));
    check('S');
    refused(
        bin,
        &[RULE[0], RULE[1], "-S", "1500"],
        "-S",
        "whole packets",
    );
    check('v');
    let (code, out, _) = run(bin, &["-v"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("tcpcopy "), "{out}");
    check('h');
    let (code, out, _) = run(bin, &["-h"]);
    assert_eq!(code, 0);
    assert!(out.contains("--transfer"), "{out}");

    assert_same_letters(&checked, TCPCOPY_LETTERS);
    let cmd = TcpcopyCli::command();
    for letter in TCPCOPY_LETTERS.chars().filter(|l| !"vh".contains(*l)) {
        assert!(
            cmd.get_arguments().any(|a| a.get_short() == Some(letter)),
            "-{letter} is not an option"
        );
    }
}

#[test]
fn every_intercept_letter_of_c_intercept_does_the_same_or_is_refused() {
    let bin = env!("CARGO_BIN_EXE_intercept");
    let mut checked = String::new();
    let mut check = |letter: char| checked.push(letter);

    check('i');
    let (_, c) = intercept(&["-i", "eth0,eth1"]);
    assert!(
        matches!(&c.source, ResponseSource::Capture { interfaces, .. } if interfaces.len() == 2)
    );
    check('F');
    let (_, c) = intercept(&["-i", "eth0", "-F", "tcp and src port 80"]);
    assert_eq!(c.filter.as_deref(), Some("tcp and src port 80"));
    check('p');
    check('b');
    let (_, c) = intercept(&["-p", "9000", "-b", "198.18.0.40"]);
    assert_eq!(c.listen, "198.18.0.40:9000".parse().unwrap());
    check('x');
    check('q');
    // No -i: queue mode, as C intercept built for it.
    let (_, c) = intercept(&["-x", "198.18.0.7", "-q", "2048"]);
    assert_eq!(
        c.source,
        ResponseSource::Queue {
            ports: None,
            queue_num: 0,
            max_len: 2048,
            pass: vec![IpAddr::from([198, 18, 0, 7])],
        }
    );
    check('s');
    let (cli, _) = intercept(&["-s", "65536"]);
    assert_eq!(cli.hash_size, Some(65536));
    check('n');
    assert_eq!(intercept(&["-n", "16"]).1.batch, 16);
    check('D');
    refused(
        bin,
        &["-D", "172.17.0.2-198.18.0.9"],
        "-D",
        "network namespace",
    );
    check('t');
    assert_eq!(
        intercept(&["-t", "30"]).1.route_timeout,
        Duration::from_secs(30)
    );
    check('l');
    check('P');
    check('d');
    let (cli, _) = intercept(&["-l", "/tmp/i.log", "-P", "/tmp/i.pid", "-d"]);
    assert_eq!(cli.common.log, Some(PathBuf::from("/tmp/i.log")));
    assert_eq!(cli.common.pid_file, Some(PathBuf::from("/tmp/i.pid")));
    assert!(cli.common.daemon);
    check('v');
    let (code, out, _) = run(bin, &["-v"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("intercept "), "{out}");
    check('h');
    let (code, out, _) = run(bin, &["-h"]);
    assert_eq!(code, 0);
    assert!(out.contains("--queue"), "{out}");

    assert_same_letters(&checked, INTERCEPT_LETTERS);
    let cmd = InterceptCli::command();
    for letter in INTERCEPT_LETTERS.chars().filter(|l| !"vh".contains(*l)) {
        assert!(
            cmd.get_arguments().any(|a| a.get_short() == Some(letter)),
            "-{letter} is not an option"
        );
    }
}

#[track_caller]
fn assert_same_letters(checked: &str, all: &str) {
    let mut a: Vec<char> = checked.chars().collect();
    let mut b: Vec<char> = all.chars().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "every C letter checked once");
}

/// `-d` goes to the background only once started; a start that fails shows its error in the
/// foreground and exits with its status (here: a damaged replay file).
#[test]
fn a_daemon_whose_start_fails_says_why_in_the_foreground() {
    let bin = env!("CARGO_BIN_EXE_tcpcopy");
    let path = std::env::temp_dir().join(format!("c-options-bad-{}.pcap", std::process::id()));
    std::fs::write(&path, b"not a capture file at all").unwrap();
    let log = path.with_extension("log");
    let args = [
        RULE[0],
        RULE[1],
        "-s",
        "127.0.0.1:9",
        "-i",
        path.to_str().unwrap(),
        "-d",
        "-l",
        log.to_str().unwrap(),
    ];
    let started = std::time::Instant::now();
    let (code, _, err) = run(bin, &args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&log);
}
