//! The target's side: a packet the target sent, as an intercept reported it (headers, payload
//! possibly cut off).
//!
//! Owns finding the session by its endpoints at the target, a reset from the target, and the
//! re-acknowledgment of a repeated FIN for a session that already closed. What the packet means
//! for the session (handshake, acknowledgments, the answer's bytes) is the session's; this must
//! not send anything but the closed session's stored acknowledgment.

use std::time::Instant;

use wire::TcpPacket;

use super::Replicator;
use crate::keys::TargetKey;
use crate::session::State;

impl Replicator {
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
                let established = s.on_syn_sent(
                    now,
                    &p,
                    &self.config,
                    &self.greeting_servers,
                    &mut self.out,
                    &mut self.stats,
                );
                if !established {
                    return;
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
}
