//! Table keys: how a packet finds its session, and the hashing behind it.
//!
//! Owns the two lookup keys ([`OnlineKey`]: a captured connection as the online server sees it;
//! [`TargetKey`]: a replicated session's connection at the target), the table type they are
//! hashed into, and the stable hash that spreads clients over the fake addresses. It holds no
//! table itself and knows nothing of sessions: the replicator and the closed records own the
//! tables.
//!
//! Iteration order: the tables are seeded per process (foldhash), so their order differs from
//! run to run. Nothing that decides what is sent may walk them; they are only probed, and pruned
//! with `retain`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Session tables are keyed by endpoints remote clients choose: a seeded hasher (foldhash, per
/// process), several times cheaper than SipHash per packet.
pub(crate) type TableMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Removes `key` from `map` if it still maps to `value` (a later owner keeps its entry).
#[inline]
pub(crate) fn unlink<K: std::hash::Hash + Eq, V: PartialEq>(
    map: &mut TableMap<K, V>,
    key: &K,
    value: V,
) {
    if map.get(key) == Some(&value) {
        map.remove(key);
    }
}

/// A captured connection as the online server sees it (client, online server), and which of the
/// `Config::copies` replicated sessions made from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OnlineKey(Flow);

impl OnlineKey {
    #[inline]
    pub(crate) fn new(client: SocketAddr, online: SocketAddr, copy: u16) -> OnlineKey {
        OnlineKey(Flow {
            from: client,
            to: online,
            copy,
        })
    }
}

/// A replicated session's connection at the target (our client endpoint, the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TargetKey(Flow);

impl TargetKey {
    #[inline]
    pub(crate) fn new(local: SocketAddr, target: SocketAddr) -> TargetKey {
        TargetKey(Flow {
            from: local,
            to: target,
            copy: 0,
        })
    }
}

/// Two endpoints and a copy number, as a table key: hashed as two words (an IPv4 pair) or five
/// (IPv6) instead of field by field, since each packet probes a table with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    from: SocketAddr,
    to: SocketAddr,
    copy: u16,
}

impl std::hash::Hash for Flow {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let ports = u64::from(self.from.port()) << 32
            | u64::from(self.to.port()) << 16
            | u64::from(self.copy);
        match (self.from.ip(), self.to.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits()));
            }
            (a, b) => {
                h.write_u128(ip_bits(a));
                h.write_u128(ip_bits(b));
            }
        }
        h.write_u64(ports);
    }
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

/// A client address's place among the fake addresses. FNV-1a, not the tables' hasher: stable
/// across runs, so a client always maps to the same fake address.
pub(crate) fn addr_hash(ip: IpAddr) -> u64 {
    let fnv = |bytes: &[u8]| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    match ip {
        IpAddr::V4(a) => fnv(&a.octets()),
        IpAddr::V6(a) => fnv(&a.octets()),
    }
}
