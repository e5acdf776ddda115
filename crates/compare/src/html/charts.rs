//! The plots' data: requests per second over time, and the latency distributions (cumulative and
//! histogram, on a log axis) with their percentile table.

use super::plot::{w, Axis, Guide, Plot, Series};
use super::text::{clock, compact, int, signed_us, us};
use super::{BASELINE_COLOUR, ONLINE_COLOUR, TARGET_COLOUR};
use crate::report::{Dist, Report, Tick};

/// Timelines longer than this many points are drawn in coarser steps.
const MAX_TIMELINE_POINTS: u64 = 1800;

/// Requests per second online and answered at the target; `None` without a timeline.
pub(super) fn timeline_plot(ticks: &[Tick], started: f64) -> Option<String> {
    let first = ticks.iter().map(|t| t.unix_s).min()?;
    let last = ticks.iter().map(|t| t.unix_s).max()?;
    let span = last - first + 1;
    let step = span.div_ceil(MAX_TIMELINE_POINTS);
    let n = span.div_ceil(step) as usize;
    let (mut online, mut target) = (vec![0u64; n], vec![0u64; n]);
    for t in ticks {
        let i = ((t.unix_s - first) / step) as usize;
        online[i] += t.online;
        target[i] += t.target;
    }
    // Seconds since the run started (or since the first tick when the start is unknown).
    let x0 = if started > 0.0 && started <= first as f64 {
        first - started as u64
    } else {
        0
    };
    let rate = |v: &[u64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, &c)| ((x0 + i as u64 * step) as f64, c as f64 / step as f64))
            .collect()
    };
    let (online, target) = (rate(&online), rate(&target));
    let top = online
        .iter()
        .chain(&target)
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let right = online.last().map_or(1.0, |p| p.0);
    let y_text = |v: f64| compact(v);
    let x_text = |v: f64| clock(v);
    let plot = Plot {
        label: "Requests per second over time, online and at the target",
        size: (1100.0, 300.0),
        x: Axis::seconds(right),
        y: Axis::linear(0.0, top * 1.08, 5),
        x_title: "time since the start",
        y_title: "requests/s",
        x_text: &x_text,
        y_text: &y_text,
        guides: Vec::new(),
        series: vec![
            Series {
                name: "online requests".into(),
                colour: ONLINE_COLOUR,
                points: online,
            },
            Series {
                name: "target answers".into(),
                colour: TARGET_COLOUR,
                points: target,
            },
        ],
    };
    Some(plot.svg())
}

/// The latency distributions worth drawing: (name, colour, distribution).
fn latency_sides(r: &Report) -> Vec<(&'static str, &'static str, &Dist)> {
    let l = &r.latency;
    let mut sides = vec![
        ("online", ONLINE_COLOUR, &l.online),
        ("target", TARGET_COLOUR, &l.target),
    ];
    if let Some(b) = &l.baseline {
        sides.push(("baseline", BASELINE_COLOUR, b));
    }
    sides.retain(|(_, _, d)| d.buckets.iter().any(|b| b.count > 0));
    sides
}

pub(super) fn latency_section(s: &mut String, r: &Report) {
    s.push_str(
        "<section id=\"latency\"><h2>Latency</h2><p class=\"desc\">Online: the request's last \
         byte to the answer's first byte, as captured online. Target: the request's last byte as \
         sent to the target's first answer byte, as intercept captured it (its clock's offset \
         corrected).</p>",
    );
    let sides = latency_sides(r);
    if sides.is_empty() {
        s.push_str("<p class=\"muted\">No latency was measured.</p>");
    } else {
        let ratio = bucket_ratio(&sides);
        let cdfs: Vec<Series> = sides
            .iter()
            .map(|&(name, colour, d)| Series {
                name: name.to_string(),
                colour,
                points: cdf_points(d, ratio),
            })
            .collect();
        let lo = cdfs
            .iter()
            .map(|c| c.points[0].0)
            .fold(f64::INFINITY, f64::min);
        let hi = cdfs
            .iter()
            .filter_map(|c| c.points.last())
            .map(|p| p.0)
            .fold(1.0, f64::max);
        let axis = Axis::log_decades(lo, hi);
        let histograms = cdfs.iter().map(|c| histogram(c, &axis, ratio)).collect();
        s.push_str("<div class=\"grid2\"><div><h3>Cumulative distribution</h3>");
        s.push_str(&cdf_plot(cdfs, axis.clone()));
        s.push_str("</div><div><h3>Histogram</h3>");
        s.push_str(&histogram_plot(histograms, axis));
        s.push_str("</div></div>");
    }
    percentile_table(s, r);
    s.push_str("</section>");
}

/// The finest step between the report's adjacent buckets (as a ratio of their bounds): the
/// width assumed for every bucket.
fn bucket_ratio(sides: &[(&str, &'static str, &Dist)]) -> f64 {
    sides
        .iter()
        .flat_map(|d| d.2.buckets.windows(2))
        .filter(|p| p[0].le_us > 0 && p[1].le_us > p[0].le_us)
        .map(|p| p[1].le_us as f64 / p[0].le_us as f64)
        .fold(10f64.powf(0.1), f64::min)
}

/// A distribution's cumulative share (%) as points to join on a log axis: each bucket's samples
/// spread over its width (its bound divided by `ratio`), flat between buckets that are not
/// adjacent.
fn cdf_points(d: &Dist, ratio: f64) -> Vec<(f64, f64)> {
    let total: u64 = d.buckets.iter().map(|b| b.count).sum();
    let share = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    let (mut points, mut seen, mut prev): (Vec<(f64, f64)>, u64, f64) = (Vec::new(), 0, 0.0);
    for b in &d.buckets {
        let le = (b.le_us as f64).max(1.0);
        let lower = (le / ratio).max(prev);
        if points.last().is_none_or(|p| p.0 < lower) {
            points.push((lower, share(seen)));
        }
        seen += b.count;
        points.push((le, share(seen)));
        prev = le;
    }
    points
}

/// The cumulative share at `x`, joining `points` linearly on a log axis.
fn cdf_at(points: &[(f64, f64)], x: f64) -> f64 {
    let Some(i) = points.iter().rposition(|p| p.0 <= x) else {
        return 0.0;
    };
    match points.get(i + 1) {
        None => points[i].1,
        Some(&(x1, f1)) => {
            let (x0, f0) = points[i];
            f0 + (f1 - f0) * (x / x0).log10() / (x1 / x0).log10()
        }
    }
}

/// A step line of the share of requests per bin (as fine as the buckets allow, at most 10 bins
/// a decade), from the first bin holding any to the last.
fn histogram(cdf: &Series, x: &Axis, ratio: f64) -> Series {
    let per_decade = (1.0 / ratio.log10()).floor().clamp(2.0, 10.0);
    let bins = ((x.hi / x.lo).log10() * per_decade).round().max(1.0) as usize;
    let edge = |i: usize| x.lo * 10f64.powf(i as f64 / per_decade);
    let share: Vec<f64> = (0..bins)
        .map(|i| cdf_at(&cdf.points, edge(i + 1)) - cdf_at(&cdf.points, edge(i)))
        .collect();
    let first = share.iter().position(|&v| v > 1e-9).unwrap_or(0);
    let last = share.iter().rposition(|&v| v > 1e-9).unwrap_or(0);
    let mut points = vec![(edge(first), 0.0)];
    for (i, &v) in share.iter().enumerate().take(last + 1).skip(first) {
        points.extend([(edge(i), v), (edge(i + 1), v)]);
    }
    points.push((edge(last + 1), 0.0));
    Series {
        name: cdf.name.clone(),
        colour: cdf.colour,
        points,
    }
}

fn cdf_plot(series: Vec<Series>, x: Axis) -> String {
    let x_text = |v: f64| us(v as u64);
    let y_text = |v: f64| format!("{v:.0} %");
    Plot {
        label: "Cumulative latency distribution, online and at the target",
        size: (600.0, 330.0),
        x,
        y: Axis::linear(0.0, 100.0, 5),
        x_title: "latency (log scale)",
        y_title: "requests at most this slow",
        x_text: &x_text,
        y_text: &y_text,
        guides: [50.0, 90.0, 99.0]
            .iter()
            .map(|&y| Guide {
                y,
                label: format!("p{y:.0}"),
            })
            .collect(),
        series,
    }
    .svg()
}

fn histogram_plot(series: Vec<Series>, x: Axis) -> String {
    let top = series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let x_text = |v: f64| us(v as u64);
    let y_text = |v: f64| format!("{v:.0} %");
    Plot {
        label: "Latency histogram, online and at the target",
        size: (600.0, 330.0),
        x,
        y: Axis::linear(0.0, (top * 1.1).max(1.0), 5),
        x_title: "latency (log scale)",
        y_title: "share of requests",
        x_text: &x_text,
        y_text: &y_text,
        guides: Vec::new(),
        series,
    }
    .svg()
}

fn percentile_table(s: &mut String, r: &Report) {
    let l = &r.latency;
    s.push_str(
        "<h3>Percentiles</h3><table><thead><tr><th></th><th class=\"n\">requests</th>\
         <th class=\"n\">mean</th><th class=\"n\">p50</th><th class=\"n\">p90</th>\
         <th class=\"n\">p99</th><th class=\"n\">max</th></tr></thead><tbody>",
    );
    let mut rows = vec![("online", &l.online), ("target", &l.target)];
    if let Some(b) = &l.baseline {
        rows.push(("baseline", b));
    }
    for (name, d) in rows {
        w(
            s,
            format_args!(
                "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                int(d.count),
                us(d.mean_us.max(0.0).round() as u64),
                us(d.p50_us),
                us(d.p90_us),
                us(d.p99_us),
                us(d.max_us)
            ),
        );
    }
    let (o, t) = (&l.online, &l.target);
    w(
        s,
        format_args!(
            "<tr class=\"total\"><td>target − online</td><td></td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr></tbody></table>",
            signed_us(t.mean_us - o.mean_us),
            signed_us(t.p50_us as f64 - o.p50_us as f64),
            signed_us(t.p90_us as f64 - o.p90_us as f64),
            signed_us(t.p99_us as f64 - o.p99_us as f64),
            signed_us(t.max_us as f64 - o.max_us as f64)
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Bucket;

    fn dist(buckets: &[(u64, u64)]) -> Dist {
        Dist {
            count: buckets.iter().map(|b| b.1).sum(),
            buckets: buckets
                .iter()
                .map(|&(le_us, count)| Bucket { le_us, count })
                .collect(),
            ..Dist::default()
        }
    }

    #[test]
    fn cdf_spreads_each_bucket_over_its_width_and_stays_flat_between_buckets() {
        // Buckets of ratio 2; nothing between 200 µs and 800 µs.
        let points = cdf_points(&dist(&[(100, 1), (200, 1), (800, 2)]), 2.0);
        assert_eq!(
            points,
            [
                (50.0, 0.0),
                (100.0, 25.0),
                (200.0, 50.0),
                (400.0, 50.0),
                (800.0, 100.0)
            ]
        );
        assert_eq!(cdf_at(&points, 10.0), 0.0);
        assert!((cdf_at(&points, 300.0) - 50.0).abs() < 1e-9);
        assert!((cdf_at(&points, 565.685) - 75.0).abs() < 1e-3);
        assert_eq!(cdf_at(&points, 5000.0), 100.0);
    }

    #[test]
    fn histogram_shares_add_up_to_all_requests() {
        let d = dist(&[(120, 5), (150, 20), (190, 40), (240, 30), (5000, 5)]);
        let ratio = 1.25;
        let cdf = Series {
            name: "online".into(),
            colour: ONLINE_COLOUR,
            points: cdf_points(&d, ratio),
        };
        let axis = Axis::log_decades(cdf.points[0].0, 5000.0);
        let h = histogram(&cdf, &axis, ratio);
        // Every bin is drawn as two points at its share: the shares sum to 100 %.
        let total: f64 = h.points[1..h.points.len() - 1]
            .iter()
            .step_by(2)
            .map(|p| p.1)
            .sum();
        assert!((total - 100.0).abs() < 1e-6, "{total}");
        assert_eq!(h.points.first().map(|p| p.1), Some(0.0));
    }

    #[test]
    fn a_timeline_with_a_gap_drops_to_zero_and_long_runs_are_coarsened() {
        let ticks = [
            Tick {
                unix_s: 100,
                online: 10,
                target: 9,
            },
            Tick {
                unix_s: 103,
                online: 20,
                target: 20,
            },
        ];
        let svg = timeline_plot(&ticks, 99.5).expect("a plot");
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Seconds 100..=103, the two missing ones at zero (the bottom of the plot).
        let online = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<&str> = online
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap())
            .collect();
        assert_eq!(ys.len(), 4);
        assert_eq!(ys[1], ys[2]);
        assert!(ys[1].parse::<f64>().unwrap() > ys[0].parse::<f64>().unwrap());
        let long: Vec<Tick> = (0..10_000)
            .map(|i| Tick {
                unix_s: 1_000 + i,
                online: 5,
                target: 5,
            })
            .collect();
        let svg = timeline_plot(&long, 0.0).expect("a plot");
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(points.split(' ').count() <= MAX_TIMELINE_POINTS as usize);
        assert!(timeline_plot(&[], 0.0).is_none());
    }
}
