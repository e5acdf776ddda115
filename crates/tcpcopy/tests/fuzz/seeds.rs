//! The seed corpora of the fuzz targets (fuzz/seeds/<target>/<name>), generated here from the
//! crates' own encoders and packet builder rather than kept by hand: real packets, a small pcap
//! and pcapng, protocol frames of every kind, HTTP answers and requests, scripted database
//! sessions for `dialect`, and a few pseudo-random inputs for the targets that read their input
//! as a sequence of events.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::{Annotation, AnswerBatch, ResponseBatch};
use session::testing::{PacketBuilder, Rng};
use wire::Flags;

/// Every seed: `(target, name, bytes)`.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in packets() {
        out.push(("wire", name.to_string(), bytes));
    }
    for (name, bytes) in captures() {
        out.push(("pcap", name.to_string(), bytes));
    }
    for (name, bytes) in frames() {
        out.push(("protocol", name.to_string(), bytes));
    }
    for (name, bytes) in http_pairs() {
        out.push(("http", name.to_string(), bytes));
    }
    for (name, bytes) in dialect_scripts() {
        out.push(("dialect", name.to_string(), bytes));
    }
    for target in ["comparator", "heads", "session", "dialect"] {
        for seed in 0..4u64 {
            let mut rng = Rng::new(seed + 1);
            let bytes = rng.bytes(64 << seed, 64 << seed);
            out.push((target, format!("random-{seed}"), bytes));
        }
    }
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a literal address")
}

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n";
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello";

/// A handshake and a request each way, IPv4 and IPv6, and a target's answer as intercept
/// forwards it (headers only).
fn packets() -> Vec<(&'static str, Vec<u8>)> {
    let b = PacketBuilder {
        window_scale: Some(7),
        ..PacketBuilder::default()
    };
    let (c4, s4) = (addr("198.18.0.10:40000"), addr("198.18.0.20:80"));
    let (c6, s6) = (addr("[2001:2::10]:40000"), addr("[2001:2::20]:80"));
    vec![
        ("syn-v4", b.segment(c4, s4, 1000, 0, Flags::SYN, b"")),
        (
            "syn-ack-v6",
            b.segment(s6, c6, 7000, 1001, Flags::SYN | Flags::ACK, b""),
        ),
        (
            "request-v4",
            b.segment(c4, s4, 1001, 7001, Flags::ACK | Flags::PSH, REQUEST),
        ),
        (
            "request-v6",
            b.segment(c6, s6, 1001, 7001, Flags::ACK | Flags::PSH, REQUEST),
        ),
        (
            "answer-headers-only-v4",
            b.headers_only(s4, c4, 7001, 1044, Flags::ACK | Flags::PSH, ANSWER.len()),
        ),
        (
            "fin-v4",
            b.segment(c4, s4, 1044, 7100, Flags::ACK | Flags::FIN, b""),
        ),
    ]
}

/// Little-endian classic pcap header: magic, version 2.4, zone, sigfigs, snaplen, link type.
fn pcap_header(nanos: bool, link: u32) -> Vec<u8> {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut h = magic.to_le_bytes().to_vec();
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&link.to_le_bytes());
    h
}

fn pcap_record(out: &mut Vec<u8>, seconds: u32, fraction: u32, frame: &[u8]) {
    for field in [seconds, fraction, frame.len() as u32, frame.len() as u32] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(frame);
}

/// A classic pcap over Ethernet (one frame VLAN-tagged, one ARP), one of raw IP with
/// nanoseconds, a pcapng written by the recorder, and input for the recorder round trip.
fn captures() -> Vec<(&'static str, Vec<u8>)> {
    let packets: Vec<Vec<u8>> = packets().into_iter().map(|(_, p)| p).collect();
    let ethernet = |ethertype: u16, vlan: bool, ip: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    };
    let mut eth = pcap_header(false, 1);
    pcap_record(
        &mut eth,
        1_700_000_000,
        1,
        &ethernet(0x0800, false, &packets[0]),
    );
    pcap_record(
        &mut eth,
        1_700_000_000,
        2_000,
        &ethernet(0x86dd, true, &packets[1]),
    );
    pcap_record(
        &mut eth,
        1_700_000_001,
        0,
        &ethernet(0x0806, false, &[0; 28]),
    );
    let mut raw = pcap_header(true, 101);
    pcap_record(&mut raw, 1_700_000_000, 999_999_999, &packets[2]);
    pcap_record(&mut raw, 1_700_000_002, 5, &packets[4]);

    let path = std::env::temp_dir().join(format!("tcpcopy-seed-{}.pcapng", std::process::id()));
    let mut recorder = pcap::PcapNgRecorder::create(&path).expect("create a pcapng");
    for (i, p) in packets.iter().enumerate() {
        let at = Duration::new(1_700_000_000 + i as u64, 123_456_789);
        recorder.write(at, p, p.len() as u32).expect("record");
    }
    recorder.finish().expect("finish the pcapng");
    let ng = std::fs::read(&path).expect("read the pcapng back");
    let _ = std::fs::remove_file(&path);

    let mut round_trip = b"R".to_vec();
    round_trip.extend(Rng::new(7).bytes(200, 200));
    vec![
        ("ethernet-microseconds.pcap", eth),
        ("raw-nanoseconds.pcap", raw),
        ("recorded.pcapng", ng),
        ("recorder-round-trip", round_trip),
    ]
}

/// Frames of every kind, as the decoder target reads them (`[chunk length][chunk]...`), and
/// input for its round trip of built messages (`M...`).
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let packets: Vec<Vec<u8>> = packets().into_iter().map(|(_, p)| p).collect();
    let mut opening = Vec::new();
    protocol::encode_hello(&mut opening, protocol::FLAG_WANT_PAYLOAD, 7, None);
    protocol::encode_welcome(&mut opening);
    protocol::encode_reject(&mut opening, "protocol version 9 unsupported");
    let mut comparing = Vec::new();
    protocol::encode_hello(&mut comparing, 0, 1, Some(1024));
    protocol::encode_time_ask(&mut comparing, 1_700_000_000_000_000_000);
    protocol::encode_time_tell(&mut comparing, 1, 2, 3);
    protocol::encode_ping(&mut comparing);
    let mut routes = Vec::new();
    protocol::encode_routes(
        &mut routes,
        &[addr("198.19.0.1:40000"), addr("[2001:2::10]:40001")],
    );
    let mut responses = Vec::new();
    let mut batch = ResponseBatch::new();
    for p in &packets {
        batch.push(p);
    }
    batch.finish(&mut responses);
    let mut answers = Vec::new();
    let mut batch = AnswerBatch::new();
    let heads: [&[u8]; 2] = [ANSWER, b""];
    for (i, p) in packets.iter().take(4).enumerate() {
        let note = Annotation {
            at_ns: 1_700_000_000_000_000_000 + i as u64,
            hash: compare::Digest::of(ANSWER).hash,
            head: heads[i % 2],
        };
        batch.push(p, &note);
    }
    batch.finish(&mut answers);
    let mut built = b"M".to_vec();
    built.extend(Rng::new(11).bytes(300, 300));
    vec![
        ("opening", chunked(&opening, 7)),
        ("comparing", chunked(&comparing, 255)),
        ("routes", chunked(&routes, 3)),
        ("responses", chunked(&responses, 200)),
        ("answers", chunked(&answers, 100)),
        ("built-messages", built),
    ]
}

/// `bytes` as chunks of at most `size` (< 256) bytes, each after its length.
fn chunked(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(size) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    out
}

/// Two answers (or requests), `[length of the first: u16 BE][first][second]`.
fn http_pairs() -> Vec<(&'static str, Vec<u8>)> {
    let pair = |a: &[u8], b: &[u8]| {
        let mut out = (a.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        out
    };
    let other =
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Trace: 1\r\n  folded\r\n\r\nnot found";
    vec![
        ("ok-and-not-found", pair(ANSWER, other)),
        ("partial-head", pair(&ANSWER[..20], ANSWER)),
        (
            "requests",
            pair(REQUEST, b"POST http://example/api?x=1 HTTP/1.0\n\n"),
        ),
        (
            "redis",
            pair(
                b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
                b"+OK\r\n",
            ),
        ),
    ]
}

/// Inputs of the `dialect` target (fuzz/src/dialect/) that play whole sessions, so that the
/// fuzzer starts past the logins. That harness reads every choice as one byte (the byte modulo
/// the number of choices); the comments name its events and choices.
fn dialect_scripts() -> Vec<(&'static str, Vec<u8>)> {
    // Protocol (0 mysql, 1 postgres, 2 auto), then the options: session timeout 1.6 s, no idle
    // timeout, RTO 40 ms, 2 retries, no response wait, no joining, one copy, 20 kB a session,
    // 40 kB buffered.
    let config = |protocol: u8| vec![protocol, 3, 0, 1, 2, 0, 1, 0, 2, 0];
    // Event bytes: open (0), client message (1), online answer (5), target packet (7),
    // clock (11), close (14). A message sent whole, in order: no cuts (0), no change (3).
    const WHOLE: [u8; 2] = [0, 3];
    let open = [0, 0, 2]; // connection 0: SYN, SYN-ACK, ACK
                          // A target packet on flow 0 is its kind, then (after a message) how it is sent: whole,
                          // once (3).
    let target_syn_ack = [7, 0, 0, 3];
    let salt: Vec<u8> = (1..=20).collect();
    // A target packet on flow 0: an answer (2) of one message (0) or two (1).
    let target = |messages: &[&[u8]]| {
        let mut e = vec![7, 0, 2, messages.len() as u8 - 1];
        messages.iter().for_each(|m| e.extend_from_slice(m));
        e.push(3);
        e
    };
    // An online answer to connection 0, sent whole.
    let online = |message: &[u8]| [&[5, 0][..], message, &WHOLE].concat();
    let client = |message: &[u8]| [&[1, 0][..], message, &WHOLE].concat();
    // MySQL server packets: the sequence number as expected (1), then the kind and its choices.
    let greeting = [&[1, 0][..], &salt, &[0]].concat(); // mysql_native_password
    let ok: &[u8] = &[1, 1];
    let login = |compress: u8| vec![0, 1, compress, 1, 0, 0, 0]; // user app, native, no extras
    let mysql = |protocol: u8, compress: u8| {
        [
            config(protocol),
            open.to_vec(),
            target_syn_ack.to_vec(),
            online(&greeting),
            target(&[&greeting]),
            client(&login(compress)),
            online(ok),
            target(&[ok]),
            client(&[5]),             // COM_STMT_PREPARE
            online(&[1, 7, 0, 1]),    // PREPARE_OK, online id 1
            target(&[&[1, 7, 3, 1]]), // PREPARE_OK, target id 7
            client(&[6, 0, 0, 0]),    // COM_STMT_EXECUTE of id 1
            target(&[ok]),
            client(&[9, 2, 0]),    // COM_CHANGE_USER to root
            target(&[&[1, 5, 0]]), // an auth switch
            target(&[ok]),
            client(&[6, 1, 0, 0]), // COM_STMT_CLOSE of id 1
            vec![14, 0, 0, 11, 4], // the client's FIN; a second passes
        ]
        .concat()
    };
    // PostgreSQL: client messages are a user (0: app), then a kind; server messages a kind.
    let postgres = [
        config(1),
        open.to_vec(),
        target_syn_ack.to_vec(),
        client(&[0, 0]),                            // startup
        target(&[&[3]]),                            // AuthenticationSASL
        client(&[0, 5]),                            // the client's SASLInitialResponse (dropped)
        target(&[&[4, 1, 2, 3, 4, 5, 6, 7, 8, 1]]), // SASLContinue: salt, 2 iterations
        target(&[&[5, 0]]),                         // SASLFinal signed with app's password
        target(&[&[0], &[6]]),                      // AuthenticationOk, BackendKeyData
        target(&[&[8]]),                            // ReadyForQuery
        client(&[0, 8]),                            // a query
        target(&[&[11], &[8]]),                     // CommandComplete, ReadyForQuery
        vec![14, 0, 0, 11, 4],
    ]
    .concat();
    // With `--protocol auto`, connection 2 speaks PostgreSQL (and stays bytes): startup,
    // md5, password, a query.
    let auto_postgres = [
        config(2),
        vec![0, 2, 2],
        target_syn_ack.to_vec(),
        vec![1, 2, 0, 0, 0, 3],
        target(&[&[2]]),
        vec![1, 2, 0, 7, 0, 3],
        target(&[&[0], &[8]]),
        vec![1, 2, 0, 8, 0, 3],
        target(&[&[11], &[8]]),
        vec![14, 2, 1, 11, 4],
    ]
    .concat();
    vec![
        ("auto-postgres-md5", auto_postgres),
        ("mysql-prepare-execute", mysql(0, 1)),
        ("mysql-auto-prepare-execute", mysql(2, 1)),
        ("mysql-compressed-login", mysql(0, 0)),
        ("postgres-scram", postgres),
    ]
}
