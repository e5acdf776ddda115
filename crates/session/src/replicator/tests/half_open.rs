//! Half-open sessions: a client's SYN is held until its handshake completes online, so a SYN
//! flood never reaches the target; they count against the memory budget and are shed first.

use super::*;
use crate::testing::Rng;
use crate::SESSION_COST;

/// A spoofed SYN from a random source, as a flood sends them.
fn spoofed_syn(rng: &mut Rng) -> (SocketAddr, Vec<u8>) {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 | rng.below(1 << 24) as u32);
    let src = SocketAddr::new(ip.into(), 1024 + rng.below(60_000) as u16);
    let isn = rng.next_u64() as u32;
    (src, segment(src, addr(ONLINE), isn, 0, Flags::SYN, b""))
}

fn count_sent(r: &mut Replicator) -> usize {
    let mut n = 0;
    r.drain_transmits(|_| n += 1);
    n
}

#[test]
fn a_syn_flood_never_reaches_the_target_and_expires() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    let mut rng = Rng::new(19);
    for i in 0..10_000 {
        r.handle_capture(ms(base, i / 10), &spoofed_syn(&mut rng).1);
    }
    assert_eq!(
        count_sent(&mut r),
        0,
        "no SYN of the flood goes to the target"
    );
    let mut routes = 0;
    r.drain_routes(|rs| routes += rs.len());
    assert_eq!(routes, 0, "no route announced for a half-open session");
    assert_eq!(r.routes().count(), 0);
    let s = r.stats();
    assert_eq!(
        (s.sessions_half_open, s.sessions_created, s.sessions_active),
        (10_000, 0, 0),
        "{s}"
    );
    assert_eq!(
        r.stalled_sessions(),
        0,
        "half-open sessions wait on the client"
    );
    // The half-open timeout (capped by `-t`, 60 s here) after the last SYN: all forgotten.
    let end = ms(base, 1_000 + 60_000);
    while let Some(at) = r.poll_timeout().filter(|&at| at <= end) {
        r.handle_timeout(at);
    }
    r.handle_timeout(end);
    assert_eq!(count_sent(&mut r), 0, "not even a reset");
    let s = r.stats();
    assert_eq!(
        (
            s.sessions_half_open,
            s.sessions_half_open_expired,
            s.sessions_timed_out
        ),
        (0, 10_000, 0),
        "{s}"
    );
    assert_eq!(r.accounted_bytes(), 0);
}

#[test]
fn the_first_data_completes_the_handshake_too() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    r.handle_capture(base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
    assert!(sent(&mut r).is_empty());
    // The handshake ACK went missing in the capture: the first request opens the session.
    r.handle_capture(
        ms(base, 20),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req\n"),
    );
    assert_eq!(sent(&mut r), vec![(C_ISN, 0, Flags::SYN, vec![])]);
    r.handle_response(
        ms(base, 21),
        &target_pkt(T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 1,
            T_ISN + 1,
            Flags::ACK | Flags::PSH,
            b"req\n".to_vec()
        )]
    );
    let s = r.stats();
    assert_eq!((s.sessions_created, s.sessions_half_open), (1, 0), "{s}");
}

#[test]
fn a_client_reset_before_its_handshake_completed_sends_nothing() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    r.handle_capture(base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
    r.handle_capture(ms(base, 1), &client_pkt(C_ISN + 1, 0, Flags::RST, b""));
    assert!(sent(&mut r).is_empty());
    let s = r.stats();
    assert_eq!(
        (
            s.sessions_half_open,
            s.sessions_half_open_expired,
            s.sessions_created
        ),
        (0, 1, 0),
        "{s}"
    );
}

#[test]
fn half_open_sessions_are_shed_oldest_first_to_keep_within_the_budget() {
    let base = Instant::now();
    let mut cfg = config();
    // Room for 100 sessions and a little more.
    cfg.max_buffered_bytes = 100 * SESSION_COST + 500;
    let budget = cfg.max_buffered_bytes;
    // A real session holding a request the target has not acknowledged.
    let mut r = first_request_sent_with(base, cfg);
    let mut rng = Rng::new(7);
    let mut flood = Vec::new();
    for i in 0..1_000 {
        let (src, syn) = spoofed_syn(&mut rng);
        r.handle_capture(ms(base, 10 + i / 100), &syn);
        flood.push((src, TcpPacket::parse(&syn).unwrap().seq()));
        assert!(
            r.accounted_bytes() <= budget,
            "{} > {budget}",
            r.accounted_bytes()
        );
    }
    assert_eq!(count_sent(&mut r), 0);
    let s = r.stats();
    assert_eq!(
        (
            s.sessions_half_open,
            s.sessions_half_open_shed,
            s.sessions_overflowed
        ),
        (99, 901, 0),
        "the real session stays, the oldest SYNs go: {s}"
    );
    assert_eq!(s.sessions_active, 1, "{s}");
    // The oldest was shed: its handshake ACK finds nothing (and joins nothing: no data).
    let ack = |&(src, isn): &(SocketAddr, Seq)| {
        segment(src, addr(ONLINE), (isn + 1).0, 1, Flags::ACK, b"")
    };
    r.handle_capture(ms(base, 30), &ack(&flood[0]));
    assert_eq!(count_sent(&mut r), 0);
    // The newest is held: its handshake ACK opens it at the target.
    r.handle_capture(ms(base, 30), &ack(&flood[999]));
    let mut syns = Vec::new();
    r.drain_transmits(|p| syns.push(TcpPacket::parse(p).unwrap().flags()));
    assert_eq!(syns, vec![Flags::SYN]);
    let s = r.stats();
    assert_eq!((s.sessions_created, s.sessions_half_open), (2, 98), "{s}");
}

#[test]
fn with_no_half_open_session_left_a_new_syn_gives_way_and_bytes_overflow_as_before() {
    let base = Instant::now();
    let mut cfg = config();
    cfg.max_buffered_bytes = 2 * SESSION_COST + 10;
    let mut r = established_with(base, cfg);
    let other = addr("198.18.0.11:40001");
    handshake(
        &mut r,
        ms(base, 2),
        &segment(other, addr(ONLINE), 5, 0, Flags::SYN, b""),
    );
    r.drain_transmits(|_| {});
    assert_eq!(r.stats().sessions_created, 2);
    // A third client's SYN: no half-open session to shed, the new one gives way itself.
    let third = addr("198.18.0.12:40002");
    r.handle_capture(
        ms(base, 3),
        &segment(third, addr(ONLINE), 9, 0, Flags::SYN, b""),
    );
    let s = r.stats();
    assert_eq!(
        (
            s.sessions_half_open,
            s.sessions_half_open_shed,
            s.sessions_created
        ),
        (0, 1, 2),
        "{s}"
    );
    // Bytes past the budget drop the session that holds them, as before (overflow).
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"0123456789abcdef"),
    );
    let s = r.stats();
    assert_eq!((s.sessions_overflowed, s.sessions_active), (1, 1), "{s}");
    assert!(r.accounted_bytes() <= 2 * SESSION_COST + 10);
}

/// The cost of holding the SYN, measured on simulated time: a client 30 ms away, a target 2 ms
/// away. The target's session opens one client RTT after the SYN (when the client's ACK is
/// captured), and the first request, sent right behind that ACK, waits for the target's SYN-ACK:
/// it reaches the target 2 ms (the target's RTT, the shorter one) later than when the SYN went at
/// once.
#[test]
fn the_target_session_opens_one_client_rtt_after_the_syn() {
    let base = Instant::now();
    let mut r = Replicator::new(config_delayed_ack());
    r.handle_capture(base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
    assert!(sent(&mut r).is_empty(), "nothing at 0 ms");
    // The online server's SYN-ACK reaches the client at 15 ms; its ACK and first request are
    // captured at 30 ms.
    r.handle_capture(
        ms(base, 30),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b""),
    );
    r.handle_capture(
        ms(base, 30),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"GET /\n"),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN, 0, Flags::SYN, vec![])],
        "the target's SYN leaves at 30 ms, one client RTT after the client's"
    );
    // The target's SYN-ACK is reported 2 ms later: the request goes with the handshake's ACK.
    r.handle_response(
        ms(base, 32),
        &target_pkt(T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 1,
            T_ISN + 1,
            Flags::ACK | Flags::PSH,
            b"GET /\n".to_vec()
        )],
        "the first request reaches the target at 32 ms (30 ms when the SYN went at once)"
    );
}
