//! The replicator: every session of one tcpcopy instance, and the routing of packets to them.
//!
//! Owns the session slots and the lookup tables (by the client's connection, by the replicated
//! connection at the target), the records of closed and aborted connections, the timer wheel,
//! the batch of sessions touched since [`Replicator::begin_batch`], the outbox and the
//! statistics. It decides when a session is created, started, moved on, re-armed and ended.
//! What one session does with a packet (its stream, its sending, its RTT) is the session's
//! ([`crate::session`]); the replicator must not reach into that logic, only hand it packets,
//! time and the outbox.
//!
//! Determinism: what is sent depends only on the calls made and their `now`. Sessions are visited
//! in slot or wheel order, never in the order of a hash table (those are seeded per process).
//!
//! Split by job: [`capture`] takes the client's packets, [`response`] the target's, and
//! [`lifecycle`] creates, starts and ends sessions; this file holds the state, the public
//! queries, batches and timers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slotmap::SlotMap;

use crate::closed::{Closed, ClosedSessions};
use crate::config::Config;
use crate::keys::{OnlineKey, TableMap, TargetKey};
use crate::outbox::{Outbox, SentMark};
use crate::session::{Session, SessionId, State};
use crate::stats::{End, Stats};
use crate::stream::Buffers;
use crate::timer::TimerWheel;

mod capture;
mod lifecycle;
mod login;
mod response;

pub use response::ResponseOwner;
#[cfg(test)]
mod tests;

/// A connection whose session ended while its client still sent: when, why, and the
/// acknowledgment of its last data (its further requests are counted online and lost for the
/// same cause).
#[derive(Clone, Copy, Debug)]
struct Aborted {
    at: Instant,
    end: End,
    ack: Option<wire::Seq>,
    /// Its session counted in the statistics (not the baseline's).
    counted: bool,
}

/// What one session costs against the memory budget (`Config::max_buffered_bytes`, `-m`) besides
/// the client bytes it holds: its slot (560 bytes of state), its table entries, its timer and
/// half-open queue entries, with the tables' growth. Measured (2026-12-06, x86-64 Linux, release
/// build): 100,000 sessions grow a process by 710 bytes each half open, 825 bytes each opened at
/// the target (`tests/session_cost.rs`); under a flood's churn, where shed sessions leave stale
/// timer and queue entries behind until they are swept, the peak grows by about 1.1 KiB per live
/// session (`tests/flood_memory.rs`). Counted at 2 KiB, so that what the allocator keeps beyond
/// that stays within the budget too.
pub const SESSION_COST: usize = 2048;

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
    aborted: TableMap<OnlineKey, Aborted>,
    /// Online servers seen speaking first: their sessions acknowledge the target's SYN-ACK at
    /// once.
    greeting_servers: TableMap<SocketAddr, ()>,
    /// Connections `-r` leaves out: the acknowledgment of their last data, to count their
    /// requests (bounded; a new one after a reset of the table counts once more).
    sampled_acks: TableMap<OnlineKey, wire::Seq>,
    /// With a gradual start (`-g`): connections left out so far, which stay out to their end
    /// (taken later, they would start at the target in the middle of their stream); and the
    /// share taken at the last packet.
    ramp_left_out: TableMap<OnlineKey, ()>,
    ramp_percent: u8,
    timers: TimerWheel<SessionId>,
    /// Sessions that closed in the last [`crate::closed::LINGER`].
    closed: ClosedSessions,
    /// Client bytes held for the target by all sessions together (bounded by
    /// `Config::max_buffered_bytes`).
    buffered: usize,
    /// Half-open sessions (see [`State::HalfOpen`]), oldest first, the first to be shed for
    /// memory; entries of sessions that opened or ended since are skipped (and swept).
    half_open: VecDeque<SessionId>,
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
    /// The protocol hook, when sessions speak a protocol that does not replay as bytes.
    dialect: Option<Box<dyn crate::Dialect>>,
    /// Login outcomes not yet taken by [`Replicator::drain_logins`].
    logins: Vec<crate::LoginReport>,
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
            sampled_acks: TableMap::default(),
            ramp_left_out: TableMap::default(),
            ramp_percent: 1,
            timers: TimerWheel::new(),
            closed: ClosedSessions::default(),
            buffered: 0,
            half_open: VecDeque::new(),
            out: Outbox::default(),
            routes: Vec::new(),
            stats: Stats::default(),
            batching: false,
            dirty: Vec::new(),
            batch_now: None,
            stalled: 0,
            dialect: None,
            logins: Vec::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats {
            packets_sent: self.out.emitted(),
            bytes_buffered: self.buffered as u64,
            ..self.stats
        }
    }

    /// Client endpoints (as the target sees them) of every live session, for an intercept that
    /// (re)connected.
    pub fn routes(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        // Closed ones too: the target may still repeat its FIN.
        let closed = self.closed.locals();
        self.sessions
            .values()
            .filter(|s| s.state != State::HalfOpen)
            .map(|s| s.local)
            .chain(closed)
    }

    /// Hands over the client endpoints of sessions created since the last call.
    pub fn drain_routes(&mut self, mut f: impl FnMut(&[SocketAddr])) {
        if !self.routes.is_empty() {
            f(&self.routes);
            self.routes.clear();
        }
    }

    /// Hands over the requests that went to a target in full since the last call (recorded only
    /// with `Config::trace_sends`).
    pub fn drain_sends(&mut self, f: impl FnMut(&SentMark)) {
        self.out.drain_sends(f);
    }

    /// Requests of live sessions the target has not acknowledged yet: at the end of a run, they
    /// are lost as not answered ([`crate::LostRequests::not_answered`]).
    pub fn requests_in_flight(&self) -> u64 {
        self.sessions
            .values()
            .filter(|s| !s.baseline)
            .map(|s| u64::from(s.stream.requests.saturating_sub(s.delivered)))
            .sum()
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
        self.sessions.values().filter(|s| s.busy()).count()
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
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn assert_stalled_count(&self) {
        let stalled = self.sessions.values().filter(|s| s.stalled()).count();
        assert_eq!(self.stalled, stalled, "stalled sessions counted / found");
    }

    /// What all sessions together count against `Config::max_buffered_bytes`: the client bytes
    /// they hold and [`SESSION_COST`] each.
    pub fn accounted_bytes(&self) -> usize {
        self.buffered + self.sessions.len() * SESSION_COST
    }

    /// Number of packets waiting in [`Self::drain_transmits`].
    pub fn pending_transmits(&self) -> usize {
        self.out.len()
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
            if self.time_out(now, id) {
                continue;
            }
            // A hole that waited long enough is skipped: its later requests go on.
            self.skip_lost(now, id);
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            if s.rtx_at.is_some_and(|t| now >= t)
                && !s.on_retransmission_timeout(now, &self.config, &mut self.out, &mut self.stats)
            {
                self.stats.sessions_failed += 1;
                self.abort(now, id, End::FailedAtTarget);
                continue;
            }
            self.progress(now, id);
            // A session that just became idle (its last retransmission done) may have been idle
            // longer than the idle timeout (`-k`) already: it ends now.
            if self.time_out(now, id) {
                continue;
            }
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

    /// Ends session `id` if it went without activity for longer than its timeout (`-t`, `-k`, or
    /// the half-open one); says whether it did.
    fn time_out(&mut self, now: Instant, id: SessionId) -> bool {
        let Some(s) = self.sessions.get(id) else {
            return false;
        };
        if now < s.last_activity + s.timeout(&self.config) {
            return false;
        }
        if s.state == State::HalfOpen {
            // The client never completed its handshake online (a spoofed SYN, or one the online
            // server refused): the target never heard of it.
            self.stats.sessions_half_open_expired += 1;
            self.forget_half_open(id);
            return true;
        }
        self.stats.sessions_timed_out += 1;
        // Bytes behind a hole never reach the target: the capture missed the hole's.
        let end = if s.stream.has_hole() {
            End::NeverCaptured
        } else {
            End::NotAnswered
        };
        self.abort(now, id, end);
        true
    }

    /// Skips the holes of session `id` that its client will never fill (see
    /// [`Session::skip_lost`]), keeping the bytes held in account.
    fn skip_lost(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let before = s.held();
        if s.skip_lost(now, &self.config, &mut self.stats) {
            self.buffered = self.buffered + s.held() - before;
        }
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
            if s.stream.reset() && s.snd_una >= s.stream.rcv_nxt() && s.stream.all_released() {
                let since = *s.waiting_since.get_or_insert(now);
                if s.stream.rcv_nxt() == 0
                    || s.t_next > s.answer_mark
                    || now >= since + cfg.response_wait
                {
                    self.abort(now, id, End::ResetByClient);
                    return;
                }
            }
            let fin_acked = s.stream.fin().is_some_and(|f| s.fin_sent && s.snd_una > f);
            if fin_acked && !s.target_fin && s.successor.is_some() {
                // A new connection on these endpoints waits for this one, which the target keeps
                // half open: give it the response wait to close, then reset it.
                let since = *s.waiting_since.get_or_insert(now);
                if now >= since + cfg.response_wait {
                    self.abort(now, id, End::NotAnswered);
                    return;
                }
            }
            if s.successor.is_some()
                && s.stream.fin().is_none()
                && s.snd_una >= s.stream.rcv_nxt()
                && s.stream.all_released()
            {
                // The client opened a new connection from these endpoints, so the old one is over
                // at the client, though its close never reached us (lost by a mirror, dropped by
                // the capture ring): once all it sent is acknowledged and answered (or the answer
                // is overdue), it is reset at the target and the waiting one starts.
                let since = *s.waiting_since.get_or_insert(now);
                if s.t_next > s.answer_mark || now >= since + cfg.response_wait {
                    let successor = s.successor.take();
                    self.abort(now, id, End::NotAnswered);
                    if let Some(next) = successor {
                        self.start(now, next);
                    }
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
                self.remove(now, id, End::NotAnswered);
                // An earlier connection of this client port may still linger (on another fake
                // endpoint): its record goes, with its entry by target endpoints.
                self.closed.insert(closed, successor.is_none());
                if let Some(next) = successor {
                    self.start(now, next);
                }
                return;
            }
        }
        // A response wait that ran out with nothing left to act on (the client sent more after
        // its reset, say) is over: left set, its deadline would make the session due again at
        // once, every millisecond, until it timed out.
        if s.waiting_since
            .is_some_and(|w| now >= w + cfg.response_wait)
        {
            s.waiting_since = None;
        }
        self.schedule(id);
    }

    /// When `s` next needs attention: its earliest timer.
    fn deadline(config: &Config, s: &Session) -> Option<Instant> {
        let mut at = s.last_activity + s.timeout(config);
        if let Some(r) = s.rtx_at {
            at = at.min(r);
        }
        if let Some(w) = s.waiting_since {
            at = at.min(w + config.response_wait);
        }
        if let Some(a) = s.ack_due {
            at = at.min(a);
        }
        if let (Some(h), Some(w)) = (s.hole_since, config.hole_wait) {
            at = at.min(h + w);
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
}
