//! Retransmission and timers: SYN retries, RTO, go-back, duplicate acknowledgments, idle timeout, the timer wheel.

use super::*;

#[test]
fn syn_is_retransmitted_then_the_session_fails() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    handshake(&mut r, base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
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
fn an_idle_session_times_out_after_the_idle_timeout_a_busy_one_after_the_session_timeout() {
    let base = Instant::now();
    let idle = Config {
        idle_timeout: Some(Duration::from_secs(5)),
        ..config()
    };
    // Answered and acknowledged: nothing outstanding, so -k applies.
    let mut r = established_with(base, idle.clone());
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 20),
    );
    sent(&mut r);
    r.handle_timeout(ms(base, 4_000));
    assert_eq!(r.stats().sessions_timed_out, 0);
    r.handle_timeout(ms(base, 5_100));
    assert_eq!(r.stats().sessions_timed_out, 1, "idle for 5 s");

    // Acknowledged by the target but not answered yet: a slow server, so -t applies, not -k.
    let mut r = established_with(base, idle.clone());
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK, 0),
    );
    sent(&mut r);
    r.handle_timeout(ms(base, 5_100));
    assert_eq!(
        r.stats().sessions_timed_out,
        0,
        "the answer is still awaited"
    );
    r.handle_response(
        ms(base, 20_000),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 20),
    );
    r.handle_timeout(ms(base, 24_000));
    assert_eq!(r.stats().sessions_timed_out, 0);
    r.handle_timeout(ms(base, 25_100));
    assert_eq!(
        r.stats().sessions_timed_out,
        1,
        "answered, then idle for 5 s"
    );

    // Its request never acknowledged: busy, so -t (60 s) applies, not -k.
    let mut r = established_with(base, idle);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    sent(&mut r);
    r.handle_timeout(ms(base, 5_100));
    assert_eq!(
        r.stats().sessions_timed_out,
        0,
        "still waiting for an answer"
    );
}
