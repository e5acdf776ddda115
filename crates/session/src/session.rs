//! One replicated session's state machine, towards the target.
//!
//! Owns what a single session knows: its endpoints, its state (waiting, opening, established),
//! the client bytes it holds ([`ClientStream`]), its sending state (what the target acknowledged,
//! its window, duplicate acknowledgments and fast recovery, delayed acknowledgments, the
//! retransmission timer and its [`RttEstimator`]), and the segments it builds from them. It
//! writes packets into the [`Outbox`] it is given and counts into the [`Stats`] it is given; it
//! does not look up other sessions, touch the tables or the timer wheel, or decide when a session
//! ends: that is the replicator's.
//!
//! Sequence spaces: the replicated session keeps the client's sequence numbers (the target sees
//! the client's ISN advanced by the ISN clock, or a synthesized one for a joined session), so
//! client bytes need no translation. What is translated is the acknowledgment: the client
//! acknowledged the *online* server's bytes, but the target sends its own, so every segment we
//! send acknowledges what the target really sent (`Session::t_next`, learned from the
//! intercept's reports). The next request goes to the target only once the previous one is
//! acknowledged and answered (or `response_wait` passed), which keeps request/response protocols
//! in order.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wire::{Flags, SegmentRepr, Seq, TcpPacket};

use crate::config::Config;
use crate::dialect::DialectSlot;
use crate::keys::{OnlineKey, TableMap, TargetKey};
use crate::outbox::{Outbox, SentMark};
use crate::rtt::RttEstimator;
use crate::stats::Stats;
use crate::stream::ClientStream;

slotmap::new_key_type! {
    /// A live session: an index into the replicator's session slots with a version, so that an
    /// id kept after its session ended (in the timer wheel, as a successor) finds nothing, not
    /// the next session in its slot.
    pub(crate) struct SessionId;
}

/// Window we announce to the target (scaled by `Config::window_scale` once both sides offered it).
/// Its size hardly matters: the target's bytes are acknowledged as soon as they are reported.
const OUR_WINDOW: u16 = 65535;
/// Duplicate acknowledgments that trigger a fast retransmission (RFC 5681).
const DUPACK_THRESHOLD: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// The client's SYN was seen but its handshake with the online server not (yet) completed:
    /// nothing goes to the target until the client's handshake-completing ACK or its first data
    /// (a spoofed SYN never completes, so a SYN flood at the online port does not reach the
    /// target). It holds no bytes and has no endpoint at the target yet.
    HalfOpen,
    /// The client reused the port of a session the target has not finished yet, and both would
    /// have the same endpoints there: nothing is sent until that session is done.
    Waiting,
    /// SYN sent to the target, waiting for its SYN-ACK.
    SynSent,
    Established,
}

#[derive(Debug)]
pub(crate) struct Session {
    /// Which of the `Config::copies` sessions of its client connection this is.
    pub(crate) copy: u16,
    /// It goes to the baseline (`Config::baseline`): its requests and bytes are not counted
    /// again.
    pub(crate) baseline: bool,
    pub(crate) client: SocketAddr,
    pub(crate) online: SocketAddr,
    /// The replicated session's endpoints as the target sees them.
    pub(crate) local: SocketAddr,
    pub(crate) target: SocketAddr,
    pub(crate) state: State,
    /// The client's ISN (client sequence space).
    pub(crate) isn: Seq,
    /// The ISN the target sees: the client's, advanced by a clock (see `Config::clock_isn`).
    pub(crate) out_isn: Seq,
    /// The client's bytes, as captured, its FIN and its reset.
    pub(crate) stream: ClientStream,

    // --- towards the target ---
    pub(crate) snd_una: u64,
    pub(crate) snd_nxt: u64,
    pub(crate) fin_sent: bool,
    /// The target's next sequence number: what every segment we send acknowledges.
    pub(crate) t_next: Seq,
    pub(crate) t_window: u32,
    /// Shift applied to the target's window field (0 unless both sides offered window scaling).
    pub(crate) t_wscale: u8,
    pub(crate) t_mss: u16,
    pub(crate) target_fin: bool,
    /// `t_next` when the last client byte went out; a later `t_next` means the target answered.
    pub(crate) answer_mark: Seq,
    /// Since when the next request waits for the target's answer to the previous one.
    pub(crate) waiting_since: Option<Instant>,
    pub(crate) ack_pending: bool,
    /// When the acknowledgment of the one segment it holds back is due (a second one is
    /// acknowledged at once).
    pub(crate) ack_due: Option<Instant>,
    /// Duplicate acknowledgments in a row, and the end of the data outstanding when fast recovery
    /// began (NewReno: a partial acknowledgment below it retransmits the next hole at once).
    pub(crate) dupacks: u32,
    pub(crate) recover: Option<u64>,
    /// Retransmit the first unacknowledged segment at the next chance.
    pub(crate) fast_rtx: bool,

    // --- timers ---
    pub(crate) rtt: RttEstimator,
    pub(crate) retries: u32,
    pub(crate) rtx_at: Option<Instant>,
    pub(crate) rtt_probe: Option<(u64, Instant)>,
    pub(crate) last_activity: Instant,
    /// The next session waiting for this one to finish at the target (same endpoints there);
    /// it may have a successor of its own: a line, in the client's order.
    pub(crate) successor: Option<SessionId>,
    /// The deadline this session is queued under in the timer wheel.
    pub(crate) queued_at: Option<Instant>,
    /// Waiting in the replicator's batch for its end.
    pub(crate) dirty: bool,
    /// Counted among the replicator's stalled sessions, as of the session's last move (see
    /// [`Session::stalled`]).
    pub(crate) counted_stalled: bool,
    /// The target's last new data came without PSH or FIN: more of its answer follows, sent as
    /// our acknowledgments come back.
    pub(crate) answer_open: bool,
    /// Requests of this session the target acknowledged in full.
    pub(crate) delivered: u32,
    /// The furthest client byte whose first sending was recorded for a comparison.
    pub(crate) traced: u64,
    /// The protocol hook's conversation, with a protocol (see [`crate::dialect`]).
    pub(crate) dialect: Option<Box<DialectSlot>>,
    /// Since when bytes wait behind the stream's first hole, and where it starts (client
    /// offset): a hole filled and another opened later is timed anew.
    pub(crate) hole_since: Option<Instant>,
    pub(crate) hole_at: u64,
}

impl Session {
    #[inline]
    pub(crate) fn online_key(&self) -> OnlineKey {
        OnlineKey::new(self.client, self.online, self.copy)
    }

    #[inline]
    pub(crate) fn target_key(&self) -> TargetKey {
        TargetKey::new(self.local, self.target)
    }

    /// Sequence number for a bare ACK or RST: after the bytes sent, and after our FIN once sent.
    #[inline]
    pub(crate) fn next_seq(&self) -> Seq {
        self.seq_at(self.snd_nxt) + u32::from(self.fin_sent)
    }

    #[inline]
    pub(crate) fn seq_at(&self, offset: u64) -> Seq {
        // Offsets count from ISN + 1; sequence numbers wrap every 2^32 bytes.
        self.out_isn + 1 + offset as u32
    }

    #[inline]
    pub(crate) fn repr(&self, seq: Seq, flags: Flags, mss: Option<u16>, ttl: u8) -> SegmentRepr {
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
    pub(crate) fn syn(&self, cfg: &Config) -> SegmentRepr {
        SegmentRepr {
            window_scale: cfg.window_scale,
            ..self.repr(self.out_isn, Flags::SYN, Some(cfg.mss), cfg.ttl)
        }
    }

    /// Whether the session waits on the target for its next step: its handshake (or the end of
    /// a predecessor on the same endpoints); client bytes, a FIN or a reset it holds until the
    /// target answered the previous request or opened its window; or the rest of an answer,
    /// which the target sends as our acknowledgments come back.
    #[inline]
    pub(crate) fn stalled(&self) -> bool {
        matches!(self.state, State::Waiting | State::SynSent)
            || self.snd_nxt < self.stream.rcv_nxt()
            || (self.stream.fin().is_some() && !self.fin_sent)
            || self.stream.reset()
            || self.answer_open
    }

    /// Whether the session still works towards the target: opening, waiting for a predecessor,
    /// holding unacknowledged bytes (a retransmission pending) or waiting for an answer.
    #[inline]
    pub(crate) fn busy(&self) -> bool {
        matches!(self.state, State::Waiting | State::SynSent)
            || self.rtx_at.is_some()
            || self.waiting_since.is_some()
    }

    /// How long this session may go without activity: `-t` while it works towards the target,
    /// holds client bytes or awaits an answer (nothing came from the target since our last
    /// bytes, or more of its answer follows), `-k` when it is idle.
    #[inline]
    pub(crate) fn timeout(&self, config: &Config) -> Duration {
        let awaits_answer =
            (self.snd_nxt > 0 && self.t_next == self.answer_mark) || self.answer_open;
        if self.state == State::HalfOpen {
            config.half_open_timeout.min(config.session_timeout)
        } else if self.busy() || self.held() > 0 || awaits_answer {
            config.session_timeout
        } else {
            config.idle_timeout.unwrap_or(config.session_timeout)
        }
    }

    /// Client bytes this session holds for the target.
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.stream.held()
    }

    /// Starts or stops timing the stream's hole, after the stream changed.
    #[inline]
    pub(crate) fn note_hole(&mut self, now: Instant) {
        let at = self.stream.client_nxt();
        if !self.stream.has_hole() {
            self.hole_since = None;
        } else if self.hole_since.is_none() || self.hole_at != at {
            self.hole_since = Some(now);
            self.hole_at = at;
        }
    }

    /// Skips the holes the client will never fill (`Config::hole_wait`): those the online
    /// server acknowledged, and once bytes waited that long behind the first hole, every hole
    /// (a client resends its first hole first: one it did not resend in time, it never will,
    /// nor those after it). Returns whether one was skipped.
    pub(crate) fn skip_lost(&mut self, now: Instant, cfg: &Config, stats: &mut Stats) -> bool {
        let Some(wait) = cfg.hole_wait else {
            return false;
        };
        let overdue = self.hole_since.is_some_and(|t| now >= t + wait);
        let mut skipped = false;
        while (overdue || self.stream.hole_acked()) && self.stream.skip_hole(stats) {
            skipped = true;
        }
        self.note_hole(now);
        skipped
    }

    /// Takes a captured client segment into the stream. Returns whether the client's first
    /// data showed that the online server spoke first.
    #[inline]
    pub(crate) fn accept_client(
        &mut self,
        p: &TcpPacket<'_>,
        ack_tag: Option<Seq>,
        stats: &mut Stats,
    ) -> bool {
        let from = self.stream.rcv_nxt();
        let accepted = self.stream.accept(p, ack_tag, stats);
        if self.stream.rcv_nxt() > from {
            self.converse_client(from);
        }
        if accepted.first_bound {
            // `waiting_since` times the wait at the first pending boundary; with none pending it
            // may still hold the wait for a closing session's last answer, which says nothing
            // about this new request.
            self.waiting_since = None;
        }
        if accepted.greeted {
            // The first request waits for the target's greeting, and a delayed handshake ACK
            // goes now (the target greets only after it).
            if self.ack_due.is_some() {
                self.ack_pending = true;
            }
        }
        accepted.greeted
    }

    /// A packet from the target while our SYN is out. Returns whether the session moved on
    /// (established); a stale connection at the target is reset and the SYN sent again.
    #[inline]
    pub(crate) fn on_syn_sent(
        &mut self,
        now: Instant,
        p: &TcpPacket<'_>,
        cfg: &Config,
        greeting_servers: &TableMap<SocketAddr, ()>,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> bool {
        let flags = p.flags();
        // A late packet of an earlier connection on these endpoints can arrive right after our
        // SYN; a target that answers a *repeated* SYN with a bare ACK, though, holds an older
        // connection there (TIME-WAIT, or one it never saw closed) and acknowledges that one.
        // Reset it with the sequence number it expects, then ask again.
        if self.retries >= 1 && !flags.syn() && flags.ack() && p.ack() != self.out_isn + 1 {
            stats.stale_target_connections += 1;
            let rst = SegmentRepr {
                ack: Seq(0),
                flags: Flags::RST,
                ..self.repr(p.ack(), Flags::RST, None, cfg.ttl)
            };
            out.emit(&rst, &[]);
            out.emit(&self.syn(cfg), &[]);
            return false;
        }
        if !(flags.syn() && flags.ack() && p.ack() == self.out_isn + 1) {
            return false;
        }
        self.state = State::Established;
        self.t_next = p.seq() + 1;
        if let Some(d) = self.dialect.as_mut() {
            d.target_isn = Some(p.seq());
        }
        // Whatever the target sends before our first byte is a greeting (server speaks first).
        self.answer_mark = self.t_next;
        self.t_mss = p.mss().unwrap_or(536);
        // Window scaling is on only when both sides offered it; a SYN-ACK's window is unscaled.
        self.t_wscale = match (cfg.window_scale, p.window_scale()) {
            (Some(_), Some(shift)) => shift.min(14),
            _ => 0,
        };
        self.t_window = u32::from(p.window());
        self.retries = 0;
        self.rtx_at = None;
        if let Some((0, sent)) = self.rtt_probe.take() {
            self.rtt
                .sample(now.saturating_duration_since(sent), cfg.min_rto);
        }
        // The handshake ACK, like any: the first request usually follows within a few
        // milliseconds and carries it. Not for a server known to speak first, which greets only
        // once the handshake is complete.
        match cfg.delayed_ack {
            Some(delay)
                if self.stream.rcv_nxt() == 0 && !greeting_servers.contains_key(&self.online) =>
            {
                self.ack_due = Some(now + delay);
            }
            _ => self.ack_pending = true,
        }
        true
    }

    /// An acknowledgment, data or FIN from the target, while established.
    #[inline]
    pub(crate) fn on_target_segment(
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
                if !self.baseline {
                    stats.target_bytes += data_acked - self.snd_una;
                }
                self.stream.release(data_acked);
                self.snd_una = acked;
                self.retries = 0;
                if let Some((probe, sent)) = self.rtt_probe {
                    if acked >= probe {
                        self.rtt
                            .sample(now.saturating_duration_since(sent), min_rto);
                        self.rtt_probe = None;
                    }
                }
                self.rtx_at = (self.snd_una < limit).then(|| now + self.rtt.rto());
                let acked = self.stream.requests_acked(self.snd_una);
                if !self.baseline {
                    stats.requests_target += acked;
                }
                self.delivered += acked as u32;
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
                Some(delay) if new && flags.fin() && self.stream.fin().is_none() => {
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

    /// The retransmission timer fired at `now`: the SYN goes again, or sending goes back to the
    /// first unacknowledged byte. Returns false when the session ran out of retries (the caller
    /// ends it).
    pub(crate) fn on_retransmission_timeout(
        &mut self,
        now: Instant,
        cfg: &Config,
        out: &mut Outbox,
        stats: &mut Stats,
    ) -> bool {
        self.retries += 1;
        if self.retries > cfg.max_retries {
            return false;
        }
        self.rtt.back_off();
        self.rtx_at = None;
        self.rtt_probe = None;
        stats.retransmits += 1;
        if self.state == State::SynSent {
            let syn = self.syn(cfg);
            self.rtx_at = Some(now + self.rtt.rto());
            out.emit(&syn, &[]);
        } else {
            // Go back to the first unacknowledged byte and send again from there.
            self.snd_nxt = self.snd_una;
            self.fin_sent = false;
            self.recover = None;
            self.dupacks = 0;
        }
        true
    }

    #[inline]
    pub(crate) fn send_data(&mut self, now: Instant, cfg: &Config, out: &mut Outbox) {
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
            let repr = self.repr(self.seq_at(self.snd_una), Flags::ACK, None, cfg.ttl);
            out.emit(&repr, self.stream.bytes(self.snd_una, end));
            // Karn: no RTT sample from a retransmitted range.
            self.rtt_probe = None;
            self.rtx_at = Some(now + self.rtt.rto());
            self.acknowledged();
        }
        loop {
            let mut limit = if no_wait {
                self.stream.rcv_nxt()
            } else {
                self.stream.send_limit()
            };
            // A protocol hook holds what it has yet to edit (see `crate::dialect`).
            if let Some(hold) = self.dialect.as_ref().and_then(|d| d.hold) {
                limit = limit.min(hold);
            }
            // Nothing in flight and a closed window: still send one segment, as a window probe.
            let window =
                u64::from(
                    self.t_window
                        .max(if self.snd_una == self.snd_nxt { 1 } else { 0 }),
                );
            let wnd_end = self.snd_una + window;
            while self.snd_nxt < limit && self.snd_nxt < wnd_end {
                let end = (self.snd_nxt + mss).min(limit).min(wnd_end);
                let push = if end == limit { Flags::PSH } else { Flags(0) };
                let repr = self.repr(self.seq_at(self.snd_nxt), Flags::ACK | push, None, cfg.ttl);
                out.emit(&repr, self.stream.bytes(self.snd_nxt, end));
                if self.rtt_probe.is_none() && self.retries == 0 {
                    self.rtt_probe = Some((end, now));
                }
                if cfg.trace_sends && end == limit && end > self.traced {
                    self.traced = end;
                    out.sent(SentMark {
                        client: self.client,
                        online: self.online,
                        copy: self.copy,
                        end: self.stream.client_seq(end),
                        at: now,
                    });
                }
                self.snd_nxt = end;
                self.answer_mark = self.t_next;
                self.acknowledged();
                if self.rtx_at.is_none() {
                    self.rtx_at = Some(now + self.rtt.rto());
                }
            }
            let Some(bound) = self.stream.next_bound() else {
                break;
            };
            if self.snd_nxt < bound || bound > self.stream.rcv_nxt() {
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
            self.stream.release_bound();
            self.waiting_since = None;
        }
        // The client's FIN goes out once every byte before it was released.
        if let Some(fin) = self.stream.fin() {
            let released = self.stream.all_released() || no_wait;
            if !self.fin_sent && released && self.snd_nxt == fin && self.snd_una == fin {
                let repr = self.repr(self.seq_at(fin), Flags::FIN | Flags::ACK, None, cfg.ttl);
                out.emit(&repr, &[]);
                self.fin_sent = true;
                self.acknowledged();
                self.rtx_at = Some(now + self.rtt.rto());
            }
        }
    }

    /// A bare ACK of everything the target sent so far.
    #[inline]
    pub(crate) fn bare_ack(&self, ttl: u8) -> SegmentRepr {
        self.repr(self.next_seq(), Flags::ACK, None, ttl)
    }

    /// Sends a bare ACK now (a delayed one is due, or cannot wait).
    #[inline]
    pub(crate) fn send_ack(&mut self, ttl: u8, out: &mut Outbox) {
        self.acknowledged();
        out.emit(&self.bare_ack(ttl), &[]);
    }

    /// A segment carrying our acknowledgment of everything the target sent went out.
    #[inline]
    fn acknowledged(&mut self) {
        self.ack_pending = false;
        self.ack_due = None;
    }

    /// Whether client bytes are still to be delivered to (or acknowledged by) the target.
    #[inline]
    pub(crate) fn owes_target(&self) -> bool {
        self.snd_una < self.stream.rcv_nxt()
    }

    /// Whether the client ended the connection (FIN or reset) and the target has not seen the end
    /// of it yet.
    #[inline]
    pub(crate) fn closing(&self) -> bool {
        self.state == State::Established && (self.stream.fin().is_some() || self.stream.reset())
    }

    /// Counts the last request as delivered when the target acknowledged all of it.
    #[inline]
    pub(crate) fn finish_requests(&mut self, stats: &mut Stats) {
        if self.stream.finish_request(self.snd_una) {
            if !self.baseline {
                stats.requests_target += 1;
            }
            self.delivered += 1;
        }
    }
}
