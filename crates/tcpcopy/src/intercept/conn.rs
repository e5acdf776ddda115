//! One tcpcopy connection, intercept's side: the opening exchange, then a thread reading the
//! connection's route announcements into the [`Hub`] and answering its time asks, and a writer
//! ([`ConnOut`]) through which the capture threads stream responses to it. The routing itself is
//! `protocol::routing`'s.
//!
//! A tcpcopy that compares answers is welcomed only once the sources capture whole payloads (or
//! after half a second, should one not switch), so that the answers to what it replicates are
//! captured whole.
//!
//! With `--secret-file`, the connection is the encrypted channel's (`crate::channel` opens it):
//! nothing but the handshake reply goes to a peer before its sealed hello opened, and only then
//! does the hub route to it; the reader opens records, the [`ConnOut`] seals frames. A peer that
//! speaks garbage, trickles or floods its opening exchange, announces more routes than
//! [`MAX_ROUTES`] or stops reading is cut off with one line naming the reason.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use socket2::SockRef;
use tracing::{debug, info, warn};

use protocol::check::CheckMessage;
use protocol::routing::Owner;
use protocol::secure::{Channel, Opener, Psk, Sealer};
use protocol::{Decoder, Hello, Message};

use super::check::Prober;
use super::hub::{Hub, PayloadClaim, MAX_ROUTES};
use crate::plumbing::read_first_message;

/// Bytes waiting for one slow tcpcopy connection before further frames are dropped (and counted).
const CONN_QUEUE_BYTES: usize = 32 << 20;
/// How long a comparing tcpcopy's welcome waits for the sources to capture payloads.
const SWITCH_WAIT: Duration = Duration::from_millis(500);

/// The write side of one tcpcopy connection. The capture thread writes without blocking while
/// nothing waits; what the socket does not take queues for the connection's writer thread, which
/// may block, and which also sends the idle pings. Frames stay in order: the capture thread writes
/// directly only while the queue is empty and the writer is not writing.
pub(super) struct ConnOut {
    sock: TcpStream,
    state: Mutex<OutState>,
    ready: Condvar,
    /// The connection compares answers and wants this many first bytes of each.
    pub(super) compare_bytes: Option<u16>,
}

#[derive(Default)]
struct OutState {
    queue: Vec<u8>,
    writing: bool,
    closed: bool,
    /// Seals the frames on an encrypted channel, in the order they enter the stream (under the
    /// lock), so that the record counters on both sides agree.
    sealer: Option<Sealer>,
    sealed: Vec<u8>,
}

impl OutState {
    /// Appends frames to the queue, sealed on an encrypted channel.
    fn enqueue(&mut self, frames: &[u8]) {
        match self.sealer.as_mut() {
            Some(s) => {
                if s.seal(frames, &mut self.queue).is_err() {
                    self.closed = true;
                }
            }
            None => self.queue.extend_from_slice(frames),
        }
    }

    /// What goes on the wire for `frames`: themselves, or sealed into `self.sealed`.
    fn wire<'f>(&'f mut self, frames: &'f [u8]) -> Option<&'f [u8]> {
        let Some(s) = self.sealer.as_mut() else {
            return Some(frames);
        };
        self.sealed.clear();
        s.seal(frames, &mut self.sealed).ok()?;
        Some(&self.sealed)
    }
}

impl ConnOut {
    /// `sealer`: the connection's encrypted channel, if it has one.
    pub(super) fn new(
        sock: TcpStream,
        compare_bytes: Option<u16>,
        sealer: Option<Sealer>,
    ) -> ConnOut {
        ConnOut {
            sock,
            state: Mutex::new(OutState {
                sealer,
                ..OutState::default()
            }),
            ready: Condvar::new(),
            compare_bytes,
        }
    }

    /// The connection broke (or stopped taking what we send), as the writer found.
    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// False when the frames were dropped (queue full, or the connection is gone).
    pub(super) fn send(&self, frames: &[u8]) -> bool {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.closed {
            return false;
        }
        if st.queue.is_empty() && !st.writing {
            let Some(wire) = st.wire(frames) else {
                st.closed = true;
                return false;
            };
            let len = wire.len();
            let done = send_now(&self.sock, wire);
            if done == len {
                return true;
            }
            // The rest of what is on the wire already (sealed, if so) queues as it is.
            let OutState {
                queue,
                sealer,
                sealed,
                ..
            } = st;
            queue.extend_from_slice(match sealer {
                Some(_) => &sealed[done..],
                None => &frames[done..],
            });
        } else {
            // Dropped whole or queued whole: a record dropped after sealing would break the
            // stream.
            let wire_len = match st.sealer {
                Some(_) => Sealer::sealed_len(frames.len()),
                None => frames.len(),
            };
            if st.queue.len() + wire_len > CONN_QUEUE_BYTES {
                return false;
            }
            st.enqueue(frames);
        }
        drop(guard);
        self.ready.notify_one();
        true
    }

    /// The writer thread: writes what queues up (blocking), and a ping every 500 ms so that
    /// tcpcopy can tell a quiet intercept from a dead one. Returns when the socket breaks.
    pub(super) fn run_writer(&self, stop: &AtomicBool) {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            {
                let mut st = self.lock();
                if st.queue.is_empty() {
                    st = self
                        .ready
                        .wait_timeout(st, Duration::from_millis(500))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if st.queue.is_empty() {
                        // Also while the capture thread writes directly: tcpcopy counts a
                        // connection without a ping for 5 s as dead.
                        let mut ping = Vec::with_capacity(5);
                        protocol::encode_ping(&mut ping);
                        st.enqueue(&ping);
                    }
                }
                std::mem::swap(&mut out, &mut st.queue);
                st.writing = true;
            }
            let ok = (&self.sock).write_all(&out).is_ok();
            out.clear();
            let mut st = self.lock();
            st.writing = false;
            if !ok {
                st.closed = true;
                drop(st);
                let _ = self.sock.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// Writes what the socket takes without blocking; how many bytes it took.
fn send_now(sock: &TcpStream, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() {
        match SockRef::from(sock).send_with_flags(&bytes[done..], libc::MSG_DONTWAIT) {
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Full, or broken: the writer finds out which.
            Err(_) => break,
        }
    }
    done
}

/// One tcpcopy connection, on its own thread: handshake, then read its routes while a writer
/// thread streams responses.
pub(super) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    door: Door,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) {
    if let Err(e) = serve_conn(stream, peer, &door, &hub, &stop) {
        warn!("tcpcopy {peer}: {e:#}");
    }
}

/// Who is let in: whether the host is (`--allow`), and the secret a tcpcopy must prove
/// (`--secret-file`).
pub(super) struct Door {
    pub(super) allowed: bool,
    pub(super) secret: Option<Psk>,
    /// Answers `tcpcopy check`'s asks.
    pub(super) prober: Arc<Prober>,
}

fn serve_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    door: &Door,
    hub: &Hub,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (hello, mut dec, channel, _claim) = handshake(&mut stream, peer, door, hub)?;
    let (sealer, mut opener) = match channel {
        Some(c) => (Some(c.sealer), Some(c.opener)),
        None => (None, None),
    };
    let out = Arc::new(ConnOut::new(
        stream.try_clone()?,
        hello.compare_bytes,
        sealer,
    ));
    let writer = out.clone();
    let wstop = stop.clone();
    thread::Builder::new()
        .name(format!("send-{peer}"))
        .spawn(move || writer.run_writer(&wstop))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    // From here on every exit goes through the cleanup below.
    let owner = Owner {
        host: peer.ip(),
        instance: hello.instance,
    };
    let id = hub.connect(out.clone(), owner);
    let sealed = if opener.is_some() { ", encrypted" } else { "" };
    match hello.compare_bytes {
        Some(n) => info!(
            "tcpcopy {peer} connected (connection {id}{sealed}), comparing answers ({n} first bytes)"
        ),
        None => info!("tcpcopy {peer} connected (connection {id}{sealed})"),
    }
    let conn = Conn {
        peer,
        id,
        hub,
        out: &out,
        prober: &door.prober,
    };
    let end = conn.read(&mut stream, (&mut dec, opener.as_mut()), stop);
    hub.disconnect(id);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    info!("tcpcopy {peer} disconnected (connection {id})");
    end
}

/// What opened a connection: the hello, the decoder holding the bytes after it, the encrypted
/// channel if any, and a comparing tcpcopy's claim on payload capture.
type Opened<'h> = (Hello, Decoder, Option<Channel>, Option<PayloadClaim<'h>>);

/// The opening exchange: refuses a host not allowed, a peer that does not prove the secret (or
/// proves one this intercept does not hold), or a hello it cannot answer; else welcomes, a
/// comparing tcpcopy once payloads are captured (its claim on them comes back). Nothing but a
/// refusal or the handshake reply is sent before the peer proved the secret (when one is set).
fn handshake<'h>(
    stream: &mut TcpStream,
    peer: SocketAddr,
    door: &Door,
    hub: &'h Hub,
) -> anyhow::Result<Opened<'h>> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    if !door.allowed {
        let reason = format!("host {} is not in this intercept's -x list", peer.ip());
        reject(stream, &reason, None);
        anyhow::bail!("refused: not in the -x allow list");
    }
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut dec = Decoder::new();
    let first = read_first_message(stream, &mut dec, |m| match m {
        Message::SecureHello(b) => Err(b.to_vec()),
        m => Ok(protocol::answer_hello(m)),
    })?;
    let (hello, mut channel) = match (first, &door.secret) {
        (Ok(_), Some(_)) => {
            reject(
                stream,
                "this intercept requires a secret: start tcpcopy with --secret-file",
                None,
            );
            anyhow::bail!("refused: intercept requires a secret, and the peer sent a plain hello");
        }
        (Ok(hello), None) => (hello, None),
        (Err(theirs), Some(psk)) => {
            let (hello, plain, c) =
                crate::channel::accept(stream, psk, &theirs, &mut dec, protocol::answer_hello)?;
            dec = plain;
            (hello, Some(c))
        }
        (Err(_), None) => (protocol::answer_hello(&Message::SecureHello(&[])), None),
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(reason) => {
            reject(stream, &reason, channel.as_mut());
            anyhow::bail!("refused: {reason}");
        }
    };
    let claim = hello.compare_bytes.map(|_| hub.claim_payloads());
    if claim.is_some() && !hub.await_payload_capture(SWITCH_WAIT) {
        warn!("tcpcopy {peer}: a response source still captures headers only; the first answers may be cut short");
    }
    let mut f = Vec::new();
    protocol::encode_welcome(&mut f);
    stream.write_all(&seal(f, channel.as_mut())?)?;
    Ok((hello, dec, channel, claim))
}

/// `frames` as they go on the wire: sealed on an encrypted channel.
fn seal(frames: Vec<u8>, channel: Option<&mut Channel>) -> anyhow::Result<Vec<u8>> {
    let Some(c) = channel else {
        return Ok(frames);
    };
    let mut out = Vec::with_capacity(Sealer::sealed_len(frames.len()));
    c.sealer.seal(&frames, &mut out)?;
    Ok(out)
}

/// One welcomed connection, as its reading thread sees it.
struct Conn<'a> {
    peer: SocketAddr,
    id: u64,
    hub: &'a Hub,
    out: &'a ConnOut,
    prober: &'a Prober,
}

impl Conn<'_> {
    /// Reads the connection's route announcements into the hub and answers its time asks,
    /// until it closes, breaks or the run stops.
    fn read(
        &self,
        stream: &mut TcpStream,
        (dec, mut opener): (&mut Decoder, Option<&mut Opener>),
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        'conn: loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            loop {
                match dec.next_message() {
                    Ok(Some(Message::Routes(routes))) => {
                        if !self.hub.announce(self.id, routes) {
                            break 'conn Err(anyhow::anyhow!(
                                "announced more than {MAX_ROUTES} routes (a flood); cut off"
                            ));
                        }
                    }
                    Ok(Some(Message::TimeAsk { t1 })) => self.tell_time(t1),
                    Ok(Some(Message::Check(CheckMessage::Ask(ask)))) => {
                        let mut f = Vec::with_capacity(32);
                        let tell = self.prober.answer(&ask, self.peer.ip());
                        protocol::check::encode_tell(&mut f, &tell);
                        if !self.out.send(&f) {
                            debug!("{}: check tell dropped", self.peer);
                        }
                    }
                    Ok(Some(Message::Ping)) => {}
                    Ok(Some(other)) => debug!("{}: ignoring {other:?}", self.peer),
                    Ok(None) => break,
                    Err(e) => break 'conn Err(e.into()),
                }
            }
            let stalled =
                || anyhow::anyhow!("not taking what we send (write failed or timed out); cut off");
            if self.out.is_closed() {
                return Err(stalled());
            }
            match crate::plumbing::read_or_timeout(stream, &mut buf) {
                // The writer shuts the socket down when it gives up.
                Ok(Some(0)) if self.out.is_closed() => return Err(stalled()),
                Ok(Some(0)) => return Ok(()),
                Ok(Some(n)) => match opener.as_mut() {
                    Some(o) => o.open(&buf[..n], |p| dec.feed(p))?,
                    None => dec.feed(&buf[..n]),
                },
                Ok(None) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Answers a time ask: when it arrived (now: it was just read) and when the answer leaves.
    fn tell_time(&self, t1: u64) {
        let t2 = self.hub.now_ns();
        let mut f = Vec::with_capacity(32);
        protocol::encode_time_tell(&mut f, t1, t2, self.hub.now_ns());
        if !self.out.send(&f) {
            debug!("{}: time tell dropped", self.peer);
        }
    }
}

/// Sends a refusal the peer can print (sealed on an encrypted channel); the connection is
/// closed right after, so errors don't matter.
fn reject(stream: &mut TcpStream, reason: &str, channel: Option<&mut Channel>) {
    let mut f = Vec::new();
    protocol::encode_reject(&mut f, reason);
    if let Ok(f) = seal(f, channel) {
        let _ = stream.write_all(&f);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::SystemTime;

    use super::super::hub::unix_ns;
    use super::*;

    /// A comparing tcpcopy is welcomed, its claim on payload capture lasts as long as the
    /// connection, and its time asks are answered on the (skewed) clock intercept reports.
    #[test]
    fn a_comparing_tcpcopy_is_told_the_skewed_time() {
        const SKEW: i64 = -7_000_000_000;
        let hub = Arc::new(Hub::new(Duration::from_secs(60)));
        hub.set_clock_offset(SKEW);
        let stop = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tcpcopy = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let served = {
            let (hub, stop) = (hub.clone(), stop.clone());
            thread::spawn(move || {
                let door = Door {
                    allowed: true,
                    secret: None,
                    prober: Arc::new(Prober::in_queue_mode()),
                };
                serve(stream, peer, door, hub, stop)
            })
        };
        let mut f = Vec::new();
        protocol::encode_hello(&mut f, 0, 1, Some(64));
        let t1 = unix_ns(SystemTime::now());
        protocol::encode_time_ask(&mut f, t1);
        tcpcopy.write_all(&f).unwrap();
        tcpcopy
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let mut dec = Decoder::new();
        let mut buf = [0u8; 1024];
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let n = tcpcopy.read(&mut buf).unwrap();
            assert!(n > 0, "intercept closed: {seen:?}");
            dec.feed(&buf[..n]);
            while let Some(m) = dec.next_message().unwrap() {
                seen.push(format!("{m:?}"));
                if let Message::TimeTell { t1: echo, t2, t3 } = m {
                    let t4 = unix_ns(SystemTime::now());
                    assert_eq!(echo, t1);
                    assert!(t2 <= t3);
                    let ours = |t: u64| t.checked_add_signed(-SKEW).unwrap();
                    assert!(t1 <= ours(t2) && ours(t3) <= t4, "{t1} {t2} {t3} {t4}");
                }
            }
        }
        assert!(seen[0].starts_with("Welcome"), "{seen:?}");
        assert!(seen[1].starts_with("TimeTell"), "{seen:?}");
        assert!(hub.wants_payloads(), "a comparing tcpcopy is connected");
        drop(tcpcopy);
        served.join().unwrap();
        assert!(!hub.wants_payloads(), "its claim ended with it");
    }

    /// A check ask is answered with this host's facts, and the connection goes on.
    #[test]
    fn a_check_ask_is_told_the_mode_and_the_host_facts() {
        let (mut tcpcopy, served) = serve_one(None);
        let mut f = Vec::new();
        protocol::encode_hello(&mut f, 0, 1, None);
        let ask = protocol::check::CheckAsk {
            flags: protocol::check::ASK_OWN_PROBE,
            from: "198.19.0.7:40001".parse().unwrap(),
            to: "127.0.0.1:80".parse().unwrap(),
        };
        protocol::check::encode_ask(&mut f, &ask);
        protocol::encode_time_ask(&mut f, 1);
        tcpcopy.write_all(&f).unwrap();
        tcpcopy.shutdown(std::net::Shutdown::Write).unwrap();
        let mut dec = Decoder::new();
        dec.feed(&rest(tcpcopy));
        let mut seen = Vec::new();
        while let Some(m) = dec.next_message().unwrap() {
            if let Message::Check(CheckMessage::Tell(tell)) = &m {
                assert_eq!(tell.mode, protocol::check::InterceptMode::Queue);
                // On the target, intercept sends no probe of its own.
                assert_eq!(tell.own_probe, protocol::check::OwnProbe::Failed);
                // The interface the main table routes the peer to has an MTU.
                assert!(tell.mtu.is_some_and(|m| m >= 576), "{tell:?}");
            }
            seen.push(
                format!("{m:?}")
                    .split([' ', '('])
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(seen, ["Welcome", "Check", "TimeTell"]);
        served.join().unwrap();
    }

    /// A served connection to a fresh intercept with this secret: the tcpcopy end.
    fn serve_one(secret: Option<&str>) -> (TcpStream, thread::JoinHandle<()>) {
        let hub = Arc::new(Hub::new(Duration::from_secs(60)));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcpcopy = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let door = Door {
            allowed: true,
            secret: secret.map(|s| Psk::derive(s.as_bytes()).unwrap()),
            prober: Arc::new(Prober::in_queue_mode()),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let served = thread::spawn(move || serve(stream, peer, door, hub, stop));
        tcpcopy
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (tcpcopy, served)
    }

    /// Everything the intercept sends until it closes.
    fn rest(mut s: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    }

    /// With the same secret, tcpcopy is welcomed inside the channel and its time asks are
    /// answered; the bytes it sent, replayed to another connection, get the handshake reply and
    /// nothing else.
    #[test]
    fn an_encrypted_tcpcopy_is_welcomed_and_its_replay_gets_only_the_handshake_reply() {
        let (mut tcpcopy, served) = serve_one(Some("s3cret"));
        let psk = Psk::derive(b"s3cret").unwrap();
        let mut hello = Vec::new();
        protocol::encode_hello(&mut hello, 0, 1, None);
        let (welcome, mut dec, mut channel) =
            crate::channel::open(&mut tcpcopy, &psk, &hello, protocol::check_welcome).unwrap();
        welcome.unwrap();
        let mut ask = Vec::new();
        protocol::encode_time_ask(&mut ask, 42);
        let mut sealed = Vec::new();
        channel.sealer.seal(&ask, &mut sealed).unwrap();
        tcpcopy.write_all(&sealed).unwrap();
        let mut buf = [0u8; 4096];
        let told = loop {
            if let Some(m) = dec.next_message().unwrap() {
                if let Message::TimeTell { t1, .. } = m {
                    break t1;
                }
                continue;
            }
            let n = tcpcopy.read(&mut buf).unwrap();
            assert!(n > 0);
            channel.opener.open(&buf[..n], |p| dec.feed(p)).unwrap();
        };
        assert_eq!(told, 42);
        drop(tcpcopy);
        served.join().unwrap();

        // What a real tcpcopy sends, recorded, and replayed.
        let mut recorded = Vec::new();
        let init = protocol::secure::Initiator::start(&psk, &mut recorded).unwrap();
        let (mut first, first_served) = serve_one(Some("s3cret"));
        first.write_all(&recorded).unwrap();
        let mut reply = [0u8; 5 + protocol::secure::HANDSHAKE_LEN];
        first.read_exact(&mut reply).unwrap();
        let mut c = init.finish(&reply[5..]).unwrap();
        c.sealer.seal(&hello, &mut recorded).unwrap();
        first.write_all(&recorded[reply.len() - 5..]).unwrap();
        drop(first);
        first_served.join().unwrap();
        let (mut replay, replay_served) = serve_one(Some("s3cret"));
        replay.write_all(&recorded).unwrap();
        let got = rest(replay);
        replay_served.join().unwrap();
        assert_eq!(
            got.len(),
            reply.len(),
            "the handshake reply, and nothing after"
        );
        assert_ne!(got, reply, "a fresh key");
    }

    /// A wrong secret gets nothing; a secret on one side only gets a refusal naming it.
    #[test]
    fn a_wrong_or_one_sided_secret_is_refused() {
        let (mut tcpcopy, served) = serve_one(Some("right"));
        let mut f = Vec::new();
        let _init = protocol::secure::Initiator::start(&Psk::derive(b"wrong").unwrap(), &mut f);
        tcpcopy.write_all(&f).unwrap();
        assert!(rest(tcpcopy).is_empty(), "nothing for a wrong secret");
        served.join().unwrap();

        for (intercept, tcpcopy_secret, reason) in [
            (Some("right"), None, "requires a secret"),
            (None, Some("right"), "has no secret"),
        ] {
            let (mut tcpcopy, served) = serve_one(intercept);
            let mut f = Vec::new();
            match tcpcopy_secret {
                Some(s) => {
                    let psk = Psk::derive(s.as_bytes()).unwrap();
                    let _ = protocol::secure::Initiator::start(&psk, &mut f).unwrap();
                }
                None => protocol::encode_hello(&mut f, 0, 1, None),
            }
            tcpcopy.write_all(&f).unwrap();
            let mut dec = Decoder::new();
            dec.feed(&rest(tcpcopy));
            match dec.next_message() {
                Ok(Some(Message::Reject { reason: r })) => assert!(r.contains(reason), "{r}"),
                other => panic!("{other:?}"),
            }
            served.join().unwrap();
        }
    }

    /// Frames sent through a sealed writer by several threads at once, while the writer queues
    /// and pings, open on the other side in one unbroken sequence: the sealing follows the order
    /// the bytes enter the stream.
    #[test]
    fn concurrent_senders_share_one_record_sequence() {
        const THREADS: u64 = 4;
        const EACH: u64 = 2_000;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut theirs = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        // A small send buffer, so that the queue and the writer thread take part.
        SockRef::from(&ours).set_send_buffer_size(4096).unwrap();
        let psk = Psk::derive(b"k").unwrap();
        let mut hello = Vec::new();
        let init = protocol::secure::Initiator::start(&psk, &mut hello).unwrap();
        let mut welcome = Vec::new();
        let intercept = protocol::secure::respond(&psk, &hello[5..], &mut welcome).unwrap();
        let mut tcpcopy = init.finish(&welcome[5..]).unwrap();
        let out = Arc::new(ConnOut::new(ours, None, Some(intercept.sealer)));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (out, stop) = (out.clone(), stop.clone());
            thread::spawn(move || out.run_writer(&stop))
        };
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let out = out.clone();
                thread::spawn(move || {
                    for i in 0..EACH {
                        let mut f = Vec::new();
                        protocol::encode_time_tell(&mut f, t, i, 0);
                        assert!(out.send(&f), "nothing is dropped below the cap");
                    }
                })
            })
            .collect();
        theirs
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut dec = Decoder::new();
        let mut next = [0u64; THREADS as usize];
        let mut buf = [0u8; 4096];
        while next.iter().any(|&n| n < EACH) {
            let n = theirs.read(&mut buf).unwrap();
            assert!(n > 0);
            tcpcopy.opener.open(&buf[..n], |p| dec.feed(p)).unwrap();
            while let Some(m) = dec.next_message().unwrap() {
                if let Message::TimeTell { t1, t2, .. } = m {
                    assert_eq!(t2, next[t1 as usize], "each thread's frames in order");
                    next[t1 as usize] += 1;
                }
            }
        }
        senders.into_iter().for_each(|s| s.join().unwrap());
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
