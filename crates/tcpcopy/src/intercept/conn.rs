//! One tcpcopy connection, intercept's side: the opening exchange, then a thread reading the
//! connection's route announcements into the [`Hub`] and answering its time asks, and a writer
//! ([`ConnOut`]) through which the capture threads stream responses to it. The routing itself is
//! `protocol::routing`'s.
//!
//! A tcpcopy that compares answers is welcomed only once the sources capture whole payloads (or
//! after half a second, should one not switch), so that the answers to what it replicates are
//! captured whole.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use socket2::SockRef;
use tracing::{debug, info, warn};

use protocol::routing::Owner;
use protocol::{Decoder, Hello, Message};

use super::hub::{Hub, PayloadClaim};
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
}

impl ConnOut {
    pub(super) fn new(sock: TcpStream, compare_bytes: Option<u16>) -> ConnOut {
        ConnOut {
            sock,
            state: Mutex::default(),
            ready: Condvar::new(),
            compare_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// False when the frames were dropped (queue full, or the connection is gone).
    pub(super) fn send(&self, frames: &[u8]) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        let mut rest = frames;
        if st.queue.is_empty() && !st.writing {
            while !rest.is_empty() {
                match SockRef::from(&self.sock).send_with_flags(rest, libc::MSG_DONTWAIT) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Full, or broken: the writer finds out which.
                    Err(_) => break,
                }
            }
            if rest.is_empty() {
                return true;
            }
        } else if st.queue.len() + rest.len() > CONN_QUEUE_BYTES {
            return false;
        }
        st.queue.extend_from_slice(rest);
        drop(st);
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
                        protocol::encode_ping(&mut st.queue);
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

/// One tcpcopy connection, on its own thread: handshake, then read its routes while a writer
/// thread streams responses.
pub(super) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    allowed: bool,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
) {
    if let Err(e) = serve_conn(stream, peer, allowed, &hub, &stop) {
        warn!("tcpcopy {peer}: {e:#}");
    }
}

fn serve_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    allowed: bool,
    hub: &Hub,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (hello, mut dec, _claim) = handshake(&mut stream, peer, allowed, hub)?;
    let out = Arc::new(ConnOut::new(stream.try_clone()?, hello.compare_bytes));
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
    match hello.compare_bytes {
        Some(n) => {
            info!("tcpcopy {peer} connected (connection {id}), comparing answers ({n} first bytes)")
        }
        None => info!("tcpcopy {peer} connected (connection {id})"),
    }
    let conn = Conn {
        peer,
        id,
        hub,
        out: &out,
    };
    let end = conn.read(&mut stream, &mut dec, stop);
    hub.disconnect(id);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    info!("tcpcopy {peer} disconnected (connection {id})");
    end
}

/// The opening exchange: refuses a host not allowed, or a hello it cannot answer; else
/// welcomes, a comparing tcpcopy once payloads are captured (its claim on them comes back).
/// Bytes after the hello stay in the decoder.
fn handshake<'h>(
    stream: &mut TcpStream,
    peer: SocketAddr,
    allowed: bool,
    hub: &'h Hub,
) -> anyhow::Result<(Hello, Decoder, Option<PayloadClaim<'h>>)> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    if !allowed {
        let reason = format!("host {} is not in this intercept's -x list", peer.ip());
        reject(stream, &reason);
        anyhow::bail!("refused: not in the -x allow list");
    }
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut dec = Decoder::new();
    let hello = match read_first_message(stream, &mut dec, protocol::answer_hello)? {
        Ok(hello) => hello,
        Err(reason) => {
            reject(stream, &reason);
            anyhow::bail!("{reason}");
        }
    };
    let claim = hello.compare_bytes.map(|_| hub.claim_payloads());
    if claim.is_some() && !hub.await_payload_capture(SWITCH_WAIT) {
        warn!("tcpcopy {peer}: a response source still captures headers only; the first answers may be cut short");
    }
    let mut f = Vec::new();
    protocol::encode_welcome(&mut f);
    stream.write_all(&f)?;
    Ok((hello, dec, claim))
}

/// One welcomed connection, as its reading thread sees it.
struct Conn<'a> {
    peer: SocketAddr,
    id: u64,
    hub: &'a Hub,
    out: &'a ConnOut,
}

impl Conn<'_> {
    /// Reads the connection's route announcements into the hub and answers its time asks,
    /// until it closes, breaks or the run stops.
    fn read(
        &self,
        stream: &mut TcpStream,
        dec: &mut Decoder,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        'conn: loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            loop {
                match dec.next_message() {
                    Ok(Some(Message::Routes(routes))) => self.hub.announce(self.id, routes),
                    Ok(Some(Message::TimeAsk { t1 })) => self.tell_time(t1),
                    Ok(Some(Message::Ping)) => {}
                    Ok(Some(other)) => debug!("{}: ignoring {other:?}", self.peer),
                    Ok(None) => break,
                    Err(e) => break 'conn Err(e.into()),
                }
            }
            match crate::plumbing::read_or_timeout(stream, &mut buf) {
                Ok(Some(0)) => return Ok(()),
                Ok(Some(n)) => dec.feed(&buf[..n]),
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

/// Sends a refusal the peer can print; the connection is closed right after, so errors don't matter.
fn reject(stream: &mut TcpStream, reason: &str) {
    let mut f = Vec::new();
    protocol::encode_reject(&mut f, reason);
    let _ = stream.write_all(&f);
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
            thread::spawn(move || serve(stream, peer, true, hub, stop))
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
}
