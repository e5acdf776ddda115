//! Mirrored traffic: the encapsulations that deliver a copy of production's packets to a
//! collector host. AWS VPC Traffic Mirroring and Azure's virtual network TAP send VXLAN (UDP
//! 4789), newer GCP mirroring Geneve (UDP 6081), switches ERSPAN inside GRE (types I, II and
//! III). Each function takes what a socket of the matching kind receives (a UDP payload, or a
//! GRE packet after its outer IP header) and returns the mirrored IP packet inside, with the
//! tunnel's identifier (VNI or ERSPAN session) for filtering. Nothing here allocates or copies.
//!
//! The inner frames are Ethernet, with up to two VLAN tags; anything but IPv4 or IPv6 inside is
//! [`TunnelError::NotIp`], a counted drop for the caller.
//!
//! The `encap_*` functions build the same encapsulations around an IP packet, as a mirror
//! session would send them (for a lab's user-space mirror and for tests): pure, into a buffer
//! the caller reuses.

/// Why a tunnel packet yields no mirrored IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelError {
    /// Shorter than its headers say.
    Truncated,
    /// Not this encapsulation (flags, version or protocol type say otherwise).
    NotTunnel,
    /// The mirrored frame carries something else than IPv4 or IPv6 (ARP, say): its ethertype.
    NotIp(u16),
}

impl std::fmt::Display for TunnelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TunnelError::Truncated => f.write_str("truncated tunnel packet"),
            TunnelError::NotTunnel => f.write_str("not a packet of this encapsulation"),
            TunnelError::NotIp(t) => write!(f, "mirrored frame of ethertype {t:#06x}, not IP"),
        }
    }
}

impl std::error::Error for TunnelError {}

/// A mirrored IP packet and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mirrored<'a> {
    /// VXLAN or Geneve VNI, or ERSPAN session ID (type I has none: 0).
    pub id: u32,
    /// The mirrored packet, IP header first.
    pub packet: &'a [u8],
}

/// The IANA ports of the UDP encapsulations.
pub const VXLAN_PORT: u16 = 4789;
pub const GENEVE_PORT: u16 = 6081;
/// IP protocol number of GRE.
pub const GRE_PROTOCOL: u8 = 47;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Transparent Ethernet bridging: an Ethernet frame follows.
const ETHERTYPE_TEB: u16 = 0x6558;
const ERSPAN_II: u16 = 0x88be;
const ERSPAN_III: u16 = 0x22eb;

fn be16(b: &[u8], at: usize) -> Result<u16, TunnelError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(TunnelError::Truncated)
}

fn tail(b: &[u8], at: usize) -> Result<&[u8], TunnelError> {
    b.get(at..).ok_or(TunnelError::Truncated)
}

/// The IP packet of an Ethernet frame, past up to two VLAN tags.
pub fn ethernet_payload(frame: &[u8]) -> Result<&[u8], TunnelError> {
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    for _ in 0..2 {
        if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
            break;
        }
        at += 4;
        ethertype = be16(frame, at)?;
    }
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => tail(frame, at + 2),
        other => Err(TunnelError::NotIp(other)),
    }
}

/// VXLAN (RFC 7348), from the UDP payload: 8 bytes, the I flag set, then an Ethernet frame.
pub fn vxlan(payload: &[u8]) -> Result<Mirrored<'_>, TunnelError> {
    let header = payload.get(..8).ok_or(TunnelError::Truncated)?;
    if header[0] & 0x08 == 0 {
        return Err(TunnelError::NotTunnel);
    }
    let id = u32::from_be_bytes([0, header[4], header[5], header[6]]);
    Ok(Mirrored {
        id,
        packet: ethernet_payload(&payload[8..])?,
    })
}

/// Geneve (RFC 8926), from the UDP payload: version 0, 8 bytes plus options, then an Ethernet
/// frame (or, by its protocol type, an IP packet directly).
pub fn geneve(payload: &[u8]) -> Result<Mirrored<'_>, TunnelError> {
    let header = payload.get(..8).ok_or(TunnelError::Truncated)?;
    if header[0] >> 6 != 0 {
        return Err(TunnelError::NotTunnel);
    }
    let len = 8 + usize::from(header[0] & 0x3f) * 4;
    let inner = tail(payload, len)?;
    let id = u32::from_be_bytes([0, header[4], header[5], header[6]]);
    let packet = match be16(header, 2)? {
        ETHERTYPE_TEB => ethernet_payload(inner)?,
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => inner,
        other => return Err(TunnelError::NotIp(other)),
    };
    Ok(Mirrored { id, packet })
}

/// ERSPAN inside GRE (RFC 2784/2890), from the GRE header on: type I (protocol 0x88BE without a
/// sequence number: the frame follows GRE at once), type II (0x88BE with one: an 8-byte ERSPAN
/// header) and type III (0x22EB: 12 bytes, 20 with its platform subheader).
pub fn erspan(gre: &[u8]) -> Result<Mirrored<'_>, TunnelError> {
    let flags = be16(gre, 0)?;
    if flags & 0x0007 != 0 {
        // GRE version 0 only (1 is PPTP's).
        return Err(TunnelError::NotTunnel);
    }
    let (checksum, key, sequence) = (
        flags & 0x8000 != 0,
        flags & 0x2000 != 0,
        flags & 0x1000 != 0,
    );
    let len = 4 + 4 * (usize::from(checksum) + usize::from(key) + usize::from(sequence));
    let body = tail(gre, len)?;
    let session = |b: &[u8]| -> Result<u32, TunnelError> { Ok(u32::from(be16(b, 2)? & 0x03ff)) };
    match be16(gre, 2)? {
        ERSPAN_II if !sequence => Ok(Mirrored {
            id: 0,
            packet: ethernet_payload(body)?,
        }),
        ERSPAN_II => {
            if body.len() < 8 || body[0] >> 4 != 1 {
                return Err(TunnelError::NotTunnel);
            }
            Ok(Mirrored {
                id: session(body)?,
                packet: ethernet_payload(&body[8..])?,
            })
        }
        ERSPAN_III => {
            if body.len() < 12 || body[0] >> 4 != 2 {
                return Err(TunnelError::NotTunnel);
            }
            // The O flag (last bit of the header) announces an 8-byte platform subheader.
            let len = if body[11] & 0x01 != 0 { 20 } else { 12 };
            Ok(Mirrored {
                id: session(body)?,
                packet: ethernet_payload(tail(body, len)?)?,
            })
        }
        _ => Err(TunnelError::NotTunnel),
    }
}

/// MAC addresses of the Ethernet frames the builders wrap: locally administered, fixed.
const ENCAP_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ENCAP_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Appends an Ethernet header for `ip` (IPv4 or IPv6, by its version nibble) and `ip` itself.
fn push_frame(ip: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&ENCAP_DST_MAC);
    out.extend_from_slice(&ENCAP_SRC_MAC);
    let ethertype = match ip.first().map(|b| b >> 4) {
        Some(6) => ETHERTYPE_IPV6,
        _ => ETHERTYPE_IPV4,
    };
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(ip);
}

/// The 24-bit VNI field and its reserved byte.
fn vni_bytes(vni: u32) -> [u8; 4] {
    let b = (vni & 0x00ff_ffff).to_be_bytes();
    [b[1], b[2], b[3], 0]
}

/// A VXLAN UDP payload carrying `ip` in an Ethernet frame, VNI `vni` (24 bits), into `out`
/// (cleared first): what [`vxlan`] reads.
pub fn encap_vxlan(vni: u32, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0x08, 0, 0, 0]);
    out.extend_from_slice(&vni_bytes(vni));
    push_frame(ip, out);
}

/// A Geneve UDP payload (version 0, no options, transparent Ethernet bridging) carrying `ip` in
/// an Ethernet frame, VNI `vni`, into `out` (cleared first): what [`geneve`] reads.
pub fn encap_geneve(vni: u32, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&ETHERTYPE_TEB.to_be_bytes());
    out.extend_from_slice(&vni_bytes(vni));
    push_frame(ip, out);
}

/// A GRE header with a sequence number (RFC 2890), protocol `proto`.
fn push_gre(proto: u16, seq: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&0x1000u16.to_be_bytes());
    out.extend_from_slice(&proto.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// An ERSPAN type II packet from the GRE header on (GRE 0x88BE with sequence number `seq`;
/// version 1, session `session`, 10 bits), carrying `ip` in an Ethernet frame, into `out`
/// (cleared first): what [`erspan`] reads after the outer IP header.
pub fn encap_erspan_ii(session: u16, seq: u32, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    push_gre(ERSPAN_II, seq, out);
    // Version 1, VLAN 0; COS 0, encapsulation type 0, truncation 0, session; index 0.
    out.extend_from_slice(&0x1000u16.to_be_bytes());
    out.extend_from_slice(&(session & 0x03ff).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    push_frame(ip, out);
}

/// An ERSPAN type III packet from the GRE header on (GRE 0x22EB with sequence number `seq`;
/// version 2, session `session`, the 32-bit `timestamp`, no platform subheader), carrying `ip`
/// in an Ethernet frame, into `out` (cleared first): what [`erspan`] reads.
pub fn encap_erspan_iii(session: u16, seq: u32, timestamp: u32, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    push_gre(ERSPAN_III, seq, out);
    out.extend_from_slice(&0x2000u16.to_be_bytes());
    out.extend_from_slice(&(session & 0x03ff).to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    // Security group tag 0; P, FT, HW ID, D, Gra 0; O clear: no subheader follows.
    out.extend_from_slice(&[0; 4]);
    push_frame(ip, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame (with `tags` VLAN tags) around `ip`.
    fn frame(tags: usize, ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02; 12];
        for i in 0..tags {
            let tpid = if i == 0 && tags == 2 {
                ETHERTYPE_QINQ
            } else {
                ETHERTYPE_VLAN
            };
            f.extend(tpid.to_be_bytes());
            f.extend(100u16.to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        f.extend(ip);
        f
    }

    const IP: &[u8] = &[0x45, 0, 0, 20, 1, 2, 3, 4];

    #[test]
    fn ethernet_with_and_without_vlan_tags() {
        for tags in 0..=2 {
            assert_eq!(ethernet_payload(&frame(tags, ETHERTYPE_IPV4, IP)), Ok(IP));
        }
        assert_eq!(
            ethernet_payload(&frame(0, 0x0806, IP)),
            Err(TunnelError::NotIp(0x0806))
        );
        assert_eq!(ethernet_payload(&[0; 13]), Err(TunnelError::Truncated));
    }

    #[test]
    fn vxlan_gives_the_vni_and_the_inner_packet() {
        let mut p = vec![0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0];
        p.extend(frame(1, ETHERTYPE_IPV6, IP));
        assert_eq!(
            vxlan(&p),
            Ok(Mirrored {
                id: 0x123456,
                packet: IP
            })
        );
        p[0] = 0;
        assert_eq!(vxlan(&p), Err(TunnelError::NotTunnel), "no I flag");
        assert_eq!(vxlan(&p[..7]), Err(TunnelError::Truncated));
    }

    #[test]
    fn geneve_skips_its_options_and_takes_ethernet_or_ip() {
        // Two 4-byte option words.
        let mut p = vec![0x02, 0, 0x65, 0x58, 0, 0, 7, 0];
        p.extend([0xaa; 8]);
        p.extend(frame(0, ETHERTYPE_IPV4, IP));
        assert_eq!(geneve(&p), Ok(Mirrored { id: 7, packet: IP }));
        let mut direct = vec![0, 0, 0x08, 0x00, 0, 0, 9, 0];
        direct.extend(IP);
        assert_eq!(geneve(&direct), Ok(Mirrored { id: 9, packet: IP }));
        direct[0] = 0x40;
        assert_eq!(geneve(&direct), Err(TunnelError::NotTunnel), "version 1");
        assert_eq!(geneve(&p[..12]), Err(TunnelError::Truncated));
    }

    #[test]
    fn erspan_types_one_two_and_three() {
        let inner = frame(0, ETHERTYPE_IPV4, IP);
        // Type I: GRE without a sequence number, the frame at once.
        let mut one = vec![0x00, 0x00, 0x88, 0xbe];
        one.extend(&inner);
        assert_eq!(erspan(&one), Ok(Mirrored { id: 0, packet: IP }));
        // Type II: sequence number, then version 1 and session 0x155.
        let mut two = vec![0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 1];
        two.extend([0x10, 0x00, 0x01, 0x55, 0, 0, 0, 0]);
        two.extend(&inner);
        assert_eq!(
            erspan(&two),
            Ok(Mirrored {
                id: 0x155,
                packet: IP
            })
        );
        // Type III with the platform subheader (O flag).
        let mut three = vec![0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 1];
        three.extend([0x20, 0x00, 0x00, 0x2a, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        three.extend([0; 8]);
        three.extend(&inner);
        assert_eq!(erspan(&three), Ok(Mirrored { id: 42, packet: IP }));
        // Other GRE payloads and versions are not ERSPAN.
        assert_eq!(
            erspan(&[0, 0, 0x08, 0x00, 0x45]),
            Err(TunnelError::NotTunnel)
        );
        assert_eq!(erspan(&[0, 1, 0x88, 0xbe]), Err(TunnelError::NotTunnel));
        assert_eq!(erspan(&two[..12]), Err(TunnelError::NotTunnel));
    }

    #[test]
    fn every_prefix_of_a_valid_packet_is_an_error_not_a_panic() {
        let mut p = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        p.extend(frame(2, ETHERTYPE_IPV4, IP));
        for n in 0..p.len() {
            let _ = vxlan(&p[..n]);
            let _ = geneve(&p[..n]);
            let _ = erspan(&p[..n]);
        }
    }

    #[test]
    fn what_the_builders_wrap_the_decapsulators_unwrap() {
        let v6 = [0x60, 0, 0, 0, 0, 0, 6, 64];
        let mut out = Vec::new();
        for ip in [IP, &v6[..]] {
            encap_vxlan(0x12_3456, ip, &mut out);
            assert_eq!(
                vxlan(&out),
                Ok(Mirrored {
                    id: 0x12_3456,
                    packet: ip
                })
            );
            encap_geneve(77, ip, &mut out);
            assert_eq!(geneve(&out), Ok(Mirrored { id: 77, packet: ip }));
            encap_erspan_ii(0x155, 9, ip, &mut out);
            assert_eq!(
                erspan(&out),
                Ok(Mirrored {
                    id: 0x155,
                    packet: ip
                })
            );
            encap_erspan_iii(42, 10, 123_456, ip, &mut out);
            assert_eq!(erspan(&out), Ok(Mirrored { id: 42, packet: ip }));
        }
        // The identifiers keep to their field widths.
        encap_vxlan(0x0100_0001, IP, &mut out);
        assert_eq!(vxlan(&out).unwrap().id, 1);
        encap_erspan_ii(0x0401, 0, IP, &mut out);
        assert_eq!(erspan(&out).unwrap().id, 1);
    }
}
