//! Sending whole link-layer frames, as given, on one interface (`AF_PACKET`/`SOCK_RAW`).
//!
//! Owns a packet socket bound to nothing, and each send names the interface. It is for tests and
//! tools that need frames the host's own stack would not build, such as a VLAN-tagged frame on a
//! kernel without VLAN devices; tcpcopy's sending is [`crate::link`]'s and [`crate::raw`]'s.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::capture::interface_index;
use crate::sys;

/// A socket that sends frames out of one interface.
#[derive(Debug)]
pub struct FrameSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl FrameSender {
    /// Opens the socket for `interface` (needs `CAP_NET_RAW`). Protocol 0: it receives nothing.
    pub fn open(interface: &str) -> io::Result<FrameSender> {
        let ifindex = interface_index(interface)?;
        // SAFETY: plain socket(2) call with constant arguments.
        let fd = sys::check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(FrameSender { fd, ifindex })
    }

    /// Sends `frame` (link-layer header first) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let addr = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: 0,
            sll_ifindex: self.ifindex,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `frame` is valid for its length during the call, and `addr` is a valid
        // sockaddr_ll passed with its exact size.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != frame.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }
}
