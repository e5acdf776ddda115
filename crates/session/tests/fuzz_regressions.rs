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
    r.drain_transmits(|_| sent += 1);
    assert_eq!((sent, r.stats().sessions_created), (1, 1));
}
