//! Records of sessions that closed in the last [`LINGER`].
//!
//! At thousands of short connections a second, tens of thousands of records linger at once, and
//! each new connection probes them. They live in one ring in the order they closed, which is the
//! order they expire in, and the two lookup tables hold only the record's number: adding,
//! expiring and probing touch small entries, not a table of large records scattered over megabytes.
//!
//! It owns only the records; it sends nothing (the replicator sends a record's stored
//! acknowledgment) and never walks its tables, whose order is seeded per process.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wire::{SegmentRepr, Seq};

use crate::keys::{unlink, OnlineKey, TableMap, TargetKey};

/// How long a closed session lingers to re-acknowledge a retransmitted target FIN.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// What is left of a session once both directions closed: enough to acknowledge the target's
/// retransmitted FIN and to recognise the client's late segments.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Closed {
    pub(crate) key: OnlineKey,
    /// The client's ISN: a repeated SYN is a duplicate, another one a new connection.
    pub(crate) isn: Seq,
    /// The acknowledgment we send again when the target repeats its FIN; its endpoints are the
    /// session's at the target.
    pub(crate) ack: SegmentRepr,
    pub(crate) at: Instant,
}

impl Closed {
    /// The session's endpoints at the target.
    fn target_key(&self) -> TargetKey {
        TargetKey::new(self.ack.src, self.ack.dst)
    }
}

#[derive(Debug, Default)]
pub(crate) struct ClosedSessions {
    /// Records in the order they closed; forgotten ones stay until they reach the front, as
    /// `None`.
    ring: VecDeque<Option<Closed>>,
    /// Records popped from the front of `ring` so far: record `n` is `ring[n - popped]`.
    popped: u64,
    by_online: TableMap<OnlineKey, u64>,
    by_target: TableMap<TargetKey, u64>,
}

impl ClosedSessions {
    /// Where record `n` is in `ring`, if it is still there.
    fn index(&self, n: u64) -> Option<usize> {
        usize::try_from(n.checked_sub(self.popped)?).ok()
    }

    fn record(&self, n: u64) -> Option<&Closed> {
        self.ring.get(self.index(n)?)?.as_ref()
    }

    /// The record of the connection `key`.
    pub(crate) fn get(&self, key: &OnlineKey) -> Option<&Closed> {
        self.record(*self.by_online.get(key)?)
    }

    /// The record of the session that had endpoints `flow` at the target (unless a new session
    /// took them over).
    pub(crate) fn at_target(&self, flow: &TargetKey) -> Option<&Closed> {
        self.record(*self.by_target.get(flow)?)
    }

    pub(crate) fn holds_target(&self, flow: &TargetKey) -> bool {
        self.by_target.contains_key(flow)
    }

    /// Adds the record of a session that closed; `keep_endpoints` is false when another session
    /// takes its endpoints at the target over at once. An earlier record of the same connection
    /// is forgotten.
    pub(crate) fn insert(&mut self, closed: Closed, keep_endpoints: bool) {
        self.forget(&closed.key);
        let n = self.popped + self.ring.len() as u64;
        self.ring.push_back(Some(closed));
        self.by_online.insert(closed.key, n);
        if keep_endpoints {
            self.by_target.insert(closed.target_key(), n);
        }
    }

    /// Drops the record of the connection `key`.
    pub(crate) fn forget(&mut self, key: &OnlineKey) {
        if let Some(&n) = self.by_online.get(key) {
            self.drop_record(n);
        }
    }

    /// Drops the records of sessions closed for [`LINGER`] by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(c) = self.ring.front() {
            if c.is_some_and(|c| now < c.at + LINGER) {
                break;
            }
            self.drop_record(self.popped);
        }
    }

    /// Drops record `n` and its table entries (those that are still its own), then pops
    /// forgotten records off the front, so that the front is the oldest live one.
    fn drop_record(&mut self, n: u64) {
        let slot = self.index(n).and_then(|i| self.ring.get_mut(i));
        if let Some(c) = slot.and_then(Option::take) {
            unlink(&mut self.by_online, &c.key, n);
            unlink(&mut self.by_target, &c.target_key(), n);
        }
        while self.ring.front().is_some_and(Option::is_none) {
            self.ring.pop_front();
            self.popped += 1;
        }
    }

    /// When the oldest record expires.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        Some(self.ring.front()?.as_ref()?.at + LINGER)
    }

    /// The client endpoints (as the target sees them) of every record.
    pub(crate) fn locals(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.ring.iter().flatten().map(|c| c.ack.src)
    }

    /// No record, no table entry and nothing left in the ring.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_online.is_empty() && self.by_target.is_empty() && self.ring.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_online.len()
    }

    /// Records that still hold their endpoints at the target.
    #[cfg(test)]
    pub(crate) fn holding_endpoints(&self) -> usize {
        self.by_target.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Duration;
    use wire::Flags;

    #[derive(Clone, Debug)]
    enum Op {
        /// A session of connection `conn` closed, with endpoints `at_target` at the target,
        /// keeping them unless a waiting session takes them over.
        Close {
            conn: u8,
            at_target: u8,
            keep: bool,
        },
        Forget {
            conn: u8,
        },
        /// Time passes (ms), and expired records go.
        Pass {
            ms: u16,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..8u8, 0..4u8, any::<bool>())
                .prop_map(|(conn, at_target, keep)| Op::Close { conn, at_target, keep }),
            1 => (0..8u8).prop_map(|conn| Op::Forget { conn }),
            2 => (0..1500u16).prop_map(|ms| Op::Pass { ms }),
        ]
    }

    fn online_key(conn: u8) -> OnlineKey {
        let client = SocketAddr::from(([198, 18, 0, 10], 40_000 + u16::from(conn)));
        OnlineKey::new(client, SocketAddr::from(([198, 18, 0, 20], 80)), 0)
    }

    fn target_key(t: u8) -> (SocketAddr, SocketAddr) {
        let local = SocketAddr::from(([198, 19, 0, 7], 50_000 + u16::from(t)));
        (local, SocketAddr::from(([198, 18, 0, 30], 80)))
    }

    /// A record of the model: connection, target endpoint, when it closed, its ISN, and whether
    /// it is still there.
    struct Record {
        conn: u8,
        at_target: u8,
        at: Instant,
        isn: u32,
        live: bool,
    }

    /// The plain model: every record ever made, and which one each key names.
    #[derive(Default)]
    struct Model {
        records: Vec<Record>,
        by_online: HashMap<u8, usize>,
        by_target: HashMap<u8, usize>,
    }

    impl Model {
        fn forget(&mut self, conn: u8) {
            if let Some(n) = self.by_online.remove(&conn) {
                self.records[n].live = false;
                let t = self.records[n].at_target;
                if self.by_target.get(&t) == Some(&n) {
                    self.by_target.remove(&t);
                }
            }
        }
    }

    proptest! {
        /// The ring and its two tables answer every lookup as the plain model does.
        #[test]
        fn closed_sessions_match_a_plain_model(ops in proptest::collection::vec(op(), 1..200)) {
            let base = Instant::now();
            let mut now = base;
            let mut closed = ClosedSessions::default();
            let mut model = Model::default();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Close { conn, at_target, keep } => {
                        let (local, target) = target_key(at_target);
                        let ack = SegmentRepr {
                            src: local,
                            dst: target,
                            seq: Seq(i as u32),
                            ack: Seq(0),
                            flags: Flags::ACK,
                            window: 0,
                            mss: None,
                            window_scale: None,
                            ttl: 64,
                        };
                        let key = online_key(conn);
                        closed.insert(Closed { key, isn: Seq(i as u32), ack, at: now }, keep);
                        model.forget(conn);
                        let n = model.records.len();
                        model.records.push(Record {
                            conn,
                            at_target,
                            at: now,
                            isn: i as u32,
                            live: true,
                        });
                        model.by_online.insert(conn, n);
                        if keep {
                            model.by_target.insert(at_target, n);
                        }
                    }
                    Op::Forget { conn } => {
                        closed.forget(&online_key(conn));
                        model.forget(conn);
                    }
                    Op::Pass { ms } => {
                        now += Duration::from_millis(u64::from(ms));
                        closed.expire(now);
                        let expired: Vec<u8> = model
                            .records
                            .iter()
                            .filter(|r| r.live && now >= r.at + LINGER)
                            .map(|r| r.conn)
                            .collect();
                        for conn in expired {
                            model.forget(conn);
                        }
                    }
                }
                for conn in 0..8 {
                    let got = closed.get(&online_key(conn)).map(|c| c.isn);
                    let want = model.by_online.get(&conn).map(|&n| Seq(model.records[n].isn));
                    prop_assert_eq!(got, want, "conn {}", conn);
                }
                for t in 0..4 {
                    let (local, target) = target_key(t);
                    let flow = TargetKey::new(local, target);
                    let got = closed.at_target(&flow).map(|c| c.key);
                    let want = model.by_target.get(&t).map(|&n| online_key(model.records[n].conn));
                    prop_assert_eq!(got, want, "target endpoint {}", t);
                    prop_assert_eq!(closed.holds_target(&flow), want.is_some());
                }
                let oldest = model.records.iter().filter(|r| r.live).map(|r| r.at + LINGER).min();
                prop_assert_eq!(closed.next_expiry(), oldest);
                let mut locals: Vec<SocketAddr> = closed.locals().collect();
                let mut want: Vec<SocketAddr> =
                    model.records.iter().filter(|r| r.live).map(|r| target_key(r.at_target).0).collect();
                locals.sort();
                want.sort();
                prop_assert_eq!(locals, want);
            }
            now += LINGER;
            closed.expire(now);
            prop_assert!(closed.is_empty());
        }
    }
}
