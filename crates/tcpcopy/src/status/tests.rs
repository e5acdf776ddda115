//! The status text from known snapshots, and the status thread on a hidden terminal.

use super::*;
use compare::report::{Bucket, Dist};
use std::sync::atomic::{AtomicU64, Ordering};

fn dist(buckets: &[(u64, u64)]) -> Dist {
    Dist {
        count: buckets.iter().map(|b| b.1).sum(),
        buckets: buckets
            .iter()
            .map(|&(le_us, count)| Bucket { le_us, count })
            .collect(),
        ..Dist::default()
    }
}

fn snap(online: u64, target: u64, latency: &[(u64, u64)]) -> Snapshot {
    Snapshot {
        stats: Some(session::Stats {
            requests_online: online,
            requests_target: target,
            lost: session::LostRequests {
                overflow: 3,
                not_answered: 2,
                ..session::LostRequests::default()
            },
            ..session::Stats::default()
        }),
        compare: Some(compare::Live {
            compared: 900,
            equal: 880,
            different: 15,
            noise: 5,
            open: 0,
        }),
        latency_online: Some(dist(latency)),
        latency_target: None,
        intercept: None,
        stream: None,
        protocol: None,
    }
}

#[test]
fn line_shows_rates_over_the_last_tick_loss_diffs_and_latency() {
    let t0 = Instant::now();
    let mut h = History::default();
    h.push(t0, snap(0, 0, &[]));
    h.push(
        t0 + Duration::from_secs(2),
        snap(24_000, 1_000, &[(900, 10)]),
    );
    let line = h.line();
    assert_eq!(
        line,
        "req/s online 12.0k target 500 · lost 5 (0.02%) · diffs 15 (+5 noise) of 900 \
         · p50/p99 online 900µs/900µs target -"
    );
}

#[test]
fn stream_mode_line_says_so_with_its_connections() {
    let mut h = History::default();
    let s = Snapshot {
        stream: Some(bridge::Stats {
            opened: 40,
            refused: 2,
            tls_failed: 1,
            ..bridge::Stats::default()
        }),
        ..Snapshot::default()
    };
    h.push(Instant::now(), s.clone());
    h.push(Instant::now(), s);
    assert_eq!(
        h.line(),
        "req/s online 0 target 0 · stream: 40 connections, 3 failed"
    );
}

#[test]
fn a_protocol_line_says_how_many_sessions_logged_in() {
    let mut h = History::default();
    let s = Snapshot {
        stats: Some(session::Stats {
            logins: session::Logins {
                logged_in: 9,
                joined_logged_in: 1,
                refused: 2,
                tls: 1,
                ..session::Logins::default()
            },
            ..session::Stats::default()
        }),
        protocol: Some("postgres"),
        ..Snapshot::default()
    };
    h.push(Instant::now(), s.clone());
    h.push(Instant::now(), s);
    assert_eq!(
        h.line(),
        "req/s online 0 target 0 · lost 0 · postgres logins 10 ok, 3 not"
    );
}

#[test]
fn first_line_has_no_rates_yet() {
    let mut h = History::default();
    h.push(Instant::now(), Snapshot::default());
    assert_eq!(h.line(), "");
    h.push(Instant::now(), Snapshot::default());
    assert_eq!(h.line(), "req/s online 0 target 0");
}

#[test]
fn latency_is_over_the_window_not_the_whole_run() {
    let t0 = Instant::now();
    let mut h = History::default();
    // 1,000 fast answers early in the run, then 100 slow ones in the last ticks.
    h.push(t0, snap(0, 0, &[(1_000, 1_000)]));
    for i in 1..=WINDOW as u64 {
        h.push(
            t0 + Duration::from_secs(i),
            snap(0, 0, &[(1_000, 1_000), (50_000, 20 * i)]),
        );
    }
    assert!(
        h.line().ends_with("p50/p99 online 50.0ms/50.0ms target -"),
        "{}",
        h.line()
    );
    // One more tick drops the oldest snapshot (the window's first one already had 20 slow):
    // 100 slow and 5 slower in the window.
    h.push(
        t0 + Duration::from_secs(WINDOW as u64 + 1),
        snap(0, 0, &[(1_000, 1_000), (50_000, 120), (2_500_000, 5)]),
    );
    assert_eq!(h.snaps.len(), WINDOW + 1);
    assert!(
        h.line().ends_with("online 50.0ms/2.50s target -"),
        "{}",
        h.line()
    );
}

#[test]
fn percentiles_take_the_bucket_holding_the_rank() {
    assert_eq!(percentiles(&[]), None);
    assert_eq!(percentiles(&[(100, 0)]), None);
    assert_eq!(
        percentiles(&[(100, 50), (200, 49), (300, 1)]),
        Some((100, 200))
    );
    assert_eq!(
        percentiles(&[(100, 49), (200, 50), (300, 1)]),
        Some((200, 200))
    );
    assert_eq!(percentiles(&[(100, 1), (5_000, 1)]), Some((100, 5_000)));
}

#[test]
fn thread_redraws_each_tick_and_stops_when_dropped() {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let source: StatusSource = Arc::new(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        StatusSnapshot {
            counters: snap(n * 100, n * 100, &[]),
            progress: Some((n * 10, 1_000)),
        }
    });
    let status = Status::start_on(
        ProgressDrawTarget::hidden(),
        Duration::from_millis(20),
        true,
        source,
    );
    assert!(status.is_shown());
    let bar = status.running.as_ref().unwrap().bar.clone();
    thread::sleep(Duration::from_millis(300));
    let (pos, len) = (bar.position(), bar.length());
    let stopped_at = Instant::now();
    drop(status);
    assert!(
        stopped_at.elapsed() < Duration::from_millis(500),
        "stops at once"
    );
    let n = calls.load(Ordering::SeqCst);
    assert!(n >= 3, "a snapshot per tick ({n})");
    assert_eq!(len, Some(1_000));
    assert!(
        pos >= 30 && pos % 10 == 0,
        "the replay's progress is a snapshot's ({pos})"
    );
    let message = bar.message();
    assert!(
        message.starts_with("req/s online ") && message.contains(" · lost 5 ("),
        "{message}"
    );
    thread::sleep(Duration::from_millis(60));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        n,
        "no snapshot after the drop"
    );
    assert!(
        lock_shown().is_none(),
        "log lines go straight to stderr again"
    );
    assert_eq!(suspend(|| 7), 7);
}
