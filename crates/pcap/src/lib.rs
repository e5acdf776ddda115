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

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

/// Largest record (classic pcap) or block (pcapng) accepted, in bytes. Real packets are at most a
/// few hundred KiB even with GRO; a larger length field is damage, not a packet.
pub const MAX_RECORD: usize = 16 << 20;

/// How much is read from the file at a time.
const READ_CHUNK: usize = 64 << 10;

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
    path: PathBuf,
    input: Input,
    format: Format,
    stats: SourceStats,
    /// Set at the end of the file or after an error: nothing more is returned.
    finished: bool,
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
    fn from_reader(
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
    fn advance(&mut self) -> Result<Option<Found>, Fault> {
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

/// Writes captured IP packets as a pcapng file: one section, one interface of link type raw IP
/// (101) with nanosecond timestamps (`if_tsresol` = 9).
pub struct PcapNgRecorder {
    writer: PcapNgWriter<BufWriter<File>>,
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

fn write_error(error: PcapError) -> io::Error {
    match error {
        PcapError::IoError(error) => error,
        other => io::Error::other(other.to_string()),
    }
}

fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// An error before the file's path and packet count are attached.
#[derive(Debug)]
enum Fault {
    NotPcap,
    UnsupportedLinkType(u32),
    Truncated,
    Damaged(String),
    Io(io::Error),
}

impl Fault {
    fn into_error(self, path: &Path, packets: u64) -> PcapFileError {
        let path = path.to_path_buf();
        match self {
            Fault::NotPcap => PcapFileError::NotPcap { path },
            Fault::UnsupportedLinkType(link_type) => {
                PcapFileError::UnsupportedLinkType { path, link_type }
            }
            Fault::Truncated => PcapFileError::Truncated { path, packets },
            Fault::Damaged(detail) => PcapFileError::Damaged {
                path,
                packets,
                detail,
            },
            Fault::Io(error) => PcapFileError::Io { path, error },
        }
    }
}

impl From<io::Error> for Fault {
    fn from(error: io::Error) -> Self {
        Fault::Io(error)
    }
}

fn damaged(detail: impl Into<String>) -> Fault {
    Fault::Damaged(detail.into())
}

/// The file, read in chunks into a buffer that holds at least the record being parsed.
struct Input {
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// Bytes of `buf` already parsed.
    start: usize,
    /// File offset of `buf[0]`.
    base: u64,
}

impl Input {
    fn new(reader: Box<dyn Read + Send>) -> Self {
        Input {
            reader,
            buf: Vec::new(),
            start: 0,
            base: 0,
        }
    }

    /// The bytes read but not yet parsed.
    fn available(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, len: usize) {
        self.start = self.start.saturating_add(len).min(self.buf.len());
    }

    /// File offset of the first unparsed byte.
    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Reads until at least `need` unparsed bytes are buffered; `false` if the file ends first.
    /// Only this moves bytes within the buffer, so ranges into it stay valid until it is called.
    fn ensure(&mut self, need: usize) -> io::Result<bool> {
        while self.available().len() < need {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.base += self.start as u64;
                self.start = 0;
            }
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK.max(need - filled), 0);
            let spare = self.buf.get_mut(filled..).unwrap_or_default();
            let read = read_retrying(&mut self.reader, spare);
            self.buf
                .truncate(filled + read.as_ref().map_or(0, |&len| len));
            if read? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn read_retrying(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// What kind of file is being read, and the state its parsing needs.
enum Format {
    Pcap(PcapState),
    PcapNg(PcapNgState),
}

struct PcapState {
    parser: PcapParser,
    link: LinkType,
    nanos: bool,
    big_endian: bool,
}

struct PcapNgState {
    big_endian: bool,
    /// Interfaces of the current section, in the order of their description blocks.
    interfaces: Vec<Interface>,
    /// Timestamp of the last packet, for Simple Packet Blocks.
    last_timestamp: Duration,
}

struct Interface {
    link_type: u32,
    link: Option<LinkType>,
    snaplen: u32,
    /// `if_tsresol`: high bit clear = 10^-n seconds, set = 2^-n seconds.
    ts_resolution: u8,
    /// `if_tsoffset`, in seconds.
    ts_offset: i64,
}

/// A frame found in the file: `data` indexes `Input::buf` and stays valid until the next read.
struct Frame {
    timestamp: Duration,
    link: LinkType,
    data: Range<usize>,
    orig_len: u32,
}

/// The IP packet of a frame: `data` indexes `Input::buf`.
struct Found {
    timestamp: Duration,
    data: Range<usize>,
    orig_len: u32,
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;

const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const INTERFACE_DESCRIPTION: u32 = 1;
const OBSOLETE_PACKET: u32 = 2;
const SIMPLE_PACKET: u32 = 3;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

/// Reads the pcap header or the first pcapng section header.
fn read_file_header(input: &mut Input) -> Result<Format, Fault> {
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

fn read_pcap_header(input: &mut Input) -> Result<Format, Fault> {
    if !input.ensure(PCAP_HEADER_LEN)? {
        return Err(Fault::Truncated);
    }
    let (_, parser) = PcapParser::new(input.available()).map_err(|_| Fault::NotPcap)?;
    let header = parser.header();
    // The top bits of the link type field carry FCS information, not the link type.
    let link_type = u32::from(header.datalink) & 0x03ff_ffff;
    let link = LinkType::from_code(link_type).ok_or(Fault::UnsupportedLinkType(link_type))?;
    input.consume(PCAP_HEADER_LEN);
    Ok(Format::Pcap(PcapState {
        link,
        nanos: header.ts_resolution == TsResolution::NanoSecond,
        big_endian: header.endianness == Endianness::Big,
        parser,
    }))
}

fn read_pcapng_header(input: &mut Input) -> Result<Format, Fault> {
    if !input.ensure(12)? {
        return Err(Fault::Truncated);
    }
    if byte_order(input.available().get(8..12).unwrap_or_default()).is_none() {
        return Err(Fault::NotPcap);
    }
    let mut state = PcapNgState {
        big_endian: false,
        interfaces: Vec::new(),
        last_timestamp: Duration::ZERO,
    };
    let block = read_block(input, state.big_endian)?.ok_or(Fault::Truncated)?;
    let body = input.buf.get(block.body).unwrap_or_default();
    start_section(&mut state, body)?;
    Ok(Format::PcapNg(state))
}

/// The next record of a classic pcap file; `None` at a clean end of file.
fn read_pcap_record(input: &mut Input, pcap: &PcapState) -> Result<Option<Frame>, Fault> {
    if !input.ensure(PCAP_RECORD_HEADER_LEN)? {
        return if input.available().is_empty() {
            Ok(None)
        } else {
            Err(Fault::Truncated)
        };
    }
    let captured = read_u32(input.available(), 8, pcap.big_endian).ok_or(Fault::Truncated)?;
    let captured = usize::try_from(captured).unwrap_or(usize::MAX);
    if captured > MAX_RECORD - PCAP_RECORD_HEADER_LEN {
        return Err(damaged(format!("packet record claims {captured} bytes")));
    }
    if !input.ensure(PCAP_RECORD_HEADER_LEN + captured)? {
        return Err(Fault::Truncated);
    }
    let (timestamp, orig_len) = match pcap.parser.next_raw_packet(input.available()) {
        Ok((_, raw)) => (
            pcap_timestamp(raw.ts_sec, raw.ts_frac, pcap.nanos),
            raw.orig_len,
        ),
        Err(PcapError::IncompleteBuffer) => return Err(Fault::Truncated),
        Err(other) => return Err(damaged(other.to_string())),
    };
    let start = input.start + PCAP_RECORD_HEADER_LEN;
    input.consume(PCAP_RECORD_HEADER_LEN + captured);
    Ok(Some(Frame {
        timestamp,
        link: pcap.link,
        data: start..start + captured,
        orig_len,
    }))
}

/// Seconds plus a fraction in micro- or nanoseconds. A fraction of a second or more (written by
/// some broken tools) carries into the seconds instead of failing.
fn pcap_timestamp(seconds: u32, fraction: u32, nanos: bool) -> Duration {
    let fraction = if nanos {
        u64::from(fraction)
    } else {
        u64::from(fraction) * 1000
    };
    Duration::from_secs(u64::from(seconds)).saturating_add(Duration::from_nanos(fraction))
}

/// A pcapng block: `body` indexes `Input::buf`.
struct Block {
    kind: u32,
    body: Range<usize>,
}

/// Frames the next pcapng block (its length fields checked); `None` at a clean end of file.
fn read_block(input: &mut Input, big_endian: bool) -> Result<Option<Block>, Fault> {
    if !input.ensure(12)? {
        return if input.available().is_empty() {
            Ok(None)
        } else {
            Err(Fault::Truncated)
        };
    }
    let head = input.available();
    let kind = read_u32(head, 0, big_endian).ok_or(Fault::Truncated)?;
    let big_endian = if kind == SECTION_HEADER {
        let order = byte_order(head.get(8..12).unwrap_or_default());
        order.ok_or_else(|| damaged("section header without byte-order magic"))?
    } else {
        big_endian
    };
    let len = read_u32(head, 4, big_endian).ok_or(Fault::Truncated)?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len < 12 || len % 4 != 0 || len > MAX_RECORD {
        return Err(damaged(format!("block of type {kind:#x} has length {len}")));
    }
    if !input.ensure(len)? {
        return Err(Fault::Truncated);
    }
    let trailer = read_u32(input.available(), len - 4, big_endian).ok_or(Fault::Truncated)?;
    if usize::try_from(trailer).ok() != Some(len) {
        return Err(damaged(format!(
            "block length {len} and trailing length {trailer} differ"
        )));
    }
    let body = input.start + 8..input.start + len - 4;
    input.consume(len);
    Ok(Some(Block { kind, body }))
}

/// `Some(big_endian)` for a section header's byte-order magic.
fn byte_order(magic: &[u8]) -> Option<bool> {
    let magic: [u8; 4] = magic.try_into().ok()?;
    if magic == BYTE_ORDER_MAGIC.to_be_bytes() {
        Some(true)
    } else if magic == BYTE_ORDER_MAGIC.to_le_bytes() {
        Some(false)
    } else {
        None
    }
}

/// Reads pcapng blocks until one holds a packet; `None` at a clean end of file.
fn read_pcapng_packet(input: &mut Input, ng: &mut PcapNgState) -> Result<Option<Frame>, Fault> {
    loop {
        let Some(block) = read_block(input, ng.big_endian)? else {
            return Ok(None);
        };
        let body = input.buf.get(block.body.clone()).unwrap_or_default();
        let packet = match block.kind {
            SECTION_HEADER => start_section(ng, body).map(|()| None)?,
            INTERFACE_DESCRIPTION => add_interface(ng, body).map(|()| None)?,
            ENHANCED_PACKET | OBSOLETE_PACKET => Some(timed_packet(ng, block.kind, body)?),
            SIMPLE_PACKET => Some(simple_packet(ng, body)?),
            _ => None,
        };
        if let Some((timestamp, link, data, orig_len)) = packet {
            let data = block.body.start + data.start..block.body.start + data.end;
            return Ok(Some(Frame {
                timestamp,
                link,
                data,
                orig_len,
            }));
        }
    }
}

/// A packet inside a block body: time, link type, where its bytes are in the body, wire length.
type BodyPacket = (Duration, LinkType, Range<usize>, u32);

fn start_section(ng: &mut PcapNgState, body: &[u8]) -> Result<(), Fault> {
    let big_endian = byte_order(body.get(..4).unwrap_or_default())
        .ok_or_else(|| damaged("section header without byte-order magic"))?;
    let version = |at| read_u16(body, at, big_endian);
    let (Some(major), Some(minor)) = (version(4), version(6)) else {
        return Err(damaged("section header too short"));
    };
    if major != 1 {
        return Err(damaged(format!(
            "pcapng version {major}.{minor} is not supported"
        )));
    }
    ng.big_endian = big_endian;
    ng.interfaces.clear();
    Ok(())
}

fn add_interface(ng: &mut PcapNgState, body: &[u8]) -> Result<(), Fault> {
    let big_endian = ng.big_endian;
    let (Some(link_type), Some(snaplen)) =
        (read_u16(body, 0, big_endian), read_u32(body, 4, big_endian))
    else {
        return Err(damaged("interface description too short"));
    };
    let mut interface = Interface {
        link_type: u32::from(link_type),
        link: LinkType::from_code(u32::from(link_type)),
        snaplen,
        ts_resolution: 6,
        ts_offset: 0,
    };
    for_each_option(
        body.get(8..).unwrap_or_default(),
        big_endian,
        |code, value| {
            match (code, value.len()) {
                (9, 1) => interface.ts_resolution = value.first().copied().unwrap_or(6),
                (14, 8) => interface.ts_offset = read_u64(value, 0, big_endian).unwrap_or(0) as i64,
                (9 | 14, len) => {
                    return Err(damaged(format!("interface option {code} of {len} bytes")))
                }
                _ => {}
            }
            Ok(())
        },
    )?;
    if timestamp_units(0, interface.ts_resolution).is_none() {
        let resolution = interface.ts_resolution;
        return Err(damaged(format!(
            "timestamp resolution {resolution:#04x} is not supported"
        )));
    }
    ng.interfaces.push(interface);
    Ok(())
}

/// Calls `visit` with the code and value of each option until the end-of-options option or the
/// end of `options`.
fn for_each_option(
    options: &[u8],
    big_endian: bool,
    mut visit: impl FnMut(u16, &[u8]) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let mut at = 0;
    while at < options.len() {
        let overrun = || damaged("option runs past the end of its block");
        let code = read_u16(options, at, big_endian).ok_or_else(overrun)?;
        let len = usize::from(read_u16(options, at + 2, big_endian).ok_or_else(overrun)?);
        if code == 0 {
            break;
        }
        visit(code, options.get(at + 4..at + 4 + len).ok_or_else(overrun)?)?;
        at += 4 + len.next_multiple_of(4);
    }
    Ok(())
}

/// An Enhanced Packet Block or an obsolete Packet Block: both have the interface, timestamp,
/// captured length and wire length in the first 20 bytes.
fn timed_packet(ng: &mut PcapNgState, kind: u32, body: &[u8]) -> Result<BodyPacket, Fault> {
    let big_endian = ng.big_endian;
    let fields = (
        if kind == ENHANCED_PACKET {
            read_u32(body, 0, big_endian)
        } else {
            read_u16(body, 0, big_endian).map(u32::from)
        },
        read_u32(body, 4, big_endian),
        read_u32(body, 8, big_endian),
        read_u32(body, 12, big_endian),
        read_u32(body, 16, big_endian),
    );
    let (Some(id), Some(high), Some(low), Some(captured), Some(orig_len)) = fields else {
        return Err(damaged("packet block too short"));
    };
    let interface = interface(ng, id)?;
    let units = (u64::from(high) << 32) | u64::from(low);
    let timestamp = interface_timestamp(interface, units);
    let link = interface
        .link
        .ok_or(Fault::UnsupportedLinkType(interface.link_type))?;
    let data = 20..20usize.saturating_add(usize::try_from(captured).unwrap_or(usize::MAX));
    if data.end > body.len() {
        return Err(damaged(format!(
            "packet of {captured} bytes overruns its block"
        )));
    }
    ng.last_timestamp = timestamp;
    Ok((timestamp, link, data, orig_len))
}

/// A Simple Packet Block: interface 0, no timestamp, the captured length implied by the wire
/// length, the interface's snapshot length and the block length.
fn simple_packet(ng: &PcapNgState, body: &[u8]) -> Result<BodyPacket, Fault> {
    let orig_len =
        read_u32(body, 0, ng.big_endian).ok_or_else(|| damaged("simple packet block too short"))?;
    let interface = interface(ng, 0)?;
    let link = interface
        .link
        .ok_or(Fault::UnsupportedLinkType(interface.link_type))?;
    let mut captured = usize::try_from(orig_len)
        .unwrap_or(usize::MAX)
        .min(body.len().saturating_sub(4));
    if interface.snaplen != 0 {
        captured = captured.min(usize::try_from(interface.snaplen).unwrap_or(usize::MAX));
    }
    Ok((ng.last_timestamp, link, 4..4 + captured, orig_len))
}

fn interface(ng: &PcapNgState, id: u32) -> Result<&Interface, Fault> {
    let index = usize::try_from(id).unwrap_or(usize::MAX);
    ng.interfaces
        .get(index)
        .ok_or_else(|| damaged(format!("packet on interface {id}, which is not described")))
}

fn interface_timestamp(interface: &Interface, units: u64) -> Duration {
    let since_offset = timestamp_units(units, interface.ts_resolution).unwrap_or_default();
    let offset = Duration::from_secs(interface.ts_offset.unsigned_abs());
    if interface.ts_offset >= 0 {
        since_offset.saturating_add(offset)
    } else {
        since_offset.saturating_sub(offset)
    }
}

/// `units` ticks of `if_tsresol` `resolution` as a duration; `None` for a resolution finer than
/// 10^-19 or 2^-63 s, which a 64-bit tick count cannot use.
fn timestamp_units(units: u64, resolution: u8) -> Option<Duration> {
    let exponent = u32::from(resolution & 0x7f);
    let (seconds, remainder, per_second) = if resolution & 0x80 == 0 {
        let per_second = 10u64.checked_pow(exponent)?;
        (units / per_second, units % per_second, per_second)
    } else {
        let per_second = 1u64.checked_shl(exponent)?;
        (units >> exponent, units & (per_second - 1), per_second)
    };
    let nanos = u128::from(remainder) * 1_000_000_000 / u128::from(per_second);
    let nanos = u64::try_from(nanos).ok()?;
    Some(Duration::from_secs(seconds).saturating_add(Duration::from_nanos(nanos)))
}

/// Link layers a frame's IP packet can be found behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkType {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    /// Raw IP, version from the first nibble.
    Raw,
    Ipv4,
    Ipv6,
}

impl LinkType {
    fn from_code(code: u32) -> Option<LinkType> {
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

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad and the pre-standard QinQ tag.
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Where the IP packet is in `frame` and its wire length; `None` if the frame carries none.
fn ip_packet(link: LinkType, frame: &[u8], frame_orig_len: u32) -> Option<(Range<usize>, u32)> {
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
fn after_ethertype(frame: &[u8], type_at: usize, payload_at: usize) -> Option<usize> {
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

fn version_is(frame: &[u8], start: usize, version: u8) -> Option<usize> {
    (frame.get(start)? >> 4 == version).then_some(start)
}

/// The length the IP header declares for its packet, if the header is complete and the length
/// plausible (IPv4 total length 0 under segmentation offload, IPv6 jumbograms: `None`).
fn declared_len(packet: &[u8]) -> Option<usize> {
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

fn read_u16(bytes: &[u8], at: usize, big_endian: bool) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big_endian {
        u16::from_be_bytes(raw)
    } else {
        u16::from_le_bytes(raw)
    })
}

fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    })
}

fn read_u64(bytes: &[u8], at: usize, big_endian: bool) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(if big_endian {
        u64::from_be_bytes(raw)
    } else {
        u64::from_le_bytes(raw)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    /// A packet as read back, owned.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Got {
        timestamp: Duration,
        data: Vec<u8>,
        orig_len: u32,
    }

    fn got(timestamp: Duration, data: &[u8], orig_len: u32) -> Got {
        Got {
            timestamp,
            data: data.to_vec(),
            orig_len,
        }
    }

    fn ts(seconds: u64, nanos: u32) -> Duration {
        Duration::new(seconds, nanos)
    }

    /// Reads every packet; the error message that ended the walk, if any.
    fn drain(source: &mut PcapSource) -> (Vec<Got>, Option<String>) {
        let mut packets = Vec::new();
        while let Some(packet) = source.next_packet() {
            match packet {
                Ok(packet) => packets.push(got(packet.timestamp, packet.data, packet.orig_len)),
                Err(error) => {
                    assert!(source.next_packet().is_none(), "a packet after an error");
                    return (packets, Some(error.to_string()));
                }
            }
        }
        assert!(source.next_packet().is_none(), "a packet after the end");
        (packets, None)
    }

    fn memory_source(bytes: &[u8]) -> Result<PcapSource, PcapFileError> {
        let len = bytes.len() as u64;
        PcapSource::from_reader("mem".into(), Box::new(Cursor::new(bytes.to_vec())), len)
    }

    /// Reads a whole in-memory file that must be undamaged.
    fn read_clean(bytes: &[u8]) -> (Vec<Got>, SourceStats) {
        let mut source = memory_source(bytes).expect("open");
        let (packets, error) = drain(&mut source);
        assert_eq!(error, None);
        let stats = source.stats();
        assert_eq!(stats.bytes_read, bytes.len() as u64);
        assert_eq!(stats.packets, packets.len() as u64);
        (packets, stats)
    }

    /// A file in the temp directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let file = format!("tcpcopy-pcap-test-{}-{unique}-{name}", std::process::id());
            TempFile(std::env::temp_dir().join(file))
        }

        fn with(name: &str, bytes: &[u8]) -> TempFile {
            let file = TempFile::new(name);
            std::fs::write(&file.0, bytes).expect("write temp file");
            file
        }

        fn open_error(&self) -> String {
            match PcapSource::open(&self.0) {
                Ok(_) => panic!("{} opened", self.0.display()),
                Err(error) => error.to_string(),
            }
        }

        /// The error that ends reading the file (it must open).
        fn read_error(&self) -> (usize, String) {
            let mut source = PcapSource::open(&self.0).expect("open");
            let (packets, error) = drain(&mut source);
            (packets.len(), error.expect("an error"))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    // ---- Packets and frames ----

    fn ipv4(payload_len: usize, tag: u8) -> Vec<u8> {
        let total = 20 + payload_len;
        let mut packet = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            tag,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        packet.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        packet.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7) ^ tag));
        packet
    }

    fn ipv6(payload_len: usize, tag: u8) -> Vec<u8> {
        let mut packet = vec![
            0x60,
            0,
            0,
            tag,
            (payload_len >> 8) as u8,
            payload_len as u8,
            6,
            64,
        ];
        packet.extend_from_slice(&[0xfd; 16]);
        packet.extend_from_slice(&[0xfe; 16]);
        packet.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(3) ^ tag));
        packet
    }

    fn ethernet(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for tag in tags {
            frame.extend_from_slice(&tag.to_be_bytes());
            frame.extend_from_slice(&[0x00, 0x64]);
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        frame.extend_from_slice(&protocol.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = protocol.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    }

    // ---- File builders ----

    /// Bytes in one byte order.
    struct Out {
        bytes: Vec<u8>,
        big: bool,
    }

    impl Out {
        fn u16(&mut self, value: u16) {
            let raw = if self.big {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            self.bytes.extend_from_slice(&raw);
        }

        fn u32(&mut self, value: u32) {
            let raw = if self.big {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            self.bytes.extend_from_slice(&raw);
        }

        fn u64(&mut self, value: u64) {
            let raw = if self.big {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            self.bytes.extend_from_slice(&raw);
        }
    }

    /// One classic pcap record: seconds, fraction, frame, wire length.
    type Record<'a> = (u32, u32, &'a [u8], u32);

    fn pcap_file(big: bool, nanos: bool, link: u32, snaplen: u32, records: &[Record]) -> Vec<u8> {
        let mut out = Out {
            bytes: Vec::new(),
            big,
        };
        out.u32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        out.u16(2);
        out.u16(4);
        out.u32(0);
        out.u32(0);
        out.u32(snaplen);
        out.u32(link);
        for &(seconds, fraction, frame, orig_len) in records {
            out.u32(seconds);
            out.u32(fraction);
            out.u32(frame.len() as u32);
            out.u32(orig_len);
            out.bytes.extend_from_slice(frame);
        }
        out.bytes
    }

    /// A pcapng file built block by block.
    struct Ng(Out);

    impl Ng {
        fn new(big: bool) -> Ng {
            let mut ng = Ng(Out {
                bytes: Vec::new(),
                big,
            });
            ng.section(big);
            ng
        }

        fn section(&mut self, big: bool) {
            self.0.big = big;
            let mut body = Out {
                bytes: Vec::new(),
                big,
            };
            body.u32(BYTE_ORDER_MAGIC);
            body.u16(1);
            body.u16(0);
            body.u64(u64::MAX);
            self.block(SECTION_HEADER, &body.bytes);
        }

        fn block(&mut self, kind: u32, body: &[u8]) {
            let padded = body.len().next_multiple_of(4);
            let len = (12 + padded) as u32;
            self.0.u32(kind);
            self.0.u32(len);
            self.0.bytes.extend_from_slice(body);
            self.0
                .bytes
                .resize(self.0.bytes.len() + padded - body.len(), 0);
            self.0.u32(len);
        }

        fn body(&self) -> Out {
            Out {
                bytes: Vec::new(),
                big: self.0.big,
            }
        }

        /// An interface; `options` are (code, value) pairs.
        fn interface(&mut self, link: u16, snaplen: u32, options: &[(u16, &[u8])]) {
            let mut body = self.body();
            body.u16(link);
            body.u16(0);
            body.u32(snaplen);
            for (code, value) in options {
                body.u16(*code);
                body.u16(value.len() as u16);
                body.bytes.extend_from_slice(value);
                body.bytes.resize(body.bytes.len().next_multiple_of(4), 0);
            }
            if !options.is_empty() {
                body.u32(0);
            }
            self.block(INTERFACE_DESCRIPTION, &body.bytes);
        }

        fn enhanced(&mut self, interface: u32, units: u64, frame: &[u8], orig_len: u32) {
            let mut body = self.body();
            body.u32(interface);
            body.u32((units >> 32) as u32);
            body.u32(units as u32);
            body.u32(frame.len() as u32);
            body.u32(orig_len);
            body.bytes.extend_from_slice(frame);
            body.bytes.resize(body.bytes.len().next_multiple_of(4), 0);
            // An EPB comment that is not UTF-8: pcap-file 2 rejects that.
            body.u16(1);
            body.u16(3);
            body.bytes.extend_from_slice(&[0xff, 0xfe, 0xfd, 0]);
            body.u32(0);
            self.block(ENHANCED_PACKET, &body.bytes);
        }

        fn obsolete(&mut self, interface: u16, units: u64, frame: &[u8], orig_len: u32) {
            let mut body = self.body();
            body.u16(interface);
            body.u16(0);
            body.u32((units >> 32) as u32);
            body.u32(units as u32);
            body.u32(frame.len() as u32);
            body.u32(orig_len);
            body.bytes.extend_from_slice(frame);
            self.block(OBSOLETE_PACKET, &body.bytes);
        }

        fn simple(&mut self, frame: &[u8], orig_len: u32) {
            let mut body = self.body();
            body.u32(orig_len);
            body.bytes.extend_from_slice(frame);
            self.block(SIMPLE_PACKET, &body.bytes);
        }
    }

    // ---- Classic pcap ----

    #[test]
    fn pcap_ethernet_little_endian_microseconds_with_vlan_tags() {
        let v4 = ipv4(40, 1);
        let v6 = ipv6(33, 2);
        let tiny = ipv4(20, 3);
        let arp = ethernet(&[], 0x0806, &[0; 28]);
        let plain = ethernet(&[], ETHERTYPE_IPV4, &v4);
        let tagged = ethernet(&[0x8100], ETHERTYPE_IPV6, &v6);
        let qinq = ethernet(&[0x88a8, 0x8100], ETHERTYPE_IPV4, &v4);
        // A short frame padded to Ethernet's 60-byte minimum: the padding is not IP.
        let mut padded = ethernet(&[], ETHERTYPE_IPV4, &tiny);
        padded.resize(60, 0);
        let file = pcap_file(
            false,
            false,
            1,
            65535,
            &[
                (1_700_000_000, 123_456, &plain, plain.len() as u32),
                (1_700_000_000, 999_999, &arp, arp.len() as u32),
                (1_700_000_001, 0, &tagged, tagged.len() as u32),
                (1_700_000_002, 7, &qinq, qinq.len() as u32),
                (1_700_000_003, 500_000, &padded, 60),
            ],
        );
        let mut source = memory_source(&file).expect("open");
        assert_eq!(source.format(), "pcap");
        let (packets, error) = drain(&mut source);
        assert_eq!(error, None);
        assert_eq!(
            packets,
            [
                got(ts(1_700_000_000, 123_456_000), &v4, 60),
                got(ts(1_700_000_001, 0), &v6, 73),
                got(ts(1_700_000_002, 7_000), &v4, 60),
                got(ts(1_700_000_003, 500_000_000), &tiny, 40),
            ]
        );
        let stats = source.stats();
        assert_eq!((stats.packets, stats.skipped), (4, 1));
        assert_eq!(stats.bytes_read, file.len() as u64);
        assert_eq!(stats.file_len, file.len() as u64);
    }

    #[test]
    fn pcap_big_endian_nanoseconds_linux_cooked() {
        let v4 = ipv4(100, 4);
        let v6 = ipv6(0, 5);
        let first = sll(ETHERTYPE_IPV4, &v4);
        let second = sll(ETHERTYPE_IPV6, &v6);
        let other = sll(0x0003, &[1, 2, 3]);
        let records: [Record; 3] = [
            (1, 999_999_999, &first, first.len() as u32),
            (2, 1, &other, other.len() as u32),
            (3, 42, &second, second.len() as u32),
        ];
        let (packets, stats) = read_clean(&pcap_file(true, true, 113, 65535, &records));
        assert_eq!(
            packets,
            [got(ts(1, 999_999_999), &v4, 120), got(ts(3, 42), &v6, 40)]
        );
        assert_eq!(stats.skipped, 1);
    }

    #[test]
    fn pcap_linux_cooked_v2() {
        let v4 = ipv4(8, 6);
        let v6 = ipv6(12, 7);
        let first = sll2(ETHERTYPE_IPV4, &v4);
        let second = sll2(ETHERTYPE_IPV6, &v6);
        let records: [Record; 2] = [
            (10, 1, &first, first.len() as u32),
            (11, 2, &second, second.len() as u32),
        ];
        let (packets, _) = read_clean(&pcap_file(false, true, 276, 65535, &records));
        assert_eq!(packets, [got(ts(10, 1), &v4, 28), got(ts(11, 2), &v6, 52)]);
    }

    #[test]
    fn pcap_raw_ip_link_types() {
        let v4 = ipv4(10, 8);
        let v6 = ipv6(10, 9);
        let records: [Record; 3] = [
            (5, 1, &v4, 30),
            (6, 2, &v6, 50),
            (7, 3, &[0x10, 0, 0, 0], 4),
        ];
        for link in [101, 12, 14] {
            let (packets, stats) = read_clean(&pcap_file(false, false, link, 65535, &records));
            assert_eq!(
                packets,
                [got(ts(5, 1_000), &v4, 30), got(ts(6, 2_000), &v6, 50)]
            );
            assert_eq!(stats.skipped, 1, "link type {link}");
        }
        let (packets, stats) = read_clean(&pcap_file(false, false, 228, 65535, &records));
        assert_eq!(
            (packets, stats.skipped),
            (vec![got(ts(5, 1_000), &v4, 30)], 2)
        );
        let (packets, stats) = read_clean(&pcap_file(true, false, 229, 65535, &records));
        assert_eq!(
            (packets, stats.skipped),
            (vec![got(ts(6, 2_000), &v6, 50)], 2)
        );
    }

    #[test]
    fn pcap_snapshot_length_cuts_are_kept_short() {
        // Captured with -s 64: the wire length is above the snapshot length (pcap-file 2 rejects
        // such records), the IP length says how long the packet really was.
        let v4 = ipv4(1400, 10);
        let frame = ethernet(&[], ETHERTYPE_IPV4, &v4);
        let cut = &frame[..64];
        let records: [Record; 1] = [(9, 9, cut, frame.len() as u32)];
        let (packets, _) = read_clean(&pcap_file(false, false, 1, 64, &records));
        assert_eq!(packets, [got(ts(9, 9_000), &v4[..50], 1420)]);
    }

    // ---- pcapng ----

    #[test]
    fn pcapng_enhanced_packets_default_microseconds() {
        let v4 = ipv4(30, 11);
        let mut ng = Ng::new(false);
        ng.interface(101, 0, &[]);
        ng.enhanced(0, 1_700_000_000_123_456, &v4, 50);
        ng.enhanced(0, 1_700_000_001_000_001, &v4, 50);
        let mut source = memory_source(&ng.0.bytes).expect("open");
        assert_eq!(source.format(), "pcapng");
        let (packets, error) = drain(&mut source);
        assert_eq!(error, None);
        assert_eq!(
            packets,
            [
                got(ts(1_700_000_000, 123_456_000), &v4, 50),
                got(ts(1_700_000_001, 1_000), &v4, 50)
            ]
        );
        assert_eq!(source.stats().bytes_read, ng.0.bytes.len() as u64);
    }

    #[test]
    fn pcapng_two_interfaces_with_their_own_link_types_and_resolutions() {
        let v4 = ipv4(20, 12);
        let v6 = ipv6(24, 13);
        let on_ethernet = ethernet(&[0x8100], ETHERTYPE_IPV4, &v4);
        let mut ng = Ng::new(true);
        // Options pcap-file 2 rejects: a name that is not UTF-8, a 4-byte if_tzone.
        ng.interface(1, 65535, &[(2, &[0xc3, 0x28]), (10, &[0, 0, 0, 0])]);
        ng.interface(101, 0, &[(9, &[9]), (2, b"raw0")]);
        ng.block(4, &[0, 0, 0, 0]); // name resolution: skipped
        ng.block(0x4000_0bad, &[1, 2, 3, 4, 5, 6, 7, 8]); // unknown: skipped
        ng.enhanced(
            0,
            1_700_000_000_000_001,
            &on_ethernet,
            on_ethernet.len() as u32,
        );
        ng.enhanced(1, 1_700_000_000_000_000_123, &v6, 64);
        ng.obsolete(1, 5_000_000_007, &v4, 40);
        ng.block(5, &[0; 12]); // interface statistics: skipped
        let (packets, stats) = read_clean(&ng.0.bytes);
        assert_eq!(
            packets,
            [
                got(ts(1_700_000_000, 1_000), &v4, 40),
                got(ts(1_700_000_000, 123), &v6, 64),
                got(ts(5, 7), &v4, 40),
            ]
        );
        assert_eq!(stats.skipped, 0);
    }

    #[test]
    fn pcapng_simple_packets_take_the_previous_timestamp_and_the_snapshot_length() {
        let v4 = ipv4(60, 14);
        let frame = ethernet(&[], ETHERTYPE_IPV4, &v4);
        let mut ng = Ng::new(false);
        ng.interface(1, 54, &[(9, &[3])]);
        ng.simple(&frame, frame.len() as u32); // before any timestamp
        ng.enhanced(0, 7_500, &frame[..54], frame.len() as u32);
        ng.simple(&frame[..54], frame.len() as u32);
        let (packets, _) = read_clean(&ng.0.bytes);
        let cut = got(ts(7, 500_000_000), &v4[..40], 80);
        assert_eq!(
            packets,
            [got(Duration::ZERO, &v4[..40], 80), cut.clone(), cut]
        );
    }

    #[test]
    fn pcapng_sections_switch_byte_order_and_interfaces() {
        let v4 = ipv4(4, 15);
        let mut ng = Ng::new(false);
        ng.interface(101, 0, &[]);
        ng.enhanced(0, 1_000_000, &v4, 24);
        ng.section(true);
        ng.interface(228, 0, &[(9, &[0x8a]), (14, &100i64.to_be_bytes())]);
        ng.enhanced(0, (3 << 10) + 512, &v4, 24);
        let (packets, _) = read_clean(&ng.0.bytes);
        assert_eq!(
            packets,
            [got(ts(1, 0), &v4, 24), got(ts(103, 500_000_000), &v4, 24)]
        );

        // A negative offset below the epoch stops at the epoch rather than failing.
        let mut ng = Ng::new(true);
        ng.interface(101, 0, &[(14, &(-10i64).to_be_bytes())]);
        ng.enhanced(0, 25_000_000, &v4, 24);
        ng.enhanced(0, 1_000_000, &v4, 24);
        let (packets, _) = read_clean(&ng.0.bytes);
        assert_eq!(
            packets,
            [got(ts(15, 0), &v4, 24), got(Duration::ZERO, &v4, 24)]
        );
    }

    #[test]
    fn pcapng_packet_on_an_unsupported_interface_is_an_error() {
        let v4 = ipv4(4, 16);
        let mut ng = Ng::new(false);
        ng.interface(105, 0, &[]); // 802.11, no packets: fine
        ng.interface(101, 0, &[]);
        ng.enhanced(1, 0, &v4, 24);
        ng.enhanced(0, 0, &v4, 24);
        let mut source = memory_source(&ng.0.bytes).expect("open");
        let (packets, error) = drain(&mut source);
        assert_eq!(packets.len(), 1);
        let expected =
            "mem: link type 105 is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)";
        assert_eq!(error.as_deref(), Some(expected));
    }

    /// Appends something wrong to a pcapng file.
    type Damage<'a> = &'a dyn Fn(&mut Ng);

    #[test]
    fn pcapng_damage_is_described() {
        let v4 = ipv4(4, 17);
        let mut base = Ng::new(false);
        base.interface(101, 0, &[]);
        let cases: [(Damage, &str); 5] = [
            (
                &|ng| ng.enhanced(3, 0, &v4, 24),
                "packet on interface 3, which is not described",
            ),
            (
                &|ng| ng.interface(101, 0, &[(9, &[20])]),
                "timestamp resolution 0x14 is not supported",
            ),
            (&|ng| ng.block(6, &[0; 8]), "packet block too short"),
            (
                &|ng| {
                    ng.0.u32(6);
                    ng.0.u32(14);
                    ng.0.bytes.extend_from_slice(&[0; 10]);
                },
                "block of type 0x6 has length 14",
            ),
            (
                &|ng| {
                    ng.0.u32(6);
                    ng.0.u32(12);
                    ng.0.u32(16);
                },
                "block length 12 and trailing length 16 differ",
            ),
        ];
        for (damage, detail) in cases {
            let mut ng = Ng(Out {
                bytes: base.0.bytes.clone(),
                big: false,
            });
            ng.enhanced(0, 0, &v4, 24);
            damage(&mut ng);
            let (packets, error) = drain(&mut memory_source(&ng.0.bytes).expect("open"));
            assert_eq!(packets.len(), 1);
            assert_eq!(
                error,
                Some(format!("mem: damaged after 1 packets: {detail}"))
            );
        }
    }

    // ---- Recorder ----

    fn recorded_packets(count: usize) -> Vec<Got> {
        (0..count)
            .map(|i| {
                let data = if i % 3 == 0 {
                    ipv6(i % 200, i as u8)
                } else {
                    ipv4(i % 1500, i as u8)
                };
                let timestamp = ts(
                    1_700_000_000 + (i / 7) as u64,
                    (i as u32 * 104_729) % 1_000_000_000,
                );
                // Every 10th packet was cut short by the capture.
                if i % 10 == 5 {
                    let wire = data.len() as u32;
                    got(timestamp, &data[..data.len().min(54)], wire)
                } else {
                    let len = data.len() as u32;
                    Got {
                        timestamp,
                        data,
                        orig_len: len,
                    }
                }
            })
            .collect()
    }

    fn record(path: &Path, packets: &[Got]) {
        let mut recorder = PcapNgRecorder::create(path).expect("create");
        for packet in packets {
            recorder
                .write(packet.timestamp, &packet.data, packet.orig_len)
                .expect("write");
        }
        recorder.finish().expect("finish");
    }

    #[test]
    fn recorder_round_trip() {
        let file = TempFile::new("round-trip.pcapng");
        let written = recorded_packets(1000);
        record(&file.0, &written);
        let mut source = PcapSource::open(&file.0).expect("open");
        assert_eq!(source.format(), "pcapng");
        let (read, error) = drain(&mut source);
        assert_eq!(error, None);
        assert_eq!(read.len(), 1000);
        assert_eq!(read, written);
        let stats = source.stats();
        assert_eq!((stats.packets, stats.skipped), (1000, 0));
        assert_eq!(stats.bytes_read, stats.file_len);
        assert_eq!(
            stats.file_len,
            std::fs::metadata(&file.0).expect("metadata").len()
        );
    }

    #[test]
    fn recorder_rejects_what_it_cannot_write() {
        let file = TempFile::new("reject.pcapng");
        let mut recorder = PcapNgRecorder::create(&file.0).expect("create");
        let too_late = recorder.write(Duration::MAX, &ipv4(0, 0), 20);
        assert_eq!(
            too_late.map_err(|error| error.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
        let huge = vec![0x45; MAX_RECORD];
        let too_long = recorder.write(Duration::ZERO, &huge, 0);
        assert_eq!(
            too_long.map_err(|error| error.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
        recorder.write(ts(1, 2), &ipv4(1, 1), 0).expect("write");
        recorder.finish().expect("finish");
        let (packets, error) = drain(&mut PcapSource::open(&file.0).expect("open"));
        assert_eq!(
            (packets, error),
            (vec![got(ts(1, 2), &ipv4(1, 1), 21)], None)
        );
    }

    fn tcpdump(args: &[&str]) -> Option<std::process::Output> {
        Command::new("tcpdump").args(args).output().ok()
    }

    #[test]
    fn tcpdump_reads_what_the_recorder_writes() {
        let probe = TempFile::with(
            "probe.pcap",
            &pcap_file(false, false, 101, 65535, &[(1, 0, &ipv4(0, 0), 20)]),
        );
        let probe_path = probe.0.to_string_lossy().into_owned();
        match tcpdump(&["-r", &probe_path, "-c", "1"]) {
            Some(output) if output.status.success() => {}
            Some(output) => {
                eprintln!("tcpdump cannot read a pcap file here, check skipped: {output:?}");
                return;
            }
            None => {
                eprintln!("tcpdump not found, check skipped");
                return;
            }
        }
        let file = TempFile::new("for-tcpdump.pcapng");
        let path = file.0.to_string_lossy().into_owned();
        let written = recorded_packets(50);
        record(&file.0, &written);

        let output = tcpdump(&["-r", &path, "-c", "1"]).expect("tcpdump");
        assert!(output.status.success(), "{output:?}");
        let listing =
            tcpdump(&["-r", &path, "-nn", "-tt", "--time-stamp-precision=nano"]).expect("tcpdump");
        assert!(listing.status.success(), "{listing:?}");
        let stdout = String::from_utf8_lossy(&listing.stdout);
        assert_eq!(stdout.lines().count(), written.len(), "{stdout}");
        let first = &written[0].timestamp;
        let expected = format!("{}.{:09} IP6 ", first.as_secs(), first.subsec_nanos());
        assert!(
            stdout.starts_with(&expected),
            "expected {expected:?}, got {stdout}"
        );

        // tcpdump turns it into a classic nanosecond pcap that reads back the same.
        let converted = TempFile::new("from-tcpdump.pcap");
        let converted_path = converted.0.to_string_lossy().into_owned();
        let args = [
            "-r",
            &path,
            "-w",
            &converted_path,
            "--time-stamp-precision=nano",
        ];
        let output = tcpdump(&args).expect("tcpdump");
        assert!(output.status.success(), "{output:?}");
        let mut source = PcapSource::open(&converted.0).expect("open");
        assert_eq!(source.format(), "pcap");
        assert_eq!(drain(&mut source), (written, None));
    }

    // ---- Errors, exact messages ----

    #[test]
    fn error_messages() {
        let missing = TempFile::new("missing.pcap");
        let not_found = io::Error::from(io::ErrorKind::NotFound);
        let message = missing.open_error();
        assert!(
            message.starts_with(&format!("{}: ", missing.0.display())),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message} / {not_found}");

        let empty = TempFile::with("empty.pcap", &[]);
        assert_eq!(
            empty.open_error(),
            format!("{}: not a pcap or pcapng file", empty.0.display())
        );

        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..100)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let noise = TempFile::with("noise.pcap", &noise);
        assert_eq!(
            noise.open_error(),
            format!("{}: not a pcap or pcapng file", noise.0.display())
        );

        let wifi = TempFile::with("wifi.pcap", &pcap_file(false, false, 105, 65535, &[]));
        let expected =
            "link type 105 is not supported (Ethernet, Linux cooked SLL/SLL2 and raw IP are)";
        assert_eq!(
            wifi.open_error(),
            format!("{}: {expected}", wifi.0.display())
        );

        let (a, b, c) = (ipv4(100, 1), ipv4(100, 2), ipv4(100, 3));
        let whole = pcap_file(
            false,
            false,
            101,
            65535,
            &[(1, 0, &a, 120), (2, 0, &b, 120), (3, 0, &c, 120)],
        );
        let cut = TempFile::with("cut.pcap", &whole[..24 + 2 * 136 + 60]);
        let truncated = format!("{}: truncated after 2 packets", cut.0.display());
        assert_eq!(cut.read_error(), (2, truncated));
        let cut_header = TempFile::with("cut-header.pcap", &whole[..24 + 136 + 9]);
        let truncated = format!("{}: truncated after 1 packets", cut_header.0.display());
        assert_eq!(cut_header.read_error(), (1, truncated));
        let cut_file_header = TempFile::with("cut-file-header.pcap", &whole[..20]);
        let truncated = format!("{}: truncated after 0 packets", cut_file_header.0.display());
        assert_eq!(cut_file_header.open_error(), truncated);

        let mut ng = Ng::new(false);
        ng.interface(101, 0, &[]);
        ng.enhanced(0, 1, &a, 120);
        let first_end = ng.0.bytes.len();
        ng.enhanced(0, 2, &b, 120);
        let cut = TempFile::with("cut.pcapng", &ng.0.bytes[..first_end + 70]);
        let truncated = format!("{}: truncated after 1 packets", cut.0.display());
        assert_eq!(cut.read_error(), (1, truncated));

        let mut huge = pcap_file(false, false, 101, 65535, &[(1, 0, &a, 120)]);
        huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        let huge = TempFile::with("huge.pcap", &huge);
        let damaged = format!(
            "{}: damaged after 1 packets: packet record claims 4294967295 bytes",
            huge.0.display()
        );
        assert_eq!(huge.read_error(), (1, damaged));
    }

    #[test]
    fn timestamp_resolutions() {
        assert_eq!(timestamp_units(1_234_567, 6), Some(ts(1, 234_567_000)));
        assert_eq!(timestamp_units(u64::MAX, 19), Some(ts(1, 844_674_407)));
        assert_eq!(
            timestamp_units(u64::MAX, 0),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            timestamp_units(3 << 62 | 1 << 61, 0x80 | 63),
            Some(ts(1, 750_000_000))
        );
        assert_eq!(timestamp_units(1, 20), None);
        assert_eq!(timestamp_units(1, 0x80 | 64), None);
        assert_eq!(pcap_timestamp(1, 1_500_000, false), ts(2, 500_000_000));
        assert_eq!(
            pcap_timestamp(u32::MAX, u32::MAX, true),
            ts(u64::from(u32::MAX) + 4, 294_967_295)
        );
    }

    // ---- Fuzzing: never a panic, always an end ----

    fn valid_pcap() -> Vec<u8> {
        let (v4, v6) = (ipv4(30, 1), ipv6(20, 2));
        let first = ethernet(&[0x8100], ETHERTYPE_IPV4, &v4);
        let second = ethernet(&[], ETHERTYPE_IPV6, &v6);
        let arp = ethernet(&[], 0x0806, &[0; 28]);
        pcap_file(
            false,
            false,
            1,
            65535,
            &[
                (1, 2, &first, 68),
                (3, 4, &arp, 42),
                (5, 6, &second, 74),
                (7, 8, &first, 68),
            ],
        )
    }

    fn valid_pcapng() -> Vec<u8> {
        let (v4, v6) = (ipv4(30, 1), ipv6(20, 2));
        let mut ng = Ng::new(false);
        ng.interface(1, 0, &[(9, &[9])]);
        ng.interface(101, 0, &[]);
        ng.enhanced(0, 10, &ethernet(&[], ETHERTYPE_IPV4, &v4), 64);
        ng.enhanced(1, 20, &v6, 60);
        ng.simple(&ethernet(&[], ETHERTYPE_IPV4, &v4), 64);
        ng.obsolete(1, 30, &v4, 50);
        ng.section(true);
        ng.interface(113, 0, &[]);
        ng.enhanced(0, 40, &sll(ETHERTYPE_IPV6, &v6), 76);
        ng.0.bytes
    }

    /// Reads all of `bytes`, checking what comes out is sane; returns how many packets.
    fn read_anything(bytes: &[u8]) -> usize {
        let Ok(mut source) = memory_source(bytes) else {
            return 0;
        };
        let mut packets = 0;
        while let Some(packet) = source.next_packet() {
            let Ok(packet) = packet else {
                break;
            };
            packets += 1;
            assert!(matches!(
                packet.data.first().map(|byte| byte >> 4),
                Some(4 | 6)
            ));
            assert!(packet.orig_len as usize >= packet.data.len());
            // Every packet took at least a 16-byte record header or a 12-byte block.
            assert!(
                packets * 12 <= bytes.len(),
                "more packets than the file can hold"
            );
        }
        assert!(source.next_packet().is_none());
        assert!(source.stats().bytes_read <= bytes.len() as u64);
        packets
    }

    #[test]
    fn valid_fuzz_seeds_read_completely() {
        assert_eq!(read_anything(&valid_pcap()), 3);
        assert_eq!(read_anything(&valid_pcapng()), 5);
    }

    fn file_start() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            Just(valid_pcap()[..24].to_vec()),
            Just(valid_pcapng()[..28].to_vec()),
            Just(pcap_file(true, true, 113, 65535, &[])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fuzz_random_bytes(start in file_start(), noise in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = start;
            bytes.extend_from_slice(&noise);
            read_anything(&bytes);
        }

        #[test]
        fn fuzz_truncated_files(ng in any::<bool>(), cut in any::<Index>()) {
            let whole = if ng { valid_pcapng() } else { valid_pcap() };
            let len = cut.index(whole.len() + 1);
            let mut source = memory_source(&whole[..len]).ok();
            if let Some(source) = &mut source {
                let (_, error) = drain(source);
                let complete = source.stats().bytes_read == len as u64;
                prop_assert!(error.is_some() != complete, "{error:?} at {len}");
                if let Some(error) = error {
                    prop_assert!(error.starts_with("mem: truncated after "), "{error}");
                }
            }
        }

        #[test]
        fn fuzz_damaged_files(
            ng in any::<bool>(),
            flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..6),
            cut in any::<Index>(),
        ) {
            let mut bytes = if ng { valid_pcapng() } else { valid_pcap() };
            for (at, value) in flips {
                let at = at.index(bytes.len());
                bytes[at] = value;
            }
            let len = cut.index(bytes.len() + 1).max(bytes.len() / 2);
            read_anything(&bytes[..len]);
        }
    }
}
