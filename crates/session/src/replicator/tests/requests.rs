//! Requests and their pacing: one at a time, released by the answer or the response wait; the stream as captured (merged, duplicated, reordered, malformed).

use super::*;

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
    handshake(
        &mut r,
        ms(base, 5),
        &segment(client2, addr(ONLINE), C_ISN, 0, Flags::SYN, b""),
    );
    assert_eq!(count(&mut r), 1, "the SYN");
    assert_eq!(r.stalled_sessions(), 1, "its handshake waits on the target");
    r.handle_capture(
        ms(base, 6),
        &segment(
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
        &segment(
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
fn malformed_and_foreign_packets_are_counted_not_fatal() {
    let mut r = Replicator::new(config());
    let now = Instant::now();
    r.handle_capture(now, &[0x45, 0, 0]);
    r.handle_capture(
        now,
        &segment(addr(CLIENT), addr("198.18.0.20:22"), 1, 0, Flags::SYN, b""),
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
