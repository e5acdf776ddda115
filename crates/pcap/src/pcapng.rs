//! pcapng reading: sections (either byte order), interface descriptions with their link type,
//! snapshot length and timestamp resolution/offset, and the packet blocks (enhanced, simple,
//! obsolete). Written here rather than with `pcap-file`, which reads every timestamp as
//! nanoseconds and refuses valid interface blocks.

use std::ops::Range;
use std::time::Duration;

use crate::input::{damaged, read_u16, read_u32, read_u64, Fault, Input};
use crate::link::LinkType;
use crate::source::{Format, Frame};
use crate::MAX_RECORD;

pub(crate) struct PcapNgState {
    pub(crate) big_endian: bool,
    /// Interfaces of the current section, in the order of their description blocks.
    pub(crate) interfaces: Vec<Interface>,
    /// Timestamp of the last packet, for Simple Packet Blocks.
    pub(crate) last_timestamp: Duration,
}

pub(crate) struct Interface {
    pub(crate) link_type: u32,
    pub(crate) link: Option<LinkType>,
    pub(crate) snaplen: u32,
    /// `if_tsresol`: high bit clear = 10^-n seconds, set = 2^-n seconds.
    pub(crate) ts_resolution: u8,
    /// `if_tsoffset`, in seconds.
    pub(crate) ts_offset: i64,
}

pub(crate) const SECTION_HEADER: u32 = 0x0a0d_0d0a;
pub(crate) const INTERFACE_DESCRIPTION: u32 = 1;
pub(crate) const OBSOLETE_PACKET: u32 = 2;
pub(crate) const SIMPLE_PACKET: u32 = 3;
pub(crate) const ENHANCED_PACKET: u32 = 6;
pub(crate) const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

pub(crate) fn read_pcapng_header(input: &mut Input) -> Result<Format, Fault> {
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

/// A pcapng block: `body` indexes `Input::buf`.
pub(crate) struct Block {
    pub(crate) kind: u32,
    pub(crate) body: Range<usize>,
}

/// Frames the next pcapng block (its length fields checked); `None` at a clean end of file.
pub(crate) fn read_block(input: &mut Input, big_endian: bool) -> Result<Option<Block>, Fault> {
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
pub(crate) fn byte_order(magic: &[u8]) -> Option<bool> {
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
pub(crate) fn read_pcapng_packet(
    input: &mut Input,
    ng: &mut PcapNgState,
) -> Result<Option<Frame>, Fault> {
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

pub(crate) fn start_section(ng: &mut PcapNgState, body: &[u8]) -> Result<(), Fault> {
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

pub(crate) fn add_interface(ng: &mut PcapNgState, body: &[u8]) -> Result<(), Fault> {
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
pub(crate) fn for_each_option(
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
pub(crate) fn timed_packet(
    ng: &mut PcapNgState,
    kind: u32,
    body: &[u8],
) -> Result<BodyPacket, Fault> {
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
pub(crate) fn simple_packet(ng: &PcapNgState, body: &[u8]) -> Result<BodyPacket, Fault> {
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

pub(crate) fn interface(ng: &PcapNgState, id: u32) -> Result<&Interface, Fault> {
    let index = usize::try_from(id).unwrap_or(usize::MAX);
    ng.interfaces
        .get(index)
        .ok_or_else(|| damaged(format!("packet on interface {id}, which is not described")))
}

pub(crate) fn interface_timestamp(interface: &Interface, units: u64) -> Duration {
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
pub(crate) fn timestamp_units(units: u64, resolution: u8) -> Option<Duration> {
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
