//! The comparator on simulated times: pairing, judging, grouping, noise, copies, latency,
//! merging and the report.

use compare::report::{Report, SCHEMA_VERSION};
use compare::{AnswerSegment, Comparator, CompareConfig, Digest, Flow, Nanos, Side, Summary};

const MS: Nanos = 1_000_000;
/// Simulated runs start at this Unix time.
const T0: Nanos = 1_700_000_000 * 1_000_000_000;

fn flow(n: u16) -> Flow {
    Flow {
        client: format!("10.0.0.1:{}", 20_000 + n).parse().unwrap(),
        server: "10.0.0.2:80".parse().unwrap(),
    }
}

fn cfg() -> CompareConfig {
    CompareConfig {
        settle: 100 * MS,
        ..CompareConfig::default()
    }
}

/// Who answers: online, a target copy, or the baseline.
#[derive(Clone, Copy)]
enum By {
    Online,
    Side(Side),
}
const ONLINE: By = By::Online;
const TARGET: By = By::Side(Side::Target(0));
const BASELINE: By = By::Side(Side::Baseline);

/// One client connection, with every server's sequence numbers.
struct Conn {
    flow: Flow,
    client_seq: u32,
    online_seq: u32,
    /// Target copies 0, 1, then the baseline.
    side_seq: [u32; 3],
    /// Bytes of each target answer segment that intercept forwards.
    forwarded: usize,
}

impl Conn {
    fn new(n: u16) -> Conn {
        Conn {
            flow: flow(n),
            client_seq: 1_000 + u32::from(n) * 7,
            online_seq: 50_000,
            side_seq: [u32::MAX - 100, 900_000, 4_000_000_000],
            forwarded: 1024,
        }
    }

    /// The client sends `bytes` at `ms`; returns the request's end.
    fn request(&mut self, c: &mut Comparator, ms: u64, bytes: &[u8]) -> u32 {
        c.request(
            T0 + ms * MS,
            self.flow,
            self.client_seq,
            self.online_seq,
            bytes,
            false,
            false,
        );
        self.client_seq = self.client_seq.wrapping_add(bytes.len() as u32);
        self.client_seq
    }

    fn sent(&self, c: &mut Comparator, side: Side, ms: u64, end: u32) {
        c.sent(self.flow, side, end, T0 + ms * MS);
    }

    /// `by` answers request `end` with `bytes` at `ms`, cut after each offset in `cuts`.
    fn answer(
        &mut self,
        c: &mut Comparator,
        by: By,
        ms: u64,
        end: u32,
        bytes: &[u8],
        cuts: &[usize],
    ) {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&x| x > 0 && x < bytes.len()));
        bounds.push(bytes.len());
        bounds.sort_unstable();
        bounds.dedup();
        for w in bounds.windows(2) {
            let piece = &bytes[w[0]..w[1]];
            let seq = *self.seq(by);
            self.send_piece(c, by, ms, end, seq, piece);
            *self.seq(by) = seq.wrapping_add(piece.len() as u32);
        }
    }

    /// One answer segment at an explicit sequence number (no bookkeeping).
    fn send_piece(&self, c: &mut Comparator, by: By, ms: u64, end: u32, seq: u32, piece: &[u8]) {
        let head = match by {
            By::Online => piece,
            By::Side(_) => &piece[..piece.len().min(self.forwarded)],
        };
        let seg = AnswerSegment {
            at: T0 + ms * MS,
            seq,
            ack: end,
            len: piece.len() as u32,
            digest: Digest::of(piece),
            head,
            fin: false,
            rst: false,
        };
        match by {
            By::Online => c.online_answer(self.flow, &seg),
            By::Side(side) => c.target_answer(self.flow, side, &seg),
        }
    }

    fn seq(&mut self, by: By) -> &mut u32 {
        match by {
            By::Online => &mut self.online_seq,
            By::Side(Side::Target(n)) => &mut self.side_seq[usize::from(n)],
            By::Side(Side::Baseline) => &mut self.side_seq[2],
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path}?q=1 HTTP/1.1\r\nHost: example\r\n\r\n").into_bytes()
}

fn ok(status: u16, date: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nDate: {date}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One exchange: the request at `ms`, online answers 1 ms later, the target 3 ms later.
fn exchange(
    c: &mut Comparator,
    k: &mut Conn,
    ms: u64,
    path: &str,
    online: &[u8],
    target: &[u8],
) -> u32 {
    let end = k.request(c, ms, &get(path));
    k.answer(c, ONLINE, ms + 1, end, online, &[]);
    k.sent(c, Side::Target(0), ms + 1, end);
    k.answer(c, TARGET, ms + 4, end, target, &[]);
    end
}

#[test]
fn same_answer_cut_differently_online_and_at_the_target_is_equal() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    let body = "x".repeat(3000);
    let answer = ok(200, "Mon", &body);
    let end = k.request(&mut c, 0, &get("/big"));
    k.answer(&mut c, ONLINE, 1, end, &answer, &[1448, 2896]);
    k.sent(&mut c, Side::Target(0), 1, end);
    k.forwarded = 100; // intercept forwards each segment's first 100 bytes only
    k.answer(&mut c, TARGET, 3, end, &answer, &[10, 11, 700, 2000]);
    let s = c.finish();
    assert_eq!(s.comparison.compared, 1);
    assert_eq!(s.comparison.equal, 1, "{:?}", s.differences);
}

#[test]
fn a_different_date_header_is_not_a_difference() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    exchange(
        &mut c,
        &mut k,
        0,
        "/a",
        &ok(200, "Mon, 01", "hi"),
        &ok(200, "Tue, 02", "hi"),
    );
    let s = c.finish();
    assert_eq!((s.comparison.compared, s.comparison.equal), (1, 1));
    assert!(s.differences.is_empty());
}

#[test]
fn a_different_status_is_grouped_by_request_and_status_pair() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    for i in 0..3 {
        exchange(
            &mut c,
            &mut k,
            i * 10,
            "/a/b",
            &ok(200, "d", "ok"),
            &ok(500, "d", "ok"),
        );
    }
    exchange(
        &mut c,
        &mut k,
        40,
        "/c",
        &ok(200, "d", "ok"),
        &ok(200, "d", "ok"),
    );
    let s = c.finish();
    assert_eq!(
        (
            s.comparison.compared,
            s.comparison.equal,
            s.comparison.different
        ),
        (4, 1, 3)
    );
    let mut r = Report::new("test", "h1");
    s.fill_report(&mut r);
    assert_eq!(r.differences.len(), 1);
    let g = &r.differences[0];
    assert_eq!(g.request, "GET /a/b");
    assert_eq!(g.protocol, "http");
    assert_eq!((g.online.status, g.target.status), (Some(200), Some(500)));
    assert_eq!(g.count, 3);
    assert_eq!(g.fields.get("status"), Some(&3));
    assert_eq!(g.fields.len(), 1, "{:?}", g.fields);
    assert_eq!(g.samples.len(), 3);
    assert!(g.samples[0]
        .request
        .starts_with("GET /a/b?q=1 HTTP/1.1\\r\\n"));
    assert!(g.samples[0].target.starts_with("HTTP/1.1 500"));
    assert_eq!(g.samples[0].flow, "10.0.0.1:20001 -> 10.0.0.2:80");
}

#[test]
fn a_different_body_is_named_body() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    exchange(
        &mut c,
        &mut k,
        0,
        "/p",
        &ok(200, "d", "abc"),
        &ok(200, "d", "abd"),
    );
    let s = c.finish();
    let g = s.differences.values().next().expect("a group");
    assert_eq!(g.fields.keys().collect::<Vec<_>>(), vec!["body"]);
    assert_eq!(s.comparison.different, 1);
}

#[test]
fn a_missing_target_answer_is_a_difference_named_missing() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    let end = k.request(&mut c, 0, &get("/gone"));
    k.answer(&mut c, ONLINE, 1, end, &ok(200, "d", "x"), &[]);
    k.sent(&mut c, Side::Target(0), 1, end);
    c.tick(T0);
    c.tick(T0 + 50 * MS);
    assert_eq!(c.live().compared, 0, "judged before settling");
    assert_eq!(c.live().open, 1);
    // Judged once the target had `settle` since it got the request.
    c.tick(T0 + 150 * MS);
    let live = c.live();
    assert_eq!((live.compared, live.different, live.open), (1, 1, 0));
    let s = c.finish();
    assert_eq!(s.comparison.unanswered_target, 1);
    let g = &s.differences[&("GET /gone".to_string(), Some(200), None)];
    assert_eq!(g.fields.get("missing"), Some(&1));
}

#[test]
fn no_online_answer_means_nothing_to_compare() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    let end = k.request(&mut c, 0, &get("/q"));
    k.sent(&mut c, Side::Target(0), 1, end);
    k.answer(&mut c, TARGET, 2, end, &ok(200, "d", "x"), &[]);
    let s = c.finish();
    assert_eq!(s.comparison.unanswered_online, 1);
    assert_eq!(s.comparison.compared, 0);
}

#[test]
fn differences_the_baseline_shows_too_are_noise_others_regressions() {
    let mut c = Comparator::new(CompareConfig {
        baseline: true,
        ..cfg()
    });
    let mut k = Conn::new(1);
    // /rand: a random value in the body, different everywhere (and of another length once).
    // /bug: only the candidate answers 500.
    let cases = [
        (
            "/rand",
            ok(200, "d", "r=17"),
            ok(200, "d", "r=42"),
            ok(200, "d", "r=9"),
        ),
        (
            "/rand",
            ok(200, "d", "r=5"),
            ok(200, "d", "r=12345"),
            ok(200, "d", "r=77"),
        ),
        (
            "/bug",
            ok(200, "d", "fine"),
            ok(500, "d", "fine"),
            ok(200, "d", "fine"),
        ),
        (
            "/same",
            ok(200, "d", "s"),
            ok(200, "d", "s"),
            ok(200, "d", "s"),
        ),
    ];
    for (i, (path, online, target, baseline)) in cases.iter().enumerate() {
        let ms = i as u64 * 10;
        let end = k.request(&mut c, ms, &get(path));
        k.answer(&mut c, ONLINE, ms + 1, end, online, &[]);
        k.sent(&mut c, Side::Target(0), ms + 1, end);
        k.sent(&mut c, Side::Baseline, ms + 1, end);
        k.answer(&mut c, TARGET, ms + 3, end, target, &[]);
        k.answer(&mut c, BASELINE, ms + 2, end, baseline, &[]);
    }
    let s = c.finish();
    let cmp = &s.comparison;
    assert_eq!(
        (cmp.compared, cmp.equal, cmp.different, cmp.noise),
        (4, 1, 1, 2)
    );
    let noise: Vec<&String> = s.noise.keys().map(|k| &k.0).collect();
    assert_eq!(noise, vec!["GET /rand"]);
    let diffs: Vec<_> = s.differences.keys().cloned().collect();
    assert_eq!(diffs, vec![("GET /bug".to_string(), Some(200), Some(500))]);
    assert!(s.noise.values().next().unwrap().samples[0]
        .baseline
        .is_some());
    assert_eq!(s.baseline.as_ref().map(|h| h.count()), Some(4));
}

#[test]
fn every_copy_is_compared_with_the_online_answer() {
    let mut c = Comparator::new(CompareConfig { copies: 2, ..cfg() });
    let mut k = Conn::new(1);
    let end = k.request(&mut c, 0, &get("/n"));
    k.answer(&mut c, ONLINE, 1, end, &ok(200, "d", "one"), &[]);
    for n in 0..2 {
        k.sent(&mut c, Side::Target(n), 1, end);
    }
    k.answer(
        &mut c,
        By::Side(Side::Target(0)),
        2,
        end,
        &ok(200, "d", "one"),
        &[],
    );
    k.answer(
        &mut c,
        By::Side(Side::Target(1)),
        3,
        end,
        &ok(404, "d", "one"),
        &[],
    );
    let s = c.finish();
    let cmp = &s.comparison;
    assert_eq!((cmp.compared, cmp.equal, cmp.different), (2, 1, 1));
    assert!(s
        .differences
        .contains_key(&("GET /n".to_string(), Some(200), Some(404))));
    assert_eq!(s.target.count(), 2);
    assert_eq!(s.online.count(), 1);
}

#[test]
fn an_exchange_is_judged_once_the_next_one_is_answered_everywhere() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    exchange(
        &mut c,
        &mut k,
        0,
        "/1",
        &ok(200, "d", "a"),
        &ok(200, "d", "a"),
    );
    assert_eq!(c.live().compared, 0);
    let end = k.request(&mut c, 10, &get("/2"));
    k.answer(&mut c, ONLINE, 11, end, &ok(200, "d", "b"), &[]);
    assert_eq!(
        c.live().compared,
        0,
        "the target has not answered the second yet"
    );
    k.answer(&mut c, TARGET, 12, end, &ok(200, "d", "b"), &[]);
    assert_eq!(c.live().compared, 1);
    assert_eq!(c.live().open, 1);
    assert_eq!(c.finish().comparison.equal, 2);
}

#[test]
fn latency_online_and_target_from_their_own_clocks() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(1);
    // 100 requests: online answers after 1 ms; the target after 2 ms, 10 of them after 7 ms.
    for i in 0..100u64 {
        let ms = i * 20;
        let end = k.request(
            &mut c,
            ms,
            &get(if i % 10 == 3 { "/slow" } else { "/fast" }),
        );
        k.answer(&mut c, ONLINE, ms + 1, end, &ok(200, "d", "x"), &[]);
        k.sent(&mut c, Side::Target(0), ms + 5, end);
        let delay = if i % 10 == 3 { 7 } else { 2 };
        k.answer(&mut c, TARGET, ms + 5 + delay, end, &ok(200, "d", "x"), &[]);
    }
    let s = c.finish();
    let mut r = Report::new("test", "h");
    s.fill_report(&mut r);
    let near = |got: u64, want: u64| got >= want && got <= want + want / 16;
    let (on, tg) = (&r.latency.online, &r.latency.target);
    assert_eq!((on.count, tg.count), (100, 100));
    assert!(near(on.p50_us, 1_000) && near(on.p99_us, 1_000), "{on:?}");
    assert!(near(tg.p50_us, 2_000), "{tg:?}");
    assert!(near(tg.p90_us, 2_000) && near(tg.p99_us, 7_000), "{tg:?}");
    assert_eq!(tg.max_us, 7_000);
    assert!((tg.mean_us - 2_500.0).abs() < 1e-6);
    assert_eq!(r.latency.by_request[0].request, "GET /slow");
    assert!(near(r.latency.by_request[0].target.p50_us, 7_000));
    assert_eq!(r.latency.by_request[1].request, "GET /fast");
    // One request and one target answer every 20 ms: 50 per second for two seconds.
    let ticks: Vec<(u64, u64, u64)> = r
        .timeline
        .iter()
        .map(|t| (t.unix_s - T0 / 1_000_000_000, t.online, t.target))
        .collect();
    assert_eq!(ticks, vec![(0, 50, 50), (1, 50, 50)]);
}

#[test]
fn redis_gets_are_compared_as_bytes_and_named_by_command() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(6);
    let get_key =
        |key: &str| format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes();
    for i in 0..4u64 {
        let key = format!("key:{i}");
        let end = k.request(&mut c, i * 10, &get_key(&key));
        k.answer(&mut c, ONLINE, i * 10 + 1, end, b"$5\r\nvalue\r\n", &[]);
        k.sent(&mut c, Side::Target(0), i * 10 + 1, end);
        let target: &[u8] = if i == 2 {
            b"$-1\r\n"
        } else {
            b"$5\r\nvalue\r\n"
        };
        k.answer(&mut c, TARGET, i * 10 + 2, end, target, &[]);
    }
    let s = c.finish();
    assert_eq!((s.comparison.equal, s.comparison.different), (3, 1));
    let (key, g) = s.differences.iter().next().unwrap();
    assert_eq!(key, &("GET key:2".to_string(), None, None));
    assert_eq!(g.protocol, "bytes");
    assert_eq!(g.fields.keys().collect::<Vec<_>>(), vec!["body", "length"]);
    assert_eq!(g.target.head.as_deref(), Some("$-1\\r\\n"));
}

#[test]
fn repeated_and_reordered_segments_change_nothing() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(2);
    let req = get("/r");
    // The request captured twice, the second time overlapping.
    let start = k.client_seq;
    c.request(T0, k.flow, start, k.online_seq, &req[..10], false, false);
    c.request(T0, k.flow, start, k.online_seq, &req, false, false);
    c.request(T0, k.flow, start, k.online_seq, &req, false, false);
    k.client_seq = start + req.len() as u32;
    let end = k.client_seq;
    let answer = ok(200, "d", &"y".repeat(500));
    // Online: in order; the target: the second half first, then a repeat, then an overlap.
    k.answer(&mut c, ONLINE, 1, end, &answer, &[]);
    k.sent(&mut c, Side::Target(0), 1, end);
    let s0 = k.side_seq[0];
    k.send_piece(&mut c, TARGET, 3, end, s0.wrapping_add(300), &answer[300..]);
    k.send_piece(&mut c, TARGET, 3, end, s0.wrapping_add(300), &answer[300..]);
    k.send_piece(&mut c, TARGET, 4, end, s0, &answer[..200]);
    k.send_piece(
        &mut c,
        TARGET,
        5,
        end,
        s0.wrapping_add(100),
        &answer[100..350],
    );
    let s = c.finish();
    assert_eq!(
        (s.comparison.compared, s.comparison.equal),
        (1, 1),
        "{:?}",
        s.differences
    );
    assert_eq!(s.timeline.values().map(|t| t.online).sum::<u64>(), 1);
}

#[test]
fn a_hole_in_the_target_answer_makes_the_exchange_incomplete() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(3);
    let end = k.request(&mut c, 0, &get("/h"));
    let answer = ok(200, "d", &"z".repeat(400));
    k.answer(&mut c, ONLINE, 1, end, &answer, &[]);
    let s0 = k.side_seq[0];
    k.send_piece(&mut c, TARGET, 3, end, s0, &answer[..100]);
    k.send_piece(&mut c, TARGET, 3, end, s0.wrapping_add(200), &answer[200..]);
    let s = c.finish();
    assert_eq!((s.comparison.incomplete, s.comparison.compared), (1, 0));
}

#[test]
fn answers_after_their_exchange_was_judged_are_late_not_unanswered() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(4);
    let end = k.request(&mut c, 0, &get("/l"));
    k.answer(&mut c, ONLINE, 1, end, &ok(200, "d", "x"), &[]);
    k.sent(&mut c, Side::Target(0), 1, end);
    c.tick(T0);
    c.tick(T0 + 200 * MS);
    assert_eq!(c.live().different, 1);
    k.answer(&mut c, TARGET, 300, end, &ok(200, "d", "x"), &[]);
    let s = c.finish();
    assert_eq!(s.late, 1);
    assert_eq!(s.comparison.unanswered_online, 0);
    assert_eq!(s.comparison.compared, 1);
}

#[test]
fn too_many_open_exchanges_are_judged_early_and_counted() {
    let mut c = Comparator::new(CompareConfig {
        max_open: 3,
        ..cfg()
    });
    for n in 0..10 {
        let mut k = Conn::new(n);
        let end = k.request(&mut c, 0, &get("/e"));
        k.answer(&mut c, ONLINE, 1, end, &ok(200, "d", "x"), &[]);
    }
    assert_eq!(c.live().open, 3);
    let s = c.finish();
    assert_eq!(s.comparison.evicted, 7);
    // Never sent to the target: not judged, and no difference.
    assert_eq!(s.comparison.not_sent, 10);
    assert_eq!(s.comparison.compared, 0);
}

#[test]
fn a_target_behind_production_is_waited_for_not_reported_missing() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(11);
    c.tick(T0);
    // Twenty requests answered online at once; the target gets each only 20 ms after the
    // previous one's answer, far more than `settle` behind production by the end.
    let mut ends = Vec::new();
    for i in 0..20u64 {
        let end = k.request(&mut c, i, &get(&format!("/slow{i}")));
        k.answer(&mut c, ONLINE, i, end, &ok(200, "d", "x"), &[]);
        ends.push(end);
    }
    for (i, end) in ends.into_iter().enumerate() {
        let ms = 20 * i as u64;
        c.tick(T0 + ms * MS);
        k.sent(&mut c, Side::Target(0), ms, end);
        k.answer(&mut c, TARGET, ms + 1, end, &ok(200, "d", "x"), &[]);
    }
    c.tick(T0 + 2_000 * MS);
    let s = c.finish();
    assert_eq!(s.comparison.equal, 20, "{:?}", s.comparison);
    assert_eq!(s.comparison.different + s.comparison.not_sent, 0);
}

#[test]
fn at_the_end_requests_still_on_their_way_are_not_judged() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(12);
    c.tick(T0);
    let end = k.request(&mut c, 0, &get("/late"));
    k.answer(&mut c, ONLINE, 1, end, &ok(200, "d", "x"), &[]);
    k.sent(&mut c, Side::Target(0), 2, end);
    c.tick(T0 + 3 * MS);
    let s = c.finish();
    assert_eq!(s.comparison.not_sent, 1);
    assert_eq!(s.comparison.compared + s.comparison.different, 0);
}

#[test]
fn a_head_longer_than_the_kept_bytes_falls_back_to_whole_digests() {
    let mut c = Comparator::new(CompareConfig {
        head_bytes: 20,
        ..cfg()
    });
    let mut k = Conn::new(5);
    exchange(
        &mut c,
        &mut k,
        0,
        "/same",
        &ok(200, "d", "x"),
        &ok(200, "d", "x"),
    );
    exchange(
        &mut c,
        &mut k,
        10,
        "/date",
        &ok(200, "Mon", "x"),
        &ok(200, "Tue", "x"),
    );
    let s = c.finish();
    assert_eq!((s.comparison.equal, s.comparison.different), (1, 1));
    let g = &s.differences[&("GET /date".to_string(), Some(200), Some(200))];
    assert_eq!(g.fields.keys().collect::<Vec<_>>(), vec!["body"]);
}

/// Two threads' worth of exchanges.
fn two_summaries() -> (Summary, Summary) {
    let run = |n: u16, paths: &[&str]| {
        let mut c = Comparator::new(cfg());
        let mut k = Conn::new(n);
        for (i, p) in paths.iter().enumerate() {
            let target = if p.starts_with("/bad") {
                ok(503, "d", "x")
            } else {
                ok(200, "d", "x")
            };
            exchange(
                &mut c,
                &mut k,
                i as u64 * 700,
                p,
                &ok(200, "d", "x"),
                &target,
            );
        }
        c.finish()
    };
    (
        run(1, &["/a", "/bad", "/b", "/bad"]),
        run(2, &["/bad", "/a", "/bad2"]),
    )
}

#[test]
fn merged_summaries_add_up() {
    let (mut a, b) = two_summaries();
    let (ca, cb) = (a.comparison.clone(), b.comparison.clone());
    a.merge(b);
    assert_eq!(a.comparison.compared, ca.compared + cb.compared);
    assert_eq!(a.comparison.different, 4);
    assert_eq!(a.live.compared, 7);
    assert_eq!(
        a.differences[&("GET /bad".to_string(), Some(200), Some(503))].count,
        3
    );
    assert_eq!(a.differences.len(), 2);
    assert_eq!(a.online.count(), 7);
    assert_eq!(a.timeline.values().map(|t| t.online).sum::<u64>(), 7);
}

#[test]
fn merged_reports_add_up_and_survive_json() {
    let (a, b) = two_summaries();
    let mut whole = a.clone();
    whole.merge(b.clone());
    let report = |s: &Summary, host: &str, start: f64| {
        let mut r = Report::new("tcpcopy 0.1.0", host);
        r.started_unix_s = start;
        r.duration_s = 10.0;
        r.requests.online = 100;
        r.requests.lost = 2;
        r.requests.lost_by_cause.not_answered = 2;
        s.fill_report(&mut r);
        r
    };
    let (ra, rb) = (report(&a, "h1", 1000.0), report(&b, "h2", 1005.0));
    let m = Report::merge(&[ra.clone(), rb.clone()]).unwrap();
    assert_eq!(m.hosts, vec!["h1", "h2"]);
    assert_eq!((m.started_unix_s, m.duration_s), (1000.0, 15.0));
    assert_eq!((m.requests.online, m.requests.lost), (200, 4));
    assert_eq!(m.requests.lost_by_cause.not_answered, 4);
    assert!((m.requests.loss_percent - 2.0).abs() < 1e-9);
    assert_eq!(m.comparison, Some(whole.comparison.clone()));
    let full = report(&whole, "x", 0.0);
    assert_eq!(m.latency.online, full.latency.online);
    assert_eq!(m.latency.target, full.latency.target);
    assert_eq!(m.timeline, full.timeline);
    let counts = |r: &Report| {
        r.differences
            .iter()
            .map(|g| (g.request.clone(), g.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&m),
        vec![("GET /bad".to_string(), 3), ("GET /bad2".to_string(), 1)]
    );
    assert_eq!(counts(&m), counts(&full));

    // Logins (--protocol) add where present, protocols named once each.
    assert_eq!(m.sessions.logins, None);
    let logins = |protocol: &str, ok, refused| compare::report::Logins {
        protocol: protocol.to_string(),
        ok,
        joined: 1,
        not_logged_in: refused,
        refused,
        ..Default::default()
    };
    let mut with = [ra.clone(), rb.clone(), ra.clone(), rb.clone()];
    with[0].sessions.logins = Some(logins("mysql", 10, 2));
    with[2].sessions.logins = Some(logins("postgres", 5, 0));
    with[3].sessions.logins = Some(logins("mysql", 1, 1));
    let l = Report::merge(&with).unwrap().sessions.logins.unwrap();
    assert_eq!(
        (
            l.protocol.as_str(),
            l.ok,
            l.joined,
            l.not_logged_in,
            l.refused
        ),
        ("mysql+postgres", 16, 3, 3, 3)
    );
    let merged = Report::merge(&with[..1]).unwrap();
    assert_eq!(merged.sessions.logins, with[0].sessions.logins);

    let json = serde_json::to_string_pretty(&m).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.schema_version, SCHEMA_VERSION);

    let mut old = ra;
    old.schema_version = SCHEMA_VERSION + 1;
    assert!(Report::merge(&[rb, old]).is_err());
    assert!(Report::merge(&[]).is_err());
}

#[test]
fn the_text_summary_names_counts_latency_and_groups() {
    let (a, _) = two_summaries();
    let mut r = Report::new("tcpcopy 0.1.0", "h1");
    r.requests.online = 4;
    a.fill_report(&mut r);
    let text = r.to_string();
    assert!(text.contains("requests: online 4"), "{text}");
    assert!(
        text.contains("comparison: 4 compared, 2 equal, 2 different"),
        "{text}"
    );
    assert!(text.contains("  online "), "{text}");
    assert!(text.contains("GET /bad 200 -> 503  [status]"), "{text}");
}

#[test]
fn a_reused_client_port_starts_a_new_connection() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(7);
    exchange(
        &mut c,
        &mut k,
        0,
        "/old",
        &ok(200, "d", "a"),
        &ok(200, "d", "a"),
    );
    c.request(
        T0 + 5 * MS,
        k.flow,
        k.client_seq,
        k.online_seq,
        b"",
        true,
        false,
    );
    // The same endpoints, a new connection: new sequence numbers everywhere.
    let mut k2 = Conn::new(7);
    k2.client_seq = 3_000_000_000;
    k2.online_seq = 123;
    k2.side_seq[0] = 77;
    exchange(
        &mut c,
        &mut k2,
        10,
        "/new",
        &ok(200, "d", "b"),
        &ok(404, "d", "b"),
    );
    let s = c.finish();
    let cmp = &s.comparison;
    assert_eq!((cmp.compared, cmp.equal, cmp.different), (2, 1, 1));
    assert!(s
        .differences
        .contains_key(&("GET /new".to_string(), Some(200), Some(404))));
    assert_eq!(cmp.unanswered_online + cmp.incomplete, 0);
}

#[test]
fn an_ended_connection_is_forgotten_after_settling() {
    let mut c = Comparator::new(cfg());
    let mut k = Conn::new(8);
    c.tick(T0);
    let end = k.request(&mut c, 0, &get("/f"));
    k.answer(&mut c, ONLINE, 1, end, &ok(200, "d", "x"), &[]);
    k.sent(&mut c, Side::Target(0), 1, end);
    c.request(
        T0 + 2 * MS,
        k.flow,
        k.client_seq,
        k.online_seq,
        b"",
        true,
        false,
    );
    c.tick(T0 + 150 * MS); // judged: the target has not answered
    c.tick(T0 + 200 * MS); // forgotten
    k.answer(&mut c, TARGET, 250, end, &ok(200, "d", "x"), &[]);
    let s = c.finish();
    assert_eq!(s.comparison.unanswered_target, 1);
    assert_eq!(
        s.unpaired, 1,
        "a target answer with nothing to pair is not unanswered online"
    );
    assert_eq!(s.comparison.unanswered_online, 0);
}

/// Exchanges per second through the comparator (run with `--release -- --ignored`).
#[test]
#[ignore]
fn throughput() {
    let mut c = Comparator::new(cfg());
    let mut conns: Vec<Conn> = (0..100).map(Conn::new).collect();
    let online = ok(200, "Mon, 01 Jan", &"b".repeat(600));
    let target = ok(200, "Tue, 02 Jan", &"b".repeat(600));
    let n = 200_000u64;
    let start = std::time::Instant::now();
    for i in 0..n {
        let k = &mut conns[(i % 100) as usize];
        let ms = i / 10;
        exchange(&mut c, k, ms, "/some/path", &online, &target);
        if i % 10_000 == 0 {
            c.tick(T0 + ms * MS);
        }
    }
    let s = c.finish();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(s.comparison.equal, n);
    eprintln!(
        "{:.0} exchanges/s ({:.2} µs each, digests included)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]
    /// Whatever the segmentation on each side (and repeated client segments), exactly the
    /// requests whose target answer was changed are reported, each under its own path.
    #[test]
    fn exactly_the_changed_answers_are_reported(
        exchanges in proptest::collection::vec(
            (1usize..3000, proptest::collection::vec(1usize..3000, 0..4),
             proptest::collection::vec(1usize..3000, 0..4), proptest::bool::weighted(0.3)),
            1..12),
        forwarded in 1usize..2000,
        http: bool,
        lag in 0usize..4,
    ) {
        let mut c = Comparator::new(cfg());
        c.tick(T0);
        let mut k = Conn::new(9);
        k.forwarded = forwarded;
        let mut changed = Vec::new();
        let mut behind = std::collections::VecDeque::new();
        for (i, (body_len, online_cuts, target_cuts, change)) in exchanges.iter().enumerate() {
            let ms = i as u64 * 10;
            let path = format!("/p{i}");
            let req = if http { get(&path) } else { format!("*2\r\n$3\r\nGET\r\n$3\r\nk{i:02}\r\n").into_bytes() };
            let body: String = (0..*body_len).map(|j| (b'a' + (j * 7 + i) as u8 % 26) as char).collect();
            let online = if http { ok(200, "d", &body) } else { body.clone().into_bytes() };
            let mut target = online.clone();
            if *change {
                let last = target.len() - 1;
                target[last] ^= 1;
                changed.push(if http { format!("GET {path}") } else { format!("GET k{i:02}") });
            }
            let start = k.client_seq;
            let end = k.request(&mut c, ms, &req);
            // The request's first half captured again.
            c.request(T0 + ms * MS, k.flow, start, k.online_seq, &req[..req.len() / 2], false, false);
            k.answer(&mut c, ONLINE, ms + 1, end, &online, online_cuts);
            // The target lags `lag` requests behind.
            behind.push_back((ms, end, target, target_cuts.clone()));
            while behind.len() > lag {
                let (ms, end, target, cuts) = behind.pop_front().unwrap();
                k.sent(&mut c, Side::Target(0), ms + 1, end);
                k.answer(&mut c, TARGET, ms + 2, end, &target, &cuts);
            }
        }
        for (ms, end, target, cuts) in behind {
            k.sent(&mut c, Side::Target(0), ms + 1, end);
            k.answer(&mut c, TARGET, ms + 2, end, &target, &cuts);
        }
        let s = c.finish();
        let n = exchanges.len() as u64;
        proptest::prop_assert_eq!(s.comparison.compared, n);
        proptest::prop_assert_eq!(s.comparison.different, changed.len() as u64);
        proptest::prop_assert_eq!(s.comparison.equal, n - changed.len() as u64);
        let mut reported: Vec<String> = s.differences.keys().map(|k| k.0.clone()).collect();
        reported.sort();
        changed.sort();
        proptest::prop_assert_eq!(reported, changed);
        for g in s.differences.values() {
            proptest::prop_assert_eq!(g.fields.keys().collect::<Vec<_>>(), vec!["body"]);
        }
    }
}
