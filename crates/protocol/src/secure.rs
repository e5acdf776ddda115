//! The encrypted channel (`--secret-file`), sans-IO: the handshake by which tcpcopy and intercept
//! prove to each other that they hold the same secret, and the records that carry the protocol's
//! frames afterwards. No sockets and no clock: the drivers move the bytes.
//!
//! The handshake is Noise `NNpsk0_25519_ChaChaPoly_BLAKE2s` (through `snow`), with the pre-shared
//! key derived from the secret file's bytes by BLAKE2s ([`Psk::derive`]):
//!
//! 1. tcpcopy ([`Initiator::start`]) sends a [`crate::Message::SecureHello`] frame: a fresh
//!    ephemeral public key, authenticated with the key. Only a holder of the secret can make one.
//! 2. intercept ([`respond`]) checks it and answers with a [`crate::Message::SecureWelcome`]
//!    frame: its own fresh ephemeral key, which only a holder of the secret can make either;
//!    tcpcopy checks it ([`Initiator::finish`]).
//! 3. Both derive the session keys from the two ephemeral keys and the secret. Every byte
//!    after that is a record ([`Sealer`], [`Opener`]): `length: u16 BE | ciphertext`, the
//!    ciphertext (ChaCha20-Poly1305, 16-byte tag, implicit counter nonce) holding the plain
//!    protocol's frames, cut anywhere.
//!
//! No secret travels. A replayed first message is answered with step 2 (the only thing a
//! responder ever sends before the initiator has proven itself), but the session keys depend on
//! the replayer's missing ephemeral private key: its first record fails to open, and the
//! connection ends. The responder must therefore treat a peer as authenticated only once a record
//! from it opened ([`Opener::open`] succeeded). Fresh ephemeral keys give every connection its
//! own keys, and the ephemeral Diffie-Hellman keeps a recorded connection sealed should the
//! secret leak later (forward secrecy); a leaked secret lets an active attacker in from then on.
//!
//! A tampered, reordered, replayed or truncated record fails to open ([`SecureError::BadRecord`]);
//! records never exceed [`MAX_RECORD`] bytes, so an [`Opener`] buffers at most one.

use std::fmt;
use std::sync::Arc;

use blake2::{Blake2s256, Digest};
use snow::StatelessTransportState;

use crate::{frame, KIND_SECURE_HELLO, KIND_SECURE_WELCOME};

/// The Noise protocol name.
pub const NOISE: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake: a peer speaking another version of this channel fails it.
const PROLOGUE: &[u8] = b"tcpcopy/intercept channel v1";
/// Largest record on the wire (ciphertext bytes after the 2-byte length): Noise's limit.
pub const MAX_RECORD: usize = 65535;
const TAG: usize = 16;
/// Plain bytes per record at most.
const MAX_PLAIN: usize = MAX_RECORD - TAG;
/// A handshake message here: a 32-byte public key and a 16-byte tag (empty payload).
pub const HANDSHAKE_LEN: usize = 48;

/// Why the channel could not be opened or a record could not be read. Any of these ends the
/// connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    #[error("the secret is empty")]
    EmptySecret,
    /// The peer's handshake message did not authenticate: another secret, or not this channel.
    #[error("peer did not prove the secret")]
    NotProven,
    /// A record failed to authenticate: tampered, replayed, or the peer holds other keys.
    #[error("record failed to authenticate (tampered, replayed, or another secret)")]
    BadRecord,
    /// A record whose length cannot hold a tag.
    #[error("malformed record")]
    Malformed,
    /// The Noise library refused an operation it should not (a bug, or out of randomness).
    #[error("noise: {0}")]
    Noise(String),
}

fn noise(e: snow::Error) -> SecureError {
    SecureError::Noise(e.to_string())
}

/// The pre-shared key, derived from a secret's bytes. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Psk([u8; 32]);

impl Psk {
    /// BLAKE2s-256 of a domain label and the secret. The secret should be random (e.g. 32 bytes
    /// from /dev/urandom): a derivation cannot make a guessable one strong.
    pub fn derive(secret: &[u8]) -> Result<Psk, SecureError> {
        if secret.is_empty() {
            return Err(SecureError::EmptySecret);
        }
        let mut h = Blake2s256::new();
        h.update(b"tcpcopy channel psk v1\0");
        h.update(secret);
        Ok(Psk(h.finalize().into()))
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

fn builder(psk: &Psk) -> Result<snow::Builder<'_>, SecureError> {
    // The pattern string is a constant this module's tests parse.
    let params = NOISE.parse().map_err(noise)?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .map_err(noise)?
        .psk(0, &psk.0)
        .map_err(noise)
}

/// tcpcopy's side of the handshake, waiting for intercept's answer.
#[must_use]
pub struct Initiator {
    hs: snow::HandshakeState,
}

impl Initiator {
    /// Starts a handshake: appends the [`crate::Message::SecureHello`] frame to `out`.
    pub fn start(psk: &Psk, out: &mut Vec<u8>) -> Result<Initiator, SecureError> {
        let mut hs = builder(psk)?.build_initiator().map_err(noise)?;
        let mut msg = [0u8; HANDSHAKE_LEN];
        let n = hs.write_message(&[], &mut msg).map_err(noise)?;
        frame(out, KIND_SECURE_HELLO, |b| b.extend_from_slice(&msg[..n]));
        Ok(Initiator { hs })
    }

    /// Checks intercept's answer (the body of its [`crate::Message::SecureWelcome`]): the
    /// channel, or [`SecureError::NotProven`] when intercept holds another secret.
    pub fn finish(mut self, reply: &[u8]) -> Result<Channel, SecureError> {
        if reply.len() != HANDSHAKE_LEN {
            return Err(SecureError::NotProven);
        }
        let mut payload = [0u8; HANDSHAKE_LEN];
        self.hs
            .read_message(reply, &mut payload)
            .map_err(|_| SecureError::NotProven)?;
        Channel::split(self.hs)
    }
}

/// intercept's side of the handshake: checks tcpcopy's [`crate::Message::SecureHello`] body and
/// appends the [`crate::Message::SecureWelcome`] frame to `out`. The peer is not authenticated
/// yet (the hello may be a replay): only once a record from it opened.
pub fn respond(psk: &Psk, hello: &[u8], out: &mut Vec<u8>) -> Result<Channel, SecureError> {
    if hello.len() != HANDSHAKE_LEN {
        return Err(SecureError::NotProven);
    }
    let mut hs = builder(psk)?.build_responder().map_err(noise)?;
    let mut payload = [0u8; HANDSHAKE_LEN];
    hs.read_message(hello, &mut payload)
        .map_err(|_| SecureError::NotProven)?;
    let mut msg = [0u8; HANDSHAKE_LEN];
    let n = hs.write_message(&[], &mut msg).map_err(noise)?;
    frame(out, KIND_SECURE_WELCOME, |b| b.extend_from_slice(&msg[..n]));
    Channel::split(hs)
}

/// An open channel: the two directions, which may live on different threads.
pub struct Channel {
    pub sealer: Sealer,
    pub opener: Opener,
}

impl Channel {
    fn split(hs: snow::HandshakeState) -> Result<Channel, SecureError> {
        let keys = Arc::new(hs.into_stateless_transport_mode().map_err(noise)?);
        Ok(Channel {
            sealer: Sealer {
                keys: keys.clone(),
                nonce: 0,
            },
            opener: Opener {
                keys,
                nonce: 0,
                partial: Vec::new(),
                plain: vec![0u8; MAX_RECORD],
            },
        })
    }
}

/// Seals outgoing bytes into records.
pub struct Sealer {
    keys: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    /// Bytes on the wire for `plain` bytes sealed in one call: a caller that may drop what it
    /// sealed must decide before sealing (a dropped record breaks the stream).
    pub fn sealed_len(plain: usize) -> usize {
        plain + plain.div_ceil(MAX_PLAIN) * (2 + TAG)
    }

    /// Appends `plain` to `out` as records (none for an empty `plain`).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SecureError> {
        for chunk in plain.chunks(MAX_PLAIN) {
            let len = chunk.len() + TAG;
            out.extend_from_slice(&(len as u16).to_be_bytes());
            let at = out.len();
            out.resize(at + len, 0);
            self.keys
                .write_message(self.nonce, chunk, &mut out[at..])
                .map_err(noise)?;
            self.nonce += 1;
        }
        Ok(())
    }
}

/// Opens incoming records, whatever the reads cut them into.
pub struct Opener {
    keys: Arc<StatelessTransportState>,
    nonce: u64,
    /// The start of a record whose end has not arrived (at most one record).
    partial: Vec<u8>,
    plain: Vec<u8>,
}

impl Opener {
    /// Opens the records completed by `data`, handing each one's plain bytes to `deliver` in
    /// order; the start of an incomplete record is kept for the next call.
    pub fn open(
        &mut self,
        mut data: &[u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<(), SecureError> {
        if !self.partial.is_empty() {
            // Complete the record begun by an earlier read: its length first.
            let head = (2usize.saturating_sub(self.partial.len())).min(data.len());
            self.partial.extend_from_slice(&data[..head]);
            data = &data[head..];
            let Some(len) = self.partial.first_chunk::<2>() else {
                return Ok(());
            };
            let need = 2 + record_len(*len)?;
            let take = (need - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < need {
                return Ok(());
            }
            let record = std::mem::take(&mut self.partial);
            let n = self.open_one(&record[2..])?;
            deliver(&self.plain[..n]);
            // Keep the allocation for the next partial record.
            self.partial = record;
            self.partial.clear();
        }
        while let Some((len, rest)) = data.split_first_chunk::<2>() {
            let len = record_len(*len)?;
            if rest.len() < len {
                break;
            }
            let n = self.open_one(&rest[..len])?;
            deliver(&self.plain[..n]);
            data = &rest[len..];
        }
        self.partial.extend_from_slice(data);
        Ok(())
    }

    /// Bytes of an incomplete record held.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn open_one(&mut self, record: &[u8]) -> Result<usize, SecureError> {
        let n = self
            .keys
            .read_message(self.nonce, record, &mut self.plain)
            .map_err(|_| SecureError::BadRecord)?;
        self.nonce += 1;
        Ok(n)
    }
}

/// A record's length from its prefix: at least a tag.
fn record_len(prefix: [u8; 2]) -> Result<usize, SecureError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len < TAG {
        return Err(SecureError::Malformed);
    }
    Ok(len)
}

#[cfg(test)]
mod tests;
