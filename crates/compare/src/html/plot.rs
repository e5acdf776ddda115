//! Hand-written SVG line plots for the HTML report: linear or log axes, grid, tick labels,
//! dashed guides and a legend.
//!
//! It draws numbers; it knows nothing of reports. Every text it is given is escaped here, and the
//! output is plain SVG markup (no scripts, no external references), inlined by the page.

use std::fmt::Write;

use super::Esc;

/// Room around the plotting area for tick labels, axis titles and the legend.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 44.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Linear,
    Log,
}

/// One axis: its range, its scale, and where its ticks go.
#[derive(Clone, Debug)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
    pub ticks: Vec<f64>,
}

impl Axis {
    /// A linear axis from `lo` to `hi` with about `n` ticks at 1-2-5 steps.
    pub fn linear(lo: f64, hi: f64, n: usize) -> Axis {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let step = nice_step((hi - lo) / n.max(1) as f64, &[1.0, 2.0, 5.0, 10.0]);
        Axis {
            lo,
            hi,
            scale: Scale::Linear,
            ticks: steps_from(lo, hi, step),
        }
    }

    /// A linear axis of seconds with ticks at round durations (5 s, 30 s, 5 min, 1 h...).
    pub fn seconds(hi: f64) -> Axis {
        const STEPS: [f64; 15] = [
            1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
            7200.0, 21600.0,
        ];
        let hi = hi.max(1.0);
        let want = hi / 8.0;
        let step = STEPS
            .iter()
            .copied()
            .find(|&s| s >= want)
            .unwrap_or_else(|| (want / 86400.0).ceil() * 86400.0);
        Axis {
            lo: 0.0,
            hi,
            scale: Scale::Linear,
            ticks: steps_from(0.0, hi, step),
        }
    }

    /// A log axis over whole decades covering `lo..=hi` (both clamped to at least 1); ticks at
    /// powers of ten, and at 2 and 5 times them when the range is short.
    pub fn log_decades(lo: f64, hi: f64) -> Axis {
        let lo = 10f64.powf(lo.max(1.0).log10().floor());
        let mut hi = 10f64.powf(hi.max(1.0).log10().ceil());
        if hi <= lo {
            hi = lo * 10.0;
        }
        let decades = (hi / lo).log10().round() as i32;
        let mut ticks = Vec::new();
        for d in 0..=decades {
            let p = lo * 10f64.powi(d);
            ticks.push(p);
            if decades <= 3 && d < decades {
                ticks.extend([2.0 * p, 5.0 * p]);
            }
        }
        Axis {
            lo,
            hi,
            scale: Scale::Log,
            ticks,
        }
    }

    /// Where `v` falls, from 0 (at `lo`) to 1 (at `hi`), clamped.
    fn frac(&self, v: f64) -> f64 {
        let (lo, hi, v) = match self.scale {
            Scale::Linear => (self.lo, self.hi, v),
            Scale::Log => (
                self.lo.log10(),
                self.hi.log10(),
                v.max(self.lo * 1e-3).log10(),
            ),
        };
        if hi > lo && v.is_finite() {
            ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// The smallest `m * 10^k` (m from `mantissas`) at least `raw`.
fn nice_step(raw: f64, mantissas: &[f64]) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let base = 10f64.powf(raw.log10().floor());
    mantissas
        .iter()
        .map(|m| m * base)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * base)
}

fn steps_from(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// One line of a plot.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    /// Data coordinates, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// A horizontal dashed line with a label at its right end (e.g. `p99`).
#[derive(Clone, Debug)]
pub struct Guide {
    pub y: f64,
    pub label: String,
}

/// A line plot; [`Plot::svg`] draws it.
pub struct Plot<'a> {
    /// What the plot shows, for screen readers.
    pub label: &'a str,
    /// Width and height of the view box, about the size it is shown at (the page scales it to
    /// its column, so this sets the size of the text).
    pub size: (f64, f64),
    pub x: Axis,
    pub y: Axis,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub x_text: &'a dyn Fn(f64) -> String,
    pub y_text: &'a dyn Fn(f64) -> String,
    pub guides: Vec<Guide>,
    pub series: Vec<Series>,
}

impl Plot<'_> {
    fn px(&self, x: f64) -> f64 {
        LEFT + self.x.frac(x) * (self.size.0 - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        self.size.1 - BOTTOM - self.y.frac(y) * (self.size.1 - TOP - BOTTOM)
    }

    /// The plot as an inline `<svg>` element.
    pub fn svg(&self) -> String {
        let mut s = String::new();
        w(
            &mut s,
            format_args!(
                "<svg class=\"plot\" viewBox=\"0 0 {} {}\" role=\"img\" \
                 aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
                self.size.0,
                self.size.1,
                Esc(self.label)
            ),
        );
        self.grid(&mut s);
        self.guides(&mut s);
        for series in &self.series {
            self.line(&mut s, series);
        }
        self.legend(&mut s);
        s.push_str("</svg>");
        s
    }

    fn grid(&self, s: &mut String) {
        let (width, height) = self.size;
        let (x0, x1) = (LEFT, width - RIGHT);
        let (y0, y1) = (TOP, height - BOTTOM);
        s.push_str("<g class=\"grid\" stroke=\"#e3e3e3\" stroke-width=\"1\">");
        for &t in &self.y.ticks {
            let y = self.py(t);
            w(
                s,
                format_args!("<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\"/>"),
            );
        }
        for &t in &self.x.ticks {
            let x = self.px(t);
            w(
                s,
                format_args!("<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{y1}\"/>"),
            );
        }
        s.push_str("</g>");
        w(
            s,
            format_args!(
                "<rect x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" fill=\"none\" \
                 stroke=\"#9a9a9a\"/>",
                x1 - x0,
                y1 - y0
            ),
        );
        s.push_str("<g class=\"ticks\" font-size=\"12\" fill=\"#555\">");
        for &t in &self.y.ticks {
            let y = self.py(t) + 4.0;
            let label = (self.y_text)(t);
            w(
                s,
                format_args!(
                    "<text x=\"{}\" y=\"{y:.1}\" text-anchor=\"end\">{}</text>",
                    x0 - 6.0,
                    Esc(&label)
                ),
            );
        }
        for &t in &self.x.ticks {
            let x = self.px(t);
            let label = (self.x_text)(t);
            w(
                s,
                format_args!(
                    "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                    y1 + 16.0,
                    Esc(&label)
                ),
            );
        }
        w(
            s,
            format_args!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
                 <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
                (x0 + x1) / 2.0,
                height - 6.0,
                Esc(self.x_title),
                (y0 + y1) / 2.0,
                Esc(self.y_title)
            ),
        );
        s.push_str("</g>");
    }

    fn guides(&self, s: &mut String) {
        for g in &self.guides {
            let y = self.py(g.y);
            w(
                s,
                format_args!(
                    "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#888\" \
                     stroke-dasharray=\"5 4\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" \
                     fill=\"#555\">{}</text>",
                    self.size.0 - RIGHT,
                    self.size.0 - RIGHT + 4.0,
                    y + 4.0,
                    Esc(&g.label)
                ),
            );
        }
    }

    fn line(&self, s: &mut String, series: &Series) {
        let mut points = String::new();
        for &(x, y) in &series.points {
            w(
                &mut points,
                format_args!("{:.1},{:.1} ", self.px(x), self.py(y)),
            );
        }
        w(
            s,
            format_args!(
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"3\" \
                 stroke-linejoin=\"round\" points=\"{}\"><title>{}</title></polyline>",
                series.colour,
                points.trim_end(),
                Esc(&series.name)
            ),
        );
        if let [(x, y)] = series.points[..] {
            w(
                s,
                format_args!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"/>",
                    self.px(x),
                    self.py(y),
                    series.colour
                ),
            );
        }
    }

    fn legend(&self, s: &mut String) {
        let mut x = LEFT;
        s.push_str("<g class=\"legend\" font-size=\"13\" fill=\"#222\">");
        for series in &self.series {
            w(
                s,
                format_args!(
                    "<line x1=\"{x}\" y1=\"14\" x2=\"{}\" y2=\"14\" stroke=\"{}\" \
                     stroke-width=\"3\"/><text x=\"{}\" y=\"18\">{}</text>",
                    x + 16.0,
                    series.colour,
                    x + 22.0,
                    Esc(&series.name)
                ),
            );
            x += 40.0 + 7.5 * series.name.chars().count() as f64;
        }
        s.push_str("</g>");
    }
}

/// Appends formatted text; writing into a `String` cannot fail.
pub(super) fn w(s: &mut String, args: std::fmt::Arguments<'_>) {
    let _ = s.write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_fall_on_round_steps_within_the_range() {
        assert_eq!(
            Axis::linear(0.0, 100.0, 5).ticks,
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(Axis::linear(0.0, 7.0, 4).ticks, [0.0, 2.0, 4.0, 6.0]);
        // An empty range still gets an axis.
        assert_eq!(Axis::linear(0.0, 0.0, 4).ticks.first(), Some(&0.0));
    }

    #[test]
    fn time_ticks_are_round_durations() {
        assert_eq!(
            Axis::seconds(60.0).ticks,
            [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        );
        assert_eq!(Axis::seconds(3600.0).ticks.get(1), Some(&600.0));
    }

    #[test]
    fn log_axis_covers_whole_decades() {
        let a = Axis::log_decades(150.0, 20_000.0);
        assert_eq!((a.lo, a.hi), (100.0, 100_000.0));
        assert_eq!(a.ticks[..4], [100.0, 200.0, 500.0, 1000.0]);
        assert!((a.frac(1000.0) - 1.0 / 3.0).abs() < 1e-9);
        // Zero (a latency of 0 µs) is clamped, not NaN.
        assert_eq!(Axis::log_decades(0.0, 0.0).frac(0.0), 0.0);
    }
}
