//! The session core on simulated time: explicit packets and millisecond timestamps, no sockets.

use super::*;
use crate::config::Rule;
use std::collections::BTreeMap as Map;
use wire::TcpPacket;

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

/// A packet from `src` to `dst`.
fn pkt(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    SegmentRepr {
        src,
        dst,
        seq: Seq(seq),
        ack: Seq(ack),
        flags,
        window: 65535,
        mss: flags.syn().then_some(1460),
        window_scale: None,
        ttl: 64,
    }
    .emit(payload, &mut out);
    out
}

fn client_pkt(seq: u32, ack: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
    pkt(addr(CLIENT), addr(ONLINE), seq, ack, flags, payload)
}

fn target_pkt(seq: u32, ack: u32, flags: Flags, payload_len: usize) -> Vec<u8> {
    let local = SocketAddr::new(FAKE.parse().unwrap(), 40000);
    pkt(
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
    let mut r = established(base);
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
    // The client's own handshake ACK, as captured: nothing to send.
    r.handle_capture(
        ms(base, 1),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b""),
    );
    assert!(sent(&mut r).is_empty());
    r
}

#[test]
fn handshake_establishes_with_the_target() {
    let base = Instant::now();
    let r = established(base);
    let s = r.stats();
    assert_eq!(
        (s.sessions_created, s.sessions_active, s.packets_sent),
        (1, 1, 2)
    );
}

#[test]
fn acknowledgments_are_translated_to_the_target_sequence_space() {
    let base = Instant::now();
    let mut r = established_with(base, config_delayed_ack());
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"GET /a\n"),
    );
    let out = sent(&mut r);
    assert_eq!(
        out,
        vec![(
            C_ISN + 1,
            T_ISN + 1,
            Flags::ACK | Flags::PSH,
            b"GET /a\n".to_vec()
        )]
    );
    // The target acknowledges and answers with 300 bytes: we acknowledge those 300 bytes, whatever
    // the online server sent.
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 8, Flags::ACK | Flags::PSH, 300),
    );
    assert!(
        sent(&mut r).is_empty(),
        "one segment: its acknowledgment is delayed"
    );
    let at = r.poll_timeout().unwrap();
    assert_eq!(at, ms(base, 43), "40 ms later");
    r.handle_timeout(at);
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 8, T_ISN + 301, Flags::ACK, vec![])]
    );
    assert_eq!(r.stats().target_bytes, 7);
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

#[test]
fn a_delayed_acknowledgment_rides_on_the_next_request_or_goes_at_the_second_segment() {
    let base = Instant::now();
    let mut r = delayed_ack_with_first_request(base);
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 100),
    );
    assert!(sent(&mut r).is_empty());
    // The next request carries the acknowledgment: no ACK of its own, now or later.
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 6, O_ISN + 101, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 6,
            T_ISN + 101,
            Flags::ACK | Flags::PSH,
            b"req2\n".to_vec()
        )]
    );
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 101, C_ISN + 11, Flags::ACK, 0),
    );
    r.handle_timeout(ms(base, 100));
    assert!(sent(&mut r).is_empty(), "nothing left to acknowledge");
    // A two-segment answer is acknowledged at its second segment.
    r.handle_response(
        ms(base, 101),
        &target_pkt(T_ISN + 101, C_ISN + 11, Flags::ACK, 1000),
    );
    assert!(sent(&mut r).is_empty());
    r.handle_response(
        ms(base, 101),
        &target_pkt(T_ISN + 1101, C_ISN + 11, Flags::ACK | Flags::PSH, 500),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 11, T_ISN + 1601, Flags::ACK, vec![])]
    );
    // A repeated segment (our acknowledgment was lost) is acknowledged at once.
    r.handle_response(
        ms(base, 300),
        &target_pkt(T_ISN + 1101, C_ISN + 11, Flags::ACK | Flags::PSH, 500),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 11, T_ISN + 1601, Flags::ACK, vec![])]
    );
}

#[test]
fn a_target_fin_is_acknowledged_by_our_fin_when_the_client_closes_within_the_delay() {
    let base = Instant::now();
    let mut r = delayed_ack_with_first_request(base);
    // The server answers and closes (`Connection: close`), answer and FIN in two segments.
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 100),
    );
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 101, C_ISN + 6, Flags::ACK | Flags::FIN, 0),
    );
    assert!(sent(&mut r).is_empty(), "the FIN waits for the delay too");
    // The client closes a millisecond later: one FIN acknowledges the target's answer and FIN.
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 6, O_ISN + 102, Flags::ACK | Flags::FIN, b""),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 6, T_ISN + 102, Flags::ACK | Flags::FIN, vec![])]
    );
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 102, C_ISN + 7, Flags::ACK, 0),
    );
    assert_eq!(r.stats().sessions_completed, 1);
    assert!(sent(&mut r).is_empty());

    // A client that does not close: the FIN is acknowledged when the delay is over.
    let mut r = delayed_ack_with_first_request(base);
    r.handle_response(
        ms(base, 3),
        &target_pkt(
            T_ISN + 1,
            C_ISN + 6,
            Flags::ACK | Flags::PSH | Flags::FIN,
            100,
        ),
    );
    assert!(sent(&mut r).is_empty());
    let due = r.poll_timeout().unwrap();
    assert_eq!(due, ms(base, 3) + config_delayed_ack().delayed_ack.unwrap());
    r.handle_timeout(due);
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 6, T_ISN + 102, Flags::ACK, vec![])]
    );

    // A client that closed first: our FIN went out already, the target's FIN ends the session
    // and is acknowledged at once, not left behind with the closed session.
    let mut r = established_with(base, config_delayed_ack());
    r.handle_capture(
        ms(base, 2),
        &client_pkt(
            C_ISN + 1,
            O_ISN + 1,
            Flags::ACK | Flags::PSH | Flags::FIN,
            b"req1\n",
        ),
    );
    assert_eq!(sent(&mut r).len(), 1);
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 100),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 6, T_ISN + 101, Flags::ACK | Flags::FIN, vec![])],
        "the answer came: the client's FIN follows"
    );
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 101, C_ISN + 7, Flags::ACK | Flags::FIN, 0),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 7, T_ISN + 102, Flags::ACK, vec![])]
    );
    assert_eq!(r.stats().sessions_completed, 1);
}

#[test]
fn next_request_waits_for_the_answer_to_the_previous_one() {
    let base = Instant::now();
    let mut r = first_request_sent(base);
    // Online answered 50 bytes; the client's next request acknowledges them.
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    assert!(
        sent(&mut r).is_empty(),
        "request 2 must wait for the target's answer to request 1"
    );
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK, 0),
    );
    assert!(sent(&mut r).is_empty(), "acknowledged but not answered yet");
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 70),
    );
    let out = sent(&mut r);
    assert_eq!(
        out,
        vec![(
            C_ISN + 6,
            T_ISN + 71,
            Flags::ACK | Flags::PSH,
            b"req2\n".to_vec()
        )]
    );
    let s = r.stats();
    assert_eq!((s.requests_online, s.requests_target), (2, 1));
}

#[test]
fn a_session_is_stalled_while_its_next_step_waits_on_the_target() {
    let base = Instant::now();
    let mut r = established(base);
    assert_eq!(r.stalled_sessions(), 0, "established, nothing held");
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    assert_eq!(sent(&mut r).len(), 1);
    assert_eq!(r.stalled_sessions(), 0, "request 1 went out: nothing held");
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    assert!(sent(&mut r).is_empty());
    assert_eq!(
        r.stalled_sessions(),
        1,
        "request 2 waits for the answer to 1"
    );
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 70),
    );
    assert_eq!(sent(&mut r).len(), 1);
    assert_eq!(r.stalled_sessions(), 0, "the answer released request 2");
    // A long answer: without PSH, more follows as our acknowledgments come back.
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 71, C_ISN + 11, Flags::ACK, 1000),
    );
    assert_eq!(r.stalled_sessions(), 1, "an answer under way");
    r.handle_response(
        ms(base, 6),
        &target_pkt(T_ISN + 1071, C_ISN + 11, Flags::ACK | Flags::PSH, 500),
    );
    assert_eq!(r.stalled_sessions(), 0, "the answer is complete");
    sent(&mut r);

    // A second connection: its request waits for the target's SYN-ACK.
    let client2 = addr("198.18.0.10:40001");
    let count = |r: &mut Replicator| {
        let mut n = 0;
        r.drain_transmits(|_| n += 1);
        n
    };
    r.handle_capture(
        ms(base, 5),
        &pkt(client2, addr(ONLINE), C_ISN, 0, Flags::SYN, b""),
    );
    assert_eq!(count(&mut r), 1, "the SYN");
    assert_eq!(r.stalled_sessions(), 1, "its handshake waits on the target");
    r.handle_capture(
        ms(base, 6),
        &pkt(
            client2,
            addr(ONLINE),
            C_ISN + 1,
            O_ISN + 1,
            Flags::ACK | Flags::PSH,
            b"req\n",
        ),
    );
    assert_eq!(count(&mut r), 0);
    assert_eq!(r.stalled_sessions(), 1, "and its request too");
    // The target refuses it: the session ends, and with it what it held.
    let local2 = SocketAddr::new(FAKE.parse().unwrap(), 40001);
    r.handle_response(
        ms(base, 7),
        &pkt(
            addr(TARGET),
            local2,
            0,
            C_ISN + 1,
            Flags::RST | Flags::ACK,
            b"",
        ),
    );
    assert_eq!(r.stats().sessions_active, 1);
    assert_eq!(
        r.stalled_sessions(),
        0,
        "an ended session is no longer counted"
    );
    r.assert_stalled_count();
}

#[test]
fn unanswered_request_releases_the_next_after_response_wait() {
    let base = Instant::now();
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"set\n"),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 5, O_ISN + 9, Flags::ACK, b"get\n"),
    );
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 5, Flags::ACK, 0),
    );
    assert_eq!(sent(&mut r).len(), 1);
    let wait = r.config().response_wait.as_millis() as u64;
    let at = r.poll_timeout().unwrap();
    assert_eq!(at, ms(base, 4 + wait), "the timer is the response wait");
    r.handle_timeout(at);
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 5,
            T_ISN + 1,
            Flags::ACK | Flags::PSH,
            b"get\n".to_vec()
        )]
    );
}

#[test]
fn close_completes_after_both_fins() {
    let base = Instant::now();
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"q\n"),
    );
    sent(&mut r);
    // The target answers and closes (like `Connection: close`).
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 3, Flags::ACK | Flags::FIN, 10),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 3, T_ISN + 12, Flags::ACK, vec![])],
        "FIN acknowledged"
    );
    // The client closes too: its FIN goes to the target.
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 3, O_ISN + 20, Flags::ACK | Flags::FIN, b""),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 3, T_ISN + 12, Flags::ACK | Flags::FIN, vec![])]
    );
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 12, C_ISN + 4, Flags::ACK, 0),
    );
    let s = r.stats();
    assert_eq!(
        (
            s.sessions_completed,
            s.sessions_active,
            s.requests_online,
            s.requests_target
        ),
        (1, 0, 1, 1)
    );
    // The closed session lingers as a small record: it acknowledges a repeated target FIN again
    // and ignores the client's late segments, then disappears.
    assert!(r.sessions.is_empty() && r.by_online.is_empty() && r.by_target.is_empty());
    assert_eq!(r.poll_timeout(), Some(ms(base, 5 + 2_000)));
    let fin_again = target_pkt(T_ISN + 1, C_ISN + 3, Flags::ACK | Flags::FIN, 10);
    r.handle_response(ms(base, 300), &fin_again);
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 4, T_ISN + 12, Flags::ACK, vec![])],
        "repeated FIN acknowledged again"
    );
    let ignored = r.stats().ignored_packets;
    r.handle_capture(
        ms(base, 400),
        &client_pkt(C_ISN + 3, O_ISN + 20, Flags::ACK | Flags::FIN, b""),
    );
    assert_eq!(r.stats().ignored_packets, ignored + 1);
    assert!(sent(&mut r).is_empty() && r.sessions.is_empty());
    r.handle_timeout(ms(base, 5 + 2_000));
    assert!(r.closed.is_empty());
    assert_eq!(r.poll_timeout(), None);
    r.handle_response(ms(base, 2_100), &fin_again);
    assert!(sent(&mut r).is_empty());
    assert_eq!(r.stats().responses_unknown, 1);
}

#[test]
fn idle_session_times_out_with_a_reset() {
    let base = Instant::now();
    let mut r = established(base);
    let at = r.poll_timeout().unwrap();
    assert_eq!(at, ms(base, 1 + 60_000));
    r.handle_timeout(at);
    let out = sent(&mut r);
    assert_eq!(out.len(), 1);
    assert!(out[0].2.rst());
    assert_eq!(r.stats().sessions_timed_out, 1);
    assert!(r.sessions.is_empty() && r.by_online.is_empty() && r.by_target.is_empty());
}

#[test]
fn syn_is_retransmitted_then_the_session_fails() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    r.handle_capture(base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
    sent(&mut r);
    let mut syns = 0;
    while let Some(at) = r.poll_timeout() {
        r.handle_timeout(at);
        syns += sent(&mut r).iter().filter(|p| p.2 == Flags::SYN).count();
    }
    assert_eq!(syns as u32, r.config().max_retries);
    assert_eq!(r.stats().sessions_failed, 1);
}

#[test]
fn a_fast_target_still_gets_200_ms_before_a_retransmission() {
    // The handshake measured a 1 ms round trip. A target that is slow to take a request (its
    // accept queue full, its server busy) must not be sent the request again 20 ms later:
    // spurious retransmissions piled onto an overloaded target and made it fall further behind
    // (lab: 30k-100k per 12 s unthrottled short-connection row, and requests lost). A client's
    // TCP waits at least 200 ms.
    let base = Instant::now();
    let mut r = first_request_sent(base);
    let mut resent = None;
    while let Some(at) = r.poll_timeout() {
        r.handle_timeout(at);
        if sent(&mut r).iter().any(|p| p.3 == b"req1\n") {
            resent = Some(at);
            break;
        }
    }
    let resent = resent.expect("the request is retransmitted");
    assert_eq!(
        resent,
        ms(base, 202),
        "the floor of the retransmission timeout"
    );
}

#[test]
fn target_reset_ends_the_session() {
    let base = Instant::now();
    let mut r = established(base);
    r.handle_response(ms(base, 2), &target_pkt(T_ISN + 1, 0, Flags::RST, 0));
    assert_eq!(r.stats().sessions_reset_by_target, 1);
    assert!(r.sessions.is_empty());
}

#[test]
fn capture_duplicates_and_reordering_do_not_desynchronise() {
    let base = Instant::now();
    let mut r = established(base);
    let a = client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"hel");
    let b = client_pkt(C_ISN + 4, O_ISN + 1, Flags::ACK, b"lo\n");
    r.handle_capture(ms(base, 2), &b);
    assert!(sent(&mut r).is_empty(), "a hole: nothing to send yet");
    r.handle_capture(ms(base, 3), &a);
    r.handle_capture(ms(base, 3), &a);
    let data: Vec<u8> = sent(&mut r).into_iter().flat_map(|p| p.3).collect();
    assert_eq!(data, b"hello\n");
    assert_eq!(r.stats().duplicate_segments, 1);
}

#[test]
fn session_open_before_capture_is_joined() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    r.handle_capture(
        base,
        &client_pkt(7777, O_ISN, Flags::ACK | Flags::PSH, b"late\n"),
    );
    let out = sent(&mut r);
    assert_eq!(
        out,
        vec![(7776, 0, Flags::SYN, vec![])],
        "a synthesized SYN just before the data"
    );
    r.handle_response(
        ms(base, 1),
        &target_pkt(T_ISN, 7777, Flags::SYN | Flags::ACK, 0),
    );
    let out = sent(&mut r);
    assert_eq!(out[0].3, b"late\n");
    assert_eq!(r.stats().sessions_joined, 1);
}

#[test]
fn malformed_and_foreign_packets_are_counted_not_fatal() {
    let mut r = Replicator::new(config());
    let now = Instant::now();
    r.handle_capture(now, &[0x45, 0, 0]);
    r.handle_capture(
        now,
        &pkt(addr(CLIENT), addr("198.18.0.20:22"), 1, 0, Flags::SYN, b""),
    );
    r.handle_response(now, &[1, 2, 3]);
    r.handle_response(now, &target_pkt(1, 1, Flags::ACK, 0));
    let s = r.stats();
    assert_eq!(
        (s.malformed_packets, s.ignored_packets, s.responses_unknown),
        (2, 1, 1)
    );
    assert_eq!(r.pending_transmits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Seeded simulation: many sessions through a lossy, duplicating, reordering network.

/// Tiny deterministic PRNG (xorshift64*), so failures reproduce from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A minimal TCP server standing in for the target: out-of-order segments kept (so a hole draws
/// duplicate acknowledgments), one answer per `\n`-terminated request, a greeting first on
/// connections from even ports (server speaks first), FIN after the client's FIN, retransmission of
/// its own unacknowledged bytes.
#[derive(Default)]
struct SimTarget {
    conns: HashMap<SocketAddr, SimConn>,
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
    ooo: Map<u32, Vec<u8>>,
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
                ooo: Map::new(),
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
            out.push(pkt(
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
            out.push(pkt(
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
                let (me, seq) = (addr(TARGET), c.snd_una);
                if seq == Seq(c.isn) {
                    out.push(pkt(
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
                    out.push(pkt(me, *peer, seq.0, c.rcv_nxt.0, fl, &vec![b'r'; data]));
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
}

fn script(rng: &mut Rng, port: u16) -> ClientScript {
    let src = SocketAddr::new("198.18.0.10".parse().unwrap(), port);
    let dst = addr(ONLINE);
    let isn = rng.next() as u32;
    let mut seq = Seq(isn);
    let mut online_ack = Seq(rng.next() as u32);
    let mut segments = vec![pkt(src, dst, seq.0, 0, Flags::SYN, b"")];
    seq += 1;
    online_ack += 1;
    segments.push(pkt(src, dst, seq.0, online_ack.0, Flags::ACK, b""));
    if greets(port) {
        // The online server greeted; the client acknowledged it, then sent its first request.
        online_ack += GREETING as u32;
    }
    let mut stream = Vec::new();
    for req in 0..1 + rng.below(6) {
        let body_len = rng.below(4000) as usize;
        let mut body: Vec<u8> = (0..body_len)
            .map(|i| b'a' + ((i as u64 + req) % 26) as u8)
            .collect();
        body.push(b'\n');
        for chunk in body.chunks(1 + rng.below(1500) as usize) {
            segments.push(pkt(
                src,
                dst,
                seq.0,
                online_ack.0,
                Flags::ACK | Flags::PSH,
                chunk,
            ));
            seq += chunk.len() as u32;
        }
        stream.extend_from_slice(&body);
        online_ack += 1 + rng.below(3000) as u32; // the online server answered
    }
    segments.push(pkt(
        src,
        dst,
        seq.0,
        online_ack.0,
        Flags::ACK | Flags::FIN,
        b"",
    ));
    ClientScript {
        port,
        stream,
        segments,
    }
}

#[derive(Clone, Copy, Default)]
struct Faults {
    /// Chance that the network between replicator and target loses, duplicates or reorders a packet.
    loss: f64,
    dup: f64,
    reorder: f64,
    /// Extra one-way latency, uniform in 0..delay_ms, per packet.
    delay_ms: u64,
    /// Chance that the capture misses a client segment; the client's retransmission is captured
    /// 200 ms later.
    capture_loss: f64,
    /// Hand the replicator everything that arrives within 1 ms as one batch (`begin_batch` ..
    /// `end_batch`), as the live driver does with a capture block and a read of its intercepts.
    batch: bool,
}

/// Runs `sessions` scripted sessions through the replicator and a simulated target over a faulty
/// network; returns the stats and checks every stream arrived byte-exact.
fn simulate(seed: u64, sessions: usize, faults: Faults) -> Stats {
    let mut rng = Rng(seed | 1);
    let mut cfg = config_delayed_ack();
    cfg.clock_isn = true;
    cfg.isn_base = rng.next() as u32;
    cfg.fake_clients = (1..=250).map(|i| IpAddr::from([198, 19, 0, i])).collect();
    cfg.initial_rto = Duration::from_millis(50);
    let mut r = Replicator::new(cfg);
    let mut target = SimTarget::default();
    let base = Instant::now();
    let mut now = base;
    // Network: (deliver_at, seq_no) -> (to_target, packet)
    let mut net: Map<(Instant, u64), (bool, Vec<u8>)> = Map::new();
    let mut n = 0u64;
    let scripts: Vec<ClientScript> = (0..sessions)
        .map(|i| script(&mut rng, 10_000 + i as u16))
        .collect();
    // Capture: each client segment captured at its time; the capture itself duplicates and reorders.
    let mut capture: Vec<(Instant, Vec<u8>)> = Vec::new();
    for (i, s) in scripts.iter().enumerate() {
        let start = base + Duration::from_micros(i as u64 * 300);
        for (k, seg) in s.segments.iter().enumerate() {
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
    }
    capture.sort_by_key(|c| c.0);
    let mut capture = capture.into_iter().peekable();
    let deadline = base + Duration::from_secs(120);
    let mut last_scan = base;
    let mut send =
        |rng: &mut Rng, now: Instant, to_target: bool, p: Vec<u8>, net: &mut Map<_, _>| {
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
                let delay = 200 + rng.below(spread) + rng.below(faults.delay_ms * 1000);
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
    // Every stream arrived byte-exact.
    for s in &scripts {
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
        assert!(
            local.1.received == s.stream,
            "seed {seed}: session {} stream differs",
            s.port
        );
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
    r.stats()
}

#[test]
fn simulation_clean_network_delivers_every_byte_and_request() {
    let s = simulate(1, 500, Faults::default());
    assert_eq!(s.sessions_completed, 500);
    assert_eq!(s.requests_online, s.requests_target);
    assert_eq!(s.retransmits, 0);
}

#[test]
fn simulation_with_loss_duplication_and_reordering_is_byte_exact() {
    for seed in [2, 3, 4] {
        let s = simulate(
            seed,
            1000,
            Faults {
                loss: 0.02,
                dup: 0.02,
                reorder: 0.05,
                ..Faults::default()
            },
        );
        assert_eq!(s.requests_online, s.requests_target, "seed {seed}: {s}");
        assert!(
            s.retransmits + s.fast_retransmits > 0,
            "seed {seed}: loss must have caused retransmissions"
        );
    }
}

/// Issue 4's bar: 10,000 sessions through loss, duplication, reordering, delay and a capture that
/// misses segments, every stream byte-exact at the target, in seconds.
#[test]
fn simulation_of_ten_thousand_sessions_through_every_fault_is_byte_exact() {
    let started = std::time::Instant::now();
    let s = simulate(
        7,
        10_000,
        Faults {
            loss: 0.02,
            dup: 0.02,
            reorder: 0.05,
            delay_ms: 5,
            capture_loss: 0.01,
            batch: false,
        },
    );
    assert_eq!(s.sessions_completed, 10_000, "{s}");
    assert_eq!(s.requests_online, s.requests_target, "{s}");
    assert!(
        s.fast_retransmits > 0,
        "holes were repaired on duplicate acks: {s}"
    );
    assert!(s.retransmits > 0, "and some only by timeout: {s}");
    assert!(s.duplicate_segments > 0, "the capture duplicated: {s}");
    eprintln!("10k sessions simulated in {:?}: {s}", started.elapsed());
}

/// The same faults with the replicator driven in batches, as the live driver drives it: every
/// session moves on once per batch, and the streams stay byte-exact.
#[test]
fn simulation_in_batches_through_every_fault_is_byte_exact() {
    for seed in [8, 9] {
        let s = simulate(
            seed,
            3_000,
            Faults {
                loss: 0.02,
                dup: 0.02,
                reorder: 0.05,
                delay_ms: 5,
                capture_loss: 0.01,
                batch: true,
            },
        );
        assert_eq!(s.sessions_completed, 3_000, "seed {seed}: {s}");
        assert_eq!(s.requests_online, s.requests_target, "seed {seed}: {s}");
        assert!(s.retransmits + s.fast_retransmits > 0, "seed {seed}: {s}");
    }
    // On a clean network, batches save packets: fewer segments for the same streams.
    let single = simulate(10, 1_000, Faults::default());
    let batched = simulate(
        10,
        1_000,
        Faults {
            batch: true,
            ..Faults::default()
        },
    );
    eprintln!(
        "clean network, 1,000 sessions: {} packets one by one, {} in batches",
        single.packets_sent, batched.packets_sent
    );
    assert_eq!(batched.requests_target, single.requests_target);
    assert!(
        batched.packets_sent < single.packets_sent,
        "batched {} vs one by one {}",
        batched.packets_sent,
        single.packets_sent
    );
}

#[test]
fn aborted_session_is_not_rejoined_mid_stream() {
    let base = Instant::now();
    let mut cfg = config();
    cfg.max_session_bytes = 10;
    let mut r = Replicator::new(cfg);
    r.handle_capture(base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
    r.handle_capture(
        ms(base, 1),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"0123456789abcdef"),
    );
    assert_eq!(r.stats().sessions_overflowed, 1);
    sent(&mut r);
    // The rest of the upload must not start a "joined" session in the middle of the body.
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 17, O_ISN + 1, Flags::ACK, b"more body"),
    );
    assert!(sent(&mut r).is_empty());
    assert_eq!(r.stats().sessions_created, 1);
    // A new connection on the same port is a new session again.
    r.handle_capture(ms(base, 3), &client_pkt(C_ISN + 5000, 0, Flags::SYN, b""));
    assert_eq!(r.stats().sessions_created, 2);
}

#[test]
fn timer_wheel_stays_bounded_on_a_long_busy_session() {
    let base = Instant::now();
    let mut r = established(base);
    let mut seq = C_ISN + 1;
    for i in 0..20_000u32 {
        // Every request moves the session's deadlines; stale heap entries must not pile up.
        let t = ms(base, 2 + u64::from(i));
        r.handle_capture(t, &client_pkt(seq, O_ISN + 1 + i, Flags::ACK, b"q\n"));
        seq += 2;
        r.handle_response(t, &target_pkt(T_ISN + 1 + i, seq, Flags::ACK, 1));
        sent(&mut r);
    }
    assert_eq!(r.stats().requests_target, 19_999);
    assert!(
        r.timers.len() <= 2 * r.sessions.len() + 1025,
        "heap holds {}",
        r.timers.len()
    );
}

#[test]
fn late_acknowledgment_after_go_back_is_accepted() {
    let base = Instant::now();
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"abc"),
    );
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 4, O_ISN + 1, Flags::ACK, b"def\n"),
    );
    sent(&mut r);
    // The RTO fires and rewinds; the retransmission goes out, then the original ACK arrives late.
    let at = r.poll_timeout().unwrap();
    r.handle_timeout(at);
    sent(&mut r);
    r.handle_response(at, &target_pkt(T_ISN + 1, C_ISN + 8, Flags::ACK, 0));
    assert_eq!(
        r.stats().target_bytes,
        7,
        "the late acknowledgment counts in full"
    );
}

#[test]
fn reused_port_waits_for_the_previous_session_to_finish() {
    // Regression: a client reusing a port while the target still lagged behind on the previous
    // connection had that connection reset, losing its undelivered requests (queue-mode lab).
    let base = Instant::now();
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"old\n"),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 5, O_ISN + 50, Flags::ACK | Flags::FIN, b""),
    );
    assert_eq!(
        sent(&mut r).len(),
        1,
        "the old request went out, unacknowledged so far"
    );

    const C2: u32 = 777_000;
    r.handle_capture(ms(base, 4), &client_pkt(C2, 0, Flags::SYN, b""));
    r.handle_capture(
        ms(base, 5),
        &client_pkt(C2 + 1, O_ISN + 9_000, Flags::ACK, b"new\n"),
    );
    assert!(
        sent(&mut r).is_empty(),
        "neither a reset of the old session nor a SYN for the new one"
    );
    assert_eq!(r.stats().sessions_port_reused, 1);

    // The target acknowledges, answers and closes the old session; our FIN follows and is acked.
    r.handle_response(
        ms(base, 6),
        &target_pkt(T_ISN + 1, C_ISN + 5, Flags::ACK | Flags::FIN, 10),
    );
    let out = sent(&mut r);
    assert!(out.iter().any(|p| p.2.fin() && p.0 == C_ISN + 5), "{out:?}");
    r.handle_response(
        ms(base, 7),
        &target_pkt(T_ISN + 12, C_ISN + 6, Flags::ACK, 0),
    );
    let out = sent(&mut r);
    assert_eq!(
        out,
        vec![(C2, 0, Flags::SYN, vec![])],
        "the waiting session opens now"
    );

    r.handle_response(
        ms(base, 8),
        &target_pkt(T_ISN + 5000, C2 + 1, Flags::SYN | Flags::ACK, 0),
    );
    let out = sent(&mut r);
    assert_eq!(
        out,
        vec![(
            C2 + 1,
            T_ISN + 5001,
            Flags::ACK | Flags::PSH,
            b"new\n".to_vec()
        )]
    );
    let s = r.stats();
    assert_eq!(
        (s.sessions_completed, s.requests_online, s.requests_target),
        (1, 2, 1)
    );
}

#[test]
fn three_duplicate_acks_resend_the_hole_and_partial_acks_the_next() {
    let base = Instant::now();
    let mut r = established(base);
    // One 4-MSS super-segment as a TSO capture would show it: sent on as four segments.
    let body = vec![b'x'; 4 * 1460];
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, &body),
    );
    let segs = sent(&mut r);
    assert_eq!(
        segs.iter().map(|s| s.3.len()).collect::<Vec<_>>(),
        [1460; 4],
        "re-segmented to the MSS"
    );
    assert_eq!(r.stats().super_segments, 1);
    // Segments 1 and 3 are lost: the target acknowledges nothing new, three times.
    for _ in 0..3 {
        r.handle_response(
            ms(base, 3),
            &target_pkt(T_ISN + 1, C_ISN + 1, Flags::ACK, 0),
        );
    }
    let rtx = sent(&mut r);
    assert_eq!(rtx.len(), 1, "one fast retransmission: {rtx:?}");
    assert_eq!(rtx[0].0, C_ISN + 1);
    assert_eq!(rtx[0].3.len(), 1460);
    // It filled the first hole; the target acknowledges up to the second one (a partial ack).
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 1 + 2 * 1460, Flags::ACK, 0),
    );
    let rtx = sent(&mut r);
    assert_eq!(rtx.len(), 1, "the next hole at once: {rtx:?}");
    assert_eq!(rtx[0].0, C_ISN + 1 + 2 * 1460);
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 1, C_ISN + 1 + 4 * 1460, Flags::ACK, 0),
    );
    assert!(sent(&mut r).is_empty());
    let st = r.stats();
    assert_eq!((st.fast_retransmits, st.retransmits), (2, 0), "{st}");
    assert_eq!(st.target_bytes, 4 * 1460);
    assert_eq!(st.bytes_buffered, 0, "acknowledged bytes are released");
}

#[test]
fn the_target_window_is_scaled_and_honoured() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    r.handle_capture(ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    let mut syn = Vec::new();
    r.drain_transmits(|p| syn.push(p.to_vec()));
    let syn = TcpPacket::parse(&syn[0]).unwrap();
    assert_eq!(syn.window_scale(), Some(7), "window scaling is offered");
    // SYN-ACK with shift 2; then a window update of 1000 << 2 bytes.
    let mut synack = Vec::new();
    SegmentRepr {
        src: addr(TARGET),
        dst: SocketAddr::new(FAKE.parse().unwrap(), 40000),
        seq: Seq(T_ISN),
        ack: Seq(C_ISN + 1),
        flags: Flags::SYN | Flags::ACK,
        window: 65535,
        mss: Some(1460),
        window_scale: Some(2),
        ttl: 64,
    }
    .emit(&[], &mut synack);
    r.handle_response(ms(base, 1), &synack);
    let mut update = target_pkt(T_ISN + 1, C_ISN + 1, Flags::ACK, 0);
    update[34..36].copy_from_slice(&1000u16.to_be_bytes());
    let fixed = TcpPacket::parse(&update).unwrap().window();
    assert_eq!(fixed, 1000);
    r.handle_response(ms(base, 1), &update);
    sent(&mut r);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(
            C_ISN + 1,
            O_ISN + 1,
            Flags::ACK | Flags::PSH,
            &[b'y'; 10_000],
        ),
    );
    let bytes: usize = sent(&mut r).iter().map(|s| s.3.len()).sum();
    assert_eq!(bytes, 4000, "sending stops at the scaled window");
}

#[test]
fn a_zero_window_is_probed_then_filled_when_it_opens() {
    let base = Instant::now();
    let mut r = established(base);
    // The target's window closes before the request arrives.
    r.handle_response(ms(base, 2), &{
        let mut p = target_pkt(T_ISN + 1, C_ISN + 1, Flags::ACK, 0);
        p[34..36].copy_from_slice(&0u16.to_be_bytes());
        p
    });
    sent(&mut r);
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, &[b'z'; 3000]),
    );
    let probe = sent(&mut r);
    assert_eq!(probe.len(), 1, "one probe: {probe:?}");
    assert_eq!(probe[0].3.len(), 1, "of one byte");
    // Unanswered, the probe is repeated after the RTO, still one byte.
    let at = r.poll_timeout().unwrap();
    r.handle_timeout(at);
    let again = sent(&mut r);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].0, again[0].3.len()), (C_ISN + 1, 1));
    // The window opens (the probe byte acknowledged): the rest goes out.
    r.handle_response(
        at + Duration::from_millis(1),
        &target_pkt(T_ISN + 1, C_ISN + 2, Flags::ACK, 0),
    );
    let rest: usize = sent(&mut r).iter().map(|s| s.3.len()).sum();
    assert_eq!(rest, 2999);
}

#[test]
fn copies_are_distinct_sessions_on_shifted_ports() {
    let base = Instant::now();
    let mut cfg = config();
    cfg.copies = 3;
    let mut r = Replicator::new(cfg);
    r.handle_capture(ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    let mut ports = Vec::new();
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).unwrap();
        assert!(t.flags().syn());
        assert_eq!(t.seq(), Seq(C_ISN));
        ports.push(t.src().port());
    });
    assert_eq!(ports, [40000, 41000, 42000]);
    // Each copy completes its own handshake and gets the request.
    for &port in &ports {
        let local = SocketAddr::new(FAKE.parse().unwrap(), port);
        r.handle_response(
            ms(base, 1),
            &pkt(
                addr(TARGET),
                local,
                T_ISN,
                C_ISN + 1,
                Flags::SYN | Flags::ACK,
                b"",
            ),
        );
    }
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"GET /\n"),
    );
    let mut got = Vec::new();
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).unwrap();
        if !t.payload().is_empty() {
            got.push((t.src().port(), t.payload().to_vec()));
        }
    });
    got.sort();
    assert_eq!(
        got,
        ports
            .iter()
            .map(|&p| (p, b"GET /\n".to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.stats().sessions_created, 3);
    assert_eq!(
        r.config().copy_port(65000, 1),
        1024 + (65000 - 1024 + 1000) % 64512
    );
}

#[test]
fn sampling_keeps_a_stable_share_of_connections() {
    let mut cfg = config();
    cfg.sample_percent = 30;
    let kept = (0..20_000u32)
        .filter(|i| {
            let ip = IpAddr::from([198, 18, 0, 10 + (i / 10_000) as u8]);
            cfg.samples(SocketAddr::new(ip, 30_000 + (i % 10_000) as u16))
        })
        .count();
    assert!((5_600..=6_400).contains(&kept), "kept {kept} of 20000");
    // The same connection is always decided the same way, so every packet of it follows.
    let mut r = Replicator::new(cfg);
    let base = Instant::now();
    for port in 40_000..40_100u16 {
        let c = SocketAddr::new(addr(CLIENT).ip(), port);
        r.handle_capture(base, &pkt(c, addr(ONLINE), 1, 0, Flags::SYN, b""));
        r.handle_capture(
            base,
            &pkt(c, addr(ONLINE), 2, 9, Flags::ACK | Flags::PSH, b"x\n"),
        );
    }
    let st = r.stats();
    assert_eq!(
        st.sessions_created * 2 + st.sampled_out_packets,
        200,
        "{st}"
    );
    assert!((15..=45).contains(&st.sessions_created), "{st}");
}

#[test]
fn the_isn_clock_moves_later_sessions_forward() {
    let base = Instant::now();
    let mut cfg = config();
    cfg.clock_isn = true;
    cfg.isn_base = 1_000;
    let mut r = Replicator::new(cfg);
    let syn_seq = |r: &mut Replicator| {
        let mut seq = None;
        r.drain_transmits(|p| seq = Some(TcpPacket::parse(p).unwrap().seq().0));
        seq.unwrap()
    };
    r.handle_capture(ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    assert_eq!(syn_seq(&mut r), C_ISN + 1_000);
    // The same client ISN on another port a second later: 250,000 ticks of 4 µs further.
    let other = SocketAddr::new(addr(CLIENT).ip(), 40001);
    r.handle_capture(
        ms(base, 1000),
        &pkt(other, addr(ONLINE), C_ISN, 0, Flags::SYN, b""),
    );
    assert_eq!(syn_seq(&mut r), C_ISN + 1_000 + 250_000);
}

#[test]
fn a_stale_connection_at_the_target_is_reset_and_the_syn_repeated() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    r.handle_capture(ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    sent(&mut r);
    // Right after the SYN, a bare ACK may be a late packet of an earlier connection: ignored.
    r.handle_response(ms(base, 1), &target_pkt(T_ISN, 777_777, Flags::ACK, 0));
    assert!(sent(&mut r).is_empty());
    // The SYN is repeated, and again the target acknowledges an older connection (TIME-WAIT).
    let at = r.poll_timeout().unwrap();
    r.handle_timeout(at);
    assert_eq!(sent(&mut r), vec![(C_ISN, 0, Flags::SYN, vec![])]);
    r.handle_response(at, &target_pkt(T_ISN, 777_777, Flags::ACK, 0));
    let out = sent(&mut r);
    assert_eq!(
        out,
        vec![
            (777_777, 0, Flags::RST, vec![]),
            (C_ISN, 0, Flags::SYN, vec![]),
        ],
        "reset at the sequence number it expects, then the SYN again"
    );
    assert_eq!(r.stats().stale_target_connections, 1);
    // Then the real SYN-ACK establishes the session as usual.
    r.handle_response(
        at + Duration::from_millis(1),
        &target_pkt(T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 1, T_ISN + 1, Flags::ACK, vec![])]
    );
}

#[test]
fn busy_sessions_counts_only_work_towards_the_target() {
    let base = Instant::now();
    let mut r = established(base);
    assert_eq!(
        r.busy_sessions(),
        0,
        "established and idle: waits for its client"
    );
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"GET /\n"),
    );
    assert_eq!(r.busy_sessions(), 1, "unacknowledged bytes");
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 7, Flags::ACK, 10),
    );
    assert_eq!(r.busy_sessions(), 0, "acknowledged and answered");
}

#[test]
fn a_client_reset_waits_until_the_target_answered_every_request() {
    let base = Instant::now();
    let mut r = first_request_sent(base);
    // Online answered 50 bytes, the client sent its next request and then reset (the way wrk
    // ends, or a browser tab closing), all before the target answered request 1.
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 11, O_ISN + 101, Flags::RST, b""),
    );
    assert!(
        sent(&mut r).is_empty(),
        "request 2 still waits for the answer to request 1, and no reset goes out yet"
    );
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 70),
    );
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 6,
            T_ISN + 71,
            Flags::ACK | Flags::PSH,
            b"req2\n".to_vec()
        )]
    );
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 71, C_ISN + 11, Flags::ACK, 0),
    );
    assert!(
        sent(&mut r).is_empty(),
        "request 2 was acknowledged, not answered: the target's server may not have read it"
    );
    r.handle_response(
        ms(base, 6),
        &target_pkt(T_ISN + 71, C_ISN + 11, Flags::ACK | Flags::PSH, 70),
    );
    let out = sent(&mut r);
    assert!(
        out.last().is_some_and(|p| p.2.rst()) && out.iter().filter(|p| p.2.rst()).count() == 1,
        "the reset follows the last answer: {out:?}"
    );
    let s = r.stats();
    assert_eq!((s.requests_online, s.requests_target), (2, 2));
    assert_eq!(s.sessions_active, 0);
}

#[test]
fn a_client_reset_goes_out_after_response_wait_without_an_answer() {
    let base = Instant::now();
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 6, O_ISN + 1, Flags::RST, b""),
    );
    r.handle_response(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK, 0),
    );
    assert_eq!(sent(&mut r).len(), 1, "only request 1");
    let at = r.poll_timeout().unwrap();
    assert_eq!(at, ms(base, 4) + r.config().response_wait);
    r.handle_timeout(at);
    let out = sent(&mut r);
    assert!(out.len() == 1 && out[0].2.rst(), "{out:?}");
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

#[test]
fn reused_port_waits_for_a_close_still_under_way_at_the_target() {
    // Regression (bench, short connections unthrottled): the old request was acknowledged but not
    // answered when the client reused the port; resetting the old session then lost the request
    // in the target's receive queue.
    let base = Instant::now();
    let mut r = client_closed_after_one_request(base);
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 5, Flags::ACK, 0),
    );
    assert_eq!(sent(&mut r).len(), 1, "the old request");
    const C2: u32 = 777_000;
    r.handle_capture(ms(base, 4), &client_pkt(C2, 0, Flags::SYN, b""));
    assert!(
        sent(&mut r).is_empty(),
        "no reset of the old session, no SYN for the new one yet"
    );
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 1, C_ISN + 5, Flags::ACK | Flags::FIN, 10),
    );
    let out = sent(&mut r);
    assert!(out.iter().all(|p| !p.2.rst()), "{out:?}");
    assert!(out.iter().any(|p| p.2.fin()), "{out:?}");
    r.handle_response(
        ms(base, 6),
        &target_pkt(T_ISN + 12, C_ISN + 6, Flags::ACK, 0),
    );
    assert_eq!(sent(&mut r), vec![(C2, 0, Flags::SYN, vec![])]);
}

#[test]
fn a_port_closed_twice_on_two_fake_endpoints_leaves_one_closed_record() {
    // The client reuses its port while the first connection is still closing at the target; a
    // second fake address lets the new connection start at once. Both close within the linger
    // time: the second close replaces the first one's record, and the first endpoint must not
    // stay behind, answering the target with the second connection's acknowledgment forever.
    const FAKE2: &str = "198.19.0.8";
    let base = Instant::now();
    let mut cfg = config();
    cfg.fake_clients.push(FAKE2.parse().unwrap());
    let mut r = Replicator::new(cfg);
    let out = |r: &mut Replicator| {
        let mut v = Vec::new();
        r.drain_transmits(|p| {
            let t = TcpPacket::parse(p).unwrap();
            v.push((t.src(), t.seq().0, t.ack().0, t.flags()));
        });
        v
    };
    let to = |local: SocketAddr, seq: u32, ack: u32, flags: Flags, len: usize| {
        pkt(addr(TARGET), local, seq, ack, flags, &vec![b'r'; len])
    };
    r.handle_capture(ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    let first = out(&mut r)[0].0;
    r.handle_response(
        ms(base, 1),
        &to(first, T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    r.handle_capture(
        ms(base, 1),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b""),
    );
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"old\n"),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 5, O_ISN + 50, Flags::ACK | Flags::FIN, b""),
    );
    r.handle_response(ms(base, 3), &to(first, T_ISN + 1, C_ISN + 5, Flags::ACK, 0));
    out(&mut r);

    // The client reuses the port: the new connection takes the other fake address at once.
    const C2: u32 = 777_000;
    const T2: u32 = 300_000;
    r.handle_capture(ms(base, 4), &client_pkt(C2, 0, Flags::SYN, b""));
    let syn = out(&mut r);
    assert_eq!(syn.len(), 1, "{syn:?}");
    let second = syn[0].0;
    assert_ne!(second, first, "another fake endpoint");

    // The first connection finishes closing at the target.
    r.handle_response(
        ms(base, 5),
        &to(first, T_ISN + 1, C_ISN + 5, Flags::ACK | Flags::FIN, 10),
    );
    r.handle_response(
        ms(base, 6),
        &to(first, T_ISN + 12, C_ISN + 6, Flags::ACK, 0),
    );
    out(&mut r);
    assert_eq!(r.closed.holding_endpoints(), 1);

    // The second one opens and closes.
    r.handle_response(
        ms(base, 7),
        &to(second, T2, C2 + 1, Flags::SYN | Flags::ACK, 0),
    );
    r.handle_capture(ms(base, 7), &client_pkt(C2 + 1, O_ISN + 1, Flags::ACK, b""));
    r.handle_capture(
        ms(base, 8),
        &client_pkt(C2 + 1, O_ISN + 1, Flags::ACK | Flags::FIN, b""),
    );
    r.handle_response(
        ms(base, 9),
        &to(second, T2 + 1, C2 + 2, Flags::ACK | Flags::FIN, 0),
    );
    let last = out(&mut r);
    assert_eq!(
        last.last(),
        Some(&(second, C2 + 2, T2 + 2, Flags::ACK)),
        "{last:?}"
    );
    assert_eq!(r.stats().sessions_completed, 2);
    assert!(r.sessions.is_empty());

    // Only the second endpoint lingers: a repeated FIN on the first is unknown.
    assert_eq!(r.closed.len(), 1);
    assert_eq!(
        r.closed.holding_endpoints(),
        1,
        "the first endpoint's entry went with its record"
    );
    r.handle_response(
        ms(base, 10),
        &to(first, T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::FIN, 10),
    );
    assert!(out(&mut r).is_empty());
    assert_eq!(r.stats().responses_unknown, 1);
    r.handle_response(
        ms(base, 10),
        &to(second, T2 + 1, C2 + 2, Flags::ACK | Flags::FIN, 0),
    );
    assert_eq!(out(&mut r), vec![(second, C2 + 2, T2 + 2, Flags::ACK)]);
    r.handle_timeout(ms(base, 9 + 2_000));
    assert!(r.closed.is_empty());
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

#[test]
fn a_reused_port_waits_for_a_half_open_target_only_the_response_wait() {
    let base = Instant::now();
    let mut r = half_open_at_the_target(base);
    const C2: u32 = 777_000;
    r.handle_capture(ms(base, 6), &client_pkt(C2, 0, Flags::SYN, b""));
    assert!(sent(&mut r).is_empty(), "the new session waits");
    let at = r.poll_timeout().unwrap();
    assert_eq!(at, ms(base, 6) + r.config().response_wait);
    r.handle_timeout(at);
    let out = sent(&mut r);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].2.rst(), "the half-open session is reset: {out:?}");
    assert_eq!(out[1], (C2, 0, Flags::SYN, vec![]));
}

#[test]
fn a_half_open_session_whose_waiting_successor_ended_is_not_reset() {
    let base = Instant::now();
    let mut r = half_open_at_the_target(base);
    const C2: u32 = 777_000;
    r.handle_capture(ms(base, 6), &client_pkt(C2, 0, Flags::SYN, b""));
    // The new connection's next segment was cut short by the capture: it cannot be replicated
    // intact and ends before it started.
    let mut cut = client_pkt(
        C2 + 1,
        O_ISN + 1,
        Flags::ACK,
        b"new request
",
    );
    cut.truncate(cut.len() - 4);
    r.handle_capture(ms(base, 7), &cut);
    assert_eq!(r.stats().truncated_packets, 1);
    assert!(sent(&mut r).is_empty(), "{:?}", r.stats());
    // Nothing waits for the half-open session any more: no reset after the response wait.
    r.handle_timeout(ms(base, 6) + r.config().response_wait);
    assert!(sent(&mut r).is_empty());
    // It closes when the target does.
    r.handle_response(
        ms(base, 900),
        &target_pkt(T_ISN + 11, C_ISN + 6, Flags::ACK | Flags::FIN, 0),
    );
    let out = sent(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        !out[0].2.rst() && !out[0].2.fin(),
        "the ACK of its FIN: {out:?}"
    );
    assert_eq!(r.stats().sessions_completed, 1);
}

#[test]
fn the_timer_wheel_follows_the_clock_for_a_driver_that_wakes_only_when_due() {
    // Keep-alive requests answered in time: no timer ever comes due, so this driver never calls
    // handle_timeout. The wheel must still follow the clock, or after its 4.3 s span every new
    // retransmission deadline would go to the far heap (a log-time push and pop per request).
    let base = Instant::now();
    let mut r = established(base);
    sent(&mut r);
    let request = |r: &mut Replicator, k: u32| {
        let t = 10 + 10 * u64::from(k);
        r.handle_capture(
            ms(base, t),
            &client_pkt(C_ISN + 1 + 2 * k, O_ISN + 1 + 10 * k, Flags::ACK, b"r\n"),
        );
    };
    for k in 0..700 {
        request(&mut r, k);
        r.handle_response(
            ms(base, 11 + 10 * u64::from(k)),
            &target_pkt(T_ISN + 1 + 10 * k, C_ISN + 3 + 2 * k, Flags::ACK, 10),
        );
        sent(&mut r);
        if let Some(at) = r
            .poll_timeout()
            .filter(|&at| at <= ms(base, 12 + 10 * u64::from(k)))
        {
            r.handle_timeout(at);
        }
    }
    assert_eq!(r.stats().requests_target, 699, "{:?}", r.stats());
    let far = r.timers.far_len();
    request(&mut r, 700);
    assert_eq!(sent(&mut r).len(), 1);
    assert_eq!(
        r.timers.far_len(),
        far,
        "the new deadline went to the wheel"
    );
}

#[test]
fn merged_small_segments_continue_the_stream() {
    // GRO merges consecutive small segments into one packet below the MSS.
    let base = Instant::now();
    let mut r = established(base);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, &[b'a'; 64]),
    );
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 65, O_ISN + 1, Flags::ACK, &[b'b'; 640]),
    );
    assert_eq!(r.stats().client_bytes, 704);
}

#[test]
fn the_handshake_ack_rides_on_the_first_request_unless_the_server_speaks_first() {
    let base = Instant::now();
    let mut r = established_with(base, config_delayed_ack());
    // The first request carries the handshake ACK: no ACK of its own.
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req\n"),
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

    // A greeting server: the client's first data acknowledges the online greeting. The delayed
    // handshake ACK goes at once (the target greets only after it); the request waits for the
    // target's greeting.
    let mut r = established_with(base, config_delayed_ack());
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 1, O_ISN + 21, Flags::ACK | Flags::PSH, b"HELO\n"),
    );
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 1, T_ISN + 1, Flags::ACK, vec![])]
    );
    // The next session to that server acknowledges the SYN-ACK at once.
    const C2: u32 = 777_000;
    let other = pkt(
        addr("198.18.0.11:40001"),
        addr(ONLINE),
        C2,
        0,
        Flags::SYN,
        b"",
    );
    r.handle_capture(ms(base, 4), &other);
    let mut local = None;
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).unwrap();
        if t.flags().syn() {
            local = Some((t.src(), t.seq()));
        }
    });
    let (local, isn) = local.expect("a SYN for the second session");
    let syn_ack = pkt(
        addr(TARGET),
        local,
        T_ISN + 7,
        (isn + 1).0,
        Flags::SYN | Flags::ACK,
        b"",
    );
    r.handle_response(ms(base, 5), &syn_ack);
    let mut acks = 0;
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).unwrap();
        if t.flags() == Flags::ACK && t.payload_len() == 0 {
            acks += 1;
        }
    });
    assert_eq!(acks, 1, "the handshake ACK went at once");
}
