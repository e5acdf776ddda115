//! NFQUEUE reader for the intercept: takes the target's responses out of the kernel.
//!
//! Owns the netlink queue binding (through the `nfq` crate) and the verdicts. Every packet it sees
//! gets a DROP verdict unless the caller says it may pass ([`Fate::Pass`]): the responses must never
//! reach the client, so the queue is also configured to fail closed (a full queue drops instead of
//! accepting). What the packets mean is the caller's business. `recv_drop` blocks, so the queue
//! belongs on a thread of its own.
//!
//! `nfq` keeps its netlink socket private, yet the default receive buffer (`net.core.rmem_default`,
//! usually 208 KiB) loses about a quarter of a 20 000-packet burst. So `open` finds the socket the
//! way `ss` would, as the one `NETLINK_NETFILTER` socket that `nfq::Queue::open` added to the
//! calling thread's namespace (`/proc/thread-self/net/netlink`), and raises its buffer. Found,
//! it also gets a receive timeout, so that `recv_drop` returns now and then without traffic and
//! its caller can change the copy range ([`ResponseQueue::set_copy_range`]) without waiting for
//! a packet.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use nfq::{Queue, Verdict};

use crate::sys;

/// What becomes of a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Dropped: it never leaves the host.
    Drop,
    /// Accepted: it goes on to its destination.
    Pass,
}
/// Most packets handled per `recv_drop` call.
const BATCH: usize = 256;
/// Netlink receive buffer: room for tens of thousands of queued packets between two reads.
const RECEIVE_BUFFER: libc::c_int = 32 << 20;
/// Longest `recv_drop` waits without a packet, when the socket was found.
const RECEIVE_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 0,
    tv_usec: 100_000,
};

pub struct ResponseQueue {
    queue: Queue,
    num: u16,
    /// Inode of the netlink socket, when it could be told apart from other netfilter sockets.
    inode: Option<u64>,
}

impl ResponseQueue {
    /// Binds queue `queue_num` and asks for the first `copy_range` bytes of each packet; the
    /// kernel queues `max_len` packets at most (then drops new ones).
    ///
    /// Fails if another socket already holds the queue. Finding the netlink socket to raise its
    /// receive buffer is best effort: [`lost`](Self::lost) says whether it was found.
    pub fn open(queue_num: u16, copy_range: u16, max_len: u32) -> io::Result<Self> {
        let ctx = |what| sys::context(format!("NFQUEUE {queue_num}: {what}"));
        let before = netfilter_sockets().unwrap_or_default();
        let mut queue = Queue::open().map_err(ctx("open netlink socket"))?;
        let mut added = netfilter_sockets().unwrap_or_default();
        added.retain(|s| !before.iter().any(|b| b.inode == s.inode));
        let inode = match added[..] {
            [ours] => Some(ours.inode),
            _ => None,
        };
        if let Some(fd) = inode.and_then(socket_fd) {
            // SAFETY: `fd` is the socket owned by `queue`, which stays open across this borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            // SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN.
            sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RECEIVE_BUFFER)
                .or_else(|_| {
                    sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RECEIVE_BUFFER)
                })
                .map_err(ctx("raise receive buffer"))?;
            sys::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &RECEIVE_TIMEOUT)
                .map_err(ctx("set receive timeout"))?;
        }
        queue.bind(queue_num).map_err(ctx("bind"))?;
        queue
            .set_copy_range(queue_num, copy_range)
            .map_err(ctx("set copy range"))?;
        queue
            .set_queue_max_len(queue_num, max_len)
            .map_err(ctx("set queue length"))?;
        queue
            .set_fail_open(queue_num, false)
            .map_err(ctx("turn fail-open off"))?;
        Ok(Self {
            queue,
            num: queue_num,
            inode,
        })
    }

    /// Asks for the first `copy_range` bytes of each packet from now on (65535: whole packets).
    ///
    /// `nfq` discards the packets that arrive while it waits for the kernel's acknowledgment
    /// without a verdict: the kernel keeps them queued (the target retransmits what they held).
    /// So change it rarely, right after a `recv_drop`.
    pub fn set_copy_range(&mut self, copy_range: u16) -> io::Result<()> {
        let num = self.num;
        self.queue
            .set_copy_range(num, copy_range)
            .map_err(sys::context(format!("NFQUEUE {num}: set copy range")))
    }

    /// Blocks until at least one packet is queued, then hands each queued packet's bytes (IP header
    /// first, at most `copy_range` of them) to `f` and drops it, or lets it pass when `f` says so.
    /// Returns how many packets it handled; 0 if a signal interrupted the wait or the receive
    /// timeout passed (see the module doc).
    pub fn recv_drop(&mut self, mut f: impl FnMut(&[u8]) -> Fate) -> io::Result<usize> {
        self.queue.set_nonblocking(false);
        let first = match self.queue.recv() {
            Ok(msg) => msg,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(0)
            }
            Err(e) => return Err(e),
        };
        self.drop_packet(first, &mut f)?;

        self.queue.set_nonblocking(true);
        let mut count = 1;
        while count < BATCH {
            match self.queue.recv() {
                Ok(msg) => self.drop_packet(msg, &mut f)?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
            count += 1;
        }
        Ok(count)
    }

    /// Packets the kernel could not deliver because the netlink receive buffer was full (they were
    /// dropped, not leaked). `None` if the socket could not be identified. Call it from a thread in
    /// the queue's network namespace.
    pub fn lost(&self) -> Option<u64> {
        let inode = self.inode?;
        netfilter_sockets()
            .ok()?
            .into_iter()
            .find(|s| s.inode == inode)
            .map(|s| s.drops)
    }

    fn drop_packet(
        &mut self,
        mut msg: nfq::Message,
        f: &mut impl FnMut(&[u8]) -> Fate,
    ) -> io::Result<()> {
        let verdict = match f(msg.get_payload()) {
            Fate::Drop => Verdict::Drop,
            Fate::Pass => Verdict::Accept,
        };
        msg.set_verdict(verdict);
        self.queue.verdict(msg)
    }
}

impl fmt::Debug for ResponseQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseQueue")
            .field("num", &self.num)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NetlinkSocket {
    inode: u64,
    drops: u64,
}

/// The `NETLINK_NETFILTER` sockets of the calling thread's network namespace.
fn netfilter_sockets() -> io::Result<Vec<NetlinkSocket>> {
    Ok(parse_netlink_table(&fs::read_to_string(
        "/proc/thread-self/net/netlink",
    )?))
}

/// Parses `/proc/net/netlink`: `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`.
fn parse_netlink_table(table: &str) -> Vec<NetlinkSocket> {
    let protocol = libc::NETLINK_NETFILTER.to_string();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(1) != Some(&protocol.as_str()) {
                return None;
            }
            Some(NetlinkSocket {
                drops: cols.get(8)?.parse().ok()?,
                inode: cols.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The descriptor of this process that refers to socket `inode`.
fn socket_fd(inode: u64) -> Option<RawFd> {
    let target = format!("socket:[{inode}]");
    fs::read_dir("/proc/thread-self/fd")
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| {
            fs::read_link(entry.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
        })?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_table_keeps_only_netfilter_sockets() {
        let table = "\
sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode
000000002be2efd2 0   0          00000000 0        0        0     2        0        4
00000000aaaaaaaa 12  1234       00000000 0        0        0     2        17       9001
00000000bbbbbbbb 12  -42        00000000 0        0        0     2        0
";
        assert_eq!(
            parse_netlink_table(table),
            [NetlinkSocket {
                inode: 9001,
                drops: 17
            }]
        );
        assert!(parse_netlink_table("").is_empty());
    }
}
