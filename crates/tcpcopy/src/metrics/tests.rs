//! Rendering parsed back with a text-format parser, and the server scraped over TCP.

use super::*;
use compare::report::Bucket;
use prometheus_parse::{Scrape, Value};
use std::sync::atomic::{AtomicU64, Ordering};

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Value {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?} in the scrape"))
        .value
        .clone()
}

fn num(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(s, name, labels) {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// 10 samples: 4 at most 1 ms, 5 at most 4 ms, 1 at most 3 s; mean 2 ms.
fn dist(cumulative: bool) -> Dist {
    let counts = [(1_000, 4), (4_000, 5), (3_000_000, 1)];
    let mut total = 0;
    let buckets = counts
        .iter()
        .map(|&(le_us, n)| {
            total += n;
            Bucket {
                le_us,
                count: if cumulative { total } else { n },
            }
        })
        .collect();
    Dist {
        count: 10,
        mean_us: 2_000.0,
        buckets,
        ..Dist::default()
    }
}

fn tcpcopy_snapshot(online: u64) -> Snapshot {
    Snapshot {
        stats: Some(session::Stats {
            requests_online: online,
            requests_target: 990,
            requests_sampled_out: 1,
            lost: session::LostRequests {
                overflow: 6,
                not_answered: 4,
                ..session::LostRequests::default()
            },
            sessions_completed: 40,
            sessions_reset_by_target: 2,
            sessions_active: 7,
            sessions_half_open: 12,
            sessions_half_open_shed: 900,
            sessions_half_open_expired: 40,
            retransmits: 3,
            fast_retransmits: 5,
            packets_sent: 5_000,
            capture_drops: 11,
            ..session::Stats::default()
        }),
        compare: Some(compare::Live {
            compared: 980,
            equal: 960,
            different: 15,
            noise: 5,
            open: 10,
        }),
        latency_online: Some(dist(false)),
        latency_target: Some(dist(true)),
        intercept: None,
        stream: None,
        protocol: None,
    }
}

#[test]
fn tcpcopy_counters_parse_back_under_conventional_names() {
    let s = parse(&render(&tcpcopy_snapshot(1_000)));
    // Online counts the one request -r left out too, as the report does.
    assert_eq!(num(&s, "tcpcopy_requests_online_total", &[]), 1_001.0);
    assert_eq!(num(&s, "tcpcopy_requests_target_total", &[]), 990.0);
    let lost = |cause| num(&s, "tcpcopy_requests_lost_total", &[("cause", cause)]);
    assert_eq!((lost("overflow"), lost("not_answered")), (6.0, 4.0));
    assert_eq!((lost("never_captured"), lost("sampled_out")), (0.0, 1.0));
    let ended = |end| num(&s, "tcpcopy_sessions_total", &[("end", end)]);
    assert_eq!((ended("completed"), ended("reset_by_target")), (40.0, 2.0));
    assert_eq!(value(&s, "tcpcopy_sessions_active", &[]), Value::Gauge(7.0));
    assert_eq!(
        value(&s, "tcpcopy_sessions_half_open", &[]),
        Value::Gauge(12.0)
    );
    let dropped = |why| {
        num(
            &s,
            "tcpcopy_sessions_half_open_dropped_total",
            &[("why", why)],
        )
    };
    assert_eq!((dropped("shed"), dropped("expired")), (900.0, 40.0));
    assert_eq!(num(&s, "tcpcopy_packets_sent_total", &[]), 5_000.0);
    let resent = |kind| num(&s, "tcpcopy_retransmits_total", &[("kind", kind)]);
    assert_eq!((resent("timeout"), resent("fast")), (3.0, 5.0));
    assert_eq!(num(&s, "tcpcopy_capture_drops_total", &[]), 11.0);
    let compared = |r| num(&s, "tcpcopy_compared_total", &[("result", r)]);
    assert_eq!(
        (compared("equal"), compared("different"), compared("noise")),
        (960.0, 15.0, 5.0)
    );
    assert!(
        matches!(
            value(&s, "tcpcopy_requests_online_total", &[]),
            Value::Counter(_)
        ),
        "typed as a counter"
    );
    assert!(!s.samples.iter().any(|x| x.metric.starts_with("intercept_")));
    assert!(!s
        .samples
        .iter()
        .any(|x| x.metric.starts_with("tcpcopy_stream")));
}

#[test]
fn logins_are_counted_by_outcome_only_with_a_protocol() {
    let mut snap = tcpcopy_snapshot(10);
    snap.stats.as_mut().unwrap().logins = session::Logins {
        logged_in: 40,
        joined_logged_in: 2,
        refused: 3,
        tls: 4,
        no_credentials: 5,
        unsupported: 6,
        malformed: 7,
    };
    let without = parse(&render(&snap));
    assert!(!without
        .samples
        .iter()
        .any(|x| x.metric.starts_with("tcpcopy_logins")));
    snap.protocol = Some("mysql");
    let s = parse(&render(&snap));
    let logins = |o| num(&s, "tcpcopy_logins_total", &[("outcome", o)]);
    assert_eq!((logins("ok"), logins("ok_joined")), (40.0, 2.0));
    assert_eq!(
        (
            logins("refused"),
            logins("tls"),
            logins("no_login_known"),
            logins("unsupported"),
            logins("malformed")
        ),
        (3.0, 4.0, 5.0, 6.0, 7.0)
    );
    assert!(matches!(
        value(&s, "tcpcopy_logins_total", &[("outcome", "ok")]),
        Value::Counter(_)
    ));
}

#[test]
fn stream_mode_counts_its_connections_and_bytes() {
    let snap = Snapshot {
        stream: Some(bridge::Stats {
            opened: 30,
            refused: 2,
            tls_failed: 1,
            idle_closed: 4,
            bytes_written: 1000,
            bytes_read: 5000,
            ..bridge::Stats::default()
        }),
        ..tcpcopy_snapshot(10)
    };
    let s = parse(&render(&snap));
    let conns = |r| num(&s, "tcpcopy_stream_connections_total", &[("result", r)]);
    assert_eq!(
        (conns("opened"), conns("refused"), conns("tls_failed")),
        (30.0, 2.0, 1.0)
    );
    let closed = |w| num(&s, "tcpcopy_stream_closed_total", &[("why", w)]);
    assert_eq!((closed("idle"), closed("reset_by_target")), (4.0, 0.0));
    let bytes = |d| num(&s, "tcpcopy_stream_bytes_total", &[("direction", d)]);
    assert_eq!((bytes("written"), bytes("read")), (1000.0, 5000.0));
}

#[test]
fn latency_histograms_are_cumulative_in_seconds_whatever_the_dist_reading() {
    let text = render(&tcpcopy_snapshot(1_000));
    let s = parse(&text);
    for side in ["online", "target"] {
        let Value::Histogram(buckets) =
            value(&s, "tcpcopy_response_latency_seconds", &[("side", side)])
        else {
            panic!("{side}: not a histogram");
        };
        let at = |le: f64| {
            buckets
                .iter()
                .find(|b| b.less_than == le || (b.less_than - le).abs() < 1e-12)
                .unwrap_or_else(|| panic!("{side}: no bucket le={le}"))
                .count
        };
        assert_eq!(at(0.0005), 0.0, "{side}");
        assert_eq!(at(0.001), 4.0, "{side}");
        // 4 ms falls between 2.5 ms and 5 ms: counted under 5 ms, never earlier.
        assert_eq!((at(0.0025), at(0.005)), (4.0, 9.0), "{side}");
        assert_eq!((at(2.5), at(5.0), at(f64::INFINITY)), (9.0, 10.0, 10.0));
        assert!(text.contains(&format!(
            "tcpcopy_response_latency_seconds_count{{side=\"{side}\"}} 10\n"
        )));
        assert!(text.contains(&format!(
            "tcpcopy_response_latency_seconds_sum{{side=\"{side}\"}} 0.02\n"
        )));
    }
}

#[test]
fn intercept_snapshot_shows_only_intercept_metrics() {
    let snap = Snapshot {
        intercept: Some(InterceptCounters {
            responses: 100,
            routed: 90,
            broadcast: 8,
            malformed: 2,
            capture_drops: 1,
            frames_dropped: 3,
            connections: 2,
        }),
        ..Snapshot::default()
    };
    let s = parse(&render(&snap));
    assert_eq!(num(&s, "intercept_responses_total", &[]), 100.0);
    let sent = |to| num(&s, "intercept_responses_sent_total", &[("to", to)]);
    assert_eq!((sent("owner"), sent("everyone")), (90.0, 8.0));
    assert_eq!(num(&s, "intercept_responses_malformed_total", &[]), 2.0);
    assert_eq!(num(&s, "intercept_capture_drops_total", &[]), 1.0);
    assert_eq!(num(&s, "intercept_frames_dropped_total", &[]), 3.0);
    assert_eq!(value(&s, "intercept_connections", &[]), Value::Gauge(2.0));
    assert!(s.samples.iter().all(|x| x.metric.starts_with("intercept_")));
}

/// One HTTP exchange: the status line and the body.
fn get(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut c = TcpStream::connect(addr).expect("connects");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).expect("sends");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("reads to the close");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn server_answers_each_scrape_with_a_fresh_snapshot() {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let source: Source =
        Arc::new(move || tcpcopy_snapshot(1_000 + counted.fetch_add(1, Ordering::SeqCst)));
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), source).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    for n in 0..2 {
        let (status, body) = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let s = parse(&body);
        assert_eq!(
            num(&s, "tcpcopy_requests_online_total", &[]),
            1_001.0 + n as f64
        );
    }
    let (status, _) = get(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "a query string is ignored");
    let (status, _) = get(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = get(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_REQUEST)
    );
    let (status, _) = get(addr, huge.as_bytes());
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "a snapshot per scrape only"
    );
    drop(server);
    assert!(
        TcpStream::connect(addr).is_err(),
        "stopped when dropped: nothing listens"
    );
}

#[test]
fn a_silent_client_delays_the_next_scrape_at_most_the_timeout() {
    let source: Source = Arc::new(|| tcpcopy_snapshot(5));
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), source).unwrap();
    let _silent = TcpStream::connect(server.local_addr()).unwrap();
    let started = Instant::now();
    let (status, _) = get(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(started.elapsed() < IO_TIMEOUT + Duration::from_secs(1));
}

#[test]
fn an_occupied_address_is_one_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let source: Source = Arc::new(Snapshot::default);
    let err = MetricsServer::start(addr, source).err().expect("refused");
    let line = format!("{err:#}");
    assert!(
        line.starts_with(&format!("cannot serve metrics on {addr}: ")),
        "{line}"
    );
    assert!(line.contains("in use"), "{line}");
    assert!(!line.contains('\n'));
}
