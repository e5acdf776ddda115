//! The load harness: wrk against nginx in the lab, our `tcpcopy` on the online host and
//! `intercept` on the assistant. Each row is one load; it reports the requests online and at the
//! target (lost, duplicated), the CPU and memory of both programs, and at the end the online
//! latency with and without tcpcopy. A capture in the client namespace checks all along that no
//! target packet reached the client.
//!
//! It runs the programs as processes (see `lab::scenario`) and reads their logs and `/proc`; it
//! owns no replication logic.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab::scenario::{proc_usage, programs_dir, Mode, Scenario, ScenarioSpec, Servers};
use tcpcopy::cli::SendLayer;

use crate::ctool::{print_comparison, CTool};

/// One load of the harness: wrk's connections, pacing and connection style.
pub(crate) struct Load {
    pub(crate) name: &'static str,
    pub(crate) connections: u32,
    pub(crate) delay_ms: Option<u32>,
    pub(crate) close: bool,
}

/// The rows the C TCPCopy's published figures were taken at: ~10k keep-alive req/s, keep-alive
/// unthrottled, ~9k short connections/s, short connections unthrottled.
const LOADS: [Load; 4] = [
    Load {
        name: "keep-alive ~10k/s",
        connections: 58,
        delay_ms: Some(5),
        close: false,
    },
    Load {
        name: "keep-alive max",
        connections: 50,
        delay_ms: None,
        close: false,
    },
    Load {
        name: "short ~9k/s",
        connections: 70,
        delay_ms: Some(5),
        close: true,
    },
    Load {
        name: "short max",
        connections: 50,
        delay_ms: None,
        close: true,
    },
];

/// What one row measured.
#[derive(Default)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) wrk: lab::wrk::WrkReport,
    pub(crate) online: usize,
    pub(crate) target: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) tcpcopy_cpu_s: f64,
    pub(crate) intercept_cpu_s: f64,
    pub(crate) tcpcopy_rss: u64,
    pub(crate) intercept_rss: u64,
    /// The target's listen queue overflowed this often during the row.
    pub(crate) target_listen_overflows: u64,
}

impl Row {
    pub(crate) fn per_request_us(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e6 / self.target.max(1) as f64
    }
}

/// The harness's processes, for CPU and memory readings (absent: not running).
#[derive(Clone, Copy)]
pub(crate) struct Watched {
    pub(crate) tcpcopy: Option<u32>,
    pub(crate) intercept: Option<u32>,
}

impl Watched {
    /// Our tcpcopy and intercept, as the scenario runs them.
    pub(crate) fn ours(sc: &Scenario) -> anyhow::Result<Watched> {
        Ok(Watched {
            tcpcopy: Some(sc.tcpcopy.as_ref().context("tcpcopy")?.pid()),
            // None in stream mode.
            intercept: sc.intercept.as_ref().map(|c| c.pid()),
        })
    }

    fn read(self) -> ((f64, u64), (f64, u64)) {
        let get = |pid: Option<u32>| pid.and_then(proc_usage).unwrap_or_default();
        (get(self.tcpcopy), get(self.intercept))
    }
}

/// Counts `tag`'s requests in the online and target logs: (online, target, lost, duplicated).
fn tally(online: &[String], target: &[String], tag: &str) -> (usize, usize, usize, usize) {
    use std::collections::{HashMap, HashSet};
    let prefix = format!("/k/{tag}/");
    let online: HashSet<&str> = online
        .iter()
        .filter(|u| u.starts_with(&prefix))
        .map(String::as_str)
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for u in target.iter().filter(|u| u.starts_with(&prefix)) {
        *seen.entry(u.as_str()).or_default() += 1;
    }
    let arrived = seen.keys().filter(|u| online.contains(*u)).count();
    let target_total: usize = seen.values().sum();
    let duplicated = target_total - seen.len();
    (
        online.len(),
        target_total,
        online.len() - arrived,
        duplicated,
    )
}

/// Runs one load with wrk from the client and waits (up to 30 s, or 5 s without progress) until
/// the target saw as many of its requests as the online server.
pub(crate) fn bench_row(
    sc: &Scenario,
    load: &Load,
    tag: &str,
    seconds: u64,
    watched: Watched,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Row> {
    let spec = lab::wrk::WrkSpec {
        base_url: format!("http://{}", Scenario::online_addr()),
        tag: tag.into(),
        threads: 2,
        connections: load.connections,
        duration: Duration::from_secs(seconds),
        delay_ms: load.delay_ms,
        close: load.close,
    };
    let ((tc0, _), (ic0, _)) = watched.read();
    let overflows = || target_listen_overflows(sc).unwrap_or(0);
    let overflows0 = overflows();
    let wrk = lab::wrk::run(&sc.lab, sc.lab.ns_client(), &spec, sc.scratch.path())?;
    let online = sc.online_uris()?;
    let count = |uris: &[String]| {
        uris.iter()
            .filter(|u| u.starts_with(&format!("/k/{tag}/")))
            .count()
    };
    let want = count(&online);
    let mut target = sc.target_uris()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut progress = (count(&target), Instant::now());
    while watched.tcpcopy.is_some() && Instant::now() < deadline {
        anyhow::ensure!(!stop.load(Ordering::Relaxed), "interrupted; cleaning up");
        let n = count(&target);
        if n >= want {
            break;
        }
        if n != progress.0 {
            progress = (n, Instant::now());
        } else if progress.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
        target = sc.target_uris()?;
    }
    let ((tc1, trss), (ic1, irss)) = watched.read();
    let (online_n, target_n, lost, duplicated) = tally(&online, &target, tag);
    let target_listen_overflows = overflows().saturating_sub(overflows0);
    Ok(Row {
        name: load.name.into(),
        wrk,
        online: online_n,
        target: target_n,
        lost,
        duplicated,
        tcpcopy_cpu_s: tc1 - tc0,
        intercept_cpu_s: ic1 - ic0,
        tcpcopy_rss: trss,
        intercept_rss: irss,
        target_listen_overflows,
    })
}

/// How often the target host's kernel found a listening socket's accept queue full (TcpExt
/// ListenOverflows): each time a handshake's last ACK, with the request riding on it, was dropped,
/// and the sender had to retransmit. It tells a busy target from a replication fault.
fn target_listen_overflows(sc: &Scenario) -> Option<u64> {
    let netstat = sc
        .lab
        .sh(sc.lab.ns_target(), &["cat", "/proc/net/netstat"])
        .ok()?;
    netstat_counter(&netstat, "TcpExt", "ListenOverflows")
}

/// One counter of `/proc/net/netstat`: a line of names, then a line of values, per group.
fn netstat_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// What the harness runs (`tcpcopy-bench` without `--pps`).
#[derive(Debug, clap::Args)]
pub struct BenchOpts {
    /// Seconds per row.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rows to run (1: keep-alive ~10k/s, 2: keep-alive max, 3: short ~9k/s, 4: short max);
    /// the latency rows need row 2.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4], value_parser = clap::value_parser!(u8).range(1..=4))]
    pub rows: Vec<u8>,
    /// Lab hosts receive on kernel threads (threaded NAPI on every veth), as separate machines
    /// would, instead of inside the sender's send call: CPU figures are then each program's own.
    #[arg(long)]
    pub threaded_receive: bool,
    /// Capture threads of tcpcopy and of intercept (their --threads).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// tcpcopy's --send-layer.
    #[arg(long, value_enum, default_value_t = SendLayer::Ip)]
    pub send_layer: SendLayer,
    /// tcpcopy's --capture-wait (ms).
    #[arg(long, value_name = "MS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub capture_wait: u32,
    /// Runs of each row, each printed, then their median, lowest and highest CPU per
    /// request (this kind of VM varies by 15-20% from run to run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub repeat: u16,
    /// Directory holding the C TCPCopy's `tcpcopy` and `intercept` binaries (1.x, built
    /// separately; not part of this project): every row runs again with them, right after
    /// ours in the same lab, and a last table compares CPU per request row by row.
    #[arg(long, value_name = "DIR")]
    pub c_tool: Option<PathBuf>,
    /// Run our tcpcopy with `--compare` (the online server's answers captured and compared with
    /// the target's): its cost per request shows against a run without
    #[arg(long)]
    pub compare: bool,
    /// Run both programs with `--secret-file FILE` (the encrypted channel): its cost per request
    /// shows against a run without
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Run our tcpcopy in stream mode (`--mode stream`: a connection of its own per session, no
    /// intercept), to set it beside a run without
    #[arg(long)]
    pub stream: bool,
}

/// The lab setup of every row: nginx on both sides, intercept on the assistant, tcpcopy started
/// once the lab is up, both with the harness's options.
fn scenario_spec(opts: &BenchOpts) -> anyhow::Result<ScenarioSpec> {
    let threads = opts.threads.to_string();
    let secret: Vec<String> = match &opts.secret_file {
        Some(f) => vec!["--secret-file".into(), f.display().to_string()],
        None => Vec::new(),
    };
    let capture_wait = opts.capture_wait.to_string();
    let (mode, sending) = if opts.stream {
        (Mode::Stream, Vec::new())
    } else {
        (
            Mode::Assistant,
            vec!["--send-layer", opts.send_layer.name()],
        )
    };
    let mut tcpcopy_args: Vec<String> = ["--threads", &threads, "--capture-wait", &capture_wait]
        .into_iter()
        .chain(sending)
        .chain(opts.compare.then_some("--compare"))
        .map(String::from)
        .collect();
    tcpcopy_args.extend(secret.clone());
    Ok(ScenarioSpec {
        start_tcpcopy: false,
        threaded_receive: opts.threaded_receive,
        extra_tcpcopy_args: tcpcopy_args,
        extra_intercept_args: [vec!["--threads".into(), threads], secret].concat(),
        ..ScenarioSpec::new("tcbench", mode, Servers::Nginx, programs_dir()?)
    })
}

fn print_setup(opts: &BenchOpts, c_tool: Option<&CTool>) {
    let (seconds, threads, capture_wait) = (opts.seconds, opts.threads, opts.capture_wait);
    println!("tcpcopy-bench: nginx (1 KB answers) online and at the target, intercept on the assistant, wrk -t2 from the client, {seconds} s per row");
    println!(
        "capture threads: {threads} in tcpcopy, {threads} in intercept; tcpcopy --send-layer {} --capture-wait {capture_wait}{}",
        opts.send_layer.name(),
        if opts.compare { " --compare" } else { "" }
    );
    if opts.secret_file.is_some() {
        println!("channel: encrypted (--secret-file on both programs)");
    }
    if opts.stream {
        println!("tcpcopy --mode stream: a connection of its own per session, no intercept");
    }
    println!(
        "lab receive path: {}",
        if opts.threaded_receive {
            "kernel threads (threaded NAPI): each program's CPU is its own host's work"
        } else {
            "plain veth: the switch's and the receiving host's stack run in the sender's send call"
        }
    );
    if let Some(c) = c_tool {
        println!(
            "each row again with the C TCPCopy from {} ({}; lines \"C ...\"), right after ours, in the same lab",
            c.dir.display(),
            c.versions()
        );
    }
}

/// The rows the options select, each `repeat` times (and each again with the C tool).
struct Measured {
    rows: Vec<Row>,
    c_rows: Vec<Row>,
    /// Median rate of the unthrottled keep-alive row, when it ran.
    max_rate: Option<f64>,
    /// The processes the last row measured (ours, started again after the C tool's rows).
    watched: Watched,
}

fn run_rows(
    sc: &mut Scenario,
    opts: &BenchOpts,
    mut c_tool: Option<&mut CTool>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Measured> {
    let mut m = Measured {
        rows: Vec::new(),
        c_rows: Vec::new(),
        max_rate: None,
        watched: Watched::ours(sc)?,
    };
    for (i, load) in LOADS.iter().enumerate() {
        if !opts.rows.contains(&(i as u8 + 1)) {
            continue;
        }
        let mut runs = Vec::new();
        let mut c_runs = Vec::new();
        for k in 0..opts.repeat {
            let tag = if k == 0 {
                format!("r{i}")
            } else {
                format!("r{i}x{k}")
            };
            let row = bench_row(sc, load, &tag, opts.seconds, m.watched, stop)?;
            print_row(&row, m.rows.is_empty() && runs.is_empty());
            runs.push(row);
            if let Some(c) = c_tool.as_deref_mut() {
                c_runs.extend(c.run_row(sc, load, &tag, opts.seconds, stop)?);
                m.watched = c.swap_out(sc)?;
            }
        }
        if opts.repeat > 1 {
            print_spread("", &runs);
            if !c_runs.is_empty() {
                print_spread("C", &c_runs);
            }
        }
        m.c_rows.extend(c_runs);
        if i == 1 {
            m.max_rate = Some(median(runs.iter().map(|r| r.wrk.rate())));
        }
        m.rows.extend(runs);
    }
    Ok(m)
}

/// Latency at half the unthrottled keep-alive rate, with tcpcopy and then without it (stopped
/// in between); returns both rows and tcpcopy's log.
fn latency_rows(
    sc: &mut Scenario,
    seconds: u64,
    max_rate: f64,
    watched: Watched,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Row, Row, String)> {
    // Delay 2 ms, so one connection per 500 req/s.
    let half = Load {
        name: "keep-alive half max",
        connections: ((max_rate / 2.0 / 500.0).round() as u32).max(1),
        delay_ms: Some(2),
        close: false,
    };
    let with = bench_row(sc, &half, "h1", seconds, watched, stop)?;
    print_row(&with, false);
    let log = sc.stop_tcpcopy()?;
    let without = Watched {
        tcpcopy: None,
        ..watched
    };
    let without = bench_row(sc, &half, "h0", seconds, without, stop)?;
    if sc.intercept.is_some() {
        sc.stop_intercept()?;
    }
    Ok((with, without, log))
}

/// Runs the harness (see [`BenchOpts`]); fails when a row lost or duplicated a request, or a
/// target packet reached the client.
pub fn run_bench(opts: &BenchOpts) -> anyhow::Result<()> {
    lab::netlab::require_root("the harness")?;
    let mut c_tool = opts.c_tool.as_deref().map(CTool::new).transpose()?;
    anyhow::ensure!(
        lab::wrk::wrk_binary().is_some(),
        "the bench drives wrk: apt install wrk"
    );
    anyhow::ensure!(
        lab::nginx::nginx_binary().is_some(),
        "the bench serves with nginx: apt install nginx-light"
    );
    let stop = tcpcopy::plumbing::stop_on_signals()?;
    let spec = scenario_spec(opts)?;
    print_setup(opts, c_tool.as_ref());
    let mut sc = Scenario::start(&spec)?;
    let sniffer = sc.sniff_client()?;
    sc.start_tcpcopy()?;
    sc.wait_connected(Duration::from_secs(15))?;
    let Measured {
        mut rows,
        c_rows,
        max_rate,
        watched,
    } = run_rows(&mut sc, opts, c_tool.as_mut(), &stop)?;
    if let Some(c) = &c_tool {
        // Ours restarted after each of the C tool's rows: each run's own counters.
        println!();
        for (row, line) in &c.our_finals {
            println!("tcpcopy final, {row}: {line}");
        }
    }
    // With the C tool, ours restarted after its last row: the counters since then.
    let since = if c_tool.is_some() {
        " (since its last restart)"
    } else {
        ""
    };
    match max_rate {
        Some(max_rate) => {
            let (with, without, log) =
                latency_rows(&mut sc, opts.seconds, max_rate, watched, &stop)?;
            println!();
            println!("tcpcopy final{since}: {}", final_line(&log));
            println!(
                "online latency at {:.0} req/s (half of {:.0}): without tcpcopy p50 {} us, p99 {} us; with tcpcopy p50 {} us, p99 {} us",
                with.wrk.rate(),
                max_rate,
                without.wrk.p50_us,
                without.wrk.p99_us,
                with.wrk.p50_us,
                with.wrk.p99_us
            );
            println!("CPU% is of one core over the row (the target's catch-up included); us/req is CPU time per request the target received; RSS is the peak so far.");
            println!("Figures given for the C TCPCopy 1.3 on a 2-core VM of this kind (lab settings unknown): tcpcopy 12% at 9.6k keep-alive req/s (12.5 us/req), 37% at 8.7k short conn/s (42.5 us/req); intercept 4% (4.2 us/req) and 18% (20.7 us/req).");
            rows.push(with);
        }
        None => {
            let log = sc.stop_tcpcopy()?;
            println!("\ntcpcopy final{since}: {}", final_line(&log));
        }
    }
    let (leaked, control) = sniffer.finish()?;
    println!("client isolation: {leaked} target packets reached the client ({control} online packets seen there)");
    print_comparison(&rows, &c_rows);
    check_rows(&rows)?;
    anyhow::ensure!(leaked == 0, "target packets reached the client namespace");
    Ok(())
}

/// The counters tcpcopy printed as it ended.
pub(crate) fn final_line(log: &str) -> &str {
    lab::scenario::final_line(log).unwrap_or("(no final line)")
}

/// The median of `values` (the upper one of the middle two).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One line under the repeated runs of a row: median, lowest and highest CPU per request.
fn print_spread(label: &str, runs: &[Row]) {
    let spread = |cpu: fn(&Row) -> f64| {
        let us = || runs.iter().map(|r| r.per_request_us(cpu(r)));
        let low = us().fold(f64::INFINITY, f64::min);
        let high = us().fold(0.0, f64::max);
        format!("{:.2} ({low:.2}-{high:.2})", median(us()))
    };
    println!(
        "{:<20} median (lowest-highest) of {} runs: tcpcopy {} us/req, intercept {} us/req",
        label,
        runs.len(),
        spread(|r| r.tcpcopy_cpu_s),
        spread(|r| r.intercept_cpu_s)
    );
}

fn check_rows(rows: &[Row]) -> anyhow::Result<()> {
    let bad = rows
        .iter()
        .filter(|r| r.lost > 0 || r.duplicated > 0 || r.online == 0)
        .count();
    anyhow::ensure!(bad == 0, "{bad} row(s) lost or duplicated requests");
    Ok(())
}

pub(crate) fn print_row(r: &Row, header: bool) {
    if header {
        println!();
        println!(
            "{:<20} {:>8} {:>9} {:>9} {:>6} {:>5} {:>9} {:>8} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7}",
            "load",
            "online/s",
            "online",
            "target",
            "lost",
            "dups",
            "tcpcopy%",
            "us/req",
            "RSS KiB",
            "icept%",
            "us/req",
            "RSS KiB",
            "p50 us",
            "p99 us"
        );
    }
    let secs = r.wrk.seconds.max(1e-9);
    println!(
        "{:<20} {:>8.0} {:>9} {:>9} {:>6} {:>5} {:>9.1} {:>8.2} {:>9} {:>8.1} {:>8.2} {:>9} {:>7} {:>7}",
        r.name,
        r.online as f64 / secs,
        r.online,
        r.target,
        r.lost,
        r.duplicated,
        r.tcpcopy_cpu_s * 100.0 / secs,
        r.per_request_us(r.tcpcopy_cpu_s),
        r.tcpcopy_rss,
        r.intercept_cpu_s * 100.0 / secs,
        r.per_request_us(r.intercept_cpu_s),
        r.intercept_rss,
        r.wrk.p50_us,
        r.wrk.p99_us
    );
    if r.target_listen_overflows > 0 {
        println!(
            "{:<20} the target's accept queue was full {} times (the server fell behind; the sender retransmits)",
            "",
            r.target_listen_overflows
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netstat_counter_is_read_by_its_name() {
        let text = "TcpExt: SyncookiesSent TW ListenOverflows ListenDrops\n\
                    TcpExt: 4 87899 865 866\n\
                    IpExt: InNoRoutes ListenOverflows\n\
                    IpExt: 1 2\n";
        assert_eq!(
            netstat_counter(text, "TcpExt", "ListenOverflows"),
            Some(865)
        );
        assert_eq!(netstat_counter(text, "TcpExt", "SyncookiesSent"), Some(4));
        assert_eq!(netstat_counter(text, "IpExt", "ListenOverflows"), Some(2));
        assert_eq!(netstat_counter(text, "TcpExt", "Nothing"), None);
        assert_eq!(netstat_counter("TcpExt: A\n", "TcpExt", "A"), None);
    }

    #[test]
    fn tally_counts_loss_and_duplicates_of_one_tag() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let online = v(&["/k/r1/0/1", "/k/r1/0/2", "/k/r1/1/1", "/k/r2/0/1", "/"]);
        let target = v(&["/k/r1/0/1", "/k/r1/0/1", "/k/r1/1/1", "/k/r2/0/1"]);
        assert_eq!(tally(&online, &target, "r1"), (3, 3, 1, 1));
        assert_eq!(tally(&online, &target, "r2"), (1, 1, 0, 0));
    }
}
