//! A capture in a namespace that counts the arriving packets of two kinds, for the checks of a
//! run: [`crate::scenario::Sniffer`] (target packets at the client) and [`crate::flood::SynCounter`]
//! (flood SYNs at the target) are this with their own sorting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context;
use netio::capture::{RingCapture, RingConfig};

/// Which of the two counts an arriving packet (IP header first) adds to.
pub type Sort = dyn Fn(&[u8]) -> (bool, bool) + Send;

/// Counts, on its own thread inside a namespace, the packets arriving there (never those the
/// namespace sends) in two counts.
pub struct PacketCounter {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 2]>,
    what: &'static str,
    handle: Option<thread::JoinHandle<anyhow::Result<()>>>,
}

impl PacketCounter {
    /// Starts counting in `ns`, once the capture is open; `what` names it in errors.
    pub fn start(ns: &str, what: &'static str, sort: Box<Sort>) -> anyhow::Result<PacketCounter> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let (s, c) = (stop.clone(), counts.clone());
        let ns = ns.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = thread::spawn(move || -> anyhow::Result<()> {
            netio::netns::enter(&ns)?;
            // Every packet, any protocol; what the namespace sends itself is left out in the
            // kernel (and skipped below too).
            let cfg = RingConfig {
                filter: Vec::new(),
                ignore_outgoing: true,
                ..RingConfig::default()
            };
            let mut ring = RingCapture::open(&cfg)?;
            let _ = ready_tx.send(());
            while !s.load(Ordering::Relaxed) {
                ring.poll_batch(Duration::from_millis(50), |p| {
                    if p.pkttype == libc::PACKET_OUTGOING {
                        return;
                    }
                    let (first, second) = sort(p.data);
                    if first {
                        c[0].fetch_add(1, Ordering::Relaxed);
                    }
                    if second {
                        c[1].fetch_add(1, Ordering::Relaxed);
                    }
                })?;
            }
            Ok(())
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .with_context(|| format!("{what} capture did not start"))?;
        Ok(PacketCounter {
            stop,
            counts,
            what,
            handle: Some(handle),
        })
    }

    /// Stops and returns the two counts.
    pub fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("{} thread panicked", self.what))??;
        }
        Ok((
            self.counts[0].load(Ordering::Relaxed),
            self.counts[1].load(Ordering::Relaxed),
        ))
    }
}

impl Drop for PacketCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
