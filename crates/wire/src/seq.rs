//! TCP sequence numbers: 32-bit values compared modulo 2^32 (RFC 793 / RFC 1982 serial arithmetic).

use std::cmp::Ordering;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A TCP sequence number. Ordering wraps: `a < b` when `b` is less than 2^31 ahead of `a`.
/// Never compare the raw `u32`s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seq(pub u32);

impl Seq {
    /// Distance from `earlier` to `self`, assuming `self` is not before `earlier` by more than 2^31.
    /// Negative when `self` is before `earlier`.
    #[inline]
    pub fn diff(self, earlier: Seq) -> i64 {
        i64::from(self.0.wrapping_sub(earlier.0) as i32)
    }

    /// The later of the two sequence numbers.
    #[inline]
    pub fn max(self, other: Seq) -> Seq {
        if self >= other {
            self
        } else {
            other
        }
    }
}

impl PartialOrd for Seq {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Seq {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.wrapping_sub(other.0) as i32).cmp(&0)
    }
}

impl Add<u32> for Seq {
    type Output = Seq;
    #[inline]
    fn add(self, rhs: u32) -> Seq {
        Seq(self.0.wrapping_add(rhs))
    }
}

impl AddAssign<u32> for Seq {
    #[inline]
    fn add_assign(&mut self, rhs: u32) {
        self.0 = self.0.wrapping_add(rhs);
    }
}

impl Sub<u32> for Seq {
    type Output = Seq;
    #[inline]
    fn sub(self, rhs: u32) -> Seq {
        Seq(self.0.wrapping_sub(rhs))
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_wraps_around_zero() {
        let a = Seq(u32::MAX - 10);
        let b = a + 20;
        assert_eq!(b.0, 9);
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b.diff(a), 20);
        assert_eq!(a.diff(b), -20);
        assert_eq!(a.max(b), b);
    }

    proptest::proptest! {
        #[test]
        fn add_then_diff_roundtrips(start: u32, len in 0u32..(1 << 31)) {
            let a = Seq(start);
            proptest::prop_assert_eq!((a + len).diff(a), i64::from(len));
            proptest::prop_assert!(a + len >= a);
        }
    }
}
