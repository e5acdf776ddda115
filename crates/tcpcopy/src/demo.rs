//! `tcpcopy demo`: the built-in default job, and `tcpcopy bench`: the load harness.
//!
//! Both build a lab in network namespaces (client, online, target, assistant on one bridge), run
//! `intercept` on the assistant and `tcpcopy` on the online host, drive HTTP load from the client,
//! and remove everything they created, also on Ctrl-C (the lab is dropped on the way out).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab::{LoadReport, LoadSpec};

use crate::cli::SendLayer;
use crate::scenario::{proc_usage, Mode, Scenario, ScenarioSpec, Servers};

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the tcpcopy binary")?;
    let dir = exe
        .parent()
        .context("binary without a directory")?
        .to_path_buf();
    anyhow::ensure!(
        dir.join("intercept").is_file(),
        "intercept binary not found next to {} (build both with `cargo build --release`)",
        exe.display()
    );
    Ok(dir)
}

fn preflight() -> anyhow::Result<()> {
    anyhow::ensure!(
        lab::netlab::is_root(),
        "the demo builds network namespaces: run it as root"
    );
    Ok(())
}

/// Runs `f` on a thread while watching for SIGINT/SIGTERM; on a signal returns an error at once, so
/// that the caller's lab is dropped (and cleaned up) while the worker is abandoned.
fn interruptible<T: Send + 'static>(
    stop: &Arc<AtomicBool>,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let h = thread::spawn(f);
    while !h.is_finished() {
        anyhow::ensure!(!stop.load(Ordering::Relaxed), "interrupted; cleaning up");
        thread::sleep(Duration::from_millis(50));
    }
    h.join()
        .map_err(|_| anyhow::anyhow!("worker thread panicked"))
}

fn load_spec(
    seconds: u64,
    conns: usize,
    short: usize,
    rate: Option<u64>,
    prefix: &str,
) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: conns,
        requests_per_connection: 10_000_000,
        short_connections: short,
        short_concurrency: 2,
        rate_limit: rate,
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(seconds),
    }
}

/// Value of `key` (a number) in tcpcopy's final statistics line.
fn stat(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

pub fn run_demo(seconds: u64) -> anyhow::Result<()> {
    preflight()?;
    let stop = crate::plumbing::stop_on_signals()?;
    let bin_dir = bin_dir()?;
    println!(
        "tcpcopy demo: building a lab in network namespaces (client, online, target, assistant)..."
    );
    let spec = ScenarioSpec::new("tcdemo", Mode::Assistant, Servers::Embedded, bin_dir);
    let mut sc = Scenario::start(&spec)?;
    println!("  client    {}  (load generator)", lab::Lab::CLIENT_IP);
    println!(
        "  online    {}:80  (HTTP server, tcpcopy -x 80-{}:80 -s {} -c {})",
        lab::Lab::ONLINE_IP,
        lab::Lab::TARGET_IP,
        lab::Lab::ASSISTANT_IP,
        lab::Lab::FAKE_CLIENT_NET
    );
    println!(
        "  target    {}:80  (HTTP server; routes {} to the assistant)",
        lab::Lab::TARGET_IP,
        lab::Lab::FAKE_CLIENT_NET
    );
    println!(
        "  assistant {}  (intercept -i eth0, ip_forward=0)",
        lab::Lab::ASSISTANT_IP
    );
    let sniffer = sc.sniff_client()?;
    println!("replicating live HTTP traffic for {seconds} s (20 keep-alive connections at ~2,000 req/s plus short connections)...");
    let spec = load_spec(seconds, 20, 100_000, Some(2_000), "demo");
    let lab_ns = sc.lab.ns_client().to_string();
    let report: LoadReport = interruptible(&stop, move || {
        lab::run_in_ns(&lab_ns, || lab::loadgen::run(&spec))
    })??;
    let online = sc.online_uris()?.len();
    // Let the target catch up with the last requests (bounded, and still interruptible).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut target = sc.target_uris()?.len();
    while target < online && Instant::now() < deadline {
        anyhow::ensure!(!stop.load(Ordering::Relaxed), "interrupted; cleaning up");
        thread::sleep(Duration::from_millis(100));
        target = sc.target_uris()?.len();
    }
    let log = sc.stop_tcpcopy()?;
    let (leaked, control) = sniffer.finish()?;
    let final_line = log
        .lines()
        .find(|l| l.contains("tcpcopy final:"))
        .unwrap_or("")
        .to_string();
    let lost = online.saturating_sub(target);
    println!();
    println!("== tcpcopy demo report ==");
    println!(
        "load generator      {} requests, {} answered by the online server, {:.0} req/s",
        report.sent,
        report.ok,
        report.throughput()
    );
    println!(
        "sessions            {} replicated ({} completed, {} still open at stop)",
        stat(&final_line, "sessions ").unwrap_or(0),
        stat(&final_line, "completed ").unwrap_or(0),
        stat(&final_line, "active ").unwrap_or(0)
    );
    println!("requests online     {online}");
    println!("requests at target  {target}");
    println!(
        "loss rate           {:.4}% ({lost} lost)",
        if online == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / online as f64
        }
    );
    println!(
        "throughput          {:.0} req/s replicated",
        target as f64 / report.elapsed.as_secs_f64().max(0.001)
    );
    println!(
        "online p50/p99      {} / {} us",
        report.percentile(50.0).unwrap_or(0),
        report.percentile(99.0).unwrap_or(0)
    );
    println!("client isolation    {leaked} target packets reached the client ({control} online packets seen there)");
    println!(
        "tcpcopy counters    {}",
        final_line.trim_start_matches(|c| c != 's')
    );
    sc.stop_intercept()?;
    drop(sc);
    println!("lab removed.");
    anyhow::ensure!(
        online > 0 && lost == 0 && leaked == 0,
        "the demo did not replicate cleanly"
    );
    Ok(())
}

/// One load of the harness: wrk's connections, pacing and connection style.
struct Load {
    name: &'static str,
    connections: u32,
    delay_ms: Option<u32>,
    close: bool,
}

/// The rows issue 6 measures the C TCPCopy at: ~10k keep-alive req/s, keep-alive unthrottled,
/// ~9k short connections/s, short connections unthrottled.
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
struct Row {
    name: String,
    wrk: lab::wrk::WrkReport,
    online: usize,
    target: usize,
    lost: usize,
    duplicated: usize,
    tcpcopy_cpu_s: f64,
    intercept_cpu_s: f64,
    tcpcopy_rss: u64,
    intercept_rss: u64,
    /// The target's listen queue overflowed this often during the row.
    target_listen_overflows: u64,
}

impl Row {
    fn per_request_us(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e6 / self.target.max(1) as f64
    }
}

/// The harness's processes, for CPU and memory readings (absent: not running).
#[derive(Clone, Copy)]
struct Watched {
    tcpcopy: Option<u32>,
    intercept: Option<u32>,
}

impl Watched {
    /// Our tcpcopy and intercept, as the scenario runs them.
    fn ours(sc: &Scenario) -> anyhow::Result<Watched> {
        Ok(Watched {
            tcpcopy: Some(sc.tcpcopy.as_ref().context("tcpcopy")?.pid()),
            intercept: Some(sc.intercept.as_ref().context("intercept")?.pid()),
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
fn bench_row(
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

/// What `tcpcopy bench` runs (see its options).
pub struct BenchOpts {
    pub seconds: u64,
    pub rows: Vec<u8>,
    pub threaded_receive: bool,
    pub threads: u16,
    pub send_layer: SendLayer,
    /// tcpcopy's --capture-wait, in ms.
    pub capture_wait: u32,
    pub repeat: u16,
    /// The C TCPCopy's binaries, to run every row again with them.
    pub c_tool: Option<PathBuf>,
}

pub fn run_bench(opts: &BenchOpts) -> anyhow::Result<()> {
    let BenchOpts {
        seconds,
        rows: ref which,
        threaded_receive,
        threads,
        send_layer,
        capture_wait,
        repeat,
        ref c_tool,
    } = *opts;
    preflight()?;
    let mut c_tool = c_tool.as_deref().map(CTool::new).transpose()?;
    anyhow::ensure!(
        lab::wrk::wrk_binary().is_some(),
        "the bench drives wrk: apt install wrk"
    );
    anyhow::ensure!(
        lab::nginx::nginx_binary().is_some(),
        "the bench serves with nginx: apt install nginx-light"
    );
    let stop = crate::plumbing::stop_on_signals()?;
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        threaded_receive,
        extra_tcpcopy_args: vec![
            "--threads".into(),
            threads.to_string(),
            "--send-layer".into(),
            send_layer.name().into(),
            "--capture-wait".into(),
            capture_wait.to_string(),
        ],
        extra_intercept_args: vec!["--threads".into(), threads.to_string()],
        ..ScenarioSpec::new("tcbench", Mode::Assistant, Servers::Nginx, bin_dir()?)
    };
    println!("tcpcopy bench: nginx (1 KB answers) online and at the target, intercept on the assistant, wrk -t2 from the client, {seconds} s per row");
    println!(
        "capture threads: {threads} in tcpcopy, {threads} in intercept; tcpcopy --send-layer {} --capture-wait {capture_wait}",
        send_layer.name()
    );
    println!(
        "lab receive path: {}",
        if threaded_receive {
            "kernel threads (threaded NAPI): each program's CPU is its own host's work"
        } else {
            "plain veth: the switch's and the receiving host's stack run in the sender's send call"
        }
    );
    if let Some(c) = &c_tool {
        println!(
            "each row again with the C TCPCopy from {} ({}; lines \"C ...\"), right after ours, in the same lab",
            c.dir.display(),
            c.versions()
        );
    }
    let mut sc = Scenario::start(&spec)?;
    sc.start_tcpcopy()?;
    sc.wait_connected(Duration::from_secs(15))?;
    let mut watched = Watched::ours(&sc)?;
    let mut rows = Vec::new();
    let mut c_rows = Vec::new();
    let mut max_rate = None;
    for (i, load) in LOADS.iter().enumerate() {
        if !which.contains(&(i as u8 + 1)) {
            continue;
        }
        let mut runs = Vec::new();
        let mut c_runs = Vec::new();
        for k in 0..repeat {
            let tag = if k == 0 {
                format!("r{i}")
            } else {
                format!("r{i}x{k}")
            };
            let row = bench_row(&sc, load, &tag, seconds, watched, &stop)?;
            print_row(&row, rows.is_empty() && runs.is_empty());
            runs.push(row);
            if let Some(c) = c_tool.as_mut() {
                c_runs.extend(c.run_row(&mut sc, load, &tag, seconds, &stop)?);
                watched = c.swap_out(&mut sc)?;
            }
        }
        if repeat > 1 {
            print_spread("", &runs);
            if !c_runs.is_empty() {
                print_spread("C", &c_runs);
            }
        }
        c_rows.extend(c_runs);
        if i == 1 {
            max_rate = Some(median(runs.iter().map(|r| r.wrk.rate())));
        }
        rows.extend(runs);
    }
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
    let Some(max_rate) = max_rate else {
        let log = sc.stop_tcpcopy()?;
        println!("\ntcpcopy final{since}: {}", final_line(&log));
        print_comparison(&rows, &c_rows);
        return check_rows(&rows);
    };
    // Latency at half the unthrottled keep-alive rate: delay 2 ms, so one connection per
    // 500 req/s.
    let half = Load {
        name: "keep-alive half max",
        connections: ((max_rate / 2.0 / 500.0).round() as u32).max(1),
        delay_ms: Some(2),
        close: false,
    };
    let with = bench_row(&sc, &half, "h1", seconds, watched, &stop)?;
    print_row(&with, false);
    let log = sc.stop_tcpcopy()?;
    let without = bench_row(
        &sc,
        &half,
        "h0",
        seconds,
        Watched {
            tcpcopy: None,
            ..watched
        },
        &stop,
    )?;
    sc.stop_intercept()?;
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
    println!("Issue 6's figures for the C TCPCopy 1.3 on this kind of machine: tcpcopy 12% at 9.6k keep-alive req/s (12.5 us/req), 37% at 8.7k short conn/s (42.5 us/req); intercept 4% (4.2 us/req) and 18% (20.7 us/req).");
    rows.push(with);
    print_comparison(&rows, &c_rows);
    check_rows(&rows)
}

/// The counters tcpcopy printed as it ended.
fn final_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.contains("tcpcopy final:"))
        .unwrap_or("(no final line)")
        .trim_start_matches(|c| c != 's')
}

/// The median of `values` (the upper one of the middle two).
fn median(values: impl Iterator<Item = f64>) -> f64 {
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

/// The C TCPCopy (`tcpcopy` 1.x and `intercept` 1.x from session-replay-tools, built by the user;
/// not part of this project), run in our programs' place for a row: the same lab, load and
/// accounting, so both are measured side by side rather than against figures from elsewhere.
struct CTool {
    dir: PathBuf,
    tcpcopy: Option<lab::Child>,
    intercept: Option<lab::Child>,
    /// Our tcpcopy's final counters of each run, which ended when the C tool took over.
    our_finals: Vec<(String, String)>,
}

/// The C tool's two programs, by their binaries' names.
const C_PROGRAMS: [&str; 2] = ["tcpcopy", "intercept"];

impl CTool {
    fn new(dir: &std::path::Path) -> anyhow::Result<CTool> {
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
    fn versions(&self) -> String {
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
        let port = crate::scenario::SERVICE_PORT;
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
    fn run_row(
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
    fn swap_out(&mut self, sc: &mut Scenario) -> anyhow::Result<Watched> {
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
fn print_comparison(ours: &[Row], theirs: &[Row]) {
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

fn check_rows(rows: &[Row]) -> anyhow::Result<()> {
    let bad = rows
        .iter()
        .filter(|r| r.lost > 0 || r.duplicated > 0 || r.online == 0)
        .count();
    anyhow::ensure!(bad == 0, "{bad} row(s) lost or duplicated requests");
    Ok(())
}

fn print_row(r: &Row, header: bool) {
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
