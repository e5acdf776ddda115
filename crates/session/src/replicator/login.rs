//! The replicator's side of the protocol hook ([`crate::dialect`]): a session's conversation
//! begins when the session opens, and the login outcome it reports is counted, handed to the
//! driver and, when it says so, ends the session. What the conversation does with the bytes is
//! its own; this must not look into them.

use std::time::Instant;

use super::Replicator;
use crate::dialect::{DialectSlot, SessionInfo};
use crate::session::{SessionId, State};
use crate::stats::End;
use crate::{Dialect, LoginReport};

impl Replicator {
    /// Sessions from now on speak `dialect`'s protocol (see [`crate::dialect`]).
    pub fn set_dialect(&mut self, dialect: Box<dyn Dialect>) {
        self.dialect = Some(dialect);
    }

    /// How many of the first bytes of each target answer the protocol hook needs (the driver
    /// asks the intercepts for them and hands them to [`Replicator::handle_response_head`]);
    /// `None` without a hook.
    pub fn head_bytes(&self) -> Option<u16> {
        self.dialect.as_ref().map(|d| d.head_bytes())
    }

    /// Whether the protocol hook needs the online server's answers (a live capture then takes
    /// them and hands them to [`Replicator::handle_capture`] or
    /// [`Replicator::handle_online_packet`]).
    pub fn wants_online_answers(&self) -> bool {
        self.dialect.as_ref().is_some_and(|d| d.online_answers())
    }

    /// The protocol hook's line for the end of the run ([`Dialect::summary`]).
    pub fn dialect_summary(&self) -> Option<String> {
        self.dialect.as_ref()?.summary()
    }

    /// Hands over the login outcomes reported since the last call, one per session.
    pub fn drain_logins(&mut self, mut f: impl FnMut(&LoginReport)) {
        self.logins.iter().for_each(&mut f);
        self.logins.clear();
    }

    /// Session `id` opens at the target: its conversation begins.
    pub(super) fn begin_conversation(&mut self, id: SessionId) {
        let (Some(dialect), Some(s)) = (self.dialect.as_mut(), self.sessions.get_mut(id)) else {
            return;
        };
        let info = SessionInfo {
            client: s.client,
            online: s.online,
            copy: s.copy,
            joined: s.state != State::HalfOpen,
        };
        s.dialect = dialect.open(&info).map(|conversation| {
            Box::new(DialectSlot {
                conversation,
                hold: None,
                target_isn: None,
                target_at: None,
                outcome: None,
            })
        });
    }

    /// Takes the login outcome session `id`'s conversation reported, if any: counted, kept for
    /// the driver, and the session ended when the conversation said so. Returns whether it
    /// ended.
    pub(super) fn conclude_login(&mut self, now: Instant, id: SessionId) -> bool {
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        let Some((login, end)) = s.take_login() else {
            return false;
        };
        if !s.baseline {
            self.stats.logins.count(login);
        }
        self.logins.push(LoginReport {
            client: s.client,
            online: s.online,
            copy: s.copy,
            login,
        });
        if end {
            // Its requests are lost as not answered; the login counters say why.
            self.abort(now, id, End::NotAnswered);
        }
        end
    }
}
