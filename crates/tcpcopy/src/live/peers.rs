//! The worker's intercept connections ([`Peer`]s): a thread per connection slot connects (hello,
//! welcome) and reconnects with backoff; once connected, the worker reads the responses and
//! writes the route announcements itself, without blocking, on readiness from its poll.
//!
//! Also here: when the connections wake the poll for every byte and when they wait to be read
//! on the capture's wakes (`LAZY_LOWAT`), and when a silent one counts as dead. What the
//! responses and routes mean is the session core's and the protocol crate's business.
//!
//! With `--secret-file`, each connection opens the encrypted channel (`crate::channel`) and its
//! [`Peer`] seals what it writes and opens what it reads.
//!
//! With `--compare` or `--protocol`, the hello asks for annotated answers, and each connection asks its
//! intercept the time (at once, a few times quickly, then every second) to estimate how far the
//! intercept's clock is from ours (`protocol::clock`): the capture times in the annotations are
//! handed on ([`TargetNote`]) on our clock. Each response goes to a [`ResponseSink`]: the
//! session core itself, or whatever the worker wraps around it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use tracing::{debug, info, warn};

use protocol::clock::ClockSync;
use protocol::secure::{Channel, Opener, Psk, Sealer};
use protocol::{Answers, Decoder, Message};
use session::Replicator;

use super::{Event, Events};
use crate::config::LiveConfig;
use crate::plumbing::{read_first_message, sleep_unless_stopped};

/// mio token of connection slot `i`: `PEER + i` (below are the capture ring and the waker).
pub(super) const PEER: usize = 2;

/// While the capture keeps the loop awake and no session waits on the target (see
/// `Replicator::stalled_sessions`), the intercept connections wake the loop only once this many
/// bytes wait (`SO_RCVLOWAT`): their reports are read on the capture's wakes instead, one wake
/// for both, not one each. A report then waits at most for the next capture block; it matters
/// at once only to a session that holds a request until the target answered, and while one does,
/// the connections wake the loop for every byte again.
const LAZY_LOWAT: libc::c_int = 16 << 10;
/// Route frames an intercept connection may leave unread before it counts as broken.
const MAX_PENDING_ROUTES: usize = 4 << 20;
/// Bytes read from one intercept connection per wake, so that a busy one cannot keep the loop
/// from the capture ring; the rest is read on the next pass.
const PEER_READ_BUDGET: usize = 1 << 20;
/// An intercept pings every 500 ms when it has nothing else to send: a connection silent this
/// long is dead (a peer that vanished without a reset), and is dropped and opened again.
const PEER_SILENCE: Duration = Duration::from_secs(5);
/// Time asks sent back to back (each on the previous one's reply) after connecting, so that the
/// clock offset is known within the first round trips; then one a second.
const QUICK_ASKS: u8 = 5;

/// Where the worker takes the target's responses.
pub(super) trait ResponseSink {
    /// One response packet (IP header first), with its intercept's annotation when comparing.
    fn response(&mut self, now: Instant, packet: &[u8], note: Option<TargetNote<'_>>);
    /// The client endpoints to announce on a new connection (every live session's).
    fn routes(&self) -> Vec<SocketAddr>;
}

/// What a comparing intercept says about a response packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetNote<'a> {
    /// When the intercept captured it: ns since the Unix epoch, on our clock (the intercept's
    /// time less its estimated offset; as reported while no estimate exists yet).
    pub at_ns: u64,
    /// Digest of the packet's payload (`compare::Digest::of(payload).hash`).
    pub hash: u64,
    /// The payload bytes within the first `--compare-bytes` of the answer.
    pub head: &'a [u8],
}

impl ResponseSink for Replicator {
    #[inline]
    fn response(&mut self, now: Instant, packet: &[u8], note: Option<TargetNote<'_>>) {
        self.handle_response_head(now, packet, note.map_or(&[], |n| n.head));
    }

    fn routes(&self) -> Vec<SocketAddr> {
        Replicator::routes(self).collect()
    }
}

/// `t` in ns since the Unix epoch (0 before it).
fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One connection's view of its intercept's clock (comparing connections only).
struct PeerClock {
    sync: ClockSync,
    /// Quick asks still to send, each on the previous one's reply.
    quick: u8,
    /// The offset was logged (once per connection).
    logged: bool,
}

impl PeerClock {
    fn new() -> PeerClock {
        PeerClock {
            sync: ClockSync::default(),
            quick: QUICK_ASKS,
            logged: false,
        }
    }

    /// `at_ns` of the intercept's clock on ours. Before the first estimate of the offset (the
    /// first answers of a connection), the time the report arrives stands in: later than the
    /// capture by the channel's delay, where the intercept's own time could be off by the whole
    /// difference between the hosts' clocks.
    #[inline]
    fn to_ours(&self, at_ns: u64) -> u64 {
        match self.sync.offset_ns() {
            Some(offset) => {
                (i128::from(at_ns) - i128::from(offset)).clamp(0, i128::from(u64::MAX)) as u64
            }
            None => unix_ns(SystemTime::now()),
        }
    }
}

/// Whether the intercept connections wake the loop for every byte (`false`) or read on the
/// capture's wakes (`true`, see [`LAZY_LOWAT`]), given when the capture last brought packets
/// and how long the loop may sleep meanwhile ([`lazy_wait`]).
#[inline]
pub(super) fn lazy_peers(
    capture_busy_at: Option<Instant>,
    now: Instant,
    stalled: usize,
    lazy_wait: Duration,
) -> bool {
    stalled == 0 && capture_busy_at.is_some_and(|t| now.saturating_duration_since(t) <= lazy_wait)
}

/// The longest the loop sleeps while the connections are lazy: a capture block and a
/// millisecond of slack. If the capture went quiet, the loop finds out within this, and reads
/// the connections again as they come. A block lasts `capture_wait`, or longer where the
/// kernel's block timer counts in clock ticks (4 ms at HZ=250, 10 ms at HZ=100): `gap`, the time
/// between the last two wakes that brought packets, tells, up to 10 ms beyond `capture_wait`.
#[inline]
pub(super) fn lazy_wait(capture_wait: Duration, gap: Duration) -> Duration {
    let block = capture_wait.max(gap.min(capture_wait + Duration::from_millis(10)));
    block + Duration::from_millis(1)
}

/// One connected intercept, as the worker drives it: responses are read and route frames
/// written without blocking, on readiness from the poll.
pub struct Peer {
    stream: TcpStream,
    dec: Decoder,
    /// The encrypted channel's two directions (`--secret-file`).
    sealer: Option<Sealer>,
    opener: Option<Opener>,
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
    /// The intercept, for the log.
    addr: SocketAddr,
    /// First bytes of each answer kept, and the intercept's clock: comparing connections only.
    head_bytes: Option<u16>,
    clock: Option<PeerClock>,
}

impl Peer {
    /// A connection just welcomed by its intercept: nothing pending, waking the loop for every
    /// byte.
    fn new(
        stream: TcpStream,
        opened: Opened,
        down: Arc<AtomicBool>,
        now: Instant,
        (addr, head_bytes): (SocketAddr, Option<u16>),
    ) -> Peer {
        let (sealer, opener) = match opened.channel {
            Some(c) => (Some(c.sealer), Some(c.opener)),
            None => (None, None),
        };
        Peer {
            stream,
            dec: opened.dec,
            sealer,
            opener,
            pending: Vec::new(),
            down,
            last_heard: now,
            hung_up: false,
            lazy: false,
            addr,
            head_bytes,
            clock: head_bytes.map(|_| PeerClock::new()),
        }
    }

    /// Asks the intercept the time (comparing connections only); false when the connection is
    /// broken.
    fn ask_time(&mut self) -> bool {
        if self.clock.is_none() {
            return true;
        }
        let mut f = Vec::with_capacity(16);
        protocol::encode_time_ask(&mut f, unix_ns(SystemTime::now()));
        self.write(&f)
    }

    /// The intercept's reply to a time ask, just read; false when the connection is broken.
    fn time_told(&mut self, (t1, t2, t3): (u64, u64, u64)) -> bool {
        let t4 = unix_ns(SystemTime::now());
        let Some(clock) = self.clock.as_mut() else {
            return true;
        };
        clock.sync.sample(t1, t2, t3, t4);
        if let (false, Some(off), Some(rtt)) = (
            clock.logged,
            clock.sync.offset_ns(),
            clock.sync.round_trip_ns(),
        ) {
            clock.logged = true;
            info!(
                "intercept {}: clock offset {:+.3} s (round trip {:.1} ms)",
                self.addr,
                off as f64 / 1e9,
                rtt as f64 / 1e6
            );
        }
        if clock.quick > 0 {
            clock.quick -= 1;
            return self.ask_time();
        }
        true
    }

    /// Writes `frame` after whatever is pending; false when the connection is broken.
    fn write(&mut self, frame: &[u8]) -> bool {
        match self.sealer.as_mut() {
            Some(s) => {
                if s.seal(frame, &mut self.pending).is_err() {
                    return false;
                }
            }
            None => self.pending.extend_from_slice(frame),
        }
        self.flush()
    }

    /// Takes note of what the poll said about the connection.
    #[inline]
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

    /// Reads what the connection has (up to [`PEER_READ_BUDGET`]) and hands each response to
    /// the core: `Ok(true)` when it may have more. An error (or the end of the stream) is the
    /// reason the connection is over.
    ///
    /// A read that leaves `buf` part empty took all the socket held, and data arriving after it
    /// raises a new edge on the (edge-triggered) poll, so the read that would only say
    /// `WouldBlock` is skipped: one system call less per connection per wake. Once the poll
    /// reported a hang-up, no edge will come for the end of the stream, so such a connection is
    /// read on until it.
    fn read(
        &mut self,
        sink: &mut impl ResponseSink,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<bool, String> {
        let mut budget = PEER_READ_BUDGET;
        let mut drained = false;
        loop {
            // Frames that arrived with the welcome are already in the decoder.
            loop {
                let told = match self.dec.next_message() {
                    Ok(Some(Message::Responses(r))) => {
                        r.iter().for_each(|p| sink.response(now, p, None));
                        continue;
                    }
                    Ok(Some(Message::Answers(a))) => {
                        let (Some(clock), Some(head_bytes)) = (&self.clock, self.head_bytes) else {
                            return Err("answers we did not ask for".into());
                        };
                        hand_on(&a, clock, head_bytes, sink, now);
                        continue;
                    }
                    Ok(Some(Message::TimeTell { t1, t2, t3 })) => (t1, t2, t3),
                    Ok(Some(Message::Ping)) => continue,
                    Ok(Some(other)) => return Err(format!("unexpected message {other:?}")),
                    Ok(None) => break,
                    Err(e) => return Err(e.to_string()),
                };
                if !self.time_told(told) {
                    return Err("time asks not taken".into());
                }
            }
            if drained {
                return Ok(false);
            }
            if budget == 0 {
                return Ok(true);
            }
            match self.stream.read(buf) {
                Ok(0) => return Err("closed by intercept".into()),
                Ok(n) => {
                    let dec = &mut self.dec;
                    match self.opener.as_mut() {
                        Some(o) => o
                            .open(&buf[..n], |p| dec.feed(p))
                            .map_err(|e| e.to_string())?,
                        None => dec.feed(&buf[..n]),
                    }
                    self.last_heard = now;
                    budget = budget.saturating_sub(n);
                    if n < buf.len() && !self.hung_up {
                        drained = true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Hands a batch of annotated responses to the sink, their times on our clock and their heads
/// cut to what we keep.
#[inline]
fn hand_on(
    answers: &Answers<'_>,
    clock: &PeerClock,
    head_bytes: u16,
    sink: &mut impl ResponseSink,
    now: Instant,
) {
    for (p, n) in answers.iter() {
        let note = TargetNote {
            at_ns: clock.to_ours(n.at_ns),
            hash: n.hash,
            head: &n.head[..n.head.len().min(usize::from(head_bytes))],
        };
        sink.response(now, p, Some(note));
    }
}

/// First bytes of each answer the intercepts forward (in stream mode: the bridge's answers
/// keep): what the comparison keeps (`--compare-bytes`) or a protocol's logins need
/// (`--protocol`), the larger; `None`: headers only.
pub(super) fn head_bytes(cfg: &LiveConfig) -> Option<u16> {
    let compare = cfg.compare.as_ref().map(|c| c.head_bytes);
    let protocol = cfg.protocol.as_ref().map(|(p, _)| p.head_bytes());
    compare.max(protocol)
}

/// Forgets a broken intercept connection and lets its thread connect again.
fn drop_peer(registry: &Registry, slot: &mut Option<Peer>) {
    if let Some(peer) = slot.take() {
        let _ = registry.deregister(&mut SourceFd(&peer.stream.as_raw_fd()));
        let _ = peer.stream.shutdown(std::net::Shutdown::Both);
        peer.down.store(true, Ordering::Relaxed);
    }
}

/// Buffers [`Peers::announce`] reuses from batch to batch.
#[derive(Default)]
struct AnnounceScratch {
    frame: Vec<u8>,
    live: Vec<usize>,
    mine: Vec<SocketAddr>,
}

/// Every intercept connection of one worker: slot `i` is connection `i % connections` to
/// intercept `i / connections`, connected or not.
pub(super) struct Peers {
    slots: Vec<Option<Peer>>,
    /// The intercept of each slot.
    addrs: Vec<SocketAddr>,
    /// Slots per intercept (`-C`).
    per_server: usize,
    announcing: AnnounceScratch,
    /// Slots to read on this wake, and those that had more than one wake's worth.
    readable: Vec<usize>,
    again: Vec<usize>,
    buf: Vec<u8>,
    last_silence_check: Instant,
    /// First bytes of each answer kept (`--compare-bytes`): the hello asks for annotated answers.
    head_bytes: Option<u16>,
}

impl Peers {
    /// Starts a connecting thread for every slot; `instance` tells this worker's connections
    /// apart from other workers' (intercept sends a response it cannot route once per instance).
    pub fn start(
        cfg: &LiveConfig,
        instance: u32,
        tx: &Events,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<Peers> {
        let head_bytes = head_bytes(cfg);
        let mut addrs = Vec::new();
        for &server in &cfg.intercepts {
            for _ in 0..cfg.connections {
                let idx = addrs.len();
                addrs.push(server);
                let hello = Hello {
                    instance,
                    compare_bytes: head_bytes,
                    secret: cfg.secret.clone(),
                };
                spawn_connector(idx, server, hello, tx.clone(), stop.clone())?;
            }
        }
        Ok(Peers {
            slots: (0..addrs.len()).map(|_| None).collect(),
            addrs,
            per_server: usize::from(cfg.connections),
            announcing: AnnounceScratch::default(),
            readable: Vec::new(),
            again: Vec::new(),
            buf: vec![0u8; 256 * 1024],
            last_silence_check: Instant::now(),
            head_bytes,
        })
    }

    /// Whether a connection waits to be read on the capture's wakes.
    #[inline]
    pub fn any_lazy(&self) -> bool {
        self.slots.iter().flatten().any(|p| p.lazy)
    }

    /// Whether a connection had more than a wake's worth: the poll should not sleep.
    #[inline]
    pub fn have_more(&self) -> bool {
        !self.again.is_empty()
    }

    /// Starts a wake: the connections that had more are read again first.
    #[inline]
    pub fn begin_wake(&mut self) {
        self.readable.clear();
        self.readable.append(&mut self.again);
    }

    /// The poll reported slot `idx` (its token is `PEER + idx`).
    #[inline]
    pub fn note_ready(&mut self, idx: usize, ev: &mio::event::Event) {
        if let Some(Some(peer)) = self.slots.get_mut(idx) {
            peer.note(ev);
        }
        if !self.readable.contains(&idx) {
            self.readable.push(idx);
        }
    }

    /// Lazy connections are read on every wake, reported or not.
    #[inline]
    pub fn add_lazy(&mut self) {
        for (idx, peer) in self.slots.iter().enumerate() {
            if peer.as_ref().is_some_and(|p| p.lazy) && !self.readable.contains(&idx) {
                self.readable.push(idx);
            }
        }
    }

    /// Reads the target's responses from every connection that has something, into the sink.
    pub fn read(&mut self, registry: &Registry, sink: &mut impl ResponseSink, now: Instant) {
        for &idx in &self.readable {
            let Some(peer) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let alive = peer.read(sink, now, &mut self.buf).and_then(|more| {
                peer.flush()
                    .then_some(more)
                    .ok_or_else(|| "route frames not taken".to_string())
            });
            match alive {
                Ok(true) => self.again.push(idx),
                Ok(false) => {}
                Err(why) => {
                    warn!("lost intercept {} ({why}); reconnecting", self.addrs[idx]);
                    drop_peer(registry, &mut self.slots[idx]);
                }
            }
        }
    }

    /// Once a second: drops the connections silent for [`PEER_SILENCE`], and asks the comparing
    /// ones' intercepts the time.
    pub fn check_silence(&mut self, registry: &Registry, now: Instant) {
        if now.saturating_duration_since(self.last_silence_check) < Duration::from_secs(1) {
            return;
        }
        self.last_silence_check = now;
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            if slot.as_mut().is_some_and(|p| !p.ask_time()) {
                warn!(
                    "lost intercept {} (time asks not taken); reconnecting",
                    self.addrs[idx]
                );
                drop_peer(registry, slot);
            }
            if slot
                .as_ref()
                .is_some_and(|p| now.saturating_duration_since(p.last_heard) > PEER_SILENCE)
            {
                warn!(
                    "lost intercept {} (silent for {PEER_SILENCE:?}); reconnecting",
                    self.addrs[idx]
                );
                drop_peer(registry, slot);
            }
        }
    }

    /// A connecting thread got a welcome on slot `idx`: the worker takes the connection over,
    /// announces every live session on it (so that replication resumes after an intercept
    /// restart) and reads the responses that came with the welcome.
    pub fn welcome(
        &mut self,
        registry: &Registry,
        (idx, stream, dec, down): (usize, TcpStream, Opened, Arc<AtomicBool>),
        sink: &mut impl ResponseSink,
        now: Instant,
    ) {
        let addr = self.addrs[idx];
        let sealed = if dec.channel.is_some() {
            " (encrypted)"
        } else {
            ""
        };
        info!("connected to intercept {addr}{sealed}");
        let peer = Peer::new(stream, dec, down, now, (addr, self.head_bytes));
        let registered = peer.stream.set_nonblocking(true).is_ok()
            && registry
                .register(
                    &mut SourceFd(&peer.stream.as_raw_fd()),
                    Token(PEER + idx),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok();
        if !registered {
            warn!("intercept {addr}: cannot poll the connection; reconnecting");
            peer.down.store(true, Ordering::Relaxed);
            return;
        }
        let routes = sink.routes();
        let mut frame = Vec::new();
        protocol::encode_routes(&mut frame, &routes);
        let slot = &mut self.slots[idx];
        let peer = slot.insert(peer);
        let ok = peer.write(&frame) && peer.ask_time();
        // Responses that came with the welcome are in the decoder already.
        let read = peer.read(sink, now, &mut vec![0u8; 64 * 1024]);
        if !ok || read.is_err() {
            warn!("lost intercept {addr} (it ended at once); reconnecting");
            drop_peer(registry, slot);
        }
    }

    /// Tells every intercept about new sessions, each route on one of its live connections
    /// (chosen by client port, so the responses spread over them).
    pub fn announce(&mut self, registry: &Registry, routes: &[SocketAddr]) {
        let AnnounceScratch { frame, live, mine } = &mut self.announcing;
        for server in self.slots.chunks_mut(self.per_server) {
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
                if !server[i].as_mut().is_some_and(|p| p.write(frame)) {
                    // Its thread reconnects, and every route is announced again then.
                    warn!("intercept connection stopped taking routes; reconnecting");
                    drop_peer(registry, &mut server[i]);
                }
            }
        }
    }

    /// Each connected intercept's clock offset (its clock minus ours, ns) and the round trip it
    /// is known within, where estimated (comparing connections only).
    // For the worker's status and report (the comparison is wired there).
    #[allow(dead_code)]
    pub fn clock_offsets(&self) -> impl Iterator<Item = (SocketAddr, i64, u64)> + '_ {
        self.slots.iter().flatten().filter_map(|p| {
            let sync = &p.clock.as_ref()?.sync;
            Some((p.addr, sync.offset_ns()?, sync.round_trip_ns()?))
        })
    }

    /// Makes every connection wake the loop for every byte, or only at [`LAZY_LOWAT`].
    pub fn set_lazy(&mut self, registry: &Registry, lazy: bool) {
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            let Some(peer) = slot.as_mut().filter(|p| p.lazy != lazy) else {
                continue;
            };
            if let Err(e) = peer.set_lazy(lazy) {
                // A connection left lazy would hold reports below the mark unread.
                warn!("lost intercept {} ({e}); reconnecting", self.addrs[idx]);
                drop_peer(registry, slot);
            }
        }
    }
}

/// The thread that keeps slot `idx` connected: connects with backoff, hands the welcomed
/// connection to the worker, and waits until the worker says it broke.
fn spawn_connector(
    idx: usize,
    server: SocketAddr,
    hello: Hello,
    tx: Events,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    thread::Builder::new()
        .name(format!("intercept-{idx}"))
        .spawn(move || {
            crate::plumbing::unprivileged_thread();
            let mut backoff = Duration::from_millis(100);
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                match connect(server, &hello) {
                    Ok((stream, dec)) => {
                        failures = 0;
                        backoff = Duration::from_millis(100);
                        // The worker reads and writes it from here on, and sets `down` when it
                        // breaks.
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

/// What a connection's hello says, and the secret it opens with (`--secret-file`).
#[derive(Clone, Debug)]
struct Hello {
    instance: u32,
    compare_bytes: Option<u16>,
    secret: Option<Psk>,
}

/// A connection past its opening exchange: the decoder holding what came after the welcome,
/// and the encrypted channel, if it has one.
pub struct Opened {
    dec: Decoder,
    channel: Option<Channel>,
}

/// Connects and performs the hello/welcome exchange (inside the encrypted channel, with a
/// secret).
fn connect(server: SocketAddr, hello: &Hello) -> anyhow::Result<(TcpStream, Opened)> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut frame = Vec::new();
    protocol::encode_hello(&mut frame, 0, hello.instance, hello.compare_bytes);
    let opened = match &hello.secret {
        Some(psk) => {
            let (welcome, dec, channel) =
                crate::channel::open(&mut s, psk, &frame, protocol::check_welcome)?;
            welcome?;
            Opened {
                dec,
                channel: Some(channel),
            }
        }
        None => {
            s.write_all(&frame)?;
            let mut dec = Decoder::new();
            read_first_message(&mut s, &mut dec, protocol::check_welcome)??;
            Opened { dec, channel: None }
        }
    };
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok((s, opened))
}

#[cfg(test)]
mod tests;
