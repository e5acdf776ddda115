//! Latency distributions that merge exactly: log-scale buckets.
//!
//! Values below 16 µs have a bucket each; above, every power of two is cut into 16 buckets of
//! equal width, so a bucket is at most 1/16 (6.25 %) of its values wide. Two histograms merge by
//! adding their counts, and the merged one is the histogram of all the values: percentiles of a
//! merged report are recomputed, never averaged. Count, mean and maximum are exact.

use crate::report::{Bucket, Dist};

/// Buckets per power of two (and the values below this have one bucket each).
const SUB: u64 = 16;
const SUB_BITS: u32 = 4;

/// A latency histogram in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Samples per bucket index, as far as the highest bucket used.
    counts: Vec<u64>,
    count: u64,
    sum_us: u64,
    max_us: u64,
}

/// The bucket a value falls in.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let top = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = top - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    ((top - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The largest value of a bucket.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i / SUB - 1) as u32;
    let lower = (SUB + i % SUB) << shift;
    lower + ((1u64 << shift) - 1)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::default()
    }

    pub fn record_us(&mut self, us: u64) {
        let i = index(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Records a duration in nanoseconds (rounded down to microseconds).
    pub fn record_ns(&mut self, ns: u64) {
        self.record_us(ns / 1000);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The exact mean, 0 when empty.
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us as f64 / self.count as f64
        }
    }

    /// The `q` quantile (0 < q <= 1): the largest value of the bucket holding the sample of rank
    /// ⌈q·count⌉, so at most 6.25 % above the true value, and never above the exact maximum.
    /// 0 when empty.
    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The report's form: percentiles computed here, non-empty buckets ascending.
    pub fn to_dist(&self) -> Dist {
        Dist {
            count: self.count,
            mean_us: self.mean_us(),
            p50_us: self.percentile_us(0.50),
            p90_us: self.percentile_us(0.90),
            p99_us: self.percentile_us(0.99),
            max_us: self.max_us,
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| Bucket {
                    le_us: upper(i),
                    count: c,
                })
                .collect(),
        }
    }

    /// Back from a report's form (buckets, mean and maximum; the percentiles are recomputed).
    pub fn from_dist(d: &Dist) -> Histogram {
        let mut h = Histogram::new();
        for b in &d.buckets {
            let i = index(b.le_us);
            if h.counts.len() <= i {
                h.counts.resize(i + 1, 0);
            }
            h.counts[i] += b.count;
            h.count += b.count;
        }
        h.sum_us = (d.mean_us * h.count as f64).round() as u64;
        h.max_us = d.max_us;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_in_a_bucket_that_holds_it_and_is_narrow() {
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((5..64).flat_map(|b| [(1u64 << b) - 1, 1 << b, (1 << b) + 1]));
        values.push(u64::MAX);
        for v in values {
            let i = index(v);
            let hi = upper(i);
            let lo = if i == 0 { 0 } else { upper(i - 1) + 1 };
            assert!(lo <= v && v <= hi, "{v} in [{lo}, {hi}]");
            assert!(
                (hi - lo) as f64 <= lo as f64 / 16.0,
                "{v}: [{lo}, {hi}] too wide"
            );
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        // 90 requests at 1 ms, 9 at 5 ms, 1 at 100 ms.
        (0..90).for_each(|_| h.record_ns(1_000_000));
        (0..9).for_each(|_| h.record_us(5_000));
        h.record_us(100_000);
        let near = |got: u64, want: u64| got >= want && got <= want + want / 16;
        assert!(
            near(h.percentile_us(0.5), 1_000),
            "{}",
            h.percentile_us(0.5)
        );
        assert!(near(h.percentile_us(0.9), 1_000));
        assert!(near(h.percentile_us(0.91), 5_000));
        assert!(near(h.percentile_us(0.99), 5_000));
        assert_eq!(h.percentile_us(1.0), 100_000);
        assert_eq!(h.max_us(), 100_000);
        assert_eq!(h.count(), 100);
        assert!((h.mean_us() - 2_350.0).abs() < 1e-9);
        assert_eq!(Histogram::new().percentile_us(0.5), 0);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..3000u64 {
            let v = v * v % 77_777;
            if v % 3 == 0 { &mut a } else { &mut b }.record_us(v);
            all.record_us(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn dist_round_trip_keeps_the_histogram() {
        let mut h = Histogram::new();
        for v in [3u64, 17, 17, 250, 4_000, 4_001, 1 << 40] {
            h.record_us(v);
        }
        let d = h.to_dist();
        assert_eq!(d.count, 7);
        assert_eq!(d.buckets.iter().map(|b| b.count).sum::<u64>(), 7);
        assert!(d.buckets.windows(2).all(|w| w[0].le_us < w[1].le_us));
        let back = Histogram::from_dist(&d);
        assert_eq!(back, h);
        assert_eq!(back.to_dist(), d);
    }
}
