//! `-F EXPR` (tcpdump syntax): bad expressions refused in one line; in network namespaces (root),
//! our capture socket with a compiled expression takes exactly the TCP packets tcpdump with the
//! same expression takes, and tcpcopy with `-F` replicates only the sessions it matches.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lab::scenario::{Mode, ScenarioSpec, Servers};
use lab::{loadgen, Child, Lab, LabSpec, LoadSpec, ScratchDir};
use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use netio::UserFilter;

fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_expression_is_libpcaps_message_in_one_line_and_exit_2() {
    let rules = ["-x", "80-198.18.0.30:80", "-s", "198.18.0.40"];
    for (bin, args, start, says) in [
        (
            env!("CARGO_BIN_EXE_tcpcopy"),
            [&rules[..], &["-F", "tcp and prot 80"]].concat(),
            "tcpcopy: -F: ",
            "syntax error",
        ),
        (
            env!("CARGO_BIN_EXE_tcpcopy"),
            [&rules[..], &["-F", "ether host 02:00:00:00:00:01"]].concat(),
            "tcpcopy: -F: ",
            "Ethernet header",
        ),
        (
            env!("CARGO_BIN_EXE_intercept"),
            vec!["-i", "eth0", "-F", "tcp and src port eighty"],
            "intercept: -F: ",
            "eighty",
        ),
        (
            env!("CARGO_BIN_EXE_intercept"),
            vec!["--port", "80", "-F", "tcp and src port 80"],
            "intercept: -F: ",
            "assistant mode (-i)",
        ),
    ] {
        let (code, err) = run(bin, &args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(start) && err.contains(says),
            "{args:?}: {err}"
        );
    }
}

fn is_root() -> bool {
    lab::netlab::is_root()
}

fn have_tcpdump() -> bool {
    Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What identifies a TCP segment in both captures.
type Key = (IpAddr, IpAddr, u16, u16, u32, u32, u8, usize);

/// The key of a TCP segment in an IP packet; `None` for anything else.
fn tcp_key(ip: &[u8]) -> Option<Key> {
    let be16 = |b: &[u8], at: usize| Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let (src, dst, tcp, payload): (IpAddr, IpAddr, usize, usize) = match ip.first()? >> 4 {
        4 if ip.get(9) == Some(&6) => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (a.into(), b.into(), ihl, usize::from(be16(ip, 2)?) - ihl)
        }
        6 if ip.get(6) == Some(&6) => {
            let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (a.into(), b.into(), 40, usize::from(be16(ip, 4)?))
        }
        _ => return None,
    };
    let t = ip.get(tcp..tcp + 20)?;
    let doff = usize::from(t[12] >> 4) * 4;
    Some((
        src,
        dst,
        be16(t, 0)?,
        be16(t, 2)?,
        u32::from_be_bytes(t[4..8].try_into().ok()?),
        u32::from_be_bytes(t[8..12].try_into().ok()?),
        t[13],
        payload.checked_sub(doff)?,
    ))
}

/// The TCP segments of a capture file, sorted.
fn keys_of_file(path: &Path) -> Vec<Key> {
    let mut source = pcap::PcapSource::open(path).expect("tcpdump's file opens");
    let mut keys = Vec::new();
    while let Some(packet) = source.next_packet() {
        if let Some(key) = tcp_key(packet.expect("tcpdump's file reads").data) {
            keys.push(key);
        }
    }
    keys.sort();
    keys
}

/// Our capture socket on the target's interface: every TCP packet (our own filter), narrowed by
/// `expr`; its thread collects the keys until `stop`.
fn start_ring(
    lab: &Lab,
    expr: Option<&str>,
    stop: &Arc<AtomicBool>,
) -> (thread::JoinHandle<Vec<Key>>, usize) {
    let own = TcpFilter::default().compile();
    let filter = match expr {
        Some(expr) => UserFilter::compile(expr)
            .and_then(|f| f.and_then(&own))
            .unwrap_or_else(|e| panic!("{expr}: {e}")),
        None => own.clone(),
    };
    let added = filter.len() - own.len();
    let cfg = RingConfig {
        interface: Some(Lab::IFACE.into()),
        filter,
        block_count: 16,
        ..RingConfig::default()
    };
    let mut ring = lab
        .run_in(lab.ns_target(), || RingCapture::open(&cfg))
        .expect("ring opens");
    let stop = stop.clone();
    let reader = thread::spawn(move || {
        let mut keys = Vec::new();
        loop {
            let last = stop.load(Ordering::Relaxed);
            ring.poll_batch(Duration::from_millis(20), |p| {
                keys.extend(tcp_key(p.data));
            })
            .expect("ring reads");
            if last {
                break;
            }
        }
        keys.sort();
        keys
    });
    (reader, added)
}

fn start_tcpdump(lab: &Lab, dir: &ScratchDir, i: usize, expr: &str) -> Child {
    let file = dir.path().join(format!("tcpdump-{i}.pcap"));
    let args: Vec<String> = [
        "-i",
        Lab::IFACE,
        "-n",
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-s",
        "0",
        "-w",
        &file.display().to_string(),
        expr,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = dir.path().join(format!("tcpdump-{i}.log"));
    let child = lab
        .spawn(lab.ns_target(), Path::new("tcpdump"), &args, &log)
        .expect("tcpdump starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !child.log_text().contains("listening on") {
        assert!(Instant::now() < deadline, "tcpdump: {}", child.log_text());
        thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A TCP segment in an Ethernet frame tagged with `vlan`, to `dst_mac`. The test kernel may have
/// no VLAN devices (CONFIG_VLAN_8021Q), so tagged traffic is made by hand; the receiving side
/// still moves the tag into the packet's metadata, as for any tagged frame.
fn tagged_segment(
    dst_mac: [u8; 6],
    vlan: u16,
    src: IpAddr,
    dst: IpAddr,
    ports: (u16, u16),
    seq: u32,
) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&ports.0.to_be_bytes());
    tcp[2..4].copy_from_slice(&ports.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    let syn = seq == 0;
    tcp[13] = if syn { 0x02 } else { 0x18 }; // SYN, or PSH+ACK with data
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    if !syn {
        tcp.extend_from_slice(b"tagged data");
    }
    let mut frame = dst_mac.to_vec();
    frame.extend([0x02, 0, 0, 0, 0, 0x10, 0x81, 0x00]);
    frame.extend(vlan.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend([0x08, 0x00, 0x45, 0]);
            frame.extend((20 + tcp.len() as u16).to_be_bytes());
            frame.extend([0, 0, 0x40, 0, 64, 6, 0, 0]);
            frame.extend(s.octets());
            frame.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            frame.extend((tcp.len() as u16).to_be_bytes());
            frame.extend([6, 64]);
            frame.extend(s.octets());
            frame.extend(d.octets());
        }
        _ => unreachable!("one family per segment"),
    }
    frame.extend(tcp);
    frame
}

/// Sends tagged segments from the client namespace to the target's interface: VLANs 100 and 200,
/// IPv4 and IPv6, ports 80 and 443. Returns how many.
fn send_tagged(lab: &Lab) -> usize {
    let line = lab
        .sh(
            lab.ns_target(),
            &["ip", "-br", "link", "show", "dev", Lab::IFACE],
        )
        .expect("target link");
    let mac: Vec<u8> = line
        .split_whitespace()
        .nth(2)
        .expect("MAC address")
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    let mac: [u8; 6] = mac.try_into().expect("six bytes");
    let mut frames = Vec::new();
    for vlan in [100u16, 200] {
        let net = vlan as u8;
        let v4 = |host| IpAddr::V4(Ipv4Addr::new(198, 18, net, host));
        let v6 = |host: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 2, 0, vlan, 0, 0, 0, host));
        for (src, dst) in [(v4(10), v4(30)), (v6(0x10), v6(0x30))] {
            for (i, dport) in [80u16, 443].into_iter().enumerate() {
                for seq in 0..2 {
                    let sport = 41000 + vlan + i as u16;
                    frames.push(tagged_segment(mac, vlan, src, dst, (sport, dport), seq));
                }
            }
        }
    }
    lab.run_in(lab.ns_client(), || {
        let sender = netio::frame::FrameSender::open(Lab::IFACE).expect("frame socket");
        for f in &frames {
            sender.send(f).expect("frame sent");
        }
    });
    frames.len()
}

/// Echo-less servers on the target: each connection is read to its end, answered, closed.
fn serve(lab: &Lab, ports: &[u16], stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    ports
        .iter()
        .map(|&port| {
            let listener = lab
                .run_in(lab.ns_target(), || {
                    TcpListener::bind(SocketAddr::from(([0u16; 8], port)))
                })
                .expect("listener");
            listener.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            let mut buf = Vec::new();
                            let _ = s.read_to_end(&mut buf);
                            let _ = s.write_all(b"answer");
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        })
        .collect()
}

/// One short conversation from namespace `ns` to `to`.
fn converse(lab: &Lab, ns: &str, to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    lab.run_in(ns, || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{to}: {e}"));
        s.write_all(format!("request to {to}").as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"answer");
    });
}

/// Done-when item 2 of issue 21: five expressions, tcpdump and our socket side by side on the
/// target's interface while several hosts talk to it over IPv4 and IPv6, and tagged segments of
/// two VLANs pass.
#[test]
fn five_expressions_capture_exactly_what_tcpdump_captures() {
    if !is_root() || !have_tcpdump() {
        eprintln!("skipped: needs root and tcpdump");
        return;
    }
    let _guard = sequential();
    let lab = Lab::create(&LabSpec::unique("tcf")).expect("lab");
    if !lab.has_ipv6() {
        eprintln!("skipped: no IPv6 in this kernel");
        return;
    }
    let dir = ScratchDir::new("tcf").expect("scratch dir");
    let stop_servers = Arc::new(AtomicBool::new(false));
    let servers = serve(&lab, &[80, 443, 8080], &stop_servers);

    let exprs = [
        "dst port 443 or src port 8080",
        "host 198.18.0.10 or host 2001:2::20",
        "tcp and not port 443 and (src host 198.18.0.20 or dst port 8080)",
        "ip6 and dst port 80",
        "vlan 100 and tcp port 443",
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let (all, _) = start_ring(&lab, None, &stop);
    let ours: Vec<_> = exprs
        .iter()
        .map(|e| start_ring(&lab, Some(e), &stop))
        .collect();
    let mut dumps: Vec<Child> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| start_tcpdump(&lab, &dir, i, e))
        .collect();

    let (cli, onl, ast) = (lab.ns_client(), lab.ns_online(), lab.ns_assistant());
    for (ns, to) in [
        (cli, "198.18.0.30:80"),
        (cli, "198.18.0.30:443"),
        (cli, "198.18.0.30:8080"),
        (onl, "198.18.0.30:80"),
        (onl, "198.18.0.30:443"),
        (ast, "198.18.0.30:8080"),
        (cli, "[2001:2::30]:80"),
        (cli, "[2001:2::30]:443"),
        (onl, "[2001:2::30]:8080"),
        (onl, "[2001:2::30]:80"),
    ] {
        converse(&lab, ns, to);
    }
    let tagged = send_tagged(&lab);
    // Both captures see the last FIN-ACKs before they stop.
    thread::sleep(Duration::from_millis(500));
    for dump in &mut dumps {
        dump.signal("INT").unwrap();
        dump.wait_timeout(Duration::from_secs(10)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    stop_servers.store(true, Ordering::Relaxed);
    let all = all.join().unwrap();
    assert!(
        all.len() >= 12 * 8 + tagged,
        "every conversation and tagged segment captured: {}",
        all.len()
    );
    for (i, ((reader, added), expr)) in ours.into_iter().zip(exprs).enumerate() {
        let ours = reader.join().unwrap();
        let theirs = keys_of_file(&dir.path().join(format!("tcpdump-{i}.pcap")));
        let only_ours: Vec<_> = ours.iter().filter(|k| !theirs.contains(k)).collect();
        let only_theirs: Vec<_> = theirs.iter().filter(|k| !ours.contains(k)).collect();
        assert_eq!(
            ours, theirs,
            "{expr}: only ours {only_ours:?}, only tcpdump's {only_theirs:?}"
        );
        assert!(
            !ours.is_empty() && ours.len() < all.len(),
            "{expr}: a real selection, {} of {}",
            ours.len(),
            all.len()
        );
        eprintln!(
            "{expr}: {} of {} TCP packets, {added} instructions added",
            ours.len(),
            all.len()
        );
    }
    for s in servers {
        s.join().unwrap();
    }
}

fn load(prefix: &str, target: SocketAddr) -> LoadSpec {
    LoadSpec {
        target,
        keepalive_connections: 4,
        requests_per_connection: 25,
        short_connections: 100,
        short_concurrency: 4,
        rate_limit: None,
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(60),
    }
}

/// tcpcopy `-F 'not host X'` replicates only the other client's sessions; intercept runs the C
/// README's `-F 'tcp and src port 80'` in assistant mode.
#[test]
fn tcpcopy_with_a_filter_replicates_only_the_matching_clients() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _guard = sequential();
    let other = Ipv4Addr::new(198, 18, 0, 11);
    let mut spec = ScenarioSpec::new("tcg", Mode::Assistant, Servers::Embedded, bin_dir());
    spec.extra_tcpcopy_args = vec!["-F".into(), format!("not host {other}")];
    spec.extra_intercept_args = vec!["-F".into(), "tcp and src port 80".into()];
    let mut sc = lab::scenario::Scenario::start(&spec).expect("scenario starts");
    let second = sc.lab.add_host("cl2", other).expect("second client");
    let online = lab::scenario::Scenario::online_addr();
    let (kept, dropped) = (load("kept", online), load("dropped", online));
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| sc.lab.run_in(sc.lab.ns_client(), || loadgen::run(&kept)));
        let b = s.spawn(|| sc.lab.run_in(&second, || loadgen::run(&dropped)));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a.unwrap().ok, b.unwrap().ok), (200, 200));
    let target = sc.wait_target(200, Duration::from_secs(30)).unwrap();
    // Time for any stray session of the other client to arrive too.
    thread::sleep(Duration::from_secs(1));
    let target = sc.target_uris().map(|t| t.max(target)).unwrap();
    let log = sc.stop_tcpcopy().unwrap();
    let count = |prefix: &str| target.iter().filter(|u| u.contains(prefix)).count();
    assert_eq!(
        (count("/kept"), count("/dropped")),
        (200, 0),
        "only the first client's requests at the target\n{log}"
    );
    assert!(log.contains("-F 'not host 198.18.0.11'"), "{log}");
    let intercept = sc.stop_intercept().unwrap();
    assert!(
        intercept.contains("-F 'tcp and src port 80'"),
        "{intercept}"
    );
    // The cost, as both programs log it.
    for line in log.lines().chain(intercept.lines()) {
        if line.contains("instructions in front of") {
            eprintln!("{line}");
        }
    }
}
