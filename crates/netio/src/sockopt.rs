//! Socket options the drivers need beyond what `socket2` offers.

use std::io;
use std::os::fd::BorrowedFd;

use crate::sys;

/// Sets the socket's receive buffer to `bytes`, past `net.core.rmem_max` (`SO_RCVBUFFORCE`:
/// needs `CAP_NET_ADMIN`). A collector of mirrored traffic needs room for bursts that the
/// default maximum (208 KiB on many systems) does not give.
pub fn force_receive_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &value)
}
