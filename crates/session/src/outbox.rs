//! Packets on their way to the target, between the session that built them and the driver.
//!
//! Owns one reused byte buffer holding the packets back to back, their ends, and the count of
//! packets ever emitted. It keeps their order (the order the sessions emitted them) and hands them
//! out whole; it decides nothing about what is sent and never drops a packet.

use std::net::SocketAddr;
use std::time::Instant;

use wire::{SegmentRepr, Seq};

/// A request went to a target in full for the first time (recorded with `Config::trace_sends`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentMark {
    /// The client connection, as online.
    pub client: SocketAddr,
    pub online: SocketAddr,
    /// Which replicated session of it (`Config::copies`; one past the last: the baseline).
    pub copy: u16,
    /// The client sequence number just past the request's last byte.
    pub end: Seq,
    pub at: Instant,
}

/// Packets for the target, built back to back in one buffer that is reused after each drain.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Packets emitted since the replicator started.
    packets: u64,
    /// Requests sent in full since the last drain (`Config::trace_sends`).
    sends: Vec<SentMark>,
}

impl Outbox {
    #[inline]
    pub(crate) fn emit(&mut self, repr: &SegmentRepr, payload: &[u8]) {
        repr.emit(payload, &mut self.buf);
        self.ends.push(self.buf.len());
        self.packets += 1;
    }

    #[inline]
    pub(crate) fn sent(&mut self, mark: SentMark) {
        self.sends.push(mark);
    }

    /// Hands every recorded sending to `f`, then forgets them.
    pub(crate) fn drain_sends(&mut self, mut f: impl FnMut(&SentMark)) {
        self.sends.iter().for_each(&mut f);
        self.sends.clear();
    }

    /// Hands every packet to `f` in order, then empties the outbox.
    pub(crate) fn drain_all<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Iterator<Item = &[u8]>) -> R,
    ) -> R {
        let buf = &self.buf;
        let mut start = 0;
        let mut packets = self.ends.iter().map(|&end| {
            let p = &buf[start..end];
            start = end;
            p
        });
        let r = f(&mut packets);
        self.buf.clear();
        self.ends.clear();
        r
    }

    /// Packets waiting to be drained.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Packets emitted since the replicator started.
    #[inline]
    pub(crate) fn emitted(&self) -> u64 {
        self.packets
    }
}
