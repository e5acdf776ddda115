//! What measures tcpcopy, kept out of the production crate: the load harness (wrk against nginx
//! in the lab, our `tcpcopy` and `intercept` run as processes), the comparison with the C
//! TCPCopy, and the packets/s microbenchmark of capture → rewrite → send. The `tcpcopy-bench`
//! binary runs them; it finds `tcpcopy` and `intercept` next to itself.
//!
//! Nothing here is linked into the `tcpcopy` or `intercept` programs. Needs root, and for the
//! harness wrk and nginx.

#![forbid(unsafe_code)]

pub mod ctool;
pub mod harness;
pub mod pps;
