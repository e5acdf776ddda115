//! The protocol hook: what an application protocol (a *dialect*) may do to a session's client
//! bytes on their way to the target, given the target's own answers so far.
//!
//! Most protocols replay as bytes: the client's bytes go to the target as captured, one request
//! after the other. Some do not: a database login answers the server's random salt, and the
//! target's salt differs from the online server's. A [`Dialect`] (one per replicator, shared by
//! its sessions) opens a [`Conversation`] for each replicated session; the conversation sees
//!
//! - the client's bytes as they are captured, in order ([`Conversation::client`]), and
//! - the first bytes of each of the target's answers ([`Conversation::target`]; the driver asks
//!   the intercepts for them, bounded, as a comparison does: see [`Dialect::head_bytes`]),
//!
//! and through an [`Edit`] it may replace or insert bytes that were not sent yet, hold the
//! stream at an offset until it says otherwise (a login waits for the target's greeting), and
//! end the session or report how its login went. Everything else (sequence numbers, request
//! pacing, retransmission, acknowledgments, closing) stays the core's, and works on the edited
//! stream as on any other.
//!
//! ## Offsets and sequence spaces
//!
//! Offsets are counted in the stream *towards the target*: 0 is the first byte after our SYN.
//! Until an edit changes a length, it is also the client's offset; an edit that inserts or
//! removes bytes moves every later byte, and the stream keeps one record per such edit (its
//! *offset map*) to translate back to the client's sequence numbers where the core needs them
//! (a comparison's pairing, the acknowledgment an answer is reported under). Captured bytes
//! keep arriving in the client's space and are placed after the edited ones. Target offsets in
//! [`Conversation::target`] count the same way from the target's SYN.
//!
//! ## Rules a conversation must keep
//!
//! - Edits apply to bytes not yet sent: at or past [`Edit::sent`]. Bytes before it are on
//!   their way (or acknowledged) and cannot change; an edit there is refused
//!   ([`EditError::AlreadySent`]). Holding the stream ([`Edit::hold`]) is how a conversation
//!   keeps bytes it will edit from being sent.
//! - Request pacing still applies: a request (client bytes sent with one acknowledgment
//!   online) goes only once the previous one was answered. Inserted bytes belong to the
//!   request they are inserted into; to wait for the target's answer to them, hold the stream
//!   right after them and release the hold when the answer came.
//! - The calls are synchronous, sans-IO and must be cheap: they run on the capture path.
//!
//! Call order for one session: [`Dialect::open`] when the session opens at the target (its SYN
//! goes out), then [`Conversation::client`] after each captured segment that added in-order
//! bytes and [`Conversation::target`] after each target segment whose answer head holds new
//! bytes, in the order they happen; after that call the session sends what it may.

use std::fmt;
use std::net::SocketAddr;

use crate::stream::ClientStream;

/// An application protocol's hook into the replication of its sessions. One per replicator;
/// it makes a [`Conversation`] for each session and may keep what sessions share (the last
/// login seen per client, say).
pub trait Dialect: Send {
    /// A session opens at the target: the conversation that follows it, or `None` to leave it
    /// as bytes.
    fn open(&mut self, session: &SessionInfo) -> Option<Box<dyn Conversation>>;

    /// How many of the first bytes of each target answer the conversations need (the driver
    /// asks the intercepts for that much).
    fn head_bytes(&self) -> u16;

    /// Whether the conversations need the online server's answers ([`Conversation::online`]):
    /// a live capture then takes them too.
    fn online_answers(&self) -> bool {
        false
    }

    /// A line for the log at the end of the run: what the protocol did beyond the logins
    /// (counted so far, over every session); `None`: nothing to say.
    fn summary(&self) -> Option<String> {
        None
    }
}

/// One session's view of its protocol. See the module docs for the rules and the call order.
pub trait Conversation: Send + fmt::Debug {
    /// The client's bytes `edit.bytes(from, edit.end())` are new: captured in order and not yet
    /// sent (unless nothing holds them and pacing lets them go at once: they are sent after this
    /// call returns, not before).
    fn client(&mut self, edit: &mut Edit<'_>, from: u64);

    /// The target sent `bytes` at `offset` of its stream (0: its first byte after its SYN):
    /// bytes within the first [`Dialect::head_bytes`] of one of its answers, as the intercept
    /// reported them. The same bytes may come again (retransmitted), later ones may come before
    /// earlier ones, and bytes past the head of a long answer never come.
    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, bytes: &[u8]);

    /// The online server sent the client `bytes` (a captured or mirrored segment's payload,
    /// whole), acknowledging [`Edit::acked`] (here in the client's offsets, before the edits:
    /// compare with [`Edit::client_offset`]); it may come before the conversation saw the
    /// client bytes it answers (they wait behind a hold, say). What the online server answered,
    /// for a protocol that must know it (the statement ids MySQL's server hands out, say).
    /// Only where the online server's packets are captured (a replayed file, a mirror, a live
    /// capture that asks for them: see [`Dialect::online_answers`]); segments come as captured
    /// (repeated, perhaps out of order). Does nothing unless a protocol needs it.
    fn online(&mut self, edit: &mut Edit<'_>, bytes: &[u8]) {
        let _ = (edit, bytes);
    }
}

/// What a conversation is told about its session when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The client connection as online.
    pub client: SocketAddr,
    pub online: SocketAddr,
    /// Which replicated session of the connection this is (`Config::copies`).
    pub copy: u16,
    /// Joined mid-stream: the connection was open before tcpcopy started, its beginning (a
    /// login, say) never seen.
    pub joined: bool,
}

/// How a session's login went, for the counters ([`crate::Logins`]) and the driver's report
/// ([`crate::Replicator::drain_logins`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Login {
    /// The target accepted the login the client sent (its bytes, rewritten for the target's
    /// salt where a password was known).
    LoggedIn,
    /// A joined session: the target accepted a login of tcpcopy's own, made before its first
    /// captured command.
    JoinedLoggedIn,
    /// The target refused the login (the session is ended).
    Refused,
    /// The client uses TLS with the online server: its bytes mean nothing to the target
    /// (the session is skipped).
    Tls,
    /// A joined session with no user to log in as (no `--login`, no earlier login of its
    /// client seen): skipped.
    NoCredentials,
    /// The target asked for an authentication tcpcopy cannot make (the session is ended).
    Unsupported,
    /// The bytes did not follow the protocol (the session is ended).
    Malformed,
}

impl Login {
    /// Whether the session got logged in at the target.
    pub fn logged_in(self) -> bool {
        matches!(self, Login::LoggedIn | Login::JoinedLoggedIn)
    }

    /// Short words for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Login::LoggedIn => "logged in",
            Login::JoinedLoggedIn => "joined, logged in by tcpcopy",
            Login::Refused => "refused by the target",
            Login::Tls => "TLS to the online server, skipped",
            Login::NoCredentials => "joined, no login known, skipped",
            Login::Unsupported => "authentication not supported",
            Login::Malformed => "protocol not followed",
        }
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sessions by how their login went (each session counted once, at its outcome).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logins {
    pub logged_in: u64,
    /// Joined sessions logged in by tcpcopy.
    pub joined_logged_in: u64,
    pub refused: u64,
    pub tls: u64,
    pub no_credentials: u64,
    pub unsupported: u64,
    pub malformed: u64,
}

impl Logins {
    pub(crate) fn count(&mut self, login: Login) {
        *match login {
            Login::LoggedIn => &mut self.logged_in,
            Login::JoinedLoggedIn => &mut self.joined_logged_in,
            Login::Refused => &mut self.refused,
            Login::Tls => &mut self.tls,
            Login::NoCredentials => &mut self.no_credentials,
            Login::Unsupported => &mut self.unsupported,
            Login::Malformed => &mut self.malformed,
        } += 1;
    }

    /// Sessions that got no login at the target.
    pub fn failed(&self) -> u64 {
        self.refused + self.tls + self.no_credentials + self.unsupported + self.malformed
    }
}

impl std::ops::AddAssign for Logins {
    fn add_assign(&mut self, o: Logins) {
        self.logged_in += o.logged_in;
        self.joined_logged_in += o.joined_logged_in;
        self.refused += o.refused;
        self.tls += o.tls;
        self.no_credentials += o.no_credentials;
        self.unsupported += o.unsupported;
        self.malformed += o.malformed;
    }
}

impl fmt::Display for Logins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "logins ok {} (joined {}) not logged in {}: refused {} tls {} no login known {} \
             unsupported {} malformed {}",
            self.logged_in + self.joined_logged_in,
            self.joined_logged_in,
            self.failed(),
            self.refused,
            self.tls,
            self.no_credentials,
            self.unsupported,
            self.malformed
        )
    }
}

/// One session's login outcome, handed to the driver ([`crate::Replicator::drain_logins`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginReport {
    pub client: SocketAddr,
    pub online: SocketAddr,
    pub copy: u16,
    pub login: Login,
}

/// An edit a conversation asked for and the core refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The range starts before the first unsent byte.
    #[error("bytes from offset {at} on were sent already (first unsent: {sent})")]
    AlreadySent { at: u64, sent: u64 },
    /// The range ends past the bytes captured.
    #[error("bytes {at}..{end} are not all captured yet (captured up to {captured})")]
    NotCaptured { at: u64, end: u64, captured: u64 },
}

/// What a conversation may see and change of its session's stream, during one call.
pub struct Edit<'a> {
    pub(crate) stream: &'a mut ClientStream,
    /// The first byte not yet sent.
    pub(crate) sent: u64,
    pub(crate) hold: &'a mut Option<u64>,
    pub(crate) outcome: &'a mut Option<(Login, bool)>,
    /// The acknowledgment of the segment handed over, in the stream's offsets.
    pub(crate) acked: Option<u64>,
    /// The sequence number of the segment handed over (the online server's).
    pub(crate) seq: Option<u32>,
}

impl Edit<'_> {
    /// How much of the client's bytes the segment being handed over acknowledges: for
    /// [`Conversation::target`] the target's acknowledgment, an offset of this stream (after
    /// the edits: see the module docs); for [`Conversation::online`] the online server's, an
    /// offset of the client's own bytes (before the edits: see [`Edit::client_offset`]). An
    /// answer acknowledges the request it answers. `None` in [`Conversation::client`], or when
    /// the segment carried none.
    pub fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// The sequence number of the segment handed over to [`Conversation::online`] (the online
    /// server's own, whose start a joined session never saw): tells a repeated segment from a
    /// new one. `None` in the other calls.
    pub fn segment_seq(&self) -> Option<u32> {
        self.seq
    }

    /// The client's own offset of stream offset `off` (the offsets before the edits; bytes an
    /// edit inserted map to where it inserted them): how the online server counts.
    pub fn client_offset(&self, off: u64) -> u64 {
        self.stream.client_offset(off)
    }

    /// The first offset not yet sent: edits start at or past it.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The first offset still buffered: bytes before it the target acknowledged, and they
    /// cannot be read any more.
    pub fn buffered_from(&self) -> u64 {
        self.stream.buffered_from()
    }

    /// The offset past the last byte captured (and inserted) so far.
    pub fn end(&self) -> u64 {
        self.stream.rcv_nxt()
    }

    /// The bytes `from..to`, clamped to those still buffered: not yet acknowledged by the
    /// target (bytes before [`Edit::sent`] may be read, not edited), before [`Edit::end`].
    pub fn bytes(&self, from: u64, to: u64) -> &[u8] {
        let from = from.max(self.stream.buffered_from()).min(self.end());
        let to = to.clamp(from, self.end());
        self.stream.bytes(from, to)
    }

    /// Replaces the `remove` bytes at `at` with `insert` (either may be empty). Later bytes,
    /// request boundaries and the client's FIN move by the difference.
    pub fn replace(&mut self, at: u64, remove: u64, insert: &[u8]) -> Result<(), EditError> {
        if at < self.sent {
            return Err(EditError::AlreadySent {
                at,
                sent: self.sent,
            });
        }
        if at + remove > self.end() {
            return Err(EditError::NotCaptured {
                at,
                end: at + remove,
                captured: self.end(),
            });
        }
        self.stream.splice(at, remove, insert);
        Ok(())
    }

    /// Inserts `bytes` at `at`.
    pub fn insert(&mut self, at: u64, bytes: &[u8]) -> Result<(), EditError> {
        self.replace(at, 0, bytes)
    }

    /// Sends nothing at or past `at` until the hold moves (`None`: no hold). A hold before
    /// [`Edit::sent`] holds at it.
    pub fn hold(&mut self, at: Option<u64>) {
        *self.hold = at;
    }

    /// The current hold.
    pub fn held_at(&self) -> Option<u64> {
        *self.hold
    }

    /// Reports how the session's login went (once; a later report replaces an earlier one not
    /// yet taken). `end`: the session ends now (reset at the target, its further bytes ignored).
    pub fn report(&mut self, login: Login, end: bool) {
        *self.outcome = Some((login, end));
    }
}

impl fmt::Debug for Edit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edit")
            .field("sent", &self.sent)
            .field("end", &self.end())
            .field("hold", &self.hold)
            .finish()
    }
}

/// A session's conversation and what the core keeps for it.
#[derive(Debug)]
pub(crate) struct DialectSlot {
    pub(crate) conversation: Box<dyn Conversation>,
    /// Nothing at or past this offset is sent.
    pub(crate) hold: Option<u64>,
    /// The target's ISN, once its SYN-ACK came: target offsets count from the byte after it.
    pub(crate) target_isn: Option<wire::Seq>,
    /// The furthest target segment seen so far: its sequence number and 64-bit offset.
    pub(crate) target_at: Option<(wire::Seq, u64)>,
    /// An outcome reported and not yet taken by the replicator; `true`: end the session.
    pub(crate) outcome: Option<(Login, bool)>,
}

impl DialectSlot {
    /// Runs `f` with the conversation and an [`Edit`] of `stream` (`sent` bytes on their way),
    /// for a segment acknowledging `acked`, with sequence number `seq`.
    fn converse(
        &mut self,
        stream: &mut ClientStream,
        sent: u64,
        acked: Option<u64>,
        seq: Option<u32>,
        f: impl FnOnce(&mut dyn Conversation, &mut Edit<'_>),
    ) {
        let mut edit = Edit {
            stream,
            sent,
            hold: &mut self.hold,
            outcome: &mut self.outcome,
            acked,
            seq,
        };
        f(self.conversation.as_mut(), &mut edit);
    }
}

impl crate::session::Session {
    /// Hands the conversation, if any, the client's new bytes from `from` on.
    pub(crate) fn converse_client(&mut self, from: u64) {
        let Some(d) = self.dialect.as_deref_mut() else {
            return;
        };
        d.converse(&mut self.stream, self.snd_nxt, None, None, |c, edit| {
            c.client(edit, from)
        });
    }

    /// Hands the conversation, if any, the bytes of target segment `p` within its answer's
    /// head (`head`, a prefix of its payload).
    pub(crate) fn converse_target(&mut self, p: &wire::TcpPacket<'_>, head: &[u8]) {
        // The target's acknowledgment as a 64-bit offset of the stream.
        let acked = p.flags().ack().then(|| {
            let off = self.snd_nxt as i64 + p.ack().diff(self.seq_at(self.snd_nxt));
            off.max(0) as u64
        });
        let Some(d) = self.dialect.as_deref_mut() else {
            return;
        };
        let Some(isn) = d.target_isn else {
            return;
        };
        if head.is_empty() || p.flags().syn() {
            return;
        }
        // 64-bit offsets: a long session's answers pass 2 GiB, its requests 4 GiB.
        let (last_seq, last_off) = d.target_at.unwrap_or((isn + 1, 0));
        let rel = last_off as i64 + p.seq().diff(last_seq);
        if rel < 0 {
            return;
        }
        if rel as u64 > last_off {
            d.target_at = Some((p.seq(), rel as u64));
        }
        d.converse(&mut self.stream, self.snd_nxt, acked, None, |c, edit| {
            c.target(edit, rel as u64, head)
        });
    }

    /// Hands the conversation, if any, the payload of the online server's segment `p`.
    pub(crate) fn converse_online(&mut self, p: &wire::TcpPacket<'_>) {
        let Some(d) = self.dialect.as_deref_mut() else {
            return;
        };
        let bytes = p.payload();
        if bytes.is_empty() || p.flags().syn() {
            return;
        }
        let acked = p
            .flags()
            .ack()
            .then(|| self.stream.online_offset(p.ack()))
            .flatten();
        d.converse(
            &mut self.stream,
            self.snd_nxt,
            acked,
            Some(p.seq().0),
            |c, edit| c.online(edit, bytes),
        );
    }

    /// The login outcome the conversation reported since the last call.
    pub(crate) fn take_login(&mut self) -> Option<(Login, bool)> {
        self.dialect.as_deref_mut()?.outcome.take()
    }
}
