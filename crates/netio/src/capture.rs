//! Packet capture through an `AF_PACKET` `TPACKET_V3` receive ring.
//!
//! Owns the packet socket, its memory-mapped ring of blocks, and the walk over the packets of each
//! block the kernel hands over. Every offset the kernel writes into a block is checked against the
//! block before a slice is made; a packet that fails the check is skipped and counted in
//! [`CaptureStats::malformed`]. The socket is `SOCK_DGRAM`, so packets start at the network header;
//! nothing here looks inside them.

use std::ffi::CString;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use libc::{sockaddr_ll, tpacket3_hdr, tpacket_block_desc, tpacket_hdr_v1};

use crate::bpf::{self, Insn};
use crate::sys;

/// Where and how to capture.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Interface to capture on; `None` captures on all of them.
    pub interface: Option<String>,
    /// Filter program (see [`bpf::TcpFilter`]), attached before the socket starts receiving so no
    /// unfiltered packet reaches the ring. Empty = no filter.
    pub filter: Vec<Insn>,
    /// Bytes per block: a power of two, at least the page size.
    pub block_size: usize,
    pub block_count: usize,
    /// Frame size the kernel accounts with (`TPACKET_V3` packs packets tighter than this): a
    /// multiple of 16, at least the per-packet header size.
    pub frame_size: usize,
    /// How long the kernel keeps a partly filled block before handing it over; this bounds the
    /// capture latency at low packet rates.
    pub block_timeout_ms: u32,
    /// Join this `PACKET_FANOUT` group (flow-hash mode) so several rings share the traffic.
    pub fanout: Option<u16>,
    /// Leave packets this host sends out of the ring (`PACKET_IGNORE_OUTGOING`): the kernel then
    /// skips the socket for them before running the filter, which a busy sender pays per packet.
    pub ignore_outgoing: bool,
}

impl Default for RingConfig {
    /// 64 MiB in 512 blocks of 128 KiB. The block count is what matters under load: at a 1 ms
    /// timeout every block goes to user space after at most 1 ms however little it holds, so the
    /// ring absorbs about `block_count` ms of a stalled reader, whatever the block size. 128 KiB
    /// still holds the largest super-segment (64 KiB) a TSO/GRO capture shows.
    fn default() -> Self {
        Self {
            interface: None,
            filter: Vec::new(),
            block_size: 128 << 10,
            block_count: 512,
            frame_size: 2048,
            block_timeout_ms: 1,
            fanout: None,
            ignore_outgoing: false,
        }
    }
}

/// One packet as the kernel stored it in the ring; `data` borrows the ring.
#[derive(Clone, Copy, Debug)]
pub struct CapturedPacket<'a> {
    /// Network-layer bytes (IP header first), possibly cut short: `wire_len` tells the real size.
    pub data: &'a [u8],
    pub wire_len: u32,
    /// Ethertype in host order, e.g. `0x0800` or `0x86dd`.
    pub protocol: u16,
    /// `PACKET_HOST` (0), `PACKET_OUTGOING` (4), ...
    pub pkttype: u8,
    pub ifindex: i32,
    /// Kernel receive time since the UNIX epoch.
    pub timestamp: Duration,
}

/// Cumulative counters since the ring was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets that passed the filter, including the dropped ones.
    pub packets: u64,
    /// Packets the kernel dropped because the ring was full.
    pub drops: u64,
    /// Packets skipped because their ring header pointed outside their block.
    pub malformed: u64,
}

/// An open capture ring. Dropping it unmaps the ring and closes the socket.
#[derive(Debug)]
pub struct RingCapture {
    fd: OwnedFd,
    ring: NonNull<u8>,
    block_size: usize,
    block_count: usize,
    /// The oldest block not yet returned to the kernel; the kernel fills blocks in ring order.
    next: usize,
    totals: CaptureStats,
}

// SAFETY: the mapping is owned by this value alone and every access goes through `&mut self`, so
// moving the value to another thread moves all access with it.
unsafe impl Send for RingCapture {}

/// Offset of the `sockaddr_ll` behind each packet header: `TPACKET_ALIGN(sizeof(tpacket3_hdr))`.
const SLL_OFFSET: usize = size_of::<tpacket3_hdr>().next_multiple_of(libc::TPACKET_ALIGNMENT);
const FRAME_HEADER: usize = SLL_OFFSET + size_of::<sockaddr_ll>();
const BLOCK_HEADER: usize = offset_of!(tpacket_block_desc, hdr);

impl RingCapture {
    /// Opens the socket, attaches the filter, maps the ring and only then starts receiving.
    pub fn open(cfg: &RingConfig) -> io::Result<Self> {
        let name = cfg.interface.as_deref().unwrap_or("all interfaces");
        Self::open_on(cfg).map_err(sys::context(format_args!("capture on {name}")))
    }

    fn open_on(cfg: &RingConfig) -> io::Result<Self> {
        let req = ring_request(cfg)?;
        if cfg.filter.len() > bpf::MAX_INSNS {
            return Err(sys::invalid_input(format!(
                "filter has {} instructions, the kernel allows {}",
                cfg.filter.len(),
                bpf::MAX_INSNS
            )));
        }
        let ifindex = match &cfg.interface {
            Some(name) => interface_index(name)?,
            None => 0,
        };

        // Protocol 0: the socket receives nothing until `bind` names one, so no packet can arrive
        // before the filter is in place and nothing needs draining.
        // SAFETY: plain socket(2) call with constant arguments.
        let fd = sys::check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        sys::setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        if cfg.fanout.is_some() {
            // A member of a fanout group takes nothing until `start`: until then it would take
            // packets outside the group (before it joins), and the group's hash changes with
            // every member that joins, splitting the connections that start meanwhile.
            attach_filter(fd.as_fd(), &[DROP_ALL])?;
        } else if !cfg.filter.is_empty() {
            attach_filter(fd.as_fd(), &cfg.filter)?;
        }
        sys::setsockopt(fd.as_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(sys::context("set up ring"))?;
        if cfg.ignore_outgoing {
            // Linux 4.20+; older kernels keep delivering them, and the filter drops them there.
            const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
            let on: libc::c_int = 1;
            let _ = sys::setsockopt(fd.as_fd(), libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &on);
        }

        let len = cfg.block_size * cfg.block_count;
        // SAFETY: maps the ring the kernel just allocated for this socket, at a fresh address; the
        // length is exactly block_size * block_count as requested.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(sys::context("map ring")(io::Error::last_os_error()));
        }
        // From here on `Drop` unmaps the ring on any error.
        let capture = Self {
            fd,
            ring: NonNull::new(ring.cast()).ok_or_else(|| io::Error::other("ring mapped at 0"))?,
            block_size: cfg.block_size,
            block_count: cfg.block_count,
            next: 0,
            totals: CaptureStats::default(),
        };

        let addr = sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `addr` is a valid sockaddr_ll and we pass its exact size.
        sys::check(unsafe {
            libc::bind(
                capture.fd.as_raw_fd(),
                (&addr as *const sockaddr_ll).cast(),
                size_of::<sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(sys::context("bind"))?;

        // The kernel only lets a bound socket join a fanout group.
        if let Some(group) = cfg.fanout {
            let arg = libc::c_int::from(group) | (libc::PACKET_FANOUT_HASH as libc::c_int) << 16;
            sys::setsockopt(
                capture.fd.as_fd(),
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                &arg,
            )
            .map_err(sys::context(format_args!("join fanout group {group}")))?;
        }
        Ok(capture)
    }

    /// Waits up to `timeout` for at least one full (or timed-out) block, then hands every packet of
    /// every ready block to `f` and returns the blocks to the kernel. Returns the number of packets
    /// delivered: 0 on timeout or when a signal interrupted the wait.
    pub fn poll_batch(
        &mut self,
        timeout: Duration,
        f: impl FnMut(&CapturedPacket<'_>),
    ) -> io::Result<usize> {
        if !self.ready(self.next) {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout
                .as_nanos()
                .div_ceil(1_000_000)
                .min(libc::c_int::MAX as u128);
            // SAFETY: `pfd` is one valid pollfd, and we pass a count of 1.
            if let Err(e) = sys::check(unsafe { libc::poll(&mut pfd, 1, ms as libc::c_int) }) {
                return if e.kind() == io::ErrorKind::Interrupted {
                    Ok(0)
                } else {
                    Err(e)
                };
            }
            // E.g. ENETDOWN when the interface goes away; reading SO_ERROR clears it.
            if pfd.revents & libc::POLLERR != 0 {
                let mut err: libc::c_int = 0;
                sys::getsockopt(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR, &mut err)?;
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(err));
                }
            }
        }
        Ok(self.drain_ready(f))
    }

    /// Hands every packet of every block ready now to `f` and returns the blocks to the kernel,
    /// without waiting (for callers that wait on the descriptor themselves, e.g. with epoll).
    /// Returns the number of packets delivered.
    pub fn drain_ready(&mut self, mut f: impl FnMut(&CapturedPacket<'_>)) -> usize {
        let mut delivered = 0;
        for _ in 0..self.block_count {
            if !self.ready(self.next) {
                break;
            }
            delivered += self.walk_block(self.next, &mut f);
            self.block_status(self.next)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.next = (self.next + 1) % self.block_count;
        }
        delivered
    }

    /// The socket's pending error (e.g. ENETDOWN when the interface went away), cleared by reading.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut err: libc::c_int = 0;
        sys::getsockopt(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR, &mut err)?;
        Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
    }

    /// For a ring in a fanout group: puts `filter` in place of the drop-all filter it was opened
    /// with, so that it starts taking packets. Call it once every member of the group is open.
    pub fn start(&mut self, filter: &[Insn]) -> io::Result<()> {
        self.set_filter(filter)
    }

    /// Replaces the filter while the ring runs (the kernel swaps it at once), e.g. with another
    /// snap length. Packets already in the ring stay as the old filter cut them. Empty = none.
    pub fn set_filter(&mut self, filter: &[Insn]) -> io::Result<()> {
        if filter.is_empty() {
            let off: libc::c_int = 0;
            return sys::setsockopt(
                self.fd.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                &off,
            )
            .map_err(sys::context("detach filter"));
        }
        attach_filter(self.fd.as_fd(), filter)
    }

    /// Counters since the ring was opened (the kernel resets its own on every read).
    pub fn stats(&mut self) -> io::Result<CaptureStats> {
        let mut s = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        sys::getsockopt(
            self.fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut s,
        )?;
        self.totals.packets += u64::from(s.tp_packets);
        self.totals.drops += u64::from(s.tp_drops);
        Ok(self.totals)
    }

    fn block_status(&self, block: usize) -> &AtomicU32 {
        let offset =
            block * self.block_size + BLOCK_HEADER + offset_of!(tpacket_hdr_v1, block_status);
        // SAFETY: `block < block_count`, so the field lies inside the mapping, and it is 4-aligned
        // because blocks are page-aligned. Both the kernel and we only ever access it as a whole
        // aligned u32, and the mapping outlives the returned reference (it borrows `self`).
        unsafe { AtomicU32::from_ptr(self.ring.as_ptr().add(offset).cast()) }
    }

    fn ready(&self, block: usize) -> bool {
        self.block_status(block).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Delivers the packets of a block that `ready` reported as ours.
    fn walk_block(&mut self, block: usize, f: &mut impl FnMut(&CapturedPacket<'_>)) -> usize {
        // SAFETY: the block lies inside the mapping, and while its status says TP_STATUS_USER the
        // kernel does not write to it; the slice dies before we hand the block back.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                self.ring.as_ptr().add(block * self.block_size),
                self.block_size,
            )
        };
        let field = |name: usize| read_u32(bytes, BLOCK_HEADER + name).unwrap_or(0);
        let packets = field(offset_of!(tpacket_hdr_v1, num_pkts));
        let mut offset = field(offset_of!(tpacket_hdr_v1, offset_to_first_pkt)) as usize;
        let used = (field(offset_of!(tpacket_hdr_v1, blk_len)) as usize).min(bytes.len());
        let bytes = &bytes[..used];

        let mut delivered = 0;
        for seen in 0..packets {
            let Some((packet, next)) = read_frame(bytes, offset) else {
                self.totals.malformed += u64::from(packets - seen);
                break;
            };
            match packet {
                Some(packet) => {
                    f(&packet);
                    delivered += 1;
                }
                None => self.totals.malformed += 1,
            }
            if next == 0 {
                self.totals.malformed += u64::from(packets - seen - 1);
                break;
            }
            offset += next as usize;
        }
        delivered
    }
}

impl Drop for RingCapture {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no slice into it can outlive `self`.
        unsafe {
            libc::munmap(
                self.ring.as_ptr().cast(),
                self.block_size * self.block_count,
            )
        };
    }
}

impl AsRawFd for RingCapture {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for RingCapture {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `ret #0`: take nothing.
const DROP_ALL: Insn = Insn {
    code: (libc::BPF_RET | libc::BPF_K) as u16,
    jt: 0,
    jf: 0,
    k: 0,
};

fn attach_filter(fd: std::os::fd::BorrowedFd<'_>, filter: &[Insn]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // The kernel copies the program during the call; `filter` outlives it.
    sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
        .map_err(sys::context("attach filter"))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(raw.try_into().ok()?))
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(raw.try_into().ok()?))
}

/// Reads the frame at `offset` of a block. `None` if even its header is out of bounds; otherwise
/// the packet (`None` if its data is out of bounds) and the offset of the next frame.
fn read_frame(block: &[u8], offset: usize) -> Option<(Option<CapturedPacket<'_>>, u32)> {
    let frame = block.get(offset..)?;
    if frame.len() < FRAME_HEADER {
        return None;
    }
    let hdr = |name: usize| read_u32(frame, name);
    let next = hdr(offset_of!(tpacket3_hdr, tp_next_offset))?;
    let packet = (|| {
        let net = usize::from(read_u16(frame, offset_of!(tpacket3_hdr, tp_net))?);
        let snaplen = hdr(offset_of!(tpacket3_hdr, tp_snaplen))? as usize;
        let sll = &frame[SLL_OFFSET..];
        Some(CapturedPacket {
            data: frame.get(net..net.checked_add(snaplen)?)?,
            wire_len: hdr(offset_of!(tpacket3_hdr, tp_len))?,
            protocol: u16::from_be(read_u16(sll, offset_of!(sockaddr_ll, sll_protocol))?),
            pkttype: *sll.get(offset_of!(sockaddr_ll, sll_pkttype))?,
            ifindex: read_u32(sll, offset_of!(sockaddr_ll, sll_ifindex))? as i32,
            timestamp: Duration::new(
                hdr(offset_of!(tpacket3_hdr, tp_sec))?.into(),
                hdr(offset_of!(tpacket3_hdr, tp_nsec))?,
            ),
        })
    })();
    Some((packet, next))
}

/// Checks the geometry the kernel would reject with a bare EINVAL, and says what is wrong.
fn ring_request(cfg: &RingConfig) -> io::Result<libc::tpacket_req3> {
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let RingConfig {
        block_size,
        block_count,
        frame_size,
        ..
    } = *cfg;
    if !block_size.is_power_of_two() || block_size < page || block_size > i32::MAX as usize {
        return Err(sys::invalid_input(format!(
            "block_size {block_size} must be a power of two, at least the page size ({page})"
        )));
    }
    if frame_size % libc::TPACKET_ALIGNMENT != 0
        || frame_size < FRAME_HEADER
        || frame_size > block_size
    {
        return Err(sys::invalid_input(format!(
            "frame_size {frame_size} must be a multiple of {} between {FRAME_HEADER} and block_size",
            libc::TPACKET_ALIGNMENT
        )));
    }
    let frames = (block_size / frame_size).checked_mul(block_count);
    let total = block_size.checked_mul(block_count);
    let (Some(frames), Some(_), Ok(blocks)) = (frames, total, u32::try_from(block_count)) else {
        return Err(sys::invalid_input(format!(
            "block_count {block_count} is too large"
        )));
    };
    let frames = u32::try_from(frames)
        .map_err(|_| sys::invalid_input(format!("block_count {block_count} is too large")))?;
    if blocks == 0 {
        return Err(sys::invalid_input("block_count must be at least 1"));
    }
    Ok(libc::tpacket_req3 {
        tp_block_size: block_size as u32,
        tp_block_nr: blocks,
        tp_frame_size: frame_size as u32,
        tp_frame_nr: frames,
        tp_retire_blk_tov: cfg.block_timeout_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    })
}

pub(crate) fn interface_index(name: &str) -> io::Result<i32> {
    let c_name =
        CString::new(name).map_err(|_| sys::invalid_input("interface name contains NUL"))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(sys::context("no such interface")(io::Error::last_os_error()));
    }
    i32::try_from(index).map_err(|_| sys::invalid_input("interface index out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_layout_matches_the_kernel() {
        // From include/uapi/linux/if_packet.h: TPACKET3_HDRLEN and the block header offsets.
        assert_eq!(FRAME_HEADER, libc::TPACKET3_HDRLEN);
        assert_eq!(FRAME_HEADER, 68);
        assert_eq!(BLOCK_HEADER, 8);
        assert_eq!(offset_of!(tpacket_hdr_v1, block_status), 0);
        assert_eq!(offset_of!(tpacket_hdr_v1, num_pkts), 4);
        assert_eq!(offset_of!(tpacket_hdr_v1, offset_to_first_pkt), 8);
        assert_eq!(offset_of!(tpacket_hdr_v1, blk_len), 12);
        assert_eq!(offset_of!(tpacket3_hdr, tp_snaplen), 12);
        assert_eq!(offset_of!(tpacket3_hdr, tp_net), 26);
        assert_eq!(size_of::<libc::tpacket_req3>(), 28);
    }

    #[test]
    fn bad_geometry_names_the_field() {
        let check = |cfg: RingConfig, field: &str| {
            let err = ring_request(&cfg).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains(field), "{err}");
        };
        let ok = RingConfig::default();
        assert!(ring_request(&ok).is_ok());
        check(
            RingConfig {
                block_size: 3 << 12,
                ..ok.clone()
            },
            "block_size",
        );
        check(
            RingConfig {
                block_size: 1024,
                ..ok.clone()
            },
            "block_size",
        );
        check(
            RingConfig {
                frame_size: 2040,
                ..ok.clone()
            },
            "frame_size",
        );
        check(
            RingConfig {
                frame_size: 48,
                ..ok.clone()
            },
            "frame_size",
        );
        check(
            RingConfig {
                block_count: 0,
                ..ok.clone()
            },
            "block_count",
        );
        check(
            RingConfig {
                block_count: usize::MAX,
                ..ok
            },
            "block_count",
        );
    }

    #[test]
    fn unknown_interface_is_named() {
        let cfg = RingConfig {
            interface: Some("nope0".into()),
            ..Default::default()
        };
        let err = RingCapture::open(&cfg).unwrap_err();
        assert!(err.to_string().contains("nope0"), "{err}");
    }

    fn frame(next: u32, net: u16, snaplen: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[0..4].copy_from_slice(&next.to_ne_bytes());
        f[12..16].copy_from_slice(&snaplen.to_ne_bytes());
        f[16..20].copy_from_slice(&snaplen.to_ne_bytes());
        f[26..28].copy_from_slice(&net.to_ne_bytes());
        f[SLL_OFFSET + 2..SLL_OFFSET + 4].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    #[test]
    fn frames_pointing_outside_the_block_are_skipped() {
        let good = frame(0, 80, 20, 100);
        let (packet, next) = read_frame(&good, 0).unwrap();
        let packet = packet.unwrap();
        assert_eq!((packet.data.len(), packet.protocol, next), (20, 0x0800, 0));

        for bad in [frame(0, 80, 21, 100), frame(0, u16::MAX, u32::MAX, 100)] {
            let (packet, _) = read_frame(&bad, 0).unwrap();
            assert!(packet.is_none(), "data runs past the block");
        }
        assert!(
            read_frame(&good, 40).is_none(),
            "header runs past the block"
        );
        assert!(read_frame(&good, usize::MAX).is_none());
    }
}
