//! Memory and CPU of the session core holding many concurrent idle sessions.
//!
//! `cargo run --release -p tcpcopy-session --example idle_sessions [SESSIONS]` opens SESSIONS
//! (default 100,000) replicated sessions, each with a handshake and one answered request, then lets
//! them sit idle for ten simulated minutes of timer ticks, and prints: resident memory per session,
//! CPU per session opened, the cost of a captured packet's lookup at that table size, and the timer
//! cost while idle. Sans-IO: packets are built in memory and time is simulated, so this measures the
//! core alone (tcpcopy's capture ring and channels come on top, about 70 MB fixed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use session::testing::segment as packet;
use session::{Config, Replicator, Rule};
use wire::{Flags, TcpPacket};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let online: SocketAddr = "198.18.0.20:80".parse().unwrap();
    let target: SocketAddr = "198.18.0.30:80".parse().unwrap();
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 80,
        target,
    }]);
    cfg.fake_clients = (1..=250).map(|i| IpAddr::from([198, 19, 0, i])).collect();
    // The target sees the client's ISN, so that the made-up answers below acknowledge the SYN
    // (with the ISN clock on they did not, and every session ended retransmitting its SYN).
    cfg.clock_isn = false;
    let mut r = Replicator::new(cfg);
    // 100,000 clients: 200 addresses x 500 ports.
    let client = |i: usize| {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(
                198,
                18,
                1 + (i / 500 / 250) as u8,
                (i / 500 % 250) as u8 + 1,
            )),
            20_000 + (i % 500) as u16,
        )
    };
    let request = b"GET /idle HTTP/1.1\r\nHost: lab\r\n\r\n";
    let base = Instant::now();
    let rss0 = rss_kib();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut locals = Vec::with_capacity(n);
    for i in 0..n {
        let c = client(i);
        let now = base + Duration::from_micros(i as u64 * 10);
        r.handle_capture(now, &packet(c, online, 1000, 0, Flags::SYN, b""));
        let mut local = None;
        r.drain_transmits(|p| local = Some(TcpPacket::parse(p).unwrap().src()));
        let local = local.unwrap();
        locals.push(local);
        r.handle_response(
            now,
            &packet(target, local, 7000, 1001, Flags::SYN | Flags::ACK, b""),
        );
        r.handle_capture(now, &packet(c, online, 1001, 5001, Flags::ACK, b""));
        r.handle_capture(
            now,
            &packet(c, online, 1001, 5001, Flags::ACK | Flags::PSH, request),
        );
        let end = 1001 + request.len() as u32;
        r.handle_response(
            now,
            &packet(
                target,
                local,
                7001,
                end,
                Flags::ACK | Flags::PSH,
                &[b'r'; 200],
            ),
        );
        r.drain_transmits(|_| {});
    }
    let opened = cpu_seconds() - cpu0;
    let opened_wall = wall0.elapsed().as_secs_f64();
    let rss1 = rss_kib();
    let st = r.stats();
    assert_eq!(st.sessions_active as usize, n, "{st}");
    assert_eq!(st.requests_target as usize, 0, "requests still open: {st}");

    // A captured packet for an existing session: lookup plus bookkeeping (a duplicate ACK).
    let lookups = 1_000_000;
    let t = Instant::now();
    let mut now = base + Duration::from_secs(2);
    for k in 0..lookups {
        let i = (k * 7919) % n;
        let end = 1001 + request.len() as u32;
        r.handle_capture(now, &packet(client(i), online, end, 5201, Flags::ACK, b""));
        now += Duration::from_nanos(100);
    }
    let per_lookup = t.elapsed() / lookups as u32;

    // Ten idle minutes, the timer polled every 100 ms as the live loop does (session timeout 600 s
    // would end them; the default applies, so they stay).
    let cpu2 = cpu_seconds();
    let t = Instant::now();
    let mut ticks = 0;
    let idle_end = now + Duration::from_secs(590);
    while now < idle_end {
        now += Duration::from_millis(100);
        r.handle_timeout(now);
        let _ = r.poll_timeout();
        ticks += 1;
    }
    let idle_cpu = cpu_seconds() - cpu2;
    let idle_wall = t.elapsed();
    let st = r.stats();
    println!(
        "sessions open and idle: {} (active {})",
        n, st.sessions_active
    );
    println!(
        "resident memory: {:.1} MB for the table ({:.0} bytes per session; process {:.1} MB)",
        (rss1 - rss0) as f64 / 1024.0,
        (rss1 - rss0) as f64 * 1024.0 / n as f64,
        rss_kib() as f64 / 1024.0
    );
    println!(
        "opening: {opened_wall:.2} s wall ({opened:.2} s CPU), {:.2} us per session (handshake + one request + answer, packets built here included)",
        opened_wall * 1e6 / n as f64
    );
    println!("captured packet at {n} sessions: {per_lookup:?} per packet (build + parse + lookup)");
    println!(
        "idle: {ticks} timer polls over 590 simulated s took {:.3} s CPU ({idle_wall:?} wall), {:.1} us per poll",
        idle_cpu,
        idle_wall.as_secs_f64() * 1e6 / ticks as f64
    );
    println!("{st}");
}
