//! [`PcapNgRecorder`]: writes the IP packets live tcpcopy captured as a pcapng file that
//! `PcapSource`, tcpdump and Wireshark read back. Writing only; it must not parse.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use crate::MAX_RECORD;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, PcapError};

/// Writes captured IP packets as a pcapng file: one section, one interface of link type raw IP
/// (101) with nanosecond timestamps (`if_tsresol` = 9).
pub struct PcapNgRecorder {
    pub(crate) writer: PcapNgWriter<BufWriter<File>>,
}

impl PcapNgRecorder {
    /// Creates (or truncates) the file and writes the section and interface headers. Writes are
    /// buffered: call [`finish`](Self::finish) to see the error of the last ones.
    pub fn create(path: &Path) -> io::Result<PcapNgRecorder> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let section = SectionHeaderBlock {
            endianness: Endianness::Little,
            options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed(
                "tcpcopy",
            ))],
            ..SectionHeaderBlock::default()
        };
        let mut writer = PcapNgWriter::with_section_header(file, section).map_err(write_error)?;
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        };
        writer.write_pcapng_block(interface).map_err(write_error)?;
        Ok(PcapNgRecorder { writer })
    }

    /// Appends one IP packet (IP header first) captured at `timestamp` (since the Unix epoch).
    /// `orig_len` is its length on the wire; a value below `ip_packet.len()` is raised to it.
    pub fn write(
        &mut self,
        timestamp: Duration,
        ip_packet: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        if u64::try_from(timestamp.as_nanos()).is_err() {
            return Err(invalid_input("timestamp beyond what pcapng can hold"));
        }
        let captured = u32::try_from(ip_packet.len())
            .ok()
            .filter(|&len| len as usize <= MAX_RECORD - 64)
            .ok_or_else(|| invalid_input("packet longer than a capture record may be"))?;
        let packet = EnhancedPacketBlock {
            interface_id: 0,
            timestamp,
            original_len: orig_len.max(captured),
            data: Cow::Borrowed(ip_packet),
            options: Vec::new(),
        };
        self.writer
            .write_pcapng_block(packet)
            .map_err(write_error)?;
        Ok(())
    }

    /// Flushes what is buffered and closes the file.
    pub fn finish(self) -> io::Result<()> {
        self.writer.into_inner().flush()
    }
}

pub(crate) fn write_error(error: PcapError) -> io::Error {
    match error {
        PcapError::IoError(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

pub(crate) fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
