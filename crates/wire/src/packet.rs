//! IP + TCP packet view ([`TcpPacket`]) and builder ([`SegmentRepr`]).
//!
//! Field offsets live here and nowhere else. A packet may be *truncated* (a capture snap length or an
//! intercept that forwards headers only): the IP length fields still tell how much payload the packet
//! carried on the wire, [`TcpPacket::payload_len`], while [`TcpPacket::payload`] is what is present.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::checksum::{internet_checksum, tcp_checksum};
use crate::seq::Seq;

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const TCP_HEADER_LEN: usize = 20;
const PROTO_TCP: u8 = 6;

/// Why a buffer is not a TCP packet we can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("buffer shorter than the headers it announces")]
    Truncated,
    #[error("IP version {0} is neither 4 nor 6")]
    BadVersion(u8),
    #[error("IP protocol {0} is not TCP")]
    NotTcp(u8),
    #[error("IPv4 fragment")]
    Fragment,
    #[error("header length field out of range")]
    BadHeaderLen,
}

/// TCP header flags.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: Flags = Flags(0x01);
    pub const SYN: Flags = Flags(0x02);
    pub const RST: Flags = Flags(0x04);
    pub const PSH: Flags = Flags(0x08);
    pub const ACK: Flags = Flags(0x10);

    #[inline]
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    #[inline]
    pub fn fin(self) -> bool {
        self.contains(Flags::FIN)
    }
    #[inline]
    pub fn syn(self) -> bool {
        self.contains(Flags::SYN)
    }
    #[inline]
    pub fn psh(self) -> bool {
        self.contains(Flags::PSH)
    }
    #[inline]
    pub fn rst(self) -> bool {
        self.contains(Flags::RST)
    }
    #[inline]
    pub fn ack(self) -> bool {
        self.contains(Flags::ACK)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    #[inline]
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (0x02, 'S'),
            (0x10, '.'),
            (0x08, 'P'),
            (0x01, 'F'),
            (0x04, 'R'),
        ];
        for (bit, c) in names {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A checked view of an IPv4 or IPv6 packet carrying TCP. Construct with [`TcpPacket::parse`]; every
/// accessor is infallible afterwards.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket<'a> {
    buf: &'a [u8],
    ip_len: usize,
    tcp_len: usize,
    /// Payload bytes the packet carried on the wire (from the IP length fields).
    wire_payload: usize,
}

impl<'a> TcpPacket<'a> {
    /// Checks the IP and TCP headers of `buf` (IP header first). IPv6 extension headers are not
    /// followed: such packets are reported as [`WireError::NotTcp`].
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let first = *buf.first().ok_or(WireError::Truncated)?;
        let (ip_len, total_from_ip) = match first >> 4 {
            4 => {
                if buf.len() < IPV4_HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                let ihl = usize::from(first & 0x0f) * 4;
                if ihl < IPV4_HEADER_LEN {
                    return Err(WireError::BadHeaderLen);
                }
                if buf[9] != PROTO_TCP {
                    return Err(WireError::NotTcp(buf[9]));
                }
                let frag = u16::from_be_bytes([buf[6], buf[7]]);
                if frag & 0x3fff != 0 {
                    return Err(WireError::Fragment);
                }
                let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                (ihl, total)
            }
            6 => {
                if buf.len() < IPV6_HEADER_LEN {
                    return Err(WireError::Truncated);
                }
                if buf[6] != PROTO_TCP {
                    return Err(WireError::NotTcp(buf[6]));
                }
                let payload = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                (IPV6_HEADER_LEN, IPV6_HEADER_LEN + payload)
            }
            v => return Err(WireError::BadVersion(v)),
        };
        if buf.len() < ip_len + TCP_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let tcp_len = usize::from(buf[ip_len + 12] >> 4) * 4;
        if tcp_len < TCP_HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if buf.len() < ip_len + tcp_len {
            return Err(WireError::Truncated);
        }
        // A zero IP length happens with segmentation offload (and jumbograms): trust the buffer.
        let total = if total_from_ip == 0 || total_from_ip == ip_len {
            buf.len()
        } else {
            total_from_ip
        };
        if total < ip_len + tcp_len {
            return Err(WireError::BadHeaderLen);
        }
        Ok(TcpPacket {
            buf,
            ip_len,
            tcp_len,
            wire_payload: total - ip_len - tcp_len,
        })
    }

    #[inline]
    fn tcp(&self) -> &'a [u8] {
        &self.buf[self.ip_len..self.ip_len + self.tcp_len]
    }

    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.buf[0] >> 4 == 6
    }

    #[inline]
    pub fn src_addr(&self) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&self.buf[8..24]).unwrap_or_default(),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                self.buf[12],
                self.buf[13],
                self.buf[14],
                self.buf[15],
            ))
        }
    }

    #[inline]
    pub fn dst_addr(&self) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(&self.buf[24..40]).unwrap_or_default(),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                self.buf[16],
                self.buf[17],
                self.buf[18],
                self.buf[19],
            ))
        }
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.tcp()[0], self.tcp()[1]])
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.tcp()[2], self.tcp()[3]])
    }
    #[inline]
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(self.src_addr(), self.src_port())
    }
    #[inline]
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(self.dst_addr(), self.dst_port())
    }
    #[inline]
    pub fn seq(&self) -> Seq {
        let t = self.tcp();
        Seq(u32::from_be_bytes([t[4], t[5], t[6], t[7]]))
    }
    #[inline]
    pub fn ack(&self) -> Seq {
        let t = self.tcp();
        Seq(u32::from_be_bytes([t[8], t[9], t[10], t[11]]))
    }
    #[inline]
    pub fn flags(&self) -> Flags {
        Flags(self.tcp()[13] & 0x3f)
    }
    #[inline]
    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.tcp()[14], self.tcp()[15]])
    }

    /// Payload bytes carried on the wire, which may exceed [`Self::payload`] for a truncated packet.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.wire_payload
    }

    /// Payload bytes present in the buffer (at most [`Self::payload_len`]).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let start = self.ip_len + self.tcp_len;
        let end = (start + self.wire_payload).min(self.buf.len());
        &self.buf[start..end]
    }

    /// Sequence space the segment occupies: payload plus one for SYN and for FIN.
    #[inline]
    pub fn seq_len(&self) -> u32 {
        let f = self.flags();
        self.wire_payload as u32 + u32::from(f.syn()) + u32::from(f.fin())
    }

    /// IP and TCP headers, without payload: what an intercept forwards by default.
    #[inline]
    pub fn headers(&self) -> &'a [u8] {
        &self.buf[..self.ip_len + self.tcp_len]
    }

    /// The MSS option, if present.
    pub fn mss(&self) -> Option<u16> {
        self.options().find_map(|(kind, data)| match (kind, data) {
            (2, [a, b]) => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        })
    }

    /// The window-scale option, if present.
    pub fn window_scale(&self) -> Option<u8> {
        self.options().find_map(|(kind, data)| match (kind, data) {
            (3, [s]) => Some(*s),
            _ => None,
        })
    }

    /// TCP options as `(kind, data)`; stops quietly at a malformed option.
    pub fn options(&self) -> impl Iterator<Item = (u8, &'a [u8])> {
        let mut opts = &self.tcp()[TCP_HEADER_LEN..];
        std::iter::from_fn(move || loop {
            let (&kind, rest) = opts.split_first()?;
            match kind {
                0 => return None,
                1 => opts = rest,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if len < 2 || len > opts.len() {
                        return None;
                    }
                    let data = &opts[2..len];
                    opts = &opts[len..];
                    return Some((kind, data));
                }
            }
        })
    }
}

/// Everything needed to build one IP+TCP packet. IPv4 or IPv6 follows from the addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRepr {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: Seq,
    pub ack: Seq,
    pub flags: Flags,
    pub window: u16,
    /// MSS option to announce (on SYN segments).
    pub mss: Option<u16>,
    /// Window-scale shift to announce (on SYN segments, RFC 7323).
    pub window_scale: Option<u8>,
    pub ttl: u8,
}

impl SegmentRepr {
    /// Appends the whole packet (IP header, TCP header with options, `payload`) to `out`, with lengths
    /// and checksums filled in. Mixed address families are a caller bug: the source family wins.
    pub fn emit(&self, payload: &[u8], out: &mut Vec<u8>) {
        let opt_len =
            4 * (usize::from(self.mss.is_some()) + usize::from(self.window_scale.is_some()));
        let tcp_len = TCP_HEADER_LEN + opt_len;
        let start = out.len();
        let v6 = self.src.is_ipv6();
        let ip_len = if v6 { IPV6_HEADER_LEN } else { IPV4_HEADER_LEN };
        let total = ip_len + tcp_len + payload.len();
        out.resize(start + ip_len + tcp_len, 0);
        out.extend_from_slice(payload);
        let pkt = &mut out[start..];
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pkt[0] = 0x45;
                pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                pkt[6] = 0x40; // don't fragment
                pkt[8] = self.ttl;
                pkt[9] = PROTO_TCP;
                pkt[12..16].copy_from_slice(&s.octets());
                pkt[16..20].copy_from_slice(&d.octets());
                let c = internet_checksum(&pkt[..IPV4_HEADER_LEN]);
                pkt[10..12].copy_from_slice(&c.to_be_bytes());
            }
            (s, d) => {
                pkt[0] = 0x60;
                pkt[4..6].copy_from_slice(&((tcp_len + payload.len()) as u16).to_be_bytes());
                pkt[6] = PROTO_TCP;
                pkt[7] = self.ttl;
                pkt[8..24].copy_from_slice(&v6_octets(s));
                pkt[24..40].copy_from_slice(&v6_octets(d));
            }
        }
        let tcp = &mut pkt[ip_len..];
        tcp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.0.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.0.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = self.flags.0;
        tcp[14..16].copy_from_slice(&self.window.to_be_bytes());
        let mut opt = TCP_HEADER_LEN;
        if let Some(mss) = self.mss {
            tcp[opt..opt + 2].copy_from_slice(&[2, 4]);
            tcp[opt + 2..opt + 4].copy_from_slice(&mss.to_be_bytes());
            opt += 4;
        }
        if let Some(shift) = self.window_scale {
            // NOP, then kind 3 length 3: keeps the header a multiple of four bytes.
            tcp[opt..opt + 4].copy_from_slice(&[1, 3, 3, shift]);
        }
        let c = tcp_checksum(self.src.ip(), self.dst.ip(), tcp);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
    }
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(src: &str, dst: &str) -> SegmentRepr {
        SegmentRepr {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: Seq(1000),
            ack: Seq(u32::MAX),
            flags: Flags::SYN | Flags::ACK,
            window: 65535,
            mss: Some(1460),
            window_scale: Some(7),
            ttl: 64,
        }
    }

    #[test]
    fn emit_then_parse_v4() {
        let r = repr("198.19.0.7:40000", "198.18.0.30:80");
        let mut buf = Vec::new();
        r.emit(b"hello", &mut buf);
        let p = TcpPacket::parse(&buf).unwrap();
        assert_eq!(p.src(), r.src);
        assert_eq!(p.dst(), r.dst);
        assert_eq!(p.seq(), Seq(1000));
        assert_eq!(p.ack(), Seq(u32::MAX));
        assert_eq!(p.flags(), Flags::SYN | Flags::ACK);
        assert_eq!(p.mss(), Some(1460));
        assert_eq!(p.window_scale(), Some(7));
        assert_eq!(p.payload(), b"hello");
        assert_eq!(p.seq_len(), 6);
        assert_eq!(
            internet_checksum(&buf[..20]),
            0,
            "IPv4 header checksum verifies"
        );
        let tcp = &buf[20..];
        assert_eq!(
            tcp_checksum(p.src_addr(), p.dst_addr(), tcp),
            0,
            "TCP checksum verifies"
        );
    }

    #[test]
    fn emit_then_parse_v6() {
        let r = repr("[2001:2::10]:40000", "[2001:2::30]:80");
        let mut buf = Vec::new();
        r.emit(b"x", &mut buf);
        let p = TcpPacket::parse(&buf).unwrap();
        assert!(p.is_ipv6());
        assert_eq!(p.src(), r.src);
        assert_eq!(p.dst(), r.dst);
        assert_eq!(p.payload(), b"x");
        assert_eq!(tcp_checksum(p.src_addr(), p.dst_addr(), &buf[40..]), 0);
    }

    #[test]
    fn headers_only_packet_keeps_wire_payload_len() {
        let r = repr("198.19.0.7:40000", "198.18.0.30:80");
        let mut buf = Vec::new();
        r.emit(&[7u8; 1000], &mut buf);
        let p = TcpPacket::parse(&buf).unwrap();
        let short = p.headers().to_vec();
        let q = TcpPacket::parse(&short).unwrap();
        assert_eq!(q.payload_len(), 1000);
        assert!(q.payload().is_empty());
    }

    #[test]
    fn rejects_garbage_with_the_exact_reason() {
        assert_eq!(TcpPacket::parse(&[]).unwrap_err(), WireError::Truncated);
        assert_eq!(
            TcpPacket::parse(&[0x55; 40]).unwrap_err(),
            WireError::BadVersion(5)
        );
        let mut udp = vec![0u8; 40];
        udp[0] = 0x45;
        udp[9] = 17;
        assert_eq!(TcpPacket::parse(&udp).unwrap_err(), WireError::NotTcp(17));
        let mut frag = vec![0u8; 40];
        frag[0] = 0x45;
        frag[9] = 6;
        frag[6] = 0x20; // more fragments
        assert_eq!(TcpPacket::parse(&frag).unwrap_err(), WireError::Fragment);
        let mut tiny_ihl = vec![0u8; 40];
        tiny_ihl[0] = 0x41;
        assert_eq!(
            TcpPacket::parse(&tiny_ihl).unwrap_err(),
            WireError::BadHeaderLen
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(p) = TcpPacket::parse(&buf) {
                let _ = (p.src(), p.dst(), p.seq(), p.ack(), p.flags(), p.window(), p.payload(),
                         p.mss(), p.window_scale(), p.headers(), p.seq_len());
                let _ = p.options().count();
            }
        }
    }
}
