//! The checks every replicating run makes: the [`Sniffer`] that counts target packets reaching
//! the client namespace, and [`proc_usage`] for the programs' CPU and memory.

use std::net::IpAddr;

use crate::counter::PacketCounter;

/// Counts packets arriving in a namespace from two sources: the one that must never be seen and a
/// control that must be seen (proving the capture works).
pub struct Sniffer(PacketCounter);

impl Sniffer {
    /// Starts counting, in namespace `ns`, the packets arriving from `forbidden_src` and from
    /// `control_src`.
    pub fn start(ns: &str, forbidden_src: IpAddr, control_src: IpAddr) -> anyhow::Result<Sniffer> {
        // Any protocol: a response could also be an ICMP or UDP packet.
        let sort = move |data: &[u8]| {
            let src = match (data.first().map(|b| b >> 4), data.len()) {
                (Some(4), n) if n >= 20 => {
                    IpAddr::from(<[u8; 4]>::try_from(&data[12..16]).unwrap_or_default())
                }
                // Neighbour discovery (ICMPv6 133-137) is link housekeeping, not a response.
                (Some(6), n) if n > 40 && data[6] == 58 && (133..=137).contains(&data[40]) => {
                    return (false, false)
                }
                (Some(6), n) if n >= 40 => {
                    IpAddr::from(<[u8; 16]>::try_from(&data[8..24]).unwrap_or_default())
                }
                _ => return (false, false),
            };
            (src == forbidden_src, src == control_src)
        };
        PacketCounter::start(ns, "client-side", Box::new(sort)).map(Sniffer)
    }

    /// Stops and returns (packets from the forbidden source, packets from the control source).
    pub fn finish(self) -> anyhow::Result<(u64, u64)> {
        self.0.finish()
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
