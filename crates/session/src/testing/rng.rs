//! The one pseudo-random generator of the tests, benches, examples, the lab and the harness:
//! xorshift64* seeded through a splitmix64 step, so that everything random is reproducible from a
//! seed. Not for anything secret.

/// xorshift64* with a splitmix64-mixed seed: similar seeds give unrelated streams.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The state must never be zero.
        Rng(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    /// Stream number `index` under `seed` (one per connection, say).
    pub fn for_stream(seed: u64, index: usize) -> Rng {
        Rng::new(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n >= 1`; 0 gives 0), by the multiply-high method.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + ((u128::from(self.next_u64()) * u128::from(hi - lo + 1)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for 0, always for 1). Draws one number whatever `p`, so
    /// that a fault turned off does not shift the stream of the others.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Log-uniform in `min..=max` (`1 <= min <= max`): the logarithm of the result is uniform.
    pub fn log_uniform(&mut self, min: usize, max: usize) -> usize {
        let (lo, hi) = ((min as f64).ln(), (max as f64 + 1.0).ln());
        let len = (lo + self.unit() * (hi - lo)).exp() as usize;
        len.clamp(min, max)
    }

    /// Fills `buf` with arbitrary bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// Fills `buf` with printable ASCII (`!` to `~`), so a failing comparison is readable.
    pub fn fill_printable(&mut self, buf: &mut [u8]) {
        self.fill(buf);
        for b in buf.iter_mut() {
            *b = b'!' + *b % 94;
        }
    }

    /// `lo..=hi` arbitrary bytes.
    pub fn bytes(&mut self, lo: u64, hi: u64) -> Vec<u8> {
        let mut v = vec![0; self.range(lo, hi) as usize];
        self.fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_differ() {
        let take = |mut r: Rng| (0..50).map(|_| r.next_u64()).collect::<Vec<_>>();
        assert_eq!(take(Rng::new(7)), take(Rng::new(7)));
        assert_ne!(take(Rng::new(7)), take(Rng::new(8)));
        assert_ne!(take(Rng::for_stream(7, 0)), take(Rng::for_stream(7, 1)));
    }

    #[test]
    fn ranges_stay_inside_and_reach_both_ends() {
        let mut r = Rng::new(3);
        let v: Vec<u64> = (0..10_000).map(|_| r.range(5, 9)).collect();
        assert!(v.iter().all(|x| (5..=9).contains(x)));
        assert!(v.contains(&5) && v.contains(&9));
        assert!((0..1000).all(|_| r.below(6) < 6));
        assert_eq!(r.below(0), 0);
        let mut buf = [0u8; 1000];
        r.fill_printable(&mut buf);
        assert!(buf.iter().all(|b| (b'!'..=b'~').contains(b)));
    }

    #[test]
    fn chance_follows_its_probability() {
        let mut r = Rng::new(5);
        assert!((0..1000).all(|_| !r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        let hits = (0..100_000).filter(|_| r.chance(0.25)).count();
        assert!((24_000..26_000).contains(&hits), "{hits}");
    }
}
