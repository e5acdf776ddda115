//! One tcpcopy connection, intercept's side: the opening exchange, then a thread reading the
//! connection's route announcements into the [`Hub`], and a writer ([`ConnOut`]) through which
//! the capture threads stream responses to it. The routing itself is `protocol::routing`'s.

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

use super::hub::Hub;
use crate::plumbing::read_first_message;

/// Bytes waiting for one slow tcpcopy connection before further frames are dropped (and counted).
const CONN_QUEUE_BYTES: usize = 32 << 20;

/// The write side of one tcpcopy connection. The capture thread writes without blocking while
/// nothing waits; what the socket does not take queues for the connection's writer thread, which
/// may block, and which also sends the idle pings. Frames stay in order: the capture thread writes
/// directly only while the queue is empty and the writer is not writing.
pub(super) struct ConnOut {
    sock: TcpStream,
    state: Mutex<OutState>,
    ready: Condvar,
}

#[derive(Default)]
struct OutState {
    queue: Vec<u8>,
    writing: bool,
    closed: bool,
}

impl ConnOut {
    fn new(sock: TcpStream) -> ConnOut {
        ConnOut {
            sock,
            state: Mutex::default(),
            ready: Condvar::new(),
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
    fn run_writer(&self, stop: &AtomicBool) {
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
    let (hello, mut dec) = handshake(&mut stream, peer, allowed)?;
    let out = Arc::new(ConnOut::new(stream.try_clone()?));
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
    let id = hub.connect(out, owner);
    info!("tcpcopy {peer} connected (connection {id})");
    let end = read_routes(&mut stream, &mut dec, peer, id, hub, stop);
    hub.disconnect(id);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    info!("tcpcopy {peer} disconnected (connection {id})");
    end
}

/// The opening exchange: refuses a host not allowed, or a hello it cannot answer; else
/// welcomes. Bytes after the hello stay in the decoder.
fn handshake(
    stream: &mut TcpStream,
    peer: SocketAddr,
    allowed: bool,
) -> anyhow::Result<(Hello, Decoder)> {
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
    let mut f = Vec::new();
    protocol::encode_welcome(&mut f);
    stream.write_all(&f)?;
    Ok((hello, dec))
}

/// Reads connection `id`'s route announcements into the hub until it closes, breaks or the run
/// stops.
fn read_routes(
    stream: &mut TcpStream,
    dec: &mut Decoder,
    peer: SocketAddr,
    id: u64,
    hub: &Hub,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    'conn: loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        loop {
            match dec.next_message() {
                Ok(Some(Message::Routes(routes))) => hub.announce(id, routes),
                Ok(Some(Message::Ping)) => {}
                Ok(Some(other)) => debug!("{peer}: ignoring {other:?}"),
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

/// Sends a refusal the peer can print; the connection is closed right after, so errors don't matter.
fn reject(stream: &mut TcpStream, reason: &str) {
    let mut f = Vec::new();
    protocol::encode_reject(&mut f, reason);
    let _ = stream.write_all(&f);
}
