//! Inputs the session fuzz target (fuzz/fuzz_targets/session.rs) crashed on, replayed through
//! its harness on stable, each with a test of the bug in plain terms beside it. The harness
//! reads its input as a sequence of events; a change to how it reads them changes what these
//! bytes mean, so the plain test is the one that pins the bug.

#[path = "../../../fuzz/src/session.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::Instant;

use session::testing::segment;
use session::{Config, Replicator, Rule};
use wire::Flags;

/// A rule on the port alone matched an IPv6 client of a dual-stack online server and replicated
/// it to an IPv4 target: the core sent IPv6 packets to `::ffff:` + the target's address.
#[test]
fn ipv6_client_via_port_only_rule_to_ipv4_target() {
    harness::run(include_bytes!(
        "../../../fuzz/regressions/session/ipv6-client-via-port-only-rule-to-ipv4-target"
    ));
}

#[test]
fn a_client_of_the_other_ip_version_than_the_target_is_ignored_not_replicated() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let rule = Rule {
        online_addr: None,
        online_port: 80,
        target: addr("198.18.0.30:8080"),
    };
    let mut r = Replicator::new(Config::new(vec![rule]));
    let now = Instant::now();
    let (client, online) = (addr("[2001:2::10]:40000"), addr("[2001:2::20]:80"));
    r.handle_capture(now, &segment(client, online, 1000, 0, Flags::SYN, b""));
    r.handle_capture(
        now,
        &segment(
            client,
            online,
            1001,
            7,
            Flags::ACK | Flags::PSH,
            b"GET / HTTP/1.1\r\n\r\n",
        ),
    );
    let mut sent = 0;
    r.drain_transmits(|_| sent += 1);
    assert_eq!(sent, 0, "packets sent for an IPv6 client to an IPv4 target");
    let s = r.stats();
    assert_eq!((s.ignored_packets, s.sessions_created), (2, 0), "{s}");
    // An IPv4 client of the same rule still is replicated.
    let v4 = addr("198.18.0.10:40000");
    r.handle_capture(
        now,
        &segment(v4, addr("198.18.0.20:80"), 1000, 0, Flags::SYN, b""),
    );
    // The SYN waits for the handshake to complete online.
    r.handle_capture(
        now,
        &segment(v4, addr("198.18.0.20:80"), 1001, 7, Flags::ACK, b""),
    );
    r.drain_transmits(|_| sent += 1);
    assert_eq!((sent, r.stats().sessions_created), (1, 1));
}

#[test]
fn stale_response_wait_fires_every_millisecond() {
    harness::run(include_bytes!(
        "../../../fuzz/regressions/session/stale-response-wait-fires-every-millisecond"
    ));
}

/// A client that reset its connection after its request was acknowledged starts the response
/// wait; when it then sends more (a capture that reordered its packets), the wait no longer
/// applies, and once it ran out it made the session due again at once: a timer every
/// millisecond until the session timed out (a debug assertion in debug builds).
#[test]
fn a_response_wait_that_ran_out_with_nothing_to_do_does_not_fire_every_millisecond() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let (client, online, target) = (
        addr("198.18.0.10:40000"),
        addr("198.18.0.20:80"),
        addr("198.18.0.30:8080"),
    );
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 80,
        target,
    }]);
    cfg.delayed_ack = None;
    let wait = cfg.response_wait;
    let mut r = Replicator::new(cfg);
    let t0 = Instant::now();
    let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
    let mut sent = Vec::new();
    let mut drain = |r: &mut Replicator| {
        r.drain_transmits(|p| sent.push(p.to_vec()));
        sent.last().cloned()
    };
    r.handle_capture(ms(0), &segment(client, online, 1000, 0, Flags::SYN, b""));
    // The SYN waits for the handshake to complete online.
    r.handle_capture(ms(0), &segment(client, online, 1001, 7, Flags::ACK, b""));
    let syn = drain(&mut r).expect("a SYN to the target");
    let syn = wire::TcpPacket::parse(&syn).unwrap();
    let (local, isn) = (syn.src(), syn.seq().0);
    let from_target = |r: &mut Replicator, at, ack: u32, flags, window| {
        let mut p = Vec::new();
        wire::SegmentRepr {
            src: target,
            dst: local,
            seq: wire::Seq(5000 + u32::from(flags == Flags::ACK)),
            ack: wire::Seq(ack),
            flags,
            window,
            mss: None,
            window_scale: None,
            ttl: 64,
        }
        .emit(b"", &mut p);
        r.handle_response(at, &p);
    };
    from_target(&mut r, ms(1), isn + 1, Flags::SYN | Flags::ACK, 65535);
    let req = Flags::ACK | Flags::PSH;
    r.handle_capture(ms(2), &segment(client, online, 1001, 7001, req, b"req1\n"));
    drain(&mut r);
    // The target acknowledges the request and closes its window; the client resets, then a
    // second request of its shows up.
    from_target(&mut r, ms(3), isn + 6, Flags::ACK, 0);
    r.handle_capture(ms(4), &segment(client, online, 1006, 7001, Flags::RST, b""));
    r.handle_capture(ms(5), &segment(client, online, 1006, 7100, req, b"req2\n"));
    drain(&mut r);
    // The wait runs out: over the next 100 ms, only a timer or two may fire (the window probe's
    // retransmission), not one every millisecond.
    let start = ms(4) + wait;
    let mut rounds = 0;
    let mut now = start;
    while now < start + std::time::Duration::from_millis(100) {
        r.handle_timeout(now);
        drain(&mut r);
        rounds += 1;
        now = r.poll_timeout().expect("the session still has a timer");
    }
    assert!(rounds <= 3, "{rounds} timeouts within 100 ms");
}

/// Found by CI's fuzz run: a session whose last retransmission ended (its FIN) became idle, with
/// the idle timeout already past; it was due again at once instead of timing out.
#[test]
fn session_due_again_at_once_2() {
    harness::run(include_bytes!(
        "../../../fuzz/regressions/session/session-due-again-at-once-2"
    ));
}

/// Found by CI's fuzz run: with answers traced (--compare, a protocol), a target packet of a
/// session whose ISN at the target was 2^32 - 1 overflowed the owner's acknowledgment
/// arithmetic (`out_isn + 1`, now wrapping as sequence numbers do).
#[test]
fn answer_owner_at_the_last_isn() {
    harness::run(include_bytes!(
        "../../../fuzz/regressions/session/answer-owner-at-the-last-isn"
    ));
}
