//! NFQUEUE reader against a real kernel, in a throwaway network namespace (needs root, iptables).

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{tcp_v4, Netns};
use netio::{PacketSink, RawSender, ResponseQueue, RingCapture, RingConfig, TcpFilter};

const RULE: [&str; 9] = [
    "OUTPUT",
    "-p",
    "tcp",
    "--dport",
    "9",
    "-j",
    "NFQUEUE",
    "--queue-num",
    "7",
];

/// The NFQUEUE rule in `ns`, deleted on drop (before the namespace itself goes).
struct Rule<'a>(&'a Netns);

impl<'a> Rule<'a> {
    fn insert(ns: &'a Netns) -> Self {
        if Command::new("iptables").arg("--version").output().is_err() {
            panic!("the NFQUEUE tests need the `iptables` binary on PATH");
        }
        ns.exec("iptables", &[&["-I"][..], &RULE].concat());
        Rule(ns)
    }
}

impl Drop for Rule<'_> {
    fn drop(&mut self) {
        let args = [
            &["netns", "exec", &self.0.name, "iptables", "-D"][..],
            &RULE,
        ]
        .concat();
        let _ = Command::new("ip").args(args).status();
    }
}

struct Outcome {
    queued: Vec<Vec<u8>>,
    lost: Option<u64>,
    /// Packets to port 9 that reached `lo` anyway.
    leaked: usize,
}

/// Sends `packets` (all to port 9) in `ns` and collects what queue 7 hands over.
fn run_queue(ns: &Netns, packets: Vec<Vec<u8>>) -> Outcome {
    // Detached: if nothing is ever queued, `recv_drop` blocks for good and the timeout below fails.
    let (tx, rx) = mpsc::channel();
    let (name, expected) = (ns.name.clone(), packets.len());
    thread::spawn(move || {
        netio::netns::enter(&name).unwrap();
        let mut queue = ResponseQueue::open(7, 128, 1 << 16).unwrap();
        let filter = TcpFilter {
            dst_ports: vec![9],
            ..Default::default()
        };
        let cfg = RingConfig {
            interface: Some("lo".into()),
            filter: filter.compile(),
            ..Default::default()
        };
        let mut ring = RingCapture::open(&cfg).unwrap();
        tx.send(None).unwrap();

        let mut queued = Vec::new();
        while queued.len() < expected {
            queue
                .recv_drop(|p| {
                    queued.push(p.to_vec());
                    netio::Fate::Drop
                })
                .unwrap();
        }
        let mut leaked = 0;
        for _ in 0..3 {
            ring.poll_batch(Duration::from_millis(100), |_| leaked += 1)
                .unwrap();
        }
        tx.send(Some(Outcome {
            queued,
            lost: queue.lost(),
            leaked,
        }))
        .unwrap();
    });
    let wait = |what| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    };
    assert!(wait("queue thread failed to open").is_none());

    let name = ns.name.clone();
    thread::spawn(move || {
        netio::netns::enter(&name).unwrap();
        let mut raw = RawSender::open().unwrap();
        packets.iter().for_each(|p| raw.send(p).unwrap());
    })
    .join()
    .unwrap();
    wait("queued packets never arrived").unwrap()
}

fn to_discard_port(seqs: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    seqs.map(|seq| tcp_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 40000, 9, seq))
        .collect()
}

#[test]
fn queued_packets_are_handed_over_and_dropped() {
    let ns = Netns::new("nfq");
    let _rule = Rule::insert(&ns);
    let sent = to_discard_port(0..5);
    let out = run_queue(&ns, sent.clone());

    assert_eq!(
        out.queued, sent,
        "whole packets (shorter than the copy range), in order"
    );
    assert_eq!(out.leaked, 0, "a dropped packet reached lo");
    assert_eq!(out.lost, Some(0), "the netlink socket was identified");
}

/// With the default 208 KiB netlink buffer this burst lost about a quarter of its packets.
#[test]
fn burst_fits_the_raised_receive_buffer() {
    let ns = Netns::new("nfqburst");
    let _rule = Rule::insert(&ns);
    let out = run_queue(&ns, to_discard_port(0..20_000));

    assert_eq!(out.queued.len(), 20_000);
    assert_eq!(out.lost, Some(0));
    assert_eq!(out.leaked, 0);
}
