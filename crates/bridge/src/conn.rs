//! One connection as the bridge keeps it: the core's sequence space (its ISN, the bytes taken in
//! order, those the kernel accepted, its FIN), the target's (our synthesized ISN, the bytes read,
//! the end of stream), the queue of bytes for the kernel, and the window announced.
//!
//! It takes the core's segments ([`Conn::segment`]) and says what follows (bytes to write, a
//! shutdown, an acknowledgment due); it issues no command and emits no packet itself.

use std::collections::VecDeque;
use std::time::Instant;

use wire::{Flags, SegmentRepr, Seq, TcpPacket};

use crate::{ConnId, Key};

#[derive(Debug)]
pub(crate) struct Conn {
    /// (the session's endpoint as the core sends from it, the target).
    pub(crate) key: Key,
    /// The core's ISN (its SYN's sequence number).
    pub(crate) client_isn: Seq,
    /// Our ISN as the target's.
    pub(crate) isn: Seq,
    /// Window-scale shift we announce; `None` when the core offered none.
    pub(crate) wscale: Option<u8>,
    /// The queue's bound (the window, before scaling).
    buffer: usize,
    pub(crate) open: bool,
    pub(crate) started: Instant,
    pub(crate) last_activity: Instant,
    /// Bytes taken from the core in order and not yet accepted by the kernel.
    pub(crate) queue: VecDeque<u8>,
    /// Core bytes taken in order; of those, accepted by the kernel.
    pub(crate) received: u64,
    pub(crate) written: u64,
    /// The core's FIN arrived (after every byte taken); the writing side was shut down.
    pub(crate) core_fin: bool,
    pub(crate) shutdown: bool,
    /// Bytes read from the socket; its end of stream.
    pub(crate) read: u64,
    pub(crate) eof: bool,
}

/// What one core segment calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    /// The queue was empty and now holds bytes: the driver writes.
    pub(crate) write: bool,
    /// The core's FIN with nothing left to write: shut down now.
    pub(crate) shutdown: bool,
    /// Acknowledge now (a repeated or out-of-order segment, or the FIN).
    pub(crate) ack: bool,
}

impl Conn {
    pub(crate) fn new(
        key: Key,
        syn: &TcpPacket<'_>,
        id: ConnId,
        now: Instant,
        buffer: usize,
    ) -> Conn {
        // The smallest shift that lets the window field say the whole buffer.
        let shift = (0..14u8).find(|&s| buffer >> s <= 0xffff).unwrap_or(14);
        Conn {
            key,
            client_isn: syn.seq(),
            // Spread over the sequence space; deterministic, so tests can name it.
            isn: Seq((id.0 as u32).wrapping_mul(0x9e37_79b1)),
            wscale: syn.window_scale().map(|_| shift),
            buffer: if syn.window_scale().is_some() {
                buffer
            } else {
                buffer.min(0xffff)
            },
            open: false,
            started: now,
            last_activity: now,
            queue: VecDeque::new(),
            received: 0,
            written: 0,
            core_fin: false,
            shutdown: false,
            read: 0,
            eof: false,
        }
    }

    /// A data, FIN or bare ACK segment from the core on the open connection.
    pub(crate) fn segment(&mut self, p: &TcpPacket<'_>) -> Step {
        let mut step = Step::default();
        let flags = p.flags();
        let payload = p.payload();
        let start = p.seq().diff(self.client_isn + 1);
        let end = start + payload.len() as i64;
        let next = self.received as i64;
        if !payload.is_empty() {
            if start > next {
                // Ahead of a hole: dropped, and the duplicate acknowledgment tells the core.
                step.ack = true;
                return step;
            }
            if end <= next {
                // Already taken: the core retransmitted (our acknowledgment is only pending).
                step.ack = true;
            } else {
                let skip = (next - start) as usize;
                let room = self.buffer.saturating_sub(self.queue.len());
                let take = (payload.len() - skip).min(room);
                step.write = self.queue.is_empty() && take > 0;
                self.queue.extend(&payload[skip..skip + take]);
                self.received += take as u64;
            }
        }
        if flags.fin() {
            if end == self.received as i64 && !self.core_fin {
                self.core_fin = true;
                if self.queue.is_empty() {
                    self.shutdown = true;
                    step.shutdown = true;
                    step.ack = true;
                }
            } else if self.core_fin {
                // A repeated FIN: acknowledged (again, once shut down).
                step.ack = true;
            }
        }
        step
    }

    /// Our next sequence number: after the bytes read, and after our FIN once sent.
    pub(crate) fn seq(&self) -> Seq {
        self.isn + 1 + self.read as u32 + u32::from(self.eof)
    }

    /// What we acknowledge: the bytes the kernel accepted, and the core's FIN once shut down.
    fn ack(&self) -> Seq {
        self.client_isn + 1 + self.written as u32 + u32::from(self.shutdown)
    }

    /// The window field: the queue's bound counted from the acknowledgment (bytes queued but not
    /// accepted are not acknowledged yet, so they are inside it), scaled.
    pub(crate) fn window(&self) -> u16 {
        let shift = self.wscale.unwrap_or(0);
        (self.buffer >> shift).min(0xffff) as u16
    }

    /// A SYN-ACK's window is never scaled.
    pub(crate) fn syn_window(&self) -> u16 {
        self.buffer.min(0xffff) as u16
    }

    /// A segment from the target to the core.
    pub(crate) fn repr(&self, seq: Seq, flags: Flags, window: u16) -> SegmentRepr {
        SegmentRepr {
            src: self.key.1,
            dst: self.key.0,
            seq,
            ack: if flags.ack() { self.ack() } else { Seq(0) },
            flags,
            window,
            mss: None,
            window_scale: None,
            ttl: 64,
        }
    }
}
