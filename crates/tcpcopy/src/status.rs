//! tcpcopy's live status line: on a terminal, one line at the bottom of stderr redrawn every
//! second (indicatif) with requests per second online and at the target, the share lost, the
//! differences found and latency percentiles online and at the target; a replay adds its
//! progress through the file. When stderr is not a terminal it shows nothing: the periodic log
//! lines say it all.
//!
//! Like the metrics endpoint it reads plain snapshots, taken by the driver's function on the
//! status thread ([`Status::start`]); rates and the latency window are computed here from
//! consecutive snapshots. Nothing here runs in the packet path.
//!
//! Log lines go to stderr too. So that they never land in the middle of the status line, the
//! log writes through [`log_writer`]: while a status line is shown, each log line is written with
//! the line cleared first and redrawn after (indicatif's `suspend`); otherwise straight to
//! stderr. The status knows nothing of the logger otherwise; anything else that writes to
//! stderr while the line is shown goes through [`suspend`].

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::{bucket_counts, lost_by_cause, Snapshot};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_secs(1);
/// Latency percentiles are over the answers of the last this many ticks.
const WINDOW: usize = 5;

/// What the status line shows, taken by the driver once per tick.
#[derive(Clone, Debug, Default)]
pub struct StatusSnapshot {
    /// The counters, as for the metrics endpoint.
    pub counters: Snapshot,
    /// A replay's progress: bytes of the file read, and its size.
    pub progress: Option<(u64, u64)>,
}

/// Where the status thread gets its snapshots.
pub type StatusSource = Arc<dyn Fn() -> StatusSnapshot + Send + Sync>;

/// The status line shown now, for [`log_writer`] and [`suspend`].
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The live status line; cleared, and its thread stopped, when dropped.
pub struct Status {
    running: Option<Running>,
}

struct Running {
    bar: ProgressBar,
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Status {
    /// Shows the status line when stderr is a terminal (else does nothing), with a progress bar
    /// for a replay.
    pub fn start(is_replay: bool, source: StatusSource) -> Status {
        if !std::io::stderr().is_terminal() {
            return Status { running: None };
        }
        Status::start_on(ProgressDrawTarget::stderr(), TICK, is_replay, source)
    }

    fn start_on(
        target: ProgressDrawTarget,
        tick: Duration,
        is_replay: bool,
        source: StatusSource,
    ) -> Status {
        let template = if is_replay {
            "[{bar:16}] {percent:>3}% {bytes}/{total_bytes} · {wide_msg}"
        } else {
            "{wide_msg}"
        };
        // The templates are constants that parse: a failure is a bug caught by the tests.
        let style = ProgressStyle::with_template(template)
            .expect("status template parses")
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(None, target).with_style(style);
        bar.set_message("starting");
        let (stop, stopped) = mpsc::channel();
        let shown = bar.clone();
        let spawned = thread::Builder::new().name("status".into()).spawn(move || {
            crate::plumbing::unprivileged_thread();
            run(&shown, &stopped, tick, &source)
        });
        let Ok(thread) = spawned else {
            // No thread, no status line: the log lines remain.
            bar.finish_and_clear();
            return Status { running: None };
        };
        *lock_shown() = Some(bar.clone());
        Status {
            running: Some(Running { bar, stop, thread }),
        }
    }

    /// Whether the line is shown (stderr is a terminal).
    pub fn is_shown(&self) -> bool {
        self.running.is_some()
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.thread.join();
            *lock_shown() = None;
            r.bar.finish_and_clear();
        }
    }
}

fn lock_shown() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    // Only ever replaced whole: a poisoned lock still holds a valid value.
    SHOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with the status line (if any) cleared, redrawing it after: for writing to stderr.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = lock_shown().clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// The log's writer (for `tracing_subscriber::fmt().with_writer(status::log_writer)`): stderr,
/// around the status line.
pub fn log_writer() -> StderrAboveStatus {
    StderrAboveStatus
}

/// Writes each buffer (the log formats a whole line and writes it at once) to stderr with the
/// status line cleared.
pub struct StderrAboveStatus;

impl Write for StderrAboveStatus {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The status thread: a snapshot and a redraw per tick, until told to stop.
fn run(bar: &ProgressBar, stopped: &mpsc::Receiver<()>, tick: Duration, source: &StatusSource) {
    let mut history = History::default();
    loop {
        match stopped.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let snap = source();
        if let Some((read, size)) = snap.progress {
            bar.set_length(size);
            bar.set_position(read);
        }
        history.push(Instant::now(), snap.counters);
        bar.set_message(history.line());
    }
}

/// The last snapshots, newest last: at most [`WINDOW`] + 1.
#[derive(Default)]
struct History {
    snaps: VecDeque<(Instant, Snapshot)>,
}

impl History {
    fn push(&mut self, at: Instant, s: Snapshot) {
        if self.snaps.len() > WINDOW {
            self.snaps.pop_front();
        }
        self.snaps.push_back((at, s));
    }

    /// The status text: rates over the last tick, loss and differences so far, latency over the
    /// window.
    fn line(&self) -> String {
        let Some((now_at, now)) = self.snaps.back() else {
            return String::new();
        };
        let mut parts = Vec::new();
        let stats = now.stats.unwrap_or_default();
        if let Some((before_at, before)) = self.snaps.iter().rev().nth(1) {
            let secs = now_at.duration_since(*before_at).as_secs_f64().max(1e-3);
            let old = before.stats.unwrap_or_default();
            let rate = |n: u64, o: u64| count(n.saturating_sub(o) as f64 / secs);
            parts.push(format!(
                "req/s online {} target {}",
                rate(stats.requests_online, old.requests_online),
                rate(stats.requests_target, old.requests_target)
            ));
        }
        if now.stats.is_some() {
            let lost: u64 = lost_by_cause(&stats).iter().map(|c| c.1).sum();
            parts.push(match stats.requests_online {
                0 => format!("lost {lost}"),
                online => format!("lost {lost} ({:.2}%)", 100.0 * lost as f64 / online as f64),
            });
        }
        if let (Some(protocol), Some(st)) = (now.protocol, &now.stats) {
            // A protocol's logins (`--protocol`): how many sessions got in, how many not.
            let l = &st.logins;
            parts.push(format!(
                "{protocol} logins {} ok, {} not",
                l.logged_in + l.joined_logged_in,
                l.failed()
            ));
        }
        if let Some(st) = &now.stream {
            // Stream mode says so, with its connections.
            parts.push(format!(
                "stream: {} connections, {} failed",
                st.opened,
                st.failed()
            ));
        }
        if let Some(c) = &now.compare {
            let noise = if c.noise > 0 {
                format!(" (+{} noise)", c.noise)
            } else {
                String::new()
            };
            parts.push(format!("diffs {}{noise} of {}", c.different, c.compared));
        }
        let (first, last) = (&self.snaps[0].1, now);
        let window = |f: fn(&Snapshot) -> Option<&compare::report::Dist>| {
            f(last).map(|d| percentiles(&window_counts(f(first), d)))
        };
        let online = window(|s| s.latency_online.as_ref());
        let target = window(|s| s.latency_target.as_ref());
        if online.is_some() || target.is_some() {
            let show = |p: Option<Option<(u64, u64)>>| match p.flatten() {
                Some((p50, p99)) => format!("{}/{}", micros(p50), micros(p99)),
                None => "-".into(),
            };
            parts.push(format!(
                "p50/p99 online {} target {}",
                show(online),
                show(target)
            ));
        }
        parts.join(" · ")
    }
}

/// Per-bucket counts of the samples `now` has beyond `before` (both cumulative over the run).
fn window_counts(
    before: Option<&compare::report::Dist>,
    now: &compare::report::Dist,
) -> Vec<(u64, u64)> {
    let old = before.map(bucket_counts).unwrap_or_default();
    bucket_counts(now)
        .into_iter()
        .map(|(le, n)| {
            let o = old.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
            (le, n.saturating_sub(o))
        })
        .collect()
}

/// The 50th and 99th percentiles (the upper bounds of their buckets), if any samples.
fn percentiles(counts: &[(u64, u64)]) -> Option<(u64, u64)> {
    let total: u64 = counts.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(le, n) in counts {
            seen += n;
            if seen >= rank {
                return le;
            }
        }
        counts.last().map_or(0, |b| b.0)
    };
    Some((at(0.50), at(0.99)))
}

/// `1234` as `1234`, `12345` as `12.3k`, `1234567` as `1.23M`.
fn count(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// A latency: `850µs`, `1.2ms`, `2.50s`.
fn micros(us: u64) -> String {
    match us {
        us if us >= 1_000_000 => format!("{:.2}s", us as f64 / 1e6),
        us if us >= 1_000 => format!("{:.1}ms", us as f64 / 1e3),
        us => format!("{us}µs"),
    }
}

#[cfg(test)]
mod tests;
