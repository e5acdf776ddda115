//! What a client answers MySQL's authentication plugins with: the password scrambles made for
//! a salt, and the exchange that may follow them (the server's AuthMoreData): for
//! caching_sha2_password's full authentication and for sha256_password, the password encrypted
//! with the server's RSA public key, as a client does over a connection without TLS.
//!
//! Only the public key is used here (encryption); the server's data never makes this panic: a
//! key that does not parse is [`Reply::Malformed`].

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use sha1::{Digest as _, Sha1};
use sha2::{Digest as _, Sha256};

/// The plugins tcpcopy answers.
pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";
pub const SHA256: &str = "sha256_password";

/// caching_sha2_password's AuthMoreData: the scramble passed (its OK follows), or the server
/// wants the password itself (its cache lacks the account).
const FAST_AUTH_SUCCESS: u8 = 3;
const PERFORM_FULL_AUTHENTICATION: u8 = 4;
/// A client's request for the server's public key: caching_sha2_password's, sha256_password's.
const CACHING_SHA2_REQUEST_KEY: u8 = 2;
const SHA256_REQUEST_KEY: u8 = 1;

/// The scramble `plugin` expects for `password` and `salt`; `None` for a plugin tcpcopy does
/// not know. An empty password is answered with no bytes, as clients do. sha256_password's
/// first answer asks for the public key (an empty password: a NUL, as clients send).
pub fn scramble(plugin: &str, password: &str, salt: &[u8]) -> Option<Vec<u8>> {
    if password.is_empty() && matches!(plugin, NATIVE | CACHING_SHA2) {
        return Some(Vec::new());
    }
    match plugin {
        NATIVE => Some(native(password.as_bytes(), salt)),
        CACHING_SHA2 => Some(caching_sha2(password.as_bytes(), salt)),
        SHA256 if password.is_empty() => Some(vec![0]),
        SHA256 => Some(vec![SHA256_REQUEST_KEY]),
        _ => None,
    }
}

/// One plugin's exchange after its first answer (in the handshake response, or after an auth
/// switch): what the server's AuthMoreData asks for.
#[derive(Debug, Default)]
pub struct Exchange {
    plugin: String,
    salt: Vec<u8>,
    /// The public key was asked for: the server's next AuthMoreData holds it.
    key_asked: bool,
}

/// What to do with the server's AuthMoreData.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this as the next packet, then wait for the server's answer.
    Send(Vec<u8>),
    /// Nothing to send: the server's OK (or error) follows.
    Wait,
    /// Cannot be answered: no password known, a step tcpcopy does not make, a password too
    /// long for the key.
    Unsupported,
    /// Not what the plugin sends: a public key that does not parse.
    Malformed,
}

impl Exchange {
    /// `plugin`'s exchange for `salt`, whose first answer was `first`.
    pub fn new(plugin: &str, salt: &[u8], first: &[u8]) -> Exchange {
        Exchange {
            plugin: plugin.to_owned(),
            salt: salt.to_vec(),
            key_asked: plugin == SHA256 && first == [SHA256_REQUEST_KEY],
        }
    }

    /// The server's AuthMoreData `data`, for the account's `password` (`None`: not known).
    pub fn more(&mut self, data: &[u8], password: Option<&str>) -> Reply {
        if std::mem::take(&mut self.key_asked) {
            let Some(password) = password else {
                return Reply::Unsupported;
            };
            return match encrypt(data, password, &self.salt) {
                Ok(cipher) => Reply::Send(cipher),
                Err(KeyError::Parse) => Reply::Malformed,
                Err(KeyError::Encrypt(_)) => Reply::Unsupported,
            };
        }
        match (self.plugin.as_str(), data) {
            (CACHING_SHA2, [FAST_AUTH_SUCCESS]) => Reply::Wait,
            (CACHING_SHA2, [PERFORM_FULL_AUTHENTICATION]) if password.is_some() => {
                self.key_asked = true;
                Reply::Send(vec![CACHING_SHA2_REQUEST_KEY])
            }
            _ => Reply::Unsupported,
        }
    }
}

/// Why the password could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the server's public key does not parse")]
    Parse,
    #[error("RSA encryption failed: {0}")]
    Encrypt(rsa::Error),
}

/// The password as a client sends it without TLS: (password, NUL) XOR the salt (repeated),
/// encrypted with RSA-OAEP (SHA-1, MGF1 with SHA-1: OpenSSL's `RSA_PKCS1_OAEP_PADDING`, which
/// MySQL's client uses) for the server's public key `pem` (SubjectPublicKeyInfo, or PKCS#1).
pub fn encrypt(pem: &[u8], password: &str, salt: &[u8]) -> Result<Vec<u8>, KeyError> {
    let text = std::str::from_utf8(pem).map_err(|_| KeyError::Parse)?;
    let text = text.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace());
    let key = rsa::PublicKey::from_public_key_pem(text)
        .or_else(|_| rsa::PublicKey::from_pkcs1_pem(text))
        .map_err(|_| KeyError::Parse)?;
    if salt.is_empty() {
        return Err(KeyError::Parse);
    }
    let mut message = password.as_bytes().to_vec();
    message.push(0);
    for (b, s) in message.iter_mut().zip(salt.iter().cycle()) {
        *b ^= s;
    }
    key.oaep_encrypt::<Sha1>(&message)
        .map_err(KeyError::Encrypt)
}

/// mysql_native_password: SHA1(password) XOR SHA1(salt, SHA1(SHA1(password))).
fn native(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(salt);
    h.update(stage2);
    let mask = h.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// caching_sha2_password (its fast path): SHA256(password) XOR
/// SHA256(SHA256(SHA256(password)), salt).
fn caching_sha2(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(salt);
    let mask = h.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The server's check, written from the definition: SHA1(scramble XOR SHA1(salt, stored))
    /// must equal the stored SHA1(SHA1(password)).
    #[test]
    fn a_native_scramble_passes_the_servers_check() {
        let salt = b"abcdefghijklmnopqrst";
        let s = scramble(NATIVE, "secret", salt).unwrap();
        let stored = Sha1::digest(Sha1::digest(b"secret"));
        let mut h = Sha1::new();
        h.update(salt);
        h.update(stored);
        let mask = h.finalize();
        let stage1: Vec<u8> = s.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(hex(&Sha1::digest(&stage1)), hex(&stored));
        // A different salt, a different scramble.
        assert_ne!(
            s,
            scramble(NATIVE, "secret", b"tsrqponmlkjihgfedcba").unwrap()
        );
    }

    #[test]
    fn a_caching_sha2_scramble_passes_the_servers_check() {
        let salt = b"0123456789abcdefghij";
        let s = scramble(CACHING_SHA2, "pw", salt).unwrap();
        assert_eq!(s.len(), 32);
        let stored = Sha256::digest(Sha256::digest(b"pw"));
        let mut h = Sha256::new();
        h.update(stored);
        h.update(salt);
        let mask = h.finalize();
        let stage1: Vec<u8> = s.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(hex(&Sha256::digest(&stage1)), hex(&stored));
    }

    #[test]
    fn an_empty_password_is_no_bytes_and_an_unknown_plugin_none() {
        assert_eq!(scramble(NATIVE, "", b"x"), Some(Vec::new()));
        assert_eq!(scramble("client_ed25519", "pw", b"x"), None);
        // sha256_password's first answer: ask for the key; an empty password: a NUL.
        assert_eq!(scramble(SHA256, "pw", b"x"), Some(vec![1]));
        assert_eq!(scramble(SHA256, "", b"x"), Some(vec![0]));
    }

    use rsa::pkcs8::DecodePrivateKey;

    const PRIVATE_KEY: &str = include_str!("tests/testdata/target_key.pem");
    const PUBLIC_KEY: &[u8] = include_bytes!("tests/testdata/target_key.pub.pem");
    const SALT: &[u8] = b"TARGETSALT0123456789";

    fn decrypt(cipher: &[u8]) -> Vec<u8> {
        let key = rsa::PrivateKey::from_pkcs8_pem(PRIVATE_KEY).unwrap();
        key.oaep_decrypt::<Sha1>(cipher).unwrap()
    }

    fn salted(password: &[u8], salt: &[u8]) -> Vec<u8> {
        let mut m = password.to_vec();
        m.push(0);
        (0..m.len()).map(|i| m[i] ^ salt[i % salt.len()]).collect()
    }

    /// The test key's decryption is OpenSSL's `RSA_PKCS1_OAEP_PADDING` (SHA-1, MGF1-SHA-1): it
    /// reads a ciphertext `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:oaep` made.
    #[test]
    fn the_test_keys_decryption_reads_openssls_oaep() {
        let cipher = include_bytes!("tests/testdata/openssl_oaep_s3cret.bin");
        assert_eq!(decrypt(cipher), salted(b"s3cret", SALT));
    }

    #[test]
    fn the_password_goes_with_its_nul_xor_the_salt_repeated() {
        let cipher = encrypt(PUBLIC_KEY, "a password longer than the salt", SALT).unwrap();
        assert_eq!(cipher.len(), 256, "one 2048-bit block");
        assert_eq!(
            decrypt(&cipher),
            salted(b"a password longer than the salt", SALT)
        );
        // OAEP is randomised: the same password twice, two ciphertexts.
        assert_ne!(
            cipher,
            encrypt(PUBLIC_KEY, "a password longer than the salt", SALT).unwrap()
        );
        // The key as MySQL may keep it: PKCS#1, a trailing NUL.
        let key = rsa::PrivateKey::from_pkcs8_pem(PRIVATE_KEY).unwrap();
        let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(
            &key.to_public_key(),
            rsa::pkcs8::LineEnding::LF,
        )
        .unwrap();
        let mut pem = pkcs1.into_bytes();
        pem.push(0);
        assert_eq!(
            decrypt(&encrypt(&pem, "pw", SALT).unwrap()),
            salted(b"pw", SALT)
        );
    }

    #[test]
    fn a_key_that_does_not_parse_or_a_password_too_long_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            &PUBLIC_KEY[..200],
        ] {
            assert!(matches!(encrypt(bad, "pw", SALT), Err(KeyError::Parse)));
        }
        assert!(matches!(
            encrypt(PUBLIC_KEY, "pw", b""),
            Err(KeyError::Parse)
        ));
        // OAEP with SHA-1 takes at most 256 - 42 bytes in a 2048-bit block.
        let long = "x".repeat(214);
        assert!(matches!(
            encrypt(PUBLIC_KEY, &long, SALT),
            Err(KeyError::Encrypt(_))
        ));
        assert!(encrypt(PUBLIC_KEY, &long[1..], SALT).is_ok());
    }

    #[test]
    fn caching_sha2_asks_for_the_key_on_full_authentication_only_with_a_password() {
        let mut x = Exchange::new(CACHING_SHA2, SALT, &[0; 32]);
        assert_eq!(x.more(&[3], Some("pw")), Reply::Wait);
        assert_eq!(x.more(&[4], None), Reply::Unsupported);
        assert_eq!(x.more(&[4], Some("pw")), Reply::Send(vec![2]));
        let Reply::Send(cipher) = x.more(PUBLIC_KEY, Some("pw")) else {
            panic!("no password sent")
        };
        assert_eq!(decrypt(&cipher), salted(b"pw", SALT));
        // One key per exchange: more data after it is no step tcpcopy knows.
        assert_eq!(x.more(PUBLIC_KEY, Some("pw")), Reply::Unsupported);
        let mut x = Exchange::new(CACHING_SHA2, SALT, &[0; 32]);
        assert_eq!(x.more(&[4], Some("pw")), Reply::Send(vec![2]));
        assert_eq!(x.more(b"not a key", Some("pw")), Reply::Malformed);
    }

    #[test]
    fn sha256_password_answers_the_key_it_asked_for() {
        let mut x = Exchange::new(SHA256, SALT, &[1]);
        let Reply::Send(cipher) = x.more(PUBLIC_KEY, Some("pw")) else {
            panic!("no password sent")
        };
        assert_eq!(decrypt(&cipher), salted(b"pw", SALT));
        // The client's own first answer kept (no password known): nothing to encrypt.
        assert_eq!(
            Exchange::new(SHA256, SALT, &[1]).more(PUBLIC_KEY, None),
            Reply::Unsupported
        );
        // A key never asked for.
        assert_eq!(
            Exchange::new(SHA256, SALT, &[0]).more(PUBLIC_KEY, Some("")),
            Reply::Unsupported
        );
        assert_eq!(
            Exchange::new(NATIVE, SALT, &[0; 20]).more(&[4], Some("pw")),
            Reply::Unsupported
        );
    }
}
