//! Link-layer sender against a real kernel: two throwaway namespaces joined by a veth pair
//! (needs root).

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{collect_until_quiet, run, tcp_v4, Netns};
use netio::link::NextHop;
use netio::{LinkSender, RawSender, RingCapture, RingConfig, SendCounts, TcpFilter};

const A: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const B: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
/// Routed through B.
const BEYOND_B: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 9);
const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 7, 2];

/// Namespace `a` (198.18.7.1, the sender) and `b` (198.18.7.2, MAC 02:00:00:00:07:02, the
/// receiver), joined by the veth pair lk0 / lk1; `a` routes 198.19.7.0/24 through `b`.
struct Pair {
    a: Netns,
    b: Netns,
}

impl Pair {
    fn new(tag: &str) -> Self {
        let pair = Pair {
            a: Netns::new(&format!("{tag}a")),
            b: Netns::new(&format!("{tag}b")),
        };
        let (a, b) = (&pair.a.name, &pair.b.name);
        run(
            "ip",
            &[
                "-n", a, "link", "add", "lk0", "type", "veth", "peer", "name", "lk1", "netns", b,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                b,
                "link",
                "set",
                "lk1",
                "address",
                "02:00:00:00:07:02",
            ],
        );
        run(
            "ip",
            &["-n", a, "addr", "add", "198.18.7.1/24", "dev", "lk0"],
        );
        run(
            "ip",
            &["-n", b, "addr", "add", "198.18.7.2/24", "dev", "lk1"],
        );
        run("ip", &["-n", a, "link", "set", "lk0", "up"]);
        run("ip", &["-n", b, "link", "set", "lk1", "up"]);
        run(
            "ip",
            &[
                "-n",
                a,
                "route",
                "add",
                "198.19.7.0/24",
                "via",
                "198.18.7.2",
            ],
        );
        pair
    }

    /// Runs `send` in `a` and returns every packet to ports 9 and 10 that reached `b`'s lk1,
    /// whole, in arrival order, once nothing more came for a while after `send` returned.
    fn exchange(&self, send: impl FnOnce() + Send) -> Vec<Vec<u8>> {
        let sent = &AtomicBool::new(false);
        thread::scope(|s| {
            let (ready_tx, ready_rx) = mpsc::channel();
            let receiver = s.spawn(move || {
                self.b.enter();
                let filter = TcpFilter {
                    dst_ports: vec![9, 10],
                    ..Default::default()
                };
                let cfg = RingConfig {
                    interface: Some("lk1".into()),
                    filter: filter.compile(),
                    ..Default::default()
                };
                let mut ring = RingCapture::open(&cfg).unwrap();
                ready_tx.send(()).unwrap();
                let mut seen = Vec::new();
                collect_until_quiet(std::slice::from_mut(&mut ring), sent, |_, p| {
                    seen.push(p.data.to_vec())
                });
                seen
            });
            if ready_rx.recv().is_ok() {
                s.spawn(move || {
                    self.a.enter();
                    send();
                    sent.store(true, Ordering::Release);
                });
            }
            receiver.join().expect("receiver panicked")
        })
    }
}

/// Sends one packet to `dst` at a time until one went at the link layer (the first ones are
/// routed, which makes the kernel resolve the next hop); returns the packets it sent.
fn until_link_layer(tx: &mut LinkSender, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let before = tx.counts().link;
    let mut sent = Vec::new();
    while tx.counts().link == before {
        assert!(Instant::now() < deadline, "never sent at the link layer");
        let p = tcp_v4(A, dst, 40000, 9, sent.len() as u32);
        tx.send_all([p.as_slice()]).unwrap();
        sent.push(p);
        thread::sleep(Duration::from_millis(5));
    }
    sent
}

#[test]
fn packets_go_at_the_link_layer_once_the_next_hop_is_known_and_arrive_whole_and_in_order() {
    let pair = Pair::new("lk");
    let mut expected = Vec::new();
    let mut result = None;
    let received = pair.exchange(|| {
        let mut tx = LinkSender::open(None).unwrap();
        expected.extend(until_link_layer(&mut tx, B));
        // The gateway's address is resolved already: every packet goes at the link layer, with
        // B's hardware address.
        let burst: Vec<Vec<u8>> = (0..300)
            .flat_map(|seq| {
                [
                    tcp_v4(A, B, 40001, 9, seq),
                    tcp_v4(A, BEYOND_B, 40002, 10, seq),
                ]
            })
            .collect();
        let before = tx.counts();
        tx.send_all(burst.iter().map(Vec::as_slice)).unwrap();
        let after = tx.counts();
        expected.extend(burst);
        result = Some((before, after, tx.next_hops()));
    });
    let (before, after, hops) = result.unwrap();
    assert_eq!(
        received, expected,
        "every packet arrived unchanged, in order"
    );
    assert_eq!(
        (after.link - before.link, after.routed - before.routed),
        (600, 0),
        "every packet went at the link layer: {before:?} -> {after:?}"
    );
    let b = NextHop {
        ifindex: hops[0]
            .1
            .as_ref()
            .expect("B is reached at the link layer")
            .ifindex,
        device: "lk0".into(),
        mac: B_MAC,
    };
    assert_eq!(
        hops,
        [(B, Some(b.clone())), (BEYOND_B, Some(b))],
        "both destinations go to B's hardware address"
    );
}

#[test]
fn a_stale_neighbour_entry_is_confirmed_without_a_routed_packet() {
    let pair = Pair::new("ls");
    let a = pair.a.name.clone();
    let state = move || {
        let out = std::process::Command::new("ip")
            .args(["-n", &a, "neigh", "show", "198.18.7.2", "dev", "lk0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Makes B's entry stale (with `extra` flags), waits for the next check (a second after the
    // last) and sends one packet: the entry's state before and after, and how the packet went.
    let check_stale = |tx: &mut LinkSender, sent: &mut Vec<Vec<u8>>, extra: &[&str]| {
        let mut args = vec![
            "-n",
            &pair.a.name,
            "neigh",
            "replace",
            "198.18.7.2",
            "dev",
            "lk0",
            "lladdr",
            "02:00:00:00:07:02",
            "nud",
            "stale",
        ];
        args.extend_from_slice(extra);
        run("ip", &args);
        let stale = state();
        thread::sleep(Duration::from_millis(1100));
        let before = tx.counts();
        let p = tcp_v4(A, B, 40006, 9, sent.len() as u32);
        tx.send_all([p.as_slice()]).unwrap();
        sent.push(p);
        let after = tx.counts();
        (
            stale,
            state(),
            (after.link - before.link, after.routed - before.routed),
        )
    };
    let mut outcome = None;
    let received = pair.exchange(|| {
        let mut tx = LinkSender::open(None).unwrap();
        let mut sent = until_link_layer(&mut tx, B);
        let plain = check_stale(&mut tx, &mut sent, &[]);
        // An entry another program manages keeps its flags: a routed packet confirms it.
        let managed = check_stale(&mut tx, &mut sent, &["extern_learn"]);
        outcome = Some((plain, managed, sent));
    });
    let ((stale, after, how), managed, sent) = outcome.unwrap();
    assert!(stale.contains("STALE"), "{stale}");
    assert!(
        ["DELAY", "PROBE", "REACHABLE"]
            .iter()
            .any(|s| after.contains(s)),
        "the kernel was told the entry is in use: {after}"
    );
    assert_eq!(
        how,
        (1, 0),
        "the packet of the check went at the link layer"
    );
    let (stale, after, how) = managed;
    assert!(
        stale.contains("STALE") && stale.contains("extern_learn"),
        "{stale}"
    );
    assert!(after.contains("extern_learn"), "the flag stays: {after}");
    assert_eq!(how, (0, 1), "the packet of the check was routed");
    assert_eq!(received, sent);
}

#[test]
fn what_the_link_layer_cannot_take_is_routed() {
    let pair = Pair::new("lr");
    let mut outcome = None;
    let received = pair.exchange(|| {
        let mut tx = LinkSender::open(None).unwrap();
        let mut sent = until_link_layer(&mut tx, B);
        // Larger than lk0's MTU: routed, and the kernel refuses it there too.
        let mut big = tcp_v4(A, B, 40003, 9, 0);
        big.resize(1600, 0);
        big[2..4].copy_from_slice(&1600u16.to_be_bytes());
        big[10..12].copy_from_slice(&[0, 0]);
        let sum = ip_checksum(&big[..20]);
        big[10..12].copy_from_slice(&sum.to_be_bytes());
        let after = tcp_v4(A, B, 40003, 9, 1);
        let before = tx.counts();
        let failed = tx
            .send_all([big.as_slice(), after.as_slice()])
            .expect_err("an oversized packet fails")
            .count;
        sent.push(after);
        // Our own address: routed (a local route, not a unicast one).
        let local = tcp_v4(B, A, 40004, 9, 0);
        tx.send_all([local.as_slice()]).unwrap();
        tx.send_all([local.as_slice()]).unwrap();
        outcome = Some((sent, failed, before, tx.counts(), tx.next_hops()));
    });
    let (sent, failed, before, counts, hops) = outcome.unwrap();
    assert_eq!(failed, 1, "only the oversized packet failed");
    assert_eq!(received, sent, "the packet after it still went");
    assert_eq!(
        counts,
        SendCounts {
            link: before.link + 1,
            routed: before.routed + 2,
        },
        "the packet after the oversized one went at the link layer, both local ones were routed"
    );
    assert_eq!(
        hops[1],
        (A, None),
        "a local address has no link-layer next hop"
    );
}

#[test]
fn another_device_than_the_one_named_is_routed() {
    let pair = Pair::new("ld");
    let mut counts = None;
    let packets: Vec<Vec<u8>> = (0..50).map(|seq| tcp_v4(A, B, 40005, 9, seq)).collect();
    let received = pair.exchange(|| {
        let mut tx = LinkSender::open(Some("eth9")).unwrap();
        for p in &packets {
            tx.send_all([p.as_slice()]).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
        counts = Some(tx.counts());
    });
    assert_eq!(received, packets);
    assert_eq!(
        counts.unwrap(),
        SendCounts {
            link: 0,
            routed: 50
        }
    );
}

fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn a_full_device_queue_is_retried_or_reported_never_silent() {
    // A token bucket of 1 Mbit/s holding 3000 bytes on lk0: a burst of 2000 packets overflows it.
    // The queue refuses the excess (ENOBUFS), and the sender retries or reports it. A raw socket
    // tells only with IP_RECVERR: without it, 1906 of these 2000 were lost in silence. The raw
    // sender's socket connected to B then rests on the shared socket for a second.
    for link_layer in [false, true] {
        let pair = Pair::new(if link_layer { "lq" } else { "rq" });
        let a = pair.a.name.clone();
        let burst: Vec<Vec<u8>> = (0..2000).map(|seq| tcp_v4(A, B, 40007, 9, seq)).collect();
        let mut outcome = None;
        let received = pair.exchange(|| {
            let mut sent = Vec::new();
            let drops;
            let failed = if link_layer {
                let mut tx = LinkSender::open(None).unwrap();
                sent = until_link_layer(&mut tx, B);
                shape(&a);
                let result = tx.send_all(burst.iter().map(Vec::as_slice));
                drops = qdisc_drops(&a);
                result
            } else {
                let mut tx = RawSender::open().unwrap();
                // Resolved first: packets for an unresolved neighbour wait in its queue, which
                // drops the oldest silently when full.
                let first = tcp_v4(A, B, 40007, 9, 5000);
                tx.send_all([first.as_slice()]).unwrap();
                sent.push(first);
                thread::sleep(Duration::from_millis(50));
                shape(&a);
                let result = tx.send_all(burst.iter().map(Vec::as_slice));
                drops = qdisc_drops(&a);
                // The socket connected to B hit the full queue: it rests, and B's packets take
                // the shared socket for a second; then the connected one serves B again.
                assert_eq!(tx.resting().collect::<Vec<_>>(), [B]);
                // The bucket's queue drains (3000 bytes at 1 Mbit/s) before it goes: removing
                // it drops what it holds.
                thread::sleep(Duration::from_millis(200));
                unshape(&a);
                thread::sleep(Duration::from_millis(900));
                let last = tcp_v4(A, B, 40007, 9, 6000);
                tx.send_all([last.as_slice()]).unwrap();
                assert_eq!(tx.resting().count(), 0);
                sent.push(last);
                result
            }
            .err()
            .map_or(0, |f| f.count);
            outcome = Some((sent.len(), failed, drops));
        });
        let (before, failed, drops) = outcome.unwrap();
        assert!(drops > 0, "the queue overflowed (link layer: {link_layer})");
        assert_eq!(
            received.len() - before + failed as usize,
            burst.len(),
            "every packet arrived or was reported (link layer: {link_layer}; \
             {drops} refused by the queue, {failed} reported)"
        );
    }
}

/// Packets the root qdisc of `ns`'s lk0 dropped.
fn qdisc_drops(ns: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", "lk0",
        ])
        .output()
        .expect("tc runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("(dropped ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count in: {text}"))
}

/// Takes [`shape`]'s token bucket off `ns`'s lk0 again.
fn unshape(ns: &str) {
    run(
        "ip",
        &[
            "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lk0", "root",
        ],
    );
}

/// A small token bucket on `ns`'s lk0.
fn shape(ns: &str) {
    run(
        "ip",
        &[
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lk0", "root", "tbf", "rate",
            "1mbit", "burst", "1600", "limit", "3000",
        ],
    );
}
