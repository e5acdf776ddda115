//! MySQL and MariaDB: the login of every session is answered for the target's own greeting.
//!
//! The target's greeting carries its own random salt, so the client's captured login (a
//! scramble of its password for the *online* server's salt) cannot pass at a target that checks
//! passwords. Each session's `Login` conversation therefore holds the client's bytes from the
//! start, waits for the target's greeting, and sends a login of its own in the client's place:
//! the client's handshake response with the scramble made for the target's salt (from the
//! password `--login` gives for its user; without one, the client's scramble is kept, which a
//! `--skip-grant-tables` target takes). The client's further login packets (its answers to the
//! online server's auth switch, say) are dropped; the target's own auth switch is answered; the
//! target's OK releases the client's commands, its error ends the session (counted).
//!
//! Plugins: mysql_native_password, caching_sha2_password and sha256_password. When the target
//! wants the password itself (caching_sha2_password's full authentication, sha256_password),
//! it is sent as a client without TLS sends it: encrypted with the RSA public key the target
//! sends on request (the `auth` module owns that exchange). This needs the password from
//! `--login`.
//!
//! A session open before tcpcopy started (joined: its login never seen) gets a login of its own
//! before its first captured command: as the last login seen from its client's address (with
//! that login's database, restored by COM_INIT_DB), else as the first `--login` user, else as
//! `root` without a password (which only a `--skip-grant-tables` target takes). A session
//! that asks the online server for TLS is skipped.
//!
//! With `--protocol auto` ([`Mysql::detecting`]), only sessions found to be MySQL are treated
//! so: the client's first packet is a handshake response, or the target greets as MySQL, or (a
//! joined session) its server was found to be MySQL before; the others stay bytes.
//!
//! After the login a session's commands are followed (`stmt`): the ids the online server gave
//! its prepared statements are mapped to the target's, and a joined session's statements are
//! prepared again from those its client prepared in other sessions. A session in the
//! compressed protocol is not followed.
//!
//! What sessions share lives in [`Mysql`]: the logins seen per client address, the statements
//! each client address prepared, the servers found to be MySQL, and the statement counters.

mod auth;
mod login;
mod packet;
mod stmt;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use session::dialect::{Conversation, Dialect, SessionInfo};

use crate::Credentials;
use login::Login;
use packet::HandshakeResponse;
pub use stmt::StatementCounts;

/// First bytes of each target answer a login needs: a greeting (about 100 bytes), an auth
/// switch, an OK or an error, with room to spare.
pub(crate) const HEAD_BYTES: u16 = 512;

/// Client addresses whose last login is remembered; then the table starts over.
const MAX_SEEN: usize = 1 << 16;

/// The MySQL hook: one per replicator, or shared by several (a clone shares everything with
/// the original: the capture threads of `--threads` see each other's logins and statements).
#[derive(Clone, Debug)]
pub struct Mysql {
    credentials: Arc<Credentials>,
    seen: Arc<Mutex<Seen>>,
    counters: Arc<stmt::Counters>,
    /// Only sessions found to be MySQL are (`--protocol auto`), the others are bytes.
    detect: bool,
}

impl Mysql {
    pub fn new(credentials: Credentials) -> Mysql {
        Mysql {
            credentials: Arc::new(credentials),
            seen: Arc::default(),
            counters: Arc::default(),
            detect: false,
        }
    }

    /// A hook that finds out which sessions are MySQL: those whose client's first packet is a
    /// MySQL handshake response or whose target greets as a MySQL server, and the joined
    /// sessions of servers found so; the others stay bytes.
    pub fn detecting(credentials: Credentials) -> Mysql {
        Mysql {
            detect: true,
            ..Mysql::new(credentials)
        }
    }
}

impl Dialect for Mysql {
    fn open(&mut self, session: &SessionInfo) -> Option<Box<dyn Conversation>> {
        Some(Box::new(Login::new(
            *session,
            self.credentials.clone(),
            self.seen.clone(),
            self.counters.clone(),
            self.detect,
        )))
    }

    fn head_bytes(&self) -> u16 {
        HEAD_BYTES
    }

    fn online_answers(&self) -> bool {
        // The online server's statement ids (see `stmt`).
        true
    }

    fn summary(&self) -> Option<String> {
        let c = self.counters.snapshot();
        if c == StatementCounts::default() {
            return None;
        }
        let mut line = format!(
            "mysql prepared statements: {} prepared at the target, {} commands with the id \
             mapped, {} re-prepared for joined sessions, {} naming a statement not found",
            c.prepared, c.mapped, c.reprepared, c.unknown
        );
        if c.users_changed + c.user_changes_failed > 0 {
            line += &format!(
                "; COM_CHANGE_USER {} ok, {} failed at the target",
                c.users_changed, c.user_changes_failed
            );
        }
        Some(line)
    }
}

/// The statements one client address prepared with one server, by online id (`None`: different
/// statements under that id).
type Catalog = HashMap<u32, Option<Arc<[u8]>>>;

/// The last login seen from each client address, for its joined sessions.
#[derive(Debug, Default)]
struct Seen {
    last: HashMap<IpAddr, LastLogin>,
    /// Online servers whose sessions were found to be MySQL (`--protocol auto`).
    servers: HashSet<SocketAddr>,
    /// The statements prepared by each client address with each online server, by their online
    /// ids, for its joined sessions to prepare again (`None`: sessions prepared different
    /// statements under that id, which names none for sure); and the bytes of SQL kept.
    statements: HashMap<(IpAddr, SocketAddr), Catalog>,
    statement_bytes: usize,
}

#[derive(Clone, Debug)]
struct LastLogin {
    /// The client's handshake response, its scramble removed.
    hello: HandshakeResponse,
    /// Its current database: the login's, or the last COM_INIT_DB's.
    database: Option<String>,
}

impl Seen {
    /// Client `ip` prepared `sql` as `id` with `server`.
    fn remember_statement(&mut self, ip: IpAddr, server: SocketAddr, id: u32, sql: Arc<[u8]>) {
        /// Statements remembered per client address and server at most; SQL kept at most, in
        /// all and of one statement (longer ones are not prepared again).
        const MAX_STATEMENTS: usize = 4096;
        const MAX_BYTES: usize = 64 << 20;
        const MAX_SQL: usize = 64 << 10;
        if sql.len() > MAX_SQL {
            return;
        }
        let key = (ip, server);
        if self.statement_bytes + sql.len() > MAX_BYTES
            || (self.statements.len() >= MAX_SEEN && !self.statements.contains_key(&key))
        {
            self.statements.clear();
            self.statement_bytes = 0;
        }
        let known = self.statements.entry(key).or_default();
        if known.len() >= MAX_STATEMENTS && !known.contains_key(&id) {
            let freed: usize = known.values().flatten().map(|s| s.len()).sum();
            self.statement_bytes -= freed;
            known.clear();
        }
        match known.get_mut(&id) {
            None => {
                self.statement_bytes += sql.len();
                known.insert(id, Some(sql));
            }
            Some(Some(old)) if **old != *sql => {
                self.statement_bytes -= old.len();
                known.insert(id, None);
            }
            Some(_) => {}
        }
    }

    /// The statement client `ip` prepared as `id` with `server`, if seen, and the same in
    /// every session that prepared one under that id.
    fn statement(&self, ip: IpAddr, server: SocketAddr, id: u32) -> Option<Arc<[u8]>> {
        self.statements.get(&(ip, server))?.get(&id)?.clone()
    }

    fn remember(&mut self, ip: IpAddr, login: LastLogin) {
        if self.last.len() >= MAX_SEEN && !self.last.contains_key(&ip) {
            self.last.clear();
        }
        self.last.insert(ip, login);
    }
}

/// Locks the shared table; a panic elsewhere while it was held leaves it usable (it holds
/// plain data).
fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
