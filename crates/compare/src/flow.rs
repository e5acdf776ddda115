//! One client connection's pairing state: its requests cut from the client's bytes, and its
//! open exchanges (a request and every side's answer to it), keyed by the request's end.

use std::collections::BTreeMap;

use crate::assembly::{Assembly, Seg};
use crate::{Nanos, Side};

/// A request as captured online.
#[derive(Clone, Debug, Default)]
pub(crate) struct Request {
    /// Its first bytes.
    pub head: Vec<u8>,
    /// Capture time of its last byte.
    pub last_at: Nanos,
    /// Some of its bytes were never captured.
    pub gap: bool,
}

/// The request still growing: client bytes with the same acknowledgment.
#[derive(Clone, Debug)]
struct Building {
    ack: u32,
    end: u32,
    req: Request,
}

/// What a target (or the baseline) did with one request.
#[derive(Clone, Debug, Default)]
pub(crate) struct SideState {
    /// When the request's last byte was first sent to it.
    pub sent: Option<Nanos>,
    pub answer: Option<Assembly>,
}

/// A request and the answers to it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Exchange {
    /// Creation order, comparator-wide.
    pub id: u64,
    /// The comparator's time when something last arrived for it.
    pub news: Nanos,
    pub request: Option<Request>,
    pub online: Option<Assembly>,
    /// Indexed by copy.
    pub targets: Vec<SideState>,
    pub baseline: SideState,
}

impl Exchange {
    pub fn side_mut(&mut self, side: Side) -> &mut SideState {
        match side {
            Side::Baseline => &mut self.baseline,
            Side::Target(n) => {
                let n = usize::from(n);
                if self.targets.len() <= n {
                    self.targets.resize_with(n + 1, SideState::default);
                }
                &mut self.targets[n]
            }
        }
    }

    /// Whether the answer of `side` (online when `None`) has started.
    fn answered(&self, side: Option<Side>) -> bool {
        match side {
            None => self.online.is_some(),
            Some(Side::Baseline) => self.baseline.answer.is_some(),
            Some(Side::Target(n)) => self
                .targets
                .get(usize::from(n))
                .is_some_and(|s| s.answer.is_some()),
        }
    }

    /// Every expected side has started answering.
    pub fn answered_everywhere(&self, copies: u16, baseline: bool) -> bool {
        self.answered(None)
            && (0..copies).all(|n| self.answered(Some(Side::Target(n))))
            && (!baseline || self.answered(Some(Side::Baseline)))
    }

    /// Nothing but send times: a send that ended inside a request, not at its end.
    /// Whether a side it expects has not answered and got the request only after `since` (or
    /// not at all yet): a target behind production, or an answer still on its way.
    pub fn awaits(&self, copies: u16, baseline: bool, since: Nanos) -> bool {
        let pending = |s: &SideState| s.answer.is_none() && s.sent.is_none_or(|t| t > since);
        (0..usize::from(copies)).any(|n| self.targets.get(n).is_none_or(pending))
            || (baseline && pending(&self.baseline))
    }

    pub fn is_ghost(&self) -> bool {
        self.request.is_none()
            && self.online.is_none()
            && self.baseline.answer.is_none()
            && self.targets.iter().all(|t| t.answer.is_none())
    }
}

/// One connection's state.
#[derive(Clone, Debug)]
pub(crate) struct FlowState {
    /// Sequence numbers are keyed relative to this (a little before the first one seen), so
    /// keys sort in stream order for the first 3 GiB of a connection.
    base: u32,
    client_next: Option<u32>,
    building: Option<Building>,
    pub exchanges: BTreeMap<u32, Exchange>,
    /// Highest key judged: anything for it or before arrives late.
    pub judged_upto: Option<u32>,
    /// Per answering side (online: `None`), the end of the highest server byte seen.
    highs: Vec<(Option<Side>, u32)>,
    /// The comparator's time when something last arrived for this flow.
    pub news: Nanos,
    /// The client sent FIN or RST.
    pub ended: bool,
}

impl FlowState {
    pub fn new(first_seq: u32, now: Nanos) -> FlowState {
        FlowState {
            base: first_seq.wrapping_sub(1 << 30),
            client_next: None,
            building: None,
            exchanges: BTreeMap::new(),
            judged_upto: None,
            highs: Vec::new(),
            news: now,
            ended: false,
        }
    }

    /// The key of the exchange whose request ends at client sequence number `end`.
    pub fn key(&self, end: u32) -> u32 {
        end.wrapping_sub(self.base)
    }

    pub fn is_late(&self, key: u32) -> bool {
        self.judged_upto.is_some_and(|j| key <= j)
    }

    /// Takes client bytes; returns the request they closed, if any (its key, the request).
    pub fn client_bytes(
        &mut self,
        at: Nanos,
        seq: u32,
        ack: u32,
        payload: &[u8],
        cap: usize,
    ) -> Option<(u32, Request)> {
        let next = *self.client_next.get_or_insert(seq);
        let rel = seq.wrapping_sub(next) as i32;
        let skip = if rel < 0 {
            rel.unsigned_abs() as usize
        } else {
            0
        };
        if skip >= payload.len() {
            return None; // a repeat
        }
        let fresh = &payload[skip..];
        let closed = match &self.building {
            Some(b) if b.ack != ack => self.close(),
            _ => None,
        };
        let b = self.building.get_or_insert_with(|| Building {
            ack,
            end: seq,
            req: Request::default(),
        });
        // Bytes never captured before these ones (the first request of a joined flow excepted).
        b.req.gap |= rel > 0;
        let take = fresh.len().min(cap.saturating_sub(b.req.head.len()));
        b.req.head.extend_from_slice(&fresh[..take]);
        b.end = seq.wrapping_add(payload.len() as u32);
        b.req.last_at = at;
        self.client_next = Some(b.end);
        closed
    }

    /// Whether client bytes at `seq` start a new connection on the same endpoints: the client
    /// ended this one, and they are no retransmission of its bytes.
    pub fn is_new_connection(&self, seq: u32) -> bool {
        const RETRANSMIT_WINDOW: i32 = 1 << 24;
        self.ended
            && self.client_next.is_some_and(|next| {
                let rel = seq.wrapping_sub(next) as i32;
                !(-RETRANSMIT_WINDOW..0).contains(&rel)
            })
    }

    /// Ends the request being built (the client sent FIN or RST, or its exchange is judged).
    pub fn close(&mut self) -> Option<(u32, Request)> {
        let b = self.building.take()?;
        Some((self.key(b.end), b.req))
    }

    /// The key of the request being built, if any.
    pub fn building_key(&self) -> Option<u32> {
        self.building.as_ref().map(|b| self.key(b.end))
    }

    /// Whether a segment of `side` ending at server sequence `end` repeats bytes already seen
    /// in an earlier answer; records `end` otherwise.
    pub fn stale_or_record(&mut self, side: Option<Side>, end: u32, first_of_answer: bool) -> bool {
        match self.highs.iter_mut().find(|(s, _)| *s == side) {
            Some((_, high)) => {
                let ahead = end.wrapping_sub(*high) as i32;
                if first_of_answer && ahead <= 0 {
                    return true;
                }
                if ahead > 0 {
                    *high = end;
                }
                false
            }
            None => {
                self.highs.push((side, end));
                false
            }
        }
    }

    /// Adds an answer segment to the answer of `side` (online: `None`) in `ex`.
    /// `expected_start`: where the previous answer of `side` ended, when known.
    pub fn add_answer(
        ex: &mut Exchange,
        side: Option<Side>,
        seg: Seg<'_>,
        cap: usize,
        expected_start: Option<u32>,
    ) {
        let slot = match side {
            None => &mut ex.online,
            Some(s) => &mut ex.side_mut(s).answer,
        };
        match slot {
            Some(a) => a.add(seg),
            None => *slot = Some(Assembly::new(seg, cap, expected_start)),
        }
    }

    /// The end of the furthest answer bytes `side` sent so far, when any.
    pub fn high(&self, side: Option<Side>) -> Option<u32> {
        self.highs.iter().find(|(s, _)| *s == side).map(|(_, h)| *h)
    }

    /// Whether the exchange of `key` has any answer for `side` yet.
    pub fn has_answer(&self, key: u32, side: Option<Side>) -> bool {
        self.exchanges.get(&key).is_some_and(|ex| ex.answered(side))
    }
}
