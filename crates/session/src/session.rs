//! The session table and the per-session state machine.
//!
//! Sequence spaces: the replicated session keeps the client's sequence numbers (the target sees the
//! client's ISN, or a synthesized one for a joined session), so client bytes need no translation.
//! What is translated is the acknowledgment: the client acknowledged the *online* server's bytes, but
//! the target sends its own, so every segment we send acknowledges what the target really sent
//! (`Session::t_next`, learned from the intercept's reports).
//!
//! Client bytes are kept as one stream per session with offsets from the ISN (`u64`, so streams
//! longer than 4 GiB work). A *request* is a run of client bytes sent with the same acknowledgment
//! number: when the acknowledgment moves, the online server answered in between, so a new request
//! starts there. The next request goes to the target only once the previous one is acknowledged and
//! answered (or `response_wait` passed), which keeps request/response protocols in order.

use std::collections::{BTreeMap, VecDeque};

use std::collections::HashMap;

use slotmap::SlotMap;

/// Session tables are keyed by endpoints remote clients choose: a seeded hasher (foldhash, per
/// process), several times cheaper than SipHash per packet.
type TableMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Removes `key` from `map` if it still maps to `value` (a later owner keeps its entry).
fn unlink<K: std::hash::Hash + Eq, V: PartialEq>(map: &mut TableMap<K, V>, key: &K, value: V) {
    if map.get(key) == Some(&value) {
        map.remove(key);
    }
}
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use wire::{Flags, SegmentRepr, Seq, TcpPacket};

use crate::config::Config;
use crate::stats::Stats;
use crate::timer::TimerWheel;
use closed::{Closed, ClosedSessions};

mod closed;

slotmap::new_key_type! {
    /// A live session: an index into [`Replicator::sessions`] with a version, so that an id kept
    /// after its session ended (in the timer wheel, as a successor) finds nothing, not the next
    /// session in its slot.
    struct SessionId;
}
/// A captured connection as the online server sees it (client, online server), and which of the
/// `Config::copies` replicated sessions made from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OnlineKey(Flow);

impl OnlineKey {
    fn new(client: SocketAddr, online: SocketAddr, copy: u16) -> OnlineKey {
        OnlineKey(Flow {
            from: client,
            to: online,
            copy,
        })
    }
}

/// A replicated session's connection at the target (our client endpoint, the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TargetKey(Flow);

impl TargetKey {
    fn new(local: SocketAddr, target: SocketAddr) -> TargetKey {
        TargetKey(Flow {
            from: local,
            to: target,
            copy: 0,
        })
    }
}

/// Two endpoints and a copy number, as a table key: hashed as two words (an IPv4 pair) or five
/// (IPv6) instead of field by field, since each packet probes a table with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    from: SocketAddr,
    to: SocketAddr,
    copy: u16,
}

impl std::hash::Hash for Flow {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let ports = u64::from(self.from.port()) << 32
            | u64::from(self.to.port()) << 16
            | u64::from(self.copy);
        match (self.from.ip(), self.to.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
            }
            (a, b) => {
                h.write_u128(ip_bits(a));
                h.write_u128(ip_bits(b));
            }
        }
        h.write_u64(ports);
    }
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

/// Window we announce to the target (scaled by `Config::window_scale` once both sides offered it).
/// Its size hardly matters: the target's bytes are acknowledged as soon as they are reported.
const OUR_WINDOW: u16 = 65535;
/// Duplicate acknowledgments that trigger a fast retransmission (RFC 5681).
const DUPACK_THRESHOLD: u32 = 3;
/// Out-of-order captured segments kept per session before further ones are dropped (the client's
/// own retransmission refills the hole).
const MAX_OOO_SEGMENTS: usize = 1024;
/// How far ahead of the next expected byte a captured segment may start and still be kept.
const MAX_OOO_DISTANCE: u64 = 4 << 20;
/// Buffers of ended sessions kept for new ones (see [`Buffers`]).
const MAX_SPARE: usize = 1024;
/// The largest client stream buffer kept for a new session, in bytes.
const MAX_SPARE_DATA: usize = 16 << 10;
/// The most request boundaries a kept queue has room for; larger ones shrink to this.
const MAX_SPARE_BOUNDS: usize = 64;
/// How long a closed session lingers to re-acknowledge a retransmitted target FIN.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The client reused the port of a session the target has not finished yet, and both would
    /// have the same endpoints there: nothing is sent until that session is done.
    Waiting,
    /// SYN sent to the target, waiting for its SYN-ACK.
    SynSent,
    Established,
}

#[derive(Debug)]
struct Session {
    /// Which of the `Config::copies` sessions of its client connection this is.
    copy: u16,
    client: SocketAddr,
    online: SocketAddr,
    /// The replicated session's endpoints as the target sees them.
    local: SocketAddr,
    target: SocketAddr,
    state: State,
    /// The client's ISN (client sequence space).
    isn: Seq,
    /// The ISN the target sees: the client's, advanced by a clock (see `Config::clock_isn`).
    out_isn: Seq,

    // --- client stream, as captured ---
    /// Stream offset of the first byte in `data` (everything before it the target acknowledged).
    data_start: u64,
    data: Vec<u8>,
    /// Bytes of `data` already acknowledged and waiting to be compacted away.
    data_skip: usize,
    /// Next stream offset expected from the client, and its sequence number.
    rcv_nxt: u64,
    rcv_nxt_seq: Seq,
    ooo: BTreeMap<u64, (Vec<u8>, Option<Seq>, bool)>,
    /// Payload bytes held in `ooo`.
    ooo_bytes: usize,
    /// Acknowledgment number of the client's last data segment: its change starts a new request.
    last_ack_tag: Option<Seq>,
    /// Whether bytes arrived since the last request boundary (an open request).
    open_request: bool,
    /// Request boundaries not yet released to the target (offsets where a new request starts, or
    /// the client's FIN).
    pending_bounds: VecDeque<u64>,
    /// Request boundaries not yet fully acknowledged by the target.
    unacked_bounds: VecDeque<u64>,
    /// Offset of the client's FIN, once captured.
    client_fin: Option<u64>,
    client_rst: bool,

    // --- towards the target ---
    snd_una: u64,
    snd_nxt: u64,
    fin_sent: bool,
    /// The target's next sequence number: what every segment we send acknowledges.
    t_next: Seq,
    t_window: u32,
    /// Shift applied to the target's window field (0 unless both sides offered window scaling).
    t_wscale: u8,
    t_mss: u16,
    target_fin: bool,
    /// `t_next` when the last client byte went out; a later `t_next` means the target answered.
    answer_mark: Seq,
    /// Since when the next request waits for the target's answer to the previous one.
    waiting_since: Option<Instant>,
    ack_pending: bool,
    /// When the acknowledgment of the one segment it holds back is due (a second one is
    /// acknowledged at once).
    ack_due: Option<Instant>,
    /// Set when the client's first data showed that the online server spoke first.
    greeted: bool,
    /// Duplicate acknowledgments in a row, and the end of the data outstanding when fast recovery
    /// began (NewReno: a partial acknowledgment below it retransmits the next hole at once).
    dupacks: u32,
    recover: Option<u64>,
    /// Retransmit the first unacknowledged segment at the next chance.
    fast_rtx: bool,

    // --- timers ---
    rto: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
    retries: u32,
    rtx_at: Option<Instant>,
    rtt_probe: Option<(u64, Instant)>,
    last_activity: Instant,
    /// A session waiting for this one to finish at the target (same endpoints there).
    successor: Option<SessionId>,
    /// The deadline this session is queued under in the timer wheel.
    queued_at: Option<Instant>,
    /// Waiting in `Replicator::dirty` for the end of the batch.
    dirty: bool,
    /// Counted in `Replicator::stalled`, as of the session's last move (see
    /// [`Session::stalled`]).
    counted_stalled: bool,
    /// The target's last new data came without PSH or FIN: more of its answer follows, sent as
    /// our acknowledgments come back.
    answer_open: bool,
}

/// The replication core: all sessions of one tcpcopy instance. See the crate docs for the call order.
pub struct Replicator {
    config: Config,
    /// When this replicator started, for the ISN clock.
    born: Option<Instant>,
    /// Live sessions, in slots reused as sessions end: a packet's session is one hash probe (by
    /// endpoints) and then indexed, not hashed again at each step.
    sessions: SlotMap<SessionId, Session>,
    /// Buffers of ended sessions, cleared, for new ones: short connections allocate nothing.
    spare: Vec<Buffers>,
    by_online: TableMap<OnlineKey, SessionId>,
    by_target: TableMap<TargetKey, SessionId>,
    /// Connections we aborted, so that their further segments are not joined as a new session
    /// starting mid-request; forgotten at the next SYN or after the session timeout.
    aborted: TableMap<OnlineKey, Instant>,
    /// Online servers seen speaking first: their sessions acknowledge the target's SYN-ACK at
    /// once.
    greeting_servers: TableMap<SocketAddr, ()>,
    timers: TimerWheel<SessionId>,
    /// Sessions that closed in the last [`LINGER`].
    closed: ClosedSessions,
    /// Client bytes held for the target by all sessions together (bounded by
    /// `Config::max_buffered_bytes`).
    buffered: usize,
    out: Outbox,
    routes: Vec<SocketAddr>,
    stats: Stats,
    /// Between [`Replicator::begin_batch`] and [`Replicator::end_batch`]: sessions that got a
    /// packet, to be moved on once at the end, and the time of the latest packet.
    batching: bool,
    dirty: Vec<SessionId>,
    batch_now: Option<Instant>,
    /// Sessions that were stalled after their last move (see [`Replicator::stalled_sessions`]).
    stalled: usize,
}

impl Replicator {
    pub fn new(config: Config) -> Self {
        Replicator {
            config,
            born: None,
            sessions: SlotMap::with_key(),
            spare: Vec::new(),
            by_online: TableMap::default(),
            by_target: TableMap::default(),
            aborted: TableMap::default(),
            greeting_servers: TableMap::default(),
            timers: TimerWheel::new(),
            closed: ClosedSessions::default(),
            buffered: 0,
            out: Outbox::default(),
            routes: Vec::new(),
            stats: Stats::default(),
            batching: false,
            dirty: Vec::new(),
            batch_now: None,
            stalled: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats {
            packets_sent: self.out.packets,
            bytes_buffered: self.buffered as u64,
            ..self.stats
        }
    }

    /// Client endpoints (as the target sees them) of every live session, for an intercept that
    /// (re)connected.
    pub fn routes(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        // Closed ones too: the target may still repeat its FIN.
        let closed = self.closed.locals();
        self.sessions.values().map(|s| s.local).chain(closed)
    }

    /// Hands over the client endpoints of sessions created since the last call.
    pub fn drain_routes(&mut self, mut f: impl FnMut(&[SocketAddr])) {
        if !self.routes.is_empty() {
            f(&self.routes);
            self.routes.clear();
        }
    }

    /// Hands over every packet to send to the target, in order, IP header first.
    pub fn drain_transmits(&mut self, f: impl FnMut(&[u8])) {
        self.out.drain_all(|packets| packets.for_each(f));
    }

    /// Like [`Replicator::drain_transmits`], handing all the packets to `f` at once (a sender
    /// that batches them reads them in place).
    pub fn drain_transmits_all<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> R,
    ) -> R {
        self.out.drain_all(f)
    }

    /// Sessions still working towards the target: opening, waiting for a predecessor, holding
    /// unacknowledged bytes (a retransmission pending) or waiting for an answer. A session with
    /// none of these only waits for its client. O(sessions).
    pub fn busy_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| {
                matches!(s.state, State::Waiting | State::SynSent)
                    || s.rtx_at.is_some()
                    || s.waiting_since.is_some()
            })
            .count()
    }

    /// Sessions waiting on the target for their next step: their handshake (or the end of an
    /// earlier connection on the same endpoints); client bytes, a FIN or a reset they hold until
    /// the target answered the previous request or opened its window; or the rest of an answer
    /// still coming (its last segment had no PSH), which the target sends as our
    /// acknowledgments come back. While there are any, the target's reports are worth reading
    /// as soon as they come; with none, they can wait for the next wake. As of the end of the
    /// last batch (or call); O(1).
    pub fn stalled_sessions(&self) -> usize {
        self.stalled
    }

    /// Checks [`Self::stalled_sessions`] against every session, between batches.
    #[cfg(test)]
    fn assert_stalled_count(&self) {
        let stalled = self.sessions.values().filter(|s| s.stalled()).count();
        assert_eq!(self.stalled, stalled, "stalled sessions counted / found");
    }

    /// Number of packets waiting in [`Self::drain_transmits`].
    pub fn pending_transmits(&self) -> usize {
        self.out.ends.len()
    }

    /// Starts a batch: until [`Self::end_batch`], captured packets and responses only update
    /// their sessions, and each session sends what it may once, at the end. A driver that reads
    /// packets in batches gets fewer packets out: an answer and the target's FIN reported
    /// together are acknowledged by one segment, not one each.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends a batch (see [`Self::begin_batch`]): every session that got a packet sends what it
    /// may now.
    pub fn end_batch(&mut self) {
        self.batching = false;
        let Some(now) = self.batch_now.take() else {
            return;
        };
        // The wheel follows the clock here too (once a batch, or once a packet without batches),
        // not only in `handle_timeout`: a driver that calls that only when a deadline is due
        // would otherwise leave the cursor behind, and after the wheel's span every deadline
        // would go to the far heap.
        self.timers.advance(now);
        let mut dirty = std::mem::take(&mut self.dirty);
        for &id in &dirty {
            if let Some(s) = self.sessions.get_mut(id) {
                s.dirty = false;
                self.progress(now, id);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// A session got a packet: it moves on now, or at the end of the batch.
    fn touch(&mut self, now: Instant, id: SessionId) {
        if !self.batching {
            self.timers.advance(now);
            self.progress(now, id);
            return;
        }
        self.batch_now = Some(now);
        if let Some(s) = self.sessions.get_mut(id) {
            if !std::mem::replace(&mut s.dirty, true) {
                self.dirty.push(id);
            }
        }
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let linger = self.closed.next_expiry();
        self.poll_session_timeout().into_iter().chain(linger).min()
    }

    /// The earliest deadline of a live session.
    fn poll_session_timeout(&mut self) -> Option<Instant> {
        while let Some((at, id)) = self.timers.peek() {
            let Some(s) = self.sessions.get_mut(id) else {
                self.timers.pop();
                continue;
            };
            if s.queued_at != Some(at) {
                self.timers.pop();
                continue;
            }
            // The entry may be earlier than the session's deadline now (see `schedule`): queue
            // the real one instead, so that the time returned is exact.
            let real = Self::deadline(&self.config, s);
            if real == Some(at) {
                return Some(at);
            }
            self.timers.pop();
            s.queued_at = real;
            if let Some(real) = real {
                self.timers.push(real, id);
            }
        }
        None
    }

    /// A packet a client sent towards the online server (IP header first).
    pub fn handle_capture(&mut self, now: Instant, packet: &[u8]) {
        self.born.get_or_insert(now);
        self.stats.captured_packets += 1;
        let Ok(p) = TcpPacket::parse(packet) else {
            self.stats.malformed_packets += 1;
            return;
        };
        let Some(rule) = self.config.rule_for(p.dst()).copied() else {
            self.stats.ignored_packets += 1;
            return;
        };
        if !self.config.samples(p.src()) {
            self.stats.sampled_out_packets += 1;
            return;
        }
        if p.payload().len() < p.payload_len() {
            // Cut short by the capture: those bytes are gone for good (the online server has them,
            // so the client never sends them again). The session cannot be delivered intact.
            self.stats.truncated_packets += 1;
            for copy in 0..self.config.copies {
                if let Some(&id) = self.by_online.get(&OnlineKey::new(p.src(), p.dst(), copy)) {
                    self.abort(now, id);
                }
            }
            return;
        }
        if p.payload_len() > usize::from(self.config.mss) {
            // TSO/GSO/GRO on the capture side: sent on as several segments.
            self.stats.super_segments += 1;
        }
        for copy in 0..self.config.copies {
            self.capture_copy(now, &p, rule.target, copy);
        }
    }

    /// One replicated session's share of a captured packet.
    fn capture_copy(&mut self, now: Instant, p: &TcpPacket<'_>, target: SocketAddr, copy: u16) {
        let key = OnlineKey::new(p.src(), p.dst(), copy);
        let flags = p.flags();
        let existing = self.by_online.get(&key).copied();
        if existing.is_none() {
            if let Some(c) = self.closed.get(&key) {
                if !flags.syn() || flags.ack() {
                    // A late segment of a connection that is over at the target too.
                    self.stats.ignored_packets += 1;
                    return;
                }
                if c.isn == p.seq() {
                    self.stats.duplicate_segments += 1;
                    return;
                }
                // The client opens a new connection from the same port.
                self.closed.forget(&key);
            }
        }

        if flags.syn() && !flags.ack() {
            if let Some(id) = existing {
                // `by_online` names live sessions only: `remove` takes the entry with the session.
                let s = &self.sessions[id];
                if s.isn == p.seq() {
                    self.stats.duplicate_segments += 1;
                    return;
                }
                // The client reuses the port for a new connection. A session with bytes still
                // owed to the target, or whose close is still under way there, finishes first
                // (a reset now could discard a request the target's server has not read yet);
                // one that owes nothing is reset now.
                if s.owes_target() || s.closing() {
                    self.by_online.remove(&key);
                    self.stats.sessions_port_reused += 1;
                } else {
                    self.abort(now, id);
                }
            }
            self.aborted.remove(&key);
            self.create(now, p, target, copy, p.seq(), false);
            return;
        }

        let id = match existing {
            Some(id) => id,
            None => {
                // Open before we started: join it if it carries data, else it is an orphan packet.
                // A connection we aborted is not joined again in the middle of its stream.
                let was_aborted = self
                    .aborted
                    .get(&key)
                    .is_some_and(|&t| now < t + self.config.session_timeout);
                if !self.config.join_open_sessions
                    || was_aborted
                    || p.payload_len() == 0
                    || flags.rst()
                    || flags.syn()
                {
                    self.stats.ignored_packets += 1;
                    return;
                }
                self.create(now, p, target, copy, p.seq() - 1, true)
            }
        };
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.last_activity = now;
        if flags.rst() {
            if !s.client_rst {
                s.client_rst = true;
                self.stats.sessions_reset_by_client += 1;
            }
        } else {
            let ack_tag = flags.ack().then(|| p.ack());
            let before = s.held();
            s.accept_client(p, ack_tag, &mut self.stats);
            if std::mem::take(&mut s.greeted) {
                self.greeting_servers.insert(s.online, ());
            }
            let held = s.held();
            self.buffered = self.buffered + held - before;
            if held > self.config.max_session_bytes
                || self.buffered > self.config.max_buffered_bytes
            {
                self.stats.sessions_overflowed += 1;
                self.abort(now, id);
                return;
            }
        }
        self.touch(now, id);
    }

    /// A target packet reported by an intercept (IP header first; payload may be cut off).
    pub fn handle_response(&mut self, now: Instant, packet: &[u8]) {
        self.born.get_or_insert(now);
        self.stats.responses += 1;
        let Ok(p) = TcpPacket::parse(packet) else {
            self.stats.malformed_packets += 1;
            return;
        };
        let Some(&id) = self.by_target.get(&TargetKey::new(p.dst(), p.src())) else {
            self.closed_response(&p);
            return;
        };
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.last_activity = now;
        let flags = p.flags();
        if flags.rst() {
            self.stats.sessions_reset_by_target += 1;
            self.remember_abort(now, id);
            self.remove(now, id);
            return;
        }
        match s.state {
            // Not open at the target yet: by_target never leads here.
            State::Waiting => {}
            State::SynSent => {
                // A late packet of an earlier connection on these endpoints can arrive right after
                // our SYN; a target that answers a *repeated* SYN with a bare ACK, though, holds
                // an older connection there (TIME-WAIT, or one it never saw closed) and
                // acknowledges that one. Reset it with the sequence number it expects, then ask
                // again.
                if s.retries >= 1 && !flags.syn() && flags.ack() && p.ack() != s.out_isn + 1 {
                    self.stats.stale_target_connections += 1;
                    let rst = SegmentRepr {
                        ack: Seq(0),
                        flags: Flags::RST,
                        ..s.repr(p.ack(), Flags::RST, None, self.config.ttl)
                    };
                    let syn = s.syn(&self.config);
                    self.out.emit(&rst, &[]);
                    self.out.emit(&syn, &[]);
                    return;
                }
                if !(flags.syn() && flags.ack() && p.ack() == s.out_isn + 1) {
                    return;
                }
                s.state = State::Established;
                s.t_next = p.seq() + 1;
                // Whatever the target sends before our first byte is a greeting (server speaks first).
                s.answer_mark = s.t_next;
                s.t_mss = p.mss().unwrap_or(536);
                // Window scaling is on only when both sides offered it; a SYN-ACK's window is unscaled.
                s.t_wscale = match (self.config.window_scale, p.window_scale()) {
                    (Some(_), Some(shift)) => shift.min(14),
                    _ => 0,
                };
                s.t_window = u32::from(p.window());
                s.retries = 0;
                s.rtx_at = None;
                if let Some((0, sent)) = s.rtt_probe.take() {
                    s.sample_rtt(now.saturating_duration_since(sent), self.config.min_rto);
                }
                // The handshake ACK, like any: the first request usually follows within a few
                // milliseconds and carries it. Not for a server known to speak first, which
                // greets only once the handshake is complete.
                match self.config.delayed_ack {
                    Some(delay)
                        if s.rcv_nxt == 0 && !self.greeting_servers.contains_key(&s.online) =>
                    {
                        s.ack_due = Some(now + delay);
                    }
                    _ => s.ack_pending = true,
                }
            }
            State::Established => {
                if flags.syn() {
                    // Our handshake ACK was lost: the target repeats its SYN-ACK.
                    s.ack_pending = true;
                } else {
                    let before = s.held();
                    s.on_target_segment(
                        now,
                        &p,
                        &mut self.stats,
                        self.config.min_rto,
                        self.config.delayed_ack,
                    );
                    self.buffered -= before - s.held();
                }
            }
        }
        self.touch(now, id);
    }

    /// A target packet for no live session: a closed one acknowledges a repeated FIN again.
    fn closed_response(&mut self, p: &TcpPacket<'_>) {
        let Some(c) = self.closed.at_target(&TargetKey::new(p.dst(), p.src())) else {
            self.stats.responses_unknown += 1;
            return;
        };
        let flags = p.flags();
        if flags.rst() {
            let key = c.key;
            self.closed.forget(&key);
        } else if flags.fin() {
            self.out.emit(&c.ack, &[]);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.born.get_or_insert(now);
        self.timers.advance(now);
        self.closed.expire(now);
        while let Some(at) = self.poll_session_timeout() {
            if at > now {
                break;
            }
            let Some((_, id)) = self.timers.pop() else {
                break;
            };
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            s.queued_at = None;
            if now >= s.last_activity + self.config.session_timeout {
                self.stats.sessions_timed_out += 1;
                self.abort(now, id);
                continue;
            }
            if s.rtx_at.is_some_and(|t| now >= t) {
                s.retries += 1;
                if s.retries > self.config.max_retries {
                    self.stats.sessions_failed += 1;
                    self.abort(now, id);
                    continue;
                }
                s.rto = (s.rto * 2).min(Duration::from_secs(10));
                s.rtx_at = None;
                s.rtt_probe = None;
                self.stats.retransmits += 1;
                if s.state == State::SynSent {
                    let syn = s.syn(&self.config);
                    s.rtx_at = Some(now + s.rto);
                    self.out.emit(&syn, &[]);
                } else {
                    // Go back to the first unacknowledged byte and send again from there.
                    s.snd_nxt = s.snd_una;
                    s.fin_sent = false;
                    s.recover = None;
                    s.dupacks = 0;
                }
            }
            self.progress(now, id);
            // A session that moved on must not be due again at once: this loop would never end.
            if let Some(s) = self.sessions.get_mut(id) {
                if let Some(at) = s.queued_at.filter(|&at| at <= now) {
                    debug_assert!(
                        false,
                        "session due again at once ({at:?} <= {now:?}): {s:?}"
                    );
                    s.queued_at = Some(now + Duration::from_millis(1));
                    self.timers.push(now + Duration::from_millis(1), id);
                }
            }
        }
    }

    fn create(
        &mut self,
        now: Instant,
        p: &TcpPacket<'_>,
        target: SocketAddr,
        copy: u16,
        isn: Seq,
        joined: bool,
    ) -> SessionId {
        let local = self.local_endpoint(p.src(), target, copy);
        let Buffers {
            data,
            pending_bounds,
            unacked_bounds,
        } = self.spare.pop().unwrap_or_default();
        let s = Session {
            copy,
            client: p.src(),
            online: p.dst(),
            local,
            target,
            state: State::SynSent,
            isn,
            out_isn: isn + self.isn_clock(now),
            data_start: 0,
            data,
            data_skip: 0,
            rcv_nxt: 0,
            rcv_nxt_seq: isn + 1,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            last_ack_tag: None,
            open_request: false,
            pending_bounds,
            unacked_bounds,
            client_fin: None,
            client_rst: false,
            snd_una: 0,
            snd_nxt: 0,
            fin_sent: false,
            t_next: Seq(0),
            t_window: 0,
            t_wscale: 0,
            t_mss: 536,
            target_fin: false,
            answer_mark: Seq(0),
            waiting_since: None,
            ack_pending: false,
            ack_due: None,
            greeted: false,
            dupacks: 0,
            recover: None,
            fast_rtx: false,
            rto: self.config.initial_rto,
            srtt: None,
            rttvar: Duration::ZERO,
            retries: 0,
            rtx_at: Some(now + self.config.initial_rto),
            rtt_probe: Some((0, now)),
            last_activity: now,
            successor: None,
            queued_at: None,
            dirty: false,
            counted_stalled: false,
            answer_open: false,
        };
        let id = self.sessions.insert(s);
        self.by_online
            .insert(OnlineKey::new(p.src(), p.dst(), copy), id);
        // A closed connection on these endpoints at the target is over: the new one takes them.
        if let Some(key) = self
            .closed
            .at_target(&TargetKey::new(local, target))
            .map(|c| c.key)
        {
            self.closed.forget(&key);
        }
        let predecessor = self.by_target.get(&TargetKey::new(local, target)).copied();
        self.stats.sessions_created += 1;
        self.stats.sessions_active += 1;
        if joined {
            self.stats.sessions_joined += 1;
        }
        match predecessor.and_then(|p| self.sessions.get_mut(p)) {
            // Only the real client endpoint can be taken (fake ones are probed for a free one).
            Some(prev) => {
                let waiting = prev.successor.replace(id);
                if let Some(w) = self.sessions.get_mut(id) {
                    w.state = State::Waiting;
                    w.rtx_at = None;
                    w.rtt_probe = None;
                }
                // A third connection on the port: the one that was waiting gives way.
                if let Some(w) = waiting {
                    self.abort(now, w);
                }
                self.schedule(id);
                // The predecessor's deadlines may depend on having a successor.
                if let Some(p) = predecessor {
                    self.progress(now, p);
                }
            }
            None => self.start(now, id),
        }
        id
    }

    /// What a new session adds to its client's ISN: `Config::isn_base` plus one per 4 µs since
    /// the replicator's first call (RFC 6528's clock; the driver sets `isn_base` from the wall
    /// clock when it creates the replicator and calls it at once). A replay of the same recording, or a
    /// tcpcopy restarted against the same target, then opens its sessions with later sequence
    /// numbers than the earlier run's, which the target accepts even while it still holds the
    /// earlier connection in TIME-WAIT on the same endpoints.
    fn isn_clock(&mut self, now: Instant) -> u32 {
        if !self.config.clock_isn {
            return 0;
        }
        let born = *self.born.get_or_insert(now);
        let ticks = (now.saturating_duration_since(born).as_micros() / 4) as u32;
        self.config.isn_base.wrapping_add(ticks)
    }

    /// Opens the session at the target: SYN, route announcement, retransmission timer.
    fn start(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.state = State::SynSent;
        s.rtx_at = Some(now + s.rto);
        s.rtt_probe = Some((0, now));
        let syn = s.syn(&self.config);
        self.out.emit(&syn, &[]);
        self.by_target.insert(s.target_key(), id);
        self.routes.push(s.local);
        self.schedule(id);
    }

    /// The replicated session's client endpoint: the real one, or a fake address chosen by a hash of
    /// the client's, probing further when that endpoint is already in use towards this target.
    fn local_endpoint(&self, client: SocketAddr, target: SocketAddr, copy: u16) -> SocketAddr {
        let port = self.config.copy_port(client.port(), copy);
        let fakes = &self.config.fake_clients;
        if fakes.is_empty() {
            return SocketAddr::new(client.ip(), port);
        }
        // Copies of one client spread over the fake addresses too.
        let start = (addr_hash(client.ip()) as usize).wrapping_add(usize::from(copy)) % fakes.len();
        let mut first = None;
        for i in 0..fakes.len() {
            let cand = SocketAddr::new(fakes[(start + i) % fakes.len()], port);
            first.get_or_insert(cand);
            if !self.by_target.contains_key(&TargetKey::new(cand, target))
                && !self.closed.holds_target(&TargetKey::new(cand, target))
            {
                return cand;
            }
        }
        // Every fake address is busy on this port: reuse the first (the older session loses).
        first.unwrap_or(client)
    }

    /// Sends whatever the session may send now, closes it when done, and re-arms its timer.
    fn progress(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let cfg = &self.config;
        if s.state == State::Established {
            s.send_data(now, cfg, &mut self.out);
        }
        if s.ack_pending || s.ack_due.is_some_and(|t| now >= t) {
            s.send_ack(cfg.ttl, &mut self.out);
        }
        if s.state == State::Established {
            // A client that reset its connection still had its requests served online: the target
            // gets each of them, paced as usual, and the reset only once the last one was
            // acknowledged and answered (or the answer is overdue). A reset at once would make the
            // target's kernel discard requests its server had not read yet.
            if s.client_rst && s.snd_una >= s.rcv_nxt && s.pending_bounds.is_empty() {
                let since = *s.waiting_since.get_or_insert(now);
                if s.rcv_nxt == 0 || s.t_next > s.answer_mark || now >= since + cfg.response_wait {
                    self.abort(now, id);
                    return;
                }
            }
            let fin_acked = s.client_fin.is_some_and(|f| s.fin_sent && s.snd_una > f);
            if fin_acked && !s.target_fin && s.successor.is_some() {
                // A new connection on these endpoints waits for this one, which the target keeps
                // half open: give it the response wait to close, then reset it.
                let since = *s.waiting_since.get_or_insert(now);
                if now >= since + cfg.response_wait {
                    self.abort(now, id);
                    return;
                }
            }
            if fin_acked && s.target_fin {
                if s.ack_pending || s.ack_due.is_some() {
                    s.send_ack(cfg.ttl, &mut self.out);
                }
                s.finish_requests(&mut self.stats);
                self.stats.sessions_completed += 1;
                let closed = Closed {
                    key: s.online_key(),
                    isn: s.isn,
                    ack: s.bare_ack(cfg.ttl),
                    at: now,
                };
                // A session waiting for these endpoints takes them over now.
                let successor = s.successor.take();
                self.remove(now, id);
                // An earlier connection of this client port may still linger (on another fake
                // endpoint): its record goes, with its entry by target endpoints.
                self.closed.insert(closed, successor.is_none());
                if let Some(next) = successor {
                    self.start(now, next);
                }
                return;
            }
        }
        self.schedule(id);
    }

    /// When `s` next needs attention: its earliest timer.
    fn deadline(config: &Config, s: &Session) -> Option<Instant> {
        let mut at = s.last_activity + config.session_timeout;
        if let Some(r) = s.rtx_at {
            at = at.min(r);
        }
        if let Some(w) = s.waiting_since {
            at = at.min(w + config.response_wait);
        }
        if let Some(a) = s.ack_due {
            at = at.min(a);
        }
        Some(at)
    }

    /// After a session moved: keeps its place among the stalled sessions and its wheel entry
    /// up to date.
    fn schedule(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let stalled = s.stalled();
        if stalled != s.counted_stalled {
            s.counted_stalled = stalled;
            if stalled {
                self.stalled += 1;
            } else {
                self.stalled -= 1;
            }
        }
        let at = Self::deadline(&self.config, s);
        // Most packets move a deadline later (the idle timeout, the retransmission timer): the
        // wakeup already queued for the earlier time then stays, and when it comes the session
        // is looked at and queued again for its real deadline. Only an earlier deadline needs a
        // new wheel entry, so a busy session costs a wheel entry per timer it actually waits on,
        // not one per packet.
        let earlier = match (at, s.queued_at) {
            (Some(at), Some(queued)) => at < queued,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            s.queued_at = at;
            if let Some(at) = at {
                self.timers.push(at, id);
                // An earlier deadline leaves the later entry behind: rebuild the wheel from the
                // live deadlines once stale ones dominate, so it stays O(sessions).
                if self.timers.len() > 2 * self.sessions.len() + 1024 {
                    self.timers.rebuild(
                        self.sessions
                            .iter()
                            .filter_map(|(id, s)| s.queued_at.map(|at| (at, id))),
                    );
                }
            }
        }
    }

    /// Resets the session at the target (when it got that far) and forgets it.
    fn abort(&mut self, now: Instant, id: SessionId) {
        self.remember_abort(now, id);
        if let Some(s) = self.sessions.get_mut(id) {
            if s.state == State::Established {
                s.finish_requests(&mut self.stats);
                let rst = s.repr(s.next_seq(), Flags::RST | Flags::ACK, None, self.config.ttl);
                self.out.emit(&rst, &[]);
            }
        }
        self.remove(now, id);
    }

    /// Remembers a connection that ends while its client is still sending, so that its further
    /// segments are not joined as a new session in the middle of its stream.
    fn remember_abort(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        if s.client_rst || s.client_fin.is_some() {
            return;
        }
        if self.aborted.len() >= 100_000 {
            let timeout = self.config.session_timeout;
            self.aborted.retain(|_, t| now < *t + timeout);
        }
        self.aborted.insert(s.online_key(), now);
    }

    /// Forgets a session; one waiting for it starts now.
    fn remove(&mut self, now: Instant, id: SessionId) {
        if let Some(mut s) = self.sessions.remove(id) {
            self.buffered -= s.held();
            if s.counted_stalled {
                self.stalled -= 1;
            }
            if s.state == State::Waiting {
                // Its predecessor, which holds the endpoints at the target, no longer has
                // anyone waiting for it (and need not be cut short for one).
                if let Some(&p) = self.by_target.get(&s.target_key()) {
                    if let Some(pred) = self.sessions.get_mut(p) {
                        if pred.successor == Some(id) {
                            pred.successor = None;
                            // The wait it timed for the successor is over too (with no request
                            // pending, nothing else uses it).
                            if pred.pending_bounds.is_empty() {
                                pred.waiting_since = None;
                            }
                        }
                    }
                }
            }
            if self.spare.len() < MAX_SPARE {
                self.spare.extend(Buffers::take(&mut s));
            }
            self.stats.sessions_active -= 1;
            unlink(&mut self.by_online, &s.online_key(), id);
            // Before a successor starts: it takes the same key.
            unlink(&mut self.by_target, &s.target_key(), id);
            if let Some(next) = s.successor {
                self.start(now, next);
            }
        }
    }
}

/// A session's heap buffers, kept when it ends for a later session: most sessions of short
/// connections then allocate nothing.
#[derive(Debug, Default)]
struct Buffers {
    data: Vec<u8>,
    pending_bounds: VecDeque<u64>,
    unacked_bounds: VecDeque<u64>,
}

impl Buffers {
    /// Takes `s`'s buffers, emptied; none when its stream buffer grew too large to keep, and
    /// its boundary queues shrunk to [`MAX_SPARE_BOUNDS`].
    fn take(s: &mut Session) -> Option<Buffers> {
        if s.data.capacity() > MAX_SPARE_DATA {
            return None;
        }
        let mut b = Buffers {
            data: std::mem::take(&mut s.data),
            pending_bounds: std::mem::take(&mut s.pending_bounds),
            unacked_bounds: std::mem::take(&mut s.unacked_bounds),
        };
        b.data.clear();
        for q in [&mut b.pending_bounds, &mut b.unacked_bounds] {
            q.clear();
            q.shrink_to(MAX_SPARE_BOUNDS);
        }
        Some(b)
    }
}

/// Packets for the target, built back to back in one buffer that is reused after each drain.
#[derive(Debug, Default)]
struct Outbox {
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Packets emitted since the replicator started.
    packets: u64,
}

impl Outbox {
    fn emit(&mut self, repr: &SegmentRepr, payload: &[u8]) {
        repr.emit(payload, &mut self.buf);
        self.ends.push(self.buf.len());
        self.packets += 1;
    }

    fn drain_all<R>(&mut self, f: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> R) -> R {
        let buf = &self.buf;
        let mut start = 0;
        let mut packets = self.ends.iter().map(|&end| {
            let p = &buf[start..end];
            start = end;
            p
        });
        let r = f(&mut packets);
        self.buf.clear();
        self.ends.clear();
        r
    }
}

fn addr_hash(ip: IpAddr) -> u64 {
    // FNV-1a: stable across runs, so a client always maps to the same fake address.
    let fnv = |bytes: &[u8]| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    match ip {
        IpAddr::V4(a) => fnv(&a.octets()),
        IpAddr::V6(a) => fnv(&a.octets()),
    }
}

impl Session {
    fn online_key(&self) -> OnlineKey {
        OnlineKey::new(self.client, self.online, self.copy)
    }

    fn target_key(&self) -> TargetKey {
        TargetKey::new(self.local, self.target)
    }

    /// Sequence number for a bare ACK or RST: after the bytes sent, and after our FIN once sent.
    fn next_seq(&self) -> Seq {
        self.seq_at(self.snd_nxt) + u32::from(self.fin_sent)
    }

    fn seq_at(&self, offset: u64) -> Seq {
        // Offsets count from ISN + 1; sequence numbers wrap every 2^32 bytes.
        self.out_isn + 1 + offset as u32
    }

    fn repr(&self, seq: Seq, flags: Flags, mss: Option<u16>, ttl: u8) -> SegmentRepr {
        let with_ack = !flags.syn() || flags.ack();
        SegmentRepr {
            src: self.local,
            dst: self.target,
            seq,
            ack: if with_ack { self.t_next } else { Seq(0) },
            flags: if with_ack { flags | Flags::ACK } else { flags },
            window: OUR_WINDOW,
            mss,
            window_scale: None,
            ttl,
        }
    }

    /// Our SYN: MSS and window scaling offered; no SACK or timestamps, so the target uses neither.
    fn syn(&self, cfg: &Config) -> SegmentRepr {
        SegmentRepr {
            window_scale: cfg.window_scale,
            ..self.repr(self.out_isn, Flags::SYN, Some(cfg.mss), cfg.ttl)
        }
    }

    /// Whether the session waits on the target for its next step: its handshake (or the end of
    /// a predecessor on the same endpoints); client bytes, a FIN or a reset it holds until the
    /// target answered the previous request or opened its window; or the rest of an answer,
    /// which the target sends as our acknowledgments come back.
    fn stalled(&self) -> bool {
        self.state != State::Established
            || self.snd_nxt < self.rcv_nxt
            || (self.client_fin.is_some() && !self.fin_sent)
            || self.client_rst
            || self.answer_open
    }

    /// Client bytes this session holds for the target.
    fn held(&self) -> usize {
        self.data.len() - self.data_skip + self.ooo_bytes
    }

    /// Takes a captured client segment into the stream (reassembling out-of-order captures).
    fn accept_client(&mut self, p: &TcpPacket<'_>, ack_tag: Option<Seq>, stats: &mut Stats) {
        let rel = p.seq().diff(self.rcv_nxt_seq);
        let off = self.rcv_nxt as i64 + rel;
        if off < 0 {
            stats.duplicate_segments += 1;
            return;
        }
        let off = off as u64;
        let payload = p.payload();
        let fin = p.flags().fin();
        if payload.is_empty() && !fin {
            // A pure acknowledgment of the online server's bytes. The first one (the handshake's)
            // is remembered: a first request acknowledging more answers a server's greeting.
            if self.rcv_nxt == 0 && self.last_ack_tag.is_none() {
                self.last_ack_tag = ack_tag;
            }
            return;
        }
        if off > self.rcv_nxt {
            // Keep a bounded window ahead of the hole; the client's retransmission fills the rest.
            if self.ooo.len() < MAX_OOO_SEGMENTS
                && off - self.rcv_nxt <= MAX_OOO_DISTANCE
                && !self.ooo.contains_key(&off)
            {
                self.ooo_bytes += payload.len();
                self.ooo.insert(off, (payload.to_vec(), ack_tag, fin));
            }
            return;
        }
        let end = off + payload.len() as u64;
        if end <= self.rcv_nxt && !(fin && end == self.rcv_nxt && self.client_fin.is_none()) {
            stats.duplicate_segments += 1;
            return;
        }
        self.append(off, payload, ack_tag, fin, stats);
        while let Some(entry) = self.ooo.first_entry() {
            let off = *entry.key();
            if off > self.rcv_nxt {
                break;
            }
            let (data, tag, fin) = entry.remove();
            self.ooo_bytes -= data.len();
            if off + data.len() as u64 > self.rcv_nxt || fin {
                self.append(off, &data, tag, fin, stats);
            }
        }
    }

    fn append(
        &mut self,
        off: u64,
        payload: &[u8],
        ack_tag: Option<Seq>,
        fin: bool,
        stats: &mut Stats,
    ) {
        let skip = (self.rcv_nxt - off) as usize;
        let new = payload.get(skip..).unwrap_or_default();
        if !new.is_empty() {
            if self.client_fin.is_some() {
                return; // bytes after the FIN: a confused capture, never valid TCP
            }
            let advanced =
                matches!((self.last_ack_tag, ack_tag), (Some(prev), Some(cur)) if cur > prev);
            if advanced || !self.open_request {
                if self.rcv_nxt > 0 {
                    self.push_bound(self.rcv_nxt);
                    self.unacked_bounds.push_back(self.rcv_nxt);
                } else if advanced {
                    // The online server spoke first: the first request waits for the target's
                    // greeting like any request waits for the previous answer, and a delayed
                    // handshake ACK goes now (the target greets only after it).
                    self.push_bound(0);
                    self.greeted = true;
                    if self.ack_due.is_some() {
                        self.ack_pending = true;
                    }
                }
                stats.requests_online += 1;
                self.open_request = true;
            }
            if ack_tag.is_some() {
                self.last_ack_tag = ack_tag;
            }
            self.data.extend_from_slice(new);
            self.rcv_nxt += new.len() as u64;
            self.rcv_nxt_seq += new.len() as u32;
            stats.client_bytes += new.len() as u64;
        }
        if fin && self.client_fin.is_none() {
            self.client_fin = Some(self.rcv_nxt);
            if self.rcv_nxt > 0 {
                self.push_bound(self.rcv_nxt);
            }
        }
    }

    /// Adds a request boundary to release later. `waiting_since` times the wait at the first
    /// pending boundary; with none pending it may still hold the wait for a closing session's
    /// last answer, which says nothing about this new request.
    fn push_bound(&mut self, at: u64) {
        if self.pending_bounds.is_empty() {
            self.waiting_since = None;
        }
        self.pending_bounds.push_back(at);
    }

    /// An acknowledgment, data or FIN from the target, while established.
    fn on_target_segment(
        &mut self,
        now: Instant,
        p: &TcpPacket<'_>,
        stats: &mut Stats,
        min_rto: Duration,
        delayed_ack: Option<Duration>,
    ) {
        let flags = p.flags();
        if flags.ack() {
            let acked = self.snd_una as i64 + p.ack().diff(self.seq_at(self.snd_una));
            let limit = self.snd_nxt + u64::from(self.fin_sent);
            let window = u32::from(p.window()) << self.t_wscale;
            let duplicate = acked == self.snd_una as i64
                && p.payload_len() == 0
                && !flags.fin()
                && self.snd_una < self.snd_nxt
                && window == self.t_window;
            if duplicate {
                // The target got a later segment than the one it waits for: one went missing.
                self.dupacks += 1;
                if self.dupacks == DUPACK_THRESHOLD && self.recover.is_none() {
                    self.recover = Some(self.snd_nxt);
                    self.fast_rtx = true;
                    stats.fast_retransmits += 1;
                }
            } else if acked > self.snd_una as i64 && acked as u64 <= limit {
                self.dupacks = 0;
                if let Some(recover) = self.recover {
                    if (acked as u64) < recover {
                        // A partial acknowledgment: the next hole is lost too.
                        self.fast_rtx = true;
                        stats.fast_retransmits += 1;
                    } else {
                        self.recover = None;
                    }
                }
                let acked = acked as u64;
                let data_acked = acked.min(self.snd_nxt);
                stats.target_bytes += data_acked - self.snd_una;
                self.drop_acked(data_acked);
                self.snd_una = acked;
                self.retries = 0;
                if let Some((probe, sent)) = self.rtt_probe {
                    if acked >= probe {
                        self.sample_rtt(now.saturating_duration_since(sent), min_rto);
                        self.rtt_probe = None;
                    }
                }
                self.rtx_at = (self.snd_una < limit).then(|| now + self.rto);
                while self
                    .unacked_bounds
                    .front()
                    .is_some_and(|&b| b <= self.snd_una)
                {
                    self.unacked_bounds.pop_front();
                    stats.requests_target += 1;
                }
            }
            self.t_window = window;
        }
        // Only data and FIN move `t_next`. A pure ACK's sequence number may lie past bytes or a FIN we
        // have not seen; acknowledging those blindly could acknowledge a FIN we never noticed.
        // Skipping over missed *data* is fine: the target did send it, and we only need its length.
        if p.payload_len() > 0 || flags.fin() {
            let end = p.seq() + p.payload_len() as u32 + u32::from(flags.fin());
            let new = end > self.t_next;
            if new {
                self.t_next = end;
                // A sender marks the end of what it had to send with PSH (or FIN); without
                // them, more of the answer is on its way.
                self.answer_open = p.payload_len() > 0 && !flags.psh() && !flags.fin();
            }
            // New bytes get acknowledged, every second segment at once and a single one after
            // a delay unless a segment of ours carries the acknowledgment first; a repeated
            // segment at once (our acknowledgment was lost). A new FIN before the client closed
            // waits for the delay too, without hurrying one already due: a server that closes
            // first (HTTP with `Connection: close`) sees the client's FIN follow within a round
            // trip, and our FIN then carries the acknowledgment, one packet instead of two.
            match delayed_ack {
                Some(delay) if new && flags.fin() && self.client_fin.is_none() => {
                    self.ack_due.get_or_insert(now + delay);
                }
                Some(delay) if new && !flags.fin() && self.ack_due.is_none() => {
                    self.ack_due = Some(now + delay);
                }
                _ => self.ack_pending = true,
            }
            if flags.fin() {
                self.target_fin = true;
            }
        }
    }

    fn drop_acked(&mut self, acked: u64) {
        let n = (acked - self.data_start) as usize;
        self.data_skip += n;
        self.data_start = acked;
        if self.data_skip > 64 * 1024 && self.data_skip * 2 > self.data.len() {
            self.data.drain(..self.data_skip);
            self.data_skip = 0;
        }
    }

    fn sample_rtt(&mut self, rtt: Duration, min_rto: Duration) {
        // RFC 6298.
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.rto = (self.srtt.unwrap_or(rtt) + self.rttvar * 4).max(min_rto);
    }

    /// Where sending must stop for now: the start of the next request not yet released.
    fn send_limit(&self) -> u64 {
        self.pending_bounds
            .front()
            .copied()
            .unwrap_or(self.rcv_nxt)
            .min(self.rcv_nxt)
    }

    fn send_data(&mut self, now: Instant, cfg: &Config, out: &mut Outbox) {
        let headers = if self.target.is_ipv6() { 60 } else { 40 };
        let mss = u64::from(
            cfg.mss
                .min(self.t_mss)
                .min(cfg.mtu.saturating_sub(headers))
                .max(64),
        );
        let no_wait = cfg.no_wait;
        if std::mem::take(&mut self.fast_rtx) && self.snd_una < self.snd_nxt {
            let end = (self.snd_una + mss).min(self.snd_nxt);
            let from = self.data_skip + (self.snd_una - self.data_start) as usize;
            let to = from + (end - self.snd_una) as usize;
            let repr = self.repr(self.seq_at(self.snd_una), Flags::ACK, None, cfg.ttl);
            out.emit(&repr, &self.data[from..to]);
            // Karn: no RTT sample from a retransmitted range.
            self.rtt_probe = None;
            self.rtx_at = Some(now + self.rto);
            self.acknowledged();
        }
        loop {
            let limit = if no_wait {
                self.rcv_nxt
            } else {
                self.send_limit()
            };
            // Nothing in flight and a closed window: still send one segment, as a window probe.
            let window =
                u64::from(
                    self.t_window
                        .max(if self.snd_una == self.snd_nxt { 1 } else { 0 }),
                );
            let wnd_end = self.snd_una + window;
            while self.snd_nxt < limit && self.snd_nxt < wnd_end {
                let end = (self.snd_nxt + mss).min(limit).min(wnd_end);
                let from = self.data_skip + (self.snd_nxt - self.data_start) as usize;
                let to = from + (end - self.snd_nxt) as usize;
                let push = if end == limit { Flags::PSH } else { Flags(0) };
                let repr = self.repr(self.seq_at(self.snd_nxt), Flags::ACK | push, None, cfg.ttl);
                out.emit(&repr, &self.data[from..to]);
                if self.rtt_probe.is_none() && self.retries == 0 {
                    self.rtt_probe = Some((end, now));
                }
                self.snd_nxt = end;
                self.answer_mark = self.t_next;
                self.acknowledged();
                if self.rtx_at.is_none() {
                    self.rtx_at = Some(now + self.rto);
                }
            }
            let Some(&bound) = self.pending_bounds.front() else {
                break;
            };
            if self.snd_nxt < bound || bound > self.rcv_nxt {
                break;
            }
            if self.snd_una < bound {
                break;
            }
            let since = *self.waiting_since.get_or_insert(now);
            let answered = self.t_next > self.answer_mark;
            if !(no_wait || answered || now >= since + cfg.response_wait) {
                break;
            }
            self.pending_bounds.pop_front();
            self.waiting_since = None;
        }
        // The client's FIN goes out once every byte before it was released.
        if let Some(fin) = self.client_fin {
            let released = self.pending_bounds.is_empty() || no_wait;
            if !self.fin_sent && released && self.snd_nxt == fin && self.snd_una == fin {
                let repr = self.repr(self.seq_at(fin), Flags::FIN | Flags::ACK, None, cfg.ttl);
                out.emit(&repr, &[]);
                self.fin_sent = true;
                self.acknowledged();
                self.rtx_at = Some(now + self.rto);
            }
        }
    }

    /// A bare ACK of everything the target sent so far.
    fn bare_ack(&self, ttl: u8) -> SegmentRepr {
        self.repr(self.next_seq(), Flags::ACK, None, ttl)
    }

    /// Sends a bare ACK now (a delayed one is due, or cannot wait).
    fn send_ack(&mut self, ttl: u8, out: &mut Outbox) {
        self.acknowledged();
        out.emit(&self.bare_ack(ttl), &[]);
    }

    /// A segment carrying our acknowledgment of everything the target sent went out.
    fn acknowledged(&mut self) {
        self.ack_pending = false;
        self.ack_due = None;
    }

    /// Whether client bytes are still to be delivered to (or acknowledged by) the target.
    fn owes_target(&self) -> bool {
        self.snd_una < self.rcv_nxt
    }

    /// Whether the client ended the connection (FIN or reset) and the target has not seen the end
    /// of it yet.
    fn closing(&self) -> bool {
        self.state == State::Established && (self.client_fin.is_some() || self.client_rst)
    }

    /// Counts the last request as delivered when the target acknowledged all of it.
    fn finish_requests(&mut self, stats: &mut Stats) {
        if self.open_request && self.snd_una >= self.rcv_nxt {
            stats.requests_target += 1;
            self.open_request = false;
        }
    }
}

#[cfg(test)]
mod tests;
