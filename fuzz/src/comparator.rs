//! The comparison (`compare::Comparator`, and through it the answer assembly, the flows'
//! request cutting and the summary) driven by an arbitrary sequence of events: client segments,
//! online and target answer segments (in or out of order, repeated, cut short, with heads shorter
//! than their payload), sends, ticks of an advancing clock and finishes. After every event the
//! open exchanges stay within `max_open` and the counts add up; at the end the report fills,
//! survives JSON and merges.

use std::net::SocketAddr;

use arbitrary::{Result, Unstructured};
use compare::{AnswerSegment, Comparator, CompareConfig, Digest, Flow, Report, Side, Summary};

/// Per flow: where the client's and each server's next bytes go (the fuzz input may also
/// pick any other sequence number).
#[derive(Clone, Copy, Default)]
struct Cursor {
    client: u32,
    online: u32,
    target: [u32; 4],
}

/// Runs one input; panics where an invariant fails.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = config(&mut u) else { return };
    let max_open = cfg.max_open as u64;
    let copies = cfg.copies;
    let baseline = cfg.baseline;
    let mut c = Comparator::new(cfg);
    let flows: Vec<Flow> = (0..3u16)
        .map(|i| Flow {
            client: SocketAddr::from(([198, 19, 0, 1], 40000 + i)),
            server: SocketAddr::from(([198, 18, 0, 20], 80)),
        })
        .collect();
    let mut cursors = [Cursor::default(); 3];
    let mut now: u64 = 1_000_000_000;
    let mut summaries = Vec::new();
    let mut steps = 0;
    while !u.is_empty() && steps < 256 {
        steps += 1;
        if step(
            &mut u,
            &mut c,
            &flows,
            &mut cursors,
            &mut now,
            copies,
            baseline,
        )
        .is_err()
        {
            break;
        }
        let live = c.live();
        assert!(live.open <= max_open, "{} open, max {max_open}", live.open);
        assert_eq!(
            live.compared,
            live.equal + live.different + live.noise,
            "{live:?}"
        );
        if u.ratio(1, 64).unwrap_or(false) {
            summaries.push(c.finish());
            assert_eq!(c.live().open, 0);
        }
    }
    summaries.push(c.finish());
    let mut total = Summary::default();
    for s in summaries {
        check_summary(&s);
        total.merge(s);
    }
    check_summary(&total);
    report(&total);
}

fn config(u: &mut Unstructured<'_>) -> Result<CompareConfig> {
    Ok(CompareConfig {
        head_bytes: u.int_in_range(0..=64)?,
        copies: u.int_in_range(1..=3)?,
        baseline: u.arbitrary()?,
        settle: u.int_in_range(1..=5_000)? * 1_000_000,
        max_open: u.int_in_range(1..=8)?,
        samples_per_group: u.int_in_range(0..=3)?,
        max_groups: u.int_in_range(0..=4)?,
        ..CompareConfig::default()
    })
}

fn side(u: &mut Unstructured<'_>, copies: u16, baseline: bool) -> Result<(Side, usize)> {
    let n = u.int_in_range(0..=copies)?;
    Ok(if n == copies && baseline {
        (Side::Baseline, 3)
    } else {
        let n = n.min(copies - 1);
        (Side::Target(n), usize::from(n))
    })
}

/// A payload: one of a few HTTP answers or requests, or fuzz bytes.
fn payload<'a>(u: &mut Unstructured<'a>) -> Result<&'a [u8]> {
    const CANNED: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: x\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhellp",
        b"GET /index.html?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"+OK\r\n",
    ];
    if u.ratio(1, 2)? {
        return u.choose(CANNED).copied();
    }
    let len = u.int_in_range(0..=64usize)?;
    u.bytes(len.min(u.len()))
}

/// A sequence number near the cursor, or anywhere.
fn near(u: &mut Unstructured<'_>, at: u32) -> Result<u32> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 | 1 => at,
        2 => at.wrapping_add(u.int_in_range(-64i32..=64)? as u32),
        _ => u.arbitrary()?,
    })
}

fn segment<'a>(u: &mut Unstructured<'a>, seq: u32, ack: u32, at: u64) -> Result<AnswerSegment<'a>> {
    let bytes = payload(u)?;
    // The head may be shorter than the payload (intercept forwards the first bytes only).
    let head = &bytes[..u.int_in_range(0..=bytes.len())?];
    Ok(AnswerSegment {
        at,
        seq,
        ack,
        len: bytes.len() as u32,
        digest: Digest::of(bytes),
        head,
        fin: u.ratio(1, 16)?,
        rst: u.ratio(1, 32)?,
    })
}

fn step(
    u: &mut Unstructured<'_>,
    c: &mut Comparator,
    flows: &[Flow],
    cursors: &mut [Cursor; 3],
    now: &mut u64,
    copies: u16,
    baseline: bool,
) -> Result<()> {
    let i = u.int_in_range(0..=2usize)?;
    let flow = flows[i];
    let cur = &mut cursors[i];
    let at = *now + u.int_in_range(0..=10_000_000u64)?;
    match u.int_in_range(0..=5u8)? {
        0 => {
            let bytes = payload(u)?;
            let seq = near(u, cur.client)?;
            let ack = near(u, cur.online)?;
            let (fin, rst) = (u.ratio(1, 16)?, u.ratio(1, 32)?);
            c.request(at, flow, seq, ack, bytes, fin, rst);
            cur.client = seq.wrapping_add(bytes.len() as u32);
        }
        1 => {
            let seq = near(u, cur.online)?;
            let ack = near(u, cur.client)?;
            let seg = segment(u, seq, ack, at)?;
            // Online, the whole payload is at hand.
            let seg = AnswerSegment {
                head: seg.head,
                len: seg.head.len() as u32,
                digest: Digest::of(seg.head),
                ..seg
            };
            c.online_answer(flow, &seg);
            cur.online = seq.wrapping_add(seg.len);
        }
        2 => {
            let (side, _) = side(u, copies, baseline)?;
            let end = near(u, cur.client)?;
            c.sent(flow, side, end, at);
        }
        3 => {
            let (side, k) = side(u, copies, baseline)?;
            let seq = near(u, cur.target[k])?;
            let ack = near(u, cur.client)?;
            let seg = segment(u, seq, ack, at)?;
            c.target_answer(flow, side, &seg);
            cur.target[k] = seq.wrapping_add(seg.len);
        }
        4 => {
            *now += u.int_in_range(0..=10_000u64)? * 1_000_000;
            c.tick(*now);
        }
        _ => {
            let _ = c.latency();
        }
    }
    Ok(())
}

fn check_summary(s: &Summary) {
    let c = &s.comparison;
    assert_eq!(c.compared, c.equal + c.different + c.noise, "{c:?}");
    assert!(c.unanswered_target <= c.different + c.noise, "{c:?}");
}

/// The summary fills a report that JSON carries and that merges with itself.
fn report(s: &Summary) {
    let mut r = Report::new("tcpcopy fuzz", "host");
    s.fill_report(&mut r);
    let json = serde_json::to_string(&r).expect("a report serializes");
    let back: Report = serde_json::from_str(&json).expect("a written report reads back");
    assert_eq!(back.comparison, r.comparison);
    assert_eq!(back.differences.len(), r.differences.len());
    let merged = Report::merge(&[r.clone(), back]).expect("two reports merge");
    let (one, two) = (
        r.comparison.unwrap_or_default(),
        merged.comparison.unwrap_or_default(),
    );
    assert_eq!(two.compared, 2 * one.compared);
    assert_eq!(two.different, 2 * one.different);
}
