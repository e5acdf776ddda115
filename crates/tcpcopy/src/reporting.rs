//! The end of a run: the report built from the core's counters and the comparison's summary,
//! written as JSON and HTML where asked, the exit criteria (`--fail-on-diff`,
//! `--fail-on-loss`), and `tcpcopy report merge`.
//!
//! What the numbers mean is documented with the report's layout (`compare::report`,
//! docs/report.md); this module only gathers them and writes files.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use compare::report::{Logins, LostByCause, Report, Requests, Sessions, SCHEMA_VERSION};
use compare::Summary;
use session::Stats;

use crate::config::ReportSettings;
use crate::live::Board;
use crate::metrics::Snapshot;

/// Exit status of a run whose report exceeded `--fail-on-diff` or `--fail-on-loss`.
pub const EXIT_CRITERIA: i32 = 3;

/// The report of one run; `protocol`: the `--protocol` whose logins were counted.
pub fn build(
    stats: &Stats,
    protocol: Option<&str>,
    in_flight: u64,
    summary: Option<&Summary>,
    started: SystemTime,
    duration: Duration,
) -> Report {
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        tool: format!("tcpcopy {}", env!("CARGO_PKG_VERSION")),
        hosts: vec![host_name()],
        started_unix_s: started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        duration_s: duration.as_secs_f64(),
        requests: requests(stats, in_flight),
        sessions: Sessions {
            created: stats.sessions_created,
            joined: stats.sessions_joined,
            completed: stats.sessions_completed,
            reset_by_client: stats.sessions_reset_by_client,
            reset_by_target: stats.sessions_reset_by_target,
            timed_out: stats.sessions_timed_out,
            failed: stats.sessions_failed,
            overflowed: stats.sessions_overflowed,
            half_open_shed: stats.sessions_half_open_shed,
            half_open_expired: stats.sessions_half_open_expired,
            hurt: stats.sessions_hurt,
            holes_skipped: stats.holes_skipped,
            logins: protocol.map(|p| logins(p, &stats.logins)),
        },
        ..Report::default()
    };
    if let Some(s) = summary {
        s.fill_report(&mut report);
    }
    report
}

/// What the metrics endpoint and the status line show, from what the capture threads published;
/// `protocol`: the `--protocol` whose logins are counted.
pub fn snapshot(board: &Board, protocol: Option<&'static str>) -> Snapshot {
    let p = board.sum();
    let (online, target) = p.latency.unzip();
    Snapshot {
        stats: Some(p.stats),
        compare: p.compare,
        latency_online: online,
        latency_target: target,
        intercept: None,
        stream: p.stream,
        protocol,
    }
}

/// Requests online (those `-r` left out included), at the target, and lost by cause: the core
/// counts every lost request under the cause that ended its session, and those of sessions
/// still open at the end are not answered, so the causes add up to the loss.
fn requests(stats: &Stats, in_flight: u64) -> Requests {
    let online = stats.requests_online + stats.requests_sampled_out;
    let lost = online.saturating_sub(stats.requests_target);
    let l = &stats.lost;
    Requests {
        online,
        target: stats.requests_target,
        lost,
        loss_percent: if online == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / online as f64
        },
        lost_by_cause: LostByCause {
            never_captured: l.never_captured,
            sampled_out: stats.requests_sampled_out,
            overflow: l.overflow,
            failed_at_target: l.failed_at_target,
            reset_by_target: l.reset_by_target,
            reset_by_client: l.reset_by_client,
            not_answered: l.not_answered + in_flight,
        },
    }
}

/// The core's login counts (`--protocol`) as the report holds them.
fn logins(protocol: &str, l: &session::Logins) -> Logins {
    Logins {
        protocol: protocol.to_string(),
        ok: l.logged_in + l.joined_logged_in,
        joined: l.joined_logged_in,
        not_logged_in: l.failed(),
        refused: l.refused,
        tls: l.tls,
        no_login_known: l.no_credentials,
        unsupported: l.unsupported,
        malformed: l.malformed,
    }
}

/// Creates the report files asked for (empty) before the run, so that a path that cannot be
/// written fails at once, not after an hour of replication.
pub fn create_files(settings: &ReportSettings) -> anyhow::Result<()> {
    for (option, path) in [
        ("--report", &settings.json),
        ("--report-html", &settings.html),
    ] {
        if let Some(path) = path {
            std::fs::File::create(path).with_context(|| format!("{option} {}", path.display()))?;
        }
    }
    Ok(())
}

/// Writes the report files asked for.
pub fn write(report: &Report, settings: &ReportSettings) -> anyhow::Result<()> {
    if let Some(path) = &settings.json {
        write_json(report, path)?;
    }
    if let Some(path) = &settings.html {
        write_html(report, path)?;
    }
    Ok(())
}

fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report).context("cannot serialize the report")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("--report {}", path.display()))
}

fn write_html(report: &Report, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, compare::html::render(report))
        .with_context(|| format!("--report-html {}", path.display()))
}

/// Which exit criterion the report exceeded, as one line; `None` when it passes.
pub fn failed_criteria(report: &Report, settings: &ReportSettings) -> Option<String> {
    if let Some(limit) = settings.fail_on_loss {
        // Requests `-r` left out were left out by choice: the gate is about the others.
        let r = &report.requests;
        let sampled_out = r.lost_by_cause.sampled_out;
        let replicated = r.online.saturating_sub(sampled_out);
        let lost = r.lost.saturating_sub(sampled_out);
        let loss = if replicated == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / replicated as f64
        };
        if loss > limit {
            return Some(format!(
                "{loss:.3}% of the replicated requests were lost, more than --fail-on-loss {limit}"
            ));
        }
    }
    if let Some(limit) = settings.fail_on_diff {
        let Some(c) = report.comparison.as_ref().filter(|c| c.compared > 0) else {
            // A gate that judged nothing must not pass: no online answers captured, an
            // intercept that does not compare, or every exchange incomplete.
            return Some("no answer was compared, so --fail-on-diff cannot pass".into());
        };
        let diff = c.different as f64 * 100.0 / c.compared as f64;
        if diff > limit {
            return Some(format!(
                "{diff:.3}% of the compared requests differ, more than --fail-on-diff {limit}"
            ));
        }
    }
    None
}

/// `tcpcopy report merge A.json B.json ... -o OUT`: one report of several online hosts, as
/// JSON, or as HTML when OUT ends in `.html`.
pub fn merge_files(inputs: &[std::path::PathBuf], output: &Path) -> anyhow::Result<()> {
    let mut reports = Vec::with_capacity(inputs.len());
    for path in inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a tcpcopy JSON report", path.display()))?;
        reports.push(report);
    }
    let merged = Report::merge(&reports).context("cannot merge the reports")?;
    let html = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    if html {
        write_html(&merged, output)
    } else {
        write_json(&merged, output)
    }
}

/// This host's name, for the report (the address of nothing: a label).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use session::LostRequests;

    #[test]
    fn the_causes_of_loss_add_up_to_the_loss() {
        let stats = Stats {
            requests_online: 1000,
            requests_target: 950,
            requests_sampled_out: 500,
            lost: LostRequests {
                never_captured: 3,
                overflow: 4,
                failed_at_target: 5,
                reset_by_target: 6,
                reset_by_client: 7,
                not_answered: 8,
            },
            ..Stats::default()
        };
        let r = requests(&stats, 17);
        let c = &r.lost_by_cause;
        let sum = c.never_captured
            + c.sampled_out
            + c.overflow
            + c.failed_at_target
            + c.reset_by_target
            + c.reset_by_client
            + c.not_answered;
        assert_eq!((r.online, r.target, r.lost), (1500, 950, 550));
        assert_eq!(sum, r.lost);
    }

    #[test]
    fn logins_are_reported_only_with_a_protocol_and_their_causes_add_up() {
        let stats = Stats {
            logins: session::Logins {
                logged_in: 7,
                joined_logged_in: 2,
                refused: 1,
                tls: 3,
                no_credentials: 4,
                unsupported: 5,
                malformed: 6,
            },
            ..Stats::default()
        };
        let at = SystemTime::UNIX_EPOCH;
        let none = build(&stats, None, 0, None, at, Duration::ZERO);
        assert_eq!(none.sessions.logins, None);
        let r = build(&stats, Some("mysql"), 0, None, at, Duration::ZERO);
        let l = r.sessions.logins.expect("logins with a protocol");
        assert_eq!(
            (l.protocol.as_str(), l.ok, l.joined, l.not_logged_in),
            ("mysql", 9, 2, 19)
        );
        assert_eq!(
            l.refused + l.tls + l.no_login_known + l.unsupported + l.malformed,
            l.not_logged_in
        );
        assert_eq!((l.tls, l.no_login_known, l.malformed), (3, 4, 6));
    }

    #[test]
    fn the_exit_criteria_compare_percentages() {
        let mut report = Report::default();
        report.requests.online = 1000;
        report.requests.lost = 5;
        report.comparison = Some(compare::report::Comparison {
            compared: 1000,
            different: 20,
            ..Default::default()
        });
        let at = |loss, diff| ReportSettings {
            fail_on_loss: loss,
            fail_on_diff: diff,
            ..ReportSettings::default()
        };
        assert_eq!(failed_criteria(&report, &at(None, None)), None);
        assert_eq!(failed_criteria(&report, &at(Some(1.0), Some(2.0))), None);
        assert!(failed_criteria(&report, &at(Some(0.1), None))
            .is_some_and(|l| l.contains("--fail-on-loss")));
        assert!(failed_criteria(&report, &at(None, Some(1.9)))
            .is_some_and(|l| l.contains("--fail-on-diff")));
        // Requests left out by -r are no loss for the gate.
        report.requests.online = 2000;
        report.requests.lost = 1005;
        report.requests.lost_by_cause.sampled_out = 1000;
        assert_eq!(failed_criteria(&report, &at(Some(1.0), None)), None);
        // Nothing compared: the diff gate fails rather than pass unchecked.
        report.comparison.as_mut().unwrap().compared = 0;
        assert!(failed_criteria(&report, &at(None, Some(50.0)))
            .is_some_and(|l| l.contains("no answer was compared")));
    }
}
