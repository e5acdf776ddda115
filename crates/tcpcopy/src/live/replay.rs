//! Offline replay (`-i FILE`): a thread reads the pcap/pcapng file and hands its packets to the
//! worker at their recorded pace (`-a` times faster), through the mailbox; [`Replay`] is what the
//! worker keeps about it: the bytes in flight, when to start, and when the replay is over.
//! Parsing the file is `pcap`'s business, replicating the packets the core's.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use pcap::{PcapSource, SourceStats};
use session::Replicator;

use super::{Board, Event, Events};
use crate::plumbing::{sleep_unless_stopped, PacketBatch};

/// How long a replay waits for an intercept connection before it starts anyway.
const REPLAY_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// A finished replay stops when its sessions had no traffic for this long and none still works
/// towards the target (the rest wait for clients the recording cut off)...
const REPLAY_IDLE_END: Duration = Duration::from_secs(3);
/// ...or, whatever they wait for, after this long without any traffic.
const REPLAY_STALL_END: Duration = Duration::from_secs(120);

/// The worker's side of a replay (for a live capture it stays idle).
pub(super) struct Replay {
    /// Replayed bytes waiting in the mailbox, budgeted so that a fast file does not flood memory.
    pub queued: Arc<AtomicUsize>,
    /// A replay waits for its first intercept connection, so that its first sessions are answered.
    pub go: Arc<AtomicBool>,
    /// The file ended (or broke).
    pub done: Option<Result<SourceStats, String>>,
    /// Packets moved (sent and answered), and when that count last changed.
    last_progress: (u64, Instant),
}

impl Replay {
    pub fn new() -> Replay {
        Replay {
            queued: Arc::new(AtomicUsize::new(0)),
            go: Arc::new(AtomicBool::new(false)),
            done: None,
            last_progress: (0, Instant::now()),
        }
    }

    /// Starts the thread that reads the file.
    pub fn start(
        &self,
        source: PcapSource,
        accelerate: f64,
        tx: Events,
        stop: Arc<AtomicBool>,
        budget: usize,
        board: Arc<Board>,
    ) -> anyhow::Result<()> {
        let reader = FileReader {
            tx,
            stop,
            queued: self.queued.clone(),
            budget,
            board,
        };
        let go = self.go.clone();
        thread::Builder::new()
            .name("replay".into())
            .spawn(move || reader.run(source, accelerate, &go))
            .context("cannot start the replay thread")?;
        Ok(())
    }

    /// Lets a replay that saw no intercept connect for a while start anyway.
    pub fn start_anyway(&self, running: Duration, is_replay: bool) {
        if running >= REPLAY_CONNECT_WAIT && !self.go.swap(true, Ordering::Relaxed) && is_replay {
            warn!("no intercept connected after {REPLAY_CONNECT_WAIT:?}: replaying anyway");
        }
    }

    /// Replayed packets the worker took from the mailbox.
    #[inline]
    pub fn took(&self, batch: &PacketBatch) {
        self.queued.fetch_sub(batch.bytes(), Ordering::Relaxed);
    }

    /// The file ended: logs how.
    pub fn ended(&mut self, result: Result<SourceStats, String>) {
        match &result {
            Ok(st) => info!(
                "replay: end of file after {} packets ({} not IP)",
                st.packets, st.skipped
            ),
            Err(e) => warn!("replay stopped: {e}"),
        }
        self.done = Some(result);
    }

    /// A replay ends once its file is read and every session finished, or nothing moved for a
    /// while (sessions the recording cut off never finish).
    pub fn finished(&mut self, core: &Replicator) -> bool {
        if self.done.is_none() {
            return false;
        }
        let st = core.stats();
        let moved = st.packets_sent + st.responses;
        if moved != self.last_progress.0 {
            self.last_progress = (moved, Instant::now());
        }
        let idle = self.last_progress.1.elapsed();
        st.sessions_active == 0
            || (idle >= REPLAY_IDLE_END && core.busy_sessions() == 0)
            || idle >= REPLAY_STALL_END
    }
}

/// The replay thread's end of the mailbox.
struct FileReader {
    tx: Events,
    stop: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
    budget: usize,
    /// Where the replay's progress is shown.
    board: Arc<Board>,
}

impl FileReader {
    /// Hands a batch over, holding back while too many captured bytes wait (as live capture
    /// does); false once the run stops.
    fn send(&self, batch: &mut PacketBatch) -> bool {
        if batch.is_empty() {
            return true;
        }
        while self.queued.load(Ordering::Relaxed) > self.budget && !self.stopped() {
            thread::sleep(Duration::from_micros(200));
        }
        self.queued.fetch_add(batch.bytes(), Ordering::Relaxed);
        self.tx.push(Event::Captured(std::mem::take(batch)));
        !self.stopped()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads the file, handing packets over at their recorded pace (`accelerate` times faster),
    /// once `go` is set; ends with [`Event::InputDone`].
    fn run(self, mut source: PcapSource, accelerate: f64, go: &AtomicBool) {
        while !go.load(Ordering::Relaxed) {
            if self.stopped() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let mut first: Option<Duration> = None;
        let mut batch = PacketBatch::default();
        let mut last_log = Instant::now();
        let mut read = 0u64;
        let result = loop {
            let (due, at) = match source.next_packet() {
                None => break Ok(source.stats()),
                Some(Err(e)) => break Err(e.to_string()),
                Some(Ok(p)) => {
                    let t0 = *first.get_or_insert(p.timestamp);
                    let offset = p.timestamp.saturating_sub(t0).div_f64(accelerate);
                    batch.push_stamped(p.data, p.timestamp.as_nanos() as u64);
                    (started + offset, p.timestamp)
                }
            };
            // The packet just added is due at `due`: hand over what came before it first.
            if due > Instant::now() + Duration::from_millis(1) {
                let (head, last) = batch.split_last();
                batch = head;
                if !self.send(&mut batch) {
                    return;
                }
                let gap = due.saturating_duration_since(Instant::now());
                if gap > Duration::from_secs(60) {
                    info!(
                        "replay: the recording pauses for {:.0} s here",
                        gap.as_secs_f64()
                    );
                }
                sleep_unless_stopped(gap, &self.stop);
                if self.stopped() {
                    return;
                }
                batch = last;
            } else if batch.len() >= 256 && !self.send(&mut batch) {
                return;
            }
            read += 1;
            if read.is_multiple_of(256) {
                let st = source.stats();
                self.board.set_progress(st.bytes_read, st.file_len);
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                last_log = Instant::now();
                log_progress(&source, started, at.saturating_sub(first.unwrap_or(at)));
            }
        };
        let st = source.stats();
        self.board.set_progress(st.bytes_read, st.file_len);
        if self.send(&mut batch) {
            if let Ok(st) = &result {
                info!(
                    "replay: {} packets read in {:.2} s",
                    st.packets,
                    started.elapsed().as_secs_f64()
                );
            }
            self.tx.push(Event::InputDone(result));
        }
    }
}

/// The replay's progress line: `recorded` is how much of the recording was played.
fn log_progress(source: &PcapSource, started: Instant, recorded: Duration) {
    let st = source.stats();
    info!(
        "replay: {} packets, {:.0}% of the file, {:.1} s of recording in {:.1} s",
        st.packets,
        st.bytes_read as f64 * 100.0 / st.file_len.max(1) as f64,
        recorded.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
