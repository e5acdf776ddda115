//! How far a peer's clock is from ours, estimated the way NTP does from time asks and tells:
//! we ask at `t1`, the peer receives at `t2` and replies at `t3` (its clock), the reply arrives at
//! `t4` (ours). Then `offset = ((t2 - t1) + (t3 - t4)) / 2` and `round trip = (t4 - t1) - (t3 - t2)`;
//! whatever the split of the round trip between the two directions, the true offset lies within
//! half the round trip of the sample's. So of the recent samples, the one with the smallest round
//! trip is kept as the estimate. Sans-IO: the caller reads the clocks and moves the frames.

use std::collections::VecDeque;

/// Samples remembered: the estimate is the best of the last this many.
pub const WINDOW: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    offset: i64,
    round_trip: u64,
}

/// The running estimate of a peer's clock offset (the peer's clock minus ours).
#[derive(Clone, Debug)]
pub struct ClockSync {
    samples: VecDeque<Sample>,
    window: usize,
}

impl Default for ClockSync {
    fn default() -> Self {
        Self::new(WINDOW)
    }
}

impl ClockSync {
    /// An estimate over the last `window` samples (at least one).
    pub fn new(window: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(window.max(1)),
            window: window.max(1),
        }
    }

    /// Takes one exchange (ns timestamps; `t1`, `t4` ours, `t2`, `t3` the peer's). Returns false,
    /// and ignores it, when it cannot be real: the reply arrived before the ask left, or the peer
    /// replied before it received.
    pub fn sample(&mut self, t1: u64, t2: u64, t3: u64, t4: u64) -> bool {
        let (Some(ours), Some(theirs)) = (t4.checked_sub(t1), t3.checked_sub(t2)) else {
            return false;
        };
        let Some(round_trip) = ours.checked_sub(theirs) else {
            return false;
        };
        let sum = (i128::from(t2) - i128::from(t1)) + (i128::from(t3) - i128::from(t4));
        let Ok(offset) = i64::try_from(sum / 2) else {
            return false;
        };
        if self.samples.len() == self.window {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { offset, round_trip });
        true
    }

    fn best(&self) -> Option<&Sample> {
        self.samples.iter().min_by_key(|s| s.round_trip)
    }

    /// The peer's clock minus ours, in ns; `None` before the first sample.
    pub fn offset_ns(&self) -> Option<i64> {
        self.best().map(|s| s.offset)
    }

    /// The round trip of the sample the estimate comes from: the estimate is within half of it.
    pub fn round_trip_ns(&self) -> Option<u64> {
        self.best().map(|s| s.round_trip)
    }

    /// Samples held.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small seeded generator (xorshift), enough for jitter.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One exchange with a peer whose clock is `skew` ns ahead: the ask takes `up` ns, the peer
    /// takes `busy` ns, the reply takes `down` ns. Returns (t1, t2, t3, t4).
    fn exchange(now: u64, skew: i64, up: u64, busy: u64, down: u64) -> (u64, u64, u64, u64) {
        let peer = |t: u64| t.checked_add_signed(skew).unwrap();
        let t1 = now;
        let t2 = peer(now + up);
        let t3 = peer(now + up + busy);
        let t4 = now + up + busy + down;
        (t1, t2, t3, t4)
    }

    #[test]
    fn symmetric_delays_give_the_exact_skew() {
        let mut c = ClockSync::default();
        assert_eq!(c.offset_ns(), None);
        let (t1, t2, t3, t4) = exchange(
            1_700_000_000_000_000_000,
            3_002_000_000,
            100_000,
            5_000,
            100_000,
        );
        assert!(c.sample(t1, t2, t3, t4));
        assert_eq!(c.offset_ns(), Some(3_002_000_000));
        assert_eq!(c.round_trip_ns(), Some(200_000));
    }

    #[test]
    fn asymmetric_jittery_delays_stay_within_half_the_round_trip() {
        let base = 1_700_000_000_000_000_000u64;
        for skew in [
            -5_000_000_000i64,
            -1,
            0,
            42,
            3_002_000_000,
            86_400_000_000_000,
        ] {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ skew as u64);
            let mut c = ClockSync::new(8);
            let mut now = base;
            for i in 0..50 {
                // One direction is slower (a queue on the way out), both jitter, some are
                // stuck behind bulk data.
                let up =
                    50_000 + rng.below(400_000) + if rng.below(5) == 0 { 20_000_000 } else { 0 };
                let down = 10_000 + rng.below(100_000);
                let busy = rng.below(30_000);
                let (t1, t2, t3, t4) = exchange(now, skew, up, busy, down);
                assert!(c.sample(t1, t2, t3, t4));
                let est = c.offset_ns().unwrap();
                let rtt = c.round_trip_ns().unwrap();
                assert!(
                    est.abs_diff(skew) <= rtt / 2,
                    "skew {skew}: estimate {est}, round trip {rtt}"
                );
                // Once the window filled, it holds a quick sample: the estimate is good to a
                // few hundred µs, however slow the stuck ones were.
                if i >= 8 {
                    assert!(rtt < 1_000_000, "round trip {rtt}");
                }
                now += 1_000_000_000;
            }
        }
    }

    #[test]
    fn the_best_sample_ages_out_of_the_window() {
        let mut c = ClockSync::new(2);
        let t = 1_000_000_000_000u64;
        let (a, b, cc, d) = exchange(t, 1_000, 10, 0, 10);
        c.sample(a, b, cc, d);
        let (a, b, cc, d) = exchange(t + 1_000_000, 2_000, 500, 0, 500);
        c.sample(a, b, cc, d);
        assert_eq!(c.offset_ns(), Some(1_000), "the quick one wins");
        let (a, b, cc, d) = exchange(t + 2_000_000, 3_000, 400, 0, 400);
        c.sample(a, b, cc, d);
        assert_eq!(c.offset_ns(), Some(3_000), "the quick one aged out");
        assert_eq!(c.samples(), 2);
    }

    #[test]
    fn impossible_exchanges_are_ignored() {
        let mut c = ClockSync::default();
        assert!(
            !c.sample(100, 0, 0, 50),
            "the reply came back before the ask left"
        );
        assert!(
            !c.sample(0, 100, 50, 10),
            "the peer replied before it received"
        );
        assert!(
            !c.sample(0, 0, 100, 10),
            "the peer took longer than the round trip"
        );
        assert!(!c.sample(0, u64::MAX, u64::MAX, 0), "an offset beyond i64");
        assert_eq!(c.offset_ns(), None);
        assert!(c.sample(0, 0, 0, 0));
        assert_eq!(c.offset_ns(), Some(0));
    }
}
