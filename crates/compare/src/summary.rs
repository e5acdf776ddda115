//! What the comparator counted: judging an exchange into counts, difference groups, latency
//! histograms and the timeline; merging summaries of several threads; filling a report.

use std::collections::BTreeMap;

use crate::flow::Exchange;
use crate::http::{self, Answer};
use crate::report::{
    AnswerSummary, Comparison, Group, GroupLatency, Latencies, Report, Sample, Tick,
};
use crate::{text, CompareConfig, Flow, Histogram, Live, Nanos};

/// Characters of a sample's request or answer kept (after escaping).
const SAMPLE_CHARS: usize = 512;
/// Characters of an answer's first bytes in a group's summary (non-HTTP).
const SUMMARY_CHARS: usize = 64;
/// The latency group of requests beyond `max_groups`.
pub const OTHER: &str = "(other)";
/// The label of answers that came before any request (a server greeting).
pub const NO_REQUEST: &str = "(no request)";

/// A difference group: the request label, then, for HTTP, the online and target statuses.
pub type GroupKey = (String, Option<u16>, Option<u16>);

/// Latency of one request group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestLatency {
    pub online: Histogram,
    pub target: Histogram,
}

/// What a comparator (or several, merged) found: the comparison part of a report.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The counters as last read (filled by `finish`, added by `merge`).
    pub live: Live,
    /// Counts per (exchange, target copy): each ends in exactly one of `equal`, `different`,
    /// `noise`, `unanswered_online`, `incomplete`.
    pub comparison: Comparison,
    /// Online latency: request's last byte to the online answer's first byte.
    pub online: Histogram,
    /// Target latency, every copy pooled: request sent to the target's first answer byte.
    pub target: Histogram,
    /// Baseline latency, when a baseline ran.
    pub baseline: Option<Histogram>,
    pub by_request: BTreeMap<String, RequestLatency>,
    pub differences: BTreeMap<GroupKey, Group>,
    pub noise: BTreeMap<GroupKey, Group>,
    /// Per Unix second.
    pub timeline: BTreeMap<u64, Tick>,
    /// Answer segments that came after their exchange was judged.
    pub late: u64,
    /// Exchanges with answers from targets only (no request, no online answer): not judged.
    pub unpaired: u64,
}

fn second(at: Nanos) -> u64 {
    at / 1_000_000_000
}

impl Summary {
    pub(crate) fn new(cfg: &CompareConfig) -> Summary {
        Summary {
            baseline: cfg.baseline.then(Histogram::new),
            ..Summary::default()
        }
    }

    /// A request was captured online (its last byte at `at`).
    pub(crate) fn online_request(&mut self, at: Nanos) {
        let s = second(at);
        let t = self.timeline.entry(s).or_default();
        t.unix_s = s;
        t.online += 1;
    }

    /// Judges an exchange whose answers are all in (or will never be).
    /// Judges one exchange; a target side that got no answer and got the request after
    /// `pending_after` (or never) is not judged (`not_sent`): its request is lost or in flight,
    /// which the loss counts say, not a difference.
    pub(crate) fn judge(
        &mut self,
        cfg: &CompareConfig,
        flow: Flow,
        ex: &Exchange,
        pending_after: Nanos,
    ) {
        if ex.is_ghost() {
            return;
        }
        if ex.request.is_none() && ex.online.is_none() {
            self.unpaired += 1;
            return;
        }
        let label = ex
            .request
            .as_ref()
            .map_or_else(|| NO_REQUEST.to_string(), |r| text::label(&r.head));
        self.record_latency(cfg, &label, ex);
        let copies = u64::from(cfg.copies);
        let Some(online) = &ex.online else {
            self.comparison.unanswered_online += copies;
            return;
        };
        if !online.complete() || ex.request.as_ref().is_some_and(|r| r.gap) {
            self.comparison.incomplete += copies;
            return;
        }
        let ignore = &cfg.ignore_headers;
        let on = Answer::new(online.digest, &online.head, ignore);
        let baseline_fields = baseline_fields(cfg, &on, ex);
        for n in 0..usize::from(cfg.copies) {
            let side = ex.targets.get(n);
            let assembled = side.and_then(|s| s.answer.as_ref());
            let sent = side.and_then(|s| s.sent);
            if assembled.is_none() && sent.is_none_or(|t| t > pending_after) {
                self.comparison.not_sent += 1;
                continue;
            }
            let target = match assembled {
                None => None,
                Some(a) if !a.complete() => {
                    self.comparison.incomplete += 1;
                    continue;
                }
                Some(a) => Some(Answer::new(a.digest, &a.head, ignore)),
            };
            let fields = match &target {
                None => {
                    self.comparison.unanswered_target += 1;
                    vec!["missing".to_string()]
                }
                Some(t) => http::differences(&on, t),
            };
            self.comparison.compared += 1;
            if fields.is_empty() {
                self.comparison.equal += 1;
                continue;
            }
            let noise = baseline_fields.as_ref().is_some_and(|b| {
                fields.iter().all(|f| {
                    b.iter()
                        .any(|g| http::noise_class(g) == http::noise_class(f))
                })
            });
            if noise {
                self.comparison.noise += 1;
            } else {
                self.comparison.different += 1;
            }
            let found = Found {
                flow,
                label: &label,
                ex,
                online: &on,
                target: target.as_ref(),
                fields,
            };
            self.group(cfg, noise, found);
        }
    }

    fn record_latency(&mut self, cfg: &CompareConfig, label: &str, ex: &Exchange) {
        let key = if self.by_request.contains_key(label) || self.by_request.len() < cfg.max_groups {
            label
        } else {
            OTHER
        };
        let by = self.by_request.entry(key.to_string()).or_default();
        if let (Some(r), Some(a)) = (&ex.request, &ex.online) {
            let ns = a.first_at.saturating_sub(r.last_at);
            self.online.record_ns(ns);
            by.online.record_ns(ns);
        }
        for s in &ex.targets {
            let Some(a) = &s.answer else { continue };
            if let Some(sent) = s.sent {
                let ns = a.first_at.saturating_sub(sent);
                self.target.record_ns(ns);
                by.target.record_ns(ns);
            }
            let sec = second(a.first_at);
            let t = self.timeline.entry(sec).or_default();
            t.unix_s = sec;
            t.target += 1;
        }
        if let (Some(h), Some(sent), Some(a)) =
            (&mut self.baseline, ex.baseline.sent, &ex.baseline.answer)
        {
            h.record_ns(a.first_at.saturating_sub(sent));
        }
    }

    fn group(&mut self, cfg: &CompareConfig, noise: bool, f: Found<'_>) {
        let http = f.online.is_http();
        let target_status = f.target.and_then(Answer::status);
        let key = if http {
            (f.label.to_string(), f.online.status(), target_status)
        } else {
            (f.label.to_string(), None, None)
        };
        let groups = if noise {
            &mut self.noise
        } else {
            &mut self.differences
        };
        if !groups.contains_key(&key) && groups.len() >= cfg.max_groups {
            self.comparison.ungrouped += 1;
            return;
        }
        let side = |a: Option<&Answer<'_>>| AnswerSummary {
            status: a.and_then(Answer::status),
            head: (!http)
                .then(|| a.map_or_else(String::new, |a| text::printable(a.head, SUMMARY_CHARS))),
        };
        let g = groups.entry(key).or_insert_with(|| Group {
            request: f.label.to_string(),
            protocol: if http { "http" } else { "bytes" }.to_string(),
            online: side(Some(f.online)),
            target: side(f.target),
            ..Group::default()
        });
        g.count += 1;
        for field in &f.fields {
            *g.fields.entry(field.clone()).or_default() += 1;
        }
        if g.samples.len() < cfg.samples_per_group {
            g.samples.push(sample(&f, cfg.baseline));
        }
    }

    /// Adds another thread's summary.
    pub fn merge(&mut self, other: Summary) {
        self.live.compared += other.live.compared;
        self.live.equal += other.live.equal;
        self.live.different += other.live.different;
        self.live.noise += other.live.noise;
        self.live.open += other.live.open;
        crate::report::add_comparison(&mut self.comparison, &other.comparison);
        self.online.merge(&other.online);
        self.target.merge(&other.target);
        match (&mut self.baseline, other.baseline) {
            (Some(a), Some(b)) => a.merge(&b),
            (a @ None, b) => *a = b,
            _ => {}
        }
        for (k, v) in other.by_request {
            let e = self.by_request.entry(k).or_default();
            e.online.merge(&v.online);
            e.target.merge(&v.target);
        }
        for (k, g) in other.differences {
            crate::report::merge_group_into(&mut self.differences, k, g);
        }
        for (k, g) in other.noise {
            crate::report::merge_group_into(&mut self.noise, k, g);
        }
        for (s, t) in other.timeline {
            let e = self.timeline.entry(s).or_default();
            e.unix_s = s;
            e.online += t.online;
            e.target += t.target;
        }
        self.late += other.late;
        self.unpaired += other.unpaired;
    }

    /// Fills the comparison parts of `report`: `comparison`, `latency`, `differences` and
    /// `noise` (most frequent first), `timeline`. Requests and sessions are the caller's.
    pub fn fill_report(&self, report: &mut Report) {
        report.comparison = Some(self.comparison.clone());
        let mut by_request: Vec<GroupLatency> = self
            .by_request
            .iter()
            .map(|(k, v)| GroupLatency {
                request: k.clone(),
                online: v.online.to_dist(),
                target: v.target.to_dist(),
            })
            .collect();
        crate::report::slowest_first(&mut by_request);
        report.latency = Latencies {
            online: self.online.to_dist(),
            target: self.target.to_dist(),
            baseline: self.baseline.as_ref().map(Histogram::to_dist),
            by_request,
        };
        report.differences = crate::report::sorted_groups(self.differences.values().cloned());
        report.noise = crate::report::sorted_groups(self.noise.values().cloned());
        report.timeline = self.timeline.values().copied().collect();
    }
}

/// How the baseline's answer differs from the online one, when a baseline ran and its answer
/// is known (an incomplete one is not: every difference then counts as a regression).
fn baseline_fields(cfg: &CompareConfig, online: &Answer<'_>, ex: &Exchange) -> Option<Vec<String>> {
    if !cfg.baseline {
        return None;
    }
    match &ex.baseline.answer {
        // A baseline that got the request and did not answer shows "missing"; one that never got
        // it shows nothing (a baseline unreachable must not turn the target's misses into noise).
        None if ex.baseline.sent.is_some() => Some(vec!["missing".to_string()]),
        None => None,
        Some(b) if b.complete() => Some(http::differences(
            online,
            &Answer::new(b.digest, &b.head, &cfg.ignore_headers),
        )),
        Some(_) => None,
    }
}

/// A difference found, for grouping.
struct Found<'a> {
    flow: Flow,
    label: &'a str,
    ex: &'a Exchange,
    online: &'a Answer<'a>,
    target: Option<&'a Answer<'a>>,
    fields: Vec<String>,
}

fn sample(f: &Found<'_>, baseline: bool) -> Sample {
    let show = |a: Option<&Answer<'_>>| {
        a.map_or_else(String::new, |a| text::printable(a.head, SAMPLE_CHARS))
    };
    Sample {
        flow: format!("{} -> {}", f.flow.client, f.flow.server),
        request: f
            .ex
            .request
            .as_ref()
            .map_or_else(String::new, |r| text::printable(&r.head, SAMPLE_CHARS)),
        online: show(Some(f.online)),
        target: show(f.target),
        baseline: baseline.then(|| {
            f.ex.baseline
                .answer
                .as_ref()
                .map_or_else(String::new, |b| text::printable(&b.head, SAMPLE_CHARS))
        }),
        online_len: f.online.digest.len,
        target_len: f.target.map_or(0, |t| t.digest.len),
    }
}
