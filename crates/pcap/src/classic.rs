//! Classic pcap: the file header (the `pcap-file` crate parses it) and each record, with its
//! micro- or nanosecond timestamp. The record check is ours: `pcap-file` refuses records whose
//! wire length exceeds the snapshot length.

use std::time::Duration;

use crate::input::{damaged, read_u32, Fault, Input};
use crate::link::LinkType;
use crate::source::{Format, Frame};
use crate::MAX_RECORD;
use pcap_file::pcap::PcapParser;
use pcap_file::{Endianness, PcapError, TsResolution};

pub(crate) struct PcapState {
    pub(crate) parser: PcapParser,
    pub(crate) link: LinkType,
    pub(crate) nanos: bool,
    pub(crate) big_endian: bool,
}

pub(crate) const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
pub(crate) const PCAP_HEADER_LEN: usize = 24;
pub(crate) const PCAP_RECORD_HEADER_LEN: usize = 16;

pub(crate) fn read_pcap_header(input: &mut Input) -> Result<Format, Fault> {
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

/// The next record of a classic pcap file; `None` at a clean end of file.
pub(crate) fn read_pcap_record(
    input: &mut Input,
    pcap: &PcapState,
) -> Result<Option<Frame>, Fault> {
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
            pcap_timestamp(raw.ts_sec, raw.ts_frac, pcap.nanos)?,
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

/// Seconds plus a fraction in micro- or nanoseconds. A fraction of a second or more is damage: a
/// replay would otherwise wait for it (tcpdump's timestamp_invalid_micro.pcap: an hour).
pub(crate) fn pcap_timestamp(seconds: u32, fraction: u32, nanos: bool) -> Result<Duration, Fault> {
    let (unit, per_second) = if nanos {
        ("nanoseconds", 1_000_000_000)
    } else {
        ("microseconds", 1_000_000)
    };
    if fraction >= per_second {
        return Err(damaged(format!(
            "invalid timestamp ({fraction} {unit} in a second)"
        )));
    }
    let nanos = u64::from(fraction) * u64::from(1_000_000_000 / per_second);
    Ok(Duration::from_secs(u64::from(seconds)) + Duration::from_nanos(nanos))
}
