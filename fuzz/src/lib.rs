//! What the fuzz targets share: a scratch file per process for the readers that take a path,
//! and well-formed segments built from fuzz input.
//!
//! The targets are in `fuzz_targets/`. The three that drive a state machine with a sequence of
//! events keep their harness here (`session`, `comparator`, `dialect`), self-contained, so that the
//! regression tests of the crate each exercises replay its inputs on stable (they include the
//! file). CONTRIBUTING.md says how to run a target and how a crash becomes a regression test.
#![forbid(unsafe_code)]

pub mod comparator;
pub mod dialect;
pub mod session;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use arbitrary::{Result, Unstructured};

/// A file only this process writes (in /dev/shm when there is one: no disk I/O per input).
pub fn scratch_file(name: &str) -> PathBuf {
    let dir = PathBuf::from("/dev/shm");
    let dir = if dir.is_dir() {
        dir
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("tcpcopy-fuzz-{}-{name}", std::process::id()))
}

/// One of a few addresses (IPv4 and IPv6), so that endpoints collide often enough to meet.
pub fn address(u: &mut Unstructured<'_>, v6: bool) -> Result<IpAddr> {
    let host = u.int_in_range(1..=3u8)?;
    Ok(if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, u16::from(host)))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, host))
    })
}

/// An endpoint on one of a few addresses and ports.
pub fn endpoint(u: &mut Unstructured<'_>, v6: bool) -> Result<SocketAddr> {
    let ip = address(u, v6)?;
    let port = *u.choose(&[80u16, 8080, 40000, 40001, 65535, 1024])?;
    Ok(SocketAddr::new(ip, port))
}
