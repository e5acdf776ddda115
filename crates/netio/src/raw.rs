//! Sending complete IP packets.
//!
//! Owns the raw sockets that put rewritten packets on the wire and the [`PacketSink`] trait the
//! drivers send through, so tests can swap in a [`MemorySink`]. The kernel routes each packet by
//! the destination address inside it; nothing here rewrites or checks the packet beyond reading
//! that address.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::sys;

/// Something that takes complete IP packets (IP header first).
pub trait PacketSink {
    /// Sends one packet, or queues it for the next [`PacketSink::flush`]; an error here is about
    /// this packet.
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
    /// Sends whatever `send` queued.
    fn flush(&mut self) -> Result<(), SendFailures> {
        Ok(())
    }
}

impl<S: PacketSink + ?Sized> PacketSink for &mut S {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        (**self).send(packet)
    }
    fn flush(&mut self) -> Result<(), SendFailures> {
        (**self).flush()
    }
}

/// Queued packets the kernel refused: how many, and the last reason.
#[derive(Debug)]
pub struct SendFailures {
    pub count: u64,
    pub last: io::Error,
}

impl SendFailures {
    /// Adds `count` failures, the latest for `last`, to what `slot` holds.
    pub(crate) fn add(slot: &mut Option<SendFailures>, count: u64, last: io::Error) {
        match slot {
            Some(f) => {
                f.count += count;
                f.last = last;
            }
            None => *slot = Some(SendFailures { count, last }),
        }
    }
}

/// Send buffer requested for the raw sockets (and the packet socket of [`crate::link`]): deep
/// enough to absorb a burst of replayed traffic.
pub(crate) const SEND_BUFFER: libc::c_int = 8 << 20;
/// How often a send that hit a full queue is retried before the packet counts as failed: after a
/// yield twice (the queue's reader may be a kernel thread waiting for this CPU), then after
/// pauses of [`RETRY_PAUSE`] (the kernel frees what it sent after an RCU grace period) while the
/// caller's [`Pauses`] last.
const RETRIES: u32 = 6;
const RETRY_PAUSE: Duration = Duration::from_micros(100);
/// Pausing for full queues, in all, per `send_all` or flush. The thread that sends also captures:
/// a capture ring that overflows loses client packets for good, while a packet the target missed
/// is retransmitted by its session. So a queue that stays full costs a packet, not the capture.
const PAUSE_BUDGET: Duration = Duration::from_millis(1);
/// IPv4 packets handed to the kernel per `sendmmsg` call.
const BATCH: usize = 64;
/// Destinations that get a connected socket of their own (a replication has a few targets).
const CONNECTED: usize = 8;
/// How long a destination whose connected socket failed sends through the shared socket.
const CONNECTED_REST: Duration = Duration::from_secs(1);

/// Raw `IPPROTO_RAW` sockets: the packet carries its own IP header (the kernel still fills in the
/// IPv4 header checksum, total length, and a zero ID or source address).
///
/// IPv4 packets go out in batches, one `sendmmsg` call for up to 64 of them: [`RawSender::send_all`]
/// straight from the caller's buffers, [`PacketSink::send`] queued until [`PacketSink::flush`] or
/// until the batch is full. IPv6 packets go out one by one.
#[derive(Debug)]
pub struct RawSender {
    out: V4Out,
    /// Opened on the first IPv6 packet, so hosts without IPv6 still work.
    v6: Option<Socket>,
    /// Packets `send` queued, back to back, where each ends, and each destination.
    queue: Vec<u8>,
    ends: Vec<usize>,
    dsts: Vec<libc::in_addr_t>,
}

/// The IPv4 sending side: sockets and what failed since the last flush.
#[derive(Debug)]
struct V4Out {
    shared: Socket,
    /// Raw IPv4 sockets connected to the most used destinations (up to [`CONNECTED`]): the kernel
    /// then looks their route up with the socket's source already known, which costs less (about
    /// 5% of tcpcopy's CPU per keep-alive request in the lab). A connected socket hits ENOBUFS
    /// under a load where the shared one does not (from about 170k packets/s on this VM): after
    /// that, or any other error but an oversized packet, it rests for [`CONNECTED_REST`].
    connected: Vec<Connected>,
    failures: Option<SendFailures>,
    pauses: Pauses,
}

impl RawSender {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            out: V4Out {
                shared: raw_socket(Domain::IPV4).map_err(sys::context("raw IPv4 socket"))?,
                connected: Vec::new(),
                failures: None,
                pauses: Pauses::new(),
            },
            v6: None,
            queue: Vec::with_capacity(BATCH * 1600),
            ends: Vec::with_capacity(BATCH),
            dsts: Vec::with_capacity(BATCH),
        })
    }

    /// Sends every packet without copying it first (IPv4 in `sendmmsg` batches), after whatever
    /// `send` queued; the packets a flush would report are reported here.
    pub fn send_all<'a>(
        &mut self,
        packets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), SendFailures> {
        self.out.pauses = Pauses::new();
        self.flush_v4();
        let mut batch: [&[u8]; BATCH] = [&[]; BATCH];
        let mut dsts = [0; BATCH];
        let mut n = 0;
        for packet in packets {
            match destination(packet) {
                Some(SocketAddr::V4(v4)) => {
                    batch[n] = packet;
                    dsts[n] = u32::from(*v4.ip()).to_be();
                    n += 1;
                    if n == BATCH {
                        self.out.send(&batch, &dsts);
                        n = 0;
                    }
                }
                Some(dst @ SocketAddr::V6(_)) => {
                    if let Err(e) = self.send_v6(packet, dst) {
                        self.out.fail(e);
                    }
                }
                None => self
                    .out
                    .fail(sys::invalid_input("not a complete IPv4 or IPv6 header")),
            }
        }
        self.out.send(&batch[..n], &dsts[..n]);
        self.out.take_failures()
    }

    /// Opens now the sockets sending to `dsts` will use (a connected IPv4 socket each, up to
    /// the limit, and the IPv6 socket), so that sending needs no capability later: a program
    /// that drops `CAP_NET_RAW` after setup keeps its fast path. An IPv4 destination whose
    /// socket cannot be made uses the shared one, as always.
    pub fn prepare(&mut self, dsts: &[std::net::IpAddr]) -> io::Result<()> {
        for dst in dsts {
            match dst {
                std::net::IpAddr::V4(a) => {
                    self.out.socket_for(u32::from(*a).to_be());
                }
                std::net::IpAddr::V6(_) if self.v6.is_none() => {
                    self.v6 =
                        Some(raw_socket(Domain::IPV6).map_err(sys::context("raw IPv6 socket"))?);
                }
                std::net::IpAddr::V6(_) => {}
            }
        }
        Ok(())
    }

    /// Destinations whose connected socket rests after a failed send (their packets take the
    /// shared socket until it is over).
    pub fn resting(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let now = Instant::now();
        self.out
            .connected
            .iter()
            .filter(move |c| c.rest_until.is_some_and(|t| now < t))
            .map(|c| Ipv4Addr::from(u32::from_be(c.dst)))
    }

    fn send_v6(&mut self, packet: &[u8], dst: SocketAddr) -> io::Result<()> {
        let socket = match &mut self.v6 {
            Some(socket) => socket,
            v6 => v6.insert(raw_socket(Domain::IPV6).map_err(sys::context("raw IPv6 socket"))?),
        };
        send_one(socket, packet, &SockAddr::from(dst), &mut self.out.pauses)
    }

    /// Hands every queued IPv4 packet to the kernel.
    fn flush_v4(&mut self) {
        let mut batch: [&[u8]; BATCH] = [&[]; BATCH];
        let mut start = 0;
        for (slot, &end) in batch.iter_mut().zip(&self.ends) {
            *slot = &self.queue[start..end];
            start = end;
        }
        self.out.send(&batch[..self.ends.len()], &self.dsts);
        self.queue.clear();
        self.ends.clear();
        self.dsts.clear();
    }
}

impl V4Out {
    fn fail(&mut self, e: io::Error) {
        SendFailures::add(&mut self.failures, 1, e);
    }

    fn take_failures(&mut self) -> Result<(), SendFailures> {
        self.failures.take().map_or(Ok(()), Err)
    }

    /// The socket for `dst`: a connected one when it has (or can get) one that is not resting.
    fn socket_for(&mut self, dst: libc::in_addr_t) -> (libc::c_int, bool) {
        if let Some(c) = self.connected.iter_mut().find(|c| c.dst == dst) {
            // The clock is read only while a socket rests, not for every batch.
            if c.rest_until.is_some_and(|t| Instant::now() >= t) {
                c.rest_until = None;
            }
            return match (&c.socket, c.rest_until) {
                (Some(socket), None) => (socket.as_raw_fd(), true),
                _ => (self.shared.as_raw_fd(), false),
            };
        }
        if self.connected.len() < CONNECTED {
            let addr = SockAddr::from(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(dst)), 0));
            let socket = raw_socket(Domain::IPV4)
                .and_then(|socket| socket.connect(&addr).map(|()| socket))
                .ok();
            let fd = socket.as_ref().map(|s| s.as_raw_fd());
            // A destination that cannot be connected stays on the shared socket for good.
            self.connected.push(Connected {
                dst,
                socket,
                rest_until: None,
            });
            if let Some(fd) = fd {
                return (fd, true);
            }
        }
        (self.shared.as_raw_fd(), false)
    }

    /// Sends `packets` (at most [`BATCH`]) to `dsts` (network byte order, one each): a run of
    /// packets to one destination per `sendmmsg` call, retrying a full queue a few times, and
    /// counting the packets that cannot go.
    fn send(&mut self, packets: &[&[u8]], dsts: &[libc::in_addr_t]) {
        debug_assert!(packets.len() <= BATCH && packets.len() == dsts.len());
        let mut done = 0;
        while done < packets.len() {
            let dst = dsts[done];
            let run = dsts[done..].iter().take_while(|&&d| d == dst).count();
            let (fd, connected) = self.socket_for(dst);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: dst },
                sin_zero: [0; 8],
            };
            let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..run {
                let packet = packets[done + i];
                iovs[i] = libc::iovec {
                    iov_base: packet.as_ptr().cast_mut().cast(),
                    iov_len: packet.len(),
                };
                if !connected {
                    msgs[i].msg_hdr.msg_name =
                        (&addr as *const libc::sockaddr_in).cast_mut().cast();
                    msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                }
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // `msgs[..run]` point at `addr`, `iovs` and the caller's packets, which all outlive
            // the call.
            let (sent, error) = send_batch(fd, &mut msgs[..run], &mut self.pauses);
            done += sent;
            let Some(e) = error else { continue };
            if connected && e.raw_os_error() != Some(libc::EMSGSIZE) {
                // A full queue or a route gone: the connected socket rests, and the rest of the
                // run goes again through the shared one.
                if let Some(c) = self.connected.iter_mut().find(|c| c.dst == dst) {
                    c.rest_until = Some(Instant::now() + CONNECTED_REST);
                }
                continue;
            }
            // This packet cannot go; the rest still may.
            self.fail(e);
            done += 1;
        }
    }
}

/// A raw socket connected to one destination.
#[derive(Debug)]
struct Connected {
    /// Network byte order.
    dst: libc::in_addr_t,
    /// `None`: the destination could not be connected; the shared socket serves it.
    socket: Option<Socket>,
    /// The shared socket serves the destination until then.
    rest_until: Option<Instant>,
}

/// What is left of the pausing a sender may do for full queues (see [`PAUSE_BUDGET`]).
#[derive(Debug)]
pub(crate) struct Pauses {
    left: Duration,
}

impl Pauses {
    pub(crate) fn new() -> Self {
        Pauses { left: PAUSE_BUDGET }
    }

    /// Waits before retry `attempt` of a send that hit a full queue; false when the send gives
    /// up (the retries or the budget are spent).
    fn before_retry(&mut self, attempt: &mut u32) -> bool {
        if *attempt >= RETRIES {
            return false;
        }
        *attempt += 1;
        if *attempt <= 2 {
            thread::yield_now();
            return true;
        }
        if self.left < RETRY_PAUSE {
            return false;
        }
        self.left -= RETRY_PAUSE;
        thread::sleep(RETRY_PAUSE);
        true
    }
}

/// Hands `msgs` to the kernel with as few `sendmmsg` calls as it takes, retrying an interrupted
/// call and, a few times, a full queue. Returns how many went, and the error that stopped the
/// next one (`msgs[sent]`) if any did.
///
/// Every message must point at memory that stays alive and unchanged for the call.
pub(crate) fn send_batch(
    fd: RawFd,
    msgs: &mut [libc::mmsghdr],
    pauses: &mut Pauses,
) -> (usize, Option<io::Error>) {
    let mut done = 0;
    let mut attempt = 0;
    while done < msgs.len() {
        let rest = &mut msgs[done..];
        // SAFETY: `fd` is an open socket of the caller's; every message in `rest` points at
        // buffers the caller keeps alive and unchanged for the call (see above); the kernel only
        // reads them and writes `msg_len` into `rest`.
        let rc = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if rc > 0 {
            done += rc as usize;
            attempt = 0;
            continue;
        }
        if rc == 0 {
            // Not expected for a non-empty batch; never spin on it.
            return (done, Some(io::Error::other("sendmmsg sent nothing")));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if is_queue_full(&e) && pauses.before_retry(&mut attempt) {
            continue;
        }
        return (done, Some(e));
    }
    (done, None)
}

impl PacketSink for RawSender {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        let dst = destination(packet)
            .ok_or_else(|| sys::invalid_input("not a complete IPv4 or IPv6 header"))?;
        match dst {
            SocketAddr::V4(v4) => {
                self.queue.extend_from_slice(packet);
                self.ends.push(self.queue.len());
                self.dsts.push(u32::from(*v4.ip()).to_be());
                if self.ends.len() == BATCH {
                    self.flush_v4();
                }
                Ok(())
            }
            SocketAddr::V6(_) => self.send_v6(packet, dst),
        }
    }

    fn flush(&mut self) -> Result<(), SendFailures> {
        self.flush_v4();
        self.out.pauses = Pauses::new();
        self.out.take_failures()
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn send_one(socket: &Socket, packet: &[u8], dst: &SockAddr, pauses: &mut Pauses) -> io::Result<()> {
    let mut attempt = 0;
    loop {
        match socket.send_to(packet, dst) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_queue_full(&e) && pauses.before_retry(&mut attempt) => {}
            Err(e) => return Err(e),
        }
    }
}

fn is_queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

fn raw_socket(domain: Domain) -> io::Result<Socket> {
    // For IPv6 too, IPPROTO_RAW implies IPV6_HDRINCL.
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    // Without IP_RECVERR a raw socket reports success for a packet the device dropped (a full
    // queue: ENOBUFS), and the session only finds out when it retransmits; with it, the send
    // fails and is retried here. An IPPROTO_RAW socket gets no ICMP errors; a packet over the
    // MTU also leaves an EMSGSIZE note on its error queue, which nobody reads and the receive
    // buffer caps.
    let (level, name) = match domain {
        Domain::IPV6 => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
        _ => (libc::IPPROTO_IP, libc::IP_RECVERR),
    };
    sys::setsockopt(socket.as_fd(), level, name, &1 as &libc::c_int)?;
    sys::set_send_buffer(socket.as_fd(), SEND_BUFFER)?;
    Ok(socket)
}

/// The destination address of an IPv4 or IPv6 packet, port 0 (raw sockets ignore it).
fn destination(packet: &[u8]) -> Option<SocketAddr> {
    match packet.first()? >> 4 {
        4 => {
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(dst), 0).into())
        }
        6 => {
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(SocketAddrV6::new(Ipv6Addr::from(dst), 0, 0, 0).into())
        }
        _ => None,
    }
}

/// Collects packets in memory, for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemorySink(pub Vec<Vec<u8>>);

impl PacketSink for MemorySink {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.push(packet.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_comes_from_the_header() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[198, 18, 0, 1]);
        assert_eq!(destination(&v4), Some("198.18.0.1:0".parse().unwrap()));
        assert_eq!(destination(&v4[..19]), None);

        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[24..40].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(destination(&v6), Some("[2001:db8::7]:0".parse().unwrap()));
        assert_eq!(destination(&v6[..39]), None);

        assert_eq!(destination(&[]), None);
        assert_eq!(destination(&[0x55; 40]), None);
    }

    #[test]
    fn memory_sink_keeps_packets_in_order() {
        fn feed(mut sink: impl PacketSink) {
            sink.send(b"one").unwrap();
            sink.send(b"two").unwrap();
        }
        let mut sink = MemorySink::default();
        feed(&mut sink);
        assert_eq!(sink.0, [b"one".to_vec(), b"two".to_vec()]);
    }
}
