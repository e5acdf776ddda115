//! What one session really costs in memory, against the fixed cost `-m` counts for it
//! ([`session::SESSION_COST`]): 100,000 sessions are opened in a fresh process and its resident
//! size read from /proc before and after. Its own test binary, so nothing else runs beside it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use session::testing::segment;
use session::{Config, Replicator, Rule, SESSION_COST};
use wire::Flags;

const SESSIONS: u32 = 100_000;

/// The process's resident size in bytes (Linux), or `None` elsewhere.
fn rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn client(i: u32) -> SocketAddr {
    // A spoofed source per session, as a SYN flood has them.
    SocketAddr::new(
        Ipv4Addr::from(0x0a00_0000 + i).into(),
        1024 + (i % 60_000) as u16,
    )
}

/// Bytes per session the process grew by while `open` made `SESSIONS` of them, and the
/// replicator (kept alive, so that a second measurement does not reuse its memory).
fn growth_per_session(
    open: impl Fn(&mut Replicator, Instant, SocketAddr),
) -> Option<(usize, Replicator)> {
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 80,
        target: "198.18.0.30:8080".parse().unwrap(),
    }]);
    cfg.fake_clients = vec!["198.19.0.7".parse().unwrap()];
    let mut r = Replicator::new(cfg);
    let now = Instant::now();
    let before = rss()?;
    for i in 0..SESSIONS {
        open(&mut r, now, client(i));
        r.drain_transmits(|_| {});
        r.drain_routes(|_| {});
    }
    let after = rss()?;
    let s = r.stats();
    assert_eq!(
        s.sessions_half_open + s.sessions_active,
        u64::from(SESSIONS),
        "{s}"
    );
    Some((after.saturating_sub(before) / SESSIONS as usize, r))
}

#[test]
fn a_session_costs_no_more_than_the_budget_counts() {
    let online: SocketAddr = "198.18.0.20:80".parse().unwrap();
    let syn = |r: &mut Replicator, now, c| {
        r.handle_capture(now, &segment(c, online, 1000, 0, Flags::SYN, b""));
    };
    let Some((half_open, _kept)) = growth_per_session(syn) else {
        eprintln!("no /proc/self/status: skipped");
        return;
    };
    // Opened at the target too: a table entry by target endpoints, a route, a timer.
    let (opened, _kept2) = growth_per_session(|r: &mut Replicator, now, c| {
        syn(r, now, c);
        r.handle_capture(now, &segment(c, online, 1001, 5000, Flags::ACK, b""));
    })
    .expect("read before");
    eprintln!(
        "per session: half open {half_open} bytes, opened at the target {opened} bytes \
         (counted: {SESSION_COST})"
    );
    assert!(
        half_open <= SESSION_COST && opened <= SESSION_COST,
        "half open {half_open}, opened {opened} bytes per session; SESSION_COST is {SESSION_COST}"
    );
}
