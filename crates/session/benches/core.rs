//! The replication core's hot paths on simulated time, without sockets: what one short connection
//! and one keep-alive request cost in `Replicator` alone (`cargo bench -p tcpcopy-session`).
//!
//! The core is driven as the live driver drives it: on each wake the clock moves on, packets of
//! [`BATCH`] sessions go in between `begin_batch` and `end_batch`, the timers due fire, and
//! `drain_transmits` takes what was sent. Target reports are headers only, as an intercept sends
//! them.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use session::testing::PacketBuilder;
use session::{Config, Replicator, Rule};
use wire::Flags;

/// Sessions that get their packets between one `begin_batch` and `end_batch`.
const BATCH: usize = 64;
const ONLINE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)), 80);
const TARGET: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 30)), 80);
const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\n\r\n";
const RESPONSE_LEN: u32 = 1_200;
/// The online and the target server's ISNs (the client's is per session).
const ONLINE_ISN: u32 = 7_000_000;
const TARGET_ISN: u32 = 900_000_000;

fn config() -> Config {
    let mut c = Config::new(vec![Rule {
        online_addr: None,
        online_port: ONLINE.port(),
        target: TARGET,
    }]);
    // The target sees the client's ISN, so the target's answers can be built in advance.
    c.clock_isn = false;
    c
}

/// Packets as a Linux peer with window scaling sends them (window 502 scaled by 2^7).
const PACKETS: PacketBuilder = PacketBuilder {
    window: 502,
    mss: 1460,
    window_scale: Some(7),
    ttl: 64,
};

/// A whole packet, IP header first.
fn segment(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    PACKETS.segment(src, dst, seq, ack, flags, payload)
}

/// A target segment to `client` with `len` payload bytes, as an intercept reports it: headers only.
fn report(client: SocketAddr, seq: u32, ack: u32, flags: Flags, len: u32) -> Vec<u8> {
    PACKETS.headers_only(TARGET, client, seq, ack, flags, len as usize)
}

fn client_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(198, 18, 1 + (i / 60_000) as u8, 10);
    SocketAddr::new(IpAddr::V4(ip), 1024 + (i % 60_000) as u16)
}

/// Every packet of one short connection (an HTTP request answered, the server closes), in the
/// order the core sees them: one phase per round trip.
struct Short {
    phases: [Vec<Vec<u8>>; 4],
}

impl Short {
    fn new(i: usize) -> Short {
        let c = client_addr(i);
        let isn = 1_000 + i as u32 * 7_919;
        let req = REQUEST.len() as u32;
        let (o, t) = (ONLINE_ISN, TARGET_ISN);
        let from_client =
            |seq, ack, flags, payload: &[u8]| segment(c, ONLINE, seq, ack, flags, payload);
        let from_target = |seq, ack, flags, len| report(c, seq, ack, flags, len);
        let ack = Flags::ACK;
        Short {
            phases: [
                // The client's SYN.
                vec![from_client(isn, 0, Flags::SYN, &[])],
                // The target's SYN-ACK; the client's handshake ACK and request.
                vec![
                    from_target(t, isn + 1, Flags::SYN | Flags::ACK, 0),
                    from_client(isn + 1, o + 1, ack, &[]),
                    from_client(isn + 1, o + 1, ack | Flags::PSH, REQUEST),
                ],
                // The target's answer and FIN; the client acknowledges the online ones and closes.
                vec![
                    from_target(t + 1, isn + 1 + req, ack | Flags::PSH, RESPONSE_LEN),
                    from_target(t + 1 + RESPONSE_LEN, isn + 1 + req, ack | Flags::FIN, 0),
                    from_client(isn + 1 + req, o + 1 + RESPONSE_LEN, ack, &[]),
                    from_client(isn + 1 + req, o + 2 + RESPONSE_LEN, ack | Flags::FIN, &[]),
                ],
                // The target acknowledges our FIN.
                vec![from_target(t + 2 + RESPONSE_LEN, isn + 2 + req, ack, 0)],
            ],
        }
    }
}

/// Simulated time between two batches of short connections: [`BATCH`] connections every four
/// steps is about 9,100 a second, the bench's short rows' rate.
const SHORT_STEP: Duration = Duration::from_micros(1_750);

/// One wake of the live loop: the clock moves on by `step`, `feed` hands the batch's packets to
/// the core, the batch ends and the timers due fire (the driver,
/// `crates/tcpcopy/src/live/worker.rs`, calls `handle_timeout` on every wake), and what the core
/// sent is drained. Returns the packets it sent.
fn wake(
    r: &mut Replicator,
    now: &mut Instant,
    step: Duration,
    feed: impl FnOnce(&mut Replicator, Instant),
) -> usize {
    *now += step;
    r.begin_batch();
    feed(r, *now);
    r.end_batch();
    r.handle_timeout(*now);
    let mut sent = 0;
    r.drain_transmits(|p| {
        black_box(p);
        sent += 1;
    });
    sent
}

/// Runs `sessions` through their four round trips, [`BATCH`] at a time. Returns the packets sent.
fn run_short(r: &mut Replicator, now: &mut Instant, sessions: &[Short]) -> usize {
    let mut sent = 0;
    for chunk in sessions.chunks(BATCH) {
        for phase in 0..4 {
            sent += wake(r, now, SHORT_STEP, |r, now| {
                for p in chunk.iter().flat_map(|s| &s.phases[phase]) {
                    if p[12..16] == [198, 18, 0, 30] {
                        r.handle_response(now, p);
                    } else {
                        r.handle_capture(now, p);
                    }
                }
            });
        }
    }
    sent
}

fn short_connections(c: &mut Criterion) {
    // At SHORT_STEP's rate a round lasts 3.6 s: a connection's endpoints come back after its
    // closed record expired (2 s), and about 18,000 records linger all the time, as in a live
    // run at 9k connections/s. How much of the core's state stays in the cache depends on it.
    const SESSIONS: usize = 32_768;
    let sessions: Vec<Short> = (0..SESSIONS).map(Short::new).collect();
    let mut r = Replicator::new(config());
    let mut now = Instant::now();
    // One untimed round: the tables, the slot map and the spare buffers reach their steady size.
    run_short(&mut r, &mut now, &sessions);
    let mut g = c.benchmark_group("core");
    g.sample_size(20);
    g.throughput(Throughput::Elements(SESSIONS as u64));
    g.bench_function("short connection", |b| {
        b.iter(|| {
            let completed = r.stats().sessions_completed;
            let sent = run_short(&mut r, &mut now, &sessions);
            assert_eq!(sent, 3 * SESSIONS, "SYN, request, FIN per session");
            let stats = r.stats();
            assert_eq!(stats.sessions_completed - completed, SESSIONS as u64);
            assert_eq!(stats.sessions_active, 0);
        });
    });
    g.finish();
}

/// Established keep-alive sessions sending one request each per round, the target answering.
struct KeepAlive {
    client: SocketAddr,
    isn: u32,
    round: u32,
}

fn keep_alive_requests(c: &mut Criterion) {
    const SESSIONS: usize = 256;
    let req = REQUEST.len() as u32;
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(SESSIONS as u64));
    g.bench_function("keep-alive request", |b| {
        let mut r = Replicator::new(config());
        let mut now = Instant::now();
        let mut sessions: Vec<KeepAlive> = (0..SESSIONS)
            .map(|i| KeepAlive {
                client: client_addr(i),
                isn: 5_000 + i as u32 * 104_729,
                round: 0,
            })
            .collect();
        // Handshakes.
        r.begin_batch();
        for s in &sessions {
            r.handle_capture(now, &segment(s.client, ONLINE, s.isn, 0, Flags::SYN, &[]));
        }
        r.end_batch();
        r.drain_transmits(|_| {});
        now += Duration::from_millis(1);
        r.begin_batch();
        for s in &sessions {
            let syn_ack = report(s.client, TARGET_ISN, s.isn + 1, Flags::SYN | Flags::ACK, 0);
            r.handle_response(now, &syn_ack);
        }
        r.end_batch();
        r.drain_transmits(|_| {});
        b.iter_batched(
            // Each round's packets are built outside the measurement.
            || {
                sessions
                    .iter_mut()
                    .map(|s| {
                        let k = s.round;
                        s.round += 1;
                        let seq = s.isn + 1 + k * req;
                        let data = Flags::ACK | Flags::PSH;
                        let online_ack = ONLINE_ISN + 1 + k * RESPONSE_LEN;
                        let request = segment(s.client, ONLINE, seq, online_ack, data, REQUEST);
                        let target_seq = TARGET_ISN + 1 + k * RESPONSE_LEN;
                        let answer = report(s.client, target_seq, seq + req, data, RESPONSE_LEN);
                        (request, answer)
                    })
                    .collect::<Vec<_>>()
            },
            |round| {
                let mut sent = 0;
                let step = Duration::from_millis(1);
                for chunk in round.chunks(BATCH) {
                    sent += wake(&mut r, &mut now, step, |r, now| {
                        chunk
                            .iter()
                            .for_each(|(request, _)| r.handle_capture(now, request))
                    });
                    wake(&mut r, &mut now, step, |r, now| {
                        chunk.iter().for_each(|(_, answer)| {
                            r.handle_response(now, answer);
                        })
                    });
                }
                assert_eq!(sent, SESSIONS, "one segment per request");
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, short_connections, keep_alive_requests);
criterion_main!(benches);
