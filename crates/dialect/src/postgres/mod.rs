//! PostgreSQL sessions replayed whole, logins included (`--protocol postgres`).
//!
//! A login does not replay as bytes: with md5 and SCRAM-SHA-256 the client's answers are made
//! for the online server's salt and nonce, and a "trust" target answers a login the client never
//! expected. This module redoes each session's login at the target with the passwords of
//! `--login`, and lets everything after it pass as captured.
//!
//! Layout: `message` (the v3 wire format: framing and the messages a login reads and writes),
//! `scram` (SCRAM-SHA-256's client side and the md5 hash), `login` (one login at the target,
//! driven by the target's messages), `cancel` (cancel requests: the online server's backend
//! keys mapped to the target's), `session` (one connection: the client's bytes and the
//! target's in, the target's bytes out), `hook` (the session core's protocol hook over it).
//!
//! Sans-IO: no socket, no clock, no randomness of its own (the SCRAM nonce is an argument).

mod cancel;
mod hook;
mod login;
pub mod message;
mod scram;
mod session;

pub use cancel::CancelCounts;
pub use hook::{Postgres, HEAD_BYTES};
pub use login::{Login, LoginError, Method, Step};
pub use scram::{
    md5_password, prepare_password, ClientNonce, SaltedPasswords, ScramClient, ScramError,
    ScramProof,
};
pub use session::{Session, Skip, Status};
