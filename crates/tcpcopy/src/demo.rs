//! `tcpcopy demo`: the built-in default job, and `tcpcopy bench`: the load harness.
//!
//! Both build a lab in network namespaces (client, online, target, assistant on one bridge), run
//! `intercept` on the assistant and `tcpcopy` on the online host, drive HTTP load from the client,
//! and remove everything they created, also on Ctrl-C (the lab is dropped on the way out).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab::{LoadReport, LoadSpec};

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

/// One row of the load harness.
struct Row {
    name: &'static str,
    online: usize,
    target: usize,
    secs: f64,
    tcpcopy_cpu: f64,
    intercept_cpu: f64,
    tcpcopy_rss: u64,
    intercept_rss: u64,
    p50: u32,
    p99: u32,
}

pub fn run_bench(seconds: u64) -> anyhow::Result<()> {
    preflight()?;
    let stop = crate::plumbing::stop_on_signals()?;
    let servers = if lab::nginx::nginx_binary().is_some() {
        Servers::Nginx
    } else {
        Servers::Embedded
    };
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tcbench", Mode::Assistant, servers, bin_dir()?)
    };
    println!("tcpcopy bench: {servers:?} servers, assistant mode, {seconds} s per row, 50 keep-alive connections");
    let mut sc = Scenario::start(&spec)?;
    let levels: [(&'static str, Option<u64>); 3] = [
        ("2k req/s", Some(2_000)),
        ("5k req/s", Some(5_000)),
        ("unthrottled", None),
    ];

    // Baseline: the online server's latency without tcpcopy, at the middle rate.
    let ns = sc.lab.ns_client().to_string();
    let base_spec = load_spec(seconds, 50, 0, Some(5_000), "base");
    let baseline: LoadReport = interruptible(&stop, {
        let ns = ns.clone();
        move || lab::run_in_ns(&ns, || lab::loadgen::run(&base_spec))
    })??;

    sc.start_tcpcopy()?;
    sc.wait_connected(Duration::from_secs(15))?;
    let tpid = sc.tcpcopy.as_ref().context("tcpcopy")?.pid();
    let ipid = sc.intercept.as_ref().context("intercept")?.pid();
    let mut rows = Vec::new();
    let mut total_online = sc.online_uris()?.len();
    let mut total_target = sc.target_uris()?.len();
    for (i, (name, rate)) in levels.into_iter().enumerate() {
        let (tc0, _) = proc_usage(tpid).unwrap_or_default();
        let (ic0, _) = proc_usage(ipid).unwrap_or_default();
        let spec = load_spec(seconds, 50, 0, rate, &format!("b{i}"));
        let ns = ns.clone();
        let report: LoadReport = interruptible(&stop, move || {
            lab::run_in_ns(&ns, || lab::loadgen::run(&spec))
        })??;
        let online = sc.online_uris()?.len();
        let target = sc
            .wait_target(
                online - total_online + total_target,
                Duration::from_secs(20),
            )?
            .len();
        let (tc1, trss) = proc_usage(tpid).unwrap_or_default();
        let (ic1, irss) = proc_usage(ipid).unwrap_or_default();
        let secs = report.elapsed.as_secs_f64().max(0.001);
        rows.push(Row {
            name,
            online: online - total_online,
            target: target - total_target,
            secs,
            tcpcopy_cpu: (tc1 - tc0) * 100.0 / secs,
            intercept_cpu: (ic1 - ic0) * 100.0 / secs,
            tcpcopy_rss: trss,
            intercept_rss: irss,
            p50: report.percentile(50.0).unwrap_or(0),
            p99: report.percentile(99.0).unwrap_or(0),
        });
        total_online = online;
        total_target = target;
    }
    println!();
    println!(
        "{:<12} {:>9} {:>9} {:>9} {:>8} {:>9} {:>11} {:>9} {:>11} {:>8} {:>8}",
        "load",
        "online",
        "target",
        "req/s",
        "loss%",
        "tcpcopy%",
        "tcpcopy RSS",
        "intcpt%",
        "intcpt RSS",
        "p50 us",
        "p99 us"
    );
    for r in &rows {
        let loss = if r.online == 0 {
            0.0
        } else {
            (r.online.saturating_sub(r.target)) as f64 * 100.0 / r.online as f64
        };
        println!(
            "{:<12} {:>9} {:>9} {:>9.0} {:>8.3} {:>9.1} {:>8} KiB {:>9.1} {:>7} KiB {:>8} {:>8}",
            r.name,
            r.online,
            r.target,
            r.target as f64 / r.secs,
            loss,
            r.tcpcopy_cpu,
            r.tcpcopy_rss,
            r.intercept_cpu,
            r.intercept_rss,
            r.p50,
            r.p99
        );
    }
    println!("online latency at 5k req/s without tcpcopy: p50 {} us, p99 {} us; with tcpcopy: p50 {} us, p99 {} us",
        baseline.percentile(50.0).unwrap_or(0), baseline.percentile(99.0).unwrap_or(0), rows[1].p50, rows[1].p99);
    println!("(CPU% is of one core over the row; RSS is the peak resident size so far)");
    sc.stop_tcpcopy()?;
    sc.stop_intercept()?;
    Ok(())
}
