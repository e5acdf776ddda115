//! A session's life as the replicator sees it: created half open for a SYN (or joined mid-stream),
//! opened once its client's handshake completed online, started at the target or made to wait for
//! a predecessor on the same endpoints, then aborted or removed, its buffers kept for the next one
//! and a waiting successor started.
//!
//! Owns the choice of the session's endpoint at the target (a fake address probed for a free
//! one), the ISN clock, the table entries of a session and the memory budget's shedding of
//! half-open sessions. It must not decide what a session
//! sends beyond its SYN and a reset: that is the session's.

use std::net::SocketAddr;
use std::time::Instant;

use wire::{Flags, Seq, TcpPacket};

use super::{Aborted, Replicator, SESSION_COST};
use crate::keys::{addr_hash, unlink, OnlineKey, TargetKey};
use crate::rtt::RttEstimator;
use crate::session::{Session, SessionId, State};
use crate::stats::End;
use crate::stream::ClientStream;

/// Buffers of ended sessions kept for new ones (see [`crate::stream::Buffers`]).
const MAX_SPARE: usize = 1024;

impl Replicator {
    /// A new session for the connection `p` belongs to, towards `target`. One created for a
    /// client's SYN (`joined` false) is half open: nothing reaches the target until
    /// [`Self::open`] (the client's handshake completed). A joined one opens at once: started,
    /// or waiting for a predecessor that holds its endpoints at the target. `None`: a half-open
    /// session found no room under the memory budget and was shed itself.
    pub(super) fn create(
        &mut self,
        now: Instant,
        p: &TcpPacket<'_>,
        target: SocketAddr,
        copy: u16,
        isn: Seq,
        joined: bool,
    ) -> Option<SessionId> {
        if !self.make_room(SESSION_COST) && !joined {
            // Every session left is replicated already: the newest half-open one gives way.
            self.stats.sessions_half_open_shed += 1;
            return None;
        }
        let buffers = self.spare.pop().unwrap_or_default();
        let baseline = copy >= self.config.copies;
        let mut stream = ClientStream::new(isn, buffers);
        stream.counted = !baseline;
        let s = Session {
            copy,
            baseline,
            client: p.src(),
            online: p.dst(),
            // Chosen when the session opens (a fake address is probed for a free one then).
            local: p.src(),
            target,
            // A joined session is past its handshake online; `open` starts it at once.
            state: if joined {
                State::SynSent
            } else {
                State::HalfOpen
            },
            isn,
            out_isn: isn,
            stream,
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
            dupacks: 0,
            recover: None,
            fast_rtx: false,
            rtt: RttEstimator::new(self.config.initial_rto),
            retries: 0,
            rtx_at: None,
            rtt_probe: None,
            last_activity: now,
            successor: None,
            queued_at: None,
            dirty: false,
            counted_stalled: false,
            answer_open: false,
            delivered: 0,
            traced: 0,
            dialect: None,
        };
        let id = self.sessions.insert(s);
        self.by_online
            .insert(OnlineKey::new(p.src(), p.dst(), copy), id);
        if joined {
            self.stats.sessions_joined += 1;
            self.open(now, id);
        } else {
            self.stats.sessions_half_open += 1;
            self.half_open.push_back(id);
            self.schedule(id);
        }
        Some(id)
    }

    /// The client's handshake with the online server completed (or its first data came): the
    /// half-open session `id` opens at the target, started at once or waiting for a predecessor
    /// that holds its endpoints there.
    pub(super) fn open(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let (client, target, copy) = (s.client, s.target, s.copy);
        let local = self.local_endpoint(client, target, copy);
        let out_isn = s.isn + self.isn_clock(now);
        self.begin_conversation(id);
        let s = &mut self.sessions[id];
        if s.state == State::HalfOpen {
            self.stats.sessions_half_open -= 1;
        }
        s.local = local;
        s.out_isn = out_isn;
        s.state = State::SynSent;
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
        match predecessor.filter(|&p| self.sessions.contains_key(p)) {
            // Only the real client endpoint can be taken (fake ones are probed for a free one).
            // Sessions waiting for it queue up behind the one that holds it, in the client's
            // order, each started when the one before it is gone: a client that reuses its port
            // again while the target lags still has every connection replayed.
            Some(holder) => {
                // Both indexes are live: `last_in_line` returns only sessions it found in the
                // table, and `id` is live (looked up above).
                let last = self.last_in_line(holder);
                self.sessions[last].successor = Some(id);
                let w = &mut self.sessions[id];
                w.state = State::Waiting;
                w.rtx_at = None;
                w.rtt_probe = None;
                self.schedule(id);
                // The holder's deadlines may depend on having a successor.
                self.progress(now, holder);
            }
            None => self.start(now, id),
        }
    }

    /// Sheds half-open sessions, oldest first, until `more` bytes fit under the memory budget
    /// (`Config::max_buffered_bytes`, each session counted at [`SESSION_COST`]). Returns whether
    /// they fit.
    pub(super) fn make_room(&mut self, more: usize) -> bool {
        while self.accounted_bytes() + more > self.config.max_buffered_bytes {
            let Some(id) = self.half_open.pop_front() else {
                return false;
            };
            if self
                .sessions
                .get(id)
                .is_some_and(|s| s.state == State::HalfOpen)
            {
                self.stats.sessions_half_open_shed += 1;
                self.forget_half_open(id);
            }
        }
        // Entries of sessions that opened or ended stay until shed or swept: sweep them once
        // they dominate, so the queue stays O(half-open sessions).
        if self.half_open.len() > 2 * self.stats.sessions_half_open as usize + 1024 {
            let sessions = &self.sessions;
            self.half_open
                .retain(|&id| sessions.get(id).is_some_and(|s| s.state == State::HalfOpen));
        }
        true
    }

    /// Forgets a half-open session: it never reached the target, so nothing is sent and its
    /// client's later segments, if any, may join as a session open before we saw it.
    pub(super) fn forget_half_open(&mut self, id: SessionId) {
        if let Some(mut s) = self.sessions.remove(id) {
            debug_assert_eq!(s.state, State::HalfOpen);
            self.stats.sessions_half_open -= 1;
            if self.spare.len() < MAX_SPARE {
                self.spare.extend(s.stream.take_buffers());
            }
            unlink(&mut self.by_online, &s.online_key(), id);
        }
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
    pub(super) fn start(&mut self, now: Instant, id: SessionId) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.state = State::SynSent;
        s.rtx_at = Some(now + s.rtt.rto());
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
            let ip = match self.config.localhost_as {
                Some(ip) if client.ip().is_loopback() => ip,
                _ => client.ip(),
            };
            return SocketAddr::new(ip, port);
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

    /// Resets the session at the target (when it got that far) and forgets it.
    pub(super) fn abort(&mut self, now: Instant, id: SessionId, end: End) {
        if self
            .sessions
            .get(id)
            .is_some_and(|s| s.state == State::HalfOpen)
        {
            // Its client moved on (a new connection from the same port) before completing it.
            self.stats.sessions_half_open_expired += 1;
            self.forget_half_open(id);
            return;
        }
        self.remember_abort(now, id, end);
        if let Some(s) = self.sessions.get_mut(id) {
            if s.state == State::Established {
                s.finish_requests(&mut self.stats);
                let rst = s.repr(s.next_seq(), Flags::RST | Flags::ACK, None, self.config.ttl);
                self.out.emit(&rst, &[]);
            }
        }
        self.remove(now, id, end);
    }

    /// Remembers a connection that ends while its client is still sending, so that its further
    /// segments are not joined as a new session in the middle of its stream.
    pub(super) fn remember_abort(&mut self, now: Instant, id: SessionId, end: End) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        if s.stream.reset() || s.stream.fin().is_some() {
            return;
        }
        if self.aborted.len() >= 100_000 {
            let timeout = self.config.session_timeout;
            self.aborted.retain(|_, a| now < a.at + timeout);
        }
        let aborted = Aborted {
            at: now,
            end,
            // Before any data, the acknowledgment remembered is the handshake's, which the
            // client's first request carries too: that request must still count.
            ack: s.stream.last_ack().filter(|_| s.stream.requests > 0),
            counted: !s.baseline,
        };
        self.aborted.insert(s.online_key(), aborted);
    }

    /// Forgets a session, its requests the target never acknowledged lost for `end`; one
    /// waiting for it starts now.
    pub(super) fn remove(&mut self, now: Instant, id: SessionId, end: End) {
        if let Some(mut s) = self.sessions.remove(id) {
            if !s.baseline {
                let lost = s.stream.requests.saturating_sub(s.delivered);
                self.stats.lost.add(end, u64::from(lost));
            }
            self.buffered -= s.held();
            if s.counted_stalled {
                self.stalled -= 1;
            }
            let mut next = s.successor;
            if s.state == State::Waiting {
                // It leaves the line: the one before it is followed by the one after it. The
                // endpoints stay with their holder, so nobody starts now.
                let holder = self.by_target.get(&s.target_key()).copied();
                if let Some(before) = holder.and_then(|h| self.before_in_line(h, id)) {
                    // Live: `before_in_line` found it in the table.
                    let pred = &mut self.sessions[before];
                    pred.successor = next;
                    // With nobody waiting any more, the wait the holder timed for a successor is
                    // over too (with no request pending, nothing else uses it).
                    if pred.successor.is_none() && pred.stream.all_released() {
                        pred.waiting_since = None;
                    }
                }
                next = None;
            }
            if self.spare.len() < MAX_SPARE {
                self.spare.extend(s.stream.take_buffers());
            }
            self.stats.sessions_active -= 1;
            unlink(&mut self.by_online, &s.online_key(), id);
            // Before a successor starts: it takes the same key.
            unlink(&mut self.by_target, &s.target_key(), id);
            if let Some(next) = next {
                self.start(now, next);
            }
        }
    }

    /// The last session in the line of those waiting for `holder`'s endpoints (`holder` itself,
    /// which must be live, when nobody waits). Every session it returns is in the table.
    fn last_in_line(&self, holder: SessionId) -> SessionId {
        let mut last = holder;
        while let Some(next) = self.sessions.get(last).and_then(|s| s.successor) {
            if !self.sessions.contains_key(next) {
                break;
            }
            last = next;
        }
        last
    }

    /// The session just before `id` in the line that starts at `holder`.
    fn before_in_line(&self, holder: SessionId, id: SessionId) -> Option<SessionId> {
        let mut at = holder;
        loop {
            let next = self.sessions.get(at)?.successor?;
            if next == id {
                return Some(at);
            }
            at = next;
        }
    }
}
