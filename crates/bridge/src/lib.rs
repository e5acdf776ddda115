//! The socket bridge of stream mode: plays the target (and intercept) for the session core, over
//! kernel TCP connections that the driver opens to the real target.
//!
//! The session core replicates a captured session by emitting the raw IP packets a client would
//! send the target, and takes the target's packets back as intercept reports them (headers, the
//! payload's length in the IP header). In stream mode no packet goes on the wire: the [`Bridge`]
//! reads the core's packets ([`Bridge::handle_transmit`]) and turns them into socket operations
//! ([`Command`]: connect, write, shut down, abort, close), and turns what the sockets did
//! (connected, bytes accepted, bytes read, end of stream, reset) into the target packets the core
//! expects ([`Bridge::drain_responses`]): a SYN-ACK when the connection opened, acknowledgments of
//! the bytes the kernel accepted, the answer's bytes in segments of at most
//! [`MAX_SEGMENT`] bytes, a FIN at the end of the stream, a reset when the connection failed.
//!
//! Call order, for a driver: hand it every packet the core emitted ([`Bridge::handle_transmit`]),
//! then execute [`Bridge::poll_command`]'s commands in order, reporting back with
//! [`Bridge::connected`], [`Bridge::connect_failed`], [`Bridge::written`] (after writing
//! [`Bridge::pending`]), [`Bridge::received`], [`Bridge::eof`], [`Bridge::reset`] and [`Bridge::drained`]; call
//! [`Bridge::handle_timeout`] when [`Bridge::poll_timeout`] says; and hand what
//! [`Bridge::drain_responses`] gives to the core's `handle_response`.
//!
//! It opens no socket, reads no clock and spawns no thread: `now` is always an argument, so the
//! bridge runs on simulated time in tests. It owns one connection's byte queue towards the target
//! (bounded: [`Config::buffer`]), the connection table (bounded: [`Config::max_connections`]; a
//! session past the bound is reset as though the target refused it) and the counters of how
//! connections ended ([`Stats`]). It must not decide anything about sessions, which is the
//! core's: it answers as a target's TCP would.
//!
//! Sequence spaces: the core's side keeps the core's numbers (the SYN's ISN); the target's side
//! starts from a synthesized ISN, advanced by the bytes read from the socket. Acknowledgments
//! cover what the kernel accepted ([`Bridge::written`]), not what the bridge queued: a request
//! the core counts as delivered was handed to the kernel, and a connection whose session the
//! core resets lingers until the target acknowledged it ([`Command::Linger`]): an abortive close
//! would discard it from the send queue. The window announced is the queue's
//! size, so the queue never holds more than [`Config::buffer`] bytes; a target that stops reading
//! stops the core's sending (and, after the core's retries, its session).
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wire::{Flags, SegmentRepr, Seq, TcpPacket};

mod conn;
pub mod proxy;
#[cfg(test)]
mod tests;

use conn::Conn;

/// Largest payload of one synthesized target packet: its IP total length must fit 16 bits.
pub const MAX_SEGMENT: usize = 65_000;

/// How often idle and stuck connections are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// One kernel connection to the target, as the bridge names it to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the driver does with its sockets, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Command {
    /// Open a TCP connection to `target` (nonblocking); report [`Bridge::connected`] or
    /// [`Bridge::connect_failed`]. `client` is the session's client endpoint as the core has it
    /// (for a PROXY protocol header).
    Connect {
        conn: ConnId,
        target: SocketAddr,
        client: SocketAddr,
    },
    /// Bytes wait in the connection's queue: write [`Bridge::pending`], report
    /// [`Bridge::written`], and again once the socket is writable while any remain.
    Write { conn: ConnId },
    /// Everything was written and the core closed its side: shut down the writing side.
    Shutdown { conn: ConnId },
    /// The session is over (the core reset it): write what [`Bridge::pending`] still gives,
    /// close abortively once the target acknowledged every byte written, and report
    /// [`Bridge::drained`]. An abort discards what the socket's
    /// send queue holds, and those bytes were acknowledged to the core as delivered (a request
    /// still waiting for a retransmission would never reach the target). [`Command::Abort`]
    /// follows if it has not drained within [`Config::linger`].
    Linger { conn: ConnId },
    /// Close abortively (SO_LINGER 0: the target gets a reset) now, lingering or not, and
    /// forget the connection.
    Abort { conn: ConnId },
    /// Close and forget the connection: both sides are done, or the socket failed.
    Close { conn: ConnId },
}

/// Why a connection to the target failed, as counted in [`Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The target refused the connection (a reset to our SYN).
    Refused,
    /// No route, network or host unreachable.
    Unreachable,
    /// No answer within [`Config::connect_timeout`] (or the kernel's).
    TimedOut,
    /// The TLS handshake failed.
    Tls,
    /// Any other error from the socket.
    Other,
}

/// Settings of a [`Bridge`].
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Connections open (or opening) at once; a session past it is reset at its SYN.
    pub max_connections: usize,
    /// Bytes of the core's one connection held for the kernel (the window announced).
    pub buffer: usize,
    /// A connection not open after this long fails ([`Failure::TimedOut`]).
    pub connect_timeout: Duration,
    /// A connection with no traffic either way for this long is closed abortively and its
    /// session reset (an orphan: its session is gone, or stuck).
    pub idle_timeout: Duration,
    /// MSS announced to the core (it sends no larger segments; nothing crosses a wire).
    pub mss: u16,
    /// How long a connection the core reset waits for the target to acknowledge what was
    /// written ([`Command::Linger`]) before it is aborted all the same.
    pub linger: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 10_000,
            buffer: 256 << 10,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(660),
            mss: MAX_SEGMENT as u16,
            linger: Duration::from_secs(3),
        }
    }
}

/// How the bridge's connections went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections opened to the target.
    pub opened: u64,
    /// Connections that failed to open, by cause.
    pub refused: u64,
    pub unreachable: u64,
    pub timed_out: u64,
    pub tls_failed: u64,
    pub other_failed: u64,
    /// Sessions reset at their SYN because [`Config::max_connections`] were open.
    pub over_limit: u64,
    /// Open connections the target reset (or that failed while open).
    pub reset_by_target: u64,
    /// Connections closed for being idle past [`Config::idle_timeout`].
    pub idle_closed: u64,
    /// Connections the core reset that were aborted with bytes written and not acknowledged by
    /// the target after [`Config::linger`] (those bytes may never have reached it).
    pub linger_expired: u64,
    /// Bytes the kernel accepted for the target, and bytes read from it.
    pub bytes_written: u64,
    pub bytes_read: u64,
}

impl Stats {
    /// Connections that never opened, whatever the cause.
    pub fn failed(&self) -> u64 {
        self.refused
            + self.unreachable
            + self.timed_out
            + self.tls_failed
            + self.other_failed
            + self.over_limit
    }

    /// Adds another bridge's counters (one per capture thread).
    pub fn add(&mut self, o: &Stats) {
        self.opened += o.opened;
        self.refused += o.refused;
        self.unreachable += o.unreachable;
        self.timed_out += o.timed_out;
        self.tls_failed += o.tls_failed;
        self.other_failed += o.other_failed;
        self.over_limit += o.over_limit;
        self.reset_by_target += o.reset_by_target;
        self.idle_closed += o.idle_closed;
        self.linger_expired += o.linger_expired;
        self.bytes_written += o.bytes_written;
        self.bytes_read += o.bytes_read;
    }
}

type Key = (SocketAddr, SocketAddr);
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Synthesized target packets, headers back to back, with the payload each stands for.
#[derive(Debug, Default)]
struct Responses {
    headers: Vec<u8>,
    payloads: Vec<u8>,
    /// End of each packet's headers and of its payload.
    ends: Vec<(usize, usize)>,
}

/// The socket bridge: see the module docs.
#[derive(Debug)]
pub struct Bridge {
    config: Config,
    by_key: Map<Key, ConnId>,
    conns: Map<ConnId, Conn>,
    next_id: u64,
    commands: VecDeque<Command>,
    out: Responses,
    stats: Stats,
    next_sweep: Option<Instant>,
    /// Connections the core reset, waiting for the target's acknowledgments ([`Command::Linger`]),
    /// with their deadlines (in order: the linger is the same for all).
    lingering: VecDeque<(Instant, ConnId)>,
    /// Their bytes taken before the reset and not yet written: they still go (the client sent
    /// them before its reset, as in packet mode).
    leftover: Map<ConnId, VecDeque<u8>>,
}

impl Bridge {
    pub fn new(config: Config) -> Bridge {
        Bridge {
            config,
            by_key: Map::default(),
            conns: Map::default(),
            next_id: 1,
            commands: VecDeque::new(),
            out: Responses::default(),
            stats: Stats::default(),
            next_sweep: None,
            lingering: VecDeque::new(),
            leftover: Map::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Connections open or opening.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The next socket operation, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Hands over every synthesized target packet, in order: its headers (the IP total length
    /// counts the payload) and the payload bytes it stands for (for a comparison's digest).
    pub fn drain_responses(&mut self, mut f: impl FnMut(&[u8], &[u8])) {
        let (mut h, mut p) = (0, 0);
        for &(he, pe) in &self.out.ends {
            f(&self.out.headers[h..he], &self.out.payloads[p..pe]);
            (h, p) = (he, pe);
        }
        self.out.headers.clear();
        self.out.payloads.clear();
        self.out.ends.clear();
    }

    /// Packets waiting in [`Self::drain_responses`].
    pub fn pending_responses(&self) -> usize {
        self.out.ends.len()
    }

    /// A packet the core emitted for the target (IP header first).
    pub fn handle_transmit(&mut self, now: Instant, packet: &[u8]) {
        let Ok(p) = TcpPacket::parse(packet) else {
            return;
        };
        self.next_sweep.get_or_insert(now + SWEEP);
        let key = (p.src(), p.dst());
        let flags = p.flags();
        if flags.syn() && !flags.ack() {
            self.syn(now, key, &p);
            return;
        }
        let Some(&id) = self.by_key.get(&key) else {
            // The session outlived its connection (closed for idleness, or failed): a target's
            // TCP resets what it does not know, and the session ends.
            if !flags.rst() && (p.payload_len() > 0 || flags.fin()) {
                let rst = reset_for(&p);
                self.emit(&rst, &[]);
            }
            return;
        };
        if flags.rst() {
            self.linger(now, id);
            return;
        }
        let conn = self
            .conns
            .get_mut(&id)
            .expect("by_key and conns hold the same ids");
        conn.last_activity = now;
        if !conn.open {
            return;
        }
        let step = conn.segment(&p);
        if step.write {
            self.commands.push_back(Command::Write { conn: id });
        }
        if step.shutdown {
            self.commands.push_back(Command::Shutdown { conn: id });
        }
        if step.ack {
            self.ack(id);
        }
        self.close_if_done(id);
    }

    /// A SYN from the core: a new connection, a repeated SYN, or a new session on the endpoints
    /// of an earlier one (which goes).
    fn syn(&mut self, now: Instant, key: Key, p: &TcpPacket<'_>) {
        if let Some(&id) = self.by_key.get(&key) {
            let conn = &self.conns[&id];
            if conn.client_isn == p.seq() {
                if conn.open {
                    // Our SYN-ACK cannot be lost on the way, but the core asks again: answer.
                    self.syn_ack(id);
                }
                return;
            }
            self.linger(now, id);
        }
        if self.conns.len() >= self.config.max_connections {
            self.stats.over_limit += 1;
            let rst = reset_for(p);
            self.emit(&rst, &[]);
            return;
        }
        let id = ConnId(self.next_id);
        self.next_id += 1;
        let conn = Conn::new(key, p, id, now, self.config.buffer);
        self.conns.insert(id, conn);
        self.by_key.insert(key, id);
        self.commands.push_back(Command::Connect {
            conn: id,
            target: key.1,
            client: key.0,
        });
    }

    /// The connection opened (and its TLS handshake, if any, completed).
    pub fn connected(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.open {
            return;
        }
        conn.open = true;
        conn.last_activity = now;
        self.stats.opened += 1;
        self.syn_ack(id);
    }

    /// The connection could not be opened: the core's session is reset as by a refusing target.
    pub fn connect_failed(&mut self, _now: Instant, id: ConnId, why: Failure) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let counter = match why {
            Failure::Refused => &mut self.stats.refused,
            Failure::Unreachable => &mut self.stats.unreachable,
            Failure::TimedOut => &mut self.stats.timed_out,
            Failure::Tls => &mut self.stats.tls_failed,
            Failure::Other => &mut self.stats.other_failed,
        };
        *counter += 1;
        let rst = conn.repr(Seq(0), Flags::RST | Flags::ACK, 0);
        self.emit(&rst, &[]);
        self.commands.push_back(Command::Close { conn: id });
        self.forget(id);
    }

    /// The queued bytes to write next (empty when none are), also of a lingering connection.
    pub fn pending(&mut self, id: ConnId) -> &[u8] {
        match self.conns.get_mut(&id) {
            Some(c) => c.queue.make_contiguous(),
            None => self
                .leftover
                .get_mut(&id)
                .map_or(&[][..], |q| q.make_contiguous()),
        }
    }

    /// The kernel accepted `n` bytes of [`Self::pending`]: they are acknowledged to the core.
    pub fn written(&mut self, now: Instant, id: ConnId, n: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            if let Some(q) = self.leftover.get_mut(&id) {
                let n = n.min(q.len());
                q.drain(..n);
                self.stats.bytes_written += n as u64;
            }
            return;
        };
        let n = n.min(conn.queue.len());
        if n == 0 {
            // Nothing new to acknowledge: a repeated acknowledgment would read as a loss.
            return;
        }
        conn.queue.drain(..n);
        conn.written += n as u64;
        conn.last_activity = now;
        self.stats.bytes_written += n as u64;
        if conn.core_fin && conn.queue.is_empty() && !conn.shutdown {
            conn.shutdown = true;
            self.commands.push_back(Command::Shutdown { conn: id });
        }
        self.ack(id);
        self.close_if_done(id);
    }

    /// Bytes read from the connection: the target's answer, in segments for the core.
    pub fn received(&mut self, now: Instant, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.last_activity = now;
        self.stats.bytes_read += bytes.len() as u64;
        let chunks = bytes.chunks(MAX_SEGMENT);
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.enumerate() {
            let conn = &self.conns[&id];
            let push = if i == last { Flags::PSH } else { Flags(0) };
            let repr = conn.repr(conn.seq(), Flags::ACK | push, conn.window());
            emit_headers(&mut self.out, &repr, chunk);
            let conn = self.conns.get_mut(&id).expect("looked up above");
            conn.read += chunk.len() as u64;
        }
    }

    /// The target closed its side (end of stream): a FIN for the core.
    pub fn eof(&mut self, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.eof {
            return;
        }
        conn.last_activity = now;
        let fin = conn.repr(conn.seq(), Flags::FIN | Flags::ACK, conn.window());
        conn.eof = true;
        self.emit(&fin, &[]);
        self.close_if_done(id);
    }

    /// The open connection failed (reset by the target, or another error): a reset for the core.
    pub fn reset(&mut self, _now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        self.stats.reset_by_target += 1;
        let rst = conn.repr(conn.seq(), Flags::RST | Flags::ACK, 0);
        self.emit(&rst, &[]);
        self.commands.push_back(Command::Close { conn: id });
        self.forget(id);
    }

    /// The session of `id` is over: its socket lingers until the target acknowledged what was
    /// written, or [`Config::linger`] passed.
    fn linger(&mut self, now: Instant, id: ConnId) {
        self.commands.push_back(Command::Linger { conn: id });
        self.lingering.push_back((now + self.config.linger, id));
        if let Some(mut c) = self.conns.remove(&id) {
            self.by_key.remove(&c.key);
            if c.open && !c.queue.is_empty() {
                self.leftover.insert(id, std::mem::take(&mut c.queue));
            }
        }
    }

    /// A lingering connection's target acknowledged every byte written (or the socket failed):
    /// the driver aborted it, nothing more follows.
    pub fn drained(&mut self, id: ConnId) {
        self.lingering.retain(|&(_, c)| c != id);
        self.leftover.remove(&id);
    }

    /// Connections lingering after the core reset them.
    pub fn lingering(&self) -> usize {
        self.lingering.len()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sweep = self.next_sweep.filter(|_| !self.conns.is_empty());
        let linger = self.lingering.front().map(|&(t, _)| t);
        match (sweep, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fails connections that did not open in time, closes idle ones and aborts those that
    /// lingered too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.lingering.front() {
            if now < deadline {
                break;
            }
            self.lingering.pop_front();
            self.stats.linger_expired += 1;
            self.leftover.remove(&id);
            self.commands.push_back(Command::Abort { conn: id });
        }
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + SWEEP);
        let cfg = self.config;
        let mut late: Vec<(ConnId, bool)> = self
            .conns
            .iter()
            .filter_map(|(&id, c)| {
                if !c.open && now >= c.started + cfg.connect_timeout {
                    Some((id, false))
                } else if c.open && now >= c.last_activity + cfg.idle_timeout {
                    Some((id, true))
                } else {
                    None
                }
            })
            .collect();
        // Deterministic order, whatever the table's.
        late.sort_unstable();
        for (id, open) in late {
            if open {
                self.stats.idle_closed += 1;
                let conn = &self.conns[&id];
                let rst = conn.repr(conn.seq(), Flags::RST | Flags::ACK, 0);
                self.emit(&rst, &[]);
                self.commands.push_back(Command::Abort { conn: id });
                self.forget(id);
            } else {
                self.connect_failed(now, id, Failure::TimedOut);
            }
        }
    }

    fn syn_ack(&mut self, id: ConnId) {
        let conn = &self.conns[&id];
        let repr = SegmentRepr {
            mss: Some(self.config.mss),
            window_scale: conn.wscale,
            ..conn.repr(conn.isn, Flags::SYN | Flags::ACK, conn.syn_window())
        };
        self.emit(&repr, &[]);
    }

    /// An acknowledgment of what the kernel accepted (and of the core's FIN once shut down).
    fn ack(&mut self, id: ConnId) {
        let conn = &self.conns[&id];
        let repr = conn.repr(conn.seq(), Flags::ACK, conn.window());
        self.emit(&repr, &[]);
    }

    /// Both sides closed: the socket goes.
    fn close_if_done(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(|c| c.eof && c.shutdown) {
            self.commands.push_back(Command::Close { conn: id });
            self.forget(id);
        }
    }

    fn forget(&mut self, id: ConnId) {
        if let Some(c) = self.conns.remove(&id) {
            self.by_key.remove(&c.key);
        }
    }

    fn emit(&mut self, repr: &SegmentRepr, payload: &[u8]) {
        emit_headers(&mut self.out, repr, payload);
    }
}

/// The reset a target's TCP answers an unknown segment with (RFC 9293 3.10.7.1).
fn reset_for(p: &TcpPacket<'_>) -> SegmentRepr {
    let flags = p.flags();
    let (seq, ack, f) = if flags.ack() {
        (p.ack(), Seq(0), Flags::RST)
    } else {
        (Seq(0), p.seq() + p.seq_len(), Flags::RST | Flags::ACK)
    };
    SegmentRepr {
        src: p.dst(),
        dst: p.src(),
        seq,
        ack,
        flags: f,
        window: 0,
        mss: None,
        window_scale: None,
        ttl: 64,
    }
}

/// Appends `repr`'s headers with an IP total length counting `payload`, and `payload` apart.
fn emit_headers(out: &mut Responses, repr: &SegmentRepr, payload: &[u8]) {
    let start = out.headers.len();
    repr.emit(&[], &mut out.headers);
    let pkt = &mut out.headers[start..];
    let n = payload.len();
    if pkt[0] >> 4 == 4 {
        let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize + n;
        pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        pkt[10..12].copy_from_slice(&[0, 0]);
        let c = wire::internet_checksum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        let len = u16::from_be_bytes([pkt[4], pkt[5]]) as usize + n;
        pkt[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    }
    out.payloads.extend_from_slice(payload);
    out.ends.push((out.headers.len(), out.payloads.len()));
}
