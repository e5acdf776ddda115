//! The bridge between the real session core and a simulated target (an echoing line server):
//! what a captured session sends arrives whole and in order, answers pace the requests, and the
//! session completes at both ends.

use std::time::{Duration, Instant};

use session::testing::segment;
use session::{Config as CoreConfig, Replicator, Rule};
use wire::Flags;

use super::*;

const C_ISN: u32 = 5000;
const O_ISN: u32 = 90_000;

fn online() -> SocketAddr {
    "10.0.0.1:80".parse().unwrap()
}

/// The simulated target: what it got, and its kernel's behaviour (accept everything).
#[derive(Default)]
struct Target {
    got: Vec<u8>,
    answered: usize,
    closed: bool,
}

/// One round: the core's packets to the bridge, the commands executed, the answers back.
fn step(core: &mut Replicator, bridge: &mut Bridge, target: &mut Target, now: Instant) {
    core.handle_timeout(now);
    core.drain_transmits(|p| bridge.handle_transmit(now, p));
    bridge.handle_timeout(now);
    while let Some(cmd) = bridge.poll_command() {
        match cmd {
            Command::Connect { conn, .. } => bridge.connected(now, conn),
            Command::Write { conn } => {
                let n = {
                    let bytes = bridge.pending(conn);
                    target.got.extend_from_slice(bytes);
                    bytes.len()
                };
                bridge.written(now, conn, n);
                let lines = target.got.iter().filter(|&&c| c == b'\n').count();
                for _ in target.answered..lines {
                    bridge.received(now, conn, b"answer\n");
                }
                target.answered = lines;
            }
            Command::Shutdown { conn } => {
                target.closed = true;
                bridge.eof(now, conn);
            }
            // This target acknowledges everything at once: nothing to wait for.
            Command::Linger { conn } => bridge.drained(conn),
            Command::Abort { .. } | Command::Close { .. } => {}
        }
    }
    bridge.drain_responses(|h, _| {
        core.handle_response(now, h);
    });
}

#[test]
fn captured_session_reaches_the_target_in_order_and_completes() {
    let t0 = Instant::now();
    let mut cfg = CoreConfig::new(vec![Rule {
        online_addr: None,
        online_port: 80,
        target: target(),
    }]);
    cfg.mss = 60_000;
    cfg.mtu = 65_535;
    let mut core = Replicator::new(cfg);
    let mut bridge = Bridge::new(Config::default());
    let mut t = Target::default();
    let c = client();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    core.handle_capture(ms(0), &segment(c, online(), C_ISN, 0, Flags::SYN, b""));
    core.handle_capture(
        ms(1),
        &segment(c, online(), C_ISN + 1, O_ISN + 1, Flags::ACK, b""),
    );
    let big = vec![b'b'; 100_000];
    let mut request = big.clone();
    request.push(b'\n');
    let requests: [&[u8]; 3] = [b"first\n", &request, b"third\n"];
    let mut seq = C_ISN + 1;
    let mut ack = O_ISN + 1;
    let mut now = 2;
    for r in requests {
        // Captured in segments an IP length can say.
        for part in r.chunks(50_000) {
            let p = segment(c, online(), seq, ack, Flags::ACK | Flags::PSH, part);
            core.handle_capture(ms(now), &p);
            seq += part.len() as u32;
        }
        // The online server answered 7 bytes.
        ack += 7;
        for _ in 0..5 {
            now += 1;
            step(&mut core, &mut bridge, &mut t, ms(now));
        }
    }
    core.handle_capture(
        ms(now),
        &segment(c, online(), seq, ack, Flags::ACK | Flags::FIN, b""),
    );
    for _ in 0..10 {
        now += 50;
        step(&mut core, &mut bridge, &mut t, ms(now));
    }
    let mut expected = Vec::new();
    requests.iter().for_each(|r| expected.extend_from_slice(r));
    assert_eq!(t.got.len(), expected.len(), "every byte");
    assert!(t.got == expected, "in order");
    assert!(t.closed, "the core's FIN shut the connection down");
    let s = core.stats();
    assert_eq!((s.requests_online, s.requests_target), (3, 3));
    assert_eq!(s.sessions_completed, 1);
    assert_eq!(s.retransmits, 0);
    assert_eq!(bridge.connections(), 0);
    assert_eq!(bridge.stats().bytes_written, expected.len() as u64);
}
