//! What the target did with the replicated requests, compared with what production did: sans-IO.
//!
//! The [`Comparator`] is fed, by the driver, everything it needs as plain values (no sockets,
//! clocks or threads; every time is [`Nanos`] on tcpcopy's clock):
//! - every captured client segment of a replicated connection ([`Comparator::request`]);
//! - every captured answer segment of the online server ([`Comparator::online_answer`]);
//! - when the session core first sent the last byte of a request to a target
//!   ([`Comparator::sent`]);
//! - every answer segment of a target (or of the baseline) as intercept reported it, with its
//!   acknowledgment already translated into the client's sequence space by the core
//!   ([`Comparator::target_answer`]).
//!
//! Pairing needs no request counting: a *request* is a run of client bytes sent with the same
//! acknowledgment number (as the session core cuts them), and the answer to the request that
//! ends at client sequence number `e` is every server data segment whose acknowledgment is `e`,
//! on each side. So the online answer and each target's answer to one request meet under
//! `(flow, e)` whatever the segmentation, timing or losses on either side.
//!
//! An answer is summarised, on each side, as its length, a [`Digest`] of all its bytes
//! (composable: segment digests combine in sequence order) and its first bytes (bounded by
//! `CompareConfig::head_bytes`). An exchange is judged when every side (online, each target
//! copy, the baseline) has started answering a later request of the same connection, when
//! nothing arrived for it for `settle` ([`Comparator::tick`]), when too many are open (the
//! oldest), or at [`Comparator::finish`]. Judged exchanges add to a [`Summary`]: equal or
//! different (grouped), noise when the baseline differs in the same fields, latency
//! distributions, requests per second over time. Summaries of several threads merge;
//! [`report::Report`] is what gets written.
//!
//! `settle` must outlast the replication's lag: a target answer arriving after its exchange was
//! judged is counted as late (the exchange already counted it missing).
//!
//! Limits: sequence-number keys order correctly for the first 3 GiB a client sends on one
//! connection; an answer is assembled from at most 32 out-of-order pieces; a chunked HTTP body
//! is compared with its chunk framing.
#![forbid(unsafe_code)]

pub mod digest;
pub mod html;
pub mod http;
pub mod latency;
pub mod report;

mod assembly;
mod display;
mod flow;
mod summary;
pub mod text;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

pub use digest::Digest;
pub use latency::Histogram;
pub use report::Report;
pub use summary::{GroupKey, RequestLatency, Summary};

use assembly::Seg;
use flow::{Exchange, FlowState};

/// Nanoseconds since the Unix epoch, on tcpcopy's clock (a target's times are already corrected
/// by the estimated offset of its intercept's clock).
pub type Nanos = u64;

/// A client connection as the online host saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Where a replicated answer came from: a target session (copy `n` of `-n`), or the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Target(u16),
    Baseline,
}

/// One answer segment (payload bytes from a server), online or at a target.
#[derive(Clone, Copy, Debug)]
pub struct AnswerSegment<'a> {
    /// Capture time of the segment.
    pub at: Nanos,
    /// The server's sequence number of its first payload byte.
    pub seq: u32,
    /// Its acknowledgment number, in the client's sequence space (for a target: translated).
    pub ack: u32,
    /// Payload length (the whole payload, even if `head` holds less).
    pub len: u32,
    /// Digest of the whole payload.
    pub digest: Digest,
    /// The payload's first bytes: all of them online, as many as intercept forwarded otherwise.
    pub head: &'a [u8],
    pub fin: bool,
    pub rst: bool,
}

/// Settings of the comparison.
#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// First bytes of each answer (and request) kept for comparison and samples.
    pub head_bytes: usize,
    /// HTTP header names left out of the comparison (any case).
    pub ignore_headers: Vec<String>,
    /// Target copies per session (`-n`); every copy is compared with the online answer.
    pub copies: u16,
    /// A baseline target is fed the same sessions: its differences are noise.
    pub baseline: bool,
    /// An exchange with no news for this long is judged with what it has (measured on the
    /// clock of [`Comparator::tick`]'s `now`).
    pub settle: Nanos,
    /// Exchanges kept open at most; beyond, the oldest are judged early (counted).
    pub max_open: usize,
    /// Sample exchanges kept per difference group.
    pub samples_per_group: usize,
    /// Difference groups (and latency groups) kept at most; further ones are counted as "other".
    pub max_groups: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            head_bytes: 1024,
            ignore_headers: http::DEFAULT_IGNORED
                .iter()
                .map(|s| s.to_string())
                .collect(),
            copies: 1,
            baseline: false,
            settle: 2_000_000_000,
            max_open: 1 << 20,
            samples_per_group: 3,
            max_groups: 1000,
        }
    }
}

/// Live counters, cheap to read while running (status line, metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Exchanges judged so far.
    pub compared: u64,
    pub equal: u64,
    pub different: u64,
    pub noise: u64,
    /// Exchanges open (waiting for answers).
    pub open: u64,
}

/// Pairs and judges exchanges; see the crate documentation.
///
/// Inputs may come in any order the capture and the channel deliver them; the comparator's own
/// time is the `now` of the last [`Comparator::tick`] (news is stamped with it), so the capture
/// times in the inputs (file times in a replay) never decide when an exchange settles.
#[derive(Debug)]
pub struct Comparator {
    cfg: CompareConfig,
    now: Nanos,
    // foldhash: the flow table is probed for every captured and reported segment.
    flows: HashMap<Flow, FlowState, foldhash::fast::RandomState>,
    ledger: Ledger,
    summary: Summary,
}

/// The open exchanges, counted and in creation order.
#[derive(Debug, Default)]
struct Ledger {
    next_id: u64,
    /// `(id, flow, key)` in creation order, for eviction; entries of exchanges judged since are
    /// skipped (and compacted away).
    order: VecDeque<(u64, Flow, u32)>,
    open: usize,
}

impl Ledger {
    /// The exchange of `flow` under `key`, created if new (and counted open); its news stamped.
    fn open<'a>(
        &mut self,
        fs: &'a mut FlowState,
        flow: Flow,
        key: u32,
        now: Nanos,
    ) -> &'a mut Exchange {
        let ex = fs.exchanges.entry(key).or_insert_with(|| {
            self.next_id += 1;
            self.order.push_back((self.next_id, flow, key));
            self.open += 1;
            Exchange {
                id: self.next_id,
                ..Exchange::default()
            }
        });
        ex.news = now;
        ex
    }
}

/// Flows idle this many `settle` periods are forgotten (their exchanges judged long before);
/// flows the client ended, after one.
const FORGET_AFTER_SETTLES: u64 = 10;

impl Comparator {
    pub fn new(mut cfg: CompareConfig) -> Comparator {
        cfg.ignore_headers
            .iter_mut()
            .for_each(|h| *h = h.to_ascii_lowercase());
        cfg.max_open = cfg.max_open.max(1);
        let summary = Summary::new(&cfg);
        Comparator {
            cfg,
            now: 0,
            flows: HashMap::default(),
            ledger: Ledger::default(),
            summary,
        }
    }

    /// A captured client segment of a replicated connection (payload, FIN or RST; repeats
    /// allowed).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        at: Nanos,
        flow: Flow,
        seq: u32,
        ack: u32,
        payload: &[u8],
        fin: bool,
        rst: bool,
    ) {
        if payload.is_empty() && !fin && !rst {
            return;
        }
        if !payload.is_empty()
            && self
                .flows
                .get(&flow)
                .is_some_and(|fs| fs.is_new_connection(seq))
        {
            // The client's port reused for a new connection: the old one is over.
            self.judge_flow(flow);
            self.flows.remove(&flow);
        }
        let now = self.now;
        let fs = self
            .flows
            .entry(flow)
            .or_insert_with(|| FlowState::new(seq, now));
        fs.news = now;
        let mut closed = None;
        if !payload.is_empty() {
            closed = fs.client_bytes(at, seq, ack, payload, self.cfg.head_bytes);
        }
        let ended = if fin || rst {
            fs.ended = true;
            fs.close()
        } else {
            None
        };
        for (key, req) in closed.into_iter().chain(ended) {
            self.attach_request(flow, key, req);
        }
        self.evict();
    }

    /// A captured answer segment of the online server (its full payload in `seg.head`).
    pub fn online_answer(&mut self, flow: Flow, seg: &AnswerSegment<'_>) {
        self.answer(flow, None, seg);
    }

    /// The request of `flow` ending at client sequence number `end` was first sent in full to
    /// `side` at `at`.
    pub fn sent(&mut self, flow: Flow, side: Side, end: u32, at: Nanos) {
        let now = self.now;
        let Some(fs) = self.flows.get_mut(&flow) else {
            return;
        };
        let key = fs.key(end);
        if fs.is_late(key) {
            return;
        }
        let ex = self.ledger.open(fs, flow, key, now);
        ex.side_mut(side).sent.get_or_insert(at);
        self.evict();
    }

    /// An answer segment of a target or of the baseline.
    pub fn target_answer(&mut self, flow: Flow, side: Side, seg: &AnswerSegment<'_>) {
        self.answer(flow, Some(side), seg);
    }

    fn answer(&mut self, flow: Flow, side: Option<Side>, seg: &AnswerSegment<'_>) {
        if seg.len == 0 {
            return;
        }
        let now = self.now;
        let fs = self
            .flows
            .entry(flow)
            .or_insert_with(|| FlowState::new(seg.ack, now));
        fs.news = now;
        let key = fs.key(seg.ack);
        if fs.is_late(key) {
            self.summary.late += 1;
            return;
        }
        let first = !fs.has_answer(key, side);
        let expected_start = fs.high(side).filter(|_| first);
        if fs.stale_or_record(side, seg.seq.wrapping_add(seg.len), first) {
            return; // a repeat of an earlier answer's bytes, acknowledging a later request
        }
        let ex = self.ledger.open(fs, flow, key, now);
        let part = Seg {
            at: seg.at,
            seq: seg.seq,
            len: seg.len,
            digest: seg.digest,
            head: seg.head,
        };
        FlowState::add_answer(ex, side, part, self.cfg.head_bytes, expected_start);
        if ex.answered_everywhere(self.cfg.copies, self.cfg.baseline)
            && fs.exchanges.range(..key).next().is_some()
        {
            // Every side has moved on to this request: the earlier answers are all in.
            let earlier: Vec<u32> = fs.exchanges.range(..key).map(|(k, _)| *k).collect();
            for k in earlier {
                self.judge(flow, k);
            }
        }
        self.evict();
    }

    fn attach_request(&mut self, flow: Flow, key: u32, req: flow::Request) {
        self.summary.online_request(req.last_at);
        let now = self.now;
        let Some(fs) = self.flows.get_mut(&flow) else {
            return;
        };
        if fs.is_late(key) {
            return;
        }
        let ex = self.ledger.open(fs, flow, key, now);
        ex.request = Some(req);
    }

    /// Judges the exchange of `flow` under `key` (its request taken from the one being built
    /// if that is where it ends).
    fn judge(&mut self, flow: Flow, key: u32) {
        let Some(fs) = self.flows.get_mut(&flow) else {
            return;
        };
        if fs.building_key() == Some(key) {
            if let Some((k, req)) = fs.close() {
                self.attach_request(flow, k, req);
            }
        }
        let Some(fs) = self.flows.get_mut(&flow) else {
            return;
        };
        let Some(ex) = fs.exchanges.remove(&key) else {
            return;
        };
        fs.judged_upto = Some(fs.judged_upto.map_or(key, |j| j.max(key)));
        self.ledger.open -= 1;
        // A side that got the request less than `settle` ago may still answer: not judged.
        let pending_after = self.now.saturating_sub(self.cfg.settle);
        self.summary.judge(&self.cfg, flow, &ex, pending_after);
    }

    /// Judges every exchange of `flow` (and the request being built), in stream order.
    fn judge_flow(&mut self, flow: Flow) {
        let Some(fs) = self.flows.get(&flow) else {
            return;
        };
        let mut keys: Vec<u32> = fs.exchanges.keys().copied().collect();
        keys.extend(fs.building_key());
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            self.judge(flow, key);
        }
    }

    /// Judges the oldest exchanges while more than `max_open` are open.
    fn evict(&mut self) {
        while self.ledger.open > self.cfg.max_open {
            let Some((id, flow, key)) = self.ledger.order.pop_front() else {
                return;
            };
            let live = self
                .flows
                .get(&flow)
                .and_then(|fs| fs.exchanges.get(&key))
                .is_some_and(|ex| ex.id == id);
            if live {
                self.summary.comparison.evicted += 1;
                self.judge(flow, key);
            }
        }
        if self.ledger.order.len() > 2 * self.ledger.open + 1024 {
            let flows = &self.flows;
            self.ledger.order.retain(|(id, flow, key)| {
                flows
                    .get(flow)
                    .and_then(|fs| fs.exchanges.get(key))
                    .is_some_and(|ex| ex.id == *id)
            });
        }
    }

    /// Judges the exchanges that settled by `now` (no news for `settle`), and forgets flows
    /// idle for long.
    pub fn tick(&mut self, now: Nanos) {
        if self.now == 0 {
            // The first tick: what came before it arrived now.
            for fs in self.flows.values_mut() {
                fs.news = now;
                fs.exchanges.values_mut().for_each(|ex| ex.news = now);
            }
        }
        self.now = self.now.max(now);
        let now = self.now;
        let settle = self.cfg.settle;
        let mut due: Vec<(Flow, u32)> = Vec::new();
        let mut idle: Vec<Flow> = Vec::new();
        for (flow, fs) in &self.flows {
            let quiet = fs.news.saturating_add(settle) <= now;
            if quiet {
                if let Some(k) = fs.building_key() {
                    due.push((*flow, k));
                }
            }
            let (copies, baseline) = (self.cfg.copies, self.cfg.baseline);
            for (k, ex) in &fs.exchanges {
                // A side the request reached less than `settle` ago (or not yet: the target
                // lags behind production) still has time to answer, up to a long bound.
                let quiet = ex.news.saturating_add(settle) <= now;
                let waiting = ex.awaits(copies, baseline, now.saturating_sub(settle));
                let abandoned = ex
                    .news
                    .saturating_add(settle.saturating_mul(FORGET_AFTER_SETTLES));
                if quiet && (!waiting || abandoned <= now) {
                    due.push((*flow, *k));
                }
            }
            let settles = if fs.ended { 1 } else { FORGET_AFTER_SETTLES };
            let forget = fs.news.saturating_add(settle.saturating_mul(settles));
            if forget <= now && fs.exchanges.is_empty() && fs.building_key().is_none() {
                idle.push(*flow);
            }
        }
        due.sort_unstable();
        due.dedup();
        for (flow, key) in due {
            self.judge(flow, key);
        }
        for flow in idle {
            self.flows.remove(&flow);
        }
    }

    /// Latency so far: online, and at the targets.
    pub fn latency(&self) -> (&Histogram, &Histogram) {
        (&self.summary.online, &self.summary.target)
    }

    /// Live counters.
    pub fn live(&self) -> Live {
        let c = &self.summary.comparison;
        Live {
            compared: c.compared,
            equal: c.equal,
            different: c.different,
            noise: c.noise,
            open: self.ledger.open as u64,
        }
    }

    /// Judges every exchange still open and returns everything counted (the comparator is empty
    /// afterwards).
    pub fn finish(&mut self) -> Summary {
        let mut flows: Vec<Flow> = self.flows.keys().copied().collect();
        flows.sort_unstable();
        for flow in flows {
            self.judge_flow(flow);
        }
        self.flows.clear();
        self.ledger = Ledger::default();
        let mut out = std::mem::replace(&mut self.summary, Summary::new(&self.cfg));
        out.live = Live {
            compared: out.comparison.compared,
            equal: out.comparison.equal,
            different: out.comparison.different,
            noise: out.comparison.noise,
            open: 0,
        };
        out
    }
}
