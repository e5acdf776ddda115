//! The session core (`session::Replicator`) driven by an arbitrary sequence of events: client
//! packets built from the fuzz input around a few connections (SYNs, requests in and out of
//! order, FINs, resets, packets cut short by the capture, mutated and raw bytes), target packets
//! answering what the core sent (SYN-ACKs, acknowledgments, answers, FINs, resets, zero windows),
//! batches, and timeouts on an advancing simulated clock, under a configuration also drawn from
//! the input (copies, baseline, fake clients, sampling, small memory bounds, ...).
//!
//! After every step the core's own invariants hold: the loss accounting
//! (`requests_online - requests_target == lost.total() + requests_in_flight()`), the memory
//! bound (`bytes_buffered <= max_buffered_bytes`), sessions no more than the captures that made
//! them, every packet sent parses and goes to a target, and a timeout handled at `now` leaves
//! no deadline at or before `now`. At the end, with no more input, every session ends within
//! the timeouts and nothing stays held.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use session::{Config, Replicator, Rule};
use wire::{Flags, SegmentRepr, Seq, TcpPacket};

const ONLINE_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20)), 80);
const ONLINE_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x20)),
    80,
);
const TARGET_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 30)), 8080);
const TARGET_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x30)),
    8080,
);
const BASELINE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 31)), 8080);

/// Steps taken from one input at most.
const MAX_STEPS: usize = 512;
/// Target connections remembered (what the core opened), for the target's packets.
const MAX_FLOWS: usize = 32;

/// A client connection as the fuzz input plays it.
#[derive(Clone, Copy)]
struct Conn {
    client: SocketAddr,
    online: SocketAddr,
    /// The client's next sequence number, and the online server's (what the client acks).
    next: u32,
    server: u32,
}

/// A connection the core opened at a target, as the target sees it.
#[derive(Clone, Copy)]
struct TargetConn {
    /// The core's endpoint (local) and the target's.
    local: SocketAddr,
    target: SocketAddr,
    /// The core's ISN and the end of what it sent.
    isn: Seq,
    sent: Seq,
    /// The target's next sequence number.
    next: Seq,
}

struct World {
    r: Replicator,
    base: Instant,
    now: Instant,
    conns: Vec<Conn>,
    flows: Vec<TargetConn>,
    targets: Vec<SocketAddr>,
    batching: bool,
    /// Captures handed to the core, times the sessions each may create.
    session_budget: u64,
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
    fn new(u: &mut Unstructured<'_>) -> Result<World> {
        let fake = u.ratio(1, 6)?;
        let baseline = u.ratio(1, 4)?;
        // A rule on the port alone takes clients of both IP versions to an IPv4 target.
        let port_only = u.ratio(1, 4)?;
        let mut rules = vec![Rule {
            online_addr: (!port_only).then_some(ONLINE_V4.ip()),
            online_port: 80,
            target: TARGET_V4,
        }];
        // As the option checks require: fake client addresses and the baseline are of the
        // targets' IP version (IPv4 here).
        if !fake && !baseline {
            rules.push(Rule {
                online_addr: Some(ONLINE_V6.ip()),
                online_port: 80,
                target: TARGET_V6,
            });
        }
        let mut cfg = Config::new(rules);
        if fake {
            cfg.fake_clients = vec![
                IpAddr::V4(Ipv4Addr::new(198, 19, 9, 1)),
                IpAddr::V4(Ipv4Addr::new(198, 19, 9, 2)),
            ];
        }
        cfg.session_timeout = Duration::from_millis(u.int_in_range(100..=20_000)?);
        cfg.idle_timeout = u
            .arbitrary::<Option<u16>>()?
            .map(|ms| Duration::from_millis(u64::from(ms) + 1));
        cfg.mss = u.int_in_range(1..=1460)?;
        cfg.initial_rto = Duration::from_millis(u.int_in_range(1..=1000)?);
        cfg.min_rto = Duration::from_millis(u.int_in_range(1..=200)?);
        cfg.max_retries = u.int_in_range(0..=4)?;
        cfg.response_wait = Duration::from_millis(u.int_in_range(0..=1000)?);
        cfg.no_wait = u.arbitrary()?;
        cfg.delayed_ack = u
            .arbitrary::<Option<u8>>()?
            .map(|ms| Duration::from_millis(u64::from(ms)));
        cfg.max_session_bytes = u.int_in_range(0..=20_000)?;
        cfg.max_buffered_bytes = u.int_in_range(0..=40_000)?;
        cfg.window_scale = u.arbitrary::<Option<u8>>()?.map(|s| s % 16);
        cfg.join_open_sessions = u.arbitrary()?;
        cfg.copies = u.int_in_range(1..=3)?;
        cfg.port_shift = u.arbitrary()?;
        cfg.port_offset = *u.choose(&[0, 0, 2048, 65535])?;
        cfg.localhost_as = Some(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 99)));
        cfg.sample_percent = *u.choose(&[100, 100, 100, 50, 1])?;
        cfg.sample_ramp = u.ratio(1, 8)?;
        cfg.clock_isn = u.arbitrary()?;
        cfg.isn_base = u.arbitrary()?;
        if baseline {
            cfg.baseline = Some(BASELINE);
        }
        cfg.trace_sends = u.arbitrary()?;
        let max_buffered = cfg.max_buffered_bytes as u64;
        let mut targets = vec![TARGET_V4, TARGET_V6];
        targets.extend(cfg.baseline);
        let mut conns = Vec::new();
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        for (ip, port, online) in [
            (v4(198, 19, 0, 1), 40000, ONLINE_V4),
            (v4(198, 19, 0, 1), 40001, ONLINE_V4),
            (v4(198, 19, 0, 2), 40000, ONLINE_V4),
            (v4(127, 0, 0, 1), 40000, ONLINE_V4),
            (ONLINE_V6.ip(), 40000, ONLINE_V6),
        ] {
            conns.push(Conn {
                client: SocketAddr::new(ip, port),
                online,
                next: u.arbitrary()?,
                server: u.arbitrary()?,
            });
        }
        let base = Instant::now();
        Ok(World {
            r: Replicator::new(cfg),
            base,
            now: base,
            conns,
            flows: Vec::new(),
            targets,
            batching: false,
            session_budget: 0,
            max_buffered,
        })
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        match u.int_in_range(0..=15u8)? {
            0..=5 => self.client(u)?,
            6..=10 => self.target(u)?,
            11 | 12 => self.advance(u)?,
            13 => self.raw(u)?,
            14 => {
                if self.batching {
                    self.r.end_batch();
                } else {
                    self.r.begin_batch();
                }
                self.batching = !self.batching;
            }
            _ => {
                let mut routes = 0;
                self.r.drain_routes(|r| routes += r.len());
                self.r.drain_sends(|_| {});
                let _ = (self.r.busy_sessions(), self.r.routes().count());
            }
        }
        Ok(())
    }

    /// A packet of one of the client connections.
    fn client(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let i = u.choose_index(self.conns.len())?;
        let c = &mut self.conns[i];
        let (flags, len) = match u.int_in_range(0..=9u8)? {
            0 => {
                c.next = u.arbitrary()?;
                (Flags::SYN, 0)
            }
            1..=5 => (Flags::ACK | Flags::PSH, u.int_in_range(1..=3000usize)?),
            6 => (Flags::ACK | Flags::FIN, 0),
            7 => (Flags::RST, 0),
            8 => {
                // The online server answered: the next request acknowledges more.
                c.server = c.server.wrapping_add(u.int_in_range(1..=2000u32)?);
                (Flags::ACK, 0)
            }
            _ => (
                Flags(u.arbitrary::<u8>()? & 0x3f),
                u.int_in_range(0..=100usize)?,
            ),
        };
        let seq = match u.int_in_range(0..=7u8)? {
            0..=4 => c.next,
            5 | 6 => c.next.wrapping_add(u.int_in_range(-3000i32..=3000)? as u32),
            _ => u.arbitrary()?,
        };
        let ack = if u.ratio(1, 8)? {
            u.arbitrary()?
        } else {
            c.server
        };
        let repr = SegmentRepr {
            src: c.client,
            dst: c.online,
            seq: Seq(seq),
            ack: Seq(ack),
            flags,
            window: u.arbitrary()?,
            mss: flags.syn().then_some(1460),
            window_scale: if flags.syn() { u.arbitrary()? } else { None },
            ttl: 64,
        };
        let mut payload = vec![b'r'; len];
        if let Some(last) = payload.last_mut() {
            *last = b'\n';
        }
        let mut packet = Vec::new();
        repr.emit(&payload, &mut packet);
        let seq_len = len as u32 + u32::from(flags.syn()) + u32::from(flags.fin());
        c.next = seq.wrapping_add(seq_len);
        match u.int_in_range(0..=15u8)? {
            // Cut short by the capture's snapshot length.
            0 => packet.truncate(packet.len() - len.min(u.int_in_range(1..=3000)?)),
            // A damaged byte anywhere.
            1 => {
                let at = u.choose_index(packet.len())?;
                packet[at] ^= u.int_in_range(1..=255u8)?;
            }
            _ => {}
        }
        self.capture(&packet);
        Ok(())
    }

    fn capture(&mut self, packet: &[u8]) {
        self.session_budget += u64::from(self.r.config().sessions_per_connection());
        self.r.handle_capture(self.now, packet);
    }

    /// A packet of the target on one of the connections the core opened.
    fn target(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        if self.flows.is_empty() {
            return Ok(());
        }
        let i = u.choose_index(self.flows.len())?;
        let f = &mut self.flows[i];
        let ack = match u.int_in_range(0..=5u8)? {
            0..=2 => f.sent,
            3 => f.isn + 1,
            4 => f.sent - u.int_in_range(1..=3000u32)?,
            _ => Seq(u.arbitrary()?),
        };
        let (flags, len) = match u.int_in_range(0..=9u8)? {
            0 | 1 => {
                f.next = Seq(u.arbitrary()?);
                (Flags::SYN | Flags::ACK, 0)
            }
            2 | 3 => (Flags::ACK, 0),
            4..=6 => (Flags::ACK | Flags::PSH, u.int_in_range(1..=3000usize)?),
            7 => (Flags::ACK | Flags::FIN, 0),
            8 => (Flags::RST | Flags::ACK, 0),
            _ => (
                Flags(u.arbitrary::<u8>()? & 0x3f),
                u.int_in_range(0..=100usize)?,
            ),
        };
        let seq = match u.int_in_range(0..=5u8)? {
            0..=3 => f.next,
            4 => f.next + u.int_in_range(1..=3000u32)?,
            _ => Seq(u.arbitrary()?),
        };
        let repr = SegmentRepr {
            src: f.target,
            dst: f.local,
            seq,
            ack,
            flags,
            window: *u.choose(&[65535, 65535, 0, 1, 512])?,
            mss: flags.syn().then_some(u.int_in_range(0..=1460)?),
            window_scale: if flags.syn() { u.arbitrary()? } else { None },
            ttl: 64,
        };
        let mut packet = Vec::new();
        repr.emit(&vec![b'a'; len], &mut packet);
        if !flags.syn() {
            f.next = seq + len as u32 + u32::from(flags.fin());
        } else {
            f.next = seq + 1;
        }
        // Intercept forwards headers only unless asked for payloads.
        if u.arbitrary()? {
            packet.truncate(packet.len() - len);
        }
        self.r.handle_response(self.now, &packet);
        Ok(())
    }

    /// Raw bytes as a capture or as a target packet.
    fn raw(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let len = u.int_in_range(0..=80usize)?;
        let bytes = u.bytes(len.min(u.len()))?.to_vec();
        if u.arbitrary()? {
            self.capture(&bytes);
        } else {
            self.r.handle_response(self.now, &bytes);
        }
        Ok(())
    }

    /// The clock moves on; the timers due fire.
    fn advance(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let ms = match u.int_in_range(0..=7u8)? {
            0..=3 => u.int_in_range(0..=50u64)?,
            4 | 5 => u.int_in_range(0..=2_000u64)?,
            6 => u.int_in_range(0..=60_000u64)?,
            _ => u.int_in_range(0..=1_000_000u64)?,
        };
        self.now += Duration::from_millis(ms);
        // Mostly as a driver does (when the deadline has come), sometimes early.
        if u.ratio(1, 4)? || self.r.poll_timeout().is_some_and(|t| t <= self.now) {
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

    /// Every packet the core sent: it parses, goes to a target, and opens or extends a target
    /// connection the target's packets can answer.
    fn drain(&mut self) {
        let mut sent = Vec::new();
        self.r.drain_transmits(|p| sent.push(p.to_vec()));
        assert!(sent.len() <= 100_000, "{} packets in one step", sent.len());
        for packet in sent {
            let p = TcpPacket::parse(&packet).expect("the core sends packets that parse");
            assert!(self.targets.contains(&p.dst()), "a packet to {}", p.dst());
            assert_eq!(p.payload().len(), p.payload_len(), "a packet sent short");
            let end = p.seq() + p.seq_len();
            let found = self
                .flows
                .iter_mut()
                .find(|f| f.local == p.src() && f.target == p.dst());
            match found {
                Some(f) if p.flags().syn() => {
                    f.isn = p.seq();
                    f.sent = end;
                }
                Some(f) => f.sent = f.sent.max(end),
                None if p.flags().syn() => {
                    if self.flows.len() == MAX_FLOWS {
                        self.flows.remove(0);
                    }
                    self.flows.push(TargetConn {
                        local: p.src(),
                        target: p.dst(),
                        isn: p.seq(),
                        sent: end,
                        next: Seq(0),
                    });
                }
                None => {}
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
        assert!(s.sessions_created <= self.session_budget, "{s}");
        assert!(self.r.busy_sessions() as u64 <= s.sessions_active);
        assert!(self.r.stalled_sessions() as u64 <= s.sessions_active);
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
        assert_eq!(s.sessions_active, 0, "sessions left: {s}");
        assert_eq!(s.bytes_buffered, 0, "bytes left: {s}");
        assert_eq!(self.r.requests_in_flight(), 0, "{s}");
        assert_eq!(self.r.routes().count(), 0, "routes left");
    }
}
