//! Stream mode (`--mode stream`) end to end: tcpcopy on the online host replays each captured
//! session over a connection of its own to the target — no intercept, no `-s`, no `-c`. The
//! fidelity scenarios of `tests/fidelity.rs` in this mode, every HTTP request in order, and the
//! target reached over TLS and with a PROXY protocol v2 header naming the real client.
//! Each test builds and removes its own lab (needs root); a mutex keeps them sequential.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, Lab, LoadSpec};

/// A protocol where the server greets first, in stream mode: each session byte-exact.
#[test]
fn stream_mode_server_speaks_first_sessions_replicate_byte_exact() {
    fidelity::greeted_sessions_replicate_byte_exact("tsG", Mode::Stream);
}

/// Memcached hot backup in stream mode: 20 sessions joined mid-connection, 100,000 sets, the
/// target's key→value map equal to the online one.
#[test]
fn stream_mode_memcached_hot_backup_joined_after_connect_matches_exactly() {
    fidelity::memcached_hot_backup_matches_exactly("tsM", Mode::Stream);
}

fn load(prefix: &str, conns: usize, per_conn: usize, short: usize) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: conns,
        requests_per_connection: per_conn,
        short_connections: short,
        short_concurrency: 8,
        rate_limit: None,
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(120),
    }
}

/// Every URI of `spec` exactly once in `got`, each keep-alive connection's in its order.
fn assert_all_in_order(spec: &LoadSpec, got: &[String], log: &str) {
    let (keepalive, short) = loadgen::expected_uris(spec);
    let have: HashSet<&String> = got.iter().collect();
    let missing: Vec<&String> = keepalive
        .iter()
        .flatten()
        .chain(short.iter())
        .filter(|u| !have.contains(u))
        .collect();
    let total = keepalive.iter().map(Vec::len).sum::<usize>() + short.len();
    assert!(
        missing.is_empty(),
        "{} of {total} URIs never reached the target (first: {:?})\n{}",
        missing.len(),
        missing.first(),
        final_line(log)
    );
    assert_eq!(got.len(), total, "no request arrived twice");
    let position: HashMap<&String, usize> = got.iter().enumerate().map(|(i, u)| (u, i)).collect();
    for (c, uris) in keepalive.iter().enumerate() {
        let pos: Vec<usize> = uris.iter().map(|u| position[u]).collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "connection {c}: requests reordered at the target"
        );
    }
}

/// 10,000 HTTP requests to nginx (40 keep-alive connections of 200, 2,000 short connections):
/// every one reaches the target over tcpcopy's own connections, each connection's in order, every
/// answer is compared equal with production's (`--compare`), and the stream-mode line counts the
/// connections.
#[test]
fn stream_mode_http_every_request_reaches_the_target_in_order() {
    let _guard = common::sequential();
    let mut spec = ScenarioSpec::new("tsH", Mode::Stream, Servers::Nginx, bin_dir());
    spec.extra_tcpcopy_args = ["--compare", "--report", "{scratch}/report.json"]
        .map(String::from)
        .to_vec();
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let load = load("sh", 40, 200, 2_000);
    let report = sc.load(&load).expect("load runs");
    assert_eq!(
        report.ok, 10_000,
        "online answered every request: {report:?}"
    );
    let target = sc
        .wait_target(10_000, Duration::from_secs(60))
        .expect("target log");
    // The last answers are read and compared.
    std::thread::sleep(Duration::from_millis(1500));
    let log = sc.stop_tcpcopy().expect("tcpcopy stops cleanly");
    for l in log.lines().filter(|l| l.contains("SLOW")).take(20) {
        eprintln!("{l}");
    }
    eprintln!(
        "slow: {}",
        log.lines().filter(|l| l.contains("SLOW")).count()
    );
    assert_all_in_order(&load, &target, &log);
    // The answers read from tcpcopy's own connections were compared as intercept's are.
    let report = sc
        .read_report("report.json")
        .unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    let cmp = report.comparison.as_ref().expect("a comparison section");
    assert_eq!(
        (cmp.compared, cmp.equal, cmp.different),
        (10_000, 10_000, 0),
        "{cmp:?}"
    );
    let stream_line = log
        .lines()
        .find(|l| l.contains("final: stream mode: connections opened"))
        .unwrap_or_else(|| panic!("no stream-mode final line:\n{log}"));
    assert!(
        stream_line.contains("connections opened 2040, failed 0"),
        "{stream_line}"
    );
    eprintln!("{}\n{stream_line}", final_line(&log));
    assert_client_isolated(sniffer);
}

/// The target's extra nginx listeners: plain with PROXY protocol, TLS, TLS with PROXY protocol.
const PROXY_PORT: u16 = 8081;
const TLS_PORT: u16 = 8443;
const TLS_PROXY_PORT: u16 = 8444;
const TARGET_NAME: &str = "target.lab.test";

/// An nginx with those listeners, logging the port, the PROXY header's client address and the
/// URI of each request.
fn tls_proxy_config(w: &Path) -> String {
    let w = w.display();
    let ip = Lab::TARGET_IP;
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid "{w}/nginx.pid";
error_log "{w}/error.log" warn;
events {{ worker_connections 1024; }}
http {{
    log_format pp '$server_port $status $ssl_protocol $proxy_protocol_addr $remote_addr $request_uri';
    access_log "{w}/access.log" pp;
    client_body_temp_path "{w}/client_body";
    proxy_temp_path "{w}/proxy";
    fastcgi_temp_path "{w}/fastcgi";
    uwsgi_temp_path "{w}/uwsgi";
    scgi_temp_path "{w}/scgi";
    default_type text/plain;
    ssl_certificate "{w}/cert.pem";
    ssl_certificate_key "{w}/key.pem";
    server {{
        listen {ip}:{PROXY_PORT} proxy_protocol;
        listen {ip}:{TLS_PORT} ssl;
        listen {ip}:{TLS_PROXY_PORT} ssl proxy_protocol;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
    )
}

/// A self-signed certificate for [`TARGET_NAME`] and the target's address; not a CA's
/// (webpki refuses a CA certificate as the server's own).
fn make_certificate(dir: &Path) {
    let san = format!("subjectAltName=DNS:{TARGET_NAME},IP:{}", Lab::TARGET_IP);
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={TARGET_NAME}"), "-addext", &san])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("openssl runs (Debian: apt install openssl)");
    assert!(out.status.success(), "openssl: {out:?}");
    // The lab's programs may run as nobody: the test's key is no secret.
    for f in ["key.pem", "cert.pem"] {
        std::fs::set_permissions(
            dir.join(f),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
}

/// One request in the extra nginx's access log.
#[derive(Debug)]
struct Logged {
    status: String,
    /// `-` without TLS.
    tls: String,
    /// `-` without a PROXY header.
    proxy_client: String,
    peer: String,
    uri: String,
}

/// The requests the extra nginx logged on `port`.
fn logged(dir: &Path, port: u16) -> Vec<Logged> {
    let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let [p, status, tls, proxy_client, peer, uri] = f[..] else {
                return None;
            };
            (p.parse() == Ok(port)).then(|| Logged {
                status: status.into(),
                tls: tls.into(),
                proxy_client: proxy_client.into(),
                peer: peer.into(),
                uri: uri.into(),
            })
        })
        .collect()
}

/// Done-when 3: with `--proxy-protocol`, `--target-tls`, and both, the target's nginx logs the
/// real client (the client namespace's address) as `$proxy_protocol_addr`, every request arrives
/// over TLS where asked, and the connection itself comes from the online host.
#[test]
fn stream_mode_tls_and_proxy_protocol_show_the_real_client() {
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tsP", Mode::Stream, Servers::Nginx, bin_dir())
    };
    let sc = Scenario::start(&spec).expect("scenario starts");
    let dir = sc.scratch.path().join("nginx-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    make_certificate(&dir);
    std::fs::write(dir.join("nginx.conf"), tls_proxy_config(&dir)).unwrap();
    let nginx = lab::nginx::nginx_binary().expect("nginx installed");
    let args: Vec<String> = ["-p", &dir.display().to_string(), "-c"]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.join("nginx.conf").display().to_string()])
        .collect();
    let mut server = sc
        .lab
        .spawn(sc.lab.ns_target(), &nginx, &args, &dir.join("nginx.out"))
        .expect("nginx with TLS and PROXY listeners");
    wait_listening(&sc, TLS_PROXY_PORT);
    let ca = dir.join("cert.pem").display().to_string();
    let cases: [(&str, u16, Vec<&str>); 3] = [
        ("proxy", PROXY_PORT, vec!["--proxy-protocol"]),
        ("tls", TLS_PORT, vec!["--target-tls", "--target-ca", &ca]),
        (
            "both",
            TLS_PROXY_PORT,
            vec![
                "--proxy-protocol",
                "--target-tls",
                "--target-ca",
                &ca,
                "--target-sni",
                TARGET_NAME,
            ],
        ),
    ];
    let client = Lab::CLIENT_IP.to_string();
    let online_host = Lab::ONLINE_IP.to_string();
    for (name, port, opts) in cases {
        let mut args: Vec<String> = [
            "-x",
            &format!("80-{}:{port}", Lab::TARGET_IP),
            "--mode",
            "stream",
            "--stats-interval",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(opts.iter().map(|s| s.to_string()));
        let log_file = sc.scratch.path().join(format!("tcpcopy-{name}.log"));
        let exe = bin_dir().join("tcpcopy");
        let mut tcpcopy = sc
            .lab
            .spawn(sc.lab.ns_online(), &exe, &args, &log_file)
            .expect("tcpcopy starts");
        assert!(
            wait_until(|| tcpcopy.log_text().contains("capturing on")),
            "{name}: tcpcopy captures\n{}",
            tcpcopy.log_text()
        );
        let spec = load(name, 5, 20, 20);
        assert_eq!(sc.load(&spec).expect("load").ok, 120);
        if !wait_until(|| logged(&dir, port).len() >= 120) {
            let errors = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!(
                "{name}: {} of 120 requests at the target\ntcpcopy:\n{}\nnginx:\n{errors}",
                logged(&dir, port).len(),
                tcpcopy.log_text()
            );
        }
        tcpcopy.stop().expect("tcpcopy stops");
        let log = tcpcopy.log_text();
        let lines = logged(&dir, port);
        let uris: Vec<String> = lines.iter().map(|l| l.uri.clone()).collect();
        assert_all_in_order(&spec, &uris, &log);
        let (proxied, tls) = (port != TLS_PORT, port != PROXY_PORT);
        let wrong: Vec<&Logged> = lines
            .iter()
            .filter(|l| {
                let pp_ok = if proxied {
                    l.proxy_client == client
                } else {
                    l.proxy_client == "-"
                };
                let tls_ok = l.tls.starts_with("TLSv1.") == tls;
                !pp_ok || !tls_ok || l.status != "200" || l.peer != online_host
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{name}: {} requests not answered 200 from the online host with PROXY {proxied} (the real client {client}) and TLS {tls} (first: {:?})\n{log}",
            wrong.len(),
            wrong.first()
        );
        assert!(
            log.contains("failed 0 (refused 0, unreachable 0, timed out 0, TLS 0"),
            "{name}: every connection opened\n{log}"
        );
        eprintln!(
            "{name}: {} requests, PROXY client {}, TLS {}",
            lines.len(),
            lines[0].proxy_client,
            lines[0].tls
        );
    }
    let _ = server.stop();
}

/// Waits (up to 10 s) until the target's extra nginx accepts on `port`.
fn wait_listening(sc: &Scenario, port: u16) {
    let addr = std::net::SocketAddr::new(Lab::TARGET_IP.into(), port);
    let ok = sc.lab.run_in(sc.lab.ns_target(), || {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(ok, "the target's TLS/PROXY nginx listens on {addr}");
}

/// Polls `done` for up to 30 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
