//! A SYN flood for the lab: spoofed SYNs from random sources at a service, bounded in count and
//! time, and a counter of the flood's SYNs that arrive in a namespace (at the target: did any
//! reach it?).
//!
//! The SYNs go out through `netio`'s raw IPv4 sender (whole packets, our source addresses), built
//! by `session::testing::segment`; the sources are drawn from one IPv4 prefix with the shared
//! PRNG, so a run is repeatable. Only for lab namespaces: it floods whatever it is pointed at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use netio::RawSender;

use crate::counter::PacketCounter;
use session::testing::{segment, Rng};

/// What to flood, how much and how fast.
#[derive(Clone, Debug)]
pub struct FloodSpec {
    /// The service the SYNs go to.
    pub target: SocketAddr,
    /// Their source addresses: random ones in `source_net/source_prefix`, random ports.
    pub source_net: Ipv4Addr,
    pub source_prefix: u8,
    /// SYNs in all; the flood stops after them.
    pub count: u64,
    /// SYNs per second at most.
    pub rate: u64,
    /// The flood stops at this point even if not all were sent.
    pub deadline: Duration,
    pub seed: u64,
}

/// What a flood did.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodReport {
    /// SYNs handed to the kernel.
    pub sent: u64,
    /// SYNs the kernel refused (ENOBUFS and the like).
    pub failed: u64,
    pub elapsed: Duration,
}

/// Whether `ip` is in `net/prefix`.
pub fn in_net(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Sends the flood from the calling thread's namespace (run it with `Lab::run_in`).
pub fn syn_flood(spec: &FloodSpec) -> anyhow::Result<FloodReport> {
    let IpAddr::V4(_) = spec.target.ip() else {
        anyhow::bail!("the flood is IPv4 only");
    };
    anyhow::ensure!(spec.rate > 0 && spec.source_prefix <= 32, "rate and prefix");
    let mut sender = RawSender::open().context("raw socket for the flood (CAP_NET_RAW)")?;
    let mut rng = Rng::new(spec.seed);
    let host_bits = 32 - u32::from(spec.source_prefix);
    let base = u32::from(spec.source_net) & u32::MAX.checked_shl(host_bits).unwrap_or(0);
    let start = Instant::now();
    let mut report = FloodReport::default();
    const BATCH: u64 = 256;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH as usize);
    while report.sent + report.failed < spec.count && start.elapsed() < spec.deadline {
        // Paced by batches: batch k may leave at k × BATCH / rate seconds.
        let done = report.sent + report.failed;
        let due = start + Duration::from_secs_f64(done as f64 / spec.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        batch.clear();
        for _ in 0..BATCH.min(spec.count - done) {
            let host = (rng.next_u64() as u32)
                & u32::MAX.checked_shr(spec.source_prefix as u32).unwrap_or(0);
            let src = SocketAddr::new(
                Ipv4Addr::from(base | host).into(),
                1024 + rng.below(64_000) as u16,
            );
            let isn = rng.next_u64() as u32;
            batch.push(segment(src, spec.target, isn, 0, wire::Flags::SYN, b""));
        }
        let n = batch.len() as u64;
        match sender.send_all(batch.iter().map(Vec::as_slice)) {
            Ok(()) => report.sent += n,
            Err(f) => {
                let failed = f.count.min(n);
                report.failed += failed;
                report.sent += n - failed;
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Counts the TCP SYNs (without ACK) that arrive in a namespace, those from one IPv4 prefix (the
/// flood's) apart.
pub struct SynCounter(PacketCounter);

impl SynCounter {
    /// Starts counting in namespace `ns` the SYNs to `port`.
    pub fn start(ns: &str, port: u16, net: Ipv4Addr, prefix: u8) -> anyhow::Result<SynCounter> {
        let sort = move |data: &[u8]| {
            let Ok(t) = wire::TcpPacket::parse(data) else {
                return (false, false);
            };
            let flags = t.flags();
            if !flags.syn() || flags.ack() || t.dst().port() != port {
                return (false, false);
            }
            let from_net = matches!(t.src().ip(), IpAddr::V4(src) if in_net(src, net, prefix));
            (from_net, true)
        };
        PacketCounter::start(ns, "SYN counter", Box::new(sort)).map(SynCounter)
    }

    /// Stops and returns (SYNs from the prefix, all SYNs to the port).
    pub fn finish(self) -> anyhow::Result<(u64, u64)> {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_hold_what_they_should() {
        let net = Ipv4Addr::new(198, 18, 128, 0);
        assert!(in_net(Ipv4Addr::new(198, 18, 200, 7), net, 17));
        assert!(!in_net(Ipv4Addr::new(198, 18, 0, 10), net, 17));
        assert!(in_net(Ipv4Addr::new(1, 2, 3, 4), net, 0));
    }
}
