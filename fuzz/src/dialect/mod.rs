//! The session core with a database protocol hook (`dialect`: MySQL, PostgreSQL or detected)
//! driven by an arbitrary sequence of events around a few client connections: the client's
//! messages, the online server's answers (captured, as a live capture hands them to the hook)
//! and the target's answers on the connections the core opened (with their heads, as the
//! intercepts report them), mostly well-formed protocol messages (`messages`) split at
//! arbitrary points across segments, repeated, reordered or damaged, plus raw bytes, and
//! timeouts on an advancing simulated clock.
//!
//! After every step the core's invariants hold: the loss accounting, the memory bound, every
//! packet sent parses and goes to the target, a timeout handled at `now` leaves no deadline at
//! or before `now`, and no session's login is counted twice. At the end, with no more input,
//! every session ends within the timeouts and nothing stays held.
//!
//! Every choice is one byte (see `messages::pick`), so the seed generator can write inputs
//! that take a given path (a whole MySQL login with prepared statements, a SCRAM login). With
//! `TCPCOPY_FUZZ_TRACE` set, the end of each run prints the core's counters and the hook's
//! summary (to see how far an input gets: `target/.../release/dialect INPUT`).

pub mod messages;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use dialect::postgres::message;
use dialect::{Credentials, Login, Protocol};
use messages::{pick, Scram, LOGINS};
use session::{Config, Replicator, Rule};
use wire::{Flags, SegmentRepr, Seq, TcpPacket};

const ONLINE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)), 3306);
const TARGET: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 30)), 3306);
/// The client endpoints: two of one host (a joined session may log in as the other's login).
/// With `--protocol auto` the last speaks PostgreSQL, the others MySQL.
const CLIENTS: [([u8; 4], u16); 3] = [
    ([198, 19, 0, 1], 40000),
    ([198, 19, 0, 1], 40001),
    ([198, 19, 0, 2], 40000),
];
/// The protocols, as the first byte of an input chooses them.
pub const PROTOCOLS: [Protocol; 3] = [Protocol::Mysql, Protocol::Postgres, Protocol::Auto];

/// Steps taken from one input at most.
const MAX_STEPS: usize = 512;
/// Target connections remembered (what the core opened), for the target's packets.
const MAX_FLOWS: usize = 16;

/// A client connection as the input plays it.
struct Conn {
    client: SocketAddr,
    /// The client's next sequence number, and the online server's.
    next: u32,
    server: u32,
    /// What the client last sent (the online server's answers follow it).
    sent: Vec<u8>,
    postgres: bool,
}

/// A connection the core opened at the target, as the target sees it.
struct TargetConn {
    local: SocketAddr,
    /// The end of what the core sent, and the target's next sequence number.
    sent: Seq,
    next: Seq,
    /// The payload the core last sent (the target's answers are made for it).
    last: Vec<u8>,
    /// The target speaks PostgreSQL: with `--protocol auto`, when the core's first bytes were
    /// a PostgreSQL startup (a MySQL server speaks first).
    postgres: bool,
    scram: Scram,
}

struct World {
    r: Replicator,
    protocol: Protocol,
    head_bytes: usize,
    base: Instant,
    now: Instant,
    conns: Vec<Conn>,
    flows: Vec<TargetConn>,
    batching: bool,
    max_buffered: u64,
}

/// Runs one input; panics where an invariant fails.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut w) = World::new(&mut u) else {
        return;
    };
    for _ in 0..MAX_STEPS {
        if u.is_empty() || w.step(&mut u).is_err() {
            break;
        }
        w.drain();
        w.check();
    }
    w.wind_down();
}

impl World {
    /// Reads the protocol, then one byte each for the configuration's options.
    fn new(u: &mut Unstructured<'_>) -> Result<World> {
        let protocol = PROTOCOLS[pick(u, PROTOCOLS.len())?];
        let mut cfg = Config::new(vec![Rule {
            online_addr: Some(ONLINE.ip()),
            online_port: ONLINE.port(),
            target: TARGET,
        }]);
        cfg.session_timeout = Duration::from_millis(200 << pick(u, 8)?);
        cfg.idle_timeout = [None, Some(Duration::from_millis(300))][pick(u, 2)?];
        cfg.initial_rto = Duration::from_millis(20 << pick(u, 4)?);
        cfg.max_retries = pick(u, 4)? as u32;
        cfg.response_wait = Duration::from_millis([0, 5, 200][pick(u, 3)?]);
        cfg.join_open_sessions = pick(u, 2)? == 0;
        cfg.copies = 1 + pick(u, 2)? as u16;
        cfg.max_session_bytes = [0, 300, 20_000][pick(u, 3)?];
        cfg.max_buffered_bytes = [40_000, 600][pick(u, 2)?];
        let max_buffered = cfg.max_buffered_bytes as u64;
        let mut r = Replicator::new(cfg);
        let logins = LOGINS
            .iter()
            .map(|(user, password)| Login {
                user: user.to_string(),
                password: password.to_string(),
            })
            .collect();
        r.set_dialect(protocol.dialect(&Credentials::new(logins)));
        let head_bytes = usize::from(r.head_bytes().expect("a dialect is set"));
        let conns = CLIENTS
            .iter()
            .enumerate()
            .map(|(i, &(ip, port))| Conn {
                client: SocketAddr::new(IpAddr::V4(ip.into()), port),
                next: 1_000_000 * (i as u32 + 1),
                server: 0xffff_0000u32.wrapping_add(5_000_000 * i as u32),
                sent: Vec::new(),
                postgres: protocol == Protocol::Postgres
                    || (protocol == Protocol::Auto && i == CLIENTS.len() - 1),
            })
            .collect();
        let base = Instant::now();
        Ok(World {
            r,
            protocol,
            head_bytes,
            base,
            now: base,
            conns,
            flows: Vec::new(),
            batching: false,
            max_buffered,
        })
    }

    /// One event: its kind, then its own choices.
    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        match pick(u, 16)? {
            0 => self.open(u)?,
            1..=4 => self.client(u)?,
            5 | 6 => self.online(u)?,
            7..=10 => self.target(u)?,
            11 | 12 => self.advance(u)?,
            13 => self.raw(u)?,
            14 => self.close(u)?,
            _ => {
                if self.batching {
                    self.r.end_batch();
                } else {
                    self.r.begin_batch();
                }
                self.batching = !self.batching;
                // The end-of-run line, at any time.
                let _ = self.r.dialect_summary();
            }
        }
        Ok(())
    }

    fn emit(repr: &SegmentRepr, payload: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        repr.emit(payload, &mut packet);
        packet
    }

    /// A client connects: its SYN, the online server's SYN-ACK and the client's ACK, all
    /// captured (the handshake may stop short).
    fn open(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let i = pick(u, self.conns.len())?;
        let steps = 1 + pick(u, 3)?;
        let c = &mut self.conns[i];
        c.next = c.next.wrapping_add(100_000);
        c.server = c.server.wrapping_add(100_000);
        let (client, next, server) = (c.client, c.next, c.server);
        c.next = next.wrapping_add(1);
        c.server = server.wrapping_add(1);
        let packets = [
            Self::emit(&segment(client, ONLINE, next, 0, Flags::SYN), b""),
            Self::emit(
                &segment(
                    ONLINE,
                    client,
                    server,
                    next.wrapping_add(1),
                    Flags::SYN | Flags::ACK,
                ),
                b"",
            ),
            Self::emit(
                &segment(
                    client,
                    ONLINE,
                    next.wrapping_add(1),
                    server.wrapping_add(1),
                    Flags::ACK,
                ),
                b"",
            ),
        ];
        for p in &packets[..steps] {
            self.r.handle_capture(self.now, p);
        }
        Ok(())
    }

    /// A message of one client, in segments.
    fn client(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let i = pick(u, self.conns.len())?;
        let bytes = if self.conns[i].postgres {
            messages::postgres_client(u)?
        } else {
            messages::mysql_client(u)?
        };
        let c = &mut self.conns[i];
        let (src, seq, ack) = (c.client, c.next, c.server);
        c.next = seq.wrapping_add(bytes.len() as u32);
        c.sent = bytes.clone();
        self.send(u, src, ONLINE, seq, ack, &bytes)
    }

    /// An answer of the online server to one client, captured.
    fn online(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let i = pick(u, self.conns.len())?;
        let c = &self.conns[i];
        let bytes = if c.postgres {
            messages::postgres_server(u, &c.sent, &mut Scram::default())?
        } else {
            messages::mysql_server(u, &c.sent)?
        };
        let c = &mut self.conns[i];
        let (dst, seq, ack) = (c.client, c.server, c.next);
        c.server = seq.wrapping_add(bytes.len() as u32);
        self.send(u, ONLINE, dst, seq, ack, &bytes)
    }

    /// Captures `bytes` from `seq` on in one to three segments: some in the other order, one
    /// again, or a byte damaged.
    fn send(
        &mut self,
        u: &mut Unstructured<'_>,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        bytes: &[u8],
    ) -> Result<()> {
        let mut cuts = vec![0, bytes.len()];
        for _ in 0..pick(u, 3)? {
            cuts.push(pick(u, 256)?.min(bytes.len()));
        }
        cuts.sort_unstable();
        let mut segments: Vec<Vec<u8>> = cuts
            .windows(2)
            .filter(|w| w[0] < w[1])
            .map(|w| {
                let repr = segment(
                    src,
                    dst,
                    seq.wrapping_add(w[0] as u32),
                    ack,
                    Flags::ACK | Flags::PSH,
                );
                Self::emit(&repr, &bytes[w[0]..w[1]])
            })
            .collect();
        match pick(u, 8)? {
            0 => segments.reverse(),
            1 => segments.extend(segments.first().cloned()),
            2 if !segments.is_empty() => {
                let s = segments.len() - 1;
                let at = pick(u, 256)? % segments[s].len();
                segments[s][at] ^= 0x20;
            }
            _ => {}
        }
        for s in segments {
            self.r.handle_capture(self.now, &s);
        }
        Ok(())
    }

    /// A packet of the target on one of the connections the core opened: its SYN-ACK, an
    /// answer made for what the core last sent, a FIN or a reset.
    fn target(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        if self.flows.is_empty() {
            return Ok(());
        }
        let i = pick(u, self.flows.len())?;
        let kind = pick(u, 8)?;
        let f = &mut self.flows[i];
        let (flags, payload) = match kind {
            0 => {
                f.next = Seq(9_000_000 * (i as u32 + 1));
                (Flags::SYN | Flags::ACK, Vec::new())
            }
            1 => (Flags::ACK, Vec::new()),
            6 => (Flags::ACK | Flags::FIN, Vec::new()),
            7 => (Flags::RST | Flags::ACK, Vec::new()),
            _ => {
                // One message, or two in a segment as servers send a login's last answers (a
                // MySQL packet's sequence number follows the one before it).
                let mut payload = Vec::new();
                for _ in 0..1 + pick(u, 2)? {
                    let message = if f.postgres {
                        messages::postgres_server(u, &f.last, &mut f.scram)?
                    } else if payload.is_empty() {
                        messages::mysql_server(u, &f.last)?
                    } else {
                        messages::mysql_server(u, &payload)?
                    };
                    payload = [payload, message].concat();
                }
                (Flags::ACK | Flags::PSH, payload)
            }
        };
        let (local, seq, ack) = (f.local, f.next, f.sent);
        f.next += payload.len() as u32 + u32::from(flags.syn() || flags.fin());
        // The answer in two segments (in order or not) or sent twice; each segment reported
        // with its part of the answer's first `head_bytes`.
        let order = pick(u, 8)?;
        let cut = if order < 2 {
            pick(u, 256)?.min(payload.len())
        } else {
            payload.len()
        };
        let head = &payload[..payload.len().min(self.head_bytes)];
        let mut parts = vec![(0, cut), (cut, payload.len())];
        parts.retain(|&(from, to)| from < to || (from == 0 && payload.is_empty()));
        match order {
            1 => parts.reverse(),
            2 => parts.extend(parts.clone()),
            _ => {}
        }
        for (from, to) in parts {
            let repr = segment(TARGET, local, (seq + from as u32).0, ack.0, flags);
            let packet = Self::emit(&repr, &payload[from..to]);
            let head = &head[from.min(head.len())..to.min(head.len())];
            self.r.handle_response_head(self.now, &packet, head);
        }
        Ok(())
    }

    /// Raw bytes as a capture or as a target packet with its head.
    fn raw(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let len = pick(u, 81)?;
        let bytes = u.bytes(len.min(u.len()))?.to_vec();
        if pick(u, 2)? == 0 {
            self.r.handle_capture(self.now, &bytes);
        } else {
            self.r.handle_response_head(self.now, &bytes, &bytes);
        }
        Ok(())
    }

    /// A client's FIN or reset, or the online server's FIN.
    fn close(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let i = pick(u, self.conns.len())?;
        let c = &self.conns[i];
        let packet = match pick(u, 3)? {
            0 => Self::emit(
                &segment(c.client, ONLINE, c.next, c.server, Flags::ACK | Flags::FIN),
                b"",
            ),
            1 => Self::emit(&segment(c.client, ONLINE, c.next, 0, Flags::RST), b""),
            _ => Self::emit(
                &segment(ONLINE, c.client, c.server, c.next, Flags::ACK | Flags::FIN),
                b"",
            ),
        };
        self.r.handle_capture(self.now, &packet);
        Ok(())
    }

    /// The clock moves on; the timers due fire.
    fn advance(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let ms = [1, 10, 50, 200, 1_000, 5_000, 60_000, 600_000][pick(u, 8)?];
        self.now += Duration::from_millis(ms);
        if self.r.poll_timeout().is_some_and(|t| t <= self.now) {
            self.timeout();
        }
        Ok(())
    }

    fn timeout(&mut self) {
        self.r.handle_timeout(self.now);
        if let Some(next) = self.r.poll_timeout() {
            assert!(
                next > self.now,
                "a deadline at {:?} left after handling {:?}",
                next - self.base,
                self.now - self.base
            );
        }
    }

    /// Every packet the core sent: it parses, goes to the target, and opens or extends a
    /// target connection the target's packets answer.
    fn drain(&mut self) {
        let mut sent = Vec::new();
        self.r.drain_transmits(|p| sent.push(p.to_vec()));
        self.r.drain_routes(|_| {});
        self.r.drain_sends(|_| {});
        for packet in sent {
            let p = TcpPacket::parse(&packet).expect("the core sends packets that parse");
            assert_eq!(p.dst(), TARGET, "a packet to {}", p.dst());
            assert_eq!(p.payload().len(), p.payload_len(), "a packet sent short");
            let end = p.seq() + p.seq_len();
            let found = self.flows.iter_mut().find(|f| f.local == p.src());
            let f = match found {
                Some(f) => f,
                None if p.flags().syn() => {
                    if self.flows.len() == MAX_FLOWS {
                        self.flows.remove(0);
                    }
                    self.flows.push(TargetConn {
                        local: p.src(),
                        sent: end,
                        next: Seq(0),
                        last: Vec::new(),
                        postgres: self.protocol == Protocol::Postgres,
                        scram: Scram::default(),
                    });
                    continue;
                }
                None => continue,
            };
            if p.flags().syn() {
                f.sent = end;
            } else {
                f.sent = f.sent.max(end);
            }
            if !p.payload().is_empty() {
                if f.last.is_empty() && self.protocol == Protocol::Auto {
                    f.postgres = message::looks_initial(p.payload());
                }
                f.last = p.payload().to_vec();
            }
        }
        assert_eq!(self.r.pending_transmits(), 0);
    }

    /// The core's invariants, between steps.
    fn check(&self) {
        let s = self.r.stats();
        let in_flight = self.r.requests_in_flight();
        assert!(s.requests_target <= s.requests_online, "{s}");
        assert_eq!(
            s.requests_online - s.requests_target,
            s.lost.total() + in_flight,
            "loss accounting: in flight {in_flight}, {s}"
        );
        assert!(
            s.bytes_buffered <= self.max_buffered,
            "{} buffered: {s}",
            s.bytes_buffered
        );
        assert!(s.sessions_active <= s.sessions_created, "{s}");
        // A session's login is counted once, at its outcome (a change of user is no second).
        let l = s.logins;
        assert!(
            l.logged_in + l.joined_logged_in + l.failed() <= s.sessions_created,
            "{l:?}: {s}"
        );
    }

    /// No more input: the clock runs until every session has ended.
    fn wind_down(&mut self) {
        if self.batching {
            self.r.end_batch();
            self.drain();
        }
        let limit = self.now + Duration::from_secs(3600);
        let mut rounds = 0;
        while let Some(at) = self.r.poll_timeout() {
            rounds += 1;
            assert!(at <= limit, "a deadline an hour away: {:?}", at - self.now);
            assert!(rounds <= 100_000, "timers keep firing: {}", self.r.stats());
            self.now = self.now.max(at);
            self.timeout();
            self.drain();
            self.check();
        }
        let s = self.r.stats();
        if std::env::var_os("TCPCOPY_FUZZ_TRACE").is_some() {
            eprintln!("{s}\n{:?}\n{:?}", s.logins, self.r.dialect_summary());
        }
        assert_eq!(s.sessions_active, 0, "sessions left: {s}");
        assert_eq!(s.bytes_buffered, 0, "bytes left: {s}");
        assert_eq!(self.r.requests_in_flight(), 0, "{s}");
        assert_eq!(self.r.routes().count(), 0, "routes left");
    }
}

/// A segment of one of the connections, without options but the SYN's MSS.
fn segment(src: SocketAddr, dst: SocketAddr, seq: u32, ack: u32, flags: Flags) -> SegmentRepr {
    SegmentRepr {
        src,
        dst,
        seq: Seq(seq),
        ack: Seq(ack),
        flags,
        window: 65535,
        mss: flags.syn().then_some(1460),
        window_scale: None,
        ttl: 64,
    }
}
