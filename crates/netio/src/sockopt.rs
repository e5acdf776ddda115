//! Socket options the drivers need beyond what `socket2` offers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::sys;

/// Sets the socket's receive buffer to `bytes`, past `net.core.rmem_max` (`SO_RCVBUFFORCE`:
/// needs `CAP_NET_ADMIN`). A collector of mirrored traffic needs room for bursts that the
/// default maximum (208 KiB on many systems) does not give.
pub fn force_receive_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &value)
}

/// `tcpi_state` of a closed connection (the kernel's `TCP_CLOSE`; libc does not name it).
const TCP_CLOSE: u8 = 7;

/// Bytes written to a TCP socket that its peer has not acknowledged and still may (`SIOCOUTQ`):
/// 0 once everything was acknowledged, and 0 once the connection is closed (reset: they never
/// will be). Closing a socket abortively (SO_LINGER 0) discards them: a caller that wants its
/// bytes delivered waits for 0 first.
pub fn undelivered(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY (of the zeroed value): `tcp_info` is plain integers, valid when all zero.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    sys::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
        .map_err(sys::context("TCP_INFO"))?;
    if info.tcpi_state == TCP_CLOSE {
        return Ok(0);
    }
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a live descriptor for the borrow; SIOCOUTQ (= TIOCOUTQ) writes one c_int
    // into `n`, which is live and writable during the call.
    sys::check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) })
        .map_err(sys::context("SIOCOUTQ"))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    #[test]
    fn undelivered_counts_what_a_peer_that_stopped_reading_has_not_acknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(super::undelivered(client.as_fd()).unwrap(), 0);
        // The server never reads: past its receive window, written bytes stay unacknowledged.
        client.set_nonblocking(true).unwrap();
        let chunk = [7u8; 64 << 10];
        let mut written = 0;
        loop {
            match client.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let unacked = super::undelivered(client.as_fd()).unwrap();
        assert!(unacked > 0 && unacked <= written, "{unacked} of {written}");
        // Once the server reads it all, everything was acknowledged.
        let mut server = server;
        let mut buf = vec![0u8; 64 << 10];
        let mut read = 0;
        while read < written {
            read += std::io::Read::read(&mut server, &mut buf).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while super::undelivered(client.as_fd()).unwrap() > 0 {
            assert!(Instant::now() < deadline, "the queue never emptied");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Past the peer's window again, then reset by it: nothing more will ever be delivered.
        loop {
            match client.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(super::undelivered(client.as_fd()).unwrap() > 0);
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(5);
        while super::undelivered(client.as_fd()).unwrap() > 0 {
            assert!(Instant::now() < deadline, "still counted after the reset");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
