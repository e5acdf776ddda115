//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding, and
//! PostgreSQL's md5 password hash.
//!
//! Each SCRAM step is a type consumed by value: [`ScramClient`] writes the client-first message
//! and, given the server-first message, becomes a [`ScramProof`] holding the client-final
//! message and the server signature it expects. The nonce comes from the caller
//! ([`ClientNonce`]), so the exchange is deterministic under test.
//!
//! The password is prepared as PostgreSQL prepares it, on both its sides, before PBKDF2
//! ([`prepare_password`]): SASLprep (RFC 4013) for a password holding other than ASCII, the
//! password as given when it is ASCII or when SASLprep refuses it.
//!
//! The costly step, the salted password (PBKDF2 with the server's salt and iteration count,
//! 4096 HMACs by default: milliseconds), depends only on the password and the role's stored
//! salt: [`SaltedPasswords`] keeps those computed, so that a target's sessions of one role pay
//! it once, not at each login on the capture path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// The mechanism this client speaks.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The most iterations a server may ask for: more would let a target spend tcpcopy's CPU
/// (PostgreSQL's default is 4096).
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// A SCRAM exchange that went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScramError {
    #[error("the server-first message is malformed")]
    ServerFirst,
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server asks for {0} iterations (1 to 10000000 accepted)")]
    Iterations(u64),
    #[error("the server-final message is malformed")]
    ServerFinal,
    #[error("the server reports {0}")]
    ServerError(String),
    #[error("the server's signature does not match: it does not know the password")]
    Signature,
}

/// A client nonce: printable ASCII without commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNonce(String);

impl ClientNonce {
    /// 18 random bytes from the operating system, in base64 (as libpq makes them).
    pub fn random() -> Result<ClientNonce, getrandom::Error> {
        let mut bytes = [0u8; 18];
        getrandom::fill(&mut bytes)?;
        Ok(ClientNonce(STANDARD.encode(bytes)))
    }

    /// A given nonce (tests); `None` if it is empty or has a comma or a non-printable byte.
    pub fn new(nonce: &str) -> Option<ClientNonce> {
        let ok = !nonce.is_empty()
            && nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',');
        ok.then(|| ClientNonce(nonce.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Salted passwords most kept: a few per role and target in practice.
const MAX_SALTED: usize = 1024;

/// Password, salt and iteration count.
type SaltKey = (Vec<u8>, Vec<u8>, u32);

/// Salted passwords computed so far, by password, salt and iteration count; shared by the
/// logins of one replicator.
#[derive(Default)]
pub struct SaltedPasswords {
    salted: Mutex<HashMap<SaltKey, [u8; 32]>>,
}

impl std::fmt::Debug for SaltedPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Salted passwords are password equivalents: never in a log.
        f.write_str("SaltedPasswords")
    }
}

impl SaltedPasswords {
    /// PBKDF2-HMAC-SHA-256 of `password` with `salt` and `iterations`, computed once.
    pub fn get(&self, password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        let key = (password.to_vec(), salt.to_vec(), iterations);
        if let Some(salted) = self.lock().get(&key) {
            return *salted;
        }
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let mut cache = self.lock();
        if cache.len() >= MAX_SALTED {
            cache.clear();
        }
        cache.insert(key, salted);
        salted
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SaltKey, [u8; 32]>> {
        // A panic elsewhere while holding it leaves a valid map.
        self.salted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The first step: the client-first message is out, the server-first is awaited.
#[derive(Debug)]
pub struct ScramClient {
    password: Vec<u8>,
    nonce: ClientNonce,
    client_first_bare: String,
    salted: Arc<SaltedPasswords>,
}

impl ScramClient {
    /// A client for `user` (PostgreSQL ignores it and sends an empty one; the startup message
    /// names the user) with `password` and `nonce`.
    pub fn new(user: &str, password: &str, nonce: ClientNonce) -> ScramClient {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={}", nonce.as_str());
        ScramClient {
            password: prepare_password(password).into_owned().into_bytes(),
            nonce,
            client_first_bare,
            salted: Arc::default(),
        }
    }

    /// The same client, taking salted passwords from `salted` (and keeping new ones there).
    pub fn with_salted_passwords(mut self, salted: Arc<SaltedPasswords>) -> ScramClient {
        self.salted = salted;
        self
    }

    /// The client-first message: GS2 header "n,," (no channel binding) and the bare part.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Reads the server-first message and computes the proof.
    pub fn handle_server_first(self, server_first: &[u8]) -> Result<ScramProof, ScramError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ScramError::ServerFirst)?;
        let (nonce, salt, iterations) = parse_server_first(server_first)?;
        if !nonce.starts_with(self.nonce.as_str()) || nonce.len() == self.nonce.as_str().len() {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD.decode(salt).map_err(|_| ScramError::ServerFirst)?;
        let salted = self.salted.get(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        // "biws" is base64 of the GS2 header "n,,".
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        Ok(ScramProof {
            client_final: format!("{without_proof},p={}", STANDARD.encode(proof)),
            server_signature: hmac(&server_key, auth_message.as_bytes()),
        })
    }
}

/// The second step: the client-final message is out, the server-final is awaited.
#[derive(Debug)]
pub struct ScramProof {
    client_final: String,
    server_signature: [u8; 32],
}

impl ScramProof {
    /// The client-final message, proof included.
    pub fn client_final(&self) -> &str {
        &self.client_final
    }

    /// Checks the server-final message: the server proves it knows the password too.
    pub fn verify_server_final(self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::ServerFinal)?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let signature = text
            .split(',')
            .find_map(|attr| attr.strip_prefix("v="))
            .ok_or(ScramError::ServerFinal)?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| ScramError::ServerFinal)?;
        if signature != self.server_signature {
            return Err(ScramError::Signature);
        }
        Ok(())
    }
}

/// The nonce, the base64 salt and the iteration count of a server-first message.
fn parse_server_first(text: &str) -> Result<(&str, &str, u32), ScramError> {
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for attr in text.split(',') {
        match attr.split_once('=') {
            Some(("r", v)) => nonce = Some(v),
            Some(("s", v)) => salt = Some(v),
            Some(("i", v)) => iterations = Some(v),
            // A mandatory extension this client does not know.
            Some(("m", _)) => return Err(ScramError::ServerFirst),
            _ => {}
        }
    }
    let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
        return Err(ScramError::ServerFirst);
    };
    let iterations: u64 = iterations.parse().map_err(|_| ScramError::ServerFirst)?;
    if !(1..=u64::from(MAX_ITERATIONS)).contains(&iterations) {
        return Err(ScramError::Iterations(iterations));
    }
    // In range by the check above.
    Ok((nonce, salt, iterations as u32))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A SCRAM password as PostgreSQL prepares it (libpq's client and the server alike, when the
/// password is set and when it is checked): an ASCII password as given (even with control
/// characters, which SASLprep would refuse); any other through SASLprep (spaces other than
/// ASCII's mapped to a space, characters "commonly mapped to nothing" such as the soft hyphen
/// removed, NFKC, RFC 4013's prohibited and unassigned characters and bidirectional rules
/// checked); the password as given again when SASLprep refuses it or leaves nothing.
pub fn prepare_password(password: &str) -> std::borrow::Cow<'_, str> {
    if password.is_ascii() {
        return password.into();
    }
    match stringprep::saslprep(password) {
        Ok(prepared) if !prepared.is_empty() => prepared,
        _ => password.into(),
    }
}

/// PostgreSQL's md5 answer: "md5" followed by md5(md5(password + user) in hex + salt) in hex.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    let inner = hex(&Md5::digest(
        [password.as_bytes(), user.as_bytes()].concat(),
    ));
    let outer = Md5::digest([inner.as_bytes(), &salt].concat());
    format!("md5{}", hex(&outer))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_saslprepped_unless_ascii_or_refused() {
        // RFC 4013, section 3's examples, and PostgreSQL's exceptions.
        let cases = [
            ("I\u{00AD}X", "IX"),
            ("user", "user"),
            ("USER", "USER"),
            ("\u{00AA}", "a"),
            ("\u{2168}", "IX"),
            // Prohibited, but ASCII: PostgreSQL leaves an ASCII password alone.
            ("\u{0007}", "\u{0007}"),
            // Bidirectional rules broken: refused, the password as given.
            ("\u{0627}\u{0031}", "\u{0627}\u{0031}"),
            ("\u{1680}x\u{3000}", " x "),
        ];
        for (given, prepared) in cases {
            assert_eq!(prepare_password(given), prepared, "{given:?}");
        }
    }

    /// RFC 7677, section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_test_vector() {
        let nonce = ClientNonce::new("rOprNGfwEbeRWgbNEkqO").unwrap();
        let client = ScramClient::new("user", "pencil", nonce);
        assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let proof = client.handle_server_first(server_first.as_bytes()).unwrap();
        assert_eq!(
            proof.client_final(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            proof.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
    }

    fn rfc_proof() -> ScramProof {
        let nonce = ClientNonce::new("rOprNGfwEbeRWgbNEkqO").unwrap();
        ScramClient::new("user", "pencil", nonce)
            .handle_server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap()
    }

    #[test]
    fn salted_passwords_are_computed_once_and_give_the_same_proof() {
        let salted = Arc::new(SaltedPasswords::default());
        for _ in 0..2 {
            let nonce = ClientNonce::new("rOprNGfwEbeRWgbNEkqO").unwrap();
            let proof = ScramClient::new("user", "pencil", nonce)
                .with_salted_passwords(salted.clone())
                .handle_server_first(
                    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                )
                .unwrap();
            assert!(proof
                .client_final()
                .ends_with("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
            assert_eq!(salted.len(), 1);
        }
        assert_eq!(format!("{salted:?}"), "SaltedPasswords");
    }

    #[test]
    fn a_wrong_server_signature_or_error_is_refused() {
        assert_eq!(
            rfc_proof().verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::Signature)
        );
        assert_eq!(
            rfc_proof().verify_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".into()))
        );
        assert_eq!(
            rfc_proof().verify_server_final(b"x=1"),
            Err(ScramError::ServerFinal)
        );
    }

    #[test]
    fn server_first_is_checked() {
        let client = || ScramClient::new("", "pw", ClientNonce::new("abc").unwrap());
        let cases: [(&[u8], ScramError); 5] = [
            (b"r=xyz123,s=AAAA,i=4096", ScramError::Nonce),
            (b"r=abc,s=AAAA,i=4096", ScramError::Nonce),
            (b"r=abcd,s=AAAA,i=0", ScramError::Iterations(0)),
            (
                b"r=abcd,s=AAAA,i=4294967296",
                ScramError::Iterations(1 << 32),
            ),
            (b"m=ext,r=abcd,s=AAAA,i=1", ScramError::ServerFirst),
        ];
        for (server_first, error) in cases {
            assert_eq!(
                client().handle_server_first(server_first).unwrap_err(),
                error
            );
        }
        assert_eq!(
            client().handle_server_first(b"r=abcd,i=1").unwrap_err(),
            ScramError::ServerFirst
        );
    }

    #[test]
    fn nonces_are_printable_without_commas() {
        assert!(ClientNonce::new("a,b").is_none());
        assert!(ClientNonce::new("").is_none());
        assert!(ClientNonce::new("a b").is_none());
        let random = ClientNonce::random().unwrap();
        assert_eq!(random.as_str().len(), 24);
        assert!(ClientNonce::new(random.as_str()).is_some());
        assert_ne!(random, ClientNonce::random().unwrap());
    }

    /// Known answers computed independently (Python's hashlib).
    #[test]
    fn md5_known_answers() {
        assert_eq!(
            md5_password("postgres", "secret", [1, 2, 3, 4]),
            "md5bb41a296aab6baccb36ff243a562abff"
        );
        assert_eq!(
            md5_password("md5_user", "Tr0ub4dor&3", [0xde, 0xad, 0xbe, 0xef]),
            "md5d8b72cc9297047f4edb8163d684be217"
        );
    }
}
