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
    /// Where the answer must begin: just after the previous answer's bytes on this side, when
    /// known. An answer beginning later lost its first bytes (to the capture, or on the way).
    expected_start: Option<u32>,
}

enum Placed {
    Merged,
    Ignored,
    Apart,
}

impl Assembly {
    /// An answer whose first seen segment is `seg`; `cap`: first bytes kept; `expected_start`:
    /// where the previous answer of this side ended, when known.
    pub fn new(seg: Seg<'_>, cap: usize, expected_start: Option<u32>) -> Assembly {
        Assembly {
            expected_start,
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
        let begins_late = self
            .expected_start
            .is_some_and(|e| self.start.wrapping_sub(e) as i32 > 0);
        !self.broken && self.pending.is_empty() && !begins_late
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `data`'s pieces `[cuts[i], cuts[i+1])` in `order`, each with its first `forward`
    /// bytes, starting at sequence number `isn`.
    fn assemble(
        data: &[u8],
        cuts: &[usize],
        order: &[usize],
        forward: usize,
        isn: u32,
    ) -> Assembly {
        let mut asm: Option<Assembly> = None;
        for &i in order {
            let piece = &data[cuts[i]..cuts[i + 1]];
            let seg = Seg {
                at: i as u64,
                seq: isn.wrapping_add(cuts[i] as u32),
                len: piece.len() as u32,
                digest: Digest::of(piece),
                head: &piece[..piece.len().min(forward)],
            };
            match &mut asm {
                Some(a) => a.add(seg),
                None => asm = Some(Assembly::new(seg, 64, None)),
            }
        }
        asm.expect("at least one piece")
    }

    fn pieces() -> impl Strategy<Value = (Vec<u8>, Vec<usize>, Vec<usize>)> {
        (1usize..400, proptest::collection::vec(1usize..400, 0..12)).prop_flat_map(|(len, cuts)| {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < len).collect();
            cuts.push(0);
            cuts.push(len);
            cuts.sort_unstable();
            cuts.dedup();
            let n = cuts.len() - 1;
            // Every piece at least once, in any order, some twice.
            let order = proptest::collection::vec(0..n, 0..4)
                .prop_map(move |extra| (0..n).chain(extra).collect::<Vec<_>>())
                .prop_shuffle();
            (
                proptest::collection::vec(any::<u8>(), len),
                Just(cuts),
                order,
            )
        })
    }

    proptest! {
        /// However an answer is cut, reordered and repeated, its assembly is the whole answer,
        /// and its head the answer's first bytes (all of the first 64 when each segment's
        /// bytes came in full).
        #[test]
        fn any_order_and_repeats_give_the_whole_answer(
            (data, cuts, order) in pieces(),
            forward in prop_oneof![Just(usize::MAX), 1usize..50],
            isn: u32,
        ) {
            let a = assemble(&data, &cuts, &order, forward, isn);
            prop_assert!(a.complete());
            prop_assert_eq!(a.digest, Digest::of(&data));
            prop_assert!(data.starts_with(&a.head));
            if forward == usize::MAX {
                prop_assert_eq!(&a.head[..], &data[..data.len().min(64)]);
            }
            prop_assert_eq!(a.first_at, 0);
        }
    }

    #[test]
    fn overlapping_resegmentation_is_trimmed_with_the_bytes_at_hand() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let seg = |from: usize, to: usize, forward: usize| Seg {
            at: from as u64,
            seq: 1000 + from as u32,
            len: (to - from) as u32,
            digest: Digest::of(&data[from..to]),
            head: &data[from..to.min(from + forward)],
        };
        // A retransmission covering the end of the run and more: its front is cut off with the
        // bytes intercept forwarded.
        let mut a = Assembly::new(seg(0, 100, 100), 64, None);
        a.add(seg(50, 200, 60));
        a.add(seg(200, 300, 10));
        assert!(a.complete());
        assert_eq!(a.digest, Digest::of(&data));
        // Too few bytes forwarded to cut the overlap: a hole.
        let mut b = Assembly::new(seg(0, 100, 100), 64, None);
        b.add(seg(50, 300, 20));
        assert!(!b.complete());
        // A hole never filled.
        let mut c = Assembly::new(seg(0, 100, 100), 64, None);
        c.add(seg(150, 300, 150));
        assert!(!c.complete());
        c.add(seg(100, 150, 50));
        assert!(c.complete());
        assert_eq!(c.digest, Digest::of(&data));
    }

    #[test]
    fn an_answer_beginning_after_where_the_last_one_ended_lost_its_first_bytes() {
        let data = [7u8; 100];
        let seg = |seq: u32| Seg {
            at: 0,
            seq,
            len: 100,
            digest: Digest::of(&data),
            head: &data,
        };
        let from = |start| Assembly::new(seg(start), 64, Some(1000));
        assert!(from(1000).complete(), "begins where the last answer ended");
        assert!(!from(1100).complete(), "its first 100 bytes never seen");
        // The missing first segment arriving late completes it.
        let mut late = from(1100);
        late.add(seg(1000));
        assert!(late.complete());
        assert!(
            Assembly::new(seg(5000), 64, None).complete(),
            "nothing known before"
        );
    }
}
