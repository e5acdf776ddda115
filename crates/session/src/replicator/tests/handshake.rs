//! The handshake with the target: its ACK, a server that speaks first, a stale connection there, the ISN clock.

use super::*;

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
    let other = segment(
        addr("198.18.0.11:40001"),
        addr(ONLINE),
        C2,
        0,
        Flags::SYN,
        b"",
    );
    handshake(&mut r, ms(base, 4), &other);
    let mut local = None;
    r.drain_transmits(|p| {
        let t = TcpPacket::parse(p).unwrap();
        if t.flags().syn() {
            local = Some((t.src(), t.seq()));
        }
    });
    let (local, isn) = local.expect("a SYN for the second session");
    let syn_ack = segment(
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

#[test]
fn a_stale_connection_at_the_target_is_reset_and_the_syn_repeated() {
    let base = Instant::now();
    let mut r = Replicator::new(config());
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
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
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    assert_eq!(syn_seq(&mut r), C_ISN + 1_000);
    // The same client ISN on another port a second later: 250,000 ticks of 4 µs further.
    let other = SocketAddr::new(addr(CLIENT).ip(), 40001);
    handshake(
        &mut r,
        ms(base, 1000),
        &segment(other, addr(ONLINE), C_ISN, 0, Flags::SYN, b""),
    );
    assert_eq!(syn_seq(&mut r), C_ISN + 1_000 + 250_000);
}
