//! The target's side: a packet the target sent, as an intercept reported it (headers, payload
//! possibly cut off).
//!
//! Owns finding the session by its endpoints at the target, a reset from the target, and the
//! re-acknowledgment of a repeated FIN for a session that already closed. What the packet means
//! for the session (handshake, acknowledgments, the answer's bytes) is the session's; this must
//! not send anything but the closed session's stored acknowledgment.

use std::net::SocketAddr;
use std::time::Instant;

use wire::{Seq, TcpPacket};

use super::Replicator;
use crate::keys::TargetKey;
use crate::session::State;
use crate::stats::End;

/// Whose answer a target packet is: the client connection (as online), which replicated
/// session of it, and the acknowledgment in the client's sequence space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseOwner {
    pub client: SocketAddr,
    pub online: SocketAddr,
    pub copy: u16,
    /// The session went to the baseline (`Config::baseline`), not to the target.
    pub baseline: bool,
    pub client_ack: Seq,
}

impl Replicator {
    /// A target packet reported by an intercept (IP header first; payload may be cut off).
    ///
    /// With `Config::trace_sends`, a packet with payload of a live session says whose it is, so
    /// that its answer can be compared with the online server's.
    pub fn handle_response(&mut self, now: Instant, packet: &[u8]) -> Option<ResponseOwner> {
        self.handle_response_head(now, packet, &[])
    }

    /// [`Replicator::handle_response`] for a packet reported with its answer's head: `head`, the
    /// payload bytes within the first bytes of the answer the packet is part of (a prefix of
    /// its payload, see `protocol::heads`), goes to the session's protocol hook, if any
    /// ([`crate::dialect`]).
    pub fn handle_response_head(
        &mut self,
        now: Instant,
        packet: &[u8],
        head: &[u8],
    ) -> Option<ResponseOwner> {
        self.born.get_or_insert(now);
        self.stats.responses += 1;
        let Ok(p) = TcpPacket::parse(packet) else {
            self.stats.malformed_packets += 1;
            return None;
        };
        let Some(&id) = self.by_target.get(&TargetKey::new(p.dst(), p.src())) else {
            self.closed_response(&p);
            return None;
        };
        let s = self.sessions.get_mut(id)?;
        s.last_activity = now;
        let flags = p.flags();
        let owner = (self.config.trace_sends && p.payload_len() > 0).then(|| ResponseOwner {
            client: s.client,
            online: s.online,
            copy: s.copy,
            baseline: s.copy >= self.config.copies,
            // The target acknowledges our sequence numbers: the client's, moved by the ISN
            // clock, by the holes skipped and by a protocol hook's edits.
            client_ack: s.stream.client_seq(u64::from(
                p.ack().0.wrapping_sub(s.out_isn.0.wrapping_add(1)),
            )),
        });
        if flags.rst() {
            self.stats.sessions_reset_by_target += 1;
            self.remember_abort(now, id, End::ResetByTarget);
            self.remove(now, id, End::ResetByTarget);
            return None;
        }
        match s.state {
            // Not open at the target yet: by_target never leads here.
            State::Waiting | State::HalfOpen => {}
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
                    return owner;
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
                    s.converse_target(&p, head);
                    let held = s.held();
                    self.buffered = self.buffered + held - before;
                    if self.conclude_login(now, id) {
                        return owner;
                    }
                }
            }
        }
        self.touch(now, id);
        owner
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
