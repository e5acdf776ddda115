//! Offline replay end to end: traffic recorded with tcpdump, and by `tcpcopy --record`,
//! replayed with `tcpcopy -i FILE` against a live target through intercept; `-a` speeds it up; a
//! damaged file replays what came before the damage and ends with a one-line error.
//! Needs root and tcpdump; each test builds and removes its own lab.

mod common;
use common::*;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::{loadgen, LoadSpec};

/// 10,000 requests: 40 keep-alive connections x 200, and 2,000 short ones, at 2,500 req/s so
/// the recording spans about 4 s.
fn load(prefix: &str) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: 40,
        requests_per_connection: 200,
        short_connections: 2_000,
        short_concurrency: 8,
        rate_limit: Some(2_500),
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(60),
    }
}

/// Replays `file` (with extra options) and waits for tcpcopy to finish; returns the wall time,
/// exit status and log.
fn replay(
    sc: &mut Scenario,
    file: &std::path::Path,
    extra: &[&str],
) -> (Duration, std::process::ExitStatus, String) {
    let mut args = vec!["-i".to_string(), file.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let started = Instant::now();
    sc.start_tcpcopy_with(&args).expect("tcpcopy starts");
    let (status, log) = sc
        .wait_tcpcopy_exit(Duration::from_secs(90))
        .expect("the replay ends by itself");
    (started.elapsed(), status, log)
}

/// How long a replay took to read its file, from its "packets read in N s" line (0 without one).
fn read_seconds(log: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains("packets read in"))
        .unwrap_or("");
    line.rsplit("read in ")
        .next()
        .and_then(|v| v.trim_end_matches(" s").trim().parse().ok())
        .unwrap_or(0.0)
}

/// Counts, per URI of `spec`, how often the target got it.
fn counts(sc: &Scenario) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for u in sc.target_uris().unwrap() {
        *m.entry(u).or_default() += 1;
    }
    m
}

/// Every URI of `spec` arrived exactly `times` times.
fn assert_all(sc: &Scenario, spec: &LoadSpec, times: usize, context: &str) {
    let got = counts(sc);
    let (keepalive, short) = loadgen::expected_uris(spec);
    let wrong = keepalive
        .iter()
        .flatten()
        .chain(short.iter())
        .filter(|u| got.get(*u).copied().unwrap_or(0) != times)
        .count();
    assert_eq!(
        wrong, 0,
        "{wrong} of 10000 URIs not {times}x at the target\n{context}"
    );
}

/// A tcpdump recording replays every request; `-a 5` replays it faster, but no faster than five
/// times the recorded pace.
#[test]
fn tcpdump_recording_replays_every_request_and_accelerates() {
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tcY", Mode::Assistant, Servers::Nginx, bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let file = sc.scratch.path().join("online.pcap");
    let mut tcpdump = sc.start_tcpdump(&file).expect("tcpdump");
    let l = load("y");
    let report = sc.load(&l).expect("load");
    assert_eq!(report.ok, 10_000);
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop().expect("tcpdump stops");
    let summary = tcpdump.log_text();
    eprintln!(
        "tcpdump: {}",
        summary.lines().skip(1).collect::<Vec<_>>().join("; ")
    );
    assert!(
        summary
            .lines()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "the recording itself is complete: {summary}"
    );
    assert!(
        sc.target_uris().unwrap().is_empty(),
        "nothing replicated yet"
    );

    let (t1, status, log) = replay(&mut sc, &file, &[]);
    assert!(status.success(), "replay at 1x failed:\n{log}");
    sc.wait_target(10_000, Duration::from_secs(30)).unwrap();
    assert_all(&sc, &l, 1, final_line(&log));

    let (t5, status, log5) = replay(&mut sc, &file, &["-a", "5"]);
    assert!(status.success(), "replay at 5x failed:\n{log5}");
    sc.wait_target(20_000, Duration::from_secs(30)).unwrap();
    assert_all(&sc, &l, 2, final_line(&log5));
    // Both runs include ~3 s of idle wait after the file ends; compare the reading time.
    let (r1, r5) = (read_seconds(&log), read_seconds(&log5));
    eprintln!(
        "replay of {:.1} s of recording: 1x read in {r1:.2} s (run {t1:?}), -a 5 in {r5:.2} s (run {t5:?}), ratio {:.2}",
        report.elapsed.as_secs_f64(),
        r1 / r5
    );
    assert!(r1 > 2.0, "the 1x replay kept the recorded pace: {r1} s");
    // A busy machine can only slow a replay down, never speed it up: so -a 5 must not read the
    // file faster than a fifth of the recorded time (with a margin for where the recording's
    // first and last packets fall), and must be clearly faster than the 1x replay, which the
    // same load slows as much.
    let recorded = report.elapsed.as_secs_f64();
    assert!(
        r5 >= 0.8 * recorded / 5.0,
        "-a 5 read the file in {r5:.2} s: faster than the {recorded:.2} s recording allows"
    );
    assert!(
        r5 <= r1 / 2.0,
        "-a 5 read the file in {r5:.2} s, not clearly faster than the 1x replay's {r1:.2} s"
    );

    // C TCPCopy's -T: the file twice over, each pass new sessions at the target.
    let (_, status, log_t) = replay(&mut sc, &file, &["-a", "5", "-T", "2"]);
    assert!(status.success(), "replay -T 2 failed:\n{log_t}");
    sc.wait_target(40_000, Duration::from_secs(30)).unwrap();
    assert_all(&sc, &l, 4, final_line(&log_t));
    assert!(log_t.contains("replay: pass 2 of 2"), "{log_t}");
    assert_client_isolated(sniffer);
}

/// `tcpcopy --record` writes pcapng that replays the same way; a damaged copy replays what
/// came before the damage and ends with a one-line error.
#[test]
fn recorded_pcapng_replays_and_a_truncated_file_replays_its_readable_part() {
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tcZ", Mode::Assistant, Servers::Nginx, bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let file = sc.scratch.path().join("recorded.pcapng");
    sc.start_tcpcopy_with(&["--record".into(), file.display().to_string()])
        .unwrap();
    sc.wait_connected(Duration::from_secs(15)).unwrap();
    let l = load("z");
    assert_eq!(sc.load(&l).unwrap().ok, 10_000);
    sc.wait_target(10_000, Duration::from_secs(30)).unwrap();
    let log = sc.stop_tcpcopy().unwrap();
    assert_all(&sc, &l, 1, final_line(&log));

    let (_, status, log) = replay(&mut sc, &file, &["-a", "4"]);
    assert!(status.success(), "replay of the recording failed:\n{log}");
    sc.wait_target(20_000, Duration::from_secs(30)).unwrap();
    assert_all(&sc, &l, 2, final_line(&log));

    // Cut the file at 60%: the first part replays, then one line names the damage.
    let bytes = std::fs::read(&file).unwrap();
    let cut = sc.scratch.path().join("cut.pcapng");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let before = sc.target_uris().unwrap().len();
    let (_, status, log) = replay(&mut sc, &cut, &["-a", "4"]);
    assert_eq!(status.code(), Some(1), "a damaged file exits 1:\n{log}");
    let last = log.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("tcpcopy: {}: truncated after ", cut.display()))
            && last.ends_with(" packets"),
        "one-line error naming the damage, got {last:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let replayed = sc.target_uris().unwrap().len() - before;
    eprintln!("truncated replay: {replayed} requests replayed before the damage; {last}");
    assert!(
        (3_000..10_000).contains(&replayed),
        "the readable part was replayed: {replayed} requests\n{}",
        final_line(&log)
    );
    assert_client_isolated(sniffer);
}

/// A recording that holds both directions (tcpdump's `port 80`) gives the online server's answers
/// too: replayed with `--compare`, every request's target answer is compared with the recorded
/// one (nginx on both sides answers alike), and the online latency comes from the file's times.
#[test]
fn a_recording_of_both_directions_compares_the_target_s_answers_with_the_recorded_ones() {
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tcW", Mode::Assistant, Servers::Nginx, bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let file = sc.scratch.path().join("both.pcap");
    let mut tcpdump = sc.start_tcpdump(&file).expect("tcpdump");
    let l = LoadSpec {
        short_connections: 500,
        ..load("w")
    };
    let total = l.keepalive_connections * l.requests_per_connection + l.short_connections;
    let report = sc.load(&l).expect("load");
    assert_eq!(report.ok, total as u64);
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop().expect("tcpdump stops");
    let json = sc.scratch.path().join("replay.json");
    let (_, status, log) = replay(
        &mut sc,
        &file,
        &[
            "-a",
            "4",
            "--compare",
            "--report",
            &json.display().to_string(),
        ],
    );
    assert!(status.success(), "replay failed:\n{log}");
    let r = lab::scenario::read_report(&json).expect("the report");
    let c = r.comparison.as_ref().expect("a comparison");
    assert_eq!(r.requests.online, total as u64, "{}", final_line(&log));
    assert_eq!(r.requests.lost, 0);
    assert_eq!(c.compared, total as u64, "{c:?}");
    assert_eq!(c.equal, total as u64, "{c:?}\n{:?}", r.differences);
    assert_eq!(c.unanswered_online, 0, "the file's answers were read");
    assert_eq!(r.latency.online.count, total as u64);
    assert!(
        r.latency.online.p50_us < 50_000,
        "online latency from the file's times: {:?}",
        r.latency.online
    );
}

/// Stream mode replays a file too (no intercept, no privilege needed): every request of a
/// tcpdump recording reaches the target over tcpcopy's own connections, at the recorded pace, and
/// `-a 5` faster.
#[test]
fn a_recording_replays_in_stream_mode_at_its_pace_and_faster() {
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        start_intercept: false,
        ..ScenarioSpec::new("tcZ", Mode::Stream, Servers::Nginx, bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let file = sc.scratch.path().join("online.pcap");
    let mut tcpdump = sc.start_tcpdump(&file).expect("tcpdump");
    let l = load("z");
    let report = sc.load(&l).expect("load");
    assert_eq!(report.ok, 10_000);
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop().expect("tcpdump stops");
    assert!(
        sc.target_uris().unwrap().is_empty(),
        "nothing replicated yet"
    );

    let (t1, status, log) = replay(&mut sc, &file, &[]);
    assert!(status.success(), "stream replay at 1x failed:\n{log}");
    sc.wait_target(10_000, Duration::from_secs(30)).unwrap();
    assert_all(&sc, &l, 1, final_line(&log));
    let (t5, status, log5) = replay(&mut sc, &file, &["-a", "5"]);
    assert!(status.success(), "stream replay at 5x failed:\n{log5}");
    sc.wait_target(20_000, Duration::from_secs(30)).unwrap();
    assert_all(&sc, &l, 2, final_line(&log5));
    let (r1, r5) = (read_seconds(&log), read_seconds(&log5));
    eprintln!(
        "stream replay of {:.1} s of recording: 1x read in {r1:.2} s (run {t1:?}), -a 5 in {r5:.2} s (run {t5:?})",
        report.elapsed.as_secs_f64()
    );
    assert!(r1 > 2.0, "the 1x replay kept the recorded pace: {r1} s");
    assert!(
        r5 <= r1 / 2.0,
        "-a 5 read the file in {r5:.2} s, not clearly faster than the 1x replay's {r1:.2} s"
    );
}
