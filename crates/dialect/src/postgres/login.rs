//! One login at the target: after the startup message, reads the target's messages and writes
//! the answers the target's own challenge needs (SCRAM-SHA-256 for its salt, iterations and
//! nonce; md5 for its salt; cleartext), until the target's first ReadyForQuery.
//!
//! It knows nothing of the client: the session ([`super::Session`]) sends the startup message,
//! feeds this machine the target's messages one by one and sends what it returns.

use thiserror::Error;

use super::message::{self, Auth, Backend, ErrorFields, Malformed};
use std::sync::Arc;

use super::scram::{self, ClientNonce, SaltedPasswords, ScramClient, ScramError, ScramProof};

/// How the target let the session in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No password asked ("trust"): the client's authentication messages were not sent.
    Trust,
    Cleartext,
    Md5,
    ScramSha256,
}

/// Why a login at the target failed; the session ends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The target's ErrorResponse (wrong password, no such user or database, too many clients).
    #[error("the target refused the login: {} ({})", .0.message, .0.code)]
    Refused(ErrorFields),
    #[error("the target asks a password for {user} and --login gives none")]
    NoPassword { user: String },
    #[error("a session joined after its login, and --login gives no user for it")]
    NoUser,
    #[error("the target asks for authentication method {0} (trust, password, md5 and scram-sha-256 are supported)")]
    UnsupportedMethod(u32),
    #[error("the target offers SASL mechanisms {0:?}, not SCRAM-SHA-256")]
    NoMechanism(Vec<String>),
    #[error("SCRAM-SHA-256 with the target: {0}")]
    Scram(#[from] ScramError),
    #[error("the target sent {0}")]
    Malformed(#[from] Malformed),
    #[error("the target sent message {0:?} out of order during the login")]
    Unexpected(char),
}

/// What to do after one target message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Send this frontend message to the target.
    Send(Vec<u8>),
    /// Nothing to send; wait for the target's next message.
    Wait,
    /// The target is ready for the client's requests.
    Ready,
}

#[derive(Debug)]
enum State {
    /// The startup message is out; the target's authentication request is awaited.
    AwaitAuth,
    ScramFirst(ScramClient),
    ScramFinal(ScramProof),
    /// The SCRAM exchange is verified; AuthenticationOk is awaited.
    AwaitOk,
    /// Logged in; parameters and key data pass until ReadyForQuery.
    AwaitReady,
    Done,
}

/// The login of one session at the target.
#[derive(Debug)]
pub struct Login {
    user: String,
    password: Option<String>,
    nonce: Option<ClientNonce>,
    salted: Arc<SaltedPasswords>,
    method: Method,
    state: State,
}

impl Login {
    /// A login as `user` with the password `--login` gives for it, if any, and the nonce a
    /// SCRAM exchange will use.
    pub fn new(user: &str, password: Option<&str>, nonce: ClientNonce) -> Login {
        Login {
            user: user.to_owned(),
            password: password.map(str::to_owned),
            nonce: Some(nonce),
            salted: Arc::default(),
            method: Method::Trust,
            state: State::AwaitAuth,
        }
    }

    /// The same login, taking SCRAM's salted passwords from `salted` (see [`SaltedPasswords`]).
    pub fn with_salted_passwords(mut self, salted: Arc<SaltedPasswords>) -> Login {
        self.salted = salted;
        self
    }

    /// How the target let the session in (meaningful once [`Step::Ready`] was returned).
    pub fn method(&self) -> Method {
        self.method
    }

    /// Reads one target message.
    pub fn handle(&mut self, msg: Backend<'_>) -> Result<Step, LoginError> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let (state, step) = match (state, msg) {
            (_, Backend::ErrorResponse(e)) => return Err(LoginError::Refused(e)),
            (State::AwaitAuth, Backend::Auth(auth)) => self.authenticate(auth)?,
            (State::ScramFirst(client), Backend::Auth(Auth::SaslContinue(data))) => {
                let proof = client.handle_server_first(data)?;
                let reply = message::sasl_response(proof.client_final().as_bytes());
                (State::ScramFinal(proof), Step::Send(reply))
            }
            (State::ScramFinal(proof), Backend::Auth(Auth::SaslFinal(data))) => {
                proof.verify_server_final(data)?;
                (State::AwaitOk, Step::Wait)
            }
            (State::AwaitOk, Backend::Auth(Auth::Ok)) => (State::AwaitReady, Step::Wait),
            (State::AwaitReady, Backend::ReadyForQuery(_)) => (State::Done, Step::Ready),
            (
                state @ State::AwaitReady,
                Backend::ParameterStatus { .. } | Backend::BackendKeyData { .. },
            ) => (state, Step::Wait),
            // Notices and NegotiateProtocolVersion, in any state but Done.
            (state, Backend::Other(ty)) if ty == b'N' || ty == b'v' => match state {
                State::Done => return Err(LoginError::Unexpected(ty as char)),
                state => (state, Step::Wait),
            },
            (_, msg) => return Err(LoginError::Unexpected(type_of(&msg))),
        };
        self.state = state;
        Ok(step)
    }

    /// The answer to the target's first authentication request.
    fn authenticate(&mut self, auth: Auth<'_>) -> Result<(State, Step), LoginError> {
        if let Auth::Ok = auth {
            self.method = Method::Trust;
            return Ok((State::AwaitReady, Step::Wait));
        }
        if let Auth::Other(code) = auth {
            return Err(LoginError::UnsupportedMethod(code));
        }
        let password = self
            .password
            .clone()
            .ok_or_else(|| LoginError::NoPassword {
                user: self.user.clone(),
            })?;
        Ok(match auth {
            Auth::CleartextPassword => {
                self.method = Method::Cleartext;
                let reply = message::password_message(password.as_bytes());
                (State::AwaitOk, Step::Send(reply))
            }
            Auth::Md5Password { salt } => {
                self.method = Method::Md5;
                let hash = scram::md5_password(&self.user, &password, salt);
                (
                    State::AwaitOk,
                    Step::Send(message::password_message(hash.as_bytes())),
                )
            }
            Auth::Sasl { mechanisms } => {
                if !mechanisms.contains(&scram::SCRAM_SHA_256) {
                    let offered = mechanisms.iter().map(|m| m.to_string()).collect();
                    return Err(LoginError::NoMechanism(offered));
                }
                self.method = Method::ScramSha256;
                // A login takes its one nonce at its one SASL request: the state machine
                // leaves AwaitAuth with it.
                let nonce = self.nonce.take().ok_or(LoginError::Unexpected('R'))?;
                // PostgreSQL takes the user from the startup message and sends an empty one.
                let client = ScramClient::new("", &password, nonce)
                    .with_salted_passwords(self.salted.clone());
                let first = client.client_first();
                let reply = message::sasl_initial_response(scram::SCRAM_SHA_256, first.as_bytes());
                (State::ScramFirst(client), Step::Send(reply))
            }
            Auth::Ok | Auth::Other(_) | Auth::SaslContinue(_) | Auth::SaslFinal(_) => {
                return Err(LoginError::Unexpected('R'))
            }
        })
    }
}

fn type_of(msg: &Backend<'_>) -> char {
    match msg {
        Backend::Auth(_) => 'R',
        Backend::ParameterStatus { .. } => 'S',
        Backend::BackendKeyData { .. } => 'K',
        Backend::ReadyForQuery(_) => 'Z',
        Backend::ErrorResponse(_) => 'E',
        Backend::Other(ty) => *ty as char,
    }
}
