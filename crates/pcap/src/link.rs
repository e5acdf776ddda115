//! Link layers: where the IP packet is inside a frame (Ethernet with VLAN tags, Linux cooked
//! capture, raw IP, ...) and the length its IP header declares. Frames without IPv4 or IPv6 are
//! `None`, to be skipped and counted by the caller.

use std::ops::Range;

use crate::input::read_u16;

/// Link layers a frame's IP packet can be found behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkType {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// Raw IP, version from the first nibble.
    Raw,
    Ipv4,
    Ipv6,
}

impl LinkType {
    pub(crate) fn from_code(code: u32) -> Option<LinkType> {
        Some(match code {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            12 | 14 | 101 => LinkType::Raw,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            _ => return None,
        })
    }
}

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad and the pre-standard QinQ tag.
pub(crate) const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Where the IP packet is in `frame` and its wire length; `None` if the frame carries none.
pub(crate) fn ip_packet(
    link: LinkType,
    frame: &[u8],
    frame_orig_len: u32,
) -> Option<(Range<usize>, u32)> {
    let start = match link {
        LinkType::Ethernet => after_ethertype(frame, 12, 14)?,
        LinkType::LinuxSll => after_ethertype(frame, 14, 16)?,
        LinkType::LinuxSll2 => after_ethertype(frame, 0, 20)?,
        LinkType::Raw => 0,
        LinkType::Ipv4 => version_is(frame, 0, 4)?,
        LinkType::Ipv6 => version_is(frame, 0, 6)?,
    };
    let packet = frame.get(start..).filter(|packet| !packet.is_empty())?;
    if !matches!(packet.first().map(|byte| byte >> 4), Some(4 | 6)) {
        return None;
    }
    let captured = packet.len();
    let wire = usize::try_from(frame_orig_len)
        .unwrap_or(usize::MAX)
        .saturating_sub(start);
    let wire = wire.max(captured);
    let (len, wire) = match declared_len(packet) {
        Some(declared) if declared < captured => (declared, declared),
        Some(declared) if declared <= wire => (captured, declared),
        _ => (captured, wire),
    };
    Some((start..start + len, u32::try_from(wire).unwrap_or(u32::MAX)))
}

/// Offset of the IP packet behind the ethertype at `type_at` (VLAN tags skipped), if the
/// ethertype is IPv4 or IPv6 and the packet's version matches it.
pub(crate) fn after_ethertype(frame: &[u8], type_at: usize, payload_at: usize) -> Option<usize> {
    let mut ethertype = read_u16(frame, type_at, true)?;
    let mut start = payload_at;
    while ETHERTYPE_VLAN.contains(&ethertype) {
        ethertype = read_u16(frame, start + 2, true)?;
        start += 4;
    }
    match ethertype {
        ETHERTYPE_IPV4 => version_is(frame, start, 4),
        ETHERTYPE_IPV6 => version_is(frame, start, 6),
        _ => None,
    }
}

pub(crate) fn version_is(frame: &[u8], start: usize, version: u8) -> Option<usize> {
    (frame.get(start)? >> 4 == version).then_some(start)
}

/// The length the IP header declares for its packet, if the header is complete and the length
/// plausible (IPv4 total length 0 under segmentation offload, IPv6 jumbograms: `None`).
pub(crate) fn declared_len(packet: &[u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            Some(usize::from(read_u16(packet, 2, true)?)).filter(|&len| len >= 20)
        }
        6 if packet.len() >= 40 => Some(usize::from(read_u16(packet, 4, true)?))
            .filter(|&len| len > 0)
            .map(|len| len + 40),
        _ => None,
    }
}
