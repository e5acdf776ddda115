//! The seeded simulation: scripted client sessions, a capture and a network that lose,
//! duplicate, reorder and delay packets, and a minimal TCP server standing in for the target,
//! all on simulated time. One seed gives one run, packet for packet.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use wire::{Flags, Seq, TcpPacket};

use super::{segment, Rng};
use crate::{Config, Replicator, Rule, Stats};

const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
const ONLINE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)), 80);
const TARGET: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 30)), 8080);

/// A minimal TCP server standing in for the target: out-of-order segments kept (so a hole draws
/// duplicate acknowledgments), one answer per `\n`-terminated request, a greeting first on
/// connections from even ports (server speaks first), FIN after the client's FIN, retransmission of
/// its own unacknowledged bytes.
///
/// Its connections are kept in address order: its retransmissions go out in the same order on
/// every run (a `HashMap` here once made one seed send a different number of packets each run).
#[derive(Default)]
struct SimTarget {
    conns: BTreeMap<SocketAddr, SimConn>,
}

/// Length of the greeting a server-speaks-first connection opens with.
const GREETING: usize = 24;

fn greets(port: u16) -> bool {
    port.is_multiple_of(2)
}

struct SimConn {
    isn: u32,
    rcv_nxt: Seq,
    received: Vec<u8>,
    ooo: BTreeMap<u32, Vec<u8>>,
    answered: usize,
    snd_una: Seq,
    snd_nxt: Seq,
    greeted: bool,
    /// Client bytes that arrived before we had our greeting acknowledged (must stay 0).
    data_before_greeting: usize,
    fin_received: bool,
    fin_sent: bool,
    last_send: Instant,
}

impl SimTarget {
    fn handle(&mut self, now: Instant, packet: &[u8], out: &mut Vec<Vec<u8>>) {
        let p = TcpPacket::parse(packet).unwrap();
        let peer = p.src();
        let me = p.dst();
        let f = p.flags();
        if f.syn() {
            let isn = p.seq().0.wrapping_mul(31).wrapping_add(7);
            let c = self.conns.entry(peer).or_insert_with(|| SimConn {
                isn,
                rcv_nxt: p.seq() + 1,
                received: Vec::new(),
                ooo: BTreeMap::new(),
                answered: 0,
                snd_una: Seq(isn),
                snd_nxt: Seq(isn) + 1,
                greeted: !greets(peer.port()),
                data_before_greeting: 0,
                fin_received: false,
                fin_sent: false,
                last_send: now,
            });
            // A duplicated SYN gets the SYN-ACK again, without resetting the connection.
            out.push(segment(
                me,
                peer,
                c.isn,
                c.rcv_nxt.0,
                Flags::SYN | Flags::ACK,
                b"",
            ));
            return;
        }
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        if f.rst() {
            self.conns.remove(&peer);
            return;
        }
        if f.ack() && p.ack() > c.snd_una && p.ack() <= c.snd_nxt {
            c.snd_una = p.ack();
        }
        let greeting_acked = c.snd_una.diff(Seq(c.isn)) > GREETING as i64;
        if greets(peer.port()) && p.payload_len() > 0 && !greeting_acked {
            c.data_before_greeting += p.payload_len();
        }
        let rel = p.seq().diff(c.rcv_nxt);
        if rel > 0 && rel < 1 << 20 && !p.payload().is_empty() && !c.fin_received {
            c.ooo
                .entry(rel as u32 + c.rcv_nxt.0)
                .or_insert_with(|| p.payload().to_vec());
        }
        if p.seq() == c.rcv_nxt && !c.fin_received {
            c.received.extend_from_slice(p.payload());
            c.rcv_nxt += p.payload().len() as u32;
            if f.fin() {
                c.rcv_nxt += 1;
                c.fin_received = true;
            }
            // Later segments kept out of order now follow on.
            while let Some(data) = c.ooo.remove(&c.rcv_nxt.0) {
                c.received.extend_from_slice(&data);
                c.rcv_nxt += data.len() as u32;
            }
            c.ooo.retain(|&seq, _| Seq(seq) > c.rcv_nxt);
        }
        // Greet once the handshake completed; answer every complete request with 120 bytes.
        let mut len = 0;
        if !c.greeted {
            c.greeted = true;
            len = GREETING;
        }
        let requests = c.received.iter().filter(|&&b| b == b'\n').count();
        let mut fl = Flags::ACK;
        if requests > c.answered {
            len += 120 * (requests - c.answered);
            c.answered = requests;
        }
        if c.fin_received && !c.fin_sent {
            fl = fl | Flags::FIN;
            c.fin_sent = true;
        }
        if p.payload_len() > 0 || f.fin() || len > 0 {
            out.push(segment(
                me,
                peer,
                c.snd_nxt.0,
                c.rcv_nxt.0,
                fl,
                &vec![b'r'; len],
            ));
            c.snd_nxt += len as u32 + u32::from(fl.fin());
            c.last_send = now;
        }
    }

    /// Resends unacknowledged answers after 30 ms (the target's own RTO, simplified).
    fn retransmit(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        for (peer, c) in self.conns.iter_mut() {
            if c.snd_una < c.snd_nxt && now >= c.last_send + Duration::from_millis(30) {
                let len = c.snd_nxt.diff(c.snd_una) as usize;
                let (me, seq) = (TARGET, c.snd_una);
                if seq == Seq(c.isn) {
                    out.push(segment(
                        me,
                        *peer,
                        c.isn,
                        c.rcv_nxt.0,
                        Flags::SYN | Flags::ACK,
                        b"",
                    ));
                } else {
                    let fin = c.fin_sent;
                    let data = len - usize::from(fin);
                    let fl = if fin {
                        Flags::ACK | Flags::FIN
                    } else {
                        Flags::ACK
                    };
                    out.push(segment(
                        me,
                        *peer,
                        seq.0,
                        c.rcv_nxt.0,
                        fl,
                        &vec![b'r'; data],
                    ));
                }
                c.last_send = now;
            }
        }
    }
}

/// A recorded client session: captured segments in the order the client sent them.
struct ClientScript {
    port: u16,
    stream: Vec<u8>,
    segments: Vec<Vec<u8>>,
    /// Each request's bytes, and the request each segment carries bytes of.
    requests: Vec<Vec<u8>>,
    segment_request: Vec<Option<usize>>,
    /// The online server's acknowledgment of each request, captured after segment `.0`.
    online_acks: Vec<(usize, Vec<u8>)>,
}

fn script(rng: &mut Rng, port: u16) -> ClientScript {
    let src = SocketAddr::new(CLIENT_IP, port);
    let dst = ONLINE;
    let isn = rng.next_u64() as u32;
    let mut seq = Seq(isn);
    let mut online_ack = Seq(rng.next_u64() as u32);
    let mut segments = vec![segment(src, dst, seq.0, 0, Flags::SYN, b"")];
    seq += 1;
    online_ack += 1;
    segments.push(segment(src, dst, seq.0, online_ack.0, Flags::ACK, b""));
    if greets(port) {
        // The online server greeted; the client acknowledged it, then sent its first request.
        online_ack += GREETING as u32;
    }
    let mut stream = Vec::new();
    let (mut requests, mut segment_request, mut online_acks) =
        (Vec::new(), vec![None; 2], Vec::new());
    for req in 0..1 + rng.below(6) as u64 {
        let body_len = rng.below(4000);
        let mut body: Vec<u8> = (0..body_len)
            .map(|i| b'a' + ((i as u64 + req) % 26) as u8)
            .collect();
        body.push(b'\n');
        for chunk in body.chunks(1 + rng.below(1500)) {
            segments.push(segment(
                src,
                dst,
                seq.0,
                online_ack.0,
                Flags::ACK | Flags::PSH,
                chunk,
            ));
            segment_request.push(Some(requests.len()));
            seq += chunk.len() as u32;
        }
        online_acks.push((
            segments.len() - 1,
            segment(dst, src, online_ack.0, seq.0, Flags::ACK, b""),
        ));
        stream.extend_from_slice(&body);
        requests.push(body);
        online_ack += 1 + rng.below(3000) as u32; // the online server answered
    }
    segments.push(segment(
        src,
        dst,
        seq.0,
        online_ack.0,
        Flags::ACK | Flags::FIN,
        b"",
    ));
    segment_request.push(None);
    ClientScript {
        port,
        stream,
        segments,
        requests,
        segment_request,
        online_acks,
    }
}

/// What goes wrong on the way; all off by default (a clean network).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Chance that the network between replicator and target loses, duplicates or reorders a
    /// packet (the capture duplicates and reorders client segments with `dup` and `reorder` too).
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    /// Extra one-way latency, uniform in 0..delay_ms, per packet.
    pub delay_ms: u64,
    /// Chance that the capture misses a client segment; the client's retransmission is captured
    /// 200 ms later.
    pub capture_loss: f64,
    /// Hand the replicator everything that arrives within 1 ms as one batch (`begin_batch` ..
    /// `end_batch`), as the live driver does with a capture block and a read of its intercepts.
    pub batch: bool,
    /// Chance that the capture misses a client data segment for good: the online server got
    /// it, so the client never resends it (a mirror's loss). The requests it carried bytes of
    /// are damaged; the others must still arrive whole, in order.
    pub capture_gone: f64,
    /// The capture has the online server's acknowledgments too (a mirror sees both ways).
    pub online_acks: bool,
    /// The replicator's `Config::hole_wait`.
    pub hole_wait: Option<Duration>,
}

/// What a simulation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The replicator's counters at the end.
    pub stats: Stats,
    /// Packets put on the simulated network, by the replicator and the target together (before
    /// the network lost or duplicated any).
    pub packets: u64,
    /// FNV-1a over every one of those packets in order, with its direction and simulated send
    /// time: two runs with the same digest sent the same packets at the same times.
    pub digest: u64,
    /// Sessions the capture missed a segment of for good (`Faults::capture_gone`).
    pub damaged_sessions: u64,
}

/// Runs `sessions` scripted sessions (from client ports 10,000 up; at most 55,000) through the
/// replicator and a simulated target over a network with `faults`, all drawn from `seed`.
/// Panics unless every stream arrived at the target byte-exact and closed, and no client spoke
/// before a greeting server's greeting; returns what happened.
///
/// The replicator runs with the default configuration except: one rule (port 80 to the target),
/// 250 fake client addresses, a 60 s session timeout, a 50 ms initial RTO and the ISN clock on
/// with a base drawn from `seed`.
pub fn simulate(seed: u64, sessions: usize, faults: Faults) -> Outcome {
    assert!(sessions <= 55_000, "client ports run from 10,000 to 65,000");
    let mut rng = Rng::new(seed);
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: ONLINE.port(),
        target: TARGET,
    }]);
    cfg.session_timeout = Duration::from_secs(60);
    cfg.clock_isn = true;
    cfg.isn_base = rng.next_u64() as u32;
    cfg.fake_clients = (1..=250).map(|i| IpAddr::from([198, 19, 0, i])).collect();
    cfg.initial_rto = Duration::from_millis(50);
    cfg.hole_wait = faults.hole_wait;
    let mut r = Replicator::new(cfg);
    let mut target = SimTarget::default();
    let base = Instant::now();
    let mut now = base;
    // Network: (deliver_at, seq_no) -> (to_target, packet)
    let mut net: BTreeMap<(Instant, u64), (bool, Vec<u8>)> = BTreeMap::new();
    let mut n = 0u64;
    let (mut packets, mut digest) = (0u64, FNV_OFFSET);
    let scripts: Vec<ClientScript> = (0..sessions)
        .map(|i| script(&mut rng, 10_000 + i as u16))
        .collect();
    // Capture: each client segment captured at its time; the capture itself duplicates and reorders.
    let mut capture: Vec<(Instant, Vec<u8>)> = Vec::new();
    // Per session, the requests a segment gone for good damaged.
    let mut damaged: Vec<Vec<bool>> = Vec::new();
    for (i, s) in scripts.iter().enumerate() {
        let start = base + Duration::from_micros(i as u64 * 300);
        let mut hurt = vec![false; s.requests.len()];
        if faults.online_acks {
            for (k, ack) in &s.online_acks {
                let at = start + Duration::from_millis(*k as u64 * 2) + Duration::from_millis(1);
                capture.push((at, ack.clone()));
            }
        }
        for (k, seg) in s.segments.iter().enumerate() {
            if faults.capture_gone > 0.0 && rng.chance(faults.capture_gone) {
                if let Some(req) = s.segment_request[k] {
                    hurt[req] = true;
                    continue;
                }
            }
            let mut at = start + Duration::from_millis(k as u64 * 2);
            if k >= 2 && rng.chance(faults.reorder) {
                at += Duration::from_millis(3);
            }
            if k >= 2 && rng.chance(faults.capture_loss) {
                at += Duration::from_millis(200);
            }
            capture.push((at, seg.clone()));
            if rng.chance(faults.dup) {
                capture.push((at + Duration::from_micros(50), seg.clone()));
            }
        }
        damaged.push(hurt);
    }
    capture.sort_by_key(|c| c.0);
    let mut capture = capture.into_iter().peekable();
    let deadline = base + Duration::from_secs(120);
    let mut last_scan = base;
    let mut send =
        |rng: &mut Rng, now: Instant, to_target: bool, p: Vec<u8>, net: &mut BTreeMap<_, _>| {
            packets += 1;
            let at = now.duration_since(base).as_nanos() as u64;
            digest = fnv(digest, &[u8::from(to_target)]);
            digest = fnv(digest, &at.to_le_bytes());
            digest = fnv(digest, &p);
            if rng.chance(faults.loss) {
                return;
            }
            let copies = if rng.chance(faults.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let spread = match (faults.reorder > 0.0, rng.chance(faults.reorder)) {
                    (false, _) => 0,
                    (true, true) => 3000,
                    (true, false) => 100,
                };
                let delay = 200
                    + rng.below(spread) as u64
                    + rng.below(faults.delay_ms as usize * 1000) as u64;
                n += 1;
                net.insert(
                    (now + Duration::from_micros(delay), n),
                    (to_target, p.clone()),
                );
            }
        };
    while now < deadline {
        let mut tx = Vec::new();
        r.drain_transmits(|p| tx.push(p.to_vec()));
        for p in tx {
            send(&mut rng, now, true, p, &mut net);
        }
        let mut answers = Vec::new();
        if now >= last_scan + Duration::from_millis(5) {
            target.retransmit(now, &mut answers);
            last_scan = now;
        }
        for p in answers {
            send(&mut rng, now, false, p, &mut net);
        }
        let next_cap = capture.peek().map(|c| c.0);
        let next_net = net.keys().next().map(|k| k.0);
        let next_timer = r.poll_timeout();
        let next_tick = now + Duration::from_millis(10);
        let Some(next) = [next_cap, next_net, next_timer, Some(next_tick)]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        now = next.max(now);
        let batch_end =
            (faults.batch && next_timer != Some(next)).then(|| now + Duration::from_millis(1));
        if batch_end.is_some() {
            r.begin_batch();
        }
        let (mut next_cap, mut next_net) = (next_cap, next_net);
        loop {
            if next_cap == Some(now) {
                let (_, p) = capture.next().unwrap();
                r.handle_capture(now, &p);
            } else if next_net == Some(now) {
                let (_, (to_target, p)) = net.pop_first().unwrap();
                if to_target {
                    let mut answers = Vec::new();
                    target.handle(now, &p, &mut answers);
                    for a in answers {
                        send(&mut rng, now, false, a, &mut net);
                    }
                } else {
                    // The intercept forwards headers only.
                    let t = TcpPacket::parse(&p).unwrap();
                    r.handle_response(now, t.headers());
                }
            } else if next_timer == Some(now) {
                r.handle_timeout(now);
            }
            // In a batch, whatever else arrives before its end goes in too.
            let Some(end) = batch_end else {
                break;
            };
            next_cap = capture.peek().map(|c| c.0.max(now)).filter(|&t| t <= end);
            next_net = net
                .keys()
                .next()
                .map(|k| k.0.max(now))
                .filter(|&t| t <= end);
            match next_cap.into_iter().chain(next_net).min() {
                Some(t) => now = t,
                None => {
                    r.end_batch();
                    r.handle_timeout(now);
                    break;
                }
            }
        }
        r.assert_stalled_count();
        if capture.peek().is_none() && net.is_empty() && r.stats().sessions_active == 0 {
            break;
        }
    }
    // Every stream arrived byte-exact, or with its damaged requests only damaged.
    for (s, damaged) in scripts.iter().zip(&damaged) {
        let local = target
            .conns
            .iter()
            .find(|(peer, _)| peer.port() == s.port)
            .unwrap_or_else(|| {
                panic!(
                    "seed {seed}: session {} never reached the target: {}",
                    s.port,
                    r.stats()
                )
            });
        if damaged.contains(&true) {
            assert_undamaged_arrived(seed, s, damaged, &local.1.received);
        } else {
            assert!(
                local.1.received == s.stream,
                "seed {seed}: session {} stream differs",
                s.port
            );
        }
        assert!(
            local.1.fin_received,
            "seed {seed}: session {} not closed",
            s.port
        );
        assert_eq!(
            local.1.data_before_greeting, 0,
            "seed {seed}: session {} spoke before the target's greeting",
            s.port
        );
    }
    let stats = r.stats();
    assert_eq!(
        stats.requests_online - stats.requests_target,
        stats.lost.total() + r.requests_in_flight(),
        "seed {seed}: the lost requests' causes add up: {stats}"
    );
    Outcome {
        stats,
        packets,
        digest,
        damaged_sessions: damaged.iter().filter(|d| d.contains(&true)).count() as u64,
    }
}

/// A session the capture missed bytes of: every request it had whole arrived whole, in order,
/// and nothing arrived that the client did not send.
fn assert_undamaged_arrived(seed: u64, s: &ClientScript, damaged: &[bool], received: &[u8]) {
    assert!(
        received.len() < s.stream.len(),
        "seed {seed}: session {}: more arrived than was captured",
        s.port
    );
    let mut at = 0;
    for (i, body) in s.requests.iter().enumerate() {
        if damaged[i] {
            continue;
        }
        let found = received[at..]
            .windows(body.len())
            .position(|w| w == body.as_slice());
        let Some(pos) = found else {
            panic!(
                "seed {seed}: session {}: request {i} of {} (not damaged) missing at the target",
                s.port,
                s.requests.len()
            );
        };
        at += pos + body.len();
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, continued from `h` over `bytes`.
fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}
