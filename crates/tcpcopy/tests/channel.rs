//! The encrypted channel (`--secret-file`) and the caps on the tcpcopy <-> intercept connection.
//!
//! Without root: a secret file must be private, non-empty and readable, or either program
//! refuses to start with one line. In network namespaces (root): an intercept with a secret gives
//! nothing beyond its handshake reply to a client without the secret, with a wrong one or
//! replaying a real tcpcopy's recorded bytes, and cuts off a garbage, a trickling and a flooding
//! peer with one line each, while a real tcpcopy with the secret keeps replicating; a tcpcopy with
//! the secret, pointed at fake intercepts that speak garbage, stall, flood or hold another secret
//! (and at a real one without a secret), logs one line for each, keeps replicating through the
//! real intercept, and does not grow.

mod common;
use common::*;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, Lab, LoadSpec, ScratchDir};
use protocol::secure::{self, Initiator, Psk};
use protocol::{Decoder, Message};

const INTERCEPT_PORT: u16 = protocol::DEFAULT_PORT;
/// A handshake reply on the wire: frame header and Noise message.
const REPLY_LEN: usize = 5 + secure::HANDSHAKE_LEN;

fn is_root() -> bool {
    lab::netlab::is_root()
}

/// A secret file in its own scratch directory, mode 600.
struct SecretFile {
    dir: ScratchDir,
}

impl SecretFile {
    fn new(tag: &str, bytes: &[u8]) -> SecretFile {
        let dir = ScratchDir::new(tag).unwrap();
        std::fs::write(dir.path().join("secret"), bytes).unwrap();
        let f = SecretFile { dir };
        f.chmod(0o600);
        // The lab may run the programs as another user (TCPCOPY_LAB_USER): the file is theirs
        // (root still reads it).
        if let Some(user) = lab::unprivileged::user() {
            let done = Command::new("chown")
                .arg(&user)
                .arg(f.path())
                .status()
                .expect("chown");
            assert!(done.success(), "chown {user}");
        }
        f
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("secret")
    }
    fn arg(&self) -> String {
        self.path().display().to_string()
    }
    fn chmod(&self, mode: u32) {
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_secret_file_must_be_private_and_non_empty_or_nothing_starts() {
    let secret = SecretFile::new("channel-file", b"0123456789abcdef0123456789abcdef");
    let missing = secret.dir.path().join("missing").display().to_string();
    let tcpcopy = |file: &str| {
        let args = [
            "-x",
            "80-198.18.0.30:80",
            "-s",
            "198.18.0.40",
            "--secret-file",
        ];
        run(
            env!("CARGO_BIN_EXE_tcpcopy"),
            &[&args[..], &[file]].concat(),
        )
    };
    let intercept = |file: &str| {
        run(
            env!("CARGO_BIN_EXE_intercept"),
            &["-i", "lo", "--secret-file", file],
        )
    };
    let check = |(code, err): (i32, String), says: &str| {
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("--secret-file") && err.contains(says), "{err}");
    };
    for program in [&tcpcopy as &dyn Fn(&str) -> (i32, String), &intercept] {
        secret.chmod(0o644);
        check(
            program(&secret.arg()),
            "readable by group or others (mode 644)",
        );
        secret.chmod(0o604);
        check(program(&secret.arg()), "chmod 600");
        check(program(&missing), "No such file");
    }
    std::fs::write(secret.path(), b"").unwrap();
    secret.chmod(0o600);
    check(tcpcopy(&secret.arg()), "empty");
    check(intercept(&secret.arg()), "empty");
}

/// Requests that every test replicates: short and keep-alive connections.
fn load(prefix: &str) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 10,
        requests_per_connection: 60,
        short_connections: 200,
        short_concurrency: 4,
        rate_limit: Some(400),
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(60),
    }
}

/// Runs `spec` through the online server and asserts that the target received every request.
fn assert_replicated(sc: &Scenario, spec: &LoadSpec) {
    let report = sc.load(spec).expect("load runs");
    let want = spec.keepalive_connections * spec.requests_per_connection + spec.short_connections;
    assert_eq!(
        report.ok, want as u64,
        "the online server answered: {report:?}"
    );
    let (keepalive, short) = loadgen::expected_uris(spec);
    let expected: Vec<String> = keepalive.into_iter().flatten().chain(short).collect();
    let mut missing = expected.len();
    wait_until(Duration::from_secs(60), || {
        let target = sc.target_uris().expect("target log");
        let got: HashSet<&String> = target.iter().collect();
        missing = expected.iter().filter(|u| !got.contains(u)).count();
        missing == 0
    });
    assert_eq!(
        missing,
        0,
        "requests missing at the target\ntcpcopy: {}\nintercept: {}",
        sc.tcpcopy_log(),
        sc.intercept_log()
    );
}

fn intercept_addr() -> SocketAddr {
    SocketAddr::new(Lab::ASSISTANT_IP.into(), INTERCEPT_PORT)
}

/// Everything the peer sends until it closes (or 30 s pass).
fn read_to_close(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A relay in the assistant's namespace from `port` to the intercept, recording the bytes the
/// first connection sent through it.
fn recording_relay(lab: &Lab, port: u16) -> Arc<Mutex<Vec<u8>>> {
    let listener = lab.run_in(lab.ns_assistant(), || {
        TcpListener::bind((Lab::ASSISTANT_IP, port)).unwrap()
    });
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let rec = recorded.clone();
    let ns = lab.ns_assistant().to_string();
    thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let intercept = lab::netlab::run_in_ns(&ns, || TcpStream::connect(intercept_addr()))
            .expect("the relay reaches intercept");
        let (mut i_read, mut c_write) =
            (intercept.try_clone().unwrap(), client.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut i_read, &mut c_write);
            let _ = c_write.shutdown(std::net::Shutdown::Both);
        });
        let (mut c_read, mut i_write) = (client, intercept);
        let mut buf = [0u8; 4096];
        while let Ok(n) = c_read.read(&mut buf) {
            if n == 0 || i_write.write_all(&buf[..n]).is_err() {
                break;
            }
            rec.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        let _ = i_write.shutdown(std::net::Shutdown::Both);
    });
    recorded
}

/// Runs another tcpcopy in the online namespace (replicating a port nobody uses) with `extra`
/// options, towards `servers`.
fn side_tcpcopy(sc: &Scenario, name: &str, servers: &str, extra: &[String]) -> lab::Child {
    let mut args: Vec<String> = [
        "-x",
        "8081-198.18.0.30:8081",
        "-s",
        servers,
        "-c",
        Lab::FAKE_CLIENT_NET,
        "-C",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let log = sc.scratch.path().join(format!("{name}.log"));
    sc.lab
        .spawn(sc.lab.ns_online(), &bin_dir().join("tcpcopy"), &args, &log)
        .expect("tcpcopy starts")
}

/// Waits until `f` holds, up to `timeout`.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Lines of `log` that name `who` (an attacker's address), with the reason.
fn lines_of<'l>(log: &'l str, who: &str) -> Vec<&'l str> {
    log.lines().filter(|l| l.contains(who)).collect()
}

/// One attack on the intercept: a connection from the client's namespace that sends `send` (with
/// a pause after each piece) and records all it received.
struct Attack {
    name: &'static str,
    local: SocketAddr,
    done: thread::JoinHandle<(Vec<u8>, Duration)>,
}

fn attack(lab: &Lab, name: &'static str, pieces: Vec<Vec<u8>>, pause: Duration) -> Attack {
    let s = lab.run_in(lab.ns_client(), || {
        TcpStream::connect(intercept_addr()).unwrap()
    });
    let local = s.local_addr().unwrap();
    let started = Instant::now();
    let done = thread::spawn(move || {
        let reader = s.try_clone().unwrap();
        let got = thread::spawn(move || read_to_close(reader));
        let mut w = s;
        for p in pieces {
            if w.write_all(&p).is_err() {
                break;
            }
            thread::sleep(pause);
        }
        let got = got.join().unwrap();
        (got, started.elapsed())
    });
    Attack { name, local, done }
}

/// An intercept holding the secret, a real tcpcopy with it replicating, and at the same time:
/// clients without the secret, with a wrong one, replaying a real tcpcopy's recorded bytes, and
/// peers speaking garbage, trickling and flooding, plus a real tcpcopy without the secret.
#[test]
fn intercept_gives_nothing_to_a_peer_without_the_secret_and_keeps_serving_the_one_with_it() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let _guard = sequential();
    let secret = SecretFile::new("channel-secret", &[7u8; 32]);
    let mut spec = ScenarioSpec::new("chan-listen", Mode::Assistant, Servers::Embedded, bin_dir());
    spec.extra_intercept_args = vec!["--secret-file".into(), secret.arg()];
    spec.extra_tcpcopy_args = vec!["--secret-file".into(), secret.arg()];
    let sc = Scenario::start(&spec).expect("scenario starts");
    assert!(
        sc.tcpcopy_log().contains("(encrypted)"),
        "{}",
        sc.tcpcopy_log()
    );

    // What a real tcpcopy sends, recorded through a relay.
    let recorded = recording_relay(&sc.lab, 36998);
    let recorder = side_tcpcopy(
        &sc,
        "recorder",
        &format!("{}:36998", Lab::ASSISTANT_IP),
        &["--secret-file".into(), secret.arg()],
    );
    // The handshake message and the sealed hello (a 17-byte frame in a 35-byte record); then
    // the routes follow at once.
    assert!(
        wait_until(Duration::from_secs(15), || recorded.lock().unwrap().len()
            >= REPLY_LEN + 2 + 16 + 17),
        "the recorder tcpcopy connected through the relay: {}",
        recorder.log_text()
    );
    thread::sleep(Duration::from_millis(500));
    drop(recorder);
    let recorded = recorded.lock().unwrap().clone();
    // A real tcpcopy without the secret.
    let plain = side_tcpcopy(&sc, "plain", &Lab::ASSISTANT_IP.to_string(), &[]);

    let sniffer = sniff_client(&sc);
    let mut hello = Vec::new();
    protocol::encode_hello(&mut hello, 0, 9, None);
    let mut wrong = Vec::new();
    let _ = Initiator::start(&Psk::derive(b"not the secret").unwrap(), &mut wrong).unwrap();
    let mut flood = vec![0u8, 0x20, 0, 0, 4];
    flood.resize(1 << 20, 0);
    let lab = &sc.lab;
    let none = Duration::ZERO;
    let attacks = [
        attack(lab, "no secret", vec![hello], none),
        attack(lab, "wrong secret", vec![wrong], none),
        attack(lab, "replay", vec![recorded], none),
        attack(
            lab,
            "garbage",
            vec![b"GET / HTTP/1.1\r\n\r\n".to_vec()],
            none,
        ),
        attack(
            lab,
            "trickle",
            [0u8, 0, 0, 48, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
                .iter()
                .map(|b| vec![*b])
                .collect(),
            Duration::from_secs(1),
        ),
        attack(lab, "flood", vec![flood; 64], none),
    ];
    let spec = load("chan-listen");
    assert_replicated(&sc, &spec);

    let mut results = Vec::new();
    for a in attacks {
        let (got, took) = a.done.join().unwrap();
        results.push((a.name, a.local, got, took));
    }
    let log = sc.intercept_log();
    for (name, local, got, took) in &results {
        let who = format!("tcpcopy {local}");
        let lines = lines_of(&log, &who);
        assert_eq!(lines.len(), 1, "{name}: one line\n{log}");
        let (reason, reply) = match *name {
            "no secret" => ("refused: intercept requires a secret", "reject"),
            "wrong secret" => ("peer did not prove the secret", "nothing"),
            "replay" => ("peer did not prove the secret", "handshake reply"),
            "garbage" => ("another protocol", "nothing"),
            "trickle" => ("opening exchange not done within", "nothing"),
            _ => ("first message longer than", "nothing"),
        };
        assert!(lines[0].contains(reason), "{name}: {}", lines[0]);
        match reply {
            "nothing" => assert!(got.is_empty(), "{name}: got {} bytes", got.len()),
            "handshake reply" => assert_eq!(got.len(), REPLY_LEN, "{name}: only the reply"),
            _ => {
                let mut dec = Decoder::new();
                dec.feed(got);
                assert!(
                    matches!(dec.next_message(), Ok(Some(Message::Reject { reason })) if reason.contains("requires a secret")),
                    "{name}"
                );
                assert_eq!(dec.pending(), 0, "{name}: nothing after the refusal");
            }
        }
        assert!(
            *took < Duration::from_secs(20),
            "{name}: cut off after {took:?}"
        );
        eprintln!(
            "{name}: {} bytes, cut off after {took:?}: {}",
            got.len(),
            lines[0]
        );
    }
    let plain_log = plain.log_text();
    assert!(
        plain_log.contains("intercept refused us: this intercept requires a secret"),
        "{plain_log}"
    );
    assert!(
        log.contains("refused: intercept requires a secret, and the peer sent a plain hello"),
        "{log}"
    );

    // A flood of connections: beyond the cap, each is closed at once, with a line a second.
    let flood_started = Instant::now();
    let idle: Vec<TcpStream> = sc.lab.run_in(sc.lab.ns_client(), || {
        (0..300)
            .map(|_| TcpStream::connect(intercept_addr()).unwrap())
            .collect()
    });
    assert!(
        wait_until(Duration::from_secs(10), || sc
            .intercept_log()
            .contains("connections open, the limit")),
        "{}",
        sc.intercept_log()
    );
    assert_replicated(&sc, &load("chan-listen-2"));
    drop(idle);
    let refusals = sc.intercept_log().matches("the limit (").count() as u64;
    let seconds = flood_started.elapsed().as_secs();
    assert!(
        (1..=seconds + 1).contains(&refusals),
        "a line a second at most: {refusals} in {seconds} s"
    );

    // The real tcpcopy kept its connection throughout.
    assert!(
        !sc.tcpcopy_log().contains("lost intercept"),
        "{}",
        sc.tcpcopy_log()
    );
    assert_client_isolated(sniffer);
}

/// How a fake intercept treats each connection.
#[derive(Clone, Copy, Debug)]
enum Fake {
    /// Answers with an HTTP error.
    Garbage,
    /// Reads and never answers.
    Stall,
    /// Sends a frame header for 2 MiB, then bytes without end.
    Flood,
    /// Answers the handshake as an intercept holding another secret would have to.
    WrongSecret,
}

/// A fake intercept in the assistant's namespace on `port`, until `stop`.
fn fake_intercept(
    lab: &Lab,
    port: u16,
    how: Fake,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let listener = lab.run_in(lab.ns_assistant(), || {
        TcpListener::bind((Lab::ASSISTANT_IP, port)).unwrap()
    });
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let stop = stop.clone();
                    thread::spawn(move || fake_conn(s, how, &stop));
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

fn fake_conn(mut s: TcpStream, how: Fake, stop: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = [0u8; REPLY_LEN];
    if s.read_exact(&mut hello).is_err() {
        return;
    }
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match how {
        Fake::Garbage => {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
        Fake::Stall => {}
        Fake::Flood => {
            let mut chunk = vec![0u8; 64 << 10];
            chunk[..5].copy_from_slice(&[0, 0x20, 0, 0, 5]);
            while !stop.load(Ordering::Relaxed) && s.write_all(&chunk).is_ok() {
                chunk[..5].fill(0);
            }
            return;
        }
        Fake::WrongSecret => {
            // A welcome that only a holder of another secret could make: it answers a hello of
            // that secret.
            let other = Psk::derive(b"another secret").unwrap();
            let mut theirs = Vec::new();
            let _ = Initiator::start(&other, &mut theirs).unwrap();
            let mut welcome = Vec::new();
            let _ = secure::respond(&other, &theirs[5..], &mut welcome).unwrap();
            let _ = s.write_all(&welcome);
        }
    }
    // Hold the connection until tcpcopy drops it.
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// Resident memory of a process, in KB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// tcpcopy with the secret, pointed at the real intercept and at fakes that speak garbage, stall,
/// flood or hold another secret, and at a real intercept without a secret: one line for each,
/// replication through the real one, and no growth.
#[test]
fn tcpcopy_shrugs_off_fake_intercepts_and_replicates_through_the_real_one() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let _guard = sequential();
    let secret = SecretFile::new("channel-secret", b"a passphrase is fine, random is better");
    let mut spec = ScenarioSpec::new(
        "chan-connect",
        Mode::Assistant,
        Servers::Embedded,
        bin_dir(),
    );
    spec.extra_intercept_args = vec!["--secret-file".into(), secret.arg()];
    spec.start_tcpcopy = false;
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let stop = Arc::new(AtomicBool::new(false));
    let fakes = [
        (36991, Fake::Garbage, "another protocol"),
        (36992, Fake::Stall, "no answer during the opening exchange"),
        (36993, Fake::Flood, "first message longer than"),
        (
            36994,
            Fake::WrongSecret,
            "intercept did not prove the secret",
        ),
    ];
    let threads: Vec<_> = fakes
        .iter()
        .map(|&(port, how, _)| fake_intercept(&sc.lab, port, how, stop.clone()))
        .collect();
    // A real intercept without a secret.
    let plain_intercept = sc
        .lab
        .spawn(
            sc.lab.ns_assistant(),
            &bin_dir().join("intercept"),
            &["-i", Lab::IFACE, "--port", "80", "-p", "36995"].map(String::from),
            &sc.scratch.path().join("plain-intercept.log"),
        )
        .expect("intercept starts");
    let servers: Vec<String> = [INTERCEPT_PORT, 36991, 36992, 36993, 36994, 36995]
        .iter()
        .map(|p| format!("{}:{p}", Lab::ASSISTANT_IP))
        .collect();
    let args: Vec<String> = [
        "-x",
        "80-198.18.0.30:80",
        "-s",
        &servers.join(","),
        "-c",
        Lab::FAKE_CLIENT_NET,
        "-C",
        "1",
        // A small capture ring: its pages, touched as traffic comes, count as resident.
        "-B",
        "8",
        "--secret-file",
        &secret.arg(),
    ]
    .map(String::from)
    .to_vec();
    let log = sc.scratch.path().join("tcpcopy.log");
    let child = sc
        .lab
        .spawn(sc.lab.ns_online(), &bin_dir().join("tcpcopy"), &args, &log)
        .expect("tcpcopy starts");
    let pid = child.pid();
    sc.tcpcopy = Some(child);
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connects to the real intercept");
    let rss_start = rss_kb(pid);
    let sniffer = sniff_client(&sc);
    let mut rss_peak = rss_start;
    let sampling = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    assert_replicated(&sc, &load("chan-connect"));
    // Several reconnection rounds of every fake (the backoff reaches 3 s).
    thread::sleep(Duration::from_secs(5));
    let log = sc.tcpcopy_log();
    stop.store(true, Ordering::Relaxed);
    rss_peak = rss_peak.max(sampling.join().unwrap());
    for t in threads {
        t.join().unwrap();
    }
    for (port, how, reason) in fakes {
        let who = format!("cannot reach intercept {}:{port}", Lab::ASSISTANT_IP);
        let lines = lines_of(&log, &who);
        // The first failure, then (while it lasts) a reminder every tenth attempt, about 30 s.
        assert!((1..=2).contains(&lines.len()), "{how:?}: one line\n{log}");
        assert!(lines[0].contains(reason), "{how:?}: {}", lines[0]);
        eprintln!("{how:?}: {}", lines[0]);
    }
    let who = format!("cannot reach intercept {}:36995", Lab::ASSISTANT_IP);
    let lines = lines_of(&log, &who);
    assert!(
        (1..=2).contains(&lines.len()),
        "no-secret intercept: one line\n{log}"
    );
    assert!(
        lines[0].contains("intercept refused us: tcpcopy offers an encrypted channel, but this intercept has no secret"),
        "{}",
        lines[0]
    );
    let plain_log = plain_intercept.log_text();
    assert!(
        plain_log.contains(
            "refused: tcpcopy offers an encrypted channel, but this intercept has no secret"
        ),
        "{plain_log}"
    );
    assert!(!log.contains("lost intercept"), "{log}");
    assert_eq!(log.matches("connected to intercept").count(), 1, "{log}");
    eprintln!("tcpcopy resident: {rss_start} KB after connecting, {rss_peak} KB at most");
    assert!(
        rss_peak < rss_start + 32 * 1024,
        "tcpcopy grew from {rss_start} KB to {rss_peak} KB"
    );
    assert_client_isolated(sniffer);
}
