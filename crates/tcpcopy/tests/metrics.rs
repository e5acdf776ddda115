//! The Prometheus endpoints of both programs during a lab run (needs root): scrapes taken while
//! the load runs parse with a text-format parser, tcpcopy's counters only grow, intercept shows
//! its connection and the responses it caught, and once the run has settled tcpcopy's counters
//! are the numbers of its final JSON report.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{run_in_ns, LoadSpec};
use prometheus_parse::{Scrape, Value};

/// tcpcopy's endpoint, in the online host's namespace.
const TCPCOPY_METRICS: &str = "127.0.0.1:9100";
/// intercept's endpoint, in the assistant host's namespace.
const INTERCEPT_METRICS: &str = "127.0.0.1:9101";

/// One scrape of `addr` from inside namespace `ns`, parsed.
fn scrape(ns: &str, addr: &str) -> anyhow::Result<Scrape> {
    let addr: SocketAddr = addr.parse()?;
    let text = run_in_ns(ns, || -> std::io::Result<String> {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: lab\r\n\r\n")?;
        let mut answer = String::new();
        c.read_to_string(&mut answer)?;
        Ok(answer)
    })?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP head in {text:?}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "answered {head}");
    Ok(Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?)
}

/// The value of sample `name` with `labels` (a counter, gauge, or a histogram's `_count`).
fn num(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?} in the scrape"));
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v as u64,
        ref other => panic!("{name} is not a number: {other:?}"),
    }
}

fn load() -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 20,
        requests_per_connection: 200,
        short_connections: 500,
        short_concurrency: 4,
        // About 3 s of load: several scrapes land in it.
        rate_limit: Some(1_500),
        uri_prefix: "metrics".into(),
        deadline: Duration::from_secs(60),
    }
}

#[test]
fn scrapes_during_a_run_parse_and_match_the_final_report() {
    let _guard = sequential();
    let mut spec = ScenarioSpec::new("metrics", Mode::Assistant, Servers::Embedded, bin_dir());
    spec.extra_intercept_args = vec!["--metrics".into(), INTERCEPT_METRICS.into()];
    spec.start_tcpcopy = false;
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let report_path = sc.scratch.path().join("report.json");
    let args = ["--compare", "--metrics", TCPCOPY_METRICS, "--report"];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(report_path.display().to_string());
    sc.start_tcpcopy_with(&args).expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connects to intercept");
    let (online_ns, assistant_ns) = (
        sc.lab.ns_online().to_string(),
        sc.lab.ns_assistant().to_string(),
    );

    // Scrape tcpcopy every 250 ms while the load runs.
    let spec = load();
    let done = AtomicBool::new(false);
    let (report, during) = std::thread::scope(|s| {
        let scraper = s.spawn(|| {
            let mut scrapes = Vec::new();
            while !done.load(Ordering::Relaxed) {
                scrapes.push(scrape(&online_ns, TCPCOPY_METRICS).expect("tcpcopy scrape"));
                std::thread::sleep(Duration::from_millis(250));
            }
            scrapes
        });
        let report = sc.load(&spec);
        done.store(true, Ordering::Relaxed);
        (report, scraper.join().expect("scraper"))
    });
    let report = report.expect("load runs");
    let expected = 20 * 200 + 500;
    assert_eq!(report.ok, expected, "every request answered online");
    assert!(
        during.len() >= 4,
        "{} scrapes during the load",
        during.len()
    );
    let online: Vec<u64> = during
        .iter()
        .map(|s| num(s, "tcpcopy_requests_online_total", &[]))
        .collect();
    assert!(
        online.windows(2).all(|w| w[0] <= w[1]) && online[0] < expected,
        "requests online only grow, and were still growing while scraped: {online:?}"
    );

    sc.wait_target(expected as usize, Duration::from_secs(60))
        .expect("the target got every request");
    let ic = scrape(&assistant_ns, INTERCEPT_METRICS).expect("intercept scrape");
    // tcpcopy's default: two connections to each intercept (-C).
    assert_eq!(
        num(&ic, "intercept_connections", &[]),
        2,
        "tcpcopy's connections"
    );
    assert!(num(&ic, "intercept_responses_total", &[]) >= expected);

    // Settled: every request at the target, every session ended, every exchange judged.
    let started = Instant::now();
    let last = loop {
        let s = scrape(&online_ns, TCPCOPY_METRICS).expect("tcpcopy scrape");
        let settled = num(&s, "tcpcopy_requests_target_total", &[]) >= expected
            && num(&s, "tcpcopy_sessions_active", &[]) == 0
            && num(&s, "tcpcopy_exchanges_open", &[]) == 0;
        if settled || started.elapsed() > Duration::from_secs(60) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    sc.stop_tcpcopy().expect("tcpcopy stops cleanly");
    let text = std::fs::read_to_string(&report_path).expect("tcpcopy wrote its report");
    let r: compare::Report = serde_json::from_str(&text).expect("the report parses");

    let n = |name| num(&last, name, &[]);
    assert_eq!(r.requests.online, n("tcpcopy_requests_online_total"));
    assert_eq!(r.requests.target, n("tcpcopy_requests_target_total"));
    let lost = |cause| num(&last, "tcpcopy_requests_lost_total", &[("cause", cause)]);
    let by_cause = &r.requests.lost_by_cause;
    assert_eq!(
        [
            by_cause.never_captured,
            by_cause.sampled_out,
            by_cause.overflow,
            by_cause.failed_at_target,
            by_cause.reset_by_target,
            by_cause.reset_by_client,
            by_cause.not_answered,
        ],
        [
            lost("never_captured"),
            lost("sampled_out"),
            lost("overflow"),
            lost("failed_at_target"),
            lost("reset_by_target"),
            lost("reset_by_client"),
            lost("not_answered"),
        ],
        "lost by cause"
    );
    let ended = |end| num(&last, "tcpcopy_sessions_total", &[("end", end)]);
    assert_eq!(r.sessions.created, n("tcpcopy_sessions_created_total"));
    assert_eq!(r.sessions.completed, ended("completed"));
    assert_eq!(r.sessions.reset_by_client, ended("reset_by_client"));
    let cmp = r.comparison.as_ref().expect("a comparison with --compare");
    let judged = |result| num(&last, "tcpcopy_compared_total", &[("result", result)]);
    assert_eq!(
        (cmp.equal, cmp.different, cmp.noise),
        (judged("equal"), judged("different"), judged("noise"))
    );
    assert!(cmp.equal > 0, "answers were compared: {cmp:?}");
    let latency_count = |side| {
        num(
            &last,
            "tcpcopy_response_latency_seconds_count",
            &[("side", side)],
        )
    };
    assert_eq!(r.latency.online.count, latency_count("online"));
    assert_eq!(r.latency.target.count, latency_count("target"));
    sc.stop_intercept().expect("intercept stops cleanly");
}
