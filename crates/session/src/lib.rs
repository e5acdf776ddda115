//! The sans-IO replication core of tcpcopy.
//!
//! [`Replicator`] owns every replicated session. It is driven by its caller in this order:
//! 1. [`Replicator::handle_capture`] with each packet a client sent to the online server,
//!    [`Replicator::handle_response`] with each target packet an intercept reported, and
//!    [`Replicator::handle_timeout`] once [`Replicator::poll_timeout`]'s instant has passed;
//! 2. [`Replicator::drain_transmits`] to send the resulting packets to the target, and
//!    [`Replicator::drain_routes`] to tell the intercepts which client endpoints are ours.
//!
//! It reads no clock, opens no socket and spawns no thread: `now` is always an argument, so the
//! whole state machine runs on simulated time in tests.
#![forbid(unsafe_code)]

mod config;
mod session;
mod stats;
mod timer;

pub use config::{Config, Rule};
pub use session::Replicator;
pub use stats::{ParseStatsError, Stats};
