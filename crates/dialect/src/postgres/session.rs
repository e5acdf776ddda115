//! One replicated PostgreSQL connection: the client's captured bytes in, the target's bytes in,
//! the bytes for the target out.
//!
//! The client's startup message is sent as captured. Its authentication messages (every
//! PasswordMessage, SASLInitialResponse and SASLResponse: all type `p`, all before its first
//! request) are dropped: they answer the online server's challenge. The [`Login`] answers the
//! target's own instead, and the client's requests are held until the target's first
//! ReadyForQuery, then pass as captured.
//!
//! What the online server answered is never seen; the client's next bytes tell it. After an
//! SSLRequest or a GSSENCRequest, a startup message means the online server refused the
//! encryption: the request is not sent, and the target is never asked. Anything else is an
//! encrypted session: it is skipped. A CancelRequest names a backend of the online server: the
//! session stops there ([`Status::Cancel`]), for the hook to send it with the target's key. A
//! session whose first bytes are a typed message joined after its login: it gets a startup
//! message and a login of its own first.

use std::sync::Arc;

use super::login::{LoginError, Method, Step};
use super::message::{self, Backend, CancelKey, Initial, Malformed, Startup};
use super::scram::{ClientNonce, SaltedPasswords};
use super::Login;
use crate::Credentials;

/// Why a session is not replicated (it ends without a login at the target).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Skip {
    #[error("it uses TLS to the online server")]
    Tls,
    #[error("it uses GSSAPI encryption to the online server")]
    GssEncryption,
    #[error("it speaks protocol version {}.{}", .0 >> 16, .0 & 0xffff)]
    ProtocolVersion(u32),
    #[error("the client sent {0}")]
    Malformed(Malformed),
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The startup message or the target's login is still awaited.
    Pending,
    /// Logged in at the target; `joined` when its startup message was made by tcpcopy.
    LoggedIn {
        method: Method,
        joined: bool,
    },
    Skipped(Skip),
    Failed(LoginError),
    /// A CancelRequest for the online backend with this key: no login, and nothing sent (the
    /// hook sends it with the target's key, if it knows it).
    Cancel(CancelKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// Nothing judged yet.
    First,
    /// After an SSLRequest or GSSENCRequest: a startup message next, or the skip reason.
    AfterEncryptionRequest(EncryptionRequest),
    /// After the startup message: its `p` messages are dropped.
    Authenticating,
    /// Past its authentication: requests.
    Requests,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncryptionRequest {
    Tls,
    Gss,
}

#[derive(Debug)]
enum Target {
    NotAsked,
    LoggingIn(Login),
    Ready(Method),
}

/// One connection's replay towards the target.
#[derive(Debug)]
pub struct Session {
    credentials: Arc<Credentials>,
    joined_startup: Option<Startup>,
    nonce: ClientNonce,
    salted: Arc<SaltedPasswords>,
    client: Client,
    /// Client bytes not judged yet (an incomplete first packet or `p` message).
    pending: Vec<u8>,
    /// Client requests held until the target is ready.
    held: Vec<u8>,
    target: Target,
    target_pending: Vec<u8>,
    target_login_len: u64,
    /// The target backend's key (its BackendKeyData during the login).
    target_key: Option<CancelKey>,
    out: Vec<u8>,
    startup: Option<Startup>,
    joined: bool,
    /// Joined for certain (the caller saw no handshake): its first bytes are a request.
    join_first: bool,
    end: Option<Status>,
}

impl Session {
    /// A session logging in with `credentials` and `nonce` (for a SCRAM exchange). A session
    /// that joined after its login logs in with `joined_startup` (the last startup message seen
    /// from the same client, say), else as the first `--login` user into the database of the
    /// same name.
    pub fn new(
        credentials: Arc<Credentials>,
        joined_startup: Option<Startup>,
        nonce: ClientNonce,
    ) -> Session {
        Session {
            credentials,
            joined_startup,
            nonce,
            salted: Arc::default(),
            client: Client::First,
            pending: Vec::new(),
            held: Vec::new(),
            target: Target::NotAsked,
            target_pending: Vec::new(),
            target_login_len: 0,
            target_key: None,
            out: Vec::new(),
            startup: None,
            joined: false,
            join_first: false,
            end: None,
        }
    }

    /// The same session, known to have joined after its login (its handshake was never
    /// captured): its first bytes are taken for a request whatever they look like.
    pub fn joined(mut self) -> Session {
        self.join_first = true;
        self
    }

    /// The same session, taking SCRAM's salted passwords from `salted`, shared with other
    /// sessions (see [`SaltedPasswords`]).
    pub fn with_salted_passwords(mut self, salted: Arc<SaltedPasswords>) -> Session {
        self.salted = salted;
        self
    }

    /// Whether the client's bytes now pass unchanged: logged in, nothing held or pending.
    pub fn passes_through(&self) -> bool {
        self.end.is_none()
            && self.client == Client::Requests
            && self.pending.is_empty()
            && matches!(self.target, Target::Ready(_))
    }

    /// Where the session stands.
    pub fn status(&self) -> Status {
        if let Some(end) = &self.end {
            return end.clone();
        }
        match self.target {
            Target::Ready(method) => Status::LoggedIn {
                method,
                joined: self.joined,
            },
            _ => Status::Pending,
        }
    }

    /// Whether the session is over for the target (skipped or failed): send nothing more.
    pub fn is_ended(&self) -> bool {
        self.end.is_some()
    }

    /// The startup message the target got (the client's, or one made for a joined session).
    pub fn startup(&self) -> Option<&Startup> {
        self.startup.as_ref()
    }

    /// The key the target gave this session's backend, for cancelling its queries (known
    /// before the login is done).
    pub fn target_key(&self) -> Option<&CancelKey> {
        self.target_key.as_ref()
    }

    /// How many of the target's bytes answered the login rather than the client's requests.
    pub fn target_login_len(&self) -> u64 {
        self.target_login_len
    }

    /// The bytes to send to the target now, in order.
    #[must_use]
    pub fn take_transmit(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Reads the next bytes the client sent to the online server.
    pub fn handle_client(&mut self, bytes: &[u8]) {
        if self.end.is_some() {
            return;
        }
        if self.client == Client::Requests && self.pending.is_empty() {
            self.pass(bytes);
            return;
        }
        self.pending.extend_from_slice(bytes);
        if let Err(e) = self.read_client() {
            self.end_with(Status::Skipped(Skip::Malformed(e)));
        }
    }

    /// Reads the next bytes the target sent.
    pub fn handle_target(&mut self, bytes: &[u8]) {
        if self.end.is_some() || !matches!(self.target, Target::LoggingIn(_)) {
            return;
        }
        self.target_pending.extend_from_slice(bytes);
        if let Err(e) = self.read_target() {
            self.end_with(Status::Failed(e));
        }
    }

    fn end_with(&mut self, status: Status) {
        self.end = Some(status);
        self.pending.clear();
        self.held.clear();
        self.target_pending.clear();
    }

    /// Requests go to the target once it is ready, and wait until then.
    fn pass(&mut self, bytes: &[u8]) {
        match self.target {
            Target::Ready(_) => self.out.extend_from_slice(bytes),
            _ => self.held.extend_from_slice(bytes),
        }
    }

    fn read_client(&mut self) -> Result<(), Malformed> {
        while self.end.is_none() && !self.pending.is_empty() {
            match self.client {
                Client::First => {
                    if self.join_first || !message::looks_initial(&self.pending) {
                        self.join();
                        continue;
                    }
                    let Some(packet) = self.take_initial()? else {
                        return Ok(());
                    };
                    self.first_packet(Initial::parse(&packet)?, &packet);
                }
                Client::AfterEncryptionRequest(request) => {
                    let skip = match request {
                        EncryptionRequest::Tls => Skip::Tls,
                        EncryptionRequest::Gss => Skip::GssEncryption,
                    };
                    // A TLS record or a GSSAPI token, not a startup message: encrypted.
                    if !message::looks_initial(&self.pending) {
                        self.end_with(Status::Skipped(skip));
                        return Ok(());
                    }
                    let packet = match self.take_initial() {
                        Ok(Some(packet)) => packet,
                        Ok(None) => return Ok(()),
                        Err(_) => {
                            self.end_with(Status::Skipped(skip));
                            return Ok(());
                        }
                    };
                    match Initial::parse(&packet) {
                        Ok(
                            initial @ (Initial::Startup(_)
                            | Initial::SslRequest
                            | Initial::GssEncRequest),
                        ) => self.first_packet(initial, &packet),
                        _ => self.end_with(Status::Skipped(skip)),
                    }
                }
                Client::Authenticating => {
                    if self.pending[0] != message::PASSWORD {
                        self.client = Client::Requests;
                        continue;
                    }
                    match message::message_len(&self.pending)? {
                        Some(len) if self.pending.len() >= len => drop(self.pending.drain(..len)),
                        _ => return Ok(()),
                    }
                }
                Client::Requests => {
                    let requests = std::mem::take(&mut self.pending);
                    self.pass(&requests);
                }
            }
        }
        Ok(())
    }

    /// The whole untyped first packet at the start of `pending`, taken out of it.
    fn take_initial(&mut self) -> Result<Option<Vec<u8>>, Malformed> {
        match message::initial_len(&self.pending)? {
            Some(len) if self.pending.len() >= len => Ok(Some(self.pending.drain(..len).collect())),
            _ => Ok(None),
        }
    }

    fn first_packet(&mut self, initial: Initial, packet: &[u8]) {
        match initial {
            // Not sent: the target is never asked, as if it had refused.
            Initial::SslRequest => {
                self.client = Client::AfterEncryptionRequest(EncryptionRequest::Tls)
            }
            Initial::GssEncRequest => {
                self.client = Client::AfterEncryptionRequest(EncryptionRequest::Gss)
            }
            Initial::CancelRequest(key) => self.end_with(Status::Cancel(key)),
            Initial::OtherVersion(v) => self.end_with(Status::Skipped(Skip::ProtocolVersion(v))),
            Initial::Startup(startup) => {
                self.out.extend_from_slice(packet);
                self.log_in(startup);
                self.client = Client::Authenticating;
            }
        }
    }

    /// A session whose login was never captured: a startup message and a login of its own.
    fn join(&mut self) {
        let startup = self.joined_startup.clone().or_else(|| {
            let user = self.credentials.first()?.user.as_str();
            Some(Startup::new(user, user))
        });
        let Some(startup) = startup else {
            return self.end_with(Status::Failed(LoginError::NoUser));
        };
        self.joined = true;
        self.out.extend_from_slice(&startup.encode());
        self.log_in(startup);
        self.client = Client::Requests;
    }

    fn log_in(&mut self, startup: Startup) {
        // A parsed startup message has a user (Initial::parse checks), a made one too.
        let user = startup.user().unwrap_or_default();
        let password = self.credentials.password(user);
        let login = Login::new(user, password, self.nonce.clone())
            .with_salted_passwords(self.salted.clone());
        self.target = Target::LoggingIn(login);
        self.startup = Some(startup);
    }

    fn read_target(&mut self) -> Result<(), LoginError> {
        while let Target::LoggingIn(login) = &mut self.target {
            let Some(message::Framed { ty, body, len }) =
                message::split_message(&self.target_pending)?
            else {
                let waiting = self.target_pending.len();
                if waiting > message::MAX_LOGIN_MESSAGE_LEN {
                    return Err(Malformed::TooLong(waiting).into());
                }
                return Ok(());
            };
            if len > message::MAX_LOGIN_MESSAGE_LEN {
                return Err(Malformed::TooLong(len).into());
            }
            let msg = Backend::parse(ty, body)?;
            if let Backend::BackendKeyData(key) = &msg {
                self.target_key = Some(key.clone());
            }
            let step = login.handle(msg)?;
            let method = login.method();
            self.target_pending.drain(..len);
            self.target_login_len += len as u64;
            match step {
                Step::Send(reply) => self.out.extend_from_slice(&reply),
                Step::Wait => {}
                Step::Ready => {
                    self.target = Target::Ready(method);
                    let held = std::mem::take(&mut self.held);
                    self.out.extend_from_slice(&held);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
