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
        pace: Pace,
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
            .spawn(move || reader.run(source, pace, &go))
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

    /// Reads the file, handing packets over at their recorded pace (`accelerate` times faster,
    /// gaps over `max_gap` shortened to it), once `go` is set; ends with [`Event::InputDone`].
    /// The first packet is read before the wait: a file damaged (or empty) from its start says
    /// so at once, not after the wait for an intercept.
    fn run(self, mut source: PcapSource, pace: Pace, go: &AtomicBool) {
        let mut pacer = Pacer::new(pace);
        let mut batch = PacketBatch::default();
        let first = match source.next_packet() {
            None => Some(Ok(source.stats())),
            Some(Err(e)) => Some(Err(e.to_string())),
            Some(Ok(p)) => {
                pacer.due(p.timestamp);
                batch.push_stamped(p.data, p.timestamp.as_nanos() as u64);
                None
            }
        };
        if let Some(result) = first {
            self.tx.push(Event::InputDone(result));
            return;
        }
        while !go.load(Ordering::Relaxed) {
            if self.stopped() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut read = 1u64;
        let result = loop {
            let (due, at) = match source.next_packet() {
                None => break Ok(source.stats()),
                Some(Err(e)) => break Err(e.to_string()),
                Some(Ok(p)) => {
                    let offset = pacer.due(p.timestamp);
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
                log_progress(&source, started, pacer.played(at));
            }
        };
        let st = source.stats();
        self.board.set_progress(st.bytes_read, st.file_len);
        if pacer.shortened > 0 {
            info!(
                "replay: {} pause(s) longer than --max-gap shortened to it ({:.1} s of recording skipped)",
                pacer.shortened,
                pacer.removed.as_secs_f64()
            );
        }
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

/// How a recording is replayed: `accelerate` times faster, pauses longer than `max_gap` cut to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub accelerate: f64,
    pub max_gap: Option<Duration>,
}

/// When each recorded packet is due, from the replay's start: its time since the first packet,
/// less what was cut from longer pauses, over `accelerate`.
#[derive(Debug)]
struct Pacer {
    pace: Pace,
    first: Option<Duration>,
    prev: Duration,
    /// Recording time cut from pauses so far, and how many pauses were cut.
    removed: Duration,
    shortened: u64,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            first: None,
            prev: Duration::ZERO,
            removed: Duration::ZERO,
            shortened: 0,
        }
    }

    /// The offset from the replay's start at which a packet recorded at `at` is due.
    fn due(&mut self, at: Duration) -> Duration {
        let first = *self.first.get_or_insert(at);
        // A packet recorded before the previous one (clocks step) goes at once.
        let at = at.max(self.prev);
        if let Some(max) = self.pace.max_gap {
            let gap = at.saturating_sub(self.prev);
            if self.prev >= first && gap > max && at != first {
                self.removed += gap - max;
                self.shortened += 1;
            }
        }
        self.prev = at;
        self.played(at).div_f64(self.pace.accelerate)
    }

    /// How much of the recording up to `at` is played (pauses cut).
    fn played(&self, at: Duration) -> Duration {
        at.saturating_sub(self.first.unwrap_or(at))
            .saturating_sub(self.removed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn pauses_longer_than_the_limit_are_cut_to_it_and_counted() {
        let mut p = Pacer::new(Pace {
            accelerate: 1.0,
            max_gap: Some(s(2.0)),
        });
        let recorded = [100.0, 101.0, 1900.0, 1900.5, 1904.5];
        let due: Vec<f64> = recorded
            .iter()
            .map(|&t| p.due(s(t)).as_secs_f64())
            .collect();
        // The half hour after the second packet is played as 2 s; so is the 4 s pause.
        assert_eq!(due, [0.0, 1.0, 3.0, 3.5, 5.5]);
        assert_eq!(p.shortened, 2);
        assert_eq!(p.removed, s(1797.0 + 2.0));
    }

    #[test]
    fn without_a_limit_the_recorded_pace_holds_faster_by_the_acceleration() {
        let mut p = Pacer::new(Pace {
            accelerate: 4.0,
            max_gap: None,
        });
        let due: Vec<f64> = [10.0, 14.0, 410.0, 409.0]
            .iter()
            .map(|&t| p.due(s(t)).as_secs_f64())
            .collect();
        // A packet recorded before the previous one goes at once, not back in time.
        assert_eq!(due, [0.0, 1.0, 100.0, 100.0]);
        assert_eq!(p.shortened, 0);
    }
}
