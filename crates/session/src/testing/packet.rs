//! The one packet builder of the tests, benches and examples: whole IPv4/IPv6 TCP segments as
//! bytes, IP header first, as a capture or an intercept hands them to the replicator.

use std::net::SocketAddr;

use wire::{Flags, SegmentRepr, Seq};

/// How segments are built: the window, and the options a SYN carries. The default is a plain
/// Linux-like peer: window 65535, MSS 1460 on SYNs, no window scaling, TTL 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketBuilder {
    pub window: u16,
    /// MSS option, on SYN segments only.
    pub mss: u16,
    /// Window scale option, on SYN segments only.
    pub window_scale: Option<u8>,
    pub ttl: u8,
}

impl Default for PacketBuilder {
    fn default() -> Self {
        PacketBuilder {
            window: 65535,
            mss: 1460,
            window_scale: None,
            ttl: 64,
        }
    }
}

impl PacketBuilder {
    /// A whole segment from `src` to `dst` carrying `payload`.
    pub fn segment(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: Flags,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit(src, dst, seq, ack, flags, payload, &mut out);
        out
    }

    /// Appends a whole segment to `out`, for a generator that reuses one buffer per packet.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: Flags,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        SegmentRepr {
            src,
            dst,
            seq: Seq(seq),
            ack: Seq(ack),
            flags,
            window: self.window,
            mss: flags.syn().then_some(self.mss),
            window_scale: self.window_scale.filter(|_| flags.syn()),
            ttl: self.ttl,
        }
        .emit(payload, out);
    }

    /// A segment with `len` payload bytes as an intercept reports it: its headers only (the IP
    /// length still counts the payload).
    pub fn headers_only(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: Flags,
        len: usize,
    ) -> Vec<u8> {
        let mut p = self.segment(src, dst, seq, ack, flags, &vec![b'x'; len]);
        p.truncate(p.len() - len);
        p
    }
}

/// A whole segment from `src` to `dst` carrying `payload`, with [`PacketBuilder::default`].
pub fn segment(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &[u8],
) -> Vec<u8> {
    PacketBuilder::default().segment(src, dst, seq, ack, flags, payload)
}
