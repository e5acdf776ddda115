//! The worker's live capture: opens its capture ring (joining the PACKET_FANOUT group of the
//! capture threads), reads it into the core on every wake, records what it read (`--record`),
//! and keeps the capture's timing (when it last brought packets, the kernel's drop count).
//! The ring itself, and its `unsafe`, are `netio`'s.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::unix::SourceFd;
use mio::{Interest, Registry};
use tracing::info;

use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use netio::UserFilter;
use pcap::PcapNgRecorder;
use session::Replicator;

use super::comparing::{Comparing, Seen};
use super::peers::{lazy_peers, lazy_wait};
use super::{Member, RING};
use crate::config::LiveConfig;

/// Client packets as the worker reads them: the ring (none for a replay, whose packets come
/// through the mailbox), the recording, and their bookkeeping.
pub(super) struct Capture {
    ring: Option<RingCapture>,
    recorder: Option<PcapNgRecorder>,
    record_error: Option<io::Error>,
    /// The kernel's count of packets the ring had no room for.
    pub drops: u64,
    last_drops_read: Instant,
    /// When the ring last brought packets, and the time between the last two such wakes (see
    /// [`lazy_peers`]).
    busy_at: Option<Instant>,
    gap: Duration,
}

impl Capture {
    pub fn new(ring: Option<RingCapture>, recorder: Option<PcapNgRecorder>) -> Capture {
        Capture {
            ring,
            recorder,
            record_error: None,
            drops: 0,
            last_drops_read: Instant::now(),
            busy_at: None,
            gap: Duration::ZERO,
        }
    }

    /// Opens and starts this worker's ring, registered with the poll as [`RING`].
    pub fn open_ring(
        cfg: &LiveConfig,
        interface: Option<&str>,
        member: &Member,
        registry: &Registry,
    ) -> anyhow::Result<RingCapture> {
        // The protocol hook's sessions may read the online server's answers (MySQL's statement
        // ids, PostgreSQL's backend keys).
        let answers = member
            .hook
            .as_ref()
            .is_some_and(dialect::Hook::online_answers);
        let opened = open_ring(cfg, interface, member.fanout, answers);
        // Every thread comes to the barrier, also one whose ring failed to open.
        if member.fanout.is_some() {
            member.joined.wait();
        }
        let (mut r, filter) = opened?;
        if member.fanout.is_some() {
            r.start(&filter).context("cannot start capturing")?;
        }
        registry
            .register(&mut SourceFd(&r.as_raw_fd()), RING, Interest::READABLE)
            .context("cannot poll the capture ring")?;
        // This thread empties the ring.
        crate::plumbing::raise_capture_priority();
        Ok(r)
    }

    /// The poll reported an error on the ring: the reason, if the ring has one.
    pub fn check_error(&self) -> anyhow::Result<()> {
        if let Some(e) = self
            .ring
            .as_ref()
            .and_then(|r| r.take_error().ok().flatten())
        {
            anyhow::bail!("capture failed: {e}");
        }
        Ok(())
    }

    /// Hands the core every packet the ring holds, whether or not this wake was for it.
    #[inline]
    pub fn read(
        &mut self,
        core: &mut Replicator,
        mut compare: Option<&mut Comparing>,
        now: Instant,
    ) -> anyhow::Result<()> {
        let Capture {
            ring,
            recorder,
            record_error,
            ..
        } = self;
        if let Some(r) = ring.as_mut() {
            let mut captured = false;
            let answers = core.wants_online_answers();
            r.drain_ready(|p| {
                captured = true;
                if let Some(c) = compare.as_deref_mut() {
                    // The online server's answers too (outgoing, when it runs here).
                    let at = p.timestamp.as_nanos() as u64;
                    c.captured(core, now, at, Seen::of_pkttype(p.pkttype), p.data);
                } else if p.pkttype == libc::PACKET_OUTGOING {
                    // The kernel leaves our own sends out already (PACKET_IGNORE_OUTGOING and
                    // the filter); this is a third guard. The online server's answers, where a
                    // protocol reads them (`--protocol mysql`), go to the core's hook:
                    // `handle_online_packet` takes the online server's packets only.
                    if answers {
                        core.handle_online_packet(now, p.data);
                    }
                    return;
                } else {
                    core.handle_capture(now, p.data);
                }
                if let Some(rec) = recorder.as_mut() {
                    if record_error.is_none() {
                        if let Err(e) = rec.write(p.timestamp, p.data, p.data.len() as u32) {
                            *record_error = Some(e);
                        }
                    }
                }
            });
            if captured {
                if let Some(last) = self.busy_at {
                    self.gap = now.saturating_duration_since(last);
                }
                self.busy_at = Some(now);
            }
            if now.saturating_duration_since(self.last_drops_read) >= Duration::from_secs(1) {
                self.last_drops_read = now;
                if let Ok(st) = r.stats() {
                    self.drops = st.drops;
                }
            }
        }
        if let Some(e) = self.record_error.take() {
            return Err(e).context("--record: writing the file");
        }
        Ok(())
    }

    /// How long the loop may sleep while the intercept connections are lazy.
    #[inline]
    pub fn lazy_wait(&self, capture_wait: Duration) -> Duration {
        lazy_wait(capture_wait, self.gap)
    }

    /// Whether the intercept connections may be read on the capture's wakes (see
    /// [`lazy_peers`]), `stalled` sessions waiting on the target.
    #[inline]
    pub fn peers_may_be_lazy(&self, now: Instant, stalled: usize, capture_wait: Duration) -> bool {
        lazy_peers(self.busy_at, now, stalled, self.lazy_wait(capture_wait))
    }

    /// At the end of the run: the last drop count, and the recording completed.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(r) = self.ring.as_mut() {
            if let Ok(st) = r.stats() {
                self.drops = st.drops;
            }
        }
        if let Some(r) = self.recorder.take() {
            r.finish().context("--record: finishing the file")?;
        }
        Ok(())
    }
}

fn open_ring(
    cfg: &LiveConfig,
    interface: Option<&str>,
    fanout: Option<u16>,
    protocol_answers: bool,
) -> anyhow::Result<(RingCapture, Vec<netio::Insn>)> {
    let ports: Vec<u16> = cfg.core.rules.iter().map(|r| r.online_port).collect();
    // A comparison needs the online server's answers too: sent by this host, from its ports;
    // so does a protocol hook that reads them.
    let answers = cfg.compare.is_some() || protocol_answers;
    let filter = TcpFilter {
        dst_ports: ports.clone(),
        dst_addrs: online_v4_addrs(cfg),
        // Our own sends to the target would otherwise be captured again (same port, other host).
        drop_outgoing: true,
        answer_ports: if answers { ports } else { Vec::new() },
        ..TcpFilter::default()
    };
    let filter = match &cfg.filter {
        Some(expr) => with_user_filter(expr, &filter.compile())?,
        None => filter.compile(),
    };
    let mut ring_cfg = RingConfig {
        interface: interface.map(String::from),
        filter: filter.clone(),
        ignore_outgoing: !answers,
        fanout,
        block_timeout_ms: cfg.capture_wait.as_millis().try_into().unwrap_or(u32::MAX),
        ..RingConfig::default()
    };
    if let Some(bytes) = cfg.capture_buffer {
        // `-B`: the same blocks, as many as fit (each capture thread has a ring of this size).
        ring_cfg.block_count = (bytes / ring_cfg.block_size).max(8);
    }
    let ring = RingCapture::open(&ring_cfg).context("cannot start capturing")?;
    info!(
        "capturing on {} for {} rule(s), {} intercept(s)",
        interface.unwrap_or("all interfaces"),
        cfg.core.rules.len(),
        cfg.intercepts.len()
    );
    Ok((ring, filter))
}

/// `-F EXPR` in front of tcpcopy's own filter: a packet must pass both.
fn with_user_filter(expr: &str, own: &[netio::Insn]) -> anyhow::Result<Vec<netio::Insn>> {
    let user = UserFilter::compile(expr).map_err(|e| anyhow::anyhow!("-F: {e}"))?;
    let code = user.and_then(own).map_err(|e| anyhow::anyhow!("-F: {e}"))?;
    info!(
        "-F '{expr}': {} instructions in front of the {} of tcpcopy's own filter",
        code.len() - own.len(),
        own.len()
    );
    Ok(code)
}

fn online_v4_addrs(cfg: &LiveConfig) -> Vec<std::net::Ipv4Addr> {
    // The kernel filter can narrow by address only when every rule names one.
    let addrs: Option<Vec<_>> = cfg
        .core
        .rules
        .iter()
        .map(|r| match r.online_addr {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        })
        .collect();
    addrs.unwrap_or_default()
}
