//! Acknowledgments towards the target: translated to its sequence space, delayed, carried by our data or FIN.

use super::*;

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
