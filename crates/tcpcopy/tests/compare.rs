//! End-to-end comparison in network namespaces (needs root; nginx and redis-server for two of
//! them): servers whose answers differ on known paths, by a seeded plan, and the JSON report
//! tcpcopy writes at exit must name exactly those, with the right statuses; noise cancelled by a
//! baseline; a slow share of requests in the target's latency; a generic protocol (redis); the
//! exit status of the CI gates; merged reports; a skewed intercept clock. Each test builds and
//! removes its own lab; a mutex keeps them sequential.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitStatus;
use std::time::Duration;

use compare::report::{Group, Report};
use lab::plan::{self, AnswerPlan, Twist};
use lab::redis::{RedisConn, Reply};
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, LoadSpec};
use session::testing::Rng;

/// The options every comparison run starts with: compare, and write the report in the scratch
/// directory.
const COMPARE: &[&str] = &["--compare", "--report", "{scratch}/report.json"];

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn spec(tag: &str, servers: Servers, extra: &[&str]) -> ScenarioSpec {
    let mut s = ScenarioSpec::new(tag, Mode::Assistant, servers, bin_dir());
    s.extra_tcpcopy_args = args(COMPARE);
    s.extra_tcpcopy_args.extend(args(extra));
    s
}

/// `conns` keep-alive connections of `per_conn` requests each, at most `rate` requests/s.
fn load(conns: usize, per_conn: usize, rate: Option<u64>) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: conns,
        requests_per_connection: per_conn,
        short_connections: 0,
        short_concurrency: 1,
        rate_limit: rate,
        uri_prefix: String::new(),
        deadline: Duration::from_secs(120),
    }
}

/// What a run left: tcpcopy's exit status, its log and its report.
struct Outcome {
    status: ExitStatus,
    log: String,
    report: Report,
}

/// Runs `load` over `paths` from the client namespace (the online server answers every request
/// with a 2xx), waits until the target has them all, lets the answers come back, stops tcpcopy
/// and reads its report.
fn run_http(sc: &mut Scenario, paths: &[String], load: &LoadSpec) -> Outcome {
    let total = (load.keepalive_connections * load.requests_per_connection) as u64;
    let got = sc
        .lab
        .run_in(sc.lab.ns_client(), || loadgen::run_paths(load, paths))
        .expect("load runs");
    assert_eq!(got.ok, total, "the online server answered every request");
    let target = sc
        .wait_target(total as usize, Duration::from_secs(60))
        .expect("target log");
    assert_eq!(
        target.len() as u64,
        total,
        "every request reached the target"
    );
    finish(sc)
}

/// Gives the last answers time to come back through intercept, stops tcpcopy, reads its report.
fn finish(sc: &mut Scenario) -> Outcome {
    std::thread::sleep(Duration::from_millis(1500));
    let (status, log) = sc.stop_tcpcopy_status().expect("tcpcopy stops");
    let report = sc
        .read_report("report.json")
        .unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    Outcome {
        status,
        log,
        report,
    }
}

/// `GET {path}` for each path.
fn get_lines(paths: &[String]) -> BTreeSet<String> {
    paths.iter().map(|p| format!("GET {p}")).collect()
}

/// The groups of `groups` by request label.
fn by_request(groups: &[Group]) -> BTreeMap<&str, &Group> {
    groups.iter().map(|g| (g.request.as_str(), g)).collect()
}

/// The report's groups' labels, for messages (the first 12).
fn labels(groups: &[Group]) -> Vec<(&str, u64)> {
    groups
        .iter()
        .take(12)
        .map(|g| (g.request.as_str(), g.count))
        .collect()
}

/// Asserts that the groups' labels are exactly `expected`; the message names the groups too
/// many (with what differed) and the ones missing.
#[track_caller]
fn assert_labels(groups: &[Group], expected: &BTreeSet<String>, what: &str) {
    let extra: Vec<&Group> = groups
        .iter()
        .filter(|g| !expected.contains(&g.request))
        .collect();
    let listed: BTreeSet<&String> = groups.iter().map(|g| &g.request).collect();
    let missing: Vec<&String> = expected.iter().filter(|l| !listed.contains(l)).collect();
    assert!(
        extra.is_empty() && missing.is_empty() && listed.len() == groups.len(),
        "{what}: {} groups too many, first {:?}; missing {missing:?}",
        extra.len(),
        extra
            .iter()
            .take(5)
            .map(|g| (&g.request, g.count, &g.fields, &g.online, &g.target))
            .collect::<Vec<_>>()
    );
}

/// Asserts that `groups` are exactly one per path of `paths`, each counting every request
/// `load` sent to it, with `field` among what differed and the status pair `online`/`target`.
#[track_caller]
fn assert_groups(
    groups: &[Group],
    paths: &[String],
    all: &[String],
    load: &LoadSpec,
    field: &str,
    statuses: (u16, u16),
) {
    let counts = loadgen::path_counts(load, all.len());
    let groups = by_request(groups);
    for path in paths {
        let line = format!("GET {path}");
        let g = groups
            .get(line.as_str())
            .unwrap_or_else(|| panic!("no group for {line}"));
        let i = all.iter().position(|p| p == path).expect("a planned path");
        assert_eq!(g.count, counts[i], "{line}: every exchange counted");
        assert!(g.fields.contains_key(field), "{line}: {:?}", g.fields);
        assert_eq!(
            (g.online.status, g.target.status),
            (Some(statuses.0), Some(statuses.1)),
            "{line}: status pair"
        );
    }
}

/// The requests' accounting: all seen online and delivered, none lost, causes adding up.
#[track_caller]
fn assert_lossless(report: &Report, total: u64) {
    let r = &report.requests;
    assert_eq!((r.online, r.target, r.lost), (total, total, 0), "{r:?}");
    assert_eq!(sum_causes(&r.lost_by_cause), 0, "{r:?}");
}

fn sum_causes(c: &compare::report::LostByCause) -> u64 {
    c.never_captured
        + c.sampled_out
        + c.overflow
        + c.failed_at_target
        + c.reset_by_target
        + c.reset_by_client
        + c.not_answered
}

/// Done-when 1 and 8 (diff gate): nginx online, at the target the embedded server answering
/// `503` for 1% of the paths and another body for another 1%. nginx answers `200`, `text/plain`,
/// `ok\n` from a `return` (config in `lab::nginx`), byte for byte what the embedded server
/// answers but for Date, Server and Connection, which the comparison leaves out by default. The
/// report lists exactly the planned paths; 2% of exchanges differ, so `--fail-on-diff 0.1`
/// exits 3.
#[test]
fn nginx_online_and_a_target_differing_on_known_paths() {
    let _guard = sequential();
    let all = plan::paths("cmpa", 400);
    let mut rng = Rng::new(0xA1);
    let mut target = AnswerPlan::plain();
    let status = target.choose(&all, 4, &mut rng, Twist::Status(503));
    let body = target.choose(&all, 4, &mut rng, Twist::Body("KO\n".into()));
    let mut s = spec(
        "cmA",
        Servers::Nginx,
        &["--fail-on-diff", "0.1", "--log-format", "json"],
    );
    s.target_servers = Some(Servers::Embedded);
    s.plans.target = target;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let load = load(20, 200, None);
    let out = run_http(&mut sc, &all, &load);
    let report = &out.report;
    let log = &out.log;
    assert_lossless(report, 4_000);
    let expected: BTreeSet<String> = get_lines(&status)
        .union(&get_lines(&body))
        .cloned()
        .collect();
    assert_labels(&report.differences, &expected, "differences");
    assert_groups(
        &report.differences,
        &status,
        &all,
        &load,
        "status",
        (200, 503),
    );
    assert_groups(&report.differences, &body, &all, &load, "body", (200, 200));
    for g in report
        .differences
        .iter()
        .filter(|g| body.iter().any(|p| g.request.ends_with(p)))
    {
        assert!(
            !g.fields.contains_key("status"),
            "{}: {:?}",
            g.request,
            g.fields
        );
    }
    let cmp = report.comparison.as_ref().expect("a comparison section");
    assert_eq!((cmp.compared, cmp.different), (4_000, 80), "{cmp:?}");
    assert_eq!(cmp.equal, 3_920, "{cmp:?}");
    assert!(report.noise.is_empty(), "no baseline, no noise");
    assert_eq!(out.status.code(), Some(3), "2% differ > 0.1%:\n{log}");
    assert_json_log_matches(log, report);
    assert_client_isolated(sniffer);
}

/// With `--log-format json` every log line is a JSON object, and the final statistics event's
/// fields are the report's numbers.
fn assert_json_log_matches(log: &str, report: &Report) {
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.len() > 3, "JSON log lines expected:\n{log}");
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string()),
        "{events:?}"
    );
    let last = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "final")
        .unwrap_or_else(|| panic!("a final statistics event:\n{log}"));
    let n = |field: &str| {
        last[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {last}"))
    };
    let r = &report.requests;
    assert_eq!(n("requests_online") + n("requests_sampled_out"), r.online);
    assert_eq!(n("requests_target"), r.target);
    assert_eq!(n("sessions_created"), report.sessions.created);
    assert_eq!(n("sessions_completed"), report.sessions.completed);
    assert_eq!(n("lost_reset_by_target"), r.lost_by_cause.reset_by_target);
    assert_eq!(n("lost_overflow"), r.lost_by_cause.overflow);
}

/// Done-when 2: a random value in the body of some paths' answers, at every server (the same
/// program), and a candidate that also differs on a known set. The baseline shows the random
/// paths too: they are noise; the known set alone are differences.
#[test]
fn baseline_turns_random_answers_into_noise() {
    let _guard = sequential();
    let all = plan::paths("cmpb", 400);
    let mut rng = Rng::new(0xB2);
    let mut production = AnswerPlan::plain();
    let noisy = production.choose(&all, 8, &mut rng, Twist::Noise);
    let mut candidate = production.clone();
    let status = candidate.choose(&all, 4, &mut rng, Twist::Status(500));
    let body = candidate.choose(&all, 4, &mut rng, Twist::Body("changed\n".into()));
    let mut s = spec("cmB", Servers::Embedded, &[]);
    s.baseline = Some(Servers::Embedded);
    s.plans.online = production.clone();
    s.plans.baseline = production;
    s.plans.target = candidate;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let load = load(20, 200, None);
    let out = run_http(&mut sc, &all, &load);
    let report = &out.report;
    let baseline = sc.baseline_uris().expect("baseline log");
    assert_eq!(baseline.len(), 4_000, "the baseline got every request too");
    assert_labels(&report.noise, &get_lines(&noisy), "noise");
    assert_groups(&report.noise, &noisy, &all, &load, "body", (200, 200));
    let expected: BTreeSet<String> = get_lines(&status)
        .union(&get_lines(&body))
        .cloned()
        .collect();
    assert_labels(&report.differences, &expected, "differences");
    assert_groups(
        &report.differences,
        &status,
        &all,
        &load,
        "status",
        (200, 500),
    );
    assert_groups(&report.differences, &body, &all, &load, "body", (200, 200));
    let cmp = report.comparison.as_ref().expect("a comparison section");
    assert_eq!((cmp.different, cmp.noise), (80, 80), "{cmp:?}");
    assert!(report.latency.baseline.is_some(), "the baseline's latency");
    assert!(out.status.success(), "no gate set:\n{}", out.log);
    // The online requests, each once (the baseline's copies are not more of them).
    assert_lossless(report, 4_000);
}

/// Done-when 3 and 8 (loss gate at 0): the target adds 5 ms to 11% of the paths (each path
/// asked for equally often, so to 11% of the requests). Its p90 and p99 show the 5 ms, online's
/// median stays small, and the per-request view puts exactly those paths above 5 ms. The load
/// is paced (a connection's next request comes ~20 ms later) so that no request waits behind a
/// delayed one. Nothing lost and nothing different: `--fail-on-loss 0 --fail-on-diff 0` exit 0.
#[test]
fn slow_paths_show_in_the_target_latency() {
    let _guard = sequential();
    let all = plan::paths("cmpc", 400);
    let mut rng = Rng::new(0xC3);
    let mut target = AnswerPlan::plain();
    let slow = target.choose(&all, 44, &mut rng, Twist::Delay(Duration::from_millis(5)));
    let gates = ["--fail-on-loss", "0", "--fail-on-diff", "0"];
    let mut s = spec("cmC", Servers::Embedded, &gates);
    s.plans.target = target;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let load = load(40, 100, Some(2_000));
    let out = run_http(&mut sc, &all, &load);
    let report = &out.report;
    assert_lossless(report, 4_000);
    assert!(
        report.differences.is_empty(),
        "{:?}",
        labels(&report.differences)
    );
    let (online, target) = (&report.latency.online, &report.latency.target);
    assert_eq!((online.count, target.count), (4_000, 4_000));
    assert!(
        target.p90_us >= 5_000 && target.p99_us >= 5_000,
        "{target:?}"
    );
    assert!(target.p50_us < 5_000, "most requests are fast: {target:?}");
    assert!(online.p50_us < 2_000, "online is fast: {online:?}");
    let slow_lines = get_lines(&slow);
    let by = &report.latency.by_request;
    assert!(!by.is_empty(), "a per-request view");
    for g in by {
        assert_eq!(
            g.target.p50_us >= 5_000,
            slow_lines.contains(&g.request),
            "{}: target {:?}",
            g.request,
            g.target
        );
    }
    // Every path has its group (400 < the group limit), so every slow one is named. (The order,
    // slowest p99 first, is not asserted: with 10 samples a group's p99 is its maximum, and one
    // fast request held up by the scheduler ranks its path with the slow ones.)
    assert_eq!(by.len(), all.len(), "a group per path");
    let named = by.iter().filter(|g| g.target.p50_us >= 5_000).count();
    assert_eq!(named, slow.len(), "the slow paths, named");
    assert_eq!(
        out.status.code(),
        Some(0),
        "within both gates:\n{}",
        out.log
    );
}

/// The baseline host gets every session too, each request once (the replication under the
/// comparison's noise cancelling).
#[test]
fn the_baseline_host_gets_every_request() {
    let _guard = sequential();
    let mut s = ScenarioSpec::new("cmR", Mode::Assistant, Servers::Embedded, bin_dir());
    s.baseline = Some(Servers::Embedded);
    s.extra_tcpcopy_args = args(&["--compare"]);
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let all = plan::paths("cmpr", 50);
    let load = load(10, 100, None);
    let got = sc
        .lab
        .run_in(sc.lab.ns_client(), || loadgen::run_paths(&load, &all))
        .expect("load runs");
    assert_eq!(got.ok, 1_000);
    let target = sc.wait_target(1_000, Duration::from_secs(60)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut baseline = sc.baseline_uris().unwrap();
    while baseline.len() < 1_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        baseline = sc.baseline_uris().unwrap();
    }
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    let sent: BTreeMap<String, usize> = all
        .iter()
        .cloned()
        .zip(
            loadgen::path_counts(&load, all.len())
                .into_iter()
                .map(|n| n as usize),
        )
        .collect();
    for (name, got) in [("target", &target), ("baseline", &baseline)] {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for u in got {
            *count.entry(u.clone()).or_default() += 1;
        }
        assert_eq!(
            count,
            sent,
            "{name}: each request once\n{}",
            final_line(&log)
        );
    }
    assert_client_isolated(sniffer);
}

/// The redis keys of the generic-protocol test: same width, so none is part of another.
fn redis_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key:{i:04}")).collect()
}

/// Sets `keys` (but `skip`) on the redis server at `addr`, from namespace `ns`.
fn fill_redis(
    sc: &Scenario,
    ns: &str,
    addr: std::net::SocketAddr,
    keys: &[String],
    skip: &[String],
) {
    sc.lab.run_in(ns, || {
        let mut c = RedisConn::connect(addr).expect("connect to redis");
        let sets: Vec<Vec<Vec<u8>>> = keys
            .iter()
            .filter(|k| !skip.contains(k))
            .map(|k| {
                vec![
                    b"SET".to_vec(),
                    k.clone().into_bytes(),
                    format!("value of {k}").into_bytes(),
                ]
            })
            .collect();
        let replies = c.pipeline(&sets).expect("SETs");
        assert!(replies.iter().all(|r| *r == Reply::Simple("OK".into())));
    });
}

/// Done-when 4: redis online and at the target, the target missing 2% of the keys. Clients
/// GET every key, one command at a time on each connection; the report's differences are
/// exactly the GETs of the missing keys.
#[test]
fn redis_target_missing_keys_lists_their_gets() {
    let _guard = sequential();
    let keys = redis_keys(300);
    let mut rng = Rng::new(0xD4);
    let missing = plan::pick(&keys, 6, &mut rng);
    let mut s = spec("cmD", Servers::Redis, &[]);
    s.start_tcpcopy = false;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let (online, target) = (sc.online_service(), sc.target_service());
    fill_redis(&sc, sc.lab.ns_online(), online, &keys, &[]);
    fill_redis(&sc, sc.lab.ns_target(), target, &keys, &missing);
    sc.start_tcpcopy().expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("connected");
    let conns = 10;
    sc.lab.run_in(sc.lab.ns_client(), || {
        std::thread::scope(|s| {
            for c in 0..conns {
                let keys = &keys;
                s.spawn(move || {
                    let mut conn = RedisConn::connect(online).expect("connect online");
                    for i in 0..keys.len() {
                        let k = &keys[(i * 7 + c * 31) % keys.len()];
                        let reply = conn.command(&[b"GET", k.as_bytes()]).expect("GET");
                        assert!(matches!(reply, Reply::Bulk(Some(_))), "{k}: {reply:?}");
                    }
                });
            }
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let out = finish(&mut sc);
    let report = &out.report;
    assert_lossless(report, (conns * keys.len()) as u64);
    // A RESP command is labelled by its words: `GET key:0017`.
    let expected: BTreeSet<String> = missing.iter().map(|k| format!("GET {k}")).collect();
    assert_labels(&report.differences, &expected, "differences");
    for g in &report.differences {
        assert_eq!(g.count, conns as u64, "{}: one per connection", g.request);
        assert_eq!(g.protocol, "bytes", "{}", g.request);
    }
    let cmp = report.comparison.as_ref().expect("a comparison section");
    assert_eq!(cmp.different, (conns * missing.len()) as u64, "{cmp:?}");
}

/// Done-when 8 (loss gate): a target that resets every connection (an iptables reject) loses
/// every request; with `--fail-on-loss 0` tcpcopy exits 3, and the report's causes add up.
#[test]
fn a_resetting_target_fails_the_loss_gate() {
    let _guard = sequential();
    let mut s = spec("cmE", Servers::Embedded, &["--fail-on-loss", "0"]);
    s.start_tcpcopy = false;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    sc.lab
        .sh(
            sc.lab.ns_target(),
            &[
                "iptables",
                "-I",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )
        .expect("reject rule");
    sc.start_tcpcopy().expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("connected");
    let all = plan::paths("cmpe", 10);
    let load = load(5, 20, None);
    let got = sc
        .lab
        .run_in(sc.lab.ns_client(), || loadgen::run_paths(&load, &all))
        .expect("load runs");
    assert_eq!(got.ok, 100);
    std::thread::sleep(Duration::from_secs(2));
    let out = finish(&mut sc);
    assert_eq!(out.status.code(), Some(3), "loss > 0%:\n{}", out.log);
    let cmp = out
        .report
        .comparison
        .as_ref()
        .expect("a comparison section");
    // The target never got a request: none is judged (no "missing" regression); the loss
    // counts say why.
    assert_eq!((cmp.not_sent, cmp.compared), (100, 0), "{cmp:?}");
    let r = &out.report.requests;
    assert!(r.lost > 0, "{r:?}");
    let c = &r.lost_by_cause;
    assert_eq!(sum_causes(c), r.lost, "the causes add up: {c:?}");
    assert!(c.reset_by_target > 0, "{c:?}");
    // Every request the clients sent online counts, also those after the target's reset.
    assert_eq!((r.online, r.lost), (100, 100), "{r:?}");
}

/// Done-when 7 (merge): two runs' reports, merged by `tcpcopy report merge`, add up.
#[test]
fn merged_reports_add_up() {
    let _guard = sequential();
    let all = plan::paths("cmpf", 100);
    let mut rng = Rng::new(0xF6);
    let mut target = AnswerPlan::plain();
    let status = target.choose(&all, 3, &mut rng, Twist::Status(404));
    let mut s = ScenarioSpec::new("cmF", Mode::Assistant, Servers::Embedded, bin_dir());
    s.extra_tcpcopy_args = args(&["--compare"]);
    s.start_tcpcopy = false;
    s.plans.target = target;
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let mut reports = Vec::new();
    for (name, load, before) in [("a", load(5, 40, None), 0), ("b", load(10, 30, None), 200)] {
        let file = format!("{{scratch}}/{name}.json");
        sc.start_tcpcopy_with(&args(&["--report", &file]))
            .expect("tcpcopy starts");
        sc.wait_connected(Duration::from_secs(15))
            .expect("connected");
        let total = load.keepalive_connections * load.requests_per_connection;
        let got = sc
            .lab
            .run_in(sc.lab.ns_client(), || loadgen::run_paths(&load, &all))
            .expect("load runs");
        assert_eq!(got.ok, total as u64);
        sc.wait_target(before + total, Duration::from_secs(60))
            .expect("target log");
        std::thread::sleep(Duration::from_millis(1500));
        let (exit, log) = sc.stop_tcpcopy_status().expect("tcpcopy stops");
        assert!(exit.success(), "{log}");
        let report = sc.read_report(&format!("{name}.json")).expect("report");
        assert_eq!(report.requests.online, total as u64, "run {name}");
        assert_eq!(report.differences.len(), status.len(), "run {name}");
        reports.push(report);
    }
    let merged_path = sc.scratch_file("m.json");
    let out = std::process::Command::new(bin_dir().join("tcpcopy"))
        .args(["report", "merge"])
        .arg(sc.scratch_file("a.json"))
        .arg(sc.scratch_file("b.json"))
        .arg("-o")
        .arg(&merged_path)
        .output()
        .expect("tcpcopy report merge runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Real reports, and the merged one, are what the schema describes.
    let schema = include_str!("../../../docs/report.schema.json");
    let schema: serde_json::Value = serde_json::from_str(schema).expect("the schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    for file in ["a.json", "b.json", "m.json"] {
        let text = std::fs::read_to_string(sc.scratch_file(file)).expect("report file");
        let value: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{file} breaks the schema: {errors:?}");
    }
    let m = lab::scenario::read_report(&merged_path).expect("merged report");
    let (a, b) = (&reports[0], &reports[1]);
    assert_eq!(m.requests.online, a.requests.online + b.requests.online);
    assert_eq!(m.requests.target, a.requests.target + b.requests.target);
    assert_eq!(m.requests.lost, a.requests.lost + b.requests.lost);
    assert_eq!(
        m.latency.online.count,
        a.latency.online.count + b.latency.online.count
    );
    assert_eq!(
        m.latency.target.count,
        a.latency.target.count + b.latency.target.count
    );
    let (ca, cb) = (
        a.comparison.as_ref().unwrap(),
        b.comparison.as_ref().unwrap(),
    );
    let cm = m.comparison.as_ref().expect("merged comparison");
    assert_eq!(cm.compared, ca.compared + cb.compared);
    assert_eq!(cm.different, ca.different + cb.different);
    let (ga, gb) = (by_request(&a.differences), by_request(&b.differences));
    assert_eq!(m.differences.len(), status.len());
    for g in &m.differences {
        let sum = ga.get(g.request.as_str()).map_or(0, |g| g.count)
            + gb.get(g.request.as_str()).map_or(0, |g| g.count);
        assert_eq!(g.count, sum, "{}", g.request);
    }
}

/// The clock-offset estimate: intercept reports its times 3 s ahead (its hidden
/// `--clock-offset-ms`), yet the target's latency stays in milliseconds: tcpcopy estimated the
/// offset over the control channel and took it out.
#[test]
fn a_skewed_intercept_clock_is_corrected() {
    let _guard = sequential();
    let mut s = spec("cmG", Servers::Embedded, &[]);
    s.extra_intercept_args = args(&["--clock-offset-ms", "3000"]);
    let mut sc = Scenario::start(&s).expect("scenario starts");
    let all = plan::paths("cmpg", 100);
    let out = run_http(&mut sc, &all, &load(10, 100, None));
    let t = &out.report.latency.target;
    assert_eq!(t.count, 1_000, "{t:?}");
    assert!(
        t.p50_us > 0 && t.p50_us < 50_000,
        "target median {t:?}\n{}",
        out.log
    );
    assert!(t.max_us < 1_000_000, "no answer 3 s off: {t:?}");
    // The skew was there, and measured: tcpcopy logs each intercept's offset.
    let offsets: Vec<f64> = out
        .log
        .lines()
        .filter_map(|l| {
            l.split_once("clock offset ")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!offsets.is_empty(), "no offset logged:\n{}", out.log);
    assert!(
        offsets.iter().all(|o| (2.99..=3.01).contains(o)),
        "offsets {offsets:?}"
    );
}
