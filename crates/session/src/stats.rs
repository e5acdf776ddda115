//! Counters the replicator keeps; cheap to copy and print.

use std::fmt;

/// Everything the replicator counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client packets handed to `handle_capture`.
    pub captured_packets: u64,
    /// Captured packets that were not TCP for a rule, or not parseable.
    pub ignored_packets: u64,
    /// Captured packets of connections `-r` leaves out.
    pub sampled_out_packets: u64,
    pub malformed_packets: u64,
    /// Captured segments that carried only bytes we already had.
    pub duplicate_segments: u64,
    /// Client payload bytes captured (each byte once).
    pub client_bytes: u64,
    /// Client bytes the target acknowledged.
    pub target_bytes: u64,
    pub sessions_created: u64,
    /// Sessions joined mid-stream (open before capture started).
    pub sessions_joined: u64,
    /// Sessions that ended with both sides closed.
    pub sessions_completed: u64,
    pub sessions_reset_by_client: u64,
    pub sessions_reset_by_target: u64,
    pub sessions_timed_out: u64,
    /// Sessions given up: target unreachable or not acknowledging.
    pub sessions_failed: u64,
    /// Sessions dropped because they held more than the per-session byte limit.
    pub sessions_overflowed: u64,
    pub sessions_active: u64,
    /// Sessions whose client's SYN was seen but whose handshake with the online server has not
    /// completed yet: held, nothing sent to the target (not among `sessions_created`).
    pub sessions_half_open: u64,
    /// Half-open sessions dropped to keep within the memory budget (`-m`), oldest first.
    pub sessions_half_open_shed: u64,
    /// Half-open sessions whose client never completed its handshake online (timed out, or the
    /// client reset): never sent to the target.
    pub sessions_half_open_expired: u64,
    /// Sessions whose port the client reused before the target had all their bytes: they were
    /// finished first, and the new session waited for them where it had the same endpoints.
    pub sessions_port_reused: u64,
    /// SYNs the target answered for an older connection on the same endpoints (reset, then
    /// asked again).
    pub stale_target_connections: u64,
    /// Requests (client bursts between two server answers) seen online.
    pub requests_online: u64,
    /// Of those, requests the target acknowledged completely.
    pub requests_target: u64,
    /// Target packets reported by intercepts.
    pub responses: u64,
    /// Reported target packets that belong to no session of ours.
    pub responses_unknown: u64,
    pub packets_sent: u64,
    /// Retransmission timeouts (each resends from the first unacknowledged byte).
    pub retransmits: u64,
    /// Segments resent on duplicate or partial acknowledgments, before any timeout.
    pub fast_retransmits: u64,
    /// Captured segments cut short by the capture; their session is dropped.
    pub truncated_packets: u64,
    /// Captured segments larger than one MSS (TSO/GSO/GRO), sent on re-segmented.
    pub super_segments: u64,
    /// Client bytes held for the target right now, over all sessions.
    pub bytes_buffered: u64,
    /// Packets the capture had no room for, as the kernel counted them (filled in by the driver).
    /// A dropped client segment leaves a hole its client never resends: the session stalls.
    pub capture_drops: u64,
    /// Requests (as `requests_online` counts them) on connections `-r` leaves out.
    pub requests_sampled_out: u64,
    /// Requests of ended sessions that the target never acknowledged in full, by cause.
    pub lost: LostRequests,
    /// How sessions' logins went, with a protocol hook (`crate::dialect`); not part of the
    /// statistics line (it has a line of its own).
    pub logins: crate::dialect::Logins,
}

/// Why an ended session's requests that the target never had in full were lost. Together with
/// the requests still in flight ([`crate::Replicator::requests_in_flight`]), they make up
/// `requests_online - requests_target` exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostRequests {
    /// The capture missed bytes before them (kernel drops, a segment cut short).
    pub never_captured: u64,
    /// Their session was dropped for memory.
    pub overflow: u64,
    /// The target stopped acknowledging (retries exhausted).
    pub failed_at_target: u64,
    pub reset_by_target: u64,
    /// The client's reset ended the session before the target had them.
    pub reset_by_client: u64,
    /// The session timed out, or ended otherwise, with them unacknowledged.
    pub not_answered: u64,
}

impl LostRequests {
    pub fn total(&self) -> u64 {
        self.never_captured
            + self.overflow
            + self.failed_at_target
            + self.reset_by_target
            + self.reset_by_client
            + self.not_answered
    }

    pub(crate) fn add(&mut self, end: End, n: u64) {
        *match end {
            End::NeverCaptured => &mut self.never_captured,
            End::Overflow => &mut self.overflow,
            End::FailedAtTarget => &mut self.failed_at_target,
            End::ResetByTarget => &mut self.reset_by_target,
            End::ResetByClient => &mut self.reset_by_client,
            End::NotAnswered => &mut self.not_answered,
        } += n;
    }
}

impl std::ops::AddAssign for LostRequests {
    fn add_assign(&mut self, o: LostRequests) {
        self.never_captured += o.never_captured;
        self.overflow += o.overflow;
        self.failed_at_target += o.failed_at_target;
        self.reset_by_target += o.reset_by_target;
        self.reset_by_client += o.reset_by_client;
        self.not_answered += o.not_answered;
    }
}

/// How a session ended, for the requests it still owed the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    NeverCaptured,
    Overflow,
    FailedAtTarget,
    ResetByTarget,
    ResetByClient,
    NotAnswered,
}

/// Counters of several replicators (one per capture thread) added up.
impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.captured_packets += o.captured_packets;
        self.ignored_packets += o.ignored_packets;
        self.sampled_out_packets += o.sampled_out_packets;
        self.malformed_packets += o.malformed_packets;
        self.duplicate_segments += o.duplicate_segments;
        self.client_bytes += o.client_bytes;
        self.target_bytes += o.target_bytes;
        self.sessions_created += o.sessions_created;
        self.sessions_joined += o.sessions_joined;
        self.sessions_completed += o.sessions_completed;
        self.sessions_reset_by_client += o.sessions_reset_by_client;
        self.sessions_reset_by_target += o.sessions_reset_by_target;
        self.sessions_timed_out += o.sessions_timed_out;
        self.sessions_failed += o.sessions_failed;
        self.sessions_overflowed += o.sessions_overflowed;
        self.sessions_active += o.sessions_active;
        self.sessions_half_open += o.sessions_half_open;
        self.sessions_half_open_shed += o.sessions_half_open_shed;
        self.sessions_half_open_expired += o.sessions_half_open_expired;
        self.sessions_port_reused += o.sessions_port_reused;
        self.stale_target_connections += o.stale_target_connections;
        self.requests_online += o.requests_online;
        self.requests_target += o.requests_target;
        self.responses += o.responses;
        self.responses_unknown += o.responses_unknown;
        self.packets_sent += o.packets_sent;
        self.retransmits += o.retransmits;
        self.fast_retransmits += o.fast_retransmits;
        self.truncated_packets += o.truncated_packets;
        self.super_segments += o.super_segments;
        self.bytes_buffered += o.bytes_buffered;
        self.capture_drops += o.capture_drops;
        self.requests_sampled_out += o.requests_sampled_out;
        self.lost += o.lost;
        self.logins += o.logins;
    }
}

impl Stats {
    /// Share of online requests the target has not (yet) acknowledged, 0.0 to 1.0.
    pub fn loss_rate(&self) -> f64 {
        if self.requests_online == 0 {
            0.0
        } else {
            1.0 - self.requests_target as f64 / self.requests_online as f64
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sessions {} (active {}, joined {}, completed {}, timed out {}, reset client/target {}/{}, failed {}, overflow {}) \
             half-open {} (shed {}, expired {}) requests online {} target {} loss {:.4}% bytes online {} target {} buffered {} packets sent {} retransmits {} (fast {}) \
             responses {} (unknown {}) captured {} (ignored {}, sampled out {}, malformed {}, duplicate {}, truncated {}, \
             super-segments {}) capture drops {} port reuse {} stale at target {} \
             lost requests: never captured {} overflow {} failed {} reset target/client {}/{} not answered {} sampled out {}",
            self.sessions_created,
            self.sessions_active,
            self.sessions_joined,
            self.sessions_completed,
            self.sessions_timed_out,
            self.sessions_reset_by_client,
            self.sessions_reset_by_target,
            self.sessions_failed,
            self.sessions_overflowed,
            self.sessions_half_open,
            self.sessions_half_open_shed,
            self.sessions_half_open_expired,
            self.requests_online,
            self.requests_target,
            self.loss_rate() * 100.0,
            self.client_bytes,
            self.target_bytes,
            self.bytes_buffered,
            self.packets_sent,
            self.retransmits,
            self.fast_retransmits,
            self.responses,
            self.responses_unknown,
            self.captured_packets,
            self.ignored_packets,
            self.sampled_out_packets,
            self.malformed_packets,
            self.duplicate_segments,
            self.truncated_packets,
            self.super_segments,
            self.capture_drops,
            self.sessions_port_reused,
            self.stale_target_connections,
            self.lost.never_captured,
            self.lost.overflow,
            self.lost.failed_at_target,
            self.lost.reset_by_target,
            self.lost.reset_by_client,
            self.lost.not_answered,
            self.requests_sampled_out,
        )
    }
}

/// Why a line is not a statistics line as [`Stats`]'s `Display` writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseStatsError {
    #[error("no statistics in the line (it has no \"sessions \")")]
    Missing,
    #[error("the statistics have {0} numbers where {FIELDS} were expected")]
    Count(usize),
    #[error("the statistics' words differ from what tcpcopy writes")]
    Words,
}

/// The counters `Display` writes, in its order (the loss rate, derived, is left out).
const FIELDS: usize = 39;

/// Where the loss rate stands among the numbers `Display` writes.
const LOSS_AT: usize = 14;

/// Splits a statistics line into its words (numbers replaced by `#`) and its numbers, so that
/// the words can be checked against `Display`'s and the numbers read in its order.
fn split_numbers(line: &str) -> (String, Vec<&str>) {
    let mut words = String::with_capacity(line.len());
    let mut numbers = Vec::with_capacity(FIELDS + 1);
    let mut rest = line;
    while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
        // A digit inside a word ("tcpcopy2") is not a number; the statistics have none.
        words.push_str(&rest[..at]);
        let len = rest[at..]
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len() - at);
        numbers.push(&rest[at..at + len]);
        words.push('#');
        rest = &rest[at + len..];
    }
    words.push_str(rest);
    (words, numbers)
}

impl std::str::FromStr for Stats {
    type Err = ParseStatsError;

    /// Reads the statistics back from a line `Display` wrote, from its first `"sessions "` on
    /// (so a log line's prefix, such as `tcpcopy final: `, may stay). The one parser of the
    /// statistics line: the demo and the tests read counters through it.
    fn from_str(line: &str) -> Result<Stats, ParseStatsError> {
        let at = line.find("sessions ").ok_or(ParseStatsError::Missing)?;
        let (words, numbers) = split_numbers(line[at..].trim_end());
        if numbers.len() != FIELDS + 1 {
            return Err(ParseStatsError::Count(numbers.len().saturating_sub(1)));
        }
        let template = Stats::default().to_string();
        if split_numbers(&template).0 != words {
            return Err(ParseStatsError::Words);
        }
        // The fifteenth number is the loss rate ("0.2500"), derived from two others: not read.
        let mut v = [0u64; FIELDS];
        for (slot, word) in v.iter_mut().zip(
            numbers
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != LOSS_AT)
                .map(|(_, w)| w),
        ) {
            *slot = word.parse().map_err(|_| ParseStatsError::Words)?;
        }
        let [sessions_created, sessions_active, sessions_joined, sessions_completed, sessions_timed_out, sessions_reset_by_client, sessions_reset_by_target, sessions_failed, sessions_overflowed, sessions_half_open, sessions_half_open_shed, sessions_half_open_expired, requests_online, requests_target, client_bytes, target_bytes, bytes_buffered, packets_sent, retransmits, fast_retransmits, responses, responses_unknown, captured_packets, ignored_packets, sampled_out_packets, malformed_packets, duplicate_segments, truncated_packets, super_segments, capture_drops, sessions_port_reused, stale_target_connections, never_captured, overflow, failed_at_target, reset_by_target, reset_by_client, not_answered, requests_sampled_out] =
            v;
        Ok(Stats {
            captured_packets,
            ignored_packets,
            sampled_out_packets,
            malformed_packets,
            duplicate_segments,
            client_bytes,
            target_bytes,
            sessions_created,
            sessions_joined,
            sessions_completed,
            sessions_reset_by_client,
            sessions_reset_by_target,
            sessions_timed_out,
            sessions_failed,
            sessions_overflowed,
            sessions_active,
            sessions_half_open,
            sessions_half_open_shed,
            sessions_half_open_expired,
            sessions_port_reused,
            stale_target_connections,
            requests_online,
            requests_target,
            responses,
            responses_unknown,
            packets_sent,
            retransmits,
            fast_retransmits,
            truncated_packets,
            super_segments,
            bytes_buffered,
            capture_drops,
            requests_sampled_out,
            logins: Default::default(),
            lost: LostRequests {
                never_captured,
                overflow,
                failed_at_target,
                reset_by_target,
                reset_by_client,
                not_answered,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter a distinct value, so a field read into the wrong place shows.
    fn numbered() -> Stats {
        let mut next = 0u64;
        let mut n = || {
            next += 7;
            next
        };
        Stats {
            captured_packets: n(),
            ignored_packets: n(),
            sampled_out_packets: n(),
            malformed_packets: n(),
            duplicate_segments: n(),
            client_bytes: n(),
            target_bytes: n(),
            sessions_created: n(),
            sessions_joined: n(),
            sessions_completed: n(),
            sessions_reset_by_client: n(),
            sessions_reset_by_target: n(),
            sessions_timed_out: n(),
            sessions_failed: n(),
            sessions_overflowed: n(),
            sessions_active: n(),
            sessions_half_open: n(),
            sessions_half_open_shed: n(),
            sessions_half_open_expired: n(),
            sessions_port_reused: n(),
            stale_target_connections: n(),
            requests_online: 1_000,
            requests_target: 997,
            responses: n(),
            responses_unknown: n(),
            packets_sent: n(),
            retransmits: n(),
            fast_retransmits: n(),
            truncated_packets: n(),
            super_segments: n(),
            bytes_buffered: n(),
            capture_drops: n(),
            requests_sampled_out: n(),
            logins: Default::default(),
            lost: LostRequests {
                never_captured: n(),
                overflow: n(),
                failed_at_target: n(),
                reset_by_target: n(),
                reset_by_client: n(),
                not_answered: n(),
            },
        }
    }

    #[test]
    fn the_statistics_line_reads_back_as_written() {
        let stats = numbered();
        let line = format!("2026-12-06 INFO tcpcopy final: {stats}\n");
        assert_eq!(line.parse::<Stats>(), Ok(stats));
        assert_eq!(
            Stats::default().to_string().parse::<Stats>(),
            Ok(Stats::default())
        );
    }

    #[test]
    fn a_line_that_is_not_the_statistics_is_refused() {
        let line = numbered().to_string();
        assert_eq!(
            "no numbers here".parse::<Stats>(),
            Err(ParseStatsError::Missing)
        );
        let cut = &line[..line.find(" responses").unwrap()];
        assert!(matches!(
            cut.parse::<Stats>(),
            Err(ParseStatsError::Count(_))
        ));
        let renamed = line.replace("retransmits", "resends");
        assert_eq!(renamed.parse::<Stats>(), Err(ParseStatsError::Words));
    }
}
