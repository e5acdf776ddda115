//! The live `tcpcopy` driver: reads client packets (a capture ring, or a replayed file), runs the
//! session core ([`session::Replicator`]) over them and the target's responses that intercept
//! reports, sends the core's packets to the target and announces its routes to intercept.
//!
//! One thread does all of that (`worker`): it waits in one epoll (mio) for its capture ring,
//! every intercept connection and a waker, and on each wake reads what is ready, runs the core
//! as one batch, drives its timers, sends and reports. Helper threads only connect to intercepts
//! (`peers`) and read a replayed file (`replay`), handing results over in a [`Mailbox`] that
//! wakes the poll. The core stays single-threaded and deterministic.
//!
//! With `--threads N`, N such threads each own a ring of one PACKET_FANOUT group (the kernel
//! spreads client connections over them by flow hash), with their own sessions, sender, fake
//! client addresses and intercept connections; [`run`] starts and joins them.
//!
//! Intercept connections reconnect with backoff forever: replication resumes by itself when an
//! intercept comes back, and the routes of every live session are announced again.
//!
//! This module drives: it holds no protocol logic (that is in `session` and `protocol`) and makes
//! no syscall of its own beyond sockets and threads (`netio` has the capture and sending).

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::Context;
use mio::Token;

use pcap::SourceStats;
use session::Stats;

use crate::plumbing::{Mailbox, PacketBatch};

mod capture;
mod comparing;
mod logins;
mod mirror;
mod peers;
mod replay;
mod send;
mod stream;
mod worker;

pub use mirror::{MirrorSpec, Tunnel};
pub use replay::Pace;
pub use send::Sender;
pub use stream::describe as describe_stream;

use crate::config::LiveConfig;

/// mio tokens of a worker's poll: the capture ring, the mailbox waker, and intercept connection
/// `i` as `peers::PEER + i`.
const RING: Token = Token(0);
const WAKE: Token = Token(1);

/// What the helper threads hand the worker.
type Events = Arc<Mailbox<Event>>;

enum Event {
    /// Replayed packets (live capture is read by the worker itself).
    Captured(PacketBatch),
    /// The replayed file ended (or broke: the one-line reason).
    InputDone(Result<SourceStats, String>),
    /// A connected intercept, after its hello/welcome exchange.
    InterceptUp {
        idx: usize,
        stream: TcpStream,
        dec: peers::Opened,
        down: Arc<AtomicBool>,
    },
}

/// What a run ended with: the statistics, and for a replayed file that broke, why (everything
/// readable before the damage was replayed).
pub struct RunReport {
    pub stats: Stats,
    /// Requests of sessions still live at the end that the target had not acknowledged.
    pub in_flight: u64,
    /// What the comparison found (`--compare`).
    pub compare: Option<compare::Summary>,
    pub input_error: Option<String>,
    /// Stream mode: how the connections to the target went.
    pub stream: Option<bridge::Stats>,
}

/// Runs until `stop` is set (or `--duration` passes, or a replayed file is done); returns the final
/// statistics.
pub fn run(cfg: LiveConfig, stop: Arc<AtomicBool>, board: Arc<Board>) -> anyhow::Result<RunReport> {
    let count = usize::from(cfg.threads.max(1));
    let hook = cfg.protocol.as_ref().map(|(p, logins)| p.hook(logins));
    if count == 1 {
        let report = worker::run(&cfg, stop, &Member::single(board, hook.clone()));
        log_summary(hook.as_ref());
        return report;
    }
    // Each thread replicates the client connections the kernel's flow hash gives its ring: its
    // own sessions, fake client addresses (every count-th), sender and intercept connections.
    let group = (std::process::id() & 0xffff) as u16;
    let cfg = Arc::new(cfg);
    let joined = Arc::new(std::sync::Barrier::new(count));
    let member = |index| Member {
        index,
        count,
        fanout: Some(group),
        board: board.clone(),
        joined: joined.clone(),
        hook: hook.clone(),
    };
    let mut handles = Vec::new();
    for index in 1..count {
        let (cfg, stop, member) = (cfg.clone(), stop.clone(), member(index));
        handles.push(
            thread::Builder::new()
                .name(format!("replicate-{index}"))
                .spawn(move || {
                    // One thread ending (an error, even a panic) ends the run.
                    let _end = StopOnDrop(stop.clone());
                    worker::run(&cfg, stop.clone(), &member)
                })
                .context("cannot start a capture thread")?,
        );
    }
    let first = worker::run(&cfg, stop.clone(), &member(0));
    stop.store(true, Ordering::Relaxed);
    // Every thread is joined before an error is returned, so that none outlives the run.
    let mut report = first;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| anyhow::anyhow!("a capture thread panicked"))
            .and_then(|r| r);
        report = match (report, r) {
            (Ok(mut a), Ok(b)) => {
                a.stats += b.stats;
                a.in_flight += b.in_flight;
                if let (Some(s), Some(o)) = (&mut a.stream, &b.stream) {
                    s.add(o);
                }
                match (&mut a.compare, b.compare) {
                    (Some(s), Some(o)) => s.merge(o),
                    (none, o) => *none = none.take().or(o),
                }
                Ok(a)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    log_summary(hook.as_ref());
    report
}

/// The protocol hook's line for the end of the run, over every thread's sessions.
fn log_summary(hook: Option<&dialect::Hook>) {
    if let Some(line) = hook.and_then(dialect::Hook::summary) {
        tracing::info!("{line}");
    }
}

/// Sets the stop flag when dropped, also while unwinding from a panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a capture thread last published: its counters, and its comparison's.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub stats: Stats,
    /// Requests of its live sessions the target has not acknowledged yet.
    pub in_flight: u64,
    pub compare: Option<compare::Live>,
    /// Latency so far, online and at the target (`--compare`).
    pub latency: Option<(compare::report::Dist, compare::report::Dist)>,
    /// Stream mode: how its connections to the target went.
    pub stream: Option<bridge::Stats>,
}

/// Every capture thread's latest [`Published`] (each thread updates its own about once a
/// second), and a replay's progress: what the statistics line, the metrics endpoint and the
/// status line read while the run goes on.
#[derive(Debug, Default)]
pub struct Board {
    threads: Mutex<Vec<Published>>,
    /// A replay's progress: bytes of the file read, and its size.
    progress: Mutex<Option<(u64, u64)>>,
}

impl Board {
    /// Everything published so far, summed over the capture threads.
    pub fn sum(&self) -> Published {
        let all = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = Published::default();
        for p in all.iter() {
            sum.stats += p.stats;
            sum.in_flight += p.in_flight;
            if let Some(st) = &p.stream {
                sum.stream.get_or_insert_with(Default::default).add(st);
            }
            if let Some(live) = p.compare {
                let s = sum.compare.get_or_insert_with(Default::default);
                s.compared += live.compared;
                s.equal += live.equal;
                s.different += live.different;
                s.noise += live.noise;
                s.open += live.open;
            }
            if let Some((online, target)) = &p.latency {
                sum.latency = Some(match sum.latency.take() {
                    Some((o, t)) => (merge_dists(&o, online), merge_dists(&t, target)),
                    None => (online.clone(), target.clone()),
                });
            }
        }
        sum
    }

    /// A replay's progress: bytes read of the file, and its size.
    pub fn progress(&self) -> Option<(u64, u64)> {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_progress(&self, read: u64, size: u64) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some((read, size));
    }

    fn publish(&self, index: usize, p: Published) {
        let mut all = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() <= index {
            all.resize_with(index + 1, Default::default);
        }
        all[index] = p;
    }
}

fn merge_dists(a: &compare::report::Dist, b: &compare::report::Dist) -> compare::report::Dist {
    let mut h = compare::Histogram::from_dist(a);
    h.merge(&compare::Histogram::from_dist(b));
    h.to_dist()
}

/// Which of the capture threads this is, and what the threads share.
struct Member {
    index: usize,
    count: usize,
    /// The PACKET_FANOUT group the rings share.
    fanout: Option<u16>,
    /// Each thread's latest counters, for one statistics line over all of them.
    board: Arc<Board>,
    /// Every thread's ring joins the fanout group before any takes a packet.
    joined: Arc<std::sync::Barrier>,
    /// The protocol hook (`--protocol`), one for all the threads.
    hook: Option<dialect::Hook>,
}

impl Member {
    fn single(board: Arc<Board>, hook: Option<dialect::Hook>) -> Member {
        Member {
            index: 0,
            count: 1,
            fanout: None,
            board,
            joined: Arc::new(std::sync::Barrier::new(1)),
            hook,
        }
    }

    /// Publishes what this thread counted.
    fn publish(&self, p: Published) {
        self.board.publish(self.index, p);
    }
}
