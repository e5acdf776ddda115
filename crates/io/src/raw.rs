//! Sending complete IP packets.
//!
//! Owns the raw sockets that put rewritten packets on the wire and the [`PacketSink`] trait the
//! drivers send through, so tests can swap in a [`MemorySink`]. The kernel routes each packet by
//! the destination address inside it; nothing here rewrites or checks the packet beyond reading
//! that address.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::sys;

/// Something that takes complete IP packets (IP header first).
pub trait PacketSink {
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
}

impl<S: PacketSink + ?Sized> PacketSink for &mut S {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        (**self).send(packet)
    }
}

/// Send buffer requested for the raw sockets: deep enough to absorb a burst of replayed traffic.
const SEND_BUFFER: libc::c_int = 8 << 20;
/// How often a send that hit a full queue is retried before the error goes to the caller.
const RETRIES: u32 = 6;
const RETRY_PAUSE: Duration = Duration::from_micros(100);

/// Raw `IPPROTO_RAW` sockets: the packet carries its own IP header (the kernel still fills in the
/// IPv4 header checksum, total length, and a zero ID or source address).
#[derive(Debug)]
pub struct RawSender {
    v4: Socket,
    /// Opened on the first IPv6 packet, so hosts without IPv6 still work.
    v6: Option<Socket>,
}

impl RawSender {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            v4: raw_socket(Domain::IPV4).map_err(sys::context("raw IPv4 socket"))?,
            v6: None,
        })
    }
}

impl PacketSink for RawSender {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        let dst = destination(packet)
            .ok_or_else(|| sys::invalid_input("not a complete IPv4 or IPv6 header"))?;
        let socket = match dst {
            SocketAddr::V4(_) => &self.v4,
            SocketAddr::V6(_) => match &mut self.v6 {
                Some(socket) => socket,
                v6 => v6.insert(raw_socket(Domain::IPV6).map_err(sys::context("raw IPv6 socket"))?),
            },
        };
        let dst = SockAddr::from(dst);
        let mut attempt = 0;
        loop {
            match socket.send_to(packet, &dst) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_queue_full(&e) && attempt < RETRIES => {
                    if attempt < 2 {
                        thread::yield_now();
                    } else {
                        thread::sleep(RETRY_PAUSE);
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

fn raw_socket(domain: Domain) -> io::Result<Socket> {
    // For IPv6 too, IPPROTO_RAW implies IPV6_HDRINCL.
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    // SO_SNDBUFFORCE passes net.core.wmem_max but needs CAP_NET_ADMIN; fall back to the capped one.
    if sys::setsockopt(
        socket.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        &SEND_BUFFER,
    )
    .is_err()
    {
        socket.set_send_buffer_size(SEND_BUFFER as usize)?;
    }
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
