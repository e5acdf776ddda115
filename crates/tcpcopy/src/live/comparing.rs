//! The worker's comparison (`--compare`): hands the comparator (crate `compare`) what it needs
//! on one clock, nanoseconds since the Unix epoch: the client packets and the online server's
//! answers the capture brings (at their capture times), the requests the core sent (the core's
//! `Instant`s, moved onto the wall clock), and the target's answers intercept reported (at its
//! capture times, its clock's offset already removed by `peers`).
//!
//! It decides nothing about a packet: which are the client's and which the server's follows
//! from the transfer rules; pairing and judging are the comparator's.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use compare::{AnswerSegment, Comparator, CompareConfig, Digest, Flow, Side, Summary};
use session::{Replicator, ResponseOwner};
use wire::TcpPacket;

use super::peers::{ResponseSink, TargetNote};
use crate::config::LiveConfig;

/// How long an exchange waits for its answers before it is judged with what it has.
const SETTLE: Duration = Duration::from_secs(5);

/// How often open exchanges are checked for having settled.
const TICK: Duration = Duration::from_millis(250);

/// How a captured packet travelled past this host, as far as the capture can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    /// Addressed to this host.
    Incoming,
    /// Sent by this host (the online server's answers; and our own sends, never wanted).
    Outgoing,
    /// Neither, or not known (a mirror port, a replayed file).
    Passing,
}

impl Seen {
    pub fn of_pkttype(pkttype: u8) -> Seen {
        match pkttype {
            libc::PACKET_HOST => Seen::Incoming,
            libc::PACKET_OUTGOING => Seen::Outgoing,
            _ => Seen::Passing,
        }
    }
}

/// Where the intercept connections hand the target's packets: the core, and with a comparison
/// the comparator too (the packets the core names, with intercept's note).
pub(super) struct Sink<'a> {
    pub core: &'a mut Replicator,
    pub compare: Option<&'a mut Comparing>,
}

impl ResponseSink for Sink<'_> {
    #[inline]
    fn response(&mut self, now: Instant, packet: &[u8], note: Option<TargetNote<'_>>) {
        let head = note.map_or(&[][..], |n| n.head);
        let owner = self.core.handle_response_head(now, packet, head);
        if let (Some(owner), Some(mut note), Some(c)) = (owner, note, self.compare.as_deref_mut()) {
            // A protocol (`--protocol`) may have asked for more than the comparison keeps.
            note.head = &note.head[..note.head.len().min(c.head_bytes)];
            c.response(owner, packet, note);
        }
    }

    fn routes(&self) -> Vec<SocketAddr> {
        self.core.routes().collect()
    }
}

pub(super) struct Comparing {
    cmp: Comparator,
    /// First bytes of each answer compared (`--compare-bytes`).
    head_bytes: usize,
    /// The core's clock (`Instant`) and the wall clock at one moment.
    epoch: (Instant, u64),
    last_tick: Instant,
    /// A replay's recorded times moved to now (the first packet's time becomes the moment it
    /// was replayed): latency online keeps its recorded value, and the timeline lines up with
    /// the target's.
    replay_shift: Option<i128>,
}

impl Comparing {
    pub fn new(cfg: &LiveConfig) -> Option<Comparing> {
        let settings = cfg.compare.as_ref()?;
        let core = &cfg.core;
        let cmp = Comparator::new(CompareConfig {
            head_bytes: usize::from(settings.head_bytes),
            ignore_headers: settings.ignore_headers.clone(),
            copies: core.copies,
            baseline: core.baseline.is_some(),
            // Longer than the target's lag behind production: an answer judged missing too early
            // would be a false difference.
            settle: SETTLE.as_nanos() as u64,
            max_open: max_open(cfg, usize::from(settings.head_bytes)),
            ..CompareConfig::default()
        });
        Some(Comparing {
            cmp,
            head_bytes: usize::from(settings.head_bytes),
            epoch: (Instant::now(), wall_ns()),
            last_tick: Instant::now(),
            replay_shift: None,
        })
    }

    /// `t` on the wall clock.
    #[inline]
    fn ns(&self, t: Instant) -> u64 {
        ns_at(self.epoch, t)
    }

    /// A captured packet: a client's goes to the core and the comparator, an answer of the
    /// online server to the comparator only. `at_ns` is its capture time.
    #[inline]
    pub fn captured(
        &mut self,
        core: &mut Replicator,
        now: Instant,
        at_ns: u64,
        seen: Seen,
        data: &[u8],
    ) {
        let Ok(p) = TcpPacket::parse(data) else {
            core.handle_capture(now, data);
            return;
        };
        let rules = &core.config().rules;
        if rules.iter().any(|r| r.matches(p.dst())) {
            // Our own sends are outgoing too (and the filter leaves them out already).
            if seen == Seen::Outgoing {
                return;
            }
            core.handle_capture(now, data);
            if core.replicates(p.src(), p.dst()) {
                let flags = p.flags();
                let flow = Flow {
                    client: p.src(),
                    server: p.dst(),
                };
                let payload = p.payload();
                self.cmp.request(
                    at_ns,
                    flow,
                    p.seq().0,
                    p.ack().0,
                    payload,
                    flags.fin(),
                    flags.rst(),
                );
            }
        } else if rules.iter().any(|r| r.matches(p.src())) {
            // On a loopback the answer passes twice: sent, then received; it counts once.
            if seen == Seen::Incoming || !core.replicates(p.dst(), p.src()) {
                return;
            }
            let flags = p.flags();
            let payload = p.payload();
            if payload.is_empty() && !flags.fin() && !flags.rst() {
                return;
            }
            let flow = Flow {
                client: p.dst(),
                server: p.src(),
            };
            self.cmp.online_answer(
                flow,
                &AnswerSegment {
                    at: at_ns,
                    seq: p.seq().0,
                    ack: p.ack().0,
                    len: payload.len() as u32,
                    digest: Digest::of(payload),
                    head: payload,
                    fin: flags.fin(),
                    rst: flags.rst(),
                },
            );
        } else if seen != Seen::Outgoing {
            core.handle_capture(now, data);
        }
    }

    /// A packet of a replayed file, recorded at `recorded_ns`: as [`Comparing::captured`], its
    /// time moved by the replay's shift.
    #[inline]
    pub fn replayed(&mut self, core: &mut Replicator, now: Instant, recorded_ns: u64, data: &[u8]) {
        let shift = *self
            .replay_shift
            .get_or_insert_with(|| i128::from(ns_at(self.epoch, now)) - i128::from(recorded_ns));
        let at = (i128::from(recorded_ns) + shift).clamp(0, i128::from(u64::MAX)) as u64;
        self.captured(core, now, at, Seen::Passing, data);
    }

    /// A target's answer segment the core named (`owner`), with what intercept said of it.
    #[inline]
    pub fn response(&mut self, owner: ResponseOwner, packet: &[u8], note: TargetNote<'_>) {
        let Ok(p) = TcpPacket::parse(packet) else {
            return;
        };
        let flags = p.flags();
        let len = p.payload_len() as u32;
        let side = if owner.baseline {
            Side::Baseline
        } else {
            Side::Target(owner.copy)
        };
        self.cmp.target_answer(
            flow(owner.client, owner.online),
            side,
            &AnswerSegment {
                at: note.at_ns,
                seq: p.seq().0,
                ack: owner.client_ack.0,
                len,
                digest: Digest {
                    hash: note.hash,
                    len: u64::from(len),
                },
                head: note.head,
                fin: flags.fin(),
                rst: flags.rst(),
            },
        );
    }

    /// After a batch: the requests the core sent, and (every [`TICK`]) the exchanges that
    /// settled.
    #[inline]
    pub fn after_batch(&mut self, core: &mut Replicator, now: Instant) {
        let copies = core.config().copies;
        let epoch = self.epoch;
        let cmp = &mut self.cmp;
        core.drain_sends(|s| {
            let side = if s.copy >= copies {
                Side::Baseline
            } else {
                Side::Target(s.copy)
            };
            cmp.sent(flow(s.client, s.online), side, s.end.0, ns_at(epoch, s.at));
        });
        if now.saturating_duration_since(self.last_tick) >= TICK {
            self.last_tick = now;
            self.cmp.tick(self.ns(now));
        }
    }

    /// Live counters.
    pub fn live(&self) -> compare::Live {
        self.cmp.live()
    }

    /// Latency so far: online, and at the target.
    pub fn latency(&self) -> (compare::report::Dist, compare::report::Dist) {
        let (online, target) = self.cmp.latency();
        (online.to_dist(), target.to_dist())
    }

    /// At the end of the run: every exchange judged.
    pub fn finish(&mut self) -> Summary {
        self.cmp.finish()
    }
}

/// Exchanges one thread's comparator keeps open: what a quarter of `-m`, shared by the capture
/// threads, holds at the bytes an exchange may keep (a request's, the online and a target's
/// first bytes, and some bookkeeping); older ones are judged early (and counted as evicted).
fn max_open(cfg: &LiveConfig, head_bytes: usize) -> usize {
    let per_exchange = 3 * head_bytes + 512;
    let budget = cfg.core.max_buffered_bytes / 4 / usize::from(cfg.threads.max(1));
    (budget / per_exchange).clamp(10_000, 1 << 20)
}

fn flow(client: SocketAddr, server: SocketAddr) -> Flow {
    Flow { client, server }
}

/// `t` on the wall clock, given one moment on both clocks.
#[inline]
fn ns_at((at, ns): (Instant, u64), t: Instant) -> u64 {
    match t.checked_duration_since(at) {
        Some(d) => ns + d.as_nanos() as u64,
        None => ns.saturating_sub(at.duration_since(t).as_nanos() as u64),
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub(super) fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
