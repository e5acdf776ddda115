//! Closing and resets: both FINs, a reset from the target, a client reset held until its requests were answered.

use super::*;

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
fn target_reset_ends_the_session() {
    let base = Instant::now();
    let mut r = established(base);
    r.handle_response(ms(base, 2), &target_pkt(T_ISN + 1, 0, Flags::RST, 0));
    assert_eq!(r.stats().sessions_reset_by_target, 1);
    assert!(r.sessions.is_empty());
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
