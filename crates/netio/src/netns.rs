//! Network namespaces: move the calling thread into a named namespace.
//!
//! Owns the `setns(2)` call only; creating and removing namespaces is the lab's job (it runs `ip netns`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the *calling thread* into the network namespace `name` (as made by `ip netns add name`).
///
/// Sockets opened by this thread afterwards belong to that namespace; other threads are unaffected.
pub fn enter(name: &str) -> io::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    // SAFETY: `file` is an open namespace file descriptor that stays alive for the call; setns only
    // changes the calling thread's namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
