//! The C TCPCopy comparison (`tcpcopy-bench --c-tool DIR`): after each of our rows, the same row
//! with the C tool's `tcpcopy` and `intercept` (built by the user; not part of this project) in
//! our programs' places, and at the end a table of CPU per request, ours against theirs.
//!
//! It only starts, watches and stops the C programs with the options their documentation gives;
//! the rows themselves are measured by the harness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab::scenario::{Scenario, SERVICE_PORT};

use crate::harness::{bench_row, final_line, median, print_row, Load, Row, Watched};

/// The C TCPCopy (`tcpcopy` 1.x and `intercept` 1.x from session-replay-tools, built by the user;
/// not part of this project), run in our programs' place for a row: the same lab, load and
/// accounting, so both are measured side by side rather than against figures from elsewhere.
pub(crate) struct CTool {
    pub(crate) dir: PathBuf,
    tcpcopy: Option<lab::Child>,
    intercept: Option<lab::Child>,
    /// Our tcpcopy's final counters of each run, which ended when the C tool took over.
    pub(crate) our_finals: Vec<(String, String)>,
}

/// The C tool's two programs, by their binaries' names.
const C_PROGRAMS: [&str; 2] = ["tcpcopy", "intercept"];

impl CTool {
    pub(crate) fn new(dir: &std::path::Path) -> anyhow::Result<CTool> {
        // Absolute, so that no program of that name is looked up on PATH instead.
        let dir = &dir
            .canonicalize()
            .with_context(|| format!("--c-tool {}", dir.display()))?;
        for name in C_PROGRAMS {
            anyhow::ensure!(
                dir.join(name).is_file(),
                "--c-tool {}: no {name} binary there",
                dir.display()
            );
        }
        Ok(CTool {
            dir: dir.to_path_buf(),
            tcpcopy: None,
            intercept: None,
            our_finals: Vec::new(),
        })
    }

    /// What the two binaries say of their versions (`-v`), on one line.
    pub(crate) fn versions(&self) -> String {
        C_PROGRAMS
            .iter()
            .map(|name| {
                let out = std::process::Command::new(self.dir.join(name))
                    .arg("-v")
                    .output();
                let text = out
                    .map(|o| [o.stdout, o.stderr].concat())
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                let first = text.lines().map(str::trim).find(|l| !l.is_empty());
                format!("{name}: {}", first.unwrap_or("no version printed"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stops our programs and starts the C ones in their places, with the options their
    /// documentation gives for this setup: intercept on the assistant capturing the service's
    /// answers, tcpcopy on the online host with the same rule, intercept and fake client range.
    fn swap_in(&mut self, sc: &mut Scenario, row: &str) -> anyhow::Result<Watched> {
        let ours = sc.stop_tcpcopy()?;
        self.our_finals
            .push((row.to_string(), final_line(&ours).to_string()));
        sc.stop_intercept()?;
        let port = SERVICE_PORT;
        // Its default ("advanced") build captures on a packet socket what comes from `-o`.
        let target = format!("{}:{port}", lab::Lab::TARGET_IP);
        let mut icept = self.spawn(sc, sc.lab.ns_assistant(), "intercept", &["-o", &target])?;
        let listen = SocketAddr::new(lab::Lab::ASSISTANT_IP.into(), protocol::DEFAULT_PORT);
        icept.wait_serving(sc.lab.ns_assistant(), Duration::from_secs(10), || {
            std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
        })?;
        self.intercept = Some(icept);
        // "198.19.0.x": the C tool's way of naming the fake client /24.
        let fakes = lab::Lab::FAKE_CLIENT_NET
            .strip_suffix("0/24")
            .context("the fake client range is not a /24 ending in .0")?
            .to_string()
            + "x";
        let rule = format!("{port}-{target}");
        let assistant = lab::Lab::ASSISTANT_IP.to_string();
        let args = ["-x", &rule, "-s", &assistant, "-c", &fakes];
        let mut tc = self.spawn(sc, sc.lab.ns_online(), "tcpcopy", &args)?;
        // Connected once intercept holds its default two connections from tcpcopy.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ss = sc.lab.sh(
                sc.lab.ns_assistant(),
                &[
                    "ss",
                    "-Htn",
                    "state",
                    "established",
                    &format!("( sport = :{} )", protocol::DEFAULT_PORT),
                ],
            )?;
            if ss.lines().filter(|l| !l.trim().is_empty()).count() >= 2 {
                break;
            }
            if !tc.is_running() || Instant::now() >= deadline {
                self.tcpcopy = Some(tc);
                self.show_logs(sc);
                let died = self.died();
                anyhow::bail!(
                    "the C tcpcopy did not connect to its intercept ({}; their logs above)",
                    if died.is_empty() {
                        "both still running after 15 s".to_string()
                    } else {
                        format!("{} exited", died.join(" and "))
                    }
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        let watched = Watched {
            tcpcopy: Some(tc.pid()),
            intercept: self.intercept.as_ref().map(|c| c.pid()),
        };
        self.tcpcopy = Some(tc);
        Ok(watched)
    }

    /// Where the C program `name` logs (`-l`, `log`) and prints (`out`).
    fn log_path(sc: &Scenario, name: &str, kind: &str) -> PathBuf {
        sc.scratch.path().join(format!("c-{name}.{kind}"))
    }

    /// Starts the C program `name` in `ns` with `args` and its log in the scratch directory.
    fn spawn(
        &self,
        sc: &Scenario,
        ns: &str,
        name: &str,
        args: &[&str],
    ) -> anyhow::Result<lab::Child> {
        let log = Self::log_path(sc, name, "log").display().to_string();
        let args: Vec<String> = args
            .iter()
            .copied()
            .chain(["-l", &log])
            .map(String::from)
            .collect();
        sc.lab.spawn(
            ns,
            &self.dir.join(name),
            &args,
            &Self::log_path(sc, name, "out"),
        )
    }

    /// Runs `load` with the C programs in place of ours (see [`CTool::swap_in`]; the caller
    /// swaps ours back). No row when one of them died during it: its CPU can no longer be read.
    pub(crate) fn run_row(
        &mut self,
        sc: &mut Scenario,
        load: &Load,
        tag: &str,
        seconds: u64,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<Option<Row>> {
        let theirs = self.swap_in(sc, load.name)?;
        let mut row = bench_row(sc, load, &format!("c{tag}"), seconds, theirs, stop)?;
        row.name = format!("C {}", load.name);
        let died = self.died();
        if row.target == 0 || !died.is_empty() {
            self.show_logs(sc);
        }
        if !died.is_empty() {
            println!(
                "{:<20} the C {} exited during the row: no figures",
                row.name,
                died.join(" and ")
            );
            return Ok(None);
        }
        print_row(&row, false);
        Ok(Some(row))
    }

    /// Which of the C programs started have exited since.
    fn died(&mut self) -> Vec<&'static str> {
        let mut gone = Vec::new();
        for (name, child) in [
            ("tcpcopy", &mut self.tcpcopy),
            ("intercept", &mut self.intercept),
        ] {
            if child.as_mut().is_some_and(|c| !c.is_running()) {
                gone.push(name);
            }
        }
        gone
    }

    /// The ends of the C programs' logs, for a row in which nothing reached the target.
    fn show_logs(&self, sc: &Scenario) {
        for (name, kind) in C_PROGRAMS
            .iter()
            .flat_map(|n| ["log", "out"].map(|k| (n, k)))
        {
            let text = std::fs::read_to_string(Self::log_path(sc, name, kind)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            println!("--- c-{name}.{kind}, {} lines, the last ones:", lines.len());
            for l in &lines[lines.len().saturating_sub(12)..] {
                println!("    {l}");
            }
        }
    }

    /// Stops the C programs and starts ours again.
    pub(crate) fn swap_out(&mut self, sc: &mut Scenario) -> anyhow::Result<Watched> {
        for child in [self.tcpcopy.take(), self.intercept.take()]
            .iter_mut()
            .flatten()
        {
            // Its exit status is its own business; it must be gone before ours start.
            let _ = child.stop();
        }
        sc.start_intercept()?;
        sc.start_tcpcopy()?;
        sc.wait_connected(Duration::from_secs(15))?;
        Watched::ours(sc)
    }
}

/// One row of ours against the C tool: medians of CPU microseconds per request.
#[derive(Debug, PartialEq)]
struct Comparison {
    name: String,
    tcpcopy: (f64, f64),
    intercept: (f64, f64),
    /// Percent of the C tool's online requests its target never got.
    c_lost_pct: f64,
}

/// Pairs each C row ("C name") with our rows of the same name, in the order the rows ran.
fn compare(ours: &[Row], theirs: &[Row]) -> Vec<Comparison> {
    let mut names: Vec<&str> = Vec::new();
    for r in theirs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    names
        .into_iter()
        .map(|c| {
            let name = c.strip_prefix("C ").unwrap_or(c);
            let a: Vec<&Row> = ours.iter().filter(|r| r.name == name).collect();
            let b: Vec<&Row> = theirs.iter().filter(|r| r.name == c).collect();
            let med = |rows: &[&Row], cpu: fn(&Row) -> f64| {
                median(rows.iter().map(|r| r.per_request_us(cpu(r))))
            };
            let lost: usize = b.iter().map(|r| r.lost).sum();
            let online: usize = b.iter().map(|r| r.online).sum();
            Comparison {
                name: name.to_string(),
                tcpcopy: (med(&a, |r| r.tcpcopy_cpu_s), med(&b, |r| r.tcpcopy_cpu_s)),
                intercept: (
                    med(&a, |r| r.intercept_cpu_s),
                    med(&b, |r| r.intercept_cpu_s),
                ),
                c_lost_pct: lost as f64 * 100.0 / online.max(1) as f64,
            }
        })
        .collect()
}

/// Ours against the C tool, row by row: medians of CPU per request and their ratio.
pub(crate) fn print_comparison(ours: &[Row], theirs: &[Row]) {
    if theirs.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:>16} {:>16} {:>7} {:>16} {:>16} {:>7} {:>10}",
        "same run, medians",
        "tcpcopy us/req",
        "C tcpcopy",
        "ratio",
        "intercept us/req",
        "C intercept",
        "ratio",
        "C lost"
    );
    for c in compare(ours, theirs) {
        let ((t0, t1), (i0, i1)) = (c.tcpcopy, c.intercept);
        // A C row that delivered nothing has no figure per request.
        let ratio = |ours: f64, theirs: f64| {
            if c.c_lost_pct >= 100.0 {
                "n/a".to_string()
            } else {
                format!("{:.2}", ours / theirs.max(1e-9))
            }
        };
        println!(
            "{:<20} {t0:>16.2} {t1:>16.2} {:>7} {i0:>16.2} {i1:>16.2} {:>7} {:>9.1}%",
            c.name,
            ratio(t0, t1),
            ratio(i0, i1),
            c.c_lost_pct
        );
    }
    println!("ratio: ours / the C tool's CPU per request the target received (where the C tool lost requests, per request it delivered).");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_c_row_is_compared_with_our_rows_of_its_name_in_run_order() {
        let row = |name: &str, target: usize, tcpcopy_cpu_s: f64, lost: usize| Row {
            name: name.into(),
            online: target + lost,
            target,
            lost,
            tcpcopy_cpu_s,
            intercept_cpu_s: tcpcopy_cpu_s / 10.0,
            ..Row::default()
        };
        let ours = [
            row("short", 1000, 0.020, 0),
            row("keep", 1000, 0.005, 0),
            row("keep", 1000, 0.007, 0),
            row("keep", 1000, 0.006, 0),
        ];
        let theirs = [
            row("C short", 900, 0.045, 100),
            row("C keep", 1000, 0.016, 0),
            row("C keep", 1000, 0.017, 0),
        ];
        let c = compare(&ours, &theirs);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "short");
        assert!((c[0].tcpcopy.0 - 20.0).abs() < 1e-9);
        assert!(
            (c[0].tcpcopy.1 - 50.0).abs() < 1e-9,
            "per delivered request"
        );
        assert!((c[0].c_lost_pct - 10.0).abs() < 1e-9);
        assert_eq!(c[1].name, "keep");
        assert!((c[1].tcpcopy.0 - 6.0).abs() < 1e-9, "median of ours");
        assert!((c[1].tcpcopy.1 - 17.0).abs() < 1e-9, "upper middle of two");
        assert!((c[1].intercept.0 - 0.6).abs() < 1e-9);
        assert_eq!(c[1].c_lost_pct, 0.0);
    }
}
