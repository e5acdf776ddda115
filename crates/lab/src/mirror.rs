//! A user-space traffic mirror, for the mirrored-input tests: a thread inside the online host's
//! namespace reads every TCP packet in and out of its interface (an `AF_PACKET` ring) and sends
//! each one encapsulated to a collector, as a cloud's mirror session would: VXLAN or Geneve over
//! UDP, ERSPAN type II or III over GRE (a raw socket). The kernel has no Geneve, ERSPAN or
//! gretap devices on every host the tests run on; this stands in for them, and can lose a
//! seeded share of the packets on the way (a lossy mirror).
//!
//! It remembers, per client connection, the request lines the client sent (`GET /uri `) and
//! whether the mirror dropped one of that client's segments carrying bytes, a SYN or a FIN (the
//! connection is *hurt*: its client never resends what the online server received), so a test
//! can require every connection not hurt to arrive complete. Packets too large for one
//! datagram (more than [`MAX_PACKET`] bytes: GRO/TSO super-segments) are counted, not sent.
//!
//! [`kernel_vxlan`] is the kernel's mirror instead (what AWS VPC Traffic Mirroring produces):
//! `tc ... action mirred` into a vxlan device.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use session::testing::Rng;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wire::tunnel;
use wire::TcpPacket;

/// Mirrors every TCP packet in and out of the online host's interface to `collector`, VXLAN
/// (VNI `vni`) on UDP 4789, by the kernel: a vxlan device `vx0` and `tc` filters (u32: the
/// flower and matchall classifiers are not on every kernel) on a `clsact` qdisc, all in the
/// online namespace (they go with it).
pub fn kernel_vxlan(lab: &crate::Lab, vni: u32, collector: Ipv4Addr) -> anyhow::Result<()> {
    let ns = lab.ns_online();
    let dev = crate::Lab::IFACE;
    let sh = |cmd: &str| -> anyhow::Result<()> {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        lab.sh(ns, &words)
            .map(|_| ())
            .with_context(|| cmd.to_string())
    };
    sh(&format!(
        "ip link add vx0 type vxlan id {vni} dstport {} local {} remote {collector} dev {dev}",
        tunnel::VXLAN_PORT,
        crate::Lab::ONLINE_IP,
    ))?;
    sh("ip link set vx0 up")?;
    sh(&format!("tc qdisc add dev {dev} clsact"))?;
    // TCP only: the VXLAN packets themselves leave by the same interface.
    for dir in ["ingress", "egress"] {
        sh(&format!(
            "tc filter add dev {dev} {dir} protocol ip u32 match ip protocol 6 0xff action mirred egress mirror dev vx0"
        ))?;
    }
    Ok(())
}

/// The encapsulation a mirror session sends, with its identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// UDP, VNI (24 bits).
    Vxlan(u32),
    /// UDP, VNI (24 bits).
    Geneve(u32),
    /// GRE 0x88BE, session ID (10 bits).
    ErspanII(u16),
    /// GRE 0x22EB, session ID (10 bits).
    ErspanIII(u16),
}

/// Where and how to mirror.
#[derive(Clone, Debug)]
pub struct MirrorSpec {
    pub encap: Encap,
    /// The interface of the online host whose packets are mirrored.
    pub interface: String,
    /// The collector, and its UDP port (VXLAN, Geneve; ignored for ERSPAN).
    pub collector: Ipv4Addr,
    pub port: u16,
    /// Share of the packets the mirror loses (0.0 to 1.0), drawn from `seed`.
    pub drop: f64,
    pub seed: u64,
}

/// The largest mirrored packet sent: the collector reads 9216-byte jumbo frames with their
/// encapsulation.
pub const MAX_PACKET: usize = 9000;

/// One client connection, as the mirror saw it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client's endpoint (a port may serve several connections, one after the other).
    pub client: SocketAddrV4,
    /// The client's ISN (0 when its SYN was not seen).
    pub isn: u32,
    /// The URIs of the requests its client sent, in order.
    pub uris: Vec<String>,
    /// The mirror dropped a segment of its client's carrying bytes, a SYN or a FIN.
    pub hurt: bool,
}

/// What the mirror did.
#[derive(Clone, Debug, Default)]
pub struct MirrorReport {
    /// Packets sent encapsulated to the collector.
    pub sent: u64,
    /// Packets dropped on purpose (`MirrorSpec::drop`).
    pub dropped: u64,
    /// Packets larger than [`MAX_PACKET`], not sent.
    pub oversize: u64,
    /// Packets the socket would not take (a full buffer for 20 ms, or another error).
    pub send_failed: u64,
    /// Packets the mirror's own capture ring lost (the mirror fell behind a burst).
    pub capture_drops: u64,
    /// How long it ran.
    pub elapsed: Duration,
    /// Every client connection, in the order of their first packet.
    pub connections: Vec<Connection>,
    /// The connection each client endpoint has now (an index into `connections`).
    current: HashMap<SocketAddrV4, usize>,
}

impl MirrorReport {
    /// Packets per second handed to the collector.
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Connections the mirror hurt.
    pub fn hurt(&self) -> usize {
        self.connections.iter().filter(|c| c.hurt).count()
    }
}

/// A running mirror; [`UserMirror::finish`] stops it and reports.
pub struct UserMirror {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<anyhow::Result<MirrorReport>>>,
}

impl UserMirror {
    /// Starts mirroring in namespace `ns` (once its capture is open); `service_port` tells the
    /// online server's side of a connection from its client's.
    pub fn start(ns: &str, spec: &MirrorSpec, service_port: u16) -> anyhow::Result<UserMirror> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, spec, s) = (ns.to_string(), spec.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = thread::Builder::new().name("user-mirror".into()).spawn(
            move || -> anyhow::Result<MirrorReport> {
                netio::netns::enter(&ns)?;
                let mut m = Mirror::open(&spec, service_port)?;
                let _ = ready_tx.send(());
                m.run(&s)
            },
        )?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the user-space mirror did not start")?;
        Ok(UserMirror {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops and reports.
    pub fn finish(mut self) -> anyhow::Result<MirrorReport> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self
            .handle
            .take()
            .expect("finish is called once (it takes self)");
        h.join()
            .map_err(|_| anyhow::anyhow!("the mirror thread panicked"))?
    }
}

impl Drop for UserMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Mirror {
    spec: MirrorSpec,
    service_port: u16,
    ring: RingCapture,
    socket: Socket,
    to: SockAddr,
    rng: Rng,
    buf: Vec<u8>,
    seq: u32,
    report: MirrorReport,
}

impl Mirror {
    fn open(spec: &MirrorSpec, service_port: u16) -> anyhow::Result<Mirror> {
        let ring = RingCapture::open(&RingConfig {
            interface: Some(spec.interface.clone()),
            // Every TCP packet (the encapsulated ones are UDP or GRE: never mirrored again).
            filter: TcpFilter::default().compile(),
            // The mirror sends each packet with a syscall and falls behind the load's bursts:
            // blocks that wait longer and more of them hold ~20 s of a burst, not ~0.5 s.
            block_count: 2048,
            block_timeout_ms: 10,
            ..RingConfig::default()
        })
        .context("mirror capture")?;
        let (socket, to) = match spec.encap {
            Encap::Vxlan(_) | Encap::Geneve(_) => (
                Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?,
                SocketAddr::from((spec.collector, spec.port)),
            ),
            Encap::ErspanII(_) | Encap::ErspanIII(_) => (
                Socket::new(
                    Domain::IPV4,
                    Type::RAW,
                    Some(Protocol::from(i32::from(tunnel::GRE_PROTOCOL))),
                )
                .context("raw GRE socket")?,
                SocketAddr::from((spec.collector, 0)),
            ),
        };
        let _ = socket.set_send_buffer_size(8 << 20);
        Ok(Mirror {
            spec: spec.clone(),
            service_port,
            ring,
            socket,
            to: to.into(),
            rng: Rng::new(spec.seed),
            buf: Vec::with_capacity(MAX_PACKET + 64),
            seq: 0,
            report: MirrorReport::default(),
        })
    }

    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<MirrorReport> {
        let started = Instant::now();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            self.ring
                .poll_batch(Duration::from_millis(20), |p| {
                    if p.data.len() == p.wire_len as usize {
                        batch.push(p.data.to_vec());
                    } else {
                        batch.push(Vec::new()); // cut short: counted as oversize below
                    }
                })
                .context("mirror capture")?;
            for packet in batch.drain(..) {
                self.mirror(&packet, started);
            }
        }
        self.report.elapsed = started.elapsed();
        self.report.capture_drops = self.ring.stats().map_or(0, |s| s.drops);
        Ok(std::mem::take(&mut self.report))
    }

    /// Notes, drops or sends one packet.
    fn mirror(&mut self, packet: &[u8], started: Instant) {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            self.report.oversize += 1;
            return;
        }
        let dropped = self.spec.drop > 0.0 && self.rng.chance(self.spec.drop);
        self.note(packet, dropped);
        if dropped {
            self.report.dropped += 1;
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        match self.spec.encap {
            Encap::Vxlan(vni) => tunnel::encap_vxlan(vni, packet, &mut self.buf),
            Encap::Geneve(vni) => tunnel::encap_geneve(vni, packet, &mut self.buf),
            Encap::ErspanII(id) => tunnel::encap_erspan_ii(id, self.seq, packet, &mut self.buf),
            Encap::ErspanIII(id) => {
                let micros = started.elapsed().as_micros() as u32;
                tunnel::encap_erspan_iii(id, self.seq, micros, packet, &mut self.buf)
            }
        }
        // A full socket buffer waits a little: the mirror must not lose what it was not told to.
        for _ in 0..100 {
            match self.socket.send_to(&self.buf, &self.to) {
                Ok(_) => {
                    self.report.sent += 1;
                    return;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    thread::sleep(Duration::from_micros(200))
                }
                Err(_) => break,
            }
        }
        self.report.send_failed += 1;
    }

    /// Records the client's request lines, and whether dropping `packet` hurt its connection.
    fn note(&mut self, packet: &[u8], dropped: bool) {
        let Ok(p) = TcpPacket::parse(packet) else {
            return;
        };
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (p.src(), p.dst()) else {
            return;
        };
        if dst.port() != self.service_port {
            return; // the online server's packet
        }
        let flags = p.flags();
        let r = &mut self.report;
        let known = r.current.get(&src).copied();
        let new_syn = flags.syn() && known.is_none_or(|i| r.connections[i].isn != p.seq().0);
        let at = match known {
            Some(i) if !new_syn => i,
            _ => {
                r.connections.push(Connection {
                    client: src,
                    isn: if flags.syn() { p.seq().0 } else { 0 },
                    uris: Vec::new(),
                    hurt: false,
                });
                r.current.insert(src, r.connections.len() - 1);
                r.connections.len() - 1
            }
        };
        let conn = &mut r.connections[at];
        let payload = p.payload();
        if let Some(uri) = payload
            .strip_prefix(b"GET ")
            .and_then(|rest| rest.split(|&b| b == b' ').next())
        {
            let uri = String::from_utf8_lossy(uri).into_owned();
            // A client's retransmission carries the same request again.
            if conn.uris.last() != Some(&uri) {
                conn.uris.push(uri);
            }
        }
        if dropped && (!payload.is_empty() || flags.syn() || flags.fin()) {
            conn.hurt = true;
        }
    }
}
