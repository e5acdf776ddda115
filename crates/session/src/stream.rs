//! One session's client bytes, as captured: reassembly, request boundaries and the buffer they
//! wait in until the target acknowledges them.
//!
//! Owns the stream (offsets counted from the client's ISN + 1 as `u64`, so streams longer than
//! 4 GiB work), the out-of-order captures kept ahead of a hole and their bounds, the request
//! boundaries (a *request* is a run of client bytes sent with the same acknowledgment number: when
//! the acknowledgment moves, the online server answered in between), the client's FIN and reset. It does
//! not send, read the target's packets or time anything: the session decides when a boundary is
//! released and tells the stream what the target acknowledged.
//!
//! Holes the client never resends (the capture or the mirror lost a segment the online server
//! received) are skipped ([`ClientStream::skip_hole`]) when the session decides so: the bytes
//! after the hole go on from the next request, and the stream's offsets, which are the
//! target's, stay continuous. Client sequence numbers map to offsets through `rcv_nxt_seq` and
//! `skipped`: a client byte at client offset `c` (from its ISN + 1) is the target's offset
//! `c - skipped`. A protocol hook's edits ([`ClientStream::splice`], see [`crate::dialect`])
//! move the target's offsets too: `edited` counts the bytes they added (net), and each edit is
//! recorded (the offset map) so that offsets before it still translate back
//! ([`ClientStream::client_seq`]).

use std::collections::{BTreeMap, VecDeque};

use wire::{Seq, TcpPacket};

use crate::stats::Stats;

/// Out-of-order captured segments kept per session before further ones are dropped (the client's
/// own retransmission refills the hole).
const MAX_OOO_SEGMENTS: usize = 1024;
/// How far ahead of the next expected byte a captured segment may start and still be kept.
const MAX_OOO_DISTANCE: u64 = 4 << 20;
/// The largest client stream buffer kept for a new session, in bytes.
const MAX_SPARE_DATA: usize = 16 << 10;
/// The most request boundaries a kept queue has room for; larger ones shrink to this.
const MAX_SPARE_BOUNDS: usize = 64;
/// Acknowledged bytes at the front of the buffer are compacted away past this much.
const COMPACT_AT: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct ClientStream {
    /// Stream offset of the first byte in `data` (everything before it the target acknowledged).
    data_start: u64,
    data: Vec<u8>,
    /// Bytes of `data` already acknowledged and waiting to be compacted away.
    data_skip: usize,
    /// Next stream offset expected from the client, and its sequence number.
    rcv_nxt: u64,
    rcv_nxt_seq: Seq,
    /// Client bytes skipped so far (holes, and the rest of a request a hole was in): the client
    /// offset of `rcv_nxt` is `rcv_nxt + skipped`.
    skipped: u64,
    /// After a hole in the middle of a request: the acknowledgment number of that request, whose
    /// further bytes are dropped until the client's data acknowledges more (a new request).
    discard: Option<Seq>,
    /// The furthest client offset the online server acknowledged (seen in a capture or mirror
    /// that has the server's packets): a hole before it is never resent.
    online_acked: u64,
    /// Out-of-order segments, by client offset: payload, acknowledgment number, FIN.
    ooo: BTreeMap<u64, (Vec<u8>, Option<Seq>, bool)>,
    /// Payload bytes held in `ooo`.
    ooo_bytes: usize,
    /// Acknowledgment number of the client's last data segment: its change starts a new request.
    last_ack_tag: Option<Seq>,
    /// Whether bytes arrived since the last request boundary (an open request).
    open_request: bool,
    /// Request boundaries not yet released to the target (offsets where a new request starts, or
    /// the client's FIN).
    pending_bounds: VecDeque<u64>,
    /// Request boundaries not yet fully acknowledged by the target.
    unacked_bounds: VecDeque<u64>,
    /// Offset of the client's FIN, once captured.
    client_fin: Option<u64>,
    /// The client reset its connection.
    reset: bool,
    /// Requests counted online in this stream.
    pub(crate) requests: u32,
    /// Its requests and bytes count in the statistics (the baseline's do not: they are the
    /// same requests once more).
    pub(crate) counted: bool,
    /// A hole was skipped: the target does not get all of this session's bytes.
    pub(crate) hurt: bool,
    /// The offset map: one record per length-changing edit of a protocol hook
    /// ([`crate::dialect`]), oldest first, to translate offsets back to the client's.
    edits: Vec<Splice>,
    /// Bytes those edits added to the stream, net (inserted less removed): the client offset of
    /// `rcv_nxt` is `rcv_nxt + skipped - edited`.
    edited: i64,
}

/// A length-changing edit: `removed` bytes at `at` became `inserted` bytes.
#[derive(Debug, Clone, Copy)]
struct Splice {
    at: u64,
    removed: u64,
    inserted: u64,
}

/// What a captured segment changed beyond the stream itself, for the session to act on.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Accepted {
    /// A request boundary was queued while none was pending: a wait timed before (for a closing
    /// session's last answer) says nothing about this new request.
    pub(crate) first_bound: bool,
    /// The client's first data acknowledged more than the handshake: the online server spoke
    /// first, and the first request waits for the target's greeting.
    pub(crate) greeted: bool,
}

impl ClientStream {
    /// An empty stream whose first byte has sequence number `isn + 1`, in `buffers` kept from an
    /// ended session.
    #[inline]
    pub(crate) fn new(isn: Seq, buffers: Buffers) -> ClientStream {
        ClientStream {
            data_start: 0,
            data: buffers.data,
            data_skip: 0,
            rcv_nxt: 0,
            rcv_nxt_seq: isn + 1,
            skipped: 0,
            discard: None,
            online_acked: 0,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            last_ack_tag: None,
            open_request: false,
            pending_bounds: buffers.pending_bounds,
            unacked_bounds: buffers.unacked_bounds,
            client_fin: None,
            reset: false,
            requests: 0,
            counted: true,
            hurt: false,
            edits: Vec::new(),
            edited: 0,
        }
    }

    /// Next stream offset expected from the client: every byte before it was captured.
    #[inline]
    pub(crate) fn rcv_nxt(&self) -> u64 {
        self.rcv_nxt
    }

    /// The first offset still in the buffer (everything before it the target acknowledged).
    #[inline]
    pub(crate) fn buffered_from(&self) -> u64 {
        self.data_start
    }

    /// The client's sequence number of stream offset `off` (after the last skipped hole;
    /// bytes a protocol hook inserted map to where they were inserted; past [`Self::rcv_nxt`]:
    /// a FIN's acknowledgment).
    #[inline]
    pub(crate) fn client_seq(&self, off: u64) -> Seq {
        let past = off.saturating_sub(self.rcv_nxt) as u32;
        let back = if self.edits.is_empty() {
            self.rcv_nxt - off.min(self.rcv_nxt)
        } else {
            self.client_offset(self.rcv_nxt) - self.client_offset(off.min(self.rcv_nxt))
        };
        self.rcv_nxt_seq - back as u32 + past
    }

    /// Offset of the client's FIN, once captured.
    #[inline]
    pub(crate) fn fin(&self) -> Option<u64> {
        self.client_fin
    }

    /// Whether the client reset its connection.
    #[inline]
    pub(crate) fn reset(&self) -> bool {
        self.reset
    }

    /// The client reset its connection: returns whether that is news.
    #[inline]
    pub(crate) fn mark_reset(&mut self) -> bool {
        !std::mem::replace(&mut self.reset, true)
    }

    /// The acknowledgment number of the client's last data.
    #[inline]
    pub(crate) fn last_ack(&self) -> Option<Seq> {
        self.last_ack_tag
    }

    /// Whether captured bytes wait behind a hole the capture missed.
    #[inline]
    pub(crate) fn has_hole(&self) -> bool {
        !self.ooo.is_empty()
    }

    /// Client bytes held for the target.
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.data.len() - self.data_skip + self.ooo_bytes
    }

    /// The bytes at stream offsets `from..to` (not yet acknowledged, already captured).
    #[inline]
    pub(crate) fn bytes(&self, from: u64, to: u64) -> &[u8] {
        let start = self.data_skip + (from - self.data_start) as usize;
        &self.data[start..start + (to - from) as usize]
    }

    /// Takes a captured client segment into the stream (reassembling out-of-order captures).
    #[inline]
    pub(crate) fn accept(
        &mut self,
        p: &TcpPacket<'_>,
        ack_tag: Option<Seq>,
        stats: &mut Stats,
    ) -> Accepted {
        let mut accepted = Accepted::default();
        let next = self.client_nxt();
        let rel = p.seq().diff(self.rcv_nxt_seq);
        let off = next as i64 + rel;
        if off < 0 {
            stats.duplicate_segments += 1;
            return accepted;
        }
        let off = off as u64;
        let payload = p.payload();
        let fin = p.flags().fin();
        if payload.is_empty() && !fin {
            // A pure acknowledgment of the online server's bytes. The first one (the handshake's)
            // is remembered: a first request acknowledging more answers a server's greeting.
            if next == 0 && self.last_ack_tag.is_none() {
                self.last_ack_tag = ack_tag;
            }
            return accepted;
        }
        if off > next {
            // Keep a bounded window ahead of the hole; the client's retransmission fills the rest.
            if self.ooo.len() < MAX_OOO_SEGMENTS
                && off - next <= MAX_OOO_DISTANCE
                && !self.ooo.contains_key(&off)
            {
                self.ooo_bytes += payload.len();
                self.ooo.insert(off, (payload.to_vec(), ack_tag, fin));
            }
            return accepted;
        }
        let end = off + payload.len() as u64;
        if end <= next && !(fin && end == next && self.client_fin.is_none()) {
            stats.duplicate_segments += 1;
            return accepted;
        }
        self.append(off, payload, ack_tag, fin, stats, &mut accepted);
        self.drain_ooo(stats, &mut accepted);
        accepted
    }

    /// Appends the out-of-order segments the stream now reaches.
    fn drain_ooo(&mut self, stats: &mut Stats, accepted: &mut Accepted) {
        loop {
            let next = self.client_nxt();
            let Some(entry) = self.ooo.first_entry() else {
                break;
            };
            let off = *entry.key();
            if off > next {
                break;
            }
            let (data, tag, fin) = entry.remove();
            self.ooo_bytes -= data.len();
            if off + data.len() as u64 > self.client_nxt() || fin {
                self.append(off, &data, tag, fin, stats, accepted);
            }
        }
    }

    /// Client offset (from the client's ISN + 1) of the next byte expected.
    #[inline]
    pub(crate) fn client_nxt(&self) -> u64 {
        (self.rcv_nxt as i64 + self.skipped as i64 - self.edited) as u64
    }

    /// The online server acknowledged client bytes up to sequence number `ack` (a packet of the
    /// server's that the capture or the mirror saw). Returns whether that passes a hole: bytes
    /// the client will never send again are missing.
    pub(crate) fn online_acked(&mut self, ack: Seq) -> bool {
        let rel = ack.diff(self.rcv_nxt_seq);
        let off = self.client_nxt() as i64 + rel;
        // An acknowledgment far ahead of anything captured belongs to another connection.
        if rel <= MAX_OOO_DISTANCE as i64 && off > self.online_acked as i64 {
            self.online_acked = off as u64;
        }
        self.hole_acked()
    }

    /// The client's offset (as [`Self::client_offset`] counts: the stream's before the edits)
    /// of client sequence number `ack` as the online server acknowledged it; `None` for one far
    /// from anything captured (another connection's).
    pub(crate) fn online_offset(&self, ack: Seq) -> Option<u64> {
        let rel = ack.diff(self.rcv_nxt_seq);
        let off = self.rcv_nxt as i64 - self.edited + rel;
        if rel > MAX_OOO_DISTANCE as i64 || off < 0 {
            return None;
        }
        Some(off as u64)
    }

    /// Whether bytes wait behind a hole the online server acknowledged already.
    #[inline]
    pub(crate) fn hole_acked(&self) -> bool {
        self.has_hole() && self.online_acked > self.client_nxt()
    }

    /// Skips the first hole: the bytes after it go on as if the client had sent them right
    /// after the bytes before it. When the first segment after the hole acknowledges as much
    /// of the online server's bytes as the last one before it, the hole is in the middle of a
    /// request: the rest of that request is dropped too, up to the client's next data that
    /// acknowledges more (the next request). Counts the hole, and the session's first one.
    /// Returns whether there was a hole to skip.
    pub(crate) fn skip_hole(&mut self, stats: &mut Stats) -> bool {
        let Some((&after, &(_, tag, _))) = self.ooo.first_key_value() else {
            return false;
        };
        let gap = after - self.client_nxt();
        self.skipped += gap;
        self.rcv_nxt_seq += gap as u32;
        if self.counted {
            stats.holes_skipped += 1;
            if !std::mem::replace(&mut self.hurt, true) {
                stats.sessions_hurt += 1;
            }
        }
        if tag.is_some() && tag == self.last_ack_tag {
            self.discard = tag;
        }
        let mut accepted = Accepted::default();
        self.drain_ooo(stats, &mut accepted);
        true
    }

    #[inline]
    fn append(
        &mut self,
        off: u64,
        payload: &[u8],
        ack_tag: Option<Seq>,
        fin: bool,
        stats: &mut Stats,
        accepted: &mut Accepted,
    ) {
        let skip = (self.client_nxt() - off) as usize;
        let new = payload.get(skip..).unwrap_or_default();
        if !new.is_empty() && self.discard.is_some() {
            if ack_tag.is_none() || ack_tag == self.discard {
                // The rest of a request a hole was in: dropped, and the offsets stay continuous.
                self.skipped += new.len() as u64;
                self.rcv_nxt_seq += new.len() as u32;
                if fin && self.client_fin.is_none() {
                    self.client_fin = Some(self.rcv_nxt);
                    if self.rcv_nxt > 0 {
                        self.push_bound(self.rcv_nxt, accepted);
                    }
                }
                return;
            }
            self.discard = None;
        }
        if !new.is_empty() {
            if self.client_fin.is_some() {
                return; // bytes after the FIN: a confused capture, never valid TCP
            }
            let advanced =
                matches!((self.last_ack_tag, ack_tag), (Some(prev), Some(cur)) if cur > prev);
            if advanced || !self.open_request {
                if self.rcv_nxt > 0 {
                    self.push_bound(self.rcv_nxt, accepted);
                    self.unacked_bounds.push_back(self.rcv_nxt);
                } else if advanced {
                    // The online server spoke first: the first request waits for the target's
                    // greeting like any request waits for the previous answer. (Or, after a
                    // skipped hole, the lost first request was answered: wait all the same, the
                    // server may have greeted, but do not take it for a greeting server.)
                    self.push_bound(0, accepted);
                    accepted.greeted = self.skipped == 0;
                }
                if self.counted {
                    stats.requests_online += 1;
                }
                self.requests += 1;
                self.open_request = true;
            }
            if ack_tag.is_some() {
                self.last_ack_tag = ack_tag;
            }
            self.data.extend_from_slice(new);
            self.rcv_nxt += new.len() as u64;
            self.rcv_nxt_seq += new.len() as u32;
            if self.counted {
                stats.client_bytes += new.len() as u64;
            }
        }
        if fin && self.client_fin.is_none() {
            self.client_fin = Some(self.rcv_nxt);
            if self.rcv_nxt > 0 {
                self.push_bound(self.rcv_nxt, accepted);
            }
        }
    }

    /// Adds a request boundary to release later.
    #[inline]
    fn push_bound(&mut self, at: u64, accepted: &mut Accepted) {
        if self.pending_bounds.is_empty() {
            accepted.first_bound = true;
        }
        self.pending_bounds.push_back(at);
    }

    /// The next request boundary not yet released to the target.
    #[inline]
    pub(crate) fn next_bound(&self) -> Option<u64> {
        self.pending_bounds.front().copied()
    }

    /// Releases the next request boundary: the request after it may go to the target.
    #[inline]
    pub(crate) fn release_bound(&mut self) {
        self.pending_bounds.pop_front();
    }

    /// Whether every request boundary captured was released.
    #[inline]
    pub(crate) fn all_released(&self) -> bool {
        self.pending_bounds.is_empty()
    }

    /// Where sending must stop for now: the start of the next request not yet released.
    #[inline]
    pub(crate) fn send_limit(&self) -> u64 {
        self.next_bound().unwrap_or(self.rcv_nxt).min(self.rcv_nxt)
    }

    /// The target acknowledged every client byte before `acked` (at most what was sent): they
    /// leave the buffer.
    #[inline]
    pub(crate) fn release(&mut self, acked: u64) {
        let n = (acked - self.data_start) as usize;
        self.data_skip += n;
        self.data_start = acked;
        if self.data_skip > COMPACT_AT && self.data_skip * 2 > self.data.len() {
            self.data.drain(..self.data_skip);
            self.data_skip = 0;
        }
    }

    /// The target acknowledged everything before `acked`: returns how many more requests it now
    /// has in full.
    #[inline]
    pub(crate) fn requests_acked(&mut self, acked: u64) -> u64 {
        let mut requests = 0;
        while self.unacked_bounds.front().is_some_and(|&b| b <= acked) {
            self.unacked_bounds.pop_front();
            requests += 1;
        }
        requests
    }

    /// Closes the open request when the target acknowledged all of it (`acked` is the first byte
    /// it has not): returns whether it did.
    #[inline]
    pub(crate) fn finish_request(&mut self, acked: u64) -> bool {
        if self.open_request && acked >= self.rcv_nxt {
            self.open_request = false;
            return true;
        }
        false
    }

    /// Replaces the `remove` bytes at `at` (captured, not yet acknowledged) with `insert`: later
    /// bytes, request boundaries and the FIN move by the difference, and
    /// the offset map records it (see [`crate::dialect`]). A boundary at `at` stays (the
    /// inserted bytes open its request); boundaries within the removed bytes move to the end of
    /// the inserted ones (kept, so that the requests they count are still counted).
    pub(crate) fn splice(&mut self, at: u64, remove: u64, insert: &[u8]) {
        debug_assert!(at >= self.data_start && at + remove <= self.rcv_nxt);
        let start = self.data_skip + (at - self.data_start) as usize;
        self.data
            .splice(start..start + remove as usize, insert.iter().copied());
        let inserted = insert.len() as u64;
        if inserted == remove {
            return;
        }
        let moved = |b: u64| {
            if b <= at {
                b
            } else if b <= at + remove {
                at + inserted
            } else {
                b - remove + inserted
            }
        };
        // The end and the FIN come after the inserted bytes, also when inserted at the end.
        self.rcv_nxt = self.rcv_nxt - remove + inserted;
        self.client_fin = self.client_fin.map(|f| {
            if f >= at + remove {
                f - remove + inserted
            } else {
                moved(f)
            }
        });
        for b in self
            .pending_bounds
            .iter_mut()
            .chain(&mut self.unacked_bounds)
        {
            *b = moved(*b);
        }
        // Out-of-order captures are kept by client offset: an edit does not move them.
        self.edited += inserted as i64 - remove as i64;
        self.edits.push(Splice {
            at,
            removed: remove,
            inserted,
        });
    }

    /// The client's offset of stream offset `off`, through the offset map: a byte an edit
    /// inserted maps to where the edit was made.
    pub(crate) fn client_offset(&self, mut off: u64) -> u64 {
        for e in self.edits.iter().rev() {
            if off >= e.at + e.inserted {
                off = off - e.inserted + e.removed;
            } else if off > e.at {
                off = e.at;
            }
        }
        off
    }

    /// The stream's buffers, emptied, for a later session; none when its buffer grew too large
    /// to keep, and its boundary queues shrunk to [`MAX_SPARE_BOUNDS`].
    pub(crate) fn take_buffers(&mut self) -> Option<Buffers> {
        if self.data.capacity() > MAX_SPARE_DATA {
            return None;
        }
        let mut b = Buffers {
            data: std::mem::take(&mut self.data),
            pending_bounds: std::mem::take(&mut self.pending_bounds),
            unacked_bounds: std::mem::take(&mut self.unacked_bounds),
        };
        b.data.clear();
        for q in [&mut b.pending_bounds, &mut b.unacked_bounds] {
            q.clear();
            q.shrink_to(MAX_SPARE_BOUNDS);
        }
        Some(b)
    }
}

/// A stream's heap buffers, kept when its session ends for a later session: most sessions of
/// short connections then allocate nothing.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    data: Vec<u8>,
    pending_bounds: VecDeque<u64>,
    unacked_bounds: VecDeque<u64>,
}
