//! Holes no one will fill (`Config::hole_wait`): a client segment the capture or the mirror
//! lost, which the online server received, so its client never resends it. The hole is counted
//! and skipped, the later requests go on, the target sees a continuous stream (our sequence
//! numbers shifted), and nothing stalls.

use super::*;
use crate::testing::{self, Faults};

fn config_skipping() -> Config {
    Config {
        hole_wait: Some(Duration::from_secs(2)),
        ..config()
    }
}

/// The online server's bare acknowledgment of client bytes up to `ack`, as a mirror sees it.
fn online_ack(ack: u32) -> Vec<u8> {
    segment(addr(ONLINE), addr(CLIENT), O_ISN + 60, ack, Flags::ACK, b"")
}

/// `req1\n` sent, acknowledged and answered by the target.
fn first_request_answered(base: Instant) -> Replicator {
    let mut r = first_request_sent_with(base, config_skipping());
    r.handle_response(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 6, Flags::ACK | Flags::PSH, 20),
    );
    sent(&mut r);
    r
}

/// `req3\n`, captured after the hole `req2\n` left (C_ISN + 6 .. C_ISN + 11).
fn third_request(r: &mut Replicator, at: Instant) {
    r.handle_capture(
        at,
        &client_pkt(C_ISN + 11, O_ISN + 99, Flags::ACK | Flags::PSH, b"req3\n"),
    );
}

#[test]
fn a_hole_the_online_server_acknowledged_is_skipped_at_once_and_the_stream_shifts() {
    let base = Instant::now();
    let mut r = first_request_answered(base);
    // The mirror lost `req2\n`, not the online server's acknowledgment of it.
    r.handle_capture(ms(base, 4), &online_ack(C_ISN + 11));
    third_request(&mut r, ms(base, 5));
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 6,
            T_ISN + 21,
            Flags::ACK | Flags::PSH,
            b"req3\n".to_vec()
        )],
        "req3 follows req1 at the target, without a gap"
    );
    let s = r.stats();
    assert_eq!((s.holes_skipped, s.sessions_hurt), (1, 1), "{s}");
    // The target's acknowledgment of req3 is in its own (continuous) sequence space.
    r.handle_response(
        ms(base, 6),
        &target_pkt(T_ISN + 21, C_ISN + 11, Flags::ACK | Flags::PSH, 20),
    );
    assert_eq!(
        r.stats().requests_target,
        1,
        "req1 (req3 counts once it ends)"
    );
    // The client's FIN, in the client's sequence space, goes out right after req3.
    r.handle_capture(
        ms(base, 7),
        &client_pkt(C_ISN + 16, O_ISN + 150, Flags::ACK | Flags::FIN, b""),
    );
    let out = sent(&mut r);
    let fin: Vec<_> = out.iter().filter(|p| p.2.fin()).collect();
    assert_eq!(fin.len(), 1, "{out:?}");
    assert_eq!(fin[0].0, C_ISN + 11, "the FIN right after req3");
    r.handle_response(
        ms(base, 8),
        &target_pkt(T_ISN + 41, C_ISN + 12, Flags::ACK | Flags::FIN, 0),
    );
    let s = r.stats();
    assert_eq!((s.sessions_completed, s.sessions_active), (1, 0), "{s}");
    assert_eq!((s.requests_online, s.requests_target), (2, 2), "{s}");
}

#[test]
fn without_the_online_server_s_packets_a_hole_is_skipped_after_the_wait() {
    let base = Instant::now();
    let mut r = first_request_answered(base);
    third_request(&mut r, ms(base, 5));
    assert!(sent(&mut r).is_empty(), "req3 waits behind the hole");
    let due = r.poll_timeout().expect("the hole's wait is timed");
    assert!(due <= ms(base, 2_005), "{due:?}");
    r.handle_timeout(ms(base, 2_004));
    assert!(sent(&mut r).is_empty(), "not before the wait is over");
    r.handle_timeout(ms(base, 2_005));
    let out = sent(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, &out[0].3[..]), (C_ISN + 6, &b"req3\n"[..]));
    assert_eq!(r.stats().holes_skipped, 1);
}

#[test]
fn a_hole_resent_in_time_is_filled_and_one_resent_after_the_skip_is_a_duplicate() {
    let base = Instant::now();
    // Resent within the wait: filled, nothing skipped.
    let mut r = first_request_answered(base);
    third_request(&mut r, ms(base, 5));
    r.handle_capture(
        ms(base, 1_500),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    let out = sent(&mut r);
    assert_eq!(out[0].3, b"req2\n", "{out:?}");
    r.handle_timeout(ms(base, 3_000));
    assert_eq!(r.stats().holes_skipped, 0);

    // Resent after the skip: too late, a duplicate; the stream goes on unchanged.
    let mut r = first_request_answered(base);
    third_request(&mut r, ms(base, 5));
    r.handle_timeout(ms(base, 2_005));
    sent(&mut r);
    let dup = r.stats().duplicate_segments;
    r.handle_capture(
        ms(base, 2_500),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    assert!(sent(&mut r).iter().all(|p| p.3.is_empty()));
    assert_eq!(r.stats().duplicate_segments, dup + 1);
}

#[test]
fn a_hole_in_the_middle_of_a_request_drops_the_rest_of_that_request_only() {
    let base = Instant::now();
    let mut r = first_request_answered(base);
    // req2 in three segments; the mirror lost the second; the online server acknowledged all.
    r.handle_capture(
        ms(base, 4),
        &client_pkt(C_ISN + 6, O_ISN + 51, Flags::ACK, b"req2a"),
    );
    assert_eq!(sent(&mut r)[0].3, b"req2a");
    r.handle_capture(ms(base, 5), &online_ack(C_ISN + 17));
    r.handle_capture(
        ms(base, 6),
        &client_pkt(C_ISN + 16, O_ISN + 51, Flags::ACK | Flags::PSH, b"c\n"),
    );
    assert!(
        sent(&mut r).iter().all(|p| p.3.is_empty()),
        "req2's rest is dropped"
    );
    r.handle_capture(
        ms(base, 7),
        &client_pkt(C_ISN + 18, O_ISN + 99, Flags::ACK | Flags::PSH, b"req3\n"),
    );
    // req3 waits for what went of req2 to be acknowledged and answered, or for the response
    // wait (the target never answers half a request), then follows it.
    r.handle_response(
        ms(base, 8),
        &target_pkt(T_ISN + 21, C_ISN + 11, Flags::ACK, 0),
    );
    assert!(sent(&mut r).iter().all(|p| p.3.is_empty()));
    r.handle_timeout(ms(base, 508));
    let out = sent(&mut r);
    let data: Vec<_> = out.iter().filter(|p| !p.3.is_empty()).collect();
    assert_eq!(data.len(), 1, "{out:?}");
    assert_eq!((data[0].0, &data[0].3[..]), (C_ISN + 11, &b"req3\n"[..]));
    assert_eq!(r.stats().holes_skipped, 1);
}

/// Seeded: the capture misses 1% of the client's data segments for good, and sees the online
/// server's acknowledgments (a mirror). Each damaged session is counted, every request it
/// still had whole arrives whole and in order, the others byte-exact, and every session closes.
#[test]
fn simulation_of_a_lossy_mirror_skips_every_hole_and_delivers_the_rest() {
    for seed in [11, 12] {
        let out = testing::simulate(
            seed,
            2_000,
            Faults {
                capture_gone: 0.01,
                online_acks: true,
                hole_wait: Some(Duration::from_secs(2)),
                ..Faults::default()
            },
        );
        let s = out.stats;
        assert!(
            out.damaged_sessions > 20,
            "seed {seed}: {}",
            out.damaged_sessions
        );
        assert_eq!(s.sessions_hurt, out.damaged_sessions, "seed {seed}: {s}");
        assert!(s.holes_skipped >= s.sessions_hurt, "seed {seed}: {s}");
        assert_eq!(s.sessions_completed, 2_000, "seed {seed}: {s}");
    }
}

/// The same without the online server's packets (a live capture's ring drops): each hole waits
/// `hole_wait`, then the session goes on; many holes, with the network's faults on top.
#[test]
fn simulation_of_many_holes_without_the_server_s_packets_ends_every_session() {
    let out = testing::simulate(
        13,
        1_000,
        Faults {
            capture_gone: 0.05,
            hole_wait: Some(Duration::from_millis(300)),
            loss: 0.02,
            reorder: 0.05,
            ..Faults::default()
        },
    );
    let s = out.stats;
    assert!(out.damaged_sessions > 100, "{}", out.damaged_sessions);
    assert_eq!(s.sessions_hurt, out.damaged_sessions, "{s}");
    assert_eq!(s.sessions_completed, 1_000, "{s}");
}

/// Holes the client does fill, late (200 ms), within the wait: nothing skipped, byte-exact.
/// (Without the online server's acknowledgments: it never acknowledges what its client has to
/// resend.)
#[test]
fn simulation_of_holes_resent_late_loses_nothing() {
    let out = testing::simulate(
        14,
        1_000,
        Faults {
            capture_loss: 0.03,
            hole_wait: Some(Duration::from_secs(1)),
            ..Faults::default()
        },
    );
    let s = out.stats;
    assert_eq!((s.holes_skipped, s.sessions_hurt), (0, 0), "{s}");
    assert_eq!(s.requests_online, s.requests_target, "{s}");
}
