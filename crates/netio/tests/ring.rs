//! Capture ring and raw sender against a real kernel, in a throwaway network namespace (needs root).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use common::{collect_until_quiet, ports, tcp_v4, tcp_v6, Netns};
use netio::{CaptureStats, PacketSink, RawSender, RingCapture, RingConfig, TcpFilter};

const OUTGOING: u8 = libc::PACKET_OUTGOING;
const HOST: u8 = libc::PACKET_HOST;
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    pkttype: u8,
    protocol: u16,
    sport: u16,
    dport: u16,
    /// Bytes in the ring, and the packet's length on the wire.
    len: usize,
    wire_len: u32,
}

struct Ring {
    seen: Vec<Seen>,
    stats: CaptureStats,
}

fn lo_ring(filter: TcpFilter) -> RingConfig {
    RingConfig {
        interface: Some("lo".into()),
        filter: filter.compile(),
        ..Default::default()
    }
}

/// Opens one ring per config inside `ns`, lets `send` run on another thread of the namespace, and
/// collects until the rings have been quiet for a while after sending ended.
fn capture(
    ns: &Netns,
    configs: &[RingConfig],
    send: impl FnOnce(&mut RawSender) + Send,
) -> Vec<Ring> {
    let sent = &AtomicBool::new(false);
    thread::scope(|s| {
        let (ready_tx, ready_rx) = mpsc::channel();
        let capturer = s.spawn(move || {
            ns.enter();
            let mut rings: Vec<_> = configs
                .iter()
                .map(|c| RingCapture::open(c).unwrap())
                .collect();
            // Members of a fanout group take packets once all of them joined.
            for (ring, c) in rings.iter_mut().zip(configs) {
                if c.fanout.is_some() {
                    ring.start(&c.filter).unwrap();
                }
            }
            ready_tx.send(()).unwrap();
            let mut seen = vec![Vec::new(); rings.len()];
            collect_until_quiet(&mut rings, sent, |i, p| {
                let (sport, dport) = ports(p.data);
                seen[i].push(Seen {
                    pkttype: p.pkttype,
                    protocol: p.protocol,
                    sport,
                    dport,
                    len: p.data.len(),
                    wire_len: p.wire_len,
                });
            });
            let stats = rings.iter_mut().map(|r| r.stats().unwrap());
            seen.into_iter()
                .zip(stats)
                .map(|(seen, stats)| Ring { seen, stats })
                .collect()
        });
        if ready_rx.recv().is_ok() {
            s.spawn(move || {
                ns.enter();
                send(&mut RawSender::open().unwrap());
                sent.store(true, Ordering::Release);
            });
        }
        capturer.join().expect("capture thread panicked")
    })
}

fn count(seen: &[Seen], pkttype: u8) -> usize {
    seen.iter().filter(|s| s.pkttype == pkttype).count()
}

/// 127.0.0.1:40000 -> 127.0.0.1:8080 and, interleaved, the same to 8081.
fn send_v4(n: u32) -> impl FnOnce(&mut RawSender) + Send {
    move |tx| {
        for seq in 0..n {
            tx.send(&tcp_v4(LO, LO, 40000, 8080, seq)).unwrap();
            tx.send(&tcp_v4(LO, LO, 40000, 8081, seq)).unwrap();
        }
    }
}

#[test]
fn loopback_shows_every_packet_as_outgoing_and_again_as_host() {
    let ns = Netns::new("both");
    let filter = TcpFilter {
        dst_ports: vec![8080],
        ..Default::default()
    };
    let [ring] = &capture(&ns, &[lo_ring(filter)], send_v4(1000))[..] else {
        unreachable!()
    };

    assert_eq!(count(&ring.seen, OUTGOING), 1000);
    assert_eq!(count(&ring.seen, HOST), 1000);
    assert_eq!(ring.seen.len(), 2000, "only outgoing and host copies");
    let expected = |s: &Seen| s.protocol == 0x0800 && (s.sport, s.dport) == (40000, 8080);
    assert!(
        ring.seen.iter().all(expected),
        "port 8081 and the RSTs are filtered in the kernel"
    );
    // The kernel counts only what passed the filter.
    assert_eq!(
        ring.stats,
        CaptureStats {
            packets: 2000,
            drops: 0,
            malformed: 0
        }
    );
}

#[test]
fn drop_outgoing_keeps_exactly_the_host_copies() {
    let ns = Netns::new("host");
    let filter = TcpFilter {
        dst_ports: vec![8080],
        drop_outgoing: true,
        ..Default::default()
    };
    let [ring] = &capture(&ns, &[lo_ring(filter)], send_v4(1000))[..] else {
        unreachable!()
    };

    assert_eq!(ring.seen.len(), 1000);
    assert_eq!(count(&ring.seen, HOST), 1000);
    assert_eq!(ring.stats.packets, 1000);
}

#[test]
fn a_snap_length_keeps_the_headers_and_reports_the_length_on_the_wire() {
    let ns = Netns::new("snap");
    let filter = TcpFilter {
        dst_ports: vec![8080],
        drop_outgoing: true,
        snap_len: Some(netio::bpf::HEADERS_MAX),
        ..Default::default()
    };
    let send = |tx: &mut RawSender| {
        for seq in 0..100u32 {
            // The kernel fills in the IP length and checksum of a raw send.
            let mut p = tcp_v4(LO, LO, 40000, 8080, seq);
            p.extend(std::iter::repeat_n(b'x', 1000));
            tx.send(&p).unwrap();
            tx.send(&tcp_v4(LO, LO, 40000, 8080, seq)).unwrap();
        }
    };
    let [ring] = &capture(&ns, &[lo_ring(filter)], send)[..] else {
        unreachable!()
    };
    let sizes = |wire: u32| ring.seen.iter().filter(|s| s.wire_len == wire).count();
    assert_eq!(ring.seen.len(), 200);
    assert_eq!(sizes(1040), 100, "the long ones report their whole length");
    assert_eq!(sizes(40), 100);
    for s in &ring.seen {
        assert_eq!(
            s.len,
            (s.wire_len as usize).min(120),
            "cut at 120 bytes, never longer than the packet"
        );
    }
}

#[test]
fn ipv6_is_sent_and_filtered() {
    let ns = Netns::new("v6");
    let lo6 = Ipv6Addr::LOCALHOST;
    let filter = TcpFilter {
        dst_ports: vec![8080],
        dst_addrs_v6: vec![lo6],
        drop_outgoing: true,
        ..Default::default()
    };
    let send = move |tx: &mut RawSender| {
        for seq in 0..200 {
            tx.send(&tcp_v6(lo6, lo6, 40000, 8080, seq)).unwrap();
            tx.send(&tcp_v6(lo6, lo6, 40000, 8081, seq)).unwrap();
            tx.send(&tcp_v4(LO, LO, 40000, 8080, seq)).unwrap();
        }
    };
    let [ring] = &capture(&ns, &[lo_ring(filter)], send)[..] else {
        unreachable!()
    };

    let is = |s: &Seen, protocol: u16| {
        (s.pkttype, s.protocol, s.sport, s.dport) == (HOST, protocol, 40000, 8080)
    };
    assert_eq!(ring.seen.iter().filter(|s| is(s, 0x86dd)).count(), 200);
    assert_eq!(
        ring.seen.iter().filter(|s| is(s, 0x0800)).count(),
        200,
        "the v6 list ignores IPv4"
    );
    assert_eq!(ring.seen.len(), 400);
}

#[test]
fn fanout_keeps_each_flow_on_one_ring() {
    let ns = Netns::new("fanout");
    let filter = TcpFilter {
        dst_ports: vec![8080],
        drop_outgoing: true,
        ..Default::default()
    };
    let config = RingConfig {
        fanout: Some(0x7c01),
        ..lo_ring(filter)
    };
    let send = |tx: &mut RawSender| {
        for seq in 0..50 {
            for sport in 40000..40032 {
                tx.send(&tcp_v4(LO, LO, sport, 8080, seq)).unwrap();
            }
        }
    };
    let rings = capture(&ns, &[config.clone(), config], send);

    assert_eq!(rings.iter().map(|r| r.seen.len()).sum::<usize>(), 32 * 50);
    for sport in 40000..40032 {
        let per_ring: Vec<_> = rings
            .iter()
            .map(|r| r.seen.iter().filter(|s| s.sport == sport).count())
            .collect();
        assert!(
            per_ring.contains(&50) && per_ring.contains(&0),
            "flow {sport} split: {per_ring:?}"
        );
    }
    assert!(
        rings.iter().all(|r| !r.seen.is_empty()),
        "32 flows all hashed to one ring"
    );
}

#[test]
fn unroutable_packets_are_counted_at_flush_and_the_rest_still_go() {
    // Both ways of sending: queued (`send` + `flush`) and in place (`send_all`).
    for in_place in [false, true] {
        unroutable_packets_are_counted(in_place);
    }
}

fn unroutable_packets_are_counted(in_place: bool) {
    // A namespace with only `lo` up: 198.18.99.1 has no route, 127.0.0.1 has one.
    let ns = Netns::new("unroutable");
    let filter = TcpFilter {
        dst_ports: vec![8080],
        ..Default::default()
    };
    let failures = std::sync::Mutex::new(None);
    let send = |tx: &mut RawSender| {
        let nowhere = Ipv4Addr::new(198, 18, 99, 1);
        // Interleaved, so that batches mix the two destinations.
        let packets: Vec<Vec<u8>> = (0..100)
            .flat_map(|seq| {
                [
                    tcp_v4(LO, nowhere, 40000, 8080, seq),
                    tcp_v4(LO, LO, 40000, 8080, seq),
                ]
            })
            .collect();
        let result = if in_place {
            tx.send_all(packets.iter().map(Vec::as_slice))
        } else {
            for p in &packets {
                tx.send(p).unwrap();
            }
            tx.flush()
        };
        *failures.lock().unwrap() = result.err().map(|f| f.count);
    };
    let [ring] = &capture(&ns, &[lo_ring(filter)], send)[..] else {
        unreachable!()
    };
    assert_eq!(
        *failures.lock().unwrap(),
        Some(100),
        "every unroutable packet is counted"
    );
    assert_eq!(
        count(&ring.seen, HOST),
        100,
        "every routable packet arrived"
    );
}
