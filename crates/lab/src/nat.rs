//! A collector host behind a NAT, as in a cloud VPC: the collector namespace has no interface on
//! the lab's bridge; it reaches every other host only through a NAT namespace that masquerades
//! its packets and drops those whose source is not the collector's own address (forged
//! sources: a cloud's network drops them, which is why packet mode cannot work from there and
//! stream mode does). The online host reaches the collector (for the mirrored traffic) through
//! the same NAT, routed.
//!
//! Everything lives in the lab's namespaces (the two hosts are made with [`Lab::add_host`]),
//! the iptables rules inside the NAT's: they go with the lab, also when a test fails.

use std::net::Ipv4Addr;

use anyhow::Context;

use crate::Lab;

/// The NAT's address on the lab's bridge.
pub const NAT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 60);
/// The private network behind the NAT: its gateway (the NAT) and the collector.
pub const PRIVATE_NET: &str = "10.77.0.0/24";
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const COLLECTOR_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// A collector behind a NAT in a lab.
#[derive(Clone, Debug)]
pub struct NatCollector {
    /// The NAT's namespace (interface [`Lab::IFACE`] on the bridge, `priv0` towards the
    /// collector).
    pub nat_ns: String,
    /// The collector's namespace (interface [`Lab::IFACE`], [`COLLECTOR_IP`]).
    pub collector_ns: String,
}

/// The NAT's interface towards the collector.
const PRIVATE_IFACE: &str = "priv0";

impl NatCollector {
    /// Adds the NAT (role `nat`) and the collector behind it (role `col`) to `lab`, and routes
    /// the online host's packets for the collector through the NAT.
    pub fn create(lab: &mut Lab) -> anyhow::Result<NatCollector> {
        let nat_ns = lab.add_host("nat", NAT_IP).context("NAT host")?;
        // Made on the bridge like any host, then its bridge port moved into the NAT: the
        // collector's only link is to the NAT.
        let collector_ns = lab
            .add_host("col", Ipv4Addr::new(198, 18, 0, 61))
            .context("collector host")?;
        let br = lab.ns_bridge().to_string();
        let run = |ns: &str, cmd: &str| -> anyhow::Result<()> {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            lab.sh(ns, &words)
                .map(|_| ())
                .with_context(|| format!("{ns}: {cmd}"))
        };
        run(&br, "ip link set col nomaster")?;
        run(&br, &format!("ip link set col netns {nat_ns}"))?;
        run(&nat_ns, &format!("ip link set col name {PRIVATE_IFACE}"))?;
        run(
            &nat_ns,
            &format!("ip addr add {GATEWAY_IP}/24 dev {PRIVATE_IFACE}"),
        )?;
        run(&nat_ns, &format!("ip link set {PRIVATE_IFACE} up"))?;
        let dev = Lab::IFACE;
        run(&collector_ns, &format!("ip addr flush dev {dev}"))?;
        run(
            &collector_ns,
            &format!("ip addr add {COLLECTOR_IP}/24 dev {dev}"),
        )?;
        run(
            &collector_ns,
            &format!("ip route add default via {GATEWAY_IP}"),
        )?;
        lab.set_sysctl(&nat_ns, "net.ipv4.ip_forward", "1")?;
        // What conntrack cannot place is dropped, never forwarded un-NATed with the private
        // source (a cloud's NAT never leaks it); TCP resends it.
        run(
            &nat_ns,
            "iptables -A FORWARD -m conntrack --ctstate INVALID -j DROP",
        )?;
        // Forged sources go no further; the collector's own packets leave with the NAT's address.
        run(
            &nat_ns,
            &format!("iptables -A FORWARD -i {PRIVATE_IFACE} ! -s {COLLECTOR_IP} -j DROP"),
        )?;
        run(
            &nat_ns,
            &format!("iptables -t nat -A POSTROUTING -s {PRIVATE_NET} -o {dev} -j MASQUERADE"),
        )?;
        let online = lab.ns_online().to_string();
        run(&online, &format!("ip route add {PRIVATE_NET} via {NAT_IP}"))?;
        Ok(NatCollector {
            nat_ns,
            collector_ns,
        })
    }

    /// Packets the NAT dropped for their forged source so far.
    pub fn forged_drops(&self, lab: &Lab) -> anyhow::Result<u64> {
        self.drops(lab, &format!("!{COLLECTOR_IP}"))
    }

    /// Packets the NAT dropped as conntrack's INVALID so far.
    pub fn invalid_drops(&self, lab: &Lab) -> anyhow::Result<u64> {
        self.drops(lab, "INVALID")
    }

    /// The packet count of the FORWARD chain's DROP rule whose line contains `mark`.
    fn drops(&self, lab: &Lab, mark: &str) -> anyhow::Result<u64> {
        let out = lab.sh(
            &self.nat_ns,
            &["iptables", "-L", "FORWARD", "-v", "-n", "-x"],
        )?;
        // The rule's line: packets first.
        Ok(out
            .lines()
            .find(|l| l.contains("DROP") && l.contains(mark))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}
