//! The Prometheus endpoint of both programs (`--metrics ADDR:PORT`): `GET /metrics` answers the
//! counters in the Prometheus text format (version 0.0.4), encoded by `prometheus-client`.
//!
//! Nothing here is touched by the packet path. The driver hands [`MetricsServer::start`] a
//! function that takes a plain [`Snapshot`] of its counters (the same merged counters it logs),
//! called once per scrape on the server's thread; [`render`] turns a snapshot into text. So a
//! scrape costs the driver what its statistics line costs, and nothing when nobody scrapes.
//!
//! The server is a single thread on a std listener: one scrape at a time, a request of at most
//! [`MAX_REQUEST`] bytes read within [`IO_TIMEOUT`], anything but `GET /metrics` answered 404 (or
//! 405 for another method), every connection closed after its answer. That is all a Prometheus
//! scraper needs, and it keeps an HTTP framework out of the programs.
//!
//! Names follow Prometheus conventions: counters end in `_total`, times are in seconds, sizes
//! in bytes, one metric per quantity with labels for its parts (`cause`, `end`, `result`,
//! `side`). tcpcopy's metrics start with `tcpcopy_`, intercept's with `intercept_`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use compare::report::Dist;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tracing::debug;

/// A request (line and headers) longer than this is refused.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Reading a request, and writing its answer, each take at most this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bounds of the latency histograms' buckets, in microseconds: fixed, so that every
/// scrape has the same series (100 µs to 10 s, the usual 1-2.5-5 steps).
const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// What the endpoint shows, taken by the driver at scrape time. Each part is optional: tcpcopy
/// fills the first ones (the comparison's only with `--compare`), intercept the last.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The session core's counters, summed over the capture threads.
    pub stats: Option<session::Stats>,
    /// The comparison's live counters.
    pub compare: Option<compare::Live>,
    /// Latency distributions so far: online, and at the target.
    pub latency_online: Option<Dist>,
    pub latency_target: Option<Dist>,
    pub intercept: Option<InterceptCounters>,
    /// Stream mode: how tcpcopy's connections to the target went (for the status line).
    pub stream: Option<bridge::Stats>,
    /// The `--protocol` whose logins `stats` counts; without one, no login metrics.
    pub protocol: Option<&'static str>,
}

/// intercept's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterceptCounters {
    /// Response packets caught.
    pub responses: u64,
    /// Of those, sent to the tcpcopy that owns their session.
    pub routed: u64,
    /// Sent to every tcpcopy (their route unknown).
    pub broadcast: u64,
    pub malformed: u64,
    /// Packets the capture had no room for (kernel count).
    pub capture_drops: u64,
    /// Frames of responses dropped because a tcpcopy read too slowly.
    pub frames_dropped: u64,
    /// tcpcopy connections open.
    pub connections: u64,
}

/// Where the server gets its snapshots.
pub type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// The `/metrics` endpoint; stops (and joins its thread) when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` (port 0: any free port, see [`MetricsServer::local_addr`]) and serves
    /// scrapes from a thread of its own.
    pub fn start(addr: SocketAddr, source: Source) -> anyhow::Result<MetricsServer> {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot serve metrics on {addr}"))?;
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let poll = mio::Poll::new().context("cannot create a poll")?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&listener.as_raw_fd()),
            LISTENER,
            mio::Interest::READABLE,
        )?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), STOP)?);
        let thread = thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                crate::plumbing::unprivileged_thread();
                serve(listener, poll, source)
            })
            .context("cannot start the metrics thread")?;
        Ok(MetricsServer {
            addr: local,
            waker,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // A failed wake leaves the thread running until the process ends: do not wait for it.
        if self.waker.wake().is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

const LISTENER: mio::Token = mio::Token(0);
const STOP: mio::Token = mio::Token(1);

/// The server thread: answers connections one after the other until woken to stop.
fn serve(listener: TcpListener, mut poll: mio::Poll, source: Source) {
    let mut events = mio::Events::with_capacity(4);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            debug!("metrics: poll: {e}");
            return;
        }
        if events.iter().any(|e| e.token() == STOP) {
            return;
        }
        // Edge-triggered: take every pending connection.
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(e) = answer(stream, &source) {
                        debug!("metrics: {peer}: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // E.g. out of file descriptors: try again on the next connection.
                    debug!("metrics: accept: {e}");
                    break;
                }
            }
        }
    }
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, source: &Source) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let (status, body) = match read_request(&mut stream)? {
        Some(head) => route(&head, source),
        None => ("400 Bad Request", String::from("bad request\n")),
    };
    let content_type = if status.starts_with("200") {
        prometheus_text::CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The request's line and headers: `None` when it is too long or not complete within
/// [`IO_TIMEOUT`].
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
    if buf.len() > MAX_REQUEST {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The status and body for a request head.
fn route(head: &str, source: &Source) -> (&'static str, String) {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", render(&source())),
        (_, "/metrics") => ("405 Method Not Allowed", "only GET\n".into()),
        _ => ("404 Not Found", "see /metrics\n".into()),
    }
}

/// The snapshot in the Prometheus text format.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail, and every metric below encodes valid names and labels.
    if let Err(e) = prometheus_text::encode(&mut out, &registry) {
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

/// Encodes one snapshot; a fresh one per scrape.
#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        if let Some(st) = &s.stats {
            encode_stats(&mut enc, st)?;
            if s.protocol.is_some() {
                encode_logins(&mut enc, &st.logins)?;
            }
        }
        if let Some(live) = &s.compare {
            encode_compare(&mut enc, live)?;
        }
        let sides = [("online", &s.latency_online), ("target", &s.latency_target)];
        if sides.iter().any(|(_, d)| d.is_some()) {
            let mut m = enc.encode_descriptor(
                "tcpcopy_response_latency",
                "Request's last byte to the answer's first byte (online: as captured; target: as sent to intercept's capture)",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (side, dist) in sides {
                if let Some(d) = dist {
                    let (sum, count, buckets) = prometheus_buckets(d);
                    m.encode_family(&[("side", side)])?
                        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }
        if let Some(ic) = &s.intercept {
            encode_intercept(&mut enc, ic)?;
        }
        if let Some(st) = &s.stream {
            encode_stream(&mut enc, st)?;
        }
        Ok(())
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter with one label, a value per label value.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value, v) in values {
        ConstCounter::new(v).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

fn encode_stats(enc: &mut DescriptorEncoder, st: &session::Stats) -> std::fmt::Result {
    // prometheus-client appends `_total` to counter names.
    counter(
        enc,
        "tcpcopy_requests_online",
        "Requests (client bursts between two answers) seen online, those -r left out included",
        st.requests_online + st.requests_sampled_out,
    )?;
    counter(
        enc,
        "tcpcopy_requests_target",
        "Requests the target acknowledged completely",
        st.requests_target,
    )?;
    counters(
        enc,
        "tcpcopy_requests_lost",
        "Requests that never reached the target in full, by cause",
        "cause",
        &lost_by_cause(st),
    )?;
    counter(
        enc,
        "tcpcopy_sessions_created",
        "Sessions replicated",
        st.sessions_created,
    )?;
    counter(
        enc,
        "tcpcopy_sessions_joined",
        "Sessions joined mid-stream",
        st.sessions_joined,
    )?;
    counters(
        enc,
        "tcpcopy_sessions",
        "Sessions ended, by how",
        "end",
        &[
            ("completed", st.sessions_completed),
            ("reset_by_client", st.sessions_reset_by_client),
            ("reset_by_target", st.sessions_reset_by_target),
            ("timed_out", st.sessions_timed_out),
            ("failed", st.sessions_failed),
            ("overflowed", st.sessions_overflowed),
        ],
    )?;
    gauge(
        enc,
        "tcpcopy_sessions_active",
        "Sessions being replicated",
        st.sessions_active,
    )?;
    gauge(
        enc,
        "tcpcopy_sessions_half_open",
        "Client SYNs held until their handshake completes online (not sent to the target)",
        st.sessions_half_open,
    )?;
    counters(
        enc,
        "tcpcopy_sessions_half_open_dropped",
        "Half-open sessions dropped before reaching the target, by why",
        "why",
        &[
            ("shed", st.sessions_half_open_shed),
            ("expired", st.sessions_half_open_expired),
        ],
    )?;
    counter(
        enc,
        "tcpcopy_captured_packets",
        "Client packets captured",
        st.captured_packets,
    )?;
    counters(
        enc,
        "tcpcopy_packets_ignored",
        "Captured packets not replicated, by reason",
        "reason",
        &[
            ("no_rule", st.ignored_packets),
            ("sampled_out", st.sampled_out_packets),
            ("malformed", st.malformed_packets),
            ("truncated", st.truncated_packets),
        ],
    )?;
    encode_traffic(enc, st)
}

/// How sessions' logins went (`--protocol`): the outcomes partition the sessions that reached
/// their login (`ok` and `ok_joined` logged in, the others not).
fn encode_logins(enc: &mut DescriptorEncoder, l: &session::Logins) -> std::fmt::Result {
    counters(
        enc,
        "tcpcopy_logins",
        "Sessions by how their login went at the target (--protocol): ok, ok_joined (joined mid-stream, logged in by tcpcopy), or why not",
        "outcome",
        &[
            ("ok", l.logged_in),
            ("ok_joined", l.joined_logged_in),
            ("refused", l.refused),
            ("tls", l.tls),
            ("no_login_known", l.no_credentials),
            ("unsupported", l.unsupported),
            ("malformed", l.malformed),
        ],
    )
}

/// The packets and bytes: captured, held, sent, reported by intercepts.
fn encode_traffic(enc: &mut DescriptorEncoder, st: &session::Stats) -> std::fmt::Result {
    counter(
        enc,
        "tcpcopy_capture_drops",
        "Packets the capture had no room for (kernel count)",
        st.capture_drops,
    )?;
    counter(
        enc,
        "tcpcopy_holes_skipped",
        "Holes in client streams no one would fill (bytes never captured), skipped",
        st.holes_skipped,
    )?;
    counter(
        enc,
        "tcpcopy_sessions_hurt",
        "Sessions with at least one hole skipped",
        st.sessions_hurt,
    )?;
    counter(
        enc,
        "tcpcopy_client_bytes",
        "Client payload bytes captured",
        st.client_bytes,
    )?;
    counter(
        enc,
        "tcpcopy_target_acked_bytes",
        "Client bytes the target acknowledged",
        st.target_bytes,
    )?;
    gauge(
        enc,
        "tcpcopy_buffered_bytes",
        "Client bytes held for the target",
        st.bytes_buffered,
    )?;
    counter(
        enc,
        "tcpcopy_packets_sent",
        "Packets sent to the target",
        st.packets_sent,
    )?;
    counters(
        enc,
        "tcpcopy_retransmits",
        "Segments resent to the target, by trigger",
        "kind",
        &[("timeout", st.retransmits), ("fast", st.fast_retransmits)],
    )?;
    counter(
        enc,
        "tcpcopy_target_packets",
        "Target packets reported by intercepts",
        st.responses,
    )?;
    counter(
        enc,
        "tcpcopy_target_packets_unknown",
        "Reported target packets of no session",
        st.responses_unknown,
    )
}

/// Requests of ended sessions the target never had in full, by cause (the report's causes);
/// requests still in flight are in none.
pub(crate) fn lost_by_cause(st: &session::Stats) -> [(&'static str, u64); 7] {
    let l = &st.lost;
    [
        ("never_captured", l.never_captured),
        ("sampled_out", st.requests_sampled_out),
        ("overflow", l.overflow),
        ("failed_at_target", l.failed_at_target),
        ("reset_by_target", l.reset_by_target),
        ("reset_by_client", l.reset_by_client),
        ("not_answered", l.not_answered),
    ]
}

fn encode_compare(enc: &mut DescriptorEncoder, live: &compare::Live) -> std::fmt::Result {
    counters(
        enc,
        "tcpcopy_compared",
        "Exchanges judged, online answer against the target's",
        "result",
        &[
            ("equal", live.equal),
            ("different", live.different),
            ("noise", live.noise),
        ],
    )?;
    gauge(
        enc,
        "tcpcopy_exchanges_open",
        "Exchanges waiting for answers",
        live.open,
    )
}

/// Stream mode: how tcpcopy's own connections to the target went, and their bytes.
fn encode_stream(enc: &mut DescriptorEncoder, s: &bridge::Stats) -> std::fmt::Result {
    counters(
        enc,
        "tcpcopy_stream_connections",
        "Stream mode: connections to the target, by outcome (opened, or why not)",
        "result",
        &[
            ("opened", s.opened),
            ("refused", s.refused),
            ("unreachable", s.unreachable),
            ("timed_out", s.timed_out),
            ("tls_failed", s.tls_failed),
            ("other_failed", s.other_failed),
            ("over_limit", s.over_limit),
        ],
    )?;
    counters(
        enc,
        "tcpcopy_stream_closed",
        "Stream mode: open connections ended by a reset from the target or for idleness",
        "why",
        &[
            ("reset_by_target", s.reset_by_target),
            ("idle", s.idle_closed),
        ],
    )?;
    counters(
        enc,
        "tcpcopy_stream_bytes",
        "Stream mode: bytes the kernel took for the target, and bytes read from it",
        "direction",
        &[("written", s.bytes_written), ("read", s.bytes_read)],
    )
}

fn encode_intercept(enc: &mut DescriptorEncoder, c: &InterceptCounters) -> std::fmt::Result {
    counter(
        enc,
        "intercept_responses",
        "Target response packets caught",
        c.responses,
    )?;
    counters(
        enc,
        "intercept_responses_sent",
        "Response packets sent to tcpcopy, by route",
        "to",
        &[("owner", c.routed), ("everyone", c.broadcast)],
    )?;
    counter(
        enc,
        "intercept_responses_malformed",
        "Caught packets that did not parse",
        c.malformed,
    )?;
    counter(
        enc,
        "intercept_capture_drops",
        "Packets the capture had no room for (kernel count)",
        c.capture_drops,
    )?;
    counter(
        enc,
        "intercept_frames_dropped",
        "Frames dropped because a tcpcopy read too slowly",
        c.frames_dropped,
    )?;
    gauge(
        enc,
        "intercept_connections",
        "tcpcopy connections open",
        c.connections,
    )
}

/// The buckets of `d` as counts per bucket (not cumulative), ascending. A [`Dist`] lists its
/// non-empty buckets; whether their counts are per bucket or cumulative shows in their sum
/// (per bucket, they add up to `count`), so both readings are accepted.
pub(crate) fn bucket_counts(d: &Dist) -> Vec<(u64, u64)> {
    let sum: u64 = d.buckets.iter().map(|b| b.count).sum();
    let mut before = 0;
    d.buckets
        .iter()
        .map(|b| {
            if sum == d.count {
                (b.le_us, b.count)
            } else {
                let n = b.count.saturating_sub(before);
                before = b.count;
                (b.le_us, n)
            }
        })
        .collect()
}

/// `d` as a Prometheus histogram: sum (seconds), count, and per-bucket counts on the fixed
/// bounds, the last one `+Inf`. A sample counts under the first bound at or above its bucket's
/// upper bound (exact when the distribution's bounds fall on ours, never early otherwise).
fn prometheus_buckets(d: &Dist) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out: Vec<(f64, u64)> = LATENCY_BOUNDS_US
        .iter()
        .map(|&b| (b as f64 / 1e6, 0))
        .chain(std::iter::once((f64::INFINITY, 0)))
        .collect();
    for (le_us, n) in bucket_counts(d) {
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < le_us);
        out[i].1 += n;
    }
    // Samples the buckets do not account for (none, for a well-formed distribution).
    let listed: u64 = out.iter().map(|b| b.1).sum();
    out[LATENCY_BOUNDS_US.len()].1 += d.count.saturating_sub(listed);
    let count = listed.max(d.count);
    (d.mean_us * d.count as f64 / 1e6, count, out)
}

#[cfg(test)]
mod tests;
