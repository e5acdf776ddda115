//! A digest of a byte string that composes: the digest of `a ++ b` follows from the digests of
//! `a` and `b`, so an answer's digest can be built from its segments' digests whatever the
//! segmentation.

/// Digest and length of a byte string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    pub hash: u64,
    pub len: u64,
}

impl Digest {
    pub const EMPTY: Digest = Digest { hash: 0, len: 0 };

    pub fn of(bytes: &[u8]) -> Digest {
        let _ = bytes;
        todo!()
    }

    /// The digest of this string followed by `next`'s.
    pub fn then(self, next: Digest) -> Digest {
        let _ = next;
        todo!()
    }

    /// The digest of what follows `prefix` (which must be this string's first bytes).
    pub fn strip_prefix(self, prefix: &[u8]) -> Option<Digest> {
        let _ = prefix;
        todo!()
    }
}
