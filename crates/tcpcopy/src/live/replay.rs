//! Offline replay (`-i FILE`): a thread reads the pcap/pcapng file and hands its packets to the
//! worker at their recorded pace (`-a` times faster), through the mailbox; [`Replay`] is what the
//! worker keeps about it: the bytes in flight, when to start, and when the replay is over.
//! Parsing the file is `pcap`'s business, replicating the packets the core's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use pcap::{PcapSource, SourceStats};
use session::{Replicator, Rule};

use super::{Board, Event, Events};
use crate::plumbing::{sleep_unless_stopped, PacketBatch};

/// How long a replay waits for an intercept connection before it starts anyway.
const REPLAY_CONNECT_WAIT: Duration = Duration::from_secs(10);
/// A finished replay stops when its sessions had no traffic for this long and none still works
/// towards the target (the rest wait for clients the recording cut off)...
const REPLAY_IDLE_END: Duration = Duration::from_secs(3);
/// ...or, whatever they wait for, after this long without any traffic.
const REPLAY_STALL_END: Duration = Duration::from_secs(120);
/// Between two passes over the file (`-T`): the last pass's sessions close first.
const PASS_GAP: Duration = Duration::from_secs(1);
/// Pass k over the file (`-T`) moves every client port by (k - 1) × this (within 1024..=65535),
/// so that each pass is new sessions at the target: the same ports and sequence numbers again
/// would be taken for the last pass's segments (or join its sessions in mid-stream).
const PASS_PORT_SHIFT: u32 = 4099;

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
        (path, source, rules): (&Path, PcapSource, &[Rule]),
        pace: Pace,
        tx: Events,
        stop: Arc<AtomicBool>,
        budget: usize,
        board: Arc<Board>,
    ) -> anyhow::Result<()> {
        let reader = FileReader {
            path: path.to_path_buf(),
            rules: rules.to_vec(),
            tx,
            stop,
            queued: self.queued.clone(),
            budget,
            board,
        };
        let go = self.go.clone();
        thread::Builder::new()
            .name("replay".into())
            .spawn(move || {
                crate::plumbing::unprivileged_thread();
                reader.run(source, pace, &go)
            })
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
    /// The file, opened again for each further pass (`-T`).
    path: PathBuf,
    /// Which side of a recorded connection is the client (for `-T`'s port shift).
    rules: Vec<Rule>,
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
        let (mut pass, mut earlier) = (1, SourceStats::default());
        let mut shifted = Vec::new();
        let result = loop {
            let (due, at) = match source.next_packet() {
                None if pass < pace.loops => {
                    let st = source.stats();
                    earlier.packets += st.packets;
                    earlier.skipped += st.skipped;
                    source = match PcapSource::open(&self.path) {
                        Ok(s) => s,
                        Err(e) => break Err(e.to_string()),
                    };
                    pass += 1;
                    pacer.next_pass();
                    info!("replay: pass {pass} of {}", pace.loops);
                    continue;
                }
                None => {
                    let mut st = source.stats();
                    st.packets += earlier.packets;
                    st.skipped += earlier.skipped;
                    break Ok(st);
                }
                Some(Err(e)) => break Err(e.to_string()),
                Some(Ok(p)) => {
                    let offset = pacer.due(p.timestamp);
                    let stamp = p.timestamp.as_nanos() as u64;
                    if pass > 1 {
                        shifted.clear();
                        shifted.extend_from_slice(p.data);
                        shift_client_port(&mut shifted, &self.rules, (pass - 1) * PASS_PORT_SHIFT);
                        batch.push_stamped(&shifted, stamp);
                    } else {
                        batch.push_stamped(p.data, stamp);
                    }
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
                "replay: {} pause(s) longer than {} shortened ({:.1} s of recording skipped)",
                pacer.shortened,
                if pace.skip_gaps.is_some() {
                    "-I"
                } else {
                    "--max-gap"
                },
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

/// How a recording is replayed: `accelerate` times faster, pauses longer than `max_gap` cut to it,
/// pauses longer than `skip_gaps` skipped, `loops` passes over the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub accelerate: f64,
    pub max_gap: Option<Duration>,
    /// C TCPCopy's `-I`: a pause longer than this is not waited for at all.
    pub skip_gaps: Option<Duration>,
    /// C TCPCopy's `-T`: passes over the file, each after the last one's end (1: once).
    pub loops: u32,
}

impl Pace {
    /// The recorded pace, once.
    pub fn recorded() -> Pace {
        Pace {
            accelerate: 1.0,
            max_gap: None,
            skip_gaps: None,
            loops: 1,
        }
    }
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
    /// Added to the recorded times of the current pass (`-T`), so that it follows the last one.
    shift: Duration,
    new_pass: bool,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            first: None,
            prev: Duration::ZERO,
            removed: Duration::ZERO,
            shortened: 0,
            shift: Duration::ZERO,
            new_pass: false,
        }
    }

    /// The next packet starts another pass over the file: it is due [`PASS_GAP`] after the last.
    fn next_pass(&mut self) {
        self.new_pass = true;
    }

    /// The offset from the replay's start at which a packet recorded at `at` is due.
    fn due(&mut self, at: Duration) -> Duration {
        let starts_pass = std::mem::take(&mut self.new_pass);
        if starts_pass {
            // Pauses between passes are the replay's own: neither cut nor counted.
            self.shift = (self.prev + PASS_GAP).saturating_sub(at);
        }
        let at = at + self.shift;
        let first = *self.first.get_or_insert(at);
        // A packet recorded before the previous one (clocks step) goes at once.
        let at = at.max(self.prev);
        let gap = at.saturating_sub(self.prev);
        let keep = match (self.pace.skip_gaps, self.pace.max_gap) {
            (Some(skip), _) if gap > skip => Some(Duration::ZERO),
            (_, Some(max)) if gap > max => Some(max),
            _ => None,
        };
        if let Some(keep) = keep {
            if self.prev >= first && at != first && !starts_pass {
                self.removed += gap - keep;
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

/// Moves the client's port of a recorded TCP packet by `shift` (within 1024..=65535): the
/// source port of a packet to a rule's online port, the destination port of one from it (an
/// online answer, compared). The TCP checksum is updated to match (RFC 1624). Anything else is
/// left as it is.
fn shift_client_port(packet: &mut [u8], rules: &[Rule], shift: u32) {
    let Ok(p) = wire::TcpPacket::parse(packet) else {
        return;
    };
    let (src, dst) = (p.src(), p.dst());
    let ip_len = if p.is_ipv6() {
        40
    } else {
        usize::from(packet[0] & 0x0f) * 4
    };
    let at = if rules.iter().any(|r| r.matches(dst)) {
        ip_len
    } else if rules.iter().any(|r| r.matches(src)) {
        ip_len + 2
    } else {
        return;
    };
    let old = u16::from_be_bytes([packet[at], packet[at + 1]]);
    let base = u32::from(old).max(1024) - 1024;
    let new = (1024 + (base + shift) % (65536 - 1024)) as u16;
    packet[at..at + 2].copy_from_slice(&new.to_be_bytes());
    let sum = ip_len + 16;
    let check = u16::from_be_bytes([packet[sum], packet[sum + 1]]);
    // HC' = ~(~HC + ~m + m'), in ones' complement.
    let mut acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    packet[sum..sum + 2].copy_from_slice(&(!(acc as u16)).to_be_bytes());
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
            max_gap: Some(s(2.0)),
            ..Pace::recorded()
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
            ..Pace::recorded()
        });
        let due: Vec<f64> = [10.0, 14.0, 410.0, 409.0]
            .iter()
            .map(|&t| p.due(s(t)).as_secs_f64())
            .collect();
        // A packet recorded before the previous one goes at once, not back in time.
        assert_eq!(due, [0.0, 1.0, 100.0, 100.0]);
        assert_eq!(p.shortened, 0);
    }

    #[test]
    fn pauses_longer_than_skip_gaps_are_skipped_whole() {
        let mut p = Pacer::new(Pace {
            skip_gaps: Some(s(0.5)),
            max_gap: Some(s(2.0)),
            ..Pace::recorded()
        });
        let due: Vec<f64> = [10.0, 10.25, 70.25, 71.0]
            .iter()
            .map(|&t| p.due(s(t)).as_secs_f64())
            .collect();
        // -I 500: the minute and the 0.75 s pause go; the quarter second stays.
        assert_eq!(due, [0.0, 0.25, 0.25, 0.25]);
        assert_eq!(p.shortened, 2);
    }

    #[test]
    fn each_further_pass_follows_the_last_after_a_second() {
        let mut p = Pacer::new(Pace {
            skip_gaps: Some(s(0.1)),
            loops: 2,
            ..Pace::recorded()
        });
        let mut due = vec![p.due(s(5.0)), p.due(s(5.05))];
        p.next_pass();
        due.extend([p.due(s(5.0)), p.due(s(5.05))]);
        let due: Vec<f64> = due
            .iter()
            .map(|d| (d.as_secs_f64() * 1000.0).round())
            .collect();
        // The pause between passes is the replay's own: not skipped by -I.
        assert_eq!(due, [0.0, 50.0, 1050.0, 1100.0]);
        assert_eq!(p.shortened, 0);
    }

    #[test]
    fn a_further_pass_moves_the_client_port_both_ways_and_keeps_the_checksum_right() {
        let client: std::net::SocketAddr = "198.18.0.10:40000".parse().unwrap();
        let server: std::net::SocketAddr = "198.18.0.20:80".parse().unwrap();
        let rules = [Rule {
            online_addr: None,
            online_port: 80,
            target: "198.18.0.30:80".parse().unwrap(),
        }];
        // The stored checksum equals one computed over the segment with its field zeroed.
        let check = |pkt: &[u8]| {
            let p = wire::TcpPacket::parse(pkt).unwrap();
            let mut segment = pkt[20..].to_vec();
            let stored = u16::from_be_bytes([segment[16], segment[17]]);
            segment[16..18].copy_from_slice(&[0, 0]);
            stored.wrapping_sub(wire::tcp_checksum(p.src_addr(), p.dst_addr(), &segment))
        };
        for (from, to) in [(client, server), (server, client)] {
            let mut pkt = session::testing::segment(from, to, 7, 9, wire::Flags::ACK, b"GET /");
            assert_eq!(check(&pkt), 0, "the test packet is valid");
            shift_client_port(&mut pkt, &rules, 4099);
            let p = wire::TcpPacket::parse(&pkt).unwrap();
            let moved = if from == client { p.src() } else { p.dst() };
            assert_eq!(moved.port(), 40000 + 4099);
            assert_eq!(check(&pkt), 0, "checksum still right");
        }
    }
}
