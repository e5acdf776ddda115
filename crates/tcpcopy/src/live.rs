//! The live `tcpcopy` driver: a capture thread feeds client packets, one thread per intercept
//! connection feeds target responses, and the main thread runs the session core and sends.
//!
//! Threads talk through one bounded channel of [`Event`]s, so the core itself stays single-threaded
//! and deterministic. Intercept connections reconnect with backoff forever: replication resumes by
//! itself when an intercept comes back, and the routes of every live session are announced again.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use tracing::{debug, info, warn};

use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use netio::link::LinkSender;
use netio::raw::RawSender;
use pcap::{PcapNgRecorder, PcapSource, SourceStats};
use protocol::{Decoder, Message};
use session::{Config, Replicator, Stats};

use crate::cli::{SendLayer, TcpcopyOpts};
use crate::plumbing::{read_first_message, sleep_unless_stopped, Mailbox, PacketBatch};

/// What the other threads hand the main thread.
type Events = Arc<Mailbox<Event>>;

enum Event {
    /// Replayed packets (live capture is read by the main thread itself).
    Captured(PacketBatch),
    /// The replayed file ended (or broke: the one-line reason).
    InputDone(Result<SourceStats, String>),
    /// A connected intercept, after its hello/welcome exchange.
    InterceptUp {
        idx: usize,
        stream: TcpStream,
        dec: Decoder,
        down: Arc<AtomicBool>,
    },
}

/// Where client packets come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Live capture on one interface, or all of them.
    Capture { interface: Option<String> },
    /// Offline replay of a pcap/pcapng file, `accelerate` times faster than recorded.
    File { path: PathBuf, accelerate: f64 },
}

/// What a run ended with: the statistics, and for a replayed file that broke, why (everything
/// readable before the damage was replayed).
pub struct RunReport {
    pub stats: Stats,
    pub input_error: Option<String>,
}

/// Everything the driver needs, validated.
pub struct LiveConfig {
    pub core: Config,
    pub intercepts: Vec<SocketAddr>,
    pub connections: u16,
    /// Capture threads (live capture only), each a replicator of its own.
    pub threads: u16,
    pub input: Input,
    /// Write captured client packets to this pcapng file.
    pub record: Option<PathBuf>,
    pub stats_interval: Duration,
    pub duration: Option<Duration>,
    pub send: SendVia,
    /// How long the kernel keeps a partly filled capture block (`--capture-wait`): the longest a
    /// captured packet waits before it is replicated, and (under light load) the wake-up period
    /// of the replicating thread.
    pub capture_wait: Duration,
}

/// How packets reach the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendVia {
    /// The kernel routes every packet (raw sockets).
    Kernel,
    /// At the link layer where possible (only through `device` when one is named).
    LinkLayer { device: Option<String> },
}

impl LiveConfig {
    /// Turns parsed options into a validated configuration; errors are one-line usage errors.
    pub fn from_opts(o: &TcpcopyOpts) -> Result<LiveConfig, String> {
        let rules = o
            .transfer
            .clone()
            .ok_or("the option -x/--transfer is required (e.g. -x 80-198.18.0.30:80)")?;
        let servers = o
            .intercept
            .clone()
            .ok_or("the option -s/--intercept is required (e.g. -s 198.18.0.40)")?;
        let mut input = Input::Capture {
            interface: o.interface.clone(),
        };
        if let Some(arg) = &o.input {
            let path = Path::new(arg);
            if path.is_file() {
                input = Input::File {
                    path: path.to_path_buf(),
                    accelerate: o.accelerate,
                };
            } else if arg.contains('/') || arg.contains('.') {
                return Err(format!(
                    "-i {arg}: no such file (nor a network interface name)"
                ));
            } else if arg.contains(',') {
                return Err(format!("-i {arg}: capturing on several named interfaces is not supported yet; omit -i to capture on all"));
            } else {
                input = Input::Capture {
                    interface: Some(arg.clone()),
                };
            }
        }
        if o.record.is_some() && matches!(input, Input::File { .. }) {
            return Err("--record: only a live capture can be recorded, not a replay".into());
        }
        let mut core = Config::new(rules);
        core.fake_clients = o.fake_client.clone().unwrap_or_default();
        if let Some(r) = core.rules.iter().find(|r| {
            core.fake_clients
                .iter()
                .any(|f| f.is_ipv4() != r.target.is_ipv4())
        }) {
            return Err(format!(
                "-c: fake client addresses must be of the same IP version as the target {}",
                r.target
            ));
        }
        core.session_timeout = Duration::from_secs(o.session_timeout);
        core.mss = o.mss;
        core.mtu = o.mtu;
        core.initial_rto = Duration::from_millis(o.rtt);
        core.no_wait = o.no_wait;
        core.response_wait = Duration::from_millis(o.response_wait);
        // The ISN clock starts from the wall clock, so a later run starts further on (4 µs ticks).
        core.isn_base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_micros() / 4) as u32);
        core.copies = o.copies;
        core.port_shift = o.port_shift;
        core.sample_percent = o.percent;
        core.max_buffered_bytes = (o.memory as usize).saturating_mul(1 << 20);
        core.max_session_bytes = core.max_buffered_bytes / 4;
        if o.threads > 1 {
            if !matches!(input, Input::Capture { .. }) || o.record.is_some() {
                return Err(
                    "--threads: several capture threads only for a live capture without --record"
                        .into(),
                );
            }
            if !core.fake_clients.is_empty() && core.fake_clients.len() < usize::from(o.threads) {
                return Err(format!(
                    "--threads {}: each capture thread needs fake client addresses of its own, and -c gives {}",
                    o.threads,
                    core.fake_clients.len()
                ));
            }
        }
        Ok(LiveConfig {
            core,
            intercepts: servers
                .into_iter()
                .map(|(ip, port)| SocketAddr::new(ip, port.unwrap_or(o.port)))
                .collect(),
            connections: o.connections,
            threads: o.threads,
            input,
            record: o.record.clone(),
            stats_interval: Duration::from_secs(o.stats_interval),
            capture_wait: Duration::from_millis(u64::from(o.capture_wait)),
            duration: (o.duration > 0).then(|| Duration::from_secs(o.duration)),
            send: match (o.send_layer, &o.output_device) {
                (Some(SendLayer::Ip), Some(_)) => {
                    return Err(
                        "-o/--output-device sends at the link layer: not with --send-layer ip"
                            .into(),
                    )
                }
                (Some(SendLayer::Ip), None) | (None, None) => SendVia::Kernel,
                (Some(SendLayer::Link), device) | (None, device @ Some(_)) => SendVia::LinkLayer {
                    device: device.clone(),
                },
            },
        })
    }
}

/// While the capture keeps the loop awake and no session waits on the target (see
/// `Replicator::stalled_sessions`), the intercept connections wake the loop only once this many
/// bytes wait (`SO_RCVLOWAT`): their reports are read on the capture's wakes instead, one wake
/// for both, not one each. A report then waits at most for the next capture block; it matters
/// at once only to a session that holds a request until the target answered, and while one does,
/// the connections wake the loop for every byte again.
const LAZY_LOWAT: libc::c_int = 16 << 10;

/// Whether the intercept connections wake the loop for every byte (`false`) or read on the
/// capture's wakes (`true`, see [`LAZY_LOWAT`]), given when the capture last brought packets
/// and how long the loop may sleep meanwhile ([`lazy_wait`]).
fn lazy_links(
    capture_busy_at: Option<Instant>,
    now: Instant,
    stalled: usize,
    lazy_wait: Duration,
) -> bool {
    stalled == 0 && capture_busy_at.is_some_and(|t| now.saturating_duration_since(t) <= lazy_wait)
}

/// The longest the loop sleeps while the links are lazy: a capture block and a millisecond of
/// slack. If the capture went quiet, the loop finds out within this, and reads the links again
/// as they come. A block lasts `capture_wait`, or longer where the kernel's block timer counts
/// in clock ticks (4 ms at HZ=250, 10 ms at HZ=100): `gap`, the time between the last two wakes
/// that brought packets, tells, up to 10 ms beyond `capture_wait`.
fn lazy_wait(capture_wait: Duration, gap: Duration) -> Duration {
    let block = capture_wait.max(gap.min(capture_wait + Duration::from_millis(10)));
    block + Duration::from_millis(1)
}

/// mio tokens: the capture ring, the mailbox waker, and intercept connection `i` as `LINK + i`.
const RING: Token = Token(0);
const WAKE: Token = Token(1);
const LINK: usize = 2;
/// Route frames an intercept connection may leave unread before it counts as broken.
const MAX_PENDING_ROUTES: usize = 4 << 20;

/// One connected intercept, as the main thread drives it: responses are read and route frames
/// written without blocking, on readiness from the poll.
struct Link {
    stream: TcpStream,
    dec: Decoder,
    /// Route frames the socket did not take yet.
    pending: Vec<u8>,
    /// Tells the connecting thread to connect again.
    down: Arc<AtomicBool>,
    /// When it last sent anything (a ping at least every 500 ms).
    last_heard: Instant,
    /// The poll saw the peer close (or an error): read on to the end of the stream, as no
    /// further readiness will come to say so.
    hung_up: bool,
    /// Its `SO_RCVLOWAT` is [`LAZY_LOWAT`], not 1: read it on every wake.
    lazy: bool,
}

impl Link {
    /// A connection just welcomed by its intercept: nothing pending, waking the loop for every
    /// byte.
    fn new(stream: TcpStream, dec: Decoder, down: Arc<AtomicBool>, now: Instant) -> Link {
        Link {
            stream,
            dec,
            pending: Vec::new(),
            down,
            last_heard: now,
            hung_up: false,
            lazy: false,
        }
    }

    /// Writes `frame` after whatever is pending; false when the connection is broken.
    fn write(&mut self, frame: &[u8]) -> bool {
        self.pending.extend_from_slice(frame);
        self.flush()
    }

    /// Takes note of what the poll said about the connection.
    fn note(&mut self, ev: &mio::event::Event) {
        self.hung_up |= ev.is_read_closed() || ev.is_error();
    }

    /// Sets how the connection wakes the loop (see [`LAZY_LOWAT`]).
    fn set_lazy(&mut self, lazy: bool) -> std::io::Result<()> {
        let lowat = if lazy { LAZY_LOWAT } else { 1 };
        netio::set_recv_lowat(self.stream.as_fd(), lowat)?;
        self.lazy = lazy;
        Ok(())
    }

    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("route write failed: {e}");
                    return false;
                }
            }
        }
        self.pending.len() <= MAX_PENDING_ROUTES
    }
}

/// Runs until `stop` is set (or `--duration` passes, or a replayed file is done); returns the final
/// statistics.
///
/// One thread does the work: it waits in one poll for the capture ring, every intercept
/// connection and a waker, and on each wake reads what is ready, runs the core and sends. Threads
/// only connect to intercepts (and read a replayed file), handing results over in a mailbox.
pub fn run(cfg: LiveConfig, stop: Arc<AtomicBool>) -> anyhow::Result<RunReport> {
    let count = usize::from(cfg.threads.max(1));
    if count == 1 {
        return run_worker(&cfg, stop, &Worker::single());
    }
    // Each thread replicates the client connections the kernel's flow hash gives its ring: its
    // own sessions, fake client addresses (every count-th), sender and intercept connections.
    let shared = Arc::new(Mutex::new(vec![Stats::default(); count]));
    let group = (std::process::id() & 0xffff) as u16;
    let cfg = Arc::new(cfg);
    let joined = Arc::new(std::sync::Barrier::new(count));
    let mut handles = Vec::new();
    for index in 1..count {
        let (cfg, stop, shared) = (cfg.clone(), stop.clone(), shared.clone());
        let worker = Worker {
            index,
            count,
            fanout: Some(group),
            shared,
            joined: joined.clone(),
        };
        handles.push(
            thread::Builder::new()
                .name(format!("replicate-{index}"))
                .spawn(move || {
                    // One thread ending (an error, even a panic) ends the run.
                    let _end = StopOnDrop(stop.clone());
                    run_worker(&cfg, stop.clone(), &worker)
                })
                .context("cannot start a capture thread")?,
        );
    }
    let first = run_worker(
        &cfg,
        stop.clone(),
        &Worker {
            index: 0,
            count,
            fanout: Some(group),
            shared,
            joined,
        },
    );
    stop.store(true, Ordering::Relaxed);
    // Every thread is joined before an error is returned, so that none outlives the run.
    let mut report = first;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a capture thread panicked"))
            .and_then(|r| r);
        report = match (report, r) {
            (Ok(mut a), Ok(b)) => {
                a.stats += b.stats;
                Ok(a)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    report
}

/// Sets the stop flag when dropped, also while unwinding from a panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Which of the capture threads this is.
struct Worker {
    index: usize,
    count: usize,
    /// The PACKET_FANOUT group the rings share.
    fanout: Option<u16>,
    /// Each thread's latest counters, for one statistics line over all of them.
    shared: Arc<Mutex<Vec<Stats>>>,
    /// Every thread's ring joins the fanout group before any takes a packet.
    joined: Arc<std::sync::Barrier>,
}

impl Worker {
    fn single() -> Worker {
        Worker {
            index: 0,
            count: 1,
            fanout: None,
            shared: Arc::new(Mutex::new(vec![Stats::default()])),
            joined: Arc::new(std::sync::Barrier::new(1)),
        }
    }

    /// Publishes this thread's counters and returns the sum over all threads.
    fn publish(&self, st: Stats) -> Stats {
        let mut all = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        all[self.index] = st;
        let mut sum = Stats::default();
        for s in all.iter() {
            sum += *s;
        }
        sum
    }
}

fn run_worker(
    cfg: &LiveConfig,
    stop: Arc<AtomicBool>,
    worker: &Worker,
) -> anyhow::Result<RunReport> {
    // A file that cannot be read fails before anything else (and needs no privilege).
    let mut source = match &cfg.input {
        Input::File { path, .. } => Some(PcapSource::open(path)?),
        Input::Capture { .. } => None,
    };
    let mut sender = Sender::open(&cfg.send)?;
    let mut poll = Poll::new().context("cannot create a poll")?;
    let waker = mio::Waker::new(poll.registry(), WAKE).context("cannot create a poll waker")?;
    let tx: Events = Arc::new(Mailbox::with_waker(waker));
    let rx = tx.clone();
    // Replayed bytes waiting in the mailbox are budgeted, so a fast file does not flood memory.
    let queued = Arc::new(AtomicUsize::new(0));
    let budget = cfg.core.max_buffered_bytes / 4;
    // A replay waits for its first intercept connection, so that its first sessions are answered.
    let replay_go = Arc::new(AtomicBool::new(false));
    let mut ring = None;
    match &cfg.input {
        Input::Capture { interface } => {
            let opened = open_ring(cfg, interface.as_deref(), worker.fanout);
            // Every thread comes to the barrier, also one whose ring failed to open.
            if worker.fanout.is_some() {
                worker.joined.wait();
            }
            let (mut r, filter) = opened?;
            if worker.fanout.is_some() {
                r.start(&filter).context("cannot start capturing")?;
            }
            poll.registry()
                .register(&mut SourceFd(&r.as_raw_fd()), RING, Interest::READABLE)
                .context("cannot poll the capture ring")?;
            ring = Some(r);
            // This thread empties the ring.
            crate::plumbing::raise_capture_priority();
        }
        Input::File { path, accelerate } => {
            let source = source.take().context("replay source")?;
            info!(
                "replaying {} ({}) at {accelerate}x for {} rule(s), {} intercept(s)",
                path.display(),
                source.format(),
                cfg.core.rules.len(),
                cfg.intercepts.len()
            );
            spawn_file_reader(
                source,
                *accelerate,
                tx.clone(),
                stop.clone(),
                replay_go.clone(),
                queued.clone(),
                budget,
            )?;
        }
    }
    let mut recorder = match &cfg.record {
        Some(path) => Some(
            PcapNgRecorder::create(path).with_context(|| format!("--record {}", path.display()))?,
        ),
        None => None,
    };
    let mut capture_drops = 0u64;
    let stats = |core: &Replicator, drops: u64| Stats {
        capture_drops: drops,
        ..core.stats()
    };
    let mut conn_addrs = Vec::new();
    for &server in &cfg.intercepts {
        for _ in 0..cfg.connections {
            let idx = conn_addrs.len();
            conn_addrs.push(server);
            let instance = std::process::id()
                .wrapping_mul(64)
                .wrapping_add(worker.index as u32);
            spawn_intercept_conn(idx, server, instance, tx.clone(), stop.clone())?;
        }
    }

    let started = Instant::now();
    let mut core_cfg = cfg.core.clone();
    // Fake client endpoints must not collide between threads: each takes every count-th address.
    core_cfg.fake_clients = core_cfg
        .fake_clients
        .iter()
        .skip(worker.index)
        .step_by(worker.count)
        .copied()
        .collect();
    let mut core = Replicator::new(core_cfg);
    let mut links: Vec<Option<Link>> = (0..conn_addrs.len()).map(|_| None).collect();
    let mut announcing = AnnounceScratch::default();
    let mut send_errors = 0u64;
    let mut last_stats = Instant::now();
    let mut last_drops_read = Instant::now();
    let mut input_done: Option<Result<SourceStats, String>> = None;
    let mut last_progress = (0u64, Instant::now());
    let mut events = Vec::new();
    let mut ready = mio::Events::with_capacity(64);
    let mut buf = vec![0u8; 256 * 1024];
    let mut record_error = None;
    let mut again: Vec<usize> = Vec::new();
    let mut readable: Vec<usize> = Vec::new();
    let mut last_silence_check = Instant::now();
    // When the capture ring last brought packets, and the time between the last two such wakes
    // (see `lazy_links`).
    let mut capture_busy_at: Option<Instant> = None;
    let mut capture_gap = Duration::ZERO;
    let mut ctx = EventCtx {
        recorder: recorder.as_mut(),
        queued: &queued,
        replay_go: &replay_go,
        input_done: &mut input_done,
    };
    while !stop.load(Ordering::Relaxed) {
        // The clock is read three times a wake: here, after the poll, and for the timers.
        let top = Instant::now();
        let running = top.saturating_duration_since(started);
        if cfg.duration.is_some_and(|d| running >= d) {
            break;
        }
        if running >= REPLAY_CONNECT_WAIT
            && !replay_go.swap(true, Ordering::Relaxed)
            && matches!(cfg.input, Input::File { .. })
        {
            warn!("no intercept connected after {REPLAY_CONNECT_WAIT:?}: replaying anyway");
        }
        // Wake for the next session timer, and at least every 100 ms for stop, stats and duration.
        let wait = core
            .poll_timeout()
            .map_or(Duration::MAX, |t| t.saturating_duration_since(top))
            .min(Duration::from_millis(100));
        // Lazy links wake nobody for a report: a sleep no longer than a capture block reads them.
        let wait = if links.iter().flatten().any(|l| l.lazy) {
            wait.min(lazy_wait(cfg.capture_wait, capture_gap))
        } else {
            wait
        };
        let wait = if again.is_empty() {
            wait
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut ready, Some(wait)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("poll failed");
            }
        }
        let now = Instant::now();
        // Connections that had more than one wake's worth are read again first.
        readable.clear();
        readable.append(&mut again);
        for ev in ready.iter() {
            match ev.token() {
                RING if ev.is_error() => {
                    if let Some(e) = ring.as_ref().and_then(|r| r.take_error().ok().flatten()) {
                        anyhow::bail!("capture failed: {e}");
                    }
                }
                Token(t) if t >= LINK => {
                    let idx = t - LINK;
                    if let Some(Some(link)) = links.get_mut(idx) {
                        link.note(ev);
                    }
                    if !readable.contains(&idx) {
                        readable.push(idx);
                    }
                }
                _ => {}
            }
        }
        for (idx, link) in links.iter().enumerate() {
            if link.as_ref().is_some_and(|l| l.lazy) && !readable.contains(&idx) {
                readable.push(idx);
            }
        }
        // Everything this wake brought is one batch: each session answers once, at its end.
        core.begin_batch();
        // Client packets first: the ring holds what the kernel captured, whether or not this
        // wake was for it.
        if let Some(r) = ring.as_mut() {
            let mut captured = false;
            r.drain_ready(|p| {
                captured = true;
                // The kernel leaves our own sends out already (PACKET_IGNORE_OUTGOING and the
                // filter); this is a third guard.
                if p.pkttype == libc::PACKET_OUTGOING {
                    return;
                }
                core.handle_capture(now, p.data);
                if let Some(rec) = ctx.recorder.as_mut() {
                    if record_error.is_none() {
                        if let Err(e) = rec.write(p.timestamp, p.data, p.data.len() as u32) {
                            record_error = Some(e);
                        }
                    }
                }
            });
            if captured {
                if let Some(last) = capture_busy_at {
                    capture_gap = now.saturating_duration_since(last);
                }
                capture_busy_at = Some(now);
            }
            if now.saturating_duration_since(last_drops_read) >= Duration::from_secs(1) {
                last_drops_read = now;
                if let Ok(st) = r.stats() {
                    capture_drops = st.drops;
                }
            }
        }
        if let Some(e) = record_error.take() {
            return Err(e).context("--record: writing the file");
        }
        // Target responses from every intercept connection that has something.
        for &idx in &readable {
            let Some(link) = links.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let alive = read_link(link, &mut core, now, &mut buf).and_then(|more| {
                link.flush()
                    .then_some(more)
                    .ok_or_else(|| "route frames not taken".to_string())
            });
            match alive {
                Ok(true) => again.push(idx),
                Ok(false) => {}
                Err(why) => {
                    warn!("lost intercept {} ({why}); reconnecting", conn_addrs[idx]);
                    drop_link(&poll, &mut links[idx]);
                }
            }
        }
        if now.saturating_duration_since(last_silence_check) >= Duration::from_secs(1) {
            last_silence_check = now;
            for (idx, slot) in links.iter_mut().enumerate() {
                if slot
                    .as_ref()
                    .is_some_and(|l| now.saturating_duration_since(l.last_heard) > LINK_SILENCE)
                {
                    warn!(
                        "lost intercept {} (silent for {LINK_SILENCE:?}); reconnecting",
                        conn_addrs[idx]
                    );
                    drop_link(&poll, slot);
                }
            }
        }
        // Events from the other threads: new intercept connections, replayed packets.
        rx.drain(&mut events);
        for ev in events.drain(..) {
            handle_event(ev, now, &mut core, &poll, &mut links, &conn_addrs, &mut ctx)?;
        }
        core.end_batch();
        core.handle_timeout(Instant::now());
        let mut failed = |n: u64, e: &dyn std::fmt::Display| {
            for _ in 0..n {
                send_errors += 1;
                if send_errors.is_power_of_two() {
                    warn!("send to target failed ({send_errors} so far): {e}");
                }
            }
        };
        if let Err(f) = core.drain_transmits_all(|packets| sender.send_all(packets)) {
            failed(f.count, &f.last);
        }
        if let Sender::Link(link) = &mut sender {
            // Every capture thread has a sender of its own; they find the same ways out.
            if link.take_change() && worker.index == 0 {
                for (dst, hop) in link.next_hops() {
                    match hop {
                        Some(hop) => info!("to {dst}: at the link layer, via {hop}"),
                        None => info!("to {dst}: routed by the kernel"),
                    }
                }
            }
        }
        core.drain_routes(|routes| {
            announce(
                &poll,
                &mut links,
                usize::from(cfg.connections),
                routes,
                &mut announcing,
            )
        });
        let lazy = lazy_links(
            capture_busy_at,
            now,
            core.stalled_sessions(),
            lazy_wait(cfg.capture_wait, capture_gap),
        );
        for (idx, slot) in links.iter_mut().enumerate() {
            let Some(link) = slot.as_mut().filter(|l| l.lazy != lazy) else {
                continue;
            };
            if let Err(e) = link.set_lazy(lazy) {
                // A connection left lazy would hold reports below the mark unread.
                warn!("lost intercept {} ({e}); reconnecting", conn_addrs[idx]);
                drop_link(&poll, slot);
            }
        }
        if !cfg.stats_interval.is_zero()
            && now.saturating_duration_since(last_stats) >= cfg.stats_interval
        {
            last_stats = now;
            // One line for all capture threads, from the first.
            let all = worker.publish(stats(&core, capture_drops));
            if worker.index == 0 {
                info!("{all}");
            }
        }
        // A replay ends once its file is read and every session finished, or nothing moved for
        // a while (sessions the recording cut off never finish).
        if ctx.input_done.is_some() {
            let st = core.stats();
            let moved = st.packets_sent + st.responses;
            if moved != last_progress.0 {
                last_progress = (moved, Instant::now());
            }
            let idle = last_progress.1.elapsed();
            if st.sessions_active == 0
                || (idle >= REPLAY_IDLE_END && core.busy_sessions() == 0)
                || idle >= REPLAY_STALL_END
            {
                break;
            }
        }
    }
    if let Some(r) = ring.as_mut() {
        if let Ok(st) = r.stats() {
            capture_drops = st.drops;
        }
    }
    if let Some(r) = recorder {
        r.finish().context("--record: finishing the file")?;
    }
    if worker.count > 1 {
        let st = core.stats();
        info!(
            "capture thread {}: sessions {}, captured {}, requests online {} target {}",
            worker.index,
            st.sessions_created,
            st.captured_packets,
            st.requests_online,
            st.requests_target
        );
    }
    if let Sender::Link(link) = &sender {
        let counts = link.counts();
        info!(
            "packets to the target{}: {} at the link layer, {} routed",
            if worker.count > 1 {
                format!(" (capture thread {})", worker.index)
            } else {
                String::new()
            },
            counts.link,
            counts.routed
        );
    }
    Ok(RunReport {
        stats: stats(&core, capture_drops),
        input_error: input_done.and_then(|r| r.err()),
    })
}

/// Where the packets for the target go out: at the link layer, or routed by the kernel.
pub enum Sender {
    Link(LinkSender),
    Ip(RawSender),
}

impl Sender {
    pub fn open(via: &SendVia) -> anyhow::Result<Sender> {
        Ok(match via {
            SendVia::LinkLayer { device } => Sender::Link(LinkSender::open(device.as_deref()).context(
                "cannot open the sockets to send to the target (run as root, or with CAP_NET_RAW)",
            )?),
            SendVia::Kernel => Sender::Ip(RawSender::open().context(
                "cannot open a raw socket to send to the target (run as root, or with CAP_NET_RAW)",
            )?),
        })
    }

    pub fn send_all<'a>(
        &mut self,
        packets: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), netio::raw::SendFailures> {
        match self {
            Sender::Link(s) => s.send_all(packets),
            Sender::Ip(s) => s.send_all(packets),
        }
    }
}

/// Bytes read from one intercept connection per wake, so that a busy one cannot keep the loop
/// from the capture ring; the rest is read on the next pass.
const LINK_READ_BUDGET: usize = 1 << 20;
/// An intercept pings every 500 ms when it has nothing else to send: a connection silent this
/// long is dead (a peer that vanished without a reset), and is dropped and opened again.
const LINK_SILENCE: Duration = Duration::from_secs(5);

/// Reads what an intercept connection has (up to [`LINK_READ_BUDGET`]) and hands each response
/// to the core: `Ok(true)` when it may have more. An error (or the end of the stream) is the
/// reason the connection is over.
///
/// A read that leaves `buf` part empty took all the socket held, and data arriving after it
/// raises a new edge on the (edge-triggered) poll, so the read that would only say `WouldBlock`
/// is skipped: one system call less per connection per wake. Once the poll reported a hang-up,
/// no edge will come for the end of the stream, so such a connection is read on until it.
fn read_link(
    link: &mut Link,
    core: &mut Replicator,
    now: Instant,
    buf: &mut [u8],
) -> Result<bool, String> {
    let mut budget = LINK_READ_BUDGET;
    let mut drained = false;
    loop {
        // Frames that arrived with the welcome are already in the decoder.
        loop {
            match link.dec.next_message() {
                Ok(Some(Message::Responses(r))) => {
                    r.iter().for_each(|p| core.handle_response(now, p))
                }
                Ok(Some(Message::Ping)) => {}
                Ok(Some(other)) => return Err(format!("unexpected message {other:?}")),
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if drained {
            return Ok(false);
        }
        if budget == 0 {
            return Ok(true);
        }
        match link.stream.read(buf) {
            Ok(0) => return Err("closed by intercept".into()),
            Ok(n) => {
                link.dec.feed(&buf[..n]);
                link.last_heard = now;
                budget = budget.saturating_sub(n);
                if n < buf.len() && !link.hung_up {
                    drained = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Forgets a broken intercept connection and lets its thread connect again.
fn drop_link(poll: &Poll, slot: &mut Option<Link>) {
    if let Some(link) = slot.take() {
        let _ = poll
            .registry()
            .deregister(&mut SourceFd(&link.stream.as_raw_fd()));
        let _ = link.stream.shutdown(std::net::Shutdown::Both);
        link.down.store(true, Ordering::Relaxed);
    }
}

/// How long a replay waits for an intercept connection before it starts anyway.
const REPLAY_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// A finished replay stops when its sessions had no traffic for this long and none still works
/// towards the target (the rest wait for clients the recording cut off)...
const REPLAY_IDLE_END: Duration = Duration::from_secs(3);
/// ...or, whatever they wait for, after this long without any traffic.
const REPLAY_STALL_END: Duration = Duration::from_secs(120);

/// What `handle_event` needs besides the core and the intercept connections.
struct EventCtx<'a> {
    recorder: Option<&'a mut PcapNgRecorder>,
    queued: &'a AtomicUsize,
    replay_go: &'a AtomicBool,
    input_done: &'a mut Option<Result<SourceStats, String>>,
}

fn open_ring(
    cfg: &LiveConfig,
    interface: Option<&str>,
    fanout: Option<u16>,
) -> anyhow::Result<(RingCapture, Vec<netio::Insn>)> {
    let filter = TcpFilter {
        dst_ports: cfg.core.rules.iter().map(|r| r.online_port).collect(),
        dst_addrs: online_v4_addrs(cfg),
        // Our own sends to the target would otherwise be captured again (same port, other host).
        drop_outgoing: true,
        ..TcpFilter::default()
    };
    let filter = filter.compile();
    let ring_cfg = RingConfig {
        interface: interface.map(String::from),
        filter: filter.clone(),
        ignore_outgoing: true,
        fanout,
        block_timeout_ms: cfg.capture_wait.as_millis().try_into().unwrap_or(u32::MAX),
        ..RingConfig::default()
    };
    let ring = RingCapture::open(&ring_cfg).context("cannot start capturing")?;
    info!(
        "capturing on {} for {} rule(s), {} intercept(s)",
        interface.unwrap_or("all interfaces"),
        cfg.core.rules.len(),
        cfg.intercepts.len()
    );
    Ok((ring, filter))
}

fn online_v4_addrs(cfg: &LiveConfig) -> Vec<std::net::Ipv4Addr> {
    // The kernel filter can narrow by address only when every rule names one.
    let addrs: Option<Vec<_>> = cfg
        .core
        .rules
        .iter()
        .map(|r| match r.online_addr {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        })
        .collect();
    addrs.unwrap_or_default()
}

fn handle_event(
    ev: Event,
    now: Instant,
    core: &mut Replicator,
    poll: &Poll,
    links: &mut [Option<Link>],
    addrs: &[SocketAddr],
    ctx: &mut EventCtx<'_>,
) -> anyhow::Result<()> {
    match ev {
        Event::Captured(batch) => {
            batch.iter().for_each(|p| core.handle_capture(now, p));
            ctx.queued.fetch_sub(batch.bytes(), Ordering::Relaxed);
        }
        Event::InputDone(result) => {
            match &result {
                Ok(st) => info!(
                    "replay: end of file after {} packets ({} not IP)",
                    st.packets, st.skipped
                ),
                Err(e) => warn!("replay stopped: {e}"),
            }
            *ctx.input_done = Some(result);
        }
        Event::InterceptUp {
            idx,
            stream,
            dec,
            down,
        } => {
            info!("connected to intercept {}", addrs[idx]);
            ctx.replay_go.store(true, Ordering::Relaxed);
            let link = Link::new(stream, dec, down, now);
            let registered = link.stream.set_nonblocking(true).is_ok()
                && poll
                    .registry()
                    .register(
                        &mut SourceFd(&link.stream.as_raw_fd()),
                        Token(LINK + idx),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_ok();
            if !registered {
                warn!(
                    "intercept {}: cannot poll the connection; reconnecting",
                    addrs[idx]
                );
                link.down.store(true, Ordering::Relaxed);
                return Ok(());
            }
            // Announce every live session, so that replication resumes after an intercept restart.
            let routes: Vec<SocketAddr> = core.routes().collect();
            let mut frame = Vec::new();
            protocol::encode_routes(&mut frame, &routes);
            links[idx] = Some(link);
            let ok = links[idx].as_mut().is_some_and(|l| l.write(&frame));
            // Responses that came with the welcome are in the decoder already.
            let read = links[idx].as_mut().map_or(Ok(false), |l| {
                read_link(l, core, now, &mut vec![0u8; 64 * 1024])
            });
            if !ok || read.is_err() {
                warn!(
                    "lost intercept {} (it ended at once); reconnecting",
                    addrs[idx]
                );
                drop_link(poll, &mut links[idx]);
            }
        }
    }
    Ok(())
}

/// Buffers [`announce`] reuses from batch to batch.
#[derive(Default)]
struct AnnounceScratch {
    frame: Vec<u8>,
    live: Vec<usize>,
    mine: Vec<SocketAddr>,
}

/// Tells every intercept about new sessions, each route on one of its live connections (chosen by
/// client port, so the responses spread over them); `links` holds `per_server` connections for
/// each intercept, in order.
fn announce(
    poll: &Poll,
    links: &mut [Option<Link>],
    per_server: usize,
    routes: &[SocketAddr],
    scratch: &mut AnnounceScratch,
) {
    let AnnounceScratch { frame, live, mine } = scratch;
    for server in links.chunks_mut(per_server) {
        live.clear();
        live.extend((0..server.len()).filter(|&i| server[i].is_some()));
        for (k, &i) in live.iter().enumerate() {
            mine.clear();
            mine.extend(
                routes
                    .iter()
                    .filter(|r| usize::from(r.port()) % live.len() == k),
            );
            if mine.is_empty() {
                continue;
            }
            frame.clear();
            protocol::encode_routes(frame, mine);
            if !server[i].as_mut().is_some_and(|l| l.write(frame)) {
                // Its thread reconnects, and every route is announced again then.
                warn!("intercept connection stopped taking routes; reconnecting");
                drop_link(poll, &mut server[i]);
            }
        }
    }
}

/// Reads the replayed file on its own thread, handing packets over at their recorded pace
/// (`accelerate` times faster), once `go` is set; ends with [`Event::InputDone`].
fn spawn_file_reader(
    mut source: PcapSource,
    accelerate: f64,
    tx: Events,
    stop: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    budget: usize,
) -> anyhow::Result<()> {
    // Hands a batch over, holding back while too many captured bytes wait (as live capture does).
    let halt = stop.clone();
    let send = move |tx: &Events, batch: &mut PacketBatch| -> bool {
        if batch.is_empty() {
            return true;
        }
        while queued.load(Ordering::Relaxed) > budget && !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_micros(200));
        }
        queued.fetch_add(batch.bytes(), Ordering::Relaxed);
        tx.push(Event::Captured(std::mem::take(batch)));
        !stop.load(Ordering::Relaxed)
    };
    thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            while !go.load(Ordering::Relaxed) {
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let started = Instant::now();
            let mut first: Option<Duration> = None;
            let mut batch = PacketBatch::default();
            let mut last_log = Instant::now();
            let result = loop {
                let (due, at) = match source.next_packet() {
                    None => break Ok(source.stats()),
                    Some(Err(e)) => break Err(e.to_string()),
                    Some(Ok(p)) => {
                        let t0 = *first.get_or_insert(p.timestamp);
                        let offset = p.timestamp.saturating_sub(t0).div_f64(accelerate);
                        batch.push(p.data);
                        (started + offset, p.timestamp)
                    }
                };
                // The packet just added is due at `due`: hand over what came before it first.
                if due > Instant::now() + Duration::from_millis(1) {
                    let (head, last) = batch.split_last();
                    batch = head;
                    if !send(&tx, &mut batch) {
                        return;
                    }
                    let gap = due.saturating_duration_since(Instant::now());
                    if gap > Duration::from_secs(60) {
                        info!(
                            "replay: the recording pauses for {:.0} s here",
                            gap.as_secs_f64()
                        );
                    }
                    sleep_unless_stopped(gap, &halt);
                    if halt.load(Ordering::Relaxed) {
                        return;
                    }
                    batch = last;
                } else if batch.len() >= 256 && !send(&tx, &mut batch) {
                    return;
                }
                if last_log.elapsed() >= Duration::from_secs(2) {
                    last_log = Instant::now();
                    let st = source.stats();
                    info!(
                        "replay: {} packets, {:.0}% of the file, {:.1} s of recording in {:.1} s",
                        st.packets,
                        st.bytes_read as f64 * 100.0 / st.file_len.max(1) as f64,
                        at.saturating_sub(first.unwrap_or(at)).as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    );
                }
            };
            if send(&tx, &mut batch) {
                if let Ok(st) = &result {
                    info!(
                        "replay: {} packets read in {:.2} s",
                        st.packets,
                        started.elapsed().as_secs_f64()
                    );
                }
                tx.push(Event::InputDone(result));
            }
        })
        .context("cannot start the replay thread")?;
    Ok(())
}

fn spawn_intercept_conn(
    idx: usize,
    server: SocketAddr,
    instance: u32,
    tx: Events,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    thread::Builder::new()
        .name(format!("intercept-{idx}"))
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match connect(server, instance) {
                    Ok((stream, dec)) => {
                        failures = 0;
                        backoff = Duration::from_millis(100);
                        // The main thread reads and writes it from here on, and sets `down`
                        // when it breaks.
                        let down = Arc::new(AtomicBool::new(false));
                        tx.push(Event::InterceptUp {
                            idx,
                            stream,
                            dec,
                            down: down.clone(),
                        });
                        while !down.load(Ordering::Relaxed) {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        // Log the first failure and then about every 30 s, not every attempt.
                        if failures == 1 || failures.is_multiple_of(10) {
                            warn!("cannot reach intercept {server}: {e:#}; retrying");
                        }
                    }
                }
                sleep_unless_stopped(backoff, &stop);
                backoff = (backoff * 2).min(Duration::from_secs(3));
            }
        })
        .context("cannot start an intercept thread")?;
    Ok(())
}

/// Connects and performs the hello/welcome exchange; `instance` tells this capture thread's
/// connections apart from other threads' (intercept sends a response it cannot route once per
/// instance).
fn connect(server: SocketAddr, instance: u32) -> anyhow::Result<(TcpStream, Decoder)> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut hello = Vec::new();
    protocol::encode_hello(&mut hello, 0, instance);
    s.write_all(&hello)?;
    let mut dec = Decoder::new();
    read_first_message(&mut s, &mut dec, protocol::check_welcome)??;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok((s, dec))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::TcpcopyCli;

    fn link_layer(extra: &[&str]) -> Result<Option<Option<String>>, String> {
        let args = ["tcpcopy", "-x", "80-198.18.0.30:80", "-s", "198.18.0.40"];
        let cli = TcpcopyCli::try_parse_from(args.iter().chain(extra)).unwrap();
        LiveConfig::from_opts(&cli.opts).map(|c| match c.send {
            SendVia::Kernel => None,
            SendVia::LinkLayer { device } => Some(device),
        })
    }

    #[test]
    fn the_kernel_routes_unless_told_to_send_at_the_link_layer() {
        assert_eq!(link_layer(&[]), Ok(None));
        assert_eq!(link_layer(&["--send-layer", "ip"]), Ok(None));
        assert_eq!(link_layer(&["--send-layer", "link"]), Ok(Some(None)));
        assert_eq!(link_layer(&["-o", "eth1"]), Ok(Some(Some("eth1".into()))));
        assert_eq!(
            link_layer(&["--send-layer", "link", "-o", "eth1"]),
            Ok(Some(Some("eth1".into())))
        );
        assert!(link_layer(&["--send-layer", "ip", "-o", "eth1"]).is_err());
    }

    /// A read that leaves the buffer part empty ends the wake's reads of a connection; but when
    /// the intercept's last bytes and its close arrived together, the poll reports that once,
    /// and the read goes on to the end of the stream instead of leaving the connection for
    /// [`LINK_SILENCE`] to find.
    #[test]
    fn a_close_that_came_with_the_last_bytes_is_read_at_once() {
        let (mut poll, mut link, mut peer) = polled_pair();
        let mut ping = Vec::new();
        protocol::encode_ping(&mut ping);
        peer.write_all(&ping).unwrap();
        drop(peer);

        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !link.hung_up && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            events.iter().for_each(|ev| link.note(ev));
        }
        assert!(link.hung_up, "the poll reports the close");
        let mut core = Replicator::new(Config::new(Vec::new()));
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            read_link(&mut link, &mut core, Instant::now(), &mut buf),
            Err("closed by intercept".to_string())
        );
    }

    /// A connected pair: our end registered with a poll, and the intercept's end.
    fn polled_pair() -> (Poll, Link, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let poll = Poll::new().unwrap();
        poll.registry()
            .register(
                &mut SourceFd(&stream.as_raw_fd()),
                Token(LINK),
                Interest::READABLE,
            )
            .unwrap();
        let link = Link::new(
            stream,
            Decoder::new(),
            Arc::new(AtomicBool::new(false)),
            Instant::now(),
        );
        (poll, link, peer)
    }

    /// Whether the poll reports anything within `ms`.
    fn woken(poll: &mut Poll, ms: u64) -> bool {
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_millis(ms)))
            .unwrap();
        !events.is_empty()
    }

    /// What the lazy links rely on: below the mark a report wakes nobody, a read still gets
    /// it, and going back to eager wakes the loop for what is already queued.
    #[test]
    fn a_lazy_connection_wakes_nobody_for_a_report_yet_a_read_gets_it() {
        let (mut poll, mut link, mut peer) = polled_pair();
        let mut ping = Vec::new();
        protocol::encode_ping(&mut ping);
        link.set_lazy(true).unwrap();
        peer.write_all(&ping).unwrap();
        assert!(!woken(&mut poll, 200), "a ping below the mark wakes nobody");
        let mut core = Replicator::new(Config::new(Vec::new()));
        let mut buf = vec![0u8; 4096];
        let before = link.last_heard;
        assert_eq!(
            read_link(&mut link, &mut core, Instant::now(), &mut buf),
            Ok(false)
        );
        assert!(link.last_heard > before, "the read got the ping");

        peer.write_all(&ping).unwrap();
        assert!(!woken(&mut poll, 100));
        link.set_lazy(false).unwrap();
        assert!(
            woken(&mut poll, 1000),
            "eager again: the queued ping wakes the loop"
        );
        // Enough for the mark wakes the loop even when lazy.
        link.set_lazy(true).unwrap();
        assert_eq!(
            read_link(&mut link, &mut core, Instant::now(), &mut buf),
            Ok(false)
        );
        while woken(&mut poll, 50) {}
        let pings: Vec<u8> = ping.repeat(LAZY_LOWAT as usize / ping.len() + 1);
        peer.write_all(&pings).unwrap();
        assert!(woken(&mut poll, 1000), "a full mark wakes the loop");
    }

    #[test]
    fn links_are_lazy_only_while_the_capture_is_busy_and_no_session_waits_on_the_target() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let at = |n| t0 + ms(n);
        let wait = lazy_wait(ms(4), ms(3));
        assert_eq!(wait, ms(5), "a block of 4 ms and a millisecond");
        assert!(!lazy_links(None, at(0), 0, wait), "no capture yet");
        assert!(lazy_links(Some(t0), at(0), 0, wait));
        assert!(lazy_links(Some(t0), at(5), 0, wait));
        assert!(
            !lazy_links(Some(t0), at(6), 0, wait),
            "the capture went quiet"
        );
        assert!(
            !lazy_links(Some(t0), at(1), 1, wait),
            "a session waits on the target"
        );
        // A kernel that rounds blocks up to clock ticks: 1 ms asked, 10 ms seen.
        assert_eq!(lazy_wait(ms(1), ms(10)), ms(11));
        // Light load: a long gap is no block, and the sleep stays short.
        assert_eq!(lazy_wait(ms(4), ms(2000)), ms(15));
    }
}
