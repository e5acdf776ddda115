//! [`PcapSource`]: opens a capture file, tells classic pcap from pcapng by its first bytes, and
//! walks its records, handing out the IP packet of each frame with its link layer removed.
//! It owns the walk and its counters; the formats' parsing lives in `classic` and `pcapng`, the
//! link layers in `link`.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::classic::{read_pcap_header, read_pcap_record, PcapState, PCAP_MAGICS};
use crate::input::{Fault, Input};
use crate::link::{ip_packet, LinkType};
use crate::pcapng::{read_pcapng_header, read_pcapng_packet, PcapNgState, SECTION_HEADER};
use crate::{Packet, PcapFileError, SourceStats};

/// Reads the IP packets of a pcap or pcapng file, in file order.
///
/// ```no_run
/// # fn main() -> Result<(), pcap::PcapFileError> {
/// let mut source = pcap::PcapSource::open("client.pcapng".as_ref())?;
/// while let Some(packet) = source.next_packet() {
///     let packet = packet?;
///     println!("{:?}: {} bytes", packet.timestamp, packet.data.len());
/// }
/// # Ok(())
/// # }
/// ```
pub struct PcapSource {
    pub(crate) path: PathBuf,
    pub(crate) input: Input,
    pub(crate) format: Format,
    pub(crate) stats: SourceStats,
    /// Set at the end of the file or after an error: nothing more is returned.
    pub(crate) finished: bool,
}

impl PcapSource {
    /// Opens a pcap (microsecond or nanosecond, either byte order) or pcapng file and reads its
    /// header. Errors are one line and name the file.
    pub fn open(path: &Path) -> Result<PcapSource, PcapFileError> {
        let io_error = |error| PcapFileError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io_error)?;
        let file_len = file.metadata().map_err(io_error)?.len();
        Self::from_reader(path.to_path_buf(), Box::new(file), file_len)
    }

    /// A source over any reader; `path` only names it in errors.
    pub(crate) fn from_reader(
        path: PathBuf,
        reader: Box<dyn Read + Send>,
        file_len: u64,
    ) -> Result<PcapSource, PcapFileError> {
        let mut input = Input::new(reader);
        let format = match read_file_header(&mut input) {
            Ok(format) => format,
            Err(fault) => return Err(fault.into_error(&path, 0)),
        };
        let stats = SourceStats {
            bytes_read: input.offset(),
            file_len,
            ..SourceStats::default()
        };
        Ok(PcapSource {
            path,
            input,
            format,
            stats,
            finished: false,
        })
    }

    /// The next IP packet. Frames that carry no IPv4 or IPv6 packet (ARP, etc.) are skipped and
    /// counted in [`SourceStats::skipped`].
    ///
    /// Link types: Ethernet (1, 802.1Q/802.1ad VLAN tags skipped), Linux cooked SLL (113) and
    /// SLL2 (276), raw IP (101, and 12/14 which some systems use for it), IPv4 (228) and IPv6
    /// (229). In pcapng every interface has its own link type; a packet on an interface with an
    /// unsupported link type is an error. A pcapng Simple Packet Block has no timestamp of its
    /// own: it gets the one of the packet before it.
    ///
    /// `None` at a clean end of file; `Some(Err(..))` at damage (truncated record or block,
    /// garbage), after which it returns `None`.
    pub fn next_packet(&mut self) -> Option<Result<Packet<'_>, PcapFileError>> {
        if self.finished {
            return None;
        }
        let result = self.advance();
        self.stats.bytes_read = self.input.offset();
        match result {
            Ok(Some(found)) => {
                self.stats.packets += 1;
                let data = self.input.buf.get(found.data).unwrap_or_default();
                Some(Ok(Packet {
                    timestamp: found.timestamp,
                    data,
                    orig_len: found.orig_len,
                }))
            }
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(fault) => {
                self.finished = true;
                Some(Err(fault.into_error(&self.path, self.stats.packets)))
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// `"pcap"` or `"pcapng"`.
    pub fn format(&self) -> &'static str {
        match self.format {
            Format::Pcap(_) => "pcap",
            Format::PcapNg(_) => "pcapng",
        }
    }

    /// Reads frames until one carries an IP packet.
    pub(crate) fn advance(&mut self) -> Result<Option<Found>, Fault> {
        loop {
            let frame = match &mut self.format {
                Format::Pcap(pcap) => read_pcap_record(&mut self.input, pcap)?,
                Format::PcapNg(ng) => read_pcapng_packet(&mut self.input, ng)?,
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            let bytes = self.input.buf.get(frame.data.clone()).unwrap_or_default();
            match ip_packet(frame.link, bytes, frame.orig_len) {
                Some((range, orig_len)) => {
                    let start = frame.data.start + range.start;
                    let data = start..frame.data.start + range.end;
                    return Ok(Some(Found {
                        timestamp: frame.timestamp,
                        data,
                        orig_len,
                    }));
                }
                None => self.stats.skipped += 1,
            }
        }
    }
}

/// What kind of file is being read, and the state its parsing needs.
pub(crate) enum Format {
    Pcap(PcapState),
    PcapNg(PcapNgState),
}

/// A frame found in the file: `data` indexes `Input::buf` and stays valid until the next read.
pub(crate) struct Frame {
    pub(crate) timestamp: Duration,
    pub(crate) link: LinkType,
    pub(crate) data: Range<usize>,
    pub(crate) orig_len: u32,
}

/// The IP packet of a frame: `data` indexes `Input::buf`.
pub(crate) struct Found {
    pub(crate) timestamp: Duration,
    pub(crate) data: Range<usize>,
    pub(crate) orig_len: u32,
}

/// Reads the pcap header or the first pcapng section header.
pub(crate) fn read_file_header(input: &mut Input) -> Result<Format, Fault> {
    if !input.ensure(4)? {
        return Err(Fault::NotPcap);
    }
    let magic = input.available().get(..4).unwrap_or_default();
    if PCAP_MAGICS.iter().any(|known| known == magic) {
        read_pcap_header(input)
    } else if magic == SECTION_HEADER.to_be_bytes() {
        read_pcapng_header(input)
    } else {
        Err(Fault::NotPcap)
    }
}
