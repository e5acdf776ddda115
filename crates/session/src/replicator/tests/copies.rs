//! Copies and sampling: several sessions per connection on shifted ports, a stable share of connections.

use super::*;

#[test]
fn copies_are_distinct_sessions_on_shifted_ports() {
    let base = Instant::now();
    let mut cfg = config();
    cfg.copies = 3;
    let mut r = Replicator::new(cfg);
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
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
            &segment(
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
        r.handle_capture(base, &segment(c, addr(ONLINE), 1, 0, Flags::SYN, b""));
        r.handle_capture(
            base,
            &segment(c, addr(ONLINE), 2, 9, Flags::ACK | Flags::PSH, b"x\n"),
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
fn port_offset_moves_every_copy_including_the_first() {
    let mut cfg = config();
    cfg.copies = 2;
    cfg.port_offset = 3 * 2048;
    let mut r = Replicator::new(cfg);
    handshake(
        &mut r,
        Instant::now(),
        &client_pkt(C_ISN, 0, Flags::SYN, b""),
    );
    let mut ports = Vec::new();
    r.drain_transmits(|p| ports.push(TcpPacket::parse(p).unwrap().src().port()));
    assert_eq!(ports, [40000 + 6144, 40000 + 6144 + 1000]);
    // Wrapping stays within 1024..=65535.
    assert_eq!(
        u32::from(r.config().copy_port(65000, 0)),
        1024 + (65000 - 1024 + 6144) % 64512
    );
}

#[test]
fn loopback_clients_get_the_localhost_address() {
    let mut cfg = config();
    cfg.fake_clients.clear();
    cfg.localhost_as = Some("198.18.0.99".parse().unwrap());
    let mut r = Replicator::new(cfg);
    let now = Instant::now();
    let lo: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    handshake(
        &mut r,
        now,
        &segment(lo, addr(ONLINE), C_ISN, 0, Flags::SYN, b""),
    );
    handshake(&mut r, now, &client_pkt(C_ISN, 0, Flags::SYN, b""));
    let mut sources = Vec::new();
    r.drain_transmits(|p| sources.push(TcpPacket::parse(p).unwrap().src()));
    assert_eq!(
        sources,
        [addr("198.18.0.99:40000"), addr(CLIENT)],
        "a loopback client is renamed, another keeps its address"
    );
}

#[test]
fn gradual_sampling_starts_at_one_percent_and_grows_each_second() {
    let mut cfg = config();
    cfg.sample_ramp = true;
    assert_eq!(cfg.sample_percent_at(Duration::ZERO), 1);
    assert_eq!(cfg.sample_percent_at(Duration::from_millis(9_500)), 10);
    assert_eq!(cfg.sample_percent_at(Duration::from_secs(500)), 100);
    cfg.sample_percent = 40;
    assert_eq!(
        cfg.sample_percent_at(Duration::from_secs(500)),
        40,
        "up to -r"
    );
    // New connections in the first second: about 1 %; a minute later: about 61 %.
    let mut r = Replicator::new(cfg);
    let base = Instant::now();
    let opened = |r: &mut Replicator, at: Instant, first_port: u16| {
        let before = r.stats().sessions_created;
        for port in first_port..first_port + 2000 {
            let c = SocketAddr::new(addr(CLIENT).ip(), port);
            handshake(r, at, &segment(c, addr(ONLINE), 1, 0, Flags::SYN, b""));
        }
        r.drain_transmits(|_| {});
        r.stats().sessions_created - before
    };
    // A connection left out at 1 % stays out when the share grows: taken later, it would start
    // at the target in the middle of its stream.
    let c = (20_000..30_000u16)
        .map(|port| SocketAddr::new(addr(CLIENT).ip(), port))
        .find(|&c| !r.config().samples_at(c, 1) && r.config().samples_at(c, 50))
        .unwrap();
    r.handle_capture(
        base,
        &segment(c, addr(ONLINE), 1, 0, Flags::ACK | Flags::PSH, b"a\n"),
    );
    r.handle_capture(
        base + Duration::from_secs(60),
        &segment(c, addr(ONLINE), 3, 0, Flags::ACK | Flags::PSH, b"b\n"),
    );
    assert!(!r.replicates(c, addr(ONLINE)));
    assert_eq!(r.stats().sessions_created, 0, "never joined mid-stream");
    let early = opened(&mut r, base, 10_000);
    let later = opened(&mut r, base + Duration::from_secs(30), 20_000);
    assert!(early <= 60, "{early} of 2000 at 1 %");
    assert!((600..=840).contains(&later), "{later} of 2000 at 31 %");
}
