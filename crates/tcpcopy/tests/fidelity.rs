//! Session fidelity end to end: a 100 MB upload through TSO super-segments, a protocol
//! where the server speaks first, memcached hot backup joined mid-connection, and redis pipelining.
//! Each test builds and removes its own lab (needs root); a mutex keeps them sequential.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::time::Duration;

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::stream::{self, Answer, ConnRecord};

/// A 100 MB POST body reaches the target byte-identical, with the veth offloads left on,
/// so tcpcopy captures TSO super-segments (up to 64 KB) and must cut them to the target's MSS.
#[test]
fn hundred_megabyte_upload_with_offloads_on_arrives_byte_identical() {
    upload_arrives_byte_identical(true, "tcU");
}

/// The same with offloads off: every captured segment is at most one MSS.
#[test]
fn hundred_megabyte_upload_with_offloads_off_arrives_byte_identical() {
    upload_arrives_byte_identical(false, "tcV");
}

fn upload_arrives_byte_identical(offload: bool, tag: &str) {
    let _guard = common::sequential();
    // TCPCOPY_UPLOAD_MB and TCPCOPY_UPLOAD_ARGS (e.g. "-m 8192") try other sizes by hand; CI runs
    // 100 MB with the defaults.
    let spec = ScenarioSpec {
        offload,
        extra_tcpcopy_args: std::env::var("TCPCOPY_UPLOAD_ARGS")
            .map(|a| a.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        ..ScenarioSpec::new(
            tag,
            Mode::Assistant,
            Servers::Stream(Answer::Http),
            bin_dir(),
        )
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let online = sc.online_service();
    let mib: u64 = std::env::var("TCPCOPY_UPLOAD_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let started = std::time::Instant::now();
    let sent = sc
        .lab
        .run_in(sc.lab.ns_client(), || stream::upload(online, mib << 20, 4))
        .expect("upload to the online server");
    let online_took = started.elapsed();
    let (on, tg) = sc.stream_servers().unwrap();
    let online_rec = on.wait_records(1, Duration::from_secs(30));
    assert!(sent.matches(&online_rec[0]), "the online server got it all");
    let target_rec = tg.wait_records(1, Duration::from_secs(120));
    let target_took = started.elapsed();
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(
        target_rec.len(),
        1,
        "the upload finished at the target\n{}",
        final_line(&log)
    );
    assert!(
        sent.matches(&target_rec[0]),
        "the target got {} bytes, sha256 {:02x?}; sent {} bytes, sha256 {:02x?}\n{}",
        target_rec[0].bytes,
        &target_rec[0].sha256[..8],
        sent.bytes,
        &sent.sha256[..8],
        final_line(&log)
    );
    assert_eq!(target_rec[0].answered, 1, "the target answered the upload");
    let supers = final_stats(&log).super_segments;
    assert_eq!(
        supers > 0,
        offload,
        "super-segments captured exactly when offloads are on (re-segmentation exercised)\n{}",
        final_line(&log)
    );
    eprintln!(
        "{mib} MiB upload: online {online_took:?}, target done after {target_took:?}; {}",
        final_line(&log)
    );
    assert_client_isolated(sniffer);
}

/// A protocol where the server greets first replicates byte-exact, each session's lines
/// sent only after the target's own greeting.
#[test]
fn server_speaks_first_sessions_replicate_byte_exact() {
    let _guard = common::sequential();
    let spec = ScenarioSpec::new(
        "tcG",
        Mode::Assistant,
        Servers::Stream(Answer::Lines { greeting: true }),
        bin_dir(),
    );
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let online = sc.online_service();
    let sessions = 30;
    let sent: Vec<stream::Sent> = sc.lab.run_in(sc.lab.ns_client(), || {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..sessions)
                .map(|c| {
                    s.spawn(move || {
                        let lines: Vec<Vec<u8>> = (0..40)
                            .map(|i| format!("CMD {c} {i} {}", "x".repeat(i * 37)).into_bytes())
                            .collect();
                        stream::greeted_session(online, &lines)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap().expect("greeted session"))
                .collect()
        })
    });
    let (on, tg) = sc.stream_servers().unwrap();
    let sorted = |mut v: Vec<ConnRecord>| {
        v.sort();
        v
    };
    let online_recs = sorted(on.wait_records(sessions, Duration::from_secs(10)));
    let target_recs = sorted(tg.wait_records(sessions, Duration::from_secs(30)));
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(online_recs.len(), sessions);
    assert_eq!(
        target_recs,
        online_recs,
        "every session's bytes (length and sha256) and answered lines equal online and target\n{}",
        final_line(&log)
    );
    for s in &sent {
        assert!(
            target_recs.iter().any(|r| s.matches(r)),
            "a client session is missing at the target"
        );
    }
    assert!(target_recs.iter().all(|r| r.answered == 40));
    let by_bytes: BTreeMap<u64, usize> = target_recs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.bytes).or_default() += 1;
        m
    });
    eprintln!("{} greeted sessions, sizes {by_bytes:?}", target_recs.len());
    assert_client_isolated(sniffer);
}

/// Where a test reads a server's state from: the target from its own namespace, the online
/// server from the client's.
fn reader_namespaces(sc: &Scenario) -> impl Fn(std::net::SocketAddr) -> String {
    let target = sc.target_service();
    let (target_ns, client_ns) = (
        sc.lab.ns_target().to_string(),
        sc.lab.ns_client().to_string(),
    );
    move |addr| {
        if addr == target {
            target_ns.clone()
        } else {
            client_ns.clone()
        }
    }
}

/// Polls `read` on the target until it equals `want` or `timeout` passes; returns the last reading.
fn wait_equal<T: PartialEq>(
    want: &T,
    timeout: Duration,
    mut read: impl FnMut() -> anyhow::Result<T>,
) -> T {
    let end = std::time::Instant::now() + timeout;
    loop {
        let got = read().expect("reading the target");
        if &got == want || std::time::Instant::now() >= end {
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Redis with 16 commands per round trip; the target's keyspace equals the online one.
#[test]
fn redis_pipelining_keyspace_matches() {
    use lab::redis::{keyspace_diff, pipelined_load, PipelineSpec, RedisConn};
    let _guard = common::sequential();
    let spec = ScenarioSpec::new("tcK", Mode::Assistant, Servers::Redis, bin_dir());
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let (online, target) = (sc.online_service(), sc.target_service());
    let load = PipelineSpec {
        connections: 20,
        rounds: 500,
        per_round: 16,
        seed: 44,
    };
    let client = sc.lab.ns_client().to_string();
    let sent = sc
        .lab
        .run_in(&client, || pipelined_load(online, &load))
        .expect("pipelined load on the online server");
    assert_eq!(sent, 20 * 500 * 16);
    // Each server is read from its own side (the target from its own host), so that the client
    // namespace never hears from the target.
    let ns = reader_namespaces(&sc);
    let keyspace = |addr| {
        sc.lab
            .run_in(&ns(addr), || RedisConn::connect(addr)?.keyspace())
    };
    let want = keyspace(online).expect("online keyspace");
    let got = wait_equal(&want, Duration::from_secs(60), || keyspace(target));
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    let diff = keyspace_diff(&want, &got, 10);
    assert!(
        diff.is_empty(),
        "target keyspace differs ({} keys online, {} target):\n{}\n{}",
        want.len(),
        got.len(),
        diff.join("\n"),
        final_line(&log)
    );
    assert!(
        want.len() > 1000,
        "the load left a real keyspace: {}",
        want.len()
    );
    eprintln!(
        "redis: {sent} pipelined commands, {} keys equal; {}",
        want.len(),
        final_line(&log)
    );
    assert_client_isolated(sniffer);
}

/// Memcached hot backup. 20 connections are open before tcpcopy starts (so every session
/// is joined mid-connection with a synthesized handshake), then 100,000 sets of random keys with
/// values of 10 B to 100 KB; the target's key→value map equals the online one exactly.
#[test]
fn memcached_hot_backup_joined_after_connect_matches_exactly() {
    use lab::memcache::{hot_backup, value_len_stats, HotBackupSpec, MemcacheConn};
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new("tcM", Mode::Assistant, Servers::Memcached, bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sniffer = sniff_client(&sc);
    let (online, target) = (sc.online_service(), sc.target_service());
    let client = sc.lab.ns_client().to_string();
    let conns: Vec<MemcacheConn> = sc.lab.run_in(&client, || {
        (0..20)
            .map(|_| {
                let mut c = MemcacheConn::connect(online)?;
                c.version()?;
                Ok(c)
            })
            .collect::<anyhow::Result<_>>()
            .expect("20 connections to the online memcached")
    });
    sc.start_tcpcopy().expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connected to intercept");
    let load = HotBackupSpec {
        sets: 100_000,
        min_len: 10,
        max_len: 100_000,
        keys_per_connection: 5_000,
        seed: 2026,
    };
    let started = std::time::Instant::now();
    let expected = sc
        .lab
        .run_in(&client, || hot_backup(conns, &load))
        .expect("100,000 sets on the online memcached");
    let online_took = started.elapsed();
    let (min, max, total) = value_len_stats(&expected);

    // Each server is read from its own side (the target from its own host), so that the client
    // namespace never hears from the target.
    let ns = reader_namespaces(&sc);
    let stat = |lab: &lab::Lab, addr, name: &'static str| {
        lab.run_in(&ns(addr), || MemcacheConn::connect(addr)?.stat(name))
            .map(|v| v.unwrap_or(0))
    };
    let target_sets = wait_equal(&100_000, Duration::from_secs(120), || {
        stat(&sc.lab, target, "cmd_set")
    });
    let target_took = started.elapsed();
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(
        target_sets,
        100_000,
        "every set reached the target\n{}",
        final_line(&log)
    );
    assert_eq!(
        final_stats(&log).sessions_joined,
        20,
        "all 20 sessions were joined mid-connection\n{}",
        final_line(&log)
    );
    for addr in [online, target] {
        assert_eq!(
            stat(&sc.lab, addr, "evictions").unwrap(),
            0,
            "{addr}: nothing evicted"
        );
    }

    // The key sets, then every value, batch by batch.
    let mut keys: Vec<String> = expected.keys().cloned().collect();
    keys.sort();
    for addr in [online, target] {
        let mut held = sc
            .lab
            .run_in(&ns(addr), || MemcacheConn::connect(addr)?.keys())
            .expect("key dump");
        held.sort();
        assert!(
            held == keys,
            "{addr} holds {} keys, expected {}",
            held.len(),
            keys.len()
        );
    }
    let mut tg = sc
        .lab
        .run_in(&ns(target), || MemcacheConn::connect(target))
        .expect("connect target");
    let mismatched: Vec<String> = sc.lab.run_in(&client, || {
        let mut on = MemcacheConn::connect(online).expect("connect online");
        let mut bad = Vec::new();
        for batch in keys.chunks(500) {
            let a = on.get_many(batch).expect("online values");
            let b = tg.get_many(batch).expect("target values");
            for k in batch {
                if a.get(k) != expected.get(k) || b.get(k) != expected.get(k) {
                    bad.push(k.clone());
                }
            }
        }
        bad
    });
    assert!(
        mismatched.is_empty(),
        "{} keys differ (first: {:?})",
        mismatched.len(),
        mismatched.first()
    );
    eprintln!(
        "memcached: 100,000 sets, {} keys, values {min}..{max} B, {:.0} MB; online {online_took:?}, target done after {target_took:?}; {}",
        keys.len(),
        total as f64 / 1e6,
        final_line(&log)
    );
    assert_client_isolated(sniffer);
}
