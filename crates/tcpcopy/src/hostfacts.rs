//! What a host's kernel says about its network, as `tcpcopy check` needs it (on tcpcopy's host
//! and, through the check exchange, on intercept's): the IPv4 routing table (`/proc/net/route`,
//! the main table), forwarding and reverse-path filtering sysctls, an interface's MTU. Parsing
//! and the route lookup are plain functions over the files' text; the readers are thin. Files
//! of the calling thread's network namespace; nothing here needs a capability.

use std::net::{IpAddr, Ipv4Addr};

/// One line of `/proc/net/route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub dest: Ipv4Addr,
    pub mask: Ipv4Addr,
    /// `None`: on-link.
    pub gateway: Option<Ipv4Addr>,
    pub metric: u32,
    /// An unreachable/prohibit/blackhole route (`RTF_REJECT`): a route that says there is none.
    pub reject: bool,
}

const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;

/// The routes of `/proc/net/route`'s text (the header and malformed lines are skipped).
pub fn parse_routes(text: &str) -> Vec<Route> {
    text.lines().skip(1).filter_map(parse_route).collect()
}

fn parse_route(line: &str) -> Option<Route> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    // The kernel prints each big-endian address as a host-order integer: its bytes in memory
    // are the address's, in order.
    let addr = |s: &str| hex(s).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    let flags = hex(f.get(3)?)?;
    if flags & RTF_UP == 0 {
        return None;
    }
    let gateway = addr(f.get(2)?)?;
    Some(Route {
        iface: f.first()?.to_string(),
        dest: addr(f.get(1)?)?,
        mask: addr(f.get(7)?)?,
        gateway: (!gateway.is_unspecified()).then_some(gateway),
        metric: f.get(6)?.parse().ok()?,
        reject: flags & RTF_REJECT != 0,
    })
}

/// The route the main table picks for `dst`: the longest prefix, then the lowest metric. `None`
/// when there is none, or the one that matches rejects.
pub fn route_for(routes: &[Route], dst: Ipv4Addr) -> Option<&Route> {
    let d = u32::from(dst);
    routes
        .iter()
        .filter(|r| d & u32::from(r.mask) == u32::from(r.dest) & u32::from(r.mask))
        .min_by_key(|r| (std::cmp::Reverse(u32::from(r.mask).count_ones()), r.metric))
        .filter(|r| !r.reject)
}

/// The reverse-path filter in force on an interface: the larger of `all` and the interface's
/// own (the kernel's rule), 0 off, 1 strict, 2 loose.
pub fn effective_rp_filter(all: Option<u8>, iface: Option<u8>) -> Option<u8> {
    match (all, iface) {
        (Some(a), Some(i)) => Some(a.max(i)),
        (a, i) => a.or(i),
    }
}

/// `/proc/sys/...` as a number.
pub fn sysctl(path: &str) -> Option<u8> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// This host's IPv4 routing table (main table); empty when it cannot be read.
pub fn routes() -> Vec<Route> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_routes(&t))
        .unwrap_or_default()
}

/// The interface the main table sends `dst` out of (IPv4 only; `None` for IPv6 or no route).
pub fn iface_towards(routes: &[Route], dst: IpAddr) -> Option<String> {
    match dst {
        // The local table (not in /proc/net/route) sends loopback addresses to `lo`.
        IpAddr::V4(d) if d.is_loopback() => Some("lo".into()),
        IpAddr::V4(d) => route_for(routes, d).map(|r| r.iface.clone()),
        IpAddr::V6(_) => None,
    }
}

/// `ip_forward` for the family of `addr` (IPv6: `all.forwarding`).
pub fn forwarding(addr: IpAddr) -> Option<bool> {
    let path = match addr {
        IpAddr::V4(_) => "/proc/sys/net/ipv4/ip_forward",
        IpAddr::V6(_) => "/proc/sys/net/ipv6/conf/all/forwarding",
    };
    sysctl(path).map(|v| v != 0)
}

/// The effective `rp_filter` on `iface`.
pub fn rp_filter(iface: &str) -> Option<u8> {
    let conf = |dev: &str| sysctl(&format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"));
    effective_rp_filter(conf("all"), conf(iface))
}

/// `iface`'s MTU.
pub fn mtu(iface: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu")).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/route` as a little-endian host prints it: a default route via 198.18.0.1, the
    /// lab segment on eth0, the fake range via the assistant, and an unreachable /28 in it.
    fn table() -> String {
        let le = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let line = |iface: &str, dest, gw, flags: u32, metric: u32, mask| {
            format!(
                "{iface}\t{}\t{}\t{flags:04X}\t0\t0\t{metric}\t{}\t0\t0\t0",
                le(dest),
                le(gw),
                le(mask)
            )
        };
        [
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
                .into(),
            line("eth0", [0; 4], [198, 18, 0, 1], 0x3, 100, [0; 4]),
            line("eth0", [198, 18, 0, 0], [0; 4], 0x1, 0, [255, 255, 255, 0]),
            line(
                "eth1",
                [198, 19, 0, 0],
                [10, 0, 0, 40],
                0x3,
                0,
                [255, 255, 0, 0],
            ),
            line(
                "eth1",
                [198, 19, 0, 0],
                [10, 0, 0, 41],
                0x3,
                5,
                [255, 255, 0, 0],
            ),
            line(
                "lo",
                [198, 19, 9, 0],
                [0; 4],
                0x201,
                0,
                [255, 255, 255, 240],
            ),
            line("eth2", [203, 0, 113, 0], [0; 4], 0x0, 0, [255, 255, 255, 0]),
            "garbage line".into(),
        ]
        .join("\n")
    }

    #[test]
    fn the_longest_prefix_then_the_lowest_metric_wins() {
        let routes = parse_routes(&table());
        assert_eq!(
            routes.len(),
            5,
            "the down route and the garbage are skipped"
        );
        let via = |a: [u8; 4]| {
            route_for(&routes, Ipv4Addr::from(a)).map(|r| (r.iface.as_str(), r.gateway))
        };
        assert_eq!(
            via([198, 19, 0, 7]),
            Some(("eth1", Some(Ipv4Addr::new(10, 0, 0, 40))))
        );
        assert_eq!(via([198, 18, 0, 30]), Some(("eth0", None)));
        assert_eq!(
            via([8, 8, 8, 8]),
            Some(("eth0", Some(Ipv4Addr::new(198, 18, 0, 1))))
        );
        // An unreachable route is no route; a route that is down is not there.
        assert_eq!(via([198, 19, 9, 3]), None);
        assert_eq!(via([203, 0, 113, 5]).map(|r| r.0), Some("eth0"));
    }

    #[test]
    fn without_a_default_route_an_unknown_network_has_none() {
        let routes: Vec<Route> = parse_routes(&table())
            .into_iter()
            .filter(|r| !r.mask.is_unspecified())
            .collect();
        assert_eq!(route_for(&routes, Ipv4Addr::new(192, 0, 2, 1)), None);
    }

    #[test]
    fn the_stricter_of_all_and_the_interface_is_in_force() {
        assert_eq!(effective_rp_filter(Some(0), Some(1)), Some(1));
        assert_eq!(effective_rp_filter(Some(2), Some(1)), Some(2));
        assert_eq!(effective_rp_filter(None, Some(1)), Some(1));
        assert_eq!(effective_rp_filter(None, None), None);
    }
}
