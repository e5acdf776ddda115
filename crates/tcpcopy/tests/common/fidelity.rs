//! The fidelity scenarios that run in more than one mode (packet mode with intercept in
//! `tests/fidelity.rs`, stream mode in `tests/stream_mode.rs`), and their helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};
use lab::stream::{self, Answer, ConnRecord};

use super::*;

/// A protocol where the server greets first replicates byte-exact, each session's lines
/// sent only after the target's own greeting.
pub fn greeted_sessions_replicate_byte_exact(tag: &str, mode: Mode) {
    let _guard = sequential();
    let spec = ScenarioSpec::new(
        tag,
        mode,
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
pub fn reader_namespaces(sc: &Scenario) -> impl Fn(std::net::SocketAddr) -> String {
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
pub fn wait_equal<T: PartialEq>(
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

/// Memcached hot backup. 20 connections are open before tcpcopy starts (so every session
/// is joined mid-connection with a synthesized handshake), then 100,000 sets of random keys with
/// values of 10 B to 100 KB; the target's key→value map equals the online one exactly.
pub fn memcached_hot_backup_matches_exactly(tag: &str, mode: Mode) {
    use lab::memcache::{hot_backup, value_len_stats, HotBackupSpec, MemcacheConn};
    let _guard = sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        ..ScenarioSpec::new(tag, mode, Servers::Memcached, bin_dir())
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
        .expect("tcpcopy connected to intercept (stream mode: capturing)");
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
