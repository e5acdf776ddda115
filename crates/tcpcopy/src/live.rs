//! The live `tcpcopy` driver: a capture thread feeds client packets, one thread per intercept
//! connection feeds target responses, and the main thread runs the session core and sends.
//!
//! Threads talk through one bounded channel of [`Event`]s, so the core itself stays single-threaded
//! and deterministic. Intercept connections reconnect with backoff forever: replication resumes by
//! itself when an intercept comes back, and the routes of every live session are announced again.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, info, warn};

use protocol::{Decoder, Message};
use session::{Config, Replicator, Stats};
use tcio::bpf::TcpFilter;
use tcio::capture::{RingCapture, RingConfig};
use tcio::pcap::{PcapNgRecorder, PcapSource, SourceStats};
use tcio::raw::{PacketSink, RawSender};

use crate::cli::TcpcopyOpts;
use crate::plumbing::{
    read_first_message, read_or_timeout, sleep_unless_stopped, spawn_capture_loop, Mailbox,
    PacketBatch,
};

/// What the other threads hand the main thread.
type Events = Arc<Mailbox<Event>>;

enum Event {
    Captured(PacketBatch),
    /// The replayed file ended (or broke: the one-line reason).
    InputDone(Result<SourceStats, String>),
    Responses(PacketBatch),
    InterceptUp {
        idx: usize,
        writer: TcpStream,
    },
    InterceptDown {
        idx: usize,
    },
    CaptureFailed(String),
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
    pub input: Input,
    /// Write captured client packets to this pcapng file.
    pub record: Option<PathBuf>,
    pub stats_interval: Duration,
    pub duration: Option<Duration>,
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
        Ok(LiveConfig {
            core,
            intercepts: servers
                .into_iter()
                .map(|(ip, port)| SocketAddr::new(ip, port.unwrap_or(o.port)))
                .collect(),
            connections: o.connections,
            input,
            record: o.record.clone(),
            stats_interval: Duration::from_secs(o.stats_interval),
            duration: (o.duration > 0).then(|| Duration::from_secs(o.duration)),
        })
    }
}

/// Runs until `stop` is set (or `--duration` passes, or a replayed file is done); returns the final
/// statistics.
pub fn run(cfg: LiveConfig, stop: Arc<AtomicBool>) -> anyhow::Result<RunReport> {
    // A file that cannot be read fails before anything else (and needs no privilege).
    let mut source = match &cfg.input {
        Input::File { path, .. } => Some(PcapSource::open(path)?),
        Input::Capture { .. } => None,
    };
    let mut sender = RawSender::open()
        .context("cannot open a raw socket to send to the target (run as root)")?;
    // Unbounded, but captured bytes waiting in it are budgeted (see `spawn_capture`): the capture
    // thread must keep emptying the kernel ring while this thread is busy sending, because a client
    // segment the ring drops is never sent again.
    let tx: Events = Arc::default();
    let rx = tx.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let capture_drops = Arc::new(AtomicU64::new(0));
    let budget = cfg.core.max_buffered_bytes / 4;
    // A replay waits for its first intercept connection, so that its first sessions are answered.
    let replay_go = Arc::new(AtomicBool::new(false));
    match &cfg.input {
        Input::Capture { interface } => {
            let ring = open_ring(&cfg, interface.as_deref())?;
            spawn_capture(
                ring,
                tx.clone(),
                stop.clone(),
                capture_drops.clone(),
                queued.clone(),
                budget,
            )?;
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
    let stats = |core: &Replicator| Stats {
        capture_drops: capture_drops.load(Ordering::Relaxed),
        ..core.stats()
    };
    let mut conn_addrs = Vec::new();
    for &server in &cfg.intercepts {
        for _ in 0..cfg.connections {
            let idx = conn_addrs.len();
            conn_addrs.push(server);
            spawn_intercept_conn(idx, server, tx.clone(), stop.clone())?;
        }
    }

    let started = Instant::now();
    let mut core = Replicator::new(cfg.core.clone());
    let mut writers: Vec<Option<TcpStream>> = (0..conn_addrs.len()).map(|_| None).collect();
    let mut frame = Vec::new();
    let mut send_errors = 0u64;
    let mut last_stats = Instant::now();
    let mut input_done: Option<Result<SourceStats, String>> = None;
    let mut last_progress = (0u64, Instant::now());
    let mut events = Vec::new();
    let mut ctx = EventCtx {
        recorder: recorder.as_mut(),
        queued: &queued,
        replay_go: &replay_go,
        input_done: &mut input_done,
    };
    while !stop.load(Ordering::Relaxed) {
        if cfg.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if started.elapsed() >= REPLAY_CONNECT_WAIT
            && !replay_go.swap(true, Ordering::Relaxed)
            && matches!(cfg.input, Input::File { .. })
        {
            warn!("no intercept connected after {REPLAY_CONNECT_WAIT:?}: replaying anyway");
        }
        // Wake for the next session timer, and at least every 100 ms for stop, stats and duration.
        let wait = core
            .poll_timeout()
            .map_or(Duration::MAX, |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(100));
        // Everything queued is handled before sending, so sends and route frames batch up.
        rx.drain_wait(wait, &mut events);
        for ev in events.drain(..) {
            handle_event(ev, &mut core, &mut writers, &conn_addrs, &mut ctx)?;
        }
        core.handle_timeout(Instant::now());
        let mut failed = |n: u64, e: &dyn std::fmt::Display| {
            for _ in 0..n {
                send_errors += 1;
                if send_errors.is_power_of_two() {
                    warn!("send to target failed ({send_errors} so far): {e}");
                }
            }
        };
        core.drain_transmits(|p| {
            if let Err(e) = sender.send(p) {
                failed(1, &e);
            }
        });
        if let Err(f) = sender.flush() {
            failed(f.count, &f.last);
        }
        core.drain_routes(|routes| {
            announce(
                &mut writers,
                usize::from(cfg.connections),
                routes,
                &mut frame,
            )
        });
        if !cfg.stats_interval.is_zero() && last_stats.elapsed() >= cfg.stats_interval {
            last_stats = Instant::now();
            info!("{}", stats(&core));
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
    if let Some(r) = recorder {
        r.finish().context("--record: finishing the file")?;
    }
    Ok(RunReport {
        stats: stats(&core),
        input_error: input_done.and_then(|r| r.err()),
    })
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

fn open_ring(cfg: &LiveConfig, interface: Option<&str>) -> anyhow::Result<RingCapture> {
    let filter = TcpFilter {
        dst_ports: cfg.core.rules.iter().map(|r| r.online_port).collect(),
        dst_addrs: online_v4_addrs(cfg),
        // Our own sends to the target would otherwise be captured again (same port, other host).
        drop_outgoing: true,
        ..TcpFilter::default()
    };
    let ring_cfg = RingConfig {
        interface: interface.map(String::from),
        filter: filter.compile(),
        ignore_outgoing: true,
        ..RingConfig::default()
    };
    let ring = RingCapture::open(&ring_cfg).context("cannot start capturing")?;
    info!(
        "capturing on {} for {} rule(s), {} intercept(s)",
        interface.unwrap_or("all interfaces"),
        cfg.core.rules.len(),
        cfg.intercepts.len()
    );
    Ok(ring)
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
    core: &mut Replicator,
    writers: &mut [Option<TcpStream>],
    addrs: &[SocketAddr],
    ctx: &mut EventCtx<'_>,
) -> anyhow::Result<()> {
    let now = Instant::now();
    match ev {
        Event::Captured(batch) => {
            batch.iter().for_each(|p| core.handle_capture(now, p));
            ctx.queued.fetch_sub(batch.bytes(), Ordering::Relaxed);
            if let Some(rec) = ctx.recorder.as_mut() {
                for (p, at) in batch.iter().zip(batch.timestamps()) {
                    rec.write(at, p, p.len() as u32)
                        .context("--record: writing the file")?;
                }
            }
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
        Event::Responses(batch) => batch.iter().for_each(|p| core.handle_response(now, p)),
        Event::InterceptUp { idx, mut writer } => {
            info!("connected to intercept {}", addrs[idx]);
            ctx.replay_go.store(true, Ordering::Relaxed);
            // Announce every live session, so that replication resumes after an intercept restart.
            let routes: Vec<SocketAddr> = core.routes().collect();
            let mut frame = Vec::new();
            protocol::encode_routes(&mut frame, &routes);
            if writer.write_all(&frame).is_ok() {
                writers[idx] = Some(writer);
            } else {
                let _ = writer.shutdown(std::net::Shutdown::Both);
            }
        }
        Event::InterceptDown { idx } => {
            if writers[idx].take().is_some() {
                warn!("lost intercept {}; reconnecting", addrs[idx]);
            }
        }
        Event::CaptureFailed(e) => anyhow::bail!("capture failed: {e}"),
    }
    Ok(())
}

/// Tells every intercept about new sessions, each route on one of its live connections (chosen by
/// client port, so the responses spread over them); `writers` holds `per_server` connections for
/// each intercept, in order.
fn announce(
    writers: &mut [Option<TcpStream>],
    per_server: usize,
    routes: &[SocketAddr],
    frame: &mut Vec<u8>,
) {
    for server in writers.chunks_mut(per_server) {
        let live: Vec<usize> = (0..server.len()).filter(|&i| server[i].is_some()).collect();
        for (k, &i) in live.iter().enumerate() {
            let mine: Vec<SocketAddr> = routes
                .iter()
                .filter(|r| usize::from(r.port()) % live.len() == k)
                .copied()
                .collect();
            if mine.is_empty() {
                continue;
            }
            frame.clear();
            protocol::encode_routes(frame, &mine);
            if let Some(s) = &mut server[i] {
                if let Err(e) = s.write_all(frame) {
                    // Shut it down so that its reader reconnects and every route is announced again.
                    debug!("route write failed: {e}");
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    server[i] = None;
                }
            }
        }
    }
}

fn spawn_capture(
    ring: RingCapture,
    tx: Events,
    stop: Arc<AtomicBool>,
    drops: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
    budget: usize,
) -> anyhow::Result<()> {
    let failed = tx.clone();
    let waiting = stop.clone();
    spawn_capture_loop(
        ring,
        stop,
        drops,
        move |batch| {
            // Over budget, hold back: the kernel ring then fills, and drops are counted there.
            while queued.load(Ordering::Relaxed) > budget && !waiting.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_micros(200));
            }
            queued.fetch_add(batch.bytes(), Ordering::Relaxed);
            tx.push(Event::Captured(batch));
            true
        },
        move |e| {
            failed.push(Event::CaptureFailed(e.to_string()));
        },
    )
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
                        batch.push_at(p.data, p.timestamp);
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
    tx: Events,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    thread::Builder::new()
        .name(format!("intercept-{idx}"))
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match connect(server) {
                    Ok((stream, decoder)) => {
                        failures = 0;
                        backoff = Duration::from_millis(100);
                        let writer = match stream.try_clone() {
                            Ok(w) => w,
                            Err(e) => {
                                warn!("intercept {server}: {e}");
                                continue;
                            }
                        };
                        tx.push(Event::InterceptUp { idx, writer });
                        let why = read_responses(stream, decoder, &tx, &stop);
                        tx.push(Event::InterceptDown { idx });
                        warn!("intercept {server} connection ended: {why}");
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

/// Connects and performs the hello/welcome exchange.
fn connect(server: SocketAddr) -> anyhow::Result<(TcpStream, Decoder)> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut hello = Vec::new();
    protocol::encode_hello(&mut hello, 0, std::process::id());
    s.write_all(&hello)?;
    let mut dec = Decoder::new();
    read_first_message(&mut s, &mut dec, protocol::check_welcome)??;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok((s, dec))
}

fn read_responses(
    mut s: TcpStream,
    mut dec: Decoder,
    tx: &Events,
    stop: &AtomicBool,
) -> String {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // Frames that arrived with the welcome are already in the decoder.
        let mut batch = PacketBatch::default();
        loop {
            match dec.next_message() {
                Ok(Some(Message::Responses(r))) => r.iter().for_each(|p| batch.push(p)),
                Ok(Some(Message::Ping)) => {}
                Ok(Some(other)) => return format!("unexpected message {other:?}"),
                Ok(None) => break,
                Err(e) => return e.to_string(),
            }
        }
        if !batch.is_empty() {
            tx.push(Event::Responses(batch));
        }
        if stop.load(Ordering::Relaxed) {
            return "shutting down".into();
        }
        match read_or_timeout(&mut s, &mut buf) {
            Ok(Some(0)) => return "closed by intercept".into(),
            Ok(Some(n)) => dec.feed(&buf[..n]),
            Ok(None) => {}
            Err(e) => return e.to_string(),
        }
    }
}
