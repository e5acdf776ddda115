//! Plumbing both drivers share: packet batches and a mailbox passed between threads, the capture
//! threads' priority, socket reads that wake up for shutdown, the opening exchange's read, and
//! the SIGINT/SIGTERM flag. No protocol logic lives here.

use std::collections::VecDeque;
use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::{Decoder, Message};

/// Packets moved between threads in one allocation: `data[ends[i-1]..ends[i]]` is packet `i`.
#[derive(Debug, Default)]
pub struct PacketBatch {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Each packet's capture time (ns since the Unix epoch), when pushed with one.
    stamps: Vec<u64>,
}

impl PacketBatch {
    pub fn push(&mut self, p: &[u8]) {
        self.data.extend_from_slice(p);
        self.ends.push(self.data.len());
    }
    /// Adds a packet with its capture time (every packet of a batch has one, or none does).
    pub fn push_stamped(&mut self, p: &[u8], at_ns: u64) {
        self.push(p);
        self.stamps.push(at_ns);
    }
    /// The packets with their capture times (0 for a batch pushed without).
    pub fn iter_stamped(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let stamps = self.stamps.iter().copied().chain(std::iter::repeat(0));
        stamps.zip(self.iter())
    }
    /// Splits off the last packet: (all but the last, the last).
    pub fn split_last(mut self) -> (PacketBatch, PacketBatch) {
        let mut last = PacketBatch::default();
        if let Some(end) = self.ends.pop() {
            let start = self.ends.last().copied().unwrap_or(0);
            match self.stamps.pop() {
                Some(at) => last.push_stamped(&self.data[start..end], at),
                None => last.push(&self.data[start..end]),
            }
            self.data.truncate(start);
        }
        (self, last)
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.stamps.clear();
    }
    /// Packet bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let p = &self.data[start..end];
            start = end;
            p
        })
    }
}

/// Nice value of capture threads: ahead of ordinary work on a busy host.
const CAPTURE_NICE: i32 = -10;

/// Puts the calling thread, which empties a capture ring, ahead of ordinary work (best effort:
/// without privilege it keeps the default priority).
pub fn raise_capture_priority() {
    if let Err(e) = netio::sched::set_thread_nice(CAPTURE_NICE) {
        tracing::debug!("capture thread priority unchanged: {e}");
    }
}

pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
    }
}

/// The background process's link to its waiting parent, and the line it prints when ready.
static DAEMON: std::sync::Mutex<Option<(netio::daemon::Daemon, String)>> =
    std::sync::Mutex::new(None);

/// `-d`: goes on in the background, as C TCPCopy's programs do. The parent waits until the
/// program is ready ([`notify_ready`]) and exits 0, or shows the error of a start that failed and
/// exits with its status. Without `-l`, the log goes to `/var/log/PROGRAM.log` (standard error
/// is gone): `log` is set to it. Call before any thread starts.
pub fn daemonize(program: &str, log: &mut Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let path = log.get_or_insert_with(|| format!("/var/log/{program}.log").into());
    let line = format!(
        "{program}: running in the background as pid {{pid}}, log in {}",
        path.display()
    );
    let daemon = netio::daemon::daemonize().context("cannot go to the background")?;
    let line = line.replace("{pid}", &std::process::id().to_string());
    *DAEMON.lock().unwrap_or_else(|e| e.into_inner()) = Some((daemon, line));
    Ok(())
}

/// Reduces the calling thread's capabilities to `keep` (see [`netio::privilege`]); a failure is
/// logged, never fatal.
pub fn keep_capabilities(keep: &[netio::privilege::Capability], scope: netio::privilege::Scope) {
    if let Err(e) = netio::privilege::keep_only(keep, scope) {
        tracing::warn!("could not drop capabilities: {e}");
    }
}

/// For a thread that never needs a capability: drops them all as it starts.
pub fn unprivileged_thread() {
    keep_capabilities(&[], netio::privilege::Scope::Thread);
}

/// Tells systemd the service is up (`Type=notify`): `READY=1` to `$NOTIFY_SOCKET` when set (a
/// path, or an abstract name after `@`). Without it, or when it cannot be reached, nothing
/// happens (logged at debug).
///
/// Under `-d`, also releases the waiting parent (see [`daemonize`]).
pub fn notify_ready() {
    let daemon = DAEMON.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((daemon, line)) = daemon {
        if let Err(e) = daemon.ready(&line) {
            tracing::warn!("could not tell the parent process that the start went well: {e}");
        }
    }
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let bytes = target.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(&target))?,
        };
        UnixDatagram::unbound()?.send_to_addr(b"READY=1\n", &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::debug!("systemd notification not sent: {e}");
    }
}

/// A flag that SIGINT and SIGTERM set.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install a signal handler")?;
    }
    Ok(stop)
}

/// Reads until the peer's first message is complete (the opening exchange) and hands it to `f`.
/// Bytes that arrived after it stay in `dec`.
pub fn read_first_message<T>(
    s: &mut TcpStream,
    dec: &mut Decoder,
    f: impl FnOnce(&Message<'_>) -> T,
) -> anyhow::Result<T> {
    let mut buf = [0u8; 4096];
    let started = std::time::Instant::now();
    loop {
        if let Some(m) = dec.next_message()? {
            return Ok(f(&m));
        }
        // A peer that trickles or floods instead of opening is cut off.
        use crate::channel::{MAX_OPENING, OPENING_DEADLINE};
        anyhow::ensure!(
            dec.pending() <= MAX_OPENING,
            "first message longer than {MAX_OPENING} bytes (another protocol?)"
        );
        anyhow::ensure!(
            started.elapsed() <= OPENING_DEADLINE,
            "opening exchange not done within {OPENING_DEADLINE:?}"
        );
        let n = s
            .read(&mut buf)
            .context("no answer during the opening exchange")?;
        anyhow::ensure!(
            n > 0,
            "the peer closed the connection during the opening exchange"
        );
        dec.feed(&buf[..n]);
    }
}

/// A read on a socket with a read timeout: `Ok(None)` when the timeout passed (or a signal
/// interrupted it), so that the caller can check for shutdown and read again.
pub fn read_or_timeout(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    match s.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if matches!(e.kind(), WouldBlock | TimedOut | Interrupted) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A queue from any number of threads to one consumer that parks on a condition variable. Unlike
/// a channel that spins and yields before it blocks, a waiting consumer costs nothing, and a
/// producer wakes it (one futex call) only when it is actually waiting.
pub struct Mailbox<T> {
    inner: Mutex<MailboxInner<T>>,
    ready: Condvar,
    /// For a consumer that waits in `mio::Poll` instead: woken on every push.
    waker: Option<mio::Waker>,
}

struct MailboxInner<T> {
    queue: VecDeque<T>,
    waiting: bool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(MailboxInner {
                queue: VecDeque::new(),
                waiting: false,
            }),
            ready: Condvar::new(),
            waker: None,
        }
    }
}

impl<T> Mailbox<T> {
    /// A mailbox whose consumer waits in a `mio::Poll` that `waker` belongs to.
    pub fn with_waker(waker: mio::Waker) -> Self {
        Self {
            waker: Some(waker),
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, MailboxInner<T>> {
        // Every critical section is a push or a drain: a panic cannot leave it half done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` unless `len` items already wait (`None`: no limit); false when it did not.
    pub fn push_bounded(&self, item: T, limit: Option<usize>) -> bool {
        let mut inner = self.lock();
        if limit.is_some_and(|l| inner.queue.len() >= l) {
            return false;
        }
        inner.queue.push_back(item);
        let wake = std::mem::take(&mut inner.waiting);
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        if let Some(w) = &self.waker {
            // Fails only when the poll is gone, and then nobody is left to wake.
            let _ = w.wake();
        }
        true
    }

    /// Moves every queued item to `out` without waiting; returns how many.
    pub fn drain(&self, out: &mut Vec<T>) -> usize {
        let mut inner = self.lock();
        let n = inner.queue.len();
        out.extend(inner.queue.drain(..));
        n
    }

    pub fn push(&self, item: T) {
        self.push_bounded(item, None);
    }

    /// Moves every queued item to `out`, waiting up to `timeout` for the first one; returns how
    /// many were moved (0: the timeout passed).
    pub fn drain_wait(&self, timeout: Duration, out: &mut Vec<T>) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        let mut inner = self.lock();
        while inner.queue.is_empty() {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                inner.waiting = false;
                return 0;
            }
            inner.waiting = true;
            inner = self
                .ready
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        inner.waiting = false;
        let n = inner.queue.len();
        out.extend(inner.queue.drain(..));
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_hands_over_everything_in_order_and_times_out_when_empty() {
        let mb = Arc::new(Mailbox::<u32>::default());
        let mut out = Vec::new();
        let t0 = Instant::now();
        assert_eq!(mb.drain_wait(Duration::from_millis(30), &mut out), 0);
        assert!(t0.elapsed() >= Duration::from_millis(30), "it waited");
        let producer = {
            let mb = mb.clone();
            thread::spawn(move || {
                for i in 0..10_000 {
                    mb.push(i);
                }
            })
        };
        while out.len() < 10_000 {
            mb.drain_wait(Duration::from_secs(5), &mut out);
        }
        producer.join().unwrap();
        assert!(out.iter().copied().eq(0..10_000), "every item, in order");
        assert!(!mb.push_bounded(1, Some(0)), "a full mailbox refuses");
        assert!(mb.push_bounded(1, Some(1)));
        assert!(!mb.push_bounded(2, Some(1)));
        assert_eq!(mb.drain(&mut out), 1);
    }

    #[test]
    fn mailbox_wakes_a_waiting_consumer_at_once() {
        let mb = Arc::new(Mailbox::<u8>::default());
        let waiter = {
            let mb = mb.clone();
            thread::spawn(move || {
                let t0 = Instant::now();
                let mut out = Vec::new();
                mb.drain_wait(Duration::from_secs(10), &mut out);
                (out, t0.elapsed())
            })
        };
        thread::sleep(Duration::from_millis(50));
        mb.push(7);
        let (out, waited) = waiter.join().unwrap();
        assert_eq!(out, [7]);
        assert!(
            waited < Duration::from_secs(5),
            "woken, not timed out: {waited:?}"
        );
    }

    #[test]
    fn packet_batch_keeps_packets_apart_and_clears() {
        let mut b = PacketBatch::default();
        b.push(b"one");
        b.push(b"three");
        assert_eq!(b.iter().collect::<Vec<_>>(), [&b"one"[..], &b"three"[..]]);
        assert_eq!(b.bytes(), 8);
        let (head, last) = b.split_last();
        assert_eq!(last.iter().collect::<Vec<_>>(), [&b"three"[..]]);
        let mut head = head;
        assert_eq!(head.len(), 1);
        head.clear();
        assert!(head.is_empty() && head.bytes() == 0);
    }
}
