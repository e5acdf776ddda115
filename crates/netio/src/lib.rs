//! Every syscall and every `unsafe` block of tcpcopy lives here, behind small safe types.
//!
//! The protocol logic lives elsewhere (`tcpcopy-session`, `tcpcopy-protocol`): this crate moves bytes
//! between the kernel and the caller and never interprets TCP beyond what a BPF filter needs.
//!
//! - [`bpf`]: the in-kernel prefilter for the capture socket.
//! - [`capture`]: `AF_PACKET` receive ring.
//! - [`raw`]: raw-socket packet sending, behind the [`raw::PacketSink`] trait.
//! - [`frame`]: sending whole link-layer frames as given (tests, tools).
//! - [`link`]: link-layer (`AF_PACKET`) sending of IPv4 packets, with the raw sockets as fallback.
//! - [`nfqueue`]: NFQUEUE reader that drops the target's responses.
//! - [`daemon`]: running in the background (`-d`) without hiding a failed start.
//! - [`netdev`]: device settings (GRO) without the ethtool program.
//! - [`netns`]: moving a thread into a network namespace.
//! - [`privilege`]: capabilities checked up front and dropped after setup.
//! - [`sched`]: thread priority for capture threads.
//! - [`userfilter`]: tcpdump-syntax filters (`-F`), compiled by libpcap, in front of [`bpf`]'s.

pub mod bpf;
pub mod capture;
pub mod daemon;
pub mod frame;
pub mod limits;
pub mod link;
pub mod netdev;
pub mod netns;
pub mod nfqueue;
pub mod privilege;
pub mod raw;
pub mod sched;
pub mod sockopt;
mod sys;
pub mod userfilter;

pub use bpf::{Insn, TcpFilter};
pub use capture::{CaptureStats, CapturedPacket, RingCapture, RingConfig};
pub use link::{LinkSender, SendCounts};
pub use nfqueue::{Fate, ResponseQueue};
pub use raw::{MemorySink, PacketSink, RawSender};
pub use sys::set_recv_lowat;
pub use userfilter::{FilterError, UserFilter};
