//! Prepared statements: the online server's statement ids mapped to the target's.
//!
//! A client prepares a statement (COM_STMT_PREPARE with its SQL) and the server answers with a
//! statement id of its own choosing; the client then names the statement by that id
//! (COM_STMT_EXECUTE, SEND_LONG_DATA, CLOSE, RESET, FETCH). The target chooses its own ids, and
//! they differ from the online server's wherever the two did not see the same statements in
//! the same order: always in a joined session, whose statements were prepared before tcpcopy
//! started (and re-prepared here), and whenever one side numbered a statement the other did not.
//! So each session keeps a map from the online id to the target's, learnt by pairing each
//! prepare's answers: the online server's (when its answers are captured: a live capture with
//! `--protocol`, a mirror, a file) and the target's. A command naming a statement gets the
//! target's id before it goes.
//!
//! Where a statement's online id is not known, it is guessed, only without the online server's
//! answers: a session's prepare gets the id the target gave it (both servers number a
//! connection's statements alike), and a joined session's command naming an id never seen
//! takes the oldest prepare whose online id is still open. An online answer may be captured
//! before its prepare is read (the client's bytes wait behind the login): it waits for it.
//!
//! A joined session's statements from before tcpcopy started are *re-prepared* from those seen:
//! every statement prepared in a session of the same client address is remembered by its
//! online id (in [`super::Seen`]); the first command naming such an id gets the statement's
//! prepare inserted before it, and waits for the target's answer. A command naming a statement
//! that cannot be found (or whose prepare the target refused) gets an id no server hands out,
//! so that the target answers it with an error instead of running another statement.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use session::dialect::{Edit, SessionInfo};

use super::packet::{self, HEADER};
use super::{lock, Seen};

/// Commands (first payload byte of a client packet with sequence id 0).
pub(super) const COM_CHANGE_USER: u8 = 0x11;
pub(super) const COM_STMT_PREPARE: u8 = 0x16;
pub(super) const COM_STMT_EXECUTE: u8 = 0x17;
pub(super) const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub(super) const COM_STMT_CLOSE: u8 = 0x19;
pub(super) const COM_STMT_RESET: u8 = 0x1a;
pub(super) const COM_STMT_FETCH: u8 = 0x1c;
pub(super) const COM_STMT_BULK_EXECUTE: u8 = 0xfa;
pub(super) const COM_RESET_CONNECTION: u8 = 0x1f;

/// An id no server hands out (ids count up from 1 per connection): the target answers a
/// command naming it with "unknown prepared statement handler".
pub(super) const NO_STATEMENT: u32 = 0;

/// MariaDB's id for "the statement prepared last on this connection" (since 10.2: a client
/// may send a prepare and its execute together).
pub(super) const LAST_PREPARED: u32 = u32::MAX;

/// Statements a session maps at most; then the map starts over (a client that never closes
/// its statements).
const MAX_MAPPED: usize = 1 << 14;

/// Prepares waiting for their answers at most; online answers kept for prepares not read yet,
/// at most.
const MAX_PENDING: usize = 256;

/// Whether a command names a statement by its id (the 4 bytes after the command byte).
pub(super) fn names_statement(command: u8) -> bool {
    matches!(
        command,
        COM_STMT_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_FETCH
            | COM_STMT_BULK_EXECUTE
    )
}

/// What the sessions' prepared statements did, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatementCounts {
    /// Prepares the target answered with a statement id.
    pub prepared: u64,
    /// Commands whose statement id was rewritten to the target's.
    pub mapped: u64,
    /// Statements of joined sessions prepared again at the target from those seen.
    pub reprepared: u64,
    /// Commands naming a statement that could not be found (sent with an id no server has).
    pub unknown: u64,
    /// COM_CHANGE_USER made again for the target's salt: accepted there, and not.
    pub users_changed: u64,
    pub user_changes_failed: u64,
}

impl std::ops::AddAssign for StatementCounts {
    fn add_assign(&mut self, o: Self) {
        self.prepared += o.prepared;
        self.mapped += o.mapped;
        self.reprepared += o.reprepared;
        self.unknown += o.unknown;
        self.users_changed += o.users_changed;
        self.user_changes_failed += o.user_changes_failed;
    }
}

/// [`StatementCounts`] as the sessions count them, from any thread.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub prepared: AtomicU64,
    pub mapped: AtomicU64,
    pub reprepared: AtomicU64,
    pub unknown: AtomicU64,
    pub users_changed: AtomicU64,
    pub user_changes_failed: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> StatementCounts {
        StatementCounts {
            prepared: self.prepared.load(Relaxed),
            mapped: self.mapped.load(Relaxed),
            reprepared: self.reprepared.load(Relaxed),
            unknown: self.unknown.load(Relaxed),
            users_changed: self.users_changed.load(Relaxed),
            user_changes_failed: self.user_changes_failed.load(Relaxed),
        }
    }
}

/// What to do with a command naming a statement.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// It went (rewritten where needed): go on after it.
    Go,
    /// It waits for a prepare's answer at the target: hold the stream at it.
    Wait,
}

/// A prepare on its way: the client's, or one of ours (a re-prepare).
#[derive(Debug)]
struct Prepare {
    /// Stream offset past it: what the target's answer acknowledges.
    end: u64,
    /// The client's offset past it (before the edits): what the online server's answer
    /// acknowledges (`None` for one of ours).
    client_end: Option<u64>,
    sql: Arc<[u8]>,
    /// The online server's id for it, once known (ours: the id it stands for).
    online: Option<u32>,
    /// The target's answer: its id, or `NO_STATEMENT` for a refusal.
    target: Option<u32>,
    /// The online server refused it (the client got no id).
    online_refused: bool,
}

/// One session's statements.
#[derive(Debug)]
pub(super) struct Statements {
    client: IpAddr,
    server: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    counters: Arc<Counters>,
    /// Online id to target id.
    map: HashMap<u32, u32>,
    pending: VecDeque<Prepare>,
    /// Online answers to prepares not read yet (the client's bytes wait behind the login,
    /// say), in the order they came: the client offset they acknowledge, and the id (`None`:
    /// a refusal).
    early: VecDeque<(u64, Option<u32>)>,
    /// The last online and target segments read for answers (a repeated one is not read
    /// again): the online server's sequence number, the target's stream offset.
    online_last: Option<u32>,
    target_last: Option<u64>,
    /// The online server's answers are captured for this session (one came).
    online_answers: bool,
    /// Open before tcpcopy started: the two servers' numbering differs from the start.
    joined: bool,
}

impl Statements {
    pub(super) fn new(
        info: &SessionInfo,
        seen: Arc<Mutex<Seen>>,
        counters: Arc<Counters>,
    ) -> Statements {
        Statements {
            client: info.client.ip(),
            server: info.online,
            seen,
            counters,
            map: HashMap::new(),
            pending: VecDeque::new(),
            early: VecDeque::new(),
            online_last: None,
            target_last: None,
            online_answers: false,
            joined: info.joined,
        }
    }

    /// The client's COM_STMT_PREPARE of `sql`, ending at stream offset `end` (`client_end` in
    /// the client's own offsets).
    pub(super) fn prepare(&mut self, end: u64, client_end: u64, sql: &[u8]) {
        if self.pending.len() >= MAX_PENDING {
            // Read this far ahead of the target, the pairs are not kept: from here on this
            // session's statements are unknown rather than paired wrong.
            self.forget_all();
        }
        // Its online answer may have come already: the first that acknowledges it (those
        // before that answered earlier commands).
        let answer = self
            .early
            .iter()
            .position(|&(at, _)| at >= client_end)
            .map(|i| {
                let (_, id) = self.early[i];
                self.early.drain(..=i);
                id
            });
        self.pending.push_back(Prepare {
            end,
            client_end: Some(client_end),
            sql: sql.into(),
            online: answer.flatten(),
            target: None,
            online_refused: answer == Some(None),
        });
    }

    /// The connection's statements are gone on both sides (COM_RESET_CONNECTION,
    /// COM_CHANGE_USER).
    pub(super) fn forget_all(&mut self) {
        self.map.clear();
        self.pending.clear();
        self.early.clear();
    }

    /// A command naming a statement at `at` (its packet starts there, whole up to the id at
    /// least, unsent): rewritten to the target's id, or a prepare inserted before it
    /// (re-prepared), or made to wait for a prepare's answer. `at` moves past what was
    /// inserted.
    pub(super) fn command(&mut self, edit: &mut Edit<'_>, at: &mut u64, command: u8) -> Step {
        let id_at = *at + HEADER as u64 + 1;
        let b = edit.bytes(id_at, id_at + 4);
        let Ok(id) = <[u8; 4]>::try_from(b).map(u32::from_le_bytes) else {
            return Step::Go;
        };
        if id == LAST_PREPARED {
            // MariaDB's "the statement prepared last" (sent right behind its prepare): the same
            // at the target.
            return Step::Go;
        }
        let target = match self.target_of(id) {
            Some(Some(t)) => t,
            Some(None) => return Step::Wait,
            None if command == COM_STMT_CLOSE || !self.joined => NO_STATEMENT,
            None => match self.reprepare(edit, at, id) {
                Some(step) => return step,
                None => NO_STATEMENT,
            },
        };
        if target == NO_STATEMENT {
            self.bump(|c| &c.unknown);
        } else if target != id {
            self.bump(|c| &c.mapped);
        }
        if target != id {
            let id_at = *at + HEADER as u64 + 1;
            // Unsent: the stream is held at `at` until the command is read.
            let rewritten = edit.replace(id_at, 4, &target.to_le_bytes());
            debug_assert!(rewritten.is_ok(), "{rewritten:?}");
        }
        if command == COM_STMT_CLOSE {
            self.map.remove(&id);
        }
        Step::Go
    }

    /// The target's id for online id `id`: `Some(Some)` known, `Some(None)` a prepare's answer
    /// decides, `None` not to be found in this session.
    fn target_of(&mut self, id: u32) -> Option<Option<u32>> {
        if let Some(&t) = self.map.get(&id) {
            return Some(Some(t));
        }
        if let Some(p) = self.pending.iter().find(|p| p.online == Some(id)) {
            return Some(p.target);
        }
        // Without the online server's answers, a prepare whose online id is open: the first id
        // not seen after it is its. (With them, a guess could run another statement.)
        if self.online_answers {
            return None;
        }
        let p = self
            .pending
            .iter_mut()
            .find(|p| p.online.is_none() && !p.online_refused)?;
        p.online = Some(id);
        let t = p.target;
        self.settle();
        Some(t)
    }

    /// Inserts the prepare of statement `id` as seen in an earlier session of this client
    /// with this server, before the command at `at`; `None` when none was seen.
    fn reprepare(&mut self, edit: &mut Edit<'_>, at: &mut u64, id: u32) -> Option<Step> {
        let sql = lock(&self.seen).statement(self.client, self.server, id)?;
        let mut payload = Vec::with_capacity(1 + sql.len());
        payload.push(COM_STMT_PREPARE);
        payload.extend_from_slice(&sql);
        let mut p = Vec::with_capacity(HEADER + payload.len());
        packet::write(&mut p, 0, &payload);
        edit.insert(*at, &p).ok()?;
        *at += p.len() as u64;
        self.bump(|c| &c.reprepared);
        self.pending.push_back(Prepare {
            end: *at,
            client_end: None,
            sql,
            online: Some(id),
            target: None,
            online_refused: false,
        });
        Some(Step::Wait)
    }

    /// A target segment at stream offset `offset` of the target's, acknowledging `acked`, with
    /// `bytes` (the first of its answer): each prepare's answer in it goes to the oldest
    /// prepare not answered yet that it acknowledges (answers come in the order of their
    /// requests; the target may have got later requests already, when the core sent them on
    /// after `response_wait`). A segment read before is not read again. Returns whether a
    /// prepare got its id.
    pub(super) fn target(&mut self, offset: u64, acked: Option<u64>, bytes: &[u8]) -> bool {
        let Some(acked) = acked else { return false };
        if self.target_last.is_some_and(|last| offset <= last) {
            return false;
        }
        let mut paired = false;
        for answer in prepare_answers(bytes) {
            let Some(p) = self
                .pending
                .iter_mut()
                .find(|p| p.target.is_none() && p.end <= acked)
            else {
                break;
            };
            p.target = Some(answer.unwrap_or(NO_STATEMENT));
            if !self.online_answers && !self.joined && p.online.is_none() {
                // No online answers to tell: the online server numbered it as the target did
                // (a joined session's id is the first new one the client names: `target_of`).
                p.online = answer;
                p.online_refused = answer.is_none();
            }
            if answer.is_some() {
                self.bump(|c| &c.prepared);
            }
            paired = true;
        }
        if paired {
            self.target_last = Some(offset);
            self.settle();
        }
        paired
    }

    /// An online server's segment with sequence number `seq`, acknowledging client offset
    /// `acked`, with `bytes`: each prepare's answer in it goes to the oldest prepare without
    /// one that it acknowledges, or waits for a prepare not read yet. A segment read before
    /// is not read again.
    pub(super) fn online(&mut self, seq: Option<u32>, acked: Option<u64>, bytes: &[u8]) {
        self.online_answers = true;
        let (Some(seq), Some(acked)) = (seq, acked) else {
            return;
        };
        if self
            .online_last
            .is_some_and(|last| seq.wrapping_sub(last) as i32 <= 0)
        {
            return;
        }
        let answers: Vec<Option<u32>> = prepare_answers(bytes).collect();
        if answers.is_empty() {
            return;
        }
        self.online_last = Some(seq);
        for answer in answers {
            let p = self.pending.iter_mut().find(|p| {
                p.client_end.is_some_and(|end| end <= acked)
                    && p.online.is_none()
                    && !p.online_refused
            });
            match p {
                Some(p) => match answer {
                    Some(id) => p.online = Some(id),
                    None => p.online_refused = true,
                },
                None => {
                    // Its prepare is not read yet.
                    if self.early.len() >= MAX_PENDING {
                        self.early.pop_front();
                    }
                    self.early.push_back((acked, answer));
                }
            }
        }
        self.settle();
    }

    /// Counts one in the hook's totals (shared by the sessions).
    pub(super) fn bump(&self, f: impl FnOnce(&Counters) -> &AtomicU64) {
        f(&self.counters).fetch_add(1, Relaxed);
    }

    /// Moves the prepares both sides answered into the map (and the statement into what this
    /// client's later joined sessions can re-prepare); drops those the client never got an id
    /// for.
    fn settle(&mut self) {
        while let Some(p) = self.pending.front() {
            let done = p.target.is_some() && (p.online.is_some() || p.online_refused);
            if !done {
                return;
            }
            let Some(p) = self.pending.pop_front() else {
                return;
            };
            let (Some(online), Some(target)) = (p.online, p.target) else {
                continue;
            };
            if online == LAST_PREPARED {
                continue;
            }
            if self.map.len() >= MAX_MAPPED {
                self.map.clear();
            }
            self.map.insert(online, target);
            if target != NO_STATEMENT {
                lock(&self.seen).remember_statement(self.client, self.server, online, p.sql);
            }
        }
    }
}

/// The prepare answers in the first bytes of an answer segment, in order: each packet with
/// sequence id 1 (an answer's first) that is a COM_STMT_PREPARE_OK (`Some(id)`: status 0, a
/// payload of 12 bytes, or 13 with MySQL's metadata flag, its filler byte 0) or an error
/// (`None`). The packets between (parameter and column definitions) are passed over; the walk
/// stops at a packet not all there.
fn prepare_answers(bytes: &[u8]) -> impl Iterator<Item = Option<u32>> + '_ {
    let mut rest = bytes;
    std::iter::from_fn(move || loop {
        let (seq, payload) = packet::split(rest)?;
        rest = &rest[HEADER + payload.len()..];
        if seq != 1 {
            continue;
        }
        match payload {
            [0x00, a, b, c, d, _, _, _, _, 0x00, _, _, ..] if payload.len() <= 13 => {
                return Some(Some(u32::from_le_bytes([*a, *b, *c, *d])));
            }
            [0xff, ..] => return Some(None),
            _ => continue,
        }
    })
}
