//! The HTML report: one self-contained page rendered from a [`Report`].
//!
//! The page loads nothing: CSS and a little script are inline, the plots are inline SVG drawn
//! here (module `plot`), and a Content-Security-Policy forbids every fetch, so a report opened years
//! later, offline, looks the same. Every string taken from the report is escaped (`text::Esc`): it
//! holds captured bytes. Every part may be empty (no comparison, no timeline, no baseline) and
//! the page says so instead of drawing an empty plot.
//!
//! The script only sorts tables when a column header is clicked and marks the page as ready
//! (`data-ready` on `<html>`, checked by the browser test); the page reads the same without it.

mod charts;
mod plot;
mod text;

use crate::report::{AnswerSummary, Comparison, Group, GroupLatency, Logins, Report, Sample};
use plot::w;
use text::{duration, int, pct, signed_us, us, utc, with_breaks, Esc};

/// Colour of the online side in every plot.
pub const ONLINE_COLOUR: &str = "#1f77b4";
/// Colour of the target side in every plot.
pub const TARGET_COLOUR: &str = "#e6550d";
/// Colour of the baseline in the latency plots.
pub const BASELINE_COLOUR: &str = "#2ca02c";

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut s = String::with_capacity(64 * 1024);
    head(&mut s, report);
    header(&mut s, report);
    cards(&mut s, report);
    s.push_str("<main>");
    requests_section(&mut s, report);
    charts::latency_section(&mut s, report);
    comparison_section(&mut s, report);
    groups_section(
        &mut s,
        "differences",
        "Differences",
        "Exchanges whose target answer differed from production's and not at the baseline: \
         regressions. Grouped by request and status pair.",
        &report.differences,
    );
    groups_section(
        &mut s,
        "noise",
        "Noise",
        "Differences the baseline (production's version, fed the same sessions) showed as well: \
         not caused by the new version. Only found when a baseline ran (--baseline).",
        &report.noise,
    );
    by_request_section(&mut s, &report.latency.by_request);
    s.push_str("</main>");
    w(
        &mut s,
        format_args!(
            "<footer>Written by {}; report schema version {}.</footer><script>{SCRIPT}</script>\
             </body></html>\n",
            Esc(&report.tool),
            report.schema_version
        ),
    );
    s
}

const STYLE: &str = "\
:root{color-scheme:light}*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;\
background:#f4f5f7}\
header{background:#1d2733;color:#fff;padding:16px 28px}\
header h1{margin:0 0 4px;font-size:22px;font-weight:600}\
header .meta{color:#c9d1db;font-size:13px}\
nav{margin-top:8px;font-size:13px}nav a{color:#9cc3ea;margin-right:14px;text-decoration:none}\
main,.cards{max-width:1240px;margin:0 auto;padding:0 24px}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(132px,1fr));gap:10px;\
margin-top:16px}\
.card{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:10px 12px}\
.card .v{font-size:20px;font-weight:600}.card .k{color:#666;font-size:12px}\
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:14px 18px;\
margin:16px 0}\
h2{font-size:17px;margin:0 0 8px}h3{font-size:14px;margin:12px 0 6px;color:#444}\
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:18px}\
svg.plot{width:100%;height:auto;display:block}\
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}\
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
th{font-weight:600;color:#444;background:#fafbfc}td.n,th.n{text-align:right;white-space:nowrap}\
tr.total td{font-weight:600;border-top:1px solid #ccc}tr.group td{border-bottom:none}\
tr.samples td{padding-top:0}\
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}\
pre{white-space:pre-wrap;word-break:break-all;background:#f6f8fa;border:1px solid #eaeaea;\
padding:6px;margin:2px 0 6px;max-height:260px;overflow:auto}\
details summary{cursor:pointer;color:#0366d6}\
.sample{border-top:1px dashed #ddd;padding:6px 0}\
.sides{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:8px}\
.label{font-size:12px;color:#555}.muted{color:#777}.bad{color:#b31d28;font-weight:600}\
.worse{background:#fdecea}.desc{color:#666;font-size:13px;margin:0 0 8px}\
.bar{display:flex;height:14px;border-radius:3px;overflow:hidden;background:#eee;margin:6px 0 10px}\
.eq{background:#a1d99b}.df{background:#d62728}.nz{background:#fdd0a2}\
th.sortable{cursor:pointer}th[aria-sort=ascending]::after{content:' \\25B2'}\
th[aria-sort=descending]::after{content:' \\25BC'}\
footer{max-width:1240px;margin:0 auto;padding:8px 24px 32px;color:#888;font-size:12px}";

/// Sorts a table by the clicked column (numbers by their `data-v`), then marks the page ready.
const SCRIPT: &str = r#"(function(){
function key(td){var v=td.getAttribute('data-v');return v===null?td.textContent.trim().toLowerCase():parseFloat(v);}
document.querySelectorAll('table.sort').forEach(function(t){
var heads=t.tHead.rows[0].cells;
Array.prototype.forEach.call(heads,function(th,i){
th.classList.add('sortable');th.title='Sort';
th.addEventListener('click',function(){
var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
var asc=th.getAttribute('aria-sort')!=='ascending';
Array.prototype.forEach.call(heads,function(h){h.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',asc?'ascending':'descending');
rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);return (x<y?-1:x>y?1:0)*(asc?1:-1);});
rows.forEach(function(r){body.appendChild(r);});
});});});
document.documentElement.setAttribute('data-ready','1');
})();"#;

fn head(s: &mut String, r: &Report) {
    let hosts = hosts(r);
    w(
        s,
        format_args!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
             <link rel=\"icon\" href=\"data:,\"><title>tcpcopy report: {}</title>\
             <style>{STYLE}</style></head><body>",
            Esc(&hosts)
        ),
    );
}

fn hosts(r: &Report) -> String {
    if r.hosts.is_empty() {
        "no host named".to_string()
    } else {
        r.hosts.join(", ")
    }
}

fn header(s: &mut String, r: &Report) {
    let started = if r.started_unix_s > 0.0 {
        utc(r.started_unix_s)
    } else {
        "unknown".to_string()
    };
    w(
        s,
        format_args!(
            "<header><h1>tcpcopy report</h1><div class=\"meta\">{} · online host{}: {} · \
             started {} · ran {}</div><nav><a href=\"#requests\">Requests</a>\
             <a href=\"#latency\">Latency</a><a href=\"#comparison\">Comparison</a>\
             <a href=\"#differences\">Differences</a><a href=\"#noise\">Noise</a>\
             <a href=\"#by-request\">Latency by request</a></nav></header>",
            Esc(&r.tool),
            if r.hosts.len() == 1 { "" } else { "s" },
            Esc(&hosts(r)),
            started,
            duration(r.duration_s)
        ),
    );
}

fn cards(s: &mut String, r: &Report) {
    let q = &r.requests;
    let c = r.comparison.as_ref();
    let num = |f: fn(&Comparison) -> u64| c.map_or("—".to_string(), |c| int(f(c)));
    let (different, compared) = c.map_or((0, 0), |c| (c.different, c.compared));
    let l = &r.latency;
    let cards = [
        (int(q.online), "requests online", false),
        (int(q.target), "delivered to the target", false),
        (
            format!("{} <small>{:.2} %</small>", int(q.lost), q.loss_percent),
            "lost",
            q.lost > 0,
        ),
        (num(|c| c.compared), "answers compared", false),
        (
            format!(
                "{} <small>{}</small>",
                num(|c| c.different),
                pct(different, compared)
            ),
            "different (regressions)",
            different > 0,
        ),
        (num(|c| c.noise), "noise", false),
        (us(l.online.p99_us), "p99 latency online", false),
        (
            us(l.target.p99_us),
            "p99 latency at the target",
            l.target.p99_us > l.online.p99_us.saturating_mul(3) / 2,
        ),
    ];
    s.push_str("<div class=\"cards\">");
    for (value, key, bad) in cards {
        let class = if bad { " bad" } else { "" };
        w(
            s,
            format_args!(
                "<div class=\"card\"><div class=\"v{class}\">{value}</div>\
                 <div class=\"k\">{key}</div></div>"
            ),
        );
    }
    s.push_str("</div>");
}

fn requests_section(s: &mut String, r: &Report) {
    s.push_str("<section id=\"requests\"><h2>Requests</h2><h3>Requests per second</h3>");
    match charts::timeline_plot(&r.timeline, r.started_unix_s) {
        Some(svg) => s.push_str(&svg),
        None => s.push_str("<p class=\"muted\">No timeline in this report.</p>"),
    }
    s.push_str("<div class=\"grid2\"><div>");
    let q = &r.requests;
    let c = &q.lost_by_cause;
    let causes: [(&str, u64, &str); 7] = [
        (
            "never captured",
            c.never_captured,
            "the capture missed some of their bytes (kernel drops)",
        ),
        (
            "sampled out",
            c.sampled_out,
            "their connection was left out by -r",
        ),
        (
            "overflow",
            c.overflow,
            "their session was dropped for memory",
        ),
        (
            "failed at the target",
            c.failed_at_target,
            "the target stopped acknowledging",
        ),
        (
            "reset by the target",
            c.reset_by_target,
            "the target reset their session",
        ),
        (
            "reset by the client",
            c.reset_by_client,
            "the client reset before the target had them",
        ),
        (
            "not answered",
            c.not_answered,
            "unacknowledged when the session timed out or the run ended",
        ),
    ];
    w(
        s,
        format_args!(
            "<h3>Delivery</h3><table><tbody>\
             <tr><td>requests online</td><td class=\"n\">{}</td><td></td></tr>\
             <tr><td>delivered to the target</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\
             <tr><td>lost</td><td class=\"n\">{}</td><td class=\"n\">{:.2} %</td></tr>\
             </tbody></table><h3>Loss by cause</h3><table><thead><tr><th>cause</th>\
             <th class=\"n\">requests</th><th class=\"n\">of online</th><th>meaning</th></tr>\
             </thead><tbody>",
            int(q.online),
            int(q.target),
            pct(q.target, q.online),
            int(q.lost),
            q.loss_percent
        ),
    );
    for (name, n, meaning) in causes {
        w(
            s,
            format_args!(
                "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"muted\">{meaning}</td></tr>",
                int(n),
                pct(n, q.online)
            ),
        );
    }
    let sum: u64 = causes.iter().map(|c| c.1).sum();
    w(
        s,
        format_args!(
            "<tr class=\"total\"><td>total</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td></tr></tbody></table>",
            int(sum),
            pct(sum, q.online),
            if sum == q.lost {
                ""
            } else {
                "<span class=\"bad\">differs from lost</span>"
            }
        ),
    );
    s.push_str("</div><div>");
    sessions_table(s, r);
    s.push_str("</div></div></section>");
}

fn sessions_table(s: &mut String, r: &Report) {
    let x = &r.sessions;
    s.push_str("<h3>Sessions</h3><table><tbody>");
    for (name, n) in [
        ("created", x.created),
        ("joined (already open when the capture started)", x.joined),
        ("completed", x.completed),
        ("reset by the client", x.reset_by_client),
        ("reset by the target", x.reset_by_target),
        ("timed out", x.timed_out),
        ("failed", x.failed),
        ("overflowed", x.overflowed),
        ("half open, shed for memory", x.half_open_shed),
        ("half open, never completed", x.half_open_expired),
        ("hurt: bytes never captured, holes skipped", x.hurt),
    ] {
        w(
            s,
            format_args!("<tr><td>{name}</td><td class=\"n\">{}</td></tr>", int(n)),
        );
    }
    s.push_str("</tbody></table>");
    if let Some(l) = &x.logins {
        logins_table(s, l);
    }
}

/// How the sessions' logins went (`--protocol`).
fn logins_table(s: &mut String, l: &Logins) {
    w(
        s,
        format_args!("<h3>Logins ({})</h3><table><tbody>", Esc(&l.protocol)),
    );
    for (name, n) in [
        ("logged in", l.ok),
        ("of those joined, logged in by tcpcopy", l.joined),
        ("not logged in", l.not_logged_in),
        ("refused by the target", l.refused),
        ("TLS to the online server, skipped", l.tls),
        ("joined, no login known, skipped", l.no_login_known),
        ("authentication not supported", l.unsupported),
        ("protocol not followed", l.malformed),
    ] {
        w(
            s,
            format_args!("<tr><td>{name}</td><td class=\"n\">{}</td></tr>", int(n)),
        );
    }
    s.push_str("</tbody></table>");
}

fn comparison_section(s: &mut String, r: &Report) {
    s.push_str("<section id=\"comparison\"><h2>Comparison</h2>");
    let Some(c) = &r.comparison else {
        s.push_str(
            "<p class=\"muted\">Answers were not compared (run with --compare).</p></section>",
        );
        return;
    };
    let share = |n: u64| {
        if c.compared == 0 {
            0.0
        } else {
            100.0 * n as f64 / c.compared as f64
        }
    };
    w(
        s,
        format_args!(
            "<div class=\"bar\" title=\"equal / different / noise\"><div class=\"eq\" \
             style=\"width:{:.3}%\"></div><div class=\"df\" style=\"width:{:.3}%\"></div>\
             <div class=\"nz\" style=\"width:{:.3}%\"></div></div><table><thead><tr><th></th>\
             <th class=\"n\">exchanges</th><th class=\"n\">of compared</th><th>meaning</th></tr>\
             </thead><tbody>",
            share(c.equal),
            share(c.different),
            share(c.noise)
        ),
    );
    for (name, n, meaning) in [
        (
            "compared",
            c.compared,
            "judged: both answers seen, or the target's missing",
        ),
        ("equal", c.equal, "the target answered like production"),
        (
            "different",
            c.different,
            "regressions: differed, and not at the baseline",
        ),
        ("noise", c.noise, "differed at the baseline as well"),
        (
            "unanswered online",
            c.unanswered_online,
            "production did not answer: nothing to compare",
        ),
        (
            "unanswered at the target",
            c.unanswered_target,
            "production answered, the target did not",
        ),
        (
            "not sent",
            c.not_sent,
            "the target never got the request (lost or in flight at the end): not judged",
        ),
        (
            "incomplete",
            c.incomplete,
            "a hole in what was captured or reported: not judged",
        ),
        (
            "evicted",
            c.evicted,
            "judged early because too many exchanges were open",
        ),
        (
            "ungrouped",
            c.ungrouped,
            "differences in no group: the group limit was reached",
        ),
    ] {
        let class = if name == "different" && n > 0 {
            " class=\"bad\""
        } else {
            ""
        };
        w(
            s,
            format_args!(
                "<tr><td{class}>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"muted\">{meaning}</td></tr>",
                int(n),
                pct(n, c.compared)
            ),
        );
    }
    s.push_str("</tbody></table></section>");
}

fn groups_section(s: &mut String, id: &str, title: &str, desc: &str, groups: &[Group]) {
    w(
        s,
        format_args!(
            "<section id=\"{id}\"><h2>{title} <small class=\"muted\">({} group{})</small></h2>\
             <p class=\"desc\">{desc}</p>",
            groups.len(),
            if groups.len() == 1 { "" } else { "s" }
        ),
    );
    if groups.is_empty() {
        s.push_str("<p class=\"muted\">None.</p></section>");
        return;
    }
    s.push_str(
        "<table><thead><tr><th>request</th><th>protocol</th><th class=\"n\">count</th>\
         <th>online → target</th><th>what differed</th></tr></thead><tbody>",
    );
    for g in groups {
        let fields: Vec<String> = g
            .fields
            .iter()
            .map(|(k, n)| format!("{} <span class=\"muted\">×{}</span>", Esc(k), int(*n)))
            .collect();
        w(
            s,
            format_args!(
                "<tr class=\"group\"><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td>\
                 <td>{} → {}</td><td>{}</td></tr><tr class=\"samples\"><td colspan=\"5\">",
                Esc(&g.request),
                Esc(&g.protocol),
                int(g.count),
                answer(&g.online),
                answer(&g.target),
                fields.join(", ")
            ),
        );
        samples(s, &g.samples);
        s.push_str("</td></tr>");
    }
    s.push_str("</tbody></table></section>");
}

/// One side of a group: its status, or its first bytes.
fn answer(a: &AnswerSummary) -> String {
    match (a.status, &a.head) {
        (Some(status), _) => format!("<b>{status}</b>"),
        (None, Some(head)) => {
            let short: String = head.chars().take(40).collect();
            let more = if short.len() < head.len() { "…" } else { "" };
            format!("<code>{}</code>{more}", Esc(&short))
        }
        (None, None) => "<span class=\"muted\">none</span>".to_string(),
    }
}

fn samples(s: &mut String, samples: &[Sample]) {
    if samples.is_empty() {
        s.push_str("<span class=\"muted label\">no samples kept</span>");
        return;
    }
    w(
        s,
        format_args!(
            "<details><summary>{} sample{}</summary>",
            samples.len(),
            if samples.len() == 1 { "" } else { "s" }
        ),
    );
    for x in samples {
        w(
            s,
            format_args!(
                "<div class=\"sample\"><div class=\"label\">{}</div><div class=\"sides\"><div>\
                 <div class=\"label\">request</div><pre>{}</pre></div><div><div class=\"label\">\
                 online · {} bytes</div><pre>{}</pre></div><div><div class=\"label\">target · {} \
                 bytes</div><pre>{}</pre></div>",
                Esc(&x.flow),
                Esc(&with_breaks(&x.request)),
                int(x.online_len),
                Esc(&with_breaks(&x.online)),
                int(x.target_len),
                Esc(&with_breaks(&x.target))
            ),
        );
        if let Some(b) = &x.baseline {
            w(
                s,
                format_args!(
                    "<div><div class=\"label\">baseline</div><pre>{}</pre></div>",
                    Esc(&with_breaks(b))
                ),
            );
        }
        s.push_str("</div></div>");
    }
    s.push_str("</details>");
}

fn by_request_section(s: &mut String, groups: &[GroupLatency]) {
    s.push_str(
        "<section id=\"by-request\"><h2>Latency by request</h2><p class=\"desc\">Slowest at the \
         target first; click a column to sort. Marked: the target's p99 is at least 1.5 times \
         production's.</p>",
    );
    if groups.is_empty() {
        s.push_str("<p class=\"muted\">No per-request latency in this report.</p></section>");
        return;
    }
    s.push_str(
        "<table class=\"sort\"><thead><tr><th>request</th><th class=\"n\">online n</th>\
         <th class=\"n\">online p50</th><th class=\"n\">online p90</th>\
         <th class=\"n\">online p99</th><th class=\"n\">target n</th>\
         <th class=\"n\">target p50</th><th class=\"n\">target p90</th>\
         <th class=\"n\">target p99</th><th class=\"n\">p99 target − online</th></tr></thead>\
         <tbody>",
    );
    for g in groups {
        let (o, t) = (&g.online, &g.target);
        let delta = t.p99_us as f64 - o.p99_us as f64;
        let worse = t.count > 0 && o.count > 0 && t.p99_us as f64 >= 1.5 * o.p99_us as f64;
        w(
            s,
            format_args!("<tr><td><code>{}</code></td>", Esc(&g.request)),
        );
        for (v, time) in [
            (o.count, false),
            (o.p50_us, true),
            (o.p90_us, true),
            (o.p99_us, true),
            (t.count, false),
            (t.p50_us, true),
            (t.p90_us, true),
            (t.p99_us, true),
        ] {
            let text = if time { us(v) } else { int(v) };
            w(
                s,
                format_args!("<td class=\"n\" data-v=\"{v}\">{text}</td>"),
            );
        }
        w(
            s,
            format_args!(
                "<td class=\"n{}\" data-v=\"{delta}\">{}</td></tr>",
                if worse { " worse" } else { "" },
                signed_us(delta)
            ),
        );
    }
    s.push_str("</tbody></table></section>");
}
