//! Thin, checked wrappers around the raw socket-option calls the other modules share.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Plain C data that is valid for every bit pattern, so the kernel may fill it in.
///
/// # Safety
/// Implement only for `#[repr(C)]` integer aggregates without padding-sensitive invariants.
pub(crate) unsafe trait Pod: Copy {}

// SAFETY: a C int is valid for every bit pattern.
unsafe impl Pod for libc::c_int {}
// SAFETY: three C unsigned ints; every bit pattern is a valid value.
unsafe impl Pod for libc::tpacket_stats_v3 {}
// SAFETY: `#[repr(C)]` unsigned integers only; every bit pattern is a valid value.
unsafe impl Pod for libc::tcp_info {}

/// Turns a `-1`-on-error return code into an `io::Result`.
pub(crate) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` of exactly the length we pass; the kernel only reads
    // it during the call. `fd` is borrowed, so it stays open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

pub(crate) fn getsockopt<T: Pod>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &mut T,
) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live, writable `T` of `len` bytes and `T: Pod` accepts any bytes the
    // kernel writes; the kernel never writes more than `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *mut T).cast(),
            &mut len,
        )
    };
    check(rc).map(drop)
}

/// Asks for a send buffer of `bytes`: `SO_SNDBUFFORCE` passes `net.core.wmem_max` but needs
/// CAP_NET_ADMIN; without it, the capped `SO_SNDBUF`.
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &bytes).is_ok() {
        return Ok(());
    }
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &bytes)
}

/// Sets a stream socket's `SO_RCVLOWAT`: the poll reports it readable only once `bytes` are
/// waiting (or at its end, or on an error). Reads still return whatever is there. On TCP the
/// kernel re-checks readiness at once, so a lower mark wakes a poller for data already queued.
pub fn set_recv_lowat(fd: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, &bytes).map_err(context("SO_RCVLOWAT"))
}

/// Adds `what` in front of an error's message, keeping its kind.
pub(crate) fn context(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

pub(crate) fn invalid_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
