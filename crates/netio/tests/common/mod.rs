//! Namespaces and hand-made packets for the root-only integration tests.
#![allow(dead_code)] // each test file uses a different part

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netio::{CapturedPacket, RingCapture};

/// Runs a command and fails the test with its stderr if it does not succeed.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `rings` until they have been quiet for a while after `sent` was set (20 s at most),
/// handing every packet to `f` with the index of its ring.
pub fn collect_until_quiet(
    rings: &mut [RingCapture],
    sent: &AtomicBool,
    mut f: impl FnMut(usize, &CapturedPacket<'_>),
) {
    const QUIET: Duration = Duration::from_millis(300);
    let (start, mut last) = (Instant::now(), Instant::now());
    let mut done_at = None;
    while start.elapsed() < Duration::from_secs(20) {
        for (i, ring) in rings.iter_mut().enumerate() {
            let got = ring
                .poll_batch(Duration::from_millis(10), |p| f(i, p))
                .unwrap();
            if got > 0 {
                last = Instant::now();
            }
        }
        if done_at.is_none() && sent.load(Ordering::Acquire) {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() > QUIET) && last.elapsed() > QUIET {
            break;
        }
    }
}

/// A network namespace with `lo` up, removed on drop (also when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("netio-t{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Moves the calling thread into the namespace.
    pub fn enter(&self) {
        netio::netns::enter(&self.name).expect("enter namespace");
    }

    pub fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A bare ACK segment with correct checksums.
fn tcp(sport: u16, dport: u16, seq: u32) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10;
    t[14..16].copy_from_slice(&1024u16.to_be_bytes());
    t
}

pub fn tcp_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&(seq as u16 | 1).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut seg = tcp(sport, dport, seq);
    let pseudo = [&ip[12..20], &[0, 6, 0, 20][..]].concat();
    let sum = checksum(&[&pseudo, &seg]);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    [&ip[..], &seg[..]].concat()
}

pub fn tcp_v6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let mut seg = tcp(sport, dport, seq);
    let pseudo = [&ip[8..40], &[0, 0, 0, 20, 0, 0, 0, 6][..]].concat();
    let sum = checksum(&[&pseudo, &seg]);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    [&ip[..], &seg[..]].concat()
}

/// Source and destination port of an IPv4 or IPv6 TCP packet.
pub fn ports(ip: &[u8]) -> (u16, u16) {
    let offset = if ip[0] >> 4 == 4 {
        usize::from(ip[0] & 0xf) * 4
    } else {
        40
    };
    let port = |at: usize| u16::from_be_bytes([ip[offset + at], ip[offset + at + 1]]);
    (port(0), port(2))
}
