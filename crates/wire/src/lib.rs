//! Zero-copy packet views for IPv4, IPv6 and TCP, Internet checksums, and TCP sequence arithmetic.
//!
//! The contract of [`TcpPacket::parse`]: it checks every length once, after which no accessor can
//! panic, whatever bytes the network produced. [`SegmentRepr::emit`] builds a whole IP+TCP packet with
//! correct lengths and checksums. [`tunnel`] unwraps mirrored traffic (VXLAN, Geneve, ERSPAN).
//! This crate owns packet layout only: it keeps no state and does no I/O.
#![forbid(unsafe_code)]

mod checksum;
mod packet;
mod seq;
pub mod tunnel;

pub use checksum::{internet_checksum, tcp_checksum};
pub use packet::{
    Flags, SegmentRepr, TcpPacket, WireError, IPV4_HEADER_LEN, IPV6_HEADER_LEN, TCP_HEADER_LEN,
};
pub use seq::Seq;
