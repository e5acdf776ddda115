//! `tcpcopy demo`: the built-in first command (only with the `demo` feature, the default).
//!
//! It builds a lab in network namespaces (client, online, target, assistant on one bridge), runs
//! `intercept` on the assistant and `tcpcopy` on the online host (the binaries next to this one),
//! drives HTTP load from the client, reports, and removes everything it created, also on Ctrl-C
//! (the lab is dropped on the way out). It measures nothing beyond that report: the load harness
//! and the benchmarks are `tcpcopy-bench`, outside the production crate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lab::scenario::{programs_dir, Mode, Scenario, ScenarioSpec, Servers};
use lab::{LoadReport, LoadSpec};

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

/// The comparison's lines of the demo's report: answers judged, latency online against target.
fn print_comparison(r: &compare::Report) {
    if let Some(c) = &r.comparison {
        println!(
            "answers compared    {} ({} equal, {} different, {} online answer missing)",
            c.compared, c.equal, c.different, c.unanswered_online
        );
    }
    let (o, t) = (&r.latency.online, &r.latency.target);
    println!(
        "answer latency      online p50/p99 {} / {} us, target p50/p99 {} / {} us",
        o.p50_us, o.p99_us, t.p50_us, t.p99_us
    );
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

pub fn run_demo(seconds: u64, report_html: Option<&std::path::Path>) -> anyhow::Result<()> {
    lab::netlab::require_root("the demo")?;
    let stop = crate::plumbing::stop_on_signals()?;
    let bin_dir = programs_dir()?;
    println!(
        "tcpcopy demo: building a lab in network namespaces (client, online, target, assistant)..."
    );
    let mut spec = ScenarioSpec::new("tcdemo", Mode::Assistant, Servers::Embedded, bin_dir);
    // The target's answers compared with the online server's, reported as JSON (read below).
    spec.extra_tcpcopy_args = ["--compare", "--report", "{scratch}/report.json"]
        .map(String::from)
        .to_vec();
    if let Some(path) = report_html {
        let path = std::path::absolute(path)?;
        spec.extra_tcpcopy_args.push("--report-html".into());
        spec.extra_tcpcopy_args.push(path.display().to_string());
    }
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
    let final_line = lab::scenario::final_line(&log).unwrap_or("");
    // Unreadable counters (no final line) show as zeros; the request counts above decide.
    let counters = final_line.parse::<session::Stats>().unwrap_or_default();
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
        counters.sessions_created, counters.sessions_completed, counters.sessions_active
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
    match sc.read_report("report.json") {
        Ok(r) => print_comparison(&r),
        Err(e) => println!("comparison          no report ({e:#})"),
    }
    if let Some(path) = report_html {
        println!("HTML report         {}", path.display());
    }
    println!("tcpcopy counters    {final_line}");
    sc.stop_intercept()?;
    drop(sc);
    println!("lab removed.");
    anyhow::ensure!(
        online > 0 && lost == 0 && leaked == 0,
        "the demo did not replicate cleanly"
    );
    Ok(())
}
