//! The text summary of a report, printed at exit: requests and loss by cause, comparison counts,
//! latency online vs target, the most frequent differences, noise.

use std::fmt;

use crate::report::{AnswerSummary, Dist, Group, Report};

/// Difference groups listed in the text summary.
const TOP_GROUPS: usize = 10;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} report: {} ({:.1} s)",
            self.tool,
            self.hosts.join(", "),
            self.duration_s
        )?;
        let r = &self.requests;
        let c = &r.lost_by_cause;
        writeln!(
            f,
            "requests: online {}, target {}, lost {} ({:.2} %): never captured {}, sampled out {}, \
             overflow {}, failed at target {}, reset by target {}, reset by client {}, not answered {}",
            r.online,
            r.target,
            r.lost,
            r.loss_percent,
            c.never_captured,
            c.sampled_out,
            c.overflow,
            c.failed_at_target,
            c.reset_by_target,
            c.reset_by_client,
            c.not_answered
        )?;
        if let Some(c) = &self.comparison {
            writeln!(
                f,
                "comparison: {} compared, {} equal, {} different, {} noise; unanswered online {}, \
                 unanswered target {}, not sent {}, incomplete {}, evicted {}",
                c.compared,
                c.equal,
                c.different,
                c.noise,
                c.unanswered_online,
                c.unanswered_target,
                c.not_sent,
                c.incomplete,
                c.evicted
            )?;
        }
        let l = &self.latency;
        if l.online.count + l.target.count > 0 {
            writeln!(
                f,
                "latency (µs)  {:>9} {:>9} {:>9} {:>9} {:>9}",
                "p50", "p90", "p99", "max", "count"
            )?;
            latency_line(f, "online", &l.online)?;
            latency_line(f, "target", &l.target)?;
            if let Some(b) = &l.baseline {
                latency_line(f, "baseline", b)?;
            }
        }
        if !self.differences.is_empty() {
            let total: u64 = self.differences.iter().map(|g| g.count).sum();
            writeln!(
                f,
                "differences: {total} in {} groups{}",
                self.differences.len(),
                if self.differences.len() > TOP_GROUPS {
                    format!(", the {TOP_GROUPS} largest:")
                } else {
                    ":".to_string()
                }
            )?;
            for g in self.differences.iter().take(TOP_GROUPS) {
                group_line(f, g)?;
            }
        }
        if !self.noise.is_empty() {
            let total: u64 = self.noise.iter().map(|g| g.count).sum();
            writeln!(f, "noise: {total} in {} groups", self.noise.len())?;
        }
        Ok(())
    }
}

fn latency_line(f: &mut fmt::Formatter<'_>, name: &str, d: &Dist) -> fmt::Result {
    writeln!(
        f,
        "  {name:<10}  {:>9} {:>9} {:>9} {:>9} {:>9}",
        d.p50_us, d.p90_us, d.p99_us, d.max_us, d.count
    )
}

fn side(a: &AnswerSummary) -> String {
    match a.status {
        Some(s) => s.to_string(),
        None => "-".to_string(),
    }
}

fn group_line(f: &mut fmt::Formatter<'_>, g: &Group) -> fmt::Result {
    let fields: Vec<&str> = g.fields.keys().map(String::as_str).collect();
    let statuses = if g.protocol == "http" {
        format!(" {} -> {}", side(&g.online), side(&g.target))
    } else {
        String::new()
    };
    writeln!(
        f,
        "  {:>8}  {}{}  [{}]",
        g.count,
        g.request,
        statuses,
        fields.join(", ")
    )
}
