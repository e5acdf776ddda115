//! One session's MySQL conversation: its login made for the target, then its commands followed
//! as captured (ahead of what the target got): the database it selects, its prepared
//! statements (their ids mapped by `stmt`), and a change of user, made again for the target's
//! salt like the login. See the module above for what it does; the phases below for the order.

use std::sync::{Arc, Mutex};

use session::dialect::{Conversation, Edit, SessionInfo};
use session::Login as Outcome;

use super::auth;
use super::packet::{
    self, AuthAnswer, ChangeUser, ClientHello, Greeting, HandshakeResponse, COM_INIT_DB, HEADER,
};
use super::stmt::{self, Counters, Statements, Step};
use super::{lock, LastLogin, Seen, HEAD_BYTES};
use crate::Credentials;

/// After a command, [`Login::follow`]'s walk: goes on past it, holds at it (it is not all there,
/// or waits for an answer), or stops (a change of user under way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    On,
    Hold,
    Stop,
}

/// Where the login stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the target's greeting and the client's first packet (either may come
    /// first).
    Greeting,
    /// Our login went; waiting for the target's verdict.
    Auth,
    /// A joined session's COM_INIT_DB went; waiting for its answer.
    InitDb,
    /// Logged in: the client's bytes go as they are.
    Open,
    /// Ended or skipped: nothing more to do.
    Over,
}

#[derive(Debug)]
pub(super) struct Login {
    info: SessionInfo,
    credentials: Arc<Credentials>,
    seen: Arc<Mutex<Seen>>,
    phase: Phase,
    greeting: Option<Greeting>,
    /// The client's handshake response, at `at`, waiting for the greeting, and its length.
    pending: Option<(HandshakeResponse, u64)>,
    /// The session has no login of its own (joined, or its first packet was a command).
    own_login: bool,
    /// The client's packets are still its login's (no command seen yet).
    client_in_login: bool,
    /// Not known yet whether the session is MySQL (`--protocol auto`).
    detect: bool,
    /// The login we sent, for an auth switch: its user and the client's own scramble.
    user: String,
    client_auth: Vec<u8>,
    /// Where the target's authentication plugin stands (what its AuthMoreData asks for).
    exchange: auth::Exchange,
    /// Database to restore after a login of our own.
    restore_db: Option<String>,
    /// Where our next packet goes; while logging in the stream is held here.
    at: u64,
    /// The next client packet to look at.
    cpos: u64,
    /// The target's bytes from `tnext - tbuf.len()` to `tnext`, not yet read as packets.
    tbuf: Vec<u8>,
    tnext: u64,
    /// Its prepared statements' ids, online and at the target.
    stmts: Statements,
    /// The session uses the compressed protocol: its commands are not followed.
    compressed: bool,
    /// The capabilities of the login sent (the connection's).
    capabilities: u32,
    /// A COM_CHANGE_USER is under way (its answer is not the session's login outcome), and
    /// where it ends: target answers that acknowledge less answer earlier commands (the
    /// client's commands are read as captured, ahead of what the target got).
    changing_user: bool,
    change_end: u64,
}

impl Login {
    pub(super) fn new(
        info: SessionInfo,
        credentials: Arc<Credentials>,
        seen: Arc<Mutex<Seen>>,
        counters: Arc<Counters>,
        detect: bool,
    ) -> Self {
        let stmts = Statements::new(&info, seen.clone(), counters);
        Login {
            stmts,
            compressed: false,
            capabilities: 0,
            changing_user: false,
            change_end: 0,
            own_login: info.joined,
            client_in_login: true,
            detect,
            info,
            credentials,
            seen,
            phase: Phase::Greeting,
            greeting: None,
            pending: None,
            user: String::new(),
            client_auth: Vec::new(),
            exchange: auth::Exchange::default(),
            restore_db: None,
            at: 0,
            cpos: 0,
            tbuf: Vec::new(),
            tnext: 0,
        }
    }

    /// Ends the conversation with `outcome`; `end`: the session too.
    fn over(&mut self, edit: &mut Edit<'_>, outcome: Outcome, end: bool) {
        self.phase = Phase::Over;
        edit.hold(None);
        edit.report(outcome, end);
    }

    /// Inserts our packet at `at` and holds the stream right after it.
    fn send(&mut self, edit: &mut Edit<'_>, seq: u8, payload: &[u8]) {
        let mut p = Vec::with_capacity(HEADER + payload.len());
        packet::write(&mut p, seq, payload);
        // `at` is never before what was sent: the stream is held there.
        if edit.insert(self.at, &p).is_err() {
            return self.over(edit, Outcome::Malformed, true);
        }
        if self.cpos >= self.at {
            self.cpos += p.len() as u64;
        }
        self.at += p.len() as u64;
        edit.hold(Some(self.at));
    }

    /// Our login: `hello` (the client's, or one of our own) with the scramble for the target's
    /// salt, in place of the client's packet of `replace` bytes at `at`.
    fn log_in(&mut self, edit: &mut Edit<'_>, mut hello: HandshakeResponse, replace: u64) {
        let Some(g) = &self.greeting else {
            return;
        };
        self.user = hello.user.clone();
        self.client_auth = std::mem::take(&mut hello.auth);
        hello.auth = match self.credentials.password(&hello.user) {
            Some(pw) => match auth::scramble(&g.plugin, pw, &g.salt) {
                Some(s) => s,
                None => return self.over(edit, Outcome::Unsupported, true),
            },
            // No password known: the client's own scramble, which a target that checks no
            // passwords takes (and one that does refuses, counted).
            None => self.client_auth.clone(),
        };
        self.exchange = auth::Exchange::new(&g.plugin, &g.salt, &hello.auth);
        self.capabilities = hello.capabilities;
        // Both asked for it: after the login every packet is in compressed frames. A client
        // that compresses with the online server cannot be replayed to a target that does not.
        let compress = packet::CLIENT_COMPRESS | packet::CLIENT_ZSTD_COMPRESSION;
        if hello.capabilities & compress & !g.capabilities != 0 {
            return self.over(edit, Outcome::Unsupported, true);
        }
        self.compressed = hello.capabilities & compress != 0;
        if hello.capabilities & packet::CLIENT_PLUGIN_AUTH != 0 {
            hello.plugin = Some(g.plugin.clone());
        }
        let mut p = Vec::new();
        packet::write(&mut p, 1, &hello.payload());
        if edit.replace(self.at, replace, &p).is_err() {
            return self.over(edit, Outcome::Malformed, true);
        }
        self.at += p.len() as u64;
        self.cpos = self.at;
        self.phase = Phase::Auth;
        edit.hold(Some(self.at));
    }

    /// A login of our own for a session whose login was never seen.
    fn own_log_in(&mut self, edit: &mut Edit<'_>) {
        let Some(caps) = self.greeting.as_ref().map(|g| g.capabilities) else {
            return;
        };
        let last = lock(&self.seen).last.get(&self.info.client.ip()).cloned();
        let (hello, db) = match last {
            Some(l) => (l.hello, l.database),
            None => {
                let user = self.credentials.first().map_or("root", |l| l.user.as_str());
                (HandshakeResponse::own(user, caps), None)
            }
        };
        let hello = HandshakeResponse {
            database: None,
            ..hello
        };
        self.restore_db = db;
        // Inserted before the client's first command, which waits behind the hold.
        self.log_in(edit, hello, 0);
    }

    /// The client's COM_CHANGE_USER (`payload`, `len` bytes at `cpos`), made again for the
    /// target's salt with the password `--login` gives for its user (without one, as the
    /// client sent it): the client's further packets of that exchange (its answers to the
    /// online server) are dropped, the target's auth switch is answered, and its verdict ends
    /// the exchange (counted; a refusal leaves the session to the target). Returns whether it
    /// was sent (the stream is then held until the verdict).
    fn change_user(&mut self, edit: &mut Edit<'_>, payload: &[u8], len: u64) -> bool {
        let (Some(mut change), Some(g)) = (
            ChangeUser::parse(payload, self.capabilities),
            self.greeting.as_ref(),
        ) else {
            return false;
        };
        let plugin = change.plugin.clone().unwrap_or_else(|| g.plugin.clone());
        self.user = change.user.clone();
        self.client_auth = change.auth.clone();
        if let Some(s) = self
            .credentials
            .password(&change.user)
            .and_then(|pw| auth::scramble(&plugin, pw, &g.salt))
        {
            change.auth = s;
        }
        self.exchange = auth::Exchange::new(&plugin, &g.salt, &change.auth);
        let mut p = Vec::new();
        packet::write(&mut p, 0, &change.payload());
        if edit.replace(self.cpos, len, &p).is_err() {
            return false;
        }
        self.at = self.cpos + p.len() as u64;
        self.cpos = self.at;
        self.phase = Phase::Auth;
        self.changing_user = true;
        self.change_end = self.at;
        self.client_in_login = true;
        edit.hold(Some(self.at));
        true
    }

    /// The login or a change of user did not pass at the target: a login ends the session
    /// (counted as `outcome`); a change of user is counted, and the session left to the
    /// target.
    fn failed(&mut self, edit: &mut Edit<'_>, outcome: Outcome) {
        if !std::mem::take(&mut self.changing_user) {
            return self.over(edit, outcome, true);
        }
        self.stmts.bump(|c| &c.user_changes_failed);
        self.phase = Phase::Open;
        edit.hold(None);
        self.scan_client(edit);
    }

    /// The target's OK to our login.
    fn logged_in(&mut self, edit: &mut Edit<'_>) {
        if std::mem::take(&mut self.changing_user) {
            self.stmts.bump(|c| &c.users_changed);
            self.phase = Phase::Open;
            edit.hold(None);
            self.scan_client(edit);
            return;
        }
        if let Some(db) = self.restore_db.take() {
            let mut payload = vec![COM_INIT_DB];
            payload.extend_from_slice(db.as_bytes());
            self.send(edit, 0, &payload);
            self.phase = Phase::InitDb;
            return;
        }
        self.phase = Phase::Open;
        edit.hold(None);
        let outcome = if self.own_login {
            Outcome::JoinedLoggedIn
        } else {
            Outcome::LoggedIn
        };
        edit.report(outcome, false);
        self.scan_client(edit);
    }

    /// The client's packets from `cpos` on.
    fn scan_client(&mut self, edit: &mut Edit<'_>) {
        while self.phase != Phase::Over {
            if self.phase == Phase::Open && !self.client_in_login {
                self.track(edit);
                return;
            }
            let bytes = edit.bytes(self.cpos, edit.end());
            let Some((seq, payload)) = packet::split(bytes) else {
                if self.phase == Phase::Open {
                    // A packet not all there may still be a login packet to drop.
                    edit.hold(Some(self.cpos));
                }
                return;
            };
            let len = (HEADER + payload.len()) as u64;
            if seq == 0 {
                // A command: it waits for the login. With no login of the client's before it,
                // the login is ours to make.
                self.client_in_login = false;
                if self.phase == Phase::Greeting && self.pending.is_none() {
                    self.own_login = true;
                    self.own_log_in(edit);
                }
                if self.phase == Phase::Open {
                    continue;
                }
                return;
            }
            if !self.client_in_login {
                // Commands wait for the login; this is one's later packet.
                return;
            }
            if self.phase != Phase::Greeting || self.pending.is_some() {
                // The client's further login packets answered the online server: dropped.
                if edit.replace(self.cpos, len, &[]).is_err() {
                    return self.over(edit, Outcome::Malformed, true);
                }
                continue;
            }
            match HandshakeResponse::parse(payload) {
                Some(ClientHello::Tls) => return self.over(edit, Outcome::Tls, true),
                None => return self.over(edit, Outcome::Malformed, true),
                Some(ClientHello::Response(hello)) => {
                    let mut remembered = hello.clone();
                    remembered.auth.clear();
                    let database = hello.database.clone();
                    lock(&self.seen).remember(
                        self.info.client.ip(),
                        LastLogin {
                            hello: remembered,
                            database,
                        },
                    );
                    self.at = self.cpos;
                    if self.greeting.is_some() {
                        self.log_in(edit, hello, len);
                    } else {
                        // Read past: the client's further login packets behind it go.
                        self.pending = Some((hello, len));
                        self.cpos += len;
                    }
                }
            }
        }
    }

    /// Logged in: follows the client's commands, for the database it selects (for its
    /// client's later joined sessions) and the statements it prepares and names (their ids
    /// mapped to the target's: see [`stmt`]). Holds the stream at a command it must read
    /// whole first, or that waits for a prepare's answer.
    fn track(&mut self, edit: &mut Edit<'_>) {
        if self.compressed {
            // Compressed frames, not packets: they go as they are (statement ids not mapped).
            self.cpos = u64::MAX;
            edit.hold(None);
            return;
        }
        let wait = self.follow(edit);
        if self.phase == Phase::Open {
            edit.hold(wait.then_some(self.cpos));
        }
    }

    /// [`Login::track`]'s walk; returns whether to hold at `cpos`.
    fn follow(&mut self, edit: &mut Edit<'_>) -> bool {
        loop {
            if self.cpos < edit.buffered_from() {
                // Acknowledged and gone before it was read (not while a client sends packet
                // by packet): no more following.
                self.cpos = u64::MAX;
                return false;
            }
            let bytes = edit.bytes(self.cpos, edit.end());
            let Some(len) = packet::payload_len(bytes) else {
                return !bytes.is_empty();
            };
            // A command: sequence id 0, a payload (an empty packet ends a long one before it).
            if bytes[3] == 0 && len > 0 {
                match self.command(edit, len) {
                    Next::On => {}
                    Next::Hold => return true,
                    Next::Stop => return false,
                }
            }
            self.cpos += (HEADER + len) as u64;
        }
    }

    /// The client's command at `cpos` (a payload of `len` bytes): what it changes of the
    /// session's state, and whether the walk goes on past it.
    fn command(&mut self, edit: &mut Edit<'_>, len: usize) -> Next {
        /// A command longer than this is not held back to be read whole (nor remembered).
        const MAX_WHOLE: usize = 1 << 20;
        let bytes = edit.bytes(self.cpos, edit.end());
        let Some(&command) = bytes.get(HEADER) else {
            return Next::Hold;
        };
        let whole = packet::split(bytes).map(|(_, p)| p.to_vec());
        let read_whole = matches!(
            command,
            COM_INIT_DB | stmt::COM_STMT_PREPARE | stmt::COM_CHANGE_USER
        );
        if read_whole && whole.is_none() && len < MAX_WHOLE {
            // The rest comes later: it waits for it.
            return Next::Hold;
        }
        match command {
            COM_INIT_DB => {
                if let Some(payload) = whole {
                    let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                    if let Some(l) = lock(&self.seen).last.get_mut(&self.info.client.ip()) {
                        l.database = Some(db);
                    }
                }
            }
            stmt::COM_STMT_PREPARE => {
                if let Some(payload) = whole {
                    let end = self.cpos + (HEADER + len) as u64;
                    self.stmts
                        .prepare(end, edit.client_offset(end), &payload[1..]);
                }
            }
            c if stmt::names_statement(c) && len >= 5 => {
                if bytes.len() < HEADER + 5 {
                    return Next::Hold;
                }
                if self.stmts.command(edit, &mut self.cpos, c) == Step::Wait {
                    return Next::Hold;
                }
            }
            stmt::COM_RESET_CONNECTION => self.stmts.forget_all(),
            stmt::COM_CHANGE_USER => {
                self.stmts.forget_all();
                if let Some(payload) = whole {
                    if self.change_user(edit, &payload, (HEADER + len) as u64) {
                        return Next::Stop;
                    }
                }
            }
            _ => {}
        }
        Next::On
    }

    /// The target's packets in `tbuf`, one at a time.
    fn read_target(&mut self, edit: &mut Edit<'_>) {
        while matches!(self.phase, Phase::Greeting | Phase::Auth | Phase::InitDb) {
            let Some((seq, payload)) = packet::split(&self.tbuf) else {
                // A packet longer than the head asked for never comes whole: a public key of
                // more than 2048 bits, say.
                let n = packet::payload_len(&self.tbuf).unwrap_or(0);
                if self.phase == Phase::Auth && HEADER + n > usize::from(HEAD_BYTES) {
                    self.failed(edit, Outcome::Unsupported);
                }
                return;
            };
            let len = HEADER + payload.len();
            let payload = payload.to_vec();
            self.tbuf.drain(..len);
            match self.phase {
                Phase::Greeting => self.greeted(edit, &payload),
                Phase::Auth => self.answered(edit, seq, &payload),
                _ => {
                    // The database may be gone at the target: the session goes on anyway.
                    self.restore_db = None;
                    self.logged_in(edit);
                }
            }
        }
    }

    fn greeted(&mut self, edit: &mut Edit<'_>, payload: &[u8]) {
        let Some(g) = Greeting::parse(payload) else {
            let outcome = if payload.first() == Some(&0xff) {
                Outcome::Refused
            } else {
                Outcome::Malformed
            };
            return self.over(edit, outcome, true);
        };
        self.greeting = Some(g);
        if let Some((hello, len)) = self.pending.take() {
            self.log_in(edit, hello, len);
            self.scan_client(edit);
        } else if self.own_login && edit.end() > self.cpos {
            self.own_log_in(edit);
        } else {
            self.scan_client(edit);
        }
    }

    fn answered(&mut self, edit: &mut Edit<'_>, seq: u8, payload: &[u8]) {
        match AuthAnswer::parse(payload) {
            Some(AuthAnswer::Ok) => self.logged_in(edit),
            Some(AuthAnswer::Err(..)) => self.failed(edit, Outcome::Refused),
            Some(AuthAnswer::Switch { plugin, salt }) => {
                let data = match self.credentials.password(&self.user) {
                    Some(pw) => auth::scramble(&plugin, pw, &salt),
                    None => Some(self.client_auth.clone()),
                };
                match data {
                    Some(d) => {
                        self.exchange = auth::Exchange::new(&plugin, &salt, &d);
                        self.send(edit, seq.wrapping_add(1), &d)
                    }
                    None => self.failed(edit, Outcome::Unsupported),
                }
            }
            // caching_sha2_password's fast path passed (its OK follows), or its full
            // authentication, or sha256_password's public key: the password RSA-encrypted.
            Some(AuthAnswer::More(d)) => {
                let password = self.credentials.password(&self.user);
                match self.exchange.more(&d, password) {
                    auth::Reply::Send(p) => self.send(edit, seq.wrapping_add(1), &p),
                    auth::Reply::Wait => {}
                    auth::Reply::Unsupported => self.failed(edit, Outcome::Unsupported),
                    auth::Reply::Malformed => self.failed(edit, Outcome::Malformed),
                }
            }
            None => self.failed(edit, Outcome::Malformed),
        }
    }
}

impl Conversation for Login {
    fn client(&mut self, edit: &mut Edit<'_>, _from: u64) {
        if self.detect && !self.detect_client(edit) {
            return;
        }
        if self.phase == Phase::Over {
            return;
        }
        if self.phase != Phase::Open && edit.held_at().is_none() {
            edit.hold(Some(self.at));
        }
        self.scan_client(edit);
    }

    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, bytes: &[u8]) {
        let earlier = self.changing_user && edit.acked().is_none_or(|a| a < self.change_end);
        if self.phase == Phase::Open || earlier {
            // An answer to a command (before the change of user, if one is under way).
            if self.stmts.target(offset, edit.acked(), bytes)
                && self.phase == Phase::Open
                && !self.client_in_login
            {
                self.track(edit);
            }
            return;
        }
        if self.phase == Phase::Over {
            return;
        }
        let end = offset + bytes.len() as u64;
        if end <= self.tnext {
            return; // seen already
        }
        if offset > self.tnext {
            // Bytes past an answer's head never come: the next answer starts afresh.
            self.tbuf.clear();
            self.tnext = offset;
        }
        self.tbuf
            .extend_from_slice(&bytes[(self.tnext - offset) as usize..]);
        self.tnext = end;
        if self.detect && !self.detect_target(edit) {
            return;
        }
        self.read_target(edit);
    }

    fn online(&mut self, edit: &mut Edit<'_>, bytes: &[u8]) {
        if self.phase == Phase::Over {
            return;
        }
        self.stmts.online(edit.segment_seq(), edit.acked(), bytes);
        if self.phase == Phase::Open && !self.client_in_login {
            self.track(edit);
        }
    }
}

/// Telling MySQL sessions from others (`--protocol auto`).
impl Login {
    /// Leaves a session that is not MySQL as bytes: nothing held, nothing reported.
    fn not_mysql(&mut self, edit: &mut Edit<'_>) -> bool {
        self.detect = false;
        self.phase = Phase::Over;
        edit.hold(None);
        false
    }

    /// The session is MySQL: its server is remembered (for its joined sessions).
    fn is_mysql(&mut self) -> bool {
        self.detect = false;
        lock(&self.seen).servers.insert(self.info.online);
        true
    }

    /// The client's first bytes: a handshake response (sequence id 1, protocol 4.1) makes the
    /// session MySQL; a command (sequence id 0) does when its server is known to be MySQL.
    /// Bytes that may still become a handshake response are held. Returns whether to go on as
    /// MySQL.
    fn detect_client(&mut self, edit: &mut Edit<'_>) -> bool {
        let bytes = edit.bytes(self.cpos, edit.end());
        let known = lock(&self.seen).servers.contains(&self.info.online);
        match (bytes.get(3), packet::split(bytes)) {
            (Some(0), _) if known => self.is_mysql(),
            (Some(1), Some((_, payload))) => match HandshakeResponse::parse(payload) {
                Some(_) => self.is_mysql(),
                None => self.not_mysql(edit),
            },
            // Perhaps a handshake response not all there yet (at most one packet is held).
            (Some(1), None) if packet::payload_len(bytes).is_some_and(|n| n < 1 << 16) => {
                edit.hold(Some(self.cpos));
                false
            }
            (None, _) if !bytes.is_empty() => {
                edit.hold(Some(self.cpos));
                false
            }
            _ => self.not_mysql(edit),
        }
    }

    /// The target's first bytes: a MySQL greeting makes the session MySQL, anything else not.
    fn detect_target(&mut self, edit: &mut Edit<'_>) -> bool {
        match packet::split(&self.tbuf) {
            Some((0, payload)) if Greeting::parse(payload).is_some() => {
                self.is_mysql();
                // Client bytes held while undecided are looked at again.
                if edit.end() > self.cpos {
                    self.client(edit, self.cpos);
                }
                true
            }
            Some(_) => self.not_mysql(edit),
            None if self.tbuf.len() < 1 << 16 => false,
            None => self.not_mysql(edit),
        }
    }
}
