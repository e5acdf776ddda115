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
//! whole state machine runs on simulated time in tests, and the same calls send the same packets.
//!
//! Layout, by job: `replicator` (the session table, routing packets to sessions, batches and
//! timers; `capture`, `response` and `lifecycle` beneath it), `keys` (table keys and hashing),
//! `session` (one session's state machine towards the target), `stream` (its client bytes and
//! request boundaries), `dialect` (the protocol hook: what a protocol may edit of them), `rtt` (its RTT estimator), `outbox` (packets on their way out), `closed`
//! (sessions that closed lately), `timer` (the timer wheel), `config` and `stats`. The `testing`
//! module (feature `testing`) holds the seeded simulator, packet builder and PRNG that tests,
//! benches and examples share.
#![forbid(unsafe_code)]

mod closed;
mod config;
pub mod dialect;
mod keys;
mod outbox;
mod replicator;
mod rtt;
mod session;
mod stats;
mod stream;
mod timer;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::{Config, Rule};
pub use dialect::{Conversation, Dialect, Login, LoginReport, Logins};
pub use outbox::SentMark;
pub use replicator::ResponseOwner;
pub use replicator::{Replicator, SESSION_COST};
pub use stats::{LostRequests, ParseStatsError, Stats};
