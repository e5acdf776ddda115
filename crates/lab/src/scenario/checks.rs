//! The checks every replicating run makes: the [`Sniffer`] that counts target packets reaching
//! the client namespace, and [`proc_usage`] for the programs' CPU and memory.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use netio::capture::{RingCapture, RingConfig};

/// Counts packets arriving in a namespace from two sources: the one that must never be seen and a
/// control that must be seen (proving the capture works).
pub struct Sniffer {
    stop: Arc<AtomicBool>,
    forbidden: Arc<AtomicU64>,
    control: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<anyhow::Result<()>>>,
}

impl Sniffer {
    /// Starts counting, in namespace `ns`, the packets arriving from `forbidden_src` and from
    /// `control_src`.
    pub fn start(ns: &str, forbidden_src: IpAddr, control_src: IpAddr) -> anyhow::Result<Sniffer> {
        let stop = Arc::new(AtomicBool::new(false));
        let forbidden = Arc::new(AtomicU64::new(0));
        let control = Arc::new(AtomicU64::new(0));
        let (s, f, c) = (stop.clone(), forbidden.clone(), control.clone());
        let ns = ns.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = thread::spawn(move || -> anyhow::Result<()> {
            netio::netns::enter(&ns)?;
            // Every packet, any protocol, incoming: a response could also be an ICMP or UDP packet.
            // What the namespace sends itself is left out in the kernel (it is skipped below too).
            let cfg = RingConfig {
                filter: Vec::new(),
                ignore_outgoing: true,
                ..RingConfig::default()
            };
            let mut ring = RingCapture::open(&cfg)?;
            let _ = ready_tx.send(());
            while !s.load(Ordering::Relaxed) {
                ring.poll_batch(Duration::from_millis(50), |p| {
                    if p.pkttype == libc::PACKET_OUTGOING {
                        return;
                    }
                    let src = match (p.data.first().map(|b| b >> 4), p.data.len()) {
                        (Some(4), n) if n >= 20 => {
                            IpAddr::from(<[u8; 4]>::try_from(&p.data[12..16]).unwrap_or_default())
                        }
                        // Neighbour discovery (ICMPv6 133-137) is link housekeeping, not a response.
                        (Some(6), n)
                            if n > 40 && p.data[6] == 58 && (133..=137).contains(&p.data[40]) =>
                        {
                            return
                        }
                        (Some(6), n) if n >= 40 => {
                            IpAddr::from(<[u8; 16]>::try_from(&p.data[8..24]).unwrap_or_default())
                        }
                        _ => return,
                    };
                    if src == forbidden_src {
                        f.fetch_add(1, Ordering::Relaxed);
                    } else if src == control_src {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                })?;
            }
            Ok(())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("client-side capture did not start")?;
        Ok(Sniffer {
            stop,
            forbidden,
            control,
            handle: Some(handle),
        })
    }

    /// Stops and returns (packets from the forbidden source, packets from the control source).
    pub fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("sniffer thread panicked"))??;
        }
        Ok((
            self.forbidden.load(Ordering::Relaxed),
            self.control.load(Ordering::Relaxed),
        ))
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU seconds (user + system) and resident memory (KiB) of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ is 100 on Linux
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, rss))
}
