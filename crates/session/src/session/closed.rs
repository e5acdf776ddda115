//! Records of sessions that closed in the last [`LINGER`].
//!
//! At thousands of short connections a second, tens of thousands of records linger at once, and
//! each new connection probes them. They live in one ring in the order they closed, which is the
//! order they expire in, and the two lookup tables hold only the record's number: adding,
//! expiring and probing touch small entries, not a table of large records scattered over megabytes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use wire::{SegmentRepr, Seq};

use super::{OnlineKey, TableMap, TargetKey, LINGER};

/// What is left of a session once both directions closed: enough to acknowledge the target's
/// retransmitted FIN and to recognise the client's late segments.
#[derive(Clone, Copy, Debug)]
pub(super) struct Closed {
    pub(super) key: OnlineKey,
    /// The client's ISN: a repeated SYN is a duplicate, another one a new connection.
    pub(super) isn: Seq,
    /// The acknowledgment we send again when the target repeats its FIN; its endpoints are the
    /// session's at the target.
    pub(super) ack: SegmentRepr,
    pub(super) at: Instant,
}

impl Closed {
    /// The session's endpoints at the target.
    fn target_key(&self) -> TargetKey {
        TargetKey::new(self.ack.src, self.ack.dst)
    }
}

#[derive(Debug, Default)]
pub(super) struct ClosedSessions {
    /// Records in the order they closed; forgotten ones stay until they reach the front, as
    /// `None`.
    ring: VecDeque<Option<Closed>>,
    /// Records popped from the front of `ring` so far: record `n` is `ring[n - popped]`.
    popped: u64,
    by_online: TableMap<OnlineKey, u64>,
    by_target: TableMap<TargetKey, u64>,
}

impl ClosedSessions {
    fn record(&self, n: u64) -> Option<&Closed> {
        let i = usize::try_from(n.checked_sub(self.popped)?).ok()?;
        self.ring.get(i)?.as_ref()
    }

    /// The record of the connection `key`.
    pub(super) fn get(&self, key: &OnlineKey) -> Option<&Closed> {
        self.record(*self.by_online.get(key)?)
    }

    /// The record of the session that had endpoints `flow` at the target (unless a new session
    /// took them over).
    pub(super) fn at_target(&self, flow: &TargetKey) -> Option<&Closed> {
        self.record(*self.by_target.get(flow)?)
    }

    pub(super) fn holds_target(&self, flow: &TargetKey) -> bool {
        self.by_target.contains_key(flow)
    }

    /// Adds the record of a session that closed; `keep_endpoints` is false when another session
    /// takes its endpoints at the target over at once. An earlier record of the same connection
    /// is forgotten.
    pub(super) fn insert(&mut self, closed: Closed, keep_endpoints: bool) {
        self.forget(&closed.key);
        let n = self.popped + self.ring.len() as u64;
        self.ring.push_back(Some(closed));
        self.by_online.insert(closed.key, n);
        if keep_endpoints {
            self.by_target.insert(closed.target_key(), n);
        }
    }

    /// Drops the record of the connection `key`.
    pub(super) fn forget(&mut self, key: &OnlineKey) {
        let Some(n) = self.by_online.remove(key) else {
            return;
        };
        let slot = n
            .checked_sub(self.popped)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.ring.get_mut(i));
        if let Some(c) = slot.and_then(Option::take) {
            let flow = c.target_key();
            if self.by_target.get(&flow) == Some(&n) {
                self.by_target.remove(&flow);
            }
        }
        self.trim();
    }

    /// Pops forgotten records off the front, so that the front is the oldest live one.
    fn trim(&mut self) {
        while self.ring.front().is_some_and(Option::is_none) {
            self.ring.pop_front();
            self.popped += 1;
        }
    }

    /// Drops the records of sessions closed for [`LINGER`] by `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        // The front is a live record (every forget trims); trimmed again in case it is not.
        self.trim();
        while let Some(&Some(c)) = self.ring.front() {
            if now < c.at + LINGER {
                break;
            }
            let n = self.popped;
            self.ring.pop_front();
            self.popped += 1;
            if self.by_online.get(&c.key) == Some(&n) {
                self.by_online.remove(&c.key);
            }
            let flow = c.target_key();
            if self.by_target.get(&flow) == Some(&n) {
                self.by_target.remove(&flow);
            }
            self.trim();
        }
    }

    /// When the oldest record expires.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        Some(self.ring.front()?.as_ref()?.at + LINGER)
    }

    /// The client endpoints (as the target sees them) of every record.
    pub(super) fn locals(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.ring.iter().flatten().map(|c| c.ack.src)
    }

    /// No record, no table entry and nothing left in the ring.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.by_online.is_empty() && self.by_target.is_empty() && self.ring.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_online.len()
    }

    /// Records that still hold their endpoints at the target.
    #[cfg(test)]
    pub(super) fn holding_endpoints(&self) -> usize {
        self.by_target.len()
    }
}
