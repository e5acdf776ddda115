//! The two programs' drivers: option parsing, validation, and the loops that move packets between
//! the I/O backends (`tcpcopy-netio`) and the sans-IO cores (`tcpcopy-session`, `tcpcopy-protocol`).
//! No protocol logic lives here.

pub mod cli;
pub mod config;
pub mod demo;
pub mod intercept;
pub mod live;
pub mod logging;
pub mod plumbing;
pub mod pps;
pub mod scenario;

/// Exit status for bad command-line options (as clap and the C tools use).
pub const EXIT_USAGE: i32 = 2;
