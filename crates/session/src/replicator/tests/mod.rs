//! The replicator on simulated time: explicit packets and millisecond timestamps, no sockets.
//! The helpers here open sessions in known states; the tests live in one file per topic.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use wire::{Flags, SegmentRepr, Seq, TcpPacket};

use super::Replicator;
use crate::config::{Config, Rule};
use crate::testing::segment;

mod acks;
mod close;
mod copies;
mod dialect;
mod half_open;
mod handshake;
mod joined;
mod lost;
mod port_reuse;
mod requests;
mod retransmission;
mod simulation;
mod window;

const CLIENT: &str = "198.18.0.10:40000";

const ONLINE: &str = "198.18.0.20:80";

const TARGET: &str = "198.18.0.30:8080";

const FAKE: &str = "198.19.0.7";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config() -> Config {
    let mut c = Config::new(vec![Rule {
        online_addr: None,
        online_port: 80,
        target: addr(TARGET),
    }]);
    c.fake_clients = vec![FAKE.parse().unwrap()];
    c.session_timeout = Duration::from_secs(60);
    // Exact sequence numbers below: the target sees the client's ISN (the simulation keeps the clock).
    c.clock_isn = false;
    // Exact packets below: every acknowledgment at once, unless a test turns delays on (the
    // simulation does).
    c.delayed_ack = None;
    c
}

/// [`config`] with the default delayed acknowledgments.
fn config_delayed_ack() -> Config {
    Config {
        delayed_ack: Config::new(Vec::new()).delayed_ack,
        ..config()
    }
}

fn ms(base: Instant, t: u64) -> Instant {
    base + Duration::from_millis(t)
}

fn client_pkt(seq: u32, ack: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
    segment(addr(CLIENT), addr(ONLINE), seq, ack, flags, payload)
}

fn target_pkt(seq: u32, ack: u32, flags: Flags, payload_len: usize) -> Vec<u8> {
    let local = SocketAddr::new(FAKE.parse().unwrap(), 40000);
    segment(
        addr(TARGET),
        local,
        seq,
        ack,
        flags,
        &vec![b'r'; payload_len],
    )
}

/// What the replicator sent, parsed into (seq, ack, flags, payload).
fn sent(r: &mut Replicator) -> Vec<(u32, u32, Flags, Vec<u8>)> {
    let mut out = Vec::new();
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).expect("replicator emits valid packets");
        assert_eq!(
            t.src(),
            SocketAddr::new(FAKE.parse().unwrap(), 40000),
            "source is the fake client"
        );
        assert_eq!(t.dst(), addr(TARGET), "destination is the target");
        out.push((t.seq().0, t.ack().0, t.flags(), t.payload().to_vec()));
    });
    out
}

const C_ISN: u32 = 1000;

const O_ISN: u32 = 5_000_000;

const T_ISN: u32 = 900_000;

/// [`established`], then the client's first request, sent to the target as one segment.
fn first_request_sent(base: Instant) -> Replicator {
    first_request_sent_with(base, config())
}

fn first_request_sent_with(base: Instant, cfg: Config) -> Replicator {
    let mut r = established_with(base, cfg);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    assert_eq!(sent(&mut r).len(), 1);
    r
}

/// Runs the handshake: client SYN captured, target SYN-ACK reported.
fn established(base: Instant) -> Replicator {
    established_with(base, config())
}

fn established_with(base: Instant, cfg: Config) -> Replicator {
    let delayed = cfg.delayed_ack.is_some();
    let mut r = Replicator::new(cfg);
    r.handle_capture(ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    assert!(
        sent(&mut r).is_empty(),
        "the client's SYN is held until its handshake completes online"
    );
    assert_eq!(
        (r.stats().sessions_half_open, r.stats().sessions_created),
        (1, 0)
    );
    // The client's own handshake ACK, as captured: the session opens at the target.
    r.handle_capture(
        ms(base, 0),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b""),
    );
    let syn = sent(&mut r);
    assert_eq!(syn.len(), 1);
    assert_eq!(syn[0].0, C_ISN, "the target sees the client's ISN");
    assert_eq!(syn[0].2, Flags::SYN);
    let mut routes = Vec::new();
    r.drain_routes(|rs| routes.extend_from_slice(rs));
    assert_eq!(
        routes,
        vec![SocketAddr::new(FAKE.parse().unwrap(), 40000)],
        "the route is announced"
    );
    r.handle_response(
        ms(base, 1),
        &target_pkt(T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    let ack = sent(&mut r);
    if delayed {
        assert!(
            ack.is_empty(),
            "the handshake ACK waits for the first request"
        );
    } else {
        assert_eq!(
            ack,
            vec![(C_ISN + 1, T_ISN + 1, Flags::ACK, vec![])],
            "handshake ACK acknowledges the target's ISN"
        );
    }
    r
}

/// A client's SYN and its handshake-completing ACK captured at `at`: the session opens at the
/// target (a SYN alone is held, see [`established_with`]).
fn handshake(r: &mut Replicator, at: Instant, syn: &[u8]) {
    r.handle_capture(at, syn);
    let p = TcpPacket::parse(syn).expect("a valid SYN");
    let ack = segment(
        p.src(),
        p.dst(),
        (p.seq() + 1).0,
        O_ISN + 1,
        Flags::ACK,
        b"",
    );
    r.handle_capture(at, &ack);
}

/// An established session with delayed ACKs that sent its first request (`req1\n`) at 2 ms.
fn delayed_ack_with_first_request(base: Instant) -> Replicator {
    let mut r = established_with(base, config_delayed_ack());
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    assert_eq!(sent(&mut r).len(), 1);
    r
}

/// An established session whose client sent `old\n` and then closed (FIN captured).
fn client_closed_after_one_request(base: Instant) -> Replicator {
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"old\n"),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 5, O_ISN + 50, Flags::ACK | Flags::FIN, b""),
    );
    r
}

/// [`client_closed_after_one_request`], and then the target answers and acknowledges our FIN
/// but does not close its side (yet): half open.
fn half_open_at_the_target(base: Instant) -> Replicator {
    let mut r = client_closed_after_one_request(base);
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 5, Flags::ACK, 10),
    );
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 11, C_ISN + 6, Flags::ACK, 0),
    );
    let out = sent(&mut r);
    assert!(out.iter().any(|p| p.2.fin()), "{out:?}");
    r
}
