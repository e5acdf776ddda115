//! The report: what gets written as JSON (schema in docs/report.schema.json), merged across
//! online hosts, rendered as text and HTML.
//!
//! Every count is a plain integer and every latency distribution carries its buckets, so that
//! reports of several online hosts merge exactly ([`Report::merge`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Histogram;

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
    /// Client SYNs held for a handshake that never completed online, dropped to keep within
    /// the memory budget (`-m`), oldest first; never sent to the target. Absent in reports of
    /// versions before it: 0.
    #[serde(default)]
    pub half_open_shed: u64,
    /// Client SYNs whose handshake never completed online (timed out, or the client reset);
    /// never sent to the target.
    #[serde(default)]
    pub half_open_expired: u64,
    /// Sessions with holes in their client's bytes that no one would fill (the capture or the
    /// mirror lost segments the online server received), skipped: the requests the holes were
    /// in are lost, the later ones went on. Absent in reports of versions before it: 0.
    #[serde(default)]
    pub hurt: u64,
    /// Those holes (a session may have several).
    #[serde(default)]
    pub holes_skipped: u64,
    /// How the sessions' logins went at the target, when a protocol was set (`--protocol`);
    /// absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logins: Option<Logins>,
}

/// Sessions by how their login went at the target (`--protocol`): each session that reached
/// its login counted once, `ok` or under one cause of `not_logged_in`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logins {
    /// `mysql`, `postgres` or `auto` (after merging runs of different protocols: their names
    /// joined by `+`).
    pub protocol: String,
    /// Logged in at the target, `joined` included.
    pub ok: u64,
    /// Of those, sessions joined mid-stream that tcpcopy logged in itself.
    pub joined: u64,
    /// Not logged in: the sum of the causes below.
    pub not_logged_in: u64,
    /// The target refused the login (the session was ended).
    pub refused: u64,
    /// The client used TLS with the online server (the session was skipped).
    pub tls: u64,
    /// Joined sessions with no user to log in as (no `--login`, no earlier login of their
    /// client seen): skipped.
    pub no_login_known: u64,
    /// The target asked for an authentication tcpcopy cannot make (the session was ended).
    pub unsupported: u64,
    /// The bytes did not follow the protocol (the session was ended).
    pub malformed: u64,
}

/// How the compared exchanges came out. Counted per request and target copy (`-n 2` counts
/// every request twice): each ends in exactly one of `equal`, `different`, `noise`,
/// `unanswered_online` or `incomplete`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// Judged: the online answer seen in full, and the target's seen in full or missing
    /// (`equal + different + noise`).
    pub compared: u64,
    pub equal: u64,
    /// Differences that are regressions (not seen at the baseline).
    pub different: u64,
    /// Differences the baseline showed too.
    pub noise: u64,
    /// Requests the online server did not answer (nothing to compare).
    pub unanswered_online: u64,
    /// Online answered, the target did not (counted in `different` or `noise` too, as a
    /// difference in field `missing`).
    pub unanswered_target: u64,
    /// Not judged: the target never got the request in full (lost, or still in flight at the
    /// end: `requests` counts those), or got it too shortly before the end to answer.
    pub not_sent: u64,
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

/// A latency distribution in microseconds. `count`, `mean_us` and `max_us` are exact; a
/// percentile is the upper bound of the bucket holding the sample of that rank (at most 6.25 %
/// above the true value, never above `max_us`). Buckets: below 16 µs one per microsecond, then
/// 16 per power of two.
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

/// Why reports could not be merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeError {
    #[error("no reports to merge")]
    Empty,
    #[error("report {index} has schema version {found}, expected {expected}")]
    SchemaVersion {
        index: usize,
        expected: u32,
        found: u32,
    },
}

/// Adds `b`'s counts to `a`.
pub(crate) fn add_comparison(a: &mut Comparison, b: &Comparison) {
    a.compared += b.compared;
    a.equal += b.equal;
    a.different += b.different;
    a.noise += b.noise;
    a.unanswered_online += b.unanswered_online;
    a.unanswered_target += b.unanswered_target;
    a.not_sent += b.not_sent;
    a.incomplete += b.incomplete;
    a.evicted += b.evicted;
    a.ungrouped += b.ungrouped;
}

/// Adds group `g` to `groups` under `key`: counts and fields add, samples are kept up to the
/// larger of the two sample counts.
pub(crate) fn merge_group_into<K: Ord>(groups: &mut BTreeMap<K, Group>, key: K, g: Group) {
    match groups.entry(key) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(g);
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            let into = o.get_mut();
            into.count += g.count;
            for (f, n) in g.fields {
                *into.fields.entry(f).or_default() += n;
            }
            let keep = into.samples.len().max(g.samples.len());
            into.samples.extend(g.samples);
            into.samples.truncate(keep);
        }
    }
}

/// Groups, most frequent first (ties by request name).
pub(crate) fn sorted_groups(groups: impl Iterator<Item = Group>) -> Vec<Group> {
    let mut v: Vec<Group> = groups.collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.request.cmp(&b.request))
            .then_with(|| a.online.status.cmp(&b.online.status))
            .then_with(|| a.target.status.cmp(&b.target.status))
    });
    v
}

/// The key groups merge under: request, protocol, statuses.
type MergeKey = (String, String, Option<u16>, Option<u16>);

fn merge_groups<'a>(lists: impl Iterator<Item = &'a Vec<Group>>) -> Vec<Group> {
    let mut all: BTreeMap<MergeKey, Group> = BTreeMap::new();
    for g in lists.flatten() {
        let key = (
            g.request.clone(),
            g.protocol.clone(),
            g.online.status,
            g.target.status,
        );
        merge_group_into(&mut all, key, g.clone());
    }
    sorted_groups(all.into_values())
}

fn merge_dists<'a>(dists: impl Iterator<Item = &'a Dist>) -> Dist {
    let mut h = Histogram::new();
    for d in dists {
        h.merge(&Histogram::from_dist(d));
    }
    h.to_dist()
}

fn add_requests(a: &mut Requests, b: &Requests) {
    a.online += b.online;
    a.target += b.target;
    a.lost += b.lost;
    let (x, y) = (&mut a.lost_by_cause, &b.lost_by_cause);
    x.never_captured += y.never_captured;
    x.sampled_out += y.sampled_out;
    x.overflow += y.overflow;
    x.failed_at_target += y.failed_at_target;
    x.reset_by_target += y.reset_by_target;
    x.reset_by_client += y.reset_by_client;
    x.not_answered += y.not_answered;
}

fn add_sessions(a: &mut Sessions, b: &Sessions) {
    a.created += b.created;
    a.joined += b.joined;
    a.completed += b.completed;
    a.reset_by_client += b.reset_by_client;
    a.reset_by_target += b.reset_by_target;
    a.timed_out += b.timed_out;
    a.failed += b.failed;
    a.overflowed += b.overflowed;
    a.half_open_shed += b.half_open_shed;
    a.half_open_expired += b.half_open_expired;
    a.hurt += b.hurt;
    a.holes_skipped += b.holes_skipped;
    if let Some(y) = &b.logins {
        let x = a.logins.get_or_insert_with(|| Logins {
            protocol: y.protocol.clone(),
            ..Logins::default()
        });
        if !x.protocol.split('+').any(|p| p == y.protocol) {
            x.protocol = format!("{}+{}", x.protocol, y.protocol);
        }
        x.ok += y.ok;
        x.joined += y.joined;
        x.not_logged_in += y.not_logged_in;
        x.refused += y.refused;
        x.tls += y.tls;
        x.no_login_known += y.no_login_known;
        x.unsupported += y.unsupported;
        x.malformed += y.malformed;
    }
}

impl Requests {
    /// `lost` as a percentage of `online` (0 when nothing was seen).
    pub fn loss_percent_of(online: u64, lost: u64) -> f64 {
        if online == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / online as f64
        }
    }
}

impl Report {
    /// An empty report of the current schema version written by `tool` on `host`.
    pub fn new(tool: &str, host: &str) -> Report {
        Report {
            schema_version: SCHEMA_VERSION,
            tool: tool.to_string(),
            hosts: vec![host.to_string()],
            ..Report::default()
        }
    }

    /// Combines the reports of several online hosts: counts add, hosts are listed together,
    /// latency distributions merge through their buckets (percentiles recomputed), difference
    /// groups merge by request and statuses, the timeline adds per second, the run spans from
    /// the earliest start to the latest end.
    pub fn merge(reports: &[Report]) -> Result<Report, MergeError> {
        let first = reports.first().ok_or(MergeError::Empty)?;
        if let Some((index, r)) = reports
            .iter()
            .enumerate()
            .find(|(_, r)| r.schema_version != SCHEMA_VERSION)
        {
            return Err(MergeError::SchemaVersion {
                index,
                expected: SCHEMA_VERSION,
                found: r.schema_version,
            });
        }
        let mut out = Report {
            schema_version: SCHEMA_VERSION,
            tool: first.tool.clone(),
            ..Report::default()
        };
        let start = reports
            .iter()
            .map(|r| r.started_unix_s)
            .fold(f64::INFINITY, f64::min);
        let end = reports
            .iter()
            .map(|r| r.started_unix_s + r.duration_s)
            .fold(f64::NEG_INFINITY, f64::max);
        out.started_unix_s = start;
        out.duration_s = (end - start).max(0.0);
        for r in reports {
            out.hosts.extend(r.hosts.iter().cloned());
            add_requests(&mut out.requests, &r.requests);
            add_sessions(&mut out.sessions, &r.sessions);
            if let Some(c) = &r.comparison {
                add_comparison(out.comparison.get_or_insert_with(Comparison::default), c);
            }
        }
        out.requests.loss_percent =
            Requests::loss_percent_of(out.requests.online, out.requests.lost);
        out.latency = merge_latencies(reports);
        out.differences = merge_groups(reports.iter().map(|r| &r.differences));
        out.noise = merge_groups(reports.iter().map(|r| &r.noise));
        let mut ticks: BTreeMap<u64, Tick> = BTreeMap::new();
        for t in reports.iter().flat_map(|r| &r.timeline) {
            let e = ticks.entry(t.unix_s).or_default();
            e.unix_s = t.unix_s;
            e.online += t.online;
            e.target += t.target;
        }
        out.timeline = ticks.into_values().collect();
        Ok(out)
    }
}

fn merge_latencies(reports: &[Report]) -> Latencies {
    let baselines: Vec<&Dist> = reports
        .iter()
        .filter_map(|r| r.latency.baseline.as_ref())
        .collect();
    let mut by_request: BTreeMap<String, (Histogram, Histogram)> = BTreeMap::new();
    for g in reports.iter().flat_map(|r| &r.latency.by_request) {
        let e = by_request.entry(g.request.clone()).or_default();
        e.0.merge(&Histogram::from_dist(&g.online));
        e.1.merge(&Histogram::from_dist(&g.target));
    }
    let mut by_request: Vec<GroupLatency> = by_request
        .into_iter()
        .map(|(request, (o, t))| GroupLatency {
            request,
            online: o.to_dist(),
            target: t.to_dist(),
        })
        .collect();
    slowest_first(&mut by_request);
    Latencies {
        online: merge_dists(reports.iter().map(|r| &r.latency.online)),
        target: merge_dists(reports.iter().map(|r| &r.latency.target)),
        baseline: (!baselines.is_empty()).then(|| merge_dists(baselines.into_iter())),
        by_request,
    }
}

/// Request groups, the slowest at the target (p99, then p90) first.
pub(crate) fn slowest_first(v: &mut [GroupLatency]) {
    v.sort_by(|a, b| {
        (b.target.p99_us, b.target.p90_us)
            .cmp(&(a.target.p99_us, a.target.p90_us))
            .then_with(|| a.request.cmp(&b.request))
    });
}
