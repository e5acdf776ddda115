//! The target's window: scaled, honoured, probed when closed.

use super::*;

#[test]
fn the_target_window_is_scaled_and_honoured() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
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
