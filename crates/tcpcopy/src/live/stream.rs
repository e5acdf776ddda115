//! Stream mode's I/O (`--mode stream`): the kernel connections to the target that the socket
//! bridge ([`bridge::Bridge`]) asks for, registered in the worker's poll (tokens from
//! [`STREAM`] on: one per connection, its bridge id added). Executes the bridge's commands
//! (connect, write, shut down, abort, close), reports back what the sockets did, and hands the
//! target packets the bridge synthesizes to the worker's [`ResponseSink`] — with a comparison,
//! each with the note intercept would have sent: read time, payload digest, the answer's head.
//!
//! What each packet means is the bridge's (and the core's) business; this file only moves
//! bytes and events. The sockets themselves (plain or TLS, the PROXY header) are `sock`'s.
//!
//! The answer's head that goes with each target packet ([`Notes`]) is cut as an intercept cuts
//! it: the first `--compare-bytes` of each answer, or what `--protocol` needs (the larger).
//! A protocol's logins read the target's greeting and challenges from it, as in packet mode.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Instant;

use bridge::{Bridge, Command, ConnId, Failure};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use protocol::heads::{self, AnswerHeads, Segment};
use rustls::pki_types::ServerName;
use tracing::{info, warn};
use wire::TcpPacket;

use super::comparing::wall_ns;
use super::peers::{self, ResponseSink, TargetNote};
use crate::config::{LiveConfig, StreamSettings};

mod sock;
#[cfg(test)]
mod tests;

use sock::{Got, Phase, Sock};

/// First poll token of the stream connections: far above the intercept connections'.
pub(super) const STREAM: usize = 1 << 32;

/// Bytes read from one connection per wake before the others get their turn.
const READ_BUDGET: usize = 1 << 20;

/// Open files kept for everything but the connections (capture, intercepts, logs, files).
const RESERVED_FILES: u64 = 256;

pub(super) struct Streams {
    bridge: Bridge,
    socks: HashMap<ConnId, Sock>,
    settings: StreamSettings,
    /// The answers' heads, as intercept would cut them (`--compare`, `--protocol`).
    notes: Option<Notes>,
    buf: Vec<u8>,
    /// Connections the poll reported this wake, and those with more to read.
    ready: Vec<ConnId>,
    again: Vec<ConnId>,
    /// Connections whose session the core reset, kept until the target acknowledged every
    /// byte written ([`Command::Linger`]).
    lingering: Vec<ConnId>,
    /// Failures so far, for logging the first of each kind and then every power of two.
    failures: u64,
}

impl Streams {
    /// `threads` share the open-file limit, raised to its hard limit here.
    pub fn new(
        settings: &StreamSettings,
        cfg: &LiveConfig,
        threads: usize,
        first: bool,
    ) -> Streams {
        let core = &cfg.core;
        let files = netio::limits::raise_open_files().unwrap_or(1024);
        let max_connections =
            (files.saturating_sub(RESERVED_FILES) / threads.max(1) as u64).max(16) as usize;
        if first {
            let how = match (&settings.tls, settings.proxy_protocol) {
                (Some(_), true) => ", TLS, PROXY protocol v2",
                (Some(_), false) => ", TLS",
                (None, true) => ", PROXY protocol v2",
                (None, false) => "",
            };
            info!(
                "stream mode: each session over a connection of this host's{how}; at most {max_connections} connections per capture thread (open files {files})"
            );
        }
        // Longer than the core keeps any session: a connection idle past it has no session.
        let idle = core
            .session_timeout
            .max(core.idle_timeout.unwrap_or_default())
            + std::time::Duration::from_secs(60);
        let bridge = Bridge::new(bridge::Config {
            max_connections,
            idle_timeout: idle,
            ..bridge::Config::default()
        });
        Streams {
            bridge,
            socks: HashMap::new(),
            settings: settings.clone(),
            notes: peers::head_bytes(cfg).map(|b| Notes::new(b, cfg.compare.is_some())),
            buf: vec![0u8; 256 << 10],
            ready: Vec::new(),
            again: Vec::new(),
            lingering: Vec::new(),
            failures: 0,
        }
    }

    pub fn stats(&self) -> bridge::Stats {
        self.bridge.stats()
    }

    /// Hands the bridge every packet the core emitted.
    #[inline]
    pub fn transmit(&mut self, now: Instant, packet: &[u8]) {
        self.bridge.handle_transmit(now, packet);
    }

    /// Whether target packets wait for the core.
    pub fn have_responses(&self) -> bool {
        self.bridge.pending_responses() > 0
    }

    /// Whether a connection had more than one wake's worth to read.
    pub fn have_more(&self) -> bool {
        !self.again.is_empty()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bridge.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.bridge.handle_timeout(now);
    }

    /// A poll event for token `t` (at least [`STREAM`]).
    pub fn note_ready(&mut self, t: usize) {
        self.ready.push(ConnId((t - STREAM) as u64));
    }

    /// Moves every connection the poll reported (and those with more to read) on: connects
    /// complete, handshakes advance, bytes are written and read.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.append(&mut self.again);
        ready.sort_unstable();
        ready.dedup();
        for &id in &ready {
            self.step(id, now);
        }
        ready.clear();
        self.ready = ready;
        self.execute(registry, now);
        self.check_lingering(registry);
    }

    /// Aborts the lingering connections the target acknowledged everything of (or that failed):
    /// an abort no longer discards anything.
    fn check_lingering(&mut self, registry: &Registry) {
        let mut lingering = std::mem::take(&mut self.lingering);
        lingering.retain(|&id| {
            let Some(sock) = self.socks.get(&id) else {
                self.bridge.drained(id);
                return false;
            };
            let delivered = self.bridge.pending(id).is_empty()
                && netio::sockopt::undelivered(sock.stream.as_fd()).map_or(true, |n| n == 0);
            if !delivered {
                return true;
            }
            if let Some(mut sock) = self.socks.remove(&id) {
                sock.abort();
                let _ = registry.deregister(&mut sock.stream);
            }
            self.bridge.drained(id);
            false
        });
        self.lingering = lingering;
    }

    /// One connection's events.
    fn step(&mut self, id: ConnId, now: Instant) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock.phase == Phase::Connecting {
            match sock.check_connected() {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => return self.connect_failed(id, now, classify(&e), &e.to_string()),
            }
        }
        if sock.phase == Phase::Handshaking {
            match sock.handshake() {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => return self.connect_failed(id, now, Failure::Tls, &e),
            }
        }
        if sock.phase == Phase::Open && !std::mem::replace(&mut sock.connected, true) {
            self.bridge.connected(now, id);
        }
        self.write(id, now);
        self.read(id, now);
    }

    /// Writes what the bridge holds for the connection, as far as the kernel takes it.
    fn write(&mut self, id: ConnId, now: Instant) {
        let Some(sock) = self.socks.get_mut(&id) else {
            return;
        };
        if sock.phase != Phase::Open {
            return;
        }
        let result = sock.flush().and_then(|()| {
            if sock.shutdown_pending() {
                return sock.shut_down();
            }
            loop {
                let data = self.bridge.pending(id);
                if data.is_empty() {
                    return Ok(());
                }
                let n = sock.write(data)?;
                self.bridge.written(now, id, n);
                if n == 0 {
                    return Ok(());
                }
            }
        });
        if let Err(e) = result {
            self.failed(id, now, &e);
        }
    }

    /// Reads what the target sent, up to [`READ_BUDGET`].
    fn read(&mut self, id: ConnId, now: Instant) {
        let mut budget = READ_BUDGET;
        while let Some(sock) = self.socks.get_mut(&id) {
            if sock.phase != Phase::Open || sock.eof {
                return;
            }
            match sock.read(&mut self.buf) {
                Got::Bytes(0) => return,
                Got::Bytes(n) => {
                    self.bridge.received(now, id, &self.buf[..n]);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.again.push(id);
                        return;
                    }
                }
                Got::Eof => {
                    self.bridge.eof(now, id);
                    // Nothing more to read: the poll must not report it over and over.
                    let _ = sock.stream.shutdown(std::net::Shutdown::Read);
                    sock.eof = true;
                    return;
                }
                Got::Failed(e) => return self.failed(id, now, &e),
            }
        }
    }

    /// Executes the bridge's commands, in order.
    pub fn execute(&mut self, registry: &Registry, now: Instant) {
        while let Some(cmd) = self.bridge.poll_command() {
            match cmd {
                Command::Connect {
                    conn,
                    target,
                    client,
                } => self.connect(registry, now, conn, target, client),
                Command::Write { conn } => self.write(conn, now),
                Command::Shutdown { conn } => {
                    if let Some(sock) = self.socks.get_mut(&conn) {
                        if let Err(e) = sock.shut_down() {
                            self.failed(conn, now, &e);
                        }
                    }
                }
                Command::Linger { conn } => {
                    // What the core sent before its reset still goes; the abort waits for the
                    // target's acknowledgments (check_lingering).
                    self.write(conn, now);
                    self.lingering.push(conn);
                }
                Command::Abort { conn } => {
                    self.lingering.retain(|&c| c != conn);
                    if let Some(mut sock) = self.socks.remove(&conn) {
                        sock.abort();
                        let _ = registry.deregister(&mut sock.stream);
                    }
                }
                Command::Close { conn } => {
                    if let Some(mut sock) = self.socks.remove(&conn) {
                        let _ = registry.deregister(&mut sock.stream);
                    }
                }
            }
        }
    }

    fn connect(
        &mut self,
        registry: &Registry,
        now: Instant,
        id: ConnId,
        target: SocketAddr,
        client: SocketAddr,
    ) {
        let tls = match &self.settings.tls {
            None => None,
            Some(t) => {
                let name = t
                    .sni
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(target.ip().into()));
                match rustls::ClientConnection::new(t.config.clone(), name) {
                    Ok(c) => Some(c),
                    Err(e) => return self.connect_failed(id, now, Failure::Tls, &e.to_string()),
                }
            }
        };
        let mut stream = match TcpStream::connect(target) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(id, now, classify(&e), &e.to_string()),
        };
        let _ = stream.set_nodelay(true);
        let token = Token(STREAM + id.0 as usize);
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            return self.connect_failed(id, now, Failure::Other, &e.to_string());
        }
        let preamble = if self.settings.proxy_protocol {
            bridge::proxy::header_v2(client, target)
        } else {
            Vec::new()
        };
        self.socks.insert(id, Sock::new(stream, tls, preamble));
    }

    fn connect_failed(&mut self, id: ConnId, now: Instant, why: Failure, detail: &str) {
        self.log_failure(&format!("cannot connect to the target ({why:?}): {detail}"));
        self.bridge.connect_failed(now, id, why);
    }

    /// An open connection failed: its session is reset.
    fn failed(&mut self, id: ConnId, now: Instant, e: &io::Error) {
        if e.kind() != io::ErrorKind::ConnectionReset {
            self.log_failure(&format!("connection to the target failed: {e}"));
        }
        self.bridge.reset(now, id);
    }

    fn log_failure(&mut self, line: &str) {
        self.failures += 1;
        if self.failures.is_power_of_two() {
            warn!("stream mode: {line} ({} so far)", self.failures);
        }
    }

    /// Hands the synthesized target packets to `sink` (the core, and the comparison).
    pub fn respond(&mut self, sink: &mut impl ResponseSink, now: Instant) {
        let notes = &mut self.notes;
        self.bridge
            .drain_responses(|packet, payload| match notes.as_mut() {
                None => sink.response(now, packet, None),
                Some(notes) => {
                    if let Some(note) = notes.note(packet, payload) {
                        sink.response(now, packet, Some(note));
                    }
                }
            });
    }
}

/// What intercept would note of each target packet, made from the bytes read: the payload
/// bytes within the first `limit` of their answer (`protocol::heads`' rule), and with a
/// comparison the read time and the payload's digest. Sans-IO but for the wall clock's read.
pub(super) struct Notes {
    table: AnswerHeads,
    limit: u16,
    /// A comparison takes the time and digest; a protocol's logins only the head.
    comparing: bool,
}

impl Notes {
    pub fn new(limit: u16, comparing: bool) -> Notes {
        Notes {
            table: AnswerHeads::default(),
            limit,
            comparing,
        }
    }

    /// The note of `packet` (headers, as the bridge synthesizes them) carrying `payload`;
    /// `None` for a packet that does not parse (the bridge never makes one).
    pub fn note<'p>(&mut self, packet: &[u8], payload: &'p [u8]) -> Option<TargetNote<'p>> {
        let p = TcpPacket::parse(packet).ok()?;
        let flags = p.flags();
        let segment = Segment {
            src: p.src(),
            dst: p.dst(),
            seq: p.seq(),
            ack: p.ack(),
            payload_len: payload.len(),
            end: flags.fin() || flags.rst(),
        };
        let (offset, cut) = self.table.place(&segment, payload);
        let (at_ns, hash) = if self.comparing {
            (wall_ns(), compare::Digest::of(payload).hash)
        } else {
            (0, 0)
        };
        Some(TargetNote {
            at_ns,
            hash,
            head: heads::head(payload, offset, self.limit, cut),
        })
    }
}

/// One line on how stream mode's connections went.
pub fn describe(s: &bridge::Stats) -> String {
    format!(
        "stream mode: connections opened {}, failed {} (refused {}, unreachable {}, timed out {}, TLS {}, other {}, over the limit {}), reset by the target {}, closed idle {}, aborted with bytes unacknowledged {}; bytes written {}, read {}",
        s.opened,
        s.failed(),
        s.refused,
        s.unreachable,
        s.timed_out,
        s.tls_failed,
        s.other_failed,
        s.over_limit,
        s.reset_by_target,
        s.idle_closed,
        s.linger_expired,
        s.bytes_written,
        s.bytes_read
    )
}

/// The bridge's name for a connect error.
fn classify(e: &io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Failure::Refused,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => Failure::Unreachable,
        Some(libc::ETIMEDOUT) => Failure::TimedOut,
        _ => Failure::Other,
    }
}
