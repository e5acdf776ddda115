//! Where intercept catches the target's responses: capture rings on the interfaces (assistant
//! mode) or the NFQUEUE its iptables rule diverts them to (queue mode), a thread each, handing
//! every batch to the [`Hub`]. The rings and the queue, and their `unsafe`, are `netio`'s.
//!
//! Sources capture headers only, unless a tcpcopy that compares answers is connected
//! ([`Hub::wants_payloads`]): then whole packets (a ring's filter gets a full snap length, the
//! queue a full copy range), with their capture times. Each source switches between its
//! captures on its own, and tells the hub.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tracing::{info, warn};

use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use netio::nfqueue::{Fate, ResponseQueue};
use netio::UserFilter;

use super::hub::{unix_ns, Hub, Scratch};
use super::queue_rule::QueueRule;
use crate::config::{InterceptConfig, ResponseSource};
use crate::plumbing::PacketBatch;

/// NFQUEUE copy range: the largest IPv4 + TCP header pair is 120 bytes.
const QUEUE_COPY: u16 = 128;
/// NFQUEUE copy range while a tcpcopy compares answers: whole packets.
const QUEUE_COPY_FULL: u16 = 65535;

/// A thread's packets of one round, with their capture times (ns since the Unix epoch) while
/// payloads are captured.
#[derive(Default)]
struct Round {
    packets: PacketBatch,
    stamps: Vec<u64>,
}

impl Round {
    fn clear(&mut self) {
        self.packets.clear();
        self.stamps.clear();
    }

    /// Each packet with its capture time (0 when times were not kept).
    fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> {
        let stamps = self.stamps.iter().copied().chain(std::iter::repeat(0));
        self.packets.iter().zip(stamps)
    }
}

/// A source's capture mode: whether it keeps payloads now.
struct Mode {
    full: bool,
    failed: bool,
}

impl Mode {
    /// Switches with `set(full)` when the hub wants otherwise; true when payloads are kept.
    fn follow(
        &mut self,
        hub: &Hub,
        what: &str,
        set: impl FnOnce(bool) -> std::io::Result<()>,
    ) -> bool {
        let want = hub.wants_payloads();
        if want != self.full {
            match set(want) {
                Ok(()) => {
                    self.full = want;
                    self.failed = false;
                    hub.source_switched(want);
                    info!(
                        "{what}: capturing {}",
                        if want {
                            "whole packets (a tcpcopy compares answers)"
                        } else {
                            "headers only"
                        }
                    );
                }
                Err(e) if !self.failed => {
                    self.failed = true;
                    warn!("{what}: cannot switch the capture: {e}");
                }
                Err(_) => {}
            }
        }
        self.full
    }
}

/// Starts the response sources; in queue mode, returns the iptables rule to remove at the end.
pub(super) fn start(
    cfg: &InterceptConfig,
    hub: &Arc<Hub>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Option<QueueRule>> {
    match &cfg.source {
        ResponseSource::Queue {
            ports,
            queue_num,
            max_len,
            pass,
        } => {
            if let Some(line) = netio::privilege::missing(
                &[netio::privilege::NET_ADMIN],
                "queue mode (NFQUEUE and its iptables rule)",
            ) {
                anyhow::bail!(line);
            }
            info!("queue mode, as the C intercept without -i (for assistant mode give -i DEV, or -i any)");
            let queue = ResponseQueue::open(*queue_num, QUEUE_COPY, *max_len)
                .context("cannot open NFQUEUE (run as root)")?;
            let rule = match ports {
                Some(ports) => {
                    let iptables = [netio::privilege::NET_ADMIN, netio::privilege::NET_RAW];
                    if let Err(e) = netio::privilege::pass_to_children(&iptables) {
                        warn!("iptables may lack the capabilities to add the rule: {e}");
                    }
                    let rule = QueueRule::install(ports, *queue_num)?;
                    info!(
                        "queue mode: responses from port(s) {ports:?} are read from NFQUEUE {queue_num} and dropped"
                    );
                    Some(rule)
                }
                None => {
                    info!(
                        "queue mode: responses are read from NFQUEUE {queue_num} and dropped; \
                         the queue is filled by your rule (e.g. iptables -I OUTPUT -p tcp --sport 80 -j NFQUEUE --queue-num {queue_num}), \
                         or give --port to let intercept add and remove it"
                    );
                    None
                }
            };
            if !pass.is_empty() {
                info!("queue mode: responses to {pass:?} pass (-x)");
            }
            spawn_queue_source(queue, pass.clone(), hub.clone(), cfg.batch)?;
            Ok(rule)
        }
        ResponseSource::Capture {
            interfaces,
            service_ports,
            threads,
        } => {
            if let Some(line) =
                netio::privilege::missing(&[netio::privilege::NET_RAW], "assistant mode's capture")
            {
                anyhow::bail!(line);
            }
            let filter = assistant_filter(service_ports.as_deref(), cfg.listen.port(), false);
            let user = match &cfg.filter {
                Some(expr) => {
                    Some(UserFilter::compile(expr).map_err(|e| anyhow::anyhow!("-F: {e}"))?)
                }
                None => None,
            };
            let filters = ring_filters(&filter, user.as_ref())?;
            for (i, iface) in interfaces.iter().enumerate() {
                start_rings(i, iface, &filters, *threads, cfg.batch, hub, stop)?;
            }
            Ok(None)
        }
    }
}

/// Assistant mode on one interface (`None`: all): `threads` rings. Several threads per
/// interface share its packets by flow hash, so one session's responses stay on one thread, in
/// order.
fn start_rings(
    i: usize,
    iface: &Option<String>,
    filters: &[Vec<netio::Insn>; 2],
    threads: u16,
    batch: usize,
    hub: &Arc<Hub>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let fanout = (threads > 1).then(|| (std::process::id() as u16).wrapping_add(i as u16));
    let cfg = RingConfig {
        interface: iface.clone(),
        filter: filters[0].clone(),
        fanout,
        ..RingConfig::default()
    };
    let mut rings = Vec::new();
    for _ in 0..threads {
        rings.push(RingCapture::open(&cfg).context("cannot start capturing (run as root)")?);
    }
    // Members of a fanout group take packets only once all of them joined.
    for mut ring in rings {
        if fanout.is_some() {
            ring.start(&cfg.filter)
                .context("cannot start capturing (run as root)")?;
        }
        spawn_ring_source(ring, filters.clone(), hub.clone(), batch, stop.clone())?;
    }
    info!(
        "assistant mode: capturing responses on {} ({threads} thread(s))",
        iface.as_deref().unwrap_or("all interfaces")
    );
    Ok(())
}

/// A ring's two programs, headers only and whole packets, each behind `-F`'s when given.
fn ring_filters(
    filter: &TcpFilter,
    user: Option<&UserFilter>,
) -> anyhow::Result<[Vec<netio::Insn>; 2]> {
    let full = TcpFilter {
        snap_len: None,
        ..filter.clone()
    };
    let programs = [filter.compile(), full.compile()];
    let Some(user) = user else {
        return Ok(programs);
    };
    let own = programs[0].len();
    let [headers, full] = programs.map(|own| user.and_then(&own));
    let fail = |e| anyhow::anyhow!("-F: {e}");
    let (headers, full) = (headers.map_err(fail)?, full.map_err(fail)?);
    info!(
        "-F '{}': {} instructions in front of the {own} of intercept's own filter",
        user.expr(),
        headers.len() - own,
    );
    Ok([headers, full])
}

/// A ring's thread. `filters` are its two programs: headers only, and whole packets.
fn spawn_ring_source(
    mut ring: RingCapture,
    filters: [Vec<netio::Insn>; 2],
    hub: Arc<Hub>,
    batch: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    hub.add_source();
    thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            crate::plumbing::raise_capture_priority();
            // The ring is open; switching its filter later needs no capability.
            crate::plumbing::unprivileged_thread();
            let mut scratch = Scratch::default();
            let mut round = Round::default();
            let mut mode = Mode {
                full: false,
                failed: false,
            };
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
                let full = mode.follow(&hub, "capture", |full| {
                    ring.set_filter(&filters[usize::from(full)])
                });
                round.clear();
                let Round { packets, stamps } = &mut round;
                let r = ring.poll_batch(Duration::from_millis(100), |p| {
                    // The filter drops outgoing packets in the kernel already; a second guard.
                    if p.pkttype != libc::PACKET_OUTGOING {
                        packets.push(p.data);
                        if full {
                            stamps.push(p.timestamp.as_nanos() as u64);
                        }
                    }
                });
                match r {
                    Ok(_) if round.packets.is_empty() => {}
                    Ok(_) => hub.dispatch(round.iter(), batch, &mut scratch),
                    Err(e) => {
                        // Without its capture an intercept reports nothing: end the run.
                        hub.fail(format!("capture failed: {e}"));
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        })
        .context("cannot start a capture thread")?;
    Ok(())
}

fn spawn_queue_source(
    mut queue: ResponseQueue,
    pass: Vec<IpAddr>,
    hub: Arc<Hub>,
    batch: usize,
) -> anyhow::Result<()> {
    hub.add_source();
    thread::Builder::new()
        .name("nfqueue".into())
        .spawn(move || {
            // Verdicts and copy-range changes are netfilter messages: CAP_NET_ADMIN.
            crate::plumbing::keep_capabilities(
                &[netio::privilege::NET_ADMIN],
                netio::privilege::Scope::Thread,
            );
            let mut scratch = Scratch::default();
            let mut round = Round::default();
            let mut mode = Mode {
                full: false,
                failed: false,
            };
            loop {
                let full = mode.follow(&hub, "NFQUEUE", |full| {
                    queue.set_copy_range(if full { QUEUE_COPY_FULL } else { QUEUE_COPY })
                });
                round.clear();
                let Round { packets, stamps } = &mut round;
                match queue.recv_drop(|p| {
                    if !pass.is_empty() && destination(p).is_some_and(|d| pass.contains(&d)) {
                        // A pass-listed host can be a replicated client too (queue mode keeps
                        // client addresses): its replicated sessions' answers are still caught.
                        let replicated =
                            wire::TcpPacket::parse(p).is_ok_and(|t| hub.is_replicated(t.dst()));
                        if !replicated {
                            return Fate::Pass;
                        }
                    }
                    packets.push(p);
                    if full {
                        stamps.push(unix_ns(SystemTime::now()));
                    }
                    Fate::Drop
                }) {
                    Ok(0) => {}
                    Ok(_) => hub.dispatch(round.iter(), batch, &mut scratch),
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

/// What assistant mode captures: TCP the host received (never our own sends), from the service
/// ports when known. Our control channel must stay out: with service ports, the source-port test
/// already keeps it out, and excluding the listen port as well would also drop the target's answers
/// to a client whose ephemeral port happens to equal it (a session then never completes its
/// handshake). Without service ports, the listen port is excluded in both directions.
///
/// Unless `full`, only the headers are streamed to tcpcopy, so the kernel copies only those
/// into the ring (the IP header still says how long the payload was).
fn assistant_filter(service_ports: Option<&[u16]>, listen_port: u16, full: bool) -> TcpFilter {
    let headers_only = TcpFilter {
        drop_outgoing: true,
        snap_len: (!full).then_some(netio::bpf::HEADERS_MAX),
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

/// The destination address of an IP packet (`-x` passes some).
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let b: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        6 => {
            let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_of_v4_and_v6_packets_and_none_of_garbage() {
        let mut v4 = [0u8; 40];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[198, 18, 0, 9]);
        assert_eq!(destination(&v4), Some(IpAddr::from([198, 18, 0, 9])));
        let mut v6 = [0u8; 60];
        v6[0] = 0x60;
        v6[24] = 0x20;
        v6[39] = 7;
        assert_eq!(destination(&v6), "2000::7".parse().ok());
        assert_eq!(destination(&v4[..10]), None);
        assert_eq!(destination(&[0x15; 40]), None);
    }

    #[test]
    fn answers_to_a_client_port_equal_to_the_listen_port_are_captured() {
        // Regression: a lab session whose client port was 36524 never got its SYN-ACK reported.
        let f = assistant_filter(Some(&[80]), protocol::DEFAULT_PORT, false);
        assert_eq!(f.src_ports, vec![80]);
        assert_eq!(f.exclude_port, None);
        assert!(f.drop_outgoing);
        let any = assistant_filter(None, protocol::DEFAULT_PORT, false);
        assert_eq!(any.exclude_port, Some(protocol::DEFAULT_PORT));
        // Only headers are streamed, so only headers are captured.
        for filter in [f, any] {
            assert_eq!(filter.snap_len, Some(netio::bpf::HEADERS_MAX));
        }
        // Whole packets while a tcpcopy compares answers, with the same selection.
        let full = assistant_filter(Some(&[80]), protocol::DEFAULT_PORT, true);
        assert_eq!(full.snap_len, None);
        assert_eq!(full.src_ports, vec![80]);
    }
}
