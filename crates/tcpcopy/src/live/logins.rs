//! The log lines of a protocol's logins (`--protocol`): how each session's login went at the
//! target, from the core's reports (`Replicator::drain_logins`). A session that got no login
//! is logged at info for the first few of each cause (TLS sessions: the first only, they are
//! many and all alike), then at debug; the counters keep the totals.

use session::{Login, LoginReport};
use tracing::{debug, info};

/// Sessions of one cause logged at info before the rest go to debug.
const INFO_LINES: u64 = 10;

/// One worker's login log.
#[derive(Debug, Default)]
pub(super) struct LoginLog {
    tls: u64,
    failed: u64,
}

impl LoginLog {
    pub fn note(&mut self, r: &LoginReport) {
        let copy = if r.copy > 0 {
            format!(" (copy {})", r.copy)
        } else {
            String::new()
        };
        let (client, online, login) = (r.client, r.online, r.login);
        match login {
            _ if login.logged_in() => debug!("session {client} -> {online}{copy}: {login}"),
            Login::Tls => {
                self.tls += 1;
                if self.tls == 1 {
                    info!(
                        "session {client} -> {online}{copy}: {login}; sessions that use TLS are skipped (counted as tls among the logins)"
                    );
                } else {
                    debug!("session {client} -> {online}{copy}: {login}");
                }
            }
            _ => {
                self.failed += 1;
                if self.failed <= INFO_LINES {
                    info!("session {client} -> {online}{copy}: not logged in: {login}");
                } else {
                    debug!("session {client} -> {online}{copy}: not logged in: {login}");
                }
            }
        }
    }
}
