//! The two programs' drivers: option parsing, validation, and the loops that move packets between
//! the I/O backends (`tcpcopy-netio`) and the sans-IO cores (`tcpcopy-session`, `tcpcopy-protocol`).
//! No protocol logic lives here, and nothing that measures the programs: the load harness, the
//! benchmarks and the C-tool comparison are the `tcpcopy-bench` crate. The lab is linked only for
//! `tcpcopy demo`, behind the default `demo` feature that a packager can turn off.

#![forbid(unsafe_code)]

pub mod channel;
pub mod check;
pub mod cli;
pub mod conffile;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod hostfacts;
pub mod intercept;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod plumbing;
pub mod reporting;
pub mod status;

/// Exit status for bad command-line options (as clap and the C tools use).
pub const EXIT_USAGE: i32 = 2;
