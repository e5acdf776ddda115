//! The session core's protocol hook for PostgreSQL (`--protocol postgres`): [`Postgres`] (one
//! per replicator) opens a conversation per session that runs a [`Session`] over the stream.
//!
//! Until the session passes the client's bytes unchanged, every captured byte is fed to it and
//! replaced in the stream by what it gives out (the startup message as captured; nothing for
//! the client's authentication messages and for requests it holds), and what it gives out on
//! the target's messages (the login's answers, then the held requests) is appended at the
//! stream's end. So the stream only ever holds bytes meant for the target, and the core's
//! pacing applies to them as to any request. One exception: bytes that would leave the stream's
//! start empty (an SSLRequest refused online) stay in it, held, until the startup message
//! replaces them; to the core an empty start means a server that speaks first. Once logged in,
//! the conversation steps aside.
//!
//! A session whose first message is a CancelRequest is sent with the target's key for the
//! online backend it names, when known (the `cancel` module owns the map), else not at all:
//! the session ends. So the conversations read the online server's answers during the login,
//! for its BackendKeyData ([`Dialect::online_answers`]).
//!
//! What the target sent reaches the conversation as answer heads, possibly repeated or out of
//! order; a small reassembly puts them in order. A login's answers are a few hundred bytes, well
//! within [`HEAD_BYTES`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use session::dialect::{Conversation, Dialect, Edit, Login as Outcome, SessionInfo};

use super::cancel::{scan_online, CancelCounts, Cancels};
use super::login::LoginError;
use super::message::{CancelKey, Startup};
use super::scram::{ClientNonce, SaltedPasswords, ScramError};
use super::session::{Session, Skip, Status};
use crate::Credentials;

/// How much of each target answer a login needs: its longest answer (AuthenticationOk, a dozen
/// ParameterStatus, BackendKeyData, ReadyForQuery) is about 500 bytes.
pub const HEAD_BYTES: u16 = 2048;
/// Target bytes kept out of order before more are dropped.
const MAX_EARLY_BYTES: usize = 16 * 1024;
/// Clients whose last startup message is remembered for their joined sessions.
const MAX_REMEMBERED: usize = 65_536;

/// The PostgreSQL hook: one per replicator, shared by its sessions' conversations. A clone
/// shares everything with the original (`--protocol auto` keeps one in each undecided session).
#[derive(Debug, Clone)]
pub struct Postgres {
    credentials: Arc<Credentials>,
    /// The last startup message seen from each client host: a session of the same host that
    /// joined after its login logs in the same way.
    startups: Arc<Mutex<HashMap<IpAddr, Startup>>>,
    /// SCRAM's salted passwords, computed once per password and target role.
    salted: Arc<SaltedPasswords>,
    /// The online server's backend keys mapped to the target's, for cancel requests.
    cancels: Arc<Mutex<Cancels>>,
}

impl Postgres {
    pub fn new(credentials: Credentials) -> Postgres {
        Postgres {
            credentials: Arc::new(credentials),
            startups: Arc::default(),
            salted: Arc::default(),
            cancels: Arc::default(),
        }
    }

    /// What the cancel requests came to so far.
    pub fn cancel_counts(&self) -> CancelCounts {
        lock(&self.cancels).counts
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while it was held leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Dialect for Postgres {
    fn open(&mut self, info: &SessionInfo) -> Option<Box<dyn Conversation>> {
        let known = info
            .joined
            .then(|| lock(&self.startups).get(&info.client.ip()).cloned());
        let mut session = Session::new(self.credentials.clone(), known.flatten(), nonce())
            .with_salted_passwords(self.salted.clone());
        if info.joined {
            session = session.joined();
        }
        Some(Box::new(PgConversation {
            session,
            target: Reassembly::default(),
            client: info.client.ip(),
            startups: self.startups.clone(),
            remembered: false,
            reported: false,
            kept_from: None,
            copy: info.copy,
            cancels: self.cancels.clone(),
            // A joined session's login answers were sent before tcpcopy started.
            online_login: !info.joined,
            online_key: None,
            key_shared: false,
        }))
    }

    fn head_bytes(&self) -> u16 {
        HEAD_BYTES
    }

    fn online_answers(&self) -> bool {
        // The online server's BackendKeyData, for cancel requests.
        true
    }

    fn summary(&self) -> Option<String> {
        let c = self.cancel_counts();
        (c != CancelCounts::default()).then(|| {
            format!(
                "postgres cancel requests: {} sent with the target's backend key, {} for a \
                 backend whose target key was not known (not sent)",
                c.mapped, c.not_found
            )
        })
    }
}

/// A fresh SCRAM nonce from the operating system. Should it fail (it does not on Linux), a
/// nonce unique within the process: the exchange still works, only less unpredictably.
fn nonce() -> ClientNonce {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    ClientNonce::random().unwrap_or_else(|_| {
        let n = FALLBACK.fetch_add(1, Ordering::Relaxed);
        // Hex digits and letters: printable, no comma.
        ClientNonce::new(&format!("tcpcopy{n:016x}")).unwrap_or_else(|| unreachable!())
    })
}

#[derive(Debug)]
struct PgConversation {
    session: Session,
    target: Reassembly,
    client: IpAddr,
    startups: Arc<Mutex<HashMap<IpAddr, Startup>>>,
    remembered: bool,
    reported: bool,
    /// Where client bytes begin that were kept in the stream, held, for a later replacement.
    kept_from: Option<u64>,
    /// Which replicated copy of the connection this is: each has its own target backend.
    copy: u16,
    cancels: Arc<Mutex<Cancels>>,
    /// The online server's answers are still the login's (read for its BackendKeyData).
    online_login: bool,
    /// The online backend's key, from its BackendKeyData.
    online_key: Option<CancelKey>,
    /// Both keys known and put in the shared map.
    key_shared: bool,
}

impl Conversation for PgConversation {
    fn client(&mut self, edit: &mut Edit<'_>, from: u64) {
        if (self.reported && self.session.passes_through()) || self.session.is_ended() {
            return;
        }
        let end = edit.end();
        let captured = edit.bytes(from, end).to_vec();
        self.session.handle_client(&captured);
        let mut out = self.session.take_transmit();
        let start = self.kept_from.unwrap_or(from);
        if let Status::Cancel(online) = self.session.status() {
            match lock(&self.cancels).target_key(self.copy, &online) {
                Some(target) => out = target.cancel_request(),
                // Never sent with the online server's key: the session ends, its bytes held.
                None => {
                    edit.hold(Some(0));
                    edit.report(Outcome::Unsupported, true);
                    self.reported = true;
                    return;
                }
            }
        }
        if start == 0 && out.is_empty() {
            // An empty stream start would read, to the core, as a server that speaks first (the
            // next request waiting for a greeting): the bytes stay, held, until replaced.
            self.kept_from = Some(0);
            edit.hold(Some(0));
        } else if self.kept_from.is_some() || out != captured {
            if edit.replace(start, end - start, &out).is_err() {
                // The core hands over unsent bytes only: never happens; end the session if so.
                edit.report(Outcome::Malformed, true);
                self.reported = true;
                return;
            }
            if self.kept_from.take().is_some() {
                edit.hold(None);
            }
        }
        self.remember_startup();
        self.report(edit);
    }

    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, bytes: &[u8]) {
        if self.reported || self.session.is_ended() {
            return;
        }
        for chunk in self.target.push(offset, bytes) {
            self.session.handle_target(&chunk);
        }
        let out = self.session.take_transmit();
        self.share_key();
        if !out.is_empty() && edit.insert(edit.end(), &out).is_err() {
            edit.report(Outcome::Malformed, true);
            self.reported = true;
            return;
        }
        self.report(edit);
    }

    fn online(&mut self, _edit: &mut Edit<'_>, bytes: &[u8]) {
        if !self.online_login {
            return;
        }
        let seen = scan_online(bytes);
        if seen.key.is_some() {
            self.online_key = seen.key;
        }
        self.online_login = !seen.over && self.online_key.is_none();
        self.share_key();
    }
}

impl PgConversation {
    /// Once the session's online and target keys are both known: into the shared map.
    fn share_key(&mut self) {
        if self.key_shared {
            return;
        }
        let (Some(online), Some(target)) = (&self.online_key, self.session.target_key()) else {
            return;
        };
        self.key_shared = true;
        lock(&self.cancels).learn(self.copy, online.clone(), target.clone());
    }

    /// A captured startup message is this client host's login for its joined sessions.
    fn remember_startup(&mut self) {
        if self.remembered || self.session.status() != Status::Pending {
            return;
        }
        let Some(startup) = self.session.startup() else {
            return;
        };
        self.remembered = true;
        let mut startups = lock(&self.startups);
        if startups.len() >= MAX_REMEMBERED && !startups.contains_key(&self.client) {
            startups.clear();
        }
        startups.insert(self.client, startup.clone());
    }

    /// Reports the login's outcome once it is known; a session not logged in ends.
    fn report(&mut self, edit: &mut Edit<'_>) {
        if self.reported {
            return;
        }
        let outcome = match self.session.status() {
            Status::Pending => return,
            Status::LoggedIn { joined: false, .. } => Outcome::LoggedIn,
            Status::LoggedIn { joined: true, .. } => Outcome::JoinedLoggedIn,
            Status::Skipped(skip) => skipped(&skip),
            Status::Failed(error) => failed(&error),
            // Handled in `client`: not a login.
            Status::Cancel(_) => return,
        };
        self.reported = true;
        edit.report(outcome, !outcome.logged_in());
    }
}

fn skipped(skip: &Skip) -> Outcome {
    match skip {
        Skip::Tls | Skip::GssEncryption => Outcome::Tls,
        Skip::Malformed(_) => Outcome::Malformed,
        _ => Outcome::Unsupported,
    }
}

fn failed(error: &LoginError) -> Outcome {
    match error {
        LoginError::Refused(_)
        | LoginError::Scram(ScramError::Signature | ScramError::ServerError(_)) => Outcome::Refused,
        LoginError::NoPassword { .. } | LoginError::NoUser => Outcome::NoCredentials,
        LoginError::UnsupportedMethod(_) | LoginError::NoMechanism(_) => Outcome::Unsupported,
        _ => Outcome::Malformed,
    }
}

/// The target's bytes put back in order from answer heads that may repeat or come early.
#[derive(Debug, Default)]
struct Reassembly {
    next: u64,
    early: BTreeMap<u64, Vec<u8>>,
    early_bytes: usize,
}

impl Reassembly {
    /// Takes `bytes` at `offset`; returns the bytes that are now in order, oldest first.
    fn push(&mut self, offset: u64, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut ready = Vec::new();
        if offset > self.next {
            if self.early_bytes + bytes.len() <= MAX_EARLY_BYTES {
                self.early_bytes += bytes.len();
                self.early.insert(offset, bytes.to_vec());
            }
            return ready;
        }
        self.take(offset, bytes, &mut ready);
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (at, early) = entry.remove_entry();
            self.early_bytes -= early.len();
            self.take(at, &early, &mut ready);
        }
        ready
    }

    fn take(&mut self, offset: u64, bytes: &[u8], ready: &mut Vec<Vec<u8>>) {
        let skip = (self.next - offset) as usize;
        if let Some(new) = bytes.get(skip..).filter(|new| !new.is_empty()) {
            self.next += new.len() as u64;
            ready.push(new.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembly_orders_drops_repeats_and_keeps_early_bytes() {
        let mut r = Reassembly::default();
        assert_eq!(r.push(0, b"abc"), vec![b"abc".to_vec()]);
        assert!(r.push(0, b"abc").is_empty(), "a repeat");
        assert!(r.push(5, b"fg").is_empty(), "early: kept");
        assert_eq!(r.push(2, b"cde"), vec![b"de".to_vec(), b"fg".to_vec()]);
        assert_eq!(r.next, 7);
        assert_eq!(r.early_bytes, 0);
    }

    #[test]
    fn outcomes_map_to_the_cores_counters() {
        assert_eq!(skipped(&Skip::GssEncryption), Outcome::Tls);
        assert_eq!(
            skipped(&Skip::ProtocolVersion(2 << 16)),
            Outcome::Unsupported
        );
        assert_eq!(failed(&LoginError::NoUser), Outcome::NoCredentials);
        assert_eq!(
            failed(&LoginError::Scram(ScramError::Signature)),
            Outcome::Refused
        );
        assert_eq!(failed(&LoginError::Unexpected('Z')), Outcome::Malformed);
    }
}
