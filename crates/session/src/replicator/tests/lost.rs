//! What a comparison and a loss report need from the core: every lost request counted under the
//! cause that ended its session (the causes and the requests in flight make up the loss
//! exactly), the sendings of requests recorded, target packets named by their session, the
//! baseline fed like a copy.

use super::*;

/// `requests_online - requests_target` is exactly the lost requests plus those in flight.
fn assert_loss_adds_up(r: &Replicator) {
    let s = r.stats();
    assert_eq!(
        s.requests_online - s.requests_target,
        s.lost.total() + r.requests_in_flight(),
        "{s}"
    );
}

/// [`first_request_sent`] with two more requests captured (waiting for the first's answer).
fn three_requests_one_sent(base: Instant) -> Replicator {
    let mut r = first_request_sent(base);
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 11, O_ISN + 99, Flags::ACK | Flags::PSH, b"req3\n"),
    );
    assert!(sent(&mut r).is_empty());
    assert_eq!(r.stats().requests_online, 3);
    assert_eq!(r.requests_in_flight(), 3);
    assert_loss_adds_up(&r);
    r
}

#[test]
fn a_reset_from_the_target_loses_the_requests_it_never_acknowledged() {
    let base = Instant::now();
    let mut r = three_requests_one_sent(base);
    // The first request acknowledged and answered, then the target resets.
    r.handle_response(
        ms(base, 5),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 20),
    );
    r.handle_response(
        ms(base, 6),
        &target_pkt(T_ISN + 21, C_ISN + 6, Flags::RST, 0),
    );
    let s = r.stats();
    assert_eq!(s.requests_target, 1);
    assert_eq!(s.lost.reset_by_target, 2, "{s}");
    assert_eq!(s.lost.total(), 2);
    assert_eq!(r.requests_in_flight(), 0);
    assert_loss_adds_up(&r);
}

#[test]
fn a_target_that_stops_acknowledging_loses_the_session_s_requests_as_failed() {
    let base = Instant::now();
    let mut r = three_requests_one_sent(base);
    let mut t = 5;
    while r.stats().sessions_failed == 0 {
        t += 1000;
        assert!(t < 600_000, "the session never gave up");
        r.handle_timeout(ms(base, t));
        sent(&mut r);
    }
    let s = r.stats();
    assert_eq!(s.lost.failed_at_target, 3, "{s}");
    assert_loss_adds_up(&r);
}

#[test]
fn a_session_timing_out_behind_a_hole_lost_its_requests_to_the_capture() {
    let base = Instant::now();
    let mut r = first_request_sent(base);
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 20),
    );
    // The capture missed `req2\n`; `req3\n` waits behind the hole for good.
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 11, O_ISN + 99, Flags::ACK | Flags::PSH, b"req3\n"),
    );
    sent(&mut r);
    r.handle_timeout(ms(base, 61_000));
    let s = r.stats();
    assert_eq!(s.sessions_timed_out, 1, "{s}");
    assert_eq!(s.requests_target, 1);
    assert_loss_adds_up(&r);
    assert_eq!(
        s.lost.never_captured,
        s.requests_online - 1,
        "whatever was counted and not delivered: {s}"
    );
}

#[test]
fn a_session_dropped_for_memory_loses_its_requests_as_overflow() {
    let base = Instant::now();
    let cfg = Config {
        max_session_bytes: 8,
        ..config()
    };
    let mut r = established_with(base, cfg);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"0123456789"),
    );
    let s = r.stats();
    assert_eq!(s.sessions_overflowed, 1);
    assert_eq!(s.lost.overflow, 1, "{s}");
    assert_loss_adds_up(&r);
}

#[test]
fn requests_of_connections_left_out_by_sampling_are_counted() {
    let base = Instant::now();
    let mut r = Replicator::new(Config {
        sample_percent: 1,
        ..config()
    });
    let mut expected = 0;
    for port in 20_000..20_200u16 {
        let client = SocketAddr::new(addr(CLIENT).ip(), port);
        if r.config().samples(client) {
            continue;
        }
        expected += 2;
        let pkt =
            |seq, ack, flags, data: &[u8]| segment(client, addr(ONLINE), seq, ack, flags, data);
        handshake(&mut r, ms(base, 0), &pkt(C_ISN, 0, Flags::SYN, b""));
        r.handle_capture(
            ms(base, 1),
            &pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"GET /a\n"),
        );
        // The same request again (a retransmission), then a second one.
        r.handle_capture(
            ms(base, 2),
            &pkt(C_ISN + 1, O_ISN + 1, Flags::ACK, b"GET /a\n"),
        );
        r.handle_capture(
            ms(base, 3),
            &pkt(C_ISN + 8, O_ISN + 40, Flags::ACK, b"GET /b\n"),
        );
        r.handle_capture(
            ms(base, 4),
            &pkt(C_ISN + 15, O_ISN + 80, Flags::ACK | Flags::FIN, b""),
        );
    }
    assert!(expected > 300, "most connections are left out at 1%");
    assert_eq!(r.stats().requests_sampled_out, expected);
}

#[test]
fn with_tracing_the_sending_of_each_request_and_the_owner_of_each_answer_are_told() {
    let base = Instant::now();
    let cfg = Config {
        trace_sends: true,
        ..config()
    };
    let mut r = established_with(base, cfg);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    assert_eq!(sent(&mut r).len(), 1);
    let mut marks = Vec::new();
    r.drain_sends(|m| marks.push(*m));
    assert_eq!(marks.len(), 1);
    assert_eq!(
        marks[0].end,
        Seq(C_ISN + 6),
        "just past the request, client's numbers"
    );
    assert_eq!(
        (marks[0].client, marks[0].online),
        (addr(CLIENT), addr(ONLINE))
    );
    assert_eq!(marks[0].at, ms(base, 2));
    // A retransmission is no new sending.
    r.handle_timeout(ms(base, 2_000));
    assert!(!sent(&mut r).is_empty(), "retransmitted");
    r.drain_sends(|m| marks.push(*m));
    assert_eq!(marks.len(), 1);
    let owner = r
        .handle_response(
            ms(base, 2_001),
            &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 20),
        )
        .expect("an answer with payload is named");
    assert_eq!(owner.client_ack, Seq(C_ISN + 6));
    assert_eq!(
        (owner.client, owner.copy, owner.baseline),
        (addr(CLIENT), 0, false)
    );
    assert_eq!(
        r.handle_response(
            ms(base, 2_002),
            &target_pkt(T_ISN + 21, C_ISN + 6, Flags::ACK, 0)
        ),
        None,
        "a bare acknowledgment has no answer bytes"
    );
}

#[test]
fn the_baseline_gets_every_session_too_on_the_client_s_port() {
    let base = Instant::now();
    let baseline = addr("198.18.0.31:8080");
    let mut r = Replicator::new(Config {
        baseline: Some(baseline),
        clock_isn: true,
        isn_base: 77_777,
        trace_sends: true,
        ..config()
    });
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    let mut syns = Vec::new();
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).unwrap();
        syns.push((t.src(), t.dst(), t.seq()));
    });
    assert_eq!(syns.len(), 2, "{syns:?}");
    assert_eq!(syns[0].1, addr(TARGET));
    assert_eq!(syns[1].1, baseline);
    assert_eq!(syns[0].0.port(), 40000);
    assert_eq!(
        syns[1].0.port(),
        40000,
        "another host: the client's own port"
    );
    // The baseline's SYN-ACK, then its answer: named as the baseline's, the ack translated.
    let (local, isn) = (syns[1].0, syns[1].2);
    let from_baseline = |seq: u32, ack: Seq, flags, len: usize| {
        segment(baseline, local, seq, ack.0, flags, &vec![b'b'; len])
    };
    r.handle_response(
        ms(base, 1),
        &from_baseline(T_ISN, isn + 1, Flags::SYN | Flags::ACK, 0),
    );
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    let owner = r
        .handle_response(
            ms(base, 3),
            &from_baseline(T_ISN + 1, isn + 6, Flags::ACK | Flags::PSH, 9),
        )
        .expect("named");
    assert!(owner.baseline);
    assert_eq!(owner.copy, 1);
    assert_eq!(
        owner.client_ack,
        Seq(C_ISN + 6),
        "in the client's sequence space"
    );
}

#[test]
fn requests_a_client_sends_after_the_target_reset_its_session_are_lost_to_that_reset() {
    let base = Instant::now();
    let mut r = first_request_sent(base);
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::RST, 0),
    );
    // The client goes on online: two more requests (one sent twice), then a bare ACK.
    for (t, seq, ack, data) in [
        (4, C_ISN + 6, O_ISN + 51, &b"req2\n"[..]),
        (5, C_ISN + 6, O_ISN + 51, b"req2\n"),
        (6, C_ISN + 11, O_ISN + 99, b"req3\n"),
        (7, C_ISN + 16, O_ISN + 140, b""),
    ] {
        r.handle_capture(ms(base, t), &client_pkt(seq, ack, Flags::ACK, data));
    }
    assert!(
        sent(&mut r).is_empty(),
        "an aborted connection is not joined again"
    );
    let s = r.stats();
    assert_eq!(s.requests_online, 3, "{s}");
    assert_eq!(s.lost.reset_by_target, 3, "{s}");
    assert_loss_adds_up(&r);
}

#[test]
fn requests_after_a_reset_that_came_before_any_data_count_too() {
    let base = Instant::now();
    // The target refuses the connection before the client's first request.
    let mut r = established(base);
    r.handle_response(
        ms(base, 2),
        &target_pkt(T_ISN + 1, C_ISN + 1, Flags::RST, 0),
    );
    // The first request acknowledges what the handshake did.
    r.handle_capture(
        ms(base, 3),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    let s = r.stats();
    assert_eq!((s.requests_online, s.lost.reset_by_target), (2, 2), "{s}");
    assert_loss_adds_up(&r);
}

#[test]
fn the_baseline_s_requests_are_not_counted_twice() {
    let base = Instant::now();
    let baseline = addr("198.18.0.31:8080");
    let mut r = Replicator::new(Config {
        baseline: Some(baseline),
        ..config()
    });
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    r.handle_capture(
        ms(base, 1),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    let s = r.stats();
    assert_eq!(
        s.sessions_created, 2,
        "the target's session and the baseline's"
    );
    assert_eq!((s.requests_online, s.client_bytes), (2, 10), "{s}");
    assert_eq!(r.requests_in_flight(), 2);
    // Neither answers: the baseline's losses are not the target's.
    let mut t = 3;
    while r.stats().sessions_failed < 2 {
        t += 1000;
        assert!(t < 600_000, "the sessions never gave up");
        r.handle_timeout(ms(base, t));
        r.drain_transmits(|_| {});
    }
    let s = r.stats();
    assert_eq!(s.lost.failed_at_target, 2, "{s}");
    assert_loss_adds_up(&r);
}
