//! Deadlines of many sessions: a hashed timing wheel with an exact earliest deadline.
//!
//! Short connections queue a few deadlines each (retransmission, delayed ACK, linger), and tens of
//! thousands of sessions can be open at once. A binary heap pays `log n` cache misses per push and
//! pop; the wheel files a deadline under its tick (about a millisecond) in O(1), and finds the
//! earliest occupied tick with a bitmap. Deadlines past the wheel's horizon (the idle timeout of
//! a long-lived connection) wait in a small heap beside it.
//!
//! Unlike the wheels of event loops, [`TimerWheel::peek`] returns the exact earliest deadline, not
//! its tick: the sans-IO core tells its driver precisely when to call again, and simulated time
//! reproduces to the nanosecond.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// Slots in the wheel; with [`TICK_SHIFT`] this covers about 4.3 s ahead.
const SLOTS: usize = 4096;
/// A tick is 2^20 ns (about 1.05 ms).
const TICK_SHIFT: u32 = 20;

pub(crate) struct TimerWheel<T> {
    /// Tick 0: half the wheel before the first deadline queued (or the first `advance`), so
    /// that the deadlines that follow, earlier ones too, get ticks of their own.
    origin: Option<Instant>,
    /// Every tick before this one is empty. Deadlines from the past are filed under it. It
    /// follows the clock ([`TimerWheel::advance`]), never ahead of it, so that deadlines queued
    /// later spread over their own ticks.
    cursor: u64,
    /// `slots[t % SLOTS]` holds the deadlines of tick `t`, for `cursor <= t < cursor + SLOTS`.
    slots: Vec<VecDeque<(Instant, T)>>,
    /// A slot whose deadlines are in order, earliest first (pushes into it keep the order): the
    /// first occupied slot, sorted when it was last looked at. The sessions of one batch share
    /// their deadlines, so a tick can hold hundreds; sorted once, its earliest is at the front
    /// for every peek and pop that follows.
    sorted: Option<usize>,
    /// One bit per slot: set when the slot is not empty.
    occupied: [u64; SLOTS / 64],
    /// One bit per word of `occupied`: set when the word is not zero. The earliest occupied
    /// slot is then two bit scans away, even in a wheel that holds a few deadlines far apart
    /// (idle keep-alive sessions) or none.
    summary: u64,
    /// Deadlines at or beyond `cursor + SLOTS` when they were queued.
    far: BinaryHeap<Reverse<(Instant, T)>>,
    len: usize,
}

impl<T: Copy + Ord> TimerWheel<T> {
    pub(crate) fn new() -> Self {
        TimerWheel {
            origin: None,
            cursor: 0,
            slots: (0..SLOTS).map(|_| VecDeque::new()).collect(),
            sorted: None,
            occupied: [0; SLOTS / 64],
            summary: 0,
            far: BinaryHeap::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Deadlines waiting beyond the wheel's span.
    #[cfg(test)]
    pub(crate) fn far_len(&self) -> usize {
        self.far.len()
    }

    fn tick(&mut self, at: Instant) -> u64 {
        let half = Duration::from_nanos((SLOTS as u64 / 2) << TICK_SHIFT);
        let origin = *self
            .origin
            .get_or_insert_with(|| at.checked_sub(half).unwrap_or(at));
        (at.saturating_duration_since(origin).as_nanos() >> TICK_SHIFT) as u64
    }

    /// Time has come to `now`: the cursor moves up to its tick over empty slots (every deadline
    /// before `now` was popped, or is waiting in the slot the cursor stops at).
    pub(crate) fn advance(&mut self, now: Instant) {
        let target = self.tick(now);
        if target <= self.cursor {
            return;
        }
        let ahead = self.first_slot().map_or(u64::MAX, |(_, ahead)| ahead);
        self.cursor += ahead.min(target - self.cursor);
    }

    pub(crate) fn push(&mut self, at: Instant, item: T) {
        let tick = self.tick(at).max(self.cursor);
        self.len += 1;
        if tick - self.cursor >= SLOTS as u64 {
            self.far.push(Reverse((at, item)));
            return;
        }
        let slot = (tick % SLOTS as u64) as usize;
        let entries = &mut self.slots[slot];
        if self.sorted == Some(slot) {
            let i = entries.partition_point(|e| *e <= (at, item));
            entries.insert(i, (at, item));
        } else {
            entries.push_back((at, item));
        }
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.summary |= 1 << (slot / 64);
    }

    /// The earliest deadline queued, and its item.
    pub(crate) fn peek(&mut self) -> Option<(Instant, T)> {
        let near = self.nearest().map(|(_, entry)| entry);
        near.into_iter().chain(self.far.peek().map(|e| e.0)).min()
    }

    /// Removes the earliest deadline queued and returns it.
    pub(crate) fn pop(&mut self) -> Option<(Instant, T)> {
        let far = self.far.peek().map(|e| e.0);
        let entry = match self.nearest() {
            Some((slot, near)) if far.is_none_or(|f| near <= f) => {
                self.slots[slot].pop_front();
                if self.slots[slot].is_empty() {
                    self.occupied[slot / 64] &= !(1 << (slot % 64));
                    if self.occupied[slot / 64] == 0 {
                        self.summary &= !(1 << (slot / 64));
                    }
                }
                near
            }
            _ => self.far.pop()?.0,
        };
        self.len -= 1;
        Some(entry)
    }

    /// The earliest deadline in the wheel (not the far heap): its slot and entry, at the front
    /// of that slot.
    fn nearest(&mut self) -> Option<(usize, (Instant, T))> {
        let (slot, _) = self.first_slot()?;
        if self.sorted != Some(slot) {
            self.slots[slot].make_contiguous().sort_unstable();
            self.sorted = Some(slot);
        }
        Some((slot, *self.slots[slot].front()?))
    }

    /// Forgets every deadline and queues `entries` instead.
    pub(crate) fn rebuild(&mut self, entries: impl Iterator<Item = (Instant, T)>) {
        for slot in &mut self.slots {
            slot.clear();
        }
        self.occupied = [0; SLOTS / 64];
        self.summary = 0;
        self.sorted = None;
        self.far.clear();
        self.len = 0;
        for (at, item) in entries {
            self.push(at, item);
        }
    }

    /// The first occupied slot from the cursor on, and how many ticks ahead of the cursor it is.
    fn first_slot(&self) -> Option<(usize, u64)> {
        let start = (self.cursor % SLOTS as u64) as usize;
        let (word, bit) = (start / 64, start % 64);
        let first_in = |w: usize| w * 64 + self.occupied[w].trailing_zeros() as usize;
        // The cursor's own word from the cursor's bit up; then the words after it; then,
        // wrapping round, the words before it; last the bits below the cursor in its own word.
        let from_cursor = self.occupied[word] >> bit;
        let after = self.summary & !1u64 << word;
        let before = self.summary & ((1u64 << word) - 1);
        let slot = if from_cursor != 0 {
            start + from_cursor.trailing_zeros() as usize
        } else if after != 0 {
            first_in(after.trailing_zeros() as usize)
        } else if before != 0 {
            first_in(before.trailing_zeros() as usize)
        } else if self.occupied[word] != 0 {
            first_in(word)
        } else {
            return None;
        };
        Some((slot, ((slot + SLOTS - start) % SLOTS) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// `first_slot` against a scan of every slot from the cursor on, with the cursor and the
    /// occupied slots at word edges (bits 0 and 63, words 0 and 63) and wrapped round.
    #[test]
    fn first_slot_finds_the_nearest_occupied_slot_ahead_of_the_cursor() {
        let edges = [
            0, 1, 62, 63, 64, 65, 127, 2048, 4031, 4032, 4033, 4094, 4095,
        ];
        let mut sets: Vec<Vec<usize>> = vec![Vec::new()];
        sets.extend(edges.iter().map(|&a| vec![a]));
        for &a in &edges {
            sets.extend(edges.iter().filter(|&&b| b > a).map(|&b| vec![a, b]));
        }
        for cursor in edges
            .iter()
            .map(|&c| c as u64)
            .chain([4096, 4096 + 63, 9 * 4096 + 4095])
        {
            for set in &sets {
                let mut wheel: TimerWheel<u32> = TimerWheel::new();
                wheel.cursor = cursor;
                for &slot in set {
                    wheel.occupied[slot / 64] |= 1 << (slot % 64);
                    wheel.summary |= 1 << (slot / 64);
                }
                let start = (cursor % SLOTS as u64) as usize;
                let expected = (0..SLOTS)
                    .map(|ahead| ((start + ahead) % SLOTS, ahead as u64))
                    .find(|(slot, _)| set.contains(slot));
                assert_eq!(
                    wheel.first_slot(),
                    expected,
                    "cursor {cursor}, slots {set:?}"
                );
            }
        }
    }

    #[test]
    fn pops_in_the_same_order_as_a_binary_heap() {
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let base = Instant::now();
            let mut now = base;
            let mut wheel = TimerWheel::new();
            let mut heap = BinaryHeap::new();
            for step in 0u64..20_000 {
                match rng.next_u64() % 10 {
                    0..=5 => {
                        // Mostly near deadlines, some in the past, some far beyond the horizon,
                        // many the same.
                        let at = match rng.next_u64() % 10 {
                            0 => now
                                .checked_sub(Duration::from_micros(rng.next_u64() % 5000))
                                .unwrap_or(base),
                            1 => now + Duration::from_secs(5 + rng.next_u64() % 600),
                            // The sessions of one batch share a deadline: many equal entries
                            // in one tick, pushed before and after it is sorted.
                            2 | 3 => now + Duration::from_millis(200),
                            _ => now + Duration::from_micros(rng.next_u64() % 3_000_000),
                        };
                        wheel.push(at, step);
                        heap.push(Reverse((at, step)));
                    }
                    6 | 7 => {
                        assert_eq!(wheel.peek(), heap.peek().map(|e| e.0));
                        assert_eq!(wheel.pop(), heap.pop().map(|e| e.0));
                    }
                    _ => {
                        // Time passes; everything due is popped in order.
                        now += Duration::from_micros(rng.next_u64() % 50_000);
                        while heap.peek().is_some_and(|e| e.0 .0 <= now) {
                            assert_eq!(wheel.pop(), heap.pop().map(|e| e.0));
                        }
                        wheel.advance(now);
                    }
                }
                assert_eq!(wheel.len(), heap.len());
            }
            while let Some(e) = heap.pop() {
                assert_eq!(wheel.pop(), Some(e.0));
            }
            assert_eq!(wheel.pop(), None);
            assert_eq!(wheel.peek(), None);
        }
    }

    #[test]
    fn a_deadline_far_ahead_comes_back_after_the_wheel_turned() {
        let base = Instant::now();
        let mut wheel = TimerWheel::new();
        wheel.push(base, 0u32);
        wheel.push(base + Duration::from_secs(600), 1);
        assert_eq!(wheel.pop(), Some((base, 0)));
        // Near deadlines of later turns of the wheel still come first.
        for i in 0..10u32 {
            wheel.push(base + Duration::from_secs(u64::from(i) * 3), 10 + i);
        }
        for i in 0..10u32 {
            assert_eq!(wheel.pop().map(|e| e.1), Some(10 + i));
        }
        assert_eq!(wheel.pop(), Some((base + Duration::from_secs(600), 1)));
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn the_cursor_follows_the_clock_not_the_next_deadline() {
        let base = Instant::now();
        let mut wheel = TimerWheel::new();
        wheel.advance(base);
        wheel.push(base + Duration::from_secs(3), 0u32);
        assert!(wheel.peek().is_some());
        wheel.advance(base + Duration::from_millis(10));
        // Deadlines queued now land on their own ticks, not in the slot of the one 3 s ahead.
        for i in 0..100u32 {
            wheel.push(base + Duration::from_millis(20 + u64::from(i)), 1 + i);
        }
        let occupied: u32 = wheel.occupied.iter().map(|w| w.count_ones()).sum();
        assert!(occupied > 90, "{occupied} slots for 101 deadlines");
        // After a quiet spell longer than the wheel's horizon, near deadlines are near again.
        let mut wheel = TimerWheel::new();
        wheel.push(base, 0u32);
        wheel.pop();
        wheel.push(base + Duration::from_secs(600), 1);
        wheel.advance(base + Duration::from_secs(10));
        wheel.push(base + Duration::from_millis(10_005), 2);
        assert_eq!(wheel.far.len(), 1);
        assert_eq!(wheel.pop(), Some((base + Duration::from_millis(10_005), 2)));
    }

    #[test]
    fn rebuild_keeps_only_the_given_deadlines() {
        let base = Instant::now();
        let mut wheel = TimerWheel::new();
        for i in 0..100u32 {
            wheel.push(base + Duration::from_millis(u64::from(i)), i);
        }
        wheel.rebuild([(base + Duration::from_millis(7), 7u32)].into_iter());
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.pop(), Some((base + Duration::from_millis(7), 7)));
        assert_eq!(wheel.pop(), None);
    }
}
