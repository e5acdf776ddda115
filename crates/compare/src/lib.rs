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
//! `CompareConfig::head_bytes`). Exchanges are judged once complete ([`Comparator::tick`],
//! [`Comparator::finish`]) and add to a [`Summary`]: equal or different (grouped), noise when a
//! baseline differs the same way, latency distributions, requests per second over time.
//! Summaries of several threads merge; [`report::Report`] is what gets written.
#![forbid(unsafe_code)]

pub mod digest;
pub mod html;
pub mod http;
pub mod latency;
pub mod report;

use std::net::SocketAddr;

pub use digest::Digest;
pub use latency::Histogram;
pub use report::Report;

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
    /// HTTP header names (lower case) left out of the comparison.
    pub ignore_headers: Vec<String>,
    /// Target copies per session (`-n`); every copy is compared with the online answer.
    pub copies: u16,
    /// A baseline target is fed the same sessions: its differences are noise.
    pub baseline: bool,
    /// An exchange with no news for this long is judged with what it has.
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
#[derive(Debug)]
pub struct Comparator {
    cfg: CompareConfig,
}

impl Comparator {
    pub fn new(cfg: CompareConfig) -> Comparator {
        Comparator { cfg }
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
        let _ = (at, flow, seq, ack, payload, fin, rst, &self.cfg);
        todo!()
    }

    /// A captured answer segment of the online server (its full payload in `seg.head`).
    pub fn online_answer(&mut self, flow: Flow, seg: &AnswerSegment<'_>) {
        let _ = (flow, seg);
        todo!()
    }

    /// The request of `flow` ending at client sequence number `end` was first sent in full to
    /// `side` at `at`.
    pub fn sent(&mut self, flow: Flow, side: Side, end: u32, at: Nanos) {
        let _ = (flow, side, end, at);
        todo!()
    }

    /// An answer segment of a target or of the baseline.
    pub fn target_answer(&mut self, flow: Flow, side: Side, seg: &AnswerSegment<'_>) {
        let _ = (flow, side, seg);
        todo!()
    }

    /// Judges the exchanges that settled by `now`.
    pub fn tick(&mut self, now: Nanos) {
        let _ = now;
        todo!()
    }

    /// Live counters.
    pub fn live(&self) -> Live {
        todo!()
    }

    /// Judges every exchange still open and returns everything counted (the comparator is empty
    /// afterwards).
    pub fn finish(&mut self) -> Summary {
        todo!()
    }
}

/// What a comparator (or several, merged) found: the comparison part of a report.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub live: Live,
    // helper: groups, latency histograms, timeline...
}

impl Summary {
    /// Adds another thread's summary.
    pub fn merge(&mut self, other: Summary) {
        let _ = other;
        todo!()
    }
}
