//! Sending IPv4 packets at the link layer (`--send-layer link`, `-o DEV`).
//!
//! A raw IP socket ([`RawSender`]) makes the kernel route every packet on its own: a raw socket
//! that writes its own IP header gets no cached route, so each packet pays a route lookup, a
//! fresh route entry, the IP output path and the neighbour output. [`LinkSender`] asks the kernel
//! once per destination (netlink: route, device, neighbour entry), checks the answer again every
//! [`CHECK_EVERY`], and hands the packets straight to the device through one `AF_PACKET` socket,
//! in `sendmmsg` batches, with the next hop's hardware address put in front by the device.
//!
//! Whatever cannot go that way goes through a [`RawSender`], as before:
//! - IPv6, and anything that is not a complete IPv4 header;
//! - destinations whose route is not a unicast route out of an Ethernet-type device that is up
//!   (local addresses, loopback, blackholes, layer-3 tunnels, lightweight encapsulations), or
//!   not out of the device the caller named, or whose next hop needs no ARP (NOARP);
//! - destinations whose next hop the kernel has not resolved yet: the routed packet makes the
//!   kernel resolve it, and the next check (after 2 ms, doubling) finds it;
//! - packets larger than the device's MTU (the kernel refuses them with the same error either way);
//! - a packet the device refused; the destination is then checked again on its next packet.
//!
//! The kernel sees none of the link-layer packets, so it would let the neighbour entry go stale
//! and stay so. A check that finds it stale tells the kernel it is in use (`NTF_USE`), and the
//! kernel confirms it with a probe. Where that is not allowed (no CAP_NET_ADMIN), or the entry is
//! managed by another program (`extern_learn`, `managed`: the request would clear those flags),
//! the packet of the check is routed instead, which makes the kernel confirm it.
//!
//! Order is kept up to the system calls: a run of link-layer packets is handed to the kernel
//! before a routed packet that follows it, and the other way round. (On a multi-queue device the
//! two paths may pick different transmit queues.)
//!
//! What the link layer skips, which is why it is not the default: the host's netfilter OUTPUT
//! and POSTROUTING chains, IPsec (xfrm) policies, routing by firewall mark, IP fragmentation
//! (our packets carry DF and fit the MTU anyway), and the IP ID the kernel fills in for routed
//! packets (ours carry 0, allowed for DF packets by RFC 6864). A changed route or next-hop
//! address is seen at the next check, up to [`CHECK_EVERY`] later.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::raw::{send_batch, PacketSink, Pauses, RawSender, SendFailures, SEND_BUFFER};
use crate::sys;

/// How long a destination's route and next hop are trusted before they are looked up again.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How soon a destination is looked up again while the kernel is still resolving its next hop;
/// the wait doubles with every miss, up to [`CHECK_EVERY`].
const CHECK_UNRESOLVED: Duration = Duration::from_millis(2);
/// Destinations remembered; more than this (a replication has a few targets) are routed.
const MAX_HOPS: usize = 64;
/// Packets per `sendmmsg` call.
const BATCH: usize = 64;
/// How long a netlink answer may take to be read (the kernel answers within the send, so this is
/// a guard, not a wait; the send itself may wait for the kernel's routing lock); a destination
/// whose lookup timed out is routed until the next check.
const NETLINK_TIMEOUT: Duration = Duration::from_millis(50);
const ETH_P_IP: u16 = 0x0800;

/// Packets sent by each path since the sender opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendCounts {
    /// Handed to the device through the packet socket.
    pub link: u64,
    /// Routed by the kernel (raw IP socket).
    pub routed: u64,
}

/// The device and hardware address a destination's packets are handed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub device: String,
    pub mac: [u8; 6],
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.mac;
        write!(
            f,
            "{} to {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            self.device, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Sends IPv4 packets at the link layer where it can, everything else through a [`RawSender`];
/// see the [module docs](self).
#[derive(Debug)]
pub struct LinkSender {
    socket: OwnedFd,
    resolver: Resolver,
    /// Only this device is used at the link layer, when set.
    device: Option<String>,
    hops: Vec<Hop>,
    ip: RawSender,
    /// Packets `send` queued, back to back, and where each ends.
    queue: Vec<u8>,
    ends: Vec<usize>,
    failures: Option<SendFailures>,
    counts: SendCounts,
    pauses: Pauses,
    /// A destination's way out changed since [`LinkSender::take_change`] was last asked.
    changed: bool,
}

/// What we know of one destination.
#[derive(Debug)]
struct Hop {
    /// Network byte order.
    dst: libc::in_addr_t,
    via: Option<Via>,
    /// The device `via` goes out of.
    device: String,
    check_at: Instant,
    /// Lookups in a row that found the next hop unresolved.
    misses: u32,
}

impl Hop {
    /// How long until the next check, after one that found `found`: a next hop the kernel is
    /// still resolving is looked at again sooner, after 2 ms, doubling with every miss in a row.
    fn next_check(&mut self, found: &Found) -> Duration {
        if let Found::Unresolved = found {
            let wait = CHECK_UNRESOLVED.saturating_mul(1 << self.misses.min(16));
            self.misses += 1;
            wait.min(CHECK_EVERY)
        } else {
            self.misses = 0;
            CHECK_EVERY
        }
    }
}

/// Where a destination's packets go at the link layer.
#[derive(Clone, Copy)]
struct Via {
    addr: libc::sockaddr_ll,
    mtu: usize,
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mac = &self.addr.sll_addr[..6];
        f.debug_struct("Via")
            .field("ifindex", &self.addr.sll_ifindex)
            .field("mac", &mac)
            .field("mtu", &self.mtu)
            .finish()
    }
}

/// The packets of one `send_all` call on their way out: a run for one path at a time.
struct Runs<'a> {
    link: [&'a [u8]; BATCH],
    addrs: [libc::sockaddr_ll; BATCH],
    /// Which hop each link-layer packet belongs to.
    hops: [usize; BATCH],
    link_len: usize,
    routed: [&'a [u8]; BATCH],
    routed_len: usize,
}

impl LinkSender {
    /// Opens the packet socket, the netlink socket and the raw sockets, in the calling thread's
    /// network namespace. With `device`, only that device is used at the link layer (`-o`).
    pub fn open(device: Option<&str>) -> io::Result<Self> {
        // Protocol 0: the socket only sends, nothing is ever queued to it.
        // SAFETY: plain socket(2) call with constant arguments.
        let fd = sys::check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })
        .map_err(sys::context("packet socket"))?;
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        sys::set_send_buffer(socket.as_fd(), SEND_BUFFER)?;
        Ok(Self {
            socket,
            resolver: Resolver::open().map_err(sys::context("netlink socket"))?,
            device: device.map(str::to_owned),
            hops: Vec::new(),
            ip: RawSender::open()?,
            queue: Vec::with_capacity(BATCH * 1600),
            ends: Vec::with_capacity(BATCH),
            failures: None,
            counts: SendCounts::default(),
            pauses: Pauses::new(),
            changed: false,
        })
    }

    /// Packets sent by each path so far.
    /// See [`RawSender::prepare`]: the sockets for what goes through the kernel.
    pub fn prepare(&mut self, dsts: &[std::net::IpAddr]) -> io::Result<()> {
        self.ip.prepare(dsts)
    }

    pub fn counts(&self) -> SendCounts {
        self.counts
    }

    /// Whether a destination's way out changed (found, lost, another device or next hop) since
    /// the last call: time to log [`LinkSender::next_hops`].
    pub fn take_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Where each known destination is sent at the link layer (`None`: routed by the kernel),
    /// for logs and tests.
    pub fn next_hops(&self) -> Vec<(Ipv4Addr, Option<NextHop>)> {
        self.hops
            .iter()
            .map(|h| {
                let via = h.via.map(|v| {
                    let mut mac = [0; 6];
                    mac.copy_from_slice(&v.addr.sll_addr[..6]);
                    NextHop {
                        ifindex: v.addr.sll_ifindex as u32,
                        device: h.device.clone(),
                        mac,
                    }
                });
                (Ipv4Addr::from(u32::from_be(h.dst)), via)
            })
            .collect()
    }

    /// Sends every packet, in order, without copying it first, after whatever `send` queued;
    /// the packets that could not go by either path are reported here.
    pub fn send_all<'a>(
        &mut self,
        packets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), SendFailures> {
        self.pauses = Pauses::new();
        let mut queued = std::mem::take(&mut self.queue);
        let mut ends = std::mem::take(&mut self.ends);
        if !ends.is_empty() {
            let mut start = 0;
            self.send_in_order(ends.iter().map(|&end| {
                let packet = &queued[start..end];
                start = end;
                packet
            }));
            queued.clear();
            ends.clear();
        }
        self.queue = queued;
        self.ends = ends;
        self.send_in_order(packets.into_iter());
        self.failures.take().map_or(Ok(()), Err)
    }

    /// Sends `packets` in order; what fails is added to `self.failures`.
    fn send_in_order<'a>(&mut self, packets: impl Iterator<Item = &'a [u8]>) {
        let now = Instant::now();
        let mut runs = Runs {
            link: [&[]; BATCH],
            // SAFETY: an all-zero sockaddr_ll is valid plain data.
            addrs: unsafe { std::mem::zeroed() },
            hops: [0; BATCH],
            link_len: 0,
            routed: [&[]; BATCH],
            routed_len: 0,
        };
        for packet in packets {
            match self.link_path(packet, now) {
                Some((hop, addr)) => {
                    if runs.routed_len > 0 {
                        self.send_routed(&mut runs);
                    }
                    let n = runs.link_len;
                    runs.link[n] = packet;
                    runs.addrs[n] = addr;
                    runs.hops[n] = hop;
                    runs.link_len += 1;
                    if runs.link_len == BATCH {
                        self.send_link(&mut runs, now);
                    }
                }
                None => {
                    if runs.link_len > 0 {
                        self.send_link(&mut runs, now);
                    }
                    runs.routed[runs.routed_len] = packet;
                    runs.routed_len += 1;
                    if runs.routed_len == BATCH {
                        self.send_routed(&mut runs);
                    }
                }
            }
        }
        self.send_link(&mut runs, now);
        self.send_routed(&mut runs);
    }

    /// The hop and link-layer address `packet` goes to, or `None` when it is to be routed.
    fn link_path(&mut self, packet: &[u8], now: Instant) -> Option<(usize, libc::sockaddr_ll)> {
        if packet.len() < 20 || packet[0] >> 4 != 4 {
            return None;
        }
        let dst = u32::from_ne_bytes(packet[16..20].try_into().ok()?);
        let i = match self.hops.iter().position(|h| h.dst == dst) {
            Some(i) => i,
            None if self.hops.len() < MAX_HOPS => {
                self.hops.push(Hop {
                    dst,
                    via: None,
                    device: String::new(),
                    check_at: now,
                    misses: 0,
                });
                self.hops.len() - 1
            }
            None => return None,
        };
        let hop = &mut self.hops[i];
        if now >= hop.check_at {
            let found = self
                .resolver
                .lookup(Ipv4Addr::from(u32::from_be(dst)), self.device.as_deref());
            hop.check_at = now + hop.next_check(&found);
            let (via, route_this) = match found {
                Found::Link {
                    via,
                    device,
                    confirmed,
                } => {
                    hop.device = device;
                    (Some(via), !confirmed)
                }
                Found::Routed | Found::Unresolved => (None, true),
            };
            let key = |v: Option<Via>| v.map(|v| (v.addr.sll_ifindex, v.addr.sll_addr));
            if key(hop.via) != key(via) {
                self.changed = true;
            }
            hop.via = via;
            if route_this {
                return None;
            }
        }
        let via = hop.via?;
        (packet.len() <= via.mtu).then_some((i, via.addr))
    }

    /// Sends the run of link-layer packets; one the device refuses is routed instead, and its
    /// destination looked up again on its next packet.
    fn send_link(&mut self, runs: &mut Runs<'_>, now: Instant) {
        let n = runs.link_len;
        runs.link_len = 0;
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: runs.link[i].as_ptr().cast_mut().cast(),
                iov_len: runs.link[i].len(),
            };
            msgs[i].msg_hdr.msg_name = (&runs.addrs[i] as *const libc::sockaddr_ll)
                .cast_mut()
                .cast();
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < n {
            // `msgs[done..n]` point at `iovs`, `runs.addrs` and the caller's packets, which all
            // outlive the call.
            let (sent, error) = send_batch(
                self.socket.as_raw_fd(),
                &mut msgs[done..n],
                &mut self.pauses,
            );
            self.counts.link += sent as u64;
            done += sent;
            if error.is_none() {
                break;
            }
            let refused = runs.link[done];
            self.hops[runs.hops[done]].check_at = now;
            if let Err(f) = self.ip.send_all([refused]) {
                self.fail(f);
            } else {
                self.counts.routed += 1;
            }
            done += 1;
        }
    }

    fn send_routed(&mut self, runs: &mut Runs<'_>) {
        let n = runs.routed_len;
        runs.routed_len = 0;
        if n == 0 {
            return;
        }
        match self.ip.send_all(runs.routed[..n].iter().copied()) {
            Ok(()) => self.counts.routed += n as u64,
            Err(f) => {
                self.counts.routed += (n as u64).saturating_sub(f.count);
                self.fail(f);
            }
        }
    }

    fn fail(&mut self, f: SendFailures) {
        SendFailures::add(&mut self.failures, f.count, f.last);
    }
}

impl PacketSink for LinkSender {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.queue.extend_from_slice(packet);
        self.ends.push(self.queue.len());
        if self.ends.len() == BATCH {
            if let Err(f) = self.send_all([]) {
                self.fail(f);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SendFailures> {
        self.send_all([])
    }
}

impl Drop for LinkSender {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// What a check found for one destination.
enum Found {
    /// Send at the link layer. `confirmed` is false when the neighbour entry is stale and the
    /// kernel could not be told it is in use: a routed packet then tells it.
    Link {
        via: Via,
        device: String,
        confirmed: bool,
    },
    /// Not a destination for the link layer, until the next check.
    Routed,
    /// The kernel has not resolved the next hop (yet): a routed packet makes it.
    Unresolved,
}

/// A neighbour message naming the entry of `addr` on device `ifindex`.
fn neighbour(ifindex: u32, addr: Ipv4Addr) -> NeighbourMessage {
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = AddressFamily::Inet;
    neigh.header.ifindex = ifindex;
    neigh
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        )));
    neigh
}

/// Route, device and neighbour lookups over one netlink socket.
#[derive(Debug)]
struct Resolver {
    socket: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Resolver {
    fn open() -> io::Result<Self> {
        let mut socket = netlink_sys::Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: NETLINK_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        sys::setsockopt(
            socket.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout,
        )?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; 16 << 10],
        })
    }

    /// What the kernel says of `dst`: its route, device and next hop.
    fn lookup(&mut self, dst: Ipv4Addr, device: Option<&str>) -> Found {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.destination_prefix_length = 32;
        route
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        // No route: the kernel's own send reports it.
        let Ok(Some(RouteNetlinkMessage::NewRoute(route))) =
            self.request(RouteNetlinkMessage::GetRoute(route), 0)
        else {
            return Found::Routed;
        };
        if route.header.kind != RouteType::Unicast {
            return Found::Routed;
        }
        let mut oif = None;
        let mut gateway = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                // A gateway of another family, or an encapsulation: leave it to the kernel.
                RouteAttribute::Gateway(_)
                | RouteAttribute::Via(_)
                | RouteAttribute::Encap(_)
                | RouteAttribute::EncapType(_) => return Found::Routed,
                _ => {}
            }
        }
        let Some(oif) = oif else {
            return Found::Routed;
        };

        let mut link = LinkMessage::default();
        link.header.index = oif;
        let Ok(Some(RouteNetlinkMessage::NewLink(link))) =
            self.request(RouteNetlinkMessage::GetLink(link), 0)
        else {
            return Found::Routed;
        };
        if link.header.link_layer_type != LinkLayerType::Ether
            || !link.header.flags.contains(LinkFlags::Up)
        {
            return Found::Routed;
        }
        let mut mtu = None;
        let mut name = None;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Mtu(m) => mtu = Some(*m as usize),
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                _ => {}
            }
        }
        if device.is_some_and(|d| name.as_deref() != Some(d)) {
            return Found::Routed;
        }
        let Some(mtu) = mtu else {
            return Found::Routed;
        };

        let next_hop = gateway.unwrap_or(dst);
        let neigh = match self.request(
            RouteNetlinkMessage::GetNeighbour(neighbour(oif, next_hop)),
            0,
        ) {
            Ok(Some(RouteNetlinkMessage::NewNeighbour(neigh))) => neigh,
            // No entry yet: the routed packet makes the kernel resolve it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Found::Unresolved,
            // Kernels before 4.18 cannot look one entry up (EOPNOTSUPP), or no answer came.
            _ => return Found::Routed,
        };
        let state = neigh.header.state;
        let usable = matches!(
            state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        );
        let mac = neigh.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(mac) if mac.len() == 6 => Some(mac.as_slice()),
            _ => None,
        });
        let (true, Some(mac)) = (usable, mac) else {
            // Incomplete, failed, or a device without ARP (NOARP, no address).
            return if state == NeighbourState::Noarp {
                Found::Routed
            } else {
                Found::Unresolved
            };
        };
        // SAFETY: an all-zero sockaddr_ll is valid plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = oif as libc::c_int;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(mac);
        // The kernel sees none of our packets, so it would leave a stale entry stale for good
        // (and not notice the next hop's address changing): tell it the entry is in use, and it
        // confirms the entry with a unicast probe. Not for an entry that another program
        // manages (extern_learn, managed): the request would clear those flags. A routed
        // packet confirms it instead.
        let managed = neigh.header.flags.contains(NeighbourFlags::ExtLearned)
            || neigh
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::ExtFlags(f) if !f.is_empty()));
        let confirmed = state != NeighbourState::Stale
            || !managed && {
                let mut use_it = neighbour(oif, next_hop);
                use_it.header.flags = NeighbourFlags::Use;
                self.request(RouteNetlinkMessage::NewNeighbour(use_it), NLM_F_ACK)
                    .is_ok()
            };
        Found::Link {
            via: Via { addr, mtu },
            device: name.unwrap_or_default(),
            confirmed,
        }
    }

    /// Sends one request (with `flags` besides `NLM_F_REQUEST`) and returns its answer, `None`
    /// for an acknowledgement; a netlink error answer becomes the `io::Error` it names.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Option<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;
        loop {
            let len = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < len {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[at..len])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                if reply.header.sequence_number == self.seq {
                    return match reply.payload {
                        NetlinkPayload::InnerMessage(m) => Ok(Some(m)),
                        NetlinkPayload::Error(e) => match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(None),
                        },
                        _ => Err(io::Error::other("unexpected netlink answer")),
                    };
                }
                // An answer to an earlier request that timed out: skip it.
                at += (reply.header.length as usize + 3) & !3;
            }
        }
    }
}
