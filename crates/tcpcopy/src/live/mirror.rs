//! Mirrored input (`--input vxlan[:PORT]`, `geneve[:PORT]`, `erspan`): on a collector host, a
//! thread reads the packets a mirror session sends (a UDP socket for VXLAN and Geneve, a raw GRE
//! socket for ERSPAN), unwraps them ([`wire::tunnel`]) and hands the mirrored IP packets to the
//! worker through the mailbox, with their arrival times, as a replay hands over a file's. A
//! mirror sees both directions: the online server's answers come along, for `--compare`.
//! Packets that are not the encapsulation, carry no IP, or belong to another VNI or session
//! (`--mirror-id`) are counted and logged, never replicated.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use super::{Event, Events};
use crate::plumbing::PacketBatch;
use wire::tunnel::{self, TunnelError};

/// The encapsulation of mirrored traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    Vxlan,
    Geneve,
    Erspan,
}

impl Tunnel {
    /// The option's word for it.
    pub fn name(self) -> &'static str {
        match self {
            Tunnel::Vxlan => "vxlan",
            Tunnel::Geneve => "geneve",
            Tunnel::Erspan => "erspan",
        }
    }

    /// The IANA UDP port (ERSPAN is GRE: no port).
    pub fn default_port(self) -> u16 {
        match self {
            Tunnel::Vxlan => tunnel::VXLAN_PORT,
            Tunnel::Geneve => tunnel::GENEVE_PORT,
            Tunnel::Erspan => 0,
        }
    }

    /// The mirrored packet inside `datagram` (a UDP payload, or an IPv4 packet carrying GRE).
    fn unwrap(self, datagram: &[u8]) -> Result<tunnel::Mirrored<'_>, TunnelError> {
        match self {
            Tunnel::Vxlan => tunnel::vxlan(datagram),
            Tunnel::Geneve => tunnel::geneve(datagram),
            Tunnel::Erspan => {
                // A raw IPv4 socket delivers the outer IP header too.
                let ihl = usize::from(datagram.first().ok_or(TunnelError::Truncated)? & 0x0f) * 4;
                tunnel::erspan(datagram.get(ihl..).ok_or(TunnelError::Truncated)?)
            }
        }
    }
}

/// Where and what to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorSpec {
    pub tunnel: Tunnel,
    /// UDP port (VXLAN, Geneve).
    pub port: u16,
    /// VNIs or ERSPAN session IDs to take; empty: all.
    pub ids: Vec<u32>,
}

/// The largest datagram: a 9001-byte jumbo frame mirrored, with room for the encapsulation.
const DATAGRAM: usize = 9216 + 128;
/// Receive buffer: a burst of mirrored traffic waits here while the worker is busy.
const RECEIVE_BUFFER: usize = 32 << 20;

/// Opens the socket now (a raw one needs CAP_NET_RAW, which is dropped after setup) and starts
/// the reading thread.
pub fn start(
    spec: &MirrorSpec,
    tx: Events,
    queued: Arc<AtomicUsize>,
    budget: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let socket = open(spec)?;
    info!(
        "mirrored input: {} on {}{}",
        spec.tunnel.name(),
        if spec.tunnel == Tunnel::Erspan {
            "GRE".to_string()
        } else {
            format!("UDP port {}", spec.port)
        },
        if spec.ids.is_empty() {
            String::new()
        } else {
            format!(", ids {:?}", spec.ids)
        }
    );
    let reader = Reader {
        spec: spec.clone(),
        socket,
        tx,
        queued,
        budget,
        stop,
        counts: Counts::default(),
        logged: 0,
    };
    thread::Builder::new()
        .name("mirror".into())
        .spawn(move || {
            crate::plumbing::unprivileged_thread();
            reader.run()
        })
        .context("cannot start the mirror thread")?;
    Ok(())
}

fn open(spec: &MirrorSpec) -> anyhow::Result<Socket> {
    let socket = match spec.tunnel {
        Tunnel::Erspan => Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(tunnel::GRE_PROTOCOL))),
        )
        .context("cannot open a raw GRE socket for ERSPAN (needs CAP_NET_RAW)")?,
        _ => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, spec.port));
            s.bind(&addr.into()).with_context(|| {
                format!(
                    "cannot listen for mirrored traffic on UDP port {}",
                    spec.port
                )
            })?;
            s
        }
    };
    // Past net.core.rmem_max (208 KiB on many hosts: a burst of mirrored traffic overflows it
    // while the worker is busy) with CAP_NET_ADMIN, which setup still holds; else best effort:
    // the default buffer still works, it only loses more in a burst.
    if netio::sockopt::force_receive_buffer(std::os::fd::AsFd::as_fd(&socket), RECEIVE_BUFFER)
        .is_err()
    {
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    }
    if let Ok(size) = socket.recv_buffer_size() {
        if size < RECEIVE_BUFFER {
            warn!(
                "mirrored input: receive buffer {} KiB (no CAP_NET_ADMIN to pass net.core.rmem_max): bursts may be lost",
                size >> 10
            );
        }
    }
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(socket)
}

/// What the mirror delivered that was not replicated.
#[derive(Default, Debug)]
struct Counts {
    packets: u64,
    not_tunnel: u64,
    not_ip: u64,
    other_id: u64,
}

struct Reader {
    spec: MirrorSpec,
    socket: Socket,
    tx: Events,
    queued: Arc<AtomicUsize>,
    budget: usize,
    stop: Arc<AtomicBool>,
    counts: Counts,
    /// Drops already logged.
    logged: u64,
}

impl Reader {
    fn run(mut self) {
        let mut buf = vec![0u8; DATAGRAM];
        let mut batch = PacketBatch::default();
        let mut last_log = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            match recv(&self.socket, &mut buf) {
                Ok(n) => self.take(&buf[..n], &mut batch),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    warn!("mirrored input: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
            // Hand over at once when nothing else is waiting, or in batches of 256.
            if batch.len() >= 256 || (!batch.is_empty() && !pending(&self.socket)) {
                self.send(&mut batch);
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                last_log = Instant::now();
                self.log();
            }
        }
        self.log();
    }

    fn take(&mut self, datagram: &[u8], batch: &mut PacketBatch) {
        self.counts.packets += 1;
        match self.spec.tunnel.unwrap(datagram) {
            Ok(m) if self.spec.ids.is_empty() || self.spec.ids.contains(&m.id) => {
                batch.push_stamped(m.packet, unix_ns());
            }
            Ok(_) => self.counts.other_id += 1,
            Err(TunnelError::NotIp(_)) => self.counts.not_ip += 1,
            Err(_) => self.counts.not_tunnel += 1,
        }
    }

    /// Hands a batch over, holding back while too many bytes wait for the worker.
    fn send(&self, batch: &mut PacketBatch) {
        while self.queued.load(Ordering::Relaxed) > self.budget
            && !self.stop.load(Ordering::Relaxed)
        {
            thread::sleep(Duration::from_micros(200));
        }
        self.queued.fetch_add(batch.bytes(), Ordering::Relaxed);
        self.tx.push(Event::Captured(std::mem::take(batch)));
    }

    /// Logs what was not replicated, when that changed.
    fn log(&mut self) {
        let c = &self.counts;
        let dropped = c.not_tunnel + c.not_ip + c.other_id;
        if dropped > 0 && dropped != self.logged {
            self.logged = dropped;
            info!(
                "mirrored input: {} packets, not {} {}, without IP {}, other id {}",
                c.packets,
                self.spec.tunnel.name(),
                c.not_tunnel,
                c.not_ip,
                c.other_id
            );
        }
    }
}

fn recv(socket: &Socket, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    (&*socket).read(buf)
}

/// Whether another datagram waits (without blocking).
fn pending(socket: &Socket) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    socket
        .recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        .is_ok()
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erspan_datagrams_carry_their_outer_ip_header() {
        let mut datagram = vec![0x45; 20];
        datagram.extend([0x00, 0x00, 0x88, 0xbe]);
        datagram.extend([0x02; 12]);
        datagram.extend(0x0800u16.to_be_bytes());
        datagram.extend([0x45, 0, 0, 20]);
        let m = Tunnel::Erspan.unwrap(&datagram).unwrap();
        assert_eq!(m.packet, [0x45, 0, 0, 20]);
        assert_eq!(Tunnel::Erspan.unwrap(&[]), Err(TunnelError::Truncated));
    }

    /// A 9001-byte packet (a jumbo frame's, as AWS mirrors them) fits the read buffer in each
    /// encapsulation, with the outer IPv4 header a raw GRE socket delivers, and comes out whole.
    #[test]
    fn jumbo_frames_fit_the_buffer_and_come_out_whole() {
        let mut ip = vec![0u8; 9001];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&9001u16.to_be_bytes());
        for (i, b) in ip.iter_mut().enumerate().skip(40) {
            *b = i as u8;
        }
        let mut out = Vec::new();
        for tunnel in [Tunnel::Vxlan, Tunnel::Geneve, Tunnel::Erspan] {
            let datagram = match tunnel {
                Tunnel::Vxlan => {
                    tunnel::encap_vxlan(7, &ip, &mut out);
                    out.clone()
                }
                Tunnel::Geneve => {
                    tunnel::encap_geneve(7, &ip, &mut out);
                    out.clone()
                }
                Tunnel::Erspan => {
                    tunnel::encap_erspan_iii(7, 1, 0, &ip, &mut out);
                    let mut d = vec![0x45; 20];
                    d.extend_from_slice(&out);
                    d
                }
            };
            assert!(datagram.len() <= DATAGRAM, "{tunnel:?}: {}", datagram.len());
            let m = tunnel.unwrap(&datagram).unwrap();
            assert_eq!((m.id, m.packet), (7, &ip[..]), "{tunnel:?}");
        }
    }
}
