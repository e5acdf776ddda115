//! The client's side: a packet a client sent to the online server, captured.
//!
//! Owns the routing of a captured packet: its rule and sampling, a cut-short capture, the copies
//! made of it, a SYN reusing a port (the old session finishes or is reset), a connection joined
//! mid-stream, and the memory bounds on what sessions hold. It must not interpret the client's
//! bytes (the session's stream does) nor send anything itself.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use wire::TcpPacket;

use super::Replicator;
use crate::keys::OnlineKey;
use crate::session::State;
use crate::stats::End;

impl Replicator {
    /// A packet a client sent towards the online server (IP header first). A packet the online
    /// server sent to a client may come here too: its acknowledgment is read for holes no one
    /// will fill (`Config::hole_wait`), and it is counted as ignored.
    pub fn handle_capture(&mut self, now: Instant, packet: &[u8]) {
        self.stats.captured_packets += 1;
        let Ok(p) = TcpPacket::parse(packet) else {
            self.stats.malformed_packets += 1;
            return;
        };
        let Some(rule) = self.config.rule_for(p.dst()).copied() else {
            self.stats.ignored_packets += 1;
            self.online_ack(now, &p);
            return;
        };
        if !self.reaches(p.src().ip(), rule.target)
            || self
                .config
                .baseline
                .is_some_and(|b| !self.reaches(p.src().ip(), b))
        {
            // A client of the other IP version (a rule on the port alone, a dual-stack online
            // server) with no address of the target's version to stand in for it.
            self.stats.ignored_packets += 1;
            return;
        }
        self.born.get_or_insert(now);
        if !self.sample(now, &p) {
            self.stats.sampled_out_packets += 1;
            self.count_sampled_out(&p);
            return;
        }
        if p.payload().len() < p.payload_len() {
            // Cut short by the capture: those bytes are gone for good (the online server has them,
            // so the client never sends them again). The session cannot be delivered intact.
            self.stats.truncated_packets += 1;
            for copy in 0..self.config.sessions_per_connection() {
                if let Some(&id) = self.by_online.get(&OnlineKey::new(p.src(), p.dst(), copy)) {
                    self.abort(now, id, End::NeverCaptured);
                }
            }
            return;
        }
        if p.payload_len() > usize::from(self.config.mss) {
            // TSO/GSO/GRO on the capture side: sent on as several segments.
            self.stats.super_segments += 1;
        }
        for copy in 0..self.config.sessions_per_connection() {
            let target = match self.config.baseline {
                Some(baseline) if copy == self.config.copies => baseline,
                _ => rule.target,
            };
            self.capture_copy(now, &p, target, copy);
        }
    }

    /// Whether `p`'s connection is replicated under `-r` (and `-g`: see
    /// [`Replicator::replicates`]).
    fn sample(&mut self, now: Instant, p: &TcpPacket<'_>) -> bool {
        if !self.config.sample_ramp {
            return self.config.samples(p.src());
        }
        /// Connections remembered at most; then the table starts over.
        const MAX_LEFT_OUT: usize = 100_000;
        let born = *self.born.get_or_insert(now);
        self.ramp_percent = self
            .config
            .sample_percent_at(now.saturating_duration_since(born));
        let key = OnlineKey::new(p.src(), p.dst(), 0);
        let flags = p.flags();
        if flags.syn() {
            // A new connection on these ports is decided anew.
            self.ramp_left_out.remove(&key);
        }
        let taken = !self.ramp_left_out.contains_key(&key)
            && self.config.samples_at(p.src(), self.ramp_percent);
        if flags.fin() || flags.rst() {
            self.ramp_left_out.remove(&key);
        } else if !taken {
            if self.ramp_left_out.len() >= MAX_LEFT_OUT {
                self.ramp_left_out.clear();
            }
            self.ramp_left_out.insert(key, ());
        }
        taken
    }

    /// Whether the connection from `client` to `server` is replicated (`-r`, and with `-g` the
    /// share reached so far and the connections left out until they end), as decided at its last
    /// captured packet.
    pub fn replicates(&self, client: SocketAddr, server: SocketAddr) -> bool {
        if !self.config.sample_ramp {
            return self.config.samples(client);
        }
        let key = OnlineKey::new(client, server, 0);
        !self.ramp_left_out.contains_key(&key) && self.config.samples_at(client, self.ramp_percent)
    }

    /// Whether sessions of `client` can be sent to `target`: their address there (the client's,
    /// a fake one, or `localhost_as` for a loopback client) must be of the target's IP version.
    fn reaches(&self, client: IpAddr, target: SocketAddr) -> bool {
        let local = match (self.config.fake_clients.first(), self.config.localhost_as) {
            (Some(&fake), _) => fake,
            (None, Some(ip)) if client.is_loopback() => ip,
            _ => client,
        };
        local.is_ipv4() == target.is_ipv4()
    }

    /// Counts the requests of a connection `-r` leaves out, the way a stream counts them (a new
    /// acknowledgment number starts a new request), so that they show among the losses.
    fn count_sampled_out(&mut self, p: &TcpPacket<'_>) {
        /// Connections remembered at most; then the table starts over.
        const MAX_SAMPLED_OUT: usize = 100_000;
        let key = OnlineKey::new(p.src(), p.dst(), 0);
        let flags = p.flags();
        if p.payload_len() > 0 && self.sampled_acks.get(&key) != Some(&p.ack()) {
            if self.sampled_acks.len() >= MAX_SAMPLED_OUT {
                self.sampled_acks.clear();
            }
            self.sampled_acks.insert(key, p.ack());
            // In the unit of `requests_online`: one per replicated copy it would have had.
            self.stats.requests_sampled_out += u64::from(self.config.copies);
        }
        if flags.fin() || flags.rst() {
            self.sampled_acks.remove(&key);
        }
    }

    /// A packet the online server sent to a client, for a driver that routes those elsewhere
    /// (a comparison): see [`Replicator::handle_capture`], which takes them too. Its
    /// acknowledgment tells which client bytes the client will never send again.
    pub fn handle_online_packet(&mut self, now: Instant, packet: &[u8]) {
        if let Ok(p) = TcpPacket::parse(packet) {
            self.online_ack(now, &p);
        }
    }

    /// A packet of the online server's (captured or mirrored with its client's): its
    /// acknowledgment tells which client bytes the client will never send again, so a hole
    /// before it is skipped at once (`Config::hole_wait`); its payload goes to the session's
    /// protocol hook, if any ([`crate::dialect::Conversation::online`]).
    fn online_ack(&mut self, now: Instant, p: &TcpPacket<'_>) {
        let holes = self.config.hole_wait.is_some() && p.flags().ack();
        let hook = self.dialect.is_some() && p.payload_len() > 0;
        if !(holes || hook) || self.config.rule_for(p.src()).is_none() {
            return;
        }
        for copy in 0..self.config.sessions_per_connection() {
            let Some(&id) = self.by_online.get(&OnlineKey::new(p.dst(), p.src(), copy)) else {
                continue;
            };
            let s = &mut self.sessions[id];
            let mut changed = false;
            if hook && s.dialect.is_some() {
                let before = s.held();
                s.converse_online(p);
                let held = s.held();
                self.buffered = self.buffered + held - before;
                if self.conclude_login(now, id) {
                    continue;
                }
                changed = true;
            }
            if holes && self.sessions[id].stream.online_acked(p.ack()) {
                self.skip_lost(now, id);
                changed = true;
            }
            if changed {
                self.touch(now, id);
            }
        }
    }

    /// Whether `p` belongs to a connection whose session we aborted (recently): its requests
    /// still count, online and lost for the cause that ended the session.
    fn after_abort(&mut self, now: Instant, key: &OnlineKey, p: &TcpPacket<'_>) -> bool {
        let timeout = self.config.session_timeout;
        let Some(a) = self.aborted.get_mut(key).filter(|a| now < a.at + timeout) else {
            return false;
        };
        if p.payload_len() > 0 && a.ack != Some(p.ack()) {
            a.ack = Some(p.ack());
            if a.counted {
                self.stats.requests_online += 1;
                self.stats.lost.add(a.end, 1);
            }
        }
        true
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
                    self.abort(now, id, End::NotAnswered);
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
                let was_aborted = self.after_abort(now, &key, p);
                if !self.config.join_open_sessions
                    || was_aborted
                    || p.payload_len() == 0
                    || flags.rst()
                    || flags.syn()
                {
                    self.stats.ignored_packets += 1;
                    return;
                }
                match self.create(now, p, target, copy, p.seq() - 1, true) {
                    Some(id) => id,
                    None => return,
                }
            }
        };
        if self
            .sessions
            .get(id)
            .is_some_and(|s| s.state == State::HalfOpen)
        {
            if flags.rst() || !flags.ack() {
                // The client gave up before its handshake completed online (or sent what no
                // handshake does): the target never hears of it.
                self.stats.sessions_half_open_expired += 1;
                self.forget_half_open(id);
                return;
            }
            // The client's handshake-completing ACK, or its first data: the session is real.
            self.open(now, id);
        }
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.last_activity = now;
        if flags.rst() {
            if s.stream.mark_reset() {
                self.stats.sessions_reset_by_client += 1;
            }
        } else {
            let ack_tag = flags.ack().then(|| p.ack());
            let before = s.held();
            if s.accept_client(p, ack_tag, &mut self.stats) {
                self.greeting_servers.insert(s.online, ());
            }
            s.note_hole(now);
            s.skip_lost(now, &self.config, &mut self.stats);
            let held = s.held();
            self.buffered = self.buffered + held - before;
            if self.conclude_login(now, id) {
                return;
            }
            if held > self.config.max_session_bytes || !self.make_room(0) {
                self.stats.sessions_overflowed += 1;
                self.abort(now, id, End::Overflow);
                return;
            }
        }
        self.touch(now, id);
    }
}
