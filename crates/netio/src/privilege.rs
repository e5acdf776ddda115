//! Least privilege: what the programs need to start (`CAP_NET_RAW` for packet sockets and raw IP,
//! `CAP_NET_ADMIN` for NFQUEUE and iptables), checked up front with a line that names what is
//! missing, and dropped once the sockets and rules are in place.
//!
//! Linux keeps capabilities per thread, and a thread inherits its creator's. So every thread
//! drops its own ([`keep_only`]): the threads that open sockets do it once those are open, the
//! others as they start; a thread made by one that already dropped has nothing to drop. The
//! capability calls go through the `caps` crate.

use std::io;

pub use caps::Capability;
use caps::{CapSet, CapsHashSet};

/// The two capabilities the programs can need, in the order they are documented.
pub const NET_RAW: Capability = Capability::CAP_NET_RAW;
pub const NET_ADMIN: Capability = Capability::CAP_NET_ADMIN;

/// Whether the calling thread may use `cap` now.
pub fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// The first of `needed` the calling thread lacks, as a line for the user: `what` says what it is
/// needed for.
pub fn missing(needed: &[Capability], what: &str) -> Option<String> {
    let cap = needed.iter().find(|c| !has(**c))?;
    Some(format!(
        "{what} needs {cap}: run as root, or give the program the capabilities \
         (setcap cap_net_raw,cap_net_admin+ep PROGRAM, or AmbientCapabilities= in a systemd unit)"
    ))
}

/// How far [`keep_only`] goes beyond the calling thread's own sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// This thread's effective, permitted and inheritable sets only.
    Thread,
    /// Also the bounding set (when allowed: `CAP_SETPCAP`, i.e. as root) and the ambient set, so
    /// that a program this thread runs (iptables) gets `keep` and nothing more, whether we run as
    /// root or with file capabilities.
    Exec,
}

/// Reduces the calling thread's capabilities to `keep` (those of them it has), for good.
pub fn keep_only(keep: &[Capability], scope: Scope) -> io::Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read capabilities"))?;
    let kept: CapsHashSet = keep
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // The bounding set first, while CAP_SETPCAP (root's) is still effective.
    if scope == Scope::Exec && has(Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !kept.contains(&cap) {
                // A capability this kernel does not know cannot be dropped: nothing to do.
                let _ = caps::drop(None, CapSet::Bounding, cap);
            }
        }
    }
    // Then the sets that matter for this thread: whatever happens to the others (a kernel
    // without ambient capabilities, before 4.3, refuses those calls), these shrink.
    let effective = caps::set(None, CapSet::Effective, &kept).map_err(err("set effective"));
    let permitted = caps::set(None, CapSet::Permitted, &kept).map_err(err("set permitted"));
    let children = if scope == Scope::Exec {
        caps::set(None, CapSet::Inheritable, &kept)
            .map_err(err("set inheritable"))
            .and_then(|()| {
                let _ = caps::clear(None, CapSet::Ambient);
                kept.iter().try_for_each(|cap| {
                    caps::raise(None, CapSet::Ambient, *cap).map_err(err("raise ambient"))
                })
            })
    } else {
        let _ = caps::clear(None, CapSet::Ambient);
        caps::clear(None, CapSet::Inheritable).map_err(err("clear inheritable"))
    };
    effective.and(permitted).and(children)
}

/// Lets the programs this thread runs (iptables) have `caps` too, as far as it has them itself:
/// raised in its inheritable and ambient sets. Root's children get them anyway; a program given
/// file capabilities needs this for its children to.
pub fn pass_to_children(caps: &[Capability]) -> io::Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read capabilities"))?;
    for cap in caps.iter().filter(|c| permitted.contains(c)) {
        caps::raise(None, CapSet::Inheritable, *cap).map_err(err("raise inheritable"))?;
        caps::raise(None, CapSet::Ambient, *cap).map_err(err("raise ambient"))?;
    }
    Ok(())
}

fn err(what: &'static str) -> impl Fn(caps::errors::CapsError) -> io::Error {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// [`keep_only`] nothing, for a thread that never needs a capability: a failure is logged by the
/// caller's caller, never fatal (the thread works the same).
pub fn drop_all() -> io::Result<()> {
    keep_only(&[], Scope::Thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_drops_everything_has_nothing_and_the_others_keep_theirs() {
        let before = caps::read(None, CapSet::Permitted).unwrap();
        let inside = std::thread::spawn(|| {
            drop_all().unwrap();
            (
                caps::read(None, CapSet::Effective).unwrap(),
                caps::read(None, CapSet::Permitted).unwrap(),
                has(NET_RAW),
                missing(&[NET_RAW], "capturing").unwrap_or_default(),
            )
        })
        .join()
        .unwrap();
        assert!(inside.0.is_empty() && inside.1.is_empty(), "{inside:?}");
        assert!(!inside.2);
        assert!(inside.3.contains("CAP_NET_RAW"), "{}", inside.3);
        assert_eq!(
            caps::read(None, CapSet::Permitted).unwrap(),
            before,
            "another thread keeps its own"
        );
    }

    #[test]
    fn keeping_one_capability_keeps_it_only_if_the_thread_had_it() {
        let had = has(NET_ADMIN);
        let after = std::thread::spawn(|| {
            keep_only(&[NET_ADMIN], Scope::Thread).unwrap();
            caps::read(None, CapSet::Permitted).unwrap()
        })
        .join()
        .unwrap();
        let want: CapsHashSet = if had {
            [NET_ADMIN].into()
        } else {
            CapsHashSet::new()
        };
        assert_eq!(after, want);
    }
}
