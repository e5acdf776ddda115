//! One side's answer to one request, assembled from its segments in server sequence order:
//! repeats ignored, overlaps trimmed, segments ahead of a hole held until it fills. Only the
//! digest, the length, the first bytes and the first byte's time are kept, never the payload.

use crate::{Digest, Nanos};

/// Segments held ahead of a hole at most; one more and the answer counts as incomplete.
const MAX_PENDING: usize = 32;

/// A segment as the assembly takes it (borrowed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg<'a> {
    pub at: Nanos,
    pub seq: u32,
    pub len: u32,
    pub digest: Digest,
    /// The payload's first bytes (all of them when `head.len() == len`).
    pub head: &'a [u8],
}

/// A segment held ahead of a hole (its first bytes copied, at most the head size).
#[derive(Clone, Debug)]
struct Piece {
    at: Nanos,
    seq: u32,
    len: u32,
    digest: Digest,
    head: Vec<u8>,
}

/// The contiguous run of answer bytes `[start, start + digest.len)` in server sequence space.
#[derive(Clone, Debug)]
pub(crate) struct Assembly {
    /// Capture time of the run's first byte.
    pub first_at: Nanos,
    start: u32,
    /// Digest and length of the run.
    pub digest: Digest,
    /// The run's first bytes, at most `cap`.
    pub head: Vec<u8>,
    cap: usize,
    pending: Vec<Piece>,
    /// A hole that cannot be filled: too many pieces held, or an overlap that could not be
    /// trimmed for want of its bytes.
    broken: bool,
}

enum Placed {
    Merged,
    Ignored,
    Apart,
}

impl Assembly {
    /// An answer whose first seen segment is `seg`; `cap`: first bytes kept.
    pub fn new(seg: Seg<'_>, cap: usize) -> Assembly {
        Assembly {
            first_at: seg.at,
            start: seg.seq,
            digest: seg.digest,
            head: seg.head[..seg.head.len().min(cap)].to_vec(),
            cap,
            pending: Vec::new(),
            broken: false,
        }
    }

    /// No hole seen: the digest covers the whole answer as far as anyone can tell.
    pub fn complete(&self) -> bool {
        !self.broken && self.pending.is_empty()
    }

    pub fn add(&mut self, seg: Seg<'_>) {
        if seg.len == 0 {
            return;
        }
        match self.place(seg) {
            Placed::Merged => self.drain_pending(),
            Placed::Ignored => {}
            Placed::Apart if self.pending.len() >= MAX_PENDING => self.broken = true,
            Placed::Apart => self.pending.push(Piece {
                at: seg.at,
                seq: seg.seq,
                len: seg.len,
                digest: seg.digest,
                head: seg.head[..seg.head.len().min(self.cap)].to_vec(),
            }),
        }
    }

    /// Merges the held pieces that now touch the run.
    fn drain_pending(&mut self) {
        while !self.pending.is_empty() {
            let before = self.pending.len();
            for p in std::mem::take(&mut self.pending) {
                let seg = Seg {
                    at: p.at,
                    seq: p.seq,
                    len: p.len,
                    digest: p.digest,
                    head: &p.head,
                };
                if let Placed::Apart = self.place(seg) {
                    self.pending.push(p);
                }
            }
            if self.pending.len() == before {
                return;
            }
        }
    }

    /// Where `seg` falls relative to the run, merging what touches it.
    fn place(&mut self, seg: Seg<'_>) -> Placed {
        let run = self.digest.len as i64;
        // Offsets from the run's start; answers under 2 GiB keep this unambiguous.
        let s = i64::from(seg.seq.wrapping_sub(self.start) as i32);
        let e = s + i64::from(seg.len);
        if e < 0 || s > run {
            return Placed::Apart;
        }
        if s >= 0 && e <= run {
            return Placed::Ignored;
        }
        let full = seg.head.len() as u64 == u64::from(seg.len);
        if e > run {
            // The part after the run: the segment without its first `k` bytes.
            let k = (run - s).max(0) as usize;
            match seg.head.get(..k).and_then(|p| seg.digest.strip_prefix(p)) {
                Some(rest) => self.append(rest, &seg.head[k..]),
                None => self.broken = true,
            }
        }
        if s < 0 {
            // The part before the run: the segment's first `k` bytes.
            let k = (-s) as usize;
            if k == seg.len as usize {
                self.prepend(seg.digest, seg.head, full, seg.at);
            } else if full {
                let part = &seg.head[..k];
                self.prepend(Digest::of(part), part, true, seg.at);
            } else {
                self.broken = true;
            }
        }
        Placed::Merged
    }

    /// Appends bytes after the run; `known`: their first bytes.
    fn append(&mut self, d: Digest, known: &[u8]) {
        // The head grows only while it holds every byte of the run.
        if self.head.len() as u64 == self.digest.len && self.head.len() < self.cap {
            let take = known.len().min(self.cap - self.head.len());
            self.head.extend_from_slice(&known[..take]);
        }
        self.digest = self.digest.then(d);
    }

    /// Puts bytes before the run; `known`: their first bytes (`full`: all of them).
    fn prepend(&mut self, d: Digest, known: &[u8], full: bool, at: Nanos) {
        let mut head = known[..known.len().min(self.cap)].to_vec();
        if full {
            head.extend_from_slice(&self.head);
            head.truncate(self.cap);
        }
        self.head = head;
        self.digest = d.then(self.digest);
        self.start = self.start.wrapping_sub(d.len as u32);
        self.first_at = at;
    }
}
