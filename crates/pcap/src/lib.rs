//! Capture files: reading recorded traffic for offline replay and recording live traffic.
//!
//! [`PcapSource`] reads a classic pcap file (microsecond or nanosecond timestamps, either byte
//! order) or a pcapng file and hands out the IP packets in it, link-layer header removed, for
//! `tcpcopy -i FILE`. [`PcapNgRecorder`] writes the IP packets live tcpcopy captured as a pcapng
//! file (`tcpcopy --record FILE`) that `PcapSource`, tcpdump and Wireshark read back.
//!
//! The file is untrusted input: every length in it is checked before a slice is made, a record or
//! block may not claim more than [`MAX_RECORD`] bytes, and damage ends the walk with one
//! [`PcapFileError`] instead of a panic. Frames that carry no IPv4 or IPv6 packet (ARP, LLDP, ...)
//! are skipped and counted.
//!
//! The `pcap-file` crate parses the classic pcap header and records and writes the pcapng file.
//! The pcapng reading is done here, because `pcap-file` 2 reads every pcapng timestamp as
//! nanoseconds whatever the interface's `if_tsresol` says (the default is microseconds), and
//! rejects valid interface blocks (an `if_tzone` option, a name that is not UTF-8). Its classic
//! pcap packet check is not used either: it rejects every packet whose wire length exceeds the
//! snapshot length, which is every packet of a capture taken with a small `-s`.

#![forbid(unsafe_code)]

mod classic;
mod input;
mod link;
mod pcapng;
mod record;
mod source;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use record::PcapNgRecorder;
pub use source::PcapSource;

/// Largest record (classic pcap) or block (pcapng) accepted, in bytes. Real packets are at most a
/// few hundred KiB even with GRO; a larger length field is damage, not a packet.
pub const MAX_RECORD: usize = 16 << 20;

/// A packet from a capture file and when it was captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time, since the Unix epoch.
    pub timestamp: Duration,
    /// The IP packet, IP header first (IPv4 or IPv6). Bytes after the length the IP header
    /// declares (Ethernet padding, a frame check sequence) are cut off; a packet cut short by the
    /// capture's snapshot length stays short.
    pub data: &'a [u8],
    /// Length of the IP packet on the wire (at least `data.len()`).
    pub orig_len: u32,
}

/// Counters of a [`PcapSource`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceStats {
    /// IP packets returned.
    pub packets: u64,
    /// Frames skipped because they carry no IPv4 or IPv6 packet.
    pub skipped: u64,
    /// File offset reached: the end of the last header, record or block read.
    pub bytes_read: u64,
    /// Size of the file when it was opened.
    pub file_len: u64,
}

/// Why a capture file cannot be read (further). Each message is one line that names the file.
#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    /// Empty file, or it does not start like a pcap or pcapng file.
    #[error("{}: not a pcap or pcapng file", .path.display())]
    NotPcap {
        /// The file.
        path: PathBuf,
    },
    /// The capture's link layer is not one this reader strips (for pcapng: the link type of the
    /// interface a packet was captured on).
    #[error(
        "{}: link type {link_type} is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)",
        .path.display()
    )]
    UnsupportedLinkType {
        /// The file.
        path: PathBuf,
        /// The `LINKTYPE_*` number.
        link_type: u32,
    },
    /// The file ends inside a header, record or block.
    #[error("{}: truncated after {packets} packets", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// IP packets returned before the damage.
        packets: u64,
    },
    /// Anything else the file should not contain.
    #[error("{}: damaged after {packets} packets: {detail}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// IP packets returned before the damage.
        packets: u64,
        /// What is wrong, in a few words.
        detail: String,
    },
    /// Opening or reading the file failed. The error is part of the message and deliberately not
    /// a `source()`, so a report that prints the error chain does not print it twice.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
}

#[cfg(test)]
mod tests;
