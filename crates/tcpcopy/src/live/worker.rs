//! One capture thread's replication loop, as a [`Worker`] holding its state and a named phase
//! per step of a wake: wait in the poll, take what it reported, read the capture, read the
//! intercept connections, read the mailbox, drive the core's timers, send, announce routes,
//! report. The per-packet work (capture and responses into the core, the core's packets out)
//! allocates nothing and makes the same system calls as one long loop would.
//!
//! The worker drives; what to do with each packet is the session core's business.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::{Poll, Token};
use tracing::{info, warn};

use pcap::{PcapNgRecorder, PcapSource};
use session::{Config, Replicator, Stats};

use super::capture::Capture;
use super::comparing::{Comparing, Sink};
use super::logins::LoginLog;
use super::peers::{Peers, PEER};
use super::replay::Replay;
use super::send::Sender;
use super::stream::{Streams, STREAM};
use super::{Event, Events, Member, Published, RunReport, RING, WAKE};
use crate::config::{Input, LiveConfig};
use crate::plumbing::Mailbox;

/// Runs one capture thread until `stop` is set (or `--duration` passes, or a replayed file is
/// done).
pub(super) fn run(
    cfg: &LiveConfig,
    stop: Arc<AtomicBool>,
    member: &Member,
) -> anyhow::Result<RunReport> {
    let worker = Worker::start(cfg, stop, member)?;
    // Sockets are open: nothing needs a capability from here on (the first thread is the
    // program's main thread; the others drop their own).
    let scope = if member.index == 0 {
        netio::privilege::Scope::Exec
    } else {
        netio::privilege::Scope::Thread
    };
    crate::plumbing::keep_capabilities(&[], scope);
    if member.index == 0 {
        // Capturing (every thread's ring joined its group before the first one starts).
        crate::plumbing::notify_ready();
    }
    worker.run()
}

/// A capture thread's state between wakes.
struct Worker<'a> {
    cfg: &'a LiveConfig,
    member: &'a Member,
    stop: Arc<AtomicBool>,
    core: Replicator,
    /// Packet mode: the raw sockets to the target. Stream mode: the connections to it.
    sender: Option<Sender>,
    streams: Option<Streams>,
    /// Waits for the capture ring, the intercept connections and the mailbox's waker.
    poll: Poll,
    ready: mio::Events,
    /// What the helper threads hand over, and the buffer it is drained into.
    mailbox: Events,
    events: Vec<Event>,
    capture: Capture,
    /// The comparison of the target's answers with the online server's (`--compare`).
    compare: Option<Comparing>,
    replay: Replay,
    peers: Peers,
    send_errors: u64,
    /// How sessions' logins went (`--protocol`).
    logins: LoginLog,
    started: Instant,
    last_stats: Instant,
    last_published: Instant,
}

/// Rounds of core and socket bridge answering each other within one wake (stream mode); what is
/// left waits for the next wake, which comes at once.
const EXCHANGE_ROUNDS: usize = 4;

/// How often a thread publishes its counters (for the metrics endpoint and the status line).
const PUBLISH: Duration = Duration::from_secs(1);

impl<'a> Worker<'a> {
    /// Opens everything the thread reads and writes, and starts its helper threads.
    fn start(
        cfg: &'a LiveConfig,
        stop: Arc<AtomicBool>,
        member: &'a Member,
    ) -> anyhow::Result<Worker<'a>> {
        // A file that cannot be read fails before anything else (and needs no privilege).
        let mut source = match &cfg.input {
            Input::File { path, .. } => Some(PcapSource::open(path)?),
            Input::Capture { .. } | Input::Mirror(_) => None,
        };
        let sender = match &cfg.stream {
            None => Some(open_sender(cfg)?),
            Some(_) => {
                // Stream mode sends over ordinary connections: only a capture needs privilege.
                if let (Input::Capture { .. }, Some(line)) = (
                    &cfg.input,
                    netio::privilege::missing(&[netio::privilege::NET_RAW], "capturing"),
                ) {
                    anyhow::bail!(line);
                }
                None
            }
        };
        let streams = cfg
            .stream
            .as_ref()
            .map(|settings| Streams::new(settings, cfg, member.count, member.index == 0));
        let poll = Poll::new().context("cannot create a poll")?;
        let waker = mio::Waker::new(poll.registry(), WAKE).context("cannot create a poll waker")?;
        let mailbox: Events = Arc::new(Mailbox::with_waker(waker));
        let replay = Replay::new();
        if streams.is_some() {
            // No intercept to wait for: a replay starts at once.
            replay.go.store(true, Ordering::Relaxed);
        }
        let ring = match &cfg.input {
            Input::Capture { interface } => Some(Capture::open_ring(
                cfg,
                interface.as_deref(),
                member,
                poll.registry(),
            )?),
            Input::Mirror(spec) => {
                let budget = cfg.core.max_buffered_bytes / 4;
                super::mirror::start(
                    spec,
                    mailbox.clone(),
                    replay.queued.clone(),
                    budget,
                    stop.clone(),
                )?;
                None
            }
            Input::File { path, pace } => {
                let source = source.take().context("replay source")?;
                info!(
                    "replaying {} ({}) at {}x for {} rule(s), {} intercept(s)",
                    path.display(),
                    source.format(),
                    pace.accelerate,
                    cfg.core.rules.len(),
                    cfg.intercepts.len()
                );
                let budget = cfg.core.max_buffered_bytes / 4;
                let board = member.board.clone();
                replay.start(
                    (path, source, &cfg.core.rules),
                    *pace,
                    mailbox.clone(),
                    stop.clone(),
                    budget,
                    board,
                )?;
                None
            }
        };
        let recorder = match &cfg.record {
            Some(path) => Some(
                PcapNgRecorder::create(path)
                    .with_context(|| format!("--record {}", path.display()))?,
            ),
            None => None,
        };
        let instance = std::process::id()
            .wrapping_mul(64)
            .wrapping_add(member.index as u32);
        let peers = Peers::start(cfg, instance, &mailbox, &stop)?;
        Ok(Worker {
            cfg,
            member,
            stop,
            core: replicator(cfg, member),
            sender,
            streams,
            poll,
            ready: mio::Events::with_capacity(64),
            mailbox,
            events: Vec::new(),
            capture: Capture::new(ring, recorder),
            compare: Comparing::new(cfg),
            replay,
            peers,
            send_errors: 0,
            logins: LoginLog::default(),
            started: Instant::now(),
            last_stats: Instant::now(),
            last_published: Instant::now(),
        })
    }

    /// The loop: one pass per wake, everything the wake brought one batch for the core.
    fn run(mut self) -> anyhow::Result<RunReport> {
        while !self.stop.load(Ordering::Relaxed) {
            // The clock is read three times a wake: here, after the poll, and for the timers.
            let top = Instant::now();
            if !self.keep_running(top) {
                break;
            }
            self.wait(top)?;
            let now = Instant::now();
            self.take_ready()?;
            // Everything this wake brought is one batch: each session answers once, at its end.
            self.core.begin_batch();
            // Client packets first: the ring holds what the kernel captured, whether or not
            // this wake was for it.
            self.capture
                .read(&mut self.core, self.compare.as_mut(), now)?;
            let mut sink = Sink {
                core: &mut self.core,
                compare: self.compare.as_mut(),
            };
            self.peers.read(self.poll.registry(), &mut sink, now);
            if let Some(streams) = &mut self.streams {
                streams.on_ready(self.poll.registry(), now);
                streams.respond(&mut sink, now);
            }
            self.peers.check_silence(self.poll.registry(), now);
            self.read_mailbox(now);
            self.core.end_batch();
            self.core.handle_timeout(Instant::now());
            let logins = &mut self.logins;
            self.core.drain_logins(|r| logins.note(r));
            if let Some(s) = &mut self.streams {
                s.handle_timeout(now);
            }
            if let Some(c) = &mut self.compare {
                c.after_batch(&mut self.core, now);
            }
            self.send(now);
            self.announce(now);
            self.report(now);
            if self.replay.finished(&self.core) {
                break;
            }
        }
        self.finish()
    }

    /// False once `--duration` passed; lets a replay that waited long enough for an intercept
    /// start anyway.
    #[inline]
    fn keep_running(&self, top: Instant) -> bool {
        let running = top.saturating_duration_since(self.started);
        if self.cfg.duration.is_some_and(|d| running >= d) {
            return false;
        }
        let is_replay = matches!(self.cfg.input, Input::File { .. });
        self.replay.start_anyway(running, is_replay);
        true
    }

    /// Sleeps in the poll until something is ready or a timer is due.
    #[inline]
    fn wait(&mut self, top: Instant) -> anyhow::Result<()> {
        // Wake for the next session timer, and at least every 100 ms for stop, stats and duration.
        let mut wait = self
            .core
            .poll_timeout()
            .map_or(Duration::MAX, |t| t.saturating_duration_since(top))
            .min(Duration::from_millis(100));
        // Lazy connections wake nobody for a report: a sleep no longer than a capture block
        // reads them.
        if self.peers.any_lazy() {
            wait = wait.min(self.capture.lazy_wait(self.cfg.capture_wait));
        }
        // A connection that had more than one wake's worth is read again at once.
        if self.peers.have_more() {
            wait = Duration::ZERO;
        }
        if let Some(streams) = &self.streams {
            if let Some(t) = streams.poll_timeout() {
                wait = wait.min(t.saturating_duration_since(top));
            }
            if streams.have_more() || streams.have_responses() {
                wait = Duration::ZERO;
            }
        }
        if let Err(e) = self.poll.poll(&mut self.ready, Some(wait)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("poll failed");
            }
        }
        Ok(())
    }

    /// Sorts what the poll reported: a capture error ends the run; connections to read.
    #[inline]
    fn take_ready(&mut self) -> anyhow::Result<()> {
        self.peers.begin_wake();
        for ev in self.ready.iter() {
            match ev.token() {
                RING if ev.is_error() => self.capture.check_error()?,
                Token(t) if t >= STREAM => {
                    if let Some(s) = &mut self.streams {
                        s.note_ready(t);
                    }
                }
                Token(t) if t >= PEER => self.peers.note_ready(t - PEER, ev),
                _ => {}
            }
        }
        self.peers.add_lazy();
        Ok(())
    }

    /// Events from the helper threads: replayed packets, the end of the file, new intercept
    /// connections.
    #[inline]
    fn read_mailbox(&mut self, now: Instant) {
        self.mailbox.drain(&mut self.events);
        for ev in self.events.drain(..) {
            match ev {
                Event::Captured(batch) => {
                    match &mut self.compare {
                        // A file may hold the server's answers too, at their recorded times.
                        Some(c) => batch
                            .iter_stamped()
                            .for_each(|(at, p)| c.replayed(&mut self.core, now, at, p)),
                        None => batch.iter().for_each(|p| self.core.handle_capture(now, p)),
                    }
                    self.replay.took(&batch);
                }
                Event::InputDone(result) => self.replay.ended(result),
                Event::InterceptUp {
                    idx,
                    stream,
                    dec,
                    down,
                } => {
                    self.replay.go.store(true, Ordering::Relaxed);
                    let conn = (idx, stream, dec, down);
                    let mut sink = Sink {
                        core: &mut self.core,
                        compare: self.compare.as_mut(),
                    };
                    self.peers
                        .welcome(self.poll.registry(), conn, &mut sink, now);
                }
            }
        }
    }

    /// Sends what the core has for the target.
    #[inline]
    fn send(&mut self, now: Instant) {
        if self.streams.is_some() {
            return self.exchange(now);
        }
        let Some(sender) = &mut self.sender else {
            return;
        };
        if let Err(f) = self
            .core
            .drain_transmits_all(|packets| sender.send_all(packets))
        {
            for _ in 0..f.count {
                self.send_errors += 1;
                if self.send_errors.is_power_of_two() {
                    let n = self.send_errors;
                    warn!("send to target failed ({n} so far): {}", f.last);
                }
            }
        }
        if let Some(Sender::Link(link)) = &mut self.sender {
            // Every capture thread has a sender of its own; they find the same ways out.
            if link.take_change() && self.member.index == 0 {
                for (dst, hop) in link.next_hops() {
                    match hop {
                        Some(hop) => info!("to {dst}: at the link layer, via {hop}"),
                        None => info!("to {dst}: routed by the kernel"),
                    }
                }
            }
        }
    }

    /// Stream mode: the core's packets to the socket bridge, its commands executed, and its
    /// answers (a SYN-ACK, acknowledgments) back to the core at once, for a few rounds: a request
    /// does not wait a wake for the acknowledgment of the one before.
    fn exchange(&mut self, now: Instant) {
        let Some(streams) = &mut self.streams else {
            return;
        };
        let registry = self.poll.registry();
        for _ in 0..EXCHANGE_ROUNDS {
            self.core.drain_transmits(|p| streams.transmit(now, p));
            streams.execute(registry, now);
            if !streams.have_responses() {
                break;
            }
            let mut sink = Sink {
                core: &mut self.core,
                compare: self.compare.as_mut(),
            };
            sink.core.begin_batch();
            streams.respond(&mut sink, now);
            sink.core.end_batch();
        }
        if let Some(c) = &mut self.compare {
            c.after_batch(&mut self.core, now);
        }
    }

    /// Tells the intercepts about new sessions, and sets how their connections wake the loop.
    #[inline]
    fn announce(&mut self, now: Instant) {
        let registry = self.poll.registry();
        let peers = &mut self.peers;
        self.core
            .drain_routes(|routes| peers.announce(registry, routes));
        let lazy = self.capture.peers_may_be_lazy(
            now,
            self.core.stalled_sessions(),
            self.cfg.capture_wait,
        );
        self.peers.set_lazy(registry, lazy);
    }

    /// Every `--stats-interval`: one statistics line for all capture threads, from the first.
    #[inline]
    fn report(&mut self, now: Instant) {
        let interval = self.cfg.stats_interval;
        let line_due =
            !interval.is_zero() && now.saturating_duration_since(self.last_stats) >= interval;
        if line_due || now.saturating_duration_since(self.last_published) >= PUBLISH {
            self.last_published = now;
            self.member.publish(Published {
                stats: self.stats(),
                in_flight: self.core.requests_in_flight(),
                compare: self.compare.as_ref().map(Comparing::live),
                latency: self.compare.as_ref().map(Comparing::latency),
                stream: self.streams.as_ref().map(Streams::stats),
            });
        }
        if !line_due {
            return;
        }
        self.last_stats = now;
        if self.member.index == 0 {
            let all = self.member.board.sum();
            let protocol = self.cfg.protocol.as_ref().map(|(p, _)| p.as_str());
            crate::logging::log_stats("stats", &all.stats, protocol);
            if let Some(st) = &all.stream {
                info!("{}", super::stream::describe(st));
            }
            if let (Some(c), Some((online, target))) = (all.compare, &all.latency) {
                info!(
                    "compared {} (equal {}, different {}, noise {}, open {}) latency p50/p99 online {}/{} us target {}/{} us",
                    c.compared,
                    c.equal,
                    c.different,
                    c.noise,
                    c.open,
                    online.p50_us,
                    online.p99_us,
                    target.p50_us,
                    target.p99_us
                );
            }
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            capture_drops: self.capture.drops,
            ..self.core.stats()
        }
    }

    /// After the loop: the recording completed, the last counters logged and returned.
    fn finish(mut self) -> anyhow::Result<RunReport> {
        self.capture.finish()?;
        let (index, several) = (self.member.index, self.member.count > 1);
        if several {
            let st = self.core.stats();
            info!(
                "capture thread {index}: sessions {}, captured {}, requests online {} target {}",
                st.sessions_created, st.captured_packets, st.requests_online, st.requests_target
            );
        }
        if let Some(Sender::Link(link)) = &self.sender {
            let counts = link.counts();
            let whose = if several {
                format!(" (capture thread {index})")
            } else {
                String::new()
            };
            info!(
                "packets to the target{whose}: {} at the link layer, {} routed",
                counts.link, counts.routed
            );
        }
        Ok(RunReport {
            stats: self.stats(),
            in_flight: self.core.requests_in_flight(),
            compare: self.compare.as_mut().map(Comparing::finish),
            input_error: self.replay.done.take().and_then(|r| r.err()),
            stream: self.streams.as_ref().map(Streams::stats),
        })
    }
}

/// This thread's replication core, with the protocol hook of `--protocol`.
fn replicator(cfg: &LiveConfig, member: &Member) -> Replicator {
    let mut core = Replicator::new(core_config(cfg, member));
    if let Some(hook) = &member.hook {
        core.set_dialect(hook.dialect());
    }
    core
}

/// Packet mode's raw sockets to the target, opened while the program has the privilege.
fn open_sender(cfg: &LiveConfig) -> anyhow::Result<Sender> {
    if let Some(line) = netio::privilege::missing(
        &[netio::privilege::NET_RAW],
        "sending to the target (and capturing)",
    ) {
        anyhow::bail!(line);
    }
    let mut sender = Sender::open(&cfg.send)?;
    let mut targets: Vec<std::net::IpAddr> = cfg.core.rules.iter().map(|r| r.target.ip()).collect();
    targets.extend(cfg.core.baseline.map(|b| b.ip()));
    sender.prepare(&targets)?;
    Ok(sender)
}

/// The core's configuration for this thread. Fake client endpoints must not collide between
/// threads: each takes every count-th address.
fn core_config(cfg: &LiveConfig, member: &Member) -> Config {
    let mut core = cfg.core.clone();
    core.fake_clients = core
        .fake_clients
        .iter()
        .skip(member.index)
        .step_by(member.count)
        .copied()
        .collect();
    // `-m` is the whole program's budget: each capture thread holds its share.
    let count = member.count.max(1);
    core.max_buffered_bytes /= count;
    core.max_session_bytes = core.max_session_bytes.min(core.max_buffered_bytes);
    core
}
