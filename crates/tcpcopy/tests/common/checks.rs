//! The load of the replication bar and its checks, shared by the lab and cloud tests: every
//! request at the target exactly once, each connection's in its order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lab::scenario::Scenario;
use lab::{loadgen, LoadSpec};

/// `conns` keep-alive connections of `per_conn` requests and `short` one-request connections to
/// the online server, as fast as they go; URIs start with `/{prefix}/`.
pub fn load(prefix: &str, conns: usize, per_conn: usize, short: usize) -> LoadSpec {
    LoadSpec {
        target: Scenario::online_addr(),
        keepalive_connections: conns,
        requests_per_connection: per_conn,
        short_connections: short,
        short_concurrency: 8,
        rate_limit: None,
        uri_prefix: prefix.into(),
        deadline: Duration::from_secs(120),
    }
}

/// The URIs of `spec` that `target` lacks, sorted.
pub fn missing_uris(spec: &LoadSpec, target: &[String]) -> Vec<String> {
    let got: HashSet<&String> = target.iter().collect();
    let (keepalive, short) = loadgen::expected_uris(spec);
    let mut missing: Vec<String> = keepalive
        .into_iter()
        .flatten()
        .chain(short)
        .filter(|u| !got.contains(u))
        .collect();
    missing.sort();
    missing
}

/// Every request of `spec` arrived at the target (whose log is `target`) exactly once, and each
/// keep-alive connection's in its original order. `context` goes into the messages.
#[track_caller]
pub fn assert_every_request_once_in_order(spec: &LoadSpec, target: &[String], context: &str) {
    let (keepalive, short) = loadgen::expected_uris(spec);
    let total = keepalive.iter().map(Vec::len).sum::<usize>() + short.len();
    let missing = missing_uris(spec, target);
    assert!(
        missing.is_empty(),
        "{} of {total} URIs never reached the target (first: {:?})\n{context}",
        missing.len(),
        missing.first(),
    );
    assert_eq!(
        target.len(),
        total,
        "no request arrived twice at the target\n{context}"
    );
    assert_connections_in_order(&keepalive, target);
}

/// Each connection's requests (of those at the target) arrived in their original order.
#[track_caller]
pub fn assert_connections_in_order(connections: &[Vec<String>], target: &[String]) {
    let position: HashMap<&String, usize> =
        target.iter().enumerate().map(|(i, u)| (u, i)).collect();
    for (c, uris) in connections.iter().enumerate() {
        let pos: Vec<usize> = uris
            .iter()
            .filter_map(|u| position.get(u).copied())
            .collect();
        assert!(
            pos.windows(2).all(|w| w[0] < w[1]),
            "connection {c}: requests reordered at the target"
        );
    }
}

/// Polls the target's log until it has not grown for 3 s (or `timeout` passed).
pub fn settled_target(sc: &Scenario, timeout: Duration) -> Vec<String> {
    let end = std::time::Instant::now() + timeout;
    let mut last = sc.target_uris().unwrap();
    let mut since = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = sc.target_uris().unwrap();
        if now.len() != last.len() {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= Duration::from_secs(3) || std::time::Instant::now() >= end {
            return now;
        }
    }
}
