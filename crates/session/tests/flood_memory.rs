//! A million spoofed SYNs against a 64 MiB budget, in a process of its own: the half-open
//! sessions are shed within the budget, and the process's peak resident size grows by less than
//! the budget.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use session::testing::{segment, Rng};
use session::{Config, Replicator, Rule, SESSION_COST};
use wire::Flags;

/// A field of /proc/self/status in bytes (Linux), or `None` elsewhere.
fn status_bytes(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn a_million_spoofed_syns_stay_within_a_64_mib_budget() {
    let Some(before) = status_bytes("VmHWM") else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    let online: SocketAddr = "198.18.0.20:80".parse().unwrap();
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 80,
        target: "198.18.0.30:80".parse().unwrap(),
    }]);
    cfg.max_buffered_bytes = 64 << 20;
    let mut r = Replicator::new(cfg);
    let mut rng = Rng::new(19);
    let start = Instant::now();
    for i in 0..1_000_000u64 {
        let ip = Ipv4Addr::from(0xc612_8000 | (rng.next_u64() as u32 & 0x7fff));
        let src = SocketAddr::new(ip.into(), 1024 + rng.below(64_000) as u16);
        let syn = segment(src, online, rng.next_u64() as u32, 0, Flags::SYN, b"");
        // 60,000 SYNs a second, as the lab's flood.
        let now = start + Duration::from_micros(i * 1_000_000 / 60_000);
        r.handle_capture(now, &syn);
        if i % 1024 == 0 {
            if let Some(at) = r.poll_timeout().filter(|&at| at <= now) {
                r.handle_timeout(at);
            }
        }
        r.drain_transmits(|_| panic!("a flood SYN went to the target"));
    }
    let s = r.stats();
    let peak = status_bytes("VmHWM").unwrap();
    eprintln!(
        "1,000,000 SYNs: {} half open, {} shed; accounted {} MiB; peak grew by {} MiB",
        s.sessions_half_open,
        s.sessions_half_open_shed,
        r.accounted_bytes() >> 20,
        (peak - before) >> 20
    );
    assert_eq!(s.sessions_half_open as usize, (64 << 20) / SESSION_COST);
    // A few random sources repeat an address and port: a new half-open session ends the old.
    assert_eq!(
        s.sessions_half_open + s.sessions_half_open_shed + s.sessions_half_open_expired,
        1_000_000
    );
    assert!(
        peak - before < 64 << 20,
        "the peak grew by {} MiB",
        (peak - before) >> 20
    );
}
