//! Tests of the intercept connections (against a fake intercept on a socket pair) and of when they are read lazily.

use mio::Poll;
use session::Config;

use super::*;

/// A read that leaves the buffer part empty ends the wake's reads of a connection; but when
/// the intercept's last bytes and its close arrived together, the poll reports that once,
/// and the read goes on to the end of the stream instead of leaving the connection for
/// [`PEER_SILENCE`] to find.
#[test]
fn a_close_that_came_with_the_last_bytes_is_read_at_once() {
    let (mut poll, mut peer, mut intercept) = polled_pair();
    let mut ping = Vec::new();
    protocol::encode_ping(&mut ping);
    intercept.write_all(&ping).unwrap();
    drop(intercept);

    let mut events = mio::Events::with_capacity(4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !peer.hung_up && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        events.iter().for_each(|ev| peer.note(ev));
    }
    assert!(peer.hung_up, "the poll reports the close");
    let mut core = Replicator::new(Config::new(Vec::new()));
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        peer.read(&mut core, Instant::now(), &mut buf),
        Err("closed by intercept".to_string())
    );
}

/// A connected pair: our end registered with a poll, and the intercept's end.
fn polled_pair() -> (Poll, Peer, TcpStream) {
    polled_pair_keeping(None)
}

/// The same, for a connection that keeps `head_bytes` of each answer (comparing).
fn polled_pair_keeping(head_bytes: Option<u16>) -> (Poll, Peer, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let intercept = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream.set_nonblocking(true).unwrap();
    let poll = Poll::new().unwrap();
    poll.registry()
        .register(
            &mut SourceFd(&stream.as_raw_fd()),
            Token(PEER),
            Interest::READABLE,
        )
        .unwrap();
    let peer = Peer::new(
        stream,
        Opened {
            dec: Decoder::new(),
            channel: None,
        },
        Arc::new(AtomicBool::new(false)),
        Instant::now(),
        (intercept.local_addr().unwrap(), head_bytes),
    );
    (poll, peer, intercept)
}

/// Whether the poll reports anything within `ms`.
fn woken(poll: &mut Poll, ms: u64) -> bool {
    let mut events = mio::Events::with_capacity(4);
    poll.poll(&mut events, Some(Duration::from_millis(ms)))
        .unwrap();
    !events.is_empty()
}

/// What lazy peers rely on: below the mark a report wakes nobody, a read still gets
/// it, and going back to eager wakes the loop for what is already queued.
#[test]
fn a_lazy_connection_wakes_nobody_for_a_report_yet_a_read_gets_it() {
    let (mut poll, mut peer, mut intercept) = polled_pair();
    let mut ping = Vec::new();
    protocol::encode_ping(&mut ping);
    peer.set_lazy(true).unwrap();
    intercept.write_all(&ping).unwrap();
    assert!(!woken(&mut poll, 200), "a ping below the mark wakes nobody");
    let mut core = Replicator::new(Config::new(Vec::new()));
    let mut buf = vec![0u8; 4096];
    let before = peer.last_heard;
    assert_eq!(peer.read(&mut core, Instant::now(), &mut buf), Ok(false));
    assert!(peer.last_heard > before, "the read got the ping");

    intercept.write_all(&ping).unwrap();
    assert!(!woken(&mut poll, 100));
    peer.set_lazy(false).unwrap();
    assert!(
        woken(&mut poll, 1000),
        "eager again: the queued ping wakes the loop"
    );
    // Enough for the mark wakes the loop even when lazy.
    peer.set_lazy(true).unwrap();
    assert_eq!(peer.read(&mut core, Instant::now(), &mut buf), Ok(false));
    while woken(&mut poll, 50) {}
    let pings: Vec<u8> = ping.repeat(LAZY_LOWAT as usize / ping.len() + 1);
    intercept.write_all(&pings).unwrap();
    assert!(woken(&mut poll, 1000), "a full mark wakes the loop");
}

#[test]
fn peers_are_lazy_only_while_the_capture_is_busy_and_no_session_waits_on_the_target() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let at = |n| t0 + ms(n);
    let wait = lazy_wait(ms(4), ms(3));
    assert_eq!(wait, ms(5), "a block of 4 ms and a millisecond");
    assert!(!lazy_peers(None, at(0), 0, wait), "no capture yet");
    assert!(lazy_peers(Some(t0), at(0), 0, wait));
    assert!(lazy_peers(Some(t0), at(5), 0, wait));
    assert!(
        !lazy_peers(Some(t0), at(6), 0, wait),
        "the capture went quiet"
    );
    assert!(
        !lazy_peers(Some(t0), at(1), 1, wait),
        "a session waits on the target"
    );
    // A kernel that rounds blocks up to clock ticks: 1 ms asked, 10 ms seen.
    assert_eq!(lazy_wait(ms(1), ms(10)), ms(11));
    // Light load: a long gap is no block, and the sleep stays short.
    assert_eq!(lazy_wait(ms(4), ms(2000)), ms(15));
}

/// A response's note, owned: time, hash, head.
type Noted = (u64, u64, Vec<u8>);

/// Records what reaches the worker.
#[derive(Default)]
struct Recorder {
    got: Vec<(Vec<u8>, Option<Noted>)>,
}

impl ResponseSink for Recorder {
    fn response(&mut self, _: Instant, packet: &[u8], note: Option<TargetNote<'_>>) {
        let note = note.map(|n| (n.at_ns, n.hash, n.head.to_vec()));
        self.got.push((packet.to_vec(), note));
    }
    fn routes(&self) -> Vec<SocketAddr> {
        Vec::new()
    }
}

/// Reads the peer until `done` says the recorder has enough (or 5 s pass).
fn read_until(peer: &mut Peer, rec: &mut Recorder, done: impl Fn(&Peer, &Recorder) -> bool) {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(peer, rec) && Instant::now() < deadline {
        peer.read(rec, Instant::now(), &mut buf).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
}

/// An intercept whose clock is 3 s ahead: its replies to the time asks give the offset, and
/// the capture times of its answers reach the worker on our clock, their heads cut to what
/// we keep.
#[test]
fn answers_reach_the_worker_on_our_clock() {
    const SKEW: i64 = 3_000_000_000;
    let (_poll, mut peer, mut intercept) = polled_pair_keeping(Some(4));
    assert!(peer.ask_time());
    intercept
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 256];
    let mut told = 0usize;
    // The quick asks: each reply brings the next ask.
    while told <= usize::from(QUICK_ASKS) {
        let n = intercept.read(&mut buf).unwrap();
        dec.feed(&buf[..n]);
        while let Some(Message::TimeAsk { t1 }) = dec.next_message().unwrap() {
            let skewed = unix_ns(SystemTime::now()).saturating_add_signed(SKEW);
            let mut f = Vec::new();
            protocol::encode_time_tell(&mut f, t1, skewed, skewed);
            intercept.write_all(&f).unwrap();
            told += 1;
        }
        let mut rec = Recorder::default();
        let samples = |p: &Peer| p.clock.as_ref().unwrap().sync.samples();
        read_until(&mut peer, &mut rec, |p, _| samples(p) >= told);
    }
    let (_, offset, rtt) = {
        let mut peers = Peers {
            slots: vec![Some(peer)],
            addrs: vec![intercept.local_addr().unwrap()],
            per_server: 1,
            announcing: AnnounceScratch::default(),
            readable: Vec::new(),
            again: Vec::new(),
            buf: Vec::new(),
            last_silence_check: Instant::now(),
            head_bytes: Some(4),
        };
        let known = peers.clock_offsets().next().expect("an estimate");
        peer = peers.slots[0].take().unwrap();
        known
    };
    assert!(
        offset.abs_diff(SKEW) <= rtt / 2 + 1_000_000,
        "offset {offset} ns, round trip {rtt} ns"
    );

    let mut batch = protocol::AnswerBatch::new();
    let captured = 1_700_000_000_000_000_000u64;
    let note = |head: &'static [u8]| protocol::Annotation {
        at_ns: captured.saturating_add_signed(SKEW),
        hash: 77,
        head,
    };
    batch.push(b"headers", &note(b"HTTP/1.1"));
    let mut plain = protocol::ResponseBatch::new();
    plain.push(b"plain");
    let mut f = Vec::new();
    batch.finish(&mut f);
    plain.finish(&mut f);
    intercept.write_all(&f).unwrap();
    let mut rec = Recorder::default();
    read_until(&mut peer, &mut rec, |_, r| r.got.len() >= 2);
    let (pkt, note) = &rec.got[0];
    assert_eq!(pkt, b"headers");
    let (at, hash, head) = note.clone().unwrap();
    assert_eq!((hash, head.as_slice()), (77, &b"HTTP"[..]));
    assert!(
        at.abs_diff(captured) <= rtt / 2 + 1_000_000,
        "captured at {captured}, reported {at}"
    );
    assert_eq!(rec.got[1], (b"plain".to_vec(), None));
}

/// A connection that did not ask for answers does not take them.
#[test]
fn answers_nobody_asked_for_end_the_connection() {
    let (_poll, mut peer, mut intercept) = polled_pair();
    let mut batch = protocol::AnswerBatch::new();
    let note = protocol::Annotation {
        at_ns: 1,
        hash: 2,
        head: b"",
    };
    batch.push(b"x", &note);
    let mut f = Vec::new();
    batch.finish(&mut f);
    intercept.write_all(&f).unwrap();
    let mut rec = Recorder::default();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut result = Ok(false);
    while result == Ok(false) && Instant::now() < deadline {
        result = peer.read(&mut rec, Instant::now(), &mut buf);
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(result, Err("answers we did not ask for".to_string()));
    assert!(rec.got.is_empty());
}
