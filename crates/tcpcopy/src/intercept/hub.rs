//! What intercept's threads share: the tcpcopy connections' writers, the route table (a
//! [`Router`], whose rules live in `protocol::routing`) and the counters. The capture threads
//! hand it batches of responses ([`Hub::dispatch`]), which it parses, routes and delivers; the
//! connection threads tell it about connections and their routes. One lock guards the table and
//! the writers; a capture thread takes it once per batch.
//!
//! A connection that compares answers gets each response annotated ([`protocol::Annotation`]:
//! capture time, payload digest, the answer's first bytes), the others plain headers. Payloads
//! are captured only while such a connection is there: the hub counts them ([`PayloadClaim`])
//! and the sources switch their capture over ([`Hub::wants_payloads`], [`Hub::source_switched`]).
//! The hub also keeps intercept's clock, which the hidden `--clock-offset-ms` skews for tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use protocol::heads::{self, AnswerHeads, Segment};
use protocol::routing::{ConnId, Destination, Owner, Router};
use protocol::{Annotation, AnswerBatch, ResponseBatch};
use wire::TcpPacket;

use super::conn::ConnOut;

/// Routes held at most, all connections together (about 80 bytes each): a connection whose
/// announcement would pass it floods, and is cut off (its routes go with it). A tcpcopy announces
/// one route per live session.
pub(super) const MAX_ROUTES: usize = 1 << 20;

/// Routes are keyed by endpoints remote clients choose: a seeded fast hash (foldhash).
type RouteTable = Router<foldhash::fast::RandomState>;

struct HubState {
    /// The write side of every connection the router knows.
    outs: HashMap<ConnId, Arc<ConnOut>>,
    router: RouteTable,
    /// Connections in `outs` that compare answers.
    comparing: usize,
}

/// One connection's frames in the making: plain or annotated, as it asked.
#[derive(Default)]
struct ConnBatch {
    /// The connection's `compare_bytes` (it never changes, and ids are not reused).
    limit: Option<u16>,
    plain: ResponseBatch,
    answers: AnswerBatch,
    frames: Vec<u8>,
}

/// A capture thread's buffers for [`Hub::dispatch`], reused from batch to batch, and its
/// table of where each flow's answer began.
#[derive(Default)]
pub(super) struct Scratch {
    per_conn: HashMap<ConnId, ConnBatch>,
    everyone: ResponseBatch,
    everyone_frames: Vec<u8>,
    /// Annotated broadcasts, one batch per head length asked for.
    everyone_answers: Vec<(u16, ConnBatch)>,
    /// Whether a plain broadcast has a taker in this batch.
    everyone_plain: bool,
    heads: AnswerHeads<foldhash::fast::RandomState>,
}

/// One packet's annotation, computed when a comparing connection first needs it.
struct Note {
    at_ns: u64,
    hash: Option<u64>,
    /// Where the payload starts in its answer, and where the answer's head may stop (see
    /// `protocol::heads`).
    offset: Option<u64>,
    cut: Option<u64>,
}

impl Note {
    fn get<'p>(&mut self, p: &TcpPacket<'p>, limit: u16) -> Annotation<'p> {
        let payload = p.payload();
        let hash = *self
            .hash
            .get_or_insert_with(|| compare::Digest::of(payload).hash);
        Annotation {
            at_ns: self.at_ns,
            hash,
            head: heads::head(payload, self.offset, limit, self.cut),
        }
    }
}

/// A comparing connection's claim on payload capture, from before its welcome to its end.
pub(super) struct PayloadClaim<'a>(&'a Hub);

impl Drop for PayloadClaim<'_> {
    fn drop(&mut self) {
        self.0.payload_claims.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections and routes, shared by all threads.
pub struct Hub {
    state: Mutex<HubState>,
    next_conn: AtomicU64,
    /// Packets the capture ring had no room for (kernel count).
    pub capture_drops: Arc<AtomicU64>,
    pub responses: AtomicU64,
    pub routed: AtomicU64,
    pub broadcast: AtomicU64,
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
    /// Why a capture thread ended the run.
    failed: Mutex<Option<String>>,
    /// Connections that compare answers (from before their welcome).
    payload_claims: AtomicUsize,
    /// Response sources, and those capturing whole payloads now.
    sources: AtomicUsize,
    full_sources: AtomicUsize,
    /// Added to every time intercept reports (`--clock-offset-ms`, for tests).
    clock_offset_ns: AtomicI64,
}

impl Hub {
    /// A hub whose routes live `route_timeout` past their last use.
    pub fn new(route_timeout: Duration) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                outs: HashMap::new(),
                router: Router::new(route_timeout),
                comparing: 0,
            }),
            next_conn: AtomicU64::new(0),
            capture_drops: Arc::default(),
            responses: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            broadcast: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            failed: Mutex::new(None),
            payload_claims: AtomicUsize::new(0),
            sources: AtomicUsize::new(0),
            full_sources: AtomicUsize::new(0),
            clock_offset_ns: AtomicI64::new(0),
        }
    }

    /// Skews every time this intercept reports by `ns` (a host whose clock is off, for tests).
    pub fn set_clock_offset(&self, ns: i64) {
        self.clock_offset_ns.store(ns, Ordering::Relaxed);
    }

    /// `ns` since the Unix epoch on this host's clock, as intercept reports it (skewed).
    #[inline]
    pub(super) fn report_time(&self, ns: u64) -> u64 {
        ns.saturating_add_signed(self.clock_offset_ns.load(Ordering::Relaxed))
    }

    /// Now, as intercept reports it.
    pub(super) fn now_ns(&self) -> u64 {
        self.report_time(unix_ns(SystemTime::now()))
    }

    /// A connection will compare answers: payloads are captured until the claim is dropped.
    pub(super) fn claim_payloads(&self) -> PayloadClaim<'_> {
        self.payload_claims.fetch_add(1, Ordering::Relaxed);
        PayloadClaim(self)
    }

    /// Whether the sources should capture whole payloads (a comparing connection is there).
    #[inline]
    pub(super) fn wants_payloads(&self) -> bool {
        self.payload_claims.load(Ordering::Relaxed) > 0
    }

    /// A response source starts, capturing headers only.
    pub(super) fn add_source(&self) {
        self.sources.fetch_add(1, Ordering::Relaxed);
    }

    /// A source now captures whole payloads (`full`) or headers only again.
    pub(super) fn source_switched(&self, full: bool) {
        if full {
            self.full_sources.fetch_add(1, Ordering::Relaxed);
        } else {
            self.full_sources.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits up to `limit` for every source to capture whole payloads; false if one did not.
    pub(super) fn await_payload_capture(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let all =
                self.full_sources.load(Ordering::Relaxed) >= self.sources.load(Ordering::Relaxed);
            if all || Instant::now() >= deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panicking thread cannot leave the maps half-updated (each update is a connection
        // added or removed with its writer, or routes inserted), so a poisoned lock is still
        // usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A welcomed connection: numbers it, and routes to `out` from now on.
    pub(super) fn connect(&self, out: Arc<ConnOut>, owner: Owner) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        st.comparing += usize::from(out.compare_bytes.is_some());
        st.outs.insert(id, out);
        st.router.connect(id, owner);
        id
    }

    /// Connection `id` announced these client endpoints; false (and nothing taken) when the
    /// route table would pass [`MAX_ROUTES`].
    #[must_use]
    pub(super) fn announce(&self, id: ConnId, routes: Vec<SocketAddr>) -> bool {
        let now = Instant::now();
        let mut st = self.lock();
        if st.router.routes() + routes.len() > MAX_ROUTES {
            return false;
        }
        st.router.announce(id, routes, now);
        true
    }

    /// Whether `dst` is a replicated session's client endpoint (announced by a tcpcopy).
    pub(super) fn is_replicated(&self, dst: SocketAddr) -> bool {
        self.lock().router.knows(dst)
    }

    /// Connection `id` is gone, and its routes with it.
    pub(super) fn disconnect(&self, id: ConnId) {
        let mut st = self.lock();
        st.router.disconnect(id);
        if let Some(out) = st.outs.remove(&id) {
            st.comparing -= usize::from(out.compare_bytes.is_some());
        }
    }

    /// Forgets the routes unused for the route timeout.
    pub(super) fn expire_routes(&self) {
        let now = Instant::now();
        self.lock().router.expire(now);
    }

    /// A capture thread cannot go on: the run ends with `why`.
    pub(super) fn fail(&self, why: String) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Why a capture thread ended the run, if one did.
    pub(super) fn take_failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Routes one batch of response packets, each with its capture time (ns since the Unix
    /// epoch; only read for comparing connections), to their owners' connections. `scratch`
    /// keeps its buffers from batch to batch.
    pub(super) fn dispatch<'a>(
        &self,
        packets: impl Iterator<Item = (&'a [u8], u64)>,
        max_batch: usize,
        scratch: &mut Scratch,
    ) {
        let now = Instant::now();
        let mut st = self.lock();
        let HubState {
            outs,
            router,
            comparing,
        } = &mut *st;
        let compare = *comparing > 0;
        if scratch.per_conn.len() > 2 * outs.len() + 16 {
            scratch.per_conn.retain(|c, _| outs.contains_key(c));
        }
        scratch.plan_everyone(router, outs);
        for (pkt, at) in packets {
            self.responses.fetch_add(1, Ordering::Relaxed);
            let Ok(p) = TcpPacket::parse(pkt) else {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut note = compare.then(|| {
                let segment = Segment {
                    src: p.src(),
                    dst: p.dst(),
                    seq: p.seq(),
                    ack: p.ack(),
                    payload_len: p.payload_len(),
                    end: p.flags().fin() || p.flags().rst(),
                };
                let (offset, cut) = scratch.heads.place(&segment, p.payload());
                Note {
                    at_ns: self.report_time(at),
                    hash: None,
                    offset,
                    cut,
                }
            });
            match router.route(p.dst(), now) {
                Destination::Conn(c) => {
                    self.routed.fetch_add(1, Ordering::Relaxed);
                    let b = scratch.per_conn.entry(c).or_insert_with(|| ConnBatch {
                        limit: outs.get(&c).and_then(|o| o.compare_bytes),
                        ..ConnBatch::default()
                    });
                    b.push(&p, b.limit.zip(note.as_mut()), max_batch);
                }
                Destination::Everyone => {
                    self.broadcast.fetch_add(1, Ordering::Relaxed);
                    scratch.push_everyone(&p, note.as_mut(), max_batch);
                }
            }
        }
        self.deliver_all(scratch, router, outs);
    }

    /// Sends every connection its frames of the batch.
    fn deliver_all(
        &self,
        scratch: &mut Scratch,
        router: &RouteTable,
        outs: &HashMap<ConnId, Arc<ConnOut>>,
    ) {
        for (c, b) in scratch.per_conn.iter_mut() {
            b.finish();
            if b.frames.is_empty() {
                continue;
            }
            if let Some(out) = outs.get(c) {
                self.deliver(out, &b.frames);
            }
            b.frames.clear();
        }
        scratch.everyone.finish(&mut scratch.everyone_frames);
        scratch
            .everyone_answers
            .iter_mut()
            .for_each(|(_, b)| b.finish());
        // Once per tcpcopy instance, not per connection (see `protocol::routing`).
        for c in router.everyone() {
            let Some(out) = outs.get(c) else {
                continue;
            };
            let frames = match out.compare_bytes {
                None => &scratch.everyone_frames,
                Some(limit) => match scratch.everyone_answers.iter().find(|(l, _)| *l == limit) {
                    Some((_, b)) => &b.frames,
                    None => continue,
                },
            };
            if !frames.is_empty() {
                self.deliver(out, frames);
            }
        }
        scratch.everyone_frames.clear();
        scratch
            .everyone_answers
            .iter_mut()
            .for_each(|(_, b)| b.frames.clear());
    }

    /// Sends frames to one connection: at once from the calling (capture) thread when nothing
    /// is queued, else queued for its writer thread; a full queue (a slow tcpcopy) drops and
    /// counts.
    #[inline]
    fn deliver(&self, out: &ConnOut, frames: &[u8]) {
        if !out.send(frames) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The statistics line.
    pub fn summary(&self) -> String {
        let st = self.lock();
        format!(
            "responses {} (routed {}, to all {}, malformed {}), capture drops {}, frames dropped for slow tcpcopy {}, connections {}, routes {}",
            self.responses.load(Ordering::Relaxed),
            self.routed.load(Ordering::Relaxed),
            self.broadcast.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
            self.capture_drops.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            st.router.connections(),
            st.router.routes()
        )
    }
}

impl ConnBatch {
    /// Adds a packet, annotated when the connection compares (`Some((head bytes, note))`);
    /// finishes the frame once it holds `max_batch` packets.
    #[inline]
    fn push(&mut self, p: &TcpPacket<'_>, compare: Option<(u16, &mut Note)>, max_batch: usize) {
        match compare {
            None => {
                if self.plain.push(p.headers()) >= max_batch {
                    self.plain.finish(&mut self.frames);
                }
            }
            Some((limit, note)) => {
                let n = self.answers.push(p.headers(), &note.get(p, limit));
                if n >= max_batch || self.answers.is_full() {
                    self.answers.finish(&mut self.frames);
                }
            }
        }
    }

    fn finish(&mut self) {
        self.plain.finish(&mut self.frames);
        self.answers.finish(&mut self.frames);
    }
}

impl Scratch {
    /// Which broadcasts this batch may need: plain ones, and annotated ones per head length, as
    /// the connections that take broadcasts asked.
    fn plan_everyone(&mut self, router: &RouteTable, outs: &HashMap<ConnId, Arc<ConnOut>>) {
        self.everyone_plain = false;
        let mut limits: Vec<u16> = Vec::new();
        for c in router.everyone() {
            match outs.get(c).and_then(|o| o.compare_bytes) {
                None => self.everyone_plain = true,
                Some(l) if !limits.contains(&l) => limits.push(l),
                Some(_) => {}
            }
        }
        self.everyone_answers.retain(|(l, _)| limits.contains(l));
        for l in limits {
            if !self.everyone_answers.iter().any(|(x, _)| *x == l) {
                self.everyone_answers.push((l, ConnBatch::default()));
            }
        }
    }

    /// A packet whose route is unknown, for every connection that takes broadcasts.
    #[inline]
    fn push_everyone(&mut self, p: &TcpPacket<'_>, mut note: Option<&mut Note>, max_batch: usize) {
        if self.everyone_plain && self.everyone.push(p.headers()) >= max_batch {
            self.everyone.finish(&mut self.everyone_frames);
        }
        if let Some(note) = note.as_mut() {
            for (limit, b) in &mut self.everyone_answers {
                b.push(p, Some((*limit, &mut **note)), max_batch);
            }
        }
    }
}

/// `t` in ns since the Unix epoch (0 before it).
pub(super) fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    use protocol::{Decoder, Message};
    use wire::{Flags, SegmentRepr, Seq};

    use super::*;

    const SERVER: &str = "198.18.0.30:80";
    const PLAIN_CLIENT: &str = "198.19.0.1:1000";
    const COMPARING_CLIENT: &str = "198.19.0.2:2000";

    /// A response of the target's to `client`.
    fn response(client: &str, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        SegmentRepr {
            src: SERVER.parse().unwrap(),
            dst: client.parse().unwrap(),
            seq: Seq(seq),
            ack: Seq(ack),
            flags: Flags(Flags::ACK.0 | Flags::PSH.0),
            window: 512,
            mss: None,
            window_scale: None,
            ttl: 64,
        }
        .emit(payload, &mut out);
        out
    }

    /// A connection's two ends: ours for the hub, the tcpcopy's to read.
    fn conn(compare_bytes: Option<u16>) -> (Arc<ConnOut>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let theirs = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (ours, _) = listener.accept().unwrap();
        (Arc::new(ConnOut::new(ours, compare_bytes, None)), theirs)
    }

    /// The route table stops at its cap: the announcement that would pass it is refused whole.
    #[test]
    fn announcements_beyond_the_route_cap_are_refused() {
        let hub = Hub::new(Duration::from_secs(60));
        let (out, _theirs) = conn(None);
        let owner = Owner {
            host: "198.18.0.20".parse().unwrap(),
            instance: 1,
        };
        let id = hub.connect(out, owner);
        let route = |i: usize| {
            let ip = std::net::Ipv4Addr::from(0xc613_0000 + (i >> 16) as u32);
            SocketAddr::new(ip.into(), (i & 0xffff) as u16)
        };
        assert!(hub.announce(id, (0..MAX_ROUTES - 1).map(route).collect()));
        assert!(!hub.announce(id, vec![route(MAX_ROUTES), route(MAX_ROUTES + 1)]));
        assert!(hub.announce(id, vec![route(MAX_ROUTES)]));
        assert_eq!(hub.lock().router.routes(), MAX_ROUTES);
    }

    /// What a tcpcopy received: `(headers, Some((at_ns, hash, head)))` per packet, `None` for
    /// plain responses.
    type Got = Vec<(Vec<u8>, Option<(u64, u64, Vec<u8>)>)>;

    fn received(s: &mut TcpStream) -> Got {
        let mut dec = Decoder::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            dec.feed(&buf[..n]);
        }
        let mut got = Got::new();
        while let Some(m) = dec.next_message().unwrap() {
            match m {
                Message::Responses(r) => got.extend(r.iter().map(|p| (p.to_vec(), None))),
                Message::Answers(a) => got.extend(
                    a.iter()
                        .map(|(p, n)| (p.to_vec(), Some((n.at_ns, n.hash, n.head.to_vec())))),
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    }

    fn headers(pkt: &[u8]) -> Vec<u8> {
        TcpPacket::parse(pkt).unwrap().headers().to_vec()
    }

    #[test]
    fn a_comparing_connection_gets_annotated_answers_and_a_plain_one_headers() {
        let hub = Hub::new(Duration::from_secs(60));
        hub.set_clock_offset(3_000_000_000);
        let (plain, mut plain_end) = conn(None);
        let (comparing, mut comparing_end) = conn(Some(8));
        let owner = |instance| Owner {
            host: "198.18.0.20".parse().unwrap(),
            instance,
        };
        let p = hub.connect(plain, owner(1));
        let c = hub.connect(comparing, owner(2));
        assert!(hub.announce(p, vec![PLAIN_CLIENT.parse().unwrap()]));
        assert!(hub.announce(c, vec![COMPARING_CLIENT.parse().unwrap()]));

        let packets = [
            response(PLAIN_CLIENT, 1, 100, b"HTTP/1.1 200 OK"),
            // One answer in three segments: the head's 8 bytes span the first two.
            response(COMPARING_CLIENT, 1, 100, b"HTTP/"),
            response(COMPARING_CLIENT, 6, 100, b"1.1 200 OK"),
            response(COMPARING_CLIENT, 16, 100, b"body"),
            // The next answer (the acknowledgment moved).
            response(COMPARING_CLIENT, 20, 180, b"HTTP/1.1 404"),
            // Nobody's route: to both owners, each as it asked.
            response("198.19.0.9:9", 1, 1, b"stray"),
        ];
        let stamps = [10, 20, 30, 40, 50, 60];
        let mut scratch = Scratch::default();
        hub.dispatch(
            packets.iter().map(Vec::as_slice).zip(stamps),
            64,
            &mut scratch,
        );

        assert_eq!(
            received(&mut plain_end),
            vec![(headers(&packets[0]), None), (headers(&packets[5]), None)]
        );
        let hash =
            |i: usize| compare::Digest::of(TcpPacket::parse(&packets[i]).unwrap().payload()).hash;
        let note =
            |i: usize, head: &[u8]| Some((3_000_000_000 + stamps[i], hash(i), head.to_vec()));
        assert_eq!(
            received(&mut comparing_end),
            vec![
                (headers(&packets[1]), note(1, b"HTTP/")),
                (headers(&packets[2]), note(2, b"1.1")),
                (headers(&packets[3]), note(3, b"")),
                (headers(&packets[4]), note(4, b"HTTP/1.1")),
                (headers(&packets[5]), note(5, b"stray")),
            ]
        );
    }

    #[test]
    fn payload_capture_follows_the_comparing_connections() {
        let hub = Hub::new(Duration::from_secs(60));
        hub.add_source();
        assert!(!hub.wants_payloads());
        let claim = hub.claim_payloads();
        assert!(hub.wants_payloads());
        assert!(
            !hub.await_payload_capture(Duration::from_millis(10)),
            "the source has not switched"
        );
        hub.source_switched(true);
        assert!(hub.await_payload_capture(Duration::from_millis(10)));
        drop(claim);
        assert!(!hub.wants_payloads(), "the last comparing connection left");
    }

    /// CPU time of the calling thread (the first field of its schedstat), in ns.
    fn thread_cpu_ns() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        stat.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The cost of a batch through the hub, per packet: plain headers (as captured without
    /// `--compare`) to a plain connection, and whole packets annotated for a comparing one. The
    /// connection's far end is drained by a thread, so the socket writes are part of it.
    #[test]
    #[ignore = "a measurement: cargo test --release -p tcpcopy --lib dispatch_cost -- --ignored --nocapture"]
    fn dispatch_cost() {
        for (what, compare, payload) in [
            ("plain, headers as captured", None, 0),
            ("answers, 100-byte payloads", Some(1024), 100),
            ("answers, 1400-byte payloads", Some(1024), 1400),
        ] {
            let hub = Hub::new(Duration::from_secs(600));
            let (out, mut theirs) = conn(compare);
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let writer = {
                let (out, stop) = (out.clone(), stop.clone());
                std::thread::spawn(move || out.run_writer(&stop))
            };
            let id = hub.connect(
                out,
                Owner {
                    host: "198.18.0.20".parse().unwrap(),
                    instance: 1,
                },
            );
            let clients: Vec<String> = (0..1000)
                .map(|i| format!("198.19.{}.{}:{}", i / 200, i % 200 + 1, 1024 + i))
                .collect();
            assert!(hub.announce(id, clients.iter().map(|c| c.parse().unwrap()).collect()));
            let drain = std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0usize;
                theirs
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                while let Ok(n) = theirs.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                total
            });
            let body = vec![b'x'; payload];
            // 64-packet batches over 1000 flows; each flow's answers go on in sequence.
            let batches: Vec<Vec<Vec<u8>>> = (0..64u32)
                .map(|b| {
                    (0..64u32)
                        .map(|i| {
                            let f = ((b * 64 + i) % 1000) as usize;
                            response(&clients[f], 1 + b * payload as u32, 100 + (b / 4), &body)
                        })
                        .collect()
                })
                .collect();
            let mut scratch = Scratch::default();
            let rounds = 20_000;
            let (t0, cpu0) = (Instant::now(), thread_cpu_ns());
            for r in 0..rounds {
                let batch = &batches[r % batches.len()];
                hub.dispatch(
                    batch
                        .iter()
                        .map(|p| (p.as_slice(), 1_700_000_000_000_000_000)),
                    64,
                    &mut scratch,
                );
            }
            let packets = (rounds * 64) as f64;
            let per = t0.elapsed().as_nanos() as f64 / packets;
            let cpu = (thread_cpu_ns() - cpu0) as f64 / packets;
            hub.disconnect(id);
            stop.store(true, Ordering::Relaxed);
            writer.join().unwrap();
            let dropped = hub.dropped.load(Ordering::Relaxed);
            println!("{what}: {cpu:.0} ns CPU per packet ({per:.0} ns elapsed, {dropped} frames dropped)");
            drop(drain);
        }
    }
}
