//! A digest of a byte string that composes: the digest of `a ++ b` follows from the digests of
//! `a` and `b`, so an answer's digest can be built from its segments' digests whatever the
//! segmentation.
//!
//! The hash is the polynomial `b0·B^(n-1) + b1·B^(n-2) + … + b(n-1)` modulo the Mersenne prime
//! 2^61 − 1, with a fixed odd base `B`; the length is kept beside it (so leading zero bytes
//! count). Not cryptographic: two different answers collide with probability about n / 2^61.
//! [`Digest::of`] folds eight bytes per step: one multiplication and one reduction per eight
//! bytes, the bytes' terms read from compile-time tables.

/// Digest and length of a byte string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    pub hash: u64,
    pub len: u64,
}

/// The modulus, 2^61 − 1 (prime).
const P: u64 = (1 << 61) - 1;
/// The base: fixed (intercept and tcpcopy must agree), odd, well below `P`.
const BASE: u64 = 0x0ab5_6d3e_9f27_c4e1;
/// `BASE^k` for k in 0..=8, for the eight-byte step.
const POW: [u64; 9] = powers();
/// `TERM[k][b] = b·BASE^(7-k) mod P`: the term of byte `b` at position `k` of an eight-byte step
/// (16 KiB, read-only, built at compile time). Eight terms sum below 2^64.
static TERM: [[u64; 256]; 8] = terms();

/// `x mod P` for any `x < 2^125`.
#[inline(always)]
const fn reduce(x: u128) -> u64 {
    let p = P as u128;
    let y = (x & p) + (x >> 61); // < 2^61 + 2^64
    let z = (y & p) + (y >> 61); // < 2^61 + 2^3
    let z = z as u64;
    if z >= P {
        z - P
    } else {
        z
    }
}

#[inline(always)]
const fn mul(a: u64, b: u64) -> u64 {
    reduce(a as u128 * b as u128)
}

const fn powers() -> [u64; 9] {
    let mut out = [1u64; 9];
    let mut k = 1;
    while k < 9 {
        out[k] = mul(out[k - 1], BASE);
        k += 1;
    }
    out
}

const fn terms() -> [[u64; 256]; 8] {
    let mut out = [[0u64; 256]; 8];
    let mut k = 0;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            out[k][b] = mul(b as u64, POW[7 - k]);
            b += 1;
        }
        k += 1;
    }
    out
}

/// `BASE^n mod P`.
fn base_pow(mut n: u64) -> u64 {
    let mut result = 1u64;
    let mut square = BASE;
    while n > 0 {
        if n & 1 == 1 {
            result = mul(result, square);
        }
        square = mul(square, square);
        n >>= 1;
    }
    result
}

impl Digest {
    pub const EMPTY: Digest = Digest { hash: 0, len: 0 };

    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = 0u64;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            // Eight terms below 2^61 each: their sum fits in a u64; h·B^8 < 2^122.
            let terms = TERM[0][c[0] as usize]
                + TERM[1][c[1] as usize]
                + TERM[2][c[2] as usize]
                + TERM[3][c[3] as usize]
                + TERM[4][c[4] as usize]
                + TERM[5][c[5] as usize]
                + TERM[6][c[6] as usize]
                + TERM[7][c[7] as usize];
            h = reduce(h as u128 * POW[8] as u128 + terms as u128);
        }
        for &b in chunks.remainder() {
            h = reduce(h as u128 * BASE as u128 + b as u128);
        }
        Digest {
            hash: h,
            len: bytes.len() as u64,
        }
    }

    /// The digest of this string followed by `next`'s.
    pub fn then(self, next: Digest) -> Digest {
        let shifted = mul(self.hash, base_pow(next.len));
        Digest {
            // Both terms below 2^64: their sum is well within `reduce`'s range.
            hash: reduce(shifted as u128 + next.hash as u128),
            len: self.len + next.len,
        }
    }

    /// The digest of what follows `prefix` (which must be this string's first bytes); `None`
    /// when `prefix` is longer than the string.
    pub fn strip_prefix(self, prefix: &[u8]) -> Option<Digest> {
        let rest_len = self.len.checked_sub(prefix.len() as u64)?;
        let front = mul(Digest::of(prefix).hash, base_pow(rest_len));
        let hash = reduce(self.hash as u128 + P as u128 - front as u128);
        Some(Digest {
            hash,
            len: rest_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Byte-at-a-time reference of the same polynomial.
    fn reference(bytes: &[u8]) -> u64 {
        bytes
            .iter()
            .fold(0u64, |h, &b| reduce(h as u128 * BASE as u128 + b as u128))
    }

    #[test]
    fn eight_byte_steps_equal_the_byte_at_a_time_polynomial() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 131 + 7) as u8).collect();
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000] {
            assert_eq!(
                Digest::of(&data[..n]).hash,
                reference(&data[..n]),
                "n = {n}"
            );
        }
    }

    #[test]
    fn leading_zero_bytes_and_order_count() {
        assert_ne!(Digest::of(b"\0a"), Digest::of(b"a"));
        assert_ne!(Digest::of(b"ab"), Digest::of(b"ba"));
        assert_ne!(Digest::of(b"HTTP/1.1 200"), Digest::of(b"HTTP/1.1 500"));
        assert_eq!(Digest::EMPTY, Digest::of(b""));
    }

    #[test]
    fn base_pow_matches_repeated_multiplication() {
        let mut p = 1u64;
        for n in 0..100u64 {
            assert_eq!(base_pow(n), p);
            p = mul(p, BASE);
        }
    }

    #[test]
    fn hashes_128_mb_fast() {
        let mut data: Vec<u8> = (0..1u32 << 20)
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        for i in 0..128 {
            data[i] = i as u8;
            x ^= Digest::of(std::hint::black_box(&data)).hash;
        }
        let secs = start.elapsed().as_secs_f64();
        let mbps = 128.0 / secs;
        eprintln!("Digest::of: {mbps:.0} MB/s ({x:x})");
        // A floor even for an unoptimised build on a busy machine: answers are hashed once.
        assert!(mbps > 20.0, "{mbps} MB/s");
    }

    proptest! {
        #[test]
        fn any_split_composes_to_the_whole(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let composed = cuts
                .windows(2)
                .fold(Digest::EMPTY, |d, w| d.then(Digest::of(&data[w[0]..w[1]])));
            prop_assert_eq!(composed, Digest::of(&data));
        }

        #[test]
        fn strip_prefix_inverts_then(
            a in proptest::collection::vec(any::<u8>(), 0..100),
            b in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let whole = Digest::of(&a).then(Digest::of(&b));
            prop_assert_eq!(whole.strip_prefix(&a), Some(Digest::of(&b)));
            prop_assert_eq!(Digest::of(&a).strip_prefix(&[0; 101]), None);
        }
    }
}
