//! The report: what gets written as JSON (schema in docs/report.schema.json), merged across
//! online hosts, rendered as text and HTML.
//!
//! Every count is a plain integer and every latency distribution carries its buckets, so that
//! reports of several online hosts merge exactly ([`Report::merge`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The versioned report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// The program and version that wrote it, e.g. `tcpcopy 0.1.0`.
    pub tool: String,
    /// The online hosts whose runs it covers (one, or several after a merge).
    pub hosts: Vec<String>,
    /// When the run started (Unix seconds) and how long it ran.
    pub started_unix_s: f64,
    pub duration_s: f64,
    pub requests: Requests,
    pub sessions: Sessions,
    /// Present when answers were compared (`--compare`).
    pub comparison: Option<Comparison>,
    pub latency: Latencies,
    /// Groups of exchanges whose target answer differed from production's (regressions).
    pub differences: Vec<Group>,
    /// Groups of differences the baseline showed as well (noise), when a baseline ran.
    pub noise: Vec<Group>,
    /// Requests per second over time, online and answered at the target.
    pub timeline: Vec<Tick>,
}

/// Requests seen online, delivered to the target, and lost (by cause; the causes add up to
/// `lost`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub online: u64,
    pub target: u64,
    pub lost: u64,
    pub loss_percent: f64,
    pub lost_by_cause: LostByCause,
}

/// Why requests never reached the target in full.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostByCause {
    /// The capture missed some of their bytes (kernel drops) and the session never completed.
    pub never_captured: u64,
    /// Their connection was left out by `-r`.
    pub sampled_out: u64,
    /// Their session was dropped for memory (`-m`, or the per-session limit).
    pub overflow: u64,
    /// The target stopped acknowledging: retries exhausted.
    pub failed_at_target: u64,
    /// The target reset their session.
    pub reset_by_target: u64,
    /// The client reset its connection before the target had them.
    pub reset_by_client: u64,
    /// The target had not acknowledged them when their session timed out or the run ended.
    pub not_answered: u64,
}

/// Sessions, as the session core counted them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    pub created: u64,
    pub joined: u64,
    pub completed: u64,
    pub reset_by_client: u64,
    pub reset_by_target: u64,
    pub timed_out: u64,
    pub failed: u64,
    pub overflowed: u64,
}

/// How the compared exchanges came out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// Exchanges judged (online answer and target answer both seen, or the target's missing).
    pub compared: u64,
    pub equal: u64,
    /// Differences that are regressions (not seen at the baseline).
    pub different: u64,
    /// Differences the baseline showed too.
    pub noise: u64,
    /// Requests the online server did not answer (nothing to compare).
    pub unanswered_online: u64,
    /// Online answered, the target did not.
    pub unanswered_target: u64,
    /// Answers with a hole in what was captured or reported: not judged.
    pub incomplete: u64,
    /// Exchanges judged early because too many were open.
    pub evicted: u64,
    /// Differences counted in no group because `max_groups` was reached.
    pub ungrouped: u64,
}

/// Latency distributions, overall and per request group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Online: the request's last byte to the answer's first byte, as captured online.
    pub online: Dist,
    /// Target: the request's last byte as sent to the target's first answer byte, as intercept
    /// captured it (its clock's offset corrected).
    pub target: Dist,
    pub baseline: Option<Dist>,
    /// Per request group (HTTP: method and path), the slowest at the target first.
    pub by_request: Vec<GroupLatency>,
}

/// A latency distribution in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Non-empty buckets, ascending: `count` samples at most `le_us`.
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub le_us: u64,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupLatency {
    pub request: String,
    pub online: Dist,
    pub target: Dist,
}

/// Exchanges that differed the same way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// HTTP: the request line's method and path (`GET /a/b`); otherwise the request's first
    /// bytes, printable.
    pub request: String,
    /// `http` or `bytes`.
    pub protocol: String,
    pub count: u64,
    /// What differed, and how often: `status`, `header:<name>`, `body`, `length`, `missing`.
    pub fields: BTreeMap<String, u64>,
    pub online: AnswerSummary,
    pub target: AnswerSummary,
    pub samples: Vec<Sample>,
}

/// One side of a group: HTTP status, or (any protocol) the answer's first bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerSummary {
    pub status: Option<u16>,
    pub head: Option<String>,
}

/// One exchange of a group, for a person to look at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// `client -> server`, as online.
    pub flow: String,
    /// The request's first bytes, printable.
    pub request: String,
    pub online: String,
    pub target: String,
    pub baseline: Option<String>,
    pub online_len: u64,
    pub target_len: u64,
}

/// One second of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub unix_s: u64,
    /// Requests whose last byte was captured online in this second.
    pub online: u64,
    /// Answers whose first byte the target sent in this second.
    pub target: u64,
}
