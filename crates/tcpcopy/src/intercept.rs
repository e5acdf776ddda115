//! The `intercept` driver: catches the target's responses (assistant-mode capture or queue-mode
//! NFQUEUE), and streams their headers to the tcpcopy instance that owns each session.
//!
//! Threads: one per response source (a capture ring per interface, or the NFQUEUE reader), one
//! acceptor, and a reader plus a writer per tcpcopy connection. A shared [`Hub`] holds the
//! connections and the route table (client endpoint -> connection); sources lock it once per batch.
//! A response whose route is unknown (its route message may still be in flight) goes to every
//! connection: each tcpcopy ignores sessions that are not its own.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, info, warn};

use protocol::{Decoder, Message, ResponseBatch};

use crate::plumbing::{read_first_message, PacketBatch};
use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use netio::nfqueue::ResponseQueue;
use socket2::SockRef;
use wire::TcpPacket;

use crate::cli::InterceptCli;

/// Bytes waiting for one slow tcpcopy connection before further frames are dropped (and counted).
const CONN_QUEUE_BYTES: usize = 32 << 20;
/// NFQUEUE copy range: the largest IPv4 + TCP header pair is 120 bytes.
const QUEUE_COPY: u16 = 128;

#[derive(Default)]
struct HubState {
    conns: HashMap<u64, Conn>,
    routes: RouteMap,
}

/// One tcpcopy connection's outgoing side.
struct Conn {
    out: Arc<ConnOut>,
    /// The tcpcopy instance behind it (its host and the instance id of its hello): one tcpcopy
    /// opens several connections (`-C`), and must get a broadcast response only once.
    owner: (IpAddr, u32),
}

/// The write side of one tcpcopy connection. The capture thread writes without blocking while
/// nothing waits; what the socket does not take queues for the connection's writer thread, which
/// may block, and which also sends the idle pings. Frames stay in order: the capture thread writes
/// directly only while the queue is empty and the writer is not writing.
struct ConnOut {
    sock: TcpStream,
    state: Mutex<OutState>,
    ready: Condvar,
}

#[derive(Default)]
struct OutState {
    queue: Vec<u8>,
    writing: bool,
    closed: bool,
}

impl ConnOut {
    fn new(sock: TcpStream) -> ConnOut {
        ConnOut {
            sock,
            state: Mutex::default(),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// False when the frames were dropped (queue full, or the connection is gone).
    fn send(&self, frames: &[u8]) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        let mut rest = frames;
        if st.queue.is_empty() && !st.writing {
            while !rest.is_empty() {
                match SockRef::from(&self.sock).send_with_flags(rest, libc::MSG_DONTWAIT) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Full, or broken: the writer finds out which.
                    Err(_) => break,
                }
            }
            if rest.is_empty() {
                return true;
            }
        } else if st.queue.len() + rest.len() > CONN_QUEUE_BYTES {
            return false;
        }
        st.queue.extend_from_slice(rest);
        drop(st);
        self.ready.notify_one();
        true
    }

    /// The writer thread: writes what queues up (blocking), and a ping every 500 ms so that
    /// tcpcopy can tell a quiet intercept from a dead one. Returns when the socket breaks.
    fn run_writer(&self, stop: &AtomicBool) {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            {
                let mut st = self.lock();
                if st.queue.is_empty() {
                    st = self
                        .ready
                        .wait_timeout(st, Duration::from_millis(500))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if st.queue.is_empty() {
                        // Also while the capture thread writes directly: tcpcopy counts a
                        // connection without a ping for 5 s as dead.
                        protocol::encode_ping(&mut st.queue);
                    }
                }
                std::mem::swap(&mut out, &mut st.queue);
                st.writing = true;
            }
            let ok = (&self.sock).write_all(&out).is_ok();
            out.clear();
            let mut st = self.lock();
            st.writing = false;
            if !ok {
                st.closed = true;
                drop(st);
                let _ = self.sock.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// A capture thread's buffers for [`Hub::dispatch`], reused from batch to batch.
#[derive(Default)]
struct Scratch {
    per_conn: HashMap<u64, (ResponseBatch, Vec<u8>)>,
    everyone: ResponseBatch,
    everyone_frames: Vec<u8>,
}

/// Routes are keyed by endpoints remote clients choose: a seeded fast hash (foldhash).
type RouteMap = HashMap<SocketAddr, (u64, Instant), foldhash::fast::RandomState>;

/// Connections and routes, shared by all threads.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    next_conn: AtomicU64,
    /// Packets the capture ring had no room for (kernel count).
    pub capture_drops: Arc<AtomicU64>,
    pub responses: AtomicU64,
    pub routed: AtomicU64,
    pub broadcast: AtomicU64,
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
    /// Why a capture thread ended the run.
    failed: Mutex<Option<String>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panicking thread cannot leave the maps half-updated (each update is one insert or
        // remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one batch of response packets to their owners' connections. `scratch` keeps its
    /// buffers from batch to batch.
    fn dispatch<'a>(
        &self,
        packets: impl Iterator<Item = &'a [u8]>,
        max_batch: usize,
        scratch: &mut Scratch,
    ) {
        let now = Instant::now();
        let mut st = self.lock();
        let Scratch {
            per_conn,
            everyone,
            everyone_frames,
        } = scratch;
        if per_conn.len() > 2 * st.conns.len() + 16 {
            per_conn.retain(|c, _| st.conns.contains_key(c));
        }
        for pkt in packets {
            self.responses.fetch_add(1, Ordering::Relaxed);
            let Ok(p) = TcpPacket::parse(pkt) else {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let owner = st.routes.get_mut(&p.dst()).map(|r| {
                r.1 = now;
                r.0
            });
            match owner.filter(|c| st.conns.contains_key(c)) {
                Some(c) => {
                    self.routed.fetch_add(1, Ordering::Relaxed);
                    let (b, frames) = per_conn.entry(c).or_default();
                    if b.push(p.headers()) >= max_batch {
                        b.finish(frames);
                    }
                }
                None => {
                    self.broadcast.fetch_add(1, Ordering::Relaxed);
                    if everyone.push(p.headers()) >= max_batch {
                        everyone.finish(everyone_frames);
                    }
                }
            }
        }
        everyone.finish(everyone_frames);
        for (c, (b, frames)) in per_conn.iter_mut() {
            b.finish(frames);
            if frames.is_empty() {
                continue;
            }
            if let Some(conn) = st.conns.get(c) {
                self.deliver(&conn.out, frames);
            }
            frames.clear();
        }
        if !everyone_frames.is_empty() {
            // Once per tcpcopy, not per connection: a duplicated SYN-ACK would make tcpcopy send a
            // second handshake ACK, which a target answering with SYN cookies can reset.
            let mut served = Vec::new();
            for conn in st.conns.values() {
                if !served.contains(&conn.owner) {
                    served.push(conn.owner);
                    self.deliver(&conn.out, everyone_frames);
                }
            }
            everyone_frames.clear();
        }
    }

    /// Sends frames to one connection: at once from the calling (capture) thread when nothing
    /// is queued, else queued for its writer thread; a full queue (a slow tcpcopy) drops and
    /// counts.
    fn deliver(&self, out: &ConnOut, frames: &[u8]) {
        if !out.send(frames) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn expire_routes(&self, timeout: Duration) {
        let now = Instant::now();
        self.lock()
            .routes
            .retain(|_, (_, seen)| now.duration_since(*seen) < timeout);
    }
}

/// An OUTPUT rule sending the service's responses to NFQUEUE, for IPv4 (iptables) and, where
/// ip6tables works, IPv6; removed on drop.
pub struct QueueRule {
    spec: Vec<String>,
    v6: bool,
}

impl QueueRule {
    pub fn install(ports: &[u16], queue_num: u16) -> anyhow::Result<QueueRule> {
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut spec: Vec<String> = vec!["-p".into(), "tcp".into()];
        if ports.len() == 1 {
            spec.extend(["--sport".into(), list]);
        } else {
            spec.extend(["-m".into(), "multiport".into(), "--sports".into(), list]);
        }
        spec.extend([
            "-j".into(),
            "NFQUEUE".into(),
            "--queue-num".into(),
            queue_num.to_string(),
        ]);
        // A rule left behind by a killed intercept would be duplicated: remove it first.
        while iptables("iptables", "-D", &spec).is_ok() {}
        iptables("iptables", "-I", &spec).context("cannot install the iptables NFQUEUE rule")?;
        info!("installed: iptables -I OUTPUT {}", spec.join(" "));
        while iptables("ip6tables", "-D", &spec).is_ok() {}
        let v6 = match iptables("ip6tables", "-I", &spec) {
            Ok(()) => {
                info!("installed: ip6tables -I OUTPUT {}", spec.join(" "));
                true
            }
            Err(e) => {
                warn!("no IPv6 rule, IPv6 responses are not caught: {e:#}");
                false
            }
        };
        Ok(QueueRule { spec, v6 })
    }
}

impl Drop for QueueRule {
    fn drop(&mut self) {
        match iptables("iptables", "-D", &self.spec) {
            Ok(()) => info!("removed: iptables -D OUTPUT {}", self.spec.join(" ")),
            Err(e) => warn!("could not remove the iptables rule: {e:#}"),
        }
        if self.v6 {
            match iptables("ip6tables", "-D", &self.spec) {
                Ok(()) => info!("removed: ip6tables -D OUTPUT {}", self.spec.join(" ")),
                Err(e) => warn!("could not remove the ip6tables rule: {e:#}"),
            }
        }
    }
}

fn iptables(program: &str, op: &str, spec: &[String]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(["-w", op, "OUTPUT"])
        .args(spec)
        .output()
        .with_context(|| format!("cannot run {program} (is iptables installed?)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {op}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Runs the intercept until `stop` is set.
pub fn run(cli: &InterceptCli, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let hub = Arc::new(Hub::default());
    let listener = TcpListener::bind(SocketAddr::new(cli.bind, cli.listen_port))
        .with_context(|| format!("cannot listen on {}:{}", cli.bind, cli.listen_port))?;
    listener.set_nonblocking(true)?;
    let batch = usize::from(cli.batch);

    // Sources first, so that no response is missed once tcpcopy connects.
    let _rule = if cli.queue {
        let ports = cli.service_ports.clone().unwrap_or_default();
        let queue = ResponseQueue::open(cli.queue_num, QUEUE_COPY)
            .context("cannot open NFQUEUE (run as root)")?;
        let rule = QueueRule::install(&ports, cli.queue_num)?;
        spawn_queue_source(queue, hub.clone(), batch)?;
        info!(
            "queue mode: responses from port(s) {ports:?} are read from NFQUEUE {} and dropped",
            cli.queue_num
        );
        Some(rule)
    } else {
        let filter = assistant_filter(cli.service_ports.as_deref(), cli.listen_port);
        let ifaces: Vec<Option<String>> = match &cli.interface {
            Some(list) => list
                .split(',')
                .map(|s| Some(s.trim().to_string()))
                .collect(),
            None => vec![None],
        };
        let threads = cli.threads.max(1);
        for (i, iface) in ifaces.into_iter().enumerate() {
            // Several threads per interface share its packets by flow hash, so one session's
            // responses stay on one thread, in order.
            let fanout = (threads > 1).then(|| (std::process::id() as u16).wrapping_add(i as u16));
            let cfg = RingConfig {
                interface: iface.clone(),
                filter: filter.compile(),
                fanout,
                ..RingConfig::default()
            };
            let mut rings = Vec::new();
            for _ in 0..threads {
                rings
                    .push(RingCapture::open(&cfg).context("cannot start capturing (run as root)")?);
            }
            // Members of a fanout group take packets only once all of them joined.
            for mut ring in rings {
                if fanout.is_some() {
                    ring.start(&cfg.filter)
                        .context("cannot start capturing (run as root)")?;
                }
                spawn_ring_source(ring, hub.clone(), batch, stop.clone())?;
            }
            info!(
                "assistant mode: capturing responses on {} ({threads} thread(s))",
                iface.as_deref().unwrap_or("all interfaces")
            );
        }
        None
    };

    info!("listening for tcpcopy on {}:{}", cli.bind, cli.listen_port);
    let allow = cli.allow.clone();
    let route_timeout = Duration::from_secs(cli.route_timeout);
    let mut last_expiry = Instant::now();
    let mut last_stats = Instant::now();
    // Wait for connections in a poll (woken at least every 200 ms for stop, expiry and stats).
    let mut poll = mio::Poll::new().context("cannot create a poll")?;
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&listener.as_raw_fd()),
            mio::Token(0),
            mio::Interest::READABLE,
        )
        .context("cannot poll the listening socket")?;
    let mut events = mio::Events::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("poll failed");
            }
        }
        // Edge-triggered: take every pending connection.
        while let Some(accepted) = accept_one(&listener) {
            let Ok((stream, peer)) = accepted else {
                break;
            };
            {
                let hub = hub.clone();
                let allowed = allow.as_ref().is_none_or(|a| a.contains(&peer.ip()));
                let stop = stop.clone();
                let spawned = thread::Builder::new()
                    .name(format!("conn-{peer}"))
                    .spawn(move || serve(stream, peer, allowed, hub, stop));
                if let Err(e) = spawned {
                    warn!("refusing tcpcopy {peer}: cannot start a thread: {e}");
                }
            }
        }
        if last_expiry.elapsed() >= Duration::from_secs(1) {
            hub.expire_routes(route_timeout);
            last_expiry = Instant::now();
        }
        if last_stats.elapsed() >= Duration::from_secs(10) {
            last_stats = Instant::now();
            info!("{}", summary(&hub));
        }
    }
    info!("{}", summary(&hub));
    if let Some(why) = hub.failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!(why);
    }
    Ok(())
}

/// The next pending connection: `None` when there is none; an error is logged (e.g. out of file
/// descriptors: the next poll tries again).
fn accept_one(listener: &TcpListener) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
    loop {
        match listener.accept() {
            Ok(conn) => return Some(Ok(conn)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            // A connection reset before it was accepted: take the next one.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                warn!("accept: {e}");
                thread::sleep(Duration::from_millis(100));
                return Some(Err(e));
            }
        }
    }
}

pub fn summary(hub: &Hub) -> String {
    let st = hub.lock();
    format!(
        "responses {} (routed {}, to all {}, malformed {}), capture drops {}, frames dropped for slow tcpcopy {}, connections {}, routes {}",
        hub.responses.load(Ordering::Relaxed),
        hub.routed.load(Ordering::Relaxed),
        hub.broadcast.load(Ordering::Relaxed),
        hub.malformed.load(Ordering::Relaxed),
        hub.capture_drops.load(Ordering::Relaxed),
        hub.dropped.load(Ordering::Relaxed),
        st.conns.len(),
        st.routes.len()
    )
}

fn spawn_ring_source(
    mut ring: RingCapture,
    hub: Arc<Hub>,
    batch: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            crate::plumbing::raise_capture_priority();
            let mut scratch = Scratch::default();
            let mut packets = PacketBatch::default();
            let mut checked = Instant::now();
            // Several rings add to one counter: each adds what it newly counted.
            let mut counted = 0;
            while !stop.load(Ordering::Relaxed) {
                if checked.elapsed() >= Duration::from_secs(1) {
                    checked = Instant::now();
                    if let Ok(st) = ring.stats() {
                        hub.capture_drops
                            .fetch_add(st.drops - counted, Ordering::Relaxed);
                        counted = st.drops;
                    }
                }
                packets.clear();
                let r = ring.poll_batch(Duration::from_millis(100), |p| {
                    // The filter drops outgoing packets in the kernel already; a second guard.
                    if p.pkttype != libc::PACKET_OUTGOING {
                        packets.push(p.data)
                    }
                });
                match r {
                    Ok(_) if packets.is_empty() => {}
                    Ok(_) => hub.dispatch(packets.iter(), batch, &mut scratch),
                    Err(e) => {
                        // Without its capture an intercept reports nothing: end the run.
                        *hub.failed.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(format!("capture failed: {e}"));
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        })
        .context("cannot start a capture thread")?;
    Ok(())
}

fn spawn_queue_source(mut queue: ResponseQueue, hub: Arc<Hub>, batch: usize) -> anyhow::Result<()> {
    thread::Builder::new()
        .name("nfqueue".into())
        .spawn(move || {
            let mut scratch = Scratch::default();
            let mut buf = PacketBatch::default();
            loop {
                buf.clear();
                match queue.recv_drop(|p| buf.push(p)) {
                    Ok(_) => hub.dispatch(buf.iter(), batch, &mut scratch),
                    Err(e) => {
                        warn!("NFQUEUE read failed: {e}");
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })
        .context("cannot start the NFQUEUE thread")?;
    Ok(())
}

/// One tcpcopy connection: handshake, then read its routes; a writer thread streams responses.
fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    allowed: bool,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) {
    let result = (|| -> anyhow::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        if !allowed {
            let reason = format!("host {} is not in this intercept's -x list", peer.ip());
            reject(&mut stream, &reason);
            anyhow::bail!("refused: not in the -x allow list");
        }
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut dec = Decoder::new();
        let hello = match read_first_message(&mut stream, &mut dec, protocol::answer_hello)? {
            Ok(hello) => hello,
            Err(reason) => {
                reject(&mut stream, &reason);
                anyhow::bail!("{reason}");
            }
        };
        let mut f = Vec::new();
        protocol::encode_welcome(&mut f);
        stream.write_all(&f)?;

        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        let out = Arc::new(ConnOut::new(stream.try_clone()?));
        let writer = out.clone();
        let wstop = stop.clone();
        thread::Builder::new()
            .name(format!("send-{peer}"))
            .spawn(move || writer.run_writer(&wstop))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = vec![0u8; 64 * 1024];
        // From here on every exit goes through the cleanup below.
        let owner = (peer.ip(), hello.instance);
        hub.lock().conns.insert(
            id,
            Conn {
                out: out.clone(),
                owner,
            },
        );
        info!("tcpcopy {peer} connected (connection {id})");
        let end = 'conn: loop {
            if stop.load(Ordering::Relaxed) {
                break Ok(());
            }
            loop {
                match dec.next_message() {
                    Ok(Some(Message::Routes(routes))) => {
                        let now = Instant::now();
                        let mut st = hub.lock();
                        for r in routes {
                            st.routes.insert(r, (id, now));
                        }
                    }
                    Ok(Some(Message::Ping)) => {}
                    Ok(Some(other)) => debug!("{peer}: ignoring {other:?}"),
                    Ok(None) => break,
                    Err(e) => break 'conn Err(e.into()),
                }
            }
            match crate::plumbing::read_or_timeout(&mut stream, &mut buf) {
                Ok(Some(0)) => break Ok(()),
                Ok(Some(n)) => dec.feed(&buf[..n]),
                Ok(None) => {}
                Err(e) => break Err(e.into()),
            }
        };
        let mut st = hub.lock();
        st.conns.remove(&id);
        st.routes.retain(|_, (c, _)| *c != id);
        drop(st);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        info!("tcpcopy {peer} disconnected (connection {id})");
        end
    })();
    if let Err(e) = result {
        warn!("tcpcopy {peer}: {e:#}");
    }
}

/// What assistant mode captures: TCP the host received (never our own sends), from the service
/// ports when known. Our control channel must stay out: with service ports, the source-port test
/// already keeps it out, and excluding the listen port as well would also drop the target's answers
/// to a client whose ephemeral port happens to equal it (a session then never completes its
/// handshake). Without service ports, the listen port is excluded in both directions.
///
/// Only the headers are streamed to tcpcopy, so the kernel copies only those into the ring (the
/// IP header still says how long the payload was).
fn assistant_filter(service_ports: Option<&[u16]>, listen_port: u16) -> TcpFilter {
    let headers_only = TcpFilter {
        drop_outgoing: true,
        snap_len: Some(netio::bpf::HEADERS_MAX),
        ..TcpFilter::default()
    };
    match service_ports {
        Some(ports) => TcpFilter {
            src_ports: ports.to_vec(),
            ..headers_only
        },
        None => TcpFilter {
            exclude_port: Some(listen_port),
            ..headers_only
        },
    }
}

/// Sends a refusal the peer can print; the connection is closed right after, so errors don't matter.
fn reject(stream: &mut TcpStream, reason: &str) {
    let mut f = Vec::new();
    protocol::encode_reject(&mut f, reason);
    let _ = stream.write_all(&f);
}

/// Validates intercept options that clap cannot express; a one-line message on error.
pub fn validate(cli: &InterceptCli) -> Result<(), String> {
    if cli.queue && cli.service_ports.is_none() {
        return Err(
            "-q/--queue needs --port PORT[,PORT]: the service port(s) whose responses to divert"
                .into(),
        );
    }
    if cli.queue && cli.interface.is_some() {
        return Err(
            "-i/--interface is for assistant mode and cannot be combined with -q/--queue".into(),
        );
    }
    if cli.queue && cli.threads > 1 {
        return Err("--threads is for assistant mode: queue mode reads one NFQUEUE".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_to_a_client_port_equal_to_the_listen_port_are_captured() {
        // Regression: a lab session whose client port was 36524 never got its SYN-ACK reported.
        let f = assistant_filter(Some(&[80]), protocol::DEFAULT_PORT);
        assert_eq!(f.src_ports, vec![80]);
        assert_eq!(f.exclude_port, None);
        assert!(f.drop_outgoing);
        let any = assistant_filter(None, protocol::DEFAULT_PORT);
        assert_eq!(any.exclude_port, Some(protocol::DEFAULT_PORT));
        // Only headers are streamed, so only headers are captured.
        for filter in [f, any] {
            assert_eq!(filter.snap_len, Some(netio::bpf::HEADERS_MAX));
        }
    }
}
