//! Connections open before the capture started: joined mid-stream, but never again once aborted.

use super::*;

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
fn aborted_session_is_not_rejoined_mid_stream() {
    let base = Instant::now();
    let mut cfg = config();
    cfg.max_session_bytes = 10;
    let mut r = Replicator::new(cfg);
    handshake(&mut r, base, &client_pkt(C_ISN, 0, Flags::SYN, b""));
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
    handshake(
        &mut r,
        ms(base, 3),
        &client_pkt(C_ISN + 5000, 0, Flags::SYN, b""),
    );
    assert_eq!(r.stats().sessions_created, 2);
}
